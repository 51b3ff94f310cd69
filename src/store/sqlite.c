/* The SQLite dialect of the store (backend.h): statements, error mapping,
 * the transaction body of each operation, and open (WAL, file modes).  The
 * engine (queue.c) drives it with one writer, which owns the write
 * connection, and one reader on a second, read-only connection, so reads
 * never wait for a batch (WAL).  An in-memory database cannot be shared by
 * two connections: there the reads are jobs of the writer.
 *
 * Every write transaction is `BEGIN IMMEDIATE`: it holds the database's
 * write lock from its first statement, so the read-decide-write of each
 * rule (single use, attempt counts, send limits, one user per number)
 * never interleaves with another writer, in this process or another.
 * synchronous=FULL in WAL mode syncs the WAL at every commit, so OTPD_OK
 * means durable, with one sync per batch.  Driver errors are translated and
 * logged once, here (see fail()). */
#include "backend.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "../log.h"
#include "../metrics.h"
#include "rules.h"

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
	ST_CODES_OF_PHONE,
	ST_CODES_ALL,
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
	ST_USER_UPDATE,
	ST_SESSION_INSERT,
	ST_SESSION_GET,
	ST_SESSION_ROTATE,
	ST_FAMILY_REVOKE,
	ST_USER_SESSIONS_REVOKE,
	ST_SESSIONS_OF_USER,
	ST_SESSION_PURGE,
	ST_AUDIT_INSERT,
	ST_AUDIT_PAGE,
	ST_USER_CREATE,
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
	/* The staff console's pages, newest first from the cursor ?2 down: a
	 * number's through the index on phone (it holds (phone, rowid)), every
	 * number's through the primary key; the time bounds filter the walk. */
	[ST_CODES_OF_PHONE] = {"list codes of a number",
		"SELECT " CODE_ROW_COLUMNS " FROM otp_codes WHERE phone = ?1 AND id < ?2"
		" AND created_ms >= ?3 AND created_ms < ?4 ORDER BY id DESC LIMIT ?5"},
	[ST_CODES_ALL] = {"list codes",
		"SELECT " CODE_ROW_COLUMNS " FROM otp_codes WHERE id < ?1"
		" AND created_ms >= ?2 AND created_ms < ?3 ORDER BY id DESC LIMIT ?4"},
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
	/* ?2, ?3: the new is_active, is_staff, or NULL to keep it. */
	[ST_USER_UPDATE] = {"update user",
		"UPDATE users SET is_active = coalesce(?2, is_active),"
		" is_staff = coalesce(?3, is_staff) WHERE id = ?1"},
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
	/* Every record of user ?1 (through the index on user_id). */
	[ST_USER_SESSIONS_REVOKE] = {"revoke sessions of a user",
		"UPDATE refresh_tokens SET state = 2 WHERE user_id = ?1 AND state <> 2"},
	/* A user's records, newest first: through the index on user_id, then
	 * sorted (one user's records: a few per login still unexpired). */
	[ST_SESSIONS_OF_USER] = {"list sessions of a user",
		"SELECT family, state, created_ms, expires_ms, rotated_ms FROM refresh_tokens"
		" WHERE user_id = ?1 ORDER BY created_ms DESC, jti DESC LIMIT ?2"},
	/* Bounded: at most ?2 rows.  The caller binds ?2 >= 1 (a negative
	 * LIMIT would mean no limit at all). */
	[ST_SESSION_PURGE] = {"purge sessions",
		"DELETE FROM refresh_tokens WHERE jti IN"
		" (SELECT jti FROM refresh_tokens WHERE expires_ms < ?1"
		" ORDER BY expires_ms LIMIT ?2)"},
	/* The audit log: appended, and paged newest first through the
	 * primary key; never changed (migration 5). */
	[ST_AUDIT_INSERT] = {"append audit entry",
		"INSERT INTO audit_log (time_ms, actor, action, target, client)"
		" VALUES (?1, ?2, ?3, ?4, ?5)"},
	[ST_AUDIT_PAGE] = {"list audit entries",
		"SELECT id, time_ms, actor, action, target, client FROM audit_log"
		" WHERE id < ?1 ORDER BY id DESC LIMIT ?2"},
	/* A user made by an admin (set-staff of a number that never logged
	 * in): as a first login would make it, without a login. */
	[ST_USER_CREATE] = {"create user",
		"INSERT INTO users (phone_number, username, email, first_name,"
		" last_name, is_active, is_staff, created_at_ms, last_login_ms)"
		" VALUES (?1, ?2, ?3, NULL, NULL, 1, 0, ?4, NULL)"
		" ON CONFLICT (phone_number) DO NOTHING"},
	/* The users lists: by number (its UNIQUE index), by username prefix
	 * (a range of the UNIQUE index on username, in its order), every user
	 * newest first (the primary key). */
	[ST_USERS_BY_PHONE] = {"list users by number",
		"SELECT " USER_COLUMNS " FROM users WHERE phone_number = ?1 AND id < ?2"},
	[ST_USERS_BY_PREFIX] = {"list users by username prefix",
		"SELECT " USER_COLUMNS " FROM users WHERE username >= ?1 AND username < ?2"
		" AND username > ?3 ORDER BY username LIMIT ?4"},
	[ST_USERS_ALL] = {"list users",
		"SELECT " USER_COLUMNS " FROM users WHERE id < ?1 ORDER BY id DESC LIMIT ?2"},
	/* The search by code: a number's codes (otp_codes_phone) whose hash is
	 * ?2, among those that can no longer be used (used, cancelled,
	 * replaced, ended by their last guess, out of attempts, or expired at
	 * ?3).  Equality in SQL on a keyed hash: see store_codes_match(). */
	[ST_CODES_MATCH] = {"search codes by hash",
		"SELECT " CODE_ROW_COLUMNS " FROM otp_codes WHERE phone = ?1 AND code_hash = ?2"
		" AND (state <> 0 OR ended_ms IS NOT NULL OR attempts >= max_attempts"
		" OR expires_ms <= ?3) ORDER BY id DESC LIMIT ?4"},
	/* What the purges would delete, bounded by ?2 (otpd purge --dry-run),
	 * walked as they walk. */
	[ST_PURGE_COUNT_CODES] = {"purge count codes",
		"SELECT count(*) FROM (SELECT created_ms FROM otp_codes ORDER BY id LIMIT ?2)"
		" WHERE created_ms < ?1"},
	[ST_PURGE_COUNT_STATS] = {"purge count stats",
		"SELECT count(*) FROM (SELECT bucket_ms FROM stats_5m WHERE bucket_ms < ?1"
		" ORDER BY bucket_ms LIMIT ?2)"},
	[ST_PURGE_COUNT_SESSIONS] = {"purge count sessions",
		"SELECT count(*) FROM (SELECT expires_ms FROM refresh_tokens WHERE expires_ms < ?1"
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
 * time: the worker that owns it. */
struct store_conn {
	sqlite3 *db;
	sqlite3_stmt *stmt[_ST_MAX];
};

#define BATCH_MAX 512 /* jobs per transaction at most */

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
static enum otpd_status fail(struct store_conn *c, int rc, const char *what)
{
	enum otpd_status status = status_of(rc);

	store_error( "sqlite: %s: %s", what,
	          c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
	return status == OTPD_OK ? OTPD_INTERNAL : status;
}

static enum otpd_status prepare(struct store_conn *c, enum stmt_id id,
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
static enum otpd_status finish(struct store_conn *c, enum stmt_id id, int rc)
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
static enum otpd_status fetch(struct store_conn *c, enum stmt_id id, int rc,
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

static enum otpd_status run_plain(struct store_conn *c, enum stmt_id id)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, id, &st);

	if (status != OTPD_OK)
		return status;
	return finish(c, id, SQLITE_OK);
}




/* ---- the dialect's transactions ---- */

static void sq_rollback(struct store_conn *c)
{
	/* Some errors (IOERR, FULL, NOMEM, BUSY on commit) may already have
	 * rolled the transaction back. */
	if (sqlite3_get_autocommit(c->db))
		return;
	if (run_plain(c, ST_ROLLBACK) != OTPD_OK)
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

static enum otpd_status sq_begin(struct store_conn *c)
{
	/* Never build on a transaction an earlier failure left open. */
	sq_rollback(c);
	return run_plain(c, ST_BEGIN);
}

static enum otpd_status sq_commit(struct store_conn *c)
{
	return run_plain(c, ST_COMMIT);
}

static enum otpd_status sq_savepoint(struct store_conn *c)
{
	return run_plain(c, ST_SAVEPOINT);
}

static enum otpd_status sq_release(struct store_conn *c)
{
	return run_plain(c, ST_RELEASE);
}

static enum otpd_status sq_rollback_to(struct store_conn *c)
{
	return run_plain(c, ST_ROLLBACK_TO);
}

static bool sq_in_transaction(struct store_conn *c)
{
	return !sqlite3_get_autocommit(c->db);
}

static int bind_text(sqlite3_stmt *st, int i, const char *text)
{
	return sqlite3_bind_text(st, i, text, -1, SQLITE_STATIC);
}

/* ---- migrations (migrate.c drives them) ---- */

static enum otpd_status sq_migrations_table(struct store_conn *c)
{
	return run_plain(c, ST_MIGRATIONS_TABLE);
}

static enum otpd_status sq_migration_has(struct store_conn *c, int version, bool *ret)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_MIGRATION_HAS, &st);

	if (status == OTPD_OK)
		status = fetch(c, ST_MIGRATION_HAS, sqlite3_bind_int(st, 1, version), ret);
	if (status == OTPD_OK && *ret)
		release(st);
	return status;
}

static enum otpd_status sq_migration_add(struct store_conn *c, int version)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_MIGRATION_ADD, &st);

	if (status != OTPD_OK)
		return status;
	return finish(c, ST_MIGRATION_ADD, sqlite3_bind_int(st, 1, version));
}

