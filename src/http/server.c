/* libmicrohttpd glue: routing, the request lifetime (created on the first
 * call, freed in completed()), rendering of every answer, suspend/resume. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "../log.h"
#include "../metrics.h"
#include "../store/store.h"
#include "../util/random.h"
#include "internal.h"
#include "problem.h"

static const struct route routes[] = {
	{"/api/v1/usr/otp", "POST", http_h_otp_send, http_h_otp_send_finish, COUNT_SEND},
	{"/api/v1/usr/otp/verify", "POST", http_h_otp_verify, http_h_otp_verify_finish, COUNT_VERIFY},
	{"/api/v1/usr/token/refresh", "POST", http_h_refresh, http_h_refresh_finish, COUNT_REFRESH},
	{"/api/v1/usr/logout", "POST", http_h_logout, http_h_logout_finish, COUNT_NONE},
	{"/api/v1/usr/me", "GET", http_h_me, http_h_me_finish, COUNT_NONE},
	{"/.well-known/jwks.json", "GET", http_h_jwks, NULL, COUNT_NONE},
	{"/healthz", "GET", http_h_healthz, NULL, COUNT_NONE},
	{"/readyz", "GET", http_h_readyz, http_h_readyz_finish, COUNT_NONE},
	{"/metrics", "GET", http_h_metrics, NULL, COUNT_NONE},
	{"/api/v1/schema", "GET", http_h_schema, NULL, COUNT_NONE},
	{"/api/v1/docs", "GET", http_h_docs, NULL, COUNT_NONE},
	{"/api/v1/docs/{file}", "GET", http_h_docs_file, NULL, COUNT_NONE},
	{"/api/v1/admin/users/{id}", "GET", http_h_admin_user, http_h_admin_user_finish, COUNT_NONE},
	{"/api/v1/admin/users", "GET", http_h_admin_users, http_h_admin_users_finish, COUNT_NONE},
	{"/api/v1/admin/users/{id}", "PATCH", http_h_admin_user_patch, http_h_admin_user_patch_finish, COUNT_NONE},
	{"/api/v1/admin/audit", "GET", http_h_admin_audit, http_h_admin_audit_finish, COUNT_NONE},
	{"/api/v1/admin/codes", "GET", http_h_admin_codes, http_h_admin_codes_finish, COUNT_NONE},
	{"/api/v1/admin/stats", "GET", http_h_admin_stats, http_h_admin_stats_finish, COUNT_NONE},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

/* The route templates, in table order: the metrics' `route` label. */
static const char *route_paths[NROUTES];

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The route's path (struct route), or with one trailing slash.  A template's
 * {NAME} segment is copied into param ("" when it does not fit). */
static bool path_is(const char *url, const char *path, char *param, size_t param_len)
{
	const char *brace = strchr(path, '{');
	size_t n = brace ? (size_t)(brace - path) : strlen(path);
	const char *seg = url + n;
	size_t len;

	if (strncmp(url, path, n) != 0)
		return false;
	if (!brace)
		return seg[0] == '\0' || (seg[0] == '/' && seg[1] == '\0');
	len = strcspn(seg, "/");
	if (len == 0 || !(seg[len] == '\0' || (seg[len] == '/' && seg[len + 1] == '\0')))
		return false;
	if (len < param_len) {
		memcpy(param, seg, len);
		param[len] = '\0';
	} else {
		param[0] = '\0';
	}
	return true;
}

static bool method_matches(const struct route *rt, const char *method)
{
	if (strcmp(rt->method, method) == 0)
		return true;
	return strcmp(rt->method, "GET") == 0 && strcmp(method, "HEAD") == 0;
}

/* The route for url+method; NULL with *ret_status NOT_FOUND or
 * METHOD_NOT_ALLOWED (then allow holds the Allow header).  *ret_index is
 * the table index of the route, or of the path a 405 names (NROUTES: no
 * such path).  param gets a template route's {NAME} segment. */
