/* The PostgreSQL dialect of the store (backend.h): connections, statements,
 * error mapping, the transaction body of each operation, and open.
 *
 * ---- Connections ----
 *
 * DATABASE_POOL_SIZE connections (default two per core, 4 to 16), each
 * a writer of the engine (queue.c) driven by a thread of its own, so that
 * the batches of one node run side by side; plus one read connection, so
 * that a read (ping for /readyz, the user for /me, the stats, the pending
 * deliveries, the staff console's lists) never queues behind writes: under
 * load the write queue can hold thousands of jobs, and a read is one
 * indexed statement that PostgreSQL answers without waiting for any writer
 * (MVCC).  A node holds pool + 1 connections.
 *
 * Each connection is set up once: connect_timeout (DATABASE_CONNECT_
 * TIMEOUT_MS, in whole seconds, at least 2), TCP keepalives and
 * tcp_user_timeout (a dead server or network is noticed, idle or not),
 * application_name otpd, then statement_timeout (DATABASE_STATEMENT_
 * TIMEOUT_MS), lock_timeout (OTPD_DB_BUSY_TIMEOUT_MS), synchronous_commit on
 * (a write is durable before its 200, whatever the server's default),
 * idle_in_transaction_session_timeout (a node that stalls mid-transaction
 * does not hold its locks for ever).  Parameters in the URL win over these
 * defaults (libpq reads it last), except the four settings, which are SET
 * after connecting.  The URL is never logged: it may hold a password.
 *
 * Every statement is prepared once per connection, on first use (a store
 * can be opened before it is migrated), in the same round trip as its
 * first execution.  Results come in binary; the one binary parameter is
 * the 32-byte hash (bytea), every other parameter is text (integers
 * printed here, strings passed as they are: never spliced into SQL).
 *
 * ---- Round trips: pipelining; a job is a transaction ----
 *
 * libpq's pipeline mode sends several statements before reading any
 * answer.  A statement whose result the transaction body does not need to
 * decide anything (BEGIN, SAVEPOINT, RELEASE, an advisory lock, the
 * client's throttle, an INSERT whose id is only returned to the caller,
 * the stats UPSERT) is queued (defer()) and goes with the next statement
 * that must be answered (query()) or with the COMMIT, in the order
 * written, so PostgreSQL runs them one after the other exactly as if each
 * had had its own round trip; the first error aborts the rest (and the
 * transaction).  A verify is three round trips (BEGIN + throttle + lock +
 * read the code; use it + read or create the user; the session + stats +
 * COMMIT), a first login too; a send or a wrong guess two; a logout one.
 *
 * batch_max is 1 (BATCH_MAX): each job is a transaction of its own,
 * without savepoints.  The engine can batch (store_options.batch_max: up
 * to that many jobs in one transaction, a savepoint each; the engine's
 * tests use it): a job inside a savepoint reads what it queued before it
 * ends (job_end()), so its failure is its own, and SAVEPOINT, RELEASE and
 * ROLLBACK TO go with the next statement, so a job in a batch costs the
 * round trips of one alone and the batch one COMMIT.  But a batch holds
 * every job's locks until its COMMIT, in the order the jobs came, not in
 * one order across keys: two batches that each hold a key the other's
 * later job needs deadlock (PostgreSQL finds it after deadlock_timeout,
 * 1 s, and fails one job with 40P01).  Keys shared by jobs are common:
 * the client's throttle row is the first lock of every send and verify of
 * that address.  Measured here (2 shared cores, the server local):
 * - storebench (a new number per job, no throttle), 64 threads, pool 4,
 *   sends and verifies per second: batch 1: 2,450-2,800 and 1,940-1,990;
 *   8: 8,000-8,900 and 4,260-4,970; 16: 8,870-9,960 and 4,570-5,030; 32:
 *   8,740-9,110 and 4,560-4,910.  PostgreSQL's cost per transaction
 *   dominates there, and a batch shares it.
 * - otpd, 2 nodes, 8 HTTP clients on one address (sends and verifies, the
 *   throttles set high): batch 1: 2,000-2,200 answers per second, the
 *   slowest 15 ms, no error; batch 16: 150-1,000 per second, deadlocks on
 *   the throttle rows every second, answers stalled 1 s, 503s.
 * One job per transaction never deadlocks (the fixed order below), and no
 * job waits for another job's unrelated work.  (More than 64 savepoints
 * that write would also overflow PostgreSQL's per-backend subtransaction
 * cache, which slows every snapshot on the server: keep batch_max below
 * that.)
 *
 * ---- Atomicity across nodes: per-key locks at READ COMMITTED ----
 *
 * Every transaction is BEGIN ISOLATION LEVEL READ COMMITTED (whatever the
 * server's default), and each rule is kept by locking the one key it is
 * about, so that transactions on different numbers and sessions never wait
 * for each other, and those on the same key run one after the other, as
 * they do under SQLite's BEGIN IMMEDIATE, in this node or another:
 *
 * - send (issue) and verify take pg_advisory_xact_lock(NS_PHONE,
 *   hashtext(phone)) first, then read: the statement after the lock takes a
 *   new snapshot, so it sees everything the previous holder committed.  A
 *   send then counts the number's recent codes and inserts the new one with
 *   nothing in between (send limit; one current code); a verify reads the
 *   newest code `FOR UPDATE` and judges it (single use, exactly one attempt
 *   per wrong guess).  Why verify takes the number's lock too: the current
 *   code is the newest row, and `ORDER BY id DESC LIMIT 1 FOR UPDATE`
 *   alone is not enough: if a send commits while the verify waits for the
 *   old row's lock (the send marks it replaced), READ COMMITTED re-reads
 *   that one row and the verify judges the replaced code instead of the
 *   new one; two sends and a verify could also interleave around the
 *   attempt count.  With the lock they are serial, like on SQLite.  A hash
 *   collision of two numbers only makes them take turns.
 * - the row lock (FOR UPDATE) in verify is still needed: cancel (an SMS
 *   the provider refused) changes a code's state without the number's
 *   lock (one UPDATE by id, which waits for the verify's row lock and
 *   re-checks its WHERE on the new row), and so do the SMS message id and
 *   the delivery status.  Likewise the send replaces the current code with
 *   `AND state = 0`, so a cancel that committed in between is kept.
 * - first login: `INSERT ... ON CONFLICT (phone_number) DO NOTHING
 *   RETURNING id`, then, when another transaction created the user (it
 *   waits for that one's commit), the UPDATE that reads it: one user per
 *   number.  A known user's login is one `UPDATE ... RETURNING`, which
 *   locks the row and returns its latest state.
 * - rotation and logout take pg_advisory_xact_lock(NS_FAMILY,
 *   hashtext(family)) (the family read from the presented jti in the same
 *   statement), then read the record `FOR UPDATE`: every transaction that
 *   changes records of an existing family takes this one lock first, so
 *   rotations, replays and logouts of a family are serial (two of them on
 *   the same record see each other's result: exactly one rotation wins).
 *   A rotation first reads the user `FOR SHARE` (not deactivated nor
 *   deleted until it commits).  The order is fixed: user, family, records
 *   (a verify: number, code, user; a new session's family is its own).  A
 *   deactivation (store_user_update) locks the user row first too, then
 *   revokes the user's records; revocations lock their rows in jti order
 *   (`ORDER BY jti FOR UPDATE`), so a logout and a deactivation that
 *   overlap take the same rows in the same order.
 * - the secret: `INSERT ... ON CONFLICT DO NOTHING`, then a SELECT in a
 *   statement of its own (a new snapshot: it sees the row of a node that
 *   won the race).
 * - the purges delete from `FOR UPDATE SKIP LOCKED` subqueries, bounded by
 *   their limit: nodes that run them at once delete disjoint rows and never
 *   wait for each other nor for a verify; the delivery statuses lock their
 *   rows in id order first (two pollers never deadlock).
 * - stats: one UPSERT per batch (ON CONFLICT (bucket_ms) DO UPDATE), in the
 *   transaction it counts.
 * A job takes at most one advisory lock, and its locks in the fixed order
 * above (its throttle row first), so two jobs never deadlock (two batches
 * of several can: see "Round trips").
 *
 * SERIALIZABLE would keep the rules too, but it fails conflicting
 * transactions (40001) instead of making them wait: the 30 verifies of one
 * code that race would mostly end in retries, and a retry must run the
 * job's body again in a new transaction.
 *
 * ---- Faults ----
 *
 * Every exchange with the server waits at most statement_timeout + 1 s
 * (poll() on the socket, never a blocking libpq call); past it, or when the
 * connection is lost, the connection is dropped (the server rolls back what
 * it had), the job answers OTPD_UNAVAILABLE, and the next transaction on
 * that connection (begin(), or a read) connects again, with a back-off of
 * 100 ms doubling to 2 s after each failed attempt, so a database that is
 * down costs a few attempts per second and service resumes by itself within
 * 2 s of it coming back.  A COMMIT whose answer is lost answers
 * OTPD_UNAVAILABLE: the transaction may or may not have committed.  The
 * client retries; for these operations that is safe: a send is bounded by
 * the send limit, a verify whose code was used answers otp_expired, a
 * rotation retried inside the grace window gets the same pair, a logout is
 * idempotent.  A COMMIT that PostgreSQL answers with ROLLBACK (the
 * transaction had failed) is a failure, never OTPD_OK.
 *
 * Errors are logged once, here (fail_res(), conn_lost()): the statement's
 * name, SQLSTATE and primary message only, never DETAIL (it quotes the
 * row: phone numbers, hashes), never a bound value. */
#include "backend.h"

#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "../log.h"
#include "../metrics.h"
#include "rules.h"

/* See "Round trips" above: a job per transaction, without a savepoint
 * (run_one() in queue.c), unless store_options.batch_max says otherwise. */
#define BATCH_MAX 1
#define POOL_DEFAULT 4
#define POOL_DEFAULT_MAX 16
#define READERS 1
#define STATEMENT_TIMEOUT_DEFAULT_MS 5000
#define CONNECT_TIMEOUT_DEFAULT_MS 5000
#define WAIT_MARGIN_MS 1000 /* past statement_timeout: the server's own cancel comes first */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

/* Advisory lock keys, the two-int form: (namespace, hashtext(key)).  The
 * namespaces are otpd's own ("otp" and a kind), apart from the one-bigint
 * keys other applications on the same database may use. */
#define NS_MIGRATE "1869901824" /* 0x6f747000, with 0: migrations */
#define NS_PHONE "1869901825"   /* 0x6f747001: a number's codes */
#define NS_FAMILY "1869901826"  /* 0x6f747002: a refresh-token family */

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SAVEPOINT,
	ST_ROLLBACK_TO,
	ST_RELEASE,
	ST_PING,
	ST_LOCK_TIMEOUT_SET,
	ST_MIGRATE_LOCK,
	ST_MIGRATION_HAS,
	ST_MIGRATION_ADD,
	ST_MIGRATION_MAX,
	ST_META_INSERT,
	ST_META_GET,
	ST_PHONE_LOCK,
	ST_CODE_RECENT,
	ST_CODE_INSERT,
	ST_CODE_CANCEL,
	ST_CODE_GET,
	ST_CODE_ATTEMPT,
	ST_CODE_USE,
	ST_STATS_ADD,
	ST_STATS_RANGE,
	ST_SMS_ACCEPTED,
	ST_DELIVERY_PENDING,
	ST_DELIVERY_LOCK,
	ST_DELIVERY_SET,
	ST_HISTORY_PURGE_STATS,
	ST_HISTORY_PURGE_CODES,
	ST_USER_LOGIN_OR_CREATE,
	ST_USER_LOGIN,
	ST_USER_BY_ID,
	ST_USER_BY_ID_SHARE,
	ST_SESSION_INSERT,
	ST_SESSION_GET,
	ST_SESSION_GET_LOCK,
	ST_FAMILY_LOCK,
	ST_SESSION_ROTATE,
	ST_FAMILY_REVOKE,
	ST_SESSION_PURGE,
	ST_CODES_OF_PHONE,
	ST_CODES_ALL,
	ST_USER_UPDATE,
	ST_USER_SESSIONS_REVOKE,
	ST_SESSIONS_OF_USER,
	ST_THROTTLE,
	ST_THROTTLE_PURGE,
	ST_AUDIT_INSERT,
	ST_AUDIT_PAGE,
	ST_USER_CREATE,
	ST_USER_BY_PHONE,
	ST_USERS_BY_PHONE,
	ST_USERS_BY_PREFIX,
	ST_USERS_ALL,
	ST_CODES_MATCH,
	ST_PURGE_COUNT_CODES,
	ST_PURGE_COUNT_STATS,
	ST_PURGE_COUNT_SESSIONS,
	_ST_MAX,
};

#define USER_COLUMNS \
	"id, phone_number, username, email, first_name, last_name, is_active, is_staff," \
	" created_at_ms, last_login_ms"
/* A code as the staff console lists it: every column but the hash. */
#define CODE_ROW_COLUMNS \
	"id, phone, created_ms, expires_ms, ended_ms, attempts, max_attempts, state," \
	" sms_message_id, sms_status, sms_status_ms"
#define SESSION_COLUMNS \
	"jti, access_jti, family, created_ms, expires_ms, user_id, state," \
	" rotated_ms, replaced_by"
/* The predicate of the partial index otp_codes_delivery (migration 1),
 * verbatim: the planner uses the index only when the query implies it. */
#define SMS_NOT_FINAL "coalesce(sms_status, 0) < 6"
_Static_assert(STORE_SMS_STATUS_FINAL == 6, "SMS_NOT_FINAL and migration 1 say 6");

/* Every statement otpd runs on PostgreSQL but the migrations' own SQL:
 * prepared once per connection, on first use. */
