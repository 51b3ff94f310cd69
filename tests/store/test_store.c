/* The store conformance suite (store.h, API-CONTRACT §3): every operation
 * and rule, on a temporary SQLite file.  The races run on one store handle
 * (threads of one node) and on two handles of the same file (two nodes).
 *
 * Only store/sqlite.c may include the driver, so where a test must reach
 * under the store (deactivate a user, count session rows, hold the write
 * lock from another process) it runs the sqlite3 command-line shell; those
 * tests are skipped when /usr/bin/sqlite3 is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store/store.h"

#define T0 1700000000000LL /* an arbitrary "now", epoch milliseconds */
#define SQLITE_CLI "/usr/bin/sqlite3"
#define DOMAIN "temp.pilito.com"
#define PHONE "+989123456789"
#define PHONE2 "+989351112233"
#define UNTOUCHED (-12345)

/* The contract's defaults (API-CONTRACT §1): OTP_EXPIRY_TIME 300,
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

static bool have_cli(void)
{
	return access(SQLITE_CLI, X_OK) == 0;
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
	if (store_open(fx->url, 10000, &fx->s) != OTPD_OK ||
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
	/* Phone numbers reach the log only masked (API-CONTRACT §4). */
	if (log_contains(fx, "9123456789") || log_contains(fx, "9351112233")) {
		fprintf(stderr, "an unmasked phone number was logged (%s)\n", fx->log);
		rc = -1;
	} else {
		remove_dir(fx->dir);
	}
	free(fx);
	return rc;
}

/* Run SQL through the sqlite3 shell on the fixture's database; the first
 * line of output goes to out.  Returns the shell's exit status. */
static int cli(const struct fixture *fx, const char *sql, char *out, size_t outlen)
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
	snprintf(cmd, sizeof(cmd), SQLITE_CLI " -batch '%s' < '%s'", fx->path, script);
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

static long long cli_int(const struct fixture *fx, const char *sql)
{
	char out[64];

	assert_int_equal(cli(fx, sql, out, sizeof(out)), 0);
	return strtoll(out, NULL, 10);
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

	assert_int_equal(store_open("postgres://u:p@localhost:5432/otpd", 100, &s),
	                 OTPD_INTERNAL);
	assert_int_equal(store_open("postgresql://localhost/otpd", 100, &s),
	                 OTPD_INTERNAL);
	assert_true(log_contains(fx, "PostgreSQL store not built yet"));
	assert_false(log_contains(fx, "u:p@")); /* a password in the URL */
	assert_int_equal(store_open("mysql://localhost/otpd", 100, &s), OTPD_INTERNAL);
	assert_int_equal(store_open("sqlite:", 100, &s), OTPD_INTERNAL);
	assert_int_equal(store_open("", 100, &s), OTPD_INTERNAL);
	assert_int_equal(store_open("sqlite:/nonexistent-dir/x/otpd.db", 100, &s),
	                 OTPD_UNAVAILABLE);
	/* A file that is not a database. */
	snprintf(garbage, sizeof(garbage), "%s/garbage.db", fx->dir);
	fd = open(garbage, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	for (int i = 0; i < 64; i++)
		assert_int_equal(write(fd, "this is not a database. ", 24), 24);
	close(fd);
	snprintf(url, sizeof(url), "sqlite:%s", garbage);
	assert_int_equal(store_open(url, 100, &s), OTPD_INTERNAL);
	assert_ptr_equal(s, sentinel); /* untouched on every failure */

	/* "sqlite://PATH" names the same file as "sqlite:PATH". */
	snprintf(url, sizeof(url), "sqlite://%s", fx->path);
	assert_int_equal(store_open(url, 100, &s), OTPD_OK);
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
	assert_int_equal(store_open(fx->url, 1000, &fx->s), OTPD_OK);
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
	assert_int_equal(store_open(url, 100, &s), OTPD_OK);
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
	assert_int_equal(store_open("sqlite::memory:", 100, &s), OTPD_OK);
	assert_int_equal(store_migrate(s, &applied), OTPD_OK);
	assert_true(applied >= 1);
	issue_ok(s, &defaults, PHONE, 1, T0);
	assert_int_equal(verify(s, &defaults, PHONE, 1, T0, NULL, &vr), OTPD_OK);
	assert_true(vr.is_new_user);
	store_close(s);
}

/* ---- secrets ---- */

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
	/* API-CONTRACT §3, the example user. */
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

/* A new send replaces the code (API-CONTRACT §3: every earlier unused code
 * stops working).  The store keeps only the current code's hash, so an
 * earlier code presented afterwards is a wrong guess against the current
 * one: invalid_code, and it uses one of the new code's attempts. */
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
}

