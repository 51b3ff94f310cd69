/* http/problem.c against docs/API.md §4: every enum otpd_status value maps
 * to the contract's {HTTP status, code}, and the problem+json body (RFC 9457
 * section 3.1: type, title, status, detail; plus the contract's `code` and
 * extra members) has `status` equal to the HTTP status. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <jansson.h>

#include "http/problem.h"
#include "status.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* docs/API.md §4, one row per status value (OTPD_NOMEM is the out-of-memory
 * flavour of internal_error, see status.h). */
static const struct {
	enum otpd_status status;
	const char *code;
	unsigned http;
} contract[] = {
	{OTPD_MALFORMED_REQUEST, "malformed_request", 400},
	{OTPD_VALIDATION_ERROR, "validation_error", 400},
	{OTPD_INVALID_CODE, "invalid_code", 400},
	{OTPD_TOO_MANY_ATTEMPTS, "too_many_attempts", 400},
	{OTPD_OTP_EXPIRED, "otp_expired", 400},
	{OTPD_INVALID_TOKEN, "invalid_token", 401},
	{OTPD_USER_INACTIVE, "user_inactive", 403},
	{OTPD_FORBIDDEN, "forbidden", 403},
	{OTPD_NOT_FOUND, "not_found", 404},
	{OTPD_METHOD_NOT_ALLOWED, "method_not_allowed", 405},
	{OTPD_LENGTH_REQUIRED, "length_required", 411},
	{OTPD_PAYLOAD_TOO_LARGE, "payload_too_large", 413},
	{OTPD_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", 415},
	{OTPD_THROTTLED, "throttled", 429},
	{OTPD_OTP_RATE_LIMITED, "otp_rate_limited", 429},
	{OTPD_SMS_REJECTED, "sms_rejected", 502},
	{OTPD_SMS_UNAVAILABLE, "sms_unavailable", 503},
	{OTPD_UNAVAILABLE, "unavailable", 503},
	{OTPD_INTERNAL, "internal_error", 500},
	{OTPD_NOMEM, "internal_error", 500},
};

/* The 19 distinct codes of the §4 table (length_required: a body without a
 * Content-Length, i.e. chunked, is refused at the headers). */
static const char *const contract_codes[] = {
	"malformed_request", "validation_error", "invalid_code", "too_many_attempts",
	"otp_expired", "invalid_token", "user_inactive", "forbidden", "not_found",
	"method_not_allowed", "length_required", "payload_too_large", "unsupported_media_type",
	"throttled", "otp_rate_limited", "sms_rejected", "sms_unavailable",
	"unavailable", "internal_error",
};

static int contract_row(enum otpd_status st)
{
	for (size_t i = 0; i < ARRAY_LEN(contract); i++)
		if (contract[i].status == st)
			return (int)i;
	return -1;
}

/* Walk 1.._OTPD_STATUS_MAX-1: each value has a code, a title, an HTTP
 * status in 400..599, and matches its contract row.  A status added to
 * status.h without a row here fails this test. */
static void test_every_status(void **state)
{
	(void)state;
	for (int v = 1; v < _OTPD_STATUS_MAX; v++) {
		enum otpd_status st = (enum otpd_status)v;
		const struct problem_info *p = http_problem_info(st);
		int row = contract_row(st);

		assert_non_null(p);
		if (row < 0)
			fail_msg("status %d has no row in the contract table of this test", v);
		assert_non_null(p->code);
		assert_non_null(p->title);
		assert_true(p->title[0] != '\0');
		assert_non_null(p->detail);
		assert_true(p->detail[0] != '\0');
		if (p->http_status < 400 || p->http_status > 599)
			fail_msg("status %d: HTTP %u is not an error", v, p->http_status);
		if (strcmp(p->code, contract[row].code) != 0 || p->http_status != contract[row].http)
			fail_msg("status %d: got %u %s, contract says %u %s", v, p->http_status,
			         p->code, contract[row].http, contract[row].code);
	}
}

/* The other direction: every row names a real status (no stale rows), and
 * every contract code is reachable from some status. */
static void test_contract_covered(void **state)
{
	(void)state;
	assert_int_equal(ARRAY_LEN(contract), _OTPD_STATUS_MAX - 1);
	for (size_t i = 0; i < ARRAY_LEN(contract); i++) {
		assert_true(contract[i].status > OTPD_OK);
		assert_true(contract[i].status < _OTPD_STATUS_MAX);
		for (size_t k = 0; k < i; k++)
			assert_true(contract[k].status != contract[i].status);
	}
	for (size_t c = 0; c < ARRAY_LEN(contract_codes); c++) {
		bool found = false;

		for (int v = 1; v < _OTPD_STATUS_MAX; v++)
			if (strcmp(http_problem_info((enum otpd_status)v)->code, contract_codes[c]) == 0)
				found = true;
		if (!found)
			fail_msg("contract code %s has no status", contract_codes[c]);
	}
}

static void test_out_of_range(void **state)
{
	static const int bad[] = {_OTPD_STATUS_MAX, _OTPD_STATUS_MAX + 1, 1000, -1, 0x7fffffff};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		const struct problem_info *p = http_problem_info((enum otpd_status)bad[i]);

		assert_non_null(p);
		assert_string_equal(p->code, "internal_error");
		assert_int_equal(p->http_status, 500);
	}

	json_t *o = http_problem_new((enum otpd_status)_OTPD_STATUS_MAX, NULL, NULL);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "code")), "internal_error");
	assert_int_equal(json_integer_value(json_object_get(o, "status")), 500);
	json_decref(o);
}

