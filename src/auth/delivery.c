/* The delivery poller: a background thread that asks the SMS provider what
 * became of the messages it accepted, and keeps the answer with each code
 * (support's "I never got the code").  Bounded on every side:
 *   how many  at most DELIVERY_BATCH ids a call, DELIVERY_BATCHES calls a pass;
 *   how often one pass every KAVENEGAR_DELIVERY_INTERVAL seconds;
 *   how long  a message is asked about for DELIVERY_WINDOW_MS (the
 *             provider's 48 h), then it is recorded as unknown (100).
 * A message reaching a final state (docs/KAVENEGAR.md §6) is counted in
 * otpd_sms_delivered_total; a failed delivery is logged (masked number). */
#define _GNU_SOURCE /* pthread_setname_np */
#include "delivery.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../log.h"
#include "../metrics.h"
#include "../otp/phone.h"
#include "../sms/sms.h"
#include "../store/store.h"

#define DELIVERY_BATCH SMS_STATUS_MAX            /* ids a call: the provider's limit */
#define DELIVERY_BATCHES 10                      /* calls a pass */
#define DELIVERY_WINDOW_MS (48LL * 3600 * 1000)  /* the provider's sms/status window */
#define DELIVERY_UNKNOWN 100                     /* "invalid id": unknown, or too old */
#define DELIVERY_QUERY_WAIT_S 60                 /* a query's answer, at most */

struct auth_delivery {
	struct store *store;
	struct sms *sms;
	int interval_s;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	bool joined;

	/* The poller thread's own buffers, for one batch. */
	struct store_delivery_pending pend[DELIVERY_BATCH];
	struct store_delivery_status set[DELIVERY_BATCH];
	int64_t ids[DELIVERY_BATCH];

	/* One query in flight: its answer, handed over by the SMS worker. */
	bool answered;
	enum otpd_status status;
	struct sms_delivery got[DELIVERY_BATCH];
	size_t n_got;
};

static int64_t wall_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

enum metrics_delivery auth_delivery_class(int status)
{
	if (status == 10)
		return METRICS_DELIVERY_DELIVERED;
	if (status == 6 || status == 11 || status == 13 || status == 14)
		return METRICS_DELIVERY_FAILED;
	return METRICS_DELIVERY_UNKNOWN;
}

/* SMS worker thread: the provider's answer to one query. */
static void on_statuses(void *arg, enum otpd_status status, const struct sms_delivery *d,
                        size_t n)
{
	struct auth_delivery *dl = arg;

	pthread_mutex_lock(&dl->lock);
	dl->status = status;
	dl->n_got = n < DELIVERY_BATCH ? n : DELIVERY_BATCH;
	if (dl->n_got)
		memcpy(dl->got, d, dl->n_got * sizeof(*d));
	dl->answered = true;
	pthread_cond_broadcast(&dl->cond);
	pthread_mutex_unlock(&dl->lock);
}

/* Ask about ids[0..n); false when there was no answer (logged by sms/). */
static bool query(struct auth_delivery *dl, const int64_t *ids, size_t n)
{
	struct timespec until;
	bool ok;

	pthread_mutex_lock(&dl->lock);
	dl->answered = false;
	pthread_mutex_unlock(&dl->lock);
	if (sms_status_query(dl->sms, ids, n, on_statuses, dl) != OTPD_OK)
		return false;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += DELIVERY_QUERY_WAIT_S;
	pthread_mutex_lock(&dl->lock);
	/* Not waited for once stopping: the worker still calls back exactly
	 * once (at its own stop at the latest), which is why dl is freed only
	 * after sms_free() (auth_delivery_free()). */
	while (!dl->answered && !dl->stop)
		if (pthread_cond_timedwait(&dl->cond, &dl->lock, &until) == ETIMEDOUT)
			break; /* the worker's own timeouts are shorter: not seen */
	ok = dl->answered && dl->status == OTPD_OK;
	pthread_mutex_unlock(&dl->lock);
	return ok;
}

/* Record the final ones in the metrics and the log (non-final: nothing). */
static void report(const struct store_delivery_pending *p, int status)
{
	char masked[OTP_PHONE_MASKED_LEN];
	enum metrics_delivery c;

	if (status < STORE_SMS_STATUS_FINAL)
		return;
	c = auth_delivery_class(status);
	metrics_sms_delivered(c);
	if (c == METRICS_DELIVERY_FAILED) {
		otp_phone_mask(p->phone, masked);
		log_fields(LOG_LEVEL_WARN, "sms.delivery_failed",
		           json_pack("{s:s, s:i}", "phone", masked, "delivery_status", status),
		           "the SMS to %s was not delivered (provider status %d)", masked, status);
	}
}

