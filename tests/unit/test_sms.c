/* sms.c + kavenegar.c end to end against a tiny HTTP server on 127.0.0.1
 * (a thread in this test: reads requests, records the request line, headers
 * and body, answers a canned Kavenegar envelope, or never answers). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "log_capture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sms/sms.h"

#define KEY "TESTKEY"
#define PHONE "+989123456789"
#define CODE "482913"
#define REQ_MAX 16384

/* ---- the server ------------------------------------------------------- */

enum server_mode {
	ANSWER,       /* answer after delay_ms */
	HANG,         /* read the request, never answer */
};

struct server {
	int fd;
	int port;
	int stop[2];                  /* a pipe: write to stop */
	pthread_t thread;
	enum server_mode mode;
	int http_status;
	const char *body;
	int delay_ms;
	int max_requests;

	pthread_mutex_t lock;         /* guards what follows */
	int requests;
	char request_line[512];
	char headers[REQ_MAX];
	char req_body[REQ_MAX];
};

static const char ENVELOPE_OK[] =
	"{\"return\":{\"status\":200,\"message\":\"\xd8\xaa\xd8\xa7\xdb\x8c\xdb\x8c\xd8\xaf "
	"\xd8\xb4\xd8\xaf\"},\"entries\":[{\"messageid\":8792343,\"status\":1}]}";
static const char ENVELOPE_418[] =
	"{\"return\":{\"status\":418,\"message\":\"credit\"},\"entries\":null}";
static const char HTML_502[] =
	"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";

/* Wait until fd is readable or the stop pipe is written; true if fd. */
static bool wait_readable(struct server *srv, int fd, int timeout_ms)
{
	struct pollfd p[2] = {{fd, POLLIN, 0}, {srv->stop[0], POLLIN, 0}};
	int n = poll(p, 2, timeout_ms);
	return n > 0 && !(p[1].revents & POLLIN) && (p[0].revents & (POLLIN | POLLHUP));
}

static const char *find_header_end(const char *buf, size_t len)
{
	for (size_t i = 0; i + 4 <= len; i++)
		if (memcmp(buf + i, "\r\n\r\n", 4) == 0)
			return buf + i;
	return NULL;
}

static size_t content_length(const char *headers)
{
	const char *p = headers;
	while (p && *p) {
		if (strncasecmp(p, "Content-Length:", 15) == 0)
			return (size_t)strtoul(p + 15, NULL, 10);
		p = strstr(p, "\r\n");
		if (p)
			p += 2;
	}
	return 0;
}

static void serve_one(struct server *srv, int c)
{
	static char buf[REQ_MAX];
	size_t len = 0, body_len;
	const char *end = NULL;
	char resp[1024];
	int n;

	while (!end) {
		ssize_t r;
		if (!wait_readable(srv, c, 5000) || len >= sizeof(buf) - 1)
			return;
		r = read(c, buf + len, sizeof(buf) - 1 - len);
		if (r <= 0)
			return;
		len += (size_t)r;
		buf[len] = '\0';
		end = find_header_end(buf, len);
	}
	body_len = content_length(buf);
	while (len < (size_t)(end + 4 - buf) + body_len) {
		ssize_t r;
		if (!wait_readable(srv, c, 5000) || len >= sizeof(buf) - 1)
			return;
		r = read(c, buf + len, sizeof(buf) - 1 - len);
		if (r <= 0)
			return;
		len += (size_t)r;
		buf[len] = '\0';
	}

	pthread_mutex_lock(&srv->lock);
	srv->requests++;
	snprintf(srv->request_line, sizeof(srv->request_line), "%.*s",
	         (int)(strstr(buf, "\r\n") - buf), buf);
	snprintf(srv->headers, sizeof(srv->headers), "%.*s", (int)(end + 2 - buf), buf);
	snprintf(srv->req_body, sizeof(srv->req_body), "%.*s", (int)body_len, end + 4);
	pthread_mutex_unlock(&srv->lock);

	if (srv->mode == HANG) {
		struct pollfd p = {srv->stop[0], POLLIN, 0};
		poll(&p, 1, 30000);
		return;
	}
	if (srv->delay_ms > 0) {
		struct pollfd p = {srv->stop[0], POLLIN, 0};
		if (poll(&p, 1, srv->delay_ms) > 0)
			return;
	}
	n = snprintf(resp, sizeof(resp),
	             "HTTP/1.1 %d Status\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	             "Connection: close\r\n\r\n%s",
	             srv->http_status,
	             srv->body[0] == '{' ? "application/json" : "text/html",
	             strlen(srv->body), srv->body);
	assert_true(n > 0 && (size_t)n < sizeof(resp));
	if (write(c, resp, (size_t)n) != n)
		return;
}

