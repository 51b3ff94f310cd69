/* Logs: one line per call on stderr, in one of two formats (OTPD_LOG_FORMAT):
 *   json  one object per line (the default for machines; the bytes are the
 *         contract of docs/API.md §4):
 *         {"time":"…Z","level":"info","request_id":"…","event":"otp.sent","msg":"…", …}
 *   text  short lines for a person in development (local time):
 *         06:13:11 warn  config.development  DEVELOPMENT MODE …  k=v k=v  [req 3f2a…]
 *         the access line:  06:13:12 info  POST /api/v1/usr/otp 200 1.2ms  otp.sent  code sent to …  client=…  [req …]
 *         the console code: CODE +98912***6789 → 496570  [req …]
 *         Bytes from outside (client method and path, any string) are escaped:
 *         control characters, invalid UTF-8 and bidirectional controls never
 *         reach the terminal raw.
 * Each line is written with a single write(2), so threads never interleave.
 * A secret (code, key, SECRET_KEY) never reaches a log call, except the
 * console SMS backend's one line; phone numbers go only through
 * otp_phone_mask(). */
#ifndef OTPD_LOG_H
#define OTPD_LOG_H

#include <jansson.h>
#include <stdbool.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN = 1,
	LOG_LEVEL_INFO = 2,
	LOG_LEVEL_DEBUG = 3,
};

void log_set_level(enum log_level level);
/* Whether a line of this level is written (skip building its fields). */
bool log_enabled(enum log_level level);
/* Redirect to another fd (tests); default 2. */
void log_set_fd(int fd);

enum log_format { LOG_FORMAT_JSON = 0, LOG_FORMAT_TEXT = 1 };
/* Before any thread starts (main, tests); default JSON. */
void log_set_format(enum log_format format);

#define LOG_REQUEST_ID_MAX 64

/* The request id of the calling thread (NULL clears it); copied. */
void log_set_request_id(const char *request_id);
/* The calling thread's request id ("" when none): work handed to another
 * thread (SMS worker, store writer) carries it along. */
const char *log_get_request_id(void);

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A line with extra members: `fields` (a JSON object or NULL) is merged into
 * the line and released (the reference is stolen). */
void log_fields(enum log_level level, const char *event, json_t *fields,
                const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* The one access line of a request (event "http.access", level info), with
 * the calling thread's request id. */
struct log_access {
	const char *method;        /* from the client: any bytes */
	const char *path;          /* from the client: any bytes */
	unsigned status;
	long long duration_us;
	const char *client;        /* the client address */
	bool completed;            /* the response was sent in full */
	const char *outcome;       /* what the request did ("otp.sent"), or NULL */
	const char *msg;           /* with an outcome: that in words */
};
void log_access(const struct log_access *a);

/* The console SMS backend's line (development only; the one line that ever
 * holds a code), level warn.  JSON: event "sms.console" with members phone
 * and code; text: a line of its own, "CODE +98912***6789 → 496570". */
void log_sms_code(const char *masked_phone, const char *code);

#define log_error(event, ...) log_msg(LOG_LEVEL_ERROR, event, __VA_ARGS__)
#define log_warn(event, ...) log_msg(LOG_LEVEL_WARN, event, __VA_ARGS__)
#define log_info(event, ...) log_msg(LOG_LEVEL_INFO, event, __VA_ARGS__)
#define log_debug(event, ...) log_msg(LOG_LEVEL_DEBUG, event, __VA_ARGS__)

#endif
