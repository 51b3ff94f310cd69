/* The SQLite backend of store.h: group commit.
 *
 * One writer thread per store owns the write connection.  A write operation
 * (secret, issue, cancel, verify, rotate, revoke, purges, SMS accepted,
 * delivery statuses, migrate) packs its arguments into a job and queues it:
 * a synchronous call's job lives on the caller's stack and the caller waits;
 * an asynchronous one (issue, cancel, verify, rotate, revoke, SMS accepted:
 * store_*_start) is a heap copy, and the writer calls its done() (if any)
 * instead, so the request path never holds a thread while it waits.  The
 * writer takes every job queued at that moment (at most BATCH_MAX), runs
 * them in ONE `BEGIN IMMEDIATE ... COMMIT` transaction, each job in a
 * savepoint of its own, and answers them only after the COMMIT has
 * returned.  There is no artificial delay: a batch is whatever queued while
 * the previous one was being synced.  Because jobs run one after another
 * inside a transaction that holds the write lock, the read-decide-write of
 * each rule (single use, attempt counts, send limits, one user per number)
 * still never interleaves with another writer, in this process or another.
 *
 * - A job whose own statements fail is rolled back to its savepoint: it
 *   answers that status, the other jobs of the batch are unaffected.
 * - When BEGIN or COMMIT fails (locked past busy_timeout, disk full, I/O
 *   error), or an error rolls the whole transaction back, nothing of the
 *   batch is durable: every job answers the failure (logged once).
 * - synchronous=FULL in WAL mode syncs the WAL at every commit, so OTPD_OK
 *   means durable, with one sync per batch instead of one per request.
 *
 * Reads that are one statement (ping, user_get, stats, pending deliveries)
 * use a second, read-only
 * connection under its own mutex: they never wait for a batch (WAL).  An
 * in-memory database cannot be shared by two connections; there the reads
 * are jobs too.  Driver errors are translated and logged once, here (see
 * fail()). */
#define _GNU_SOURCE /* pthread_setname_np */
#include "backend.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "../log.h"
#include "../metrics.h"

/* A database error: logged once, here, and counted (otpd_store_errors_total). */
#define store_error(...)                                  \
	do {                                              \
		metrics_store_error();                    \
		log_error("store.error", __VA_ARGS__);    \
	} while (0)

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SAVEPOINT,
	ST_ROLLBACK_TO,
	ST_RELEASE,
	ST_PING,
	ST_MIGRATIONS_TABLE,
	ST_MIGRATION_HAS,
	ST_MIGRATION_ADD,
	ST_MIGRATION_MAX,
	ST_META_INSERT,
	ST_META_GET,
	ST_CODE_RECENT,
	ST_CODE_INSERT,
	ST_CODE_REPLACE,
	ST_CODE_CANCEL,
	ST_CODE_GET,
	ST_CODE_ATTEMPT,
	ST_CODE_USE,
	ST_STATS_ADD,
	ST_STATS_RANGE,
	ST_SMS_ACCEPTED,
	ST_DELIVERY_PENDING,
	ST_DELIVERY_SET,
	ST_HISTORY_PURGE_STATS,
	ST_HISTORY_PURGE_CODES,
	ST_USER_INSERT,
	ST_USER_BY_PHONE,
	ST_USER_BY_ID,
	ST_USER_LOGIN,
	ST_SESSION_INSERT,
	ST_SESSION_GET,
	ST_SESSION_ROTATE,
	ST_FAMILY_REVOKE,
	ST_SESSION_PURGE,
	_ST_MAX,
};

#define USER_COLUMNS \
	"id, phone_number, username, email, first_name, last_name, is_active, is_staff"
#define SESSION_COLUMNS \
	"jti, access_jti, family, created_ms, expires_ms, user_id, state," \
	" rotated_ms, replaced_by"
/* A delivery status is final from STORE_SMS_STATUS_FINAL up; the same
 * number is in the partial index otp_codes_delivery (migration 4), which
 * the pending read must match to use it. */
#define SMS_NOT_FINAL "coalesce(sms_status, 0) < 6"
_Static_assert(STORE_SMS_STATUS_FINAL == 6, "SMS_NOT_FINAL and migration 4 say 6");

/* Every statement otpd runs on SQLite, prepared once (on first use, so that
 * a store can be opened before it is migrated) and reused. */
static const struct {
	const char *name; /* for logs */
	const char *sql;
} stmts[_ST_MAX] = {
	[ST_BEGIN] = {"begin", "BEGIN IMMEDIATE"},
	[ST_COMMIT] = {"commit", "COMMIT"},
	[ST_ROLLBACK] = {"rollback", "ROLLBACK"},
	[ST_SAVEPOINT] = {"savepoint", "SAVEPOINT job"},
	[ST_ROLLBACK_TO] = {"rollback to savepoint", "ROLLBACK TO job"},
	[ST_RELEASE] = {"release savepoint", "RELEASE job"},
	[ST_PING] = {"ping", "SELECT count(*) FROM sqlite_schema"},
	[ST_MIGRATIONS_TABLE] = {"create schema_migrations",
		"CREATE TABLE IF NOT EXISTS schema_migrations ("
		" version INTEGER PRIMARY KEY,"
		" applied_at TEXT NOT NULL" /* ISO 8601, UTC */
		") STRICT"},
	[ST_MIGRATION_HAS] = {"read schema_migrations",
		"SELECT 1 FROM schema_migrations WHERE version = ?1"},
	[ST_MIGRATION_ADD] = {"record migration",
		"INSERT INTO schema_migrations (version, applied_at)"
		" VALUES (?1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"},
	[ST_MIGRATION_MAX] = {"read schema version",
		"SELECT coalesce(max(version), 0) FROM schema_migrations"},
	[ST_META_INSERT] = {"insert secret",
		"INSERT INTO meta (name, value) VALUES (?1, ?2)"
		" ON CONFLICT (name) DO NOTHING"},
	[ST_META_GET] = {"read secret", "SELECT value FROM meta WHERE name = ?1"},
	/* The newest ?2 codes of a number, newest first (the index on phone
	 * holds (phone, rowid)): the first is its current code, and the send
	 * limit counts those created inside the window.  ?2 is the limit:
	 * when fewer than that many are in the window, older ones cannot
	 * matter (ids follow creation). */
	[ST_CODE_RECENT] = {"read recent codes",
		"SELECT id, created_ms, expires_ms, attempts, max_attempts, state"
		" FROM otp_codes WHERE phone = ?1 ORDER BY id DESC LIMIT ?2"},
	[ST_CODE_INSERT] = {"record code",
		"INSERT INTO otp_codes (phone, code_hash, created_ms, expires_ms,"
		" attempts, max_attempts, state) VALUES (?1, ?2, ?3, ?4, 0, ?5, 0)"},
	[ST_CODE_REPLACE] = {"replace code",
		"UPDATE otp_codes SET state = 3, ended_ms = ?2 WHERE id = ?1"},
	/* Active or replaced (its SMS never went out either); never a used
	 * one.  (No IN list: see migration 3.) */
	[ST_CODE_CANCEL] = {"cancel code",
		"UPDATE otp_codes SET state = 2, ended_ms = ?3"
		" WHERE id = ?2 AND phone = ?1 AND (state = 0 OR state = 3)"},
	[ST_CODE_GET] = {"read code",
		"SELECT id, code_hash, created_ms, expires_ms, attempts, max_attempts, state"
		" FROM otp_codes WHERE phone = ?1 ORDER BY id DESC LIMIT 1"},
	/* ?2: when this guess was the last one allowed, else NULL. */
	[ST_CODE_ATTEMPT] = {"count attempt",
		"UPDATE otp_codes SET attempts = attempts + 1, ended_ms = ?2 WHERE id = ?1"},
	[ST_CODE_USE] = {"use code",
		"UPDATE otp_codes SET state = 1, ended_ms = ?2 WHERE id = ?1"},
	/* Add to the counters of bucket ?1 (one statement per operation). */
	[ST_STATS_ADD] = {"count events",
		"INSERT INTO stats_5m (bucket_ms, sends, sms_failures, logins, new_users,"
		" wrong_guesses, locks) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)"
		" ON CONFLICT (bucket_ms) DO UPDATE SET sends = sends + excluded.sends,"
		" sms_failures = sms_failures + excluded.sms_failures,"
		" logins = logins + excluded.logins, new_users = new_users + excluded.new_users,"
		" wrong_guesses = wrong_guesses + excluded.wrong_guesses"},
	[ST_STATS_RANGE] = {"read stats",
		"SELECT bucket_ms, sends, sms_failures, logins, new_users, wrong_guesses,"
		" locks FROM stats_5m WHERE bucket_ms >= ?1 AND bucket_ms < ?2"
		" ORDER BY bucket_ms LIMIT ?3"},
	[ST_SMS_ACCEPTED] = {"record sms accepted",
		"UPDATE otp_codes SET sms_message_id = ?2, sms_status = NULL,"
		" sms_status_ms = ?3 WHERE id = ?1"},
	/* Through the partial index otp_codes_delivery: its WHERE, verbatim. */
	[ST_DELIVERY_PENDING] = {"read pending deliveries",
		"SELECT id, sms_message_id, created_ms, phone FROM otp_codes"
		" WHERE sms_message_id IS NOT NULL AND " SMS_NOT_FINAL
		" AND created_ms > ?1 ORDER BY created_ms, id LIMIT ?2"},
	[ST_DELIVERY_SET] = {"record delivery",
		"UPDATE otp_codes SET sms_status = ?2, sms_status_ms = ?3"
		" WHERE id = ?1 AND " SMS_NOT_FINAL},
	/* Retention, bounded: at most ?2 rows (the caller binds ?2 >= 1), the
	 * oldest, as a range of the key (no list of keys is built). */
	[ST_HISTORY_PURGE_STATS] = {"purge stats",
		"DELETE FROM stats_5m WHERE bucket_ms < ?1 AND bucket_ms <="
		" (SELECT max(bucket_ms) FROM (SELECT bucket_ms FROM stats_5m"
		" ORDER BY bucket_ms LIMIT ?2))"},
	/* Among the ?2 oldest codes (by id), those created before ?1. */
	[ST_HISTORY_PURGE_CODES] = {"purge codes",
		"DELETE FROM otp_codes WHERE created_ms < ?1 AND id <="
		" (SELECT max(id) FROM (SELECT id FROM otp_codes ORDER BY id LIMIT ?2))"},
	/* A first login: the user is created logged in.  No row inserted when
	 * the number exists already.  (No RETURNING: in SQLite 3.40 it builds
	 * an ephemeral table per execution, which was a tenth of the
	 * writer's time; the new row is known from its inputs.) */
	[ST_USER_INSERT] = {"create user",
		"INSERT INTO users (phone_number, username, email, first_name,"
		" last_name, is_active, is_staff, created_at_ms, last_login_ms)"
		" VALUES (?1, ?2, ?3, NULL, NULL, 1, 0, ?4, ?4)"
		" ON CONFLICT (phone_number) DO NOTHING"},
	[ST_USER_BY_PHONE] = {"read user",
		"SELECT " USER_COLUMNS " FROM users WHERE phone_number = ?1"},
	[ST_USER_BY_ID] = {"read user",
		"SELECT " USER_COLUMNS " FROM users WHERE id = ?1"},
	/* A login of a known, active user. */
	[ST_USER_LOGIN] = {"record login",
		"UPDATE users SET last_login_ms = ?2 WHERE id = ?1"},
	[ST_SESSION_INSERT] = {"record session",
		"INSERT INTO refresh_tokens"
		" (jti, family, user_id, access_jti, created_ms, expires_ms, state)"
		" VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)"},
	[ST_SESSION_GET] = {"read session",
		"SELECT " SESSION_COLUMNS " FROM refresh_tokens WHERE jti = ?1"},
	[ST_SESSION_ROTATE] = {"rotate session",
		"UPDATE refresh_tokens SET state = 1, rotated_ms = ?2, replaced_by = ?3"
		" WHERE jti = ?1 AND state = 0"},
	/* Every record of the family of jti ?1, whatever its state. */
	[ST_FAMILY_REVOKE] = {"revoke session family",
		"UPDATE refresh_tokens SET state = 2"
		" WHERE family = (SELECT family FROM refresh_tokens WHERE jti = ?1)"
		" AND state <> 2"},
	/* Bounded: at most ?2 rows.  The caller binds ?2 >= 1 (a negative
	 * LIMIT would mean no limit at all). */
	[ST_SESSION_PURGE] = {"purge sessions",
		"DELETE FROM refresh_tokens WHERE jti IN"
		" (SELECT jti FROM refresh_tokens WHERE expires_ms < ?1"
		" ORDER BY expires_ms LIMIT ?2)"},
};

