/* The admin API, /api/v1/admin/... (docs/API.md §6): staff only.
 *
 * Every request runs in two steps, neither of which holds a server thread:
 * (1) who calls: the access token (Bearer or cookie), the CSRF check of a
 * cookie-authenticated write, and the caller's user read from the database
 * (staff status is never taken from the token); (2) once the caller is let
 * in, on the store thread that answered (1), the route's own store call.
 * The connection is resumed when (2) answers, or when (1) refuses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "../auth/admin.h"
#include "../auth/delivery.h"
#include "../otp/code.h"
#include "../otp/phone.h"
#include "../util/parse.h"
#include "internal.h"

/* A route's step (2): start its store call with admin_step_done as done,
 * or return what stops it (then nothing was started). */
typedef enum otpd_status (*admin_step_fn)(struct request *r);

#define RECENT_CODES 10    /* a user's detail: its newest codes */
#define SESSION_RECORDS 200 /* ... and its newest refresh records, for its live sessions */

struct http_admin {
	struct auth_admin_op op;
	admin_step_fn step;
	enum otpd_status status;  /* the outcome of (1), then of (2) */
	bool bad_id;              /* /users/{id}: not a positive integer */
	int64_t target_id;
	struct store_user target;
	struct store_code_row codes[RECENT_CODES];
	size_t n_codes;
	struct store_session_info sessions[SESSION_RECORDS];
	size_t n_sessions;
	const char *bad_param;    /* a query parameter that is not valid */
	const char *bad_msg;      /* ... and why */
	/* codes: the query, the status filter, the page */
	char phone[OTP_PHONE_LEN + 1];
	struct store_codes_query q;
	int status_filter;        /* -1: none; else an index in code_statuses */
	size_t limit;
	struct store_code_row *rows;
	size_t cap, n_rows;
	bool by_code;             /* codes: ?code= (with ?phone=) */
	enum otpd_status decode_status; /* PATCH: the body's */
	uint8_t hash[OTP_HASH_LEN];
	/* users */
	struct store_users_query uq;
	struct store_user *users;
	size_t n_users;
	/* PATCH /users/{id} */
	struct store_user_change change;
	struct store_audit_entry audit;
	/* audit */
	struct store_audit_entry *entries;
	size_t n_entries;
	int64_t since_ms;         /* stats: the first bucket */
	size_t n_buckets;         /* stats: how many buckets asked */
	struct store_stats_bucket *buckets;
	size_t n_read;
};

static bool is_write(const char *method)
{
	return strcmp(method, "POST") == 0 || strcmp(method, "PATCH") == 0 ||
	       strcmp(method, "DELETE") == 0;
}

/* The access token: "Authorization: Bearer" first, else the cookie. */
static const char *access_token_of(struct request *r, bool *from_cookie)
{
	const char *authz = http_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
	const char *tok;

	*from_cookie = false;
	if (authz) {
		if (strncasecmp(authz, "Bearer ", 7) != 0)
			return NULL;
		tok = authz + 7;
		while (*tok == ' ')
			tok++;
		return tok;
	}
	*from_cookie = true;
	return http_cookie(r, "access_token");
}

/* Store thread: step (2) answered. */
static void admin_step_done(void *arg, enum otpd_status status)
{
	struct request *r = arg;

	r->admin->status = status;
	http_resume(r);
}

/* Store thread: step (1) answered; start step (2) when the caller is let in. */
static void admin_authed(void *arg)
{
	struct request *r = arg;
	struct http_admin *a = r->admin;
	enum otpd_status st = auth_admin_finish(&a->op);

	/* Once step (2) has started, its done (on another store thread) may
	 * already have set the outcome and resumed r, which may then be freed:
	 * neither a nor r is touched after a start that succeeded. */
	if (st == OTPD_OK)
		st = a->step(r);
	if (st != OTPD_OK) {
		a->status = st;
		http_resume(r); /* refused, or step (2) could not start */
	}
}