static enum otpd_status sq_exec(struct store_conn *c, int version, const char *sql)
{
	int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);
	char what[64];

	if (rc == SQLITE_OK)
		return OTPD_OK;
	snprintf(what, sizeof(what), "migration %d", version);
	return fail(c, rc, what);
}

static enum otpd_status sq_schema_version(struct store_conn *c, int64_t *ret)
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

/* A migration that copies a table sorts its keys to build the indexes
 * (version 4: 10 M codes, some 800 MB): the sorter spills to temporary
 * files meanwhile, not to memory as a job's savepoint journal does
 * (temp_store=MEMORY, store_sqlite_open()). */
static void sq_migrate_enter(struct store_conn *c)
{
	if (sqlite3_exec(c->db, "PRAGMA temp_store=FILE", NULL, NULL, NULL) != SQLITE_OK)
		log_warn("store.migrate", "sqlite: temp_store=FILE: %s", sqlite3_errmsg(c->db));
}

static void sq_migrate_leave(struct store_conn *c)
{
	if (sqlite3_exec(c->db, "PRAGMA temp_store=MEMORY", NULL, NULL, NULL) != SQLITE_OK)
		log_warn("store.migrate", "sqlite: temp_store=MEMORY: %s", sqlite3_errmsg(c->db));
}

