/* The SQLite backend of store.h.
 *
 * One connection, used under a mutex by every thread of this process; other
 * processes (or other store handles) on the same file are serialised by
 * SQLite's own locks.  Every write operation is one `BEGIN IMMEDIATE ...
 * COMMIT` transaction: the write lock is taken before anything is read, so
 * the read-decide-write of each rule (single use, attempt counts, send
 * limits, one user per number) cannot interleave with another writer.
 * Reads that are one statement (ping, user_get) run in that statement's own
 * read transaction and never wait for a writer (WAL).
 *
 * synchronous=FULL in WAL mode syncs the WAL at every commit, so a write is
 * durable before OTPD_OK is returned.  Driver errors are translated and
 * logged once, here (see fail()). */
#include "backend.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../log.h"

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_PING,
	ST_MIGRATIONS_TABLE,
	ST_MIGRATION_HAS,
	ST_MIGRATION_ADD,
	ST_MIGRATION_MAX,
	ST_META_INSERT,
	ST_META_GET,
	ST_SEND_WINDOW,
	ST_SEND_INSERT,
	ST_SEND_PRUNE,
	ST_CODE_UPSERT,
	ST_CODE_CANCEL,
	ST_CODE_GET,
	ST_CODE_ATTEMPT,
	ST_CODE_USE,
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

/* Every statement otpd runs on SQLite, prepared once (on first use, so that
 * a store can be opened before it is migrated) and reused. */
static const struct {
	const char *name; /* for logs */
	const char *sql;
} stmts[_ST_MAX] = {
	[ST_BEGIN] = {"begin", "BEGIN IMMEDIATE"},
	[ST_COMMIT] = {"commit", "COMMIT"},
	[ST_ROLLBACK] = {"rollback", "ROLLBACK"},
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
	[ST_SEND_WINDOW] = {"count sends",
		"SELECT count(*), min(sent_ms) FROM otp_sends"
		" WHERE phone = ?1 AND sent_ms > ?2"},
	[ST_SEND_INSERT] = {"record send",
		"INSERT INTO otp_sends (phone, sent_ms) VALUES (?1, ?2)"},
	[ST_SEND_PRUNE] = {"prune sends",
		"DELETE FROM otp_sends WHERE phone = ?1 AND sent_ms <= ?2"},
	[ST_CODE_UPSERT] = {"store code",
		"INSERT INTO otp_codes"
		" (phone, otp_id, code_hash, created_ms, expires_ms, attempts, state)"
		" VALUES (?1, ?2, ?3, ?4, ?5, 0, 0)"
		" ON CONFLICT (phone) DO UPDATE SET"
		" otp_id = excluded.otp_id, code_hash = excluded.code_hash,"
		" created_ms = excluded.created_ms, expires_ms = excluded.expires_ms,"
		" attempts = 0, state = 0"},
	[ST_CODE_CANCEL] = {"cancel code",
		"UPDATE otp_codes SET state = 2"
		" WHERE phone = ?1 AND otp_id = ?2 AND state = 0"},
	[ST_CODE_GET] = {"read code",
		"SELECT code_hash, created_ms, expires_ms, attempts, state"
		" FROM otp_codes WHERE phone = ?1"},
	[ST_CODE_ATTEMPT] = {"count attempt",
		"UPDATE otp_codes SET attempts = attempts + 1 WHERE phone = ?1"},
	[ST_CODE_USE] = {"use code",
		"UPDATE otp_codes SET state = 1 WHERE phone = ?1"},
	[ST_USER_INSERT] = {"create user",
		"INSERT INTO users (phone_number, username, email, first_name,"
		" last_name, is_active, is_staff, created_at_ms, last_login_ms)"
		" VALUES (?1, ?2, ?3, NULL, NULL, 1, 0, ?4, NULL)"
		" ON CONFLICT (phone_number) DO NOTHING"},
	[ST_USER_BY_PHONE] = {"read user",
		"SELECT " USER_COLUMNS " FROM users WHERE phone_number = ?1"},
	[ST_USER_BY_ID] = {"read user",
		"SELECT " USER_COLUMNS " FROM users WHERE id = ?1"},
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
		"DELETE FROM refresh_tokens WHERE rowid IN"
		" (SELECT rowid FROM refresh_tokens WHERE expires_ms < ?1"
		" ORDER BY expires_ms LIMIT ?2)"},
};