static const struct {
	const char *name; /* for logs */
	const char *sql;
} stmts[_ST_MAX] = {
	/* Explicit: the rules below are written for READ COMMITTED, whatever
	 * default_transaction_isolation says. */
	[ST_BEGIN] = {"begin", "BEGIN ISOLATION LEVEL READ COMMITTED"},
	[ST_COMMIT] = {"commit", "COMMIT"},
	[ST_ROLLBACK] = {"rollback", "ROLLBACK"},
	[ST_SAVEPOINT] = {"savepoint", "SAVEPOINT job"},
	[ST_ROLLBACK_TO] = {"rollback to savepoint", "ROLLBACK TO SAVEPOINT job"},
	[ST_RELEASE] = {"release savepoint", "RELEASE SAVEPOINT job"},
	[ST_PING] = {"ping", "SELECT 1"},
	/* For this transaction only. */
	[ST_LOCK_TIMEOUT_SET] = {"set lock_timeout",
		"SELECT set_config('lock_timeout', $1, true)"},
	[ST_MIGRATE_LOCK] = {"lock migrations",
		"SELECT pg_advisory_xact_lock(" NS_MIGRATE ", 0)"},
	[ST_MIGRATION_HAS] = {"read schema_migrations",
		"SELECT 1 FROM schema_migrations WHERE version = $1"},
	[ST_MIGRATION_ADD] = {"record migration",
		"INSERT INTO schema_migrations (version, applied_at) VALUES ($1, now())"},
	[ST_MIGRATION_MAX] = {"read schema version",
		"SELECT coalesce(max(version), 0)::bigint FROM schema_migrations"},
	[ST_META_INSERT] = {"insert secret",
		"INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING"},
	[ST_META_GET] = {"read secret", "SELECT value FROM meta WHERE name = $1"},
	[ST_PHONE_LOCK] = {"lock number",
		"SELECT pg_advisory_xact_lock(" NS_PHONE ", hashtext($1::text))"},
	/* The newest $2 codes of a number, newest first: the first is its
	 * current code, and the send limit counts those created inside the
	 * window ($2 is the limit: when fewer than that many are in the
	 * window, older ones cannot matter). */
	[ST_CODE_RECENT] = {"read recent codes",
		"SELECT id, created_ms, expires_ms, attempts, max_attempts, state"
		" FROM otp_codes WHERE phone = $1 ORDER BY id DESC LIMIT $2"},
	/* Record a code, replacing the current one ($6, NULL when it is over
	 * already) in the same statement.  `AND state = 0`: a cancel that
	 * committed since the read keeps its state (it does not take the
	 * number's lock). */
	[ST_CODE_INSERT] = {"record code",
		"WITH replaced AS (UPDATE otp_codes SET state = 3, ended_ms = $3"
		" WHERE id = $6 AND state = 0)"
		" INSERT INTO otp_codes (phone, code_hash, created_ms, expires_ms,"
		" attempts, max_attempts, state) VALUES ($1, $2, $3, $4, 0, $5, 0)"
		" RETURNING id"},
	/* Active or replaced (its SMS never went out either); never a used
	 * one. */
	[ST_CODE_CANCEL] = {"cancel code",
		"UPDATE otp_codes SET state = 2, ended_ms = $3"
		" WHERE id = $2 AND phone = $1 AND state IN (0, 3)"},
	[ST_CODE_GET] = {"read code",
		"SELECT id, code_hash, created_ms, expires_ms, attempts, max_attempts, state"
		" FROM otp_codes WHERE phone = $1 ORDER BY id DESC LIMIT 1 FOR UPDATE"},
	/* $2: when this guess was the last one allowed, else NULL. */
	[ST_CODE_ATTEMPT] = {"count attempt",
		"UPDATE otp_codes SET attempts = attempts + 1, ended_ms = $2 WHERE id = $1"},
	[ST_CODE_USE] = {"use code",
		"UPDATE otp_codes SET state = 1, ended_ms = $2 WHERE id = $1"},
	[ST_STATS_ADD] = {"count events",
		"INSERT INTO stats_5m AS s (bucket_ms, slot, sends, sms_failures, logins,"
		" new_users, wrong_guesses, locks)"
		" VALUES ($1, pg_backend_pid() % 16, $2, $3, $4, $5, $6, 0)"
		" ON CONFLICT (bucket_ms, slot) DO UPDATE SET sends = s.sends + excluded.sends,"
		" sms_failures = s.sms_failures + excluded.sms_failures,"
		" logins = s.logins + excluded.logins,"
		" new_users = s.new_users + excluded.new_users,"
		" wrong_guesses = s.wrong_guesses + excluded.wrong_guesses"},
	[ST_STATS_RANGE] = {"read stats",
		"SELECT bucket_ms, sum(sends)::bigint, sum(sms_failures)::bigint,"
		" sum(logins)::bigint, sum(new_users)::bigint, sum(wrong_guesses)::bigint,"
		" sum(locks)::bigint FROM stats_5m"
		" WHERE bucket_ms >= $1 AND bucket_ms < $2"
		" GROUP BY bucket_ms ORDER BY bucket_ms LIMIT $3"},
	[ST_SMS_ACCEPTED] = {"record sms accepted",
		"UPDATE otp_codes SET sms_message_id = $2, sms_status = NULL,"
		" sms_status_ms = $3 WHERE id = $1"},
	/* Through the partial index otp_codes_delivery. */
	[ST_DELIVERY_PENDING] = {"read pending deliveries",
		"SELECT id, sms_message_id, created_ms, phone FROM otp_codes"
		" WHERE sms_message_id IS NOT NULL AND " SMS_NOT_FINAL
		" AND created_ms > $1 ORDER BY created_ms, id LIMIT $2"},
	/* The rows of a delivery batch, locked in id order: two nodes' pollers
	 * that set overlapping ids never deadlock. */
	[ST_DELIVERY_LOCK] = {"lock deliveries",
		"SELECT id FROM otp_codes WHERE id = ANY ($1::bigint[]) ORDER BY id FOR UPDATE"},
	/* Every item at once, with the result of applying them one after the
	 * other (as SQLite does): for an id given several times, the first
	 * final status wins, else the last one. */
	[ST_DELIVERY_SET] = {"record delivery",
		"UPDATE otp_codes o SET sms_status = v.status, sms_status_ms = v.ms"
		" FROM (SELECT DISTINCT ON (id) id, status, ms"
		" FROM unnest($1::bigint[], $2::integer[], $3::bigint[])"
		" WITH ORDINALITY AS i (id, status, ms, n)"
		" ORDER BY id, (status >= 6) DESC, CASE WHEN status >= 6 THEN n ELSE -n END) v"
		" WHERE o.id = v.id AND coalesce(o.sms_status, 0) < 6"},
	/* Retention, bounded: at most $2 rows (the caller binds $2 >= 1), the
	 * oldest; rows another node is deleting (locked) are skipped. */
	[ST_HISTORY_PURGE_STATS] = {"purge stats",
		"DELETE FROM stats_5m WHERE (bucket_ms, slot) IN (SELECT bucket_ms, slot"
		" FROM stats_5m WHERE bucket_ms < $1 ORDER BY bucket_ms, slot LIMIT $2"
		" FOR UPDATE SKIP LOCKED)"},
	/* Among the $2 oldest codes (by id), those created before $1. */
	[ST_HISTORY_PURGE_CODES] = {"purge codes",
		"DELETE FROM otp_codes WHERE id IN (SELECT id FROM otp_codes"
		" WHERE created_ms < $1 AND id <= (SELECT max(id) FROM"
		" (SELECT id FROM otp_codes ORDER BY id LIMIT $2) o)"
		" FOR UPDATE SKIP LOCKED)"},
	/* The user of a right code, in one statement: a known user's login
	 * recorded (ST_USER_LOGIN below) or, when the number has none, the
	 * user created logged in; the last column says which.  Both parts
	 * see the same snapshot: when another transaction created the user
	 * after it was taken, the UPDATE finds nothing and the INSERT
	 * conflicts (it waits for that one's commit): no row, and
	 * ST_USER_LOGIN, a statement of its own, reads the user. */
	[ST_USER_LOGIN_OR_CREATE] = {"record login",
		"WITH known AS (UPDATE users SET last_login_ms ="
		" CASE WHEN is_active THEN $2::bigint ELSE last_login_ms END"
		" WHERE phone_number = $1 RETURNING " USER_COLUMNS ", false AS created),"
		" created AS (INSERT INTO users (phone_number, username, email, first_name,"
		" last_name, is_active, is_staff, created_at_ms, last_login_ms)"
		" SELECT $1, $3, $4, NULL, NULL, true, false, $2, $2"
		" WHERE NOT EXISTS (SELECT 1 FROM known)"
		" ON CONFLICT (phone_number) DO NOTHING RETURNING " USER_COLUMNS ", true)"
		" SELECT * FROM known UNION ALL SELECT * FROM created"},
	/* A known user's login, and the user read, in one statement: an
	 * active user's last_login_ms is set, an inactive one's stays. */
	[ST_USER_LOGIN] = {"record login",
		"UPDATE users SET last_login_ms ="
		" CASE WHEN is_active THEN $2::bigint ELSE last_login_ms END"
		" WHERE phone_number = $1 RETURNING " USER_COLUMNS},
	[ST_USER_BY_ID] = {"read user",
		"SELECT " USER_COLUMNS " FROM users WHERE id = $1"},
	[ST_USER_BY_ID_SHARE] = {"read user",
		"SELECT " USER_COLUMNS " FROM users WHERE id = $1 FOR SHARE"},
	[ST_SESSION_INSERT] = {"record session",
		"INSERT INTO refresh_tokens"
		" (jti, family, user_id, access_jti, created_ms, expires_ms, state)"
		" VALUES ($1, $2, $3, $4, $5, $6, 0)"},
	[ST_SESSION_GET] = {"read session",
		"SELECT " SESSION_COLUMNS " FROM refresh_tokens WHERE jti = $1"},
	[ST_SESSION_GET_LOCK] = {"read session",
		"SELECT " SESSION_COLUMNS " FROM refresh_tokens WHERE jti = $1 FOR UPDATE"},
	/* The family lock of jti $1 (none when jti is unknown). */
	[ST_FAMILY_LOCK] = {"lock session family",
		"SELECT pg_advisory_xact_lock(" NS_FAMILY ", hashtext(family))"
		" FROM refresh_tokens WHERE jti = $1"},
	[ST_SESSION_ROTATE] = {"rotate session",
		"UPDATE refresh_tokens SET state = 1, rotated_ms = $2, replaced_by = $3"
		" WHERE jti = $1 AND state = 0"},
	/* Every record of the family of jti $1, whatever its state; the rows
	 * locked in jti order, like ST_USER_SESSIONS_REVOKE's (two revocations
	 * of overlapping records never deadlock). */
	[ST_FAMILY_REVOKE] = {"revoke session family",
		"UPDATE refresh_tokens SET state = 2 WHERE jti IN (SELECT jti FROM refresh_tokens"
		" WHERE family = (SELECT family FROM refresh_tokens WHERE jti = $1)"
		" AND state <> 2 ORDER BY jti COLLATE \"C\" FOR UPDATE)"},
	[ST_SESSION_PURGE] = {"purge sessions",
		"DELETE FROM refresh_tokens WHERE jti IN"
		" (SELECT jti FROM refresh_tokens WHERE expires_ms < $1"
		" ORDER BY expires_ms LIMIT $2 FOR UPDATE SKIP LOCKED)"},
	/* The staff console's pages, newest first from the cursor down: a
	 * number's through otp_codes_phone, every number's through the
	 * primary key; the time bounds filter the walk. */
	[ST_CODES_OF_PHONE] = {"list codes of a number",
		"SELECT " CODE_ROW_COLUMNS " FROM otp_codes WHERE phone = $1 AND id < $2"
		" AND created_ms >= $3 AND created_ms < $4 ORDER BY id DESC LIMIT $5"},
	[ST_CODES_ALL] = {"list codes",
		"SELECT " CODE_ROW_COLUMNS " FROM otp_codes WHERE id < $1"
		" AND created_ms >= $2 AND created_ms < $3 ORDER BY id DESC LIMIT $4"},
	/* $2, $3: the new is_active, is_staff, or NULL to keep it; the user
	 * as it is after the change. */
	[ST_USER_UPDATE] = {"update user",
		"UPDATE users SET is_active = coalesce($2::boolean, is_active),"
		" is_staff = coalesce($3::boolean, is_staff) WHERE id = $1"
		" RETURNING " USER_COLUMNS},
	/* Every record of user $1, locked in jti order (see ST_FAMILY_REVOKE). */
	[ST_USER_SESSIONS_REVOKE] = {"revoke sessions of a user",
		"UPDATE refresh_tokens SET state = 2 WHERE jti IN (SELECT jti FROM refresh_tokens"
		" WHERE user_id = $1 AND state <> 2 ORDER BY jti COLLATE \"C\" FOR UPDATE)"},
	/* A user's records, newest first (jti compared bytewise, as SQLite
	 * does, whatever the database's collation). */
	/* The client throttle, for the whole cluster: a GCRA in one
	 * statement (times in microseconds: $2 now, $3 the emission interval
	 * T = period / count, $4 the burst tolerance (count - 1) * T).  A
	 * request is allowed when the key's theoretical arrival time, less
	 * the tolerance, is not in the future; then it moves on by T.  The
	 * row is locked by the UPSERT either way, so requests of one key
	 * take turns on every node.  Answers 0 when allowed, else the
	 * arrival time that refused it (the retry is computed from it), or
	 * -1 when the row that refused it committed after this statement's
	 * snapshot (a NULL would read 0: allowed). */
	[ST_THROTTLE] = {"count throttle",
		"WITH up AS (INSERT INTO throttles AS t (key, tat_us) VALUES ($1, $2::bigint + $3::bigint)"
		" ON CONFLICT (key) DO UPDATE SET tat_us = greatest(t.tat_us, $2::bigint) + $3::bigint"
		" WHERE greatest(t.tat_us, $2::bigint) - $4::bigint <= $2::bigint RETURNING 1)"
		" SELECT CASE WHEN EXISTS (SELECT 1 FROM up) THEN 0::bigint"
		" ELSE coalesce((SELECT tat_us FROM throttles WHERE key = $1), -1) END"},
	/* Throttle rows whose arrival time has passed ($1 now, microseconds)
	 * are as good as none; at most $2, skipping rows in use. */
	[ST_THROTTLE_PURGE] = {"purge throttles",
		"DELETE FROM throttles WHERE key IN (SELECT key FROM throttles"
		" WHERE tat_us < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"},
	[ST_SESSIONS_OF_USER] = {"list sessions of a user",
		"SELECT family, state, created_ms, expires_ms, rotated_ms FROM refresh_tokens"
		" WHERE user_id = $1 ORDER BY created_ms DESC, jti COLLATE \"C\" DESC LIMIT $2"},
	/* The audit log (migration 2): appended, and paged newest first
	 * through the primary key; never changed. */
	[ST_AUDIT_INSERT] = {"append audit entry",
		"INSERT INTO audit_log (time_ms, actor, action, target, client)"
		" VALUES ($1, $2, $3, $4, $5)"},
	[ST_AUDIT_PAGE] = {"list audit entries",
		"SELECT id, time_ms, actor, action, target, client FROM audit_log"
		" WHERE id < $1 ORDER BY id DESC LIMIT $2"},
	/* A user made by an admin (set-staff of a number that never logged
	 * in): as a first login would make it, without a login.  One user
	 * per number: a concurrent insert of the same number waits for the
	 * other's commit, then does nothing. */
	[ST_USER_CREATE] = {"create user",
		"INSERT INTO users (phone_number, username, email, first_name,"
		" last_name, is_active, is_staff, created_at_ms, last_login_ms)"
		" VALUES ($1, $2, $3, NULL, NULL, true, false, $4, NULL)"
		" ON CONFLICT (phone_number) DO NOTHING"},
	[ST_USER_BY_PHONE] = {"read user",
		"SELECT " USER_COLUMNS " FROM users WHERE phone_number = $1"},
	/* The users lists: by number (its UNIQUE index), by username prefix
	 * (a range of users_username_c, bytewise like SQLite), every user
	 * newest first (the primary key). */
	[ST_USERS_BY_PHONE] = {"list users by number",
		"SELECT " USER_COLUMNS " FROM users WHERE phone_number = $1 AND id < $2"},
	[ST_USERS_BY_PREFIX] = {"list users by username prefix",
		"SELECT " USER_COLUMNS " FROM users WHERE username COLLATE \"C\" >= $1"
		" AND username COLLATE \"C\" < $2 AND username COLLATE \"C\" > $3"
		" ORDER BY username COLLATE \"C\" LIMIT $4"},
	[ST_USERS_ALL] = {"list users",
		"SELECT " USER_COLUMNS " FROM users WHERE id < $1 ORDER BY id DESC LIMIT $2"},
	/* The search by code: a number's codes (otp_codes_phone) whose hash is
	 * $2, among those that can no longer be used (used, cancelled,
	 * replaced, ended by their last guess, out of attempts, or expired at
	 * $3).  Equality in SQL on a keyed hash: see store_codes_match(). */
	[ST_CODES_MATCH] = {"search codes by hash",
		"SELECT " CODE_ROW_COLUMNS " FROM otp_codes WHERE phone = $1 AND code_hash = $2"
		" AND (state <> 0 OR ended_ms IS NOT NULL OR attempts >= max_attempts"
		" OR expires_ms <= $3) ORDER BY id DESC LIMIT $4"},
	/* What the purges would delete, bounded by $2 (otpd purge --dry-run),
	 * walked as they walk. */
	[ST_PURGE_COUNT_CODES] = {"purge count codes",
		"SELECT count(*) FROM (SELECT created_ms FROM otp_codes ORDER BY id LIMIT $2) o"
		" WHERE created_ms < $1"},
	[ST_PURGE_COUNT_STATS] = {"purge count stats",
		"SELECT count(*) FROM (SELECT 1 FROM stats_5m WHERE bucket_ms < $1"
		" ORDER BY bucket_ms LIMIT $2) o"},
	[ST_PURGE_COUNT_SESSIONS] = {"purge count sessions",
		"SELECT count(*) FROM (SELECT 1 FROM refresh_tokens WHERE expires_ms < $1"
		" ORDER BY expires_ms LIMIT $2) o"},
};

