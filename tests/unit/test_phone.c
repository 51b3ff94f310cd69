/* otp/phone.c against docs/API.md §2 and the masking rule of §4. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "otp/phone.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define WANT "+989123456789"
#define SENTINEL 'Z'

/* Unicode code charts: Persian digits U+06F0..U+06F9 (UTF-8 DB B0..DB B9),
 * Arabic-Indic digits U+0660..U+0669 (UTF-8 D9 A0..D9 A9). */
enum script { ASCII, PERSIAN, ARABIC, MIXED, NSCRIPTS };
static const char *const script_name[] = { "ascii", "persian", "arabic", "mixed" };

/* Rewrite the ASCII digits of `in` in `script`; MIXED cycles Persian,
 * Arabic-Indic, ASCII digit by digit.  Everything else is copied. */
static void transliterate(const char *in, enum script script, char *out, size_t size)
{
	size_t n = 0, k = 0;

	for (; *in; in++) {
		assert_true(n + 3 <= size);
		if (*in < '0' || *in > '9') {
			out[n++] = *in;
			continue;
		}
		enum script s = script == MIXED ? (enum script)(PERSIAN + k++ % 3) : script;
		unsigned d = (unsigned)(*in - '0');

		if (s == ASCII) {
			out[n++] = *in;
		} else {
			out[n++] = (char)(s == PERSIAN ? 0xDB : 0xD9);
			out[n++] = (char)((s == PERSIAN ? 0xB0 : 0xA0) + d);
		}
	}
	out[n] = '\0';
}

static void expect_ok(const char *in, size_t len, const char *want)
{
	char got[OTP_PHONE_LEN + 1];

	if (otp_phone_normalize(in, len, got) != OTPD_OK)
		fail_msg("rejected: '%.*s' (%zu bytes)", (int)len, in, len);
	assert_string_equal(got, want);
}

/* Rejected, and the output buffer is left untouched. */
static void expect_rejected(const char *name, const char *in, size_t len)
{
	char got[OTP_PHONE_LEN + 1];
	char untouched[OTP_PHONE_LEN + 1];

	memset(got, SENTINEL, sizeof(got));
	memset(untouched, SENTINEL, sizeof(untouched));
	if (otp_phone_normalize(in, len, got) != OTPD_VALIDATION_ERROR)
		fail_msg("accepted: %s", name);
	assert_memory_equal(got, untouched, sizeof(got));
}

/* Each accepted form of §2, plain and with separators, in ASCII. */
static const char *const accepted_forms[] = {
	"+989123456789",
	"00989123456789",
	"989123456789",
	"09123456789",
	"9123456789",
	"+98 912 345 6789",
	"+98-912-345-6789",
	"+98 (912) 345-6789",
	"(+98) 912 345 67 89",
	"+ 98 912 345 6789",
	"0098 912 345 6789",
	"00 98 912-345-6789",
	"98 912 345 6789",
	"98-912-3456789",
	"0912 345 6789",
	"0912-345-6789",
	"(0912) 345 6789",
	"(0912)3456789",
	"912 345 6789",
	"9 1 2 3 4 5 6 7 8 9",
	" 09123456789 ",
	"--09123456789--",
	"()09123456789",
};

static void test_accepted_forms_in_every_script(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(accepted_forms); i++) {
		for (int s = ASCII; s < NSCRIPTS; s++) {
			char in[128];

			transliterate(accepted_forms[i], (enum script)s, in, sizeof(in));
			print_message("%-8s %s\n", script_name[s], accepted_forms[i]);
			expect_ok(in, strlen(in), WANT);
		}
	}
}

/* Written out by hand, so the transliteration above is checked too. */
static const struct {
	const char *in;
	const char *want;
} literal_cases[] = {
	{ "۰۹۱۲۳۴۵۶۷۸۹", WANT },
	{ "+۹۸۹۱۲۳۴۵۶۷۸۹", WANT },
	{ "۰۰۹۸۹۱۲۳۴۵۶۷۸۹", WANT },
	{ "۹۸۹۱۲۳۴۵۶۷۸۹", WANT },
	{ "۹۱۲۳۴۵۶۷۸۹", WANT },
	{ "۰۹۱۲ ۳۴۵ ۶۷۸۹", WANT },
	{ "٠٩١٢٣٤٥٦٧٨٩", WANT },
	{ "+٩٨٩١٢٣٤٥٦٧٨٩", WANT },
	{ "٠٠٩٨ ٩١٢-٣٤٥-٦٧٨٩", WANT },
	{ "٩١٢٣٤٥٦٧٨٩", WANT },
	{ "۰٩1۲٣4۵٦7۸٩", WANT },
	{ "+98 ۹۱۲ ٣٤٥ 6789", WANT },
	{ "۰۹۳۵۰۰۰۰۰۰۰", "+989350000000" },
	{ "٠٩٩٠٩٨٧٦٥٤٣", "+989909876543" },
	{ "09012345678", "+989012345678" },
	{ "09991234567", "+989991234567" },
	{ "9891234567", "+989891234567" }, /* the 9XXXXXXXXX form, 10 digits */
};

