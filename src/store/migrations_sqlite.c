/* The SQLite schema, as versioned migrations (store/sqlite.c applies them,
 * each in its own transaction, and records them in schema_migrations).
 *
 * APPEND-ONLY: element i is version i + 1.  Once a version has been released
 * it is never edited or reordered; a change to the schema is a new element
 * at the end.  Times are milliseconds since the Unix epoch (INTEGER). */
#include "backend.h"

static const char *const sqlite_sql[] = {
	/* 1: secrets, users, codes, sends, refresh tokens. */
	"CREATE TABLE meta (\n"
	"  name  TEXT PRIMARY KEY,\n"
	"  value BLOB NOT NULL\n"
	") STRICT;\n"

	"CREATE TABLE users (\n"
	"  id            INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  phone_number  TEXT NOT NULL UNIQUE,\n"   /* +989XXXXXXXXX */
	"  username      TEXT NOT NULL UNIQUE,\n"
	"  email         TEXT NOT NULL,\n"
	"  first_name    TEXT,\n"
	"  last_name     TEXT,\n"
	"  is_active     INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),\n"
	"  is_staff      INTEGER NOT NULL DEFAULT 0 CHECK (is_staff IN (0, 1)),\n"
	"  created_at_ms INTEGER NOT NULL,\n"
	"  last_login_ms INTEGER\n"
	") STRICT;\n"

	/* One row per send request that passed validation (docs/API.md §3:
	 * every one counts towards the per-phone limit).  The id of a send is
	 * the otp_id of the code it issued; AUTOINCREMENT so that an id is
	 * never reused after old rows are pruned. */
	"CREATE TABLE otp_sends (\n"
	"  id      INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  phone   TEXT NOT NULL,\n"
	"  sent_ms INTEGER NOT NULL\n"
	") STRICT;\n"
	"CREATE INDEX otp_sends_phone_sent ON otp_sends (phone, sent_ms);\n"

	/* The current code of each phone: a new send replaces the row, so an
	 * earlier code stops working.  state: 0 active, 1 used, 2 cancelled. */
	"CREATE TABLE otp_codes (\n"
	"  phone      TEXT PRIMARY KEY,\n"
	"  otp_id     INTEGER NOT NULL,\n"
	"  code_hash  BLOB NOT NULL CHECK (length(code_hash) = 32),\n"
	"  created_ms INTEGER NOT NULL,\n"
	"  expires_ms INTEGER NOT NULL,\n"
	"  attempts   INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),\n"
	"  state      INTEGER NOT NULL DEFAULT 0 CHECK (state IN (0, 1, 2))\n"
	") STRICT, WITHOUT ROWID;\n"

	/* Refresh tokens (sessions): state 0 live, 1 rotated, 2 revoked. */
	"CREATE TABLE refresh_tokens (\n"
	"  jti        TEXT PRIMARY KEY,\n"
	"  family     TEXT NOT NULL,\n"
	"  user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,\n"
	"  created_ms INTEGER NOT NULL,\n"
	"  expires_ms INTEGER NOT NULL,\n"
	"  state      INTEGER NOT NULL DEFAULT 0 CHECK (state IN (0, 1, 2))\n"
	") STRICT;\n"
	"CREATE INDEX refresh_tokens_family ON refresh_tokens (family);\n"
	"CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);\n",

	/* 2: refresh-token rotation with reuse detection (store_session_rotate).
	 * access_jti: the access token minted with the refresh token, so that
	 * the pair can be handed out again inside the grace window (NULL for
	 * logins recorded by version 1).  rotated_ms and replaced_by: set when
	 * the record is rotated (state 1): when, and the jti of its successor.
	 * The expires_ms index serves the bounded purge. */
	"ALTER TABLE refresh_tokens ADD COLUMN access_jti TEXT;\n"
	"ALTER TABLE refresh_tokens ADD COLUMN rotated_ms INTEGER;\n"
	"ALTER TABLE refresh_tokens ADD COLUMN replaced_by TEXT;\n"
	"CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_ms);\n",

	/* 3: the hot tables without an ephemeral table per write.  SQLite
	 * evaluates `x IN (0, 1, 2)` (three values or more) through an
	 * ephemeral index that it builds on every row it checks: the CHECKs on
	 * state were run for every code used and every login.  They become
	 * BETWEEN.  refresh_tokens is also WITHOUT ROWID, keyed by jti: one
	 * B-tree less per login (the table was a rowid table plus an index on
	 * jti).  SQLite cannot change a CHECK in place: each table is copied
	 * into a new one, then renamed. */
	"CREATE TABLE otp_codes_v3 (\n"
	"  phone      TEXT PRIMARY KEY,\n"
	"  otp_id     INTEGER NOT NULL,\n"
	"  code_hash  BLOB NOT NULL CHECK (length(code_hash) = 32),\n"
	"  created_ms INTEGER NOT NULL,\n"
	"  expires_ms INTEGER NOT NULL,\n"
	"  attempts   INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),\n"
	"  state      INTEGER NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 2)\n"
	") STRICT, WITHOUT ROWID;\n"
	"INSERT INTO otp_codes_v3 (phone, otp_id, code_hash, created_ms, expires_ms,"
	" attempts, state)\n"
	"  SELECT phone, otp_id, code_hash, created_ms, expires_ms, attempts, state"
	" FROM otp_codes;\n"
	"DROP TABLE otp_codes;\n"
	"ALTER TABLE otp_codes_v3 RENAME TO otp_codes;\n"

	"CREATE TABLE refresh_tokens_v3 (\n"
	"  jti         TEXT PRIMARY KEY,\n"
	"  family      TEXT NOT NULL,\n"
	"  user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,\n"
	"  created_ms  INTEGER NOT NULL,\n"
	"  expires_ms  INTEGER NOT NULL,\n"
	"  state       INTEGER NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 2),\n"
	"  access_jti  TEXT,\n"
	"  rotated_ms  INTEGER,\n"
	"  replaced_by TEXT\n"
	") STRICT, WITHOUT ROWID;\n"
	"INSERT INTO refresh_tokens_v3 (jti, family, user_id, created_ms, expires_ms,"
	" state, access_jti, rotated_ms, replaced_by)\n"
	"  SELECT jti, family, user_id, created_ms, expires_ms, state, access_jti,"
	" rotated_ms, replaced_by FROM refresh_tokens\n"
	/* A record whose user was deleted with foreign keys off (the sqlite3
	 * shell's default) cannot be used, and would fail the copy's check. */
	"  WHERE user_id IN (SELECT id FROM users);\n"
	"DROP TABLE refresh_tokens;\n"
	"ALTER TABLE refresh_tokens_v3 RENAME TO refresh_tokens;\n"
	"CREATE INDEX refresh_tokens_family ON refresh_tokens (family);\n"
	"CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);\n"
	"CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_ms);\n",

	/* 4: a history of codes.  otp_codes keeps one row per issued code
	 * (id is the otp_id; AUTOINCREMENT, so that an id is never reused
	 * after the retention purge deletes old rows) instead of one per
	 * number, and otp_sends goes: the per-number send limit counts codes.
	 * state: 0 active, 1 used, 2 cancelled (its SMS was not accepted),
	 * 3 replaced by a newer send.  ended_ms: when it became used,
	 * cancelled, replaced or exhausted (attempts = max_attempts); NULL
	 * while active.  What an admin sees derives from these: valid, used,
	 * expired (state 0, past expires_ms), exhausted (attempts >=
	 * max_attempts), replaced, cancelled.  sms_*: the provider's message
	 * id once it accepted the SMS, its delivery status and when that was
	 * learnt (store.h, STORE_SMS_STATUS_FINAL).
	 *
	 * The current code of a number is its newest row: the index on phone
	 * holds (phone, rowid), so `WHERE phone = ? ORDER BY id DESC LIMIT 1`
	 * is one index lookup.  The partial index holds only the codes whose
	 * delivery is still to be learnt (a handful): nothing is written to it
	 * when a code is issued.
	 *
	 * The copy: every send of version 3 in id order, joined to the code
	 * that it issued when that is still the number's current code; a
	 * send without one (its code was replaced) becomes a replaced code
	 * with a zero hash (it never matches: HMAC-SHA256 output), ended by
	 * the number's next send, so that the send limit holds across the
	 * upgrade.  A current code without its send (a database of version 1
	 * filled by hand) is copied too.  max_attempts was not recorded: the
	 * copied codes get 3 (OTP_MAX_ATTEMPTS's default; verify judges with
	 * the smaller of it and the configured value).  ended_ms of copied
	 * codes is unknown (NULL) except for the replaced ones.  The
	 * AUTOINCREMENT counter continues from otp_sends'. */
	"CREATE TABLE otp_codes_v4 (\n"
	"  id             INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  phone          TEXT NOT NULL,\n"
	"  code_hash      BLOB NOT NULL CHECK (length(code_hash) = 32),\n"
	"  created_ms     INTEGER NOT NULL,\n"
	"  expires_ms     INTEGER NOT NULL,\n"
	"  attempts       INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),\n"
	"  max_attempts   INTEGER NOT NULL CHECK (max_attempts >= 1),\n"
	"  state          INTEGER NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 3),\n"
	"  ended_ms       INTEGER,\n"
	"  sms_message_id INTEGER,\n"
	"  sms_status     INTEGER,\n"
	"  sms_status_ms  INTEGER\n"
	") STRICT;\n"
	"INSERT INTO otp_codes_v4 (id, phone, code_hash, created_ms, expires_ms,"
	" attempts, max_attempts, state, ended_ms)\n"
	"  SELECT s.id, s.phone, coalesce(c.code_hash, zeroblob(32)),"
	" coalesce(c.created_ms, s.sent_ms), coalesce(c.expires_ms, s.sent_ms),"
	" coalesce(c.attempts, 0), 3, coalesce(c.state, 3),"
	" CASE WHEN c.phone IS NULL THEN (SELECT min(n.sent_ms) FROM otp_sends n"
	" WHERE n.phone = s.phone AND n.id > s.id) END\n"
	"  FROM otp_sends s LEFT JOIN otp_codes c ON c.phone = s.phone AND c.otp_id = s.id\n"
	"  ORDER BY s.id;\n"
	"INSERT INTO otp_codes_v4 (id, phone, code_hash, created_ms, expires_ms,"
	" attempts, max_attempts, state)\n"
	"  SELECT c.otp_id, c.phone, c.code_hash, c.created_ms, c.expires_ms,"
	" c.attempts, 3, c.state FROM otp_codes c\n"
	"  WHERE NOT EXISTS (SELECT 1 FROM otp_sends s WHERE s.id = c.otp_id"
	" AND s.phone = c.phone);\n"
	"DELETE FROM sqlite_sequence WHERE name = 'otp_codes_v4';\n"
	"INSERT INTO sqlite_sequence (name, seq) VALUES ('otp_codes_v4', max("
	"coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'otp_sends'), 0),"
	" coalesce((SELECT max(id) FROM otp_codes_v4), 0)));\n"
	"DROP TABLE otp_codes;\n"
	"DROP TABLE otp_sends;\n"
	"ALTER TABLE otp_codes_v4 RENAME TO otp_codes;\n"
	"CREATE INDEX otp_codes_phone ON otp_codes (phone);\n"
	"CREATE INDEX otp_codes_delivery ON otp_codes (created_ms)"
	" WHERE sms_message_id IS NOT NULL AND coalesce(sms_status, 0) < 6;\n"

	/* What the dashboard counts, per 5 minutes (bucket_ms: the start of
	 * the bucket, a multiple of 300000), each counter added to in the
	 * transaction of the operation it counts: sends (codes issued),
	 * sms_failures (codes cancelled), logins, new_users, wrong_guesses,
	 * locks (none yet).  "Per 5 minutes over the last 24 h" is a range
	 * of the primary key. */
	"CREATE TABLE stats_5m (\n"
	"  bucket_ms     INTEGER PRIMARY KEY,\n"
	"  sends         INTEGER NOT NULL DEFAULT 0,\n"
	"  sms_failures  INTEGER NOT NULL DEFAULT 0,\n"
	"  logins        INTEGER NOT NULL DEFAULT 0,\n"
	"  new_users     INTEGER NOT NULL DEFAULT 0,\n"
	"  wrong_guesses INTEGER NOT NULL DEFAULT 0,\n"
	"  locks         INTEGER NOT NULL DEFAULT 0\n"
	") STRICT, WITHOUT ROWID;\n",

	/* 5: the audit log (store.h, "the audit log"): every admin action,
	 * from the admin API or the command line.  Append-only: the store has
	 * no statement that changes or deletes an entry, and the triggers
	 * refuse one written by hand (a sqlite3 shell on the file).  Paged
	 * newest first through the primary key; AUTOINCREMENT, so that an id
	 * is never reused.  client: the address, or NULL (the command line).
	 * The other lists need no new index: users by number (its UNIQUE),
	 * by username prefix (UNIQUE on username: a range), all users by id
	 * (the primary key); a number's codes through otp_codes_phone. */
	"CREATE TABLE audit_log (\n"
	"  id      INTEGER PRIMARY KEY AUTOINCREMENT,\n"
	"  time_ms INTEGER NOT NULL,\n"
	"  actor   TEXT NOT NULL CHECK (length(actor) BETWEEN 1 AND 64),\n"
	"  action  TEXT NOT NULL CHECK (length(action) BETWEEN 1 AND 64),\n"
	"  target  TEXT NOT NULL CHECK (length(target) <= 256),\n"
	"  client  TEXT CHECK (length(client) <= 64)\n"
	") STRICT;\n"
	"CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log\n"
	"  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;\n"
	"CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log\n"
	"  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;\n",

	/* Append new versions here. */
};

const struct store_migrations store_sqlite_migrations = {
	.sql = sqlite_sql,
	.count = sizeof(sqlite_sql) / sizeof(sqlite_sql[0]),
};
