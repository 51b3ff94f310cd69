/* Request input: bounded body, JSON / form decoding, the client address
 * behind trusted proxies, field validation, per-address throttles. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "../otp/code.h"
#include "internal.h"

int64_t http_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "application/json; charset=utf-8" -> matches "application/json". */
static bool media_type_is(const char *ct, const char *want)
{
	size_t n = strlen(want);

	while (*ct == ' ')
		ct++;
	if (strncasecmp(ct, want, n) != 0)
		return false;
	ct += n;
	while (*ct == ' ')
		ct++;
	return *ct == '\0' || *ct == ';';
}

/* The first call of every routed request: decide 411, 413 and 415 from the
 * headers before anything is read or buffered. */
enum otpd_status http_request_headers(struct request *r)
{
	const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
	                                             MHD_HTTP_HEADER_CONTENT_LENGTH);
	const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
	                                             MHD_HTTP_HEADER_CONTENT_TYPE);

	/* A chunked body's size is known only at its end, and libmicrohttpd
	 * 0.9.75 cannot answer in the middle of a body: it would be read to
	 * the end, however long, before its 413.  Refused at once instead,
	 * the way RFC 9110 section 15.5.12 offers, and the connection closed
	 * (whatever the client sends after is not read). */
	if (MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
	                                MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
		r->close = true;
		return OTPD_LENGTH_REQUIRED;
	}
	if (cl) {
		char *end;
		unsigned long long n = strtoull(cl, &end, 10);
		if (*end == '\0' && n > HTTP_MAX_BODY)
			return OTPD_PAYLOAD_TOO_LARGE;
	}
	if (!http_method_has_body(r->route->method))
		return OTPD_OK; /* a body is read and dropped (at most HTTP_MAX_BODY) */
	if (!ct) {
		r->kind = BODY_NONE;
		return OTPD_OK; /* an empty body is malformed; a body without a type is 415 */
	}
	if (media_type_is(ct, "application/json"))
		r->kind = BODY_JSON;
	else if (media_type_is(ct, "application/x-www-form-urlencoded"))
		r->kind = BODY_FORM;
	else
		return OTPD_UNSUPPORTED_MEDIA_TYPE;
	return OTPD_OK;
}

void http_request_append(struct request *r, const char *data, size_t len)
{
	if (r->too_large)
		return;
	if (r->body_len + len > HTTP_MAX_BODY) {
		r->too_large = true;
		return;
	}
	if (!r->body) {
		r->body = malloc(HTTP_MAX_BODY + 1);
		if (!r->body) {
			r->too_large = true; /* answered as 413: nothing better to say */
			return;
		}
	}
	memcpy(r->body + r->body_len, data, len);
	r->body_len += len;
}

/* Form fields are gathered raw (values may arrive in pieces) and turned into
 * JSON strings once complete. */
#define FORM_MAX_FIELDS 16

struct form {
	json_t *obj;
	bool duplicate;
	bool overflow;
	size_t n;
	char *keys[FORM_MAX_FIELDS];
	char *vals[FORM_MAX_FIELDS];
	size_t lens[FORM_MAX_FIELDS];
};

static enum MHD_Result form_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data,
                                 uint64_t off, size_t size)
{
	struct form *f = cls;
	size_t i;

	(void)kind;
	(void)filename;
	(void)content_type;
	(void)transfer_encoding;
	for (i = 0; i < f->n; i++)
		if (strcmp(f->keys[i], key) == 0)
			break;
	if (i < f->n && off == 0) {
		f->duplicate = true;
		return MHD_NO;
	}
	if (i == f->n) {
		if (f->n == FORM_MAX_FIELDS) {
			f->overflow = true;
			return MHD_NO;
		}
		f->keys[i] = strdup(key);
		f->vals[i] = malloc(HTTP_MAX_BODY + 1);
		f->lens[i] = 0;
		f->n++;
		if (!f->keys[i] || !f->vals[i]) {
			f->overflow = true;
			return MHD_NO;
		}
	}
	if (f->lens[i] + size > HTTP_MAX_BODY) {
		f->overflow = true;
		return MHD_NO;
	}
	memcpy(f->vals[i] + f->lens[i], data, size);
	f->lens[i] += size;
	return MHD_YES;
}

static enum otpd_status decode_form(struct request *r)
{
	struct form f = {0};
	struct MHD_PostProcessor *pp;
	enum otpd_status st = OTPD_MALFORMED_REQUEST;

