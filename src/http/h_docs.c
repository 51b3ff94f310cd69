/* GET /api/v1/schema: the OpenAPI 3.1 document (docs/openapi.json, embedded
 * at build time), byte for byte.
 * GET /api/v1/docs: the interactive docs page (Swagger UI showing that
 * document, "Try it out" against this server), and GET /api/v1/docs/{file}:
 * the files it loads, all embedded at build time, so that the page needs no
 * network.  respond() adds the page's security headers (Content-Security-
 * Policy and the others: server.c). */
#include <string.h>
#include "embedded.h"
#include "internal.h"

enum otpd_status http_h_schema(struct request *r)
{
	r->http_status = MHD_HTTP_OK;
	http_set_static_body(r, otpd_openapi_json, otpd_openapi_json_len, "application/json");
	return OTPD_OK;
}

enum otpd_status http_h_docs(struct request *r)
{
	r->http_status = MHD_HTTP_OK;
	http_set_static_body(r, otpd_docs_index_html, otpd_docs_index_html_len,
	                     "text/html; charset=utf-8");
	r->page_headers = true; /* Cache-Control stays no-store */
	return OTPD_OK;
}

/* The tag the page puts in each file's link, ?v=TAG: the first hex digits of
 * the file's SHA-256 (tools/docs_page.sh). */
#define DOCS_TAG_LEN 16
/* A file asked for with this build's tag may be kept: the same URL always
 * has the same bytes. */
#define DOCS_CACHE_IMMUTABLE "public, max-age=31536000, immutable"

#define DOCS_JS "text/javascript; charset=utf-8"
#define DOCS_CSS "text/css; charset=utf-8"
#define DOCS_TEXT "text/plain; charset=utf-8"

static const struct docs_file {
	const char *name;
	const unsigned char *bytes;
	const size_t *len;
	const char *sha256;
	const char *type;
} docs_files[] = {
#define FILE_ROW(name, sym, type) {name, sym, &sym##_len, sym##_sha256, type}
	FILE_ROW("otpd-docs.js", otpd_docs_otpd_docs_js, DOCS_JS),
	FILE_ROW("otpd-docs.css", otpd_docs_otpd_docs_css, DOCS_CSS),
	FILE_ROW("swagger-ui-bundle.js", otpd_docs_swagger_ui_bundle_js, DOCS_JS),
	FILE_ROW("swagger-ui.css", otpd_docs_swagger_ui_css, DOCS_CSS),
	FILE_ROW("LICENSE", otpd_docs_LICENSE, DOCS_TEXT),
	FILE_ROW("NOTICE", otpd_docs_NOTICE, DOCS_TEXT),
	FILE_ROW("swagger-ui-bundle.js.LICENSE.txt", otpd_docs_swagger_ui_bundle_js_LICENSE_txt, DOCS_TEXT),
#undef FILE_ROW
};

enum otpd_status http_h_docs_file(struct request *r)
{
	const struct docs_file *f = NULL;
	const char *v;

	for (size_t i = 0; i < sizeof(docs_files) / sizeof(docs_files[0]); i++) {
		if (strcmp(r->route_param, docs_files[i].name) == 0) {
			f = &docs_files[i];
			break;
		}
	}
	if (!f)
		return OTPD_NOT_FOUND;
	r->http_status = MHD_HTTP_OK;
	http_set_static_body(r, f->bytes, *f->len, f->type);
	r->page_headers = true;
	/* Another tag (an older or newer build behind the same name, as in a
	 * rolling upgrade) or none: not to be kept, like every other answer. */
	v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "v");
	if (v && strlen(v) == DOCS_TAG_LEN && strncmp(v, f->sha256, DOCS_TAG_LEN) == 0)
		r->cache_control = DOCS_CACHE_IMMUTABLE;
	return OTPD_OK;
}
