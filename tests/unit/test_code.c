/* otp/code.c: HMAC against RFC 4231, rejection sampling, uniformity of
 * generated codes (docs/API.md §3), normalisation of submitted codes. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "otp/code.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SENTINEL 'Z'

static void to_hex(const uint8_t *b, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[b[i] >> 4];
		out[2 * i + 1] = hex[b[i] & 15];
	}
	out[2 * n] = '\0';
}

static void expect_hmac(const void *key, size_t key_len, const char *msg,
                        const char *want_hex)
{
	uint8_t mac[OTP_HASH_LEN];
	char hex[2 * OTP_HASH_LEN + 1];

	struct otp_hasher *h = otp_hasher_new(key, key_len);

	assert_true(otp_hmac_sha256(key, key_len, msg, strlen(msg), mac));
	to_hex(mac, sizeof(mac), hex);
	assert_string_equal(hex, want_hex);
	/* The prepared key gives the same MAC, twice. */
	assert_non_null(h);
	for (int i = 0; i < 2; i++) {
		memset(mac, 0, sizeof(mac));
		assert_true(otp_hasher_mac(h, msg, strlen(msg), mac));
		to_hex(mac, sizeof(mac), hex);
		assert_string_equal(hex, want_hex);
	}
	otp_hasher_free(h);
}

