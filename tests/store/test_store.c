/* The store conformance suite (store.h, docs/API.md §3): every operation
 * and rule, on a temporary SQLite file.  The races run on one store handle
 * (threads of one node) and on two handles of the same file (two nodes).
 *
 * Only store/sqlite.c may include the driver, so where a test must reach
 * under the store (deactivate a user, count session rows, hold the write
 * lock from another process) it runs the sqlite3 command-line shell; those
 * tests fail when /usr/bin/sqlite3 is missing. */
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store/backend.h" /* the migrations: this suite is the store's own */
#include "store/store.h"

#define T0 1700000000000LL /* an arbitrary "now", epoch milliseconds */
#define SQLITE_CLI "/usr/bin/sqlite3"
#define DOMAIN "temp.pilito.com"
#define PHONE "+989123456789"
#define PHONE2 "+989351112233"
#define UNTOUCHED (-12345)

/* The contract's defaults (docs/API.md §1): OTP_EXPIRY_TIME 300,
 * OTP_MAX_ATTEMPTS 3, OTP_SEND_LIMIT 3, OTP_SEND_WINDOW 120. */
static const struct otp_policy defaults = {
	.expiry_ms = 300000,
	.max_attempts = 3,
	.send_limit = 3,
	.send_window_ms = 120000,
};

/* No limit worth mentioning: for tests about something else. */
static const struct otp_policy lenient = {
	.expiry_ms = 300000,
	.max_attempts = 3,
	.send_limit = 1000000,
	.send_window_ms = 120000,
};

struct fixture {
	char dir[64];
	char path[128];
	char url[160];
	char log[128];
	int log_fd;
	int applied; /* by the first migrate */
	struct store *s;
	int reuses;  /* refusals that reported a reuse (expect_refused) */
};

/* A stand-in for a code's hash: distinct seeds, distinct hashes. */
static void hash_of(int seed, uint8_t ret[OTP_HASH_LEN])
{
	uint32_t u = (uint32_t)seed;

	for (int i = 0; i < OTP_HASH_LEN; i++)
		ret[i] = (uint8_t)(i * 7 + 1);
	for (int i = 0; i < 4; i++)
		ret[i] = (uint8_t)(u >> (8 * i));
}

/* The shell is installed by tools/deps.sh: a test that needs it fails
 * without it, it is never skipped. */
static bool have_cli(void)
{
	if (access(SQLITE_CLI, X_OK) != 0)
		fail_msg("%s is missing (tools/deps.sh installs sqlite3)", SQLITE_CLI);
	return true;
}

static void remove_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char p[512];

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

/* store_open() with a busy timeout and the default options; a refusal as
 * configuration is logged (err NULL). */
static enum otpd_status open_url(const char *url, int busy_timeout_ms, struct store **ret)
{
	struct store_options opt = {.busy_timeout_ms = busy_timeout_ms};

	return store_open(url, &opt, NULL, 0, ret);
}

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	strcpy(fx->dir, "/tmp/otpd-store-XXXXXX");
	if (!mkdtemp(fx->dir)) {
		free(fx);
		return -1;
	}
	snprintf(fx->path, sizeof(fx->path), "%s/otpd.db", fx->dir);
	snprintf(fx->url, sizeof(fx->url), "sqlite:%s", fx->path);
	snprintf(fx->log, sizeof(fx->log), "%s/log", fx->dir);
	/* Store errors go to a file the tests can read. */
	fx->log_fd = open(fx->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (fx->log_fd < 0)
		return -1;
	log_set_fd(fx->log_fd);
	if (open_url(fx->url, 10000, &fx->s) != OTPD_OK ||
	    store_migrate(fx->s, &fx->applied) != OTPD_OK)
		return -1;
	*state = fx;
	return 0;
}

static bool log_contains(const struct fixture *fx, const char *needle)
{
	char buf[65536];
	FILE *f = fopen(fx->log, "r");
	size_t n;

	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, needle) != NULL;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	int rc = 0;

	store_close(fx->s);
	log_set_fd(2);
	close(fx->log_fd);
	/* Phone numbers reach the log only masked (docs/API.md §4). */
	if (log_contains(fx, "9123456789") || log_contains(fx, "9351112233")) {
		fprintf(stderr, "an unmasked phone number was logged (%s)\n", fx->log);
		rc = -1;
	} else {
		remove_dir(fx->dir);
	}
	free(fx);
	return rc;
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

static enum otpd_status issue(struct store *s, const struct otp_policy *p,
                              const char *phone, int seed, int64_t now_ms,
                              struct store_issue_result *ret)
{
	uint8_t h[OTP_HASH_LEN];

	hash_of(seed, h);
	return store_otp_issue(s, p, phone, h, now_ms, ret);
}

static enum otpd_status verify(struct store *s, const struct otp_policy *p,
                               const char *phone, int seed, int64_t now_ms,
                               const struct store_session *session,
                               struct store_verify_result *ret)
{
	uint8_t h[OTP_HASH_LEN];

	hash_of(seed, h);
	return store_otp_verify(s, p, phone, h, DOMAIN, session, now_ms, ret);
}

static struct store_verify_result untouched_verify(void)
{
	struct store_verify_result r;

	memset(&r, 0, sizeof(r));
	r.remaining_attempts = UNTOUCHED;
	r.user.id = UNTOUCHED;
	return r;
}

static int64_t issue_ok(struct store *s, const struct otp_policy *p,
                        const char *phone, int seed, int64_t now_ms)
{
	struct store_issue_result ir = {.otp_id = UNTOUCHED};

	assert_int_equal(issue(s, p, phone, seed, now_ms, &ir), OTPD_OK);
	assert_true(ir.otp_id > 0);
	return ir.otp_id;
}

static void expect_invalid(struct store *s, const char *phone, int seed,
                           int64_t now_ms, int remaining)
{
	struct store_verify_result vr = untouched_verify();

	assert_int_equal(verify(s, &defaults, phone, seed, now_ms, NULL, &vr),
	                 OTPD_INVALID_CODE);
	assert_int_equal(vr.remaining_attempts, remaining);
}

/* A status that carries no data leaves ret untouched (STYLE.md). */
static void expect_plain(struct store *s, const char *phone, int seed,
                         int64_t now_ms, enum otpd_status want)
{
	struct store_verify_result vr = untouched_verify();

	assert_int_equal(verify(s, &defaults, phone, seed, now_ms, NULL, &vr), want);
	assert_int_equal(vr.remaining_attempts, UNTOUCHED);
	assert_int_equal(vr.user.id, UNTOUCHED);
}

/* ---- open, migrate, ping ---- */

