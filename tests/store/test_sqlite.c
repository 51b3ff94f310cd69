/* The SQLite dialect's own suite (store/sqlite.c): what only SQLite has,
 * next to the conformance suite (test_store.c, which runs on every
 * backend).  Here: its URLs (sqlite:PATH, sqlite://PATH, :memory:), its
 * files (created 0600, shared files refused), WAL, migrations from a
 * version-1 or version-3 file, the query plan of every statement it
 * prepares, a write lock held by another process (unavailable; a batch that
 * fails whole), and what only SQL can do to a database behind the store's
 * back (a user deactivated or deleted with its sessions left, every column
 * of a refresh record).  Always on a temporary SQLite file, whatever
 * OTPD_TEST_DATABASE_URL says.
 *
 * It reaches under the store with the driver (query plans) and with the
 * sqlite3 command-line shell (another process); those tests fail when
 * /usr/bin/sqlite3 is missing (tools/deps.sh installs it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <semaphore.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store/backend.h" /* the migrations and the statements: this suite is the dialect's */
#include "store/store.h"
#include "store_fixture.h"

#define SQLITE_CLI "/usr/bin/sqlite3"

static int setup(void **state)
{
	return fixture_setup(state, NULL);
}

static int teardown(void **state)
{
	return fixture_teardown(state);
}

/* The shell is installed by tools/deps.sh: a test that needs it fails
 * without it, it is never skipped. */
static bool have_cli(void)
{
	if (access(SQLITE_CLI, X_OK) != 0)
		fail_msg("%s is missing (tools/deps.sh installs sqlite3)", SQLITE_CLI);
	return true;
}


/* Run SQL through the sqlite3 shell on database file db; the first line of
 * output goes to out.  Returns the shell's exit status. */
