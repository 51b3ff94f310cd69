/* Shared by the files of http/: the server, the request and the routes. */
#ifndef OTPD_HTTP_INTERNAL_H
#define OTPD_HTTP_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include "../auth/login.h"
#include "../auth/session.h"
#include "../config.h"
#include "../otp/phone.h"
#include "../util/netaddr.h"
#include "../util/ratelimit.h"
#include "server.h"

#define HTTP_MAX_BODY 4096      /* docs/API.md §4: "a few KiB is plenty" */
/* libmicrohttpd's memory per connection: the request line, headers and body
 * being read, and the response's headers.  libmicrohttpd zeroes it between
 * requests, so it is kept small (16 KiB: was 32, memset was 4 % of a
 * verify's CPU).  Request heads above HTTP_MAX_HEADERS are refused before
 * any work, so that a served request always has room for its answer (two
 * token cookies, about 1 KiB). */
#define HTTP_CONNECTION_MEMORY (16 * 1024)
#define HTTP_MAX_HEADERS (8 * 1024)
/* Every X-Forwarded-For header of a request from a trusted proxy, joined:
 * longer is 400 malformed_request. */
#define HTTP_MAX_XFF 2048
#define HTTP_SMS_RETRY_AFTER 30 /* seconds, with sms_unavailable */

struct http_server {
	const struct config *cfg;
	struct auth *auth;
	struct store *store;
	struct MHD_Daemon *daemon;
	struct ratelimit *rl_send;
	struct ratelimit *rl_verify;
	atomic_long inflight;   /* requests not yet completed */
	atomic_long busy;       /* of them, answered or being answered */
	atomic_long waiting;    /* of them, suspended (http_suspend()) */
	unsigned port;
	atomic_bool stopping;   /* http_server_quiesce() was called */
};

struct request;
struct http_admin;
typedef enum otpd_status (*http_handler_fn)(struct request *r);

/* What a route's answers count in the metrics besides the HTTP ones. */
enum route_count { COUNT_NONE = 0, COUNT_SEND, COUNT_VERIFY, COUNT_REFRESH };

struct route {
	/* An exact path; or a template whose last segment is {NAME}: the path
	 * up to it, then one segment, non-empty and without '/' (in
	 * request.route_param for the handler).  One trailing slash may follow. */
	const char *path;
	const char *method;     /* "GET" routes also answer HEAD */
	http_handler_fn handler;
	/* When the handler has suspended the connection (http_suspend()): the
	 * answer, once another thread has resumed it (http_resume()). */
	http_handler_fn finish;
	enum route_count count;
};

enum body_kind { BODY_NONE = 0, BODY_JSON, BODY_FORM };

enum phase {
	PHASE_NEW = 0,
	PHASE_WAITING,   /* suspended: waiting for the store or the SMS worker */
	PHASE_RESUMED,   /* resumed: the outcome is in; route->finish answers */
	PHASE_ANSWERED,
};

/* The request owns everything it allocates; freed only in completed(). */
struct request {
	struct http_server *srv;
	struct MHD_Connection *conn;
	const struct route *route;
	size_t route_index;      /* in the route table (its size: no such path) */
	/* The {NAME} segment of a template route's path ("" when it does not
	 * fit: no such name is that long). */
	char route_param[64];
	char id[17];
	int64_t start_ns;
	char method[8];
	char path[96];
	struct netaddr client;
	char client_str[NETADDR_STRLEN];
	bool xff_too_long;       /* from a trusted proxy, past HTTP_MAX_XFF */

	enum body_kind kind;
	char *body;
	size_t body_len;
	bool too_large;
	json_t *fields;          /* the decoded body: a JSON object */

	/* What the handler produced. */
	unsigned http_status;
	enum otpd_status status; /* what was answered (with answered) */
	bool answered;
	json_t *resp;            /* success body, or NULL */
	/* Or a success body that is not JSON, sent as it is with its own
	 * Content-Type: malloc'ed (raw_owned) or static (an embedded file). */
	const void *raw_body;
	size_t raw_len;
	const char *raw_type;
	bool raw_owned;
	json_t *extra;           /* problem members (errors, retry_after, ...) */
	int retry_after_s;       /* > 0: Retry-After header */
	const char *detail;      /* problem detail override (static string) */
	struct auth_login login; /* verify: the login and its tokens */
	struct auth_tokens tokens; /* refresh: the new pair */
	bool no_body;            /* 204 */
	bool close;              /* Connection: close (shutting down) */
	bool busy;               /* counted in srv->busy (request_busy()) */
	/* Auth cookies to set (pointing into login or tokens), or to clear. */
	const char *cookie_access;
	const char *cookie_refresh;
	int64_t cookie_access_ttl;
	int64_t cookie_refresh_ttl;
	/* A staff session's CSRF token (readable by the page's script:
	 * not HttpOnly, SameSite=Strict), with the refresh cookie; NULL: none. */
	const char *cookie_csrf;
	bool cookies_clear;
	/* Pages and files for browsers (the docs): on success, the page's
	 * security headers (respond(): Content-Security-Policy, ...), and a
	 * Cache-Control other than no-store (static string; NULL: no-store). */
	bool page_headers;
	const char *cache_control;

