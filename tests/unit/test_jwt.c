/* auth/jwt.c: signing, verification and JWKS (docs/API.md §3 "Tokens").
 * Tokens are forged here independently of the module: with libjwt, or by
 * hand (base64url segments + HMAC / ECDSA through OpenSSL) for headers libjwt
 * would never write.  Every refusal must be OTPD_INVALID_TOKEN. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log_capture.h"

#include <jansson.h>
#include <jwt.h>           /* libjwt */
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>

#include "auth/jwt.h"      /* the module under test */
#include "log.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#define NOW ((int64_t)1700000000)
#define TTL 900
#define UID ((json_int_t)42)
#define JTI "0123456789abcdef0123456789abcdef"
#define SECRET "unit-test secret key, 32+ bytes long!"
#define HDR_HS256 "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"

/* ---------------------------------------------------------------- helpers */

static char *b64url_encode(const void *in, size_t n)
{
	static const char alpha[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char *p = in;
	char *out = malloc(4 * (n / 3) + 5);
	size_t w = 0, i = 0;

	assert_non_null(out);
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		out[w++] = alpha[v >> 18 & 63];
		out[w++] = alpha[v >> 12 & 63];
		out[w++] = alpha[v >> 6 & 63];
		out[w++] = alpha[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;
		out[w++] = alpha[v >> 18 & 63];
		out[w++] = alpha[v >> 12 & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		out[w++] = alpha[v >> 18 & 63];
		out[w++] = alpha[v >> 12 & 63];
		out[w++] = alpha[v >> 6 & 63];
	}
	out[w] = '\0';
	return out;
}

static int b64url_val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Strict base64url without padding; *ret_len bytes, NUL-terminated. */
static unsigned char *b64url_decode(const char *in, size_t n, size_t *ret_len)
{
	unsigned char *out = malloc(n * 3 / 4 + 2);
	uint32_t acc = 0;
	int bits = 0;
	size_t w = 0;

	assert_non_null(out);
	assert_true(n % 4 != 1);
	for (size_t i = 0; i < n; i++) {
		int v = b64url_val(in[i]);
		assert_true(v >= 0);
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[w++] = (unsigned char)(acc >> bits);
		}
	}
	out[w] = '\0';
	*ret_len = w;
	return out;
}

/* Segment idx (0..2) of a compact JWS: start and length. */
static void segment(const char *tok, int idx, const char **ret, size_t *ret_len)
{
	const char *p = tok;

	for (int i = 0; i < idx; i++) {
		p = strchr(p, '.');
		assert_non_null(p);
		p++;
	}
	*ret = p;
	*ret_len = strcspn(p, ".");
}

static json_t *segment_json(const char *tok, int idx)
{
	const char *s;
	size_t n, len;
	unsigned char *raw;
	json_t *v;
	json_error_t err;

	segment(tok, idx, &s, &n);
	raw = b64url_decode(s, n, &len);
	v = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, &err);
	free(raw);
	assert_non_null(v);
	assert_true(json_is_object(v));
	return v;
}

static char *concat3(const char *a, const char *b, const char *c)
{
	size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
	char *out = malloc(la + lb + lc + 3);

	assert_non_null(out);
	memcpy(out, a, la);
	out[la] = '.';
	memcpy(out + la + 1, b, lb);
	out[la + 1 + lb] = '.';
	memcpy(out + la + 2 + lb, c, lc + 1);
	return out;
}

/* header.payload.signature by hand: header is JSON text, claims is stolen,
 * md NULL for an empty signature. */
static char *forge_hmac(const char *header, json_t *claims, const EVP_MD *md,
                        const void *key, size_t key_len)
{
	char *payload_json, *h, *p, *input, *sig, *tok;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;

	assert_non_null(claims);
	payload_json = json_dumps(claims, JSON_COMPACT);
	json_decref(claims);
	assert_non_null(payload_json);
	h = b64url_encode(header, strlen(header));
	p = b64url_encode(payload_json, strlen(payload_json));
	free(payload_json);
	input = concat3(h, p, "");
	input[strlen(input) - 1] = '\0';   /* drop the trailing '.' */
	if (md) {
		assert_non_null(HMAC(md, key, (int)key_len, (const unsigned char *)input,
		                     strlen(input), mac, &mac_len));
		sig = b64url_encode(mac, mac_len);
	} else {
		sig = b64url_encode("", 0);
	}
	tok = concat3(h, p, sig);
	free(h);
	free(p);
	free(input);
	free(sig);
	return tok;
}

/* A well-formed HS256 token (HMAC by hand, keyed by SECRET). */
static char *forge_hs256(json_t *claims)
{
	return forge_hmac(HDR_HS256, claims, EVP_sha256(), SECRET, strlen(SECRET));
}

/* Through libjwt: any algorithm it knows, an optional kid; claims stolen. */
static char *forge_libjwt(jwt_alg_t alg, const void *key, size_t key_len,
                          const char *kid, json_t *claims)
{
	jwt_t *t = NULL;
	char *grants, *tok;

	assert_non_null(claims);
	grants = json_dumps(claims, JSON_COMPACT);
	json_decref(claims);
	assert_non_null(grants);
	assert_int_equal(jwt_new(&t), 0);
	assert_int_equal(jwt_set_alg(t, alg, key, (int)key_len), 0);
	if (kid)
		assert_int_equal(jwt_add_header(t, "kid", kid), 0);
	assert_int_equal(jwt_add_grants_json(t, grants), 0);
	tok = jwt_encode_str(t);
	assert_non_null(tok);
	jwt_free(t);
	free(grants);
	return tok;
}

/* The claims auth_jwt_sign writes, for forging variants of them. */
static json_t *claims_of(const char *type)
{
	json_t *c = json_pack("{s:s, s:I, s:s, s:I, s:I, s:s}", "token_type", type,
	                      "user_id", UID, "sub", "42", "iat", (json_int_t)NOW,
	                      "exp", (json_int_t)(NOW + TTL), "jti", JTI);
	assert_non_null(c);
	return c;
}

static json_t *with(json_t *c, const char *name, json_t *v)
{
	if (v)
		assert_int_equal(json_object_set_new(c, name, v), 0);
	else
		assert_int_equal(json_object_del(c, name), 0);
	return c;
}

static struct auth_jwt *hs_verifier(void)
{
	struct auth_jwt *j = NULL;

	assert_int_equal(auth_jwt_new_hs256(SECRET, strlen(SECRET), &j), OTPD_OK);
	assert_non_null(j);
	return j;
}

/* Takes tok (freed).  Macros so that a failure names the caller's line. */
#define REFUSED_AT(j, tok, type, now, check_exp) do { \
		char *t_ = (tok); \
		struct auth_claims c_; \
		assert_non_null(t_); \
		assert_int_equal(auth_jwt_verify((j), t_, (type), (now), (check_exp), &c_), \
		                 OTPD_INVALID_TOKEN); \
		free(t_); \
	} while (0)
#define REFUSED(j, tok, type) REFUSED_AT(j, tok, type, NOW, true)
#define ACCEPTED_AT(j, tok, type, now, check_exp) do { \
		char *t_ = (tok); \
		struct auth_claims c_; \
		assert_non_null(t_); \
		assert_int_equal(auth_jwt_verify((j), t_, (type), (now), (check_exp), &c_), OTPD_OK); \
		assert_int_equal(c_.user_id, UID); \
		free(t_); \
	} while (0)
#define ACCEPTED(j, tok, type) ACCEPTED_AT(j, tok, type, NOW, true)


/* ------------------------------------------------------------ key fixture */

struct fixture {
	char dir[64];
	EVP_PKEY *a, *b, *c;          /* P-256 */
	char a_priv[128], a_pub[128], b_priv[128], b_pub[128];
	char p384_priv[128], p384_pub[128], rsa_priv[128], rsa_pub[128];
	char k256_priv[128], k256_pub[128], bp256_priv[128], bp256_pub[128];
	char garbage[128], empty[128], missing[128];
	char *a_pub_pem;              /* bytes of a_pub */
	size_t a_pub_pem_len;
	char *c_priv_pem;             /* for libjwt */
	size_t c_priv_pem_len;
	char *a_priv_pem;
	size_t a_priv_pem_len;
};