const char *store_sqlite_statement(size_t i, const char **ret_name)
{
	if (i >= _ST_MAX)
		return NULL;
	if (ret_name)
		*ret_name = stmts[i].name;
	return stmts[i].sql;
}

/* One connection and its prepared statements, used by one thread at a
 * time: the writer thread (the write connection), or whoever holds
 * read_lock (the read connection). */
struct conn {
	sqlite3 *db;
	sqlite3_stmt *stmt[_ST_MAX];
};

#define BATCH_MAX 512 /* jobs per transaction at most */
#define LAZY_MAX_MS 100 /* how long a lazy job may wait for a batch to ride with */

enum job_op {
	JOB_MIGRATE, /* a batch of its own: one transaction per migration */
	JOB_SECRET,
	JOB_ISSUE,
	JOB_CANCEL,
	JOB_VERIFY,
	JOB_ROTATE,
	JOB_REVOKE,
	JOB_PURGE,
	JOB_SMS_ACCEPTED,
	JOB_DELIVERY_SET,
	JOB_HISTORY_PURGE,
	JOB_PING,     /* reads: jobs only when there is no read connection */
	JOB_USER_GET,
	JOB_DELIVERY_PENDING,
	JOB_STATS,
};

/* What one operation adds to the stats bucket of its time (stats_5m):
 * each event at most once. */
struct stats_delta {
	uint8_t sends, sms_failures, logins, new_users, wrong_guesses;
};

/* One operation for the writer: its arguments (borrowed: they stay valid
 * until the job is answered), its results, and how it is answered.  A
 * synchronous job lives on the caller's stack and the caller waits on
 * `done`; an asynchronous one (store_*_start) is malloc'ed by submit_async()
 * and freed by the writer after calling `on_done`. */
struct job {
	struct job *next;
	enum job_op op;
	enum otpd_status status; /* the driver's; OTPD_OK: committed */
	enum otpd_status result; /* the operation's answer when status is OK */
	char request_id[LOG_REQUEST_ID_MAX]; /* the caller's, for log lines */
	sem_t done;              /* synchronous: posted once status, result and u are final */
	bool async;              /* asynchronous: on_done (when not NULL) is called */
	bool lazy;               /* nobody waits: rides with the next batch (enqueue()) */
	struct stats_delta counted; /* what it adds to the stats (run_one()) */
	store_done_fn on_done;   /* instead, then the job is freed */
	void *on_done_arg;
	union {
		struct {
			int applied;
			int64_t version;
		} migrate;
		struct {
			const char *name;
			const uint8_t *fresh;
			size_t len;
			uint8_t *value;
		} secret;
		struct {
			const struct otp_policy *p;
			const char *phone;
			const uint8_t *hash;
			int64_t now_ms;
			struct store_issue_result res;
			struct store_issue_result *ret; /* the caller's: see job_answer() */
		} issue;
		struct {
			const char *phone;
			int64_t otp_id;
			int64_t now_ms;
		} cancel;
		struct {
			int64_t otp_id;
			int64_t message_id;
			int64_t now_ms;
		} sms;
		struct {
			size_t n;
			const struct store_delivery_status *items;
		} delivery;
		struct {
			int64_t since_ms;
			size_t limit;
			struct store_delivery_pending *ret; /* the caller's: see sq_otp_delivery_pending() */
			size_t n;
		} pending;
		struct {
			int64_t since_ms, until_ms;
			struct store_stats_bucket *ret; /* the caller's: see sq_stats() */
			size_t cap;
			size_t n;
		} stats;
		struct {
			const struct otp_policy *p;
			const char *phone;
			const uint8_t *hash;
			const char *email_domain;
			const struct store_session *session;
			int64_t now_ms;
			struct store_verify_result res;
			struct store_verify_result *ret; /* the caller's: see job_answer() */
		} verify;
		struct {
			const char *jti;
			int64_t user_id;
			const struct store_session *next;
			int64_t grace_ms;
			int64_t now_ms;
			struct store_rotate_result res;
			struct store_rotate_result *ret; /* the caller's: see job_answer() */
		} rotate;
		struct {
			const char *jti;
			int revoked;
		} revoke;
		struct {
			int64_t now_ms; /* JOB_HISTORY_PURGE: before_ms */
			int limit;
			int deleted;
		} purge;
		struct {
			int64_t id;
			bool found;
			struct store_user user;
		} user;
	} u;
};

struct sqlite_store {
	struct store base; /* first: a struct store * points here */
	struct conn w;     /* the write connection: the writer thread only */
	struct conn r;     /* read-only; r.db is NULL for :memory: */
	pthread_mutex_t read_lock;  /* guards r */
	pthread_mutex_t queue_lock; /* guards head, tail, stopping */
	pthread_cond_t work;        /* to the writer: jobs queued, or stop */
	struct job *head, *tail;    /* FIFO */
	size_t eager;               /* jobs queued that are not lazy */
	struct timespec lazy_due;   /* CLOCK_MONOTONIC: when queued lazy jobs run at the latest */
	bool lazy_armed;            /* lazy_due is set */
	bool stopping;
	bool writer_idle;           /* waiting on `work` */
	pthread_t writer;
	/* The writer's own counters (read after it has ended): how well
	 * group commit groups. */
	uint64_t batches, batched_jobs, batch_max;
};

static struct sqlite_store *to_sqlite(struct store *base)
{
	return (struct sqlite_store *)base;
}

static enum otpd_status status_of(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
		return OTPD_OK;
	case SQLITE_BUSY:     /* locked by another connection past the timeout */
	case SQLITE_LOCKED:
	case SQLITE_READONLY:
	case SQLITE_FULL:
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
	case SQLITE_PROTOCOL:
		return OTPD_UNAVAILABLE;
	case SQLITE_NOMEM:
		return OTPD_NOMEM;
	default:
		return OTPD_INTERNAL;
	}
}

/* The one place a driver error is logged and translated.  Call it right
 * after the failing call, while sqlite3_errmsg() still describes it.  SQLite
 * messages name tables and constraints, never bound values. */
static enum otpd_status fail(struct conn *c, int rc, const char *what)
{
	enum otpd_status status = status_of(rc);

	store_error( "sqlite: %s: %s", what,
	          c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
	return status == OTPD_OK ? OTPD_INTERNAL : status;
}

static enum otpd_status prepare(struct conn *c, enum stmt_id id,
                                sqlite3_stmt **ret)
{
	if (!c->stmt[id]) {
		int rc = sqlite3_prepare_v3(c->db, stmts[id].sql, -1,
		                            SQLITE_PREPARE_PERSISTENT,
		                            &c->stmt[id], NULL);
		if (rc != SQLITE_OK) {
			c->stmt[id] = NULL;
			return fail(c, rc, stmts[id].name);
		}
	}
	*ret = c->stmt[id];
	return OTPD_OK;
}

/* Make a statement ready for its next use; drop the borrowed bindings. */
static void release(sqlite3_stmt *st)
{
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

/* Step a bound statement that returns no rows, then release it.  rc is the
 * result of the bind calls (SQLITE_OK when they all succeeded). */
static enum otpd_status finish(struct conn *c, enum stmt_id id, int rc)
{
	sqlite3_stmt *st = c->stmt[id];
	enum otpd_status status = OTPD_OK;

	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_DONE || rc == SQLITE_ROW)
			rc = SQLITE_OK;
	}
	if (rc != SQLITE_OK)
		status = fail(c, rc, stmts[id].name);
	release(st);
	return status;
}

/* Step a bound statement expected to return at most one row.  On
 * SQLITE_ROW the statement is left on its row for the caller to read and
 * release; otherwise it is released here.  *ret_found tells which. */
static enum otpd_status fetch(struct conn *c, enum stmt_id id, int rc,
                              bool *ret_found)
{
	sqlite3_stmt *st = c->stmt[id];

	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			*ret_found = true;
			return OTPD_OK;
		}
		if (rc == SQLITE_DONE) {
			release(st);
			*ret_found = false;
			return OTPD_OK;
		}
	}
	enum otpd_status status = fail(c, rc, stmts[id].name);
	release(st);
	return status;
}

static enum otpd_status run_plain(struct conn *c, enum stmt_id id)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, id, &st);

	if (status != OTPD_OK)
		return status;
	return finish(c, id, SQLITE_OK);
}

/* ---- transactions ---- */

