/* Private to src/store/: what the engine (queue.c) and the store's public
 * functions (store.c) need from a backend, and what a backend gets from
 * them.  Nothing outside store/ includes this; the rest of otpd sees only
 * store.h.
 *
 * The store is one engine with two dialects:
 * - store.c packs each public call into a job (struct store_job: its
 *   operation and one argument struct, written once, below) and hands it
 *   to the engine;
 * - queue.c, the engine: a bounded queue, worker threads that each drive
 *   one connection of the backend, batches (one transaction, a savepoint
 *   per job, answers after COMMIT), stats sums, drain and stop;
 * - migrate.c runs the backend's migrations through its primitives;
 * - rules.c holds the decisions that do not depend on a database;
 * - sqlite.c and postgres.c are the dialects: connections, statements,
 *   error mapping, and one function per operation (its transaction body).
 */
#ifndef OTPD_STORE_BACKEND_H
#define OTPD_STORE_BACKEND_H

#include <semaphore.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../log.h"
#include "../metrics.h"
#include "store.h"

/* ---- jobs: one operation and its arguments ---- */

enum store_op {
	STORE_OP_MIGRATE, /* alone, outside any batch: see migrate.c */
	/* writes: inside a batch's transaction */
	STORE_OP_SECRET,
	STORE_OP_ISSUE,
	STORE_OP_CANCEL,
	STORE_OP_VERIFY,
	STORE_OP_ROTATE,
	STORE_OP_REVOKE,
	STORE_OP_SESSION_PURGE,
	STORE_OP_SMS_ACCEPTED,
	STORE_OP_DELIVERY_SET,
	STORE_OP_HISTORY_PURGE,
	STORE_OP_USER_UPDATE,
	STORE_OP_USER_UPDATE_BY_PHONE,
	STORE_OP_AUDIT_APPEND,
	STORE_OP_CODES_MATCH, /* a read, with its audit entry: a write */
	/* reads: one statement each, on a read connection when the backend
	 * has one (else inside a batch, like a write) */
	STORE_OP_PING,
	STORE_OP_USER_GET,
	STORE_OP_DELIVERY_PENDING,
	STORE_OP_STATS,
	STORE_OP_CODES_LIST,
	STORE_OP_USER_SESSIONS,
	STORE_OP_USER_BY_PHONE,
	STORE_OP_USERS_LIST,
	STORE_OP_AUDIT_LIST,
	STORE_OP_PURGE_COUNT,
	STORE_OP_COUNT,
};

#define STORE_OP_FIRST_READ STORE_OP_PING

/* What one operation adds to the stats bucket of its time (stats_5m):
 * each event at most once.  The engine sums a batch's, and writes them
 * with the dialect's stats_add() just before COMMIT. */
struct store_stats_delta {
	uint8_t sends, sms_failures, logins, new_users, wrong_guesses;
};

/* A batch's events in one bucket. */
struct store_stats_sums {
	int sends, sms_failures, logins, new_users, wrong_guesses;
};

/* Arguments are borrowed (they stay valid until the job is answered);
 * results are the job's own until the engine copies them to the caller
 * (store_job_answer()). */
struct store_args_migrate {
	int applied;     /* migrations applied by this call */
	int64_t version; /* the schema version after it */
};

struct store_args_secret {
	const char *name;
	const uint8_t *fresh;
	size_t len;
	uint8_t *value; /* len bytes: the stored value */
};

struct store_args_issue {
	const struct otp_policy *p;
	const char *phone;
	const uint8_t *hash; /* OTP_HASH_LEN */
	const struct store_throttle *throttle; /* NULL: none */
	struct store_issue_result res;
	struct store_issue_result *ret;
};

struct store_args_cancel {
	const char *phone;
	int64_t otp_id;
};

struct store_args_sms_accepted {
	int64_t otp_id;
	int64_t message_id;
};

struct store_args_delivery_set {
	size_t n;
	const struct store_delivery_status *items;
};

struct store_args_delivery_pending {
	int64_t since_ms;
	size_t limit;
	struct store_delivery_pending *ret; /* room for limit */
	size_t n;
};

