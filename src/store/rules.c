/* The store's decisions that do not depend on a database (rules.h). */
#include "rules.h"

#include <stdio.h>
#include <string.h>

int64_t store_rules_bucket(int64_t ms)
{
	int64_t r = ms % STORE_STATS_BUCKET_MS;

	return ms - (r < 0 ? r + STORE_STATS_BUCKET_MS : r);
}

bool store_rules_code_live(const struct store_rules_code *c, int64_t now_ms)
{
	return c->state == OTP_CODE_ACTIVE && c->attempts < c->max_attempts &&
	       now_ms < c->expires_ms;
}

struct otp_policy store_rules_verify_policy(const struct otp_policy *p, int code_max_attempts)
{
	struct otp_policy judged = *p;

	if (code_max_attempts < judged.max_attempts)
		judged.max_attempts = code_max_attempts;
	return judged;
}

bool store_rules_last_guess(const struct otp_policy *judged, int attempts_before)
{
	return (int64_t)attempts_before + 1 >= judged->max_attempts;
}

bool store_rules_new_user(const char *phone, const char *email_domain,
                          struct store_user *ret)
{
	const char *digits = phone ? otp_phone_digits(phone) : NULL;
	struct store_user u;
	int n;

	if (!digits || !digits[0])
		return false;
	memset(&u, 0, sizeof(u));
	n = snprintf(u.email, sizeof(u.email), "%s@%s", digits, email_domain ? email_domain : "");
	if (n < 0 || (size_t)n >= sizeof(u.email) || strlen(phone) >= sizeof(u.phone_number) ||
	    strlen(digits) >= sizeof(u.username))
		return false;
	strcpy(u.phone_number, phone);
	strcpy(u.username, digits);
	u.is_active = true;
	u.is_staff = false;
	*ret = u;
	return true;
}

enum store_rotate_step store_rules_rotate_first(const struct store_session_row *cur,
                                                int64_t user_id, int64_t now_ms)
{
	if (cur->state == STORE_SESSION_REVOKED || now_ms >= cur->sess.expires_ms ||
	    cur->user_id != user_id)
		return STORE_ROTATE_REFUSE;
	return STORE_ROTATE_CHECK_USER;
}

enum store_rotate_next store_rules_rotate_next(const struct store_session_row *cur,
                                               int64_t grace_ms, int64_t now_ms)
{
	if (cur->state == STORE_SESSION_LIVE)
		return STORE_ROTATE_NOW;
	if (grace_ms > 0 && cur->has_rotated_ms && now_ms - cur->rotated_ms < grace_ms &&
	    cur->replaced_by[0] != '\0')
		return STORE_ROTATE_GRACE;
	return STORE_ROTATE_REUSE;
}

bool store_rules_successor_usable(const struct store_session_row *cur,
                                  const struct store_session_row *succ,
                                  int64_t user_id, int64_t now_ms)
{
	return succ->state == STORE_SESSION_LIVE && now_ms < succ->sess.expires_ms &&
	       succ->user_id == user_id && strcmp(succ->sess.family, cur->sess.family) == 0;
}
