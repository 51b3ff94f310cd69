#include "metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef atomic_uint_fast64_t counter;

#define ADD(c) atomic_fetch_add_explicit(&(c), 1, memory_order_relaxed)
#define GET(c) atomic_load_explicit(&(c), memory_order_relaxed)

/* Histogram bounds, in nanoseconds; a last, implicit bucket is +Inf.  HTTP:
 * from a cached read (well under a millisecond) to a send that waits for a
 * slow provider (KAVENEGAR_TIMEOUT_MS, 10 s by default). */
static const int64_t http_bounds[] = {
	500000, 1000000, 2500000, 5000000, 10000000, 25000000, 50000000,
	100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000,
	10000000000,
};
#define HTTP_NB (sizeof(http_bounds) / sizeof(http_bounds[0]) + 1)

/* One provider call: tens of milliseconds when well, up to the timeouts. */
static const int64_t sms_bounds[] = {
	10000000, 25000000, 50000000, 100000000, 250000000, 500000000,
	1000000000, 2500000000, 5000000000, 10000000000, 30000000000,
};
#define SMS_NB (sizeof(sms_bounds) / sizeof(sms_bounds[0]) + 1)

#define STATUS_MIN 100
#define STATUS_N 500 /* 100..599 */

/* Kavenegar's documented return.status codes (docs/KAVENEGAR.md §5); any
 * other value is counted as "other", so the label set stays bounded. */
static const int provider_codes[] = {
	200, 400, 401, 402, 403, 404, 405, 406, 407, 409, 411, 412, 413, 414,
	415, 416, 417, 418, 419, 420, 422, 424, 426, 427, 428, 429, 431, 432,
	451, 501, 607,
};
#define PROVIDER_N (sizeof(provider_codes) / sizeof(provider_codes[0]))

struct histogram_http {
	counter bucket[HTTP_NB];
	counter sum_ns;
};

static struct {
	const char *version;
	const char *const *routes;
	size_t n_routes;
	const char *backend;

	counter http_requests[METRICS_MAX_ROUTES + 1][STATUS_N];
	struct histogram_http http_duration[METRICS_MAX_ROUTES + 1];
	counter sends[_METRICS_SEND_MAX][_METRICS_CHANNEL_MAX];
	counter verifies[_METRICS_VERIFY_MAX];
	counter users_created;
	counter refreshes[_METRICS_REFRESH_MAX];
	counter sms_requests[_METRICS_SMS_MAX];
	counter provider_status[PROVIDER_N + 1]; /* last: other */
	counter sms_bucket[SMS_NB];
	counter sms_sum_ns;
	atomic_int_fast64_t sms_in_flight;
	_Atomic double sms_credit;
	atomic_bool sms_credit_known;
	atomic_bool sms_credit_low;
	counter delivered[_METRICS_DELIVERY_MAX];
	atomic_bool circuit_open;
	counter test_number_logins;
	counter store_errors;
} m;

static const char *const send_names[] = {
	"sent", "rate_limited", "throttled", "locked", "budget_exceeded", "forbidden",
	"rejected", "unavailable", "invalid", "error",
};
static const char *const channel_names[] = {"sms", "call"};
static const char *const verify_names[] = {
	"ok", "invalid_code", "too_many_attempts", "expired", "locked", "inactive",
	"throttled", "invalid", "error",
};
static const char *const refresh_names[] = {"ok", "invalid", "reuse_detected", "inactive", "error"};
static const char *const sms_names[] = {"accepted", "rejected", "unavailable"};
static const char *const delivery_names[] = {"delivered", "failed", "unknown"};