static struct fixture fx;

#define GARBAGE_TEXT "-----BEGIN PRIVATE KEY-----\nnot-a-key-ZZTOPSECRET\n-----END PRIVATE KEY-----\n"

static void path_in(char *out, size_t n, const char *name)
{
	int w = snprintf(out, n, "%s/%s", fx.dir, name);

	assert_true(w > 0 && (size_t)w < n);
}

static void write_key(EVP_PKEY *k, const char *path, bool private_key)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	if (private_key)
		assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
	else
		assert_int_equal(PEM_write_PUBKEY(f, k), 1);
	assert_int_equal(fclose(f), 0);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static char *slurp(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf = malloc(65536);
	size_t n;

	assert_non_null(f);
	assert_non_null(buf);
	n = fread(buf, 1, 65535, f);
	fclose(f);
	buf[n] = '\0';
	*ret_len = n;
	return buf;
}

static char *private_pem(EVP_PKEY *k, size_t *ret_len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *mem, *out;
	long n;

	assert_non_null(bio);
	assert_int_equal(PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL), 1);
	n = BIO_get_mem_data(bio, &mem);
	assert_true(n > 0);
	out = malloc((size_t)n + 1);
	assert_non_null(out);
	memcpy(out, mem, (size_t)n);
	out[n] = '\0';
	*ret_len = (size_t)n;
	BIO_free(bio);
	return out;
}

static int fixture_setup(void **state)
{
	EVP_PKEY *p384, *rsa, *k256, *bp256;

	(void)state;
	strcpy(fx.dir, "/tmp/otpd-test-jwt-XXXXXX");
	if (!mkdtemp(fx.dir))
		return -1;
	fx.a = EVP_EC_gen("P-256");
	fx.b = EVP_EC_gen("P-256");
	fx.c = EVP_EC_gen("P-256");
	p384 = EVP_EC_gen("P-384");
	rsa = EVP_RSA_gen(2048);
	/* 256-bit curves that are not P-256: same coordinate size. */
	k256 = EVP_EC_gen("secp256k1");
	bp256 = EVP_EC_gen("brainpoolP256r1");
	if (!fx.a || !fx.b || !fx.c || !p384 || !rsa || !k256 || !bp256)
		return -1;
	path_in(fx.a_priv, sizeof(fx.a_priv), "a.key");
	path_in(fx.a_pub, sizeof(fx.a_pub), "a.pub");
	path_in(fx.b_priv, sizeof(fx.b_priv), "b.key");
	path_in(fx.b_pub, sizeof(fx.b_pub), "b.pub");
	path_in(fx.p384_priv, sizeof(fx.p384_priv), "p384.key");
	path_in(fx.p384_pub, sizeof(fx.p384_pub), "p384.pub");
	path_in(fx.rsa_priv, sizeof(fx.rsa_priv), "rsa.key");
	path_in(fx.rsa_pub, sizeof(fx.rsa_pub), "rsa.pub");
	path_in(fx.k256_priv, sizeof(fx.k256_priv), "k256.key");
	path_in(fx.k256_pub, sizeof(fx.k256_pub), "k256.pub");
	path_in(fx.bp256_priv, sizeof(fx.bp256_priv), "bp256.key");
	path_in(fx.bp256_pub, sizeof(fx.bp256_pub), "bp256.pub");
	path_in(fx.garbage, sizeof(fx.garbage), "garbage.key");
	path_in(fx.empty, sizeof(fx.empty), "empty.key");
	path_in(fx.missing, sizeof(fx.missing), "missing.key");
	write_key(fx.a, fx.a_priv, true);
	write_key(fx.a, fx.a_pub, false);
	write_key(fx.b, fx.b_priv, true);
	write_key(fx.b, fx.b_pub, false);
	write_key(p384, fx.p384_priv, true);
	write_key(p384, fx.p384_pub, false);
	write_key(rsa, fx.rsa_priv, true);
	write_key(rsa, fx.rsa_pub, false);
	write_key(k256, fx.k256_priv, true);
	write_key(k256, fx.k256_pub, false);
	write_key(bp256, fx.bp256_priv, true);
	write_key(bp256, fx.bp256_pub, false);
	write_text(fx.garbage, GARBAGE_TEXT);
	write_text(fx.empty, "");
	fx.a_pub_pem = slurp(fx.a_pub, &fx.a_pub_pem_len);
	fx.a_priv_pem = private_pem(fx.a, &fx.a_priv_pem_len);
	fx.c_priv_pem = private_pem(fx.c, &fx.c_priv_pem_len);
	EVP_PKEY_free(p384);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(k256);
	EVP_PKEY_free(bp256);
	return 0;
}

static int fixture_teardown(void **state)
{
	const char *files[] = { fx.a_priv, fx.a_pub, fx.b_priv, fx.b_pub, fx.p384_priv,
	                        fx.p384_pub, fx.rsa_priv, fx.rsa_pub, fx.k256_priv, fx.k256_pub,
	                        fx.bp256_priv, fx.bp256_pub, fx.garbage, fx.empty };

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(files); i++)
		unlink(files[i]);
	rmdir(fx.dir);
	EVP_PKEY_free(fx.a);
	EVP_PKEY_free(fx.b);
	EVP_PKEY_free(fx.c);
	free(fx.a_pub_pem);
	OPENSSL_cleanse(fx.a_priv_pem, fx.a_priv_pem_len);
	free(fx.a_priv_pem);
	OPENSSL_cleanse(fx.c_priv_pem, fx.c_priv_pem_len);
	free(fx.c_priv_pem);
	return 0;
}

/* The uncompressed point 04 || X || Y, read independently of jwt.c (which
 * uses OSSL_PKEY_PARAM_EC_PUB_X/_Y). */
static void ec_coords(EVP_PKEY *k, unsigned char x[32], unsigned char y[32])
{
	unsigned char pt[133];
	size_t n = 0;

	assert_int_equal(EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pt,
	                                                 sizeof(pt), &n), 1);
	assert_int_equal(n, 65);
	assert_int_equal(pt[0], 0x04);
	memcpy(x, pt + 1, 32);
	memcpy(y, pt + 33, 32);
}

/* RFC 7638 §3: SHA-256 of the required members, sorted, no whitespace. */
static char *thumbprint(EVP_PKEY *k)
{
	unsigned char xb[32], yb[32], digest[SHA256_DIGEST_LENGTH];
	char *x, *y, *canon, *kid;
	json_t *jwk;
	static const char prefix[] = "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"";

	ec_coords(k, xb, yb);
	x = b64url_encode(xb, 32);
	y = b64url_encode(yb, 32);
	assert_int_equal(strlen(x), 43);
	jwk = json_pack("{s:s, s:s, s:s, s:s}", "y", y, "x", x, "kty", "EC", "crv", "P-256");
	assert_non_null(jwk);
	canon = json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS);
	assert_non_null(canon);
	assert_memory_equal(canon, prefix, strlen(prefix));
	assert_int_equal(strlen(canon), strlen(prefix) + 43 + 7 + 43 + 2);
	SHA256((const unsigned char *)canon, strlen(canon), digest);
	kid = b64url_encode(digest, sizeof(digest));
	free(canon);
	json_decref(jwk);
	free(x);
	free(y);
	return kid;
}

/* The ES256 signature checked with OpenSSL alone: JWS carries R || S (64
 * bytes, RFC 7518 §3.4), not DER. */
