/* The one table from enum otpd_status to {HTTP status, code, title}, and the
 * one place that renders application/problem+json (RFC 9457). */
#ifndef OTPD_HTTP_PROBLEM_H
#define OTPD_HTTP_PROBLEM_H

#include <jansson.h>
#include "../status.h"

struct problem_info {
	unsigned http_status;
	const char *code;   /* docs/API.md §4 */
	const char *title;
	const char *detail; /* default detail for people */
};

/* Never NULL: out-of-range values map to internal_error. */
const struct problem_info *http_problem_info(enum otpd_status st);

/* {"type","title","status","detail","code"} + the members of extra (which
 * is released).  detail NULL -> the table's.  NULL on out of memory. */
json_t *http_problem_new(enum otpd_status st, const char *detail, json_t *extra);

#endif