static void test_open_urls(void **state)
{
	struct fixture *fx = *state;
	struct store *sentinel = (struct store *)&fx; /* any non-NULL value */
	struct store *s = sentinel;
	char url[300], garbage[200];
	int fd;

	assert_int_equal(open_url("postgres://u:p@localhost:5432/otpd", 100, &s),
	                 OTPD_INTERNAL);
	assert_int_equal(open_url("postgresql://localhost/otpd", 100, &s),
	                 OTPD_INTERNAL);
	assert_true(log_contains(fx, "PostgreSQL store not built yet"));
	assert_false(log_contains(fx, "u:p@")); /* a password in the URL */
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

static void test_migrate_idempotent(void **state)
{
	struct fixture *fx = *state;
	int applied = UNTOUCHED;

	assert_true(fx->applied >= 1);
	assert_int_equal(store_migrate(fx->s, &applied), OTPD_OK);
	assert_int_equal(applied, 0);
	assert_int_equal(store_ping(fx->s), OTPD_OK);

	store_close(fx->s);
	fx->s = NULL;
	assert_int_equal(open_url(fx->url, 1000, &fx->s), OTPD_OK);
	applied = UNTOUCHED;
	assert_int_equal(store_migrate(fx->s, &applied), OTPD_OK);
	assert_int_equal(applied, 0);
	if (have_cli()) {
		assert_int_equal(cli_int(fx, "SELECT count(*) FROM schema_migrations;"),
		                 fx->applied);
		/* The connection settings: WAL, kept in the file. */
		char out[32];
		assert_int_equal(cli(fx, "PRAGMA journal_mode;", out, sizeof(out)), 0);
		assert_string_equal(out, "wal");
	}
}

static void test_not_migrated(void **state)
{
	struct fixture *fx = *state;
	struct store *s = NULL;
	struct store_issue_result ir = {.otp_id = UNTOUCHED};
	char url[200];

	/* A store opened on an empty file answers ping, and refuses the
	 * operations until it is migrated. */
	snprintf(url, sizeof(url), "sqlite:%s/empty.db", fx->dir);
	assert_int_equal(open_url(url, 100, &s), OTPD_OK);
	assert_int_equal(store_ping(s), OTPD_OK);
	assert_int_equal(issue(s, &defaults, PHONE, 1, T0, &ir), OTPD_INTERNAL);
	assert_int_equal(ir.otp_id, UNTOUCHED);
	store_close(s);
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
	store_close(s);
}

/* ---- secrets ---- */

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

static void test_secret_get_or_create(void **state)
{
	struct fixture *fx = *state;
	uint8_t a[32], b[32], got[32], small[16];

	memset(a, 0xa1, sizeof(a));
	memset(b, 0xb2, sizeof(b));
	assert_int_equal(store_secret_get_or_create(fx->s, "secret_key", a, 32, got, 32),
	                 OTPD_OK);
	assert_memory_equal(got, a, 32);
	/* The first value stays. */
	assert_int_equal(store_secret_get_or_create(fx->s, "secret_key", b, 32, got, 32),
	                 OTPD_OK);
	assert_memory_equal(got, a, 32);
	/* Another name is another secret. */
	assert_int_equal(store_secret_get_or_create(fx->s, "other", b, 32, got, 32),
	                 OTPD_OK);
	assert_memory_equal(got, b, 32);
	/* A stored value of another length is refused, ret untouched. */
	memset(small, 0x5a, sizeof(small));
	assert_int_equal(store_secret_get_or_create(fx->s, "secret_key", small, 16,
	                                            small, 16),
	                 OTPD_INTERNAL);
	for (size_t i = 0; i < sizeof(small); i++)
		assert_int_equal(small[i], 0x5a);
	/* ret_len must equal len. */
	assert_int_equal(store_secret_get_or_create(fx->s, "x", a, 32, got, 16),
	                 OTPD_INTERNAL);
}

/* ---- send and verify ---- */

static void test_login_creates_user_once(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	struct store_user u;
	int64_t id1, id2;

	id1 = issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(verify(fx->s, &defaults, PHONE, 1, T0 + 1000, NULL, &vr),
	                 OTPD_OK);
	assert_true(vr.is_new_user);
	assert_true(vr.user.id > 0);
	/* docs/API.md §3, the example user. */
	assert_string_equal(vr.user.phone_number, PHONE);
	assert_string_equal(vr.user.username, "989123456789");
	assert_string_equal(vr.user.email, "989123456789@temp.pilito.com");
	assert_false(vr.user.has_first_name);
	assert_false(vr.user.has_last_name);
	assert_string_equal(vr.user.first_name, "");
	assert_string_equal(vr.user.last_name, "");
	assert_true(vr.user.is_active);
	assert_false(vr.user.is_staff);

	assert_int_equal(store_user_get(fx->s, vr.user.id, &u), OTPD_OK);
	assert_memory_equal(&u, &vr.user, sizeof(u));

	/* The second login finds the same user. */
	int64_t user_id = vr.user.id;
	id2 = issue_ok(fx->s, &defaults, PHONE, 2, T0 + 2000);
	assert_true(id2 > id1);
	vr = untouched_verify();
	assert_int_equal(verify(fx->s, &defaults, PHONE, 2, T0 + 3000, NULL, &vr),
	                 OTPD_OK);
	assert_false(vr.is_new_user);
	assert_int_equal(vr.user.id, user_id);

	/* Another number, another user. */
	issue_ok(fx->s, &defaults, PHONE2, 3, T0);
	vr = untouched_verify();
	assert_int_equal(verify(fx->s, &defaults, PHONE2, 3, T0, NULL, &vr), OTPD_OK);
	assert_true(vr.is_new_user);
	assert_true(vr.user.id != user_id);
	assert_string_equal(vr.user.username, "989351112233");

	if (have_cli())
		assert_int_equal(cli_int(fx, "SELECT last_login_ms FROM users"
		                             " WHERE phone_number = '" PHONE "';"),
		                 T0 + 3000);
}

static void test_user_get_not_found(void **state)
{
	struct fixture *fx = *state;
	struct store_user u;

	u.id = UNTOUCHED;
	assert_int_equal(store_user_get(fx->s, 424242, &u), OTPD_NOT_FOUND);
	assert_int_equal(u.id, UNTOUCHED);
}

static void test_never_sent(void **state)
{
	struct fixture *fx = *state;

	expect_plain(fx->s, PHONE, 1, T0, OTPD_OTP_EXPIRED);
}

static void test_wrong_guesses(void **state)
{
	struct fixture *fx = *state;

	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	/* OTP_MAX_ATTEMPTS 3: each wrong guess uses one. */
	expect_invalid(fx->s, PHONE, 9, T0 + 1, 2);
	expect_invalid(fx->s, PHONE, 9, T0 + 2, 1);
	expect_invalid(fx->s, PHONE, 8, T0 + 3, 0);
	/* None left: even the right code is refused now. */
	expect_plain(fx->s, PHONE, 1, T0 + 4, OTPD_TOO_MANY_ATTEMPTS);
	expect_plain(fx->s, PHONE, 9, T0 + 5, OTPD_TOO_MANY_ATTEMPTS);
	/* The attempts belong to that phone's code only. */
	issue_ok(fx->s, &defaults, PHONE2, 2, T0);
	expect_invalid(fx->s, PHONE2, 9, T0 + 1, 2);
	/* A new code starts with all its attempts. */
	issue_ok(fx->s, &defaults, PHONE, 3, T0 + 10);
	expect_invalid(fx->s, PHONE, 9, T0 + 11, 2);
	struct store_verify_result vr = untouched_verify();
	assert_int_equal(verify(fx->s, &defaults, PHONE, 3, T0 + 12, NULL, &vr),
	                 OTPD_OK);
}

static void test_expiry(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();

	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	/* OTP_EXPIRY_TIME 300 s: past it, no usable code, and a guess there
	 * uses no attempt. */
	expect_plain(fx->s, PHONE, 9, T0 + 300000 + 1, OTPD_OTP_EXPIRED);
	expect_plain(fx->s, PHONE, 1, T0 + 300000 + 1, OTPD_OTP_EXPIRED);
	expect_plain(fx->s, PHONE, 1, T0 + 3600000, OTPD_OTP_EXPIRED);
	/* Just before it, the same code works (nothing was used up). */
	assert_int_equal(verify(fx->s, &defaults, PHONE, 1, T0 + 299999, NULL, &vr),
	                 OTPD_OK);
}

static void test_used_code_stays_used(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();

	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(verify(fx->s, &defaults, PHONE, 1, T0 + 1, NULL, &vr), OTPD_OK);
	expect_plain(fx->s, PHONE, 1, T0 + 2, OTPD_OTP_EXPIRED);
	expect_plain(fx->s, PHONE, 9, T0 + 3, OTPD_OTP_EXPIRED);
}

/* A new send replaces the code (docs/API.md §3: every earlier unused code
 * stops working).  The store keeps every code, but judges only the current
 * one (the newest), so an earlier code presented afterwards is a wrong
 * guess against the current one: invalid_code, and it uses one of the new
 * code's attempts. */
static void test_new_code_replaces_old(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	int64_t id1, id2;

	id1 = issue_ok(fx->s, &defaults, PHONE, 1, T0);
	id2 = issue_ok(fx->s, &defaults, PHONE, 2, T0 + 1000);
	assert_true(id2 > id1);
	expect_invalid(fx->s, PHONE, 1, T0 + 2000, 2);
	assert_int_equal(verify(fx->s, &defaults, PHONE, 2, T0 + 3000, NULL, &vr),
	                 OTPD_OK);
	/* And the replaced code never comes back. */
	expect_plain(fx->s, PHONE, 1, T0 + 4000, OTPD_OTP_EXPIRED);
	if (!have_cli())
		return;
	/* The old code is kept, replaced at the second send, with no attempt
	 * of its own: the guess was counted on the new code, then used. */
	assert_int_equal(cli_intf(fx, "SELECT count(*) FROM otp_codes WHERE id = %lld"
	                              " AND state = 3 AND ended_ms = %lld AND attempts = 0;",
	                          (long long)id1, (long long)(T0 + 1000)), 1);
	assert_int_equal(cli_intf(fx, "SELECT count(*) FROM otp_codes WHERE id = %lld"
	                              " AND state = 1 AND ended_ms = %lld AND attempts = 1;",
	                          (long long)id2, (long long)(T0 + 3000)), 1);
}

/* The admin's statuses of a number's codes, oldest first, as of now_ms
 * (they derive from the columns: migration 4). */
static void code_statuses(const struct fixture *fx, const char *phone, int64_t now_ms,
                          char *out, size_t len)
{
	char sql[1024];

	snprintf(sql, sizeof(sql),
	         "SELECT group_concat(st, ',') FROM (SELECT CASE"
	         " WHEN state = 1 THEN 'used' WHEN state = 2 THEN 'cancelled'"
	         " WHEN state = 3 THEN 'replaced' WHEN attempts >= max_attempts THEN 'exhausted'"
	         " WHEN expires_ms <= %lld THEN 'expired' ELSE 'valid' END || ':'"
	         " || attempts || '/' || max_attempts || ':' || coalesce(ended_ms - %lld, '-')"
	         " AS st FROM otp_codes WHERE phone = '%s' ORDER BY id);",
	         (long long)now_ms, (long long)T0, phone);
	assert_int_equal(cli(fx, sql, out, len), 0);
}

/* Every code issued is kept, with what became of it; the current code is
 * the newest; an earlier one never verifies again. */
static void test_history_every_code(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	int64_t ids[6];
	char got[1024];

	have_cli();
	/* Sends 200 s apart: OTP_SEND_LIMIT 3 per 120 s never refuses. */
	ids[0] = issue_ok(fx->s, &defaults, PHONE, 1, T0);
	expect_invalid(fx->s, PHONE, 9, T0 + 1000, 2);
	ids[1] = issue_ok(fx->s, &defaults, PHONE, 2, T0 + 200000);        /* replaces 0 */
	assert_int_equal(store_otp_cancel(fx->s, PHONE, ids[1], T0 + 201000), OTPD_OK);
	ids[2] = issue_ok(fx->s, &defaults, PHONE, 3, T0 + 400000);
	expect_invalid(fx->s, PHONE, 9, T0 + 401000, 2);
	expect_invalid(fx->s, PHONE, 9, T0 + 402000, 1);
	expect_invalid(fx->s, PHONE, 9, T0 + 403000, 0);                   /* exhausted */
	expect_plain(fx->s, PHONE, 3, T0 + 404000, OTPD_TOO_MANY_ATTEMPTS);
	ids[3] = issue_ok(fx->s, &defaults, PHONE, 4, T0 + 600000);
	assert_int_equal(verify(fx->s, &defaults, PHONE, 4, T0 + 601000, NULL, &vr), OTPD_OK);
	ids[4] = issue_ok(fx->s, &defaults, PHONE, 5, T0 + 800000);        /* left to expire */
	ids[5] = issue_ok(fx->s, &defaults, PHONE, 6, T0 + 1200000);
	for (int i = 1; i < 6; i++)
		assert_true(ids[i] > ids[i - 1]);

	/* What an admin sees: a code over already (cancelled, exhausted,
	 * used, expired) keeps its own end when a newer send comes; a valid
	 * one becomes replaced. */
	code_statuses(fx, PHONE, T0 + 1201000, got, sizeof(got));
	assert_string_equal(got, "replaced:1/3:200000,cancelled:0/3:201000,"
	                         "exhausted:3/3:403000,used:0/3:601000,"
	                         "expired:0/3:-,valid:0/3:-");

	/* The current code is the newest: no earlier code verifies, each is
	 * a wrong guess against it. */
	for (int seed = 1; seed <= 2; seed++)
		expect_invalid(fx->s, PHONE, seed, T0 + 1202000 + seed, 3 - seed);
	vr = untouched_verify();
	assert_int_equal(verify(fx->s, &defaults, PHONE, 6, T0 + 1210000, NULL, &vr), OTPD_OK);
	assert_false(vr.is_new_user);
	code_statuses(fx, PHONE, T0 + 1211000, got, sizeof(got));
	assert_non_null(strstr(got, ",used:2/3:1210000"));
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM otp_codes;"), 6);
}

/* A code is judged with the attempts it was issued with, unless the
 * policy allows fewer now. */
static void test_max_attempts_of_the_code(void **state)
{
	struct fixture *fx = *state;
	const struct otp_policy five = {.expiry_ms = 300000, .max_attempts = 5,
	                                .send_limit = 3, .send_window_ms = 120000};
	struct store_verify_result vr = untouched_verify();

	/* Issued with 3, verified under 5: 3. */
	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(verify(fx->s, &five, PHONE, 9, T0 + 1, NULL, &vr), OTPD_INVALID_CODE);
	assert_int_equal(vr.remaining_attempts, 2);
	/* Issued with 5, verified under 3: 3 (lowering applies at once). */
	issue_ok(fx->s, &five, PHONE2, 2, T0);
	expect_invalid(fx->s, PHONE2, 9, T0 + 1, 2);
	if (have_cli())
		expect_cli(fx, "SELECT group_concat(max_attempts) FROM"
		               " (SELECT max_attempts FROM otp_codes ORDER BY id);", "3,5");
}

static void test_cancel(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	int64_t id1, id2, id3;

	/* A code whose SMS was not accepted never verifies. */
	id1 = issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(store_otp_cancel(fx->s, PHONE, id1, T0 + 500), OTPD_OK);
	expect_plain(fx->s, PHONE, 1, T0 + 1, OTPD_OTP_EXPIRED);

	/* Cancelling a code a newer one replaced leaves the newer one alone. */
	id2 = issue_ok(fx->s, &defaults, PHONE2, 2, T0);
	id3 = issue_ok(fx->s, &defaults, PHONE2, 3, T0 + 1);
	assert_int_equal(store_otp_cancel(fx->s, PHONE2, id2, T0 + 2), OTPD_OK);
	/* The wrong phone for an id changes nothing either. */
	assert_int_equal(store_otp_cancel(fx->s, PHONE, id3, T0 + 2), OTPD_OK);
	assert_int_equal(store_otp_cancel(fx->s, "+989000000000", id3, T0 + 2), OTPD_OK);
	assert_int_equal(verify(fx->s, &defaults, PHONE2, 3, T0 + 2, NULL, &vr),
	                 OTPD_OK);
	/* Cancelling a used code leaves it used. */
	assert_int_equal(store_otp_cancel(fx->s, PHONE2, id3, T0 + 3), OTPD_OK);
	expect_plain(fx->s, PHONE2, 3, T0 + 3, OTPD_OTP_EXPIRED);
	/* A repeated cancel changes nothing more. */
	assert_int_equal(store_otp_cancel(fx->s, PHONE, id1, T0 + 4), OTPD_OK);

	if (!have_cli())
		return;
	/* In the history: both unsent codes cancelled (the replaced one too:
	 * its SMS never went out), ended when the cancel came; the used one
	 * used.  Each failure counted once. */
	assert_int_equal(cli_intf(fx, "SELECT count(*) FROM otp_codes WHERE id = %lld"
	                              " AND state = 2 AND ended_ms = %lld;",
	                          (long long)id1, (long long)(T0 + 500)), 1);
	assert_int_equal(cli_intf(fx, "SELECT count(*) FROM otp_codes WHERE id = %lld"
	                              " AND state = 2 AND ended_ms = %lld;",
	                          (long long)id2, (long long)(T0 + 2)), 1);
	assert_int_equal(cli_intf(fx, "SELECT count(*) FROM otp_codes WHERE id = %lld"
	                              " AND state = 1 AND ended_ms = %lld;",
	                          (long long)id3, (long long)(T0 + 2)), 1);
	assert_int_equal(cli_int(fx, "SELECT sum(sms_failures) FROM stats_5m;"), 2);
}

static void test_send_limit(void **state)
{
	struct fixture *fx = *state;
	struct store_issue_result ir;

	/* OTP_SEND_LIMIT 3 per OTP_SEND_WINDOW 120 s. */
	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	issue_ok(fx->s, &defaults, PHONE, 2, T0 + 10000);
	issue_ok(fx->s, &defaults, PHONE, 3, T0 + 20000);
	ir.otp_id = UNTOUCHED;
	ir.retry_after_s = UNTOUCHED;
	assert_int_equal(issue(fx->s, &defaults, PHONE, 4, T0 + 30000, &ir),
	                 OTPD_OTP_RATE_LIMITED);
	/* The oldest send (T0) leaves the window at T0 + 120 s. */
	assert_int_equal(ir.retry_after_s, 90);
	/* A refused request replaces nothing: the last code still works. */
	expect_invalid(fx->s, PHONE, 4, T0 + 31000, 2);
	/* Another number has its own limit. */
	issue_ok(fx->s, &defaults, PHONE2, 5, T0 + 30000);

	/* T0 has left the window: one more is allowed... */
	issue_ok(fx->s, &defaults, PHONE, 6, T0 + 121000);
	/* ...and then T0 + 10 s is the oldest of three. */
	ir.retry_after_s = UNTOUCHED;
	assert_int_equal(issue(fx->s, &defaults, PHONE, 7, T0 + 125000, &ir),
	                 OTPD_OTP_RATE_LIMITED);
	assert_int_equal(ir.retry_after_s, 5);
	/* The refused requests at T0 + 30 s and + 125 s were not recorded:
	 * at T0 + 131 s only T0 + 20 s and T0 + 121 s are in the window. */
	issue_ok(fx->s, &defaults, PHONE, 8, T0 + 131000);
	assert_int_equal(issue(fx->s, &defaults, PHONE, 9, T0 + 132000, &ir),
	                 OTPD_OTP_RATE_LIMITED);

	if (!have_cli())
		return;
	/* The limit counted codes that were replaced: every one issued is
	 * kept (none pruned), each replaced by the next; the refused
	 * requests left none. */
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM otp_codes"
	                             " WHERE phone = '" PHONE "';"),
	                 5);
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM otp_codes"
	                             " WHERE phone = '" PHONE "' AND state = 3;"),
	                 4);
	assert_int_equal(cli_int(fx, "SELECT sum(sends) FROM stats_5m;"), 6);
}