static void tx_rollback(struct conn *c)
{
	/* Some errors (IOERR, FULL, NOMEM, BUSY on commit) may already have
	 * rolled the transaction back. */
	if (sqlite3_get_autocommit(c->db))
		return;
	if (run_plain(c, ST_ROLLBACK) != OTPD_OK)
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

static enum otpd_status tx_begin(struct conn *c)
{
	/* Never build on a transaction an earlier failure left open. */
	tx_rollback(c);
	return run_plain(c, ST_BEGIN);
}

static enum otpd_status tx_commit(struct conn *c)
{
	return run_plain(c, ST_COMMIT);
}

/* Commit when status is OTPD_OK, else roll back; returns the final status. */
static enum otpd_status tx_end(struct conn *c, enum otpd_status status)
{
	if (status == OTPD_OK)
		status = tx_commit(c);
	if (status != OTPD_OK)
		tx_rollback(c);
	return status;
}

static int bind_text(sqlite3_stmt *st, int i, const char *text)
{
	return sqlite3_bind_text(st, i, text, -1, SQLITE_STATIC);
}

/* ---- the queue: callers hand jobs to the writer ---- */

static void enqueue(struct sqlite_store *s, struct job *j)
{
	j->next = NULL;
	j->status = OTPD_INTERNAL;
	j->result = OTPD_INTERNAL;
	snprintf(j->request_id, sizeof(j->request_id), "%s", log_get_request_id());
	pthread_mutex_lock(&s->queue_lock);
	if (s->tail)
		s->tail->next = j;
	else
		s->head = j;
	s->tail = j;
	/* The writer is either waiting for work (signal it) or running a
	 * batch (it looks at the queue again before it waits).  A lazy job
	 * (nobody waits for it) wakes it only to set the deadline of its
	 * wait: until then it rides with whatever batch comes first, and
	 * costs no commit of its own. */
	if (!j->lazy)
		s->eager++;
	if (s->writer_idle && (!j->lazy || !s->lazy_armed))
		pthread_cond_signal(&s->work);
	pthread_mutex_unlock(&s->queue_lock);
}

/* Queue j for the writer and wait until its batch is answered: committed,
 * or failed.  The calling thread waits while the batch in progress
 * commits, then while its own does. */
static void submit(struct sqlite_store *s, struct job *j)
{
	j->async = false;
	j->on_done = NULL;
	if (sem_init(&j->done, 0, 0) != 0) {
		store_error( "cannot create a semaphore");
		j->status = OTPD_INTERNAL;
		return;
	}
	enqueue(s, j);
	/* Only this job's own answer wakes this thread. */
	while (sem_wait(&j->done) != 0)
		; /* EINTR */
	sem_destroy(&j->done);
}

/* Queue a copy of *proto (op and arguments) and return at once; the writer
 * calls done(arg, answer) after the batch (done NULL: nobody), then frees
 * the copy. */
static enum otpd_status submit_async(struct sqlite_store *s, const struct job *proto,
                                     store_done_fn done, void *arg)
{
	struct job *j = malloc(sizeof(*j));

	if (!j)
		return OTPD_NOMEM;
	*j = *proto;
	j->async = true;
	j->on_done = done;
	j->on_done_arg = arg;
	j->lazy = !done && proto->op == JOB_SMS_ACCEPTED;
	enqueue(s, j);
	return OTPD_OK;
}

/* What an answered job says to its caller: the driver's failure, else the
 * operation's own answer (for the operations that have one).  Its result
 * struct is copied to the caller's only with an answer that carries data:
 * any other leaves the caller's untouched. */
static enum otpd_status job_answer(const struct job *j)
{
	if (j->status != OTPD_OK)
		return j->status;
	switch (j->op) {
	case JOB_ISSUE:
		*j->u.issue.ret = j->u.issue.res; /* otp_id, or retry_after_s */
		return j->result;
	case JOB_VERIFY:
		if (j->result == OTPD_OK || j->result == OTPD_INVALID_CODE ||
		    j->result == OTPD_USER_INACTIVE)
			*j->u.verify.ret = j->u.verify.res;
		return j->result;
	case JOB_ROTATE:
		if (j->result == OTPD_OK) {
			*j->u.rotate.ret = j->u.rotate.res;
		} else if (j->result == OTPD_INVALID_TOKEN) {
			j->u.rotate.ret->reuse_detected = j->u.rotate.res.reuse_detected;
			j->u.rotate.ret->revoked_records = j->u.rotate.res.revoked_records;
		}
		return j->result;
	default:
		return OTPD_OK;
	}
}

/* ---- migrations ---- */

/* Apply version `version` unless it is recorded already; one transaction. */
static enum otpd_status migrate_one(struct conn *c, int version,
                                    const char *sql, bool *ret_applied)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status;
	bool found = false;
	int rc;

	status = tx_begin(c);
	if (status != OTPD_OK)
		return status;
	status = run_plain(c, ST_MIGRATIONS_TABLE);
	if (status != OTPD_OK)
		goto out;
	status = prepare(c, ST_MIGRATION_HAS, &st);
	if (status != OTPD_OK)
		goto out;
	status = fetch(c, ST_MIGRATION_HAS, sqlite3_bind_int(st, 1, version), &found);
	if (status != OTPD_OK)
		goto out;
	if (found) {
		release(st);
		goto out;
	}
	rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		char what[64];
		snprintf(what, sizeof(what), "migration %d", version);
		status = fail(c, rc, what);
		goto out;
	}
	status = prepare(c, ST_MIGRATION_ADD, &st);
	if (status != OTPD_OK)
		goto out;
	status = finish(c, ST_MIGRATION_ADD, sqlite3_bind_int(st, 1, version));
out:
	status = tx_end(c, status);
	if (status == OTPD_OK)
		*ret_applied = !found;
	return status;
}

static enum otpd_status schema_version(struct conn *c, int64_t *ret)
{
	sqlite3_stmt *st = NULL;
	bool found;
	enum otpd_status status = prepare(c, ST_MIGRATION_MAX, &st);

	if (status != OTPD_OK)
		return status;
	status = fetch(c, ST_MIGRATION_MAX, SQLITE_OK, &found);
	if (status != OTPD_OK || !found)
		return status;
	*ret = sqlite3_column_int64(st, 0);
	release(st);
	return OTPD_OK;
}

/* Every pending migration, each in its own transaction (the writer runs
 * this alone, outside any batch).  A migration that copies a table sorts
 * its keys to build the indexes (version 4: 10 M codes, some 800 MB): the
 * sorter spills to temporary files meanwhile, not to memory as a job's
 * savepoint journal does (temp_store=MEMORY, store_sqlite_open()). */
static enum otpd_status migrate_all(struct conn *c, int *ret_applied,
                                    int64_t *ret_version)
{
	enum otpd_status status = OTPD_OK;
	int applied = 0;

	if (sqlite3_exec(c->db, "PRAGMA temp_store=FILE", NULL, NULL, NULL) != SQLITE_OK)
		log_warn("store.migrate", "sqlite: temp_store=FILE: %s", sqlite3_errmsg(c->db));
	for (size_t i = 0; i < store_sqlite_migrations_count && status == OTPD_OK; i++) {
		bool did = false;
		status = migrate_one(c, (int)i + 1, store_sqlite_migrations[i], &did);
		applied += did;
	}
	if (sqlite3_exec(c->db, "PRAGMA temp_store=MEMORY", NULL, NULL, NULL) != SQLITE_OK)
		log_warn("store.migrate", "sqlite: temp_store=MEMORY: %s", sqlite3_errmsg(c->db));
	if (status != OTPD_OK)
		return status;
	*ret_applied = applied;
	return schema_version(c, ret_version);
}

static enum otpd_status sq_migrate(struct store *base, int *ret_applied)
{
	struct sqlite_store *s = to_sqlite(base);
	struct job j = {.op = JOB_MIGRATE};

	submit(s, &j);
	if (j.status != OTPD_OK)
		return j.status;
	if (j.u.migrate.version > (int64_t)store_sqlite_migrations_count)
		log_warn("store.migrate",
		         "database schema version %lld is newer than this otpd's %zu",
		         (long long)j.u.migrate.version, store_sqlite_migrations_count);
	*ret_applied = j.u.migrate.applied;
	return OTPD_OK;
}

/* ---- ping ---- */

static enum otpd_status ping_tx(struct conn *c)
{
	sqlite3_stmt *st = NULL;
	bool found;
	enum otpd_status status = prepare(c, ST_PING, &st);

	if (status == OTPD_OK)
		status = fetch(c, ST_PING, SQLITE_OK, &found);
	if (status == OTPD_OK && found)
		release(st);
	return status;
}

static enum otpd_status sq_ping(struct store *base)
{
	struct sqlite_store *s = to_sqlite(base);
	enum otpd_status status;

	if (!s->r.db) {
		struct job j = {.op = JOB_PING};
		submit(s, &j);
		return j.status;
	}
	pthread_mutex_lock(&s->read_lock);
	status = ping_tx(&s->r);
	pthread_mutex_unlock(&s->read_lock);
	return status;
}

/* ---- secrets ---- */

static enum otpd_status secret_tx(struct conn *c, const char *name,
                                  const uint8_t *fresh, size_t len,
                                  uint8_t *ret)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status;
	bool found;
	int rc;

	status = prepare(c, ST_META_INSERT, &st);
	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, name);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(st, 2, fresh, (int)len, SQLITE_STATIC);
	status = finish(c, ST_META_INSERT, rc);
	if (status != OTPD_OK)
		return status;

	status = prepare(c, ST_META_GET, &st);
	if (status != OTPD_OK)
		return status;
	status = fetch(c, ST_META_GET, bind_text(st, 1, name), &found);
	if (status != OTPD_OK)
		return status;
	if (!found) {
		store_error( "sqlite: secret '%s' vanished", name);
		return OTPD_INTERNAL;
	}
	const void *value = sqlite3_column_blob(st, 0);
	int n = sqlite3_column_bytes(st, 0);
	if (!value || n < 0 || (size_t)n != len) {
		/* The length only: never the value. */
		store_error(
		          "sqlite: secret '%s' holds %d bytes, expected %zu",
		          name, n, len);
		status = OTPD_INTERNAL;
	} else {
		memcpy(ret, value, len);
	}
	release(st);
	return status;
}

static enum otpd_status sq_secret_get_or_create(struct store *base,
                                                const char *name,
                                                const uint8_t *fresh,
                                                size_t len, uint8_t *ret,
                                                size_t ret_len)
{
	struct sqlite_store *s = to_sqlite(base);
	struct job j = {.op = JOB_SECRET};
	uint8_t *value;

	if (len == 0 || len > 65536 || ret_len != len) {
		store_error( "secret '%s': bad length %zu (buffer %zu)",
		          name, len, ret_len);
		return OTPD_INTERNAL;
	}
	value = malloc(len); /* ret stays untouched until the commit */
	if (!value)
		return OTPD_NOMEM;
	j.u.secret.name = name;
	j.u.secret.fresh = fresh;
	j.u.secret.len = len;
	j.u.secret.value = value;
	submit(s, &j);
	if (j.status == OTPD_OK)
		memcpy(ret, value, len);
	otp_wipe(value, len);
	free(value);
	return j.status;
}

/* ---- the dashboard's counters ---- */

/* The start of the bucket holding ms (floor, also before 1970). */
static int64_t stats_bucket(int64_t ms)
{
	int64_t r = ms % STORE_STATS_BUCKET_MS;

	return ms - (r < 0 ? r + STORE_STATS_BUCKET_MS : r);
}

static bool stats_any(const struct stats_delta *d)
{
	return d->sends || d->sms_failures || d->logins || d->new_users || d->wrong_guesses;
}

/* A batch's events in one bucket. */
struct stats_sums {
	int sends, sms_failures, logins, new_users, wrong_guesses;
};

/* One UPSERT into bucket bucket_ms. */
static enum otpd_status stats_add(struct conn *c, int64_t bucket_ms,
                                  const struct stats_sums *d)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_STATS_ADD, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, bucket_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 2, d->sends);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 3, d->sms_failures);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 4, d->logins);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 5, d->new_users);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 6, d->wrong_guesses);
	return finish(c, ST_STATS_ADD, rc);
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
	struct stats_sums d[BATCH_BUCKETS];
};