/* ---- ping ---- */

static enum otpd_status op_ping(struct store_conn *c, struct store_job *j)
{
	sqlite3_stmt *st = NULL;
	bool found;
	enum otpd_status status = prepare(c, ST_PING, &st);

	(void)j;
	if (status == OTPD_OK)
		status = fetch(c, ST_PING, SQLITE_OK, &found);
	if (status == OTPD_OK && found)
		release(st);
	return status;
}


/* ---- secrets ---- */

static enum otpd_status op_secret(struct store_conn *c, struct store_job *j)
{
	const char *name = j->u.secret.name;
	const uint8_t *fresh = j->u.secret.fresh;
	size_t len = j->u.secret.len;
	uint8_t *ret = j->u.secret.value;
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

/* ---- the dashboard's counters ---- */

/* One UPSERT into bucket bucket_ms. */
static enum otpd_status sq_stats_add(struct store_conn *c, int64_t bucket_ms,
                                     const struct store_stats_sums *d)
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

static enum otpd_status send_window(struct store_conn *c, const char *phone,
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
			struct store_rules_code code = {
				.created_ms = created_ms,
				.expires_ms = sqlite3_column_int64(st, 2),
				.attempts = sqlite3_column_int(st, 3),
				.max_attempts = sqlite3_column_int(st, 4),
				.state = sqlite3_column_int(st, 5),
			};

			w.current_valid = store_rules_code_live(&code, now_ms);
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

static enum otpd_status op_issue(struct store_conn *c, struct store_job *j)
{
	const struct otp_policy *p = j->u.issue.p;
	const char *phone = j->u.issue.phone;
	const uint8_t *hash = j->u.issue.hash;
	int64_t now_ms = j->now_ms;
	struct store_issue_result *res = &j->u.issue.res;
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
		j->result = OTPD_OTP_RATE_LIMITED;
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
	j->counted.sends = 1;
	j->result = OTPD_OK;
	return OTPD_OK;
}

/* ---- cancel a code ---- */

static enum otpd_status op_cancel(struct store_conn *c, struct store_job *j)
{
	const char *phone = j->u.cancel.phone;
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_CODE_CANCEL, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, phone);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, j->u.cancel.otp_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, j->now_ms);
	status = finish(c, ST_CODE_CANCEL, rc);
	if (status == OTPD_OK && sqlite3_changes(c->db) == 1)
		j->counted.sms_failures = 1; /* it changed: counted once */
	return status;
}

/* ---- verify a code and log in ---- */