static void test_session_recorded_atomically(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	struct store_session sess;

	memset(&sess, 0, sizeof(sess));
	memset(sess.jti, 'a', STORE_JTI_LEN);
	memset(sess.family, 'f', STORE_JTI_LEN);
	sess.expires_ms = T0 + 86400000;
	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(verify(fx->s, &defaults, PHONE, 1, T0, &sess, &vr), OTPD_OK);
	int64_t user_id = vr.user.id;

	/* A login whose session cannot be recorded (the jti exists) is not a
	 * login at all: no user, and its code still works. */
	issue_ok(fx->s, &defaults, PHONE2, 2, T0);
	vr = untouched_verify();
	assert_int_equal(verify(fx->s, &defaults, PHONE2, 2, T0, &sess, &vr),
	                 OTPD_INTERNAL);
	assert_int_equal(vr.user.id, UNTOUCHED);
	memset(sess.jti, 'b', STORE_JTI_LEN);
	assert_int_equal(verify(fx->s, &defaults, PHONE2, 2, T0 + 1, &sess, &vr),
	                 OTPD_OK);
	assert_true(vr.is_new_user);

	if (!have_cli())
		return;
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM refresh_tokens;"), 2);
	char sql[256];
	snprintf(sql, sizeof(sql),
	         "SELECT user_id FROM refresh_tokens WHERE jti = '%.32s'"
	         " AND family = '%.32s' AND state = 0 AND expires_ms = %lld;",
	         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "ffffffffffffffffffffffffffffffff",
	         (long long)(T0 + 86400000));
	assert_int_equal(cli_int(fx, sql), user_id);
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM users;"), 2);
}

static void test_inactive_user(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	struct store_session sess;

	have_cli();
	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(verify(fx->s, &defaults, PHONE, 1, T0, NULL, &vr), OTPD_OK);
	int64_t user_id = vr.user.id;
	assert_int_equal(cli(fx, "UPDATE users SET is_active = 0;", NULL, 0), 0);

	memset(&sess, 0, sizeof(sess));
	memset(sess.jti, 'c', STORE_JTI_LEN);
	memset(sess.family, 'c', STORE_JTI_LEN);
	sess.expires_ms = T0 + 86400000;
	issue_ok(fx->s, &defaults, PHONE, 2, T0 + 1000);
	vr = untouched_verify();
	assert_int_equal(verify(fx->s, &defaults, PHONE, 2, T0 + 2000, &sess, &vr),
	                 OTPD_USER_INACTIVE);
	assert_int_equal(vr.user.id, user_id);
	assert_false(vr.user.is_active);
	assert_false(vr.is_new_user);
	/* The code is used up all the same; no session, no login recorded. */
	expect_plain(fx->s, PHONE, 2, T0 + 3000, OTPD_OTP_EXPIRED);
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM refresh_tokens;"), 0);
	assert_int_equal(cli_int(fx, "SELECT last_login_ms FROM users;"), T0);
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM users;"), 1);
}

static void test_survives_reopen(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	struct store_user u;
	uint8_t a[32], b[32], got[32];
	int applied = UNTOUCHED;

	memset(a, 1, sizeof(a));
	memset(b, 2, sizeof(b));
	assert_int_equal(store_secret_get_or_create(fx->s, "k", a, 32, got, 32), OTPD_OK);
	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(verify(fx->s, &defaults, PHONE, 1, T0, NULL, &vr), OTPD_OK);
	int64_t user_id = vr.user.id;
	issue_ok(fx->s, &defaults, PHONE2, 2, T0);
	expect_invalid(fx->s, PHONE2, 9, T0 + 1, 2);

	store_close(fx->s);
	fx->s = NULL;
	assert_int_equal(open_url(fx->url, 1000, &fx->s), OTPD_OK);
	assert_int_equal(store_migrate(fx->s, &applied), OTPD_OK);
	assert_int_equal(applied, 0);

	assert_int_equal(store_secret_get_or_create(fx->s, "k", b, 32, got, 32), OTPD_OK);
	assert_memory_equal(got, a, 32);
	assert_int_equal(store_user_get(fx->s, user_id, &u), OTPD_OK);
	assert_string_equal(u.phone_number, PHONE);
	expect_plain(fx->s, PHONE, 1, T0 + 2, OTPD_OTP_EXPIRED); /* still used */
	expect_invalid(fx->s, PHONE2, 9, T0 + 2, 1);             /* attempts kept */
	vr = untouched_verify();
	assert_int_equal(verify(fx->s, &defaults, PHONE2, 2, T0 + 3, NULL, &vr), OTPD_OK);
	assert_true(vr.is_new_user);
}

/* ---- sessions: rotate, revoke, purge (store.h, docs/API.md §3 "Tokens") ---- */

#define DAY_MS 86400000LL
#define GRACE_MS 10000LL

/* A session as auth/ prepares one: jtis distinct for each n (32 hex). */
static struct store_session session_of(unsigned n, int64_t created_ms)
{
	struct store_session ss;

	memset(&ss, 0, sizeof(ss));
	snprintf(ss.jti, sizeof(ss.jti), "%016x%016x", 0xaU, n);
	snprintf(ss.access_jti, sizeof(ss.access_jti), "%016x%016x", 0xbU, n);
	snprintf(ss.family, sizeof(ss.family), "%016x%016x", 0xfU, n);
	ss.created_ms = created_ms;
	ss.expires_ms = created_ms + DAY_MS;
	return ss;
}

static struct store_rotate_result untouched_rotate(void)
{
	struct store_rotate_result r;

	memset(&r, 0, sizeof(r));
	r.user.id = UNTOUCHED;
	r.session.created_ms = UNTOUCHED;
	return r;
}

static void assert_session_equal(const struct store_session *got,
                                 const struct store_session *want)
{
	assert_string_equal(got->jti, want->jti);
	assert_string_equal(got->access_jti, want->access_jti);
	assert_string_equal(got->family, want->family);
	assert_int_equal(got->created_ms, want->created_ms);
	assert_int_equal(got->expires_ms, want->expires_ms);
}

/* Log in on phone with session ss (a code sent and verified at its
 * created_ms); returns the user id. */
static int64_t login(struct fixture *fx, const char *phone,
                     const struct store_session *ss)
{
	struct store_verify_result vr = untouched_verify();

	issue_ok(fx->s, &lenient, phone, 1, ss->created_ms);
	assert_int_equal(verify(fx->s, &lenient, phone, 1, ss->created_ms, ss, &vr),
	                 OTPD_OK);
	return vr.user.id;
}

/* Rotate cur into next at now_ms: a fresh pair, next in cur's family
 * (next->family, as auth/ would fill it, is ignored).  Afterwards *next
 * describes the record as stored: its family becomes cur's. */
static struct store_rotate_result rotate_ok(struct store *s,
                                            const struct store_session *cur,
                                            int64_t user_id,
                                            struct store_session *next,
                                            int64_t grace_ms, int64_t now_ms)
{
	struct store_rotate_result rr = untouched_rotate();
	struct store_session want = *next;

	assert_int_equal(store_session_rotate(s, cur->jti, user_id, next, grace_ms,
	                                      now_ms, &rr),
	                 OTPD_OK);
	assert_false(rr.replayed);
	memcpy(want.family, cur->family, sizeof(want.family));
	assert_session_equal(&rr.session, &want);
	assert_int_equal(rr.user.id, user_id);
	*next = want;
	return rr;
}

/* A refused rotation: the answer `want`, ret untouched, and the successor
 * offered is not recorded. */
static void expect_refused(struct fixture *fx, const char *jti, int64_t user_id,
                           int64_t grace_ms, int64_t now_ms,
                           enum otpd_status want)
{
	struct store_session next = session_of(0xdead, now_ms);
	struct store_rotate_result rr = untouched_rotate();

	assert_int_equal(store_session_rotate(fx->s, jti, user_id, &next, grace_ms,
	                                      now_ms, &rr),
	                 want);
	assert_int_equal(rr.user.id, UNTOUCHED);
	assert_int_equal(rr.session.created_ms, UNTOUCHED);
	if (rr.reuse_detected) {
		assert_int_equal(want, OTPD_INVALID_TOKEN);
		assert_true(rr.revoked_records > 0);
		fx->reuses++;
	}
	if (have_cli())
		assert_int_equal(cli_intf(fx, "SELECT count(*) FROM refresh_tokens"
		                              " WHERE jti = '%s';", next.jti), 0);
}

/* Every refresh record, every column: for "nothing changes". */
static void sessions_snapshot(const struct fixture *fx, char *out, size_t len)
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

static long long family_count(const struct fixture *fx,
                              const struct store_session *root, const char *where)
{
	return cli_intf(fx, "SELECT count(*) FROM refresh_tokens WHERE family = '%s'%s;",
	                root->family, where);
}

static void test_session_fields_recorded(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	/* created_ms is the tokens' iat (whole seconds), not the verify's now. */
	struct store_session ss = session_of(1, T0 - 500);

	have_cli();
	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(verify(fx->s, &defaults, PHONE, 1, T0, &ss, &vr), OTPD_OK);
	assert_int_equal(cli_intf(fx, "SELECT count(*) FROM refresh_tokens WHERE"
	                              " jti = '%s' AND access_jti = '%s' AND family = '%s'"
	                              " AND user_id = %lld AND created_ms = %lld"
	                              " AND expires_ms = %lld AND state = 0"
	                              " AND rotated_ms IS NULL AND replaced_by IS NULL;",
	                          ss.jti, ss.access_jti, ss.family, (long long)vr.user.id,
	                          (long long)ss.created_ms, (long long)ss.expires_ms),
	                 1);
}

static void test_rotate(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0);
	struct store_session n1 = session_of(2, T0 + 1000); /* its own family: ignored */
	struct store_session n2 = session_of(3, T0 + 2000);
	struct store_rotate_result rr;
	int64_t uid = login(fx, PHONE, &s0);

	rr = rotate_ok(fx->s, &s0, uid, &n1, GRACE_MS, T0 + 1000);
	assert_string_equal(rr.session.family, s0.family);
	assert_string_equal(rr.user.phone_number, PHONE);
	assert_true(rr.user.is_active);
	if (have_cli()) {
		assert_int_equal(cli_intf(fx, "SELECT count(*) FROM refresh_tokens WHERE"
		                              " jti = '%s' AND state = 1 AND rotated_ms = %lld"
		                              " AND replaced_by = '%s';",
		                          s0.jti, (long long)(T0 + 1000), n1.jti),
		                 1);
		assert_int_equal(cli_intf(fx, "SELECT count(*) FROM refresh_tokens WHERE"
		                              " jti = '%s' AND access_jti = '%s'"
		                              " AND family = '%s' AND user_id = %lld"
		                              " AND created_ms = %lld AND expires_ms = %lld"
		                              " AND state = 0 AND rotated_ms IS NULL"
		                              " AND replaced_by IS NULL;",
		                          n1.jti, n1.access_jti, s0.family, (long long)uid,
		                          (long long)n1.created_ms, (long long)n1.expires_ms),
		                 1);
		/* The family auth/ put into next was not used. */
		struct store_session own = session_of(2, 0);
		assert_int_equal(family_count(fx, &own, ""), 0);
		assert_int_equal(cli_int(fx, "SELECT count(*) FROM refresh_tokens;"), 2);
	}

	/* The successor rotates in its turn; the family goes on. */
	rr = rotate_ok(fx->s, &n1, uid, &n2, GRACE_MS, T0 + 2000);
	assert_string_equal(rr.session.family, s0.family);
	if (have_cli()) {
		assert_int_equal(family_count(fx, &s0, ""), 3);
		assert_int_equal(family_count(fx, &s0, " AND state = 0"), 1);
	}
	assert_false(log_contains(fx, "store.error"));
}

static void test_rotate_replay_after_grace(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), n1 = session_of(2, T0 + 1000);
	struct store_session t0 = session_of(10, T0), t1 = session_of(11, T0 + 13000);
	struct store_session u0 = session_of(20, T0), u1 = session_of(21, T0 + 5000);
	int64_t uid = login(fx, PHONE, &s0);

	assert_int_equal(login(fx, PHONE, &t0), uid); /* another device */
	assert_int_equal(login(fx, PHONE, &u0), uid);
	rotate_ok(fx->s, &s0, uid, &n1, GRACE_MS, T0 + 1000);

	/* Rotated exactly grace_ms ago: no longer "less than", a replay. */
	expect_refused(fx, s0.jti, uid, GRACE_MS, T0 + 1000 + GRACE_MS,
	               OTPD_INVALID_TOKEN);
	assert_int_equal(fx->reuses, 1);
	/* Reported once, by the caller (auth/session.c): the store logs nothing. */
	assert_false(log_contains(fx, "token_reuse"));
	if (have_cli()) {
		assert_int_equal(family_count(fx, &s0, ""), 2);
		assert_int_equal(family_count(fx, &s0, " AND state <> 2"), 0);
	}
	/* The thief's (or the victim's) successor is revoked with it. */
	expect_refused(fx, n1.jti, uid, GRACE_MS, T0 + 12000, OTPD_INVALID_TOKEN);
	/* Only that family: the other logins of the user go on. */
	rotate_ok(fx->s, &t0, uid, &t1, GRACE_MS, T0 + 13000);

	/* grace_ms 0: any second use is a replay, even in the same millisecond. */
	rotate_ok(fx->s, &u0, uid, &u1, 0, T0 + 5000);
	expect_refused(fx, u0.jti, uid, 0, T0 + 5000, OTPD_INVALID_TOKEN);
	expect_refused(fx, u1.jti, uid, 0, T0 + 5001, OTPD_INVALID_TOKEN);
	if (have_cli())
		assert_int_equal(family_count(fx, &u0, " AND state <> 2"), 0);
}

