/* The store's public functions: store_open() picks a backend from the
 * DATABASE_URL scheme; every other call packs its arguments into a job
 * (struct store_job, backend.h: each operation's parameters are named
 * once, in its argument struct) and hands it to the engine (queue.c).  A
 * synchronous call is its asynchronous form plus a wait.  No SQL here. */
#include "store.h"

#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include "../log.h"
#include "backend.h"

static bool has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

enum otpd_status store_open(const char *url, const struct store_options *opt,
                            char *err, size_t errlen, struct store **ret)
{
	struct store_options o = *opt;
	const char *path;

	if (err && errlen)
		err[0] = '\0';

	if (!url) {
		log_error("store.open", "no database URL");
		return OTPD_INTERNAL;
	}
	if (o.busy_timeout_ms < 0)
		o.busy_timeout_ms = 0;
	if (o.queue_max == 0)
		o.queue_max = 10000;
	if (has_prefix(url, "postgres://") || has_prefix(url, "postgresql://"))
		return store_postgres_open(url, &o, err, errlen, ret);
	/* "sqlite://PATH" first: "sqlite:" is a prefix of it. */
	if (has_prefix(url, "sqlite://")) {
		path = url + strlen("sqlite://");
	} else if (has_prefix(url, "sqlite:")) {
		path = url + strlen("sqlite:");
	} else {
		/* The URL may carry a password: name only what was expected. */
		log_error("store.open",
		          "unsupported DATABASE_URL scheme: expected 'sqlite:PATH' "
		          "or 'postgres://USER:PASSWORD@HOST:PORT/DB'");
		return OTPD_INTERNAL;
	}
	if (path[0] == '\0') {
		log_error("store.open", "DATABASE_URL 'sqlite:' names no file");
		return OTPD_INTERNAL;
	}
	return store_sqlite_open(path, &o, err, errlen, ret);
}

/* ---- synchronous calls: a job on the caller's stack ---- */

static enum otpd_status run(struct store *s, struct store_job *j)
{
	store_engine_submit(s, j);
	return store_job_answer(j);
}

enum otpd_status store_migrate(struct store *s, int *ret_applied)
{
	struct store_job j = {.op = STORE_OP_MIGRATE};
	enum otpd_status status = run(s, &j);

	if (status != OTPD_OK)
		return status;
	*ret_applied = j.u.migrate.applied;
	return OTPD_OK;
}

enum otpd_status store_ping(struct store *s)
{
	struct store_job j = {.op = STORE_OP_PING};

	return run(s, &j);
}

enum otpd_status store_secret_get_or_create(struct store *s, const char *name,
                                            const uint8_t *fresh, size_t len,
                                            uint8_t *ret, size_t ret_len)
{
	struct store_job j = {.op = STORE_OP_SECRET};
	enum otpd_status status;
	uint8_t *value;

	if (len == 0 || len > 65536 || ret_len != len) {
		store_error("secret '%s': bad length %zu (buffer %zu)", name, len, ret_len);
		return OTPD_INTERNAL;
	}
	value = malloc(len); /* ret stays untouched until the commit */
	if (!value)
		return OTPD_NOMEM;
	j.u.secret.name = name;
	j.u.secret.fresh = fresh;
	j.u.secret.len = len;
	j.u.secret.value = value;
	status = run(s, &j);
	if (status == OTPD_OK)
		memcpy(ret, value, len);
	otp_wipe(value, len);
	free(value);
	return status;
}

enum otpd_status store_otp_delivery_pending(struct store *s, int64_t since_ms,
                                            size_t limit,
                                            struct store_delivery_pending *ret,
                                            size_t *ret_n)
{
	struct store_job j = {.op = STORE_OP_DELIVERY_PENDING};
	struct store_delivery_pending *buf = NULL;
	enum otpd_status status;

	if (limit > 100000) {
		store_error("delivery pending: limit %zu is over 100000", limit);
		return OTPD_INTERNAL;
	}
	if (limit == 0) {
		*ret_n = 0;
		return OTPD_OK;
	}
	if (!(buf = malloc(limit * sizeof(*buf)))) /* ret untouched on failure */
		return OTPD_NOMEM;
	j.u.pending.since_ms = since_ms;
	j.u.pending.limit = limit;
	j.u.pending.ret = buf;
	status = run(s, &j);
	if (status == OTPD_OK) {
		if (j.u.pending.n)
			memcpy(ret, buf, j.u.pending.n * sizeof(*buf));
		*ret_n = j.u.pending.n;
	}
	free(buf);
	return status;
}