/* What every connection shares: read-only once the store is open, but
 * for up_ms. */
struct pg_backend {
	/* CLOCK_MONOTONIC: when a connection last connected.  One that
	 * failed before that tries again at once instead of waiting out its
	 * back-off: the database is back. */
	_Atomic int64_t up_ms;
	char *url;                  /* never logged */
	char connect_timeout_s[16]; /* libpq's connect_timeout */
	char tcp_user_timeout_ms[16];
	char settings[320];         /* SET after connecting */
	char restore_timeout[96];   /* statement_timeout again, after migrations */
	char lock_timeout[16];      /* lock_timeout as set_config() takes it */
	int wait_ms;                /* an exchange's deadline */
};

/* A statement sent in the current pipeline whose result is still to be
 * read: its PREPARE, or its execution. */
struct pending {
	enum stmt_id id;
	bool prepare;
	PGresult **ret_res; /* its result, for the caller to read (fetch(), query()) */
	int *ret_rows;      /* rows it changed or returned, when not NULL */
	int64_t *ret_value; /* column 0 of its first row, when not NULL and there is one */
};

#define PENDING_MAX 16

enum { PREP_NONE, PREP_SENT, PREP_DONE };

/* One connection, used by one thread at a time: the worker that owns it. */
struct store_conn {
	struct pg_backend *b;
	PGconn *pg;           /* NULL: lost, connect again (outside a transaction) */
	int index;            /* for logs */
	unsigned char prepared[_ST_MAX];
	bool in_tx;           /* between begin() and commit() / rollback() */
	bool begin_pending;   /* BEGIN goes with the transaction's first statement */
	bool pipeline;        /* in pipeline mode: n_pending results to read */
	bool migrating;       /* no deadline (a migration may take long) */
	bool in_savepoint;    /* a job of a batch runs: its statements are read before it ends */
	int n_pending;
	struct pending pending[PENDING_MAX];
	int64_t retry_at_ms;  /* CLOCK_MONOTONIC: no connection attempt before */
	int64_t failed_ms;    /* the last failed attempt */
	int backoff_ms;
	bool lost;            /* the connection was lost: say when it is back */
	bool closing;         /* the server said FATAL while it was idle */
	bool stale;           /* its prepared statements predate a schema change */
};

/* ---- parameters: integers as text, the hash in binary ---- */

#define PARAMS_MAX 6

struct params {
	int n;
	const char *v[PARAMS_MAX];
	int len[PARAMS_MAX];
	int fmt[PARAMS_MAX];
	char buf[PARAMS_MAX][24];
};

static void p_i64(struct params *p, int64_t x)
{
	snprintf(p->buf[p->n], sizeof(p->buf[p->n]), "%lld", (long long)x);
	p->v[p->n] = p->buf[p->n];
	p->len[p->n] = 0;
	p->fmt[p->n++] = 0;
}

static void p_text(struct params *p, const char *s)
{
	p->v[p->n] = s;
	p->len[p->n] = 0;
	p->fmt[p->n++] = 0;
}

static void p_null(struct params *p)
{
	p->v[p->n] = NULL;
	p->len[p->n] = 0;
	p->fmt[p->n++] = 0;
}

static void p_bytes(struct params *p, const void *b, size_t len)
{
	p->v[p->n] = b;
	p->len[p->n] = (int)len;
	p->fmt[p->n++] = 1;
}

/* ---- results, in binary ---- */

/* An integer column (boolean, smallint, integer, bigint: big-endian, by
 * its length); NULL reads 0. */
static int64_t col_int(const PGresult *r, int row, int col)
{
	const unsigned char *v = (const unsigned char *)PQgetvalue(r, row, col);
	int n = PQgetlength(r, row, col);
	uint64_t u = 0;

	if (PQgetisnull(r, row, col) || n < 1 || n > 8)
		return 0;
	for (int i = 0; i < n; i++)
		u = u << 8 | v[i];
	if (n < 8 && (v[0] & 0x80))
		u |= ~(uint64_t)0 << (8 * n);
	return (int64_t)u;
}

/* Copy text column `col` into dst (cap bytes with the NUL).  NULL becomes
 * "" with *ret_present false.  False when it does not fit. */
static bool col_text(const PGresult *r, int row, int col, char *dst, size_t cap,
                     bool *ret_present)
{
	bool present = !PQgetisnull(r, row, col);
	int n = PQgetlength(r, row, col);

	if (present && (n < 0 || (size_t)n >= cap))
		return false;
	if (present)
		memcpy(dst, PQgetvalue(r, row, col), (size_t)n);
	dst[present ? n : 0] = '\0';
	if (ret_present)
		*ret_present = present;
	return true;
}

/* ---- errors ---- */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* libpq's messages on one line (they end with a newline, some hold
 * several). */
static const char *one_line(const char *msg, char *buf, size_t cap)
{
	size_t n = 0;

	for (const char *s = msg ? msg : ""; *s && n + 1 < cap; s++)
		buf[n++] = (*s == '\n' || *s == '\r' || *s == '\t') ? ' ' : *s;
	while (n > 0 && buf[n - 1] == ' ')
		n--;
	buf[n] = '\0';
	return n ? buf : "(no message)";
}

/* A server error by its SQLSTATE (Appendix A of PostgreSQL's manual). */
static enum otpd_status status_of(const char *state)
{
	static const char *const unavailable[] = {
		"55P03", /* lock_not_available: lock_timeout */
		"40001", /* serialization_failure */
		"40P01", /* deadlock_detected */
		"25006", /* read_only_sql_transaction: a standby, or read-only */
		"25P03", /* idle_in_transaction_session_timeout */
		"58030", /* io_error */
	};

	if (!state || strlen(state) != 5)
		return OTPD_INTERNAL;
	if (strcmp(state, "53200") == 0) /* out_of_memory */
		return OTPD_NOMEM;
	/* 08: connection exception; 57: operator intervention (57014 query
	 * canceled: statement_timeout; 57P01 admin shutdown; 57P02 crash
	 * shutdown; 57P03 cannot connect now); 53: insufficient resources
	 * (53100 disk full, 53300 too many connections). */
	if (strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0 ||
	    strncmp(state, "53", 2) == 0)
		return OTPD_UNAVAILABLE;
	for (size_t i = 0; i < sizeof(unavailable) / sizeof(unavailable[0]); i++)
		if (strcmp(state, unavailable[i]) == 0)
			return OTPD_UNAVAILABLE;
	return OTPD_INTERNAL;
}

static void drop(struct store_conn *c)
{
	PQfinish(c->pg); /* accepts NULL; the server rolls back what was open */
	c->pg = NULL;
	c->pipeline = false;
	c->n_pending = 0;
	c->begin_pending = false;
	c->lost = true;
	memset(c->prepared, 0, sizeof(c->prepared));
}

/* The connection failed (libpq says why) or gave no answer in time: drop
 * it.  Logged when `log` (not when an error of the same exchange was
 * logged already).  A COMMIT whose answer is lost is said to be unknown. */
static enum otpd_status conn_lost(struct store_conn *c, const char *what, bool commit,
                                  bool timed_out, bool log)
{
	const char *unknown = commit ? " (the transaction may or may not have committed)" : "";
	char buf[512];

	if (log && timed_out)
		store_error("postgres: %s: no answer within %d ms, connection %d dropped%s",
		            what, c->b->wait_ms, c->index, unknown);
	else if (log)
		store_error("postgres: %s: connection %d lost: %s%s", what, c->index,
		            one_line(c->pg ? PQerrorMessage(c->pg) : NULL, buf, sizeof(buf)),
		            unknown);
	drop(c);
	return OTPD_UNAVAILABLE;
}

/* conn_lost() while statement id was sent or awaited. */
static enum otpd_status stmt_lost(struct store_conn *c, enum stmt_id id, bool timed_out,
                                  bool log)
{
	return conn_lost(c, stmts[id].name, id == ST_COMMIT, timed_out, log);
}

/* The one place a statement's error is logged and translated: its
 * SQLSTATE and primary message (never DETAIL: it quotes the row). */
static enum otpd_status fail_res(struct store_conn *c, const char *what, const PGresult *r)
{
	const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
	const char *severity = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
	enum otpd_status status;
	char buf[512];

	if (!state) {
		/* libpq's own (the connection failed, or out of memory): no
		 * SQLSTATE, and its message is its own. */
		const char *msg = one_line(PQresultErrorMessage(r), buf, sizeof(buf));

		status = strstr(msg, "out of memory") ? OTPD_NOMEM : OTPD_UNAVAILABLE;
		store_error("postgres: %s: %s", what, msg);
		if (status == OTPD_UNAVAILABLE)
			drop(c);
		return status;
	}
	status = status_of(state);
	store_error("postgres: %s: %s (SQLSTATE %s)", what,
	            one_line(primary, buf, sizeof(buf)), state);
	/* "cached plan must not change result type": another node changed the
	 * schema under this connection's prepared statements.  A new
	 * connection prepares them again (after this transaction). */
	if (strcmp(state, "0A000") == 0 && primary && strstr(primary, "cached plan")) {
		c->stale = true;
		status = OTPD_UNAVAILABLE; /* a retry runs on the new connection */
	}
	/* FATAL and PANIC end the session (administrator shutdown, ...). */
	if (PQstatus(c->pg) != CONNECTION_OK ||
	    (severity && (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0)))
		drop(c);
	return status;
}

/* Server notices: a WARNING is worth a line; NOTICE and below are not
 * (client_min_messages is warning: they are not even sent).  libpq hands
 * what comes while the connection is idle here too: a FATAL error, or an
 * administrator or crash shutdown (57P01, 57P02: a WARNING on an immediate
 * shutdown), is the server closing it. */
static void notice_receiver(void *arg, const PGresult *r)
{
	struct store_conn *c = arg;
	const char *severity = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
	const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
	char buf[512];

	if ((severity && (strcmp(severity, "FATAL") == 0 || strcmp(severity, "PANIC") == 0)) ||
	    (state && strncmp(state, "57P0", 4) == 0)) {
		c->closing = true; /* idle_conn_ok() says so */
		return;
	}
	if (severity && strcmp(severity, "WARNING") == 0)
		log_warn("store.notice", "postgres: %s", one_line(primary, buf, sizeof(buf)));
}

/* ---- talking to the server: never a blocking call ---- */

/* Wait until the socket is readable (or writable, when libpq has output
 * left): 1, or 0 past the deadline (-1: none), or -1 when poll fails. */
