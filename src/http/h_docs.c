/* GET /api/v1/schema: the OpenAPI 3.1 document (docs/openapi.json, embedded
 * at build time), byte for byte. */
#include "embedded.h"
#include "internal.h"

enum otpd_status http_h_schema(struct request *r)
{
	r->http_status = MHD_HTTP_OK;
	http_set_static_body(r, otpd_openapi_json, otpd_openapi_json_len, "application/json");
	return OTPD_OK;
}