enum otpd_status store_otp_delivery_set(struct store *s, size_t n,
                                        const struct store_delivery_status *items)
{
	struct store_job j = {.op = STORE_OP_DELIVERY_SET};

	if (n == 0)
		return OTPD_OK;
	if (!items) {
		store_error("delivery set: no items given");
		return OTPD_INTERNAL;
	}
	j.u.delivery.n = n;
	j.u.delivery.items = items;
	return run(s, &j);
}

enum otpd_status store_stats(struct store *s, int64_t since_ms, int64_t until_ms,
                             struct store_stats_bucket *ret, size_t cap,
                             size_t *ret_n)
{
	struct store_job j = {.op = STORE_OP_STATS};
	struct store_stats_bucket *buf = NULL;
	enum otpd_status status;

	if (cap > 1000000) {
		store_error("stats: cap %zu is over 1000000", cap);
		return OTPD_INTERNAL;
	}
	if (cap == 0 || since_ms >= until_ms) {
		*ret_n = 0;
		return OTPD_OK;
	}
	if (!(buf = malloc(cap * sizeof(*buf))))
		return OTPD_NOMEM;
	j.u.stats.since_ms = since_ms;
	j.u.stats.until_ms = until_ms;
	j.u.stats.ret = buf;
	j.u.stats.cap = cap;
	status = run(s, &j);
	if (status == OTPD_OK) {
		if (j.u.stats.n)
			memcpy(ret, buf, j.u.stats.n * sizeof(*buf));
		*ret_n = j.u.stats.n;
	}
	free(buf);
	return status;
}

enum otpd_status store_history_purge(struct store *s, int64_t before_ms, int limit,
                                     int *ret_deleted)
{
	struct store_job j = {.op = STORE_OP_HISTORY_PURGE};
	enum otpd_status status;

	if (limit <= 0) { /* at most none */
		*ret_deleted = 0;
		return OTPD_OK;
	}
	j.u.purge.before_ms = before_ms;
	j.u.purge.limit = limit;
	status = run(s, &j);
	if (status == OTPD_OK)
		*ret_deleted = j.u.purge.deleted;
	return status;
}

enum otpd_status store_session_purge(struct store *s, int64_t now_ms, int limit,
                                     int *ret_deleted)
{
	struct store_job j = {.op = STORE_OP_SESSION_PURGE, .now_ms = now_ms};
	enum otpd_status status;

	if (limit <= 0) {
		*ret_deleted = 0;
		return OTPD_OK;
	}
	j.u.purge.before_ms = now_ms;
	j.u.purge.limit = limit;
	status = run(s, &j);
	if (status == OTPD_OK)
		*ret_deleted = j.u.purge.deleted;
	return status;
}

enum otpd_status store_user_get(struct store *s, int64_t id, struct store_user *ret)
{
	struct store_job j = {.op = STORE_OP_USER_GET};

	j.u.user.id = id;
	j.u.user.ret = ret;
	return run(s, &j);
}

/* ---- the staff console ---- */

enum otpd_status store_codes_list(struct store *s, const struct store_codes_query *q,
                                  struct store_code_row *ret, size_t cap, size_t *ret_n)
{
	struct store_job j = {.op = STORE_OP_CODES_LIST};
	struct store_code_row *buf = NULL;
	enum otpd_status status;

	if (!q) {
		store_error("codes list: no query given");
		return OTPD_INTERNAL;
	}
	if (cap == 0 || cap > STORE_PAGE_MAX) {
		store_error("codes list: page size %zu is not 1..%d", cap, STORE_PAGE_MAX);
		return OTPD_INTERNAL;
	}
	if (!(buf = malloc(cap * sizeof(*buf)))) /* ret untouched on failure */
		return OTPD_NOMEM;
	/* The zeros of the query, resolved: the dialect binds plain bounds. */
	j.u.codes.phone = q->phone && q->phone[0] ? q->phone : NULL;
	j.u.codes.before_id = q->before_id ? q->before_id : INT64_MAX;
	j.u.codes.since_ms = q->since_ms ? q->since_ms : INT64_MIN;
	j.u.codes.until_ms = q->until_ms ? q->until_ms : INT64_MAX;
	j.u.codes.ret = buf;
	j.u.codes.cap = cap;
	status = run(s, &j);
	if (status == OTPD_OK) {
		if (j.u.codes.n)
			memcpy(ret, buf, j.u.codes.n * sizeof(*buf));
		*ret_n = j.u.codes.n;
	}
	free(buf);
	return status;
}