_Static_assert(sizeof(send_names) / sizeof(send_names[0]) == _METRICS_SEND_MAX, "send names");
_Static_assert(sizeof(verify_names) / sizeof(verify_names[0]) == _METRICS_VERIFY_MAX, "verify names");
_Static_assert(sizeof(refresh_names) / sizeof(refresh_names[0]) == _METRICS_REFRESH_MAX, "refresh names");
_Static_assert(sizeof(sms_names) / sizeof(sms_names[0]) == _METRICS_SMS_MAX, "sms names");
_Static_assert(sizeof(delivery_names) / sizeof(delivery_names[0]) == _METRICS_DELIVERY_MAX, "delivery names");

void metrics_init(const char *version, const char *sms_backend)
{
	memset(&m, 0, sizeof(m));
	m.version = version;
	m.backend = sms_backend;
}

void metrics_set_routes(const char *const *routes, size_t n_routes)
{
	m.routes = routes;
	m.n_routes = n_routes < METRICS_MAX_ROUTES ? n_routes : METRICS_MAX_ROUTES;
}

static size_t bucket_of(const int64_t *bounds, size_t nb, int64_t v)
{
	size_t i = 0;

	while (i + 1 < nb && v > bounds[i])
		i++;
	return i;
}

void metrics_http(size_t route, unsigned status, int64_t duration_ns)
{
	size_t r = route < m.n_routes ? route : m.n_routes;

	if (duration_ns < 0)
		duration_ns = 0;
	if (status >= STATUS_MIN && status < STATUS_MIN + STATUS_N)
		ADD(m.http_requests[r][status - STATUS_MIN]);
	ADD(m.http_duration[r].bucket[bucket_of(http_bounds, HTTP_NB, duration_ns)]);
	atomic_fetch_add_explicit(&m.http_duration[r].sum_ns, (uint_fast64_t)duration_ns,
	                          memory_order_relaxed);
}

void metrics_otp_send(enum metrics_send result, enum metrics_channel channel)
{
	if ((unsigned)result < _METRICS_SEND_MAX && (unsigned)channel < _METRICS_CHANNEL_MAX)
		ADD(m.sends[result][channel]);
}

void metrics_otp_verify(enum metrics_verify result)
{
	if ((unsigned)result < _METRICS_VERIFY_MAX)
		ADD(m.verifies[result]);
}

void metrics_user_created(void) { ADD(m.users_created); }

void metrics_token_refresh(enum metrics_refresh result)
{
	if ((unsigned)result < _METRICS_REFRESH_MAX)
		ADD(m.refreshes[result]);
}

void metrics_sms_request(enum metrics_sms result, int provider_status, int64_t duration_ns)
{
	if ((unsigned)result < _METRICS_SMS_MAX)
		ADD(m.sms_requests[result]);
	if (provider_status >= 0) {
		size_t i = 0;
		while (i < PROVIDER_N && provider_codes[i] != provider_status)
			i++;
		ADD(m.provider_status[i]); /* PROVIDER_N: other */
	}
	if (duration_ns < 0)
		return; /* refused before any call: nothing to time */
	ADD(m.sms_bucket[bucket_of(sms_bounds, SMS_NB, duration_ns)]);
	atomic_fetch_add_explicit(&m.sms_sum_ns, (uint_fast64_t)duration_ns, memory_order_relaxed);
}

void metrics_sms_in_flight_add(int delta)
{
	atomic_fetch_add_explicit(&m.sms_in_flight, delta, memory_order_relaxed);
}

void metrics_sms_credit_set(double credit, bool low)
{
	atomic_store(&m.sms_credit, credit);
	atomic_store(&m.sms_credit_low, low);
	atomic_store(&m.sms_credit_known, true);
}

void metrics_sms_delivered(enum metrics_delivery status)
{
	if ((unsigned)status < _METRICS_DELIVERY_MAX)
		ADD(m.delivered[status]);
}

void metrics_sms_circuit_set(bool open) { atomic_store(&m.circuit_open, open); }
void metrics_test_number_login(void) { ADD(m.test_number_logins); }
void metrics_store_error(void) { ADD(m.store_errors); }

/* ---- rendering ---- */