static int wait_socket(PGconn *pg, bool out, int64_t deadline)
{
	struct pollfd pfd = {.fd = PQsocket(pg), .events = POLLIN | (out ? POLLOUT : 0)};

	if (pfd.fd < 0)
		return -1;
	for (;;) {
		int timeout = -1, rc;

		if (deadline >= 0) {
			int64_t left = deadline - mono_ms();

			if (left <= 0)
				return 0;
			timeout = left > INT_MAX ? INT_MAX : (int)left;
		}
		rc = poll(&pfd, 1, timeout);
		if (rc > 0)
			return 1;
		if (rc == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

static int64_t deadline_of(const struct store_conn *c)
{
	return c->migrating ? -1 : mono_ms() + c->b->wait_ms;
}

/* The next result of the exchange in progress (NULL ends one statement's
 * results), waiting for it until the deadline.  Not OTPD_OK: the
 * connection is lost or timed out, and dropped. */
static enum otpd_status next_result(struct store_conn *c, const char *what, bool commit,
                                    int64_t deadline, bool log, PGresult **ret)
{
	for (;;) {
		int out = PQflush(c->pg), w;

		if (out < 0)
			return conn_lost(c, what, commit, false, log);
		if (!PQisBusy(c->pg)) {
			*ret = PQgetResult(c->pg);
			return OTPD_OK;
		}
		w = wait_socket(c->pg, out == 1, deadline);
		if (w == 0)
			return conn_lost(c, what, commit, true, log);
		if (w < 0 || !PQconsumeInput(c->pg))
			return conn_lost(c, what, commit, false, log);
	}
}

/* One result of pending statement p; status: the exchange's so far. */
static enum otpd_status take_result(struct store_conn *c, const struct pending *p,
                                    PGresult *r, enum otpd_status status)
{
	switch (PQresultStatus(r)) {
	case PGRES_COMMAND_OK:
	case PGRES_TUPLES_OK:
		if (p->prepare) {
			c->prepared[p->id] = PREP_DONE;
			break;
		}
		if (status != OTPD_OK)
			break;
		if (p->ret_rows)
			*p->ret_rows = atoi(PQcmdTuples(r));
		if (p->ret_value && PQntuples(r) > 0 && PQnfields(r) > 0)
			*p->ret_value = col_int(r, 0, 0);
		if (p->ret_res && !*p->ret_res) {
			*p->ret_res = r;
			return OTPD_OK;
		}
		break;
	case PGRES_PIPELINE_ABORTED: /* an earlier statement failed: it said why */
		if (p->prepare)
			c->prepared[p->id] = PREP_NONE;
		if (status == OTPD_OK) {
			store_error("postgres: %s: skipped, yet nothing before it failed",
			            stmts[p->id].name);
			status = OTPD_INTERNAL;
		}
		break;
	case PGRES_FATAL_ERROR:
		if (p->prepare)
			c->prepared[p->id] = PREP_NONE;
		if (status == OTPD_OK)
			status = fail_res(c, stmts[p->id].name, r);
		break;
	default:
		if (status == OTPD_OK) {
			store_error("postgres: %s: unexpected result %s", stmts[p->id].name,
			            PQresStatus(PQresultStatus(r)));
			status = OTPD_INTERNAL;
		}
		break;
	}
	PQclear(r);
	return status;
}

/* The results captured for the callers of an exchange that failed: none. */
static void results_drop(struct pending *pend, int n)
{
	for (int i = 0; i < n; i++)
		if (pend[i].ret_res) {
			PQclear(*pend[i].ret_res);
			*pend[i].ret_res = NULL;
		}
}

/* Send everything queued (a Sync ends the pipeline) and read every
 * result, in order; the first failure is logged and is the answer.  The
 * results asked for (fetch(), query()) are the callers' to PQclear(); on
 * failure there are none.  The connection leaves pipeline mode, or is
 * dropped. */
static enum otpd_status exchange(struct store_conn *c)
{
	struct pending pend[PENDING_MAX];
	int n = c->n_pending;
	enum stmt_id last = n ? c->pending[n - 1].id : ST_PING;
	int64_t deadline = deadline_of(c);
	enum otpd_status status = OTPD_OK, st = OTPD_OK;
	PGresult *r = NULL;
	bool synced;

	memcpy(pend, c->pending, (size_t)n * sizeof(pend[0]));
	c->n_pending = 0;
	if (PQpipelineSync(c->pg) != 1) {
		status = stmt_lost(c, last, false, true);
		goto out;
	}
	for (int i = 0; i < n; i++) {
		for (;;) {
			st = next_result(c, stmts[pend[i].id].name, pend[i].id == ST_COMMIT,
			                 deadline, status == OTPD_OK, &r);
			if (st != OTPD_OK)
				goto lost;
			if (!r)
				break;
			status = take_result(c, &pend[i], r, status);
			if (!c->pg) /* dropped: a FATAL error */
				goto out;
		}
	}
	/* The Sync's own result ends the pipeline. */
	st = next_result(c, stmts[last].name, last == ST_COMMIT, deadline, status == OTPD_OK, &r);
	if (st != OTPD_OK)
		goto lost;
	synced = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
	PQclear(r);
	if (!synced || PQexitPipelineMode(c->pg) != 1) {
		if (status == OTPD_OK) {
			store_error("postgres: connection %d: the pipeline did not end as sent;"
			            " dropped", c->index);
			status = OTPD_INTERNAL;
		}
		drop(c);
		goto out;
	}
	c->pipeline = false;
	for (int i = 0; i < n && status == OTPD_OK; i++)
		if (pend[i].ret_res && !*pend[i].ret_res) {
			store_error("postgres: %s: no result", stmts[pend[i].id].name);
			status = OTPD_INTERNAL;
		}
	goto out;
lost:
	if (status == OTPD_OK)
		status = st;
out:
	if (status != OTPD_OK)
		results_drop(pend, n);
	return status;
}

static enum otpd_status conn_ready(struct store_conn *c);

/* Queue statement id with its parameters: its PREPARE first when this
 * connection has not prepared it, and the transaction's BEGIN first when
 * it is still to be sent. */
static enum otpd_status send_stmt(struct store_conn *c, enum stmt_id id, const struct params *p,
                                  const struct pending *want)
{
	static const struct params none;
	enum otpd_status status;
	char name[16];

	if (!p)
		p = &none;
	if (!c->pg) {
		if (c->in_tx)
			return OTPD_UNAVAILABLE; /* lost in this transaction: said then */
		status = conn_ready(c);
		if (status != OTPD_OK)
			return status;
	} else if (!c->pipeline && !c->in_tx) {
		status = conn_ready(c);
		if (status != OTPD_OK)
			return status;
	}
	if (c->n_pending + 4 > PENDING_MAX) {
		status = exchange(c);
		if (status != OTPD_OK)
			return status;
	}
	if (!c->pipeline) {
		if (PQenterPipelineMode(c->pg) != 1)
			return stmt_lost(c, id, false, true);
		c->pipeline = true;
	}
	if (c->begin_pending) {
		c->begin_pending = false;
		status = send_stmt(c, ST_BEGIN, NULL, &(struct pending){0});
		if (status != OTPD_OK)
			return status;
	}
	snprintf(name, sizeof(name), "otpd%d", (int)id);
	if (c->prepared[id] == PREP_NONE) {
		if (PQsendPrepare(c->pg, name, stmts[id].sql, 0, NULL) != 1)
			return stmt_lost(c, id, false, true);
		c->prepared[id] = PREP_SENT;
		c->pending[c->n_pending++] = (struct pending){.id = id, .prepare = true};
	}
	if (PQsendQueryPrepared(c->pg, name, p->n, p->v, p->len, p->fmt, 1) != 1)
		return stmt_lost(c, id, false, true);
	c->pending[c->n_pending] = *want;
	c->pending[c->n_pending].id = id;
	c->pending[c->n_pending].prepare = false;
	c->n_pending++;
	return OTPD_OK;
}

/* Queue a statement whose result is not needed now: it goes with the next
 * query() or the COMMIT; its failure fails that one (and the
 * transaction).  ret_rows, ret_value (may be NULL) are filled then: they
 * must live until the job is answered. */
static enum otpd_status defer(struct store_conn *c, enum stmt_id id, const struct params *p,
                              int *ret_rows, int64_t *ret_value)
{
	struct pending want = {.ret_rows = ret_rows, .ret_value = ret_value};

	return send_stmt(c, id, p, &want);
}

/* Queue a statement whose result the caller reads after the next
 * query() (in the same round trip): *ret (NULL until then) is that
 * result, to PQclear(); NULL again when the exchange fails. */
static enum otpd_status fetch(struct store_conn *c, enum stmt_id id, const struct params *p,
                              PGresult **ret)
{
	struct pending want = {.ret_res = ret};

	*ret = NULL;
	return send_stmt(c, id, p, &want);
}

/* Run a statement (with everything queued before it) and return its
 * result in *ret (PQclear() it). */
static enum otpd_status query(struct store_conn *c, enum stmt_id id, const struct params *p,
                              PGresult **ret)
{
	enum otpd_status status = fetch(c, id, p, ret);

	if (status != OTPD_OK)
		return status;
	return exchange(c);
}

/* Read every queued result now (and send BEGIN when it is pending). */
static enum otpd_status flush(struct store_conn *c, bool start)
{
	if (start && c->begin_pending && c->pg) {
		c->begin_pending = false;
		enum otpd_status status = send_stmt(c, ST_BEGIN, NULL, &(struct pending){0});

		if (status != OTPD_OK)
			return status;
	}
	return c->pipeline ? exchange(c) : OTPD_OK;
}

/* SQL text outside the pipeline (several statements; no parameters): the
 * connection settings, DDL.  Inside a transaction, after what is queued. */
static enum otpd_status simple_exec(struct store_conn *c, const char *sql, const char *what)
{
	enum otpd_status status = OTPD_OK, st;
	int64_t deadline;
	PGresult *r;

	if (!c->pg && c->in_tx)
		return OTPD_UNAVAILABLE;
	if (!c->in_tx) {
		status = conn_ready(c);
		if (status != OTPD_OK)
			return status;
	}
	status = flush(c, true);
	if (status != OTPD_OK)
		return status;
	if (PQsendQuery(c->pg, sql) != 1)
		return conn_lost(c, what, false, false, true);
	deadline = deadline_of(c);
	for (;;) {
		st = next_result(c, what, false, deadline, status == OTPD_OK, &r);
		if (st != OTPD_OK)
			return status == OTPD_OK ? st : status;
		if (!r)
			break;
		if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK &&
		    status == OTPD_OK)
			status = fail_res(c, what, r);
		PQclear(r);
		if (!c->pg)
			return status;
	}
	return status;
}

/* ---- connections ---- */

/* Connect (at open, or again after a loss).  Logs its failure. */
static enum otpd_status conn_open(struct store_conn *c)
{
	const struct pg_backend *b = c->b;
	/* Ours first, the URL last: libpq lets later values win, so the URL
	 * may override any of these (sslmode, connect_timeout, ...). */
	const char *const keys[] = {
		"connect_timeout", "fallback_application_name", "keepalives",
		"keepalives_idle", "keepalives_interval", "keepalives_count",
		"tcp_user_timeout", "dbname", NULL,
	};
	const char *const values[] = {
		b->connect_timeout_s, "otpd", "1", "10", "3", "3", b->tcp_user_timeout_ms,
		b->url, NULL,
	};
	enum otpd_status status;
	char buf[512];

	memset(c->prepared, 0, sizeof(c->prepared));
	c->pipeline = false;
	c->n_pending = 0;
	c->pg = PQconnectdbParams(keys, values, 1);
	if (!c->pg) {
		store_error("postgres: connection %d: out of memory", c->index);
		return OTPD_NOMEM;
	}
	if (PQstatus(c->pg) != CONNECTION_OK) {
		/* libpq's message names the host and the server's reason, never
		 * the password. */
		store_error("postgres: cannot connect (connection %d): %s", c->index,
		            one_line(PQerrorMessage(c->pg), buf, sizeof(buf)));
		PQfinish(c->pg);
		c->pg = NULL;
		return OTPD_UNAVAILABLE;
	}
	c->closing = false;
	c->stale = false;
	PQsetNoticeReceiver(c->pg, notice_receiver, c);
	if (PQsetnonblocking(c->pg, 1) != 0) {
		store_error("postgres: connection %d: cannot make it non-blocking: %s", c->index,
		            one_line(PQerrorMessage(c->pg), buf, sizeof(buf)));
		PQfinish(c->pg);
		c->pg = NULL;
		return OTPD_INTERNAL;
	}
	status = simple_exec(c, b->settings, "connection settings");
	if (status != OTPD_OK) {
		PQfinish(c->pg); /* accepts NULL (dropped) */
		c->pg = NULL;
	}
	return status;
}

/* An idle connection that the server has closed (a restart, a failover,
 * an administrator's pg_terminate_backend) is readable: its FATAL message,
 * then the end of the stream.  Seen before anything is sent, it is
 * replaced at no cost to the job that would have failed on it. */
static bool idle_conn_ok(struct store_conn *c)
{
	struct pollfd pfd = {.fd = PQsocket(c->pg), .events = POLLIN};

	if (pfd.fd < 0)
		return false;
	if (poll(&pfd, 1, 0) <= 0)
		return true; /* nothing came: as good as it was */
	/* Read it, then parse it: PQisBusy() does, and hands an error to
	 * notice_receiver(). */
	if (PQconsumeInput(c->pg)) {
		(void)PQisBusy(c->pg);
		if (!c->closing && PQstatus(c->pg) == CONNECTION_OK)
			return true; /* a parameter status, a notice */
	}
	log_warn("store.reconnect", "postgres: connection %d was closed by the server while"
	         " idle: connecting again", c->index);
	return false;
}

/* Connected, or connect again: right away after a loss, then no sooner
 * than the back-off after each failed attempt (a database that is down is
 * not hammered, and says so a few times a second at most), unless another
 * connection has connected since (it is back: every connection follows at
 * once). */
static enum otpd_status conn_ready(struct store_conn *c)
{
	enum otpd_status status;
	int64_t now;

	if (c->pg && PQstatus(c->pg) == CONNECTION_OK && (c->pipeline || c->in_tx ||
	                                                  (!c->stale && idle_conn_ok(c))))
		return OTPD_OK;
	if (c->pg)
		drop(c); /* gone bad since: the failure that did it was logged */
	now = mono_ms();
	if (now < c->retry_at_ms && atomic_load(&c->b->up_ms) <= c->failed_ms)
		return OTPD_UNAVAILABLE; /* the last attempt failed just now, and said so */
	status = conn_open(c);
	now = mono_ms();
	if (status != OTPD_OK) {
		c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_MIN_MS;
		if (c->backoff_ms > BACKOFF_MAX_MS)
			c->backoff_ms = BACKOFF_MAX_MS;
		c->retry_at_ms = now + c->backoff_ms;
		c->failed_ms = now;
		c->lost = true;
		return status;
	}
	atomic_store(&c->b->up_ms, now);
	if (c->lost)
		log_info("store.reconnected", "postgres: connection %d is back", c->index);
	c->lost = false;
	c->backoff_ms = 0;
	c->retry_at_ms = 0;
	return OTPD_OK;
}

/* ---- the dialect's transactions ---- */

static void pg_rollback(struct store_conn *c)
{
	PGresult *r = NULL;

	c->in_tx = false;
	c->in_savepoint = false;
	c->begin_pending = false; /* nothing sent yet: nothing to undo */
	if (c->pg && c->pipeline)
		(void)exchange(c); /* what it says is this transaction's failure */
	if (!c->pg || PQtransactionStatus(c->pg) == PQTRANS_IDLE)
		return;
	if (query(c, ST_ROLLBACK, NULL, &r) == OTPD_OK)
		PQclear(r);
	else
		drop(c); /* the server rolls back a connection that ends */
}

static enum otpd_status pg_begin(struct store_conn *c)
{
	enum otpd_status status;

	/* Never build on a transaction an earlier failure left open. */
	if (c->in_tx || (c->pg && PQtransactionStatus(c->pg) != PQTRANS_IDLE))
		pg_rollback(c);
	status = conn_ready(c);
	if (status != OTPD_OK)
		return status;
	c->in_tx = true;
	c->begin_pending = true;
	return OTPD_OK;
}

static enum otpd_status pg_commit(struct store_conn *c)
{
	enum otpd_status status;
	PGresult *r = NULL;

	if (c->begin_pending) { /* nothing was sent: nothing to commit */
		c->begin_pending = false;
		c->in_tx = false;
		return OTPD_OK;
	}
	status = query(c, ST_COMMIT, NULL, &r);
	if (status != OTPD_OK)
		return status;
	/* COMMIT of a transaction that had failed answers ROLLBACK. */
	if (strcmp(PQcmdStatus(r), "COMMIT") != 0) {
		store_error("postgres: commit: answered %s: the transaction had failed",
		            PQcmdStatus(r));
		status = OTPD_INTERNAL;
	} else {
		c->in_tx = false;
	}
	PQclear(r);
	return status;
}

/* SAVEPOINT, RELEASE and ROLLBACK TO are queued: they go with the next
 * job's first statement, or the COMMIT.  A job inside a savepoint reads
 * its own statements' results before it ends (job_end()), so what fails
 * is its failure alone; what is left to fail in these three is the
 * connection, and that fails the whole batch anyway. */
static enum otpd_status pg_savepoint(struct store_conn *c)
{
	c->in_savepoint = true;
	return defer(c, ST_SAVEPOINT, NULL, NULL, NULL);
}

static enum otpd_status pg_release(struct store_conn *c)
{
	c->in_savepoint = false;
	return defer(c, ST_RELEASE, NULL, NULL, NULL);
}

static enum otpd_status pg_rollback_to(struct store_conn *c)
{
	enum otpd_status status = OTPD_OK;

	c->in_savepoint = false;
	if (c->pg && c->pipeline)
		(void)exchange(c); /* the failing job's own: its failure is said */
	if (c->pg && PQtransactionStatus(c->pg) == PQTRANS_IDLE)
		return OTPD_UNAVAILABLE; /* the transaction is gone (said then) */
	status = defer(c, ST_ROLLBACK_TO, NULL, NULL, NULL);
	return status;
}

/* The end of a write job: inside a savepoint (a batch of several), read
 * what it queued, so that its failure is its own (the engine undoes it
 * alone); alone, it goes with the COMMIT. */
static enum otpd_status job_end(struct store_conn *c, enum otpd_status status)
{
	if (status == OTPD_OK && c->in_savepoint)
		status = flush(c, false);
	return status;
}

static bool pg_in_transaction(struct store_conn *c)
{
	if (!c->pg || !c->in_tx)
		return false;
	if (c->begin_pending)
		return true;
	switch (PQtransactionStatus(c->pg)) {
	case PQTRANS_INTRANS:
	case PQTRANS_INERROR: /* a savepoint can still undo the error */
	case PQTRANS_ACTIVE:  /* statements queued */
		return true;
	default:
		return false;
	}
}

/* ---- migrations (migrate.c drives them) ---- */

/* Inside the migration's transaction: wait for any other node's migration
 * without lock_timeout (a big one may take a while), then restore it for
 * the migration's own statements (DDL that waits for a table's lock holds
 * up every query behind it). */
static enum otpd_status pg_migrate_lock(struct store_conn *c)
{
	struct params p = {0}, q = {0};
	PGresult *r = NULL;
	enum otpd_status status;

	p_text(&p, "0");
	status = defer(c, ST_LOCK_TIMEOUT_SET, &p, NULL, NULL);
	if (status == OTPD_OK)
		status = defer(c, ST_MIGRATE_LOCK, NULL, NULL, NULL);
	p_text(&q, c->b->lock_timeout);
	if (status == OTPD_OK)
		status = query(c, ST_LOCK_TIMEOUT_SET, &q, &r);
	PQclear(r);
	return status;
}

static enum otpd_status pg_migrations_table(struct store_conn *c)
{
	return simple_exec(c,
	                   "CREATE TABLE IF NOT EXISTS schema_migrations ("
	                   " version integer PRIMARY KEY,"
	                   " applied_at timestamptz NOT NULL)",
	                   "create schema_migrations");
}

static enum otpd_status pg_migration_has(struct store_conn *c, int version, bool *ret)
{
	struct params p = {0};
	PGresult *r = NULL;
	enum otpd_status status;

	p_i64(&p, version);
	status = query(c, ST_MIGRATION_HAS, &p, &r);
	if (status == OTPD_OK)
		*ret = PQntuples(r) > 0;
	PQclear(r);
	return status;
}

static enum otpd_status pg_migration_add(struct store_conn *c, int version)
{
	struct params p = {0};

	p_i64(&p, version);
	return defer(c, ST_MIGRATION_ADD, &p, NULL, NULL);
}

static enum otpd_status pg_exec(struct store_conn *c, int version, const char *sql)
{
	char what[64];

	snprintf(what, sizeof(what), "migration %d", version);
	return simple_exec(c, sql, what);
}

static enum otpd_status pg_schema_version(struct store_conn *c, int64_t *ret)
{
	PGresult *r = NULL;
	enum otpd_status status = query(c, ST_MIGRATION_MAX, NULL, &r);

	if (status == OTPD_OK)
		*ret = PQntuples(r) > 0 ? col_int(r, 0, 0) : 0;
	PQclear(r);
	return status;
}

/* A migration may run longer than a request's statement: no timeout,
 * and no deadline of ours, while migrating. */
static void pg_migrate_enter(struct store_conn *c)
{
	c->migrating = true;
	if (simple_exec(c, "SET statement_timeout = 0", "migrations: statement_timeout")
	    != OTPD_OK)
		log_warn("store.migrate", "postgres: migrating with statement_timeout");
}

static void pg_migrate_leave(struct store_conn *c)
{
	c->migrating = false;
	(void)simple_exec(c, c->b->restore_timeout, "migrations: statement_timeout");
}

/* ---- ping ---- */

static enum otpd_status op_ping(struct store_conn *c, struct store_job *j)
{
	PGresult *r = NULL;
	enum otpd_status status = query(c, ST_PING, NULL, &r);

	(void)j;
	PQclear(r);
	return status;
}

/* ---- secrets ---- */

/* One round trip: the INSERT, then the SELECT in a statement (a snapshot)
 * of its own, which sees the row of a node that won the race. */
static enum otpd_status op_secret(struct store_conn *c, struct store_job *j)
{
	const char *name = j->u.secret.name;
	size_t len = j->u.secret.len;
	struct params p = {0}, q = {0};
	enum otpd_status status;
	PGresult *r = NULL;

	p_text(&p, name);
	p_bytes(&p, j->u.secret.fresh, len);
	status = defer(c, ST_META_INSERT, &p, NULL, NULL);
	if (status != OTPD_OK)
		return status;
	p_text(&q, name);
	status = query(c, ST_META_GET, &q, &r);
	if (status != OTPD_OK)
		return status;
	if (PQntuples(r) != 1) {
		store_error("postgres: secret '%s' vanished", name);
		status = OTPD_INTERNAL;
	} else if (PQgetisnull(r, 0, 0) || PQgetlength(r, 0, 0) < 0 ||
	           (size_t)PQgetlength(r, 0, 0) != len) {
		/* The length only: never the value. */
		store_error("postgres: secret '%s' holds %d bytes, expected %zu", name,
		            PQgetlength(r, 0, 0), len);
		status = OTPD_INTERNAL;
	} else {
		memcpy(j->u.secret.value, PQgetvalue(r, 0, 0), len);
		otp_wipe(PQgetvalue(r, 0, 0), len);
	}
	PQclear(r);
	return status;
}

/* ---- the dashboard's counters ---- */

/* One UPSERT into bucket bucket_ms: it goes with the COMMIT. */
static enum otpd_status pg_stats_add(struct store_conn *c, int64_t bucket_ms,
                                     const struct store_stats_sums *d)
{
	struct params p = {0};

	p_i64(&p, bucket_ms);
	p_i64(&p, d->sends);
	p_i64(&p, d->sms_failures);
	p_i64(&p, d->logins);
	p_i64(&p, d->new_users);
	p_i64(&p, d->wrong_guesses);
	return defer(c, ST_STATS_ADD, &p, NULL, NULL);
}

/* ---- the clients' throttles (a database that every node shares) ---- */

/* The client throttle of a send or a verify (store.h, struct
 * store_throttle), queued first: it goes with the number's lock and the
 * read, in the same round trip, and *ret_value says after that read
 * whether it allowed the request (0).  Its row lock comes before the
 * number's advisory lock in every transaction that takes both. */
struct throttle_check {
	bool on;
	int64_t value;   /* ST_THROTTLE's answer: 0 allowed */
	int64_t now_us, tau_us;
};

static enum otpd_status throttle_queue(struct store_conn *c, const struct store_throttle *t,
                                       int64_t now_ms, struct throttle_check *ret)
{
	struct params p = {0};
	int64_t interval_us;

	ret->on = false;
	if (!t || t->count < 1 || t->period_ms < 1 || t->key_len == 0 ||
	    t->key_len > sizeof(t->key))
		return OTPD_OK;
	interval_us = t->period_ms * 1000 / t->count;
	if (interval_us < 1)
		interval_us = 1;
	ret->on = true;
	ret->value = -1; /* no row: refused, as NULL */
	ret->now_us = now_ms * 1000;
	ret->tau_us = interval_us * (t->count - 1);
	p_bytes(&p, t->key, t->key_len);
	p_i64(&p, ret->now_us);
	p_i64(&p, interval_us);
	p_i64(&p, ret->tau_us);
	return defer(c, ST_THROTTLE, &p, NULL, &ret->value);
}

/* After the round trip: false and *ret_retry_after_s (>= 1) when the
 * throttle refused the request. */
static bool throttle_allowed(const struct throttle_check *t, int *ret_retry_after_s)
{
	int64_t wait_us;

	if (!t->on || t->value == 0)
		return true;
	wait_us = t->value > 0 ? t->value - t->tau_us - t->now_us : 1000000;
	*ret_retry_after_s = wait_us > 1000000 ? (int)((wait_us + 999999) / 1000000) : 1;
	return false;
}

/* ---- send a code ---- */

/* The number's lock, queued: it goes with the read that follows, which
 * runs after it has been granted (a new snapshot). */
static enum otpd_status phone_lock(struct store_conn *c, const char *phone)
{
	struct params p = {0};

	p_text(&p, phone);
	return defer(c, ST_PHONE_LOCK, &p, NULL, NULL);
}

/* What op_issue needs of a number's newest codes: its current code, and
 * the codes that count towards the send limit. */
struct send_window {
	bool has_current;
	int64_t current_id;
	bool current_valid;  /* active, attempts left, not expired */
	int count;           /* created after since_ms */
	int64_t oldest_ms;   /* the oldest of those */
};

static enum otpd_status send_window(struct store_conn *c, const char *phone,
                                    int limit, int64_t since_ms, int64_t now_ms,
                                    struct send_window *ret)
{
	struct send_window w = {.oldest_ms = now_ms};
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;

	p_text(&p, phone);
	p_i64(&p, limit > 0 ? limit : 1);
	status = query(c, ST_CODE_RECENT, &p, &r);
	if (status != OTPD_OK)
		return status;
	for (int i = 0; i < PQntuples(r); i++) {
		int64_t created_ms = col_int(r, i, 1);

		if (i == 0) {
			struct store_rules_code code = {
				.created_ms = created_ms,
				.expires_ms = col_int(r, i, 2),
				.attempts = (int)col_int(r, i, 3),
				.max_attempts = (int)col_int(r, i, 4),
				.state = (int)col_int(r, i, 5),
			};

			w.has_current = true;
			w.current_id = col_int(r, i, 0);
			w.current_valid = store_rules_code_live(&code, now_ms);
		}
		if (created_ms > since_ms) {
			w.count++;
			if (created_ms < w.oldest_ms)
				w.oldest_ms = created_ms;
		}
	}
	PQclear(r);
	*ret = w;
	return OTPD_OK;
}

/* Two round trips: lock + read the recent codes; record (and replace) +
 * stats + COMMIT.  The new code's id is filled in when the INSERT's
 * answer comes, with the COMMIT's. */
static enum otpd_status op_issue(struct store_conn *c, struct store_job *j)
{
	const struct otp_policy *p = j->u.issue.p;
	const char *phone = j->u.issue.phone;
	int64_t now_ms = j->now_ms;
	struct store_issue_result *res = &j->u.issue.res;
	struct send_window w = {0};
	struct throttle_check t;
	struct params q = {0};
	enum otpd_status status;
	int retry_after_s = 0;

	/* The client's throttle first, in the same round trip as the lock
	 * and the read. */
	status = throttle_queue(c, j->u.issue.throttle, now_ms, &t);
	if (status == OTPD_OK)
		status = phone_lock(c, phone);
	if (status == OTPD_OK)
		status = send_window(c, phone, p->send_limit, now_ms - p->send_window_ms, now_ms, &w);
	if (status != OTPD_OK)
		return status;
	if (!throttle_allowed(&t, &retry_after_s)) {
		res->retry_after_s = retry_after_s; /* nothing else is recorded */
		j->result = OTPD_THROTTLED;
		return OTPD_OK;
	}
	if (!otp_policy_send_allowed(p, w.count, w.oldest_ms, now_ms, &retry_after_s)) {
		/* Refused: nothing is recorded. */
		res->retry_after_s = retry_after_s;
		j->result = OTPD_OTP_RATE_LIMITED;
		return OTPD_OK;
	}

	/* One current code per phone: the new row replaces the earlier code,
	 * which stops working (docs/API.md §3).  One that is over already
	 * (used, cancelled, expired, exhausted) keeps what it became. */
	p_text(&q, phone);
	p_bytes(&q, j->u.issue.hash, OTP_HASH_LEN);
	p_i64(&q, now_ms);
	p_i64(&q, now_ms + p->expiry_ms);
	p_i64(&q, p->max_attempts);
	if (w.current_valid)
		p_i64(&q, w.current_id);
	else
		p_null(&q);
	res->otp_id = 0;
	status = defer(c, ST_CODE_INSERT, &q, NULL, &res->otp_id);
	if (status != OTPD_OK)
		return status;
	j->counted.sends = 1;
	j->result = OTPD_OK;
	return OTPD_OK;
}

/* ---- cancel a code ---- */

/* One UPDATE by id, without the number's lock: it waits for a verify or a
 * send that holds the row, then re-checks its WHERE on what they left. */
static enum otpd_status op_cancel(struct store_conn *c, struct store_job *j)
{
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;

	p_text(&p, j->u.cancel.phone);
	p_i64(&p, j->u.cancel.otp_id);
	p_i64(&p, j->now_ms);
	status = query(c, ST_CODE_CANCEL, &p, &r);
	if (status == OTPD_OK && atoi(PQcmdTuples(r)) == 1)
		j->counted.sms_failures = 1; /* it changed: counted once */
	PQclear(r);
	return status;
}

/* ---- verify a code and log in ---- */

/* The phone's current code (its newest), locked; the number's lock goes
 * first, in the same round trip. */
static enum otpd_status code_get(struct store_conn *c, const char *phone,
                                 bool *ret_found, int64_t *ret_id,
                                 int *ret_max_attempts, struct otp_record *ret_rec,
                                 uint8_t ret_hash[OTP_HASH_LEN])
{
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;

	status = phone_lock(c, phone);
	if (status != OTPD_OK)
		return status;
	p_text(&p, phone);
	status = query(c, ST_CODE_GET, &p, &r);
	if (status != OTPD_OK)
		return status;
	if (PQntuples(r) == 0) {
		*ret_found = false;
		PQclear(r);
		return OTPD_OK;
	}
	if (PQgetisnull(r, 0, 1) || PQgetlength(r, 0, 1) != OTP_HASH_LEN) {
		store_error("postgres: otp_codes.code_hash has %d bytes", PQgetlength(r, 0, 1));
		PQclear(r);
		return OTPD_INTERNAL;
	}
	memcpy(ret_hash, PQgetvalue(r, 0, 1), OTP_HASH_LEN);
	otp_wipe(PQgetvalue(r, 0, 1), OTP_HASH_LEN);
	*ret_id = col_int(r, 0, 0);
	ret_rec->created_ms = col_int(r, 0, 2);
	ret_rec->expires_ms = col_int(r, 0, 3);
	ret_rec->attempts = (int)col_int(r, 0, 4);
	*ret_max_attempts = (int)col_int(r, 0, 5);
	switch (col_int(r, 0, 6)) { /* the CHECK allows 0..3 */
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
	PQclear(r);
	return OTPD_OK;
}

/* ST_CODE_ATTEMPT or ST_CODE_USE on code id, queued; ended_ms < 0 binds
 * NULL. */
static enum otpd_status code_update(struct store_conn *c, enum stmt_id id,
                                    int64_t code_id, int64_t ended_ms)
{
	struct params p = {0};

	p_i64(&p, code_id);
	if (ended_ms < 0)
		p_null(&p);
	else
		p_i64(&p, ended_ms);
	return defer(c, id, &p, NULL, NULL);
}

/* Read row `row` of USER_COLUMNS. */
static enum otpd_status user_row(const PGresult *r, int row, struct store_user *ret)
{
	struct store_user u;

	memset(&u, 0, sizeof(u));
	u.id = col_int(r, row, 0);
	if (!col_text(r, row, 1, u.phone_number, sizeof(u.phone_number), NULL) ||
	    !col_text(r, row, 2, u.username, sizeof(u.username), NULL) ||
	    !col_text(r, row, 3, u.email, sizeof(u.email), NULL) ||
	    !col_text(r, row, 4, u.first_name, sizeof(u.first_name), &u.has_first_name) ||
	    !col_text(r, row, 5, u.last_name, sizeof(u.last_name), &u.has_last_name)) {
		store_error("postgres: user %lld has a field longer than otpd allows",
		            (long long)u.id);
		return OTPD_INTERNAL;
	}
	u.is_active = col_int(r, row, 6) != 0;
	u.is_staff = col_int(r, row, 7) != 0;
	u.created_ms = col_int(r, row, 8);
	u.last_login_ms = PQgetisnull(r, row, 9) ? -1 : col_int(r, row, 9);
	*ret = u;
	return OTPD_OK;
}

/* A known user's login (ST_USER_LOGIN): *ret_found false when the number
 * has no user. */
static enum otpd_status user_login_known(struct store_conn *c, const char *phone,
                                         int64_t now_ms, bool *ret_found,
                                         struct store_user *ret)
{
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;

	p_text(&p, phone);
	p_i64(&p, now_ms);
	status = query(c, ST_USER_LOGIN, &p, &r);
	if (status != OTPD_OK)
		return status;
	*ret_found = PQntuples(r) > 0;
	if (*ret_found)
		status = user_row(r, 0, ret);
	PQclear(r);
	return status;
}

/* The user of a right code, and the login recorded: a known user is read
 * and (active) its last_login_ms set; a new one is created logged in; one
 * round trip (ST_USER_LOGIN_OR_CREATE).  One user per number even when
 * raced (the number's lock, and UNIQUE with ON CONFLICT DO NOTHING behind
 * it: a user created meanwhile outside the lock is read).  A known but
 * inactive user is read, and no login is recorded (the caller answers
 * user_inactive). */
static enum otpd_status user_login(struct store_conn *c, const char *phone,
                                   const char *email_domain, int64_t now_ms,
                                   bool *ret_is_new, struct store_user *ret)
{
	struct store_user u;
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;
	bool found = false;

	*ret_is_new = false;
	if (!store_rules_new_user(phone, email_domain, &u)) {
		store_error("not a normalised phone number, or e-mail domain too long");
		return OTPD_INTERNAL;
	}
	p_text(&p, phone);
	p_i64(&p, now_ms);
	p_text(&p, u.username);
	p_text(&p, u.email);
	status = query(c, ST_USER_LOGIN_OR_CREATE, &p, &r);
	if (status != OTPD_OK)
		return status;
	if (PQntuples(r) == 1) {
		*ret_is_new = col_int(r, 0, 10) != 0;
		status = user_row(r, 0, ret);
		PQclear(r);
		return status;
	}
	PQclear(r);
	/* Created by someone else since the statement's snapshot (it waited
	 * for that one's commit): a login of a known user after all. */
	status = user_login_known(c, phone, now_ms, &found, ret);
	if (status == OTPD_OK && !found) {
		store_error("postgres: a new user's number is taken, yet has no user");
		status = OTPD_INTERNAL;
	}
	return status;
}

/* Insert a live refresh-token record (queued): session's jti, access_jti
 * and times, in `family` (a login's own, or the family a rotation
 * continues). */
static enum otpd_status session_insert(struct store_conn *c,
                                       const struct store_session *session,
                                       const char *family, int64_t user_id)
{
	struct params p = {0};

	p_text(&p, session->jti);
	p_text(&p, family);
	p_i64(&p, user_id);
	p_text(&p, session->access_jti);
	p_i64(&p, session->created_ms);
	p_i64(&p, session->expires_ms);
	return defer(c, ST_SESSION_INSERT, &p, NULL, NULL);
}

/* Round trips: lock + read the code; then a wrong guess is counted with the
 * COMMIT; a right one is used with the user's read (or creation), and the
 * session goes with the COMMIT. */
static enum otpd_status op_verify(struct store_conn *c, struct store_job *j)
{
	const struct otp_policy *p = j->u.verify.p;
	const char *phone = j->u.verify.phone;
	const uint8_t *hash = j->u.verify.hash;
	const struct store_session *session = j->u.verify.session;
	int64_t now_ms = j->now_ms;
	struct store_verify_result *res = &j->u.verify.res;
	struct otp_policy judged;
	struct otp_record rec;
	struct otp_verdict v;
	uint8_t stored[OTP_HASH_LEN];
	enum otpd_status status;
	bool found = false, match = false;
	int64_t code_id = 0;
	int max_attempts = 0;

	struct throttle_check t;
	int retry_after_s = 0;

	memset(&rec, 0, sizeof(rec));
	/* The client's throttle first, in the same round trip as the read. */
	status = throttle_queue(c, j->u.verify.throttle, now_ms, &t);
	if (status == OTPD_OK)
		status = code_get(c, phone, &found, &code_id, &max_attempts, &rec, stored);
	if (status != OTPD_OK) {
		otp_wipe(stored, sizeof(stored));
		return status;
	}
	if (!throttle_allowed(&t, &retry_after_s)) {
		otp_wipe(stored, sizeof(stored));
		res->retry_after_s = retry_after_s; /* not judged: no attempt is used */
		j->result = OTPD_THROTTLED;
		return OTPD_OK;
	}
	if (found)
		match = otp_hash_equal(stored, hash); /* in C, constant time */
	otp_wipe(stored, sizeof(stored));

	judged = found ? store_rules_verify_policy(p, max_attempts) : *p;
	v = otp_policy_judge(&judged, found ? &rec : NULL, match, now_ms);
	if (v.count_attempt) {
		/* The last guess allowed ends the code (exhausted). */
		bool last = store_rules_last_guess(&judged, rec.attempts);

		status = code_update(c, ST_CODE_ATTEMPT, code_id, last ? now_ms : -1);
		if (status != OTPD_OK)
			return status;
		j->counted.wrong_guesses = 1;
	}
	if (v.consume) {
		status = code_update(c, ST_CODE_USE, code_id, now_ms);
		if (status != OTPD_OK)
			return status;
	}
	if (v.status != OTPD_OK) {
		res->remaining_attempts = v.remaining_attempts;
		j->result = v.status;
		return OTPD_OK; /* commit the counted attempt */
	}

	status = user_login(c, phone, j->u.verify.email_domain, now_ms, &res->is_new_user,
	                    &res->user);
	if (status != OTPD_OK)
		return status;
	if (!res->user.is_active) {
		/* docs/API.md §3: user_inactive; the code is used up all the
		 * same, and it is not a login (no last_login, no session). */
		j->result = OTPD_USER_INACTIVE;
		return OTPD_OK;
	}
	if (session) {
		status = session_insert(c, session, session->family, res->user.id);
		if (status != OTPD_OK)
			return status;
	}
	j->counted.logins = 1;
	j->counted.new_users = res->is_new_user;
	j->result = OTPD_OK;
	return OTPD_OK;
}

/* ---- users ---- */

static enum otpd_status user_by_id(struct store_conn *c, enum stmt_id id, int64_t user_id,
                                   bool *ret_found, struct store_user *ret)
{
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;

	p_i64(&p, user_id);
	status = query(c, id, &p, &r);
	if (status != OTPD_OK)
		return status;
	*ret_found = PQntuples(r) > 0;
	if (*ret_found)
		status = user_row(r, 0, ret);
	PQclear(r);
	return status;
}

static enum otpd_status op_user_get(struct store_conn *c, struct store_job *j)
{
	return user_by_id(c, ST_USER_BY_ID, j->u.user.id, &j->u.user.found, &j->u.user.user);
}

/* ---- sessions: rotate, revoke, purge ---- */

static enum otpd_status session_get(struct store_conn *c, enum stmt_id id, const char *jti,
                                    bool *ret_found, struct store_session_row *ret)
{
	struct store_session_row s;
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;

	p_text(&p, jti);
	status = query(c, id, &p, &r);
	if (status != OTPD_OK)
		return status;
	if (PQntuples(r) == 0) {
		*ret_found = false;
		PQclear(r);
		return OTPD_OK;
	}
	memset(&s, 0, sizeof(s));
	if (!col_text(r, 0, 0, s.sess.jti, sizeof(s.sess.jti), NULL) ||
	    !col_text(r, 0, 1, s.sess.access_jti, sizeof(s.sess.access_jti), NULL) ||
	    !col_text(r, 0, 2, s.sess.family, sizeof(s.sess.family), NULL) ||
	    !col_text(r, 0, 8, s.replaced_by, sizeof(s.replaced_by), NULL)) {
		store_error("postgres: a refresh_tokens record has a jti longer than %d",
		            STORE_JTI_LEN);
		PQclear(r);
		return OTPD_INTERNAL;
	}
	s.sess.created_ms = col_int(r, 0, 3);
	s.sess.expires_ms = col_int(r, 0, 4);
	s.user_id = col_int(r, 0, 5);
	s.state = (int)col_int(r, 0, 6);
	s.has_rotated_ms = !PQgetisnull(r, 0, 7);
	s.rotated_ms = col_int(r, 0, 7);
	PQclear(r);
	*ret = s;
	*ret_found = true;
	return OTPD_OK;
}

/* The family lock of jti, queued (nothing when jti is unknown). */
static enum otpd_status family_lock(struct store_conn *c, const char *jti)
{
	struct params p = {0};

	p_text(&p, jti);
	return defer(c, ST_FAMILY_LOCK, &p, NULL, NULL);
}

/* Revoke every record of the family of jti (a no-op when jti is unknown),
 * queued: *ret_revoked is set when its answer comes, with the COMMIT's. */
static enum otpd_status family_revoke(struct store_conn *c, const char *jti,
                                      int *ret_revoked)
{
	struct params p = {0};

	p_text(&p, jti);
	return defer(c, ST_FAMILY_REVOKE, &p, ret_revoked, NULL);
}

/* Mark live record `jti` rotated at now_ms, replaced by `next_jti`; read
 * at once: the successor is inserted only if exactly this one changed. */
static enum otpd_status session_mark_rotated(struct store_conn *c, const char *jti,
                                             const char *next_jti, int64_t now_ms)
{
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;

	p_text(&p, jti);
	p_i64(&p, now_ms);
	p_text(&p, next_jti);
	status = query(c, ST_SESSION_ROTATE, &p, &r);
	if (status == OTPD_OK && atoi(PQcmdTuples(r)) != 1) {
		/* We hold the family's lock and the row's, and read state 0. */
		store_error("postgres: a live refresh record changed under its lock");
		status = OTPD_INTERNAL;
	}
	PQclear(r);
	return status;
}

/* The decisions of store_session_rotate (store.h), in the order listed
 * there (store/rules.c makes them; this reads and writes).  Locks in the
 * order every transaction on refresh records takes them: the user (FOR
 * SHARE: not deactivated, nor deleted, until this commits; a deactivation
 * locks the user first too, then revokes), then the family, then the
 * record; all three in the first round trip.  Any answer commits: only the
 * OK and replay answers have written anything. */
static enum otpd_status op_rotate(struct store_conn *c, struct store_job *j)
{
	const struct store_args_rotate *a = &j->u.rotate;
	struct store_rotate_result *res = &j->u.rotate.res;
	struct store_session_row cur, succ;
	struct params p = {0};
	enum otpd_status status;
	PGresult *user = NULL;
	bool found = false, user_found;

	j->result = OTPD_INVALID_TOKEN;
	res->reuse_detected = false;
	res->revoked_records = 0;
	p_i64(&p, a->user_id);
	status = fetch(c, ST_USER_BY_ID_SHARE, &p, &user);
	if (status == OTPD_OK)
		status = family_lock(c, a->jti);
	if (status == OTPD_OK)
		status = session_get(c, ST_SESSION_GET_LOCK, a->jti, &found, &cur);
	if (status != OTPD_OK) {
		PQclear(user);
		return status;
	}
	user_found = PQntuples(user) > 0;
	if (user_found)
		status = user_row(user, 0, &res->user);
	PQclear(user);
	if (status != OTPD_OK || !found)
		return status;
	if (store_rules_rotate_first(&cur, a->user_id, j->now_ms) == STORE_ROTATE_REFUSE)
		return OTPD_OK;
	if (!user_found)
		return OTPD_OK;
	if (!res->user.is_active) {
		j->result = OTPD_USER_INACTIVE;
		return OTPD_OK;
	}

	switch (store_rules_rotate_next(&cur, a->grace_ms, j->now_ms)) {
	case STORE_ROTATE_NOW:
		status = session_mark_rotated(c, cur.sess.jti, a->next->jti, j->now_ms);
		if (status == OTPD_OK) /* the family continues; next->family is ignored */
			status = session_insert(c, a->next, cur.sess.family, a->user_id);
		if (status != OTPD_OK)
			return status;
		res->session = *a->next;
		memcpy(res->session.family, cur.sess.family, sizeof(res->session.family));
		res->replayed = false;
		j->result = OTPD_OK;
		return OTPD_OK;
	case STORE_ROTATE_GRACE:
		/* The family's lock holds its records still. */
		status = session_get(c, ST_SESSION_GET, cur.replaced_by, &found, &succ);
		if (status != OTPD_OK)
			return status;
		if (found && store_rules_successor_usable(&cur, &succ, a->user_id, j->now_ms)) {
			res->session = succ.sess;
			res->replayed = true;
			j->result = OTPD_OK;
			return OTPD_OK;
		}
		break;
	case STORE_ROTATE_REUSE:
		break;
	}

	/* A replay of a rotated-out token (docs/API.md §3 "Tokens", RFC 9700
	 * §4.14): the whole family goes, committed with the refusal. */
	status = family_revoke(c, cur.sess.jti, &res->revoked_records);
	if (status != OTPD_OK)
		return status;
	res->reuse_detected = true;
	return OTPD_OK;
}

/* One round trip: BEGIN, the family's lock, the revocation, COMMIT. */
static enum otpd_status op_revoke(struct store_conn *c, struct store_job *j)
{
	enum otpd_status status = family_lock(c, j->u.revoke.jti);

	j->u.revoke.revoked = 0;
	if (status == OTPD_OK)
		status = family_revoke(c, j->u.revoke.jti, &j->u.revoke.revoked);
	return status;
}

static enum otpd_status op_session_purge(struct store_conn *c, struct store_job *j)
{
	struct params p = {0}, q = {0};
	enum otpd_status status;

	p_i64(&p, j->u.purge.before_ms);
	p_i64(&p, j->u.purge.limit);
	j->u.purge.deleted = 0;
	status = defer(c, ST_SESSION_PURGE, &p, &j->u.purge.deleted, NULL);
	/* The cluster's throttles that have run out, with the same bound
	 * (not counted in deleted: the janitor's loop is about sessions). */
	p_i64(&q, j->u.purge.before_ms * 1000);
	p_i64(&q, j->u.purge.limit);
	if (status == OTPD_OK)
		status = defer(c, ST_THROTTLE_PURGE, &q, NULL, NULL);
	return status;
}

/* ---- the staff console ---- */

/* The flags as the change says (the user row locked: first, as every
 * transaction on a user's sessions locks it), the sessions revoked when it
 * deactivates, and the user as it is now; two round trips at most. */
/* Append audit entry e (queued: it goes with the next statement or the
 * COMMIT; its failure fails the transaction). */
static enum otpd_status audit_insert(struct store_conn *c, const struct store_audit_entry *e)
{
	struct params p = {0};

	p_i64(&p, e->time_ms);
	p_text(&p, e->actor);
	p_text(&p, e->action);
	p_text(&p, e->target);
	if (e->has_client)
		p_text(&p, e->client);
	else
		p_null(&p);
	return defer(c, ST_AUDIT_INSERT, &p, NULL, NULL);
}

static enum otpd_status user_update(struct store_conn *c, struct store_args_user_update *a)
{
	const struct store_user_change *ch = a->change;
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;

	p_i64(&p, a->id);
	if (ch->set_active)
		p_text(&p, ch->is_active ? "true" : "false");
	else
		p_null(&p);
	if (ch->set_staff)
		p_text(&p, ch->is_staff ? "true" : "false");
	else
		p_null(&p);
	status = query(c, ST_USER_UPDATE, &p, &r);
	if (status != OTPD_OK)
		return status;
	a->found = PQntuples(r) > 0;
	if (a->found)
		status = user_row(r, 0, &a->user);
	PQclear(r);
	if (status != OTPD_OK || !a->found)
		return status; /* no such user: nothing changed */
	if (ch->set_active && !ch->is_active) {
		/* Deactivated: every session of the user ends with it.  A new
		 * statement: it sees the records of a login that committed while
		 * this waited for the user's row. */
		struct params q = {0};

		p_i64(&q, a->id);
		status = defer(c, ST_USER_SESSIONS_REVOKE, &q, NULL, NULL);
	}
	if (status == OTPD_OK && a->audit) {
		struct store_audit_entry e = *a->audit;

		if (!e.target[0]) /* store.h: the user changed */
			snprintf(e.target, sizeof(e.target), "user:%lld", (long long)a->id);
		status = audit_insert(c, &e); /* libpq copies the parameters */
	}
	return status;
}

static enum otpd_status op_user_update(struct store_conn *c, struct store_job *j)
{
	return user_update(c, &j->u.user_update);
}

static enum otpd_status user_by_phone(struct store_conn *c, const char *phone,
                                      bool *ret_found, struct store_user *ret)
{
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;

	p_text(&p, phone);
	status = query(c, ST_USER_BY_PHONE, &p, &r);
	if (status != OTPD_OK)
		return status;
	*ret_found = PQntuples(r) > 0;
	if (*ret_found)
		status = user_row(r, 0, ret);
	PQclear(r);
	return status;
}

static enum otpd_status op_user_by_phone(struct store_conn *c, struct store_job *j)
{
	return user_by_phone(c, j->u.user.phone, &j->u.user.found, &j->u.user.user);
}

/* The user of the number: created first when asked (INSERT ... ON CONFLICT
 * DO NOTHING: of concurrent creations one inserts, the others wait for its
 * commit and insert nothing), read in a statement of its own (a new
 * snapshot: it sees the row whoever inserted it), then changed by id (the
 * UPDATE locks the row). */
static enum otpd_status op_user_update_by_phone(struct store_conn *c, struct store_job *j)
{
	struct store_args_user_update *a = &j->u.user_update;
	struct store_user u;
	enum otpd_status status;
	bool found = false;
	int inserted = 0;

	a->created = false;
	if (a->create) {
		struct params p = {0};

		if (!store_rules_new_user(a->phone, a->email_domain, &u)) {
			store_error("not a normalised phone number, or e-mail domain too long");
			return OTPD_INTERNAL;
		}
		p_text(&p, a->phone);
		p_text(&p, u.username);
		p_text(&p, u.email);
		p_i64(&p, j->now_ms);
		status = defer(c, ST_USER_CREATE, &p, &inserted, NULL);
		if (status != OTPD_OK)
			return status;
	}
	status = user_by_phone(c, a->phone, &found, &u);
	if (status != OTPD_OK)
		return status;
	a->created = inserted == 1;
	if (!found) {
		a->found = false;
		return OTPD_OK;
	}
	a->id = u.id;
	return user_update(c, a);
}

/* ---- the audit log ---- */

static enum otpd_status op_audit_append(struct store_conn *c, struct store_job *j)
{
	return audit_insert(c, j->u.audit.e);
}

static enum otpd_status op_audit_list(struct store_conn *c, struct store_job *j)
{
	struct store_args_audit_list *a = &j->u.audit_list;
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;
	size_t n = 0;

	p_i64(&p, a->before_id);
	p_i64(&p, (int64_t)a->cap); /* at most STORE_PAGE_MAX (store.c) */
	status = query(c, ST_AUDIT_PAGE, &p, &r);
	if (status != OTPD_OK)
		return status;
	for (int i = 0; i < PQntuples(r) && n < a->cap; i++) {
		struct store_audit_entry *e = &a->ret[n];

		memset(e, 0, sizeof(*e));
		e->id = col_int(r, i, 0);
		e->time_ms = col_int(r, i, 1);
		if (!col_text(r, i, 2, e->actor, sizeof(e->actor), NULL) ||
		    !col_text(r, i, 3, e->action, sizeof(e->action), NULL) ||
		    !col_text(r, i, 4, e->target, sizeof(e->target), NULL) ||
		    !col_text(r, i, 5, e->client, sizeof(e->client), &e->has_client)) {
			store_error("postgres: audit entry %lld has a field longer than otpd allows",
			            (long long)e->id);
			PQclear(r);
			return OTPD_INTERNAL;
		}
		n++;
	}
	PQclear(r);
	a->n = n;
	return OTPD_OK;
}

/* ---- the users lists ---- */

static enum otpd_status op_users_list(struct store_conn *c, struct store_job *j)
{
	struct store_args_users_list *a = &j->u.users;
	enum stmt_id id = a->by == STORE_USERS_BY_PHONE ? ST_USERS_BY_PHONE
	                  : a->by == STORE_USERS_BY_PREFIX ? ST_USERS_BY_PREFIX : ST_USERS_ALL;
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;
	size_t n = 0;

	if (id == ST_USERS_BY_PHONE) {
		p_text(&p, a->phone);
		p_i64(&p, a->before_id);
	} else if (id == ST_USERS_BY_PREFIX) {
		p_text(&p, a->prefix);
		p_text(&p, a->upper);
		p_text(&p, a->after);
		p_i64(&p, (int64_t)a->cap);
	} else {
		p_i64(&p, a->before_id);
		p_i64(&p, (int64_t)a->cap);
	}
	status = query(c, id, &p, &r);
	if (status != OTPD_OK)
		return status;
	for (int i = 0; i < PQntuples(r) && n < a->cap && status == OTPD_OK; i++)
		if ((status = user_row(r, i, &a->ret[n])) == OTPD_OK)
			n++;
	PQclear(r);
	if (status == OTPD_OK)
		a->n = n;
	return status;
}

/* Read row `row` of CODE_ROW_COLUMNS.  False when its number does not fit
 * (not one otpd wrote). */
static bool code_row(const PGresult *r, int row, struct store_code_row *ret)
{
	struct store_code_row c;

	memset(&c, 0, sizeof(c));
	c.id = col_int(r, row, 0);
	if (!col_text(r, row, 1, c.phone, sizeof(c.phone), NULL))
		return false;
	c.created_ms = col_int(r, row, 2);
	c.expires_ms = col_int(r, row, 3);
	c.ended_ms = PQgetisnull(r, row, 4) ? -1 : col_int(r, row, 4);
	c.attempts = (int)col_int(r, row, 5);
	c.max_attempts = (int)col_int(r, row, 6);
	c.state = (int)col_int(r, row, 7);
	c.sms_message_id = PQgetisnull(r, row, 8) ? 0 : col_int(r, row, 8);
	c.sms_status = PQgetisnull(r, row, 9) ? -1 : (int)col_int(r, row, 9);
	c.sms_status_ms = PQgetisnull(r, row, 10) ? -1 : col_int(r, row, 10);
	*ret = c;
	return true;
}

static enum otpd_status op_codes_list(struct store_conn *c, struct store_job *j)
{
	struct store_args_codes_list *a = &j->u.codes;
	enum stmt_id id = a->phone ? ST_CODES_OF_PHONE : ST_CODES_ALL;
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;
	size_t n = 0;

	if (a->phone)
		p_text(&p, a->phone);
	p_i64(&p, a->before_id);
	p_i64(&p, a->since_ms);
	p_i64(&p, a->until_ms);
	p_i64(&p, (int64_t)a->cap); /* at most STORE_PAGE_MAX (store.c) */
	status = query(c, id, &p, &r);
	if (status != OTPD_OK)
		return status;
	for (int i = 0; i < PQntuples(r) && n < a->cap; i++) {
		if (!code_row(r, i, &a->ret[n])) {
			store_error("postgres: code %lld has a number longer than otpd allows",
			            (long long)col_int(r, i, 0));
			PQclear(r);
			return OTPD_INTERNAL;
		}
		n++;
	}
	PQclear(r);
	a->n = n;
	return OTPD_OK;
}

/* The search by code; its audit entry goes with the COMMIT. */
static enum otpd_status op_codes_match(struct store_conn *c, struct store_job *j)
{
	struct store_args_codes_match *a = &j->u.match;
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;
	size_t n = 0;

	p_text(&p, a->phone);
	p_bytes(&p, a->hash, OTP_HASH_LEN);
	p_i64(&p, j->now_ms);
	p_i64(&p, (int64_t)a->cap); /* at most STORE_PAGE_MAX (store.c) */
	status = query(c, ST_CODES_MATCH, &p, &r);
	if (status != OTPD_OK)
		return status;
	for (int i = 0; i < PQntuples(r) && n < a->cap; i++) {
		if (!code_row(r, i, &a->ret[n])) {
			store_error("postgres: code %lld has a number longer than otpd allows",
			            (long long)col_int(r, i, 0));
			PQclear(r);
			return OTPD_INTERNAL;
		}
		n++;
	}
	PQclear(r);
	status = audit_insert(c, a->audit);
	if (status == OTPD_OK)
		a->n = n;
	return status;
}

static enum otpd_status count_one(struct store_conn *c, enum stmt_id id, int64_t before_ms,
                                  int64_t max, int64_t *ret)
{
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;

	p_i64(&p, before_ms);
	p_i64(&p, max);
	status = query(c, id, &p, &r);
	if (status != OTPD_OK)
		return status;
	*ret = PQntuples(r) > 0 ? col_int(r, 0, 0) : 0;
	PQclear(r);
	return OTPD_OK;
}

static enum otpd_status op_purge_count(struct store_conn *c, struct store_job *j)
{
	struct store_args_purge_count *a = &j->u.purge_count;
	enum otpd_status status;

	memset(&a->res, 0, sizeof(a->res));
	status = count_one(c, ST_PURGE_COUNT_CODES, a->codes_before_ms, a->max, &a->res.codes);
	if (status == OTPD_OK)
		status = count_one(c, ST_PURGE_COUNT_STATS, a->codes_before_ms, a->max, &a->res.stats);
	if (status == OTPD_OK)
		status = count_one(c, ST_PURGE_COUNT_SESSIONS, a->sessions_before_ms, a->max,
		                   &a->res.sessions);
	return status;
}

static enum otpd_status op_user_sessions(struct store_conn *c, struct store_job *j)
{
	struct store_args_user_sessions *a = &j->u.sessions;
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;
	size_t n = 0;

	p_i64(&p, a->user_id);
	p_i64(&p, (int64_t)a->cap); /* at most STORE_PAGE_MAX (store.c) */
	status = query(c, ST_SESSIONS_OF_USER, &p, &r);
	if (status != OTPD_OK)
		return status;
	for (int i = 0; i < PQntuples(r) && n < a->cap; i++) {
		struct store_session_info *s = &a->ret[n];

		memset(s, 0, sizeof(*s));
		if (!col_text(r, i, 0, s->family, sizeof(s->family), NULL)) {
			store_error("postgres: a refresh_tokens record has a family longer than %d",
			            STORE_JTI_LEN);
			PQclear(r);
			return OTPD_INTERNAL;
		}
		s->state = (int)col_int(r, i, 1);
		s->created_ms = col_int(r, i, 2);
		s->expires_ms = col_int(r, i, 3);
		s->rotated_ms = PQgetisnull(r, i, 4) ? -1 : col_int(r, i, 4);
		n++;
	}
	PQclear(r);
	a->n = n;
	return OTPD_OK;
}

/* ---- SMS delivery ---- */

static enum otpd_status op_sms_accepted(struct store_conn *c, struct store_job *j)
{
	struct params p = {0};

	p_i64(&p, j->u.sms.otp_id);
	p_i64(&p, j->u.sms.message_id);
	p_i64(&p, j->now_ms);
	return defer(c, ST_SMS_ACCEPTED, &p, NULL, NULL);
}

/* Append "x" or ",x" to an array literal being built in buf. */
static size_t array_add(char *buf, size_t at, int64_t x)
{
	return at + (size_t)sprintf(buf + at, "%s%lld", at > 1 ? "," : "", (long long)x);
}

/* Every item in one statement (the rows locked first, in id order): all
 * or none.  The arrays are literals of integers printed here. */
static enum otpd_status op_delivery_set(struct store_conn *c, struct store_job *j)
{
	const struct store_delivery_status *items = j->u.delivery.items;
	size_t n = j->u.delivery.n, cap, a = 1, b = 1, m = 1;
	char *ids = NULL, *statuses = NULL, *times = NULL;
	struct params p = {0}, q = {0};
	enum otpd_status status;

	if (n == 0)
		return OTPD_OK;
	cap = n * 22 + 3; /* "-9223372036854775808," each, braces, NUL */
	ids = malloc(cap);
	statuses = malloc(cap);
	times = malloc(cap);
	if (!ids || !statuses || !times) {
		free(ids);
		free(statuses);
		free(times);
		return OTPD_NOMEM;
	}
	ids[0] = statuses[0] = times[0] = '{';
	for (size_t i = 0; i < n; i++) {
		a = array_add(ids, a, items[i].otp_id);
		b = array_add(statuses, b, items[i].status);
		m = array_add(times, m, items[i].now_ms);
	}
	strcpy(ids + a, "}");
	strcpy(statuses + b, "}");
	strcpy(times + m, "}");
	p_text(&p, ids);
	status = defer(c, ST_DELIVERY_LOCK, &p, NULL, NULL);
	p_text(&q, ids);
	p_text(&q, statuses);
	p_text(&q, times);
	if (status == OTPD_OK)
		status = defer(c, ST_DELIVERY_SET, &q, NULL, NULL); /* libpq copied them */
	free(ids);
	free(statuses);
	free(times);
	return status;
}

/* The rows go to the job's own buffer, copied to the caller's only when
 * the whole read succeeded (a failure leaves it untouched). */
static enum otpd_status op_delivery_pending(struct store_conn *c, struct store_job *j)
{
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;
	size_t n = 0;

	p_i64(&p, j->u.pending.since_ms);
	p_i64(&p, (int64_t)j->u.pending.limit); /* at most 100000 (store.c) */
	status = query(c, ST_DELIVERY_PENDING, &p, &r);
	if (status != OTPD_OK)
		return status;
	for (int i = 0; i < PQntuples(r) && n < j->u.pending.limit; i++) {
		struct store_delivery_pending *d = &j->u.pending.ret[n];

		d->otp_id = col_int(r, i, 0);
		d->message_id = col_int(r, i, 1);
		d->created_ms = col_int(r, i, 2);
		if (col_text(r, i, 3, d->phone, sizeof(d->phone), NULL))
			n++; /* else not a stored number: never listed */
	}
	PQclear(r);
	j->u.pending.n = n;
	return OTPD_OK;
}

static enum otpd_status op_stats(struct store_conn *c, struct store_job *j)
{
	struct params p = {0};
	enum otpd_status status;
	PGresult *r = NULL;
	size_t n = 0;

	p_i64(&p, j->u.stats.since_ms);
	p_i64(&p, j->u.stats.until_ms);
	p_i64(&p, (int64_t)j->u.stats.cap); /* at most 1000000 (store.c) */
	status = query(c, ST_STATS_RANGE, &p, &r);
	if (status != OTPD_OK)
		return status;
	for (int i = 0; i < PQntuples(r) && n < j->u.stats.cap; i++) {
		struct store_stats_bucket *b = &j->u.stats.ret[n++];

		b->bucket_ms = col_int(r, i, 0);
		b->sends = col_int(r, i, 1);
		b->sms_failures = col_int(r, i, 2);
		b->logins = col_int(r, i, 3);
		b->new_users = col_int(r, i, 4);
		b->wrong_guesses = col_int(r, i, 5);
		b->locks = col_int(r, i, 6);
	}
	PQclear(r);
	j->u.stats.n = n;
	return OTPD_OK;
}

/* ---- retention ---- */

/* Stats buckets first, then codes with what is left of the limit. */
static enum otpd_status op_history_purge(struct store_conn *c, struct store_job *j)
{
	static const enum stmt_id order[] = {ST_HISTORY_PURGE_STATS, ST_HISTORY_PURGE_CODES};
	int limit = j->u.purge.limit, deleted = 0;

	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]) && deleted < limit; i++) {
		struct params p = {0};
		enum otpd_status status;
		PGresult *r = NULL;

		p_i64(&p, j->u.purge.before_ms);
		p_i64(&p, limit - deleted);
		status = query(c, order[i], &p, &r);
		if (status != OTPD_OK)
			return status;
		deleted += atoi(PQcmdTuples(r));
		PQclear(r);
	}
	j->u.purge.deleted = deleted;
	return OTPD_OK;
}

