#include "jwt.h"

#include <jansson.h>
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../log.h"
#include "../otp/code.h"
#include "../util/random.h"

#define KID_MAX 64

struct es_key {
	char *pub_pem;       /* for jwt_decode */
	size_t pub_len;
	char kid[KID_MAX];
	json_t *jwk;
};

/* Signing (auth_jwt_sign) is done here with OpenSSL and jansson, from keys
 * prepared once; libjwt only verifies.  libjwt 1.10 parses the PEM private
 * key again for every ES256 signature and looks up HMAC and SHA-256 by name
 * for every HS256 one (OpenSSL 3's one-shot HMAC()), which made two
 * signatures about a tenth of a login's CPU (docs/PERFORMANCE.md). */
#define HEADER_B64_MAX 360

struct auth_jwt {
	jwt_alg_t alg;
	unsigned char *sign_key;   /* HS256 secret (for jwt_decode); NULL for ES256 */
	size_t sign_key_len;
	struct otp_hasher *hmac;   /* HS256: keyed once */
	EVP_PKEY *pkey;            /* ES256: the private key, parsed once */
	EVP_MD *sha256;            /* ES256: fetched once */
	char header_b64[HEADER_B64_MAX]; /* the JOSE header, encoded once */
	struct es_key current;
	struct es_key previous;    /* pub_pem NULL when none */
	char *jwks;
};

static void es_key_release(struct es_key *k)
{
	free(k->pub_pem);
	json_decref(k->jwk);
	memset(k, 0, sizeof(*k));
}

void auth_jwt_free(struct auth_jwt *j)
{
	if (!j)
		return;
	if (j->sign_key) {
		OPENSSL_cleanse(j->sign_key, j->sign_key_len);
		free(j->sign_key);
	}
	otp_hasher_free(j->hmac);
	EVP_PKEY_free(j->pkey);
	EVP_MD_free(j->sha256);
	es_key_release(&j->current);
	es_key_release(&j->previous);
	free(j->jwks);
	free(j);
}

/* base64url without padding (RFC 7515 §2); out must hold 4*ceil(n/3)+1. */
static void b64url(const unsigned char *in, size_t n, char *out)
{
	int len = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	int w = 0;

	for (int i = 0; i < len; i++) {
		char c = out[i];
		if (c == '=')
			break;
		out[w++] = c == '+' ? '-' : c == '/' ? '_' : c;
	}
	out[w] = '\0';
}

static bool build_jwks(struct auth_jwt *j)
{
	json_t *keys = json_array(), *doc;

	if (!keys)
		return false;
	if (j->current.jwk)
		json_array_append(keys, j->current.jwk);
	if (j->previous.jwk)
		json_array_append(keys, j->previous.jwk);
	doc = json_pack("{s:o}", "keys", keys);
	j->jwks = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	return j->jwks != NULL;
}

/* The JOSE header of every token j signs, base64url-encoded once. */
static bool build_header(struct auth_jwt *j)
{
	json_t *h;
	char json[256];
	size_t n;

	if (j->alg == JWT_ALG_ES256)
		h = json_pack("{s:s, s:s, s:s}", "alg", "ES256", "typ", "JWT", "kid", j->current.kid);
	else
		h = json_pack("{s:s, s:s}", "alg", "HS256", "typ", "JWT");
	n = h ? json_dumpb(h, json, sizeof(json), JSON_COMPACT | JSON_PRESERVE_ORDER) : 0;
	json_decref(h);
	if (n == 0 || n >= sizeof(json) || 4 * ((n + 2) / 3) + 1 > sizeof(j->header_b64))
		return false;
	b64url((const unsigned char *)json, n, j->header_b64);
	return true;
}

enum otpd_status auth_jwt_new_hs256(const void *key, size_t key_len, struct auth_jwt **ret)
{
	struct auth_jwt *j = calloc(1, sizeof(*j));

