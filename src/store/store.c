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

const char *store_code_status(const struct store_code_row *r, int64_t now_ms)
{
	switch (r->state) {
	case OTP_CODE_USED:
		return "used";
	case OTP_CODE_CANCELLED:
		return "cancelled";
	case OTP_CODE_REPLACED:
		return "replaced";
	default:
		break;
	}
	if (r->attempts >= r->max_attempts || r->ended_ms >= 0)
		return "exhausted";
	return now_ms >= r->expires_ms ? "expired" : "valid";
}

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

/* An audit entry the store accepts: actor and action set, every field
 * NUL-terminated within its size. */
static bool audit_ok(const struct store_audit_entry *e, const char *what)
{
	if (e && e->actor[0] && e->action[0] &&
	    memchr(e->actor, '\0', sizeof(e->actor)) && memchr(e->action, '\0', sizeof(e->action)) &&
	    memchr(e->target, '\0', sizeof(e->target)) && memchr(e->client, '\0', sizeof(e->client)))
		return true;
	store_error("%s: no audit entry, or one without actor or action", what);
	return false;
}

static enum otpd_status user_update_job(int64_t id, const struct store_user_change *c,
                                        const struct store_audit_entry *audit,
                                        struct store_user *ret, struct store_job *j)
{
	if (!c) {
		store_error("user update: no change given");
		return OTPD_INTERNAL;
	}
	if (audit && !audit_ok(audit, "user update"))
		return OTPD_INTERNAL;
	j->op = STORE_OP_USER_UPDATE;
	j->now_ms = audit ? audit->time_ms : 0;
	j->u.user_update.id = id;
	j->u.user_update.change = c;
	j->u.user_update.audit = audit;
	j->u.user_update.ret = ret; /* see store_job_answer() */
	return OTPD_OK;
}

enum otpd_status store_user_update(struct store *s, int64_t id,
                                   const struct store_user_change *c,
                                   const struct store_audit_entry *audit,
                                   struct store_user *ret)
{
	struct store_job j = {.op = STORE_OP_USER_UPDATE};
	enum otpd_status status = user_update_job(id, c, audit, ret, &j);

	return status == OTPD_OK ? run(s, &j) : status;
}

enum otpd_status store_user_update_start(struct store *s, int64_t id,
                                         const struct store_user_change *c,
                                         const struct store_audit_entry *audit,
                                         struct store_user *ret,
                                         store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_USER_UPDATE};
	enum otpd_status status = user_update_job(id, c, audit, ret, &j);

	return status == OTPD_OK ? store_engine_start(s, &j, done, arg) : status;
}

enum otpd_status store_user_update_by_phone(struct store *s, const char *phone,
                                            const struct store_user_change *c,
                                            bool create, const char *email_domain,
                                            const struct store_audit_entry *audit,
                                            int64_t now_ms, struct store_user *ret,
                                            bool *ret_created)
{
	struct store_job j = {.op = STORE_OP_USER_UPDATE_BY_PHONE, .now_ms = now_ms};

	if (!c || !phone || (create && !email_domain)) {
		store_error("user update: no change, number or e-mail domain given");
		return OTPD_INTERNAL;
	}
	if (audit && !audit_ok(audit, "user update"))
		return OTPD_INTERNAL;
	j.u.user_update.phone = phone;
	j.u.user_update.create = create;
	j.u.user_update.email_domain = email_domain;
	j.u.user_update.change = c;
	j.u.user_update.audit = audit;
	j.u.user_update.ret = ret;
	j.u.user_update.ret_created = ret_created;
	return run(s, &j);
}

/* ---- the audit log ---- */

enum otpd_status store_audit_append_start(struct store *s, const struct store_audit_entry *e,
                                          store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_AUDIT_APPEND};

	if (!audit_ok(e, "audit append"))
		return OTPD_INTERNAL;
	j.now_ms = e->time_ms;
	j.u.audit.e = e;
	return store_engine_start(s, &j, done, arg);
}

enum otpd_status store_audit_append(struct store *s, const struct store_audit_entry *e)
{
	struct store_job j = {.op = STORE_OP_AUDIT_APPEND};

	if (!audit_ok(e, "audit append"))
		return OTPD_INTERNAL;
	j.now_ms = e->time_ms;
	j.u.audit.e = e;
	return run(s, &j);
}

/* A page's bounds: 1..STORE_PAGE_MAX rows. */
static bool page_ok(size_t cap, const char *what)
{
	if (cap >= 1 && cap <= STORE_PAGE_MAX)
		return true;
	store_error("%s: page size %zu is not 1..%d", what, cap, STORE_PAGE_MAX);
	return false;
}