static void *server_main(void *arg)
{
	struct server *srv = arg;

	for (int i = 0; i < srv->max_requests; i++) {
		int c;
		if (!wait_readable(srv, srv->fd, 30000))
			break;
		c = accept(srv->fd, NULL, NULL);
		if (c < 0)
			break;
		serve_one(srv, c);
		close(c);
	}
	return NULL;
}

static int bound_socket(int *ret_port)
{
	struct sockaddr_in a = {0};
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = 0;
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	*ret_port = ntohs(a.sin_port);
	return fd;
}

static void server_start(struct server *srv, enum server_mode mode, int http_status,
                         const char *body)
{
	memset(srv, 0, sizeof(*srv));
	srv->mode = mode;
	srv->http_status = http_status;
	srv->body = body;
	srv->max_requests = 1;
	pthread_mutex_init(&srv->lock, NULL);
	srv->fd = bound_socket(&srv->port);
	assert_int_equal(listen(srv->fd, 16), 0);
	assert_int_equal(pipe(srv->stop), 0);
	assert_int_equal(pthread_create(&srv->thread, NULL, server_main, srv), 0);
}

static void server_stop(struct server *srv)
{
	assert_int_equal(write(srv->stop[1], "x", 1), 1);
	pthread_join(srv->thread, NULL);
	close(srv->fd);
	close(srv->stop[0]);
	close(srv->stop[1]);
	pthread_mutex_destroy(&srv->lock);
}

static int server_requests(struct server *srv)
{
	int n;
	pthread_mutex_lock(&srv->lock);
	n = srv->requests;
	pthread_mutex_unlock(&srv->lock);
	return n;
}

/* ---- done() recorder -------------------------------------------------- */

struct outcome {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int calls;
	struct sms_result r;
	pthread_t thread;
};

static void outcome_init(struct outcome *o)
{
	memset(o, 0, sizeof(*o));
	pthread_mutex_init(&o->lock, NULL);
	pthread_cond_init(&o->cond, NULL);
}

static void outcome_release(struct outcome *o)
{
	pthread_mutex_destroy(&o->lock);
	pthread_cond_destroy(&o->cond);
}

static void on_done(void *arg, const struct sms_result *r)
{
	struct outcome *o = arg;
	pthread_mutex_lock(&o->lock);
	o->calls++;
	o->r = *r;
	o->thread = pthread_self();
	pthread_cond_broadcast(&o->cond);
	pthread_mutex_unlock(&o->lock);
}

/* Wait for at least one call; returns the number of calls. */
static int outcome_wait(struct outcome *o, int timeout_ms)
{
	struct timespec t;
	int n;

	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += timeout_ms / 1000;
	t.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (t.tv_nsec >= 1000000000) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&o->lock);
	while (o->calls == 0)
		if (pthread_cond_timedwait(&o->cond, &o->lock, &t) == ETIMEDOUT)
			break;
	n = o->calls;
	pthread_mutex_unlock(&o->lock);
	return n;
}

static int outcome_calls(struct outcome *o)
{
	int n;
	pthread_mutex_lock(&o->lock);
	n = o->calls;
	pthread_mutex_unlock(&o->lock);
	return n;
}

