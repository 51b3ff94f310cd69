/* The store's engine, shared by every dialect (backend.h): group commit.
 *
 * A call packs its operation into a job (store.c) and queues it: a
 * synchronous call's job lives on the caller's stack and the caller waits;
 * an asynchronous one (store_*_start) is a heap copy, and the worker calls
 * its done() (if any) instead, so the request path never holds a thread
 * while it waits.  There are two FIFO queues:
 *
 * - writes: each writer thread owns one connection.  It takes every job
 *   queued at that moment (at most batch_max), runs them in ONE
 *   transaction, each job in a savepoint of its own, and answers them only
 *   after the COMMIT has returned.  There is no artificial delay: a batch
 *   is whatever queued while the previous one was being committed.  With
 *   several writers (a pool) batches run side by side, and the dialect's
 *   transactions keep every rule atomic among them (and among nodes).
 *   - A job whose own statements fail is rolled back to its savepoint: it
 *     answers that status, the other jobs of the batch are unaffected.
 *   - When BEGIN or COMMIT fails, or an error rolls the whole transaction
 *     back, nothing of the batch is durable: every job answers the failure
 *     (the dialect has logged it, once).
 *   - A job nobody waits for (a message id: lazy) does not wake an idle
 *     writer for a commit of its own: it rides with the next batch, or
 *     runs LAZY_MAX_MS after it was queued at the latest.
 * - reads (one statement each: ping, user, stats, pending deliveries, the
 *   staff console's lists):
 *   reader threads with read connections of their own, so that a read
 *   never waits for a batch.  A backend without read connections (SQLite
 *   in memory) has its reads run as jobs of the writers.
 *
 * Each queue holds at most queue_max jobs: past that a call answers
 * OTPD_UNAVAILABLE at once (the database is not keeping up), and nothing
 * is queued.  Closing answers every job queued so far, then stops. */
#define _GNU_SOURCE /* pthread_setname_np */
#include "backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../metrics.h"
#include "rules.h"

#define LAZY_MAX_MS 100 /* how long a lazy job may wait for a batch to ride with */

/* One FIFO and the workers that take from it; guarded by store.lock. */
struct queue {
	const char *name;           /* "write", "read": for logs */
	struct store_job *head, *tail;
	size_t len;                 /* jobs queued */
	size_t eager;               /* of those, not lazy */
	struct timespec lazy_due;   /* CLOCK_MONOTONIC: when queued lazy jobs run at the latest */
	bool lazy_armed;            /* lazy_due is set */
	bool full_logged;           /* "queue full" logged since it last drained */
	int idle;                   /* workers waiting on `work` */
	pthread_cond_t work;        /* to the workers: jobs queued, or stop */
};

struct worker {
	struct store *s;
	struct store_conn *c;
	struct queue *q;
	bool reader;
	bool started;
	pthread_t thread;
	/* A writer's own counters (read after it has ended): how well group
	 * commit groups. */
	uint64_t batches, batched_jobs, batch_max;
};

struct store {
	const struct store_dialect *d;
	pthread_mutex_t lock;
	struct queue writes, reads;
	bool stopping;
	int batch_max;
	size_t queue_max;
	struct worker *workers;
	int n_workers;
	int n_readers;
	void *backend;
	void (*backend_close)(void *backend);
};

/* ---- answers ---- */