struct sqlite_store {
	struct store base; /* first: a struct store * points here */
	sqlite3 *db;
	pthread_mutex_t lock; /* guards db and stmt: one user at a time */
	sqlite3_stmt *stmt[_ST_MAX];
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
static enum otpd_status fail(struct sqlite_store *s, int rc, const char *what)
{
	enum otpd_status status = status_of(rc);

	log_error("store.error", "sqlite: %s: %s", what,
	          s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
	return status == OTPD_OK ? OTPD_INTERNAL : status;
}

static enum otpd_status prepare(struct sqlite_store *s, enum stmt_id id,
                                sqlite3_stmt **ret)
{
	if (!s->stmt[id]) {
		int rc = sqlite3_prepare_v3(s->db, stmts[id].sql, -1,
		                            SQLITE_PREPARE_PERSISTENT,
		                            &s->stmt[id], NULL);
		if (rc != SQLITE_OK) {
			s->stmt[id] = NULL;
			return fail(s, rc, stmts[id].name);
		}
	}
	*ret = s->stmt[id];
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
static enum otpd_status finish(struct sqlite_store *s, enum stmt_id id, int rc)
{
	sqlite3_stmt *st = s->stmt[id];
	enum otpd_status status = OTPD_OK;

	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_DONE || rc == SQLITE_ROW)
			rc = SQLITE_OK;
	}
	if (rc != SQLITE_OK)
		status = fail(s, rc, stmts[id].name);
	release(st);
	return status;
}

/* Step a bound statement expected to return at most one row.  On
 * SQLITE_ROW the statement is left on its row for the caller to read and
 * release; otherwise it is released here.  *ret_found tells which. */
static enum otpd_status fetch(struct sqlite_store *s, enum stmt_id id, int rc,
                              bool *ret_found)
{
	sqlite3_stmt *st = s->stmt[id];

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
	enum otpd_status status = fail(s, rc, stmts[id].name);
	release(st);
	return status;
}

static enum otpd_status run_plain(struct sqlite_store *s, enum stmt_id id)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(s, id, &st);

	if (status != OTPD_OK)
		return status;
	return finish(s, id, SQLITE_OK);
}

/* ---- transactions ---- */

static void tx_rollback(struct sqlite_store *s)
{
	/* Some errors (IOERR, FULL, NOMEM, BUSY on commit) may already have
	 * rolled the transaction back. */
	if (sqlite3_get_autocommit(s->db))
		return;
	if (run_plain(s, ST_ROLLBACK) != OTPD_OK)
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

static enum otpd_status tx_begin(struct sqlite_store *s)
{
	/* Never build on a transaction an earlier failure left open. */
	tx_rollback(s);
	return run_plain(s, ST_BEGIN);
}

static enum otpd_status tx_commit(struct sqlite_store *s)
{
	return run_plain(s, ST_COMMIT);
}

/* Commit when status is OTPD_OK, else roll back; returns the final status. */
static enum otpd_status tx_end(struct sqlite_store *s, enum otpd_status status)
{
	if (status == OTPD_OK)
		status = tx_commit(s);
	if (status != OTPD_OK)
		tx_rollback(s);
	return status;
}

static void lock(struct sqlite_store *s)
{
	pthread_mutex_lock(&s->lock);
}

static void unlock(struct sqlite_store *s)
{
	pthread_mutex_unlock(&s->lock);
}

static int bind_text(sqlite3_stmt *st, int i, const char *text)
{
	return sqlite3_bind_text(st, i, text, -1, SQLITE_STATIC);
}

/* ---- migrations ---- */

/* Apply version `version` unless it is recorded already; one transaction. */
static enum otpd_status migrate_one(struct sqlite_store *s, int version,
                                    const char *sql, bool *ret_applied)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status;
	bool found = false;
	int rc;

	status = tx_begin(s);
	if (status != OTPD_OK)
		return status;
	status = run_plain(s, ST_MIGRATIONS_TABLE);
	if (status != OTPD_OK)
		goto out;
	status = prepare(s, ST_MIGRATION_HAS, &st);
	if (status != OTPD_OK)
		goto out;
	status = fetch(s, ST_MIGRATION_HAS, sqlite3_bind_int(st, 1, version), &found);
	if (status != OTPD_OK)
		goto out;
	if (found) {
		release(st);
		goto out;
	}
	rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		char what[64];
		snprintf(what, sizeof(what), "migration %d", version);
		status = fail(s, rc, what);
		goto out;
	}
	status = prepare(s, ST_MIGRATION_ADD, &st);
	if (status != OTPD_OK)
		goto out;
	status = finish(s, ST_MIGRATION_ADD, sqlite3_bind_int(st, 1, version));