/* The lists: the dialect writes rows to ret[0..n); the engine copies n to
 * *ret_n (when not NULL) once the job answers OTPD_OK. */
struct store_args_stats {
	int64_t since_ms, until_ms;
	struct store_stats_bucket *ret; /* room for cap */
	size_t cap;
	size_t n;
	size_t *ret_n;
};

struct store_args_verify {
	const struct otp_policy *p;
	const char *phone;
	const uint8_t *hash; /* OTP_HASH_LEN */
	const char *email_domain;
	const struct store_session *session; /* NULL: record none */
	const struct store_throttle *throttle; /* NULL: none */
	struct store_verify_result res;
	struct store_verify_result *ret;
};

struct store_args_rotate {
	const char *jti;
	int64_t user_id;
	const struct store_session *next;
	int64_t grace_ms;
	struct store_rotate_result res;
	struct store_rotate_result *ret;
};

struct store_args_revoke {
	const char *jti;
	int revoked; /* records that changed state */
};

struct store_args_purge { /* session purge: before = now; history purge */
	int64_t before_ms;
	int limit; /* >= 1 */
	int deleted;
};

struct store_args_user_get {
	int64_t id;
	const char *phone; /* STORE_OP_USER_BY_PHONE */
	bool found;
	struct store_user user;
	struct store_user *ret;
};

struct store_args_user_update {
	int64_t id;
	const char *phone;        /* STORE_OP_USER_UPDATE_BY_PHONE: instead of id */
	bool create;              /* ... creating the user when there is none */
	const char *email_domain; /* ... for that user's e-mail */
	const struct store_user_change *change;
	const struct store_audit_entry *audit; /* NULL: none */
	bool created;
	bool *ret_created;        /* may be NULL */
	bool found;
	struct store_user user; /* after the change */
	struct store_user *ret; /* may be NULL */
};

/* store.c has resolved the query's zeros: every bound is a plain value. */
struct store_args_codes_list {
	const char *phone;          /* NULL: every number */
	int64_t before_id;          /* id < before_id */
	int64_t since_ms, until_ms; /* since_ms <= created_ms < until_ms */
	struct store_code_row *ret; /* room for cap */
	size_t cap;
	size_t n;
	size_t *ret_n;
};

struct store_args_user_sessions {
	int64_t user_id;
	struct store_session_info *ret; /* room for cap */
	size_t cap;
	size_t n;
	size_t *ret_n;
};

struct store_args_audit_append {
	const struct store_audit_entry *e;
};

struct store_args_audit_list {
	int64_t before_id;               /* id < before_id */
	struct store_audit_entry *ret;   /* room for cap */
	size_t cap;
	size_t n;
	size_t *ret_n;
};

/* store.c has resolved the query: one of the three forms, plain bounds. */
enum store_users_by { STORE_USERS_BY_PHONE, STORE_USERS_BY_PREFIX, STORE_USERS_ALL };

struct store_args_users_list {
	enum store_users_by by;
	const char *phone;
	const char *prefix;                     /* username >= prefix */
	char upper[STORE_USERNAME_MAX + 1];     /* username < upper (the prefix, last byte + 1) */
	const char *after;                      /* username > after ("": none) */
	int64_t before_id;                      /* id < before_id */
	struct store_user *ret;                 /* room for cap */
	size_t cap;
	size_t n;
	size_t *ret_n;
};

struct store_args_codes_match {
	const char *phone;
	const uint8_t *hash;                    /* OTP_HASH_LEN */
	const struct store_audit_entry *audit;  /* appended with the search */
	struct store_code_row *ret;             /* room for cap */
	size_t cap;
	size_t n;
	size_t *ret_n;
};

struct store_args_purge_count {
	int64_t codes_before_ms, sessions_before_ms, max;
	struct store_purge_counts res;
	struct store_purge_counts *ret;
};

/* One operation for the engine.  store.c fills op, now_ms and u; the
 * dialect's operation sets `result` (the operation's answer, e.g.
 * OTPD_INVALID_CODE) and `counted`, and returns the driver status (OTPD_OK
 * unless the database failed); the engine sets `status`. */