enum otpd_status store_user_sessions(struct store *s, int64_t user_id,
                                     struct store_session_info *ret, size_t cap,
                                     size_t *ret_n)
{
	struct store_job j = {.op = STORE_OP_USER_SESSIONS};
	struct store_session_info *buf = NULL;
	enum otpd_status status;

	if (cap == 0 || cap > STORE_PAGE_MAX) {
		store_error("user sessions: page size %zu is not 1..%d", cap, STORE_PAGE_MAX);
		return OTPD_INTERNAL;
	}
	if (!(buf = malloc(cap * sizeof(*buf))))
		return OTPD_NOMEM;
	j.u.sessions.user_id = user_id;
	j.u.sessions.ret = buf;
	j.u.sessions.cap = cap;
	status = run(s, &j);
	if (status == OTPD_OK) {
		if (j.u.sessions.n)
			memcpy(ret, buf, j.u.sessions.n * sizeof(*buf));
		*ret_n = j.u.sessions.n;
	}
	free(buf);
	return status;
}

enum otpd_status store_user_update(struct store *s, int64_t id,
                                   const struct store_user_change *c,
                                   struct store_user *ret)
{
	struct store_job j = {.op = STORE_OP_USER_UPDATE};

	if (!c) {
		store_error("user update: no change given");
		return OTPD_INTERNAL;
	}
	j.u.user_update.id = id;
	j.u.user_update.change = c;
	j.u.user_update.ret = ret; /* see store_job_answer() */
	return run(s, &j);
}

/* ---- asynchronous calls: a heap copy of the job ---- */

enum otpd_status store_otp_issue_start(struct store *s, const struct otp_policy *p,
                                       const char *phone,
                                       const uint8_t hash[OTP_HASH_LEN],
                                       int64_t now_ms, const struct store_throttle *throttle,
                                       struct store_issue_result *ret,
                                       store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_ISSUE, .now_ms = now_ms};

	j.u.issue.p = p;
	j.u.issue.phone = phone;
	j.u.issue.hash = hash;
	j.u.issue.throttle = throttle;
	j.u.issue.ret = ret; /* OTPD_OK: otp_id; OTPD_OTP_RATE_LIMITED: retry_after_s */
	return store_engine_start(s, &j, done, arg);
}

enum otpd_status store_otp_cancel_start(struct store *s, const char *phone,
                                        int64_t otp_id, int64_t now_ms,
                                        store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_CANCEL, .now_ms = now_ms};

	j.u.cancel.phone = phone;
	j.u.cancel.otp_id = otp_id;
	return store_engine_start(s, &j, done, arg);
}

enum otpd_status store_otp_sms_accepted_start(struct store *s, int64_t otp_id,
                                              int64_t message_id, int64_t now_ms,
                                              store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_SMS_ACCEPTED, .now_ms = now_ms};

	j.u.sms.otp_id = otp_id;
	j.u.sms.message_id = message_id;
	return store_engine_start(s, &j, done, arg);
}

enum otpd_status store_otp_verify_start(struct store *s, const struct otp_policy *p,
                                        const char *phone,
                                        const uint8_t hash[OTP_HASH_LEN],
                                        const char *email_domain,
                                        const struct store_session *session,
                                        int64_t now_ms, const struct store_throttle *throttle,
                                        struct store_verify_result *ret,
                                        store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_VERIFY, .now_ms = now_ms};

	j.u.verify.throttle = throttle;

	j.u.verify.p = p;
	j.u.verify.phone = phone;
	j.u.verify.hash = hash;
	j.u.verify.email_domain = email_domain;
	j.u.verify.session = session;
	j.u.verify.ret = ret;
	return store_engine_start(s, &j, done, arg);
}