static int cli_db(const struct fixture *fx, const char *db, const char *sql,
                  char *out, size_t outlen)
{
	char script[160], cmd[512];
	FILE *f;
	int rc;

	snprintf(script, sizeof(script), "%s/q.sql", fx->dir);
	f = fopen(script, "w");
	if (!f)
		return -1;
	fprintf(f, ".timeout 10000\n%s\n", sql);
	fclose(f);
	snprintf(cmd, sizeof(cmd), SQLITE_CLI " -batch '%s' < '%s'", db, script);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	if (out) {
		out[0] = '\0';
		if (fgets(out, (int)outlen, f))
			out[strcspn(out, "\n")] = '\0';
	}
	while (fgetc(f) != EOF)
		;
	rc = pclose(f);
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* The same on the fixture's database. */
static int cli(const struct fixture *fx, const char *sql, char *out, size_t outlen)
{
	return cli_db(fx, fx->path, sql, out, outlen);
}

static long long cli_int(const struct fixture *fx, const char *sql)
{
	char out[64];

	assert_int_equal(cli(fx, sql, out, sizeof(out)), 0);
	return strtoll(out, NULL, 10);
}

__attribute__((format(printf, 2, 3)))
static long long cli_intf(const struct fixture *fx, const char *fmt, ...)
{
	char sql[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	assert_true(n > 0 && (size_t)n < sizeof(sql));
	return cli_int(fx, sql);
}

/* The first line the shell prints for sql is want. */
static void expect_cli(const struct fixture *fx, const char *sql, const char *want)
{
	char out[1024];

	assert_int_equal(cli(fx, sql, out, sizeof(out)), 0);
	assert_string_equal(out, want);
}

/* ---- URLs, files, WAL ---- */

static void test_open_urls(void **state)
{
	struct fixture *fx = *state;
	struct store *sentinel = (struct store *)&fx; /* any non-NULL value */
	struct store *s = sentinel;
	char url[300], garbage[200];
	int fd;

	/* The other scheme goes to the PostgreSQL dialect: nobody listens on
	 * port 1, so it cannot connect, and says so without the URL. */
	assert_int_equal(open_url("postgres://u:pw0rdpw0rd@127.0.0.1:1/otpd", 100, &s),
	                 OTPD_UNAVAILABLE);
	assert_int_equal(open_url("postgresql://127.0.0.1:1/otpd", 100, &s),
	                 OTPD_UNAVAILABLE);
	assert_true(s == sentinel);
	assert_false(log_contains(fx, "pw0rdpw0rd")); /* a password in the URL */
	assert_int_equal(open_url("mysql://localhost/otpd", 100, &s), OTPD_INTERNAL);
	assert_int_equal(open_url("sqlite:", 100, &s), OTPD_INTERNAL);
	assert_int_equal(open_url("", 100, &s), OTPD_INTERNAL);
	assert_int_equal(open_url("sqlite:/nonexistent-dir/x/otpd.db", 100, &s),
	                 OTPD_UNAVAILABLE);
	/* A file that is not a database. */
	snprintf(garbage, sizeof(garbage), "%s/garbage.db", fx->dir);
	fd = open(garbage, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	for (int i = 0; i < 64; i++)
		assert_int_equal(write(fd, "this is not a database. ", 24), 24);
	close(fd);
	snprintf(url, sizeof(url), "sqlite:%s", garbage);
	assert_int_equal(open_url(url, 100, &s), OTPD_INTERNAL);
	assert_ptr_equal(s, sentinel); /* untouched on every failure */

	/* "sqlite://PATH" names the same file as "sqlite:PATH". */
	snprintf(url, sizeof(url), "sqlite://%s", fx->path);
	assert_int_equal(open_url(url, 100, &s), OTPD_OK);
	assert_ptr_not_equal(s, sentinel);
	assert_int_equal(store_ping(s), OTPD_OK);
	store_close(s);
	store_close(NULL);
}

/* Every version recorded once, and the connection settings kept in the
 * file (WAL). */
static void test_migrate_records(void **state)
{
	struct fixture *fx = *state;
	char out[32];

	have_cli();
	assert_int_equal(fx->applied, (int)store_sqlite_migrations.count);
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM schema_migrations;"), fx->applied);
	assert_int_equal(cli_int(fx, "SELECT max(version) FROM schema_migrations;"), fx->applied);
	assert_int_equal(cli(fx, "PRAGMA journal_mode;", out, sizeof(out)), 0);
	assert_string_equal(out, "wal");
}

static void test_memory_url(void **state)
{
	struct store *s = NULL;
	struct store_verify_result vr = untouched_verify();
	int applied = 0;

	(void)state;
	/* An in-memory database (what the use-case tests run on). */
	assert_int_equal(open_url("sqlite::memory:", 100, &s), OTPD_OK);
	assert_int_equal(store_migrate(s, &applied), OTPD_OK);
	assert_true(applied >= 1);
	issue_ok(s, &defaults, PHONE, 1, T0);
	assert_int_equal(verify(s, &defaults, PHONE, 1, T0, NULL, &vr), OTPD_OK);
	assert_true(vr.is_new_user);

	/* Its reads are jobs of its writer (one connection): the same
	 * answers.  The stats, the codes, the sessions; and an update. */
	struct store_stats_bucket got[8];
	struct store_codes_query q = {.phone = PHONE};
	struct store_code_row rows[4];
	struct store_session_info recs[4];
	struct store_user_change off = {.set_active = true, .is_active = false};
	struct store_user u;
	size_t n = UNTOUCHED;
	const int64_t b0 = T0 - T0 % STORE_STATS_BUCKET_MS;
	assert_int_equal(store_stats(s, b0, b0 + STORE_STATS_BUCKET_MS, got, 8, &n), OTPD_OK);
	assert_int_equal(n, 1);
	assert_int_equal(got[0].bucket_ms, b0);
	assert_int_equal(got[0].sends, 1);
	assert_int_equal(got[0].logins, 1);
	assert_int_equal(store_codes_list(s, &q, rows, 4, &n), OTPD_OK);
	assert_int_equal(n, 1);
	assert_int_equal(rows[0].state, OTP_CODE_USED);
	assert_int_equal(store_user_sessions(s, vr.user.id, recs, 4, &n), OTPD_OK);
	assert_int_equal(n, 0);
	assert_int_equal(store_user_update(s, vr.user.id, &off, NULL, &u), OTPD_OK);
	assert_false(u.is_active);
	store_close(s);
}

/* ---- the database's files: the owner's only ---- */

static unsigned file_mode(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (unsigned)(st.st_mode & 07777);
}

/* Created 0600 whatever the umask; the -wal and -shm files SQLite creates
 * later take the main file's mode (SQLite's unix VFS), so 0600 too. */
static void test_files_private(void **state)
{
	static const char *const suffix[] = {"", "-wal", "-shm"};
	struct fixture *fx = *state;
	struct store *s = NULL;
	char url[340], path[320], side[340];
	int applied = 0;
	mode_t old;

	snprintf(path, sizeof(path), "%s/private.db", fx->dir);
	snprintf(url, sizeof(url), "sqlite:%s", path);
	old = umask(0);
	assert_int_equal(open_url(url, 100, &s), OTPD_OK);
	assert_int_equal(file_mode(path), 0600);
	assert_int_equal(store_migrate(s, &applied), OTPD_OK);
	issue_ok(s, &defaults, PHONE, 1, T0);
	umask(old);
	for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
		snprintf(side, sizeof(side), "%s%s", path, suffix[i]);
		if (file_mode(side) != 0600)
			fail_msg("%s: mode %04o", side, file_mode(side));
	}
	store_close(s);
	assert_int_equal(umask(old), old); /* the process umask is back */
}

static void expect_refused_file(const char *url, const char *shown, const char *what,
                                unsigned mode)
{
	struct store_options strict = {.busy_timeout_ms = 100};
	struct store *sentinel = (struct store *)&strict, *s = sentinel;
	char err[600], want[600];

	snprintf(want, sizeof(want), "DATABASE_URL: %s is %s by other users (mode %04o); "
	         "chmod 600 it, or set OTPD_ALLOW_SHARED_DB_FILE=true", shown, what, mode);
	assert_int_equal(store_open(url, &strict, err, sizeof(err), &s), OTPD_FORBIDDEN);
	assert_string_equal(err, want);
	assert_ptr_equal(s, sentinel);
}

/* A file others can read or write is refused as configuration: one line in
 * err, nothing logged (logged when err is NULL); allow_shared_file opens it
 * with a warning.  A side file counts too.  :memory: has no file. */
static void test_shared_file_refused(void **state)
{
	struct fixture *fx = *state;
	struct store_options strict = {.busy_timeout_ms = 100};
	struct store_options allow = {.busy_timeout_ms = 100, .allow_shared_file = true};
	struct store *s = NULL;
	char url[340], path[320], wal[340], err[600];
	int fd;

	snprintf(path, sizeof(path), "%s/shared.db", fx->dir);
	snprintf(url, sizeof(url), "sqlite:%s", path);
	assert_int_equal(open_url(url, 100, &s), OTPD_OK);
	store_close(s);
	s = NULL;

	assert_int_equal(chmod(path, 0640), 0);
	expect_refused_file(url, path, "readable", 0640);
	assert_false(log_contains(fx, "(mode 0640)"));
	assert_int_equal(store_open(url, &strict, NULL, 0, &s), OTPD_FORBIDDEN);
	assert_true(log_contains(fx, "(mode 0640)"));
	assert_int_equal(chmod(path, 0602), 0);
	expect_refused_file(url, path, "writable", 0602);

	assert_int_equal(store_open(url, &allow, err, sizeof(err), &s), OTPD_OK);
	assert_string_equal(err, "");
	assert_true(log_contains(fx, "allowed by OTPD_ALLOW_SHARED_DB_FILE"));
	store_close(s);
	s = NULL;
	assert_int_equal(file_mode(path), 0602); /* left as it was */

	/* The main file is private, a -wal beside it is not. */
	assert_int_equal(chmod(path, 0600), 0);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	fd = open(wal, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(chmod(wal, 0644), 0);
	expect_refused_file(url, wal, "readable", 0644);
	assert_int_equal(chmod(wal, 0600), 0);
	assert_int_equal(store_open(url, &strict, err, sizeof(err), &s), OTPD_OK);
	store_close(s);
	s = NULL;

	assert_int_equal(store_open("sqlite::memory:", &strict, err, sizeof(err), &s), OTPD_OK);
	assert_string_equal(err, "");
	store_close(s);
}

/* ---- refresh records, under the store ---- */

/* Every refresh record, every column (the jtis too): for "nothing changes". */
static void cli_sessions_snapshot(const struct fixture *fx, char *out, size_t len)
{
	assert_int_equal(
		cli(fx, "SELECT count(*) || ':' || coalesce(group_concat(r, ';'), '')"
		        " FROM (SELECT jti || ',' || family || ',' || user_id || ','"
		        " || coalesce(access_jti, '-') || ',' || created_ms || ','"
		        " || expires_ms || ',' || state || ','"
		        " || coalesce(rotated_ms, '-') || ',' || coalesce(replaced_by, '-')"
		        " AS r FROM refresh_tokens ORDER BY jti);",
		    out, len),
		0);
	assert_true(strlen(out) > 0 && strlen(out) < len - 1);
}

static long long cli_family_count(const struct fixture *fx,
                                  const struct store_session *root, const char *where)
{
	return cli_intf(fx, "SELECT count(*) FROM refresh_tokens WHERE family = '%s'%s;",
	                root->family, where);
}

/* What the store's reads do not show (store_session_info has no jti): each
 * column of a login's record and of a rotation's, as written.  And a login
 * whose jti is taken fails with the driver's words, logged. */
static void test_session_columns(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	/* created_ms is the tokens' iat (whole seconds), not the verify's now. */
	struct store_session ss = session_of(1, T0 - 500), n1 = session_of(2, T0 + 1000);
	int64_t uid;

	have_cli();
	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(verify(fx->s, &defaults, PHONE, 1, T0, &ss, &vr), OTPD_OK);
	uid = vr.user.id;
	assert_int_equal(cli_intf(fx, "SELECT count(*) FROM refresh_tokens WHERE"
	                              " jti = '%s' AND access_jti = '%s' AND family = '%s'"
	                              " AND user_id = %lld AND created_ms = %lld"
	                              " AND expires_ms = %lld AND state = 0"
	                              " AND rotated_ms IS NULL AND replaced_by IS NULL;",
	                          ss.jti, ss.access_jti, ss.family, (long long)uid,
	                          (long long)ss.created_ms, (long long)ss.expires_ms),
	                 1);

	rotate_ok(fx->s, &ss, uid, &n1, GRACE_MS, T0 + 1000);
	assert_int_equal(cli_intf(fx, "SELECT count(*) FROM refresh_tokens WHERE"
	                              " jti = '%s' AND state = 1 AND rotated_ms = %lld"
	                              " AND replaced_by = '%s';",
	                          ss.jti, (long long)(T0 + 1000), n1.jti),
	                 1);
	assert_int_equal(cli_intf(fx, "SELECT count(*) FROM refresh_tokens WHERE"
	                              " jti = '%s' AND access_jti = '%s'"
	                              " AND family = '%s' AND user_id = %lld"
	                              " AND created_ms = %lld AND expires_ms = %lld"
	                              " AND state = 0 AND rotated_ms IS NULL"
	                              " AND replaced_by IS NULL;",
	                          n1.jti, n1.access_jti, ss.family, (long long)uid,
	                          (long long)n1.created_ms, (long long)n1.expires_ms),
	                 1);
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM refresh_tokens;"), 2);

	/* The same jti again: UNIQUE, in SQLite's words. */
	issue_ok(fx->s, &defaults, PHONE2, 2, T0);
	vr = untouched_verify();
	assert_int_equal(verify(fx->s, &defaults, PHONE2, 2, T0, &n1, &vr), OTPD_INTERNAL);
	assert_true(log_contains(fx, "UNIQUE constraint failed"));
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM refresh_tokens;"), 2);
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM users;"), 1);
}

/* A user made inactive behind the store's back (another program writing
 * the table, as the admin API's store_user_update() never does: it revokes
 * the sessions too), with its records left live: a rotation answers
 * user_inactive, also inside a grace window and outside it (a replay
 * otherwise), and changes nothing; reactivated, the session goes on. */
static void test_rotate_inactive_user(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), n1 = session_of(2, T0 + 1000);
	struct store_session n2 = session_of(3, T0 + 70000);
	char before[8192], after[8192];
	int64_t uid;

	have_cli();
	uid = login(fx, PHONE, &s0);
	rotate_ok(fx->s, &s0, uid, &n1, GRACE_MS, T0 + 1000);
	assert_int_equal(cli(fx, "UPDATE users SET is_active = 0;", NULL, 0), 0);
	cli_sessions_snapshot(fx, before, sizeof(before));

	expect_refused(fx, n1.jti, uid, GRACE_MS, T0 + 2000, OTPD_USER_INACTIVE);
	/* Inside s0's grace window, and outside it (a replay otherwise). */
	expect_refused(fx, s0.jti, uid, GRACE_MS, T0 + 2000, OTPD_USER_INACTIVE);
	expect_refused(fx, s0.jti, uid, GRACE_MS, T0 + 60000, OTPD_USER_INACTIVE);
	cli_sessions_snapshot(fx, after, sizeof(after));
	assert_string_equal(after, before);
	assert_int_equal(fx->reuses, 0);

	/* Reactivated: the session is still there. */
	assert_int_equal(cli(fx, "UPDATE users SET is_active = 1;", NULL, 0), 0);
	rotate_ok(fx->s, &n1, uid, &n2, GRACE_MS, T0 + 70000);
}

/* A user deleted with SQL (the store never deletes one). */
static void test_rotate_user_gone(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), t0 = session_of(10, T0);
	char before[8192], after[8192], sql[128];
	int64_t a, b;

	have_cli();
	a = login(fx, PHONE, &s0);
	b = login(fx, PHONE2, &t0);
	/* Deleted behind the store's back (foreign keys off): the records stay,
	 * and refer to no one. */
	snprintf(sql, sizeof(sql), "PRAGMA foreign_keys = OFF; DELETE FROM users WHERE id = %lld;",
	         (long long)a);
	assert_int_equal(cli(fx, sql, NULL, 0), 0);
	cli_sessions_snapshot(fx, before, sizeof(before));
	expect_refused(fx, s0.jti, a, GRACE_MS, T0 + 1000, OTPD_INVALID_TOKEN);
	cli_sessions_snapshot(fx, after, sizeof(after));
	assert_string_equal(after, before);

	/* Deleted properly: its records go with it (ON DELETE CASCADE). */
	snprintf(sql, sizeof(sql), "PRAGMA foreign_keys = ON; DELETE FROM users WHERE id = %lld;",
	         (long long)b);
	assert_int_equal(cli(fx, sql, NULL, 0), 0);
	assert_int_equal(cli_family_count(fx, &t0, ""), 0);
	expect_refused(fx, t0.jti, b, GRACE_MS, T0 + 1000, OTPD_INVALID_TOKEN);
}

/* ---- migrations from older files ---- */

/* A database left by an otpd that knew only version 1 (with a login in
 * it) is brought to the current schema, and its sessions keep working. */
static void test_migration_from_v1(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), n1 = session_of(2, T0 + 1000);
	struct store *s = NULL;
	struct store_rotate_result rr = untouched_rotate();
	char v1[160], url[200], *sql;
	char fresh[1024], upgraded[1024];
	int applied = UNTOUCHED;
	size_t len;

	/* Version 2 is the one that added rotation; a fresh database gets all. */
	assert_true(store_sqlite_migrations.count >= 2);
	assert_int_equal(fx->applied, (int)store_sqlite_migrations.count);
	have_cli();

	snprintf(v1, sizeof(v1), "%s/v1.db", fx->dir);
	len = strlen(store_sqlite_migrations.sql[0]) + 2048;
	sql = malloc(len);
	assert_non_null(sql);
	snprintf(sql, len,
	         "BEGIN;\n"
	         "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
	         " applied_at TEXT NOT NULL) STRICT;\n"
	         "%s"
	         "INSERT INTO schema_migrations VALUES (1, '2024-01-01T00:00:00.000Z');\n"
	         "INSERT INTO users (phone_number, username, email, created_at_ms)"
	         " VALUES ('" PHONE "', '989123456789', '989123456789@" DOMAIN "', %lld);\n"
	         "INSERT INTO refresh_tokens (jti, family, user_id, created_ms, expires_ms)"
	         " VALUES ('%s', '%s', 1, %lld, %lld);\n"
	         "INSERT INTO otp_codes (phone, otp_id, code_hash, created_ms, expires_ms,"
	         " attempts, state) VALUES ('+989120000007', 7, zeroblob(32), 1, 2, 3, 1);\n"
	         /* A record whose user was deleted with foreign keys off. */
	         "INSERT INTO refresh_tokens (jti, family, user_id, created_ms, expires_ms)"
	         " VALUES ('orphan', 'orphan', 999, 1, 2);\n"
	         "COMMIT;\n",
	         store_sqlite_migrations.sql[0], (long long)T0, s0.jti, s0.family,
	         (long long)T0, (long long)s0.expires_ms);
	assert_int_equal(cli_db(fx, v1, sql, NULL, 0), 0);
	free(sql);
	/* made by sqlite3 under the usual umask: 0644, which the store refuses */
	assert_int_equal(chmod(v1, 0600), 0);

	snprintf(url, sizeof(url), "sqlite:%s", v1);
	assert_int_equal(open_url(url, 1000, &s), OTPD_OK);
	assert_int_equal(store_migrate(s, &applied), OTPD_OK);
	assert_int_equal(applied, (int)store_sqlite_migrations.count - 1);
	applied = UNTOUCHED;
	assert_int_equal(store_migrate(s, &applied), OTPD_OK);
	assert_int_equal(applied, 0);

	/* The login recorded by version 1 (no access_jti) rotates, and the
	 * grace window hands out its successor with both jtis. */
	rr = rotate_ok(s, &s0, 1, &n1, GRACE_MS, T0 + 1000);
	rr = untouched_rotate();
	assert_int_equal(store_session_rotate(s, s0.jti, 1, &n1, GRACE_MS, T0 + 2000, &rr),
	                 OTPD_OK);
	assert_true(rr.replayed);
	assert_string_equal(rr.session.access_jti, n1.access_jti);
	store_close(s);

	/* Same columns and indexes as a database created fresh. */
	static const char *const schema =
		"SELECT (SELECT group_concat(c, ',') FROM (SELECT name || ':' || type"
		" || ':' || \"notnull\" || ':' || coalesce(dflt_value, '') || ':' || pk AS c"
		" FROM pragma_table_info('refresh_tokens') ORDER BY name)) || '|' ||"
		" (SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_schema"
		" WHERE type = 'index' AND tbl_name = 'refresh_tokens' ORDER BY name));";
	assert_int_equal(cli_db(fx, v1, schema, upgraded, sizeof(upgraded)), 0);
	assert_int_equal(cli(fx, schema, fresh, sizeof(fresh)), 0);
	assert_string_equal(upgraded, fresh);
	assert_non_null(strstr(fresh, "access_jti:TEXT"));
	assert_non_null(strstr(fresh, "rotated_ms:INTEGER"));
	assert_non_null(strstr(fresh, "replaced_by:TEXT"));
	assert_non_null(strstr(fresh, "refresh_tokens_expires"));

	/* A code row of version 1 kept every column through the copies of
	 * versions 3 and 4 (its otp_id is its id; it had no send row). */
	assert_int_equal(cli_db(fx, v1, "SELECT phone || ',' || id || ',' || length(code_hash)"
	                        " || ',' || created_ms || ',' || expires_ms || ',' || attempts"
	                        " || ',' || state || ',' || max_attempts || ','"
	                        " || coalesce(ended_ms, '-') FROM otp_codes;",
	                        upgraded, sizeof(upgraded)), 0);
	assert_string_equal(upgraded, "+989120000007,7,32,1,2,3,1,3,-");
	/* The orphan did not stop the upgrade (the copy checks foreign keys);
	 * it is gone, the live record is there. */
	assert_int_equal(cli_db(fx, v1, "SELECT group_concat(jti) FROM refresh_tokens"
	                        " WHERE user_id = 999;", upgraded, sizeof(upgraded)), 0);
	assert_string_equal(upgraded, "");
	assert_int_equal(cli_db(fx, v1, "PRAGMA foreign_key_check;", upgraded, sizeof(upgraded)), 0);
	assert_string_equal(upgraded, "");
}

