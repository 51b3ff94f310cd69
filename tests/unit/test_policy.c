/* otp/policy.c: the verify verdict and the per-phone send limit
 * (docs/API.md §3, §4), with the defaults of the environment table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "otp/policy.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define T0 1700000000000LL /* an arbitrary "now" in epoch milliseconds */
#define UNTOUCHED (-12345)

/* OTP_EXPIRY_TIME 300, OTP_MAX_ATTEMPTS 3, OTP_SEND_LIMIT 3,
 * OTP_SEND_WINDOW 120 (docs/API.md §1). */
static const struct otp_policy defaults = {
	.expiry_ms = 300000,
	.max_attempts = 3,
	.send_limit = 3,
	.send_window_ms = 120000,
};

static struct otp_record fresh(int attempts)
{
	struct otp_record r = {
		.created_ms = T0,
		.expires_ms = T0 + 300000,
		.attempts = attempts,
		.state = OTP_CODE_ACTIVE,
	};

	return r;
}

static void expect_verdict(struct otp_verdict v, enum otpd_status status,
                           bool count, bool consume)
{
	assert_int_equal(v.status, status);
	assert_int_equal(v.count_attempt, count);
	assert_int_equal(v.consume, consume);
}

static void test_no_code(void **state)
{
	(void)state;
	expect_verdict(otp_policy_judge(&defaults, NULL, true, T0),
	               OTPD_OTP_EXPIRED, false, false);
	expect_verdict(otp_policy_judge(&defaults, NULL, false, T0),
	               OTPD_OTP_EXPIRED, false, false);
}

static void test_used_and_cancelled(void **state)
{
	static const enum otp_code_state states[] = { OTP_CODE_USED, OTP_CODE_CANCELLED,
	                                              OTP_CODE_REPLACED };

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(states); i++) {
		struct otp_record r = fresh(0);

		r.state = states[i];
		expect_verdict(otp_policy_judge(&defaults, &r, true, T0 + 1000),
		               OTPD_OTP_EXPIRED, false, false);
		expect_verdict(otp_policy_judge(&defaults, &r, false, T0 + 1000),
		               OTPD_OTP_EXPIRED, false, false);
	}
}

/* Expired means now_ms >= expires_ms. */
static void test_expiry_boundary(void **state)
{
	struct otp_record r = fresh(0);

	(void)state;
	expect_verdict(otp_policy_judge(&defaults, &r, true, r.expires_ms - 1),
	               OTPD_OK, false, true);
	expect_verdict(otp_policy_judge(&defaults, &r, true, r.expires_ms),
	               OTPD_OTP_EXPIRED, false, false);
	expect_verdict(otp_policy_judge(&defaults, &r, false, r.expires_ms),
	               OTPD_OTP_EXPIRED, false, false);
	expect_verdict(otp_policy_judge(&defaults, &r, true, r.expires_ms + 3600000),
	               OTPD_OTP_EXPIRED, false, false);
}

static void test_attempts_exhausted(void **state)
{
	struct otp_record r = fresh(3);

	(void)state;
	/* Even the right code is refused, and nothing is written. */
	expect_verdict(otp_policy_judge(&defaults, &r, true, T0 + 1000),
	               OTPD_TOO_MANY_ATTEMPTS, false, false);
	expect_verdict(otp_policy_judge(&defaults, &r, false, T0 + 1000),
	               OTPD_TOO_MANY_ATTEMPTS, false, false);
	r.attempts = 7;
	expect_verdict(otp_policy_judge(&defaults, &r, true, T0 + 1000),
	               OTPD_TOO_MANY_ATTEMPTS, false, false);
}

/* No usable code comes before attempts exhausted. */
static void test_expired_wins_over_exhausted(void **state)
{
	struct otp_record r = fresh(3);

	(void)state;
	expect_verdict(otp_policy_judge(&defaults, &r, false, r.expires_ms),
	               OTPD_OTP_EXPIRED, false, false);
	r.state = OTP_CODE_USED;
	expect_verdict(otp_policy_judge(&defaults, &r, false, T0),
	               OTPD_OTP_EXPIRED, false, false);
}

