/* Session use cases (API-CONTRACT "Tokens"): refresh with rotation and reuse
 * detection, logout, the current user, and the background purge of expired
 * refresh records. */
#ifndef OTPD_AUTH_SESSION_H
#define OTPD_AUTH_SESSION_H

#include <stdint.h>
#include "login.h"

struct auth_tokens {
	char *access_token;   /* freed by auth_tokens_release */
	char *refresh_token;
	int64_t access_ttl_s;
	int64_t refresh_ttl_s;
};

/* Rotate the refresh token: OTPD_OK and a new pair (or, inside the grace
 * window, the pair already handed out for it); OTPD_INVALID_TOKEN;
 * OTPD_USER_INACTIVE. */
enum otpd_status auth_refresh(struct auth *a, const char *refresh_token, int64_t now_ms,
                              struct auth_tokens *ret);
void auth_tokens_release(struct auth_tokens *t);

/* Revoke the family of a refresh token.  Tokens that are missing, bad or
 * already revoked are ignored (logout always succeeds); an expired but
 * genuine token still revokes its family. */
void auth_logout(struct auth *a, const char *refresh_token);

/* The user of an access token: OTPD_OK, OTPD_INVALID_TOKEN (bad token, user
 * gone) or OTPD_USER_INACTIVE.  Access tokens are stateless: valid until
 * they expire, even after logout. */
enum otpd_status auth_me(struct auth *a, const char *access_token, int64_t now_ms,
                         struct store_user *ret);

/* The JWK Set document (see auth_jwt_jwks). */
const char *auth_jwks(const struct auth *a);

/* A background thread deleting expired refresh records, in bounded
 * batches, every interval_s seconds. */
struct auth_janitor;
enum otpd_status auth_janitor_start(struct auth *a, int interval_s,
                                    struct auth_janitor **ret);
void auth_janitor_stop(struct auth_janitor *j); /* accepts NULL */

#endif
