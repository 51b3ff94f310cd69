/* Staff access to the admin API (docs/API.md §6): who may call it, and the
 * CSRF token that binds a cookie-authenticated write to its staff session. */
#ifndef OTPD_AUTH_ADMIN_H
#define OTPD_AUTH_ADMIN_H

#include <stdbool.h>
#include <stdint.h>
#include "jwt.h"
#include "login.h"

#define AUTH_CSRF_LEN 64 /* hex of HMAC-SHA256 */

/* The CSRF token of a session: hex HMAC-SHA256 of its refresh family under a
 * key derived from SECRET_KEY (label "otpd/v1/csrf"), so that it cannot be
 * made up without the key, and one session's token is worthless in another.
 * false (nothing written) only when family is empty or the MAC fails. */
bool auth_csrf_token(const struct auth *a, const char *family, char ret[AUTH_CSRF_LEN + 1]);

/* The stored form of a candidate code for phone (normalised), as the codes
 * of this server are hashed: for the search by code.  false on failure. */
bool auth_code_hash(const struct auth *a, const char *phone, const char *code,
                    uint8_t ret[OTP_HASH_LEN]);

/* One admin request's caller, between its _start and its _finish (owned by
 * the caller, in place until done is called). */
struct auth_admin_op {
	struct store_user staff;      /* the caller, as the database has it now */
	struct auth_claims claims;    /* of the caller's access token */
	enum otpd_status status;
	auth_verify_done_fn done;
	void *arg;
};

/* Who calls: check the access token (signature, claims, expiry) and, when
 * csrf_required (a state-changing request authenticated by cookie), that
 * csrf_header and csrf_cookie are both present, equal, and the token of the
 * access token's session (auth_csrf_token of its sid); then queue the read of
 * the caller's user.  OTPD_OK: done(arg) is called once, later, from a store
 * thread; then auth_admin_finish() says whether the caller is let in.  Any
 * other return is the outcome (OTPD_INVALID_TOKEN, OTPD_FORBIDDEN for the
 * CSRF check, OTPD_UNAVAILABLE), and done is never called. */
enum otpd_status auth_admin_start(struct auth *a, const char *access_token, int64_t now_ms,
                                  bool csrf_required, const char *csrf_header,
                                  const char *csrf_cookie, struct auth_admin_op *op,
                                  auth_verify_done_fn done, void *arg);

/* After done: OTPD_OK (an active staff user: op->staff), OTPD_INVALID_TOKEN
 * (the user is gone), OTPD_USER_INACTIVE, OTPD_FORBIDDEN (not staff), or the
 * store's failure.  Pure: safe on the store thread that called done. */
enum otpd_status auth_admin_finish(const struct auth_admin_op *op);

#endif
