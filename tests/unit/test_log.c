/* log.c in both formats (OTPD_LOG_FORMAT).  JSON: the bytes of every kind
 * of line (a plain line, one with members, the access line with and without
 * an outcome and with a path that is not UTF-8, the console code line) are
 * what they were before the text format existed.  Text: the layout, the
 * escaping of bytes from outside (control characters, invalid UTF-8,
 * bidirectional controls never reach a terminal raw), the CODE line, the cut
 * of a line longer than the buffer, and the level gate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "log_capture.h"

#include <regex.h>

#include "log.h"

/* Capture what is logged between cap_begin(format) and cap_end(). */
static int cap_fd = -1;

static void cap_begin(enum log_format format)
{
	cap_fd = log_capture_start();
	log_set_format(format);
}

static char *cap_end(void)
{
	log_set_format(LOG_FORMAT_JSON);
	return log_capture_end(cap_fd);
}

static void expect_match(const char *text, const char *pattern)
{
	regex_t re;
	int rc;

	assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
	rc = regexec(&re, text, 0, NULL, 0);
	regfree(&re);
	if (rc != 0)
		fail_msg("line\n  %s\ndoes not match\n  %s", text, pattern);
}

/* The JSON line after its "time" member (the only part that varies), with
 * the time checked for its form. */
static const char *after_time(const char *line)
{
	static const char head[] = "{\"time\":\"";

	assert_int_equal(strncmp(line, head, sizeof(head) - 1), 0);
	expect_match(line, "^\\{\"time\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z\",");
	return line + sizeof(head) - 1 + 24 + 2; /* the time, '"' and ',' */
}

/* Every byte a terminal shows as it is: no control byte but the final
 * newline, well-formed UTF-8, no C1 or bidirectional control. */
static void expect_terminal_safe(const char *text)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t n = strlen(text);

	assert_true(n > 0 && s[n - 1] == '\n');
	for (size_t i = 0; i < n - 1;) {
		unsigned char c = s[i];
		size_t len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
		             : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
		uint32_t cp = c < 0x80 ? c : (uint32_t)(c & (0x7f >> len));

		if (len == 0 || i + len > n - 1)
			fail_msg("byte 0x%02x at %zu is not UTF-8: %s", c, i, text);
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				fail_msg("bad continuation at %zu: %s", i + k, text);
			cp = (cp << 6) | (s[i + k] & 0x3fu);
		}
		if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) ||
		    (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069))
			fail_msg("control U+%04X at %zu reaches the terminal: %s", (unsigned)cp, i, text);
		i += len;
	}
}

static void test_json_lines_unchanged(void **state)
{
	char *out;

	(void)state;
	log_set_request_id(NULL);
	cap_begin(LOG_FORMAT_JSON);
	log_warn("config.development", "DEVELOPMENT MODE %d", 1);
	out = cap_end();
	assert_string_equal(after_time(out),
	                    "\"level\":\"warn\",\"event\":\"config.development\",\"msg\":\"DEVELOPMENT MODE 1\"}\n");

	log_set_request_id("0123456789abcdef");
	cap_begin(LOG_FORMAT_JSON);
	log_fields(LOG_LEVEL_INFO, "server.listening",
	           json_pack("{s:s, s:i, s:b}", "listen", "127.0.0.1:8000", "port", 8000, "on", 1),
	           "otpd listening on %s", "127.0.0.1:8000");
	out = cap_end();
	assert_string_equal(after_time(out),
	                    "\"level\":\"info\",\"request_id\":\"0123456789abcdef\",\"event\":\"server.listening\","
	                    "\"msg\":\"otpd listening on 127.0.0.1:8000\",\"listen\":\"127.0.0.1:8000\",\"port\":8000,\"on\":true}\n");
	log_set_request_id(NULL);
}

