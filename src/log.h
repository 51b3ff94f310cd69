/* Logs: one JSON object per line on stderr:
 *   {"time":"…Z","level":"info","request_id":"…","event":"otp.sent","msg":"…", …}
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

#define log_error(event, ...) log_msg(LOG_LEVEL_ERROR, event, __VA_ARGS__)
#define log_warn(event, ...) log_msg(LOG_LEVEL_WARN, event, __VA_ARGS__)
#define log_info(event, ...) log_msg(LOG_LEVEL_INFO, event, __VA_ARGS__)
#define log_debug(event, ...) log_msg(LOG_LEVEL_DEBUG, event, __VA_ARGS__)

#endif