/* ---- helpers ---------------------------------------------------------- */

static long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec t = {ms / 1000, (ms % 1000) * 1000000};
	nanosleep(&t, NULL);
}

static char api_url[64];

static struct sms_config kv_config(int port, const char *template_name)
{
	struct sms_config c = {0};

	snprintf(api_url, sizeof(api_url), "http://127.0.0.1:%d", port);
	c.backend = SMS_KAVENEGAR;
	c.api_url = api_url;
	c.api_key = KEY;
	c.sender = "10008663";
	c.template_name = template_name;
	/* "کد ورود: {code}" — UTF-8 and a space, to check the escaping. */
	c.message = "\xda\xa9\xd8\xaf \xd9\x88\xd8\xb1\xd9\x88\xd8\xaf: {code}";
	c.connect_timeout_ms = 2000;
	c.timeout_ms = 5000;
	c.max_queue = 16;
	return c;
}

/* A form decoder (space as '+' or %20), independent of the code under test:
 * the value of `name` in body, decoded into ret; false if absent. */
static bool form_field(const char *body, const char *name, char *ret, size_t cap)
{
	size_t nlen = strlen(name);
	const char *p = body;

	while (p && *p) {
		const char *amp = strchr(p, '&');
		const char *end = amp ? amp : p + strlen(p);
		if ((size_t)(end - p) > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
			size_t n = 0;
			for (const char *q = p + nlen + 1; q < end && n + 1 < cap; q++) {
				if (*q == '+') {
					ret[n++] = ' ';
				} else if (*q == '%' && end - q >= 3) {
					char hex[3] = {q[1], q[2], 0};
					ret[n++] = (char)strtol(hex, NULL, 16);
					q += 2;
				} else {
					ret[n++] = *q;
				}
			}
			ret[n] = '\0';
			return true;
		}
		p = amp ? amp + 1 : NULL;
	}
	return false;
}


static void assert_no_secrets(const char *log)
{
	assert_null(strstr(log, KEY));
	assert_null(strstr(log, CODE));
	assert_null(strstr(log, "/v1/"));
	assert_null(strstr(log, "09123456789"));
	assert_null(strstr(log, PHONE));
}

/* ---- tests ------------------------------------------------------------ */

static void test_send_ok(void **state)
{
	struct server srv;
	struct outcome o;
	struct sms *s = NULL;
	struct sms_config c;
	char v[512];
	(void)state;

	server_start(&srv, ANSWER, 200, ENVELOPE_OK);
	outcome_init(&o);
	c = kv_config(srv.port, NULL);
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o), OTPD_OK);
	assert_int_equal(outcome_wait(&o, 5000), 1);
	assert_int_equal(o.r.status, OTPD_OK);
	assert_false(pthread_equal(o.thread, pthread_self()));
	sms_free(s, 1000);
	assert_int_equal(outcome_calls(&o), 1);

	assert_string_equal(srv.request_line, "POST /v1/" KEY "/sms/send.json HTTP/1.1");
	assert_non_null(strstr(srv.headers, "\r\nAccept: application/json\r\n"));
	assert_non_null(strstr(srv.headers,
	                           "\r\nContent-Type: application/x-www-form-urlencoded"));
	assert_null(strstr(srv.headers, "\r\nExpect:"));
	assert_true(form_field(srv.req_body, "receptor", v, sizeof(v)));
	assert_string_equal(v, "09123456789");
	assert_true(form_field(srv.req_body, "sender", v, sizeof(v)));
	assert_string_equal(v, "10008663");
	assert_true(form_field(srv.req_body, "message", v, sizeof(v)));
	assert_string_equal(v, "\xda\xa9\xd8\xaf \xd9\x88\xd8\xb1\xd9\x88\xd8\xaf: " CODE);
	assert_false(form_field(srv.req_body, "template", v, sizeof(v)));
	assert_false(form_field(srv.req_body, "token", v, sizeof(v)));
	server_stop(&srv);
	outcome_release(&o);
}