static void test_json_access_unchanged(void **state)
{
	struct log_access with = {"POST", "/api/v1/usr/otp", 200, 1234, "127.0.0.1", true,
	            "otp.sent", "code sent to +98912***6789"};
	struct log_access without = {"GET", "/nope", 404, 53, "::1", false, NULL, ""};
	struct log_access bad = {"GET", "/x\xff", 404, 7, "127.0.0.1", true, NULL, ""};
	char *out;

	(void)state;
	log_set_request_id("0123456789abcdef");
	cap_begin(LOG_FORMAT_JSON);
	log_access(&with);
	out = cap_end();
	assert_string_equal(after_time(out),
	                    "\"level\":\"info\",\"request_id\":\"0123456789abcdef\",\"event\":\"http.access\","
	                    "\"msg\":\"code sent to +98912***6789\",\"method\":\"POST\",\"path\":\"/api/v1/usr/otp\","
	                    "\"status\":200,\"duration_us\":1234,\"client\":\"127.0.0.1\",\"completed\":true,"
	                    "\"outcome\":\"otp.sent\"}\n");
	cap_begin(LOG_FORMAT_JSON);
	log_access(&without);
	out = cap_end();
	assert_string_equal(after_time(out),
	                    "\"level\":\"info\",\"request_id\":\"0123456789abcdef\",\"event\":\"http.access\","
	                    "\"msg\":\"GET /nope 404\",\"method\":\"GET\",\"path\":\"/nope\",\"status\":404,"
	                    "\"duration_us\":53,\"client\":\"::1\",\"completed\":false}\n");
	cap_begin(LOG_FORMAT_JSON);
	log_access(&bad);
	out = cap_end();
	assert_string_equal(after_time(out),
	                    "\"level\":\"info\",\"request_id\":\"0123456789abcdef\",\"event\":\"http.access\","
	                    "\"msg\":\"GET - 404\",\"method\":\"GET\",\"path\":\"(not UTF-8)\",\"status\":404,"
	                    "\"duration_us\":7,\"client\":\"127.0.0.1\",\"completed\":true}\n");
	log_set_request_id(NULL);
}

static void test_json_sms_code_unchanged(void **state)
{
	char *out;

	(void)state;
	log_set_request_id("0123456789abcdef");
	cap_begin(LOG_FORMAT_JSON);
	log_sms_code("+98912***6789", "496570");
	out = cap_end();
	assert_string_equal(after_time(out),
	                    "\"level\":\"warn\",\"request_id\":\"0123456789abcdef\",\"event\":\"sms.console\","
	                    "\"msg\":\"development SMS backend: code for +98912***6789\","
	                    "\"phone\":\"+98912***6789\",\"code\":\"496570\"}\n");
	log_set_request_id(NULL);
}

static void test_text_line(void **state)
{
	char *out;

	(void)state;
	log_set_request_id(NULL);
	cap_begin(LOG_FORMAT_TEXT);
	log_warn("config.development", "DEVELOPMENT MODE %d", 1);
	out = cap_end();
	expect_match(out, "^[0-9]{2}:[0-9]{2}:[0-9]{2} warn  config\\.development  DEVELOPMENT MODE 1\n$");

	log_set_request_id("0123456789abcdef");
	cap_begin(LOG_FORMAT_TEXT);
	log_fields(LOG_LEVEL_ERROR, "sms.rejected",
	           json_pack("{s:s, s:i, s:s, s:s, s:n, s:b, s:[i,s]}", "phone", "+98912***6789",
	                     "http_status", 200, "host", "a b", "say", "x\"y=z", "none",
	                     "ok", 0, "list", 1, "p q"),
	           "refused");
	out = cap_end();
	expect_match(out, "^[0-9]{2}:[0-9]{2}:[0-9]{2} error sms\\.rejected  refused  "
	                  "phone=\\+98912\\*\\*\\*6789 http_status=200 host=\"a b\" say=\"x\\\\\"y=z\" none=null "
	                  "ok=false list=\\[1,\"p\\\\x20q\"\\]  \\[req 0123456789abcdef\\]\n$");
	expect_terminal_safe(out);
	log_set_request_id(NULL);
}

static void test_text_access(void **state)
{
	struct log_access a = {"POST", "/api/v1/usr/otp", 200, 1234, "127.0.0.1", true,
	                       "otp.sent", "code sent to +98912***6789"};
	char *out;

	(void)state;
	log_set_request_id("3f2a0123456789ab");
	cap_begin(LOG_FORMAT_TEXT);
	log_access(&a);
	out = cap_end();
	expect_match(out, "^[0-9]{2}:[0-9]{2}:[0-9]{2} info  POST /api/v1/usr/otp 200 1\\.2ms  otp\\.sent  "
	                  "code sent to \\+98912\\*\\*\\*6789  client=127\\.0\\.0\\.1  \\[req 3f2a0123456789ab\\]\n$");

	/* no outcome: the message (method path status again) is left out;
	 * durations in µs, ms, s; an answer cut short says so */
	a.outcome = NULL;
	a.status = 404;
	a.duration_us = 53;
	a.completed = false;
	cap_begin(LOG_FORMAT_TEXT);
	log_access(&a);
	out = cap_end();
	expect_match(out, "^[0-9:]{8} info  POST /api/v1/usr/otp 404 53\xc2\xb5s  client=127\\.0\\.0\\.1 "
	                  "completed=false  \\[req 3f2a0123456789ab\\]\n$");
	a.completed = true;
	a.duration_us = 45678;
	cap_begin(LOG_FORMAT_TEXT);
	log_access(&a);
	out = cap_end();
	expect_match(out, " 404 45ms  client=");
	a.duration_us = 12345678;
	cap_begin(LOG_FORMAT_TEXT);
	log_access(&a);
	out = cap_end();
	expect_match(out, " 404 12\\.3s  client=");
	log_set_request_id(NULL);
}