/* ---- the dialect ---- */

/* The write operations as the engine calls them (job_end()). */
#define WRITE_OP(fn) \
	static enum otpd_status fn##_job(struct store_conn *c, struct store_job *j) \
	{ \
		return job_end(c, fn(c, j)); \
	}
WRITE_OP(op_secret)
WRITE_OP(op_issue)
WRITE_OP(op_cancel)
WRITE_OP(op_verify)
WRITE_OP(op_rotate)
WRITE_OP(op_revoke)
WRITE_OP(op_session_purge)
WRITE_OP(op_sms_accepted)
WRITE_OP(op_delivery_set)
WRITE_OP(op_history_purge)
WRITE_OP(op_user_update)
WRITE_OP(op_user_update_by_phone)
WRITE_OP(op_audit_append)
WRITE_OP(op_codes_match)

static void pg_conn_close(struct store_conn *c)
{
	if (!c)
		return;
	PQfinish(c->pg);
	free(c);
}

static const struct store_dialect postgres_dialect = {
	.name = "postgres",
	.statement_atomic = false, /* any error aborts the whole transaction */
	.begin = pg_begin,
	.commit = pg_commit,
	.rollback = pg_rollback,
	.savepoint = pg_savepoint,
	.release = pg_release,
	.rollback_to = pg_rollback_to,
	.in_transaction = pg_in_transaction,
	.stats_add = pg_stats_add,
	.op = {
		[STORE_OP_SECRET] = op_secret_job,
		[STORE_OP_ISSUE] = op_issue_job,
		[STORE_OP_CANCEL] = op_cancel_job,
		[STORE_OP_VERIFY] = op_verify_job,
		[STORE_OP_ROTATE] = op_rotate_job,
		[STORE_OP_REVOKE] = op_revoke_job,
		[STORE_OP_SESSION_PURGE] = op_session_purge_job,
		[STORE_OP_SMS_ACCEPTED] = op_sms_accepted_job,
		[STORE_OP_DELIVERY_SET] = op_delivery_set_job,
		[STORE_OP_HISTORY_PURGE] = op_history_purge_job,
		[STORE_OP_USER_UPDATE] = op_user_update_job,
		[STORE_OP_PING] = op_ping,
		[STORE_OP_USER_GET] = op_user_get,
		[STORE_OP_DELIVERY_PENDING] = op_delivery_pending,
		[STORE_OP_STATS] = op_stats,
		[STORE_OP_CODES_LIST] = op_codes_list,
		[STORE_OP_USER_SESSIONS] = op_user_sessions,
		[STORE_OP_USER_UPDATE_BY_PHONE] = op_user_update_by_phone_job,
		[STORE_OP_AUDIT_APPEND] = op_audit_append_job,
		[STORE_OP_CODES_MATCH] = op_codes_match_job,
		[STORE_OP_USER_BY_PHONE] = op_user_by_phone,
		[STORE_OP_USERS_LIST] = op_users_list,
		[STORE_OP_AUDIT_LIST] = op_audit_list,
		[STORE_OP_PURGE_COUNT] = op_purge_count,
	},
	.migrations = &store_postgres_migrations,
	.migrate_lock = pg_migrate_lock,
	.migrations_table = pg_migrations_table,
	.migration_has = pg_migration_has,
	.migration_add = pg_migration_add,
	.exec = pg_exec,
	.schema_version = pg_schema_version,
	.migrate_enter = pg_migrate_enter,
	.migrate_leave = pg_migrate_leave,
	.conn_close = pg_conn_close,
};