out:
	status = tx_end(s, status);
	if (status == OTPD_OK)
		*ret_applied = !found;
	return status;
}

static enum otpd_status schema_version(struct sqlite_store *s, int64_t *ret)
{
	sqlite3_stmt *st = NULL;
	bool found;
	enum otpd_status status = prepare(s, ST_MIGRATION_MAX, &st);

	if (status != OTPD_OK)
		return status;
	status = fetch(s, ST_MIGRATION_MAX, SQLITE_OK, &found);
	if (status != OTPD_OK || !found)
		return status;
	*ret = sqlite3_column_int64(st, 0);
	release(st);
	return OTPD_OK;
}

static enum otpd_status sq_migrate(struct store *base, int *ret_applied)
{
	struct sqlite_store *s = to_sqlite(base);
	enum otpd_status status = OTPD_OK;
	int64_t version = 0;
	int applied = 0;

	lock(s);
	for (size_t i = 0; i < store_sqlite_migrations_count; i++) {
		bool did = false;
		status = migrate_one(s, (int)i + 1, store_sqlite_migrations[i], &did);
		if (status != OTPD_OK)
			break;
		applied += did;
	}
	if (status == OTPD_OK)
		status = schema_version(s, &version);
	unlock(s);
	if (status != OTPD_OK)
		return status;
	if (version > (int64_t)store_sqlite_migrations_count)
		log_warn("store.migrate",
		         "database schema version %lld is newer than this otpd's %zu",
		         (long long)version, store_sqlite_migrations_count);
	*ret_applied = applied;
	return OTPD_OK;
}

/* ---- ping ---- */

static enum otpd_status sq_ping(struct store *base)
{
	struct sqlite_store *s = to_sqlite(base);
	sqlite3_stmt *st = NULL;
	bool found;
	enum otpd_status status;

	lock(s);
	status = prepare(s, ST_PING, &st);
	if (status == OTPD_OK)
		status = fetch(s, ST_PING, SQLITE_OK, &found);
	if (status == OTPD_OK && found)
		release(st);
	unlock(s);
	return status;
}

/* ---- secrets ---- */

static enum otpd_status secret_tx(struct sqlite_store *s, const char *name,
                                  const uint8_t *fresh, size_t len,
                                  uint8_t *ret)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status;
	bool found;
	int rc;

	status = prepare(s, ST_META_INSERT, &st);
	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, name);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(st, 2, fresh, (int)len, SQLITE_STATIC);
	status = finish(s, ST_META_INSERT, rc);
	if (status != OTPD_OK)
		return status;

	status = prepare(s, ST_META_GET, &st);
	if (status != OTPD_OK)
		return status;
	status = fetch(s, ST_META_GET, bind_text(st, 1, name), &found);
	if (status != OTPD_OK)
		return status;
	if (!found) {
		log_error("store.error", "sqlite: secret '%s' vanished", name);
		return OTPD_INTERNAL;
	}
	const void *value = sqlite3_column_blob(st, 0);
	int n = sqlite3_column_bytes(st, 0);
	if (!value || n < 0 || (size_t)n != len) {
		/* The length only: never the value. */
		log_error("store.error",
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
	enum otpd_status status;
	uint8_t *value;

	if (len == 0 || len > 65536 || ret_len != len) {
		log_error("store.error", "secret '%s': bad length %zu (buffer %zu)",
		          name, len, ret_len);
		return OTPD_INTERNAL;
	}
	value = malloc(len); /* ret stays untouched until the commit */
	if (!value)
		return OTPD_NOMEM;
	lock(s);
	status = tx_begin(s);
	if (status == OTPD_OK)
		status = tx_end(s, secret_tx(s, name, fresh, len, value));
	unlock(s);
	if (status == OTPD_OK)
		memcpy(ret, value, len);
	otp_wipe(value, len);
	free(value);
	return status;
}

/* ---- send a code ---- */

static enum otpd_status send_window(struct sqlite_store *s, const char *phone,
                                    int64_t since_ms, int *ret_count,
                                    int64_t *ret_oldest_ms)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status;
	bool found;
	int rc;

	status = prepare(s, ST_SEND_WINDOW, &st);
	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, phone);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, since_ms);
	status = fetch(s, ST_SEND_WINDOW, rc, &found);
	if (status != OTPD_OK)
		return status;
	if (!found) { /* an aggregate always has a row */
		*ret_count = 0;
		return OTPD_OK;
	}
	int64_t count = sqlite3_column_int64(st, 0);
	*ret_count = count > 1000000 ? 1000000 : (int)count;
	*ret_oldest_ms = sqlite3_column_int64(st, 1); /* 0 when NULL */
	release(st);
	return OTPD_OK;
}