/* The RFC 9457 members plus `code`, each of the right JSON type. */
static void expect_body(const json_t *o, enum otpd_status st, const char *detail)
{
	const struct problem_info *p = http_problem_info(st);
	int row = contract_row(st);
	const json_t *type = json_object_get(o, "type");
	const json_t *title = json_object_get(o, "title");
	const json_t *status = json_object_get(o, "status");
	const json_t *det = json_object_get(o, "detail");
	const json_t *code = json_object_get(o, "code");

	assert_true(row >= 0);
	assert_true(json_is_object(o));
	/* type: a URI reference (RFC 9457 3.1.1), a non-empty string without blanks */
	assert_true(json_is_string(type));
	assert_true(json_string_length(type) > 0);
	assert_null(strpbrk(json_string_value(type), " \t\r\n"));
	assert_true(json_is_string(title));
	assert_string_equal(json_string_value(title), p->title);
	/* status: a JSON number equal to the HTTP status (RFC 9457 3.1.2; §4) */
	assert_true(json_is_integer(status));
	assert_int_equal(json_integer_value(status), contract[row].http);
	assert_true(json_is_string(det));
	assert_string_equal(json_string_value(det), detail ? detail : p->detail);
	assert_true(json_is_string(code));
	assert_string_equal(json_string_value(code), contract[row].code);
}

static void test_new_every_status(void **state)
{
	(void)state;
	for (int v = 1; v < _OTPD_STATUS_MAX; v++) {
		enum otpd_status st = (enum otpd_status)v;
		json_t *o = http_problem_new(st, NULL, NULL);

		assert_non_null(o);
		expect_body(o, st, NULL);
		assert_int_equal(json_object_size(o), 5);
		json_decref(o);

		o = http_problem_new(st, "Something specific went wrong.", NULL);
		assert_non_null(o);
		expect_body(o, st, "Something specific went wrong.");
		json_decref(o);
	}
}

/* The type URI tells problem kinds apart: one per code. */
static void test_type_per_code(void **state)
{
	(void)state;
	for (int a = 1; a < _OTPD_STATUS_MAX; a++) {
		for (int b = 1; b < a; b++) {
			json_t *oa = http_problem_new((enum otpd_status)a, NULL, NULL);
			json_t *ob = http_problem_new((enum otpd_status)b, NULL, NULL);
			const char *ta = json_string_value(json_object_get(oa, "type"));
			const char *tb = json_string_value(json_object_get(ob, "type"));
			const char *ca = json_string_value(json_object_get(oa, "code"));
			const char *cb = json_string_value(json_object_get(ob, "code"));

			assert_true((strcmp(ta, tb) == 0) == (strcmp(ca, cb) == 0));
			json_decref(oa);
			json_decref(ob);
		}
	}
}

/* Extra members are merged and the extra object is released (its reference
 * is stolen): §4's remaining_attempts, retry_after, errors, provider_status. */
static void test_extra_members(void **state)
{
	json_t *extra, *o, *errors;

	(void)state;
	/* invalid_code + remaining_attempts */
	extra = json_pack("{s:i}", "remaining_attempts", 2);
	assert_non_null(extra);
	json_incref(extra); /* keep one reference to watch the count */
	o = http_problem_new(OTPD_INVALID_CODE, NULL, extra);
	assert_non_null(o);
	assert_int_equal(extra->refcount, 1); /* the function released its reference */
	json_decref(extra);
	expect_body(o, OTPD_INVALID_CODE, NULL);
	assert_int_equal(json_integer_value(json_object_get(o, "remaining_attempts")), 2);
	assert_int_equal(json_object_size(o), 6);
	json_decref(o);

	/* validation_error + errors {"phone_number": ["..."]} */
	extra = json_pack("{s:{s:[s]}}", "errors", "phone_number", "Enter a valid Iranian mobile number.");
	assert_non_null(extra);
	o = http_problem_new(OTPD_VALIDATION_ERROR, "Invalid input.", extra);
	assert_non_null(o);
	expect_body(o, OTPD_VALIDATION_ERROR, "Invalid input.");
	errors = json_object_get(o, "errors");
	assert_true(json_is_object(errors));
	assert_true(json_is_array(json_object_get(errors, "phone_number")));
	assert_string_equal(json_string_value(json_array_get(json_object_get(errors, "phone_number"), 0)),
	                    "Enter a valid Iranian mobile number.");
	json_decref(o);

	/* throttled + retry_after; sms_rejected + provider_status */
	o = http_problem_new(OTPD_THROTTLED, NULL, json_pack("{s:i}", "retry_after", 20));
	assert_non_null(o);
	expect_body(o, OTPD_THROTTLED, NULL);
	assert_int_equal(json_integer_value(json_object_get(o, "retry_after")), 20);
	json_decref(o);
	o = http_problem_new(OTPD_SMS_REJECTED, NULL, json_pack("{s:i}", "provider_status", 411));
	assert_non_null(o);
	expect_body(o, OTPD_SMS_REJECTED, NULL);
	assert_int_equal(json_integer_value(json_object_get(o, "provider_status")), 411);
	json_decref(o);

	/* an empty extra adds nothing and is released too */
	extra = json_object();
	json_incref(extra);
	o = http_problem_new(OTPD_NOT_FOUND, NULL, extra);
	assert_non_null(o);
	assert_int_equal(extra->refcount, 1);
	json_decref(extra);
	assert_int_equal(json_object_size(o), 5);
	json_decref(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_status),
		cmocka_unit_test(test_contract_covered),
		cmocka_unit_test(test_out_of_range),
		cmocka_unit_test(test_new_every_status),
		cmocka_unit_test(test_type_per_code),
		cmocka_unit_test(test_extra_members),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
