/* Login use cases (API-CONTRACT §3): send a code, verify it and log in.
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

/* Step 1 of a send: throttle-free rules only.  Generates a code, stores its
 * hash (durably; the per-phone limit is applied atomically) and returns a
 * pending job holding the code.  OTPD_OTP_RATE_LIMITED fills
 * *ret_retry_after_s. */
enum otpd_status auth_send_begin(struct auth *a, const char *phone, int64_t now_ms,
                                 struct auth_send **ret_job, int *ret_retry_after_s);

typedef void (*auth_send_done_fn)(void *arg, const struct sms_result *result);

/* Step 2: hand the job to the SMS worker; done(arg, result) is called later
 * from the worker thread, after a refused code has been cancelled in the
 * store.  On an error return done is never called and the job is gone (its
 * code cancelled).  The job is consumed either way. */
enum otpd_status auth_send_dispatch(struct auth_send *job, auth_send_done_fn done,
                                    void *arg);

struct auth_login {
	struct store_user user;
	int is_new_user;
	int remaining_attempts;  /* with OTPD_INVALID_CODE */
	char *access_token;      /* with OTPD_OK; freed by auth_login_release */
	char *refresh_token;
	int64_t access_ttl_s;
	int64_t refresh_ttl_s;
};

/* Verify `code` (6 ASCII digits) for `phone` and log in. */
enum otpd_status auth_verify_code(struct auth *a, const char *phone, const char *code,
                                  int64_t now_ms, struct auth_login *ret);
void auth_login_release(struct auth_login *l);

#endif