static enum otpd_status issue_tx(struct sqlite_store *s,
                                 const struct otp_policy *p, const char *phone,
                                 const uint8_t hash[OTP_HASH_LEN],
                                 int64_t now_ms, enum otpd_status *ret_result,
                                 struct store_issue_result *res)
{
	const int64_t since_ms = now_ms - p->send_window_ms;
	sqlite3_stmt *st = NULL;
	enum otpd_status status;
	int64_t oldest_ms = now_ms, otp_id;
	int count = 0, retry_after_s = 0, rc;

	status = send_window(s, phone, since_ms, &count, &oldest_ms);
	if (status != OTPD_OK)
		return status;
	if (!otp_policy_send_allowed(p, count, count > 0 ? oldest_ms : now_ms,
	                             now_ms, &retry_after_s)) {
		/* Refused: nothing is recorded. */
		res->retry_after_s = retry_after_s;
		*ret_result = OTPD_OTP_RATE_LIMITED;
		return OTPD_OK;
	}

	status = prepare(s, ST_SEND_INSERT, &st);
	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, phone);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, now_ms);
	status = finish(s, ST_SEND_INSERT, rc);
	if (status != OTPD_OK)
		return status;
	otp_id = sqlite3_last_insert_rowid(s->db); /* under the lock */

	/* One current code per phone: the new row replaces any earlier code,
	 * which stops working (API-CONTRACT §3). */
	status = prepare(s, ST_CODE_UPSERT, &st);
	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, phone);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, otp_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(st, 3, hash, OTP_HASH_LEN, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 4, now_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 5, now_ms + p->expiry_ms);
	status = finish(s, ST_CODE_UPSERT, rc);
	if (status != OTPD_OK)
		return status;

	/* Sends that have left the window no longer count: drop them. */
	status = prepare(s, ST_SEND_PRUNE, &st);
	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, phone);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, since_ms);
	status = finish(s, ST_SEND_PRUNE, rc);
	if (status != OTPD_OK)
		return status;

	res->otp_id = otp_id;
	*ret_result = OTPD_OK;
	return OTPD_OK;
}

static enum otpd_status sq_otp_issue(struct store *base,
                                     const struct otp_policy *p,
                                     const char *phone,
                                     const uint8_t hash[OTP_HASH_LEN],
                                     int64_t now_ms,
                                     struct store_issue_result *ret)
{
	struct sqlite_store *s = to_sqlite(base);
	struct store_issue_result res = {0};
	enum otpd_status status, result = OTPD_INTERNAL;

	lock(s);
	status = tx_begin(s);
	if (status == OTPD_OK)
		status = tx_end(s, issue_tx(s, p, phone, hash, now_ms, &result, &res));
	unlock(s);
	if (status != OTPD_OK)
		return status;
	*ret = res; /* OTPD_OK: otp_id; OTPD_OTP_RATE_LIMITED: retry_after_s */
	return result;
}

/* ---- cancel a code ---- */

static enum otpd_status cancel_tx(struct sqlite_store *s, const char *phone,
                                  int64_t otp_id)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(s, ST_CODE_CANCEL, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, phone);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, otp_id);
	return finish(s, ST_CODE_CANCEL, rc);
}

