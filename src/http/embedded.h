/* Files embedded in the binary at build time (tools/embed.sh, see the
 * Makefile): each is its bytes, then one NUL that NAME_len does not count,
 * and NAME_sha256, the file's SHA-256 in lower-case hex. */
#ifndef OTPD_HTTP_EMBEDDED_H
#define OTPD_HTTP_EMBEDDED_H

#include <stddef.h>

#define OTPD_EMBEDDED(name)                  \
	extern const unsigned char name[];   \
	extern const size_t name##_len;      \
	extern const char name##_sha256[]

/* docs/openapi.json, served by GET /api/v1/schema. */
OTPD_EMBEDDED(otpd_openapi_json);

/* The docs page, GET /api/v1/docs (src/http/docs/index.html with its links
 * versioned by tools/docs_page.sh), and its files, GET /api/v1/docs/{file}:
 * its own script and styles (src/http/docs/) and Swagger UI's
 * (third_party/swagger-ui-dist/). */
OTPD_EMBEDDED(otpd_docs_index_html);
OTPD_EMBEDDED(otpd_docs_otpd_docs_js);
OTPD_EMBEDDED(otpd_docs_otpd_docs_css);
OTPD_EMBEDDED(otpd_docs_swagger_ui_bundle_js);
OTPD_EMBEDDED(otpd_docs_swagger_ui_css);
OTPD_EMBEDDED(otpd_docs_LICENSE);
OTPD_EMBEDDED(otpd_docs_NOTICE);
OTPD_EMBEDDED(otpd_docs_swagger_ui_bundle_js_LICENSE_txt);

#endif