static enum otpd_status batch_stats_flush(struct conn *c, struct batch_stats *bs)
{
	enum otpd_status status = OTPD_OK;

	for (int i = 0; i < bs->n && status == OTPD_OK; i++)
		status = stats_add(c, bs->bucket_ms[i], &bs->d[i]);
	bs->n = 0;
	return status;
}

static enum otpd_status batch_stats_add(struct conn *c, struct batch_stats *bs,
                                        int64_t now_ms, const struct stats_delta *d)
{
	int64_t bucket_ms = stats_bucket(now_ms);
	enum otpd_status status = OTPD_OK;
	int i;

	for (i = 0; i < bs->n && bs->bucket_ms[i] != bucket_ms; i++)
		;
	if (i == BATCH_BUCKETS) { /* times far apart: write what is summed */
		status = batch_stats_flush(c, bs);
		i = 0;
	}
	if (i == bs->n) {
		bs->bucket_ms[i] = bucket_ms;
		memset(&bs->d[i], 0, sizeof(bs->d[i]));
		bs->n++;
	}
	bs->d[i].sends += d->sends;
	bs->d[i].sms_failures += d->sms_failures;
	bs->d[i].logins += d->logins;
	bs->d[i].new_users += d->new_users;
	bs->d[i].wrong_guesses += d->wrong_guesses;
	return status;
}

/* Bind ?1 and ?2 of a statement that takes a row id and a time. */
static int bind_id_ms(sqlite3_stmt *st, int64_t id, int64_t ms)
{
	int rc = sqlite3_bind_int64(st, 1, id);

	return rc == SQLITE_OK ? sqlite3_bind_int64(st, 2, ms) : rc;
}

/* ---- send a code ---- */

/* What issue_tx needs of a number's newest codes: its current code, and
 * the codes that count towards the send limit. */
struct send_window {
	bool has_current;
	int64_t current_id;
	bool current_valid;  /* active, attempts left, not expired */
	int count;           /* created after since_ms */
	int64_t oldest_ms;   /* the oldest of those */
};

static enum otpd_status send_window(struct conn *c, const char *phone,
                                    int limit, int64_t since_ms, int64_t now_ms,
                                    struct send_window *ret)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status;
	struct send_window w = {.oldest_ms = now_ms};
	int rc;

	status = prepare(c, ST_CODE_RECENT, &st);
	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, phone);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 2, limit > 0 ? limit : 1);
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t created_ms = sqlite3_column_int64(st, 1);

		if (!w.has_current) {
			w.has_current = true;
			w.current_id = sqlite3_column_int64(st, 0);
			w.current_valid = sqlite3_column_int(st, 5) == OTP_CODE_ACTIVE &&
			                  sqlite3_column_int(st, 3) < sqlite3_column_int(st, 4) &&
			                  now_ms < sqlite3_column_int64(st, 2);
		}
		if (created_ms > since_ms) {
			w.count++;
			if (created_ms < w.oldest_ms)
				w.oldest_ms = created_ms;
		}
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE) {
		status = fail(c, rc, stmts[ST_CODE_RECENT].name);
		release(st);
		return status;
	}
	release(st);
	*ret = w;
	return OTPD_OK;
}

static enum otpd_status issue_tx(struct conn *c,
                                 const struct otp_policy *p, const char *phone,
                                 const uint8_t hash[OTP_HASH_LEN],
                                 int64_t now_ms, enum otpd_status *ret_result,
                                 struct store_issue_result *res,
                                 struct stats_delta *counted)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status;
	struct send_window w = {0};
	int retry_after_s = 0, rc;

	status = send_window(c, phone, p->send_limit, now_ms - p->send_window_ms, now_ms, &w);
	if (status != OTPD_OK)
		return status;
	if (!otp_policy_send_allowed(p, w.count, w.oldest_ms, now_ms, &retry_after_s)) {
		/* Refused: nothing is recorded. */
		res->retry_after_s = retry_after_s;
		*ret_result = OTPD_OTP_RATE_LIMITED;
		return OTPD_OK;
	}

	/* One current code per phone: the new row replaces the earlier code,
	 * which stops working (docs/API.md §3).  One that is over already
	 * (used, cancelled, expired, exhausted) keeps what it became. */
	if (w.current_valid) {
		status = prepare(c, ST_CODE_REPLACE, &st);
		if (status != OTPD_OK)
			return status;
		status = finish(c, ST_CODE_REPLACE, bind_id_ms(st, w.current_id, now_ms));
		if (status != OTPD_OK)
			return status;
	}

	status = prepare(c, ST_CODE_INSERT, &st);
	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, phone);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(st, 2, hash, OTP_HASH_LEN, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, now_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 4, now_ms + p->expiry_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 5, p->max_attempts);
	status = finish(c, ST_CODE_INSERT, rc);
	if (status != OTPD_OK)
		return status;
	res->otp_id = sqlite3_last_insert_rowid(c->db); /* under the lock */
	counted->sends = 1;
	*ret_result = OTPD_OK;
	return OTPD_OK;
}

static enum otpd_status sq_otp_issue(struct store *base,
                                     const struct otp_policy *p,
                                     const char *phone,
                                     const uint8_t hash[OTP_HASH_LEN],
                                     int64_t now_ms,
                                     struct store_issue_result *ret,
                                     store_done_fn done, void *arg)
{
	struct job j = {.op = JOB_ISSUE};

	j.u.issue.p = p;
	j.u.issue.phone = phone;
	j.u.issue.hash = hash;
	j.u.issue.now_ms = now_ms;
	j.u.issue.ret = ret; /* OTPD_OK: otp_id; OTPD_OTP_RATE_LIMITED: retry_after_s */
	return submit_async(to_sqlite(base), &j, done, arg);
}

/* ---- cancel a code ---- */

static enum otpd_status cancel_tx(struct conn *c, const char *phone,
                                  int64_t otp_id, int64_t now_ms,
                                  struct stats_delta *counted)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_CODE_CANCEL, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, phone);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, otp_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, now_ms);
	status = finish(c, ST_CODE_CANCEL, rc);
	if (status == OTPD_OK && sqlite3_changes(c->db) == 1)
		counted->sms_failures = 1; /* it changed: counted once */
	return status;
}

static enum otpd_status sq_otp_cancel(struct store *base, const char *phone,
                                      int64_t otp_id, int64_t now_ms,
                                      store_done_fn done, void *arg)
{
	struct job j = {.op = JOB_CANCEL};

	j.u.cancel.phone = phone;
	j.u.cancel.otp_id = otp_id;
	j.u.cancel.now_ms = now_ms;
	return submit_async(to_sqlite(base), &j, done, arg);
}

/* ---- verify a code and log in ---- */

/* The phone's current code: its newest. */
static enum otpd_status code_get(struct conn *c, const char *phone,
                                 bool *ret_found, int64_t *ret_id,
                                 int *ret_max_attempts, struct otp_record *ret_rec,
                                 uint8_t ret_hash[OTP_HASH_LEN])
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_CODE_GET, &st);
	bool found;

	if (status != OTPD_OK)
		return status;
	status = fetch(c, ST_CODE_GET, bind_text(st, 1, phone), &found);
	if (status != OTPD_OK)
		return status;
	if (!found) {
		*ret_found = false;
		return OTPD_OK;
	}
	const void *hash = sqlite3_column_blob(st, 1);
	if (!hash || sqlite3_column_bytes(st, 1) != OTP_HASH_LEN) {
		store_error( "sqlite: otp_codes.code_hash has %d bytes",
		          sqlite3_column_bytes(st, 1));
		release(st);
		return OTPD_INTERNAL;
	}
	memcpy(ret_hash, hash, OTP_HASH_LEN);
	*ret_id = sqlite3_column_int64(st, 0);
	ret_rec->created_ms = sqlite3_column_int64(st, 2);
	ret_rec->expires_ms = sqlite3_column_int64(st, 3);
	ret_rec->attempts = sqlite3_column_int(st, 4);
	*ret_max_attempts = sqlite3_column_int(st, 5);
	switch (sqlite3_column_int(st, 6)) { /* the CHECK allows 0..3 */
	case OTP_CODE_ACTIVE:
		ret_rec->state = OTP_CODE_ACTIVE;
		break;
	case OTP_CODE_USED:
		ret_rec->state = OTP_CODE_USED;
		break;
	case OTP_CODE_CANCELLED:
		ret_rec->state = OTP_CODE_CANCELLED;
		break;
	default:
		ret_rec->state = OTP_CODE_REPLACED;
		break;
	}
	*ret_found = true;
	release(st);
	return OTPD_OK;
}

/* ST_CODE_ATTEMPT or ST_CODE_USE on code id; ended_ms < 0 binds NULL. */
static enum otpd_status code_update(struct conn *c, enum stmt_id id,
                                    int64_t code_id, int64_t ended_ms)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, id, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, code_id);
	if (rc == SQLITE_OK)
		rc = ended_ms < 0 ? sqlite3_bind_null(st, 2) : sqlite3_bind_int64(st, 2, ended_ms);
	return finish(c, id, rc);
}

/* Copy text column `col` into dst (cap bytes with the NUL).  NULL becomes
 * "" with *ret_present false.  False when it does not fit. */
static bool column_text(sqlite3_stmt *st, int col, char *dst, size_t cap,
                        bool *ret_present)
{
	bool present = sqlite3_column_type(st, col) != SQLITE_NULL;
	const unsigned char *text = sqlite3_column_text(st, col);
	int n = sqlite3_column_bytes(st, col);

	if (present && (!text || n < 0 || (size_t)n >= cap))
		return false;
	if (present)
		memcpy(dst, text, (size_t)n);
	dst[present ? n : 0] = '\0';
	if (ret_present)
		*ret_present = present;
	return true;
}

/* Read a row of USER_COLUMNS.  Does not release the statement. */
static enum otpd_status user_row(sqlite3_stmt *st, struct store_user *ret)
{
	struct store_user u;

	memset(&u, 0, sizeof(u));
	u.id = sqlite3_column_int64(st, 0);
	if (!column_text(st, 1, u.phone_number, sizeof(u.phone_number), NULL) ||
	    !column_text(st, 2, u.username, sizeof(u.username), NULL) ||
	    !column_text(st, 3, u.email, sizeof(u.email), NULL) ||
	    !column_text(st, 4, u.first_name, sizeof(u.first_name),
	                 &u.has_first_name) ||
	    !column_text(st, 5, u.last_name, sizeof(u.last_name),
	                 &u.has_last_name)) {
		store_error(
		          "sqlite: user %lld has a field longer than otpd allows",
		          (long long)u.id);
		return OTPD_INTERNAL;
	}
	u.is_active = sqlite3_column_int(st, 6) != 0;
	u.is_staff = sqlite3_column_int(st, 7) != 0;
	*ret = u;
	return OTPD_OK;
}

