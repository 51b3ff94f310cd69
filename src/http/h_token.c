/* POST /api/v1/usr/token/refresh, POST /api/v1/usr/logout,
 * GET /api/v1/usr/me, GET /.well-known/jwks.json (docs/API.md §3 "Tokens"). */
#include <string.h>
#include <strings.h>
#include "internal.h"

/* The refresh token from the body when it names one, else from the cookie
 * (NULL when neither).  A body is optional here (cookie-only clients send
 * none).  A token taken from the cookie must pass the Origin check.
 * any_body (logout): a body that cannot be used (not JSON or a form that
 * decodes, not an object, a refresh_token that is not a string) counts as
 * a body that names no token, instead of 400; 415 stays. */
static enum otpd_status refresh_token_of(struct request *r, bool any_body, const char **ret)
{
	const char *tok = NULL;
	enum otpd_status st;

	if (r->body_len > 0) {
		st = http_request_decode(r);
		if (st == OTPD_OK && !http_field_optional_string(r, "refresh_token", &tok))
			st = OTPD_VALIDATION_ERROR;
		if (st != OTPD_OK) {
			if (!any_body || st == OTPD_UNSUPPORTED_MEDIA_TYPE || st == OTPD_NOMEM)
				return st;
			json_decref(r->extra); /* the validation errors: not answered */
			r->extra = NULL;
			tok = NULL;
		}
	}
	if (!tok) {
		tok = http_cookie(r, "refresh_token");
		if (tok && !http_origin_allowed(r))
			return OTPD_FORBIDDEN;
	}
	*ret = tok;
	return OTPD_OK;
}

enum otpd_status http_h_refresh(struct request *r)
{
	const char *tok;
	enum otpd_status st;

	st = refresh_token_of(r, false, &tok);
	if (st != OTPD_OK)
		return st;
	if (!tok)
		return OTPD_INVALID_TOKEN;
	http_suspend(r);
	st = auth_refresh_start(r->srv->auth, tok, http_now_ms(), &r->session_op,
	                        http_resume_cb, r);
	if (st != OTPD_OK) {
		r->session_op.status = st;
		http_resume(r);
	}
	return OTPD_OK; /* the answer comes from http_h_refresh_finish() */
}

/* The resumed connection: the outcome of the rotation, and the pair. */
enum otpd_status http_h_refresh_finish(struct request *r)
{
	enum otpd_status st = auth_refresh_finish(&r->session_op, &r->tokens);

	if (st != OTPD_OK)
		return st;
	r->resp = json_pack("{s:s, s:s}", "access_token", r->tokens.access_token,
	                    "refresh_token", r->tokens.refresh_token);
	if (!r->resp)
		return OTPD_NOMEM;
	r->http_status = MHD_HTTP_OK;
	http_set_auth_cookies(r, r->tokens.access_token, r->tokens.refresh_token,
	                      r->tokens.access_ttl_s, r->tokens.refresh_ttl_s);
	if (r->tokens.csrf_token[0])
		r->cookie_csrf = r->tokens.csrf_token;
	return OTPD_OK;
}

enum otpd_status http_h_logout(struct request *r)
{
	const char *tok;
	enum otpd_status st;

	/* 204 whatever it is given: a body that cannot be used is one that
	 * names no token (the cookie's is revoked, if any). */
	st = refresh_token_of(r, true, &tok);
	if (st != OTPD_OK)
		return st;
	/* Bad or missing tokens: nothing to revoke, answered at once. */
	http_suspend(r);
	if (!auth_logout_start(r->srv->auth, tok, &r->session_op, http_resume_cb, r))
		http_resume(r);
	return OTPD_OK; /* the answer comes from http_h_logout_finish() */
}

/* 204 whatever the outcome: a revocation that failed is logged by the store. */
enum otpd_status http_h_logout_finish(struct request *r)
{
	auth_logout_finish(&r->session_op);
	r->http_status = MHD_HTTP_NO_CONTENT;
	r->no_body = true;
	r->cookies_clear = true;
	return OTPD_OK;
}

enum otpd_status http_h_me(struct request *r)
{
	const char *authz = http_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
	const char *tok = NULL;
	enum otpd_status st;

	if (authz) {
		if (strncasecmp(authz, "Bearer ", 7) != 0)
			return OTPD_INVALID_TOKEN;
		tok = authz + 7;
		while (*tok == ' ')
			tok++;
	} else {
		tok = http_cookie(r, "access_token");
	}
	if (!tok || !*tok)
		return OTPD_INVALID_TOKEN;
	http_suspend(r);
	st = auth_me_start(r->srv->auth, tok, http_now_ms(), &r->me, http_resume_cb, r);
	if (st != OTPD_OK) {
		r->me.status = st;
		http_resume(r);
	}
	return OTPD_OK; /* the answer comes from http_h_me_finish() */
}

/* The resumed connection: the user, read without holding a server thread. */
enum otpd_status http_h_me_finish(struct request *r)
{
	struct store_user u;
	enum otpd_status st = auth_me_finish(&r->me, &u);

	if (st != OTPD_OK)
		return st;
	r->resp = http_user_json(&u);
	if (!r->resp)
		return OTPD_NOMEM;
	r->http_status = MHD_HTTP_OK;
	return OTPD_OK;
}

enum otpd_status http_h_jwks(struct request *r)
{
	r->resp = json_loads(auth_jwks(r->srv->auth), 0, NULL);
	if (!r->resp)
		return OTPD_NOMEM;
	r->http_status = MHD_HTTP_OK;
	return OTPD_OK;
}