	if (!j)
		return OTPD_NOMEM;
	j->alg = JWT_ALG_HS256;
	j->sign_key = malloc(key_len ? key_len : 1);
	if (!j->sign_key || !build_jwks(j)) {
		auth_jwt_free(j);
		return OTPD_NOMEM;
	}
	memcpy(j->sign_key, key, key_len);
	j->sign_key_len = key_len;
	j->hmac = otp_hasher_new(key, key_len);
	if (!j->hmac || !build_header(j)) {
		auth_jwt_free(j);
		return OTPD_INTERNAL;
	}
	*ret = j;
	return OTPD_OK;
}

/* The public half of pkey as PEM, its JWK and RFC 7638 thumbprint kid.
 * pkey must be an EC P-256 key. */
static bool es_key_init(EVP_PKEY *pkey, struct es_key *k)
{
	char group[32];
	unsigned char xb[32], yb[32], digest[SHA256_DIGEST_LENGTH];
	char x[48], y[48], canon[160];
	BIGNUM *bx = NULL, *by = NULL;
	BIO *bio = NULL;
	char *mem;
	long n;
	bool ok = false;

	if (!EVP_PKEY_is_a(pkey, "EC") ||
	    !EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
	                                    sizeof(group), NULL) ||
	    strcmp(group, "prime256v1") != 0)
		return false;
	if (!EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &bx) ||
	    !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &by) ||
	    BN_bn2binpad(bx, xb, 32) != 32 || BN_bn2binpad(by, yb, 32) != 32)
		goto out;
	b64url(xb, 32, x);
	b64url(yb, 32, y);
	/* RFC 7638 §3.2: required members, lexicographic order, no spaces. */
	snprintf(canon, sizeof(canon), "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
	SHA256((const unsigned char *)canon, strlen(canon), digest);
	b64url(digest, sizeof(digest), k->kid);

	bio = BIO_new(BIO_s_mem());
	if (!bio || !PEM_write_bio_PUBKEY(bio, pkey))
		goto out;
	n = BIO_get_mem_data(bio, &mem);
	k->pub_pem = malloc((size_t)n + 1);
	if (!k->pub_pem)
		goto out;
	memcpy(k->pub_pem, mem, (size_t)n);
	k->pub_pem[n] = '\0';
	k->pub_len = (size_t)n;
	k->jwk = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256",
	                   "x", x, "y", y, "use", "sig", "alg", "ES256", "kid", k->kid);
	ok = k->jwk != NULL;
out:
	BIO_free(bio);
	BN_free(bx);
	BN_free(by);
	return ok;
}

static unsigned char *read_file(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf;
	size_t n;

	if (!f)
		return NULL;
	buf = malloc(65536);
	if (!buf) {
		fclose(f);
		return NULL;
	}
	n = fread(buf, 1, 65535, f);
	fclose(f);
	buf[n] = '\0';
	*ret_len = n;
	return buf;
}

