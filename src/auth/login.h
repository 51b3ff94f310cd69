/* Login use cases (docs/API.md §3): send a code, verify it and log in.
 * Talks to the store and the SMS worker through their interfaces; knows no
 * HTTP and no SQL. */
#ifndef OTPD_AUTH_LOGIN_H
#define OTPD_AUTH_LOGIN_H

#include <stddef.h>
#include <stdint.h>
#include "../config.h"
#include "../sms/sms.h"
#include "../status.h"
#include "../store/store.h"

struct auth;
struct auth_send;

enum otpd_status auth_new(const struct config *cfg, struct store *store,
                          struct sms *sms, const void *secret, size_t secret_len,
                          struct auth **ret);
void auth_free(struct auth *a);

/* The outcome of a send. */
struct auth_send_result {
	enum otpd_status status; /* OTPD_OK: stored and accepted by the provider;
	                            OTPD_OTP_RATE_LIMITED, OTPD_SMS_REJECTED,
	                            OTPD_SMS_UNAVAILABLE, or a store failure */
	int retry_after_s;       /* with OTPD_OTP_RATE_LIMITED and OTPD_THROTTLED */
	int provider_status;     /* with OTPD_SMS_REJECTED: Kavenegar's return.status */
};

typedef void (*auth_send_done_fn)(void *arg, const struct auth_send_result *result);

/* Send a code to `phone`, without making the caller wait: generate it,
 * store its hash durably (the per-phone limit applied atomically), hand it
 * to the SMS worker; a code whose SMS is not accepted is cancelled in the
 * store before the outcome is reported (it never verifies).  On OTPD_OK,
 * done(arg, result) is called exactly once, later, from a store or SMS
 * thread (never from inside this call); it must be short.  On any other
 * return nothing was stored or sent and done is never called. */
enum otpd_status auth_send_start(struct auth *a, const char *phone,
                                 const struct store_throttle *throttle, int64_t now_ms,
                                 auth_send_done_fn done, void *arg);

typedef void (*auth_verify_done_fn)(void *arg);

/* One verify between auth_verify_start() and auth_verify_finish(): owned by
 * the caller (it must stay in place until done is called); its fields are
 * auth's own. */
struct auth_verify {
	struct auth *a;
	char phone[OTP_PHONE_LEN + 1];
	uint8_t hash[OTP_HASH_LEN];
	struct store_throttle throttle;
	bool has_throttle;
	struct store_session session;
	struct store_verify_result vr;
	enum otpd_status status;
	auth_verify_done_fn done;
	void *arg;
};

struct auth_login {
	struct store_user user;
	int is_new_user;
	int remaining_attempts;  /* with OTPD_INVALID_CODE */
	int retry_after_s;       /* with OTPD_THROTTLED */
	char *access_token;      /* with OTPD_OK; freed by auth_login_release */
	char *refresh_token;
	int64_t access_ttl_s;
	int64_t refresh_ttl_s;
	char csrf_token[65];     /* a staff user's: the session's CSRF token; "" */
};

/* Verify `code` (6 ASCII digits) for `phone` and log in, in two steps so
 * that no server thread waits for the store: start hashes the code and
 * queues the store's transaction; on OTPD_OK, done(arg) is called exactly
 * once, later, from the store's thread (it must be short: hand over to the
 * caller's own thread); then auth_verify_finish(), on the caller's thread,
 * gives the outcome and mints the tokens.  On any other return from start,
 * done is never called and that status is the outcome. */
enum otpd_status auth_verify_start(struct auth *a, const char *phone, const char *code,
                                   const struct store_throttle *throttle,
                                   int64_t now_ms, struct auth_verify *v,
                                   auth_verify_done_fn done, void *arg);
enum otpd_status auth_verify_finish(struct auth_verify *v, struct auth_login *ret);
void auth_login_release(struct auth_login *l);

#endif