static enum otpd_status audit_list_job(int64_t before_id, struct store_audit_entry *ret,
                                       size_t cap, size_t *ret_n, struct store_job *j)
{
	if (!page_ok(cap, "audit list") || !ret || !ret_n)
		return OTPD_INTERNAL;
	j->u.audit_list.before_id = before_id > 0 ? before_id : INT64_MAX;
	j->u.audit_list.ret = ret;
	j->u.audit_list.cap = cap;
	j->u.audit_list.ret_n = ret_n;
	return OTPD_OK;
}

enum otpd_status store_audit_list(struct store *s, int64_t before_id,
                                  struct store_audit_entry *ret, size_t cap, size_t *ret_n)
{
	struct store_job j = {.op = STORE_OP_AUDIT_LIST};
	enum otpd_status status = audit_list_job(before_id, ret, cap, ret_n, &j);

	return status == OTPD_OK ? run(s, &j) : status;
}

enum otpd_status store_audit_list_start(struct store *s, int64_t before_id,
                                        struct store_audit_entry *ret, size_t cap,
                                        size_t *ret_n, store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_AUDIT_LIST};
	enum otpd_status status = audit_list_job(before_id, ret, cap, ret_n, &j);

	return status == OTPD_OK ? store_engine_start(s, &j, done, arg) : status;
}

/* ---- users ---- */

enum otpd_status store_user_get_by_phone(struct store *s, const char *phone,
                                         struct store_user *ret)
{
	struct store_job j = {.op = STORE_OP_USER_BY_PHONE};

	if (!phone)
		return OTPD_NOT_FOUND;
	j.u.user.phone = phone;
	j.u.user.ret = ret;
	return run(s, &j);
}

enum otpd_status store_user_get_by_phone_start(struct store *s, const char *phone,
                                               struct store_user *ret,
                                               store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_USER_BY_PHONE};

	if (!phone) {
		store_error("user by number: no number given");
		return OTPD_INTERNAL;
	}
	j.u.user.phone = phone;
	j.u.user.ret = ret;
	return store_engine_start(s, &j, done, arg);
}

/* The characters of a username (Django's: letters, digits and @.+-_). */
static bool username_prefix_ok(const char *p)
{
	size_t n = strnlen(p, STORE_USERNAME_MAX + 1);

	if (n == 0 || n > STORE_USERNAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];

		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      ch == '@' || ch == '.' || ch == '+' || ch == '-' || ch == '_'))
			return false;
	}
	return true;
}

/* Resolve the query into the job; *ret_none: it matches nobody. */
static enum otpd_status users_list_job(const struct store_users_query *q, struct store_user *ret,
                                       size_t cap, size_t *ret_n, struct store_job *j,
                                       bool *ret_none)
{
	struct store_args_users_list *a = &j->u.users;

	*ret_none = false;
	if (!q || !ret || !ret_n || !page_ok(cap, "users list"))
		return OTPD_INTERNAL;
	a->before_id = q->before_id > 0 ? q->before_id : INT64_MAX;
	a->after = q->after_username ? q->after_username : "";
	a->ret = ret;
	a->cap = cap;
	a->ret_n = ret_n;
	if (q->phone && q->phone[0]) {
		a->by = STORE_USERS_BY_PHONE;
		a->phone = q->phone;
	} else if (q->username_prefix && q->username_prefix[0]) {
		size_t n = strlen(q->username_prefix);

		if (!username_prefix_ok(q->username_prefix) || strlen(a->after) > STORE_USERNAME_MAX) {
			*ret_none = true;
			return OTPD_OK;
		}
		a->by = STORE_USERS_BY_PREFIX;
		a->prefix = q->username_prefix;
		/* ASCII only (above): the last byte + 1 is still ASCII ('z' + 1
		 * is '{'), and every username with the prefix sorts below it. */
		memcpy(a->upper, q->username_prefix, n + 1);
		a->upper[n - 1]++;
	} else {
		a->by = STORE_USERS_ALL;
	}
	return OTPD_OK;
}

enum otpd_status store_users_list(struct store *s, const struct store_users_query *q,
                                  struct store_user *ret, size_t cap, size_t *ret_n)
{
	struct store_job j = {.op = STORE_OP_USERS_LIST};
	bool none = false;
	enum otpd_status status = users_list_job(q, ret, cap, ret_n, &j, &none);

	if (status != OTPD_OK)
		return status;
	if (none) {
		*ret_n = 0;
		return OTPD_OK;
	}
	return run(s, &j);
}

enum otpd_status store_users_list_start(struct store *s, const struct store_users_query *q,
                                        struct store_user *ret, size_t cap, size_t *ret_n,
                                        store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_USERS_LIST};
	bool none = false;
	enum otpd_status status = users_list_job(q, ret, cap, ret_n, &j, &none);

	if (status != OTPD_OK)
		return status;
	if (none) { /* still answered from a store thread, like any other */
		j.u.users.by = STORE_USERS_BY_PHONE;
		j.u.users.phone = "";
	}
	return store_engine_start(s, &j, done, arg);
}

