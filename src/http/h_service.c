/* GET /healthz and GET /readyz (docs/API.md §3 "Service endpoints"). */
#include "../store/store.h"
#include "internal.h"

enum otpd_status http_h_healthz(struct request *r)
{
	r->http_status = MHD_HTTP_OK;
	r->resp = json_pack("{s:s}", "status", "ok");
	return r->resp ? OTPD_OK : OTPD_NOMEM;
}

enum otpd_status http_h_readyz(struct request *r)
{
	enum otpd_status st = store_ping(r->srv->store);

	if (st != OTPD_OK)
		return OTPD_UNAVAILABLE;
	r->http_status = MHD_HTTP_OK;
	r->resp = json_pack("{s:s}", "status", "ready");
	return r->resp ? OTPD_OK : OTPD_NOMEM;
}