	pp = MHD_create_post_processor(r->conn, 1024, form_iter, &f);
	if (!pp)
		return OTPD_MALFORMED_REQUEST;
	if (MHD_post_process(pp, r->body, r->body_len) != MHD_YES)
		f.overflow = f.overflow || !f.duplicate;
	if (MHD_destroy_post_processor(pp) != MHD_YES)
		f.overflow = true;
	if (f.duplicate || f.overflow)
		goto out;
	f.obj = json_object();
	if (!f.obj) {
		st = OTPD_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < f.n; i++) {
		json_t *v = json_stringn(f.vals[i], f.lens[i]); /* NULL: not UTF-8 */
		if (!v || json_object_set_new(f.obj, f.keys[i], v) != 0)
			goto out;
	}
	r->fields = f.obj;
	f.obj = NULL;
	st = OTPD_OK;
out:
	json_decref(f.obj);
	for (size_t i = 0; i < f.n; i++) {
		free(f.keys[i]);
		free(f.vals[i]);
	}
	return st;
}

enum otpd_status http_request_decode(struct request *r)
{
	json_error_t err;

	if (r->body_len == 0)
		return OTPD_MALFORMED_REQUEST;
	if (r->kind == BODY_NONE)
		return OTPD_UNSUPPORTED_MEDIA_TYPE;
	if (r->kind == BODY_FORM)
		return decode_form(r);
	/* Duplicate keys, NUL escapes and invalid UTF-8 are refused by jansson;
	 * depth is bounded by HTTP_MAX_BODY. */
	r->fields = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &err);
	if (!r->fields)
		return OTPD_MALFORMED_REQUEST;
	if (!json_is_object(r->fields)) {
		json_decref(r->fields);
		r->fields = NULL;
		return OTPD_MALFORMED_REQUEST;
	}
	return OTPD_OK;
}

/* Gather every X-Forwarded-For header, in order, comma-joined. */
struct xff {
	char buf[HTTP_MAX_XFF];
	size_t len;
	bool overflow;
};

static enum MHD_Result xff_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
	struct xff *x = cls;
	size_t n = strlen(value);

	(void)kind;
	if (strcasecmp(key, "X-Forwarded-For") != 0)
		return MHD_YES;
	if (x->len + n + 2 > sizeof(x->buf)) {
		x->overflow = true;
		return MHD_NO;
	}
	if (x->len)
		x->buf[x->len++] = ',';
	memcpy(x->buf + x->len, value, n);
	x->len += n;
	x->buf[x->len] = '\0';
	return MHD_YES;
}

void http_request_client(struct request *r)
{
	const union MHD_ConnectionInfo *ci;
	struct netaddr peer = {0};
	struct xff x;

	ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (!ci || !netaddr_from_sockaddr(ci->client_addr, &peer))
		peer.family = AF_INET; /* 0.0.0.0: unknown */
	r->client = peer;
	if (r->srv->cfg->trusted_proxies.n > 0 &&
	    netaddr_list_contains(&r->srv->cfg->trusted_proxies, &peer)) {
		x.len = 0;
		x.overflow = false;
		x.buf[0] = '\0';
		MHD_get_connection_values(r->conn, MHD_HEADER_KIND, xff_iter, &x);
		/* Too long to read whole: the client is unknown.  Falling back
		 * to the proxy would put it in the proxy's shared throttle
		 * bucket; the request is refused instead (on_request). */
		r->xff_too_long = x.overflow;
		if (x.len > 0 && !x.overflow)
			netaddr_client(&peer, x.buf, &r->srv->cfg->trusted_proxies, &r->client);
	}
	netaddr_format(&r->client, r->client_str);
}

bool http_method_has_body(const char *method)
{
	return strcmp(method, "POST") == 0 || strcmp(method, "PATCH") == 0;
}

void http_add_error(struct request *r, const char *field, const char *msg)
{
	json_t *errors, *list;

	if (!r->extra)
		r->extra = json_object();
	if (!r->extra)
		return;
	errors = json_object_get(r->extra, "errors");
	if (!errors) {
		errors = json_object();
		json_object_set_new(r->extra, "errors", errors);
	}
	list = json_array();
	json_array_append_new(list, json_string(msg));
	json_object_set_new(errors, field, list);
}

/* A string field: NULL (and an error added) when missing or not a string. */
static json_t *string_field(struct request *r, const char *name)
{
	json_t *v = json_object_get(r->fields, name);

	if (!v || json_is_null(v)) {
		http_add_error(r, name, "This field is required.");
		return NULL;
	}
	if (!json_is_string(v)) {
		http_add_error(r, name, "Must be a string.");
		return NULL;
	}
	return v;
}

bool http_field_phone(struct request *r, char ret[OTP_PHONE_LEN + 1])
{
	json_t *v = string_field(r, "phone_number");

	if (!v)
		return false;
	if (otp_phone_normalize(json_string_value(v), json_string_length(v), ret) != OTPD_OK) {
		http_add_error(r, "phone_number", "Enter a valid Iranian mobile number, e.g. +989123456789 or 09123456789.");
		return false;
	}
	return true;
}