static void test_lookup_ok(void **state)
{
	struct server srv;
	struct outcome o;
	struct sms *s = NULL;
	struct sms_config c;
	char v[512];
	(void)state;

	server_start(&srv, ANSWER, 200, ENVELOPE_OK);
	outcome_init(&o);
	c = kv_config(srv.port, "otp-login");
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o), OTPD_OK);
	assert_int_equal(outcome_wait(&o, 5000), 1);
	assert_int_equal(o.r.status, OTPD_OK);
	assert_false(pthread_equal(o.thread, pthread_self()));
	sms_free(s, 1000);
	assert_int_equal(outcome_calls(&o), 1);

	assert_string_equal(srv.request_line, "POST /v1/" KEY "/verify/lookup.json HTTP/1.1");
	assert_true(form_field(srv.req_body, "receptor", v, sizeof(v)));
	assert_string_equal(v, "09123456789");
	assert_true(form_field(srv.req_body, "template", v, sizeof(v)));
	assert_string_equal(v, "otp-login");
	assert_true(form_field(srv.req_body, "token", v, sizeof(v)));
	assert_string_equal(v, CODE);
	assert_false(form_field(srv.req_body, "message", v, sizeof(v)));
	assert_false(form_field(srv.req_body, "sender", v, sizeof(v)));
	server_stop(&srv);
	outcome_release(&o);
}

/* Two sends on one worker: the second reuses the pooled easy handle. */
static void test_two_sends(void **state)
{
	struct server srv;
	struct outcome o1, o2;
	struct sms *s = NULL;
	struct sms_config c;
	char v[64];
	(void)state;

	server_start(&srv, ANSWER, 200, ENVELOPE_OK);
	srv.max_requests = 2;
	outcome_init(&o1);
	outcome_init(&o2);
	c = kv_config(srv.port, "otp-login");
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o1), OTPD_OK);
	assert_int_equal(outcome_wait(&o1, 5000), 1);
	assert_int_equal(o1.r.status, OTPD_OK);
	assert_int_equal(sms_send(s, "+989351112233", "135790", on_done, &o2), OTPD_OK);
	assert_int_equal(outcome_wait(&o2, 5000), 1);
	assert_int_equal(o2.r.status, OTPD_OK);
	sms_free(s, 1000);
	assert_int_equal(server_requests(&srv), 2);
	assert_true(form_field(srv.req_body, "receptor", v, sizeof(v)));
	assert_string_equal(v, "09351112233");
	assert_true(form_field(srv.req_body, "token", v, sizeof(v)));
	assert_string_equal(v, "135790");
	server_stop(&srv);
	outcome_release(&o1);
	outcome_release(&o2);
}

static void test_rejected_418(void **state)
{
	struct server srv;
	struct outcome o;
	struct sms *s = NULL;
	struct sms_config c;
	int logfd;
	char *log;
	(void)state;

	server_start(&srv, ANSWER, 418, ENVELOPE_418);
	outcome_init(&o);
	logfd = log_capture_start();
	c = kv_config(srv.port, NULL);
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o), OTPD_OK);
	assert_int_equal(outcome_wait(&o, 5000), 1);
	sms_free(s, 1000);
	log = log_capture_end(logfd);
	assert_int_equal(o.r.status, OTPD_SMS_REJECTED);
	assert_int_equal(o.r.provider_status, 418);
	assert_int_equal(outcome_calls(&o), 1);
	assert_non_null(strstr(log, "\"event\":\"sms.rejected\""));
	assert_non_null(strstr(log, "418"));
	assert_non_null(strstr(log, "+98912***6789"));
	assert_no_secrets(log);
	server_stop(&srv);
	outcome_release(&o);
}