static bool es256_signature_ok(EVP_PKEY *pub, const char *tok)
{
	const char *s;
	size_t n, sig_len, input_len;
	unsigned char *sig, *der = NULL;
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r, *sv;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int der_len, rc;

	assert_non_null(es);
	assert_non_null(md);
	segment(tok, 2, &s, &n);
	input_len = (size_t)(s - 1 - tok);
	sig = b64url_decode(s, n, &sig_len);
	assert_int_equal(sig_len, 64);
	r = BN_bin2bn(sig, 32, NULL);
	sv = BN_bin2bn(sig + 32, 32, NULL);
	assert_int_equal(ECDSA_SIG_set0(es, r, sv), 1);
	der_len = i2d_ECDSA_SIG(es, &der);
	assert_true(der_len > 0);
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub), 1);
	rc = EVP_DigestVerify(md, der, (size_t)der_len, (const unsigned char *)tok, input_len);
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
	EVP_MD_CTX_free(md);
	free(sig);
	return rc == 1;
}

static struct auth_jwt *es_verifier(const char *priv, const char *prev)
{
	struct auth_jwt *j = NULL;
	char err[256] = "";

	assert_int_equal(auth_jwt_new_es256(priv, prev, err, sizeof(err), &j), OTPD_OK);
	assert_non_null(j);
	return j;
}

static char *sign(const struct auth_jwt *j, enum auth_token_type type)
{
	char *tok = NULL;

	assert_int_equal(auth_jwt_sign(j, type, UID, NOW, NOW + TTL, JTI, NULL, &tok), OTPD_OK);
	assert_non_null(tok);
	return tok;
}

/* ---------------------------------------------------------------- HS256 */

static void check_payload(const char *tok, const char *type, json_int_t uid,
                          int64_t iat, int64_t exp, const char *jti)
{
	json_t *p = segment_json(tok, 1);
	char sub[24];

	snprintf(sub, sizeof(sub), "%lld", (long long)uid);
	assert_true(json_is_string(json_object_get(p, "token_type")));
	assert_string_equal(json_string_value(json_object_get(p, "token_type")), type);
	assert_true(json_is_integer(json_object_get(p, "user_id")));
	assert_int_equal(json_integer_value(json_object_get(p, "user_id")), uid);
	assert_true(json_is_string(json_object_get(p, "sub")));
	assert_string_equal(json_string_value(json_object_get(p, "sub")), sub);
	assert_true(json_is_integer(json_object_get(p, "iat")));
	assert_int_equal(json_integer_value(json_object_get(p, "iat")), iat);
	assert_true(json_is_integer(json_object_get(p, "exp")));
	assert_int_equal(json_integer_value(json_object_get(p, "exp")), exp);
	assert_true(json_is_string(json_object_get(p, "jti")));
	assert_string_equal(json_string_value(json_object_get(p, "jti")), jti);
	json_decref(p);
}

static void test_hs256_round_trip(void **state)
{
	struct auth_jwt *j = hs_verifier();
	char jti[AUTH_JTI_LEN + 1];
	const enum auth_token_type types[] = { AUTH_TOKEN_ACCESS, AUTH_TOKEN_REFRESH };
	const char *names[] = { "access", "refresh" };

	(void)state;
	assert_int_equal(auth_jti_new(NOW * 1000, jti), OTPD_OK);
	for (size_t i = 0; i < ARRAY_LEN(types); i++) {
		char *tok = NULL;
		struct auth_claims c;
		json_t *h;

		memset(&c, 0xa5, sizeof(c));
		assert_int_equal(auth_jwt_sign(j, types[i], UID, NOW, NOW + TTL, jti, NULL, &tok), OTPD_OK);
		assert_non_null(tok);
		assert_int_equal(auth_jwt_verify(j, tok, types[i], NOW, true, &c), OTPD_OK);
		assert_int_equal(c.type, types[i]);
		assert_int_equal(c.user_id, UID);
		assert_int_equal(c.iat, NOW);
		assert_int_equal(c.exp, NOW + TTL);
		assert_string_equal(c.jti, jti);

		h = segment_json(tok, 0);
		assert_string_equal(json_string_value(json_object_get(h, "alg")), "HS256");
		json_decref(h);
		check_payload(tok, names[i], UID, NOW, NOW + TTL, jti);

		/* The signature is plain HMAC-SHA256 over header.payload. */
		{
			const char *s;
			size_t n;
			unsigned char mac[32];
			unsigned int mac_len = 0;
			char *want;

			segment(tok, 2, &s, &n);
			assert_non_null(HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET),
			                     (const unsigned char *)tok, (size_t)(s - 1 - tok),
			                     mac, &mac_len));
			want = b64url_encode(mac, mac_len);
			assert_int_equal(n, strlen(want));
			assert_memory_equal(s, want, n);
			free(want);
		}
		free(tok);
	}
	auth_jwt_free(j);
}

/* sid: written when given, read back; absent without it; a sid that is not
 * a string, too long or holds a NUL is refused. */
static void test_hs256_sid(void **state)
{
	struct auth_jwt *j = hs_verifier();
	char *tok = NULL, sid64[65], sid65[66];
	struct auth_claims c;
	json_t *p;

	(void)state;
	assert_int_equal(auth_jwt_sign(j, AUTH_TOKEN_ACCESS, UID, NOW, NOW + TTL, JTI, JTI, &tok),
	                 OTPD_OK);
	memset(&c, 0xa5, sizeof(c));
	assert_int_equal(auth_jwt_verify(j, tok, AUTH_TOKEN_ACCESS, NOW, true, &c), OTPD_OK);
	assert_string_equal(c.sid, JTI);
	p = segment_json(tok, 1);
	assert_string_equal(json_string_value(json_object_get(p, "sid")), JTI);
	json_decref(p);
	free(tok);

	tok = NULL;
	assert_int_equal(auth_jwt_sign(j, AUTH_TOKEN_REFRESH, UID, NOW, NOW + TTL, JTI, NULL, &tok),
	                 OTPD_OK);
	memset(&c, 0xa5, sizeof(c));
	assert_int_equal(auth_jwt_verify(j, tok, AUTH_TOKEN_REFRESH, NOW, true, &c), OTPD_OK);
	assert_string_equal(c.sid, "");
	p = segment_json(tok, 1);
	assert_null(json_object_get(p, "sid"));
	json_decref(p);
	free(tok);

	memset(sid64, 'b', 64);
	sid64[64] = '\0';
	memset(sid65, 'b', 65);
	sid65[65] = '\0';
	ACCEPTED(j, forge_hs256(with(claims_of("access"), "sid", json_string(sid64))), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "sid", json_string(sid65))), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "sid", json_integer(7))), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "sid", json_null())), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "sid", json_stringn("a\0b", 3))),
	        AUTH_TOKEN_ACCESS);
	auth_jwt_free(j);
}

/* A user id past 2^53 survives (no round trip through a double). */
static void test_hs256_large_user_id(void **state)
{
	struct auth_jwt *j = hs_verifier();
	const int64_t uid = 9007199254740993LL;
	char *tok = NULL;
	struct auth_claims c;

	(void)state;
	assert_int_equal(auth_jwt_sign(j, AUTH_TOKEN_ACCESS, uid, NOW, NOW + TTL, JTI, NULL, &tok), OTPD_OK);
	assert_int_equal(auth_jwt_verify(j, tok, AUTH_TOKEN_ACCESS, NOW, true, &c), OTPD_OK);
	assert_int_equal(c.user_id, uid);
	check_payload(tok, "access", uid, NOW, NOW + TTL, JTI);
	free(tok);
	auth_jwt_free(j);
}

/* The hand forger agrees with the module: a baseline for every refusal. */
static void test_forged_baseline_accepted(void **state)
{
	struct auth_jwt *j = hs_verifier();

	(void)state;
	ACCEPTED(j, forge_hs256(claims_of("access")), AUTH_TOKEN_ACCESS);
	ACCEPTED(j, forge_hs256(claims_of("refresh")), AUTH_TOKEN_REFRESH);
	ACCEPTED(j, forge_libjwt(JWT_ALG_HS256, SECRET, strlen(SECRET), NULL, claims_of("access")),
	         AUTH_TOKEN_ACCESS);
	/* No typ header is fine too. */
	ACCEPTED(j, forge_hmac("{\"alg\":\"HS256\"}", claims_of("access"), EVP_sha256(), SECRET,
	                       strlen(SECRET)),
	         AUTH_TOKEN_ACCESS);
	auth_jwt_free(j);
}

