/* metrics.c: what the exposition says after known events (the black-box
 * suite reads it with a real Prometheus parser; here: bucket edges, the
 * "other" sets, label escaping, and counting from many threads). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static const char *const routes[] = {"/a", "/b"};

static char *render(void)
{
	size_t len = 0;
	char *t = metrics_render(&len);

	assert_non_null(t);
	assert_int_equal(strlen(t), len);
	return t;
}

static void expect_line(const char *text, const char *line)
{
	char want[512];

	snprintf(want, sizeof(want), "\n%s\n", line);
	if (!strstr(text, want))
		fail_msg("missing line: %s", line);
}

static void test_histogram_edges(void **state)
{
	(void)state;
	metrics_init("1.0", "console");
	metrics_set_routes(routes, 2);
	metrics_http(0, 200, 1000000);     /* exactly 1 ms: le="0.001" holds it */
	metrics_http(0, 200, 1000001);
	metrics_http(0, 404, 20000000000); /* 20 s: only +Inf */
	char *t = render();
	expect_line(t, "otpd_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.0005\"} 0");
	expect_line(t, "otpd_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.001\"} 1");
	expect_line(t, "otpd_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.0025\"} 2");
	expect_line(t, "otpd_http_request_duration_seconds_bucket{route=\"/a\",le=\"10\"} 2");
	expect_line(t, "otpd_http_request_duration_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3");
	expect_line(t, "otpd_http_request_duration_seconds_count{route=\"/a\"} 3");
	expect_line(t, "otpd_http_request_duration_seconds_sum{route=\"/a\"} 20.002000001");
	expect_line(t, "otpd_http_requests_total{route=\"/a\",status=\"200\"} 2");
	expect_line(t, "otpd_http_requests_total{route=\"/a\",status=\"404\"} 1");
	free(t);
}

static void test_bounded_sets(void **state)
{
	(void)state;
	metrics_init("1.0", "kavenegar");
	metrics_set_routes(routes, 2);
	metrics_http(7, 404, 1);          /* not a route: other */
	metrics_http(2, 404, 1);
	metrics_sms_request(METRICS_SMS_REJECTED, 418, 0);
	metrics_sms_request(METRICS_SMS_REJECTED, 999, 0); /* undocumented: other */
	metrics_sms_request(METRICS_SMS_UNAVAILABLE, -1, 0); /* no envelope: no status */
	metrics_otp_send((enum metrics_send)99, METRICS_CHANNEL_SMS); /* ignored */
	char *t = render();
	expect_line(t, "otpd_http_requests_total{route=\"other\",status=\"404\"} 2");
	expect_line(t, "otpd_sms_provider_status_total{status=\"418\"} 1");
	expect_line(t, "otpd_sms_provider_status_total{status=\"other\"} 1");
	expect_line(t, "otpd_sms_requests_total{backend=\"kavenegar\",result=\"rejected\"} 2");
	expect_line(t, "otpd_sms_requests_total{backend=\"kavenegar\",result=\"unavailable\"} 1");
	assert_null(strstr(t, "999"));
	/* The credit is absent until read; then it is there. */
	assert_null(strstr(t, "\notpd_sms_credit "));
	free(t);
	metrics_sms_credit_set(1500000, true);
	t = render();
	expect_line(t, "otpd_sms_credit 1500000");
	expect_line(t, "otpd_sms_credit_low 1");
	free(t);
}

static void test_label_escaping(void **state)
{
	(void)state;
	metrics_init("1.0\"x\\y\nz", "console");
	char *t = render();
	expect_line(t, "otpd_build_info{version=\"1.0\\\"x\\\\y\\nz\"} 1");
	free(t);
}

#define THREADS 4
#define PER_THREAD 100000

static void *hammer(void *arg)
{
	(void)arg;
	for (int i = 0; i < PER_THREAD; i++) {
		metrics_otp_verify(METRICS_VERIFY_OK);
		metrics_http(1, 200, 1);
	}
	return NULL;
}

static void test_threads_lose_nothing(void **state)
{
	pthread_t th[THREADS];
	char line[160];

	(void)state;
	metrics_init("1.0", "console");
	metrics_set_routes(routes, 2);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, hammer, NULL), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	char *t = render();
	snprintf(line, sizeof(line), "otpd_otp_verifies_total{result=\"ok\"} %d",
	         THREADS * PER_THREAD);
	expect_line(t, line);
	snprintf(line, sizeof(line), "otpd_http_requests_total{route=\"/b\",status=\"200\"} %d",
	         THREADS * PER_THREAD);
	expect_line(t, line);
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_histogram_edges),
		cmocka_unit_test(test_bounded_sets),
		cmocka_unit_test(test_label_escaping),
		cmocka_unit_test(test_threads_lose_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