/* ---- query plans ---- */

/* Every statement the store prepares (store/sqlite.c's table, not a copy
 * of it) builds no ephemeral table and sorts nothing: SQLite builds an
 * ephemeral index for `IN (a, b, c)` checks (the CHECK on state before
 * version 3) and a table for RETURNING, and a sorter for an ORDER BY that
 * no index gives.  And none but the bounded purges (and ping) scans a
 * table: the current code, the send window, the pending deliveries and the
 * stats range are index lookups.  A slow schema is a bug here.  Only the
 * session purge (`IN (SELECT ... LIMIT)`, the janitor's) may build one. */
static void test_hot_writes_without_ephemeral_tables(void **state)
{
	struct fixture *fx = *state;
	static const char *const tables[] = {"otp_codes", "stats_5m", "users", "refresh_tokens",
	                                     "audit_log"};
	const char *sql, *name;
	char buf[2048];
	sqlite3 *db = NULL;
	size_t i, checked = 0;

	assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	for (i = 0; (sql = store_sqlite_statement(i, &name)) != NULL; i++) {
		sqlite3_stmt *st = NULL;
		int writes = 0, ephemeral = 0, sorts = 0;
		bool is_write = !strncmp(sql, "INSERT", 6) || !strncmp(sql, "UPDATE", 6) ||
		                !strncmp(sql, "DELETE", 6);
		bool purge = strstr(name, "purge") != NULL;

		snprintf(buf, sizeof(buf), "EXPLAIN %s", sql);
		assert_int_equal(sqlite3_prepare_v2(db, buf, -1, &st, NULL), SQLITE_OK);
		while (sqlite3_step(st) == SQLITE_ROW) {
			const char *op = (const char *)sqlite3_column_text(st, 1);
			writes += op && strcmp(op, "OpenWrite") == 0;
			ephemeral += op && strcmp(op, "OpenEphemeral") == 0;
			sorts += op && strcmp(op, "SorterOpen") == 0;
		}
		sqlite3_finalize(st);
		if (is_write)
			assert_true(writes > 0); /* the program was read */
		/* The staff console's list of one user's records sorts them (the
		 * index on user_id gives them by jti): a few per login. */
		bool may_sort = strcmp(name, "list sessions of a user") == 0;
		if ((ephemeral && strcmp(name, "purge sessions") != 0 && !may_sort) ||
		    (sorts && !may_sort))
			fail_msg("builds an ephemeral table or sorts (%s): %s", name, sql);

		snprintf(buf, sizeof(buf), "EXPLAIN QUERY PLAN %s", sql);
		assert_int_equal(sqlite3_prepare_v2(db, buf, -1, &st, NULL), SQLITE_OK);
		while (sqlite3_step(st) == SQLITE_ROW) {
			const char *detail = (const char *)sqlite3_column_text(st, 3);

			if (!detail)
				continue;
			if (strstr(detail, "TEMP B-TREE") && !may_sort)
				fail_msg("sorts in a temporary b-tree (%s): %s", name, sql);
			for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]) && !purge; t++) {
				char scan[64];
				snprintf(scan, sizeof(scan), "SCAN %s", tables[t]);
				if (!strncmp(detail, scan, strlen(scan)) &&
				    (detail[strlen(scan)] == '\0' || detail[strlen(scan)] == ' '))
					fail_msg("scans %s (%s): %s", tables[t], name, sql);
			}
		}
		sqlite3_finalize(st);
		checked++;
	}
	assert_true(checked > 30);
	sqlite3_close(db);
}