static void test_rotate_replay_in_grace(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), n1 = session_of(2, T0 + 1000);
	struct store_session n9 = session_of(9, T0 + 2000), n2 = session_of(3, T0 + 3000);
	struct store_rotate_result rr;
	char before[8192], after[8192];
	int64_t uid = login(fx, PHONE, &s0);

	rotate_ok(fx->s, &s0, uid, &n1, GRACE_MS, T0 + 1000);
	if (have_cli())
		sessions_snapshot(fx, before, sizeof(before));

	/* The same client again (a lost response): the same pair, nothing new. */
	struct store_session want = n1;
	memcpy(want.family, s0.family, sizeof(want.family));
	const int64_t at[] = {T0 + 1000, T0 + 2000, T0 + 1000 + GRACE_MS - 1};
	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		rr = untouched_rotate();
		assert_int_equal(store_session_rotate(fx->s, s0.jti, uid, &n9, GRACE_MS,
		                                      at[i], &rr),
		                 OTPD_OK);
		assert_true(rr.replayed);
		assert_session_equal(&rr.session, &want);
		assert_int_equal(rr.user.id, uid);
		assert_string_equal(rr.user.phone_number, PHONE);
	}
	if (have_cli()) {
		sessions_snapshot(fx, after, sizeof(after));
		assert_string_equal(after, before);
	}
	assert_int_equal(fx->reuses, 0);

	/* And the successor is still the live one. */
	rotate_ok(fx->s, &n1, uid, &n2, GRACE_MS, T0 + 3000);
}

static void test_rotate_replay_in_grace_successor_gone(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), n1 = session_of(2, T0 + 1000);
	struct store_session n2 = session_of(3, T0 + 2000);
	struct store_session t0 = session_of(10, T0), t1 = session_of(11, T0 + 1000);
	int64_t uid = login(fx, PHONE, &s0);

	/* Inside s0's grace window, but its successor was rotated already: the
	 * pair handed out is gone, so this is a replay. */
	rotate_ok(fx->s, &s0, uid, &n1, GRACE_MS, T0 + 1000);
	rotate_ok(fx->s, &n1, uid, &n2, GRACE_MS, T0 + 2000);
	expect_refused(fx, s0.jti, uid, GRACE_MS, T0 + 3000, OTPD_INVALID_TOKEN);
	expect_refused(fx, n2.jti, uid, GRACE_MS, T0 + 3001, OTPD_INVALID_TOKEN);
	if (have_cli())
		assert_int_equal(family_count(fx, &s0, " AND state <> 2"), 0);

	/* Likewise when the successor has expired in the meantime. */
	assert_int_equal(login(fx, PHONE, &t0), uid);
	t1.expires_ms = T0 + 1500;
	rotate_ok(fx->s, &t0, uid, &t1, GRACE_MS, T0 + 1000);
	expect_refused(fx, t0.jti, uid, GRACE_MS, T0 + 1500, OTPD_INVALID_TOKEN);
	if (have_cli())
		assert_int_equal(family_count(fx, &t0, " AND state <> 2"), 0);
}

static void test_rotate_unknown_jti(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), n1 = session_of(2, T0 + 1000);
	char before[8192], after[8192], longjti[300];
	int64_t uid = login(fx, PHONE, &s0);

	if (have_cli())
		sessions_snapshot(fx, before, sizeof(before));
	expect_refused(fx, session_of(77, T0).jti, uid, GRACE_MS, T0 + 1, OTPD_INVALID_TOKEN);
	expect_refused(fx, s0.access_jti, uid, GRACE_MS, T0 + 1, OTPD_INVALID_TOKEN);
	expect_refused(fx, "", uid, GRACE_MS, T0 + 1, OTPD_INVALID_TOKEN);
	expect_refused(fx, "' OR 1=1 --", uid, GRACE_MS, T0 + 1, OTPD_INVALID_TOKEN);
	memset(longjti, 'a', sizeof(longjti) - 1);
	longjti[sizeof(longjti) - 1] = '\0';
	expect_refused(fx, longjti, uid, GRACE_MS, T0 + 1, OTPD_INVALID_TOKEN);
	expect_refused(fx, NULL, uid, GRACE_MS, T0 + 1, OTPD_INVALID_TOKEN);
	if (have_cli()) {
		sessions_snapshot(fx, after, sizeof(after));
		assert_string_equal(after, before);
	}
	assert_false(log_contains(fx, "store.error"));
	assert_int_equal(fx->reuses, 0);
	rotate_ok(fx->s, &s0, uid, &n1, GRACE_MS, T0 + 1000);
}

static void test_rotate_expired(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0);
	struct store_session n1 = session_of(2, T0 + DAY_MS - 1);
	struct store_session n2 = session_of(3, T0 + DAY_MS + 1000);
	char before[8192], after[8192];
	int64_t uid = login(fx, PHONE, &s0);

	if (have_cli())
		sessions_snapshot(fx, before, sizeof(before));
	/* exp reached: refused (RFC 7519 §4.1.4), nothing changes. */
	expect_refused(fx, s0.jti, uid, GRACE_MS, s0.expires_ms, OTPD_INVALID_TOKEN);
	expect_refused(fx, s0.jti, uid, GRACE_MS, s0.expires_ms + DAY_MS,
	               OTPD_INVALID_TOKEN);
	if (have_cli()) {
		sessions_snapshot(fx, after, sizeof(after));
		assert_string_equal(after, before);
	}
	/* One millisecond before, it rotates. */
	rotate_ok(fx->s, &s0, uid, &n1, GRACE_MS, s0.expires_ms - 1);
	/* A rotated-out token past its own exp is just expired: no replay
	 * judgement, its family goes on. */
	expect_refused(fx, s0.jti, uid, GRACE_MS, s0.expires_ms, OTPD_INVALID_TOKEN);
	assert_int_equal(fx->reuses, 0);
	rotate_ok(fx->s, &n1, uid, &n2, GRACE_MS, T0 + DAY_MS + 1000);
}

static void test_rotate_wrong_user(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), n1 = session_of(2, T0 + 1000);
	struct store_session t0 = session_of(10, T0);
	char before[8192], after[8192];
	int64_t a = login(fx, PHONE, &s0), b = login(fx, PHONE2, &t0);

	assert_true(a != b);
	if (have_cli())
		sessions_snapshot(fx, before, sizeof(before));
	expect_refused(fx, s0.jti, b, GRACE_MS, T0 + 1000, OTPD_INVALID_TOKEN);
	expect_refused(fx, s0.jti, 424242, GRACE_MS, T0 + 1000, OTPD_INVALID_TOKEN);
	expect_refused(fx, t0.jti, a, GRACE_MS, T0 + 1000, OTPD_INVALID_TOKEN);
	if (have_cli()) {
		sessions_snapshot(fx, after, sizeof(after));
		assert_string_equal(after, before);
	}
	rotate_ok(fx->s, &s0, a, &n1, GRACE_MS, T0 + 1000);
	/* A rotated-out token under another user id is no replay of it. */
	expect_refused(fx, s0.jti, b, GRACE_MS, T0 + 60000, OTPD_INVALID_TOKEN);
	assert_int_equal(fx->reuses, 0);
	if (have_cli())
		assert_int_equal(family_count(fx, &s0, " AND state = 0"), 1);
}

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
	sessions_snapshot(fx, before, sizeof(before));

	expect_refused(fx, n1.jti, uid, GRACE_MS, T0 + 2000, OTPD_USER_INACTIVE);
	/* Inside s0's grace window, and outside it (a replay otherwise). */
	expect_refused(fx, s0.jti, uid, GRACE_MS, T0 + 2000, OTPD_USER_INACTIVE);
	expect_refused(fx, s0.jti, uid, GRACE_MS, T0 + 60000, OTPD_USER_INACTIVE);
	sessions_snapshot(fx, after, sizeof(after));
	assert_string_equal(after, before);
	assert_int_equal(fx->reuses, 0);

	/* Reactivated: the session is still there. */
	assert_int_equal(cli(fx, "UPDATE users SET is_active = 1;", NULL, 0), 0);
	rotate_ok(fx->s, &n1, uid, &n2, GRACE_MS, T0 + 70000);
}

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
	sessions_snapshot(fx, before, sizeof(before));
	expect_refused(fx, s0.jti, a, GRACE_MS, T0 + 1000, OTPD_INVALID_TOKEN);
	sessions_snapshot(fx, after, sizeof(after));
	assert_string_equal(after, before);

	/* Deleted properly: its records go with it (ON DELETE CASCADE). */
	snprintf(sql, sizeof(sql), "PRAGMA foreign_keys = ON; DELETE FROM users WHERE id = %lld;",
	         (long long)b);
	assert_int_equal(cli(fx, sql, NULL, 0), 0);
	assert_int_equal(family_count(fx, &t0, ""), 0);
	expect_refused(fx, t0.jti, b, GRACE_MS, T0 + 1000, OTPD_INVALID_TOKEN);
}

static void test_revoke(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), n1 = session_of(2, T0 + 1000);
	struct store_session n2 = session_of(3, T0 + 2000);
	struct store_session t0 = session_of(10, T0), t1 = session_of(11, T0 + 5000);
	struct store_session u0 = session_of(20, T0), u1 = session_of(21, T0 + 1000);
	int64_t uid = login(fx, PHONE, &s0);

	assert_int_equal(login(fx, PHONE, &t0), uid);
	assert_int_equal(login(fx, PHONE, &u0), uid);
	rotate_ok(fx->s, &s0, uid, &n1, GRACE_MS, T0 + 1000);
	rotate_ok(fx->s, &n1, uid, &n2, GRACE_MS, T0 + 2000);

	/* Logout with any token of the family (here its rotated-out root)
	 * revokes all of it: the live descendant stops working. */
	assert_int_equal(store_session_revoke(fx->s, s0.jti), OTPD_OK);
	expect_refused(fx, n2.jti, uid, GRACE_MS, T0 + 3000, OTPD_INVALID_TOKEN);
	expect_refused(fx, n1.jti, uid, GRACE_MS, T0 + 3000, OTPD_INVALID_TOKEN);
	if (have_cli()) {
		assert_int_equal(family_count(fx, &s0, ""), 3);
		assert_int_equal(family_count(fx, &s0, " AND state <> 2"), 0);
	}
	/* Idempotent: again, with another member, unknown, empty, none. */
	assert_int_equal(store_session_revoke(fx->s, s0.jti), OTPD_OK);
	assert_int_equal(store_session_revoke(fx->s, n2.jti), OTPD_OK);
	assert_int_equal(store_session_revoke(fx->s, session_of(99, T0).jti), OTPD_OK);
	assert_int_equal(store_session_revoke(fx->s, ""), OTPD_OK);
	assert_int_equal(store_session_revoke(fx->s, NULL), OTPD_OK);
	if (have_cli())
		assert_int_equal(family_count(fx, &s0, " AND state <> 2"), 0);

	/* Logout with the live leaf revokes its rotated-out ancestor too: not
	 * even the grace window brings the pair back. */
	rotate_ok(fx->s, &u0, uid, &u1, GRACE_MS, T0 + 1000);
	assert_int_equal(store_session_revoke(fx->s, u1.jti), OTPD_OK);
	expect_refused(fx, u0.jti, uid, GRACE_MS, T0 + 1001, OTPD_INVALID_TOKEN);
	expect_refused(fx, u1.jti, uid, GRACE_MS, T0 + 1002, OTPD_INVALID_TOKEN);

	/* The other login of the same user is not touched. */
	rotate_ok(fx->s, &t0, uid, &t1, GRACE_MS, T0 + 5000);
	/* Revoked tokens are refused quietly: that is no reuse to report. */
	assert_int_equal(fx->reuses, 0);
	assert_false(log_contains(fx, "store.error"));
}

static void expect_purged(struct fixture *fx, int64_t now_ms, int limit, int want)
{
	int deleted = UNTOUCHED;

	assert_int_equal(store_session_purge(fx->s, now_ms, limit, &deleted), OTPD_OK);
	assert_int_equal(deleted, want);
}