enum otpd_status store_job_answer(const struct store_job *j)
{
	if (j->status != OTPD_OK)
		return j->status;
	switch (j->op) {
	case STORE_OP_ISSUE:
		*j->u.issue.ret = j->u.issue.res; /* otp_id, or retry_after_s */
		return j->result;
	case STORE_OP_VERIFY:
		if (j->result == OTPD_OK || j->result == OTPD_INVALID_CODE ||
		    j->result == OTPD_USER_INACTIVE || j->result == OTPD_THROTTLED)
			*j->u.verify.ret = j->u.verify.res;
		return j->result;
	case STORE_OP_ROTATE:
		if (j->result == OTPD_OK) {
			*j->u.rotate.ret = j->u.rotate.res;
		} else if (j->result == OTPD_INVALID_TOKEN) {
			j->u.rotate.ret->reuse_detected = j->u.rotate.res.reuse_detected;
			j->u.rotate.ret->revoked_records = j->u.rotate.res.revoked_records;
		}
		return j->result;
	case STORE_OP_USER_GET:
		if (!j->u.user.found)
			return OTPD_NOT_FOUND;
		if (j->u.user.ret)
			*j->u.user.ret = j->u.user.user;
		return OTPD_OK;
	case STORE_OP_USER_BY_PHONE:
		if (!j->u.user.found)
			return OTPD_NOT_FOUND;
		if (j->u.user.ret)
			*j->u.user.ret = j->u.user.user;
		return OTPD_OK;
	case STORE_OP_USER_UPDATE:
	case STORE_OP_USER_UPDATE_BY_PHONE:
		if (!j->u.user_update.found)
			return OTPD_NOT_FOUND;
		if (j->u.user_update.ret)
			*j->u.user_update.ret = j->u.user_update.user;
		if (j->u.user_update.ret_created)
			*j->u.user_update.ret_created = j->u.user_update.created;
		return OTPD_OK;
	case STORE_OP_PURGE_COUNT:
		*j->u.purge_count.ret = j->u.purge_count.res;
		return OTPD_OK;
	/* The lists: rows are in the caller's buffer already; their count. */
	case STORE_OP_STATS:
		if (j->u.stats.ret_n)
			*j->u.stats.ret_n = j->u.stats.n;
		return OTPD_OK;
	case STORE_OP_CODES_LIST:
		if (j->u.codes.ret_n)
			*j->u.codes.ret_n = j->u.codes.n;
		return OTPD_OK;
	case STORE_OP_USER_SESSIONS:
		if (j->u.sessions.ret_n)
			*j->u.sessions.ret_n = j->u.sessions.n;
		return OTPD_OK;
	case STORE_OP_AUDIT_LIST:
		if (j->u.audit_list.ret_n)
			*j->u.audit_list.ret_n = j->u.audit_list.n;
		return OTPD_OK;
	case STORE_OP_USERS_LIST:
		if (j->u.users.ret_n)
			*j->u.users.ret_n = j->u.users.n;
		return OTPD_OK;
	case STORE_OP_CODES_MATCH:
		if (j->u.match.ret_n)
			*j->u.match.ret_n = j->u.match.n;
		return OTPD_OK;
	default:
		return OTPD_OK;
	}
}

static void answer(struct store_job *j)
{
	if (!j->async) {
		sem_post(&j->done); /* j belongs to its caller from here */
		return;
	}
	if (j->on_done) {
		log_set_request_id(j->request_id);
		j->on_done(j->on_done_arg, store_job_answer(j));
		log_set_request_id(NULL);
	}
	free(j);
}

/* ---- the queues ---- */

static bool is_read(const struct store_job *j)
{
	return j->op >= STORE_OP_FIRST_READ;
}

static struct queue *queue_of(struct store *s, const struct store_job *j)
{
	return is_read(j) && s->n_readers > 0 ? &s->reads : &s->writes;
}

/* Queue j, or answer OTPD_UNAVAILABLE when its queue is full. */
static enum otpd_status enqueue(struct store *s, struct store_job *j)
{
	struct queue *q;

	j->next = NULL;
	j->status = OTPD_INTERNAL;
	j->result = OTPD_INTERNAL;
	snprintf(j->request_id, sizeof(j->request_id), "%s", log_get_request_id());
	pthread_mutex_lock(&s->lock);
	q = queue_of(s, j);
	if (s->stopping || q->len >= s->queue_max) {
		bool log = !s->stopping && !q->full_logged;

		q->full_logged = true;
		pthread_mutex_unlock(&s->lock);
		if (log) /* once until the queue has drained */
			log_warn("store.busy", "%s: the %s queue is full (%zu jobs): answering "
			         "unavailable until it drains", s->d->name, q->name, s->queue_max);
		return OTPD_UNAVAILABLE;
	}
	if (q->tail)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
	q->len++;
	if (!j->lazy)
		q->eager++;
	/* A worker is either waiting for work (signal one) or running a batch
	 * (it looks at the queue again before it waits).  A lazy job wakes
	 * one only to set the deadline of its wait. */
	if (q->idle > 0 && (!j->lazy || !q->lazy_armed))
		pthread_cond_signal(&q->work);
	pthread_mutex_unlock(&s->lock);
	return OTPD_OK;
}

void store_engine_submit(struct store *s, struct store_job *j)
{
	enum otpd_status st;

	j->async = false;
	j->lazy = false;
	j->on_done = NULL;
	if (sem_init(&j->done, 0, 0) != 0) {
		log_error("store.error", "cannot create a semaphore");
		j->status = OTPD_INTERNAL;
		return;
	}
	st = enqueue(s, j);
	if (st == OTPD_OK) {
		while (sem_wait(&j->done) != 0)
			; /* EINTR */
	} else {
		j->status = st;
	}
	sem_destroy(&j->done);
}