bool http_field_code(struct request *r, char ret[7])
{
	json_t *v = string_field(r, "code");

	if (!v)
		return false;
	if (otp_code_normalize(json_string_value(v), json_string_length(v), ret) != OTPD_OK) {
		http_add_error(r, "code", "Enter the 6-digit code.");
		return false;
	}
	return true;
}

enum otpd_status http_throttle(struct request *r, struct ratelimit *rl)
{
	int retry;

	/* An IPv6 client usually holds a whole /64: one bucket per /64. */
	if (ratelimit_hit(rl, r->client.bytes, r->client.family == AF_INET ? 4 : 8,
	                  http_now_ms(), &retry))
		return OTPD_OK;
	r->retry_after_s = retry;
	r->extra = json_pack("{s:i, s:s}", "retry_after", retry, "limit", "client_rate");
	return OTPD_THROTTLED;
}

void http_store_throttle(const struct request *r, char endpoint, struct rate rate,
                         struct store_throttle *ret)
{
	size_t n = r->client.family == AF_INET ? 4 : 8; /* as http_throttle() */

	memset(ret, 0, sizeof(*ret));
	ret->key[0] = (uint8_t)endpoint;
	memcpy(ret->key + 1, r->client.bytes, n);
	ret->key_len = 1 + n;
	ret->count = rate.count;
	ret->period_ms = rate.period_ms;
}

/* The store found the client over its throttle (counted for the cluster). */
enum otpd_status http_throttled(struct request *r, int retry_after_s)
{
	if (retry_after_s < 1)
		retry_after_s = 1;
	r->retry_after_s = retry_after_s;
	r->extra = json_pack("{s:i, s:s}", "retry_after", retry_after_s, "limit", "client_rate");
	return OTPD_THROTTLED;
}

const char *http_header(struct request *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_cookie(struct request *r, const char *name)
{
	const char *v = MHD_lookup_connection_value(r->conn, MHD_COOKIE_KIND, name);
	return v && *v ? v : NULL;
}

bool http_field_optional_string(struct request *r, const char *name, const char **ret)
{
	json_t *v = r->fields ? json_object_get(r->fields, name) : NULL;

	*ret = NULL;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_string(v)) {
		http_add_error(r, name, "Must be a string.");
		return false;
	}
	*ret = json_string_value(v);
	return true;
}

/* "https://app.example:8443" -> "app.example:8443" (scheme dropped). */
static const char *origin_host(const char *origin)
{
	const char *p = strstr(origin, "://");
	return p ? p + 3 : NULL;
}

static bool origin_listed(const char *list, const char *origin)
{
	size_t olen = strlen(origin);

	while (olen > 0 && origin[olen - 1] == '/')
		olen--;
	for (const char *p = list; *p;) {
		size_t n;
		while (*p == ' ' || *p == ',')
			p++;
		n = strcspn(p, ", ");
		size_t m = n;
		while (m > 0 && p[m - 1] == '/')
			m--;
		if (m > 0 && m == olen && strncasecmp(p, origin, m) == 0)
			return true;
		p += n;
	}
	return false;
}

bool http_origin_allowed(struct request *r)
{
	const char *origin = http_header(r, "Origin");
	const char *host = http_header(r, MHD_HTTP_HEADER_HOST);
	const char *oh;

	if (!origin)
		return true; /* not a browser cross-site request */
	if (origin_listed(r->srv->cfg->allowed_origins, origin))
		return true;
	oh = origin_host(origin);
	return oh && host && *oh && strcasecmp(oh, host) == 0;
}

json_t *http_user_json(const struct store_user *u)
{
	return json_pack("{s:I, s:s, s:s, s:s, s:o, s:o}", "id", (json_int_t)u->id,
	                 "phone_number", u->phone_number, "email", u->email,
	                 "username", u->username,
	                 "first_name", u->has_first_name ? json_string(u->first_name) : json_null(),
	                 "last_name", u->has_last_name ? json_string(u->last_name) : json_null());
}

void http_set_auth_cookies(struct request *r, const char *access, const char *refresh,
                           int64_t access_ttl_s, int64_t refresh_ttl_s)
{
	r->cookie_access = access;
	r->cookie_refresh = refresh;
	r->cookie_access_ttl = access_ttl_s;
	r->cookie_refresh_ttl = refresh_ttl_s;
}

void http_set_static_body(struct request *r, const void *body, size_t len, const char *type)
{
	r->raw_body = body;
	r->raw_len = len;
	r->raw_type = type;
	r->raw_owned = false;
}

void http_set_owned_body(struct request *r, char *body, size_t len, const char *type)
{
	r->raw_body = body;
	r->raw_len = len;
	r->raw_type = type;
	r->raw_owned = true;
}