static void test_purge(void **state)
{
	struct fixture *fx = *state;
	struct store_session a = session_of(1, T0), b = session_of(2, T0);
	struct store_session b1 = session_of(3, T0 + 500), c = session_of(4, T0);
	struct store_session d = session_of(5, T0), e = session_of(6, T0 + 600);
	struct store_session e1 = session_of(7, T0 + DAY_MS);
	int64_t uid;

	/* Six records, of every state: a live, b rotated (b1 live), c revoked,
	 * d rotated and e live far in the future. */
	a.expires_ms = T0 + 1000;
	b.expires_ms = T0 + 2000;
	b1.expires_ms = T0 + 3000;
	c.expires_ms = T0 + 4000;
	uid = login(fx, PHONE, &a);
	login(fx, PHONE, &b);
	login(fx, PHONE, &c);
	login(fx, PHONE, &d);
	rotate_ok(fx->s, &b, uid, &b1, GRACE_MS, T0 + 500);
	rotate_ok(fx->s, &d, uid, &e, GRACE_MS, T0 + 600);
	assert_int_equal(store_session_revoke(fx->s, c.jti), OTPD_OK);
	if (have_cli())
		assert_int_equal(cli_int(fx, "SELECT count(*) FROM refresh_tokens;"), 6);

	/* A limit below 1 deletes nothing. */
	expect_purged(fx, T0 + 10000, 0, 0);
	expect_purged(fx, T0 + 10000, -1, 0);
	/* Expired before now: expires_ms == now is not. */
	expect_purged(fx, T0 + 1000, 100, 0);
	expect_purged(fx, T0 + 2001, 100, 2);
	/* At most `limit` per call, until none is left. */
	expect_purged(fx, T0 + 10000, 1, 1);
	expect_purged(fx, T0 + 10000, 1, 1);
	expect_purged(fx, T0 + 10000, 1, 0);
	if (have_cli()) {
		assert_int_equal(cli_int(fx, "SELECT count(*) FROM refresh_tokens;"), 2);
		assert_int_equal(cli_intf(fx, "SELECT count(*) FROM refresh_tokens"
		                              " WHERE jti IN ('%s', '%s');", d.jti, e.jti),
		                 2);
	}
	/* The unexpired family is intact. */
	rotate_ok(fx->s, &e, uid, &e1, GRACE_MS, T0 + DAY_MS);
}

static void test_sessions_survive_reopen(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), n1 = session_of(2, T0 + 1000);
	struct store_session n2 = session_of(3, T0 + 3000);
	struct store_rotate_result rr = untouched_rotate();
	int applied = UNTOUCHED;
	int64_t uid = login(fx, PHONE, &s0);

	rotate_ok(fx->s, &s0, uid, &n1, GRACE_MS, T0 + 1000);
	store_close(fx->s);
	fx->s = NULL;
	assert_int_equal(open_url(fx->url, 1000, &fx->s), OTPD_OK);
	assert_int_equal(store_migrate(fx->s, &applied), OTPD_OK);
	assert_int_equal(applied, 0);

	/* The grace window and the successor survived. */
	assert_int_equal(store_session_rotate(fx->s, s0.jti, uid, &n2, GRACE_MS,
	                                      T0 + 2000, &rr),
	                 OTPD_OK);
	assert_true(rr.replayed);
	assert_string_equal(rr.session.jti, n1.jti);
	assert_string_equal(rr.session.access_jti, n1.access_jti);
	rotate_ok(fx->s, &n1, uid, &n2, GRACE_MS, T0 + 3000);
	expect_refused(fx, n1.jti, uid, GRACE_MS, T0 + 3000 + GRACE_MS, OTPD_INVALID_TOKEN);
	expect_refused(fx, n2.jti, uid, GRACE_MS, T0 + 3000 + GRACE_MS, OTPD_INVALID_TOKEN);
}

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
	static const char *const tables[] = {"otp_codes", "stats_5m", "users", "refresh_tokens"};
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

/* ---- races: one store (threads of one node), two stores (two nodes) ---- */

#define RACERS 20

struct race {
	struct store *stores[2];
	int nstores;
	pthread_barrier_t start;
	const struct otp_policy *policy;
	const char *phone;
	const char *jti;      /* rotate_one: the refresh token all present */
	int64_t user_id;
	int64_t grace_ms;
};

struct racer {
	struct race *race;
	int index;
	enum otpd_status status;
	struct store_issue_result ir;
	struct store_verify_result vr;
	struct store_rotate_result rr;
	int rounds;
};

static void race_init(struct fixture *fx, struct race *r, int nstores, int threads,
                      const struct otp_policy *p)
{
	memset(r, 0, sizeof(*r));
	r->nstores = nstores;
	r->stores[0] = fx->s;
	if (nstores > 1)
		assert_int_equal(open_url(fx->url, 30000, &r->stores[1]), OTPD_OK);
	assert_int_equal(pthread_barrier_init(&r->start, NULL, (unsigned)threads), 0);
	r->policy = p;
	r->phone = PHONE;
}

static void race_run(struct race *r, struct racer *rs, int n,
                     void *(*fn)(void *))
{
	pthread_t t[RACERS];

	for (int i = 0; i < n; i++) {
		rs[i].race = r;
		rs[i].index = i;
		rs[i].status = _OTPD_STATUS_MAX;
		assert_int_equal(pthread_create(&t[i], NULL, fn, &rs[i]), 0);
	}
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&r->start);
	store_close(r->stores[1]);
}

static struct store *racer_store(const struct racer *me)
{
	return me->race->stores[me->index % me->race->nstores];
}

static void *verify_right(void *arg)
{
	struct racer *me = arg;

	pthread_barrier_wait(&me->race->start);
	me->status = verify(racer_store(me), me->race->policy, me->race->phone, 1, T0,
	                    NULL, &me->vr);
	return NULL;
}

static void *verify_wrong(void *arg)
{
	struct racer *me = arg;

	me->vr.remaining_attempts = UNTOUCHED;
	pthread_barrier_wait(&me->race->start);
	me->status = verify(racer_store(me), me->race->policy, me->race->phone,
	                    100 + me->index, T0, NULL, &me->vr);
	return NULL;
}

static void *issue_one(void *arg)
{
	struct racer *me = arg;

	pthread_barrier_wait(&me->race->start);
	me->status = issue(racer_store(me), me->race->policy, me->race->phone,
	                   100 + me->index, T0, &me->ir);
	return NULL;
}

/* Send and verify until logged in: every thread's own code, so some are
 * replaced by another thread's before they are checked. */
static void *login_loop(void *arg)
{
	struct racer *me = arg;
	struct store *s = racer_store(me);

	pthread_barrier_wait(&me->race->start);
	for (me->rounds = 1; me->rounds <= 2000; me->rounds++) {
		int seed = me->index * 10000 + me->rounds;
		struct store_issue_result ir;

		me->status = issue(s, me->race->policy, me->race->phone, seed, T0, &ir);
		if (me->status != OTPD_OK)
			return NULL;
		me->status = verify(s, me->race->policy, me->race->phone, seed, T0, NULL,
		                    &me->vr);
		/* Replaced by another thread's code (a wrong guess against it),
		 * which may have run out of attempts or been used already. */
		if (me->status != OTPD_INVALID_CODE &&
		    me->status != OTPD_TOO_MANY_ATTEMPTS &&
		    me->status != OTPD_OTP_EXPIRED)
			return NULL;
	}
	return NULL;
}

/* Every thread refreshes the same token at the same instant, each with a
 * successor of its own. */
static void *rotate_one(void *arg)
{
	struct racer *me = arg;
	struct store_session next = session_of(100 + (unsigned)me->index, T0 + 1000);

	me->rr = untouched_rotate();
	pthread_barrier_wait(&me->race->start);
	me->status = store_session_rotate(racer_store(me), me->race->jti,
	                                  me->race->user_id, &next,
	                                  me->race->grace_ms, T0 + 1000, &me->rr);
	return NULL;
}

static int count_status(const struct racer *rs, int n, enum otpd_status st)
{
	int c = 0;

	for (int i = 0; i < n; i++)
		c += rs[i].status == st;
	return c;
}

static void race_single_use(struct fixture *fx, int nstores)
{
	struct race r;
	struct racer rs[RACERS];

	memset(rs, 0, sizeof(rs));
	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	race_init(fx, &r, nstores, RACERS, &defaults);
	race_run(&r, rs, RACERS, verify_right);
	/* A code is used at most once, even raced (docs/API.md §3). */
	assert_int_equal(count_status(rs, RACERS, OTPD_OK), 1);
	assert_int_equal(count_status(rs, RACERS, OTPD_OTP_EXPIRED), RACERS - 1);
	if (have_cli()) /* counted once too */
		expect_cli(fx, "SELECT sum(sends) || ',' || sum(logins) || ',' || sum(new_users)"
		               " || ',' || sum(wrong_guesses) FROM stats_5m;", "1,1,1,0");
}

static void race_attempts(struct fixture *fx, int nstores)
{
	struct race r;
	struct racer rs[RACERS];
	int seen[3] = {0};

	memset(rs, 0, sizeof(rs));
	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	race_init(fx, &r, nstores, RACERS, &defaults);
	race_run(&r, rs, RACERS, verify_wrong);
	/* Each wrong guess uses one attempt, atomically: 3 allowed. */
	assert_int_equal(count_status(rs, RACERS, OTPD_INVALID_CODE), 3);
	assert_int_equal(count_status(rs, RACERS, OTPD_TOO_MANY_ATTEMPTS), RACERS - 3);
	for (int i = 0; i < RACERS; i++) {
		if (rs[i].status != OTPD_INVALID_CODE)
			continue;
		assert_in_range(rs[i].vr.remaining_attempts, 0, 2);
		seen[rs[i].vr.remaining_attempts]++;
	}
	assert_int_equal(seen[0], 1);
	assert_int_equal(seen[1], 1);
	assert_int_equal(seen[2], 1);
	if (have_cli())
		expect_cli(fx, "SELECT sum(sends) || ',' || sum(wrong_guesses) || ',' || sum(logins)"
		               " FROM stats_5m;", "1,3,0");
}

static void race_send_limit(struct fixture *fx, int nstores)
{
	struct race r;
	struct racer rs[RACERS];

	memset(rs, 0, sizeof(rs));
	race_init(fx, &r, nstores, RACERS, &defaults);
	race_run(&r, rs, RACERS, issue_one);
	assert_int_equal(count_status(rs, RACERS, OTPD_OK), 3);
	assert_int_equal(count_status(rs, RACERS, OTPD_OTP_RATE_LIMITED), RACERS - 3);
	for (int i = 0; i < RACERS; i++) {
		if (rs[i].status == OTPD_OTP_RATE_LIMITED)
			assert_int_equal(rs[i].ir.retry_after_s, 120);
		for (int j = 0; j < i; j++)
			if (rs[i].status == OTPD_OK && rs[j].status == OTPD_OK)
				assert_true(rs[i].ir.otp_id != rs[j].ir.otp_id);
	}
	if (!have_cli())
		return;
	/* Three codes, two replaced by the next; three sends counted. */
	expect_cli(fx, "SELECT count(*) || ',' || sum(state = 3) || ',' || sum(state = 0)"
	               " FROM otp_codes;", "3,2,1");
	expect_cli(fx, "SELECT sum(sends) FROM stats_5m;", "3");
}

static void race_first_login(struct fixture *fx, int nstores)
{
	enum { N = 10 };
	struct race r;
	struct racer rs[N];
	int new_users = 0;

	memset(rs, 0, sizeof(rs));
	race_init(fx, &r, nstores, N, &lenient);
	race_run(&r, rs, N, login_loop);
	/* The first login creates the user once, even raced. */
	for (int i = 0; i < N; i++) {
		assert_int_equal(rs[i].status, OTPD_OK);
		assert_int_equal(rs[i].vr.user.id, rs[0].vr.user.id);
		new_users += rs[i].vr.is_new_user;
	}
	assert_int_equal(new_users, 1);
	if (have_cli())
		assert_int_equal(cli_int(fx, "SELECT count(*) FROM users;"), 1);
}

static void race_rotate(struct fixture *fx, int nstores, int64_t grace_ms)
{
	enum { N = 10 };
	struct store_session s0 = session_of(1, T0);
	struct race r;
	struct racer rs[N];
	int64_t uid = login(fx, PHONE, &s0);
	int winner = -1;

	memset(rs, 0, sizeof(rs));
	race_init(fx, &r, nstores, N, &defaults);
	r.jti = s0.jti;
	r.user_id = uid;
	r.grace_ms = grace_ms;
	race_run(&r, rs, N, rotate_one);

	for (int i = 0; i < N; i++) {
		if (rs[i].status == OTPD_OK && !rs[i].rr.replayed) {
			assert_int_equal(winner, -1); /* one fresh pair only */
			winner = i;
		}
	}
	assert_true(winner >= 0);
	assert_string_equal(rs[winner].rr.session.jti, session_of(100 + (unsigned)winner, 0).jti);
	assert_string_equal(rs[winner].rr.session.family, s0.family);
	if (grace_ms == 0) {
		/* Exactly one refresh wins; every other one is a replay. */
		assert_int_equal(count_status(rs, N, OTPD_OK), 1);
		assert_int_equal(count_status(rs, N, OTPD_INVALID_TOKEN), N - 1);
		for (int i = 0; i < N; i++)
			if (i != winner)
				assert_int_equal(rs[i].rr.user.id, UNTOUCHED);
	} else {
		/* Inside the grace window all get the same pair. */
		assert_int_equal(count_status(rs, N, OTPD_OK), N);
		for (int i = 0; i < N; i++) {
			assert_true(rs[i].rr.replayed == (i != winner));
			assert_session_equal(&rs[i].rr.session, &rs[winner].rr.session);
			assert_int_equal(rs[i].rr.user.id, uid);
		}
	}
	if (!have_cli())
		return;
	/* Never two live records from one token: one successor was recorded;
	 * with grace 0 the replays revoked it with the family. */
	assert_int_equal(family_count(fx, &s0, ""), 2);
	long long live = family_count(fx, &s0, " AND state = 0");
	assert_in_range(live, 0, 1);
	assert_int_equal(live, grace_ms == 0 ? 0 : 1);
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM refresh_tokens;"), 2);
}