static void test_hs256_wrong_key_and_tampering(void **state)
{
	struct auth_jwt *j = hs_verifier();
	static const char other[] = "unit-test secret key, 32+ bytes long?";
	char *tok;
	const char *s;
	size_t n;

	(void)state;
	REFUSED(j, forge_libjwt(JWT_ALG_HS256, other, strlen(other), NULL, claims_of("access")),
	        AUTH_TOKEN_ACCESS);
	/* A prefix of the key. */
	REFUSED(j, forge_hmac(HDR_HS256, claims_of("access"), EVP_sha256(), SECRET, 8),
	        AUTH_TOKEN_ACCESS);

	/* Flip one character in the middle of the payload. */
	tok = sign(j, AUTH_TOKEN_ACCESS);
	segment(tok, 1, &s, &n);
	{
		char *c = tok + (s - tok) + n / 2;
		*c = *c == 'A' ? 'B' : 'A';
	}
	REFUSED(j, tok, AUTH_TOKEN_ACCESS);

	/* Flip one in the signature, and in the header. */
	tok = sign(j, AUTH_TOKEN_ACCESS);
	segment(tok, 2, &s, &n);
	tok[(s - tok) + n / 2] = tok[(s - tok) + n / 2] == 'A' ? 'B' : 'A';
	REFUSED(j, tok, AUTH_TOKEN_ACCESS);
	tok = sign(j, AUTH_TOKEN_ACCESS);
	tok[5] = tok[5] == 'A' ? 'B' : 'A';
	REFUSED(j, tok, AUTH_TOKEN_ACCESS);

	/* Signature removed. */
	tok = sign(j, AUTH_TOKEN_ACCESS);
	segment(tok, 2, &s, &n);
	tok[s - tok] = '\0';
	REFUSED(j, tok, AUTH_TOKEN_ACCESS);

	/* Payload of one valid token with the signature of another. */
	{
		char *t1 = sign(j, AUTH_TOKEN_ACCESS), *t2 = sign(j, AUTH_TOKEN_REFRESH);
		const char *s1, *s2;
		size_t n1, n2;
		char *mix;

		segment(t1, 2, &s1, &n1);
		segment(t2, 2, &s2, &n2);
		t2[s2 - 1 - t2] = '\0';     /* t2 is now header.payload */
		mix = malloc(strlen(t2) + n1 + 2);
		assert_non_null(mix);
		sprintf(mix, "%s.%s", t2, s1);
		REFUSED(j, mix, AUTH_TOKEN_REFRESH);
		free(t1);
		free(t2);
	}
	auth_jwt_free(j);
}

static void test_hs256_alg_refused(void **state)
{
	struct auth_jwt *j = hs_verifier();
	static const char *none_headers[] = {
		"{\"alg\":\"none\"}", "{\"alg\":\"none\",\"typ\":\"JWT\"}",
		"{\"alg\":\"None\"}", "{\"alg\":\"NONE\"}",
	};
	static const char *odd_headers[] = {
		"{\"alg\":\"hs256\",\"typ\":\"JWT\"}",       /* libjwt might match it caselessly */
		"{\"alg\":\"HS256 \"}",
		"{\"typ\":\"JWT\"}",                         /* no alg */
		"{\"alg\":null}",
		"{\"alg\":[\"HS256\"]}",
		"{\"alg\":\"none\",\"alg\":\"HS256\"}",     /* duplicate member */
		"{\"alg\":\"HS256\",\"alg\":\"none\"}",
		"[\"HS256\"]",
		"\"HS256\"",
		"{\"alg\":\"HS256\"",                        /* truncated JSON */
		"{\"alg\":\"HS256\"}x",
		"",
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(none_headers); i++) {
		/* Empty signature, and a real HMAC as signature. */
		REFUSED(j, forge_hmac(none_headers[i], claims_of("access"), NULL, NULL, 0),
		        AUTH_TOKEN_ACCESS);
		REFUSED(j, forge_hmac(none_headers[i], claims_of("access"), EVP_sha256(), SECRET,
		                      strlen(SECRET)),
		        AUTH_TOKEN_ACCESS);
	}
	for (size_t i = 0; i < ARRAY_LEN(odd_headers); i++)
		REFUSED(j, forge_hmac(odd_headers[i], claims_of("access"), EVP_sha256(), SECRET,
		                      strlen(SECRET)),
		        AUTH_TOKEN_ACCESS);
	/* Whitespace around the JSON is still JSON (RFC 8259 §2). */
	ACCEPTED(j, forge_hmac(" {\"alg\" : \"HS256\"}\n", claims_of("access"), EVP_sha256(),
	                       SECRET, strlen(SECRET)),
	         AUTH_TOKEN_ACCESS);

	/* Stronger HMACs with the right key are still not the configured alg. */
	REFUSED(j, forge_libjwt(JWT_ALG_HS384, SECRET, strlen(SECRET), NULL, claims_of("access")),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_libjwt(JWT_ALG_HS512, SECRET, strlen(SECRET), NULL, claims_of("access")),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hmac("{\"alg\":\"HS384\"}", claims_of("access"), EVP_sha384(), SECRET,
	                      strlen(SECRET)),
	        AUTH_TOKEN_ACCESS);
	/* HS256 header, HS512 MAC. */
	REFUSED(j, forge_hmac(HDR_HS256, claims_of("access"), EVP_sha512(), SECRET, strlen(SECRET)),
	        AUTH_TOKEN_ACCESS);
	/* A valid ES256 token is not an HS256 one. */
	REFUSED(j, forge_libjwt(JWT_ALG_ES256, fx.a_priv_pem, fx.a_priv_pem_len, NULL,
	                        claims_of("access")),
	        AUTH_TOKEN_ACCESS);
	auth_jwt_free(j);
}

static void test_hs256_time_claims(void **state)
{
	struct auth_jwt *j = hs_verifier();
	const json_int_t L = AUTH_CLOCK_LEEWAY_S;

	(void)state;
	/* exp: now must be strictly before it. */
	REFUSED(j, forge_hs256(with(claims_of("access"), "exp", json_integer(NOW))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "exp", json_integer(NOW - 1))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "exp", json_integer(0))),
	        AUTH_TOKEN_ACCESS);
	ACCEPTED(j, forge_hs256(with(claims_of("access"), "exp", json_integer(NOW + 1))),
	         AUTH_TOKEN_ACCESS);
	/* The module's own token, at and after its expiry. */
	REFUSED_AT(j, sign(j, AUTH_TOKEN_ACCESS), AUTH_TOKEN_ACCESS, NOW + TTL, true);
	ACCEPTED_AT(j, sign(j, AUTH_TOKEN_ACCESS), AUTH_TOKEN_ACCESS, NOW + TTL - 1, true);
	/* check_exp = false accepts an expired token (logout), nothing more. */
	ACCEPTED_AT(j, forge_hs256(with(claims_of("refresh"), "exp", json_integer(NOW - 3600))),
	            AUTH_TOKEN_REFRESH, NOW, false);
	ACCEPTED_AT(j, sign(j, AUTH_TOKEN_REFRESH), AUTH_TOKEN_REFRESH, NOW + 10 * TTL, false);
	REFUSED_AT(j, forge_hs256(with(with(claims_of("refresh"), "exp", json_integer(NOW - 3600)),
	                               "token_type", json_string("access"))),
	           AUTH_TOKEN_REFRESH, NOW, false);
	REFUSED_AT(j, forge_libjwt(JWT_ALG_HS256, "x", 1, NULL,
	                           with(claims_of("refresh"), "exp", json_integer(NOW - 3600))),
	           AUTH_TOKEN_REFRESH, NOW, false);
	/* exp must still be an integer. */
	REFUSED_AT(j, forge_hs256(with(claims_of("refresh"), "exp", NULL)), AUTH_TOKEN_REFRESH,
	           NOW, false);
	REFUSED_AT(j, forge_hs256(with(claims_of("refresh"), "exp", json_string("1700000900"))),
	           AUTH_TOKEN_REFRESH, NOW, false);

	/* iat and nbf: up to the leeway in the future. */
	ACCEPTED(j, forge_hs256(with(claims_of("access"), "iat", json_integer(NOW + L))),
	         AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "iat", json_integer(NOW + L + 1))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "iat", json_integer(NOW + 3600))),
	        AUTH_TOKEN_ACCESS);
	ACCEPTED(j, forge_hs256(with(claims_of("access"), "nbf", json_integer(NOW + L))),
	         AUTH_TOKEN_ACCESS);
	ACCEPTED(j, forge_hs256(with(claims_of("access"), "nbf", json_integer(NOW - 10))),
	         AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "nbf", json_integer(NOW + L + 1))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "nbf", json_integer(NOW + 3600))),
	        AUTH_TOKEN_ACCESS);
	/* Also with check_exp = false. */
	REFUSED_AT(j, forge_hs256(with(claims_of("refresh"), "iat", json_integer(NOW + L + 1))),
	           AUTH_TOKEN_REFRESH, NOW, false);
	/* Wrong types. */
	REFUSED(j, forge_hs256(with(claims_of("access"), "exp", json_string("1700000900"))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "exp", json_real((double)NOW + TTL))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "exp", json_null())), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "exp", NULL)), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "iat", json_string("1700000000"))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "iat", NULL)), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "nbf", json_string("0"))),
	        AUTH_TOKEN_ACCESS);
	auth_jwt_free(j);
}