static enum otpd_status sq_otp_cancel(struct store *base, const char *phone,
                                      int64_t otp_id)
{
	struct sqlite_store *s = to_sqlite(base);
	enum otpd_status status;

	lock(s);
	status = tx_begin(s);
	if (status == OTPD_OK)
		status = tx_end(s, cancel_tx(s, phone, otp_id));
	unlock(s);
	return status;
}

/* ---- verify a code and log in ---- */

static enum otpd_status code_get(struct sqlite_store *s, const char *phone,
                                 bool *ret_found, struct otp_record *ret_rec,
                                 uint8_t ret_hash[OTP_HASH_LEN])
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(s, ST_CODE_GET, &st);
	bool found;

	if (status != OTPD_OK)
		return status;
	status = fetch(s, ST_CODE_GET, bind_text(st, 1, phone), &found);
	if (status != OTPD_OK)
		return status;
	if (!found) {
		*ret_found = false;
		return OTPD_OK;
	}
	const void *hash = sqlite3_column_blob(st, 0);
	if (!hash || sqlite3_column_bytes(st, 0) != OTP_HASH_LEN) {
		log_error("store.error", "sqlite: otp_codes.code_hash has %d bytes",
		          sqlite3_column_bytes(st, 0));
		release(st);
		return OTPD_INTERNAL;
	}
	memcpy(ret_hash, hash, OTP_HASH_LEN);
	ret_rec->created_ms = sqlite3_column_int64(st, 1);
	ret_rec->expires_ms = sqlite3_column_int64(st, 2);
	ret_rec->attempts = sqlite3_column_int(st, 3);
	ret_rec->state = (enum otp_code_state)sqlite3_column_int(st, 4);
	*ret_found = true;
	release(st);
	return OTPD_OK;
}

static enum otpd_status code_update(struct sqlite_store *s, enum stmt_id id,
                                    const char *phone)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(s, id, &st);

	if (status != OTPD_OK)
		return status;
	return finish(s, id, bind_text(st, 1, phone));
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
		log_error("store.error",
		          "sqlite: user %lld has a field longer than otpd allows",
		          (long long)u.id);
		return OTPD_INTERNAL;
	}
	u.is_active = sqlite3_column_int(st, 6) != 0;
	u.is_staff = sqlite3_column_int(st, 7) != 0;
	*ret = u;
	return OTPD_OK;
}

/* One user per number, even when raced: the insert does nothing when the
 * number exists (the write lock is held, and UNIQUE backs it anyway). */
static enum otpd_status user_get_or_create(struct sqlite_store *s,
                                           const char *phone,
                                           const char *email_domain,
                                           int64_t now_ms, bool *ret_is_new,
                                           struct store_user *ret)
{
	const char *digits = otp_phone_digits(phone);
	char email[STORE_EMAIL_MAX + 1];
	sqlite3_stmt *st = NULL;
	enum otpd_status status;
	bool found;
	int n, rc;

	n = digits && digits[0] ? snprintf(email, sizeof(email), "%s@%s", digits,
	                      email_domain ? email_domain : "")
	           : -1;
	if (n < 0 || (size_t)n >= sizeof(email)) {
		log_error("store.error", "not a normalised phone number, or e-mail domain too long");
		return OTPD_INTERNAL;
	}

	status = prepare(s, ST_USER_INSERT, &st);
	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, phone);
	if (rc == SQLITE_OK)
		rc = bind_text(st, 2, digits);
	if (rc == SQLITE_OK)
		rc = bind_text(st, 3, email);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 4, now_ms);
	status = finish(s, ST_USER_INSERT, rc);
	if (status != OTPD_OK)
		return status;
	*ret_is_new = sqlite3_changes(s->db) == 1;

	status = prepare(s, ST_USER_BY_PHONE, &st);
	if (status != OTPD_OK)
		return status;
	status = fetch(s, ST_USER_BY_PHONE, bind_text(st, 1, phone), &found);
	if (status != OTPD_OK)
		return status;
	if (!found) {
		log_error("store.error", "sqlite: user vanished after its insert");
		return OTPD_INTERNAL;
	}
	status = user_row(st, ret);
	release(st);
	return status;
}

/* Insert a live refresh-token record: session's jti, access_jti and
 * times, in `family` (a login's own, or the family a rotation continues). */