/* One batch: the pending codes from `since_ms` on.  Returns how many were
 * listed (0: nothing left); *ret_since moves past them. */
static size_t batch(struct auth_delivery *dl, int64_t now_ms, int64_t *ret_since)
{
	struct store_delivery_pending *pend = dl->pend;
	struct store_delivery_status *set = dl->set;
	int64_t *ids = dl->ids;
	size_t n = 0, n_ids = 0, n_set = 0;

	if (store_otp_delivery_pending(dl->store, *ret_since, DELIVERY_BATCH, pend, &n) != OTPD_OK ||
	    n == 0)
		return 0;
	/* Strictly after the last one seen: codes of the same millisecond
	 * beyond this batch wait for the next pass. */
	*ret_since = pend[n - 1].created_ms;
	for (size_t i = 0; i < n; i++)
		if (now_ms - pend[i].created_ms <= DELIVERY_WINDOW_MS)
			ids[n_ids++] = pend[i].message_id;
	if (n_ids && !query(dl, ids, n_ids))
		n_ids = 0; /* no answer: these are asked again next pass */
	for (size_t i = 0; i < n; i++) {
		int status = -1;

		if (now_ms - pend[i].created_ms > DELIVERY_WINDOW_MS) {
			status = DELIVERY_UNKNOWN; /* past the provider's window */
		} else if (n_ids) {
			for (size_t k = 0; k < dl->n_got; k++)
				if (dl->got[k].message_id == pend[i].message_id) {
					status = dl->got[k].status;
					break;
				}
		}
		if (status < 0)
			continue;
		set[n_set].otp_id = pend[i].otp_id;
		set[n_set].status = status;
		set[n_set].now_ms = now_ms;
		n_set++;
	}
	if (n_set && store_otp_delivery_set(dl->store, n_set, set) == OTPD_OK) {
		size_t k = 0;
		for (size_t i = 0; i < n && k < n_set; i++)
			if (set[k].otp_id == pend[i].otp_id)
				report(&pend[i], set[k++].status);
	}
	return n;
}

static void pass(struct auth_delivery *dl, int64_t now_ms)
{
	int64_t since = 0;

	for (int b = 0; b < DELIVERY_BATCHES; b++) {
		pthread_mutex_lock(&dl->lock);
		bool stop = dl->stop;
		pthread_mutex_unlock(&dl->lock);
		if (stop || batch(dl, now_ms, &since) < DELIVERY_BATCH)
			break;
	}
}

static void *delivery_main(void *arg)
{
	struct auth_delivery *dl = arg;

	pthread_setname_np(pthread_self(), "otpd-delivery");
	for (;;) {
		struct timespec until;

		pthread_mutex_lock(&dl->lock);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += dl->interval_s;
		while (!dl->stop &&
		       pthread_cond_timedwait(&dl->cond, &dl->lock, &until) != ETIMEDOUT)
			;
		bool stop = dl->stop;
		pthread_mutex_unlock(&dl->lock);
		if (stop)
			break;
		pass(dl, wall_ms());
	}
	return NULL;
}

enum otpd_status auth_delivery_start(struct store *store, struct sms *sms, int interval_s,
                                     struct auth_delivery **ret)
{
	struct auth_delivery *dl = calloc(1, sizeof(*dl));

	if (!dl)
		return OTPD_NOMEM;
	dl->store = store;
	dl->sms = sms;
	dl->interval_s = interval_s > 0 ? interval_s : 1;
	pthread_mutex_init(&dl->lock, NULL);
	pthread_cond_init(&dl->cond, NULL);
	if (pthread_create(&dl->thread, NULL, delivery_main, dl) != 0) {
		log_error("auth.internal", "cannot start the delivery poller thread");
		pthread_mutex_destroy(&dl->lock);
		pthread_cond_destroy(&dl->cond);
		free(dl);
		return OTPD_INTERNAL;
	}
	*ret = dl;
	return OTPD_OK;
}

void auth_delivery_stop(struct auth_delivery *dl)
{
	if (!dl || dl->joined)
		return;
	pthread_mutex_lock(&dl->lock);
	dl->stop = true;
	pthread_cond_broadcast(&dl->cond);
	pthread_mutex_unlock(&dl->lock);
	pthread_join(dl->thread, NULL);
	dl->joined = true;
}

void auth_delivery_free(struct auth_delivery *dl)
{
	if (!dl)
		return;
	auth_delivery_stop(dl);
	pthread_mutex_destroy(&dl->lock);
	pthread_cond_destroy(&dl->cond);
	free(dl);
}
