#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_level = LOG_LEVEL_INFO;
static int log_fd = 2;
static _Thread_local char log_rid[LOG_REQUEST_ID_MAX];

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level) { log_level = level; }

void log_set_fd(int fd) { log_fd = fd; }

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