struct store_job {
	enum store_op op;
	enum otpd_status status; /* the driver's; OTPD_OK: committed (or read) */
	enum otpd_status result; /* the operation's answer when status is OK */
	int64_t now_ms;          /* the time of the operation (its stats bucket) */
	struct store_stats_delta counted;
	union {
		struct store_args_migrate migrate;
		struct store_args_secret secret;
		struct store_args_issue issue;
		struct store_args_cancel cancel;
		struct store_args_sms_accepted sms;
		struct store_args_delivery_set delivery;
		struct store_args_delivery_pending pending;
		struct store_args_stats stats;
		struct store_args_verify verify;
		struct store_args_rotate rotate;
		struct store_args_revoke revoke;
		struct store_args_purge purge;
		struct store_args_user_get user;
		struct store_args_user_update user_update;
		struct store_args_codes_list codes;
		struct store_args_user_sessions sessions;
		struct store_args_audit_append audit;
		struct store_args_audit_list audit_list;
		struct store_args_users_list users;
		struct store_args_codes_match match;
		struct store_args_purge_count purge_count;
	} u;
	/* The engine's: set by store_engine_submit() / _start(). */
	struct store_job *next;
	char request_id[LOG_REQUEST_ID_MAX]; /* the caller's, for log lines */
	bool async;              /* on_done (when not NULL) is called, then the job freed */
	bool lazy;               /* nobody waits: it rides with the next batch */
	sem_t done;              /* synchronous: posted once status and u are final */
	store_done_fn on_done;
	void *on_done_arg;
};

/* ---- what a backend provides ---- */

/* One connection of a backend and what it has prepared: used by one
 * thread at a time (the worker that owns it). */
struct store_conn;

/* A backend's migrations: element i is version i + 1, append-only (a
 * released element is never edited, only new ones are added). */
struct store_migrations {
	const char *const *sql;
	size_t count;
};

struct store_dialect {
	const char *name; /* "sqlite", "postgres": for logs */
	/* A statement that fails leaves the transaction usable, undone by
	 * itself (SQLite; not PostgreSQL, where any error aborts the whole
	 * transaction): a one-statement job then needs no savepoint. */
	bool statement_atomic;

	/* A transaction on c.  begin() may first restore a lost connection
	 * (the backend reconnects there, within its connect timeout).
	 * rollback() logs its own failure and leaves c usable.
	 * in_transaction() is false when a driver error has already rolled
	 * the whole transaction back (then the batch fails with it). */
	enum otpd_status (*begin)(struct store_conn *c);
	enum otpd_status (*commit)(struct store_conn *c);
	void (*rollback)(struct store_conn *c);
	enum otpd_status (*savepoint)(struct store_conn *c);
	enum otpd_status (*release)(struct store_conn *c);
	enum otpd_status (*rollback_to)(struct store_conn *c);
	bool (*in_transaction)(struct store_conn *c);

	/* Add a batch's sums to bucket bucket_ms (an UPSERT), inside the
	 * batch's transaction. */
	enum otpd_status (*stats_add)(struct store_conn *c, int64_t bucket_ms,
	                              const struct store_stats_sums *d);

	/* The body of each operation but STORE_OP_MIGRATE: a write runs
	 * inside the batch's transaction (in a savepoint of its own when the
	 * batch holds other jobs), a read on its own.  Returns the driver
	 * status; the answer goes to j->result and j->u. */
	enum otpd_status (*op[STORE_OP_COUNT])(struct store_conn *c, struct store_job *j);

	/* Migrations (migrate.c drives them; each version is one transaction
	 * that begin() and commit() bracket):
	 * - migrate_lock: inside that transaction, before anything else, wait
	 *   until no other process migrates (PostgreSQL: an advisory
	 *   transaction lock); NULL when begin() locks already (SQLite's
	 *   BEGIN IMMEDIATE);
	 * - migrations_table: create schema_migrations if it is missing;
	 * - migration_has / migration_add: is version v recorded / record it;
	 * - exec: run one migration's SQL (several statements);
	 * - schema_version: the highest version recorded (0: none);
	 * - migrate_enter / migrate_leave: around the whole run (NULL: none). */
	const struct store_migrations *migrations;
	enum otpd_status (*migrate_lock)(struct store_conn *c);
	enum otpd_status (*migrations_table)(struct store_conn *c);
	enum otpd_status (*migration_has)(struct store_conn *c, int version, bool *ret);
	enum otpd_status (*migration_add)(struct store_conn *c, int version);
	enum otpd_status (*exec)(struct store_conn *c, int version, const char *sql);
	enum otpd_status (*schema_version)(struct store_conn *c, int64_t *ret);
	void (*migrate_enter)(struct store_conn *c);
	void (*migrate_leave)(struct store_conn *c);