/* Envelope with HTTP 200 but return.status 418: still refused. */
static void test_rejected_http_200(void **state)
{
	struct server srv;
	struct outcome o;
	struct sms *s = NULL;
	struct sms_config c;
	(void)state;

	server_start(&srv, ANSWER, 200, ENVELOPE_418);
	outcome_init(&o);
	c = kv_config(srv.port, "otp-login");
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o), OTPD_OK);
	assert_int_equal(outcome_wait(&o, 5000), 1);
	sms_free(s, 1000);
	assert_int_equal(o.r.status, OTPD_SMS_REJECTED);
	assert_int_equal(o.r.provider_status, 418);
	server_stop(&srv);
	outcome_release(&o);
}

static void test_html_502(void **state)
{
	struct server srv;
	struct outcome o;
	struct sms *s = NULL;
	struct sms_config c;
	int logfd;
	char *log;
	(void)state;

	server_start(&srv, ANSWER, 502, HTML_502);
	outcome_init(&o);
	logfd = log_capture_start();
	c = kv_config(srv.port, NULL);
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o), OTPD_OK);
	assert_int_equal(outcome_wait(&o, 5000), 1);
	sms_free(s, 1000);
	log = log_capture_end(logfd);
	assert_int_equal(o.r.status, OTPD_SMS_UNAVAILABLE);
	assert_non_null(strstr(log, "\"event\":\"sms.unavailable\""));
	assert_non_null(strstr(log, "502"));
	assert_no_secrets(log);
	server_stop(&srv);
	outcome_release(&o);
}

static void test_timeout(void **state)
{
	struct server srv;
	struct outcome o;
	struct sms *s = NULL;
	struct sms_config c;
	int logfd;
	char *log;
	long t0, elapsed;
	(void)state;

	server_start(&srv, HANG, 0, "");
	outcome_init(&o);
	logfd = log_capture_start();
	c = kv_config(srv.port, NULL);
	c.timeout_ms = 300;
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	t0 = now_ms();
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o), OTPD_OK);
	assert_int_equal(outcome_wait(&o, 5000), 1);
	elapsed = now_ms() - t0;
	sms_free(s, 1000);
	log = log_capture_end(logfd);
	assert_int_equal(o.r.status, OTPD_SMS_UNAVAILABLE);
	assert_false(pthread_equal(o.thread, pthread_self()));
	assert_int_equal(outcome_calls(&o), 1);
	assert_true(elapsed >= 250 && elapsed < 3000);
	assert_int_equal(server_requests(&srv), 1);
	assert_non_null(strstr(log, "CURLE_OPERATION_TIMEDOUT"));
	assert_no_secrets(log);
	server_stop(&srv);
	outcome_release(&o);
}

static void test_refused(void **state)
{
	struct outcome o;
	struct sms *s = NULL;
	struct sms_config c;
	int logfd, port, fd;
	char *log;
	(void)state;

	fd = bound_socket(&port);   /* bound, never listening, then closed */
	close(fd);
	outcome_init(&o);
	logfd = log_capture_start();
	c = kv_config(port, NULL);
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o), OTPD_OK);
	assert_int_equal(outcome_wait(&o, 5000), 1);
	sms_free(s, 1000);
	log = log_capture_end(logfd);
	assert_int_equal(o.r.status, OTPD_SMS_UNAVAILABLE);
	assert_false(pthread_equal(o.thread, pthread_self()));
	assert_int_equal(outcome_calls(&o), 1);
	assert_non_null(strstr(log, "CURLE_COULDNT_CONNECT"));
	assert_non_null(strstr(log, "+98912***6789"));
	assert_no_secrets(log);
	outcome_release(&o);
}

static void test_console(void **state)
{
	struct outcome o;
	struct sms *s = NULL;
	struct sms_config c = {0};
	int logfd;
	char *log;
	(void)state;

	c.backend = SMS_CONSOLE;
	c.max_queue = 4;
	outcome_init(&o);
	logfd = log_capture_start();
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o), OTPD_OK);
	assert_int_equal(outcome_wait(&o, 5000), 1);
	sms_free(s, 1000);
	log = log_capture_end(logfd);
	assert_int_equal(o.r.status, OTPD_OK);
	assert_false(pthread_equal(o.thread, pthread_self()));
	assert_int_equal(outcome_calls(&o), 1);
	assert_non_null(strstr(log, "\"event\":\"sms.console\""));
	assert_non_null(strstr(log, "\"code\":\"" CODE "\""));
	assert_non_null(strstr(log, "\"phone\":\"+98912***6789\""));
	assert_null(strstr(log, PHONE));
	outcome_release(&o);
}