static void test_literal_scripts(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(literal_cases); i++)
		expect_ok(literal_cases[i].in, strlen(literal_cases[i].in),
		          literal_cases[i].want);
}

#define R(s) { #s, s, sizeof(s) - 1 }
static const struct {
	const char *name;
	const char *in;
	size_t len;
} rejected[] = {
	/* empty */
	R(""), R(" "), R("()- "), R("+"),
	/* letters and other characters */
	R("09123456789a"), R("O9123456789"), R("+98 912 ABC 6789"),
	R("tel:+989123456789"), R("0912.345.6789"), R("0912/345/6789"),
	R("\t09123456789"), R("09123456789\n"), R("0912_3456789"),
	R("0912\xC2\xA0" "3456789"),             /* no-break space */
	R("\xEF\xBC\x90\xEF\xBC\x99" "123456789"), /* fullwidth ０９ */
	R("\xE0\xA5\xA6\xE0\xA5\xAF" "123456789"), /* Devanagari ०९ */
	R("\xDB\xB0\xD9\xA9\xDB\x8C" "123456789"), /* Persian letter yeh */
	/* NUL bytes */
	R("0912345\0" "6789"), R("09123456789\0"), R("\0" "09123456789"), R("\0"),
	/* invalid UTF-8 */
	R("\x80" "09123456789"), R("09123456789\xDB"), R("0912345678\xDB"),
	R("\xC0\xB0" "9123456789"),         /* overlong '0' */
	R("\xE0\x80\xB0" "9123456789"),     /* overlong '0', 3 bytes */
	R("\xE0\x9B\xB0" "9123456789"),     /* overlong U+06F0 */
	R("\xED\xA0\x80" "09123456789"),    /* surrogate */
	R("\xF4\x90\x80\x80" "09123456789"), /* above U+10FFFF */
	R("\xFF" "09123456789"), R("\xDB" "09123456789"), R("\xDB\xDB\xB0"),
	/* landlines */
	R("02112345678"), R("+982112345678"), R("00982112345678"),
	R("982112345678"), R("2112345678"), R("03112345678"), R("021 1234 5678"),
	/* other countries */
	R("+14155552671"), R("+447911123456"), R("00447911123456"),
	R("+971912345678"), R("+939123456789"), R("+8613912345678"),
	/* wrong length */
	R("912345678"), R("0912345678"), R("91234567890"), R("091234567890"),
	R("+98912345678"), R("+9891234567890"), R("98912345678"),
	R("9891234567890"), R("0098912345678"), R("009891234567890"),
	R("0989123456789"), R("000989123456789"),
	/* wrong operator digit */
	R("08123456789"), R("+988123456789"), R("8123456789"), R("0123456789"),
	/* '+' anywhere but first */
	R("98+9123456789"), R("0+9123456789"), R("++989123456789"),
	R("+ +989123456789"), R("+989123456789+"), R("+09123456789"),
	R("+9123456789"), R("+00989123456789"), R("+989+123456789"),
	/* a '+' in place of a digit, at an accepted length */
	R("0912+345678"), R("912345678+"), R("98912345+678"), R("0098912+45678"),
	R("+98912345678+"),
};

static void test_rejections(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(rejected); i++)
		expect_rejected(rejected[i].name, rejected[i].in, rejected[i].len);
}

static void test_null_input(void **state)
{
	(void)state;
	expect_rejected("NULL", NULL, 0);
	expect_rejected("NULL with a length", NULL, 11);
}

/* §2: longer than 32 characters is refused, counting characters, not bytes. */
static void pad(char *buf, size_t size, const char *number, size_t chars_wanted,
                size_t chars_in_number)
{
	size_t n = strlen(number);

	assert_true(n + (chars_wanted - chars_in_number) < size);
	memcpy(buf, number, n);
	memset(buf + n, ' ', chars_wanted - chars_in_number);
	buf[n + chars_wanted - chars_in_number] = '\0';
}