enum otpd_status auth_jwt_new_es256(const char *private_key_file,
                                    const char *previous_public_key_file,
                                    char *err, size_t errlen, struct auth_jwt **ret)
{
	struct auth_jwt *j = calloc(1, sizeof(*j));
	EVP_PKEY *pkey = NULL;
	BIO *bio = NULL;
	size_t len = 0;
	enum otpd_status st = OTPD_INTERNAL;

	if (!j)
		return OTPD_NOMEM;
	j->alg = JWT_ALG_ES256;
	j->sign_key = read_file(private_key_file, &len);
	j->sign_key_len = len;
	if (!j->sign_key) {
		snprintf(err, errlen, "JWT_PRIVATE_KEY_FILE: cannot read '%s'", private_key_file);
		goto out;
	}
	bio = BIO_new_mem_buf(j->sign_key, (int)len);
	pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	if (!pkey || !es_key_init(pkey, &j->current)) {
		snprintf(err, errlen, "JWT_PRIVATE_KEY_FILE: expected a P-256 private key in PEM, got '%s'",
		         private_key_file);
		goto out;
	}
	if (previous_public_key_file && *previous_public_key_file) {
		size_t plen = 0;
		unsigned char *pem = read_file(previous_public_key_file, &plen);
		EVP_PKEY *prev = NULL;
		BIO *pb = pem ? BIO_new_mem_buf(pem, (int)plen) : NULL;

		prev = pb ? PEM_read_bio_PUBKEY(pb, NULL, NULL, NULL) : NULL;
		bool ok = prev && es_key_init(prev, &j->previous);
		EVP_PKEY_free(prev);
		BIO_free(pb);
		free(pem);
		if (!ok) {
			snprintf(err, errlen, "JWT_PREVIOUS_PUBLIC_KEY_FILE: expected a P-256 public key in PEM, got '%s'",
			         previous_public_key_file);
			goto out;
		}
	}
	j->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (!j->sha256 || !build_jwks(j) || !build_header(j)) {
		snprintf(err, errlen, "out of memory");
		st = OTPD_NOMEM;
		goto out;
	}
	/* The parsed key signs from now on: the PEM text is not kept. */
	OPENSSL_cleanse(j->sign_key, j->sign_key_len);
	free(j->sign_key);
	j->sign_key = NULL;
	j->sign_key_len = 0;
	j->pkey = pkey;
	pkey = NULL;
	*ret = j;
	j = NULL;
	st = OTPD_OK;
out:
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	auth_jwt_free(j);
	return st;
}

enum otpd_status auth_jti_new(int64_t now_ms, char ret[AUTH_JTI_LEN + 1])
{
	unsigned char b[AUTH_JTI_LEN / 2];
	static const char hex[] = "0123456789abcdef";
	uint64_t t = now_ms > 0 ? (uint64_t)now_ms : 0;

	for (int i = 5; i >= 0; i--, t >>= 8)
		b[i] = (unsigned char)(t & 0xff);
	if (!util_random_id_bytes(b + 6, sizeof(b) - 6)) {
		log_error("auth.internal", "cannot draw random bytes for a token id");
		return OTPD_INTERNAL;
	}
	for (size_t i = 0; i < sizeof(b); i++) {
		ret[2 * i] = hex[b[i] >> 4];
		ret[2 * i + 1] = hex[b[i] & 15];
	}
	ret[AUTH_JTI_LEN] = '\0';
	return OTPD_OK;
}

/* HMAC-SHA256 of in with j's key. */
static bool sign_hs256(const struct auth_jwt *j, const char *in, size_t n,
                       unsigned char *sig, size_t *sig_len)
{
	*sig_len = OTP_HASH_LEN;
	return otp_hasher_mac(j->hmac, in, n, sig);
}

/* ECDSA P-256 with SHA-256, as JWS wants it (RFC 7518 §3.4): r and s, 32
 * bytes each, not OpenSSL's DER. */
static bool sign_es256(const struct auth_jwt *j, const char *in, size_t n,
                       unsigned char *sig, size_t *sig_len)
{
	unsigned char der[80];
	const unsigned char *p = der;
	size_t der_len = sizeof(der);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	ECDSA_SIG *es = NULL;
	const BIGNUM *r, *s;
	bool ok = false;

	if (!md || EVP_DigestSignInit(md, NULL, j->sha256, NULL, j->pkey) != 1 ||
	    EVP_DigestSign(md, der, &der_len, (const unsigned char *)in, n) != 1)
		goto out;
	es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
	if (!es)
		goto out;
	ECDSA_SIG_get0(es, &r, &s);
	ok = BN_bn2binpad(r, sig, 32) == 32 && BN_bn2binpad(s, sig + 32, 32) == 32;
	*sig_len = 64;
out:
	ECDSA_SIG_free(es);
	EVP_MD_CTX_free(md);
	return ok;
}