static enum otpd_status session_insert(struct sqlite_store *s,
                                       const struct store_session *session,
                                       const char *family, int64_t user_id)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(s, ST_SESSION_INSERT, &st);
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
	return finish(s, ST_SESSION_INSERT, rc);
}

static enum otpd_status login_record(struct sqlite_store *s, int64_t user_id,
                                     const struct store_session *session,
                                     int64_t now_ms)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status;
	int rc;

	status = prepare(s, ST_USER_LOGIN, &st);
	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, user_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, now_ms);
	status = finish(s, ST_USER_LOGIN, rc);
	if (status != OTPD_OK || !session)
		return status;
	return session_insert(s, session, session->family, user_id);
}

static enum otpd_status verify_tx(struct sqlite_store *s,
                                  const struct otp_policy *p,
                                  const char *phone,
                                  const uint8_t hash[OTP_HASH_LEN],
                                  const char *email_domain,
                                  const struct store_session *session,
                                  int64_t now_ms, enum otpd_status *ret_result,
                                  struct store_verify_result *res)
{
	struct otp_record rec;
	struct otp_verdict v;
	uint8_t stored[OTP_HASH_LEN];
	enum otpd_status status;
	bool found = false, match = false;

	memset(&rec, 0, sizeof(rec));
	status = code_get(s, phone, &found, &rec, stored);
	if (status != OTPD_OK)
		return status;
	if (found)
		match = otp_hash_equal(stored, hash); /* in C, constant time */
	otp_wipe(stored, sizeof(stored));

	v = otp_policy_judge(p, found ? &rec : NULL, match, now_ms);
	if (v.count_attempt) {
		status = code_update(s, ST_CODE_ATTEMPT, phone);
		if (status != OTPD_OK)
			return status;
	}
	if (v.consume) {
		status = code_update(s, ST_CODE_USE, phone);
		if (status != OTPD_OK)
			return status;
	}
	if (v.status != OTPD_OK) {
		res->remaining_attempts = v.remaining_attempts;
		*ret_result = v.status;
		return OTPD_OK; /* commit the counted attempt */
	}

	status = user_get_or_create(s, phone, email_domain, now_ms,
	                            &res->is_new_user, &res->user);
	if (status != OTPD_OK)
		return status;
	if (!res->user.is_active) {
		/* API-CONTRACT §3: user_inactive; the code is used up all the
		 * same, and it is not a login (no last_login, no session). */
		*ret_result = OTPD_USER_INACTIVE;
		return OTPD_OK;
	}
	status = login_record(s, res->user.id, session, now_ms);
	if (status != OTPD_OK)
		return status;
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
                                      struct store_verify_result *ret)
{
	struct sqlite_store *s = to_sqlite(base);
	struct store_verify_result res;
	enum otpd_status status, result = OTPD_INTERNAL;

	memset(&res, 0, sizeof(res));
	lock(s);
	status = tx_begin(s);
	if (status == OTPD_OK)
		status = tx_end(s, verify_tx(s, p, phone, hash, email_domain,
		                             session, now_ms, &result, &res));
	unlock(s);
	if (status != OTPD_OK)
		return status;
	if (result == OTPD_OK || result == OTPD_INVALID_CODE ||
	    result == OTPD_USER_INACTIVE)
		*ret = res;
	return result;
}

/* ---- users ---- */

static enum otpd_status user_by_id(struct sqlite_store *s, int64_t id,
                                   bool *ret_found, struct store_user *ret)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(s, ST_USER_BY_ID, &st);

	if (status == OTPD_OK)
		status = fetch(s, ST_USER_BY_ID, sqlite3_bind_int64(st, 1, id), ret_found);
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
	struct store_user u;
	enum otpd_status status;
	bool found = false;

	lock(s);
	status = user_by_id(s, id, &found, &u);
	unlock(s);
	if (status != OTPD_OK)
		return status;
	if (!found)
		return OTPD_NOT_FOUND;
	*ret = u;
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

