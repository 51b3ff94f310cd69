/* The PostgreSQL schema, as versioned migrations (store/postgres.c applies
 * them through migrate.c: each in its own transaction, under an advisory
 * lock, recorded in schema_migrations).
 *
 * APPEND-ONLY: element i is version i + 1.  Once a version has been released
 * it is never edited or reordered; a change to the schema is a new element
 * at the end.
 *
 * Version 1 is the SQLite schema at its latest version (migrations_sqlite.c,
 * version 4) in PostgreSQL's types: the same tables, columns, CHECKs and
 * indexes, so that the dialects run the same rules on the same rows; plus
 * throttles, which only a shared database needs.  Times are milliseconds
 * since the Unix epoch (bigint), as on SQLite; hashes and secrets are
 * bytea; flags are boolean. */
#include "backend.h"

static const char *const postgres_sql[] = {
	/* 1: secrets, users, the history of codes, refresh tokens, the
	 * dashboard's counters. */
	"CREATE TABLE meta (\n"
	"  name  text PRIMARY KEY,\n"
	"  value bytea NOT NULL\n"
	");\n"

	/* Ids come from identity sequences: never reused after a purge.  The
	 * sequences keep the default CACHE 1, which makes ids increase in
	 * the order the rows are inserted, across every connection and node:
	 * a number's codes are inserted one at a time (under its advisory
	 * lock), so its newest code is the one with the highest id.  Do not
	 * raise the cache. */
	"CREATE TABLE users (\n"
	"  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
	"  phone_number  text NOT NULL UNIQUE,\n"   /* +989XXXXXXXXX */
	"  username      text NOT NULL UNIQUE,\n"
	"  email         text NOT NULL,\n"
	"  first_name    text,\n"
	"  last_name     text,\n"
	"  is_active     boolean NOT NULL DEFAULT true,\n"
	"  is_staff      boolean NOT NULL DEFAULT false,\n"
	"  created_at_ms bigint NOT NULL,\n"
	"  last_login_ms bigint\n"
	");\n"

	/* One row per issued code (id is the otp_id).  state: 0 active,
	 * 1 used, 2 cancelled (its SMS was not accepted), 3 replaced by a
	 * newer send.  ended_ms: when it became used, cancelled, replaced or
	 * exhausted; NULL while active.  sms_*: the provider's message id
	 * once it accepted the SMS, its delivery status and when that was
	 * learnt (store.h, STORE_SMS_STATUS_FINAL).
	 *
	 * The current code of a number is its newest row: `WHERE phone = $1
	 * ORDER BY id DESC LIMIT 1` is one step of otp_codes_phone (SQLite's
	 * index on phone holds the rowid; here the id is a column of the
	 * index).  The partial index holds only the codes whose delivery is
	 * still to be learnt, in the order the poller reads them. */
	"CREATE TABLE otp_codes (\n"
	"  id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
	"  phone          text NOT NULL,\n"
	"  code_hash      bytea NOT NULL CHECK (octet_length(code_hash) = 32),\n"
	"  created_ms     bigint NOT NULL,\n"
	"  expires_ms     bigint NOT NULL,\n"
	"  attempts       integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),\n"
	"  max_attempts   integer NOT NULL CHECK (max_attempts >= 1),\n"
	"  state          smallint NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 3),\n"
	"  ended_ms       bigint,\n"
	"  sms_message_id bigint,\n"
	"  sms_status     integer,\n"
	"  sms_status_ms  bigint\n"
	");\n"
	"CREATE INDEX otp_codes_phone ON otp_codes (phone, id);\n"
	/* STORE_SMS_STATUS_FINAL is 6: postgres.c's SMS_NOT_FINAL says the
	 * same, verbatim, so that the planner matches this predicate. */
	"CREATE INDEX otp_codes_delivery ON otp_codes (created_ms, id)"
	" WHERE sms_message_id IS NOT NULL AND coalesce(sms_status, 0) < 6;\n"

	/* Refresh tokens (sessions): state 0 live, 1 rotated, 2 revoked.
	 * access_jti: the access token minted with it (the grace window hands
	 * the pair out again); rotated_ms and replaced_by: when it was
	 * rotated, and its successor.  The expires_ms index serves the
	 * bounded purge. */
	"CREATE TABLE refresh_tokens (\n"
	"  jti         text PRIMARY KEY,\n"
	"  family      text NOT NULL,\n"
	"  user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,\n"
	"  created_ms  bigint NOT NULL,\n"
	"  expires_ms  bigint NOT NULL,\n"
	"  state       smallint NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 2),\n"
	"  access_jti  text,\n"
	"  rotated_ms  bigint,\n"
	"  replaced_by text\n"
	");\n"
	"CREATE INDEX refresh_tokens_family ON refresh_tokens (family);\n"
	"CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);\n"
	"CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_ms);\n"

	/* The per-address throttles, counted for every node (a GCRA: the
	 * theoretical arrival time of the key's next request, microseconds).
	 * A row whose time has passed is as good as none: the janitor deletes
	 * those. */
	"CREATE TABLE throttles (\n"
	"  key    bytea PRIMARY KEY,\n"
	"  tat_us bigint NOT NULL\n"
	");\n"

	/* What the dashboard counts, per 5 minutes (bucket_ms: the start of
	 * the bucket, a multiple of 300000): sends (codes issued),
	 * sms_failures (codes cancelled), logins, new_users, wrong_guesses,
	 * locks (none yet), each added to in the transaction of the operation
	 * it counts.  "Per 5 minutes over the last 24 h" is a range of the
	 * primary key.  A bucket is spread over up to 16 rows (slot: the
	 * server process of the connection that counted, modulo 16), summed
	 * when read: with one row, every transaction of the cluster would
	 * update the same row and wait for the previous one's COMMIT to do so
	 * (docs/PERFORMANCE.md, "PostgreSQL"). */
	"CREATE TABLE stats_5m (\n"
	"  bucket_ms     bigint NOT NULL,\n"
	"  slot          smallint NOT NULL CHECK (slot BETWEEN 0 AND 15),\n"
	"  sends         bigint NOT NULL DEFAULT 0,\n"
	"  sms_failures  bigint NOT NULL DEFAULT 0,\n"
	"  logins        bigint NOT NULL DEFAULT 0,\n"
	"  new_users     bigint NOT NULL DEFAULT 0,\n"
	"  wrong_guesses bigint NOT NULL DEFAULT 0,\n"
	"  locks         bigint NOT NULL DEFAULT 0,\n"
	"  PRIMARY KEY (bucket_ms, slot)\n"
	");\n",

	/* 2: the audit log (SQLite's version 5: the same table), and the
	 * username index of the prefix search.  Append-only: the store has no
	 * statement that changes or deletes an entry, and the trigger refuses
	 * one written by hand (UPDATE, DELETE, TRUNCATE).  Paged newest first
	 * through the primary key.  users_username_c: the prefix search
	 * compares usernames bytewise (COLLATE "C", as SQLite does), which the
	 * UNIQUE index (the database's collation) cannot serve. */
	"CREATE TABLE audit_log (\n"
	"  id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n"
	"  time_ms bigint NOT NULL,\n"
	"  actor   text NOT NULL CHECK (char_length(actor) BETWEEN 1 AND 64),\n"
	"  action  text NOT NULL CHECK (char_length(action) BETWEEN 1 AND 64),\n"
	"  target  text NOT NULL CHECK (octet_length(target) <= 256),\n"
	"  client  text CHECK (octet_length(client) <= 64)\n"
	");\n"
	"CREATE FUNCTION otpd_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS\n"
	"  $$BEGIN RAISE EXCEPTION 'audit_log is append-only'; END$$;\n"
	"CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log\n"
	"  FOR EACH ROW EXECUTE FUNCTION otpd_audit_log_append_only();\n"
	"CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log\n"
	"  FOR EACH STATEMENT EXECUTE FUNCTION otpd_audit_log_append_only();\n"
	"CREATE INDEX users_username_c ON users (username COLLATE \"C\");\n",

	/* Append new versions here. */
};

const struct store_migrations store_postgres_migrations = {
	.sql = postgres_sql,
	.count = sizeof(postgres_sql) / sizeof(postgres_sql[0]),
};
