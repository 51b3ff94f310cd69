/* util/parse.c: the bounded integer, boolean and rate parsers behind every
 * configuration value (docs/API.md §1: "a non-number, a rate that does not
 * parse ... stops the start").  Expected values are arithmetic facts:
 * INT64_MAX is 9223372036854775807, a minute is 60000 ms, and so on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "util/parse.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define UNTOUCHED ((int64_t)-424242)

#define SEC_MS 1000LL
#define MIN_MS (60 * SEC_MS)
#define HOUR_MS (60 * MIN_MS)
#define DAY_MS (24 * HOUR_MS)

/* ---- parse_int64 ---- */

struct int_case {
	const char *in;
	int64_t min, max;
	int64_t want;
};

static void test_int64_accepts(void **state)
{
	static const struct int_case cases[] = {
		{"0", 0, 10, 0},
		{"7", 0, 10, 7},
		{"10", 0, 10, 10},          /* upper bound is inclusive */
		{"1", 1, 100, 1},           /* lower bound is inclusive */
		{"-5", -10, 10, -5},        /* a minus sign where negatives are allowed */
		{"-10", -10, 10, -10},
		{"-0", -1, 1, 0},
		{"007", 0, 10, 7},          /* leading zeros: still decimal, not octal */
		{"010", 0, 100, 10},
		{"9223372036854775807", INT64_MIN, INT64_MAX, INT64_MAX},
		{"-9223372036854775808", INT64_MIN, INT64_MAX, INT64_MIN},
		{"86400", 1, 86400, 86400},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		int64_t got = UNTOUCHED;

		if (!parse_int64(cases[i].in, cases[i].min, cases[i].max, &got))
			fail_msg("parse_int64(\"%s\", %lld, %lld) refused", cases[i].in,
			         (long long)cases[i].min, (long long)cases[i].max);
		assert_true(got == cases[i].want);
	}
}

static void test_int64_refuses(void **state)
{
	static const struct int_case cases[] = {
		/* out of bounds */
		{"11", 0, 10, 0},
		{"-1", 0, 10, 0},
		{"0", 1, 100, 0},
		{"101", 1, 100, 0},
		{"-11", -10, 10, 0},
		/* sign games */
		{"+5", 0, 10, 0},
		{"++5", 0, 10, 0},
		{"--5", -10, 10, 0},
		{"+-5", -10, 10, 0},
		{"-+5", -10, 10, 0},
		{"-", -10, 10, 0},
		{"+", 0, 10, 0},
		/* empty and blanks */
		{"", 0, 10, 0},
		{" ", 0, 10, 0},
		{" 5", 0, 10, 0},
		{"5 ", 0, 10, 0},
		{"\t5", 0, 10, 0},
		{"5\n", 0, 10, 0},
		/* junk */
		{"abc", 0, 100, 0},
		{"5x", 0, 10, 0},
		{"x5", 0, 10, 0},
		{"0x10", 0, 100, 0},
		{"1e3", 0, 10000, 0},
		{"5.0", 0, 10, 0},
		{"5,0", 0, 100, 0},
		{"1 000", 0, 10000, 0},
		{"\xdb\xb5", 0, 10, 0},    /* Persian digit five: config is ASCII */
		/* overflow */
		{"9223372036854775808", INT64_MIN, INT64_MAX, 0},
		{"-9223372036854775809", INT64_MIN, INT64_MAX, 0},
		{"99999999999999999999999", INT64_MIN, INT64_MAX, 0},
		{"18446744073709551616", 0, INT64_MAX, 0},
		{"18446744073709551615", 0, INT64_MAX, 0},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		int64_t got = UNTOUCHED;

		if (parse_int64(cases[i].in, cases[i].min, cases[i].max, &got))
			fail_msg("parse_int64(\"%s\", %lld, %lld) accepted: %lld", cases[i].in,
			         (long long)cases[i].min, (long long)cases[i].max, (long long)got);
		/* STYLE.md: out-params are untouched on failure */
		assert_true(got == UNTOUCHED);
	}
}

static void test_int64_null(void **state)
{
	int64_t got = UNTOUCHED;

	(void)state;
	assert_false(parse_int64(NULL, 0, 10, &got));
	assert_true(got == UNTOUCHED);
}

/* ---- parse_bool ---- */

static void test_bool_words(void **state)
{
	static const struct {
		const char *in;
		bool want;
	} cases[] = {
		{"true", true},   {"false", false}, {"1", true},    {"0", false},
		{"yes", true},    {"no", false},    {"on", true},   {"off", false},
		{"TRUE", true},   {"False", false}, {"YES", true},  {"No", false},
		{"On", true},     {"OFF", false},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		bool got = !cases[i].want; /* so a silent no-op is caught */

		if (!parse_bool(cases[i].in, &got))
			fail_msg("parse_bool(\"%s\") refused", cases[i].in);
		assert_int_equal(got, cases[i].want);
	}
}

static void test_bool_refuses(void **state)
{
	static const char *const bad[] = {
		"", " ", "maybe", "2", "-1", "t", "f", "y", "n", "tru", "truee",
		" true", "true ", "yes!", "o", "enable", "disabled", "01", "10",
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		bool got = true;

		if (parse_bool(bad[i], &got))
			fail_msg("parse_bool(\"%s\") accepted", bad[i]);
		assert_true(got); /* untouched */
		got = false;
		assert_false(parse_bool(bad[i], &got));
		assert_false(got);
	}
}

/* ---- parse_rate ---- */

