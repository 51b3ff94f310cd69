/* Tokens (docs/API.md §3 "Tokens"): verified with libjwt 1.10, signed here with
 * OpenSSL from keys prepared once (jwt.c says why).
 * HS256 keyed by SECRET_KEY (default), or ES256 with a P-256 key (tokens
 * carry `kid`, the RFC 7638 thumbprint; a previous public key keeps
 * verifying during a rotation).  Claims: token_type, user_id, sub, iat, exp,
 * jti, and sid (the session: its refresh family) when one is given.  libjwt checks no claims and trusts the token's `alg`: every check is
 * done here (LIBRARIES.md). */
#ifndef OTPD_AUTH_JWT_H
#define OTPD_AUTH_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../status.h"

#define AUTH_JTI_LEN 32          /* hex of 16 random bytes */
#define AUTH_TOKEN_MAX 4096      /* longer tokens are refused unread */
#define AUTH_CLOCK_LEEWAY_S 60   /* for iat / nbf in the future */

struct auth_jwt;

enum auth_token_type { AUTH_TOKEN_ACCESS = 0, AUTH_TOKEN_REFRESH = 1 };

struct auth_claims {
	enum auth_token_type type;
	int64_t user_id;
	int64_t iat;
	int64_t exp;
	char jti[65];
	char sid[65]; /* "": the token names no session */
};

/* HS256: key copied, wiped on free. */
enum otpd_status auth_jwt_new_hs256(const void *key, size_t key_len,
                                    struct auth_jwt **ret);
/* ES256: a P-256 private key (PEM file) and optionally a previous public key
 * (PEM file, or NULL or ""). On failure err holds one line naming the
 * variable ("JWT_PRIVATE_KEY_FILE: expected ..."). */
enum otpd_status auth_jwt_new_es256(const char *private_key_file,
                                    const char *previous_public_key_file,
                                    char *err, size_t errlen, struct auth_jwt **ret);
void auth_jwt_free(struct auth_jwt *j);

/* A fresh jti: 32 lowercase hex digits, NUL-terminated.  The first 12 are
 * now_ms (48 bits, big-endian), the other 20 are 80 random bits from the
 * CSPRNG (the layout of a UUIDv7).  Time-ordered so that the store's
 * indexes on jtis grow at their right edge, as they do for rowids, instead
 * of dirtying a random page per login; a jti is an identifier, not a
 * secret (a token is only accepted with its signature), and 80 random bits
 * keep two jtis of the same millisecond apart. */
enum otpd_status auth_jti_new(int64_t now_ms, char ret[AUTH_JTI_LEN + 1]);

/* Sign a token; *ret is malloc'ed (free it).  sid: the session (its
 * refresh family), or NULL for no sid claim. */
enum otpd_status auth_jwt_sign(const struct auth_jwt *j, enum auth_token_type type,
                               int64_t user_id, int64_t iat_s, int64_t exp_s,
                               const char *jti, const char *sid, char **ret);

/* Verify signature, algorithm (must be the configured one), kid (ES256),
 * and claims: token_type == type, user_id a positive integer equal to sub,
 * exp > now (unless check_exp is false), iat and nbf not after
 * now + AUTH_CLOCK_LEEWAY_S, jti present, sid (optional) a string shorter
 * than 65 bytes.  OTPD_INVALID_TOKEN on any
 * failure (no detail: it would only help an attacker). */
enum otpd_status auth_jwt_verify(const struct auth_jwt *j, const char *token,
                                 enum auth_token_type type, int64_t now_s,
                                 bool check_exp, struct auth_claims *ret)
	__attribute__((warn_unused_result));

/* The JWK Set of the public keys (ES256: current and previous; HS256: no
 * keys), as compact JSON text owned by j. */
const char *auth_jwt_jwks(const struct auth_jwt *j);

#endif
