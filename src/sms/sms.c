/* The SMS worker: one thread owning a libcurl multi handle.
 *
 * sms_send() copies the job onto a mutex-protected FIFO and wakes the worker
 * with curl_multi_wakeup().  The worker starts queued jobs (console: logs the
 * code and completes at once; kavenegar: adds a configured easy handle to the
 * multi), drives the transfers with curl_multi_perform()/curl_multi_poll(),
 * and calls done() for each finished job from its own thread.  Codes are
 * wiped when a job is freed, after done().
 *
 * Lock order: only s->lock, never held while calling done() or curl. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "sms.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../log.h"
#include "../otp/phone.h"
#include "kavenegar.h"

#define CODE_MAX 32               /* longest code accepted (OTP codes are 6) */
#define EASY_POOL 8               /* idle easy handles kept for reuse */
#define POLL_MS 1000              /* longest sleep in curl_multi_poll */
#define DEFAULT_MAX_QUEUE 1024    /* when cfg->max_queue is 0 */
#define MAX_WAIT_MS (24L * 3600 * 1000)

struct job {
	struct job *next;
	char phone[OTP_PHONE_LEN + 1];
	char code[CODE_MAX + 1];          /* secret: wiped in job_free */
	sms_done_fn done;
	void *arg;
	char request_id[LOG_REQUEST_ID_MAX]; /* the caller's, for the worker's log lines */
	CURL *easy;                       /* kavenegar, while in flight */
	struct sms_kavenegar_call *call;
};

struct sms {
	enum sms_backend backend;
	struct sms_kavenegar *kv;         /* SMS_KAVENEGAR only */
	CURLM *multi;
	pthread_t thread;
	bool thread_started;
	bool curl_inited;
	bool lock_inited;

	pthread_mutex_t lock;             /* guards the members up to deadline */
	struct job *queue;                /* FIFO of jobs not yet started */
	struct job **queue_tail;
	int count;                        /* queued + in flight */
	int max_queue;
	bool stopping;
	struct timespec deadline;         /* CLOCK_MONOTONIC, once stopping */

	/* The worker thread's own state. */
	struct job *active;               /* in flight */
	CURL *pool[EASY_POOL];
	int pool_len;
};

/* ---- small helpers ---------------------------------------------------- */

static bool phone_is_valid(const char *phone)
{
	if (strlen(phone) != OTP_PHONE_LEN || strncmp(phone, "+989", 4) != 0)
		return false;
	for (size_t i = 1; i < OTP_PHONE_LEN; i++)
		if (phone[i] < '0' || phone[i] > '9')
			return false;
	return true;
}

static long ms_until(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long)(t->tv_sec - now.tv_sec) * 1000 +
	       (t->tv_nsec - now.tv_nsec) / 1000000;
}

static CURL *easy_take(struct sms *s)
{
	if (s->pool_len > 0)
		return s->pool[--s->pool_len];
	return curl_easy_init();
}

/* Back to the free list (reset: no option may point at freed memory).
 * Connections stay in the multi handle's cache either way. */
static void easy_release(struct sms *s, CURL *h)
{
	if (!h)
		return;
	curl_easy_reset(h);
	if (s->pool_len < EASY_POOL)
		s->pool[s->pool_len++] = h;
	else
		curl_easy_cleanup(h);
}

static void job_free(struct job *j)
{
	if (!j)
		return;
	sms_kavenegar_call_free(j->call);
	OPENSSL_cleanse(j->code, sizeof(j->code));
	free(j);
}

/* ---- the worker ------------------------------------------------------- */

/* Hand the result to the caller, then forget the job. */
static void job_finish(struct sms *s, struct job *j, enum otpd_status status,
                       int provider_status)
{
	struct sms_result r = {status, provider_status};

	log_set_request_id(j->request_id);
	j->done(j->arg, &r);
	log_set_request_id(NULL);
	easy_release(s, j->easy);
	j->easy = NULL;
	job_free(j);
	pthread_mutex_lock(&s->lock);
	s->count--;
	pthread_mutex_unlock(&s->lock);
}

static void active_remove(struct sms *s, struct job *j)
{
	struct job **pp;

	for (pp = &s->active; *pp; pp = &(*pp)->next) {
		if (*pp == j) {
			*pp = j->next;
			j->next = NULL;
			return;
		}
	}
}

static void start_console(struct sms *s, struct job *j)
{
	char masked[OTP_PHONE_MASKED_LEN];

	otp_phone_mask(j->phone, masked);
	/* The only place a code is ever logged (development backend). */
	log_fields(LOG_LEVEL_WARN, "sms.console",
	           json_pack("{s:s, s:s}", "phone", masked, "code", j->code),
	           "development SMS backend: code for %s", masked);
	job_finish(s, j, OTPD_OK, 0);
}