/* RFC 4231 §4.2, Test Case 1. */
static void test_hmac_rfc4231_case1(void **state)
{
	uint8_t key[20];

	(void)state;
	memset(key, 0x0b, sizeof(key));
	expect_hmac(key, sizeof(key), "Hi There",
	            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
}

/* RFC 4231 §4.3, Test Case 2 (a key shorter than the output). */
static void test_hmac_rfc4231_case2(void **state)
{
	(void)state;
	expect_hmac("Jefe", 4, "what do ya want for nothing?",
	            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

/* RFC 4231 §4.7, Test Case 6 (a key longer than the block: hashed first). */
static void test_hmac_rfc4231_case6(void **state)
{
	uint8_t key[131];

	(void)state;
	memset(key, 0xaa, sizeof(key));
	expect_hmac(key, sizeof(key),
	            "Test Using Larger Than Block-Size Key - Hash Key First",
	            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

/* HMAC-SHA256 with an empty key and an empty message, a widely published
 * value (e.g. Python's hmac.new(b"", b"", "sha256")). */
static void test_hmac_empty(void **state)
{
	uint8_t mac[OTP_HASH_LEN];
	char hex[2 * OTP_HASH_LEN + 1];

	(void)state;
	assert_true(otp_hmac_sha256(NULL, 0, NULL, 0, mac));
	to_hex(mac, sizeof(mac), hex);
	assert_string_equal(hex,
	            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

/* The documented definition HMAC-SHA256(secret, label), checked against
 * RFC 4231 Test Case 2. */
static void test_derive_key_is_hmac_of_label(void **state)
{
	uint8_t key[OTP_KEY_LEN];
	char hex[2 * OTP_KEY_LEN + 1];

	(void)state;
	assert_true(otp_derive_key("Jefe", 4, "what do ya want for nothing?", key));
	to_hex(key, sizeof(key), hex);
	assert_string_equal(hex,
	            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	assert_false(otp_derive_key("Jefe", 4, NULL, key));
}

static const uint8_t code_key[OTP_KEY_LEN] = {
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
	0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
	0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
};

/* HMAC-SHA256(key, phone ":" code); expected values from
 *   printf '+989123456789:123456' | openssl dgst -sha256 -mac HMAC \
 *     -macopt hexkey:000102...1f */
static void test_code_hash_vector(void **state)
{
	uint8_t h[OTP_HASH_LEN];
	char hex[2 * OTP_HASH_LEN + 1];

	(void)state;
	assert_true(otp_code_hash(code_key, "+989123456789", "123456", h));
	to_hex(h, sizeof(h), hex);
	assert_string_equal(hex,
	            "31e7f329e9f6cd0de6c9092633c2996976365ffc7b7bda63c70806d8d3abe392");
	assert_true(otp_code_hash(code_key, "+989123456780", "123456", h));
	to_hex(h, sizeof(h), hex);
	assert_string_equal(hex,
	            "b9209a04424fc4c58a5c6afa1dc47d32fcd6d365f5ef1f2ef951112795243acd");
}

static void test_code_hash_binds_phone_code_and_key(void **state)
{
	uint8_t base[OTP_HASH_LEN], other[OTP_HASH_LEN], again[OTP_HASH_LEN];
	uint8_t key2[OTP_KEY_LEN];

	(void)state;
	assert_true(otp_code_hash(code_key, "+989123456789", "123456", base));
	assert_true(otp_code_hash(code_key, "+989123456789", "123456", again));
	assert_true(otp_hash_equal(base, again));

	assert_true(otp_code_hash(code_key, "+989123456788", "123456", other));
	assert_false(otp_hash_equal(base, other));
	assert_true(otp_code_hash(code_key, "+989123456789", "123457", other));
	assert_false(otp_hash_equal(base, other));
	memcpy(key2, code_key, sizeof(key2));
	key2[31] ^= 1;
	assert_true(otp_code_hash(key2, "+989123456789", "123456", other));
	assert_false(otp_hash_equal(base, other));

	assert_false(otp_code_hash(code_key, NULL, "123456", other));
	assert_false(otp_code_hash(code_key, "+989123456789", NULL, other));
}

/* The prepared hasher gives what otp_code_hash gives (the known vector
 * included), again and again, and from several threads at once. */
struct hasher_worker {
	const struct otp_hasher *h;
	int ok;
};

static void *hash_many(void *arg)
{
	struct hasher_worker *w = arg;

	for (int i = 0; i < 500; i++) {
		char phone[16], code[7];
		uint8_t a[OTP_HASH_LEN], b[OTP_HASH_LEN];

		snprintf(phone, sizeof(phone), "+98912%07d", i);
		snprintf(code, sizeof(code), "%06d", (i * 7919) % 1000000);
		if (otp_hasher_hash(w->h, phone, code, a) && otp_code_hash(code_key, phone, code, b) &&
		    memcmp(a, b, sizeof(a)) == 0)
			w->ok++;
	}
	return NULL;
}

static void test_code_hasher(void **state)
{
	struct otp_hasher *h = otp_hasher_new(code_key, sizeof(code_key));
	uint8_t out[OTP_HASH_LEN];
	char hex[2 * OTP_HASH_LEN + 1];
	struct hasher_worker w[4];
	pthread_t t[4];
	uint8_t key2[OTP_KEY_LEN];
	struct otp_hasher *h2;

	(void)state;
	assert_non_null(h);
	for (int round = 0; round < 2; round++) {
		assert_true(otp_hasher_hash(h, "+989123456789", "123456", out));
		to_hex(out, sizeof(out), hex);
		assert_string_equal(hex,
		            "31e7f329e9f6cd0de6c9092633c2996976365ffc7b7bda63c70806d8d3abe392");
	}
	memcpy(key2, code_key, sizeof(key2));
	key2[0] ^= 1;
	h2 = otp_hasher_new(key2, sizeof(key2));
	assert_non_null(h2);
	assert_true(otp_hasher_hash(h2, "+989123456789", "123456", out));
	to_hex(out, sizeof(out), hex);
	assert_string_not_equal(hex,
	            "31e7f329e9f6cd0de6c9092633c2996976365ffc7b7bda63c70806d8d3abe392");
	otp_hasher_free(h2);

	for (int i = 0; i < 4; i++) {
		w[i] = (struct hasher_worker){ .h = h, .ok = 0 };
		assert_int_equal(pthread_create(&t[i], NULL, hash_many, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(w[i].ok, 500);
	}
	assert_false(otp_hasher_hash(h, NULL, "123456", out));
	assert_false(otp_hasher_hash(h, "+989123456789", NULL, out));
	assert_false(otp_hasher_hash(NULL, "+989123456789", "123456", out));
	assert_null(otp_hasher_new(NULL, 32));
	otp_hasher_free(h);
	otp_hasher_free(NULL);
}

static void test_hash_equal(void **state)
{
	uint8_t a[OTP_HASH_LEN], b[OTP_HASH_LEN];

	(void)state;
	for (size_t i = 0; i < sizeof(a); i++)
		a[i] = (uint8_t)(i * 7 + 3);
	memcpy(b, a, sizeof(b));
	assert_true(otp_hash_equal(a, b));
	b[0] ^= 0x80;
	assert_false(otp_hash_equal(a, b));
	memcpy(b, a, sizeof(b));
	b[OTP_HASH_LEN - 1] ^= 0x01;
	assert_false(otp_hash_equal(a, b));
}

static void test_wipe(void **state)
{
	uint8_t buf[16], zero[16] = { 0 };

	(void)state;
	memset(buf, 0xA5, sizeof(buf));
	otp_wipe(buf, sizeof(buf));
	assert_memory_equal(buf, zero, sizeof(buf));
	otp_wipe(NULL, 0);
}

/* A scripted word source: returns words[i] in order, then fails. */
struct script {
	const uint32_t *words;
	size_t n, used;
};

static int scripted(void *arg, uint32_t *ret_word)
{
	struct script *s = arg;

	if (s->used == s->n)
		return -1;
	*ret_word = s->words[s->used++];
	return 0;
}

/* 2^32 = 4294967296, so the largest multiple of 10^6 not above it is
 * 4,294,000,000: words 4294000000..4294967295 are rejected. */
static void test_from_words_rejects_top_of_range(void **state)
{
	static const struct {
		uint32_t words[3];
		size_t n;
		long want;
		size_t used;
	} cases[] = {
		{ { 4294967295u, 1234567u }, 2, 234567, 2 },
		{ { 4294000000u, 42u }, 2, 42, 2 },
		{ { 4294000000u, 4294967295u, 999999u }, 3, 999999, 3 },
		{ { 4293999999u }, 1, 999999, 1 },
		{ { 0u }, 1, 0, 1 },
		{ { 1000000u }, 1, 0, 1 },
		{ { 4293000123u }, 1, 123, 1 },
		{ { 4294967295u }, 1, -1, 1 }, /* rejected, then the source fails */
		{ { 0u }, 0, -1, 0 },           /* the source fails at once */
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct script s = { cases[i].words, cases[i].n, 0 };

		assert_int_equal(otp_code_from_words(scripted, &s), cases[i].want);
		assert_int_equal(s.used, cases[i].used);
	}
	assert_int_equal(otp_code_from_words(NULL, NULL), -1);
}

static void test_generate_format(void **state)
{
	(void)state;
	for (int i = 0; i < 1000; i++) {
		char code[OTP_CODE_LEN + 1];

		memset(code, SENTINEL, sizeof(code));
		assert_int_equal(otp_code_generate(code), OTPD_OK);
		assert_int_equal(strlen(code), OTP_CODE_LEN);
		for (int k = 0; k < OTP_CODE_LEN; k++)
			assert_true(code[k] >= '0' && code[k] <= '9');
	}
}

static double chi_square(const long *observed, size_t buckets, double expected)
{
	double sum = 0;

	for (size_t i = 0; i < buckets; i++) {
		double d = (double)observed[i] - expected;

		sum += d * d / expected;
	}
	return sum;
}

#define SAMPLES 200000
/* Two-sided chi-square bounds at 1e-6 per tail (quantiles of the
 * chi-square distribution: df 9 -> 0.2284 / 44.81, df 999 -> 800.7 /
 * 1226.0).  Upper: catches a skewed generator (no leading zeros, modulo
 * bias of a narrow source); lower: catches one that is too even (a
 * counter).  A good CSPRNG fails about 4 times in a million runs. */
static void test_generate_uniform(void **state)
{
	static long first[10], low[1000];
	double c1, c2;

	(void)state;
	memset(first, 0, sizeof(first));
	memset(low, 0, sizeof(low));
	for (int i = 0; i < SAMPLES; i++) {
		char code[OTP_CODE_LEN + 1];
		long v = 0;

		assert_int_equal(otp_code_generate(code), OTPD_OK);
		assert_int_equal(strlen(code), OTP_CODE_LEN);
		for (int k = 0; k < OTP_CODE_LEN; k++) {
			assert_true(code[k] >= '0' && code[k] <= '9');
			v = v * 10 + (code[k] - '0');
		}
		first[code[0] - '0']++;
		low[v % 1000]++;
	}
	c1 = chi_square(first, 10, SAMPLES / 10.0);
	c2 = chi_square(low, 1000, SAMPLES / 1000.0);
	print_message("chi-square: first digit %.2f (df 9), mod 1000 %.2f (df 999)\n",
	              c1, c2);
	assert_true(c1 > 0.2284 && c1 < 44.81);
	assert_true(c2 > 800.7 && c2 < 1226.0);
}

static void expect_code(const char *in, const char *want)
{
	char got[OTP_CODE_LEN + 1];

	if (otp_code_normalize(in, strlen(in), got) != OTPD_OK)
		fail_msg("rejected: '%s'", in);
	assert_string_equal(got, want);
}

static void test_normalize_scripts(void **state)
{
	(void)state;
	expect_code("123456", "123456");
	expect_code("000000", "000000");
	expect_code("999999", "999999");
	expect_code("۱۲۳۴۵۶", "123456");   /* Persian U+06F1.. */
	expect_code("۰۷۸۹۰۰", "078900");
	expect_code("١٢٣٤٥٦", "123456");   /* Arabic-Indic U+0661.. */
	expect_code("٠٧٨٩٠٠", "078900");
	expect_code("۱٢3۴٥6", "123456");   /* mixed */
	expect_code("\xDB\xB9\xD9\xA9" "9999", "999999");
}

#define R(s) { #s, s, sizeof(s) - 1 }
static void test_normalize_rejects(void **state)
{
	static const struct {
		const char *name;
		const char *in;
		size_t len;
	} bad[] = {
		R(""), R("12345"), R("1234567"), R("۱۲۳۴۵"), R("۱۲۳۴۵۶۷"),
		R("٠١٢٣٤"), R("12345a"), R("a12345"), R("abcdef"), R("12 3456"),
		R(" 123456"), R("123456 "), R("123-456"), R("+12345"), R("-12345"),
		R("12345\0"), R("123\0" "456"), R("123456\0"), R("\xDB" "12345"),
		R("12345\xDB"), R("\xC0\xB1" "23456"), R("12345\xEF\xBC\x96"),
		R("１２３４５６"), R("0x1234"), R("1e5000"),
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		char got[OTP_CODE_LEN + 1], untouched[OTP_CODE_LEN + 1];

		memset(got, SENTINEL, sizeof(got));
		memset(untouched, SENTINEL, sizeof(untouched));
		if (otp_code_normalize(bad[i].in, bad[i].len, got) != OTPD_VALIDATION_ERROR)
			fail_msg("accepted: %s", bad[i].name);
		assert_memory_equal(got, untouched, sizeof(got));
	}
	{
		char got[OTP_CODE_LEN + 1];

		assert_int_equal(otp_code_normalize(NULL, 0, got), OTPD_VALIDATION_ERROR);
		/* Only len bytes are read. */
		assert_int_equal(otp_code_normalize("1234567", 6, got), OTPD_OK);
		assert_string_equal(got, "123456");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hmac_rfc4231_case1),
		cmocka_unit_test(test_hmac_rfc4231_case2),
		cmocka_unit_test(test_hmac_rfc4231_case6),
		cmocka_unit_test(test_hmac_empty),
		cmocka_unit_test(test_derive_key_is_hmac_of_label),
		cmocka_unit_test(test_code_hash_vector),
		cmocka_unit_test(test_code_hash_binds_phone_code_and_key),
		cmocka_unit_test(test_code_hasher),
		cmocka_unit_test(test_hash_equal),
		cmocka_unit_test(test_wipe),
		cmocka_unit_test(test_from_words_rejects_top_of_range),
		cmocka_unit_test(test_generate_format),
		cmocka_unit_test(test_generate_uniform),
		cmocka_unit_test(test_normalize_scripts),
		cmocka_unit_test(test_normalize_rejects),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