/* The user of a right code, and the login recorded: a known active user
 * is read and its last_login_ms set (two statements); a new one is
 * created logged in (a read that finds nothing, then the INSERT).  One user
 * per number even when raced: the write lock is held across both, and
 * UNIQUE backs it.  A known but inactive user is read, and no login is
 * recorded (the caller answers user_inactive). */
static enum otpd_status user_login(struct conn *c, const char *phone,
                                   const char *email_domain, int64_t now_ms,
                                   bool *ret_is_new, struct store_user *ret)
{
	const char *digits = otp_phone_digits(phone);
	struct store_user u;
	sqlite3_stmt *st = NULL;
	enum otpd_status status;
	bool found;
	int n, rc;

	*ret_is_new = false;
	status = prepare(c, ST_USER_BY_PHONE, &st);
	if (status != OTPD_OK)
		return status;
	status = fetch(c, ST_USER_BY_PHONE, bind_text(st, 1, phone), &found);
	if (status != OTPD_OK)
		return status;
	if (found) {
		status = user_row(st, ret);
		release(st);
		if (status != OTPD_OK || !ret->is_active)
			return status;
		status = prepare(c, ST_USER_LOGIN, &st);
		if (status != OTPD_OK)
			return status;
		rc = sqlite3_bind_int64(st, 1, ret->id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(st, 2, now_ms);
		return finish(c, ST_USER_LOGIN, rc);
	}

	memset(&u, 0, sizeof(u));
	n = digits && digits[0] ? snprintf(u.email, sizeof(u.email), "%s@%s", digits,
	                      email_domain ? email_domain : "")
	           : -1;
	if (n < 0 || (size_t)n >= sizeof(u.email) ||
	    strlen(phone) >= sizeof(u.phone_number) || strlen(digits) >= sizeof(u.username)) {
		store_error( "not a normalised phone number, or e-mail domain too long");
		return OTPD_INTERNAL;
	}
	strcpy(u.phone_number, phone);
	strcpy(u.username, digits);
	u.is_active = true;
	u.is_staff = false;
	status = prepare(c, ST_USER_INSERT, &st);
	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, phone);
	if (rc == SQLITE_OK)
		rc = bind_text(st, 2, digits);
	if (rc == SQLITE_OK)
		rc = bind_text(st, 3, u.email);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 4, now_ms);
	status = finish(c, ST_USER_INSERT, rc);
	if (status != OTPD_OK)
		return status;
	if (sqlite3_changes(c->db) != 1) {
		/* Cannot happen under the write lock: the read found no row. */
		store_error( "sqlite: a new user's number is taken");
		return OTPD_INTERNAL;
	}
	u.id = sqlite3_last_insert_rowid(c->db);
	*ret_is_new = true;
	*ret = u;
	return OTPD_OK;
}

/* Insert a live refresh-token record: session's jti, access_jti and
 * times, in `family` (a login's own, or the family a rotation continues). */
static enum otpd_status session_insert(struct conn *c,
                                       const struct store_session *session,
                                       const char *family, int64_t user_id)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_SESSION_INSERT, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, session->jti);
	if (rc == SQLITE_OK)
		rc = bind_text(st, 2, family);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, user_id);
	if (rc == SQLITE_OK)
		rc = bind_text(st, 4, session->access_jti);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 5, session->created_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 6, session->expires_ms);
	return finish(c, ST_SESSION_INSERT, rc);
}

static enum otpd_status verify_tx(struct conn *c,
                                  const struct otp_policy *p,
                                  const char *phone,
                                  const uint8_t hash[OTP_HASH_LEN],
                                  const char *email_domain,
                                  const struct store_session *session,
                                  int64_t now_ms, enum otpd_status *ret_result,
                                  struct store_verify_result *res,
                                  struct stats_delta *counted)
{
	struct otp_policy judged = *p;
	struct otp_record rec;
	struct otp_verdict v;
	uint8_t stored[OTP_HASH_LEN];
	enum otpd_status status;
	bool found = false, match = false;
	int64_t code_id = 0;
	int max_attempts = 0;

	memset(&rec, 0, sizeof(rec));
	status = code_get(c, phone, &found, &code_id, &max_attempts, &rec, stored);
	if (status != OTPD_OK)
		return status;
	if (found)
		match = otp_hash_equal(stored, hash); /* in C, constant time */
	otp_wipe(stored, sizeof(stored));

	/* The attempts the code was issued with, unless the policy allows
	 * fewer now (a lowered OTP_MAX_ATTEMPTS applies at once). */
	if (found && max_attempts < judged.max_attempts)
		judged.max_attempts = max_attempts;
	v = otp_policy_judge(&judged, found ? &rec : NULL, match, now_ms);
	if (v.count_attempt) {
		/* The last guess allowed ends the code (exhausted). */
		bool last = (int64_t)rec.attempts + 1 >= judged.max_attempts;

		status = code_update(c, ST_CODE_ATTEMPT, code_id, last ? now_ms : -1);
		if (status != OTPD_OK)
			return status;
		counted->wrong_guesses = 1;
	}
	if (v.consume) {
		status = code_update(c, ST_CODE_USE, code_id, now_ms);
		if (status != OTPD_OK)
			return status;
	}
	if (v.status != OTPD_OK) {
		res->remaining_attempts = v.remaining_attempts;
		*ret_result = v.status;
		return OTPD_OK; /* commit the counted attempt */
	}

	status = user_login(c, phone, email_domain, now_ms, &res->is_new_user,
	                    &res->user);
	if (status != OTPD_OK)
		return status;
	if (!res->user.is_active) {
		/* docs/API.md §3: user_inactive; the code is used up all the
		 * same, and it is not a login (no last_login, no session). */
		*ret_result = OTPD_USER_INACTIVE;
		return OTPD_OK;
	}
	if (session) {
		status = session_insert(c, session, session->family, res->user.id);
		if (status != OTPD_OK)
			return status;
	}
	counted->logins = 1;
	counted->new_users = res->is_new_user;
	*ret_result = OTPD_OK;
	return OTPD_OK;
}

static enum otpd_status sq_otp_verify(struct store *base,
                                      const struct otp_policy *p,
                                      const char *phone,
                                      const uint8_t hash[OTP_HASH_LEN],
                                      const char *email_domain,
                                      const struct store_session *session,
                                      int64_t now_ms,
                                      struct store_verify_result *ret,
                                      store_done_fn done, void *arg)
{
	struct job j = {.op = JOB_VERIFY};

	j.u.verify.p = p;
	j.u.verify.phone = phone;
	j.u.verify.hash = hash;
	j.u.verify.email_domain = email_domain;
	j.u.verify.session = session;
	j.u.verify.now_ms = now_ms;
	j.u.verify.ret = ret;
	return submit_async(to_sqlite(base), &j, done, arg);
}

/* ---- users ---- */

static enum otpd_status user_by_id(struct conn *c, int64_t id,
                                   bool *ret_found, struct store_user *ret)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_USER_BY_ID, &st);

	if (status == OTPD_OK)
		status = fetch(c, ST_USER_BY_ID, sqlite3_bind_int64(st, 1, id), ret_found);
	if (status == OTPD_OK && *ret_found) {
		status = user_row(st, ret);
		release(st);
	}
	return status;
}

static enum otpd_status sq_user_get(struct store *base, int64_t id,
                                    struct store_user *ret)
{
	struct sqlite_store *s = to_sqlite(base);
	struct job j = {.op = JOB_USER_GET};

	j.u.user.id = id;
	if (s->r.db) {
		pthread_mutex_lock(&s->read_lock);
		j.status = user_by_id(&s->r, id, &j.u.user.found, &j.u.user.user);
		pthread_mutex_unlock(&s->read_lock);
	} else {
		submit(s, &j);
	}
	if (j.status != OTPD_OK)
		return j.status;
	if (!j.u.user.found)
		return OTPD_NOT_FOUND;
	*ret = j.u.user.user;
	return OTPD_OK;
}

/* ---- sessions: rotate, revoke, purge ---- */

enum session_state { SESSION_LIVE = 0, SESSION_ROTATED = 1, SESSION_REVOKED = 2 };

/* A refresh_tokens row (SESSION_COLUMNS). */
struct session_row {
	struct store_session sess;
	int64_t user_id;
	int state;
	bool has_rotated_ms;
	int64_t rotated_ms;
	char replaced_by[STORE_JTI_LEN + 1]; /* "" when NULL */
};

static enum otpd_status session_get(struct conn *c, const char *jti,
                                    bool *ret_found, struct session_row *ret)
{
	struct session_row r;
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_SESSION_GET, &st);
	bool found;

	if (status != OTPD_OK)
		return status;
	status = fetch(c, ST_SESSION_GET, bind_text(st, 1, jti), &found);
	if (status != OTPD_OK)
		return status;
	if (!found) {
		*ret_found = false;
		return OTPD_OK;
	}
	memset(&r, 0, sizeof(r));
	if (!column_text(st, 0, r.sess.jti, sizeof(r.sess.jti), NULL) ||
	    !column_text(st, 1, r.sess.access_jti, sizeof(r.sess.access_jti), NULL) ||
	    !column_text(st, 2, r.sess.family, sizeof(r.sess.family), NULL) ||
	    !column_text(st, 8, r.replaced_by, sizeof(r.replaced_by), NULL)) {
		store_error(
		          "sqlite: a refresh_tokens record has a jti longer than %d",
		          STORE_JTI_LEN);
		release(st);
		return OTPD_INTERNAL;
	}
	r.sess.created_ms = sqlite3_column_int64(st, 3);
	r.sess.expires_ms = sqlite3_column_int64(st, 4);
	r.user_id = sqlite3_column_int64(st, 5);
	r.state = sqlite3_column_int(st, 6);
	r.has_rotated_ms = sqlite3_column_type(st, 7) != SQLITE_NULL;
	r.rotated_ms = sqlite3_column_int64(st, 7);
	release(st);
	*ret = r;
	*ret_found = true;
	return OTPD_OK;
}

/* Revoke every record of the family of jti (a no-op when jti is unknown);
 * *ret_revoked says how many records changed state. */
static enum otpd_status family_revoke(struct conn *c, const char *jti,
                                      int *ret_revoked)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_FAMILY_REVOKE, &st);

	if (status != OTPD_OK)
		return status;
	status = finish(c, ST_FAMILY_REVOKE, bind_text(st, 1, jti));
	if (status == OTPD_OK)
		*ret_revoked = sqlite3_changes(c->db);
	return status;
}

/* Mark live record `jti` rotated at now_ms, replaced by `next_jti`. */
static enum otpd_status session_mark_rotated(struct conn *c,
                                             const char *jti,
                                             const char *next_jti,
                                             int64_t now_ms)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_SESSION_ROTATE, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, jti);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, now_ms);
	if (rc == SQLITE_OK)
		rc = bind_text(st, 3, next_jti);
	status = finish(c, ST_SESSION_ROTATE, rc);
	if (status == OTPD_OK && sqlite3_changes(c->db) != 1) {
		/* We hold the write lock and have just read state 0. */
		store_error( "sqlite: a live refresh record changed under the write lock");
		return OTPD_INTERNAL;
	}
	return status;
}

