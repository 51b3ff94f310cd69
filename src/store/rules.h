/* Private to src/store/: the decisions of the store's transactions that do
 * not depend on a database, shared by every dialect and unit-tested on
 * their own (tests/unit/test_store_rules.c), like otp_policy_judge().  A
 * dialect reads the rows (locked as its engine needs), asks these, and
 * writes what they say. */
#ifndef OTPD_STORE_RULES_H
#define OTPD_STORE_RULES_H

#include <stdbool.h>
#include <stdint.h>
#include "../otp/policy.h"
#include "store.h"

/* The start of the stats bucket holding ms (floor, also before 1970). */
int64_t store_rules_bucket(int64_t ms);

/* ---- sends ---- */

/* A number's current code (its newest) as a send sees it. */
struct store_rules_code {
	int64_t created_ms;
	int64_t expires_ms;
	int attempts;
	int max_attempts;
	int state; /* enum otp_code_state: 0 active, 1 used, 2 cancelled, 3 replaced */
};

/* True while the code still works (active, attempts left, not expired):
 * a new code replaces it (state 3); one that is over keeps what it
 * became. */
bool store_rules_code_live(const struct store_rules_code *c, int64_t now_ms);

/* ---- verifies ---- */

/* The policy a verify judges a code with: p, with the attempts the code
 * was issued with unless p allows fewer now (a lowered OTP_MAX_ATTEMPTS
 * applies at once). */
struct otp_policy store_rules_verify_policy(const struct otp_policy *p, int code_max_attempts);

/* A counted wrong guess ends the code (exhausted) when it was the last
 * one allowed by `judged`. */
bool store_rules_last_guess(const struct otp_policy *judged, int attempts_before);

/* A first login's user: username = the number's digits, email =
 * digits@email_domain, active, not staff, no names.  False when phone is
 * not a normalised number or the e-mail does not fit. */
bool store_rules_new_user(const char *phone, const char *email_domain,
                          struct store_user *ret);

/* ---- refresh rotation (store_session_rotate() in store.h) ---- */

enum store_session_state { STORE_SESSION_LIVE = 0, STORE_SESSION_ROTATED = 1,
	                   STORE_SESSION_REVOKED = 2 };

/* A refresh_tokens row. */
struct store_session_row {
	struct store_session sess;
	int64_t user_id;
	int state;               /* enum store_session_state */
	bool has_rotated_ms;
	int64_t rotated_ms;
	char replaced_by[STORE_JTI_LEN + 1]; /* "" when NULL */
};

enum store_rotate_step {
	STORE_ROTATE_REFUSE,     /* OTPD_INVALID_TOKEN, nothing changes */
	STORE_ROTATE_CHECK_USER, /* read the user: gone -> refuse, inactive -> user_inactive */
};

/* The first decision on the presented record cur: revoked, expired (exp
 * reached: RFC 7519 §4.1.4) or of another user: refuse; else read the
 * user next. */
enum store_rotate_step store_rules_rotate_first(const struct store_session_row *cur,
                                                int64_t user_id, int64_t now_ms);

enum store_rotate_next {
	STORE_ROTATE_NOW,        /* live: mark it rotated, insert the successor */
	STORE_ROTATE_GRACE,      /* rotated inside the grace window: read the successor
	                            (store_rules_successor_usable()) */
	STORE_ROTATE_REUSE,      /* a replay of a rotated-out token: revoke the family */
};

/* The user is there and active: what becomes of cur.  grace_ms 0 means no
 * grace at all, even with clock skew between nodes. */
enum store_rotate_next store_rules_rotate_next(const struct store_session_row *cur,
                                               int64_t grace_ms, int64_t now_ms);

/* Inside the grace window, the same client retrying (a lost response, two
 * tabs) gets the pair already minted when that successor is still live,
 * unexpired, of the same user and family; else it is a replay. */
bool store_rules_successor_usable(const struct store_session_row *cur,
                                  const struct store_session_row *succ,
                                  int64_t user_id, int64_t now_ms);

#endif