static void test_race_single_use(void **state) { race_single_use(*state, 1); }
static void test_race_single_use_2(void **state) { race_single_use(*state, 2); }
static void test_race_attempts(void **state) { race_attempts(*state, 1); }
static void test_race_attempts_2(void **state) { race_attempts(*state, 2); }
static void test_race_send_limit(void **state) { race_send_limit(*state, 1); }
static void test_race_send_limit_2(void **state) { race_send_limit(*state, 2); }
static void test_race_first_login(void **state) { race_first_login(*state, 1); }
static void test_race_first_login_2(void **state) { race_first_login(*state, 2); }
static void test_race_rotate(void **state) { race_rotate(*state, 1, 0); }
static void test_race_rotate_2(void **state) { race_rotate(*state, 2, 0); }
static void test_race_rotate_grace(void **state) { race_rotate(*state, 1, GRACE_MS); }
static void test_race_rotate_grace_2(void **state) { race_rotate(*state, 2, GRACE_MS); }

/* ---- group commit: many callers, one writer (store/sqlite.c) ----
 *
 * Concurrent writes are committed in batches, one transaction each, every
 * job in a savepoint of its own.  These check what a caller must not be able
 * to tell: every call answers as if it had run alone, a job that fails
 * undoes only itself, a failed batch answers every job with the failure and
 * records none, and reads never wait for a batch. */

#define GC_THREADS 32
#define GC_ROUNDS 8

/* Distinct numbers for the group-commit tests: +98912 + 7 digits. */
static void gc_phone(int thread, int round, char ret[OTP_PHONE_LEN + 1])
{
	snprintf(ret, OTP_PHONE_LEN + 1, "+98912%07d", thread * 1000 + round);
}

struct gc_worker {
	struct store *s;
	pthread_barrier_t *start;
	int index;
	int64_t user_ids[GC_ROUNDS];
	/* cmocka asserts only on the main thread: a worker notes its first
	 * failure here. */
	int failed_line;
	int failed_round;
	enum otpd_status got;
};

#define GC_CHECK(w, round, status, cond)                                     \
	do {                                                                 \
		if (!(cond) && !(w)->failed_line) {                           \
			(w)->failed_line = __LINE__;                          \
			(w)->failed_round = (round);                          \
			(w)->got = (status);                                  \
		}                                                            \
	} while (0)

/* Per round: send a code, one wrong guess, the right code (a login; every
 * other thread records a session), the right code again. */
static void *gc_login_rounds(void *arg)
{
	struct gc_worker *w = arg;
	char phone[OTP_PHONE_LEN + 1];

	pthread_barrier_wait(w->start);
	for (int r = 0; r < GC_ROUNDS && !w->failed_line; r++) {
		struct store_issue_result ir = {.otp_id = UNTOUCHED};
		struct store_verify_result vr = untouched_verify();
		struct store_session ss = session_of((unsigned)(w->index * 1000 + r), T0);
		int seed = w->index * 1000 + r;
		enum otpd_status st;

		gc_phone(w->index, r, phone);
		st = issue(w->s, &lenient, phone, seed, T0, &ir);
		GC_CHECK(w, r, st, st == OTPD_OK && ir.otp_id > 0);
		st = verify(w->s, &lenient, phone, seed + 500, T0 + 1, NULL, &vr);
		GC_CHECK(w, r, st, st == OTPD_INVALID_CODE && vr.remaining_attempts == 2);
		vr = untouched_verify();
		st = verify(w->s, &lenient, phone, seed, T0 + 2, w->index % 2 ? &ss : NULL,
		            &vr);
		GC_CHECK(w, r, st, st == OTPD_OK && vr.is_new_user && vr.user.id > 0 &&
		                       strcmp(vr.user.phone_number, phone) == 0);
		w->user_ids[r] = vr.user.id;
		vr = untouched_verify();
		st = verify(w->s, &lenient, phone, seed, T0 + 3, NULL, &vr);
		GC_CHECK(w, r, st, st == OTPD_OTP_EXPIRED && vr.user.id == UNTOUCHED);
	}
	return NULL;
}

static void gc_run(struct gc_worker *ws, int n, void *(*fn)(void *))
{
	pthread_t t[GC_THREADS];

	for (int i = 0; i < n; i++)
		assert_int_equal(pthread_create(&t[i], NULL, fn, &ws[i]), 0);
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < n; i++)
		if (ws[i].failed_line)
			fail_msg("thread %d, round %d: unexpected answer %d (check at line %d)", i,
			         ws[i].failed_round, (int)ws[i].got, ws[i].failed_line);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static void test_group_commit_many_threads(void **state)
{
	struct fixture *fx = *state;
	struct gc_worker ws[GC_THREADS];
	pthread_barrier_t start;
	int64_t ids[GC_THREADS * GC_ROUNDS];
	char phone[OTP_PHONE_LEN + 1];
	int applied = UNTOUCHED;

	memset(ws, 0, sizeof(ws));
	assert_int_equal(pthread_barrier_init(&start, NULL, GC_THREADS), 0);
	for (int i = 0; i < GC_THREADS; i++) {
		ws[i].s = fx->s;
		ws[i].start = &start;
		ws[i].index = i;
	}
	gc_run(ws, GC_THREADS, gc_login_rounds);
	pthread_barrier_destroy(&start);

	/* One user per number, none shared. */
	for (int i = 0; i < GC_THREADS; i++)
		memcpy(ids + i * GC_ROUNDS, ws[i].user_ids, sizeof(ws[i].user_ids));
	qsort(ids, GC_THREADS * GC_ROUNDS, sizeof(ids[0]), cmp_i64);
	for (int i = 1; i < GC_THREADS * GC_ROUNDS; i++)
		assert_true(ids[i] > ids[i - 1]);
	if (have_cli()) {
		assert_int_equal(cli_int(fx, "SELECT count(*) FROM users;"),
		                 GC_THREADS * GC_ROUNDS);
		/* Every code used once, after exactly one wrong guess. */
		assert_int_equal(cli_int(fx, "SELECT count(*) FROM otp_codes"
		                             " WHERE state = 1 AND attempts = 1;"),
		                 GC_THREADS * GC_ROUNDS);
		assert_int_equal(cli_int(fx, "SELECT count(*) FROM otp_codes;"),
		                 GC_THREADS * GC_ROUNDS);
		/* Each event counted once, whatever batch it committed in. */
		char sums[64], want[64];
		snprintf(want, sizeof(want), "%d,%d,%d,%d,0", GC_THREADS * GC_ROUNDS,
		         GC_THREADS * GC_ROUNDS, GC_THREADS * GC_ROUNDS, GC_THREADS * GC_ROUNDS);
		assert_int_equal(cli(fx, "SELECT sum(sends) || ',' || sum(logins) || ','"
		                         " || sum(new_users) || ',' || sum(wrong_guesses)"
		                         " || ',' || sum(sms_failures) FROM stats_5m;",
		                     sums, sizeof(sums)), 0);
		assert_string_equal(sums, want);
		assert_int_equal(cli_int(fx, "SELECT count(*) FROM refresh_tokens;"),
		                 GC_THREADS / 2 * GC_ROUNDS);
	}

	/* Durable: another handle on the file sees all of it. */
	store_close(fx->s);
	fx->s = NULL;
	assert_int_equal(open_url(fx->url, 1000, &fx->s), OTPD_OK);
	assert_int_equal(store_migrate(fx->s, &applied), OTPD_OK);
	assert_int_equal(applied, 0);
	for (int i = 0; i < GC_THREADS; i++) {
		for (int r = 0; r < GC_ROUNDS; r++) {
			struct store_user u;

			gc_phone(i, r, phone);
			expect_plain(fx->s, phone, i * 1000 + r, T0 + 4, OTPD_OTP_EXPIRED);
			assert_int_equal(store_user_get(fx->s, ws[i].user_ids[r], &u), OTPD_OK);
			assert_string_equal(u.phone_number, phone);
		}
	}
}

/* ---- the asynchronous forms (store_*_start, store.h) ---- */

#define AS_N 40

struct as_item {
	struct store *s, *other; /* the store, and a second handle on the file */
	char phone[OTP_PHONE_LEN + 1];
	uint8_t hash[OTP_HASH_LEN];
	struct store_issue_result ir;
	struct store_verify_result vr;
	enum otpd_status issue_status, verify_status;
	atomic_int calls;
	bool on_caller_thread; /* a callback ran on the thread that started it */
	bool visible;          /* the login was visible to the other handle in done */
	sem_t *finished;
	pthread_t caller;
};

static void as_verified(void *arg, enum otpd_status status)
{
	struct as_item *it = arg;
	struct store_user u;

	atomic_fetch_add(&it->calls, 1);
	it->verify_status = status;
	if (pthread_equal(pthread_self(), it->caller))
		it->on_caller_thread = true;
	/* Committed before done: another handle (another node) reads it. */
	if (status == OTPD_OK)
		it->visible = store_user_get(it->other, it->vr.user.id, &u) == OTPD_OK &&
		              strcmp(u.phone_number, it->phone) == 0;
	sem_post(it->finished);
}

static void as_issued(void *arg, enum otpd_status status)
{
	struct as_item *it = arg;

	atomic_fetch_add(&it->calls, 1);
	it->issue_status = status;
	if (pthread_equal(pthread_self(), it->caller))
		it->on_caller_thread = true;
	/* done may start another asynchronous operation. */
	if (status != OTPD_OK ||
	    store_otp_verify_start(it->s, &lenient, it->phone, it->hash, DOMAIN, NULL,
	                           T0 + 1, &it->vr, as_verified, it) != OTPD_OK)
		sem_post(it->finished);
}

/* Many operations started from one thread without waiting: every done is
 * called exactly once, on a store thread, after its commit; the issue's
 * done chains the verify. */
static void test_async_start(void **state)
{
	struct fixture *fx = *state;
	static struct as_item items[AS_N];
	struct store *other = NULL;
	sem_t finished;
	int applied;

	assert_int_equal(open_url(fx->url, 1000, &other), OTPD_OK);
	assert_int_equal(store_migrate(other, &applied), OTPD_OK);
	assert_int_equal(sem_init(&finished, 0, 0), 0);
	memset(items, 0, sizeof(items));
	for (int i = 0; i < AS_N; i++) {
		struct as_item *it = &items[i];

		it->s = fx->s;
		it->other = other;
		it->finished = &finished;
		it->caller = pthread_self();
		it->issue_status = it->verify_status = OTPD_INTERNAL;
		it->ir.otp_id = UNTOUCHED;
		snprintf(it->phone, sizeof(it->phone), "+98912%07d", 1000000 + i);
		hash_of(500 + i, it->hash);
		assert_int_equal(store_otp_issue_start(fx->s, &lenient, it->phone, it->hash, T0,
		                                       &it->ir, as_issued, it),
		                 OTPD_OK);
	}
	for (int i = 0; i < AS_N; i++)
		while (sem_wait(&finished) != 0)
			;
	for (int i = 0; i < AS_N; i++) {
		struct as_item *it = &items[i];

		assert_int_equal(it->issue_status, OTPD_OK);
		assert_true(it->ir.otp_id > 0);
		assert_int_equal(it->verify_status, OTPD_OK);
		assert_true(it->vr.is_new_user);
		assert_int_equal(atomic_load(&it->calls), 2);
		assert_false(it->on_caller_thread);
		assert_true(it->visible);
	}
	/* Each code was used by its verify. */
	for (int i = 0; i < AS_N; i++)
		expect_plain(fx->s, items[i].phone, 500 + i, T0 + 2, OTPD_OTP_EXPIRED);
	sem_destroy(&finished);
	store_close(other);
}

/* A rule's answer comes through done too, and the caller's result is
 * left alone when the answer carries no data (as the synchronous form). */
static void as_status(void *arg, enum otpd_status status)
{
	struct as_item *it = arg;

	atomic_fetch_add(&it->calls, 1);
	it->verify_status = status;
	sem_post(it->finished);
}

static void test_async_answers(void **state)
{
	struct fixture *fx = *state;
	struct as_item it;
	sem_t finished;

	memset(&it, 0, sizeof(it));
	assert_int_equal(sem_init(&finished, 0, 0), 0);
	it.finished = &finished;
	it.vr = untouched_verify();
	hash_of(7, it.hash);
	/* Never sent: OTPD_OTP_EXPIRED, vr untouched. */
	assert_int_equal(store_otp_verify_start(fx->s, &defaults, PHONE, it.hash, DOMAIN, NULL,
	                                        T0, &it.vr, as_status, &it),
	                 OTPD_OK);
	while (sem_wait(&finished) != 0)
		;
	assert_int_equal(it.verify_status, OTPD_OTP_EXPIRED);
	assert_int_equal(it.vr.remaining_attempts, UNTOUCHED);
	assert_int_equal(it.vr.user.id, UNTOUCHED);
	/* A wrong code: OTPD_INVALID_CODE with remaining_attempts. */
	int64_t otp_id = issue_ok(fx->s, &defaults, PHONE, 8, T0);
	assert_int_equal(store_otp_verify_start(fx->s, &defaults, PHONE, it.hash, DOMAIN, NULL,
	                                        T0 + 1, &it.vr, as_status, &it),
	                 OTPD_OK);
	while (sem_wait(&finished) != 0)
		;
	assert_int_equal(it.verify_status, OTPD_INVALID_CODE);
	assert_int_equal(it.vr.remaining_attempts, 2);
	/* Cancel: the code stops working. */
	assert_int_equal(store_otp_cancel_start(fx->s, PHONE, otp_id, T0 + 1, as_status, &it),
	                 OTPD_OK);
	while (sem_wait(&finished) != 0)
		;
	assert_int_equal(it.verify_status, OTPD_OK);
	assert_int_equal(atomic_load(&it.calls), 3);
	expect_plain(fx->s, PHONE, 8, T0 + 2, OTPD_OTP_EXPIRED); /* the right code, cancelled */
	sem_destroy(&finished);
}