/* The decisions of store_session_rotate (store.h), in the order listed
 * there.  Returns the driver status; the answer goes to *ret_result.  Any
 * answer commits: only the OK and replay answers have written anything. */
static enum otpd_status rotate_tx(struct conn *c, const char *jti,
                                  int64_t user_id,
                                  const struct store_session *next,
                                  int64_t grace_ms, int64_t now_ms,
                                  enum otpd_status *ret_result,
                                  struct store_rotate_result *res)
{
	struct session_row cur, succ;
	enum otpd_status status;
	bool found = false;
	int revoked = 0;

	*ret_result = OTPD_INVALID_TOKEN;
	res->reuse_detected = false;
	res->revoked_records = 0;
	status = session_get(c, jti, &found, &cur);
	if (status != OTPD_OK || !found)
		return status;
	/* Expired: the token's exp (expires_ms) is reached (RFC 7519 §4.1.4). */
	if (cur.state == SESSION_REVOKED || now_ms >= cur.sess.expires_ms ||
	    cur.user_id != user_id)
		return OTPD_OK;
	status = user_by_id(c, user_id, &found, &res->user);
	if (status != OTPD_OK || !found)
		return status;
	if (!res->user.is_active) {
		*ret_result = OTPD_USER_INACTIVE;
		return OTPD_OK;
	}

	if (cur.state == SESSION_LIVE) {
		status = session_mark_rotated(c, cur.sess.jti, next->jti, now_ms);
		if (status == OTPD_OK) /* the family continues; next->family is ignored */
			status = session_insert(c, next, cur.sess.family, user_id);
		if (status != OTPD_OK)
			return status;
		res->session = *next;
		memcpy(res->session.family, cur.sess.family, sizeof(res->session.family));
		res->replayed = false;
		*ret_result = OTPD_OK;
		return OTPD_OK;
	}

	/* Rotated.  Inside the grace window, the same client retrying (a lost
	 * response, two tabs) gets the pair already minted, as long as it is
	 * still live.  grace_ms 0 means no grace at all, even with clock skew
	 * between nodes. */
	if (grace_ms > 0 && cur.has_rotated_ms && now_ms - cur.rotated_ms < grace_ms &&
	    cur.replaced_by[0] != '\0') {
		status = session_get(c, cur.replaced_by, &found, &succ);
		if (status != OTPD_OK)
			return status;
		if (found && succ.state == SESSION_LIVE && now_ms < succ.sess.expires_ms &&
		    succ.user_id == user_id &&
		    strcmp(succ.sess.family, cur.sess.family) == 0) {
			res->session = succ.sess;
			res->replayed = true;
			*ret_result = OTPD_OK;
			return OTPD_OK;
		}
	}

	/* A replay of a rotated-out token (docs/API.md §3 "Tokens", RFC 9700
	 * §4.14): the whole family goes, committed with the refusal. */
	status = family_revoke(c, cur.sess.jti, &revoked);
	if (status != OTPD_OK)
		return status;
	res->reuse_detected = true;
	res->revoked_records = revoked;
	return OTPD_OK;
}

static enum otpd_status sq_session_rotate(struct store *base, const char *jti,
                                          int64_t user_id,
                                          const struct store_session *next,
                                          int64_t grace_ms, int64_t now_ms,
                                          struct store_rotate_result *ret,
                                          store_done_fn done, void *arg)
{
	struct job j = {.op = JOB_ROTATE};

	if (!jti)
		return OTPD_INVALID_TOKEN;
	if (!next) {
		store_error( "session rotate: no successor given");
		return OTPD_INTERNAL;
	}
	j.u.rotate.jti = jti;
	j.u.rotate.user_id = user_id;
	j.u.rotate.next = next;
	j.u.rotate.grace_ms = grace_ms;
	j.u.rotate.now_ms = now_ms;
	j.u.rotate.ret = ret; /* with OTPD_OK only: see job_answer() */
	return submit_async(to_sqlite(base), &j, done, arg);
}

static enum otpd_status sq_session_revoke(struct store *base, const char *jti,
                                          store_done_fn done, void *arg)
{
	struct job j = {.op = JOB_REVOKE};

	if (!jti) {
		store_error( "session revoke: no jti given");
		return OTPD_INTERNAL;
	}
	j.u.revoke.jti = jti;
	return submit_async(to_sqlite(base), &j, done, arg);
}

static enum otpd_status purge_tx(struct conn *c, int64_t now_ms,
                                 int limit, int *ret_deleted)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_SESSION_PURGE, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, now_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 2, limit);
	status = finish(c, ST_SESSION_PURGE, rc);
	if (status == OTPD_OK)
		*ret_deleted = sqlite3_changes(c->db);
	return status;
}

static enum otpd_status sq_session_purge(struct store *base, int64_t now_ms,
                                         int limit, int *ret_deleted)
{
	struct sqlite_store *s = to_sqlite(base);
	struct job j = {.op = JOB_PURGE};

	if (limit <= 0) { /* at most none */
		*ret_deleted = 0;
		return OTPD_OK;
	}
	j.u.purge.now_ms = now_ms;
	j.u.purge.limit = limit;
	submit(s, &j);
	if (j.status == OTPD_OK)
		*ret_deleted = j.u.purge.deleted;
	return j.status;
}

/* ---- SMS delivery ---- */

static enum otpd_status sms_accepted_tx(struct conn *c, int64_t otp_id,
                                        int64_t message_id, int64_t now_ms)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_SMS_ACCEPTED, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, otp_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, message_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, now_ms);
	return finish(c, ST_SMS_ACCEPTED, rc);
}

static enum otpd_status sq_otp_sms_accepted(struct store *base, int64_t otp_id,
                                            int64_t message_id, int64_t now_ms,
                                            store_done_fn done, void *arg)
{
	struct job j = {.op = JOB_SMS_ACCEPTED};

	j.u.sms.otp_id = otp_id;
	j.u.sms.message_id = message_id;
	j.u.sms.now_ms = now_ms;
	return submit_async(to_sqlite(base), &j, done, arg);
}

/* Every item in the job's savepoint: all or none. */
static enum otpd_status delivery_set_tx(struct conn *c, size_t n,
                                        const struct store_delivery_status *items)
{
	enum otpd_status status = OTPD_OK;

	for (size_t i = 0; i < n && status == OTPD_OK; i++) {
		sqlite3_stmt *st = NULL;
		int rc;

		status = prepare(c, ST_DELIVERY_SET, &st);
		if (status != OTPD_OK)
			break;
		rc = sqlite3_bind_int64(st, 1, items[i].otp_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int(st, 2, items[i].status);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(st, 3, items[i].now_ms);
		status = finish(c, ST_DELIVERY_SET, rc);
	}
	return status;
}

static enum otpd_status sq_otp_delivery_set(struct store *base, size_t n,
                                            const struct store_delivery_status *items)
{
	struct job j = {.op = JOB_DELIVERY_SET};

	if (n == 0)
		return OTPD_OK;
	if (!items) {
		store_error("delivery set: no items given");
		return OTPD_INTERNAL;
	}
	j.u.delivery.n = n;
	j.u.delivery.items = items;
	submit(to_sqlite(base), &j);
	return j.status;
}

/* LIMIT takes a signed 64-bit value; a negative one would mean none. */
static int64_t sql_limit(size_t n)
{
	return n > (size_t)INT64_MAX ? INT64_MAX : (int64_t)n;
}

/* The rows go to the job's own buffer, copied to the caller's only when
 * the whole read succeeded (a failure leaves it untouched). */
static enum otpd_status delivery_pending_read(struct conn *c, struct job *j)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_DELIVERY_PENDING, &st);
	size_t n = 0;
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, j->u.pending.since_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, sql_limit(j->u.pending.limit));
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n < j->u.pending.limit) {
			struct store_delivery_pending *d = &j->u.pending.ret[n];

			d->otp_id = sqlite3_column_int64(st, 0);
			d->message_id = sqlite3_column_int64(st, 1);
			d->created_ms = sqlite3_column_int64(st, 2);
			if (column_text(st, 3, d->phone, sizeof(d->phone), NULL))
				n++; /* else not a stored number: never listed */
		}
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE) {
		status = fail(c, rc, stmts[ST_DELIVERY_PENDING].name);
		release(st);
		return status;
	}
	release(st);
	j->u.pending.n = n;
	return OTPD_OK;
}

static enum otpd_status stats_read(struct conn *c, struct job *j)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_STATS_RANGE, &st);
	size_t n = 0;
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, j->u.stats.since_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, j->u.stats.until_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, sql_limit(j->u.stats.cap));
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n < j->u.stats.cap) {
			struct store_stats_bucket *b = &j->u.stats.ret[n++];

			b->bucket_ms = sqlite3_column_int64(st, 0);
			b->sends = sqlite3_column_int64(st, 1);
			b->sms_failures = sqlite3_column_int64(st, 2);
			b->logins = sqlite3_column_int64(st, 3);
			b->new_users = sqlite3_column_int64(st, 4);
			b->wrong_guesses = sqlite3_column_int64(st, 5);
			b->locks = sqlite3_column_int64(st, 6);
		}
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE) {
		status = fail(c, rc, stmts[ST_STATS_RANGE].name);
		release(st);
		return status;
	}
	release(st);
	j->u.stats.n = n;
	return OTPD_OK;
}

/* A read job: on the read connection (it never waits for a batch), or
 * through the writer when there is none (:memory:). */
static enum otpd_status job_run(struct conn *c, struct job *j);

static void run_read(struct sqlite_store *s, struct job *j)
{
	if (!s->r.db) {
		submit(s, j);
		return;
	}
	pthread_mutex_lock(&s->read_lock);
	j->status = job_run(&s->r, j);
	pthread_mutex_unlock(&s->read_lock);
}

static enum otpd_status sq_otp_delivery_pending(struct store *base, int64_t since_ms,
                                                size_t limit,
                                                struct store_delivery_pending *ret,
                                                size_t *ret_n)
{
	struct job j = {.op = JOB_DELIVERY_PENDING};
	struct store_delivery_pending *buf = NULL;

	if (limit > 100000) {
		store_error("delivery pending: limit %zu is over 100000", limit);
		return OTPD_INTERNAL;
	}
	if (limit && !(buf = malloc(limit * sizeof(*buf))))
		return OTPD_NOMEM;
	j.u.pending.since_ms = since_ms;
	j.u.pending.limit = limit;
	j.u.pending.ret = buf;
	if (limit)
		run_read(to_sqlite(base), &j);
	else
		j.status = OTPD_OK;
	if (j.status == OTPD_OK) {
		if (j.u.pending.n)
			memcpy(ret, buf, j.u.pending.n * sizeof(*buf));
		*ret_n = j.u.pending.n;
	}
	free(buf);
	return j.status;
}