enum otpd_status store_session_rotate_start(struct store *s, const char *jti,
                                            int64_t user_id,
                                            const struct store_session *next,
                                            int64_t grace_ms, int64_t now_ms,
                                            struct store_rotate_result *ret,
                                            store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_ROTATE, .now_ms = now_ms};

	if (!jti)
		return OTPD_INVALID_TOKEN;
	if (!next) {
		store_error("session rotate: no successor given");
		return OTPD_INTERNAL;
	}
	j.u.rotate.jti = jti;
	j.u.rotate.user_id = user_id;
	j.u.rotate.next = next;
	j.u.rotate.grace_ms = grace_ms;
	j.u.rotate.ret = ret; /* see store_job_answer() */
	return store_engine_start(s, &j, done, arg);
}

enum otpd_status store_session_revoke_start(struct store *s, const char *jti,
                                            store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_REVOKE};

	if (!jti) {
		store_error("session revoke: no jti given");
		return OTPD_INTERNAL;
	}
	j.u.revoke.jti = jti;
	return store_engine_start(s, &j, done, arg);
}

enum otpd_status store_ping_start(struct store *s, store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_PING};

	return store_engine_start(s, &j, done, arg);
}

enum otpd_status store_user_get_start(struct store *s, int64_t id, struct store_user *ret,
                                      store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_USER_GET};

	j.u.user.id = id;
	j.u.user.ret = ret;
	return store_engine_start(s, &j, done, arg);
}

/* The lists without waiting.  The rows go straight into the caller's
 * buffer, zeroed first (a stats bucket's start set to INT64_MIN); the
 * dialect counts them in its copy of the job, which the callback does not
 * see, so the callback counts the rows it filled instead (a row's id, a
 * family, a bucket's start is never what it was set to). */
struct list_call {
	void *rows;
	size_t cap;
	size_t *ret_n;
	enum store_op op;
	store_done_fn done;
	void *arg;
};

static void list_done(void *arg, enum otpd_status status)
{
	struct list_call *c = arg;
	size_t n = 0;

	if (status == OTPD_OK) {
		if (c->op == STORE_OP_CODES_LIST) {
			const struct store_code_row *r = c->rows;
			while (n < c->cap && r[n].id > 0)
				n++;
		} else if (c->op == STORE_OP_STATS) {
			const struct store_stats_bucket *r = c->rows;
			while (n < c->cap && r[n].bucket_ms != INT64_MIN)
				n++;
		} else {
			const struct store_session_info *r = c->rows;
			while (n < c->cap && r[n].family[0])
				n++;
		}
		*c->ret_n = n;
	}
	c->done(c->arg, status);
	free(c);
}

static enum otpd_status list_start(struct store *s, struct store_job *j, void *rows,
                                   size_t row_size, size_t cap, size_t *ret_n,
                                   store_done_fn done, void *arg)
{
	struct list_call *c = malloc(sizeof(*c));
	enum otpd_status st;

	if (!c)
		return OTPD_NOMEM;
	*c = (struct list_call){rows, cap, ret_n, j->op, done, arg};
	memset(rows, 0, cap * row_size);
	if (j->op == STORE_OP_STATS) /* no bucket starts there: since_ms <= bucket_ms */
		for (size_t i = 0; i < cap; i++)
			((struct store_stats_bucket *)rows)[i].bucket_ms = INT64_MIN;
	*ret_n = 0;
	st = store_engine_start(s, j, list_done, c);
	if (st != OTPD_OK)
		free(c);
	return st;
}

enum otpd_status store_codes_list_start(struct store *s, const struct store_codes_query *q,
                                        struct store_code_row *ret, size_t cap,
                                        size_t *ret_n, store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_CODES_LIST};

	if (!q || cap == 0 || cap > STORE_PAGE_MAX) {
		store_error("codes list: no query, or a page size %zu not 1..%d", cap, STORE_PAGE_MAX);
		return OTPD_INTERNAL;
	}
	j.u.codes.phone = q->phone && q->phone[0] ? q->phone : NULL;
	j.u.codes.before_id = q->before_id ? q->before_id : INT64_MAX;
	j.u.codes.since_ms = q->since_ms ? q->since_ms : INT64_MIN;
	j.u.codes.until_ms = q->until_ms ? q->until_ms : INT64_MAX;
	j.u.codes.ret = ret;
	j.u.codes.cap = cap;
	return list_start(s, &j, ret, sizeof(*ret), cap, ret_n, done, arg);
}