static void test_hs256_token_type(void **state)
{
	struct auth_jwt *j = hs_verifier();

	(void)state;
	REFUSED(j, sign(j, AUTH_TOKEN_ACCESS), AUTH_TOKEN_REFRESH);
	REFUSED(j, sign(j, AUTH_TOKEN_REFRESH), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(claims_of("access")), AUTH_TOKEN_REFRESH);
	REFUSED(j, forge_hs256(with(claims_of("access"), "token_type", NULL)), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "token_type", NULL)), AUTH_TOKEN_REFRESH);
	REFUSED(j, forge_hs256(with(claims_of("access"), "token_type", json_string("ACCESS"))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "token_type", json_string("access "))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "token_type", json_string(""))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "token_type", json_integer(0))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "token_type", json_null())),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("refresh"), "token_type", json_string("Refresh"))),
	        AUTH_TOKEN_REFRESH);
	auth_jwt_free(j);
}

static void test_hs256_subject_claims(void **state)
{
	struct auth_jwt *j = hs_verifier();
	char jti64[65], jti65[66];

	(void)state;
	/* user_id */
	REFUSED(j, forge_hs256(with(claims_of("access"), "user_id", NULL)), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "user_id", json_string("42"))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(with(claims_of("access"), "user_id", json_integer(0)), "sub",
	                            json_string("0"))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(with(claims_of("access"), "user_id", json_integer(-42)), "sub",
	                            json_string("-42"))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "user_id", json_real(42.0))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "user_id", json_true())), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "user_id", json_null())), AUTH_TOKEN_ACCESS);
	/* sub: present, a string, equal to user_id. */
	REFUSED(j, forge_hs256(with(claims_of("access"), "sub", NULL)), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "sub", json_string("43"))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "sub", json_string("042"))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "sub", json_string("42 "))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "sub", json_string(""))), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "sub", json_integer(42))),
	        AUTH_TOKEN_ACCESS);
	/* jti: a non-empty string of at most 64 characters. */
	memset(jti64, 'a', 64);
	jti64[64] = '\0';
	memset(jti65, 'a', 65);
	jti65[65] = '\0';
	REFUSED(j, forge_hs256(with(claims_of("access"), "jti", NULL)), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "jti", json_string(""))), AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "jti", json_string(jti65))),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hs256(with(claims_of("access"), "jti", json_integer(1))), AUTH_TOKEN_ACCESS);
	{
		char *tok = forge_hs256(with(claims_of("access"), "jti", json_string(jti64)));
		struct auth_claims c;

		assert_int_equal(auth_jwt_verify(j, tok, AUTH_TOKEN_ACCESS, NOW, true, &c), OTPD_OK);
		assert_string_equal(c.jti, jti64);
		free(tok);
	}
	auth_jwt_free(j);
}

/* A validly signed HS256 token whose total length is exactly `len`, or NULL
 * if padding cannot land on it. */
static char *hs256_token_of_length(size_t len)
{
	for (size_t pad = 0; pad < len; pad++) {
		char *p = malloc(pad + 1);
		char *tok;

		assert_non_null(p);
		memset(p, 'p', pad);
		p[pad] = '\0';
		tok = forge_hs256(with(claims_of("access"), "pad", json_string(p)));
		free(p);
		size_t got = strlen(tok);

		if (got == len)
			return tok;
		free(tok);
		if (got > len)
			break;
	}
	return NULL;
}

static void test_hs256_malformed(void **state)
{
	struct auth_jwt *j = hs_verifier();
	struct auth_claims c;
	char *good = sign(j, AUTH_TOKEN_ACCESS);
	const char *s;
	size_t n;
	char *tok;

	(void)state;
	assert_int_equal(auth_jwt_verify(j, NULL, AUTH_TOKEN_ACCESS, NOW, true, &c),
	                 OTPD_INVALID_TOKEN);
	REFUSED(j, strdup(""), AUTH_TOKEN_ACCESS);
	REFUSED(j, strdup("garbage"), AUTH_TOKEN_ACCESS);
	REFUSED(j, strdup("."), AUTH_TOKEN_ACCESS);
	REFUSED(j, strdup(".."), AUTH_TOKEN_ACCESS);
	REFUSED(j, strdup("..."), AUTH_TOKEN_ACCESS);
	REFUSED(j, strdup("a.b.c"), AUTH_TOKEN_ACCESS);
	REFUSED(j, strdup("eyJhbGciOiJIUzI1NiJ9.e30."), AUTH_TOKEN_ACCESS);

	/* Two segments: header.payload. */
	segment(good, 2, &s, &n);
	tok = strndup(good, (size_t)(s - 1 - good));
	REFUSED(j, tok, AUTH_TOKEN_ACCESS);
	/* Four segments: a valid token with one more. */
	tok = malloc(strlen(good) + 8);
	assert_non_null(tok);
	sprintf(tok, "%s.e30", good);
	REFUSED(j, tok, AUTH_TOKEN_ACCESS);
	tok = malloc(strlen(good) + 8);
	assert_non_null(tok);
	sprintf(tok, "%s.", good);
	REFUSED(j, tok, AUTH_TOKEN_ACCESS);
	/* Empty segments around the right ones. */
	tok = malloc(strlen(good) + 8);
	assert_non_null(tok);
	sprintf(tok, ".%s", good);
	REFUSED(j, tok, AUTH_TOKEN_ACCESS);
	/* Illegal characters: padding, standard base64, whitespace, UTF-8,
	 * "%", at the end and in the middle of a valid token. */
	{
		static const char *extra[] = { "=", "==", "+", "/", " ", "\n", "\t", "\xc3\xa9", "%" };
		for (size_t i = 0; i < ARRAY_LEN(extra); i++) {
			tok = malloc(strlen(good) + 8);
			assert_non_null(tok);
			sprintf(tok, "%s%s", good, extra[i]);
			REFUSED(j, tok, AUTH_TOKEN_ACCESS);
			tok = malloc(strlen(good) + 8);
			assert_non_null(tok);
			segment(good, 1, &s, &n);
			sprintf(tok, "%.*s%s%s", (int)(s - good + 3), good, extra[i], s + 3);
			REFUSED(j, tok, AUTH_TOKEN_ACCESS);
		}
		tok = malloc(strlen(good) + 8);
		assert_non_null(tok);
		sprintf(tok, " %s", good);
		REFUSED(j, tok, AUTH_TOKEN_ACCESS);
		/* "Bearer " is the HTTP layer's business, not a token character. */
		tok = malloc(strlen(good) + 8);
		assert_non_null(tok);
		sprintf(tok, "Bearer %s", good);
		REFUSED(j, tok, AUTH_TOKEN_ACCESS);
	}
	/* Header that is not base64url-decodable to JSON. */
	segment(good, 1, &s, &n);
	tok = malloc(strlen(good) + 8);
	assert_non_null(tok);
	sprintf(tok, "A%s", s - 1);   /* header "A" (1 char: impossible length) */
	REFUSED(j, tok, AUTH_TOKEN_ACCESS);

	/* Length: a validly signed token of AUTH_TOKEN_MAX characters passes,
	 * one character more is refused unread. */
	tok = hs256_token_of_length(AUTH_TOKEN_MAX);
	if (!tok)
		tok = hs256_token_of_length(AUTH_TOKEN_MAX - 1);
	ACCEPTED(j, tok, AUTH_TOKEN_ACCESS);
	tok = hs256_token_of_length(AUTH_TOKEN_MAX + 1);
	if (!tok)
		tok = hs256_token_of_length(AUTH_TOKEN_MAX + 2);
	REFUSED(j, tok, AUTH_TOKEN_ACCESS);
	tok = hs256_token_of_length(3 * AUTH_TOKEN_MAX);
	if (!tok)
		tok = hs256_token_of_length(3 * AUTH_TOKEN_MAX + 1);
	REFUSED(j, tok, AUTH_TOKEN_ACCESS);
	/* A huge run of legal characters. */
	tok = malloc(1 << 20);
	assert_non_null(tok);
	memset(tok, 'A', (1 << 20) - 1);
	tok[(1 << 20) - 1] = '\0';
	tok[100] = '.';
	tok[200] = '.';
	REFUSED(j, tok, AUTH_TOKEN_ACCESS);

	/* Payload not JSON / not an object, correctly signed. */
	{
		static const char *payloads[] = { "", "null", "[]", "42", "\"x\"", "{", "{}" };
		for (size_t i = 0; i < ARRAY_LEN(payloads); i++) {
			char *h = b64url_encode(HDR_HS256, strlen(HDR_HS256));
			char *p = b64url_encode(payloads[i], strlen(payloads[i]));
			char *input = malloc(strlen(h) + strlen(p) + 2);
			unsigned char mac[32];
			unsigned int mac_len = 0;
			char *sig;

			assert_non_null(input);
			sprintf(input, "%s.%s", h, p);
			assert_non_null(HMAC(EVP_sha256(), SECRET, (int)strlen(SECRET),
			                     (const unsigned char *)input, strlen(input), mac, &mac_len));
			sig = b64url_encode(mac, mac_len);
			REFUSED(j, concat3(h, p, sig), AUTH_TOKEN_ACCESS);
			free(h);
			free(p);
			free(input);
			free(sig);
		}
	}
	free(good);
	auth_jwt_free(j);
}