static const struct route *route_find(const char *url, const char *method,
                                      char *allow, size_t allow_len,
                                      char *param, size_t param_len,
                                      enum otpd_status *ret_status, size_t *ret_index)
{
	bool path_known = false;
	size_t n = 0;

	allow[0] = '\0';
	*ret_index = NROUTES;
	for (size_t i = 0; i < NROUTES; i++) {
		if (!path_is(url, routes[i].path, param, param_len))
			continue;
		*ret_index = i;
		if (method_matches(&routes[i], method))
			return &routes[i];
		path_known = true;
		n += (size_t)snprintf(allow + n, n < allow_len ? allow_len - n : 0, "%s%s%s",
		                      n ? ", " : "", routes[i].method,
		                      strcmp(routes[i].method, "GET") == 0 ? ", HEAD" : "");
	}
	*ret_status = path_known ? OTPD_METHOD_NOT_ALLOWED : OTPD_NOT_FOUND;
	return NULL;
}

static void add_cookie(struct MHD_Response *resp, const char *name, const char *value,
                       int64_t max_age, bool secure)
{
	char buf[2048];

	snprintf(buf, sizeof(buf), "%s=%s; Max-Age=%lld; Path=/; HttpOnly; SameSite=Lax%s",
	         name, value, (long long)max_age, secure ? "; Secure" : "");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_SET_COOKIE, buf);
}

/* The CSRF cookie: the admin console's script reads it to send it back as
 * X-CSRF-Token, so not HttpOnly; never sent on a cross-site request. */
static void add_csrf_cookie(struct MHD_Response *resp, const char *value, int64_t max_age,
                            bool secure)
{
	char buf[256];

	snprintf(buf, sizeof(buf), "csrf_token=%s; Max-Age=%lld; Path=/; SameSite=Strict%s",
	         value, (long long)max_age, secure ? "; Secure" : "");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_SET_COOKIE, buf);
}

/* From its handler's start (or its first answer) to its completion, a
 * request is busy: a shutdown waits for it.  One that is still receiving its
 * head or body is not, and is dropped by http_server_stop(). */
static void request_busy(struct request *r)
{
	if (r->busy)
		return;
	r->busy = true;
	atomic_fetch_add(&r->srv->busy, 1);
}

/* The docs page's security headers (on its files too: harmless there, and
 * one rule).  Everything comes from otpd itself: scripts and styles are
 * files (no inline script or style, no eval), images are files or data: URIs
 * (Swagger UI's CSS draws its icons with them), "Try it out" and the
 * document are fetched from this origin; no plugin, no <base>, no framing. */
#define PAGE_CSP "default-src 'self'; script-src 'self'; style-src 'self'; " \
                 "img-src 'self' data:; connect-src 'self'; font-src 'self'; " \
                 "object-src 'none'; base-uri 'none'; form-action 'self'; " \
                 "frame-ancestors 'none'"

/* The one place that turns a handler's status into an answer. */
static enum MHD_Result respond(struct request *r, enum otpd_status st, const char *allow)
{
	struct MHD_Response *resp;
	json_t *body;
	char *text;
	enum MHD_Result ret;
	bool problem = st != OTPD_OK || (!r->resp && !r->raw_body && !r->no_body);