/* Method and path are the client's bytes: ESC sequences, newlines (a forged
 * second line), invalid UTF-8, C1 controls, bidi overrides and spaces (a
 * forged field) are shown escaped; printable UTF-8 stays as it is. */
static void test_text_escapes_client_bytes(void **state)
{
	struct log_access a = {"G\x01T", "/x\x1b[31mred\xff\n06:00:00 info  FAKE\xc2\x85\xe2\x80\xae\\ \xd8\xb4\x7f",
	                       404, 10, "127.0.0.1", true, NULL, ""};
	char *out;

	(void)state;
	log_set_request_id(NULL);
	cap_begin(LOG_FORMAT_TEXT);
	log_access(&a);
	out = cap_end();
	expect_terminal_safe(out);
	assert_non_null(strstr(out, " info  G\\x01T /x\\x1b[31mred\\xff\\n06:00:00\\x20info\\x20\\x20FAKE"
	                            "\\u0085\\u202e\\\\\\x20\xd8\xb4\\x7f 404 10\xc2\xb5s  client=127.0.0.1\n"));

	/* the same rules for messages and members */
	cap_begin(LOG_FORMAT_TEXT);
	log_fields(LOG_LEVEL_WARN, "http.mhd", json_pack("{s:s}", "k", "a\x1b" "b"),
	           "bad \x1b]0;title\x07 \xc0\xaf \xed\xa0\x80 end");
	out = cap_end();
	expect_terminal_safe(out);
	assert_non_null(strstr(out, "  bad \\x1b]0;title\\x07 \\xc0\\xaf \\xed\\xa0\\x80 end  k=a\\x1bb\n"));
}

static void test_text_sms_code(void **state)
{
	char *out;

	(void)state;
	log_set_request_id("0123456789abcdef");
	cap_begin(LOG_FORMAT_TEXT);
	log_sms_code("+98912***6789", "496570");
	out = cap_end();
	assert_string_equal(out, "CODE +98912***6789 \xe2\x86\x92 496570  [req 0123456789abcdef]\n");
	log_set_request_id(NULL);
	cap_begin(LOG_FORMAT_TEXT);
	log_sms_code("+98912***6789", "496570");
	out = cap_end();
	assert_string_equal(out, "CODE +98912***6789 \xe2\x86\x92 496570\n");
}

/* A line longer than the buffer is cut between characters, ends with "…",
 * and is still one line. */
static void test_text_long_line_is_cut(void **state)
{
	static char big[6001];
	char *out;
	size_t n;

	(void)state;
	for (size_t i = 0; i + 2 <= sizeof(big) - 1; i += 2)
		memcpy(big + i, "\xd8\xb4", 2); /* U+0634, 2 bytes */
	cap_begin(LOG_FORMAT_TEXT);
	log_fields(LOG_LEVEL_INFO, "x", json_pack("{s:s}", "big", big), "m");
	out = cap_end();
	n = strlen(out);
	assert_true(n <= 4096);
	assert_true(n > 4000);
	assert_int_equal(strcmp(out + n - 4, "\xe2\x80\xa6\n"), 0);
	assert_ptr_equal(strchr(out, '\n'), out + n - 1);
	expect_terminal_safe(out);
}

static void test_text_level_gate(void **state)
{
	struct log_access a = {"GET", "/", 200, 1, "127.0.0.1", true, NULL, ""};
	char *out;

	(void)state;
	log_set_level(LOG_LEVEL_ERROR);
	cap_begin(LOG_FORMAT_TEXT);
	log_info("x", "quiet");
	log_sms_code("+98912***6789", "496570");
	log_access(&a);
	log_error("y", "loud");
	out = cap_end();
	log_set_level(LOG_LEVEL_INFO);
	expect_match(out, "^[0-9:]{8} error y  loud\n$");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_lines_unchanged),
		cmocka_unit_test(test_json_access_unchanged),
		cmocka_unit_test(test_json_sms_code_unchanged),
		cmocka_unit_test(test_text_line),
		cmocka_unit_test(test_text_access),
		cmocka_unit_test(test_text_escapes_client_bytes),
		cmocka_unit_test(test_text_sms_code),
		cmocka_unit_test(test_text_long_line_is_cut),
		cmocka_unit_test(test_text_level_gate),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