static void test_hs256_jwks_empty(void **state)
{
	struct auth_jwt *j = hs_verifier();

	(void)state;
	assert_string_equal(auth_jwt_jwks(j), "{\"keys\":[]}");
	auth_jwt_free(j);
}

static void test_jti_new(void **state)
{
	char a[AUTH_JTI_LEN + 1], b[AUTH_JTI_LEN + 1];

	char c[AUTH_JTI_LEN + 1];

	(void)state;
	/* 0x0123456789ab ms: the first 12 hex digits, big-endian. */
	assert_int_equal(auth_jti_new(INT64_C(0x0123456789ab), a), OTPD_OK);
	assert_int_equal(auth_jti_new(INT64_C(0x0123456789ab), b), OTPD_OK);
	assert_int_equal(strlen(a), AUTH_JTI_LEN);
	assert_int_equal(strspn(a, "0123456789abcdef"), AUTH_JTI_LEN);
	assert_memory_equal(a, "0123456789ab", 12);
	assert_memory_equal(b, "0123456789ab", 12);
	/* The same millisecond: the 80 random bits differ. */
	assert_string_not_equal(a + 12, b + 12);
	/* Later times sort after earlier ones, whatever the random part. */
	assert_int_equal(auth_jti_new(INT64_C(0x0123456789ac), c), OTPD_OK);
	assert_true(strcmp(c, a) > 0 && strcmp(c, b) > 0);
	assert_int_equal(auth_jti_new(1764107000000, c), OTPD_OK);
	assert_memory_equal(c, "019abc", 6); /* 2025-11-25: 0x019abc... */
}

/* ---------------------------------------------------------------- ES256 */

static void check_jwk(json_t *k, EVP_PKEY *key)
{
	unsigned char xb[32], yb[32];
	unsigned char *x, *y;
	size_t xl, yl;
	char *kid = thumbprint(key);
	const char *xs, *ys;

	assert_true(json_is_object(k));
	/* Exactly these members: no private "d", nothing else. */
	assert_int_equal(json_object_size(k), 7);
	assert_string_equal(json_string_value(json_object_get(k, "kty")), "EC");
	assert_string_equal(json_string_value(json_object_get(k, "crv")), "P-256");
	assert_string_equal(json_string_value(json_object_get(k, "use")), "sig");
	assert_string_equal(json_string_value(json_object_get(k, "alg")), "ES256");
	assert_string_equal(json_string_value(json_object_get(k, "kid")), kid);
	xs = json_string_value(json_object_get(k, "x"));
	ys = json_string_value(json_object_get(k, "y"));
	assert_non_null(xs);
	assert_non_null(ys);
	ec_coords(key, xb, yb);
	x = b64url_decode(xs, strlen(xs), &xl);
	y = b64url_decode(ys, strlen(ys), &yl);
	assert_int_equal(xl, 32);
	assert_int_equal(yl, 32);
	assert_memory_equal(x, xb, 32);
	assert_memory_equal(y, yb, 32);
	free(x);
	free(y);
	free(kid);
}

static json_t *jwks_keys(const struct auth_jwt *j, size_t want)
{
	json_error_t err;
	json_t *doc = json_loads(auth_jwt_jwks(j), JSON_REJECT_DUPLICATES, &err);

	assert_non_null(doc);
	assert_int_equal(json_object_size(doc), 1);
	assert_true(json_is_array(json_object_get(doc, "keys")));
	assert_int_equal(json_array_size(json_object_get(doc, "keys")), want);
	return doc;
}

static void test_es256_sign_verify_jwks(void **state)
{
	struct auth_jwt *j = es_verifier(fx.a_priv, NULL);
	char *tok = sign(j, AUTH_TOKEN_ACCESS);
	char *kid = thumbprint(fx.a);
	struct auth_claims c;
	json_t *h, *doc;

	(void)state;
	h = segment_json(tok, 0);
	assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
	assert_string_equal(json_string_value(json_object_get(h, "kid")), kid);
	json_decref(h);
	check_payload(tok, "access", UID, NOW, NOW + TTL, JTI);
	assert_true(es256_signature_ok(fx.a, tok));
	assert_false(es256_signature_ok(fx.b, tok));
	assert_int_equal(auth_jwt_verify(j, tok, AUTH_TOKEN_ACCESS, NOW, true, &c), OTPD_OK);
	assert_int_equal(c.type, AUTH_TOKEN_ACCESS);
	assert_int_equal(c.user_id, UID);
	assert_int_equal(c.iat, NOW);
	assert_int_equal(c.exp, NOW + TTL);
	assert_string_equal(c.jti, JTI);
	REFUSED(j, sign(j, AUTH_TOKEN_REFRESH), AUTH_TOKEN_ACCESS);
	ACCEPTED(j, sign(j, AUTH_TOKEN_REFRESH), AUTH_TOKEN_REFRESH);
	/* Claims are checked with ES256 too. */
	REFUSED_AT(j, strdup(tok), AUTH_TOKEN_ACCESS, NOW + TTL, true);
	REFUSED(j, forge_libjwt(JWT_ALG_ES256, fx.a_priv_pem, fx.a_priv_pem_len, kid,
	                        with(claims_of("access"), "sub", json_string("7"))),
	        AUTH_TOKEN_ACCESS);
	/* An ES256 token forged with libjwt and the same key verifies. */
	ACCEPTED(j, forge_libjwt(JWT_ALG_ES256, fx.a_priv_pem, fx.a_priv_pem_len, kid,
	                         claims_of("access")),
	         AUTH_TOKEN_ACCESS);

	doc = jwks_keys(j, 1);
	check_jwk(json_array_get(json_object_get(doc, "keys"), 0), fx.a);
	json_decref(doc);
	/* An empty previous-key path means none. */
	{
		struct auth_jwt *j2 = es_verifier(fx.a_priv, "");
		assert_string_equal(auth_jwt_jwks(j2), auth_jwt_jwks(j));
		ACCEPTED(j2, strdup(tok), AUTH_TOKEN_ACCESS);
		auth_jwt_free(j2);
	}
	free(kid);
	free(tok);
	auth_jwt_free(j);
}