	request_busy(r);
	/* Log once: an OTPD_INTERNAL was logged where it arose (store, SMS,
	 * auth); only what surfaces here unlogged is logged here. */
	if (st == OTPD_NOMEM)
		log_error("http.internal_error", "out of memory on %s %s", r->method, r->path);
	if (problem) {
		if (st == OTPD_OK) {
			log_error("http.internal_error", "%s %s: the handler gave no answer",
			          r->method, r->path);
			st = OTPD_INTERNAL;
		}
		body = http_problem_new(st, r->detail, r->extra);
		r->extra = NULL;
		r->http_status = http_problem_info(st)->http_status;
	} else {
		body = r->resp;
		r->resp = NULL;
	}
	text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (!problem && r->raw_body) {
		free(text);
		text = NULL;
		resp = MHD_create_response_from_buffer(r->raw_len, (void *)r->raw_body,
		                                       r->raw_owned ? MHD_RESPMEM_MUST_FREE
		                                                    : MHD_RESPMEM_PERSISTENT);
		if (resp)
			r->raw_owned = false; /* the response owns it now */
	} else if (!problem && r->no_body) {
		free(text);
		text = NULL;
		resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
	} else if (!text) {
		static const char oom[] = "{\"type\":\"urn:otpd:error:internal_error\",\"title\":\"Internal error\",\"status\":500,\"detail\":\"out of memory\",\"code\":\"internal_error\"}";
		r->http_status = 500;
		problem = true;
		resp = MHD_create_response_from_buffer(sizeof(oom) - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
	} else {
		resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	}
	if (!resp) {
		free(text);
		return MHD_NO;
	}
	if (problem || !r->no_body)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
		                        problem ? "application/problem+json"
		                        : r->raw_type ? r->raw_type : "application/json");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
	                        !problem && r->cache_control ? r->cache_control : "no-store");
	MHD_add_response_header(resp, "X-Request-Id", r->id);
	if (!problem && r->page_headers) {
		MHD_add_response_header(resp, "Content-Security-Policy", PAGE_CSP);
		MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
		MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
		MHD_add_response_header(resp, "X-Frame-Options", "DENY");
	}
	if (allow && *allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
	if (r->retry_after_s > 0) {
		char ra[16];
		snprintf(ra, sizeof(ra), "%d", r->retry_after_s);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
	}
	if (!problem && r->cookie_access) {
		bool secure = r->srv->cfg->cookie_secure;
		add_cookie(resp, "access_token", r->cookie_access, r->cookie_access_ttl, secure);
		add_cookie(resp, "refresh_token", r->cookie_refresh, r->cookie_refresh_ttl, secure);
		if (r->cookie_csrf)
			add_csrf_cookie(resp, r->cookie_csrf, r->cookie_refresh_ttl, secure);
	}
	if (!problem && r->cookies_clear) {
		bool secure = r->srv->cfg->cookie_secure;
		add_cookie(resp, "access_token", "", 0, secure);
		add_cookie(resp, "refresh_token", "", 0, secure);
		add_csrf_cookie(resp, "", 0, secure);
	}
	if (st == OTPD_INVALID_TOKEN)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
		                        "Bearer error=\"invalid_token\"");
	if (r->close)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	r->status = st;
	r->answered = true;
	atomic_store(&r->phase, PHASE_ANSWERED);
	ret = MHD_queue_response(r->conn, r->http_status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static struct request *request_new(struct http_server *srv, struct MHD_Connection *conn,
                                   const char *url, const char *method)
{
	struct request *r = calloc(1, sizeof(*r));
	unsigned char rnd[8];
	static const char hex[] = "0123456789abcdef";

	if (!r)
		return NULL;
	r->srv = srv;
	r->conn = conn;
	r->start_ns = mono_ns();
	r->route_index = NROUTES;
	if (!util_random_id_bytes(rnd, sizeof(rnd)))
		memset(rnd, 0, sizeof(rnd));
	for (size_t i = 0; i < sizeof(rnd); i++) {
		r->id[2 * i] = hex[rnd[i] >> 4];
		r->id[2 * i + 1] = hex[rnd[i] & 15];
	}
	r->id[16] = '\0';
	snprintf(r->method, sizeof(r->method), "%s", method);
	snprintf(r->path, sizeof(r->path), "%s", url);
	atomic_fetch_add(&srv->inflight, 1);
	return r;
}

static enum MHD_Result add_header_size(void *cls, enum MHD_ValueKind kind,
                                       const char *key, const char *value)
{
	size_t *total = cls;

	(void)kind;
	*total += strlen(key) + (value ? strlen(value) : 0) + 4; /* ": " and CRLF */
	return MHD_YES;
}

/* The request line and headers, in bytes (about what the client sent). */
static size_t request_head_size(struct MHD_Connection *conn, const char *url)
{
	size_t total = strlen(url) + 16;

	MHD_get_connection_values(conn, MHD_HEADER_KIND, add_header_size, &total);
	return total;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
	struct http_server *srv = cls;
	struct request *r = *con_cls;
	char allow[64];
	enum otpd_status st;

	(void)version;
	if (!r) {
		r = request_new(srv, conn, url, method);
		if (!r)
			return MHD_NO;
		*con_cls = r;
		log_set_request_id(r->id);
		http_request_client(r);
		if (atomic_load(&srv->stopping)) {
			r->close = true;
			r->retry_after_s = 1;
			r->detail = "The server is shutting down.";
			return respond(r, OTPD_UNAVAILABLE, NULL);
		}
		/* A connection has HTTP_CONNECTION_MEMORY bytes for the request
		 * and the response's headers: a request that takes most of it
		 * could be served, then left without room for its answer.
		 * Refused before any work is done. */
		if (request_head_size(conn, url) > HTTP_MAX_HEADERS) {
			r->close = true;
			r->detail = "The request headers are too large (at most 8 KiB).";
			return respond(r, OTPD_MALFORMED_REQUEST, NULL);
		}
		if (r->xff_too_long) {
			r->detail = "The X-Forwarded-For headers are too long (at most 2 KiB in all).";
			return respond(r, OTPD_MALFORMED_REQUEST, NULL);
		}
		r->route = route_find(url, method, allow, sizeof(allow), r->route_param,
		                      sizeof(r->route_param), &st, &r->route_index);
		if (!r->route)
			return respond(r, st, allow);
		st = http_request_headers(r);
		if (st != OTPD_OK)
			return respond(r, st, NULL);
		return MHD_YES;
	}
	log_set_request_id(r->id);
	if (*upload_data_size > 0) {
		if (http_method_has_body(r->route->method))
			http_request_append(r, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	switch (atomic_load(&r->phase)) {
	case PHASE_WAITING:
		return MHD_YES; /* still suspended; nothing to do */
	case PHASE_RESUMED:
		return respond(r, r->route->finish(r), NULL);
	case PHASE_ANSWERED:
		return MHD_YES;
	default:
		break;
	}
	/* Busy first, then the check: a shutdown that set stopping either
	 * sees this request busy and waits for it, or is seen here. */
	request_busy(r);
	if (atomic_load(&r->srv->stopping)) {
		/* Its body came in after SIGTERM: no new work either. */
		r->close = true;
		r->retry_after_s = 1;
		r->detail = "The server is shutting down.";
		return respond(r, OTPD_UNAVAILABLE, NULL);
	}
	if (r->too_large)
		return respond(r, OTPD_PAYLOAD_TOO_LARGE, NULL);
	st = r->route->handler(r);
	if (st == OTPD_OK && atomic_load(&r->phase) != PHASE_NEW)
		return MHD_YES; /* suspended: answered when we are resumed */
	return respond(r, st, NULL);
}

void http_suspend(struct request *r)
{
	/* Suspended before the work starts, so that its resume can never
	 * come first. */
	atomic_fetch_add(&r->srv->waiting, 1);
	atomic_store(&r->phase, PHASE_WAITING);
	MHD_suspend_connection(r->conn);
}

void http_resume(struct request *r)
{
	/* Once resumed, r may be completed and freed at any moment. */
	struct http_server *srv = r->srv;

	atomic_store(&r->phase, PHASE_RESUMED);
	MHD_resume_connection(r->conn);
	/* Only now may the daemon be stopped under this thread. */
	atomic_fetch_sub(&srv->waiting, 1);
}

void http_resume_cb(void *request)
{
	http_resume(request);
}

void http_note(struct request *r, const char *event, const char *fmt, ...)
{
	va_list ap;

	if (!log_enabled(LOG_LEVEL_INFO))
		return;
	va_start(ap, fmt);
	vsnprintf(r->note_msg, sizeof(r->note_msg), fmt, ap);
	va_end(ap);
	r->note_event = event;
}

static enum metrics_send send_result(enum otpd_status st)
{
	switch (st) {
	case OTPD_OK: return METRICS_SEND_SENT;
	case OTPD_OTP_RATE_LIMITED: return METRICS_SEND_RATE_LIMITED;
	case OTPD_THROTTLED: return METRICS_SEND_THROTTLED;
	case OTPD_FORBIDDEN: return METRICS_SEND_FORBIDDEN;
	case OTPD_SMS_REJECTED: return METRICS_SEND_REJECTED;
	case OTPD_SMS_UNAVAILABLE: return METRICS_SEND_UNAVAILABLE;
	case OTPD_MALFORMED_REQUEST:
	case OTPD_VALIDATION_ERROR:
	case OTPD_PAYLOAD_TOO_LARGE:
	case OTPD_LENGTH_REQUIRED:
	case OTPD_UNSUPPORTED_MEDIA_TYPE: return METRICS_SEND_INVALID;
	default: return METRICS_SEND_ERROR;
	}
}

static enum metrics_verify verify_result(enum otpd_status st)
{
	switch (st) {
	case OTPD_OK: return METRICS_VERIFY_OK;
	case OTPD_INVALID_CODE: return METRICS_VERIFY_INVALID_CODE;
	case OTPD_TOO_MANY_ATTEMPTS: return METRICS_VERIFY_TOO_MANY_ATTEMPTS;
	case OTPD_OTP_EXPIRED: return METRICS_VERIFY_EXPIRED;
	case OTPD_USER_INACTIVE: return METRICS_VERIFY_INACTIVE;
	case OTPD_THROTTLED: return METRICS_VERIFY_THROTTLED;
	case OTPD_MALFORMED_REQUEST:
	case OTPD_VALIDATION_ERROR:
	case OTPD_PAYLOAD_TOO_LARGE:
	case OTPD_LENGTH_REQUIRED:
	case OTPD_UNSUPPORTED_MEDIA_TYPE: return METRICS_VERIFY_INVALID;
	default: return METRICS_VERIFY_ERROR;
	}
}

static enum metrics_refresh refresh_result(const struct request *r)
{
	switch (r->status) {
	case OTPD_OK: return METRICS_REFRESH_OK;
	case OTPD_INVALID_TOKEN:
		return r->session_op.rr.reuse_detected ? METRICS_REFRESH_REUSE_DETECTED
		                                       : METRICS_REFRESH_INVALID;
	case OTPD_USER_INACTIVE: return METRICS_REFRESH_INACTIVE;
	case OTPD_FORBIDDEN:
	case OTPD_MALFORMED_REQUEST:
	case OTPD_VALIDATION_ERROR:
	case OTPD_PAYLOAD_TOO_LARGE:
	case OTPD_LENGTH_REQUIRED:
	case OTPD_UNSUPPORTED_MEDIA_TYPE: return METRICS_REFRESH_INVALID;
	default: return METRICS_REFRESH_ERROR;
	}
}

/* Counted once per answered request, off the answer's path. */
static void count(const struct request *r, int64_t duration_ns)
{
	metrics_http(r->route_index, r->http_status, duration_ns);
	if (!r->route)
		return;
	switch (r->route->count) {
	case COUNT_SEND:
		metrics_otp_send(send_result(r->status), METRICS_CHANNEL_SMS);
		break;
	case COUNT_VERIFY:
		metrics_otp_verify(verify_result(r->status));
		if (r->status == OTPD_OK && r->login.is_new_user)
			metrics_user_created();
		break;
	case COUNT_REFRESH:
		metrics_token_refresh(refresh_result(r));
		break;
	case COUNT_NONE:
		break;
	}
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	struct http_server *srv = cls;
	struct request *r = *con_cls;
	int64_t duration_ns;

	(void)conn;
	if (!r)
		return;
	duration_ns = mono_ns() - r->start_ns;
	if (r->answered)
		count(r, duration_ns);
	if (log_enabled(LOG_LEVEL_INFO)) {
		struct log_access a = {
			.method = r->method,
			.path = r->path,
			.status = r->http_status,
			.duration_us = (long long)(duration_ns / 1000),
			.client = r->client_str,
			.completed = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK,
			.outcome = r->note_event,
			.msg = r->note_msg,
		};

		log_set_request_id(r->id);
		log_access(&a);
	}
	log_set_request_id(NULL);
	json_decref(r->fields);
	json_decref(r->resp);
	json_decref(r->extra);
	if (r->raw_owned)
		free((void *)r->raw_body);
	auth_login_release(&r->login);
	auth_tokens_release(&r->tokens);
	http_admin_free(r->admin);
	if (r->busy)
		atomic_fetch_sub(&srv->busy, 1);
	free(r->body);
	free(r);
	*con_cls = NULL;
	atomic_fetch_sub(&srv->inflight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];

	(void)cls;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	msg[strcspn(msg, "\n")] = '\0';
	log_warn("http.mhd", "%s", msg);
}

enum otpd_status http_server_start(const struct config *cfg, struct auth *auth,
                                   struct store *store, struct http_server **ret)
{
	struct http_server *s = calloc(1, sizeof(*s));
	unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
	                 MHD_USE_ERROR_LOG;
	long threads = cfg->threads ? cfg->threads : sysconf(_SC_NPROCESSORS_ONLN);
	const union MHD_DaemonInfo *info;

	if (!s)
		return OTPD_NOMEM;
	if (threads < 1)
		threads = 1;
	for (size_t i = 0; i < NROUTES; i++)
		route_paths[i] = routes[i].path;
	metrics_set_routes(route_paths, NROUTES);
	s->cfg = cfg;
	s->auth = auth;
	s->store = store;
	s->rl_send = ratelimit_new(cfg->throttle_send, 65536);
	s->rl_verify = ratelimit_new(cfg->throttle_verify, 65536);
	if (!s->rl_send || !s->rl_verify) {
		http_server_stop(s);
		return OTPD_NOMEM;
	}
	if (cfg->listen_addr.ss_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	s->daemon = MHD_start_daemon(
		flags, 0, NULL, NULL, on_request, s,
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
		MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&cfg->listen_addr,
		MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
		MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
		MHD_OPTION_END);
	if (!s->daemon) {
		log_error("http.listen", "cannot listen on '%s'", cfg->listen);
		http_server_stop(s);
		return OTPD_INTERNAL;
	}
	info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
	s->port = info ? info->port : 0;
	*ret = s;
	return OTPD_OK;
}

unsigned http_server_port(const struct http_server *s) { return s->port; }

void http_server_quiesce(struct http_server *s)
{
	/* Not MHD_quiesce_daemon(): with a thread pool in epoll mode it races
	 * with the workers taking the listening socket out of their own epoll
	 * sets, and libmicrohttpd 0.9.75 then aborts ("Failed to remove listen
	 * FD from epoll set"; seen in our SIGTERM tests).  Every request that
	 * starts from now on is answered 503 with Connection: close instead,
	 * on new and kept-alive connections alike, so no new work begins. */
	atomic_store(&s->stopping, true);
}

long http_server_inflight(const struct http_server *s) { return atomic_load(&s->inflight); }
long http_server_busy(const struct http_server *s) { return atomic_load(&s->busy); }
long http_server_waiting(const struct http_server *s) { return atomic_load(&s->waiting); }

void http_server_stop(struct http_server *s)
{
	if (!s)
		return;
	if (s->daemon)
		MHD_stop_daemon(s->daemon);
	ratelimit_free(s->rl_send);
	ratelimit_free(s->rl_verify);
	free(s);
}