enum otpd_status store_engine_start(struct store *s, const struct store_job *proto,
                                    store_done_fn done, void *arg)
{
	struct store_job *j = malloc(sizeof(*j));
	enum otpd_status st;

	if (!j)
		return OTPD_NOMEM;
	*j = *proto;
	j->async = true;
	j->on_done = done;
	j->on_done_arg = arg;
	j->lazy = !done && j->op == STORE_OP_SMS_ACCEPTED;
	st = enqueue(s, j);
	if (st != OTPD_OK)
		free(j);
	return st;
}

/* Under lock: unlink the next batch, every job queued now up to max (a
 * migration runs alone). */
static struct store_job *take_batch(struct queue *q, int max)
{
	struct store_job *first = q->head, *last = first;
	int n = 1;

	if (first->op != STORE_OP_MIGRATE)
		while (last->next && last->next->op != STORE_OP_MIGRATE && n < max) {
			last = last->next;
			n++;
		}
	q->head = last->next;
	if (!q->head)
		q->tail = NULL;
	last->next = NULL;
	for (struct store_job *j = first; j; j = j->next) {
		q->len--;
		if (!j->lazy)
			q->eager--;
	}
	if (q->len == 0)
		q->full_logged = false;
	return first;
}

static void lazy_arm(struct queue *q)
{
	clock_gettime(CLOCK_MONOTONIC, &q->lazy_due);
	q->lazy_due.tv_nsec += LAZY_MAX_MS * 1000000L;
	if (q->lazy_due.tv_nsec >= 1000000000L) {
		q->lazy_due.tv_sec++;
		q->lazy_due.tv_nsec -= 1000000000L;
	}
	q->lazy_armed = true;
}

/* Under lock: wait until there is a batch to run (an eager job, or lazy
 * ones that are due) or the store stops.  False when it stops with nothing
 * left to run. */
static bool wait_for_work(struct store *s, struct queue *q)
{
	q->idle++;
	while (!s->stopping && q->eager == 0) {
		if (!q->head) {
			q->lazy_armed = false;
			pthread_cond_wait(&q->work, &s->lock);
			continue;
		}
		if (!q->lazy_armed)
			lazy_arm(q);
		if (pthread_cond_timedwait(&q->work, &s->lock, &q->lazy_due) == ETIMEDOUT)
			break;
	}
	q->idle--;
	q->lazy_armed = false;
	return q->head != NULL;
}

/* ---- running a batch ---- */

static bool stats_any(const struct store_stats_delta *d)
{
	return d->sends || d->sms_failures || d->logins || d->new_users || d->wrong_guesses;
}

/* The events of a batch, summed per bucket: the operations only say what
 * they count (job.counted); run_one() adds a job's events here once its
 * savepoint is released (a job that failed counts nothing), and
 * run_batch() writes them, one UPSERT per bucket, just before the COMMIT:
 * in the transaction that commits the operations, so an event is counted
 * if and only if its operation is durable.  (One UPSERT per operation was
 * an eighth of a verify's instructions.) */
#define BATCH_BUCKETS 4

struct batch_stats {
	int n;
	int64_t bucket_ms[BATCH_BUCKETS];
	struct store_stats_sums d[BATCH_BUCKETS];
};

static enum otpd_status batch_stats_flush(const struct store_dialect *d, struct store_conn *c,
                                          struct batch_stats *bs)
{
	enum otpd_status status = OTPD_OK;

	for (int i = 0; i < bs->n && status == OTPD_OK; i++)
		status = d->stats_add(c, bs->bucket_ms[i], &bs->d[i]);
	bs->n = 0;
	return status;
}

static enum otpd_status batch_stats_add(const struct store_dialect *d, struct store_conn *c,
                                        struct batch_stats *bs, int64_t now_ms,
                                        const struct store_stats_delta *delta)
{
	int64_t bucket_ms = store_rules_bucket(now_ms);
	enum otpd_status status = OTPD_OK;
	int i;

	for (i = 0; i < bs->n && bs->bucket_ms[i] != bucket_ms; i++)
		;
	if (i == BATCH_BUCKETS) { /* times far apart: write what is summed */
		status = batch_stats_flush(d, c, bs);
		i = 0;
	}
	if (i == bs->n) {
		bs->bucket_ms[i] = bucket_ms;
		memset(&bs->d[i], 0, sizeof(bs->d[i]));
		bs->n++;
	}
	bs->d[i].sends += delta->sends;
	bs->d[i].sms_failures += delta->sms_failures;
	bs->d[i].logins += delta->logins;
	bs->d[i].new_users += delta->new_users;
	bs->d[i].wrong_guesses += delta->wrong_guesses;
	return status;
}