static void start_kavenegar(struct sms *s, struct job *j)
{
	char masked[OTP_PHONE_MASKED_LEN];
	enum otpd_status st = OTPD_NOMEM;
	CURLMcode mc;

	j->easy = easy_take(s);
	if (!j->easy)
		goto fail;
	st = sms_kavenegar_call_new(s->kv, j->easy, j->phone, j->code, &j->call);
	if (st != OTPD_OK)
		goto fail;
	curl_easy_setopt(j->easy, CURLOPT_PRIVATE, (void *)j);
	mc = curl_multi_add_handle(s->multi, j->easy);
	if (mc != CURLM_OK) {
		st = OTPD_INTERNAL;
		goto fail;
	}
	j->next = s->active;
	s->active = j;
	return;
fail:
	otp_phone_mask(j->phone, masked);
	log_error("sms.internal", "cannot start the SMS request for %s: %s", masked,
	          st == OTPD_NOMEM ? "out of memory" : "internal error");
	job_finish(s, j, OTPD_SMS_UNAVAILABLE, 0);
}

static void start(struct sms *s, struct job *j)
{
	log_set_request_id(j->request_id);
	if (s->backend == SMS_KAVENEGAR)
		start_kavenegar(s, j);
	else
		start_console(s, j);
}

/* Finish every transfer curl reports done. */
static void reap(struct sms *s)
{
	for (;;) {
		int left;
		CURLMsg *m = curl_multi_info_read(s->multi, &left);
		CURL *h;
		CURLcode rc;
		char *priv = NULL;
		struct job *j;
		struct sms_result r;

		if (!m)
			break;
		if (m->msg != CURLMSG_DONE)
			continue;
		h = m->easy_handle;   /* m is invalid once the handle is removed */
		rc = m->data.result;
		curl_easy_getinfo(h, CURLINFO_PRIVATE, &priv);
		j = (struct job *)(void *)priv;
		log_set_request_id(j->request_id);
		r = sms_kavenegar_call_finish(j->call, h, (int)rc);
		curl_multi_remove_handle(s->multi, h);
		active_remove(s, j);
		job_finish(s, j, r.status, r.provider_status);
	}
}

/* Shutdown deadline passed: every job still in flight fails. */
static void abandon_active(struct sms *s)
{
	char masked[OTP_PHONE_MASKED_LEN];

	while (s->active) {
		struct job *j = s->active;
		s->active = j->next;
		j->next = NULL;
		curl_multi_remove_handle(s->multi, j->easy);
		otp_phone_mask(j->phone, masked);
		log_warn("sms.unavailable", "SMS worker stopping: SMS for %s abandoned", masked);
		job_finish(s, j, OTPD_SMS_UNAVAILABLE, 0);
	}
}

static void *worker(void *arg)
{
	struct sms *s = arg;

	pthread_setname_np(pthread_self(), "otpd-sms"); /* for top -H and perf */
	for (;;) {
		struct job *batch;
		struct timespec deadline;
		bool stopping;
		int running = 0;
		long timeout = POLL_MS;

		/* Once `stopping` is seen here, sms_send refuses new jobs, so
		 * this batch is the last one. */
		pthread_mutex_lock(&s->lock);
		batch = s->queue;
		s->queue = NULL;
		s->queue_tail = &s->queue;
		stopping = s->stopping;
		deadline = s->deadline;
		pthread_mutex_unlock(&s->lock);

		while (batch) {
			struct job *j = batch;
			batch = j->next;
			j->next = NULL;
			start(s, j);
		}

		curl_multi_perform(s->multi, &running);
		reap(s);

		if (stopping) {
			long left;

			if (!s->active)
				break;
			left = ms_until(&deadline);
			if (left <= 0) {
				abandon_active(s);
				break;
			}
			if (left < timeout)
				timeout = left;
		}
		curl_multi_poll(s->multi, NULL, 0, (int)timeout, NULL);
	}
	return NULL;
}

/* ---- the interface ---------------------------------------------------- */

enum otpd_status sms_new(const struct sms_config *cfg, struct sms **ret)
{
	struct sms *s;
	enum otpd_status st = OTPD_NOMEM;

	s = calloc(1, sizeof(*s));
	if (!s)
		goto out;
	s->backend = cfg->backend;
	s->queue_tail = &s->queue;
	/* 0 means "the default"; the config module bounds real values. */
	s->max_queue = cfg->max_queue > 0 ? cfg->max_queue : DEFAULT_MAX_QUEUE;
	if (pthread_mutex_init(&s->lock, NULL) != 0) {
		st = OTPD_INTERNAL;
		goto out;
	}
	s->lock_inited = true;

