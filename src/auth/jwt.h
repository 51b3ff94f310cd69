/* Tokens (API-CONTRACT "Tokens"): JWT via libjwt 1.10, HS256 keyed by
 * SECRET_KEY.  Claims: token_type, user_id, sub, iat, exp, jti. */
#ifndef OTPD_AUTH_JWT_H
#define OTPD_AUTH_JWT_H

#include <stddef.h>
#include <stdint.h>
#include "../status.h"

#define AUTH_JTI_LEN 32 /* hex of 16 random bytes */

struct auth_jwt;

enum auth_token_type { AUTH_TOKEN_ACCESS = 0, AUTH_TOKEN_REFRESH = 1 };

/* key: the HS256 key (copied, wiped on free). */
enum otpd_status auth_jwt_new(const void *key, size_t key_len, struct auth_jwt **ret);
void auth_jwt_free(struct auth_jwt *j);

/* A fresh random jti (hex, NUL-terminated). */
enum otpd_status auth_jti_new(char ret[AUTH_JTI_LEN + 1]);

/* Sign a token; *ret is malloc'ed (free it). */
enum otpd_status auth_jwt_sign(const struct auth_jwt *j, enum auth_token_type type,
                               int64_t user_id, int64_t iat_s, int64_t exp_s,
                               const char *jti, char **ret);

#endif