static enum otpd_status sq_stats(struct store *base, int64_t since_ms, int64_t until_ms,
                                 struct store_stats_bucket *ret, size_t cap,
                                 size_t *ret_n)
{
	struct job j = {.op = JOB_STATS};
	struct store_stats_bucket *buf = NULL;

	if (cap > 1000000) {
		store_error("stats: cap %zu is over 1000000", cap);
		return OTPD_INTERNAL;
	}
	if (cap && !(buf = malloc(cap * sizeof(*buf))))
		return OTPD_NOMEM;
	j.u.stats.since_ms = since_ms;
	j.u.stats.until_ms = until_ms;
	j.u.stats.ret = buf;
	j.u.stats.cap = cap;
	if (cap && since_ms < until_ms)
		run_read(to_sqlite(base), &j);
	else
		j.status = OTPD_OK;
	if (j.status == OTPD_OK) {
		if (j.u.stats.n)
			memcpy(ret, buf, j.u.stats.n * sizeof(*buf));
		*ret_n = j.u.stats.n;
	}
	free(buf);
	return j.status;
}

/* ---- retention ---- */

/* Stats buckets first, then codes with what is left of the limit. */
static enum otpd_status history_purge_tx(struct conn *c, int64_t before_ms,
                                         int limit, int *ret_deleted)
{
	static const enum stmt_id order[] = {ST_HISTORY_PURGE_STATS, ST_HISTORY_PURGE_CODES};
	int deleted = 0;

	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]) && deleted < limit; i++) {
		sqlite3_stmt *st = NULL;
		enum otpd_status status = prepare(c, order[i], &st);
		int rc;

		if (status != OTPD_OK)
			return status;
		rc = sqlite3_bind_int64(st, 1, before_ms);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int(st, 2, limit - deleted);
		status = finish(c, order[i], rc);
		if (status != OTPD_OK)
			return status;
		deleted += sqlite3_changes(c->db);
	}
	*ret_deleted = deleted;
	return OTPD_OK;
}

static enum otpd_status sq_history_purge(struct store *base, int64_t before_ms,
                                         int limit, int *ret_deleted)
{
	struct job j = {.op = JOB_HISTORY_PURGE};

	if (limit <= 0) { /* at most none */
		*ret_deleted = 0;
		return OTPD_OK;
	}
	j.u.purge.now_ms = before_ms;
	j.u.purge.limit = limit;
	submit(to_sqlite(base), &j);
	if (j.status == OTPD_OK)
		*ret_deleted = j.u.purge.deleted;
	return j.status;
}

/* ---- the writer: one transaction and one sync per batch ---- */

/* The body of job j, on the write connection, inside the batch's
 * transaction.  Returns the driver status; the answer goes to j->result. */
static enum otpd_status job_run(struct conn *c, struct job *j)
{
	switch (j->op) {
	case JOB_SECRET:
		return secret_tx(c, j->u.secret.name, j->u.secret.fresh,
		                 j->u.secret.len, j->u.secret.value);
	case JOB_ISSUE:
		return issue_tx(c, j->u.issue.p, j->u.issue.phone, j->u.issue.hash,
		                j->u.issue.now_ms, &j->result, &j->u.issue.res, &j->counted);
	case JOB_CANCEL:
		return cancel_tx(c, j->u.cancel.phone, j->u.cancel.otp_id, j->u.cancel.now_ms,
		                 &j->counted);
	case JOB_VERIFY:
		return verify_tx(c, j->u.verify.p, j->u.verify.phone, j->u.verify.hash,
		                 j->u.verify.email_domain, j->u.verify.session,
		                 j->u.verify.now_ms, &j->result, &j->u.verify.res,
		                 &j->counted);
	case JOB_ROTATE:
		return rotate_tx(c, j->u.rotate.jti, j->u.rotate.user_id,
		                 j->u.rotate.next, j->u.rotate.grace_ms,
		                 j->u.rotate.now_ms, &j->result, &j->u.rotate.res);
	case JOB_REVOKE:
		return family_revoke(c, j->u.revoke.jti, &j->u.revoke.revoked);
	case JOB_PURGE:
		return purge_tx(c, j->u.purge.now_ms, j->u.purge.limit,
		                &j->u.purge.deleted);
	case JOB_SMS_ACCEPTED:
		return sms_accepted_tx(c, j->u.sms.otp_id, j->u.sms.message_id,
		                       j->u.sms.now_ms);
	case JOB_DELIVERY_SET:
		return delivery_set_tx(c, j->u.delivery.n, j->u.delivery.items);
	case JOB_HISTORY_PURGE:
		return history_purge_tx(c, j->u.purge.now_ms, j->u.purge.limit,
		                        &j->u.purge.deleted);
	case JOB_DELIVERY_PENDING:
		return delivery_pending_read(c, j);
	case JOB_STATS:
		return stats_read(c, j);
	case JOB_PING:
		return ping_tx(c);
	case JOB_USER_GET:
		return user_by_id(c, j->u.user.id, &j->u.user.found, &j->u.user.user);
	case JOB_MIGRATE: /* never inside a batch */
		break;
	}
	store_error( "sqlite: job %d cannot run in a batch", (int)j->op);
	return OTPD_INTERNAL;
}

/* The time of an operation that counts events. */
static int64_t job_time(const struct job *j)
{
	switch (j->op) {
	case JOB_ISSUE:
		return j->u.issue.now_ms;
	case JOB_CANCEL:
		return j->u.cancel.now_ms;
	case JOB_VERIFY:
		return j->u.verify.now_ms;
	default:
		return 0;
	}
}

/* Run j in a savepoint of its own: when its statements fail, they alone
 * are undone and j->status says why; else what it counts joins the
 * batch's stats.  Returns the batch's status: not OTPD_OK when the
 * transaction itself is lost. */
/* Jobs that are one statement with no counters: SQLite undoes a failed
 * statement by itself, so they need no savepoint of their own (a savepoint
 * and its release were most of the cost of recording a message id). */
static bool job_is_one_statement(const struct job *j)
{
	return j->op == JOB_SMS_ACCEPTED;
}

static enum otpd_status run_one(struct conn *c, struct job *j, struct batch_stats *bs)
{
	enum otpd_status status;

	if (job_is_one_statement(j)) {
		log_set_request_id(j->request_id);
		j->status = job_run(c, j);
		log_set_request_id(NULL);
		/* IOERR, FULL, NOMEM, BUSY may have rolled back the whole
		 * transaction: then the batch fails with it. */
		return j->status == OTPD_OK || !sqlite3_get_autocommit(c->db) ? OTPD_OK : j->status;
	}
	status = run_plain(c, ST_SAVEPOINT);
	if (status != OTPD_OK)
		return status;
	memset(&j->counted, 0, sizeof(j->counted));
	log_set_request_id(j->request_id);
	j->status = job_run(c, j);
	log_set_request_id(NULL);
	if (j->status == OTPD_OK) {
		status = run_plain(c, ST_RELEASE);
		if (status == OTPD_OK && stats_any(&j->counted))
			status = batch_stats_add(c, bs, job_time(j), &j->counted);
		return status;
	}
	/* IOERR, FULL, NOMEM, BUSY may have rolled back the whole
	 * transaction, and the jobs before this one with it. */
	if (sqlite3_get_autocommit(c->db))
		return j->status;
	status = run_plain(c, ST_ROLLBACK_TO);
	if (status == OTPD_OK)
		status = run_plain(c, ST_RELEASE);
	return status;
}

static void run_batch(struct sqlite_store *s, struct job *batch)
{
	struct conn *c = &s->w;
	struct batch_stats bs = {0};
	enum otpd_status status;

	if (batch->op == JOB_MIGRATE) {
		batch->status = migrate_all(c, &batch->u.migrate.applied,
		                            &batch->u.migrate.version);
		return;
	}
	for (struct job *j = batch; j; j = j->next)
		j->status = OTPD_OK;
	status = tx_begin(c);
	for (struct job *j = batch; j && status == OTPD_OK; j = j->next)
		status = run_one(c, j, &bs);
	if (status == OTPD_OK)
		status = batch_stats_flush(c, &bs);
	if (status == OTPD_OK)
		status = tx_commit(c);
	if (status == OTPD_OK)
		return;
	/* Nothing of this batch is durable: every job that has not failed on
	 * its own answers the failure (fail() has logged it, once). */
	tx_rollback(c);
	for (struct job *j = batch; j; j = j->next)
		if (j->status == OTPD_OK)
			j->status = status;
}

/* Under queue_lock: unlink the next batch, every job queued now up to
 * BATCH_MAX (a migration runs alone). */
static struct job *take_batch(struct sqlite_store *s)
{
	struct job *first = s->head, *last = first;
	int n = 1;

	if (first->op != JOB_MIGRATE)
		while (last->next && last->next->op != JOB_MIGRATE && n < BATCH_MAX) {
			last = last->next;
			n++;
		}
	s->head = last->next;
	if (!s->head)
		s->tail = NULL;
	last->next = NULL;
	for (struct job *j = first; j; j = j->next)
		if (!j->lazy)
			s->eager--;
	return first;
}

/* Under queue_lock: wait until there is a batch to run (an eager job, or
 * lazy ones that are due) or the store stops.  Returns false when it
 * stops with nothing left to run. */
static bool wait_for_batch(struct sqlite_store *s)
{
	s->writer_idle = true;
	while (!s->stopping && s->eager == 0) {
		if (!s->head) {
			s->lazy_armed = false;
			pthread_cond_wait(&s->work, &s->queue_lock);
			continue;
		}
		if (!s->lazy_armed) {
			clock_gettime(CLOCK_MONOTONIC, &s->lazy_due);
			s->lazy_due.tv_nsec += LAZY_MAX_MS * 1000000L;
			if (s->lazy_due.tv_nsec >= 1000000000L) {
				s->lazy_due.tv_sec++;
				s->lazy_due.tv_nsec -= 1000000000L;
			}
			s->lazy_armed = true;
		}
		if (pthread_cond_timedwait(&s->work, &s->queue_lock, &s->lazy_due) == ETIMEDOUT)
			break;
	}
	s->writer_idle = false;
	s->lazy_armed = false;
	return s->head != NULL;
}

static void *writer_main(void *arg)
{
	struct sqlite_store *s = arg;

	pthread_setname_np(pthread_self(), "otpd-writer"); /* for top -H and perf */
	pthread_mutex_lock(&s->queue_lock);
	for (;;) {
		if (!wait_for_batch(s))
			break; /* stopping, and every job is answered */
		struct job *batch = take_batch(s);
		/* Callers queue the next batch while this one syncs. */
		pthread_mutex_unlock(&s->queue_lock);
		run_batch(s, batch);
		uint64_t n = 0;
		for (struct job *j = batch; j; j = j->next)
			n++;
		s->batches++;
		s->batched_jobs += n;
		if (n > s->batch_max)
			s->batch_max = n;
		for (struct job *j = batch, *next; j; j = next) {
			next = j->next; /* j belongs to its caller once posted */
			if (j->async) {
				if (j->on_done) {
					log_set_request_id(j->request_id);
					j->on_done(j->on_done_arg, job_answer(j));
					log_set_request_id(NULL);
				}
				free(j);
			} else {
				sem_post(&j->done);
			}
		}
		pthread_mutex_lock(&s->queue_lock);
	}
	pthread_mutex_unlock(&s->queue_lock);
	return NULL;
}

