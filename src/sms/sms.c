/* The SMS worker: one thread owning a libcurl multi handle.
 *
 * sms_send() copies the job onto a mutex-protected FIFO and wakes the worker
 * through an eventfd.  The worker starts queued jobs (console: logs the
 * code and completes at once; kavenegar: adds a configured easy handle to the
 * multi), drives the transfers with curl_multi_socket_action() on its own
 * epoll set (curl tells which sockets to watch and when its next timeout is
 * due: each wake-up costs in proportion to the sockets that are ready, not
 * to the transfers in flight, as curl_multi_perform()/poll() did), and calls
 * done() for each finished job from its own thread.  Codes are wiped when a
 * job is freed, after done().
 *
 * Lock order: only s->lock, never held while calling done() or curl. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "sms.h"

#include <curl/curl.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "../log.h"
#include "../metrics.h"
#include "../otp/phone.h"
#include "kavenegar.h"

#define CODE_MAX 32               /* longest code accepted (OTP codes are 6) */
#define EASY_POOL 8               /* idle easy handles kept for reuse */
#define POLL_MS 1000              /* longest sleep in epoll_wait */
#define EVENTS_MAX 64             /* epoll events taken per wake-up */
#define DEFAULT_MAX_QUEUE 1024    /* when cfg->max_queue is 0 */
#define MAX_WAIT_MS (24L * 3600 * 1000)

/* A send (a caller's code), or one of the worker's own calls: the credit
 * (account/info) and a delivery query (sms/status) for a caller. */
enum job_kind { JOB_SEND = 0, JOB_CREDIT, JOB_STATUS };

struct job {
	struct job *next;
	struct job *prev;                 /* in the active list (O(1) removal) */
	enum job_kind kind;
	int64_t *ids;                     /* JOB_STATUS: the message ids asked about */
	size_t n_ids;
	sms_status_fn status_done;        /* JOB_STATUS */
	char phone[OTP_PHONE_LEN + 1];
	char code[CODE_MAX + 1];          /* secret: wiped in job_free */
	sms_done_fn done;
	void *arg;
	char request_id[LOG_REQUEST_ID_MAX]; /* the caller's, for the worker's log lines */
	int64_t start_ns;                 /* CLOCK_MONOTONIC when started (metrics) */
	CURL *easy;                       /* kavenegar, while in flight */
	struct sms_kavenegar_call *call;
};

struct sms {
	enum sms_backend backend;
	struct sms_kavenegar *kv;         /* SMS_KAVENEGAR only */
	CURLM *multi;
	int epfd;                         /* the worker's: curl's sockets and wakefd */
	int wakefd;                       /* eventfd: a job is queued, or stop */
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
	bool timer_set;                   /* curl wants socket_action(TIMEOUT) at timer_at */
	struct timespec timer_at;         /* CLOCK_MONOTONIC */
	CURL *pool[EASY_POOL];
	int pool_len;