static enum otpd_status op_run(const struct store_dialect *d, struct store_conn *c,
                               struct store_job *j)
{
	enum otpd_status status;

	if ((unsigned)j->op >= STORE_OP_COUNT || !d->op[j->op]) {
		store_error("%s: operation %d cannot run here", d->name, (int)j->op);
		return OTPD_INTERNAL;
	}
	memset(&j->counted, 0, sizeof(j->counted));
	log_set_request_id(j->request_id);
	status = d->op[j->op](c, j);
	log_set_request_id(NULL);
	return status;
}

/* Run j in the batch's transaction: in a savepoint of its own when the
 * batch holds others (when its statements fail, they alone are undone and
 * j->status says why), directly when it is alone (its failure is the
 * batch's) or is one statement that the database undoes by itself when it
 * fails.  What it counts joins the batch's stats.  Returns the batch's
 * status: not OTPD_OK when the transaction itself is lost. */
static enum otpd_status run_one(const struct store_dialect *d, struct store_conn *c,
                                struct store_job *j, bool alone, struct batch_stats *bs)
{
	enum otpd_status status;

	if (alone || (d->statement_atomic && j->op == STORE_OP_SMS_ACCEPTED)) {
		j->status = op_run(d, c, j);
		if (j->status != OTPD_OK && (alone || !d->in_transaction(c)))
			return j->status;
		status = OTPD_OK;
	} else {
		status = d->savepoint(c);
		if (status != OTPD_OK)
			return status;
		j->status = op_run(d, c, j);
		if (j->status == OTPD_OK) {
			status = d->release(c);
			if (status != OTPD_OK && d->in_transaction(c)) {
				/* A dialect that pipelines the job's statements
				 * (PostgreSQL) hears of their failure here: it is
				 * the job's own, undone like any other. */
				j->status = status;
				status = d->rollback_to(c);
				if (status == OTPD_OK)
					status = d->release(c);
				return status;
			}
		} else {
			/* An error may have rolled back the whole transaction,
			 * and the jobs before this one with it. */
			if (!d->in_transaction(c))
				return j->status;
			status = d->rollback_to(c);
			if (status == OTPD_OK)
				status = d->release(c);
			return status;
		}
	}
	if (status == OTPD_OK && j->status == OTPD_OK && stats_any(&j->counted))
		status = batch_stats_add(d, c, bs, j->now_ms, &j->counted);
	return status;
}