static void test_cancel(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	int64_t id1, id2, id3;

	/* A code whose SMS was not accepted never verifies. */
	id1 = issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(store_otp_cancel(fx->s, PHONE, id1), OTPD_OK);
	expect_plain(fx->s, PHONE, 1, T0 + 1, OTPD_OTP_EXPIRED);

	/* Cancelling a code a newer one replaced is a no-op. */
	id2 = issue_ok(fx->s, &defaults, PHONE2, 2, T0);
	id3 = issue_ok(fx->s, &defaults, PHONE2, 3, T0 + 1);
	assert_int_equal(store_otp_cancel(fx->s, PHONE2, id2), OTPD_OK);
	/* The wrong phone for an id changes nothing either. */
	assert_int_equal(store_otp_cancel(fx->s, PHONE, id3), OTPD_OK);
	assert_int_equal(store_otp_cancel(fx->s, "+989000000000", id3), OTPD_OK);
	assert_int_equal(verify(fx->s, &defaults, PHONE2, 3, T0 + 2, NULL, &vr),
	                 OTPD_OK);
	/* Cancelling a used code leaves it used. */
	assert_int_equal(store_otp_cancel(fx->s, PHONE2, id3), OTPD_OK);
	expect_plain(fx->s, PHONE2, 3, T0 + 3, OTPD_OTP_EXPIRED);
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

	if (have_cli())
		/* Sends that left the window were pruned. */
		assert_int_equal(cli_int(fx, "SELECT count(*) FROM otp_sends"
		                             " WHERE phone = '" PHONE "';"),
		                 3);
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

	if (!have_cli())
		skip();
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
	assert_int_equal(store_open(fx->url, 1000, &fx->s), OTPD_OK);
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

/* ---- a database another process holds locked ---- */

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_locked_is_unavailable(void **state)
{
	struct fixture *fx = *state;
	struct store *s = NULL;
	struct store_issue_result ir = {.otp_id = UNTOUCHED};
	struct store_verify_result vr = untouched_verify();
	struct store_user u;
	char cmd[512], marker[160];
	uint8_t a[32], got[32];
	FILE *shell;
	int64_t t;

	if (!have_cli())
		skip();
	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(store_open(fx->url, 100, &s), OTPD_OK);

	/* The shell takes the write lock, then says so by creating a file. */
	snprintf(marker, sizeof(marker), "%s/locked", fx->dir);
	snprintf(cmd, sizeof(cmd), SQLITE_CLI " -batch '%s' > /dev/null", fx->path);
	shell = popen(cmd, "w");
	assert_non_null(shell);
	fprintf(shell, ".timeout 5000\nBEGIN IMMEDIATE;\n"
	               "INSERT INTO meta (name, value) VALUES ('held', x'00');\n"
	               ".system touch '%s'\n", marker);
	fflush(shell);
	for (t = mono_ms(); access(marker, F_OK) != 0; usleep(10000))
		assert_true(mono_ms() - t < 10000);

	/* Every write waits busy_timeout (100 ms), then answers unavailable. */
	t = mono_ms();
	assert_int_equal(issue(s, &defaults, PHONE, 2, T0 + 1, &ir), OTPD_UNAVAILABLE);
	assert_true(mono_ms() - t >= 90);
	assert_true(mono_ms() - t < 5000);
	assert_int_equal(ir.otp_id, UNTOUCHED);
	assert_int_equal(verify(s, &defaults, PHONE, 1, T0 + 1, NULL, &vr),
	                 OTPD_UNAVAILABLE);
	assert_int_equal(vr.user.id, UNTOUCHED);
	assert_int_equal(store_otp_cancel(s, PHONE, 1), OTPD_UNAVAILABLE);
	memset(a, 7, sizeof(a));
	assert_int_equal(store_secret_get_or_create(s, "k", a, 32, got, 32),
	                 OTPD_UNAVAILABLE);
	/* Readers do not wait for a writer (WAL). */
	assert_int_equal(store_ping(s), OTPD_OK);
	assert_int_equal(store_user_get(s, 1, &u), OTPD_NOT_FOUND);
	/* Logged once per failure, with the driver's words. */
	assert_true(log_contains(fx, "store.error"));
	assert_true(log_contains(fx, "database is locked"));

	fprintf(shell, "ROLLBACK;\n.quit\n");
	assert_int_equal(pclose(shell), 0);

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
};

struct racer {
	struct race *race;
	int index;
	enum otpd_status status;
	struct store_issue_result ir;
	struct store_verify_result vr;
	int rounds;
};

static void race_init(struct fixture *fx, struct race *r, int nstores, int threads,
                      const struct otp_policy *p)
{
	memset(r, 0, sizeof(*r));
	r->nstores = nstores;
	r->stores[0] = fx->s;
	if (nstores > 1)
		assert_int_equal(store_open(fx->url, 30000, &r->stores[1]), OTPD_OK);
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
	/* A code is used at most once, even raced (API-CONTRACT §3). */
	assert_int_equal(count_status(rs, RACERS, OTPD_OK), 1);
	assert_int_equal(count_status(rs, RACERS, OTPD_OTP_EXPIRED), RACERS - 1);
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

static void test_race_single_use(void **state) { race_single_use(*state, 1); }
static void test_race_single_use_2(void **state) { race_single_use(*state, 2); }
static void test_race_attempts(void **state) { race_attempts(*state, 1); }
static void test_race_attempts_2(void **state) { race_attempts(*state, 2); }
static void test_race_send_limit(void **state) { race_send_limit(*state, 1); }
static void test_race_send_limit_2(void **state) { race_send_limit(*state, 2); }
static void test_race_first_login(void **state) { race_first_login(*state, 1); }
static void test_race_first_login_2(void **state) { race_first_login(*state, 2); }

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_open_urls),
		T(test_migrate_idempotent),
		T(test_not_migrated),
		T(test_memory_url),
		T(test_secret_get_or_create),
		T(test_login_creates_user_once),
		T(test_user_get_not_found),
		T(test_never_sent),
		T(test_wrong_guesses),
		T(test_expiry),
		T(test_used_code_stays_used),
		T(test_new_code_replaces_old),
		T(test_cancel),
		T(test_send_limit),
		T(test_session_recorded_atomically),
		T(test_inactive_user),
		T(test_survives_reopen),
		T(test_locked_is_unavailable),
		T(test_race_single_use),
		T(test_race_single_use_2),
		T(test_race_attempts),
		T(test_race_attempts_2),
		T(test_race_send_limit),
		T(test_race_send_limit_2),
		T(test_race_first_login),
		T(test_race_first_login_2),
	};

	return cmocka_run_group_tests_name("store (sqlite)", tests, NULL, NULL);
}
