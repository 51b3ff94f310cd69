/* One-time codes: generation from the OS CSPRNG, keyed hashing, constant-time
 * comparison.  Pure: libc + libcrypto, no clock, no I/O besides RAND_bytes. */
#include "code.h"
#include "digits.h"

#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#define CODE_MODULUS 1000000u
/* The largest multiple of 10^6 that is <= 2^32: 4,294,000,000.  Words at or
 * above it are rejected, so every code has the same 4294 preimages. */
#define WORD_LIMIT ((uint32_t)(((uint64_t)1 << 32) / CODE_MODULUS * CODE_MODULUS))

/* next() returns 0 and sets *ret_word on success, anything else on failure.
 * Unbounded by design: a working source is rejected with probability
 * 967296 / 2^32 (about 2.3e-4) per word. */
long otp_code_from_words(int (*next)(void *arg, uint32_t *ret_word), void *arg)
{
	if (!next)
		return -1;
	for (;;) {
		uint32_t word;
		long code;

		if (next(arg, &word) != 0)
			return -1;
		if (word < WORD_LIMIT) {
			code = (long)(word % CODE_MODULUS);
			OPENSSL_cleanse(&word, sizeof(word));
			return code;
		}
	}
}

/* A word source for otp_code_from_words() backed by RAND_bytes. */
static int rand_word(void *arg, uint32_t *ret_word)
{
	unsigned char b[4];

	(void)arg;
	if (RAND_bytes(b, sizeof(b)) != 1)
		return -1;
	*ret_word = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
	            (uint32_t)b[2] << 8 | (uint32_t)b[3];
	OPENSSL_cleanse(b, sizeof(b));
	return 0;
}

/* Writes `code` (0..999999) as 6 ASCII digits with leading zeros + NUL. */
static void format_code(long code, char ret[OTP_CODE_LEN + 1])
{
	for (int i = OTP_CODE_LEN - 1; i >= 0; i--) {
		ret[i] = (char)('0' + code % 10);
		code /= 10;
	}
	ret[OTP_CODE_LEN] = '\0';
}

enum otpd_status otp_code_generate(char ret[OTP_CODE_LEN + 1])
{
	long code = otp_code_from_words(rand_word, NULL);

	if (code < 0)
		return OTPD_INTERNAL;
	format_code(code, ret);
	OPENSSL_cleanse(&code, sizeof(code));
	return OTPD_OK;
}

enum otpd_status otp_code_normalize(const char *in, size_t len,
                                    char ret[OTP_CODE_LEN + 1])
{
	const unsigned char *s = (const unsigned char *)in;
	char buf[OTP_CODE_LEN + 1];
	size_t pos = 0, n = 0;
	enum otpd_status st = OTPD_VALIDATION_ERROR;

	if (!in)
		return st;
	while (pos < len) {
		uint32_t cp;
		int d;

		if (n == OTP_CODE_LEN || !otp_utf8_next(s, len, &pos, &cp))
			goto out;
		d = otp_digit_value(cp);
		if (d == OTP_NOT_A_DIGIT)
			goto out;
		buf[n++] = (char)('0' + d);
	}
	if (n != OTP_CODE_LEN)
		goto out;
	buf[n] = '\0';
	memcpy(ret, buf, sizeof(buf));
	st = OTPD_OK;
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	return st;
}

struct part {
	const void *data;
	size_t len;
};

/* HMAC-SHA256(key, parts[0] || parts[1] || ...).  Fills ret only on
 * success. */
static bool hmac_parts(const void *key, size_t key_len,
                       const struct part *parts, size_t nparts,
                       uint8_t ret[OTP_HASH_LEN])
{
	static const unsigned char empty[1];
	char digest[] = "SHA256";
	OSSL_PARAM params[2];
	EVP_MAC *mac = NULL;
	EVP_MAC_CTX *ctx = NULL;
	unsigned char out[EVP_MAX_MD_SIZE];
	size_t out_len = 0;
	bool ok = false;

	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!mac)
		goto out;
	ctx = EVP_MAC_CTX_new(mac);
	if (!ctx)
		goto out;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_init(ctx, key_len ? key : empty, key_len, params))
		goto out;
	for (size_t i = 0; i < nparts; i++)
		if (parts[i].len && !EVP_MAC_update(ctx, parts[i].data, parts[i].len))
			goto out;
	if (!EVP_MAC_final(ctx, out, &out_len, sizeof(out)) || out_len != OTP_HASH_LEN)
		goto out;
	memcpy(ret, out, OTP_HASH_LEN);
	ok = true;