/* ---- the dashboard's counters (store_stats) ---- */

#define BUCKET_MS STORE_STATS_BUCKET_MS
#define B0 (T0 - T0 % BUCKET_MS) /* the bucket T0 is in */

static void expect_bucket(const struct store_stats_bucket *b, int64_t bucket_ms, int sends,
                          int sms_failures, int logins, int new_users, int wrong_guesses)
{
	assert_int_equal(b->bucket_ms, bucket_ms);
	assert_int_equal(b->sends, sends);
	assert_int_equal(b->sms_failures, sms_failures);
	assert_int_equal(b->logins, logins);
	assert_int_equal(b->new_users, new_users);
	assert_int_equal(b->wrong_guesses, wrong_guesses);
	assert_int_equal(b->locks, 0);
}

/* Each event once, in the bucket of its time, only when its operation
 * committed; the buckets of a range oldest first. */
static void test_stats_buckets(void **state)
{
	struct fixture *fx = *state;
	const int64_t b2 = B0 + 2 * BUCKET_MS, b9 = B0 + 288 * BUCKET_MS;
	struct store_verify_result vr = untouched_verify();
	struct store_issue_result ir;
	struct store_session taken = session_of(1, b2);
	struct store_stats_bucket got[8];
	size_t n = UNTOUCHED;
	int64_t id;

	assert_int_equal(B0 % BUCKET_MS, 0);
	/* Bucket B0: three sends, a fourth refused (not a send). */
	issue_ok(fx->s, &defaults, PHONE, 1, B0 + 1000);
	issue_ok(fx->s, &defaults, PHONE, 2, B0 + 2000);
	issue_ok(fx->s, &defaults, PHONE, 3, B0 + 3000);
	assert_int_equal(issue(fx->s, &defaults, PHONE, 4, B0 + 4000, &ir), OTPD_OTP_RATE_LIMITED);
	expect_invalid(fx->s, PHONE, 9, B0 + 5000, 2);                     /* a wrong guess */
	assert_int_equal(verify(fx->s, &defaults, PHONE, 3, B0 + 6000, NULL, &vr), OTPD_OK);
	assert_true(vr.is_new_user);                                       /* a login, a new user */
	expect_plain(fx->s, PHONE, 3, B0 + 7000, OTPD_OTP_EXPIRED);        /* nothing */
	id = issue_ok(fx->s, &defaults, PHONE2, 5, B0 + 8000);
	assert_int_equal(store_otp_cancel(fx->s, PHONE2, id, B0 + 9000), OTPD_OK); /* an SMS failure */
	assert_int_equal(store_otp_cancel(fx->s, PHONE2, id, B0 + 9500), OTPD_OK); /* the same one */

	/* Bucket B0 + 2: a login of a known user (with a session) ... */
	issue_ok(fx->s, &defaults, PHONE, 6, b2 + 10);
	vr = untouched_verify();
	assert_int_equal(verify(fx->s, &defaults, PHONE, 6, b2 + 20, &taken, &vr), OTPD_OK);
	assert_false(vr.is_new_user);
	/* ... three wrong guesses, and a fourth refused (not a guess) ... */
	issue_ok(fx->s, &defaults, PHONE2, 7, b2 + 30);
	expect_invalid(fx->s, PHONE2, 9, b2 + 40, 2);
	expect_invalid(fx->s, PHONE2, 9, b2 + 50, 1);
	expect_invalid(fx->s, PHONE2, 9, b2 + 60, 0);
	expect_plain(fx->s, PHONE2, 9, b2 + 70, OTPD_TOO_MANY_ATTEMPTS);
	/* ... and a login that fails (its session's jti is taken): undone,
	 * not counted. */
	issue_ok(fx->s, &defaults, "+989121112233", 8, b2 + 80);
	vr = untouched_verify();
	assert_int_equal(verify(fx->s, &defaults, "+989121112233", 8, b2 + 90, &taken, &vr),
	                 OTPD_INTERNAL);
	/* 24 h later, one send. */
	issue_ok(fx->s, &defaults, PHONE, 10, b9 + BUCKET_MS - 1);

	assert_int_equal(store_stats(fx->s, B0, b9 + BUCKET_MS, got, 8, &n), OTPD_OK);
	assert_int_equal(n, 3);
	expect_bucket(&got[0], B0, 4, 1, 1, 1, 1);
	expect_bucket(&got[1], b2, 3, 0, 1, 0, 3);
	expect_bucket(&got[2], b9, 1, 0, 0, 0, 0);
	/* since <= bucket_ms < until */
	assert_int_equal(store_stats(fx->s, B0 + 1, b9, got, 8, &n), OTPD_OK);
	assert_int_equal(n, 1);
	expect_bucket(&got[0], b2, 3, 0, 1, 0, 3);
	assert_int_equal(store_stats(fx->s, B0, b2, got, 8, &n), OTPD_OK);
	assert_int_equal(n, 1);
	assert_int_equal(got[0].bucket_ms, B0);
	/* The last 24 h of b9: b9 - 86400000 is B0 itself. */
	assert_int_equal(store_stats(fx->s, b9 + BUCKET_MS - 86400000, b9 + BUCKET_MS, got, 8, &n),
	                 OTPD_OK);
	assert_int_equal(n, 2);
	assert_int_equal(got[0].bucket_ms, b2);
	/* At most cap, the oldest. */
	assert_int_equal(store_stats(fx->s, B0, b9 + BUCKET_MS, got, 2, &n), OTPD_OK);
	assert_int_equal(n, 2);
	assert_int_equal(got[0].bucket_ms, B0);
	assert_int_equal(got[1].bucket_ms, b2);
	/* Empty ranges. */
	n = UNTOUCHED;
	assert_int_equal(store_stats(fx->s, b2, b2, got, 8, &n), OTPD_OK);
	assert_int_equal(n, 0);
	n = UNTOUCHED;
	assert_int_equal(store_stats(fx->s, B0, b9, got, 0, &n), OTPD_OK);
	assert_int_equal(n, 0);
	assert_int_equal(store_stats(fx->s, B0 + BUCKET_MS, b2, got, 8, &n), OTPD_OK);
	assert_int_equal(n, 0);
	if (have_cli())
		assert_int_equal(cli_int(fx, "SELECT count(*) FROM stats_5m;"), 3);

	/* An in-memory store reads through its writer: the same answers. */
	struct store *m = NULL;
	int applied;
	assert_int_equal(open_url("sqlite::memory:", 100, &m), OTPD_OK);
	assert_int_equal(store_migrate(m, &applied), OTPD_OK);
	issue_ok(m, &defaults, PHONE, 1, B0 + 1);
	assert_int_equal(store_stats(m, B0, b9, got, 8, &n), OTPD_OK);
	assert_int_equal(n, 1);
	expect_bucket(&got[0], B0, 1, 0, 0, 0, 0);
	store_close(m);
}

/* The writer sums a batch's events per bucket: a batch whose operations
 * fall in more buckets than it keeps at once still counts each once. */
static void test_stats_one_batch(void **state)
{
	struct fixture *fx = *state;
	enum { N = 14, BUCKETS = 7 };
	static struct as_item items[N];
	struct store_stats_bucket got[BUCKETS + 1];
	struct store *s = NULL;
	sem_t finished;
	size_t n = 0;
	FILE *shell;

	have_cli();
	assert_int_equal(open_url(fx->url, 10000, &s), OTPD_OK);
	assert_int_equal(sem_init(&finished, 0, 0), 0);
	memset(items, 0, sizeof(items));
	/* Queued while another process holds the write lock: the writer waits
	 * in BEGIN with the first, the others queue behind it. */
	shell = hold_write_lock(fx);
	for (int i = 0; i < N; i++) {
		struct as_item *it = &items[i];

		it->finished = &finished;
		snprintf(it->phone, sizeof(it->phone), "+98912%07d", 2000000 + i);
		hash_of(700 + i, it->hash);
		assert_int_equal(store_otp_issue_start(s, &lenient, it->phone, it->hash,
		                                       B0 + (i % BUCKETS) * BUCKET_MS + i, &it->ir,
		                                       as_status, it),
		                 OTPD_OK);
		if (i == 0)
			usleep(50000);
	}
	usleep(100000);
	release_write_lock(shell);
	for (int i = 0; i < N; i++)
		while (sem_wait(&finished) != 0)
			;
	sem_destroy(&finished);
	for (int i = 0; i < N; i++)
		assert_int_equal(items[i].verify_status, OTPD_OK);
	store_close(s); /* it says how it batched: the first alone, then the rest */
	assert_true(log_contains(fx, "14 operations in 2 transactions"));
	assert_int_equal(store_stats(fx->s, B0, B0 + BUCKETS * BUCKET_MS, got, BUCKETS + 1, &n),
	                 OTPD_OK);
	assert_int_equal(n, BUCKETS);
	for (int k = 0; k < BUCKETS; k++)
		expect_bucket(&got[k], B0 + k * BUCKET_MS, N / BUCKETS, 0, 0, 0, 0);
}

/* ---- retention (store_history_purge) ---- */

static void test_history_purge(void **state)
{
	struct fixture *fx = *state;
	const int64_t cut = T0 - 30 * DAY_MS;
	struct store_verify_result vr = untouched_verify();
	int64_t ahead, old1, old2, recent, last, next;
	int deleted = UNTOUCHED;

	have_cli();
	/* By id: one written by a clock that ran ahead, two older than the
	 * retention, one recent: each a code and a stats bucket. */
	ahead = issue_ok(fx->s, &lenient, PHONE, 1, T0 + DAY_MS);
	old1 = issue_ok(fx->s, &lenient, PHONE, 2, T0 - 40 * DAY_MS);
	old2 = issue_ok(fx->s, &lenient, PHONE2, 3, T0 - 35 * DAY_MS);
	recent = issue_ok(fx->s, &lenient, PHONE2, 4, T0 - DAY_MS);
	assert_true(old1 > ahead && old2 > old1 && recent > old2);
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM stats_5m;"), 4);

	/* A limit below 1 deletes nothing. */
	assert_int_equal(store_history_purge(fx->s, cut, 0, &deleted), OTPD_OK);
	assert_int_equal(deleted, 0);
	assert_int_equal(store_history_purge(fx->s, cut, -1, &deleted), OTPD_OK);
	assert_int_equal(deleted, 0);
	/* At most `limit` rows a call: the old buckets first, ... */
	assert_int_equal(store_history_purge(fx->s, cut, 2, &deleted), OTPD_OK);
	assert_int_equal(deleted, 2);
	assert_int_equal(cli_intf(fx, "SELECT count(*) FROM stats_5m WHERE bucket_ms < %lld;",
	                          (long long)cut), 0);
	/* ... then the codes among the oldest `limit` ids: the one ahead does
	 * not hold back the old ones behind it. */
	assert_int_equal(store_history_purge(fx->s, cut, 2, &deleted), OTPD_OK);
	assert_int_equal(deleted, 1);
	assert_int_equal(store_history_purge(fx->s, cut, 2, &deleted), OTPD_OK);
	assert_int_equal(deleted, 1);
	assert_int_equal(store_history_purge(fx->s, cut, 2, &deleted), OTPD_OK);
	assert_int_equal(deleted, 0);
	assert_int_equal(cli_intf(fx, "SELECT count(*) FROM otp_codes WHERE id IN (%lld, %lld);",
	                          (long long)old1, (long long)old2), 0);
	assert_int_equal(cli_intf(fx, "SELECT count(*) FROM otp_codes WHERE id IN (%lld, %lld);",
	                          (long long)ahead, (long long)recent), 2);
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM stats_5m;"), 2);
	/* What is left works: PHONE2's current code is the recent one. */
	assert_int_equal(verify(fx->s, &lenient, PHONE2, 4, T0 - DAY_MS + 1, NULL, &vr), OTPD_OK);

	/* Everything older than tomorrow + 1: all of it goes, and an id is
	 * never given again (AUTOINCREMENT). */
	last = issue_ok(fx->s, &lenient, "+989121112233", 5, T0);
	assert_int_equal(store_history_purge(fx->s, T0 + 2 * DAY_MS, 1000, &deleted), OTPD_OK);
	assert_int_equal(deleted, 3 + 3); /* 3 buckets (T0 - 1 d, T0, T0 + 1 d), 3 codes */
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM otp_codes;"), 0);
	assert_int_equal(cli_int(fx, "SELECT count(*) FROM stats_5m;"), 0);
	next = issue_ok(fx->s, &lenient, PHONE, 6, T0);
	assert_true(next > last);
}

/* ---- SMS delivery (store_otp_sms_accepted_start, _delivery_*) ---- */

