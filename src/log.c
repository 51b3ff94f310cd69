#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_level = LOG_LEVEL_INFO;
static int log_fd = 2;
static enum log_format log_format = LOG_FORMAT_JSON;
static _Thread_local char log_rid[LOG_REQUEST_ID_MAX];

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level) { log_level = level; }

void log_set_fd(int fd) { log_fd = fd; }

void log_set_format(enum log_format format) { log_format = format; }

void log_set_request_id(const char *request_id)
{
	if (!request_id) {
		log_rid[0] = '\0';
		return;
	}
	snprintf(log_rid, sizeof(log_rid), "%s", request_id);
}

const char *log_get_request_id(void) { return log_rid; }

static void write_all(const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(log_fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

/* A line is built as a jansson object and dumped into this buffer (no
 * allocation for the output; a longer line falls back to json_dumps). */
#define LINE_MAX_INLINE 4096
static _Thread_local char line_buf[LINE_MAX_INLINE];

/* ---- text lines -------------------------------------------------------- */

/* A text line under construction in line_buf.  Every append is whole or
 * not at all: once one does not fit, the line is cut there (never inside a
 * UTF-8 sequence or an escape) and ends with "…". */
struct tline {
	size_t len;
	bool cut;
};

#define TLINE_CAP (LINE_MAX_INLINE - 4) /* room for "…\n" */

static void tl_raw(struct tline *t, const char *s, size_t n)
{
	if (t->cut)
		return;
	if (n > TLINE_CAP - t->len) {
		t->cut = true;
		return;
	}
	memcpy(line_buf + t->len, s, n);
	t->len += n;
}

static void tl_str(struct tline *t, const char *s) { tl_raw(t, s, strlen(s)); }

static void tl_fmt(struct tline *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void tl_fmt(struct tline *t, const char *fmt, ...)
{
	char b[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	if (n > 0)
		tl_raw(t, b, (size_t)n < sizeof(b) ? (size_t)n : sizeof(b) - 1);
}

/* The length of the well-formed UTF-8 sequence at s (at most n bytes) and
 * its code point, or 0: a stray or cut byte, overlong, surrogate, > U+10FFFF. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
	uint32_t v, min;
	size_t len;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2, v = s[0] & 0x1fu, min = 0x80;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3, v = s[0] & 0x0fu, min = 0x800;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4, v = s[0] & 0x07u, min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3fu);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

/* Characters a terminal acts on rather than shows: C1 controls, and the
 * bidirectional marks, embeddings, overrides and isolates (which reorder
 * what follows them on the line). */
static bool is_invisible_control(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f) || cp == 0x061c || cp == 0x200e || cp == 0x200f ||
	       (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

#define ESC_SPACE 1u /* ' ' as \x20 (client method and path: one word each) */
#define ESC_QUOTE 2u /* '"' as \" (inside a quoted value) */

/* Any bytes, shown safely: printable UTF-8 as it is; \n \r \t, other
 * control bytes and invalid UTF-8 bytes as \xNN, invisible controls as
 * \uNNNN, the backslash as \\. */
static void tl_escaped(struct tline *t, const char *str, size_t n, unsigned flags)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < n && !t->cut) {
		uint32_t cp = 0;
		size_t k = utf8_next(s + i, n - i, &cp);
		char e[8];

		if (k == 0 || cp < 0x20 || cp == 0x7f) {
			unsigned char c = s[i];
			const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;

			if (named) {
				tl_raw(t, named, 2);
			} else {
				e[0] = '\\', e[1] = 'x', e[2] = hex[c >> 4], e[3] = hex[c & 15];
				tl_raw(t, e, 4);
			}
			i++;
			continue;
		}
		if (cp == '\\' || (cp == '"' && (flags & ESC_QUOTE))) {
			e[0] = '\\', e[1] = (char)cp;
			tl_raw(t, e, 2);
		} else if (cp == ' ' && (flags & ESC_SPACE)) {
			tl_raw(t, "\\x20", 4);
		} else if (is_invisible_control(cp)) {
			e[0] = '\\', e[1] = 'u';
			for (int d = 0; d < 4; d++)
				e[2 + d] = hex[(cp >> (12 - 4 * d)) & 15];
			tl_raw(t, e, 6);
		} else {
			tl_raw(t, str + i, k);
		}
		i += k;
	}
}

static void tl_begin(struct tline *t, enum log_level level)
{
	static const char *const padded[] = {"error ", "warn  ", "info  ", "debug "};
	struct timespec now;
	struct tm tm;

	t->len = 0;
	t->cut = false;
	clock_gettime(CLOCK_REALTIME, &now);
	localtime_r(&now.tv_sec, &tm);
	tl_fmt(t, "%02d:%02d:%02d ", tm.tm_hour, tm.tm_min, tm.tm_sec);
	tl_str(t, padded[level]);
}

/* "  [req ID]", "…" if cut, the newline; one write. */
static void tl_end(struct tline *t)
{
	if (log_rid[0]) {
		tl_str(t, "  [req ");
		tl_escaped(t, log_rid, strlen(log_rid), ESC_SPACE);
		tl_str(t, "]");
	}
	if (t->cut) {
		memcpy(line_buf + t->len, "\xe2\x80\xa6", 3);
		t->len += 3;
	}
	line_buf[t->len++] = '\n';
	write_all(line_buf, t->len);
}

/* One extra member's value: numbers and words as they are, a string with a
 * space, '"' or '=' (or empty) quoted, objects and arrays as compact JSON. */
static void tl_value(struct tline *t, json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING: {
		const char *s = json_string_value(v);
		size_t n = json_string_length(v);
		bool quote = n == 0;

		for (size_t i = 0; i < n && !quote; i++)
			quote = s[i] == ' ' || s[i] == '"' || s[i] == '=';
		if (quote)
			tl_str(t, "\"");
		tl_escaped(t, s, n, quote ? ESC_QUOTE : 0);
		if (quote)
			tl_str(t, "\"");
		break;
	}
	case JSON_INTEGER:
		tl_fmt(t, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		break;
	case JSON_REAL:
		tl_fmt(t, "%g", json_real_value(v));
		break;
	case JSON_TRUE:
		tl_str(t, "true");
		break;
	case JSON_FALSE:
		tl_str(t, "false");
		break;
	case JSON_NULL:
		tl_str(t, "null");
		break;
	default: {
		char b[512];
		size_t n = json_dumpb(v, b, sizeof(b), JSON_COMPACT);

		if (n > 0 && n <= sizeof(b))
			tl_escaped(t, b, n, ESC_SPACE);
		else
			tl_str(t, "\xe2\x80\xa6");
		break;
	}
	}
}

/* "HH:MM:SS level event  msg  k=v k=v  [req ID]" */
static void emit_text(enum log_level level, const char *event, json_t *fields, const char *msg)
{
	struct tline t;
	const char *key;
	json_t *v;
	bool first = true;

	tl_begin(&t, level);
	tl_str(&t, event);
	tl_str(&t, "  ");
	tl_escaped(&t, msg, strlen(msg), 0);
	if (json_is_object(fields)) {
		json_object_foreach(fields, key, v) {
			tl_str(&t, first ? "  " : " ");
			first = false;
			tl_escaped(&t, key, strlen(key), ESC_SPACE);
			tl_str(&t, "=");
			tl_value(&t, v);
		}
	}
	tl_end(&t);
}

static void tl_duration(struct tline *t, long long us)
{
	if (us < 0)
		us = 0;
	if (us < 1000)
		tl_fmt(t, "%lld\xc2\xb5s", us);
	else if (us < 10000)
		tl_fmt(t, "%lld.%lldms", us / 1000, us % 1000 / 100);
	else if (us < 10000000)
		tl_fmt(t, "%lldms", us / 1000);
	else
		tl_fmt(t, "%lld.%llds", us / 1000000, us % 1000000 / 100000);
}

/* "HH:MM:SS info  METHOD PATH STATUS DURATION  outcome  msg  client=… [completed=false]  [req ID]" */
static void access_text(const struct log_access *a)
{
	struct tline t;

	tl_begin(&t, LOG_LEVEL_INFO);
	tl_escaped(&t, a->method, strlen(a->method), ESC_SPACE);
	tl_str(&t, " ");
	tl_escaped(&t, a->path, strlen(a->path), ESC_SPACE);
	tl_fmt(&t, " %u ", a->status);
	tl_duration(&t, a->duration_us);
	if (a->outcome) {
		tl_str(&t, "  ");
		tl_str(&t, a->outcome);
		tl_str(&t, "  ");
		tl_escaped(&t, a->msg, strlen(a->msg), 0);
	}
	tl_str(&t, "  client=");
	tl_escaped(&t, a->client, strlen(a->client), ESC_SPACE);
	if (!a->completed)
		tl_str(&t, " completed=false");
	tl_end(&t);
}

/* ---- lines ------------------------------------------------------------- */

static void emit(enum log_level level, const char *event, json_t *fields,
                 const char *fmt, va_list ap)
{
	char msg[1024];
	char ts[32];
	struct timespec now;
	struct tm tm;
	json_t *line, *m;
	char *out = NULL;
	size_t n;
	int tn;

	if (level > log_level) {
		json_decref(fields);
		return;
	}
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (log_format == LOG_FORMAT_TEXT) {
		emit_text(level, event, fields, msg);
		json_decref(fields);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	tn = snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
	              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	              tm.tm_min, tm.tm_sec, (int)(now.tv_nsec / 1000000));

	line = json_object();
	if (!line) {
		json_decref(fields);
		return;
	}
	/* Keys, levels, times, request ids (our own hex) and event names are
	 * ASCII from this program: no UTF-8 check needed for them. */
	json_object_set_new_nocheck(line, "time",
	                            json_stringn_nocheck(ts, tn > 0 ? (size_t)tn : 0));
	json_object_set_new_nocheck(line, "level", json_string_nocheck(level_names[level]));
	if (log_rid[0])
		json_object_set_new_nocheck(line, "request_id", json_string_nocheck(log_rid));
	json_object_set_new_nocheck(line, "event", json_string_nocheck(event));
	/* json_string refuses invalid UTF-8: fall back to a fixed text. */
	m = json_string(msg);
	json_object_set_new_nocheck(line, "msg", m ? m : json_string_nocheck("(unprintable)"));
	if (fields)
		json_object_update(line, fields);
	json_decref(fields);

	n = json_dumpb(line, line_buf, sizeof(line_buf) - 1, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (n > 0 && n < sizeof(line_buf)) {
		line_buf[n] = '\n';
		write_all(line_buf, n + 1);
	} else {
		out = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (out) {
			n = strlen(out);
			out[n] = '\n'; /* replace the NUL: written with explicit length */
			write_all(out, n + 1);
			free(out);
		}
	}
	json_decref(line);
}

bool log_enabled(enum log_level level) { return level <= log_level; }

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	emit(level, event, NULL, fmt, ap);
	va_end(ap);
}

void log_fields(enum log_level level, const char *event, json_t *fields,
                const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	emit(level, event, fields, fmt, ap);
	va_end(ap);
}

void log_access(const struct log_access *a)
{
	json_t *f, *path, *method;

	if (!log_enabled(LOG_LEVEL_INFO))
		return;
	if (log_format == LOG_FORMAT_TEXT) {
		access_text(a);
		return;
	}
	f = json_object();
	path = json_string(a->path);
	method = json_string(a->method);
	/* method and path come from the client: checked as UTF-8. */
	json_object_set_new_nocheck(f, "method", method ? method : json_string_nocheck("?"));
	json_object_set_new_nocheck(f, "path", path ? path : json_string_nocheck("(not UTF-8)"));
	json_object_set_new_nocheck(f, "status", json_integer((json_int_t)a->status));
	json_object_set_new_nocheck(f, "duration_us", json_integer((json_int_t)a->duration_us));
	json_object_set_new_nocheck(f, "client", json_string_nocheck(a->client));
	json_object_set_new_nocheck(f, "completed", json_boolean(a->completed));
	if (a->outcome) {
		json_object_set_new_nocheck(f, "outcome", json_string_nocheck(a->outcome));
		log_fields(LOG_LEVEL_INFO, "http.access", f, "%s", a->msg);
	} else {
		log_fields(LOG_LEVEL_INFO, "http.access", f, "%s %s %u",
		           method ? a->method : "?", path ? a->path : "-", a->status);
	}
}

void log_sms_code(const char *masked_phone, const char *code)
{
	struct tline t;

	if (!log_enabled(LOG_LEVEL_WARN))
		return;
	if (log_format == LOG_FORMAT_JSON) {
		log_fields(LOG_LEVEL_WARN, "sms.console",
		           json_pack("{s:s, s:s}", "phone", masked_phone, "code", code),
		           "development SMS backend: code for %s", masked_phone);
		return;
	}
	t.len = 0;
	t.cut = false;
	tl_str(&t, "CODE ");
	tl_escaped(&t, masked_phone, strlen(masked_phone), ESC_SPACE);
	tl_str(&t, " \xe2\x86\x92 ");
	tl_escaped(&t, code, strlen(code), ESC_SPACE);
	tl_end(&t);
}