	/* The credit check (kavenegar): when it is due next, and what the last
	 * ones said (a warning per crossing of the alert, one per failure
	 * streak). */
	long credit_interval_ms;          /* 0: never */
	double credit_alert;              /* 0: no alert */
	int64_t credit_due_ms;            /* CLOCK_MONOTONIC ms */
	bool credit_active;
	bool credit_failing;
	bool credit_low;
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

/* Milliseconds until t, rounded up, at least 0. */
static long ms_until_ceil(const struct timespec *t)
{
	struct timespec now;
	long long ns;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ns = (long long)(t->tv_sec - now.tv_sec) * 1000000000LL + (t->tv_nsec - now.tv_nsec);
	return ns <= 0 ? 0 : (long)((ns + 999999) / 1000000);
}

static void worker_wake(struct sms *s)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is full, so the worker is woken anyway. */
	while (write(s->wakefd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
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
	free(j->ids);
	sms_kavenegar_call_free(j->call);
	OPENSSL_cleanse(j->code, sizeof(j->code));
	free(j);
}

/* ---- the worker ------------------------------------------------------- */

/* Hand the result to the caller, then forget the job. */
static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void start(struct sms *s, struct job *j);
static void side_finish(struct sms *s, struct job *j, enum otpd_status st,
                        const char *body, size_t len);

static enum metrics_sms metric_of(enum otpd_status st)
{
	return st == OTPD_OK ? METRICS_SMS_ACCEPTED
	       : st == OTPD_SMS_REJECTED ? METRICS_SMS_REJECTED : METRICS_SMS_UNAVAILABLE;
}

static void job_finish(struct sms *s, struct job *j, const struct sms_result *r)
{
	metrics_sms_request(metric_of(r->status), r->return_status,
	                    j->start_ns ? mono_ns() - j->start_ns : -1);
	metrics_sms_in_flight_add(-1);
	log_set_request_id(j->request_id);
	j->done(j->arg, r);
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
	if (j->prev)
		j->prev->next = j->next;
	else
		s->active = j->next;
	if (j->next)
		j->next->prev = j->prev;
	j->next = j->prev = NULL;
}

static int64_t mono_ms(void) { return mono_ns() / 1000000; }

/* The credit answer: the gauge, and a line when the alert is crossed. */
static void credit_seen(struct sms *s, double credit)
{
	bool low = s->credit_alert > 0 && credit < s->credit_alert;

	metrics_sms_credit_set(credit, low);
	if (low && !s->credit_low)
		log_fields(LOG_LEVEL_WARN, "sms.credit_low",
		           json_pack("{s:f, s:f}", "credit", credit, "alert", s->credit_alert),
		           "SMS provider credit %.0f is below KAVENEGAR_CREDIT_ALERT %.0f: top it up",
		           credit, s->credit_alert);
	else if (!low && s->credit_low)
		log_fields(LOG_LEVEL_INFO, "sms.credit_ok",
		           json_pack("{s:f, s:f}", "credit", credit, "alert", s->credit_alert),
		           "SMS provider credit %.0f is above the alert again", credit);
	s->credit_low = low;
}

/* A worker's own call ended (st, and the provider's answer when OTPD_OK). */
static void side_finish(struct sms *s, struct job *j, enum otpd_status st,
                        const char *body, size_t len)
{
	if (j->kind == JOB_CREDIT) {
		double credit = 0;
		long retry = s->credit_interval_ms < 60000 ? s->credit_interval_ms : 60000;

		if (st == OTPD_OK && !sms_kavenegar_parse_credit(body, len, &credit))
			st = OTPD_SMS_UNAVAILABLE;
		if (st == OTPD_OK) {
			if (s->credit_failing)
				log_info("sms.credit_check", "SMS provider credit check works again");
			s->credit_failing = false;
			credit_seen(s, credit);
			s->credit_due_ms = mono_ms() + s->credit_interval_ms;
		} else {
			s->credit_due_ms = mono_ms() + retry;
		}
		s->credit_active = false;
	} else if (j->kind == JOB_STATUS) {
		struct sms_kavenegar_status parsed[SMS_KAVENEGAR_STATUS_MAX];
		struct sms_delivery out[SMS_KAVENEGAR_STATUS_MAX];
		size_t n = 0;

		if (st == OTPD_OK) {
			n = sms_kavenegar_parse_statuses(body, len, parsed, SMS_KAVENEGAR_STATUS_MAX);
			for (size_t i = 0; i < n; i++) {
				out[i].message_id = parsed[i].message_id;
				out[i].status = parsed[i].status;
			}
		}
		j->status_done(j->arg, st, out, n);
	}
	easy_release(s, j->easy);
	j->easy = NULL;
	job_free(j);
}

/* A finished account/info or sms/status transfer: a failure is logged once
 * per streak of the credit check, once per query for delivery. */
static void side_reap(struct sms *s, struct job *j, CURL *h, int rc)
{
	char why[256];
	size_t len = 0;
	const char *body;
	enum otpd_status st = sms_kavenegar_side_finish(j->call, h, rc, why, sizeof(why));
	double credit;

	body = sms_kavenegar_call_response(j->call, &len);
	if (st == OTPD_OK && j->kind == JOB_CREDIT && !sms_kavenegar_parse_credit(body, len, &credit)) {
		snprintf(why, sizeof(why), "the answer has no entries.remaincredit");
		st = OTPD_SMS_UNAVAILABLE;
	}
	if (st != OTPD_OK && j->kind == JOB_CREDIT && !s->credit_failing) {
		log_warn("sms.credit_check", "cannot read the SMS provider's credit: %s; "
		         "retrying (sending goes on)", why);
		s->credit_failing = true;
	} else if (st != OTPD_OK && j->kind == JOB_STATUS) {
		log_warn("sms.delivery_check", "cannot read delivery states: %s", why);
	}
	side_finish(s, j, st, body, len);
}

/* Start the credit check when it is due (kavenegar, not stopping). */
static void credit_maybe_start(struct sms *s)
{
	struct job *j;

	if (s->backend != SMS_KAVENEGAR || s->credit_interval_ms <= 0 || s->credit_active ||
	    mono_ms() < s->credit_due_ms)
		return;
	j = calloc(1, sizeof(*j));
	if (!j) {
		s->credit_due_ms = mono_ms() + 1000;
		return;
	}
	j->kind = JOB_CREDIT;
	s->credit_active = true;
	start(s, j);
}

static void start_console(struct sms *s, struct job *j)
{
	char masked[OTP_PHONE_MASKED_LEN];

	otp_phone_mask(j->phone, masked);
	/* The only place a code is ever logged (development backend). */
	log_sms_code(masked, j->code);
	job_finish(s, j, &(struct sms_result){.status = OTPD_OK, .return_status = -1});
}

static void start_kavenegar(struct sms *s, struct job *j)
{
	char masked[OTP_PHONE_MASKED_LEN];
	enum otpd_status st = OTPD_NOMEM;
	CURLMcode mc;

	j->easy = easy_take(s);
	if (!j->easy)
		goto fail;
	if (j->kind == JOB_CREDIT)
		st = sms_kavenegar_info_new(s->kv, j->easy, &j->call);
	else if (j->kind == JOB_STATUS)
		st = sms_kavenegar_status_new(s->kv, j->easy, j->ids, j->n_ids, &j->call);
	else
		st = sms_kavenegar_call_new(s->kv, j->easy, j->phone, j->code, &j->call);
	if (st != OTPD_OK)
		goto fail;
	curl_easy_setopt(j->easy, CURLOPT_PRIVATE, (void *)j);
	mc = curl_multi_add_handle(s->multi, j->easy);
	if (mc != CURLM_OK) {
		st = OTPD_INTERNAL;
		goto fail;
	}
	j->prev = NULL;
	j->next = s->active;
	if (s->active)
		s->active->prev = j;
	s->active = j;
	return;
fail:
	if (j->kind != JOB_SEND) {
		log_error("sms.internal", "cannot start a %s request: %s",
		          j->kind == JOB_CREDIT ? "credit" : "delivery status",
		          st == OTPD_NOMEM ? "out of memory" : "internal error");
		side_finish(s, j, st, NULL, 0);
		return;
	}
	otp_phone_mask(j->phone, masked);
	log_error("sms.internal", "cannot start the SMS request for %s: %s", masked,
	          st == OTPD_NOMEM ? "out of memory" : "internal error");
	job_finish(s, j, &(struct sms_result){.status = OTPD_SMS_UNAVAILABLE, .return_status = -1});
}

static void start(struct sms *s, struct job *j)
{
	j->start_ns = mono_ns();
	log_set_request_id(j->request_id);
	if (s->backend == SMS_KAVENEGAR)
		start_kavenegar(s, j);
	else
		start_console(s, j);
	log_set_request_id(NULL);
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
		curl_multi_remove_handle(s->multi, h);
		active_remove(s, j);
		if (j->kind != JOB_SEND) {
			side_reap(s, j, h, (int)rc);
			continue;
		}
		r = sms_kavenegar_call_finish(j->call, h, (int)rc);
		job_finish(s, j, &r);
	}
}

/* Shutdown deadline passed: every job still in flight fails. */
static void abandon_active(struct sms *s)
{
	char masked[OTP_PHONE_MASKED_LEN];

	while (s->active) {
		struct job *j = s->active;
		active_remove(s, j);
		j->next = NULL;
		curl_multi_remove_handle(s->multi, j->easy);
		if (j->kind != JOB_SEND) {
			side_finish(s, j, OTPD_SMS_UNAVAILABLE, NULL, 0);
			continue;
		}
		otp_phone_mask(j->phone, masked);
		log_warn("sms.unavailable", "SMS worker stopping: SMS for %s abandoned", masked);
		job_finish(s, j, &(struct sms_result){.status = OTPD_SMS_UNAVAILABLE, .return_status = -1});
	}
}

/* Stopping: the worker's own calls are not waited for. */
static void abandon_side(struct sms *s)
{
	struct job *j = s->active, *next;

	for (; j; j = next) {
		next = j->next;
		if (j->kind == JOB_SEND)
			continue;
		active_remove(s, j);
		curl_multi_remove_handle(s->multi, j->easy);
		side_finish(s, j, OTPD_SMS_UNAVAILABLE, NULL, 0);
	}
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl asks. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct sms *s = userp;
	struct epoll_event ev;

	(void)easy;
	(void)socketp;
	if (what == CURL_POLL_REMOVE) {
		/* ENOENT/EBADF: curl closed it already, which removed it. */
		epoll_ctl(s->epfd, EPOLL_CTL_DEL, fd, NULL);
		return 0;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) | (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
	ev.data.fd = fd;
	if (epoll_ctl(s->epfd, EPOLL_CTL_MOD, fd, &ev) != 0 &&
	    (errno != ENOENT || epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0))
		/* Not -1: that would mark the whole multi handle dead.  The
		 * transfer ends by its own timeout (KAVENEGAR_TIMEOUT_MS), driven
		 * by curl's timer and the worker's periodic timeout call. */
		log_error("sms.internal", "cannot watch a provider socket: %s", strerror(errno));
	return 0;
}

/* CURLMOPT_TIMERFUNCTION: when curl wants socket_action(CURL_SOCKET_TIMEOUT)
 * (-1: never; 0: as soon as possible). */
static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct sms *s = userp;

	(void)multi;
	if (timeout_ms < 0) {
		s->timer_set = false;
		return 0;
	}
	clock_gettime(CLOCK_MONOTONIC, &s->timer_at);
	s->timer_at.tv_sec += timeout_ms / 1000;
	s->timer_at.tv_nsec += (timeout_ms % 1000) * 1000000;
	if (s->timer_at.tv_nsec >= 1000000000) {
		s->timer_at.tv_sec++;
		s->timer_at.tv_nsec -= 1000000000;
	}
	s->timer_set = true;
	return 0;
}

/* Run curl's timeout when it is due. */
static void run_timer(struct sms *s)
{
	int running;

	if (s->timer_set && ms_until_ceil(&s->timer_at) == 0) {
		s->timer_set = false; /* curl sets it again if it needs to */
		curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
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
		int running = 0, n;
		long timeout = POLL_MS;
		struct epoll_event evs[EVENTS_MAX];

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

		run_timer(s);
		reap(s);
		if (!stopping)
			credit_maybe_start(s);
		else
			abandon_side(s);

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
		if (s->timer_set) {
			long t = ms_until_ceil(&s->timer_at);
			if (t < timeout)
				timeout = t;
		}
		if (!stopping && s->backend == SMS_KAVENEGAR && s->credit_interval_ms > 0 &&
		    !s->credit_active) {
			int64_t t = s->credit_due_ms - mono_ms();
			if (t < timeout)
				timeout = t < 0 ? 0 : (long)t;
		}
		n = epoll_wait(s->epfd, evs, EVENTS_MAX, (int)timeout);
		if (n == 0 && s->active) {
			/* Nothing happened for a while: let curl check its
			 * transfers' timeouts even if a timer was lost. */
			s->timer_set = false;
			curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
		}
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd, mask = 0;
			uint32_t e = evs[i].events;

			if (fd == s->wakefd) {
				uint64_t v;
				while (read(s->wakefd, &v, sizeof(v)) < 0 && errno == EINTR)
					;
				continue;
			}
			if (e & EPOLLIN)
				mask |= CURL_CSELECT_IN;
			if (e & EPOLLOUT)
				mask |= CURL_CSELECT_OUT;
			if (e & (EPOLLERR | EPOLLHUP))
				mask |= CURL_CSELECT_ERR;
			curl_multi_socket_action(s->multi, fd, mask, &running);
		}
		reap(s);
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
	s->epfd = -1;
	s->wakefd = -1;
	/* 0 means "the default"; the config module bounds real values. */
	s->max_queue = cfg->max_queue > 0 ? cfg->max_queue : DEFAULT_MAX_QUEUE;
	s->credit_interval_ms = cfg->credit_interval_s > 0 ? cfg->credit_interval_s * 1000 : 0;
	s->credit_alert = cfg->credit_alert;
	s->credit_due_ms = 0; /* at start */
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
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	s->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->epfd < 0 || s->wakefd < 0) {
		log_error("sms.internal", "cannot create the SMS worker's epoll set: %s",
		          strerror(errno));
		st = OTPD_INTERNAL;
		goto out;
	}
	{
		struct epoll_event ev;
		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN;
		ev.data.fd = s->wakefd;
		if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wakefd, &ev) != 0) {
			st = OTPD_INTERNAL;
			goto out;
		}
	}
	curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
	curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
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
		metrics_sms_in_flight_add(1);
	}
	pthread_mutex_unlock(&s->lock);

	if (st != OTPD_OK) {
		metrics_sms_request(METRICS_SMS_UNAVAILABLE, -1, -1); /* no call: no duration */
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
		worker_wake(s);
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
		worker_wake(s);
		pthread_join(s->thread, NULL);
	}
	/* The worker left nothing queued or in flight. */
	while (s->pool_len > 0)
		curl_easy_cleanup(s->pool[--s->pool_len]);
	if (s->multi)
		curl_multi_cleanup(s->multi);
	if (s->epfd >= 0)
		close(s->epfd);
	if (s->wakefd >= 0)
		close(s->wakefd);
	sms_kavenegar_free(s->kv);
	if (s->curl_inited)
		curl_global_cleanup();
	if (s->lock_inited)
		pthread_mutex_destroy(&s->lock);
	free(s);
}