out:
	OPENSSL_cleanse(out, sizeof(out));
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(mac);
	return ok;
}

bool otp_hmac_sha256(const void *key, size_t key_len, const void *msg,
                     size_t msg_len, uint8_t ret[OTP_HASH_LEN])
{
	struct part p = { msg, msg_len };

	if ((!key && key_len) || (!msg && msg_len))
		return false;
	return hmac_parts(key, key_len, &p, 1, ret);
}

bool otp_derive_key(const void *secret, size_t secret_len, const char *label,
                    uint8_t ret[OTP_KEY_LEN])
{
	if (!label)
		return false;
	return otp_hmac_sha256(secret, secret_len, label, strlen(label), ret);
}

bool otp_code_hash(const uint8_t key[OTP_KEY_LEN], const char *phone,
                   const char *code, uint8_t ret[OTP_HASH_LEN])
{
	struct part p[3];

	if (!key || !phone || !code)
		return false;
	p[0] = (struct part){ phone, strlen(phone) };
	p[1] = (struct part){ ":", 1 };
	p[2] = (struct part){ code, strlen(code) };
	return hmac_parts(key, OTP_KEY_LEN, p, 3, ret);
}

struct otp_hasher {
	EVP_MAC_CTX *ctx; /* keyed, never updated: only copied */
};

struct otp_hasher *otp_hasher_new(const void *key, size_t key_len)
{
	static const unsigned char empty[1];
	char digest[] = "SHA256";
	OSSL_PARAM params[2];
	struct otp_hasher *h;
	EVP_MAC *mac;

	if (!key && key_len)
		return NULL;
	h = calloc(1, sizeof(*h));
	mac = h ? EVP_MAC_fetch(NULL, "HMAC", NULL) : NULL;
	if (h && mac)
		h->ctx = EVP_MAC_CTX_new(mac);
	EVP_MAC_free(mac); /* the context holds its own reference */
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!h || !h->ctx || !EVP_MAC_init(h->ctx, key_len ? key : empty, key_len, params)) {
		otp_hasher_free(h);
		return NULL;
	}
	return h;
}

void otp_hasher_free(struct otp_hasher *h)
{
	if (!h)
		return;
	EVP_MAC_CTX_free(h->ctx); /* wipes the key schedule */
	free(h);
}

/* The MAC of parts[0] || parts[1] || ... with a copy of h's keyed context. */
static bool hasher_parts(const struct otp_hasher *h, const struct part *parts,
                         size_t nparts, uint8_t ret[OTP_HASH_LEN])
{
	unsigned char out[EVP_MAX_MD_SIZE];
	size_t out_len = 0;
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(h->ctx);
	bool ok = ctx != NULL;

	for (size_t i = 0; ok && i < nparts; i++)
		ok = !parts[i].len || EVP_MAC_update(ctx, parts[i].data, parts[i].len);
	ok = ok && EVP_MAC_final(ctx, out, &out_len, sizeof(out)) && out_len == OTP_HASH_LEN;
	if (ok)
		memcpy(ret, out, OTP_HASH_LEN);
	OPENSSL_cleanse(out, sizeof(out));
	EVP_MAC_CTX_free(ctx);
	return ok;
}

bool otp_hasher_mac(const struct otp_hasher *h, const void *msg, size_t len,
                    uint8_t ret[OTP_HASH_LEN])
{
	struct part p = { msg, len };

	if (!h || (!msg && len))
		return false;
	return hasher_parts(h, &p, 1, ret);
}

bool otp_hasher_hash(const struct otp_hasher *h, const char *phone,
                     const char *code, uint8_t ret[OTP_HASH_LEN])
{
	struct part p[3];

	if (!h || !phone || !code)
		return false;
	p[0] = (struct part){ phone, strlen(phone) };
	p[1] = (struct part){ ":", 1 };
	p[2] = (struct part){ code, strlen(code) };
	return hasher_parts(h, p, 3, ret);
}

bool otp_hash_equal(const uint8_t a[OTP_HASH_LEN], const uint8_t b[OTP_HASH_LEN])
{
	return CRYPTO_memcmp(a, b, OTP_HASH_LEN) == 0;
}

void otp_wipe(void *p, size_t len)
{
	if (p)
		OPENSSL_cleanse(p, len);
}