struct out {
	char *buf;
	size_t len, cap;
	bool failed;
};

__attribute__((format(printf, 2, 3)))
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			o->failed = true;
			return;
		}
		if ((size_t)n < o->cap - o->len) {
			o->len += (size_t)n;
			return;
		}
		size_t cap = o->cap * 2 + (size_t)n;
		char *b = realloc(o->buf, cap);
		if (!b) {
			o->failed = true;
			return;
		}
		o->buf = b;
		o->cap = cap;
	}
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value as the exposition format wants it (\\, \", \n escaped). */
static void put_label(struct out *o, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			put(o, "\\%c", *v);
		else if (*v == '\n')
			put(o, "\\n");
		else
			put(o, "%c", *v);
	}
}

static const char *route_name(size_t r) { return r < m.n_routes ? m.routes[r] : "other"; }

static void histogram(struct out *o, const char *name, const char *label, const char *value,
                      const int64_t *bounds, size_t nb, counter *buckets, counter *sum_ns)
{
	uint64_t cum = 0;

	for (size_t i = 0; i < nb; i++) {
		cum += GET(buckets[i]);
		put(o, "%s_bucket{%s=\"", name, label);
		put_label(o, value);
		if (i + 1 < nb)
			put(o, "\",le=\"%g\"} %llu\n", (double)bounds[i] / 1e9, (unsigned long long)cum);
		else
			put(o, "\",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
	}
	put(o, "%s_sum{%s=\"", name, label);
	put_label(o, value);
	put(o, "\"} %.9f\n", (double)GET(*sum_ns) / 1e9);
	put(o, "%s_count{%s=\"", name, label);
	put_label(o, value);
	put(o, "\"} %llu\n", (unsigned long long)cum);
}

static void simple_counter(struct out *o, const char *name, const char *help, counter *c)
{
	family(o, name, "counter", help);
	put(o, "%s %llu\n", name, (unsigned long long)GET(*c));
}

static void labelled(struct out *o, const char *name, const char *label,
                     const char *const *names, size_t n, counter *c)
{
	for (size_t i = 0; i < n; i++)
		put(o, "%s{%s=\"%s\"} %llu\n", name, label, names[i], (unsigned long long)GET(c[i]));
}

char *metrics_render(size_t *ret_len)
{
	struct out o = {.cap = 16384};

	o.buf = malloc(o.cap);
	if (!o.buf)
		return NULL;
	o.buf[0] = '\0';

	family(&o, "otpd_build_info", "gauge", "The running otpd's version (always 1).");
	put(&o, "otpd_build_info{version=\"");
	put_label(&o, m.version ? m.version : "unknown");
	put(&o, "\"} 1\n");

	family(&o, "otpd_http_requests_total", "counter",
	       "HTTP requests answered, by route template and status.");
	for (size_t r = 0; r <= m.n_routes; r++)
		for (unsigned s = 0; s < STATUS_N; s++) {
			uint64_t v = GET(m.http_requests[r][s]);
			if (!v)
				continue;
			put(&o, "otpd_http_requests_total{route=\"");
			put_label(&o, route_name(r));
			put(&o, "\",status=\"%u\"} %llu\n", s + STATUS_MIN, (unsigned long long)v);
		}

	family(&o, "otpd_http_request_duration_seconds", "histogram",
	       "Time from a request's headers being read to its answer, by route template.");
	for (size_t r = 0; r <= m.n_routes; r++)
		histogram(&o, "otpd_http_request_duration_seconds", "route", route_name(r),
		          http_bounds, HTTP_NB, m.http_duration[r].bucket, &m.http_duration[r].sum_ns);

	family(&o, "otpd_otp_sends_total", "counter", "Send requests, by outcome and channel.");
	for (size_t i = 0; i < _METRICS_SEND_MAX; i++)
		for (size_t c = 0; c < _METRICS_CHANNEL_MAX; c++)
			put(&o, "otpd_otp_sends_total{result=\"%s\",channel=\"%s\"} %llu\n",
			    send_names[i], channel_names[c], (unsigned long long)GET(m.sends[i][c]));

	family(&o, "otpd_otp_verifies_total", "counter", "Verify requests, by outcome.");
	labelled(&o, "otpd_otp_verifies_total", "result", verify_names, _METRICS_VERIFY_MAX,
	         m.verifies);

	simple_counter(&o, "otpd_users_created_total", "Users created by a first login.",
	               &m.users_created);

	family(&o, "otpd_token_refreshes_total", "counter", "Refresh requests, by outcome.");
	labelled(&o, "otpd_token_refreshes_total", "result", refresh_names, _METRICS_REFRESH_MAX,
	         m.refreshes);

	family(&o, "otpd_sms_requests_total", "counter",
	       "Codes handed to the SMS backend, by outcome.");
	for (size_t i = 0; i < _METRICS_SMS_MAX; i++) {
		put(&o, "otpd_sms_requests_total{backend=\"");
		put_label(&o, m.backend ? m.backend : "none");
		put(&o, "\",result=\"%s\"} %llu\n", sms_names[i],
		    (unsigned long long)GET(m.sms_requests[i]));
	}

	family(&o, "otpd_sms_provider_status_total", "counter",
	       "The provider's return.status of each answered call (undocumented codes: other).");
	for (size_t i = 0; i <= PROVIDER_N; i++) {
		uint64_t v = GET(m.provider_status[i]);
		if (!v)
			continue;
		if (i < PROVIDER_N)
			put(&o, "otpd_sms_provider_status_total{status=\"%d\"} %llu\n",
			    provider_codes[i], (unsigned long long)v);
		else
			put(&o, "otpd_sms_provider_status_total{status=\"other\"} %llu\n",
			    (unsigned long long)v);
	}

	family(&o, "otpd_sms_duration_seconds", "histogram",
	       "Time of one call to the SMS backend, by backend.");
	histogram(&o, "otpd_sms_duration_seconds", "backend", m.backend ? m.backend : "none",
	          sms_bounds, SMS_NB, m.sms_bucket, &m.sms_sum_ns);

	family(&o, "otpd_sms_in_flight", "gauge", "SMS jobs queued or waiting for the provider.");
	put(&o, "otpd_sms_in_flight %lld\n", (long long)atomic_load(&m.sms_in_flight));

	family(&o, "otpd_sms_credit", "gauge",
	       "The provider's remaining credit (Kavenegar: Rial), as last read; absent until read.");
	if (atomic_load(&m.sms_credit_known))
		put(&o, "otpd_sms_credit %.17g\n", (double)atomic_load(&m.sms_credit));
	family(&o, "otpd_sms_credit_low", "gauge",
	       "1 while the credit is below KAVENEGAR_CREDIT_ALERT.");
	put(&o, "otpd_sms_credit_low %d\n", atomic_load(&m.sms_credit_low) ? 1 : 0);

	family(&o, "otpd_sms_delivered_total", "counter",
	       "Final delivery states reported by the provider.");
	labelled(&o, "otpd_sms_delivered_total", "status", delivery_names, _METRICS_DELIVERY_MAX,
	         m.delivered);

	family(&o, "otpd_sms_circuit_open", "gauge",
	       "1 while sends are refused without calling the provider.");
	put(&o, "otpd_sms_circuit_open %d\n", atomic_load(&m.circuit_open) ? 1 : 0);

	simple_counter(&o, "otpd_test_number_logins_total", "Logins of configured test numbers.",
	               &m.test_number_logins);
	simple_counter(&o, "otpd_store_errors_total",
	               "Database errors (each also logged once by the store).", &m.store_errors);

	if (o.failed) {
		free(o.buf);
		return NULL;
	}
	*ret_len = o.len;
	return o.buf;
}
