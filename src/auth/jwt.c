#include "jwt.h"

#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct auth_jwt {
	size_t key_len;
	unsigned char key[];
};

enum otpd_status auth_jwt_new(const void *key, size_t key_len, struct auth_jwt **ret)
{
	struct auth_jwt *j = malloc(sizeof(*j) + key_len);

	if (!j)
		return OTPD_NOMEM;
	j->key_len = key_len;
	memcpy(j->key, key, key_len);
	*ret = j;
	return OTPD_OK;
}

void auth_jwt_free(struct auth_jwt *j)
{
	if (!j)
		return;
	OPENSSL_cleanse(j->key, j->key_len);
	free(j);
}

enum otpd_status auth_jti_new(char ret[AUTH_JTI_LEN + 1])
{
	unsigned char b[AUTH_JTI_LEN / 2];
	static const char hex[] = "0123456789abcdef";

	if (RAND_bytes(b, sizeof(b)) != 1)
		return OTPD_INTERNAL;
	for (size_t i = 0; i < sizeof(b); i++) {
		ret[2 * i] = hex[b[i] >> 4];
		ret[2 * i + 1] = hex[b[i] & 15];
	}
	ret[AUTH_JTI_LEN] = '\0';
	return OTPD_OK;
}

enum otpd_status auth_jwt_sign(const struct auth_jwt *j, enum auth_token_type type,
                               int64_t user_id, int64_t iat_s, int64_t exp_s,
                               const char *jti, char **ret)
{
	jwt_t *t = NULL;
	char sub[24];
	char *out;
	enum otpd_status st = OTPD_INTERNAL;

	if (jwt_new(&t) != 0)
		return OTPD_NOMEM;
	snprintf(sub, sizeof(sub), "%lld", (long long)user_id);
	if (jwt_set_alg(t, JWT_ALG_HS256, j->key, (int)j->key_len) != 0 ||
	    jwt_add_grant(t, "token_type", type == AUTH_TOKEN_ACCESS ? "access" : "refresh") != 0 ||
	    jwt_add_grant_int(t, "user_id", (long)user_id) != 0 ||
	    jwt_add_grant(t, "sub", sub) != 0 ||
	    jwt_add_grant_int(t, "iat", (long)iat_s) != 0 ||
	    jwt_add_grant_int(t, "exp", (long)exp_s) != 0 ||
	    jwt_add_grant(t, "jti", jti) != 0)
		goto out;
	out = jwt_encode_str(t);
	if (!out)
		goto out;
	*ret = out;
	st = OTPD_OK;
out:
	jwt_free(t);
	return st;
}