/* Keys are prepared once and shared: signing from several threads at once
 * gives tokens that all verify (HS256 duplicates one keyed HMAC context,
 * ES256 signs with one parsed key). */
struct sign_worker {
	struct auth_jwt *j;
	int ok;
};

static void *sign_many(void *arg)
{
	struct sign_worker *w = arg;

	for (int i = 0; i < 200; i++) {
		char *tok = NULL;
		struct auth_claims c;
		enum auth_token_type type = i % 2 ? AUTH_TOKEN_REFRESH : AUTH_TOKEN_ACCESS;

		if (auth_jwt_sign(w->j, type, UID + i, NOW, NOW + TTL, JTI, NULL, &tok) == OTPD_OK &&
		    auth_jwt_verify(w->j, tok, type, NOW, true, &c) == OTPD_OK &&
		    c.user_id == UID + i)
			w->ok++;
		free(tok);
	}
	return NULL;
}

static void test_sign_threads(void **state)
{
	struct auth_jwt *js[2] = { hs_verifier(), es_verifier(fx.a_priv, NULL) };

	(void)state;
	for (size_t k = 0; k < ARRAY_LEN(js); k++) {
		struct sign_worker w[4];
		pthread_t t[4];

		for (int i = 0; i < 4; i++) {
			w[i] = (struct sign_worker){ .j = js[k], .ok = 0 };
			assert_int_equal(pthread_create(&t[i], NULL, sign_many, &w[i]), 0);
		}
		for (int i = 0; i < 4; i++) {
			assert_int_equal(pthread_join(t[i], NULL), 0);
			assert_int_equal(w[i].ok, 200);
		}
		auth_jwt_free(js[k]);
	}
}

static void test_es256_kid(void **state)
{
	struct auth_jwt *j = es_verifier(fx.a_priv, NULL);
	char *kid = thumbprint(fx.a);
	char *kid_b = thumbprint(fx.b);
	char wrong[64];

	(void)state;
	/* Missing kid, wrong kid, another key's kid, a kid of the wrong type. */
	REFUSED(j, forge_libjwt(JWT_ALG_ES256, fx.a_priv_pem, fx.a_priv_pem_len, NULL,
	                        claims_of("access")),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_libjwt(JWT_ALG_ES256, fx.a_priv_pem, fx.a_priv_pem_len, "abc",
	                        claims_of("access")),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_libjwt(JWT_ALG_ES256, fx.a_priv_pem, fx.a_priv_pem_len, "",
	                        claims_of("access")),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_libjwt(JWT_ALG_ES256, fx.a_priv_pem, fx.a_priv_pem_len, kid_b,
	                        claims_of("access")),
	        AUTH_TOKEN_ACCESS);
	snprintf(wrong, sizeof(wrong), "%s", kid);
	wrong[strlen(wrong) - 1] = '\0';                 /* a prefix */
	REFUSED(j, forge_libjwt(JWT_ALG_ES256, fx.a_priv_pem, fx.a_priv_pem_len, wrong,
	                        claims_of("access")),
	        AUTH_TOKEN_ACCESS);
	snprintf(wrong, sizeof(wrong), "%sx", kid);      /* an extension */
	REFUSED(j, forge_libjwt(JWT_ALG_ES256, fx.a_priv_pem, fx.a_priv_pem_len, wrong,
	                        claims_of("access")),
	        AUTH_TOKEN_ACCESS);
	{
		jwt_t *t = NULL;
		char *tok;

		assert_int_equal(jwt_new(&t), 0);
		assert_int_equal(jwt_set_alg(t, JWT_ALG_ES256, (const unsigned char *)fx.a_priv_pem,
		                             (int)fx.a_priv_pem_len), 0);
		assert_int_equal(jwt_add_header_int(t, "kid", 1), 0);
		assert_int_equal(jwt_add_grants_json(t, "{\"token_type\":\"access\",\"user_id\":42,"
		                                        "\"sub\":\"42\",\"iat\":1700000000,"
		                                        "\"exp\":1700000900,\"jti\":\"x\"}"), 0);
		tok = jwt_encode_str(t);
		jwt_free(t);
		REFUSED(j, tok, AUTH_TOKEN_ACCESS);
	}
	/* Another P-256 key, presenting this key's kid. */
	REFUSED(j, forge_libjwt(JWT_ALG_ES256, fx.c_priv_pem, fx.c_priv_pem_len, kid,
	                        claims_of("access")),
	        AUTH_TOKEN_ACCESS);
	free(kid);
	free(kid_b);
	auth_jwt_free(j);
}

/* The classic confusion: HS256 keyed by the (public) PEM text. */
static void test_es256_alg_confusion(void **state)
{
	struct auth_jwt *j = es_verifier(fx.a_priv, NULL);
	char *kid = thumbprint(fx.a);
	char header[256];
	char *tok;
	jwt_t *t = NULL;

	(void)state;
	/* With libjwt, exactly as an attacker would. */
	tok = forge_libjwt(JWT_ALG_HS256, fx.a_pub_pem, fx.a_pub_pem_len, kid, claims_of("access"));
	/* The attack is real: libjwt alone accepts it with the PEM as key. */
	assert_int_equal(jwt_decode(&t, tok, (const unsigned char *)fx.a_pub_pem,
	                            (int)fx.a_pub_pem_len), 0);
	jwt_free(t);
	REFUSED(j, tok, AUTH_TOKEN_ACCESS);
	/* By hand, also without trailing newline, without typ. */
	snprintf(header, sizeof(header), "{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", kid);
	REFUSED(j, forge_hmac(header, claims_of("access"), EVP_sha256(), fx.a_pub_pem,
	                      fx.a_pub_pem_len),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hmac(header, claims_of("access"), EVP_sha256(), fx.a_pub_pem,
	                      fx.a_pub_pem_len - 1),
	        AUTH_TOKEN_ACCESS);
	snprintf(header, sizeof(header), "{\"alg\":\"HS256\",\"kid\":\"%s\"}", kid);
	REFUSED(j, forge_hmac(header, claims_of("access"), EVP_sha256(), fx.a_pub_pem,
	                      fx.a_pub_pem_len),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_hmac(HDR_HS256, claims_of("access"), EVP_sha256(), fx.a_pub_pem,
	                      fx.a_pub_pem_len),
	        AUTH_TOKEN_ACCESS);
	REFUSED(j, forge_libjwt(JWT_ALG_HS512, fx.a_pub_pem, fx.a_pub_pem_len, kid,
	                        claims_of("access")),
	        AUTH_TOKEN_ACCESS);
	/* alg none with the right kid. */
	snprintf(header, sizeof(header), "{\"alg\":\"none\",\"kid\":\"%s\"}", kid);
	REFUSED(j, forge_hmac(header, claims_of("access"), NULL, NULL, 0), AUTH_TOKEN_ACCESS);
	/* A header claiming ES384 over a valid ES256 signature input. */
	snprintf(header, sizeof(header), "{\"alg\":\"ES384\",\"kid\":\"%s\"}", kid);
	REFUSED(j, forge_hmac(header, claims_of("access"), EVP_sha256(), fx.a_pub_pem,
	                      fx.a_pub_pem_len),
	        AUTH_TOKEN_ACCESS);
	/* An HS256 token keyed by SECRET-like bytes is just as foreign. */
	REFUSED(j, forge_hs256(claims_of("access")), AUTH_TOKEN_ACCESS);
	free(kid);
	auth_jwt_free(j);
}

