/* sms_kavenegar_classify() on the fixture bodies
 * (tests/fixtures/kavenegar, README there gives each file's HTTP status)
 * and on bodies that are not an envelope (docs/KAVENEGAR.md §3, §10).
 *
 * Run from the repository root; KAVENEGAR_FIXTURES overrides the directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sms/kavenegar.h"

#define FIXTURE_MAX 65536

struct fixture_case {
	const char *file;
	long http;                 /* documented HTTP status (fixtures/README.md) */
	enum otpd_status want;
	int provider_status;
};

/* Expected values: fixtures/README.md and docs/KAVENEGAR.md §5, §10 (200 accepted,
 * 409 retry later, every other code refused). */
static const struct fixture_case cases[] = {
	{"sms_send_success.json", 200, OTPD_OK, 0},
	{"sms_send_success_multi.json", 200, OTPD_OK, 0},
	{"verify_lookup_success.json", 200, OTPD_OK, 0},
	{"verify_lookup_success_entries_object.json", 200, OTPD_OK, 0},
	{"account_info.json", 200, OTPD_OK, 0},
	{"sms_status.json", 200, OTPD_OK, 0},
	{"error_400_missing_params.json", 400, OTPD_SMS_REJECTED, 400},
	{"error_403_invalid_key.json", 403, OTPD_SMS_REJECTED, 403},
	{"error_409_server_busy.json", 409, OTPD_SMS_UNAVAILABLE, 0},
	{"error_411_invalid_receptor.json", 411, OTPD_SMS_REJECTED, 411},
	{"error_412_invalid_sender.json", 412, OTPD_SMS_REJECTED, 412},
	{"error_418_insufficient_credit.json", 418, OTPD_SMS_REJECTED, 418},
	{"error_424_template_not_found.json", 424, OTPD_SMS_REJECTED, 424},
	{"error_431_invalid_token.json", 431, OTPD_SMS_REJECTED, 431},
};

static const char *fixture_dir(void)
{
	const char *d = getenv("KAVENEGAR_FIXTURES");
	return d && d[0] ? d : "tests/fixtures/kavenegar";
}

static size_t read_fixture(const char *name, char *buf, size_t cap)
{
	char path[1024];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", fixture_dir(), name);
	f = fopen(path, "rb");
	if (!f)
		fail_msg("cannot open fixture %s (run from the repository root or set "
		         "KAVENEGAR_FIXTURES)", path);
	n = fread(buf, 1, cap, f);
	assert_true(n > 0 && n < cap);
	fclose(f);
	return n;
}

static void check(const char *what, const char *body, size_t len, long http,
                  enum otpd_status want, int provider_status)
{
	struct sms_result r = sms_kavenegar_classify(1, http, body, len);
	if (r.status != want || (want == OTPD_SMS_REJECTED && r.provider_status != provider_status))
		fail_msg("%s with HTTP %ld: got status %d provider_status %d, want %d %d",
		         what, http, (int)r.status, r.provider_status, (int)want, provider_status);
}

static void test_fixtures_documented_http(void **state)
{
	static char buf[FIXTURE_MAX];
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = read_fixture(cases[i].file, buf, sizeof(buf));
		check(cases[i].file, buf, n, cases[i].http, cases[i].want, cases[i].provider_status);
	}
}

/* docs/KAVENEGAR.md §3: some gateways answer errors with HTTP 200 + envelope. */
static void test_fixtures_http_200(void **state)
{
	static char buf[FIXTURE_MAX];
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = read_fixture(cases[i].file, buf, sizeof(buf));
		check(cases[i].file, buf, n, 200, cases[i].want, cases[i].provider_status);
	}
}

/* The transfer failed: whatever arrived does not count. */
static void test_transport_failure(void **state)
{
	static char buf[FIXTURE_MAX];
	size_t n = read_fixture("sms_send_success.json", buf, sizeof(buf));
	(void)state;
	assert_int_equal(sms_kavenegar_classify(0, 200, buf, n).status, OTPD_SMS_UNAVAILABLE);
	assert_int_equal(sms_kavenegar_classify(0, 0, NULL, 0).status, OTPD_SMS_UNAVAILABLE);
}

static void test_not_an_envelope(void **state)
{
	static const struct {
		const char *body;
		long http;
	} bodies[] = {
		{"<html><head><title>502 Bad Gateway</title></head><body><center>"
		 "<h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>", 502},
		{"<html><body>504 Gateway Time-out</body></html>", 504},
		{"", 200},
		{"", 502},
		{"{\"return\": {\"status\": 200, \"message\": \"", 200},   /* truncated */
		{"{\"return\": {\"status\": 4", 418},                       /* truncated */
		{"{\"entries\": []}", 200},                                 /* no return */
		{"{\"return\": null, \"entries\": null}", 200},
		{"{\"return\": {\"message\": \"ok\"}}", 200},               /* no status */
		{"{\"return\": {\"status\": \"200\"}}", 200},               /* string */
		{"{\"return\": {\"status\": \"418\"}}", 418},
		{"{\"return\": {\"status\": 200.0}}", 200},                 /* real */
		{"{\"return\": {\"status\": true}}", 200},
		{"{\"return\": [200]}", 200},
		{"[{\"return\": {\"status\": 200}}]", 200},                 /* not an object */
		{"200", 200},
		{"null", 200},
		{"Internal Server Error", 500},
	};
	(void)state;
	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		check(bodies[i].body, bodies[i].body, strlen(bodies[i].body), bodies[i].http,
		      OTPD_SMS_UNAVAILABLE, 0);
	}
	assert_int_equal(sms_kavenegar_classify(1, 200, NULL, 0).status, OTPD_SMS_UNAVAILABLE);
}