	/* Suspended work: its outcome is handed over by a store or SMS thread. */
	atomic_int phase;
	struct auth_send_result send;  /* send */
	struct auth_verify verify;     /* verify */
	struct auth_session_op session_op; /* refresh, logout */
	struct auth_me_op me;          /* me */
	struct http_admin *admin;      /* the admin API (h_admin.c); freed at completion */
	enum otpd_status ping;         /* readyz: the store's answer */
	char phone[OTP_PHONE_LEN + 1];

	/* The outcome, told in the request's http.access line (http_note()):
	 * one log line per request at info. */
	const char *note_event;
	char note_msg[160];
};

/* request.c */
enum otpd_status http_request_headers(struct request *r);
void http_request_append(struct request *r, const char *data, size_t len);
enum otpd_status http_request_decode(struct request *r);
void http_request_client(struct request *r);
int64_t http_now_ms(void);

/* The routes whose method reads a body (POST, PATCH); others drop it. */
bool http_method_has_body(const char *method);
/* Add msg to r->extra's "errors" under field (a 400 validation_error's). */
void http_add_error(struct request *r, const char *field, const char *msg);
/* Validation helpers: they add to r->extra's "errors" and return false. */
bool http_field_phone(struct request *r, char ret[OTP_PHONE_LEN + 1]);
bool http_field_code(struct request *r, char ret[7]);
/* An optional string field of the decoded body: NULL when absent; false
 * (and an error added) when present but not a string. */
bool http_field_optional_string(struct request *r, const char *name, const char **ret);
/* A cookie-authenticated state-changing request with an Origin header must
 * come from the request's own host or OTPD_ALLOWED_ORIGINS (docs/API.md
 * "Tokens": CSRF defence on top of SameSite=Lax). */
bool http_origin_allowed(struct request *r);
const char *http_cookie(struct request *r, const char *name);
const char *http_header(struct request *r, const char *name);
json_t *http_user_json(const struct store_user *u);
/* Answer with both auth cookies (the strings stay owned by the request). */
void http_set_auth_cookies(struct request *r, const char *access, const char *refresh,
                           int64_t access_ttl_s, int64_t refresh_ttl_s);
enum otpd_status http_throttle(struct request *r, struct ratelimit *rl);
/* The same throttle for the store to count across nodes (store.h, struct
 * store_throttle): endpoint 'S' (send) or 'V' (verify), and the client's
 * bucket as http_throttle() keys it. */
void http_store_throttle(const struct request *r, char endpoint, struct rate rate,
                         struct store_throttle *ret);
/* 429 throttled, as http_throttle() answers it, from the store's retry_after. */
enum otpd_status http_throttled(struct request *r, int retry_after_s);
/* Answer with these bytes and this Content-Type: static storage (never
 * copied nor freed), or a malloc'ed buffer the request then owns. */
void http_set_static_body(struct request *r, const void *body, size_t len, const char *type);
void http_set_owned_body(struct request *r, char *body, size_t len, const char *type);

/* Suspend the connection before starting asynchronous work whose callback
 * calls http_resume() (from any thread, exactly once); the handler then
 * returns OTPD_OK and route->finish answers when the connection is back. */
void http_suspend(struct request *r);
void http_resume(struct request *r);
void http_resume_cb(void *request); /* http_resume() as a done callback */
/* The outcome of r at info level (event: a static ASCII name such as
 * "auth.login"), logged with its access line: members "outcome" and "msg".
 * Nothing is kept below info.  Warnings and errors are logged at once
 * instead, with log_warn()/log_error(). */
void http_note(struct request *r, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* handlers */
enum otpd_status http_h_otp_send(struct request *r);
enum otpd_status http_h_otp_send_finish(struct request *r);
enum otpd_status http_h_otp_verify(struct request *r);
enum otpd_status http_h_otp_verify_finish(struct request *r);
enum otpd_status http_h_refresh(struct request *r);
enum otpd_status http_h_refresh_finish(struct request *r);
enum otpd_status http_h_admin_user(struct request *r);
enum otpd_status http_h_admin_user_finish(struct request *r);
enum otpd_status http_h_admin_users(struct request *r);
enum otpd_status http_h_admin_users_finish(struct request *r);
enum otpd_status http_h_admin_user_patch(struct request *r);
enum otpd_status http_h_admin_user_patch_finish(struct request *r);
enum otpd_status http_h_admin_audit(struct request *r);
enum otpd_status http_h_admin_audit_finish(struct request *r);
enum otpd_status http_h_admin_codes(struct request *r);
enum otpd_status http_h_admin_codes_finish(struct request *r);
enum otpd_status http_h_admin_stats(struct request *r);
enum otpd_status http_h_admin_stats_finish(struct request *r);
/* Frees what the admin API kept for a request (h_admin.c); accepts NULL. */
void http_admin_free(struct http_admin *a);
enum otpd_status http_h_logout(struct request *r);
enum otpd_status http_h_logout_finish(struct request *r);
enum otpd_status http_h_me(struct request *r);
enum otpd_status http_h_me_finish(struct request *r);
enum otpd_status http_h_jwks(struct request *r);
enum otpd_status http_h_healthz(struct request *r);
enum otpd_status http_h_readyz(struct request *r);
enum otpd_status http_h_readyz_finish(struct request *r);
enum otpd_status http_h_metrics(struct request *r);
enum otpd_status http_h_schema(struct request *r);
enum otpd_status http_h_docs(struct request *r);
enum otpd_status http_h_docs_file(struct request *r);

#endif