static void run_batch(struct store *s, struct store_conn *c, struct store_job *batch)
{
	const struct store_dialect *d = s->d;
	struct batch_stats bs = {0};
	enum otpd_status status;
	bool alone = !batch->next;

	if (batch->op == STORE_OP_MIGRATE) {
		log_set_request_id(batch->request_id);
		batch->status = store_migrate_run(d, c, &batch->u.migrate.applied,
		                                  &batch->u.migrate.version);
		log_set_request_id(NULL);
		return;
	}
	for (struct store_job *j = batch; j; j = j->next)
		j->status = OTPD_OK;
	status = d->begin(c);
	for (struct store_job *j = batch; j && status == OTPD_OK; j = j->next)
		status = run_one(d, c, j, alone, &bs);
	if (status == OTPD_OK)
		status = batch_stats_flush(d, c, &bs);
	if (status == OTPD_OK)
		status = d->commit(c);
	if (status == OTPD_OK)
		return;
	/* Nothing of this batch is durable: every job that has not failed on
	 * its own answers the failure (the dialect has logged it, once). */
	d->rollback(c);
	for (struct store_job *j = batch; j; j = j->next)
		if (j->status == OTPD_OK)
			j->status = status;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct store *s = w->s;
	char name[16];

	snprintf(name, sizeof(name), "otpd-%s%d", w->reader ? "reader" : "writer",
	         (int)(w - s->workers));
	pthread_setname_np(pthread_self(), name); /* for top -H and perf */
	pthread_mutex_lock(&s->lock);
	for (;;) {
		if (!wait_for_work(s, w->q))
			break; /* stopping, and every job is answered */
		struct store_job *batch = take_batch(w->q, w->reader ? 1 : s->batch_max);
		/* Callers queue the next batch while this one commits. */
		pthread_mutex_unlock(&s->lock);
		if (w->reader) {
			batch->status = op_run(s->d, w->c, batch);
		} else {
			uint64_t n = 0;

			run_batch(s, w->c, batch);
			for (struct store_job *j = batch; j; j = j->next)
				n++;
			w->batches++;
			w->batched_jobs += n;
			if (n > w->batch_max)
				w->batch_max = n;
		}
		for (struct store_job *j = batch, *next; j; j = next) {
			next = j->next; /* j is gone once answered */
			answer(j);
		}
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* ---- open / close ---- */

static bool queue_init(struct queue *q, const char *name)
{
	pthread_condattr_t attr;
	bool ok;

	memset(q, 0, sizeof(*q));
	q->name = name;
	if (pthread_condattr_init(&attr) != 0)
		return false;
	/* The deadline of lazy jobs is on the monotonic clock: a wall clock
	 * step must not stall or hurry them. */
	ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
	     pthread_cond_init(&q->work, &attr) == 0;
	pthread_condattr_destroy(&attr);
	return ok;
}

static void stop_workers(struct store *s)
{
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	pthread_cond_broadcast(&s->writes.work);
	pthread_cond_broadcast(&s->reads.work);
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < s->n_workers; i++)
		if (s->workers[i].started)
			pthread_join(s->workers[i].thread, NULL);
}

static void release_all(struct store *s)
{
	/* Readers first: with SQLite the last connection to close
	 * checkpoints the WAL. */
	for (int i = s->n_workers - 1; i >= 0; i--)
		s->d->conn_close(s->workers[i].c);
	if (s->backend_close)
		s->backend_close(s->backend);
	pthread_cond_destroy(&s->reads.work);
	pthread_cond_destroy(&s->writes.work);
	pthread_mutex_destroy(&s->lock);
	free(s->workers);
	free(s);
}

enum otpd_status store_engine_open(const struct store_engine_config *cfg, struct store **ret)
{
	struct store *s = calloc(1, sizeof(*s));
	int n = cfg->n_writers + cfg->n_readers, rc = 0;

	if (!s || cfg->n_writers < 1 || cfg->n_readers < 0 ||
	    !(s->workers = calloc((size_t)n, sizeof(*s->workers)))) {
		log_error("store.open", s ? "bad engine configuration, or out of memory"
		                          : "out of memory");
		for (int i = 0; i < cfg->n_writers; i++)
			cfg->d->conn_close(cfg->writers[i]);
		for (int i = 0; i < cfg->n_readers; i++)
			cfg->d->conn_close(cfg->readers[i]);
		if (cfg->backend_close)
			cfg->backend_close(cfg->backend);
		free(s);
		return OTPD_NOMEM;
	}
	s->d = cfg->d;
	s->batch_max = cfg->batch_max > 0 ? cfg->batch_max : 1;
	s->queue_max = cfg->queue_max > 0 ? cfg->queue_max : 1;
	s->backend = cfg->backend;
	s->backend_close = cfg->backend_close;
	s->n_workers = n;
	s->n_readers = cfg->n_readers;
	for (int i = 0; i < n; i++) {
		struct worker *w = &s->workers[i];

		w->s = s;
		w->reader = i >= cfg->n_writers;
		w->c = w->reader ? cfg->readers[i - cfg->n_writers] : cfg->writers[i];
		w->q = w->reader ? &s->reads : &s->writes;
	}
	if (pthread_mutex_init(&s->lock, NULL) != 0 || !queue_init(&s->writes, "write") ||
	    !queue_init(&s->reads, "read")) {
		log_error("store.open", "cannot create a mutex");
		s->n_workers = n; /* release_all closes every connection */
		release_all(s);
		return OTPD_INTERNAL;
	}
	for (int i = 0; i < n && rc == 0; i++) {
		rc = pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]);
		s->workers[i].started = rc == 0;
	}
	if (rc != 0) {
		log_error("store.open", "cannot start a database thread: %s", strerror(rc));
		stop_workers(s);
		release_all(s);
		return OTPD_INTERNAL;
	}
	*ret = s;
	return OTPD_OK;
}

void store_close(struct store *s)
{
	uint64_t batches = 0, jobs = 0, most = 0;

	if (!s)
		return;
	/* The workers answer every job queued so far, then end. */
	stop_workers(s);
	for (int i = 0; i < s->n_workers; i++) {
		batches += s->workers[i].batches;
		jobs += s->workers[i].batched_jobs;
		if (s->workers[i].batch_max > most)
			most = s->workers[i].batch_max;
	}
	if (batches)
		log_info("store.stats", "%s: %llu operations in %llu transactions"
		         " (%.1f per transaction on average, %llu at most)", s->d->name,
		         (unsigned long long)jobs, (unsigned long long)batches,
		         (double)jobs / (double)batches, (unsigned long long)most);
	release_all(s);
}