/* The phone's current code: its newest. */
static enum otpd_status code_get(struct store_conn *c, const char *phone,
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
static enum otpd_status code_update(struct store_conn *c, enum stmt_id id,
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

/* Integer column `col`, or `none` when it is NULL. */
static int64_t column_int64_or(sqlite3_stmt *st, int col, int64_t none)
{
	return sqlite3_column_type(st, col) == SQLITE_NULL ? none : sqlite3_column_int64(st, col);
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
	u.created_ms = sqlite3_column_int64(st, 8);
	u.last_login_ms = column_int64_or(st, 9, -1);
	*ret = u;
	return OTPD_OK;
}

/* The user of a right code, and the login recorded: a known active user
 * is read and its last_login_ms set (two statements); a new one is
 * created logged in (a read that finds nothing, then the INSERT).  One user
 * per number even when raced: the write lock is held across both, and
 * UNIQUE backs it.  A known but inactive user is read, and no login is
 * recorded (the caller answers user_inactive). */
static enum otpd_status user_login(struct store_conn *c, const char *phone,
                                   const char *email_domain, int64_t now_ms,
                                   bool *ret_is_new, struct store_user *ret)
{
	struct store_user u;
	sqlite3_stmt *st = NULL;
	enum otpd_status status;
	bool found;
	int rc;

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
		status = finish(c, ST_USER_LOGIN, rc);
		if (status == OTPD_OK)
			ret->last_login_ms = now_ms;
		return status;
	}

	if (!store_rules_new_user(phone, email_domain, &u)) {
		store_error("not a normalised phone number, or e-mail domain too long");
		return OTPD_INTERNAL;
	}
	status = prepare(c, ST_USER_INSERT, &st);
	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, phone);
	if (rc == SQLITE_OK)
		rc = bind_text(st, 2, u.username);
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
	u.created_ms = now_ms;
	u.last_login_ms = now_ms;
	*ret_is_new = true;
	*ret = u;
	return OTPD_OK;
}

/* Insert a live refresh-token record: session's jti, access_jti and
 * times, in `family` (a login's own, or the family a rotation continues). */
static enum otpd_status session_insert(struct store_conn *c,
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

	memset(&rec, 0, sizeof(rec));
	status = code_get(c, phone, &found, &code_id, &max_attempts, &rec, stored);
	if (status != OTPD_OK)
		return status;
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

static enum otpd_status user_by_id(struct store_conn *c, int64_t id,
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

static enum otpd_status op_user_get(struct store_conn *c, struct store_job *j)
{
	return user_by_id(c, j->u.user.id, &j->u.user.found, &j->u.user.user);
}

/* Append audit entry e (in the caller's transaction). */
static enum otpd_status audit_insert(struct store_conn *c, const struct store_audit_entry *e)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_AUDIT_INSERT, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, e->time_ms);
	if (rc == SQLITE_OK)
		rc = bind_text(st, 2, e->actor);
	if (rc == SQLITE_OK)
		rc = bind_text(st, 3, e->action);
	if (rc == SQLITE_OK)
		rc = bind_text(st, 4, e->target);
	if (rc == SQLITE_OK)
		rc = e->has_client ? bind_text(st, 5, e->client) : sqlite3_bind_null(st, 5);
	return finish(c, ST_AUDIT_INSERT, rc);
}

/* The flags as the change says, the sessions revoked when it deactivates,
 * the audit entry, then the user as it is now. */
static enum otpd_status user_update(struct store_conn *c, struct store_args_user_update *a)
{
	const struct store_user_change *ch = a->change;
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_USER_UPDATE, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, a->id);
	if (rc == SQLITE_OK)
		rc = ch->set_active ? sqlite3_bind_int(st, 2, ch->is_active) : sqlite3_bind_null(st, 2);
	if (rc == SQLITE_OK)
		rc = ch->set_staff ? sqlite3_bind_int(st, 3, ch->is_staff) : sqlite3_bind_null(st, 3);
	status = finish(c, ST_USER_UPDATE, rc);
	if (status != OTPD_OK)
		return status;
	if (sqlite3_changes(c->db) == 0) {
		a->found = false; /* no such user: nothing changed */
		return OTPD_OK;
	}
	if (ch->set_active && !ch->is_active) {
		/* Deactivated: every session of the user ends with it. */
		status = prepare(c, ST_USER_SESSIONS_REVOKE, &st);
		if (status != OTPD_OK)
			return status;
		status = finish(c, ST_USER_SESSIONS_REVOKE, sqlite3_bind_int64(st, 1, a->id));
		if (status != OTPD_OK)
			return status;
	}
	if (a->audit) {
		struct store_audit_entry e = *a->audit;

		if (!e.target[0]) /* store.h: the user changed */
			snprintf(e.target, sizeof(e.target), "user:%lld", (long long)a->id);
		status = audit_insert(c, &e);
		if (status != OTPD_OK)
			return status;
	}
	return user_by_id(c, a->id, &a->found, &a->user);
}

static enum otpd_status op_user_update(struct store_conn *c, struct store_job *j)
{
	return user_update(c, &j->u.user_update);
}

