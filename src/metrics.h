/* Prometheus metrics (docs/API.md §5): one process-wide registry of
 * counters, gauges and histograms.  Counting is a relaxed atomic add: no
 * lock, no allocation, so the request path never serialises on it.
 * metrics_render() reads the same atomics while requests go on.
 *
 * Every label value comes from a bounded set named here (routes are the
 * path templates given to metrics_init); no phone number, code, token or
 * key ever reaches a metric. */
#ifndef OTPD_METRICS_H
#define OTPD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum metrics_send {
	METRICS_SEND_SENT = 0,
	METRICS_SEND_RATE_LIMITED,
	METRICS_SEND_THROTTLED,
	METRICS_SEND_LOCKED,
	METRICS_SEND_BUDGET_EXCEEDED,
	METRICS_SEND_FORBIDDEN,
	METRICS_SEND_REJECTED,
	METRICS_SEND_UNAVAILABLE,
	METRICS_SEND_INVALID,
	METRICS_SEND_ERROR,       /* the database or a bug: 5xx other than the SMS */
	_METRICS_SEND_MAX,
};

enum metrics_channel { METRICS_CHANNEL_SMS = 0, METRICS_CHANNEL_CALL, _METRICS_CHANNEL_MAX };

enum metrics_verify {
	METRICS_VERIFY_OK = 0,
	METRICS_VERIFY_INVALID_CODE,
	METRICS_VERIFY_TOO_MANY_ATTEMPTS,
	METRICS_VERIFY_EXPIRED,
	METRICS_VERIFY_LOCKED,
	METRICS_VERIFY_INACTIVE,
	METRICS_VERIFY_THROTTLED,
	METRICS_VERIFY_INVALID,
	METRICS_VERIFY_ERROR,
	_METRICS_VERIFY_MAX,
};

enum metrics_refresh {
	METRICS_REFRESH_OK = 0,
	METRICS_REFRESH_INVALID,
	METRICS_REFRESH_REUSE_DETECTED,
	METRICS_REFRESH_INACTIVE,
	METRICS_REFRESH_ERROR,
	_METRICS_REFRESH_MAX,
};

enum metrics_sms {
	METRICS_SMS_ACCEPTED = 0,
	METRICS_SMS_REJECTED,
	METRICS_SMS_UNAVAILABLE,
	_METRICS_SMS_MAX,
};

enum metrics_delivery {
	METRICS_DELIVERY_DELIVERED = 0,
	METRICS_DELIVERY_FAILED,
	METRICS_DELIVERY_UNKNOWN,
	_METRICS_DELIVERY_MAX,
};

#define METRICS_MAX_ROUTES 32

/* Once, before any counting: the version for otpd_build_info and the SMS
 * backend's name (the `backend` label).  Counts start at zero.  The strings
 * must outlive the registry. */
void metrics_init(const char *version, const char *sms_backend);
/* The route templates of the HTTP server: index i is route i; anything
 * else counts as "other". */
void metrics_set_routes(const char *const *routes, size_t n_routes);

/* One answered HTTP request: route index (>= n_routes: "other"), the HTTP
 * status, and how long it took. */
void metrics_http(size_t route, unsigned status, int64_t duration_ns);

void metrics_otp_send(enum metrics_send result, enum metrics_channel channel);
void metrics_otp_verify(enum metrics_verify result);
void metrics_user_created(void);
void metrics_token_refresh(enum metrics_refresh result);
/* One provider call (or console delivery) finished: its outcome, the
 * provider's return.status when it answered one (else < 0), its duration
 * (< 0: refused before any call, not timed). */
void metrics_sms_request(enum metrics_sms result, int provider_status, int64_t duration_ns);
void metrics_sms_in_flight_add(int delta);
/* The provider's remaining credit, and whether it is below the alert. */
void metrics_sms_credit_set(double credit, bool low);
void metrics_sms_delivered(enum metrics_delivery status);
void metrics_sms_circuit_set(bool open);
void metrics_test_number_login(void);
void metrics_store_error(void);

/* The Prometheus text exposition (format 0.0.4), malloc'ed (free it), its
 * length in *ret_len; NULL when out of memory. */
char *metrics_render(size_t *ret_len);

#endif