static enum otpd_status session_get(struct sqlite_store *s, const char *jti,
                                    bool *ret_found, struct session_row *ret)
{
	struct session_row r;
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(s, ST_SESSION_GET, &st);
	bool found;

	if (status != OTPD_OK)
		return status;
	status = fetch(s, ST_SESSION_GET, bind_text(st, 1, jti), &found);
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
		log_error("store.error",
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
static enum otpd_status family_revoke(struct sqlite_store *s, const char *jti,
                                      int *ret_revoked)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(s, ST_FAMILY_REVOKE, &st);

	if (status != OTPD_OK)
		return status;
	status = finish(s, ST_FAMILY_REVOKE, bind_text(st, 1, jti));
	if (status == OTPD_OK)
		*ret_revoked = sqlite3_changes(s->db);
	return status;
}

/* Mark live record `jti` rotated at now_ms, replaced by `next_jti`. */
static enum otpd_status session_mark_rotated(struct sqlite_store *s,
                                             const char *jti,
                                             const char *next_jti,
                                             int64_t now_ms)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(s, ST_SESSION_ROTATE, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = bind_text(st, 1, jti);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, now_ms);
	if (rc == SQLITE_OK)
		rc = bind_text(st, 3, next_jti);
	status = finish(s, ST_SESSION_ROTATE, rc);
	if (status == OTPD_OK && sqlite3_changes(s->db) != 1) {
		/* We hold the write lock and have just read state 0. */
		log_error("store.error", "sqlite: a live refresh record changed under the write lock");
		return OTPD_INTERNAL;
	}
	return status;
}

/* The decisions of store_session_rotate (store.h), in the order listed
 * there.  Returns the driver status; the answer goes to *ret_result.  Any
 * answer commits: only the OK and replay answers have written anything. */
static enum otpd_status rotate_tx(struct sqlite_store *s, const char *jti,
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
	status = session_get(s, jti, &found, &cur);
	if (status != OTPD_OK || !found)
		return status;
	/* Expired: the token's exp (expires_ms) is reached (RFC 7519 §4.1.4). */
	if (cur.state == SESSION_REVOKED || now_ms >= cur.sess.expires_ms ||
	    cur.user_id != user_id)
		return OTPD_OK;
	status = user_by_id(s, user_id, &found, &res->user);
	if (status != OTPD_OK || !found)
		return status;
	if (!res->user.is_active) {
		*ret_result = OTPD_USER_INACTIVE;
		return OTPD_OK;
	}

	if (cur.state == SESSION_LIVE) {
		status = session_mark_rotated(s, cur.sess.jti, next->jti, now_ms);
		if (status == OTPD_OK) /* the family continues; next->family is ignored */
			status = session_insert(s, next, cur.sess.family, user_id);
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
		status = session_get(s, cur.replaced_by, &found, &succ);
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

	/* A replay of a rotated-out token (API-CONTRACT "Tokens", RFC 9700
	 * §4.14): the whole family goes, committed with the refusal. */
	status = family_revoke(s, cur.sess.jti, &revoked);
	if (status != OTPD_OK)
		return status;
	log_warn("store.token_reuse",
	         "rotated-out refresh token of user %lld presented again: "
	         "its family is revoked (%d record(s))",
	         (long long)user_id, revoked);
	return OTPD_OK;
}

static enum otpd_status sq_session_rotate(struct store *base, const char *jti,
                                          int64_t user_id,
                                          const struct store_session *next,
                                          int64_t grace_ms, int64_t now_ms,
                                          struct store_rotate_result *ret)
{
	struct sqlite_store *s = to_sqlite(base);
	struct store_rotate_result res;
	enum otpd_status status, result = OTPD_INTERNAL;

	if (!jti)
		return OTPD_INVALID_TOKEN;
	if (!next) {
		log_error("store.error", "session rotate: no successor given");
		return OTPD_INTERNAL;
	}
	memset(&res, 0, sizeof(res));
	lock(s);
	status = tx_begin(s);
	if (status == OTPD_OK)
		status = tx_end(s, rotate_tx(s, jti, user_id, next, grace_ms, now_ms,
		                             &result, &res));
	unlock(s);
	if (status != OTPD_OK)
		return status;
	if (result == OTPD_OK)
		*ret = res;
	return result;
}

static enum otpd_status sq_session_revoke(struct store *base, const char *jti)
{
	struct sqlite_store *s = to_sqlite(base);
	enum otpd_status status;
	int revoked = 0;

	if (!jti)
		return OTPD_OK; /* nothing to revoke */
	lock(s);
	status = tx_begin(s);
	if (status == OTPD_OK)
		status = tx_end(s, family_revoke(s, jti, &revoked));
	unlock(s);
	return status;
}

static enum otpd_status purge_tx(struct sqlite_store *s, int64_t now_ms,
                                 int limit, int *ret_deleted)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = prepare(s, ST_SESSION_PURGE, &st);
	int rc;

	if (status != OTPD_OK)
		return status;
	rc = sqlite3_bind_int64(st, 1, now_ms);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 2, limit);
	status = finish(s, ST_SESSION_PURGE, rc);
	if (status == OTPD_OK)
		*ret_deleted = sqlite3_changes(s->db);
	return status;
}