static enum otpd_status user_by_phone(struct store_conn *c, const char *phone,
                                      bool *ret_found, struct store_user *ret)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_USER_BY_PHONE, &st);

	if (status == OTPD_OK)
		status = fetch(c, ST_USER_BY_PHONE, bind_text(st, 1, phone), ret_found);
	if (status == OTPD_OK && *ret_found) {
		status = user_row(st, ret);
		release(st);
	}
	return status;
}

static enum otpd_status op_user_by_phone(struct store_conn *c, struct store_job *j)
{
	return user_by_phone(c, j->u.user.phone, &j->u.user.found, &j->u.user.user);
}

/* The user of the number (created first when asked and there is none: the
 * write lock is held from BEGIN IMMEDIATE, and UNIQUE backs it), then the
 * change as by id. */
static enum otpd_status op_user_update_by_phone(struct store_conn *c, struct store_job *j)
{
	struct store_args_user_update *a = &j->u.user_update;
	struct store_user u;
	sqlite3_stmt *st = NULL;
	enum otpd_status status;
	bool found = false;
	int rc;

	a->created = false;
	status = user_by_phone(c, a->phone, &found, &u);
	if (status != OTPD_OK)
		return status;
	if (!found && a->create) {
		if (!store_rules_new_user(a->phone, a->email_domain, &u)) {
			store_error("not a normalised phone number, or e-mail domain too long");
			return OTPD_INTERNAL;
		}
		status = prepare(c, ST_USER_CREATE, &st);
		if (status != OTPD_OK)
			return status;
		rc = bind_text(st, 1, a->phone);
		if (rc == SQLITE_OK)
			rc = bind_text(st, 2, u.username);
		if (rc == SQLITE_OK)
			rc = bind_text(st, 3, u.email);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(st, 4, j->now_ms);
		status = finish(c, ST_USER_CREATE, rc);
		if (status != OTPD_OK)
			return status;
		if (sqlite3_changes(c->db) != 1) {
			store_error("sqlite: a new user's number is taken");
			return OTPD_INTERNAL;
		}
		u.id = sqlite3_last_insert_rowid(c->db);
		found = a->created = true;
	}
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
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_AUDIT_PAGE, &st);
	size_t n = 0;
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, a->before_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, (int64_t)a->cap); /* at most STORE_PAGE_MAX */
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n < a->cap) {
			struct store_audit_entry *e = &a->ret[n];

			memset(e, 0, sizeof(*e));
			e->id = sqlite3_column_int64(st, 0);
			e->time_ms = sqlite3_column_int64(st, 1);
			if (!column_text(st, 2, e->actor, sizeof(e->actor), NULL) ||
			    !column_text(st, 3, e->action, sizeof(e->action), NULL) ||
			    !column_text(st, 4, e->target, sizeof(e->target), NULL) ||
			    !column_text(st, 5, e->client, sizeof(e->client), &e->has_client)) {
				store_error("sqlite: audit entry %lld has a field longer than otpd allows",
				            (long long)e->id);
				release(st);
				return OTPD_INTERNAL;
			}
			n++;
		}
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE) {
		status = fail(c, rc, stmts[ST_AUDIT_PAGE].name);
		release(st);
		return status;
	}
	release(st);
	a->n = n;
	return OTPD_OK;
}

/* ---- the users lists ---- */

static enum otpd_status op_users_list(struct store_conn *c, struct store_job *j)
{
	struct store_args_users_list *a = &j->u.users;
	enum stmt_id id = a->by == STORE_USERS_BY_PHONE ? ST_USERS_BY_PHONE
	                  : a->by == STORE_USERS_BY_PREFIX ? ST_USERS_BY_PREFIX : ST_USERS_ALL;
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, id, &st);
	size_t n = 0;
	int rc = SQLITE_OK;

	if (status != OTPD_OK)
		return status;
	if (id == ST_USERS_BY_PHONE) {
		rc = bind_text(st, 1, a->phone);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(st, 2, a->before_id);
	} else if (id == ST_USERS_BY_PREFIX) {
		rc = bind_text(st, 1, a->prefix);
		if (rc == SQLITE_OK)
			rc = bind_text(st, 2, a->upper);
		if (rc == SQLITE_OK)
			rc = bind_text(st, 3, a->after);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(st, 4, (int64_t)a->cap);
	} else {
		rc = sqlite3_bind_int64(st, 1, a->before_id);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_int64(st, 2, (int64_t)a->cap);
	}
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n < a->cap) {
			status = user_row(st, &a->ret[n]);
			if (status != OTPD_OK) {
				release(st);
				return status;
			}
			n++;
		}
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE) {
		status = fail(c, rc, stmts[id].name);
		release(st);
		return status;
	}
	release(st);
	a->n = n;
	return OTPD_OK;
}

