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
#include "../util/parse.h"
#include "internal.h"

/* A route's step (2): start its store call with admin_step_done as done,
 * or return what stops it (then nothing was started). */
typedef enum otpd_status (*admin_step_fn)(struct request *r);

struct http_admin {
	struct auth_admin_op op;
	admin_step_fn step;
	enum otpd_status status;  /* the outcome of (1), then of (2) */
	int64_t target_id;        /* /users/{id} */
	struct store_user target;
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

	a->status = auth_admin_finish(&a->op);
	if (a->status == OTPD_OK)
		a->status = a->step(r);
	if (a->status != OTPD_OK)
		http_resume(r); /* refused, or step (2) could not start */
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

	if (o && json_object_update(o, json_pack("{s:b, s:b, s:o, s:o}", "is_active", u->is_active,
	                                         "is_staff", u->is_staff,
	                                         "date_joined", time_json(u->created_ms),
	                                         "last_login", time_json(u->last_login_ms))) != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* ---- GET /api/v1/admin/users/{id} ---- */

static enum otpd_status user_read(struct request *r)
{
	if (r->admin->target_id == 0)
		return OTPD_NOT_FOUND;
	return store_user_get_start(r->srv->store, r->admin->target_id, &r->admin->target,
	                            admin_step_done, r);
}

enum otpd_status http_h_admin_user(struct request *r)
{
	struct http_admin *a = admin_new(r, user_read);

	if (a && !parse_int64(r->route_param, 1, INT64_MAX, &a->target_id))
		a->target_id = 0; /* not an id: no such user (after the caller's check) */
	return admin_begin(r);
}

enum otpd_status http_h_admin_user_finish(struct request *r)
{
	struct http_admin *a = r->admin;

	if (a->status != OTPD_OK)
		return a->status;
	r->resp = admin_user_json(&a->target);
	if (!r->resp)
		return OTPD_NOMEM;
	r->http_status = MHD_HTTP_OK;
	return OTPD_OK;
}