static void test_length_limit_ascii(void **state)
{
	char in[64];

	(void)state;
	pad(in, sizeof(in), "09123456789", 32, 11);
	expect_ok(in, strlen(in), WANT);
	pad(in, sizeof(in), "09123456789", 33, 11);
	expect_rejected("33 ASCII characters", in, strlen(in));
}

static void test_length_limit_counts_characters(void **state)
{
	char in[96];

	(void)state;
	/* 11 two-byte digits + 21 spaces: 32 characters in 43 bytes. */
	pad(in, sizeof(in), "۰۹۱۲۳۴۵۶۷۸۹", 32, 11);
	assert_int_equal(strlen(in), 43);
	expect_ok(in, strlen(in), WANT);
	pad(in, sizeof(in), "۰۹۱۲۳۴۵۶۷۸۹", 33, 11);
	expect_rejected("33 characters, Persian digits", in, strlen(in));
}

static void test_length_limit_separators_count(void **state)
{
	/* 32 characters: 13 of the number and 19 separators. */
	const char *ok = "((((((((((+989123456789)))))))))";
	const char *too_long = "((((((((((+989123456789))))))))))";

	(void)state;
	assert_int_equal(strlen(ok), 32);
	expect_ok(ok, strlen(ok), WANT);
	expect_rejected("33 characters with parens", too_long, strlen(too_long));
}

static void test_length_is_respected(void **state)
{
	const char *in = "0912345678999999";

	(void)state;
	/* Only `len` bytes are read; the input need not be NUL-terminated. */
	expect_ok(in, 11, "+989123456789");
	expect_rejected("first 10 bytes of a longer string", in, 10);
	expect_rejected("zero length", in, 0);
}

static void test_mask(void **state)
{
	char got[OTP_PHONE_MASKED_LEN];

	(void)state;
	otp_phone_mask("+989123456789", got);
	assert_string_equal(got, "+98912***6789");
	otp_phone_mask("+989350001234", got);
	assert_string_equal(got, "+98935***1234");
}

static void test_mask_not_normalised(void **state)
{
	static const char *const bad[] = {
		"", "09123456789", "989123456789", "+98912345678", "+9891234567890",
		"+98912345678x", "+988123456789", "+14155552671", "۰۹۱۲۳۴۵۶۷۸۹",
		"+98 912345678",
	};
	char got[OTP_PHONE_MASKED_LEN];

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		otp_phone_mask(bad[i], got);
		assert_string_equal(got, "***");
	}
	otp_phone_mask(NULL, got);
	assert_string_equal(got, "***");
}

static void test_national(void **state)
{
	char got[OTP_PHONE_NATIONAL_LEN + 1];

	(void)state;
	otp_phone_national("+989123456789", got);
	assert_string_equal(got, "09123456789");
	otp_phone_national("+989350000000", got);
	assert_string_equal(got, "09350000000");
	otp_phone_national("09123456789", got);
	assert_string_equal(got, "");
}

static void test_digits(void **state)
{
	const char *phone = "+989123456789";

	(void)state;
	assert_string_equal(otp_phone_digits(phone), "989123456789");
	assert_ptr_equal(otp_phone_digits(phone), phone + 1);
	assert_string_equal(otp_phone_digits("09123456789"), "");
	assert_string_equal(otp_phone_digits(NULL), "");
}

/* Normalising twice is the identity: the stored form is accepted input. */
static void test_round_trip(void **state)
{
	char once[OTP_PHONE_LEN + 1], twice[OTP_PHONE_LEN + 1];

	(void)state;
	assert_int_equal(otp_phone_normalize("0912 345 6789", 13, once), OTPD_OK);
	assert_int_equal(otp_phone_normalize(once, strlen(once), twice), OTPD_OK);
	assert_string_equal(once, twice);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accepted_forms_in_every_script),
		cmocka_unit_test(test_literal_scripts),
		cmocka_unit_test(test_rejections),
		cmocka_unit_test(test_null_input),
		cmocka_unit_test(test_length_limit_ascii),
		cmocka_unit_test(test_length_limit_counts_characters),
		cmocka_unit_test(test_length_limit_separators_count),
		cmocka_unit_test(test_length_is_respected),
		cmocka_unit_test(test_mask),
		cmocka_unit_test(test_mask_not_normalised),
		cmocka_unit_test(test_national),
		cmocka_unit_test(test_digits),
		cmocka_unit_test(test_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