/* ---- sessions: rotate, revoke, purge ---- */

static enum otpd_status session_get(struct store_conn *c, const char *jti,
                                    bool *ret_found, struct store_session_row *ret)
{
	struct store_session_row r;
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
static enum otpd_status family_revoke(struct store_conn *c, const char *jti,
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
static enum otpd_status session_mark_rotated(struct store_conn *c,
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
 * there (store/rules.c makes them; this reads and writes).  Returns the
 * driver status; the answer goes to j->result.  Any answer commits: only
 * the OK and replay answers have written anything. */
static enum otpd_status op_rotate(struct store_conn *c, struct store_job *j)
{
	const struct store_args_rotate *a = &j->u.rotate;
	struct store_rotate_result *res = &j->u.rotate.res;
	struct store_session_row cur, succ;
	enum otpd_status status;
	bool found = false;
	int revoked = 0;

	j->result = OTPD_INVALID_TOKEN;
	res->reuse_detected = false;
	res->revoked_records = 0;
	status = session_get(c, a->jti, &found, &cur);
	if (status != OTPD_OK || !found)
		return status;
	if (store_rules_rotate_first(&cur, a->user_id, j->now_ms) == STORE_ROTATE_REFUSE)
		return OTPD_OK;
	status = user_by_id(c, a->user_id, &found, &res->user);
	if (status != OTPD_OK || !found)
		return status;
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
		status = session_get(c, cur.replaced_by, &found, &succ);
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
	status = family_revoke(c, cur.sess.jti, &revoked);
	if (status != OTPD_OK)
		return status;
	res->reuse_detected = true;
	res->revoked_records = revoked;
	return OTPD_OK;
}

static enum otpd_status op_revoke(struct store_conn *c, struct store_job *j)
{
	return family_revoke(c, j->u.revoke.jti, &j->u.revoke.revoked);
}

static enum otpd_status op_session_purge(struct store_conn *c, struct store_job *j)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_SESSION_PURGE, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, j->u.purge.before_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 2, j->u.purge.limit);
	status = finish(c, ST_SESSION_PURGE, rc);
	if (status == OTPD_OK)
		j->u.purge.deleted = sqlite3_changes(c->db);
	return status;
}

/* ---- SMS delivery ---- */

static enum otpd_status op_sms_accepted(struct store_conn *c, struct store_job *j)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_SMS_ACCEPTED, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, j->u.sms.otp_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, j->u.sms.message_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, j->now_ms);
	return finish(c, ST_SMS_ACCEPTED, rc);
}

/* Every item in the job's savepoint: all or none. */
static enum otpd_status op_delivery_set(struct store_conn *c, struct store_job *j)
{
	const struct store_delivery_status *items = j->u.delivery.items;
	size_t n = j->u.delivery.n;
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

/* LIMIT takes a signed 64-bit value; a negative one would mean none. */
static int64_t sql_limit(size_t n)
{
	return n > (size_t)INT64_MAX ? INT64_MAX : (int64_t)n;
}

/* The rows go to the job's own buffer, copied to the caller's only when
 * the whole read succeeded (a failure leaves it untouched). */
static enum otpd_status op_delivery_pending(struct store_conn *c, struct store_job *j)
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

static enum otpd_status op_stats(struct store_conn *c, struct store_job *j)
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

/* ---- the staff console's lists ---- */

/* Read a row of CODE_ROW_COLUMNS.  Does not release the statement.  False
 * when its number does not fit (not one otpd wrote). */
static bool code_row(sqlite3_stmt *st, struct store_code_row *ret)
{
	struct store_code_row r;

	memset(&r, 0, sizeof(r));
	r.id = sqlite3_column_int64(st, 0);
	if (!column_text(st, 1, r.phone, sizeof(r.phone), NULL))
		return false;
	r.created_ms = sqlite3_column_int64(st, 2);
	r.expires_ms = sqlite3_column_int64(st, 3);
	r.ended_ms = column_int64_or(st, 4, -1);
	r.attempts = sqlite3_column_int(st, 5);
	r.max_attempts = sqlite3_column_int(st, 6);
	r.state = sqlite3_column_int(st, 7);
	r.sms_message_id = column_int64_or(st, 8, 0);
	r.sms_status = (int)column_int64_or(st, 9, -1);
	r.sms_status_ms = column_int64_or(st, 10, -1);
	*ret = r;
	return true;
}

static enum otpd_status op_codes_list(struct store_conn *c, struct store_job *j)
{
	const struct store_args_codes_list *a = &j->u.codes;
	enum stmt_id id = a->phone ? ST_CODES_OF_PHONE : ST_CODES_ALL;
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, id, &st);
	size_t n = 0;
	int k = 1, rc = SQLITE_OK;