void http_admin_free(struct http_admin *a)
{
	if (!a)
		return;
	free(a->buckets);
	free(a->rows);
	free(a->users);
	free(a->entries);
	otp_wipe(a->hash, sizeof(a->hash));
	free(a);
}

/* The request's admin state, for the route to fill before admin_begin()
 * (step (2) may run before admin_begin() returns). */
static struct http_admin *admin_new(struct request *r, admin_step_fn step)
{
	if (!(r->admin = calloc(1, sizeof(*r->admin))))
		return NULL;
	r->admin->step = step;
	return r->admin;
}

/* Step (1) for every admin route (r->admin from admin_new()), then its step. */
static enum otpd_status admin_begin(struct request *r)
{
	bool from_cookie;
	const char *tok = access_token_of(r, &from_cookie);
	bool csrf = from_cookie && is_write(r->method);
	enum otpd_status st;

	if (!r->admin)
		return OTPD_NOMEM;
	if (!tok || !*tok)
		return OTPD_INVALID_TOKEN;
	if (csrf && !http_origin_allowed(r))
		return OTPD_FORBIDDEN;
	http_suspend(r);
	st = auth_admin_start(r->srv->auth, tok, http_now_ms(), csrf,
	                      http_header(r, "X-CSRF-Token"), http_cookie(r, "csrf_token"),
	                      &r->admin->op, admin_authed, r);
	if (st != OTPD_OK) {
		r->admin->status = st;
		http_resume(r);
	}
	return OTPD_OK; /* the answer comes from the route's finish */
}

/* RFC 3339 UTC with milliseconds; JSON null for ms < 0 (never). */
static json_t *time_json(int64_t ms)
{
	char buf[32];
	struct tm tm;
	time_t t;

	if (ms < 0)
		return json_null();
	t = (time_t)(ms / 1000);
	if (!gmtime_r(&t, &tm) || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		return json_null();
	snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), ".%03dZ", (int)(ms % 1000));
	return json_string(buf);
}

/* A user as the admin API shows it: the user object plus its flags and times. */
static json_t *admin_user_json(const struct store_user *u)
{
	json_t *o = http_user_json(u);
	json_t *more = json_pack("{s:b, s:b, s:o, s:o}", "is_active", u->is_active,
	                         "is_staff", u->is_staff, "date_joined", time_json(u->created_ms),
	                         "last_login", time_json(u->last_login_ms));

	if (!o || !more || json_object_update(o, more) != 0) {
		json_decref(o);
		o = NULL;
	}
	json_decref(more);
	return o;
}

static const char *const code_statuses[] = {"valid", "used", "expired", "exhausted",
                                           "replaced", "cancelled"};

/* A code's status: a state, or what an active code has become by now. */
static const char *code_status(const struct store_code_row *c, int64_t now_ms)
{
	switch (c->state) {
	case 1: return "used";
	case 2: return "cancelled";
	case 3: return "replaced";
	default:
		if (c->attempts >= c->max_attempts)
			return "exhausted";
		return now_ms >= c->expires_ms ? "expired" : "valid";
	}
}

static json_t *code_sms_json(const struct store_code_row *c)
{
	char id[24];
	const char *delivery;

	if (c->sms_message_id <= 0)
		return json_null();
	snprintf(id, sizeof(id), "%lld", (long long)c->sms_message_id);
	if (c->sms_status < STORE_SMS_STATUS_FINAL)
		delivery = "pending";
	else
		switch (auth_delivery_class(c->sms_status)) {
		case METRICS_DELIVERY_DELIVERED: delivery = "delivered"; break;
		case METRICS_DELIVERY_FAILED: delivery = "failed"; break;
		default: delivery = "unknown"; break;
		}
	return json_pack("{s:s, s:s}", "message_id", id, "delivery", delivery);
}

