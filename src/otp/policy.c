/* The OTP rules as pure decisions (docs/API.md §3).  No clock, no I/O. */
#include "policy.h"

#include <limits.h>

/* A code is usable while it is active and now_ms < expires_ms. */
static bool is_usable(const struct otp_record *rec, int64_t now_ms)
{
	return rec && rec->state == OTP_CODE_ACTIVE && now_ms < rec->expires_ms;
}

/* Attempts left after one more wrong guess, never below 0. */
static int remaining_after_guess(int max_attempts, int attempts)
{
	int64_t left = (int64_t)max_attempts - ((int64_t)attempts + 1);

	return left > 0 ? (int)left : 0;
}

struct otp_verdict otp_policy_judge(const struct otp_policy *p,
                                    const struct otp_record *rec,
                                    bool hash_matches, int64_t now_ms)
{
	struct otp_verdict v = { .status = OTPD_OTP_EXPIRED };

	if (!is_usable(rec, now_ms))
		return v;
	if (rec->attempts >= p->max_attempts) {
		v.status = OTPD_TOO_MANY_ATTEMPTS;
		return v;
	}
	if (hash_matches) {
		v.status = OTPD_OK;
		v.consume = true;
		return v;
	}
	v.status = OTPD_INVALID_CODE;
	v.count_attempt = true;
	v.remaining_attempts = remaining_after_guess(p->max_attempts, rec->attempts);
	return v;
}

/* ceil(ms / 1000), at least 1, at most INT_MAX. */
static int retry_seconds(int64_t wait_ms)
{
	int64_t s;

	if (wait_ms <= 0)
		return 1;
	s = wait_ms / 1000 + (wait_ms % 1000 != 0);
	return s > INT_MAX ? INT_MAX : (int)s;
}

bool otp_policy_send_allowed(const struct otp_policy *p, int sent_in_window,
                             int64_t oldest_ms, int64_t now_ms,
                             int *ret_retry_after_s)
{
	int64_t leaves_ms, wait_ms;

	if (sent_in_window < p->send_limit)
		return true;
	if (!ret_retry_after_s)
		return false;
	/* Saturate instead of overflowing on absurd inputs. */
	if (__builtin_add_overflow(oldest_ms, p->send_window_ms, &leaves_ms))
		leaves_ms = p->send_window_ms > 0 ? INT64_MAX : INT64_MIN;
	if (__builtin_sub_overflow(leaves_ms, now_ms, &wait_ms))
		wait_ms = now_ms < 0 ? INT64_MAX : INT64_MIN;
	*ret_retry_after_s = retry_seconds(wait_ms);
	return false;
}