static void test_right_code_consumes(void **state)
{
	(void)state;
	for (int attempts = 0; attempts < 3; attempts++) {
		struct otp_record r = fresh(attempts);

		expect_verdict(otp_policy_judge(&defaults, &r, true, T0),
		               OTPD_OK, false, true);
	}
}

/* Three wrong guesses with OTP_MAX_ATTEMPTS=3: remaining 2, 1, 0, then
 * too_many_attempts even for the right code. */
static void test_wrong_code_counts_down(void **state)
{
	static const int want_remaining[] = { 2, 1, 0 };
	struct otp_record r = fresh(0);
	struct otp_verdict v;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(want_remaining); i++) {
		v = otp_policy_judge(&defaults, &r, false, T0 + 1000);
		expect_verdict(v, OTPD_INVALID_CODE, true, false);
		assert_int_equal(v.remaining_attempts, want_remaining[i]);
		r.attempts++; /* what the store does with count_attempt */
	}
	v = otp_policy_judge(&defaults, &r, true, T0 + 1000);
	expect_verdict(v, OTPD_TOO_MANY_ATTEMPTS, false, false);
}

static void test_remaining_never_negative(void **state)
{
	struct otp_policy one = defaults;
	struct otp_record r = fresh(0);
	struct otp_verdict v;

	(void)state;
	one.max_attempts = 1;
	v = otp_policy_judge(&one, &r, false, T0);
	expect_verdict(v, OTPD_INVALID_CODE, true, false);
	assert_int_equal(v.remaining_attempts, 0);
}

static void test_send_under_limit(void **state)
{
	int retry = UNTOUCHED;

	(void)state;
	for (int sent = 0; sent < 3; sent++) {
		assert_true(otp_policy_send_allowed(&defaults, sent, T0, T0 + 1000, &retry));
		assert_int_equal(retry, UNTOUCHED);
	}
}

/* At or above the limit: refused, retry_after = ceil((oldest + window -
 * now) / 1000 ms), at least 1. */
static void test_send_at_limit_retry_after(void **state)
{
	static const struct {
		int sent;
		int64_t elapsed_ms; /* now - oldest */
		int want;
	} cases[] = {
		{ 3, 0, 120 },
		{ 3, 1, 120 },       /* 119.999 s -> 120 */
		{ 3, 999, 120 },
		{ 3, 1000, 119 },
		{ 3, 1001, 119 },    /* 118.999 s -> 119 */
		{ 3, 118999, 2 },    /* 1.001 s -> 2 */
		{ 3, 119000, 1 },
		{ 3, 119001, 1 },    /* 0.999 s -> 1 */
		{ 3, 119999, 1 },    /* 0.001 s -> 1 */
		{ 3, 120000, 1 },    /* 0 s: still at least 1 */
		{ 3, 500000, 1 },
		{ 4, 60000, 60 },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		int retry = UNTOUCHED;

		assert_false(otp_policy_send_allowed(&defaults, cases[i].sent, T0,
		                                     T0 + cases[i].elapsed_ms, &retry));
		assert_int_equal(retry, cases[i].want);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_code),
		cmocka_unit_test(test_used_and_cancelled),
		cmocka_unit_test(test_expiry_boundary),
		cmocka_unit_test(test_attempts_exhausted),
		cmocka_unit_test(test_expired_wins_over_exhausted),
		cmocka_unit_test(test_right_code_consumes),
		cmocka_unit_test(test_wrong_code_counts_down),
		cmocka_unit_test(test_remaining_never_negative),
		cmocka_unit_test(test_send_under_limit),
		cmocka_unit_test(test_send_at_limit_retry_after),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