enum otpd_status store_stats_start(struct store *s, int64_t since_ms, int64_t until_ms,
                                   struct store_stats_bucket *ret, size_t cap, size_t *ret_n,
                                   store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_STATS};

	if (cap == 0 || cap > 1000000 || since_ms >= until_ms) {
		store_error("stats: cap %zu not 1..1000000, or an empty range", cap);
		return OTPD_INTERNAL;
	}
	j.u.stats.since_ms = since_ms;
	j.u.stats.until_ms = until_ms;
	j.u.stats.ret = ret;
	j.u.stats.cap = cap;
	return list_start(s, &j, ret, sizeof(*ret), cap, ret_n, done, arg);
}

enum otpd_status store_user_sessions_start(struct store *s, int64_t user_id,
                                           struct store_session_info *ret, size_t cap,
                                           size_t *ret_n, store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_USER_SESSIONS};

	if (cap == 0 || cap > STORE_PAGE_MAX) {
		store_error("user sessions: page size %zu is not 1..%d", cap, STORE_PAGE_MAX);
		return OTPD_INTERNAL;
	}
	j.u.sessions.user_id = user_id;
	j.u.sessions.ret = ret;
	j.u.sessions.cap = cap;
	return list_start(s, &j, ret, sizeof(*ret), cap, ret_n, done, arg);
}

/* ---- the synchronous forms of the asynchronous calls: start, then wait ---- */

struct waiter {
	sem_t sem;
	enum otpd_status status;
};

static void waiter_wake(void *arg, enum otpd_status status)
{
	struct waiter *w = arg;

	w->status = status;
	sem_post(&w->sem);
}

static bool waiter_init(struct waiter *w)
{
	if (sem_init(&w->sem, 0, 0) == 0)
		return true;
	log_error("store.error", "cannot create a semaphore");
	return false;
}

/* started: what the _start call returned; waits only when it queued. */
static enum otpd_status waiter_wait(struct waiter *w, enum otpd_status started)
{
	if (started == OTPD_OK) {
		while (sem_wait(&w->sem) != 0)
			; /* EINTR */
		started = w->status;
	}
	sem_destroy(&w->sem);
	return started;
}

enum otpd_status store_otp_issue(struct store *s, const struct otp_policy *p,
                                 const char *phone,
                                 const uint8_t hash[OTP_HASH_LEN],
                                 int64_t now_ms, const struct store_throttle *throttle,
                                 struct store_issue_result *ret)
{
	struct waiter w;

	if (!waiter_init(&w))
		return OTPD_INTERNAL;
	return waiter_wait(&w, store_otp_issue_start(s, p, phone, hash, now_ms, throttle, ret,
	                                             waiter_wake, &w));
}

enum otpd_status store_otp_cancel(struct store *s, const char *phone,
                                  int64_t otp_id, int64_t now_ms)
{
	struct waiter w;

	if (!waiter_init(&w))
		return OTPD_INTERNAL;
	return waiter_wait(&w, store_otp_cancel_start(s, phone, otp_id, now_ms,
	                                              waiter_wake, &w));
}

enum otpd_status store_otp_verify(struct store *s, const struct otp_policy *p,
                                  const char *phone,
                                  const uint8_t hash[OTP_HASH_LEN],
                                  const char *email_domain,
                                  const struct store_session *session,
                                  int64_t now_ms, const struct store_throttle *throttle,
                                  struct store_verify_result *ret)
{
	struct waiter w;

	if (!waiter_init(&w))
		return OTPD_INTERNAL;
	return waiter_wait(&w, store_otp_verify_start(s, p, phone, hash, email_domain,
	                                              session, now_ms, throttle, ret,
	                                              waiter_wake, &w));
}

enum otpd_status store_session_rotate(struct store *s, const char *jti,
                                      int64_t user_id,
                                      const struct store_session *next,
                                      int64_t grace_ms, int64_t now_ms,
                                      struct store_rotate_result *ret)
{
	struct waiter w;

	if (!waiter_init(&w))
		return OTPD_INTERNAL;
	return waiter_wait(&w, store_session_rotate_start(s, jti, user_id, next, grace_ms,
	                                                  now_ms, ret, waiter_wake, &w));
}

enum otpd_status store_session_revoke(struct store *s, const char *jti)
{
	struct waiter w;

	if (!jti)
		return OTPD_OK; /* nothing to revoke */
	if (!waiter_init(&w))
		return OTPD_INTERNAL;
	return waiter_wait(&w, store_session_revoke_start(s, jti, waiter_wake, &w));
}
