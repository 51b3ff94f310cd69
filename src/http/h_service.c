/* GET /healthz, GET /readyz and GET /metrics (docs/API.md §3 "Service
 * endpoints", §5). */
#include <openssl/crypto.h>
#include <string.h>
#include <strings.h>
#include "../metrics.h"
#include "../store/store.h"
#include "internal.h"

enum otpd_status http_h_healthz(struct request *r)
{
	r->http_status = MHD_HTTP_OK;
	r->resp = json_pack("{s:s}", "status", "ok");
	return r->resp ? OTPD_OK : OTPD_NOMEM;
}

/* Store thread: the database answered the ping, or not. */
static void on_ping(void *arg, enum otpd_status status)
{
	struct request *r = arg;

	r->ping = status;
	http_resume(r);
}

/* The ping is a read like any other: no server thread waits for it (a
 * PostgreSQL that does not answer holds it up to the statement timeout). */
enum otpd_status http_h_readyz(struct request *r)
{
	enum otpd_status st;

	http_suspend(r);
	st = store_ping_start(r->srv->store, on_ping, r);
	if (st != OTPD_OK) {
		r->ping = st;
		http_resume(r);
	}
	return OTPD_OK; /* the answer comes from http_h_readyz_finish() */
}

enum otpd_status http_h_readyz_finish(struct request *r)
{
	if (r->ping != OTPD_OK)
		return OTPD_UNAVAILABLE;
	r->http_status = MHD_HTTP_OK;
	r->resp = json_pack("{s:s}", "status", "ready");
	return r->resp ? OTPD_OK : OTPD_NOMEM;
}

/* With OTPD_METRICS_TOKEN set: "Authorization: Bearer <token>", compared in
 * constant time. */
static bool metrics_allowed(struct request *r)
{
	const char *want = r->srv->cfg->metrics_token;
	const char *authz, *tok;
	size_t n = strlen(want);

	if (!n)
		return true;
	authz = http_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
	if (!authz || strncasecmp(authz, "Bearer ", 7) != 0)
		return false;
	for (tok = authz + 7; *tok == ' '; tok++)
		;
	return strlen(tok) == n && CRYPTO_memcmp(tok, want, n) == 0;
}

enum otpd_status http_h_metrics(struct request *r)
{
	size_t len = 0;

	if (!metrics_allowed(r))
		return OTPD_INVALID_TOKEN;
	char *text = metrics_render(&len);

	if (!text)
		return OTPD_NOMEM;
	http_set_owned_body(r, text, len, "text/plain; version=0.0.4; charset=utf-8");
	r->http_status = MHD_HTTP_OK;
	return OTPD_OK;
}