enum otpd_status sms_status_query(struct sms *s, const int64_t *ids, size_t n,
                                  sms_status_fn done, void *arg)
{
	struct job *j;
	enum otpd_status st = OTPD_OK;
	bool wake;

	if (s->backend != SMS_KAVENEGAR || n == 0 || n > SMS_STATUS_MAX)
		return OTPD_INTERNAL;
	j = calloc(1, sizeof(*j));
	if (!j)
		return OTPD_NOMEM;
	j->ids = malloc(n * sizeof(*ids));
	if (!j->ids) {
		free(j);
		return OTPD_NOMEM;
	}
	memcpy(j->ids, ids, n * sizeof(*ids));
	j->n_ids = n;
	j->kind = JOB_STATUS;
	j->status_done = done;
	j->arg = arg;
	pthread_mutex_lock(&s->lock);
	if (s->stopping) {
		st = OTPD_SMS_UNAVAILABLE;
	} else {
		wake = s->queue == NULL;
		*s->queue_tail = j;
		s->queue_tail = &j->next;
	}
	pthread_mutex_unlock(&s->lock);
	if (st != OTPD_OK) {
		job_free(j);
		return st;
	}
	if (wake)
		worker_wake(s);
	return OTPD_OK;
}

enum otpd_status sms_account_check(const struct sms_config *cfg, double *ret_credit,
                                   char *why, size_t whylen)
{
	struct sms_kavenegar *kv = NULL;
	struct sms_kavenegar_call *call = NULL;
	enum otpd_status st = OTPD_INTERNAL;
	const char *body;
	CURL *h = NULL;
	size_t len = 0;
	double credit = 0;

	snprintf(why, whylen, "the Kavenegar configuration is not valid");
	if (cfg->backend != SMS_KAVENEGAR)
		return OTPD_INTERNAL;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(why, whylen, "cannot initialise libcurl");
		return OTPD_INTERNAL;
	}
	if (sms_kavenegar_new(cfg, &kv) != OTPD_OK)
		goto out;
	st = OTPD_NOMEM;
	snprintf(why, whylen, "out of memory");
	h = curl_easy_init();
	if (!h || (st = sms_kavenegar_info_new(kv, h, &call)) != OTPD_OK)
		goto out;
	st = sms_kavenegar_side_finish(call, h, (int)curl_easy_perform(h), why, whylen);
	if (st != OTPD_OK)
		goto out;
	body = sms_kavenegar_call_response(call, &len);
	if (!sms_kavenegar_parse_credit(body, len, &credit)) {
		snprintf(why, whylen, "account/info answered without entries.remaincredit");
		st = OTPD_SMS_UNAVAILABLE;
		goto out;
	}
	*ret_credit = credit;
	why[0] = '\0';
out:
	sms_kavenegar_call_free(call);
	if (h)
		curl_easy_cleanup(h);
	sms_kavenegar_free(kv);
	curl_global_cleanup();
	return st;
}