	if (status != OTPD_OK)
		return status;
	if (a->phone)
		rc = bind_text(st, k++, a->phone);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, k++, a->before_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, k++, a->since_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, k++, a->until_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, k, sql_limit(a->cap));
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n < a->cap) {
			if (!code_row(st, &a->ret[n])) {
				store_error("sqlite: code %lld has a number longer than otpd allows",
				            (long long)sqlite3_column_int64(st, 0));
				release(st);
				return OTPD_INTERNAL;
			}
			n++;
		}
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE) {
		status = fail(c, rc, stmts[id].name);
		release(st);
		return status;
	}
	release(st);
	j->u.codes.n = n;
	return OTPD_OK;
}

/* The search by code, and its audit entry in the same transaction. */
static enum otpd_status op_codes_match(struct store_conn *c, struct store_job *j)
{
	struct store_args_codes_match *a = &j->u.match;
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_CODES_MATCH, &st);
	size_t n = 0;
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, a->phone);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(st, 2, a->hash, OTP_HASH_LEN, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, j->now_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 4, (int64_t)a->cap);
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n < a->cap) {
			if (!code_row(st, &a->ret[n])) {
				store_error("sqlite: code %lld has a number longer than otpd allows",
				            (long long)sqlite3_column_int64(st, 0));
				release(st);
				return OTPD_INTERNAL;
			}
			n++;
		}
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE) {
		status = fail(c, rc, stmts[ST_CODES_MATCH].name);
		release(st);
		return status;
	}
	release(st);
	status = audit_insert(c, a->audit);
	if (status == OTPD_OK)
		a->n = n;
	return status;
}

/* One count(*) statement: ?1 the bound, ?2 the most it counts. */
static enum otpd_status count_one(struct store_conn *c, enum stmt_id id, int64_t before_ms,
                                  int64_t max, int64_t *ret)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, id, &st);
	bool found = false;
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, before_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, max);
	status = fetch(c, id, rc, &found);
	if (status == OTPD_OK && found) {
		*ret = sqlite3_column_int64(st, 0);
		release(st);
	}
	return status;
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
	const struct store_args_user_sessions *a = &j->u.sessions;
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(c, ST_SESSIONS_OF_USER, &st);
	size_t n = 0;
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, a->user_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, sql_limit(a->cap));
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n < a->cap) {
			struct store_session_info *r = &a->ret[n];

			memset(r, 0, sizeof(*r));
			if (!column_text(st, 0, r->family, sizeof(r->family), NULL)) {
				store_error("sqlite: a refresh_tokens record has a family longer than %d",
				            STORE_JTI_LEN);
				release(st);
				return OTPD_INTERNAL;
			}
			r->state = sqlite3_column_int(st, 1);
			r->created_ms = sqlite3_column_int64(st, 2);
			r->expires_ms = sqlite3_column_int64(st, 3);
			r->rotated_ms = column_int64_or(st, 4, -1);
			n++;
		}
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE) {
		status = fail(c, rc, stmts[ST_SESSIONS_OF_USER].name);
		release(st);
		return status;
	}
	release(st);
	j->u.sessions.n = n;
	return OTPD_OK;
}

/* ---- retention ---- */

/* Stats buckets first, then codes with what is left of the limit. */
static enum otpd_status op_history_purge(struct store_conn *c, struct store_job *j)
{
	int64_t before_ms = j->u.purge.before_ms;
	int limit = j->u.purge.limit;
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
	j->u.purge.deleted = deleted;
	return OTPD_OK;
}

/* ---- the dialect ---- */

static void sq_conn_close(struct store_conn *c);

