/* Session use cases (docs/API.md §3 "Tokens"): refresh with rotation and reuse
 * detection, logout, the current user, and the background purge of expired
 * refresh records. */
#ifndef OTPD_AUTH_SESSION_H
#define OTPD_AUTH_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include "login.h"

struct auth_tokens {
	char *access_token;   /* freed by auth_tokens_release */
	char *refresh_token;
	int64_t access_ttl_s;
	int64_t refresh_ttl_s;
	char csrf_token[65];  /* a staff user's: the session's CSRF token; "" */
};

/* One refresh or logout between its _start and its _finish: owned by the
 * caller, in place until done is called; its fields are auth's own. */
struct auth_session_op {
	struct auth *a;
	int64_t now_ms;
	int64_t user_id;                /* the token's */
	char jti[STORE_JTI_LEN + 1];    /* the token's */
	struct store_session next;      /* refresh: the successor */
	struct store_rotate_result rr;  /* refresh: the store's answer */
	enum otpd_status status;
	auth_verify_done_fn done;
	void *arg;
};

/* Rotate the refresh token, in two steps as auth_verify_start/finish (no
 * server thread waits for the store): start checks the token and queues the
 * rotation; on OTPD_OK done(arg) is called once, later, from the store's
 * thread; then auth_refresh_finish() gives the outcome: OTPD_OK and a new
 * pair (or, inside the grace window, the pair already handed out for it),
 * OTPD_INVALID_TOKEN, OTPD_USER_INACTIVE.  Any other return from start is
 * the outcome, and done is never called. */
enum otpd_status auth_refresh_start(struct auth *a, const char *refresh_token,
                                    int64_t now_ms, struct auth_session_op *op,
                                    auth_verify_done_fn done, void *arg);
enum otpd_status auth_refresh_finish(struct auth_session_op *op, struct auth_tokens *ret);
void auth_tokens_release(struct auth_tokens *t);

/* Logout: revoke the family of a refresh token.  Tokens that are missing,
 * bad or already revoked are ignored (logout always succeeds); an expired
 * but genuine token still revokes its family.  true: the revocation is
 * queued, done(arg) will be called once from the store's thread, then call
 * auth_logout_finish(); false: nothing to revoke (done is never called). */
bool auth_logout_start(struct auth *a, const char *refresh_token,
                       struct auth_session_op *op, auth_verify_done_fn done, void *arg);
void auth_logout_finish(struct auth_session_op *op);

/* The user of an access token, in two steps (no server thread waits for
 * the store's read): start checks the token and queues the read; on OTPD_OK
 * done(arg) is called once, later, from a store thread; then
 * auth_me_finish() gives the outcome: OTPD_OK and the user,
 * OTPD_INVALID_TOKEN (bad token, user gone) or OTPD_USER_INACTIVE.  Any
 * other return from start is the outcome, and done is never called.
 * Access tokens are stateless: valid until they expire, even after
 * logout. */
struct auth_me_op {
	struct store_user user;
	enum otpd_status status;
	auth_verify_done_fn done;
	void *arg;
};

enum otpd_status auth_me_start(struct auth *a, const char *access_token, int64_t now_ms,
                               struct auth_me_op *op, auth_verify_done_fn done, void *arg);
enum otpd_status auth_me_finish(const struct auth_me_op *op, struct store_user *ret);

/* The JWK Set document (see auth_jwt_jwks). */
const char *auth_jwks(const struct auth *a);

/* A background thread deleting expired refresh records, and codes and
 * stats older than OTPD_CODE_RETENTION (store_history_purge), in bounded
 * batches (at most 100 x 1,000 rows of each a pass), every interval_s
 * seconds. */
struct auth_janitor;
enum otpd_status auth_janitor_start(struct auth *a, int interval_s,
                                    struct auth_janitor **ret);
void auth_janitor_stop(struct auth_janitor *j); /* accepts NULL */

#endif