static void test_rate_units(void **state)
{
	static const struct {
		const char *in;
		int64_t count, period_ms;
	} cases[] = {
		/* the contract's four spellings (docs/API.md §1) */
		{"5/sec", 5, SEC_MS},
		{"5/min", 5, MIN_MS},
		{"5/hour", 5, HOUR_MS},
		{"5/day", 5, DAY_MS},
		/* the contract's defaults */
		{"20/min", 20, MIN_MS},
		/* the longer and shorter names (util/parse.h) */
		{"3/second", 3, SEC_MS},
		{"3/minute", 3, MIN_MS},
		{"3/s", 3, SEC_MS},
		{"3/m", 3, MIN_MS},
		{"3/h", 3, HOUR_MS},
		{"3/d", 3, DAY_MS},
		/* N bounds 1..1000000 */
		{"1/sec", 1, SEC_MS},
		{"1000000/day", 1000000, DAY_MS},
		{"100/hour", 100, HOUR_MS},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct rate r = {-1, -1};

		if (!parse_rate(cases[i].in, &r))
			fail_msg("parse_rate(\"%s\") refused", cases[i].in);
		assert_true(r.count == cases[i].count);
		assert_true(r.period_ms == cases[i].period_ms);
	}
}

static void test_rate_refuses(void **state)
{
	static const char *const bad[] = {
		"5/fortnight", "0/min", "x/min", "5", "5/",
		"", "/", "/min", "-5/min", "+5/min", "-0/min", "1000001/min",
		"5.5/min", "5x/min", "0x5/min", " 5/min", "5 /min", "5/ min", "5/min ",
		"5/min/", "5//min", "5/min/min", "5/week", "5/month", "5/year", "5/ms",
		"min/5", "5-min", "5 per min", "five/min",
		"99999999999999999999999/min",
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct rate r = {-7, -7};

		if (parse_rate(bad[i], &r))
			fail_msg("parse_rate(\"%s\") accepted: %lld per %lld ms", bad[i],
			         (long long)r.count, (long long)r.period_ms);
		assert_true(r.count == -7 && r.period_ms == -7); /* untouched */
	}
}

static void test_time_accepts(void **state)
{
	int64_t t = -1;

	(void)state;
	assert_true(parse_time_ms("1970-01-01T00:00:00Z", &t));
	assert_int_equal(t, 0);
	assert_true(parse_time_ms("2026-12-03T19:23:40Z", &t));
	assert_int_equal(t, 1796325820000LL);
	assert_true(parse_time_ms("2026-12-03T19:23:40.812Z", &t));
	assert_int_equal(t, 1796325820812LL);
	assert_true(parse_time_ms("2026-12-03T19:23:40.8Z", &t));
	assert_int_equal(t, 1796325820800LL);
	assert_true(parse_time_ms("2026-12-03T19:23:40.812999Z", &t));
	assert_int_equal(t, 1796325820812LL);
	assert_true(parse_time_ms("2026-12-03T22:53:40+03:30", &t)); /* Tehran */
	assert_int_equal(t, 1796325820000LL);
	assert_true(parse_time_ms("2026-12-03T14:23:40-05:00", &t));
	assert_int_equal(t, 1796325820000LL);
	assert_true(parse_time_ms("2026-12-03t19:23:40z", &t));
	assert_true(parse_time_ms("2026-12-03 19:23:40Z", &t));
	assert_true(parse_time_ms("2024-02-29T00:00:00Z", &t));
	assert_int_equal(t, 1709164800000LL);
	assert_true(parse_time_ms("2000-02-29T00:00:00Z", &t));
	assert_true(parse_time_ms("9999-12-31T23:59:59.999Z", &t));
	assert_int_equal(t, 253402300799999LL);
}

static void test_time_refuses(void **state)
{
	static const char *bad[] = {
		"", "2026-12-03", "2026-12-03T19:23:40", "2026-12-03T19:23Z", "2026-12-03T19:23:40.Z",
		"2026-13-03T19:23:40Z", "2026-00-03T19:23:40Z", "2026-12-32T19:23:40Z",
		"2026-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
		"2026-12-03T24:00:00Z", "2026-12-03T19:60:40Z", "2026-12-03T19:23:60Z",
		"2026-12-03T19:23:40+3:30", "2026-12-03T19:23:40+03:3", "2026-12-03T19:23:40+0330",
		"2026-12-03T19:23:40Zjunk", "2026-12-03T19:23:40Z ", " 2026-12-03T19:23:40Z",
		"1969-12-31T23:59:59Z", "1970-01-01T00:00:00+00:01", "+2026-12-03T19:23:40Z",
		"2026-12-03X19:23:40Z", "2026/12/03T19:23:40Z", "٢٠٢٦-12-03T19:23:40Z",
	};
	int64_t t = 42;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse_time_ms(bad[i], &t))
			fail_msg("accepted: \"%s\"", bad[i]);
		assert_int_equal(t, 42);
	}
	assert_false(parse_time_ms(NULL, &t));
}

static void test_rate_null(void **state)
{
	struct rate r = {-7, -7};

	(void)state;
	assert_false(parse_rate(NULL, &r));
	assert_true(r.count == -7 && r.period_ms == -7);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_int64_accepts),
		cmocka_unit_test(test_int64_refuses),
		cmocka_unit_test(test_int64_null),
		cmocka_unit_test(test_bool_words),
		cmocka_unit_test(test_bool_refuses),
		cmocka_unit_test(test_rate_units),
		cmocka_unit_test(test_rate_refuses),
		cmocka_unit_test(test_rate_null),
		cmocka_unit_test(test_time_accepts),
		cmocka_unit_test(test_time_refuses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