/* In the text format the code stands on a line of its own, once:
 * "CODE +98912***6789 → 482913"; no JSON, no full number. */
static void test_console_text(void **state)
{
	struct outcome o;
	struct sms *s = NULL;
	struct sms_config c = {0};
	int logfd;
	char *log, *line;
	(void)state;

	c.backend = SMS_CONSOLE;
	c.max_queue = 4;
	outcome_init(&o);
	logfd = log_capture_start();
	log_set_format(LOG_FORMAT_TEXT);
	log_set_request_id("00112233aabbccdd");
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o), OTPD_OK);
	log_set_request_id(NULL);
	assert_int_equal(outcome_wait(&o, 5000), 1);
	sms_free(s, 1000);
	log_set_format(LOG_FORMAT_JSON);
	log = log_capture_end(logfd);
	assert_int_equal(o.r.status, OTPD_OK);
	line = strstr(log, "CODE ");
	assert_non_null(line);
	assert_true(line == log || line[-1] == '\n');
	assert_int_equal(strncmp(line, "CODE +98912***6789 \xe2\x86\x92 " CODE "  [req 00112233aabbccdd]\n",
	                         strlen("CODE +98912***6789 \xe2\x86\x92 " CODE "  [req 00112233aabbccdd]\n")), 0);
	assert_true(strstr(log, CODE) == strstr(line, CODE));  /* there first, */
	assert_null(strstr(strchr(line, '\n'), CODE));         /* and only there */
	assert_null(strchr(log, '{'));            /* no JSON */
	assert_null(strstr(log, PHONE));
	outcome_release(&o);
}

/* sms_free with a job in flight and a short wait: done() still called. */
static void test_free_in_flight(void **state)
{
	struct server srv;
	struct outcome o;
	struct sms *s = NULL;
	struct sms_config c;
	long t0;
	int logfd;
	char *log;
	(void)state;

	server_start(&srv, HANG, 0, "");
	outcome_init(&o);
	logfd = log_capture_start();
	c = kv_config(srv.port, NULL);
	c.timeout_ms = 20000;
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o), OTPD_OK);
	for (int i = 0; i < 500 && server_requests(&srv) == 0; i++)
		sleep_ms(10);
	assert_int_equal(server_requests(&srv), 1);
	assert_int_equal(outcome_calls(&o), 0);
	t0 = now_ms();
	sms_free(s, 200);
	assert_true(now_ms() - t0 < 2000);
	log = log_capture_end(logfd);
	assert_int_equal(outcome_calls(&o), 1);
	assert_int_equal(o.r.status, OTPD_SMS_UNAVAILABLE);
	assert_false(pthread_equal(o.thread, pthread_self()));
	assert_no_secrets(log);
	server_stop(&srv);
	outcome_release(&o);
}

/* sms_free lets a job that answers within the wait finish normally. */
static void test_free_waits(void **state)
{
	struct server srv;
	struct outcome o;
	struct sms *s = NULL;
	struct sms_config c;
	(void)state;

	server_start(&srv, ANSWER, 200, ENVELOPE_OK);
	srv.delay_ms = 200;
	outcome_init(&o);
	c = kv_config(srv.port, NULL);
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o), OTPD_OK);
	sms_free(s, 5000);
	assert_int_equal(outcome_calls(&o), 1);
	assert_int_equal(o.r.status, OTPD_OK);
	server_stop(&srv);
	outcome_release(&o);
}