/* ---- open / close ---- */

/* Process-wide settings, before SQLite initialises: no memory statistics
 * (they take a global mutex on every malloc and free; otpd never reads
 * them). */
static pthread_once_t sqlite_config_once = PTHREAD_ONCE_INIT;

static void sqlite_config(void)
{
	/* SQLITE_MISUSE when SQLite is initialised already (by another
	 * user in this process): then its settings stay. */
	(void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

static enum otpd_status conn_open(struct conn *c, const char *path, int flags,
                                  int busy_timeout_ms)
{
	int rc;

	pthread_once(&sqlite_config_once, sqlite_config);
	/* One thread at a time uses a connection (see struct conn). */
	rc = sqlite3_open_v2(path, &c->db, flags | SQLITE_OPEN_NOMUTEX, NULL);

	if (rc != SQLITE_OK) {
		log_error("store.open", "cannot open database '%s': %s", path,
		          c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
		return status_of(rc);
	}
	sqlite3_extended_result_codes(c->db, 1);
	/* A lock held by another process: wait this long, then the batch
	 * (or the read) answers OTPD_UNAVAILABLE. */
	sqlite3_busy_timeout(c->db, busy_timeout_ms);
	return OTPD_OK;
}

static void conn_close(struct conn *c)
{
	int rc;

	for (int i = 0; i < _ST_MAX; i++)
		sqlite3_finalize(c->stmt[i]);
	rc = sqlite3_close(c->db); /* accepts NULL */
	if (rc != SQLITE_OK)
		store_error( "sqlite: close: %s", sqlite3_errstr(rc));
	memset(c, 0, sizeof(*c));
}

static bool sync_init(struct sqlite_store *s)
{
	if (pthread_mutex_init(&s->read_lock, NULL) != 0)
		return false;
	if (pthread_mutex_init(&s->queue_lock, NULL) != 0)
		goto no_queue_lock;
	pthread_condattr_t attr;
	bool ok = pthread_condattr_init(&attr) == 0;

	/* The deadline of lazy jobs (wait_for_batch()) is on the monotonic
	 * clock: a wall clock step must not stall or hurry them. */
	ok = ok && pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
	     pthread_cond_init(&s->work, &attr) == 0;
	pthread_condattr_destroy(&attr);
	if (ok)
		return true;
	pthread_mutex_destroy(&s->queue_lock);
no_queue_lock:
	pthread_mutex_destroy(&s->read_lock);
	return false;
}

static void sync_release(struct sqlite_store *s)
{
	pthread_cond_destroy(&s->work);
	pthread_mutex_destroy(&s->queue_lock);
	pthread_mutex_destroy(&s->read_lock);
}

static void sq_close(struct store *base)
{
	struct sqlite_store *s = to_sqlite(base);

	/* The writer answers every job queued so far, then ends. */
	pthread_mutex_lock(&s->queue_lock);
	s->stopping = true;
	pthread_cond_signal(&s->work);
	pthread_mutex_unlock(&s->queue_lock);
	pthread_join(s->writer, NULL);
	if (s->batches)
		log_info("store.stats", "sqlite: %llu operations in %llu transactions"
		         " (%.1f per transaction on average, %llu at most)",
		         (unsigned long long)s->batched_jobs, (unsigned long long)s->batches,
		         (double)s->batched_jobs / (double)s->batches,
		         (unsigned long long)s->batch_max);
	/* The reader first: the last connection to close checkpoints the WAL. */
	conn_close(&s->r);
	conn_close(&s->w);
	sync_release(s);
	free(s);
}

static const struct store_ops sqlite_ops = {
	.name = "sqlite",
	.migrate = sq_migrate,
	.ping = sq_ping,
	.secret_get_or_create = sq_secret_get_or_create,
	.otp_issue = sq_otp_issue,
	.otp_cancel = sq_otp_cancel,
	.otp_sms_accepted = sq_otp_sms_accepted,
	.otp_delivery_pending = sq_otp_delivery_pending,
	.otp_delivery_set = sq_otp_delivery_set,
	.stats = sq_stats,
	.history_purge = sq_history_purge,
	.otp_verify = sq_otp_verify,
	.user_get = sq_user_get,
	.session_rotate = sq_session_rotate,
	.session_revoke = sq_session_revoke,
	.session_purge = sq_session_purge,
	.close = sq_close,
};

/* The database's files are the owner's only.  The main file is created
 * under umask 077 (the umask is per process: the opens of this file take
 * turns; nothing else in otpd changes it).  SQLite's unix VFS creates -wal,
 * -shm and -journal later with the main file's mode (findCreateFileMode(),
 * unixOpenSharedMemory(): it even fchmod()s them to it), so they are 0600
 * too. */
static pthread_mutex_t umask_lock = PTHREAD_MUTEX_INITIALIZER;

static enum otpd_status conn_open_private(struct conn *c, const char *path, int flags,
                                          int busy_timeout_ms)
{
	enum otpd_status status;
	mode_t old;

	pthread_mutex_lock(&umask_lock);
	old = umask(077);
	status = conn_open(c, path, flags, busy_timeout_ms);
	umask(old);
	pthread_mutex_unlock(&umask_lock);
	return status;
}

/* One file of the database: refused when users other than its owner may
 * read or write it (unless opt->allow_shared_file).  A side file (-wal,
 * -shm) that does not exist is fine.  shown: its name as the operator wrote
 * it. */
static enum otpd_status file_check(const char *file, const char *shown,
                                   const struct store_options *opt, char *err,
                                   size_t errlen)
{
	struct stat st;
	unsigned mode;
	const char *what;

	if (stat(file, &st) != 0) {
		if (errno == ENOENT)
			return OTPD_OK;
		log_error("store.open", "cannot use database file '%s': %s", shown, strerror(errno));
		return OTPD_UNAVAILABLE;
	}
	mode = (unsigned)(st.st_mode & 07777);
	if ((mode & 066) == 0)
		return OTPD_OK;
	what = (mode & 044) ? "readable" : "writable";
	if (opt->allow_shared_file) {
		log_warn("store.open", "database file '%s' is %s by other users (mode %04o): "
		         "allowed by OTPD_ALLOW_SHARED_DB_FILE", shown, what, mode);
		return OTPD_OK;
	}
	if (err && errlen) {
		snprintf(err, errlen, "DATABASE_URL: %s is %s by other users (mode %04o); "
		         "chmod 600 it, or set OTPD_ALLOW_SHARED_DB_FILE=true", shown, what, mode);
	} else {
		log_error("store.open", "database file '%s' is %s by other users (mode %04o); "
		          "chmod 600 it, or set OTPD_ALLOW_SHARED_DB_FILE=true", shown, what, mode);
	}
	return OTPD_FORBIDDEN;
}

/* The database file and its side files, before SQLite reads any of them
 * (an in-memory database has none).  Names are shown as DATABASE_URL wrote
 * them, unless it is a URI (file:...), then as SQLite resolved them. */
static enum otpd_status files_check(struct conn *c, const char *path,
                                    const struct store_options *opt, char *err,
                                    size_t errlen)
{
	static const char *const suffix[] = {"", "-wal", "-shm"};
	const char *file = sqlite3_db_filename(c->db, "main");
	bool uri = strncmp(path, "file:", 5) == 0;
	enum otpd_status status = OTPD_OK;
	size_t flen, plen = strlen(path);
	char *name = NULL, *shown = NULL;

	if (!file || !file[0])
		return OTPD_OK;
	flen = strlen(file);
	name = malloc(flen + 8);
	shown = malloc((uri ? flen : plen) + 8);
	if (!name || !shown) {
		log_error("store.open", "out of memory");
		status = OTPD_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]) && status == OTPD_OK; i++) {
		sprintf(name, "%s%s", file, suffix[i]);
		sprintf(shown, "%s%s", uri ? file : path, suffix[i]);
		status = file_check(name, shown, opt, err, errlen);
	}
out:
	free(name);
	free(shown);
	return status;
}

/* journal_mode=WAL answers with the mode in effect. */
static enum otpd_status set_wal(struct conn *c, const char *path)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = OTPD_OK;
	int rc;

	rc = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *mode = (const char *)sqlite3_column_text(st, 0);
		/* An in-memory database (tests) keeps "memory". */
		if (!mode || (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0))
			log_warn("store.open",
			         "database '%s' runs in journal mode '%s', not WAL: "
			         "correct, but readers wait for writers",
			         path, mode ? mode : "?");
	} else {
		char what[300];
		snprintf(what, sizeof(what), "cannot use database '%s'", path);
		status = fail(c, rc, what);
	}
	sqlite3_finalize(st);
	return status;
}

enum otpd_status store_sqlite_open(const char *path, const struct store_options *opt,
                                   char *err, size_t errlen, struct store **ret)
{
	int busy_timeout_ms = opt->busy_timeout_ms;
	struct sqlite_store *s;
	enum otpd_status status;
	const char *file;
	int rc;

	s = calloc(1, sizeof(*s));
	if (!s) {
		log_error("store.open", "out of memory");
		return OTPD_NOMEM;
	}
	s->base.ops = &sqlite_ops;
	if (!sync_init(s)) {
		log_error("store.open", "cannot create a mutex");
		free(s);
		return OTPD_INTERNAL;
	}

	status = conn_open_private(&s->w, path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
	                           busy_timeout_ms);
	if (status != OTPD_OK)
		goto out;
	status = files_check(&s->w, path, opt, err, errlen);
	if (status != OTPD_OK)
		goto out;
	/* The first statement that reads the file: a file that is not a
	 * database, or cannot be read, fails here. */
	status = set_wal(&s->w, path);
	if (status != OTPD_OK)
		goto out;
	rc = sqlite3_exec(s->w.db,
	                  "PRAGMA synchronous=FULL;"
	                  "PRAGMA foreign_keys=ON;"
	                  /* The savepoint of each job journals the pages it
	                   * changes; in memory, not spilled to a temp file. */
	                  "PRAGMA temp_store=MEMORY;",
	                  NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		status = fail(&s->w, rc, "connection settings");
		goto out;
	}

	/* The readers' connection, on the file the writer opened ("" for an
	 * in-memory database, which only its own connection sees). */
	file = sqlite3_db_filename(s->w.db, "main");
	if (file && file[0]) {
		status = conn_open(&s->r, file, SQLITE_OPEN_READONLY, busy_timeout_ms);
		if (status != OTPD_OK)
			goto out;
	}

	rc = pthread_create(&s->writer, NULL, writer_main, s);
	if (rc != 0) {
		log_error("store.open", "cannot start the database writer thread: %s",
		          strerror(rc));
		status = OTPD_INTERNAL;
		goto out;
	}
	log_debug("store.open", "opened SQLite database '%s'", path);
	*ret = &s->base;
	return OTPD_OK;
out:
	conn_close(&s->r);
	conn_close(&s->w);
	sync_release(s);
	free(s);
	return status;
}