static enum otpd_status sq_session_purge(struct store *base, int64_t now_ms,
                                         int limit, int *ret_deleted)
{
	struct sqlite_store *s = to_sqlite(base);
	enum otpd_status status;
	int deleted = 0;

	if (limit <= 0) { /* at most none */
		*ret_deleted = 0;
		return OTPD_OK;
	}
	lock(s);
	status = tx_begin(s);
	if (status == OTPD_OK)
		status = tx_end(s, purge_tx(s, now_ms, limit, &deleted));
	unlock(s);
	if (status == OTPD_OK)
		*ret_deleted = deleted;
	return status;
}

/* ---- open / close ---- */

static void sq_close(struct store *base)
{
	struct sqlite_store *s = to_sqlite(base);
	int rc;

	for (int i = 0; i < _ST_MAX; i++)
		sqlite3_finalize(s->stmt[i]);
	rc = sqlite3_close(s->db);
	if (rc != SQLITE_OK)
		log_error("store.error", "sqlite: close: %s", sqlite3_errstr(rc));
	pthread_mutex_destroy(&s->lock);
	free(s);
}

static const struct store_ops sqlite_ops = {
	.name = "sqlite",
	.migrate = sq_migrate,
	.ping = sq_ping,
	.secret_get_or_create = sq_secret_get_or_create,
	.otp_issue = sq_otp_issue,
	.otp_cancel = sq_otp_cancel,
	.otp_verify = sq_otp_verify,
	.user_get = sq_user_get,
	.session_rotate = sq_session_rotate,
	.session_revoke = sq_session_revoke,
	.session_purge = sq_session_purge,
	.close = sq_close,
};

/* journal_mode=WAL answers with the mode in effect. */
static enum otpd_status set_wal(struct sqlite_store *s, const char *path)
{
	sqlite3_stmt *st = NULL;
	enum otpd_status status = OTPD_OK;
	int rc;

	rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
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
		status = fail(s, rc, what);
	}
	sqlite3_finalize(st);
	return status;
}

enum otpd_status store_sqlite_open(const char *path, int busy_timeout_ms,
                                   struct store **ret)
{
	struct sqlite_store *s;
	enum otpd_status status;
	int rc;

	s = calloc(1, sizeof(*s));
	if (!s) {
		log_error("store.open", "out of memory");
		return OTPD_NOMEM;
	}
	s->base.ops = &sqlite_ops;
	if (pthread_mutex_init(&s->lock, NULL) != 0) {
		log_error("store.open", "cannot create a mutex");
		free(s);
		return OTPD_INTERNAL;
	}

	/* Our mutex serialises every use of the connection. */
	rc = sqlite3_open_v2(path, &s->db,
	                     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	                             SQLITE_OPEN_NOMUTEX,
	                     NULL);
	if (rc != SQLITE_OK) {
		log_error("store.open", "cannot open database '%s': %s", path,
		          s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
		status = status_of(rc);
		goto out;
	}
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_timeout(s->db, busy_timeout_ms);

	/* The first statement that reads the file: a file that is not a
	 * database, or cannot be read, fails here. */
	status = set_wal(s, path);
	if (status != OTPD_OK)
		goto out;
	rc = sqlite3_exec(s->db,
	                  "PRAGMA synchronous=FULL;"
	                  "PRAGMA foreign_keys=ON;",
	                  NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		status = fail(s, rc, "connection settings");
		goto out;
	}
	log_debug("store.open", "opened SQLite database '%s'", path);
	*ret = &s->base;
	return OTPD_OK;
out:
	sqlite3_close(s->db); /* accepts NULL */
	pthread_mutex_destroy(&s->lock);
	free(s);
	return status;
}
