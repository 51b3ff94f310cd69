/* The OTP rules as pure decisions (docs/API.md §3): expiry, attempts, the
 * per-phone send limit.  `now_ms` is always passed in; no clock, no I/O.
 * The store calls these inside its transactions, so the decision and the
 * write that follows are atomic. */
#ifndef OTPD_OTP_POLICY_H
#define OTPD_OTP_POLICY_H

#include <stdbool.h>
#include <stdint.h>
#include "../status.h"

struct otp_policy {
	int64_t expiry_ms;      /* OTP_EXPIRY_TIME */
	int max_attempts;       /* OTP_MAX_ATTEMPTS */
	int send_limit;         /* OTP_SEND_LIMIT */
	int64_t send_window_ms; /* OTP_SEND_WINDOW */
};

enum otp_code_state {
	OTP_CODE_ACTIVE = 0,
	OTP_CODE_USED = 1,
	OTP_CODE_CANCELLED = 2, /* its SMS was not accepted by the provider */
	OTP_CODE_REPLACED = 3,  /* a newer send replaced it */
};

/* What the store holds of the latest code of a phone number. */
struct otp_record {
	int64_t created_ms;
	int64_t expires_ms;
	int attempts;            /* wrong guesses so far */
	enum otp_code_state state;
};

/* The verdict on one verify attempt. */
struct otp_verdict {
	enum otpd_status status; /* OTPD_OK, OTPD_INVALID_CODE,
	                            OTPD_TOO_MANY_ATTEMPTS, OTPD_OTP_EXPIRED */
	bool count_attempt;      /* the store must add one to `attempts` */
	bool consume;            /* the store must mark the code used */
	int remaining_attempts;  /* with OTPD_INVALID_CODE: after this guess */
};

/* Judge a verify attempt.  rec == NULL means no code exists.  hash_matches
 * is the constant-time comparison of the submitted code's hash.
 * Order: no usable code (none, used, cancelled, expired) -> OTP_EXPIRED;
 * attempts exhausted -> TOO_MANY_ATTEMPTS; right code -> OK (consume);
 * wrong code -> INVALID_CODE (count the attempt). */
struct otp_verdict otp_policy_judge(const struct otp_policy *p,
                                    const struct otp_record *rec,
                                    bool hash_matches, int64_t now_ms);

/* Per-phone send limit: `sent_in_window` sends since now - window, the
 * oldest of them at `oldest_ms`.  Returns true when one more is allowed;
 * otherwise false and *ret_retry_after_s = whole seconds (>= 1) until the
 * oldest send leaves the window. */
bool otp_policy_send_allowed(const struct otp_policy *p, int sent_in_window,
                             int64_t oldest_ms, int64_t now_ms,
                             int *ret_retry_after_s);

#endif