	if (cfg->backend != SMS_CONSOLE && cfg->backend != SMS_KAVENEGAR) {
		log_error("sms.config", "SMS_BACKEND: unknown backend %d", (int)cfg->backend);
		st = OTPD_INTERNAL;
		goto out;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_error("sms.internal", "cannot initialise libcurl");
		st = OTPD_INTERNAL;
		goto out;
	}
	s->curl_inited = true;
	if (cfg->backend == SMS_KAVENEGAR) {
		st = sms_kavenegar_new(cfg, &s->kv);
		if (st != OTPD_OK)
			goto out;
	}
	st = OTPD_NOMEM;
	s->multi = curl_multi_init();
	if (!s->multi)
		goto out;
	if (pthread_create(&s->thread, NULL, worker, s) != 0) {
		log_error("sms.internal", "cannot start the SMS worker thread");
		st = OTPD_INTERNAL;
		goto out;
	}
	s->thread_started = true;

	if (cfg->backend == SMS_CONSOLE)
		log_warn("sms.backend", "SMS backend 'console': codes are written to the log, "
		         "no SMS is sent (development only)");
	*ret = s;
	s = NULL;
	st = OTPD_OK;
out:
	sms_free(s, 0);
	return st;
}

enum otpd_status sms_send(struct sms *s, const char *phone, const char *code,
                          sms_done_fn done, void *arg)
{
	char masked[OTP_PHONE_MASKED_LEN];
	struct job *j;
	enum otpd_status st = OTPD_OK;
	bool full = false, wake = false;

	if (!s || !phone || !code || !done || !phone_is_valid(phone) ||
	    !sms_alnum_is_valid(code, CODE_MAX))
		return OTPD_INTERNAL;
	j = calloc(1, sizeof(*j));
	if (!j)
		return OTPD_NOMEM;
	memcpy(j->phone, phone, OTP_PHONE_LEN + 1);
	memcpy(j->code, code, strlen(code) + 1);
	j->done = done;
	j->arg = arg;
	snprintf(j->request_id, sizeof(j->request_id), "%s", log_get_request_id());

	pthread_mutex_lock(&s->lock);
	if (s->stopping) {
		st = OTPD_SMS_UNAVAILABLE;
	} else if (s->count >= s->max_queue) {
		st = OTPD_SMS_UNAVAILABLE;
		full = true;
	} else {
		/* The worker takes the whole queue when it wakes: only the job
		 * that finds it empty needs to wake it (a batch of sends from
		 * the store's writer costs one wake-up, not one each). */
		wake = s->queue == NULL;
		*s->queue_tail = j;
		s->queue_tail = &j->next;
		s->count++;
	}
	pthread_mutex_unlock(&s->lock);

	if (st != OTPD_OK) {
		otp_phone_mask(phone, masked);
		if (full)
			log_warn("sms.unavailable", "SMS queue full (%d jobs): SMS for %s refused",
			         s->max_queue, masked);
		else
			log_warn("sms.unavailable", "SMS worker stopping: SMS for %s refused", masked);
		job_free(j);
		return st;
	}
	if (wake)
		curl_multi_wakeup(s->multi);
	return OTPD_OK;
}

void sms_free(struct sms *s, long wait_ms)
{
	if (!s)
		return;
	if (s->thread_started) {
		struct timespec t;

		if (wait_ms < 0)
			wait_ms = 0;
		if (wait_ms > MAX_WAIT_MS)
			wait_ms = MAX_WAIT_MS;
		clock_gettime(CLOCK_MONOTONIC, &t);
		t.tv_sec += wait_ms / 1000;
		t.tv_nsec += (wait_ms % 1000) * 1000000;
		if (t.tv_nsec >= 1000000000) {
			t.tv_sec++;
			t.tv_nsec -= 1000000000;
		}
		pthread_mutex_lock(&s->lock);
		s->stopping = true;
		s->deadline = t;
		pthread_mutex_unlock(&s->lock);
		curl_multi_wakeup(s->multi);
		pthread_join(s->thread, NULL);
	}
	/* The worker left nothing queued or in flight. */
	while (s->pool_len > 0)
		curl_easy_cleanup(s->pool[--s->pool_len]);
	if (s->multi)
		curl_multi_cleanup(s->multi);
	sms_kavenegar_free(s->kv);
	if (s->curl_inited)
		curl_global_cleanup();
	if (s->lock_inited)
		pthread_mutex_destroy(&s->lock);
	free(s);
}