/* A code as the admin API shows it: never the code, never its hash. */
static json_t *admin_code_json(const struct store_code_row *c, int64_t now_ms)
{
	return json_pack("{s:I, s:s, s:o, s:o, s:o, s:i, s:i, s:s, s:o}", "id", (json_int_t)c->id,
	                 "phone_number", c->phone, "created_at", time_json(c->created_ms),
	                 "expires_at", time_json(c->expires_ms),
	                 "used_at", c->state == 1 ? time_json(c->ended_ms) : json_null(),
	                 "attempts", c->attempts, "max_attempts", c->max_attempts,
	                 "status", code_status(c, now_ms), "sms", code_sms_json(c));
}

/* The live sessions among a user's refresh records (newest first): one per
 * family that has a live record, unexpired.  created_at: the family's
 * oldest record read (its login, unless it has more than SESSION_RECORDS
 * records); last_used_at: when it was last refreshed (its live record's
 * creation; records are stamped in whole seconds), null if never;
 * expires_at: its live record's expiry. */
static json_t *admin_sessions_json(const struct store_session_info *r, size_t n, int64_t now_ms)
{
	json_t *out = json_array();

	for (size_t i = 0; out && i < n; i++) {
		int64_t first = r[i].created_ms;
		bool refreshed = false;

		if (r[i].state != 0 || r[i].expires_ms <= now_ms)
			continue;
		for (size_t k = 0; k < n; k++)
			if (k != i && strcmp(r[k].family, r[i].family) == 0) {
				refreshed = true; /* the live record replaced another */
				if (r[k].created_ms < first)
					first = r[k].created_ms;
			}
		if (json_array_append_new(out, json_pack("{s:o, s:o, s:o}",
		                                         "created_at", time_json(first),
		                                         "last_used_at", refreshed
		                                         ? time_json(r[i].created_ms) : json_null(),
		                                         "expires_at", time_json(r[i].expires_ms))) != 0) {
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

/* ---- GET /api/v1/admin/users/{id}: the user, then its codes, then its sessions ---- */

static void user_sessions_read(void *arg, enum otpd_status status)
{
	struct request *r = arg;
	struct http_admin *a = r->admin;

	if (status == OTPD_OK)
		status = store_user_sessions_start(r->srv->store, a->target_id, a->sessions,
		                                   SESSION_RECORDS, &a->n_sessions, admin_step_done, r);
	if (status != OTPD_OK)
		admin_step_done(r, status);
}

static void user_codes_read(void *arg, enum otpd_status status)
{
	struct request *r = arg;
	struct http_admin *a = r->admin;
	struct store_codes_query q = {.phone = a->target.phone_number};

	if (status == OTPD_OK)
		status = store_codes_list_start(r->srv->store, &q, a->codes, RECENT_CODES,
		                                &a->n_codes, user_sessions_read, r);
	if (status != OTPD_OK)
		admin_step_done(r, status);
}

static enum otpd_status user_read(struct request *r)
{
	if (r->admin->bad_id)
		return OTPD_VALIDATION_ERROR;
	return store_user_get_start(r->srv->store, r->admin->target_id, &r->admin->target,
	                            user_codes_read, r);
}

enum otpd_status http_h_admin_user(struct request *r)
{
	struct http_admin *a = admin_new(r, user_read);

	if (a)
		a->bad_id = !parse_int64(r->route_param, 1, INT64_MAX, &a->target_id);
	return admin_begin(r);
}

enum otpd_status http_h_admin_user_finish(struct request *r)
{
	struct http_admin *a = r->admin;
	int64_t now_ms = http_now_ms();
	json_t *codes;

	if (a->status == OTPD_VALIDATION_ERROR && a->bad_id)
		http_add_error(r, "id", "A user id is a positive integer.");
	if (a->status != OTPD_OK)
		return a->status;
	r->resp = admin_user_json(&a->target);
	codes = json_array();
	for (size_t i = 0; codes && i < a->n_codes; i++)
		if (json_array_append_new(codes, admin_code_json(&a->codes[i], now_ms)) != 0) {
			json_decref(codes);
			codes = NULL;
		}
	if (!r->resp || !codes) {
		json_decref(codes);
		return OTPD_NOMEM;
	}
	if (json_object_set_new(r->resp, "recent_codes", codes) != 0 ||
	    json_object_set_new(r->resp, "sessions",
	                        admin_sessions_json(a->sessions, a->n_sessions, now_ms)) != 0)
		return OTPD_NOMEM;
	r->http_status = MHD_HTTP_OK;
	return OTPD_OK;
}

/* ---- GET /api/v1/admin/stats?hours=N: every 5-minute bucket of the last N hours ---- */

#define STATS_HOURS_MAX 168

static enum otpd_status stats_read(struct request *r)
{
	struct http_admin *a = r->admin;

	if (a->bad_param)
		return OTPD_VALIDATION_ERROR;
	if (!(a->buckets = malloc(a->n_buckets * sizeof(*a->buckets))))
		return OTPD_NOMEM;
	return store_stats_start(r->srv->store, a->since_ms,
	                         a->since_ms + (int64_t)a->n_buckets * STORE_STATS_BUCKET_MS,
	                         a->buckets, a->n_buckets, &a->n_read, admin_step_done, r);
}

enum otpd_status http_h_admin_stats(struct request *r)
{
	struct http_admin *a = admin_new(r, stats_read);
	const char *v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "hours");
	int64_t hours = 24, now = http_now_ms();

	if (a) {
		if (v && !parse_int64(v, 1, STATS_HOURS_MAX, &hours)) {
			a->bad_param = "hours";
			a->bad_msg = "An integer from 1 to 168 is required.";
		}
		/* hours x 12 buckets, the last one the current (partial) one */
		a->n_buckets = (size_t)(hours * 3600000 / STORE_STATS_BUCKET_MS);
		a->since_ms = now - now % STORE_STATS_BUCKET_MS -
		              (int64_t)(a->n_buckets - 1) * STORE_STATS_BUCKET_MS;
	}
	return admin_begin(r);
}

/* Oldest first, every bucket of the range: one without events counts zeros. */
enum otpd_status http_h_admin_stats_finish(struct request *r)
{
	struct http_admin *a = r->admin;
	json_t *list;
	size_t k = 0;

	if (a->status == OTPD_VALIDATION_ERROR && a->bad_param)
		http_add_error(r, a->bad_param, a->bad_msg);
	if (a->status != OTPD_OK)
		return a->status;
	if (!(list = json_array()))
		return OTPD_NOMEM;
	for (size_t i = 0; i < a->n_buckets; i++) {
		int64_t start = a->since_ms + (int64_t)i * STORE_STATS_BUCKET_MS;
		static const struct store_stats_bucket none;
		const struct store_stats_bucket *b = &none;

		while (k < a->n_read && a->buckets[k].bucket_ms < start)
			k++; /* never: the store answers the range asked, in order */
		if (k < a->n_read && a->buckets[k].bucket_ms == start)
			b = &a->buckets[k];
		if (json_array_append_new(list, json_pack("{s:o, s:I, s:I, s:I, s:I, s:I, s:I}",
		                                          "start", time_json(start),
		                                          "sends", (json_int_t)b->sends,
		                                          "sms_failures", (json_int_t)b->sms_failures,
		                                          "logins", (json_int_t)b->logins,
		                                          "new_users", (json_int_t)b->new_users,
		                                          "wrong_guesses", (json_int_t)b->wrong_guesses,
		                                          "locks", (json_int_t)b->locks)) != 0) {
			json_decref(list);
			return OTPD_NOMEM;
		}
	}
	r->resp = json_pack("{s:i, s:o}", "bucket_seconds", STORE_STATS_BUCKET_MS / 1000,
	                    "buckets", list);
	if (!r->resp)
		return OTPD_NOMEM;
	r->http_status = MHD_HTTP_OK;
	return OTPD_OK;
}

/* The audit entry of an admin action: who, what, to what, from where. */
static void audit_of(struct request *r, const char *action, const char *target,
                     struct store_audit_entry *e)
{
	memset(e, 0, sizeof(*e));
	e->time_ms = http_now_ms();
	snprintf(e->actor, sizeof(e->actor), "user:%lld", (long long)r->admin->op.staff.id);
	snprintf(e->action, sizeof(e->action), "%s", action);
	snprintf(e->target, sizeof(e->target), "%s", target);
	snprintf(e->client, sizeof(e->client), "%s", r->client_str);
	e->has_client = r->client_str[0] != '\0';
}

/* ---- GET /api/v1/admin/codes: newest first, keyset-paged by id ---- */

#define PAGE_DEFAULT 50
#define PAGE_MAX 200
/* With a status filter a page reads up to this many times its limit from
 * the store (bounded work), and may hold fewer items than the limit while
 * next_cursor says there is more. */
#define STATUS_SCAN 4

static const char *query_arg(struct request *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

static void bad(struct http_admin *a, const char *param, const char *msg)
{
	if (!a->bad_param) {
		a->bad_param = param;
		a->bad_msg = msg;
	}
}

/* ?limit= */
static void page_limit(struct request *r, struct http_admin *a)
{
	const char *v = query_arg(r, "limit");
	int64_t n = PAGE_DEFAULT;

	if (v && !parse_int64(v, 1, PAGE_MAX, &n))
		bad(a, "limit", "An integer from 1 to 200 is required.");
	a->limit = (size_t)n;
}

/* ?limit= and ?cursor= (an id: the next page starts below it). */
static void page_args(struct request *r, struct http_admin *a, int64_t *ret_before)
{
	const char *v;

	page_limit(r, a);
	*ret_before = 0;
	v = query_arg(r, "cursor");
	if (v && !parse_int64(v, 1, INT64_MAX, ret_before))
		bad(a, "cursor", "Give the next_cursor of the previous page.");
}

static enum otpd_status codes_read(struct request *r)
{
	struct http_admin *a = r->admin;

	if (a->bad_param)
		return OTPD_VALIDATION_ERROR;
	a->cap = a->status_filter >= 0 ? a->limit * STATUS_SCAN : a->limit;
	if (a->cap > STORE_PAGE_MAX)
		a->cap = STORE_PAGE_MAX;
	if (!(a->rows = malloc(a->cap * sizeof(*a->rows))))
		return OTPD_NOMEM;
	if (a->by_code) {
		audit_of(r, "codes.search_by_code", a->phone, &a->audit);
		return store_codes_match_start(r->srv->store, a->phone, a->hash, http_now_ms(),
		                               &a->audit, a->rows, a->cap, &a->n_rows,
		                               admin_step_done, r);
	}
	return store_codes_list_start(r->srv->store, &a->q, a->rows, a->cap, &a->n_rows,
	                              admin_step_done, r);
}

enum otpd_status http_h_admin_codes(struct request *r)
{
	struct http_admin *a = admin_new(r, codes_read);
	const char *v;

	if (!a)
		return admin_begin(r);
	a->status_filter = -1;
	v = query_arg(r, "phone");
	if (v) {
		if (otp_phone_normalize(v, strlen(v), a->phone) == OTPD_OK)
			a->q.phone = a->phone;
		else
			bad(a, "phone", "Enter a valid Iranian mobile number, e.g. +989123456789 or 09123456789.");
	}
	if ((v = query_arg(r, "status"))) {
		for (size_t i = 0; i < sizeof(code_statuses) / sizeof(code_statuses[0]); i++)
			if (strcmp(v, code_statuses[i]) == 0)
				a->status_filter = (int)i;
		if (a->status_filter < 0)
			bad(a, "status", "One of valid, used, expired, exhausted, replaced, cancelled.");
	}
	if ((v = query_arg(r, "since")) && !parse_time_ms(v, &a->q.since_ms))
		bad(a, "since", "An RFC 3339 time, e.g. 2026-01-07T18:03:10Z.");
	if ((v = query_arg(r, "until")) && !parse_time_ms(v, &a->q.until_ms))
		bad(a, "until", "An RFC 3339 time, e.g. 2026-01-07T18:03:10Z.");
	if ((v = query_arg(r, "code"))) {
		char code[OTP_CODE_LEN + 1];

		if (!a->q.phone)
			bad(a, "code", "A search by code needs the number (phone).");
		else if (otp_code_normalize(v, strlen(v), code) != OTPD_OK)
			bad(a, "code", "Enter the 6-digit code.");
		else if (auth_code_hash(r->srv->auth, a->phone, code, a->hash))
			a->by_code = true;
		else
			bad(a, "code", "The code could not be hashed.");
		otp_wipe(code, sizeof(code));
	}
	page_args(r, a, &a->q.before_id);
	return admin_begin(r);
}

enum otpd_status http_h_admin_codes_finish(struct request *r)
{
	struct http_admin *a = r->admin;
	int64_t now_ms = http_now_ms();
	json_t *items;
	char cursor[24];
	bool more;

	if (a->status == OTPD_VALIDATION_ERROR && a->bad_param)
		http_add_error(r, a->bad_param, a->bad_msg);
	if (a->status != OTPD_OK)
		return a->status;
	if (!(items = json_array()))
		return OTPD_NOMEM;
	for (size_t i = 0; i < a->n_rows; i++) {
		if (a->status_filter >= 0 &&
		    strcmp(code_status(&a->rows[i], now_ms), code_statuses[a->status_filter]) != 0)
			continue;
		if (json_array_append_new(items, admin_code_json(&a->rows[i], now_ms)) != 0) {
			json_decref(items);
			return OTPD_NOMEM;
		}
	}
	more = a->n_rows == a->cap; /* a full read: there may be older codes */
	if (more)
		snprintf(cursor, sizeof(cursor), "%lld", (long long)a->rows[a->n_rows - 1].id);
	r->resp = json_pack("{s:o, s:o}", "items", items,
	                    "next_cursor", more ? json_string(cursor) : json_null());
	if (!r->resp)
		return OTPD_NOMEM;
	r->http_status = MHD_HTTP_OK;
	return OTPD_OK;
}

/* ---- GET /api/v1/admin/users?q=: a number (any form), else a username prefix ---- */

static enum otpd_status users_read(struct request *r)
{
	struct http_admin *a = r->admin;

	if (a->bad_param)
		return OTPD_VALIDATION_ERROR;
	if (!(a->users = malloc(a->limit * sizeof(*a->users))))
		return OTPD_NOMEM;
	return store_users_list_start(r->srv->store, &a->uq, a->users, a->limit, &a->n_users,
	                              admin_step_done, r);
}

enum otpd_status http_h_admin_users(struct request *r)
{
	struct http_admin *a = admin_new(r, users_read);
	const char *q, *cursor;

	if (!a)
		return admin_begin(r);
	q = query_arg(r, "q");
	page_limit(r, a);
	if (q && otp_phone_normalize(q, strlen(q), a->phone) == OTPD_OK)
		a->uq.phone = a->phone;
	else if (q && *q && strlen(q) > STORE_USERNAME_MAX)
		bad(a, "q", "A number, or the start of a username (at most 150 characters).");
	else if (q && *q)
		a->uq.username_prefix = q;
	/* The cursor: an id (newest first), or after a prefix "u" and the last username. */
	if ((cursor = query_arg(r, "cursor"))) {
		if (a->uq.username_prefix) {
			if (cursor[0] != 'u' || !cursor[1] || strlen(cursor + 1) > STORE_USERNAME_MAX)
				bad(a, "cursor", "Give the next_cursor of the previous page.");
			else
				a->uq.after_username = cursor + 1;
		} else if (!parse_int64(cursor, 1, INT64_MAX, &a->uq.before_id)) {
			bad(a, "cursor", "Give the next_cursor of the previous page.");
		}
	}
	return admin_begin(r);
}

enum otpd_status http_h_admin_users_finish(struct request *r)
{
	struct http_admin *a = r->admin;
	json_t *items;
	char cursor[STORE_USERNAME_MAX + 2];
	bool more;

	if (a->status == OTPD_VALIDATION_ERROR && a->bad_param)
		http_add_error(r, a->bad_param, a->bad_msg);
	if (a->status != OTPD_OK)
		return a->status;
	if (!(items = json_array()))
		return OTPD_NOMEM;
	for (size_t i = 0; i < a->n_users; i++)
		if (json_array_append_new(items, admin_user_json(&a->users[i])) != 0) {
			json_decref(items);
			return OTPD_NOMEM;
		}
	more = a->n_users == a->limit;
	if (more && a->uq.username_prefix)
		snprintf(cursor, sizeof(cursor), "u%s", a->users[a->n_users - 1].username);
	else if (more)
		snprintf(cursor, sizeof(cursor), "%lld", (long long)a->users[a->n_users - 1].id);
	r->resp = json_pack("{s:o, s:o}", "items", items,
	                    "next_cursor", more ? json_string(cursor) : json_null());
	if (!r->resp)
		return OTPD_NOMEM;
	r->http_status = MHD_HTTP_OK;
	return OTPD_OK;
}

/* ---- PATCH /api/v1/admin/users/{id}: {"is_active": bool} and/or {"is_staff": bool} ---- */

/* A flag of the body: JSON true/false, or a form's true/false (parse_bool).
 * A bad one is kept in a (answered after the caller's check). */
static void body_flag(struct request *r, struct http_admin *a, const char *name, bool *set,
                      bool *value)
{
	json_t *v = json_object_get(r->fields, name);

	*set = false;
	if (!v || json_is_null(v))
		return;
	if (json_is_boolean(v))
		*value = json_is_true(v);
	else if (!json_is_string(v) || !parse_bool(json_string_value(v), value)) {
		bad(a, name, "Must be true or false.");
		return;
	}
	*set = true;
}

static const char *change_action(const struct store_user_change *c)
{
	if (c->set_active && c->set_staff)
		return c->is_active ? (c->is_staff ? "user.activate,user.set_staff"
		                                   : "user.activate,user.unset_staff")
		                    : (c->is_staff ? "user.deactivate,user.set_staff"
		                                   : "user.deactivate,user.unset_staff");
	if (c->set_active)
		return c->is_active ? "user.activate" : "user.deactivate";
	return c->is_staff ? "user.set_staff" : "user.unset_staff";
}

static enum otpd_status user_patch(struct request *r)
{
	struct http_admin *a = r->admin;
	char target[32];

	if (a->decode_status != OTPD_OK)
		return a->decode_status;
	if (a->bad_id) {
		bad(a, "id", "A user id is a positive integer.");
		return OTPD_VALIDATION_ERROR;
	}
	if (a->bad_param)
		return OTPD_VALIDATION_ERROR;
	/* A staff user cannot lock itself out. */
	if (a->target_id == a->op.staff.id && a->change.set_active && !a->change.is_active) {
		bad(a, "is_active", "You cannot deactivate yourself.");
		return OTPD_VALIDATION_ERROR;
	}
	if (a->target_id == a->op.staff.id && a->change.set_staff && !a->change.is_staff) {
		bad(a, "is_staff", "You cannot drop your own staff status.");
		return OTPD_VALIDATION_ERROR;
	}
	snprintf(target, sizeof(target), "user:%lld", (long long)a->target_id);
	audit_of(r, change_action(&a->change), target, &a->audit);
	return store_user_update_start(r->srv->store, a->target_id, &a->change, &a->audit,
	                               &a->target, admin_step_done, r);
}

enum otpd_status http_h_admin_user_patch(struct request *r)
{
	struct http_admin *a = admin_new(r, user_patch);

	if (!a)
		return admin_begin(r);
	a->bad_id = !parse_int64(r->route_param, 1, INT64_MAX, &a->target_id);
	a->decode_status = http_request_decode(r);
	if (a->decode_status == OTPD_OK) {
		body_flag(r, a, "is_active", &a->change.set_active, &a->change.is_active);
		body_flag(r, a, "is_staff", &a->change.set_staff, &a->change.is_staff);
		if (!a->bad_param && !a->change.set_active && !a->change.set_staff)
			bad(a, "is_active", "Give is_active, is_staff or both.");
	}
	return admin_begin(r);
}

enum otpd_status http_h_admin_user_patch_finish(struct request *r)
{
	struct http_admin *a = r->admin;

	if (a->status == OTPD_VALIDATION_ERROR && a->bad_param)
		http_add_error(r, a->bad_param, a->bad_msg);
	if (a->status != OTPD_OK)
		return a->status;
	http_note(r, "admin.user_changed", "user %lld: %s by user %lld", (long long)a->target_id,
	          a->audit.action, (long long)a->op.staff.id);
	r->resp = admin_user_json(&a->target);
	if (!r->resp)
		return OTPD_NOMEM;
	r->http_status = MHD_HTTP_OK;
	return OTPD_OK;
}

/* ---- GET /api/v1/admin/audit: every admin action, newest first ---- */

static enum otpd_status audit_read(struct request *r)
{
	struct http_admin *a = r->admin;

	if (a->bad_param)
		return OTPD_VALIDATION_ERROR;
	if (!(a->entries = malloc(a->limit * sizeof(*a->entries))))
		return OTPD_NOMEM;
	return store_audit_list_start(r->srv->store, a->q.before_id, a->entries, a->limit,
	                              &a->n_entries, admin_step_done, r);
}

enum otpd_status http_h_admin_audit(struct request *r)
{
	struct http_admin *a = admin_new(r, audit_read);

	if (a)
		page_args(r, a, &a->q.before_id);
	return admin_begin(r);
}

enum otpd_status http_h_admin_audit_finish(struct request *r)
{
	struct http_admin *a = r->admin;
	json_t *items;
	char cursor[24];
	bool more;

	if (a->status == OTPD_VALIDATION_ERROR && a->bad_param)
		http_add_error(r, a->bad_param, a->bad_msg);
	if (a->status != OTPD_OK)
		return a->status;
	if (!(items = json_array()))
		return OTPD_NOMEM;
	for (size_t i = 0; i < a->n_entries; i++) {
		const struct store_audit_entry *e = &a->entries[i];

		if (json_array_append_new(items, json_pack("{s:I, s:o, s:s, s:s, s:s, s:o}",
		                                           "id", (json_int_t)e->id,
		                                           "time", time_json(e->time_ms),
		                                           "actor", e->actor, "action", e->action,
		                                           "target", e->target,
		                                           "client", e->has_client
		                                           ? json_string(e->client) : json_null())) != 0) {
			json_decref(items);
			return OTPD_NOMEM;
		}
	}
	more = a->n_entries == a->limit;
	if (more)
		snprintf(cursor, sizeof(cursor), "%lld", (long long)a->entries[a->n_entries - 1].id);
	r->resp = json_pack("{s:o, s:o}", "items", items,
	                    "next_cursor", more ? json_string(cursor) : json_null());
	if (!r->resp)
		return OTPD_NOMEM;
	r->http_status = MHD_HTTP_OK;
	return OTPD_OK;
}