/* The query plan of statement `name` (store/sqlite.c's table), every
 * detail line joined with ';'. */
static void query_plan(const struct fixture *fx, const char *name, char *out, size_t len)
{
	const char *sql = NULL, *n = NULL;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char buf[2048];
	size_t i, used = 0;

	for (i = 0; (sql = store_sqlite_statement(i, &n)) != NULL; i++)
		if (strcmp(n, name) == 0)
			break;
	if (!sql)
		fail_msg("no statement named '%s'", name);
	assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	snprintf(buf, sizeof(buf), "EXPLAIN QUERY PLAN %s", sql);
	assert_int_equal(sqlite3_prepare_v2(db, buf, -1, &st, NULL), SQLITE_OK);
	out[0] = '\0';
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *detail = (const char *)sqlite3_column_text(st, 3);
		int k = snprintf(out + used, len - used, "%s%s", used ? ";" : "",
		                 detail ? detail : "");

		assert_true(k >= 0 && (size_t)k < len - used);
		used += (size_t)k;
	}
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/* The staff console's statements go through the indexes: a number's codes
 * through otp_codes_phone (it holds the rowid: the cursor and the order
 * come with it), every number's through the primary key, a user's records
 * through refresh_tokens_user; the update and the revoke by key. */
static void test_console_plans(void **state)
{
	static const struct {
		const char *name, *plan;
	} want[] = {
		{"list codes of a number",
		 "SEARCH otp_codes USING INDEX otp_codes_phone (phone=? AND rowid<?)"},
		{"list codes", "SEARCH otp_codes USING INTEGER PRIMARY KEY (rowid<?)"},
		{"list sessions of a user",
		 "SEARCH refresh_tokens USING INDEX refresh_tokens_user (user_id=?);"
		 "USE TEMP B-TREE FOR ORDER BY"},
		{"update user", "SEARCH users USING INTEGER PRIMARY KEY (rowid=?)"},
		{"revoke sessions of a user",
		 "SEARCH refresh_tokens USING INDEX refresh_tokens_user (user_id=?)"},
		{"list audit entries", "SEARCH audit_log USING INTEGER PRIMARY KEY (rowid<?)"},
		{"list users",
		 "SEARCH users USING INTEGER PRIMARY KEY (rowid<?)"},
		{"list users by number",
		 "SEARCH users USING INDEX sqlite_autoindex_users_1 (phone_number=?)"},
		{"list users by username prefix",
		 "SEARCH users USING INDEX sqlite_autoindex_users_2 (username>? AND username<?)"},
		{"search codes by hash",
		 "SEARCH otp_codes USING INDEX otp_codes_phone (phone=?)"},
	};
	struct fixture *fx = *state;
	char plan[1024];

	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		query_plan(fx, want[i].name, plan, sizeof(plan));
		if (strcmp(plan, want[i].plan) != 0)
			fail_msg("%s: plan '%s', expected '%s'", want[i].name, plan, want[i].plan);
	}
	/* Not a scan either once the number has many codes and the table
	 * statistics say so (ANALYZE, as an operator may run it). */
	for (int i = 0; i < 300; i++) {
		char phone[OTP_PHONE_LEN + 1];

		gc_phone(7, i, phone);
		issue_ok(fx->s, &lenient, i % 3 ? phone : PHONE, i, T0 + i);
	}
	have_cli();
	assert_int_equal(cli(fx, "ANALYZE;", NULL, 0), 0);
	query_plan(fx, "list codes of a number", plan, sizeof(plan));
	assert_string_equal(plan, want[0].plan);
}

