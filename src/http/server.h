/* The HTTP server (libmicrohttpd): routes, request lifetime, suspend/resume
 * for sends waiting on the SMS provider. */
#ifndef OTPD_HTTP_SERVER_H
#define OTPD_HTTP_SERVER_H

#include <stddef.h>
#include "../auth/login.h"
#include "../config.h"
#include "../status.h"

struct http_server;

enum otpd_status http_server_start(const struct config *cfg, struct auth *auth,
                                   struct store *store, struct http_server **ret);
/* The port actually bound (useful with port 0). */
unsigned http_server_port(const struct http_server *s);
/* Start no new work: from now on every request, on a new or a kept-alive
 * connection, is answered 503 unavailable with Connection: close; requests
 * in flight go on. */
void http_server_quiesce(struct http_server *s);
/* Requests accepted and not yet completed. */
long http_server_inflight(const struct http_server *s);
/* Of them, those whose work has started (answered or being answered): a
 * shutdown waits for these; the others are still receiving their head or
 * body and are dropped by http_server_stop(). */
long http_server_busy(const struct http_server *s);
/* Of them, those suspended while the store or the SMS worker holds them:
 * the server must not be stopped while there are any (their resume would
 * come after it). */
long http_server_waiting(const struct http_server *s);
/* Close every connection and free.  Accepts NULL. */
void http_server_stop(struct http_server *s);

#endif