static void expect_pending(struct store *s, int64_t since_ms, size_t limit, size_t want_n,
                           const int64_t *want_ids, const int64_t *want_msgs)
{
	struct store_delivery_pending got[8];
	size_t n = UNTOUCHED;

	assert_true(limit <= 8);
	assert_int_equal(store_otp_delivery_pending(s, since_ms, limit, got, &n), OTPD_OK);
	assert_int_equal(n, want_n);
	for (size_t i = 0; i < want_n; i++) {
		assert_int_equal(got[i].otp_id, want_ids[i]);
		assert_int_equal(got[i].message_id, want_msgs[i]);
	}
}

static void test_sms_delivery(void **state)
{
	struct fixture *fx = *state;
	struct store_delivery_status st[3];
	struct store *s = NULL;
	struct as_item it;
	sem_t finished;
	FILE *shell;
	int64_t a, b, c;

	have_cli();
	a = issue_ok(fx->s, &lenient, PHONE, 1, T0);
	b = issue_ok(fx->s, &lenient, PHONE2, 2, T0 + 1000);
	c = issue_ok(fx->s, &lenient, "+989121112233", 3, T0 + 2000);

	/* Fire and forget (done NULL), then one with done: the first is
	 * committed once the second is answered (one writer, in order). */
	assert_int_equal(store_otp_sms_accepted_start(fx->s, a, 900001, T0 + 100, NULL, NULL),
	                 OTPD_OK);
	memset(&it, 0, sizeof(it));
	assert_int_equal(sem_init(&finished, 0, 0), 0);
	it.finished = &finished;
	it.verify_status = OTPD_INTERNAL;
	assert_int_equal(store_otp_sms_accepted_start(fx->s, b, 900002, T0 + 1100, as_status, &it),
	                 OTPD_OK);
	while (sem_wait(&finished) != 0)
		;
	sem_destroy(&finished);
	assert_int_equal(it.verify_status, OTPD_OK);
	assert_int_equal(atomic_load(&it.calls), 1);

	/* Pending: with a message id, no final status, created after since,
	 * oldest first, at most limit; c has no message id. */
	expect_pending(fx->s, T0 - 1, 8, 2, (int64_t[]){a, b}, (int64_t[]){900001, 900002});
	expect_pending(fx->s, T0 - 1, 1, 1, (int64_t[]){a}, (int64_t[]){900001});
	expect_pending(fx->s, T0, 8, 1, (int64_t[]){b}, (int64_t[]){900002});
	expect_pending(fx->s, T0 - 1, 0, 0, NULL, NULL);
	expect_cli(fx, "SELECT coalesce(sms_message_id, '-') || ',' || coalesce(sms_status, '-')"
	               " || ',' || coalesce(sms_status_ms, '-') FROM otp_codes ORDER BY id LIMIT 1;",
	           "900001,-,1700000000100");

	/* In one call: a in progress (4), b delivered (10, final). */
	st[0] = (struct store_delivery_status){.otp_id = a, .status = 4, .now_ms = T0 + 5000};
	st[1] = (struct store_delivery_status){.otp_id = b, .status = 10, .now_ms = T0 + 5000};
	st[2] = (struct store_delivery_status){.otp_id = 999999, .status = 10, .now_ms = T0}; /* unknown */
	assert_int_equal(store_otp_delivery_set(fx->s, 3, st), OTPD_OK);
	expect_pending(fx->s, T0 - 1, 8, 1, (int64_t[]){a}, (int64_t[]){900001});
	/* a undelivered (11, final); a late "in progress" does not undo it. */
	st[0] = (struct store_delivery_status){.otp_id = a, .status = 11, .now_ms = T0 + 6000};
	assert_int_equal(store_otp_delivery_set(fx->s, 1, st), OTPD_OK);
	st[0] = (struct store_delivery_status){.otp_id = a, .status = 4, .now_ms = T0 + 7000};
	assert_int_equal(store_otp_delivery_set(fx->s, 1, st), OTPD_OK);
	assert_int_equal(store_otp_delivery_set(fx->s, 0, NULL), OTPD_OK);
	expect_pending(fx->s, T0 - 1, 8, 0, NULL, NULL);
	expect_cli(fx, "SELECT group_concat(r, ';') FROM (SELECT coalesce(sms_message_id, '-')"
	               " || ',' || coalesce(sms_status, '-') || ',' || coalesce(sms_status_ms - "
	               "1700000000000, '-') AS r FROM otp_codes ORDER BY id);",
	           "900001,11,6000;900002,10,5000;-,-,-");

	/* Another handle whose writes wait 100 ms for a lock another process
	 * holds: the set fails whole (nothing of it), a fire-and-forget fails
	 * on its own (logged, nobody told), the pending read answers at once. */
	assert_int_equal(open_url(fx->url, 100, &s), OTPD_OK);
	shell = hold_write_lock(fx);
	assert_int_equal(store_otp_sms_accepted_start(s, c, 900003, T0 + 2100, NULL, NULL), OTPD_OK);
	st[0] = (struct store_delivery_status){.otp_id = c, .status = 10, .now_ms = T0 + 8000};
	st[1] = (struct store_delivery_status){.otp_id = a, .status = 4, .now_ms = T0 + 8000};
	assert_int_equal(store_otp_delivery_set(s, 2, st), OTPD_UNAVAILABLE);
	expect_pending(s, T0 - 1, 8, 0, NULL, NULL);
	release_write_lock(shell);
	store_close(s);
	expect_cli(fx, "SELECT group_concat(r, ';') FROM (SELECT coalesce(sms_message_id, '-')"
	               " || ',' || coalesce(sms_status, '-') AS r FROM otp_codes ORDER BY id);",
	           "900001,11;900002,10;-,-");
	/* The codes themselves are untouched by all of it. */
	expect_cli(fx, "SELECT group_concat(state) FROM (SELECT state FROM otp_codes ORDER BY id);",
	           "0,0,0");
}

/* A fire-and-forget message id waits for a batch to ride with, but not
 * for ever: alone in the queue it is committed by itself soon after (this
 * polls for up to 10 s; the store's bound is 100 ms), and one queued right
 * before close is committed by the close. */
static void test_sms_accepted_alone(void **state)
{
	struct fixture *fx = *state;
	int64_t a, b;
	int polls = 0;

	a = issue_ok(fx->s, &lenient, PHONE, 1, T0);
	b = issue_ok(fx->s, &lenient, PHONE2, 2, T0 + 1000);
	usleep(50 * 1000); /* the writer is waiting for work, not ending a batch */
	assert_int_equal(store_otp_sms_accepted_start(fx->s, a, 900001, T0 + 100, NULL, NULL),
	                 OTPD_OK);
	for (;;) {
		struct store_delivery_pending got[2];
		size_t n = UNTOUCHED;

		assert_int_equal(store_otp_delivery_pending(fx->s, T0 - 1, 2, got, &n), OTPD_OK);
		if (n == 1) {
			assert_int_equal(got[0].otp_id, a);
			break;
		}
		assert_int_equal(n, 0);
		assert_true(++polls < 1000);
		usleep(10 * 1000);
	}
	assert_int_equal(store_otp_sms_accepted_start(fx->s, b, 900002, T0 + 1100, NULL, NULL),
	                 OTPD_OK);
	store_close(fx->s);
	fx->s = NULL;
	assert_int_equal(open_url(fx->url, 1000, &fx->s), OTPD_OK);
	expect_pending(fx->s, T0 - 1, 8, 2, (int64_t[]){a, b}, (int64_t[]){900001, 900002});
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

/* ---- a job that fails its own statements, among others ---- */

#define GC_JOBS 12

struct gc_verify {
	struct store *s;
	const char *phone;
	int seed;
	const struct store_session *session;
	enum otpd_status status;
	struct store_verify_result vr;
	atomic_int *finished;
};

static void *gc_verify_one(void *arg)
{
	struct gc_verify *v = arg;

	v->vr = untouched_verify();
	v->status = verify(v->s, &lenient, v->phone, v->seed, T0 + 10, v->session, &v->vr);
	if (v->finished)
		atomic_fetch_add(v->finished, 1);
	return NULL;
}

static void test_group_commit_job_fails_alone(void **state)
{
	struct fixture *fx = *state;
	struct store_session taken = session_of(1, T0), fresh[GC_JOBS];
	struct gc_verify vs[GC_JOBS];
	char phones[GC_JOBS][OTP_PHONE_LEN + 1];
	pthread_t t[GC_JOBS];
	FILE *shell = NULL;

	/* A login records session `taken`: a later login offering the same
	 * jti fails its own insert (UNIQUE), after it has marked its code
	 * used and created its user — both must be undone, for it alone. */
	login(fx, PHONE, &taken);
	memset(vs, 0, sizeof(vs));
	for (int i = 0; i < GC_JOBS; i++) {
		gc_phone(100, i, phones[i]);
		issue_ok(fx->s, &lenient, phones[i], 10 + i, T0);
		fresh[i] = session_of(100 + (unsigned)i, T0 + 10);
		vs[i].s = fx->s;
		vs[i].phone = phones[i];
		vs[i].seed = 10 + i;
		vs[i].session = i % 3 == 1 ? &taken : &fresh[i];
	}

	/* Hold the write lock so that the first job's batch waits in BEGIN
	 * while the others queue behind it: they then run as one batch. */
	if (have_cli())
		shell = hold_write_lock(fx);
	assert_int_equal(pthread_create(&t[0], NULL, gc_verify_one, &vs[0]), 0);
	usleep(50000);
	for (int i = 1; i < GC_JOBS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, gc_verify_one, &vs[i]), 0);
	if (shell) {
		usleep(200000);
		release_write_lock(shell);
	}
	for (int i = 0; i < GC_JOBS; i++)
		pthread_join(t[i], NULL);

	for (int i = 0; i < GC_JOBS; i++) {
		struct store_verify_result vr = untouched_verify();

		if (vs[i].session == &taken) {
			assert_int_equal(vs[i].status, OTPD_INTERNAL);
			assert_int_equal(vs[i].vr.user.id, UNTOUCHED);
			/* Undone: the code still works, and the user is new. */
			assert_int_equal(verify(fx->s, &lenient, phones[i], 10 + i, T0 + 20,
			                        &fresh[i], &vr),
			                 OTPD_OK);
			assert_true(vr.is_new_user);
		} else {
			assert_int_equal(vs[i].status, OTPD_OK);
			assert_true(vs[i].vr.is_new_user);
			assert_string_equal(vs[i].vr.user.phone_number, phones[i]);
			expect_plain(fx->s, phones[i], 10 + i, T0 + 20, OTPD_OTP_EXPIRED);
		}
	}
	assert_true(log_contains(fx, "UNIQUE constraint failed"));
	assert_false(log_contains(fx, "database is locked"));
	if (have_cli()) {
		assert_int_equal(cli_int(fx, "SELECT count(*) FROM refresh_tokens;"),
		                 1 + GC_JOBS);
		assert_int_equal(cli_int(fx, "SELECT count(*) FROM users;"), 1 + GC_JOBS);
		/* The stats count the logins that committed, each once: the
		 * first one, the batch's good ones, then the retried ones. */
		assert_int_equal(cli_int(fx, "SELECT sum(logins) FROM stats_5m;"), 1 + GC_JOBS);
		assert_int_equal(cli_int(fx, "SELECT sum(new_users) FROM stats_5m;"), 1 + GC_JOBS);
	}
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

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_open_urls),
		T(test_migrate_idempotent),
		T(test_not_migrated),
		T(test_memory_url),
		T(test_files_private),
		T(test_shared_file_refused),
		T(test_secret_get_or_create),
		T(test_login_creates_user_once),
		T(test_user_get_not_found),
		T(test_never_sent),
		T(test_wrong_guesses),
		T(test_expiry),
		T(test_used_code_stays_used),
		T(test_new_code_replaces_old),
		T(test_history_every_code),
		T(test_max_attempts_of_the_code),
		T(test_cancel),
		T(test_send_limit),
		T(test_session_recorded_atomically),
		T(test_inactive_user),
		T(test_survives_reopen),
		T(test_session_fields_recorded),
		T(test_rotate),
		T(test_rotate_replay_after_grace),
		T(test_rotate_replay_in_grace),
		T(test_rotate_replay_in_grace_successor_gone),
		T(test_rotate_unknown_jti),
		T(test_rotate_expired),
		T(test_rotate_wrong_user),
		T(test_rotate_inactive_user),
		T(test_rotate_user_gone),
		T(test_revoke),
		T(test_purge),
		T(test_sessions_survive_reopen),
		T(test_migration_from_v1),
		T(test_hot_writes_without_ephemeral_tables),
		T(test_locked_is_unavailable),
		T(test_race_single_use),
		T(test_race_single_use_2),
		T(test_race_attempts),
		T(test_race_attempts_2),
		T(test_race_send_limit),
		T(test_race_send_limit_2),
		T(test_race_first_login),
		T(test_race_first_login_2),
		T(test_race_rotate),
		T(test_race_rotate_2),
		T(test_race_rotate_grace),
		T(test_race_rotate_grace_2),
		T(test_group_commit_many_threads),
		T(test_async_start),
		T(test_async_answers),
		T(test_group_commit_job_fails_alone),
		T(test_group_commit_batch_fails_whole),
		T(test_stats_buckets),
		T(test_stats_one_batch),
		T(test_history_purge),
		T(test_sms_delivery),
		T(test_sms_accepted_alone),
		T(test_migration_from_v3),
	};

	return cmocka_run_group_tests_name("store (sqlite)", tests, NULL, NULL);
}