/* max_queue counts queued + in flight; beyond: refused, done never called. */
static void test_queue_full(void **state)
{
	struct server srv;
	struct outcome o1, o2;
	struct sms *s = NULL;
	struct sms_config c;
	int logfd;
	(void)state;

	server_start(&srv, HANG, 0, "");
	outcome_init(&o1);
	outcome_init(&o2);
	logfd = log_capture_start();
	c = kv_config(srv.port, NULL);
	c.max_queue = 1;
	c.timeout_ms = 20000;
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o1), OTPD_OK);
	for (int i = 0; i < 500 && server_requests(&srv) == 0; i++)
		sleep_ms(10);
	assert_int_equal(sms_send(s, PHONE, CODE, on_done, &o2), OTPD_SMS_UNAVAILABLE);
	sms_free(s, 0);
	assert_no_secrets(log_capture_end(logfd));
	assert_int_equal(outcome_calls(&o1), 1);
	assert_int_equal(o1.r.status, OTPD_SMS_UNAVAILABLE);
	assert_int_equal(outcome_calls(&o2), 0);
	server_stop(&srv);
	outcome_release(&o1);
	outcome_release(&o2);
}

static void test_bad_config(void **state)
{
	struct sms *s = NULL;
	struct sms_config c = kv_config(1, NULL);
	int logfd;
	char *log;
	(void)state;

	logfd = log_capture_start();
	c.api_key = "TEST-KEY/../x";
	assert_int_equal(sms_new(&c, &s), OTPD_INTERNAL);
	assert_null(s);
	c.api_key = "";
	assert_int_equal(sms_new(&c, &s), OTPD_INTERNAL);
	c.api_key = KEY;
	c.api_url = "ftp://127.0.0.1";
	assert_int_equal(sms_new(&c, &s), OTPD_INTERNAL);
	c.api_url = api_url;
	c.message = "no placeholder";
	assert_int_equal(sms_new(&c, &s), OTPD_INTERNAL);
	assert_null(s);
	log = log_capture_end(logfd);
	assert_null(strstr(log, "TEST-KEY"));
	assert_null(strstr(log, KEY));
	assert_non_null(strstr(log, "KAVENEGAR_API_KEY"));
}

static void test_bad_args(void **state)
{
	struct outcome o;
	struct sms *s = NULL;
	struct sms_config c = {0};
	(void)state;

	c.backend = SMS_CONSOLE;
	outcome_init(&o);
	assert_int_equal(sms_new(&c, &s), OTPD_OK);
	assert_int_equal(sms_send(s, "09123456789", CODE, on_done, &o), OTPD_INTERNAL);
	assert_int_equal(sms_send(s, "+98912345678", CODE, on_done, &o), OTPD_INTERNAL);
	assert_int_equal(sms_send(s, PHONE, "", on_done, &o), OTPD_INTERNAL);
	assert_int_equal(sms_send(s, PHONE, "12 34", on_done, &o), OTPD_INTERNAL);
	assert_int_equal(sms_send(s, PHONE, CODE, NULL, &o), OTPD_INTERNAL);
	sms_free(s, 1000);
	sms_free(NULL, 0);
	assert_int_equal(outcome_calls(&o), 0);
	outcome_release(&o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_send_ok),
		cmocka_unit_test(test_lookup_ok),
		cmocka_unit_test(test_two_sends),
		cmocka_unit_test(test_rejected_418),
		cmocka_unit_test(test_rejected_http_200),
		cmocka_unit_test(test_html_502),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_console),
		cmocka_unit_test(test_console_text),
		cmocka_unit_test(test_free_in_flight),
		cmocka_unit_test(test_free_waits),
		cmocka_unit_test(test_queue_full),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_bad_args),
	};

	/* The server is on 127.0.0.1: no proxy from the environment. */
	unsetenv("http_proxy");
	unsetenv("HTTP_PROXY");
	unsetenv("https_proxy");
	unsetenv("HTTPS_PROXY");
	unsetenv("all_proxy");
	unsetenv("ALL_PROXY");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