/* ---- open ---- */

static void backend_free(void *arg)
{
	struct pg_backend *b = arg;

	if (!b)
		return;
	if (b->url) {
		otp_wipe(b->url, strlen(b->url)); /* it may hold a password */
		free(b->url);
	}
	free(b);
}

/* A URL libpq cannot read is refused as configuration, without its text:
 * libpq's reason may quote the part it could not decode, the password
 * included. */
static enum otpd_status url_check(const char *url, char *err, size_t errlen)
{
	static const char msg[] = "DATABASE_URL: not a PostgreSQL URI libpq can read "
	                          "(postgres://user:password@host:port/db?param=value; "
	                          "libpq's reason is not shown: it may quote the password)";
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(url, &perr);

	if (opts) {
		for (PQconninfoOption *o = opts; o->keyword; o++)
			if (o->val)
				otp_wipe(o->val, strlen(o->val));
		PQconninfoFree(opts);
		return OTPD_OK;
	}
	if (!perr) {
		log_error("store.open", "out of memory");
		return OTPD_NOMEM;
	}
	PQfreemem(perr);
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
	else
		log_error("store.open", "%s", msg);
	return OTPD_FORBIDDEN;
}

enum otpd_status store_postgres_open(const char *url, const struct store_options *opt,
                                     char *err, size_t errlen, struct store **ret)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	/* 0: two per core (a connection waits on the network half the time),
	 * at least POOL_DEFAULT, at most POOL_DEFAULT_MAX: a big machine's
	 * nodes would otherwise use up PostgreSQL's max_connections (100 by
	 * default) between a few of them. */
	int pool = opt->pool_size > 0 ? opt->pool_size
	           : cores > POOL_DEFAULT_MAX / 2 ? POOL_DEFAULT_MAX
	           : cores > POOL_DEFAULT / 2     ? (int)(2 * cores)
	                                          : POOL_DEFAULT;
	int statement_ms = opt->statement_timeout_ms > 0 ? opt->statement_timeout_ms
	                                                 : STATEMENT_TIMEOUT_DEFAULT_MS;
	int connect_ms = opt->connect_timeout_ms > 0 ? opt->connect_timeout_ms
	                                             : CONNECT_TIMEOUT_DEFAULT_MS;
	/* 0 is "do not wait" (SQLite's busy timeout 0); PostgreSQL's 0 would
	 * be "wait for ever". */
	int lock_ms = opt->busy_timeout_ms > 0 ? opt->busy_timeout_ms : 1;
	struct store_engine_config cfg = {
		.d = &postgres_dialect,
		.n_writers = pool,
		.n_readers = READERS,
		.batch_max = opt->batch_max > 0 ? opt->batch_max : BATCH_MAX,
		.queue_max = opt->queue_max,
		.backend_close = backend_free,
	};
	struct store_conn **conns = NULL;
	struct pg_backend *b = NULL;
	enum otpd_status status;
	int n = pool + READERS, opened = 0;

	status = url_check(url, err, errlen);
	if (status != OTPD_OK)
		return status;
	if (PQisthreadsafe() != 1) {
		log_error("store.open", "postgres: this libpq is not thread-safe");
		return OTPD_INTERNAL;
	}
	b = calloc(1, sizeof(*b));
	conns = calloc((size_t)n, sizeof(*conns));
	if (!b || !conns || !(b->url = strdup(url))) {
		log_error("store.open", "out of memory");
		status = OTPD_NOMEM;
		goto fail;
	}
	/* libpq's connect_timeout is in whole seconds; below 2 it is 2
	 * (libpq's own floor: 1 s would fire on a slow handshake). */
	snprintf(b->connect_timeout_s, sizeof(b->connect_timeout_s), "%d",
	         connect_ms < 2000 ? 2 : (connect_ms + 999) / 1000);
	b->wait_ms = statement_ms + WAIT_MARGIN_MS;
	snprintf(b->tcp_user_timeout_ms, sizeof(b->tcp_user_timeout_ms), "%d", b->wait_ms);
	snprintf(b->lock_timeout, sizeof(b->lock_timeout), "%d", lock_ms);
	snprintf(b->settings, sizeof(b->settings),
	         "SET statement_timeout = %d; SET lock_timeout = %d;"
	         " SET idle_in_transaction_session_timeout = %d;"
	         " SET synchronous_commit = on; SET client_min_messages = warning",
	         statement_ms, lock_ms, b->wait_ms + connect_ms);
	snprintf(b->restore_timeout, sizeof(b->restore_timeout),
	         "SET statement_timeout = %d", statement_ms);
	for (opened = 0; opened < n; opened++) {
		struct store_conn *c = calloc(1, sizeof(*c));

		if (!c) {
			log_error("store.open", "out of memory");
			status = OTPD_NOMEM;
			goto fail;
		}
		c->b = b;
		c->index = opened;
		conns[opened] = c;
		status = conn_open(c);
		if (status != OTPD_OK) {
			opened++;
			goto fail;
		}
	}
	cfg.writers = conns;
	cfg.readers = conns + pool;
	cfg.backend = b;
	status = store_engine_open(&cfg, ret); /* owns conns[i] and b from here */
	free(conns);
	if (status == OTPD_OK)
		log_debug("store.open", "opened PostgreSQL: %d connections and %d for reads",
		          pool, READERS);
	return status;
fail:
	for (int i = 0; i < opened; i++)
		pg_conn_close(conns[i]);
	free(conns);
	backend_free(b);
	return status;
}
