/* Files embedded in the binary at build time (tools/embed.sh, see the
 * Makefile): each is its bytes, then one NUL that NAME_len does not count. */
#ifndef OTPD_HTTP_EMBEDDED_H
#define OTPD_HTTP_EMBEDDED_H

#include <stddef.h>

/* docs/openapi.json, served by GET /api/v1/schema. */
extern const unsigned char otpd_openapi_json[];
extern const size_t otpd_openapi_json_len;

#endif