/* ---- a database another process holds locked ---- */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Another process (the sqlite3 shell) takes the write lock of the
 * fixture's database and keeps it until release_write_lock(). */
static FILE *hold_write_lock(const struct fixture *fx)
{
	char cmd[512], marker[160];
	FILE *shell;
	int64_t t;

	/* The shell takes the write lock, then says so by creating a file. */
	snprintf(marker, sizeof(marker), "%s/locked", fx->dir);
	unlink(marker);
	snprintf(cmd, sizeof(cmd), SQLITE_CLI " -batch '%s' > /dev/null", fx->path);
	shell = popen(cmd, "w");
	assert_non_null(shell);
	fprintf(shell, ".timeout 5000\nBEGIN IMMEDIATE;\n"
	               "INSERT INTO meta (name, value) VALUES ('held', x'00');\n"
	               ".system touch '%s'\n", marker);
	fflush(shell);
	for (t = mono_ms(); access(marker, F_OK) != 0; usleep(10000))
		assert_true(mono_ms() - t < 10000);
	return shell;
}

static void release_write_lock(FILE *shell)
{
	fprintf(shell, "ROLLBACK;\n.quit\n");
	assert_int_equal(pclose(shell), 0);
}

static void test_locked_is_unavailable(void **state)
{
	struct fixture *fx = *state;
	struct store *s = NULL;
	struct store_issue_result ir = {.otp_id = UNTOUCHED};
	struct store_verify_result vr = untouched_verify();
	struct store_user u;
	uint8_t a[32], got[32];
	FILE *shell;
	int64_t t;

	have_cli();
	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(open_url(fx->url, 100, &s), OTPD_OK);
	shell = hold_write_lock(fx);

	/* Every write waits busy_timeout (100 ms), then answers unavailable. */
	t = mono_ms();
	assert_int_equal(issue(s, &defaults, PHONE, 2, T0 + 1, &ir), OTPD_UNAVAILABLE);
	assert_true(mono_ms() - t >= 90);
	assert_true(mono_ms() - t < 5000);
	assert_int_equal(ir.otp_id, UNTOUCHED);
	assert_int_equal(verify(s, &defaults, PHONE, 1, T0 + 1, NULL, &vr),
	                 OTPD_UNAVAILABLE);
	assert_int_equal(vr.user.id, UNTOUCHED);
	assert_int_equal(store_otp_cancel(s, PHONE, 1, T0 + 1), OTPD_UNAVAILABLE);
	memset(a, 7, sizeof(a));
	assert_int_equal(store_secret_get_or_create(s, "k", a, 32, got, 32),
	                 OTPD_UNAVAILABLE);
	/* Readers do not wait for a writer (WAL). */
	assert_int_equal(store_ping(s), OTPD_OK);
	assert_int_equal(store_user_get(s, 1, &u), OTPD_NOT_FOUND);
	/* Logged once per failure, with the driver's words. */
	assert_true(log_contains(fx, "store.error"));
	assert_true(log_contains(fx, "database is locked"));

	release_write_lock(shell);

	/* Released: the same handle works again, and the code survived. */
	assert_int_equal(issue(s, &defaults, PHONE2, 3, T0 + 2, &ir), OTPD_OK);
	assert_int_equal(verify(s, &defaults, PHONE, 1, T0 + 3, NULL, &vr), OTPD_OK);
	store_close(s);
}