static const struct store_dialect sqlite_dialect = {
	.name = "sqlite",
	.statement_atomic = true,
	.begin = sq_begin,
	.commit = sq_commit,
	.rollback = sq_rollback,
	.savepoint = sq_savepoint,
	.release = sq_release,
	.rollback_to = sq_rollback_to,
	.in_transaction = sq_in_transaction,
	.stats_add = sq_stats_add,
	.op = {
		[STORE_OP_SECRET] = op_secret,
		[STORE_OP_ISSUE] = op_issue,
		[STORE_OP_CANCEL] = op_cancel,
		[STORE_OP_VERIFY] = op_verify,
		[STORE_OP_ROTATE] = op_rotate,
		[STORE_OP_REVOKE] = op_revoke,
		[STORE_OP_SESSION_PURGE] = op_session_purge,
		[STORE_OP_SMS_ACCEPTED] = op_sms_accepted,
		[STORE_OP_DELIVERY_SET] = op_delivery_set,
		[STORE_OP_HISTORY_PURGE] = op_history_purge,
		[STORE_OP_USER_UPDATE] = op_user_update,
		[STORE_OP_PING] = op_ping,
		[STORE_OP_USER_GET] = op_user_get,
		[STORE_OP_DELIVERY_PENDING] = op_delivery_pending,
		[STORE_OP_STATS] = op_stats,
		[STORE_OP_CODES_LIST] = op_codes_list,
		[STORE_OP_USER_SESSIONS] = op_user_sessions,
		[STORE_OP_USER_UPDATE_BY_PHONE] = op_user_update_by_phone,
		[STORE_OP_AUDIT_APPEND] = op_audit_append,
		[STORE_OP_CODES_MATCH] = op_codes_match,
		[STORE_OP_USER_BY_PHONE] = op_user_by_phone,
		[STORE_OP_USERS_LIST] = op_users_list,
		[STORE_OP_AUDIT_LIST] = op_audit_list,
		[STORE_OP_PURGE_COUNT] = op_purge_count,
	},
	.migrations = &store_sqlite_migrations,
	.migrations_table = sq_migrations_table,
	.migration_has = sq_migration_has,
	.migration_add = sq_migration_add,
	.exec = sq_exec,
	.schema_version = sq_schema_version,
	.migrate_enter = sq_migrate_enter,
	.migrate_leave = sq_migrate_leave,
	.conn_close = sq_conn_close,
};

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

static enum otpd_status conn_open(struct store_conn *c, const char *path, int flags,
                                  int busy_timeout_ms)
{
	int rc;

	pthread_once(&sqlite_config_once, sqlite_config);
	/* One thread at a time uses a connection (see struct store_conn). */
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

static void conn_close(struct store_conn *c)
{
	if (!c)
		return;
	int rc;

	for (int i = 0; i < _ST_MAX; i++)
		sqlite3_finalize(c->stmt[i]);
	rc = sqlite3_close(c->db); /* accepts NULL */
	if (rc != SQLITE_OK)
		store_error( "sqlite: close: %s", sqlite3_errstr(rc));
	memset(c, 0, sizeof(*c));
}

static pthread_mutex_t umask_lock = PTHREAD_MUTEX_INITIALIZER;

static enum otpd_status conn_open_private(struct store_conn *c, const char *path, int flags,
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
static enum otpd_status files_check(struct store_conn *c, const char *path,
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
static enum otpd_status set_wal(struct store_conn *c, const char *path)
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

static void sq_conn_close(struct store_conn *c)
{
	conn_close(c);
	free(c);
}

enum otpd_status store_sqlite_open(const char *path, const struct store_options *opt,
                                   char *err, size_t errlen, struct store **ret)
{
	struct store_engine_config cfg = {
		.d = &sqlite_dialect,
		.n_writers = 1,
		.batch_max = opt->batch_max > 0 ? opt->batch_max : BATCH_MAX,
		.queue_max = opt->queue_max,
	};
	struct store_conn *w = calloc(1, sizeof(*w)), *r = NULL;
	enum otpd_status status;
	const char *file;
	int rc;

	if (!w) {
		log_error("store.open", "out of memory");
		return OTPD_NOMEM;
	}
	status = conn_open_private(w, path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
	                           opt->busy_timeout_ms);
	if (status != OTPD_OK)
		goto out;
	status = files_check(w, path, opt, err, errlen);
	if (status != OTPD_OK)
		goto out;
	/* The first statement that reads the file: a file that is not a
	 * database, or cannot be read, fails here. */
	status = set_wal(w, path);
	if (status != OTPD_OK)
		goto out;
	rc = sqlite3_exec(w->db,
	                  "PRAGMA synchronous=FULL;"
	                  "PRAGMA foreign_keys=ON;"
	                  /* The savepoint of each job journals the pages it
	                   * changes; in memory, not spilled to a temp file. */
	                  "PRAGMA temp_store=MEMORY;",
	                  NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		status = fail(w, rc, "connection settings");
		goto out;
	}

	/* The reader's connection, on the file the writer opened ("" for an
	 * in-memory database, which only its own connection sees: there the
	 * reads are the writer's jobs). */
	file = sqlite3_db_filename(w->db, "main");
	if (file && file[0]) {
		r = calloc(1, sizeof(*r));
		status = r ? conn_open(r, file, SQLITE_OPEN_READONLY, opt->busy_timeout_ms)
		           : OTPD_NOMEM;
		if (status != OTPD_OK)
			goto out;
	}
	cfg.writers = &w;
	cfg.readers = &r;
	cfg.n_readers = r ? 1 : 0;
	status = store_engine_open(&cfg, ret); /* owns w and r from here */
	if (status == OTPD_OK)
		log_debug("store.open", "opened SQLite database '%s'", path);
	return status;
out:
	sq_conn_close(r);
	sq_conn_close(w);
	return status;
}