/* ---- codes: the search by code ---- */

static enum otpd_status codes_match_job(const char *phone, const uint8_t *hash, int64_t now_ms,
                                        const struct store_audit_entry *audit,
                                        struct store_code_row *ret, size_t cap, size_t *ret_n,
                                        struct store_job *j)
{
	if (!phone || !hash || !ret || !ret_n || !page_ok(cap, "codes match") ||
	    !audit_ok(audit, "codes match"))
		return OTPD_INTERNAL;
	j->now_ms = now_ms;
	j->u.match.phone = phone;
	j->u.match.hash = hash;
	j->u.match.audit = audit;
	j->u.match.ret = ret;
	j->u.match.cap = cap;
	j->u.match.ret_n = ret_n;
	return OTPD_OK;
}

enum otpd_status store_codes_match(struct store *s, const char *phone,
                                   const uint8_t hash[OTP_HASH_LEN], int64_t now_ms,
                                   const struct store_audit_entry *audit,
                                   struct store_code_row *ret, size_t cap, size_t *ret_n)
{
	struct store_job j = {.op = STORE_OP_CODES_MATCH};
	enum otpd_status status = codes_match_job(phone, hash, now_ms, audit, ret, cap, ret_n, &j);

	return status == OTPD_OK ? run(s, &j) : status;
}

enum otpd_status store_codes_match_start(struct store *s, const char *phone,
                                         const uint8_t hash[OTP_HASH_LEN], int64_t now_ms,
                                         const struct store_audit_entry *audit,
                                         struct store_code_row *ret, size_t cap,
                                         size_t *ret_n, store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_CODES_MATCH};
	enum otpd_status status = codes_match_job(phone, hash, now_ms, audit, ret, cap, ret_n, &j);

	return status == OTPD_OK ? store_engine_start(s, &j, done, arg) : status;
}

/* ---- retention: what a purge would delete ---- */

enum otpd_status store_purge_count(struct store *s, int64_t codes_before_ms,
                                   int64_t sessions_before_ms, int64_t max,
                                   struct store_purge_counts *ret)
{
	struct store_job j = {.op = STORE_OP_PURGE_COUNT};

	if (max < 1 || !ret) {
		store_error("purge count: max %lld is not positive", (long long)max);
		return OTPD_INTERNAL;
	}
	j.u.purge_count.codes_before_ms = codes_before_ms;
	j.u.purge_count.sessions_before_ms = sessions_before_ms;
	j.u.purge_count.max = max;
	j.u.purge_count.ret = ret;
	return run(s, &j);
}

/* ---- the staff console's other reads, asynchronously ---- */

enum otpd_status store_codes_list_start(struct store *s, const struct store_codes_query *q,
                                        struct store_code_row *ret, size_t cap,
                                        size_t *ret_n, store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_CODES_LIST};

	if (!q || !ret || !ret_n || !page_ok(cap, "codes list"))
		return OTPD_INTERNAL;
	j.u.codes.phone = q->phone && q->phone[0] ? q->phone : NULL;
	j.u.codes.before_id = q->before_id ? q->before_id : INT64_MAX;
	j.u.codes.since_ms = q->since_ms ? q->since_ms : INT64_MIN;
	j.u.codes.until_ms = q->until_ms ? q->until_ms : INT64_MAX;
	j.u.codes.ret = ret;
	j.u.codes.cap = cap;
	j.u.codes.ret_n = ret_n;
	return store_engine_start(s, &j, done, arg);
}

enum otpd_status store_user_sessions_start(struct store *s, int64_t user_id,
                                           struct store_session_info *ret, size_t cap,
                                           size_t *ret_n, store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_USER_SESSIONS};

	if (!ret || !ret_n || !page_ok(cap, "user sessions"))
		return OTPD_INTERNAL;
	j.u.sessions.user_id = user_id;
	j.u.sessions.ret = ret;
	j.u.sessions.cap = cap;
	j.u.sessions.ret_n = ret_n;
	return store_engine_start(s, &j, done, arg);
}

enum otpd_status store_stats_start(struct store *s, int64_t since_ms, int64_t until_ms,
                                   struct store_stats_bucket *ret, size_t cap,
                                   size_t *ret_n, store_done_fn done, void *arg)
{
	struct store_job j = {.op = STORE_OP_STATS};

	if (cap == 0 || cap > 1000000 || !ret || !ret_n) {
		store_error("stats: cap %zu is not 1..1000000", cap);
		return OTPD_INTERNAL;
	}
	j.u.stats.since_ms = since_ms;
	j.u.stats.until_ms = until_ms > since_ms ? until_ms : since_ms; /* empty: no rows */
	j.u.stats.ret = ret;
	j.u.stats.cap = cap;
	j.u.stats.ret_n = ret_n;
	return store_engine_start(s, &j, done, arg);
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