enum otpd_status auth_jwt_sign(const struct auth_jwt *j, enum auth_token_type type,
                               int64_t user_id, int64_t iat_s, int64_t exp_s,
                               const char *jti, const char *sid, char **ret)
{
	char sub[24], payload[512];
	unsigned char sig[64];
	size_t hlen = strlen(j->header_b64), plen, slen = 0, n;
	json_t *claims;
	char *out;

	snprintf(sub, sizeof(sub), "%lld", (long long)user_id);
	claims = json_pack("{s:s, s:I, s:s, s:I, s:I, s:s}",
	                   "token_type", type == AUTH_TOKEN_ACCESS ? "access" : "refresh",
	                   "user_id", (json_int_t)user_id, "sub", sub,
	                   "iat", (json_int_t)iat_s, "exp", (json_int_t)exp_s, "jti", jti);
	if (claims && sid && json_object_set_new(claims, "sid", json_string(sid)) != 0) {
		json_decref(claims);
		claims = NULL;
	}
	if (!claims) /* out of memory, or a jti or sid that is not UTF-8 */
		return OTPD_NOMEM;
	plen = json_dumpb(claims, payload, sizeof(payload), JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(claims);
	if (plen == 0 || plen >= sizeof(payload)) {
		log_error("auth.internal", "token claims do not fit (%zu bytes)", plen);
		return OTPD_INTERNAL;
	}

	/* header "." payload "." signature, each base64url (no padding). */
	n = hlen + 1 + 4 * ((plen + 2) / 3) + 1 + 4 * ((sizeof(sig) + 2) / 3) + 1;
	out = malloc(n);
	if (!out)
		return OTPD_NOMEM;
	memcpy(out, j->header_b64, hlen);
	out[hlen] = '.';
	b64url((const unsigned char *)payload, plen, out + hlen + 1);
	n = hlen + 1 + strlen(out + hlen + 1);
	if (!(j->alg == JWT_ALG_ES256 ? sign_es256(j, out, n, sig, &slen)
	                              : sign_hs256(j, out, n, sig, &slen))) {
		free(out);
		log_error("auth.internal", "cannot sign a token (OpenSSL)");
		return OTPD_INTERNAL;
	}
	out[n] = '.';
	b64url(sig, slen, out + n + 1);
	*ret = out;
	return OTPD_OK;
}

/* The JOSE header, decoded without trusting anything in it. */
static json_t *header_of(const char *token)
{
	const char *dot = strchr(token, '.');
	size_t n = dot ? (size_t)(dot - token) : 0;
	char b64[1024];
	unsigned char raw[800];
	int len;

	if (n == 0 || n + 4 >= sizeof(b64))
		return NULL;
	for (size_t i = 0; i < n; i++)
		b64[i] = token[i] == '-' ? '+' : token[i] == '_' ? '/' : token[i];
	while (n % 4)
		b64[n++] = '=';
	b64[n] = '\0';
	len = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
	if (len < 0)
		return NULL;
	/* EVP_DecodeBlock counts the padding as zero bytes: trim them. */
	for (const char *p = b64 + n - 1; *p == '=' && len > 0; p--)
		len--;
	return json_loadb((const char *)raw, (size_t)len, JSON_REJECT_DUPLICATES, NULL);
}

static bool token_shape_ok(const char *token)
{
	size_t n = 0, dots = 0;

	for (; token[n]; n++) {
		char c = token[n];
		if (n >= AUTH_TOKEN_MAX)
			return false;
		if (c == '.')
			dots++;
		else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		           (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
	}
	return dots == 2 && n > 0;
}

/* Pick the verification key by header: alg must be the configured one; with
 * ES256 the kid names the current or the previous key. */
static bool pick_key(const struct auth_jwt *j, const char *token,
                     const unsigned char **ret_key, size_t *ret_len)
{
	json_t *h = header_of(token);
	const char *alg, *kid;
	bool ok = false;

	if (!h)
		return false;
	alg = json_string_value(json_object_get(h, "alg"));
	if (!alg || strcmp(alg, j->alg == JWT_ALG_ES256 ? "ES256" : "HS256") != 0)
		goto out;
	if (j->alg == JWT_ALG_HS256) {
		*ret_key = j->sign_key;
		*ret_len = j->sign_key_len;
		ok = true;
		goto out;
	}
	kid = json_string_value(json_object_get(h, "kid"));
	if (!kid)
		goto out;
	if (strcmp(kid, j->current.kid) == 0) {
		*ret_key = (const unsigned char *)j->current.pub_pem;
		*ret_len = j->current.pub_len;
		ok = true;
	} else if (j->previous.pub_pem && strcmp(kid, j->previous.kid) == 0) {
		*ret_key = (const unsigned char *)j->previous.pub_pem;
		*ret_len = j->previous.pub_len;
		ok = true;
	}
out:
	json_decref(h);
	return ok;
}

static bool int_claim(json_t *claims, const char *name, bool required, int64_t *ret)
{
	json_t *v = json_object_get(claims, name);

	if (!v)
		return !required;
	if (!json_is_integer(v))
		return false;
	*ret = json_integer_value(v);
	return true;
}

static bool check_claims(json_t *c, enum auth_token_type type, int64_t now_s,
                         bool check_exp, struct auth_claims *ret)
{
	const char *tt = json_string_value(json_object_get(c, "token_type"));
	const char *sub = json_string_value(json_object_get(c, "sub"));
	const char *jti = json_string_value(json_object_get(c, "jti"));
	json_t *sid = json_object_get(c, "sid");
	int64_t uid = 0, iat = 0, exp = 0, nbf = 0;
	char sub_expected[24];

	if (!tt || strcmp(tt, type == AUTH_TOKEN_ACCESS ? "access" : "refresh") != 0)
		return false;
	if (!int_claim(c, "user_id", true, &uid) || uid <= 0 ||
	    !int_claim(c, "iat", true, &iat) || !int_claim(c, "exp", true, &exp) ||
	    !int_claim(c, "nbf", false, &nbf))
		return false;
	snprintf(sub_expected, sizeof(sub_expected), "%lld", (long long)uid);
	if (!sub || strcmp(sub, sub_expected) != 0)
		return false;
	if (!jti || !*jti || strlen(jti) >= sizeof(ret->jti))
		return false;
	if (sid && (!json_is_string(sid) || json_string_length(sid) >= sizeof(ret->sid) ||
	            strlen(json_string_value(sid)) != json_string_length(sid)))
		return false;
	if (check_exp && now_s >= exp)
		return false;
	if (iat > now_s + AUTH_CLOCK_LEEWAY_S || nbf > now_s + AUTH_CLOCK_LEEWAY_S)
		return false;
	ret->type = type;
	ret->user_id = uid;
	ret->iat = iat;
	ret->exp = exp;
	strcpy(ret->jti, jti);
	strcpy(ret->sid, sid ? json_string_value(sid) : "");
	return true;
}

enum otpd_status auth_jwt_verify(const struct auth_jwt *j, const char *token,
                                 enum auth_token_type type, int64_t now_s,
                                 bool check_exp, struct auth_claims *ret)
{
	const unsigned char *key = NULL;
	size_t key_len = 0;
	jwt_t *t = NULL;
	char *grants = NULL;
	json_t *claims = NULL;
	struct auth_claims c;
	enum otpd_status st = OTPD_INVALID_TOKEN;

	if (!token || !token_shape_ok(token) || !pick_key(j, token, &key, &key_len))
		return OTPD_INVALID_TOKEN;
	/* libjwt verifies with the alg the token names: checked above and
	 * again here (LIBRARIES.md). */
	if (jwt_decode(&t, token, key, (int)key_len) != 0 || jwt_get_alg(t) != j->alg)
		goto out;
	grants = jwt_get_grants_json(t, NULL);
	claims = grants ? json_loads(grants, JSON_REJECT_DUPLICATES, NULL) : NULL;
	if (!claims || !check_claims(claims, type, now_s, check_exp, &c))
		goto out;
	*ret = c;
	st = OTPD_OK;
out:
	json_decref(claims);
	free(grants);
	jwt_free(t);
	return st;
}

const char *auth_jwt_jwks(const struct auth_jwt *j) { return j->jwks; }