static void test_es256_previous_key(void **state)
{
	struct auth_jwt *ja = es_verifier(fx.a_priv, NULL);
	struct auth_jwt *jb = es_verifier(fx.b_priv, NULL);
	struct auth_jwt *jba = es_verifier(fx.b_priv, fx.a_pub);
	char *tok_a = sign(ja, AUTH_TOKEN_REFRESH);
	char *kid_b = thumbprint(fx.b);
	json_t *doc, *h;
	char *tok_b;

	(void)state;
	ACCEPTED(jba, strdup(tok_a), AUTH_TOKEN_REFRESH);
	REFUSED(jb, strdup(tok_a), AUTH_TOKEN_REFRESH);
	/* The rotated verifier signs with B (and A's verifier refuses it). */
	tok_b = sign(jba, AUTH_TOKEN_ACCESS);
	h = segment_json(tok_b, 0);
	assert_string_equal(json_string_value(json_object_get(h, "kid")), kid_b);
	json_decref(h);
	assert_true(es256_signature_ok(fx.b, tok_b));
	ACCEPTED(jba, strdup(tok_b), AUTH_TOKEN_ACCESS);
	ACCEPTED(jb, strdup(tok_b), AUTH_TOKEN_ACCESS);
	REFUSED(ja, strdup(tok_b), AUTH_TOKEN_ACCESS);
	/* The previous key only verifies what it really signed. */
	{
		char *kid_a = thumbprint(fx.a);

		REFUSED(jba, forge_libjwt(JWT_ALG_ES256, fx.c_priv_pem, fx.c_priv_pem_len, kid_a,
		                          claims_of("refresh")),
		        AUTH_TOKEN_REFRESH);
		/* A's real signature, but a kid naming neither key, or none:
		 * an unknown kid never falls back to some key. */
		REFUSED(jba, forge_libjwt(JWT_ALG_ES256, fx.a_priv_pem, fx.a_priv_pem_len, "abc",
		                          claims_of("refresh")),
		        AUTH_TOKEN_REFRESH);
		REFUSED(jba, forge_libjwt(JWT_ALG_ES256, fx.a_priv_pem, fx.a_priv_pem_len, NULL,
		                          claims_of("refresh")),
		        AUTH_TOKEN_REFRESH);
		/* A's signature under B's kid. */
		REFUSED(jba, forge_libjwt(JWT_ALG_ES256, fx.a_priv_pem, fx.a_priv_pem_len, kid_b,
		                          claims_of("refresh")),
		        AUTH_TOKEN_REFRESH);
		/* Alg confusion against the previous key's PEM. */
		REFUSED(jba, forge_libjwt(JWT_ALG_HS256, fx.a_pub_pem, fx.a_pub_pem_len, kid_a,
		                          claims_of("refresh")),
		        AUTH_TOKEN_REFRESH);
		free(kid_a);
	}

	doc = jwks_keys(jba, 2);
	check_jwk(json_array_get(json_object_get(doc, "keys"), 0), fx.b);
	check_jwk(json_array_get(json_object_get(doc, "keys"), 1), fx.a);
	json_decref(doc);
	doc = jwks_keys(jb, 1);
	check_jwk(json_array_get(json_object_get(doc, "keys"), 0), fx.b);
	json_decref(doc);

	free(kid_b);
	free(tok_a);
	free(tok_b);
	auth_jwt_free(ja);
	auth_jwt_free(jb);
	auth_jwt_free(jba);
}

/* var: the setting the error message must name. */
static void expect_new_fails(const char *priv, const char *prev, const char *var)
{
	struct auth_jwt *j = NULL;
	char err[512];
	int fd = log_capture_start();
	enum otpd_status st;
	const char *log;

	memset(err, 0, sizeof(err));
	st = auth_jwt_new_es256(priv, prev, err, sizeof(err), &j);
	log = log_capture_end(fd);
	assert_int_not_equal(st, OTPD_OK);
	assert_null(j);
	/* One line naming the variable; no key material anywhere. */
	assert_true(strncmp(err, var, strlen(var)) == 0);
	assert_int_equal(err[strlen(var)], ':');
	assert_null(strchr(err, '\n'));
	assert_null(strstr(err, "ZZTOPSECRET"));
	assert_null(strstr(err, "BEGIN"));
	assert_null(strstr(log, "ZZTOPSECRET"));
	assert_null(strstr(log, "BEGIN"));
}

#define PRIV "JWT_PRIVATE_KEY_FILE"
#define PREV "JWT_PREVIOUS_PUBLIC_KEY_FILE"

static void test_es256_bad_keys(void **state)
{
	(void)state;
	expect_new_fails(fx.missing, NULL, PRIV);
	expect_new_fails(fx.rsa_priv, NULL, PRIV);
	expect_new_fails(fx.p384_priv, NULL, PRIV);
	expect_new_fails(fx.k256_priv, NULL, PRIV);
	expect_new_fails(fx.bp256_priv, NULL, PRIV);
	expect_new_fails(fx.garbage, NULL, PRIV);
	expect_new_fails(fx.empty, NULL, PRIV);
	expect_new_fails(fx.dir, NULL, PRIV);             /* a directory */
	expect_new_fails(fx.a_pub, NULL, PRIV);           /* a public key as the private one */
	/* A good private key with a bad previous public key. */
	expect_new_fails(fx.a_priv, fx.missing, PREV);
	expect_new_fails(fx.a_priv, fx.rsa_pub, PREV);
	expect_new_fails(fx.a_priv, fx.p384_pub, PREV);
	expect_new_fails(fx.a_priv, fx.k256_pub, PREV);
	expect_new_fails(fx.a_priv, fx.bp256_pub, PREV);
	expect_new_fails(fx.a_priv, fx.garbage, PREV);
	expect_new_fails(fx.a_priv, fx.a_priv, PREV);     /* a private key as the public one */
	expect_new_fails(fx.a_priv, fx.empty, PREV);
}

/* A long path is cut, never overflows err. */
static void test_es256_error_truncated(void **state)
{
	char path[400], err[16];
	struct auth_jwt *j = NULL;

	(void)state;
	memset(path, 'x', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	memset(err, 0x7f, sizeof(err));
	assert_int_not_equal(auth_jwt_new_es256(path, NULL, err, sizeof(err), &j), OTPD_OK);
	assert_null(j);
	assert_int_equal(strlen(err), sizeof(err) - 1);
	assert_true(strncmp(err, "JWT_PRIVATE_KEY", sizeof(err) - 1) == 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hs256_round_trip),
		cmocka_unit_test(test_hs256_large_user_id),
		cmocka_unit_test(test_hs256_sid),
		cmocka_unit_test(test_forged_baseline_accepted),
		cmocka_unit_test(test_hs256_wrong_key_and_tampering),
		cmocka_unit_test(test_hs256_alg_refused),
		cmocka_unit_test(test_hs256_time_claims),
		cmocka_unit_test(test_hs256_token_type),
		cmocka_unit_test(test_hs256_subject_claims),
		cmocka_unit_test(test_hs256_malformed),
		cmocka_unit_test(test_hs256_jwks_empty),
		cmocka_unit_test(test_jti_new),
		cmocka_unit_test(test_es256_sign_verify_jwks),
		cmocka_unit_test(test_es256_kid),
		cmocka_unit_test(test_sign_threads),
		cmocka_unit_test(test_es256_alg_confusion),
		cmocka_unit_test(test_es256_previous_key),
		cmocka_unit_test(test_es256_bad_keys),
		cmocka_unit_test(test_es256_error_truncated),
	};

	return cmocka_run_group_tests(tests, fixture_setup, fixture_teardown);
}