/* A batch that cannot commit (another process holds the lock past
 * busy_timeout) answers every job unavailable and records nothing; reads
 * meanwhile answer at once; afterwards the writer goes on. */
static void test_group_commit_batch_fails_whole(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0);
	struct gc_verify vs[GC_JOBS];
	char phones[GC_JOBS][OTP_PHONE_LEN + 1];
	pthread_t t[GC_JOBS];
	struct store *s = NULL;
	struct store_user u;
	atomic_int finished = 0;
	FILE *shell;
	int64_t uid;

	have_cli();
	uid = login(fx, PHONE, &s0);
	memset(vs, 0, sizeof(vs));
	for (int i = 0; i < GC_JOBS; i++) {
		gc_phone(200, i, phones[i]);
		issue_ok(fx->s, &lenient, phones[i], 10 + i, T0);
		vs[i].phone = phones[i];
		vs[i].seed = 10 + i;
		vs[i].finished = &finished;
	}
	assert_int_equal(open_url(fx->url, 1500, &s), OTPD_OK);
	for (int i = 0; i < GC_JOBS; i++)
		vs[i].s = s;

	shell = hold_write_lock(fx);
	for (int i = 0; i < GC_JOBS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, gc_verify_one, &vs[i]), 0);
	usleep(100000);
	/* The writer waits for the lock (1.5 s); readers do not wait for it. */
	assert_int_equal(store_ping(s), OTPD_OK);
	assert_int_equal(store_user_get(s, uid, &u), OTPD_OK);
	assert_string_equal(u.phone_number, PHONE);
	assert_int_equal(atomic_load(&finished), 0);
	for (int i = 0; i < GC_JOBS; i++)
		pthread_join(t[i], NULL);
	release_write_lock(shell);

	for (int i = 0; i < GC_JOBS; i++) {
		assert_int_equal(vs[i].status, OTPD_UNAVAILABLE);
		assert_int_equal(vs[i].vr.user.id, UNTOUCHED);
	}
	/* Nothing recorded: no user, every code unused, no attempt counted,
	 * no login in the stats (the one before). */
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM users;"), 1);
	assert_int_equal(cli_int(fx, "SELECT sum(logins) FROM stats_5m;"), 1);
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM otp_codes"
	                             " WHERE phone LIKE '+98912%' AND state = 0"
	                             " AND attempts = 0;"),
	                 GC_JOBS);
	/* The same handle works again: the same logins go through now. */
	finished = 0;
	for (int i = 0; i < GC_JOBS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, gc_verify_one, &vs[i]), 0);
	for (int i = 0; i < GC_JOBS; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(vs[i].status, OTPD_OK);
		assert_true(vs[i].vr.is_new_user);
	}
	store_close(s);
	assert_int_equal(cli_int(fx, "SELECT sum(logins) FROM stats_5m;"), 1 + GC_JOBS);
}