	/* Close one connection (accepts NULL). */
	void (*conn_close)(struct store_conn *c);
};

/* A database error: logged once, where it is translated (in the dialect),
 * and counted (otpd_store_errors_total). */
#define store_error(...)                                  \
	do {                                              \
		metrics_store_error();                    \
		log_error("store.error", __VA_ARGS__);    \
	} while (0)

/* ---- the engine (queue.c) ---- */

struct store_engine_config {
	const struct store_dialect *d;
	/* Write connections, each driven by a worker thread of its own; at
	 * least one.  Batches run on them in parallel when there are several
	 * (PostgreSQL: the pool, DATABASE_POOL_SIZE); the dialect's
	 * transactions keep the rules atomic among them. */
	struct store_conn **writers;
	int n_writers;
	/* Read connections, each with a worker thread; 0: reads are jobs of
	 * the writers (SQLite in memory). */
	struct store_conn **readers;
	int n_readers;
	int batch_max;    /* jobs per transaction at most (1: no savepoints) */
	size_t queue_max; /* jobs waiting at most: past it, OTPD_UNAVAILABLE */
	/* The backend's own state, closed after the workers and the
	 * connections (may be NULL). */
	void *backend;
	void (*backend_close)(void *backend);
};

/* Start the workers.  On success the engine owns the connections (and
 * closes them in store_close()); on failure they are closed, and so is
 * the backend. */
enum otpd_status store_engine_open(const struct store_engine_config *cfg, struct store **ret);

/* Queue j and wait until it is answered (j on the caller's stack); the
 * answer is j->status, and store_job_answer(j) for the caller. */
void store_engine_submit(struct store *s, struct store_job *j);

/* Queue a heap copy of *proto and return at once; done(arg, answer) is
 * called after its batch (store.h "Asynchronous forms"); done NULL:
 * nobody is told.  OTPD_UNAVAILABLE when the queue is full, OTPD_NOMEM. */
enum otpd_status store_engine_start(struct store *s, const struct store_job *proto,
                                    store_done_fn done, void *arg);

/* What an answered job says to its caller: the driver's failure, else the
 * operation's answer; its result struct is copied to the caller's ret only
 * with an answer that carries data. */
enum otpd_status store_job_answer(const struct store_job *j);

/* ---- migrations (migrate.c), run by the engine on a writer ---- */

enum otpd_status store_migrate_run(const struct store_dialect *d, struct store_conn *c,
                                   int *ret_applied, int64_t *ret_version);

/* ---- the backends ---- */

/* store/sqlite.c: open (or create, mode 0600) the database file at `path`,
 * check its files' modes, apply the connection settings (WAL,
 * synchronous=FULL, foreign keys, busy timeout), start the engine.  Does
 * not migrate.  Failures as store_open(). */
enum otpd_status store_sqlite_open(const char *path, const struct store_options *opt,
                                   char *err, size_t errlen, struct store **ret);

/* store/postgres.c: connect DATABASE_POOL_SIZE connections to the
 * PostgreSQL of `url` (postgres:// or postgresql://, libpq's parameters),
 * start the engine.  Does not migrate.  Failures as store_open(); the URL
 * is never logged (it may hold a password). */
enum otpd_status store_postgres_open(const char *url, const struct store_options *opt,
                                     char *err, size_t errlen, struct store **ret);

/* The schemas, append-only. */
extern const struct store_migrations store_sqlite_migrations;
extern const struct store_migrations store_postgres_migrations;

/* store/sqlite.c: the SQL of its i-th statement (every one it prepares)
 * and its name, or NULL past the last: the conformance suite reads their
 * query plans. */
const char *store_sqlite_statement(size_t i, const char **ret_name);

#endif