/* The envelope decides even with an unexpected HTTP status. */
static void test_envelope_any_http(void **state)
{
	static const char ok[] = "{\"return\":{\"status\":200,\"message\":\"x\"},\"entries\":[]}";
	static const char e607[] = "{\"return\":{\"status\":607,\"message\":\"x\"},\"entries\":null}";
	(void)state;
	check("ok", ok, strlen(ok), 500, OTPD_OK, 0);
	check("ok", ok, strlen(ok), 201, OTPD_OK, 0);
	check("607", e607, strlen(e607), 607, OTPD_SMS_REJECTED, 607);
	check("607", e607, strlen(e607), 200, OTPD_SMS_REJECTED, 607);
	/* The length is honoured: a valid body cut short is not an envelope. */
	assert_int_equal(sms_kavenegar_classify(1, 200, ok, 10).status, OTPD_SMS_UNAVAILABLE);
}

static void test_key_shape(void **state)
{
	(void)state;
	assert_true(sms_kavenegar_key_is_valid("TESTKEY"));
	assert_true(sms_kavenegar_key_is_valid("4A6B3C2D1E0F7a8b9c"));
	assert_false(sms_kavenegar_key_is_valid(""));
	assert_false(sms_kavenegar_key_is_valid(NULL));
	assert_false(sms_kavenegar_key_is_valid("TEST KEY"));
	assert_false(sms_kavenegar_key_is_valid("TEST/KEY"));
	assert_false(sms_kavenegar_key_is_valid("../admin"));
	assert_false(sms_kavenegar_key_is_valid("KEY?x=1"));
	assert_false(sms_kavenegar_key_is_valid("KEY\n"));
	assert_false(sms_kavenegar_key_is_valid("KEY%2F"));
}

/* account/info: entries.remaincredit, in Rial (docs/KAVENEGAR.md §4.4). */
static void test_parse_credit(void **state)
{
	static char buf[FIXTURE_MAX];
	double credit = -1;
	size_t n;

	(void)state;
	n = read_fixture("account_info.json", buf, sizeof(buf));
	assert_true(sms_kavenegar_parse_credit(buf, n, &credit));
	assert_true(credit == 1500000);
	n = read_fixture("sms_send_success.json", buf, sizeof(buf)); /* no remaincredit */
	assert_false(sms_kavenegar_parse_credit(buf, n, &credit));
	assert_false(sms_kavenegar_parse_credit("{\"entries\":{\"remaincredit\":-5}}", 32, &credit));
	assert_false(sms_kavenegar_parse_credit("not json", 8, &credit));
}

/* sms/status: each id with its state; an unknown id (100) is no error (§4.3). */
static void test_parse_statuses(void **state)
{
	static char buf[FIXTURE_MAX];
	struct sms_kavenegar_status st[4];
	size_t n;

	(void)state;
	n = read_fixture("sms_status.json", buf, sizeof(buf));
	assert_int_equal(sms_kavenegar_parse_statuses(buf, n, st, 4), 3);
	assert_true(st[0].message_id == 8792343 && st[0].status == 10);
	assert_true(st[1].message_id == 8792346 && st[1].status == 4);
	assert_true(st[2].message_id == 123 && st[2].status == 100);
	assert_int_equal(sms_kavenegar_parse_statuses(buf, n, st, 2), 2); /* bounded */
	assert_int_equal(sms_kavenegar_parse_statuses("{}", 2, st, 4), 0);
}

/* An accepted send carries the provider's messageid for the delivery check. */
static void test_send_message_id(void **state)
{
	static char buf[FIXTURE_MAX];
	struct sms_result r;
	size_t n;

	(void)state;
	n = read_fixture("sms_send_success.json", buf, sizeof(buf));
	r = sms_kavenegar_classify(1, 200, buf, n);
	assert_int_equal(r.status, OTPD_OK);
	assert_true(r.message_id == 8792343);
	assert_int_equal(r.return_status, 200);
	n = read_fixture("verify_lookup_success_entries_object.json", buf, sizeof(buf));
	r = sms_kavenegar_classify(1, 200, buf, n);
	assert_true(r.message_id > 0);
	n = read_fixture("error_418_insufficient_credit.json", buf, sizeof(buf));
	r = sms_kavenegar_classify(1, 418, buf, n);
	assert_true(r.message_id == 0 && r.return_status == 418);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures_documented_http),
		cmocka_unit_test(test_fixtures_http_200),
		cmocka_unit_test(test_transport_failure),
		cmocka_unit_test(test_not_an_envelope),
		cmocka_unit_test(test_envelope_any_http),
		cmocka_unit_test(test_key_shape),
		cmocka_unit_test(test_parse_credit),
		cmocka_unit_test(test_parse_statuses),
		cmocka_unit_test(test_send_message_id),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