/* Delivery statuses when the write lock is held past busy_timeout: a set
 * fails whole (nothing of it), a fire-and-forget message id fails on its
 * own (logged, nobody told), the pending read answers at once. */
static void test_sms_delivery_locked(void **state)
{
	struct fixture *fx = *state;
	struct store_delivery_status st[2];
	struct store *s = NULL;
	FILE *shell;
	int64_t a, b, c;

	have_cli();
	a = issue_ok(fx->s, &lenient, PHONE, 1, T0);
	b = issue_ok(fx->s, &lenient, PHONE2, 2, T0 + 1000);
	c = issue_ok(fx->s, &lenient, "+989121112233", 3, T0 + 2000);
	assert_int_equal(store_otp_sms_accepted_start(fx->s, a, 900001, T0 + 100, NULL, NULL),
	                 OTPD_OK);
	assert_int_equal(store_otp_sms_accepted_start(fx->s, b, 900002, T0 + 1100, NULL, NULL),
	                 OTPD_OK);
	st[0] = (struct store_delivery_status){.otp_id = a, .status = 11, .now_ms = T0 + 6000};
	st[1] = (struct store_delivery_status){.otp_id = b, .status = 10, .now_ms = T0 + 5000};
	assert_int_equal(store_otp_delivery_set(fx->s, 2, st), OTPD_OK); /* after both ids */
	expect_pending(fx->s, T0 - 1, 8, 0, NULL, NULL);

	/* Another handle whose writes wait 100 ms for a lock another process
	 * holds. */
	assert_int_equal(open_url(fx->url, 100, &s), OTPD_OK);
	shell = hold_write_lock(fx);
	assert_int_equal(store_otp_sms_accepted_start(s, c, 900003, T0 + 2100, NULL, NULL), OTPD_OK);
	st[0] = (struct store_delivery_status){.otp_id = c, .status = 10, .now_ms = T0 + 8000};
	st[1] = (struct store_delivery_status){.otp_id = a, .status = 4, .now_ms = T0 + 8000};
	assert_int_equal(store_otp_delivery_set(s, 2, st), OTPD_UNAVAILABLE);
	expect_pending(s, T0 - 1, 8, 0, NULL, NULL);
	release_write_lock(shell);
	store_close(s);
	assert_true(log_contains(fx, "database is locked"));
	expect_cli(fx, "SELECT group_concat(r, ';') FROM (SELECT coalesce(sms_message_id, '-')"
	               " || ',' || coalesce(sms_status, '-') AS r FROM otp_codes ORDER BY id);",
	           "900001,11;900002,10;-,-");
	/* The codes themselves are untouched by all of it. */
	expect_cli(fx, "SELECT group_concat(state) FROM (SELECT state FROM otp_codes ORDER BY id);",
	           "0,0,0");
}

/* ---- from version 3: codes and sends become one history ---- */

static void test_migration_from_v3(void **state)
{
	struct fixture *fx = *state;
	struct store *s = NULL;
	struct store_issue_result ir = {.otp_id = UNTOUCHED};
	struct store_verify_result vr = untouched_verify();
	uint8_t h3[OTP_HASH_LEN];
	char v3[160], url[200], hex[2 * OTP_HASH_LEN + 1], *sql;
	char fresh[4096], upgraded[4096];
	int applied = UNTOUCHED;
	size_t len;

	assert_true(store_sqlite_migrations.count >= 4);
	have_cli();
	hash_of(3, h3);
	for (int i = 0; i < OTP_HASH_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", h3[i]);

	/* What otpd at version 3 leaves: PHONE sent three times in the last
	 * 20 s (two sends whose codes the next replaced: otp_sends rows
	 * without a code), its current code with one wrong guess; PHONE2's
	 * code used; a code of a database filled by hand without its send;
	 * the AUTOINCREMENT counter past the rows (pruned sends). */
	snprintf(v3, sizeof(v3), "%s/v3.db", fx->dir);
	len = 8192;
	for (int i = 0; i < 3; i++)
		len += strlen(store_sqlite_migrations.sql[i]);
	sql = malloc(len);
	assert_non_null(sql);
	snprintf(sql, len,
	         "BEGIN;\n"
	         "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
	         " applied_at TEXT NOT NULL) STRICT;\n"
	         "%s%s%s"
	         "INSERT INTO schema_migrations VALUES (1, 'x'), (2, 'x'), (3, 'x');\n"
	         "INSERT INTO otp_sends (id, phone, sent_ms) VALUES"
	         " (41, '" PHONE "', %lld), (42, '" PHONE "', %lld), (43, '" PHONE2 "', %lld),"
	         " (44, '" PHONE "', %lld);\n"
	         "INSERT INTO otp_codes (phone, otp_id, code_hash, created_ms, expires_ms,"
	         " attempts, state) VALUES ('" PHONE "', 44, x'%s', %lld, %lld, 1, 0),"
	         " ('" PHONE2 "', 43, zeroblob(32), %lld, %lld, 0, 1),"
	         " ('+989120000007', 7, zeroblob(32), 1, 2, 3, 2);\n"
	         "UPDATE sqlite_sequence SET seq = 50 WHERE name = 'otp_sends';\n"
	         "COMMIT;\n",
	         store_sqlite_migrations.sql[0], store_sqlite_migrations.sql[1], store_sqlite_migrations.sql[2],
	         (long long)T0, (long long)(T0 + 10000), (long long)(T0 + 15000),
	         (long long)(T0 + 20000), hex, (long long)(T0 + 20000), (long long)(T0 + 320000),
	         (long long)(T0 + 15000), (long long)(T0 + 315000));
	assert_int_equal(cli_db(fx, v3, sql, NULL, 0), 0);
	free(sql);
	assert_int_equal(cli_db(fx, v3, "SELECT seq FROM sqlite_sequence WHERE name = 'otp_sends';",
	                        upgraded, sizeof(upgraded)), 0);
	assert_string_equal(upgraded, "50");
	/* made by sqlite3 under the usual umask: 0644, which the store refuses */
	assert_int_equal(chmod(v3, 0600), 0);

	snprintf(url, sizeof(url), "sqlite:%s", v3);
	assert_int_equal(open_url(url, 1000, &s), OTPD_OK);
	assert_int_equal(store_migrate(s, &applied), OTPD_OK);
	assert_int_equal(applied, (int)store_sqlite_migrations.count - 3);

	/* Every send is a code, by its id: the two without one are replaced
	 * (ended by the next send) with a hash that never matches; the
	 * current codes kept their id and columns. */
	assert_int_equal(cli_db(fx, v3, "SELECT group_concat(r, ';') FROM (SELECT id || ',' || phone"
	                        " || ',' || state || ',' || (code_hash = zeroblob(32)) || ','"
	                        " || (created_ms - 1700000000000) || ',' || (expires_ms - 1700000000000)"
	                        " || ',' || coalesce(ended_ms - 1700000000000, '-') || ',' || attempts"
	                        " || '/' || max_attempts || ',' || coalesce(sms_message_id, '-') AS r"
	                        " FROM otp_codes ORDER BY id);", upgraded, sizeof(upgraded)), 0);
	assert_string_equal(upgraded,
	                    "7,+989120000007,2,1,-1699999999999,-1699999999998,-,3/3,-;"
	                    "41," PHONE ",3,1,0,0,10000,0/3,-;"
	                    "42," PHONE ",3,1,10000,10000,20000,0/3,-;"
	                    "43," PHONE2 ",1,1,15000,315000,-,0/3,-;"
	                    "44," PHONE ",0,0,20000,320000,-,1/3,-");
	assert_int_equal(cli_db(fx, v3, "SELECT count(*) FROM sqlite_schema WHERE name = 'otp_sends'"
	                        " OR name = 'otp_codes_v4';", upgraded, sizeof(upgraded)), 0);
	assert_string_equal(upgraded, "0");

	/* The send limit holds across the upgrade: three sends in the window
	 * (two of them now replaced codes), the oldest at T0. */
	assert_int_equal(issue(s, &defaults, PHONE, 5, T0 + 30000, &ir), OTPD_OTP_RATE_LIMITED);
	assert_int_equal(ir.retry_after_s, 90);
	/* The current code kept its attempt, and works. */
	expect_invalid(s, PHONE, 9, T0 + 31000, 1);
	assert_int_equal(verify(s, &defaults, PHONE, 3, T0 + 32000, NULL, &vr), OTPD_OK);
	assert_true(vr.is_new_user);
	/* New ids continue after the old counter. */
	ir.otp_id = UNTOUCHED;
	assert_int_equal(issue(s, &defaults, PHONE2, 6, T0 + 33000, &ir), OTPD_OK);
	assert_int_equal(ir.otp_id, 51);
	store_close(s);

	/* Same columns and indexes as a database created fresh; one counter
	 * for the codes. */
	static const char *const schema =
		"SELECT (SELECT group_concat(c, ',') FROM (SELECT t.name || '.' || c.name || ':'"
		" || c.type || ':' || c.\"notnull\" || ':' || coalesce(c.dflt_value, '') || ':' || c.pk"
		" AS c FROM sqlite_schema t, pragma_table_info(t.name) c WHERE t.type = 'table'"
		" ORDER BY t.name, c.name)) || '|' || (SELECT group_concat(n, ',') FROM (SELECT"
		" name || '=' || coalesce(sql, '') AS n FROM sqlite_schema WHERE type = 'index'"
		" ORDER BY name));";
	assert_int_equal(cli_db(fx, v3, schema, upgraded, sizeof(upgraded)), 0);
	assert_int_equal(cli(fx, schema, fresh, sizeof(fresh)), 0);
	assert_string_equal(upgraded, fresh);
	assert_non_null(strstr(fresh, "otp_codes.max_attempts:INTEGER:1"));
	assert_non_null(strstr(fresh, "stats_5m.wrong_guesses:INTEGER"));
	assert_non_null(strstr(fresh, "otp_codes_phone="));
	assert_null(strstr(fresh, "otp_sends"));
	assert_int_equal(cli_db(fx, v3, "SELECT group_concat(name || '=' || seq) FROM"
	                        " (SELECT name, seq FROM sqlite_sequence ORDER BY name);",
	                        upgraded, sizeof(upgraded)), 0);
	assert_string_equal(upgraded, "otp_codes=51,users=1");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_open_urls),
		T(test_migrate_records),
		T(test_memory_url),
		T(test_files_private),
		T(test_shared_file_refused),
		T(test_session_columns),
		T(test_rotate_inactive_user),
		T(test_rotate_user_gone),
		T(test_migration_from_v1),
		T(test_hot_writes_without_ephemeral_tables),
		T(test_console_plans),
		T(test_locked_is_unavailable),
		T(test_group_commit_batch_fails_whole),
		T(test_sms_delivery_locked),
		T(test_migration_from_v3),
	};

	return cmocka_run_group_tests_name("store: the sqlite dialect", tests, NULL, NULL);
}
