/* The store conformance suite (store.h, docs/API.md §3): every operation
 * and rule, through the public API only, so that it runs unchanged on
 * every backend.  The database comes from OTPD_TEST_DATABASE_URL: unset,
 * a fresh temporary SQLite file per test; a postgres:// or postgresql://
 * URL, a fresh database per test on that server (store_fixture.h).  The
 * races run on one store handle (threads of one node) and on two handles of
 * the same database (two nodes).
 *
 * What the store holds is read back through its own reads (store_stats,
 * store_codes_list, store_user_sessions, store_user_get, ...), never with
 * SQL.  What only SQLite has (its files and URLs, migrations from older
 * files, query plans, a lock held by another process, a user changed or
 * deleted behind the store's back) is in test_sqlite.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store/store.h"
#include "store_fixture.h"

/* The backend under test: OTPD_TEST_DATABASE_URL (see above). */
static const char *test_server;

static int setup(void **state)
{
	return fixture_setup(state, test_server);
}

static int teardown(void **state)
{
	return fixture_teardown(state);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A store handle of its own on the test's database, with one writer
 * (PostgreSQL: pool_size 1; SQLite has one anyway) and at most queue_max
 * jobs waiting (0: the default). */
static struct store *open_one_writer(const struct fixture *fx, size_t queue_max)
{
	/* Batches as large as SQLite's, on every backend: the engine's batch
	 * path (a savepoint per job, answers after the COMMIT) is what these
	 * tests are about. */
	struct store_options opt = {.busy_timeout_ms = 10000, .pool_size = 1,
	                            .queue_max = queue_max, .batch_max = 512};
	struct store *s = NULL;

	assert_int_equal(store_open(fx->url, &opt, NULL, 0, &s), OTPD_OK);
	return s;
}

/* ---- holding the writer, whatever the backend ----
 *
 * done runs on the thread that commits (store.h): while a done waits, its
 * writer takes no batch, and every job queued meanwhile goes into the next
 * batch together.  Only a test may make done wait (it must be short
 * otherwise); it waits 30 s at most, so that a failed test does not hang
 * its teardown. */
struct gate {
	sem_t entered, released;
	enum otpd_status status; /* the held operation's answer */
};

static void gate_init(struct gate *g)
{
	memset(g, 0, sizeof(*g));
	assert_int_equal(sem_init(&g->entered, 0, 0), 0);
	assert_int_equal(sem_init(&g->released, 0, 0), 0);
	g->status = _OTPD_STATUS_MAX;
}

/* A done: says it holds the writer, then waits for gate_release(). */
static void gate_hold(void *arg, enum otpd_status status)
{
	struct gate *g = arg;
	struct timespec until;

	g->status = status;
	sem_post(&g->entered);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 30;
	while (sem_timedwait(&g->released, &until) != 0 && errno == EINTR)
		;
}

/* Wait until the writer is inside gate_hold(). */
static void gate_wait_entered(struct gate *g)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	while (sem_timedwait(&g->entered, &until) != 0)
		assert_int_equal(errno, EINTR);
}

/* Hold the writer of s with a write of its own (a revoke that finds
 * nothing): it returns once the writer is held. */
static void gate_hold_writer(struct store *s, struct gate *g)
{
	assert_int_equal(store_session_revoke_start(s, "held", gate_hold, g), OTPD_OK);
	gate_wait_entered(g);
	assert_int_equal(g->status, OTPD_OK);
}

static void gate_release(struct gate *g)
{
	sem_post(&g->released);
}

/* After the store that ran gate_hold() is closed (its writer has left it). */
static void gate_destroy(struct gate *g)
{
	sem_destroy(&g->entered);
	sem_destroy(&g->released);
}

/* ---- open, migrate, ping ---- */

/* Refused before any backend: no URL, an unknown scheme.  A PostgreSQL URL
 * on which nothing listens fails too, and the password in it is never
 * logged. */
static void test_open_refused(void **state)
{
	struct fixture *fx = *state;
	struct store *sentinel = (struct store *)&fx; /* any non-NULL value */
	struct store *s = sentinel;

	assert_int_equal(open_url(NULL, 100, &s), OTPD_INTERNAL);
	assert_int_equal(open_url("mysql://localhost/otpd", 100, &s), OTPD_INTERNAL);
	assert_int_equal(open_url("", 100, &s), OTPD_INTERNAL);
	assert_int_not_equal(open_url("postgres://u:pw-in-url@127.0.0.1:1/otpd", 100, &s),
	                     OTPD_OK);
	assert_int_not_equal(open_url("postgresql://u:pw-in-url@127.0.0.1:1/otpd", 100, &s),
	                     OTPD_OK);
	assert_false(log_contains(fx, "pw-in-url"));
	assert_ptr_equal(s, sentinel); /* untouched on every failure */
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
	/* Another handle (another node) finds every version applied too. */
	struct store *s = NULL;
	assert_int_equal(open_url(fx->url, 1000, &s), OTPD_OK);
	applied = UNTOUCHED;
	assert_int_equal(store_migrate(s, &applied), OTPD_OK);
	assert_int_equal(applied, 0);
	store_close(s);
}

static void test_not_migrated(void **state)
{
	struct fixture *fx = *state;
	struct store *s = NULL;
	struct store_issue_result ir = {.otp_id = UNTOUCHED};
	char url[1024];
	int applied = UNTOUCHED;

	/* A store opened on an empty database answers ping, and refuses the
	 * operations until it is migrated; then it has every version. */
	fixture_extra_url(fx, url, sizeof(url));
	assert_int_equal(open_url(url, 100, &s), OTPD_OK);
	assert_int_equal(store_ping(s), OTPD_OK);
	assert_int_equal(issue(s, &defaults, PHONE, 1, T0, &ir), OTPD_INTERNAL);
	assert_int_equal(ir.otp_id, UNTOUCHED);
	assert_int_equal(store_migrate(s, &applied), OTPD_OK);
	assert_int_equal(applied, fx->applied);
	issue_ok(s, &defaults, PHONE, 1, T0);
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
	/* Created logged in. */
	assert_int_equal(vr.user.created_ms, T0 + 1000);
	assert_int_equal(vr.user.last_login_ms, T0 + 1000);

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
	assert_int_equal(vr.user.created_ms, T0 + 1000);
	assert_int_equal(vr.user.last_login_ms, T0 + 3000);

	/* Another number, another user. */
	issue_ok(fx->s, &defaults, PHONE2, 3, T0);
	vr = untouched_verify();
	assert_int_equal(verify(fx->s, &defaults, PHONE2, 3, T0, NULL, &vr), OTPD_OK);
	assert_true(vr.is_new_user);
	assert_true(vr.user.id != user_id);
	assert_string_equal(vr.user.username, "989351112233");

	/* The login is recorded. */
	assert_int_equal(store_user_get(fx->s, user_id, &u), OTPD_OK);
	assert_int_equal(u.last_login_ms, T0 + 3000);
	assert_int_equal(u.created_ms, T0 + 1000);
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
	/* The old code is kept, replaced at the second send, with no attempt
	 * of its own: the guess was counted on the new code, then used. */
	expect_code(fx->s, id1, OTP_CODE_REPLACED, 0, T0 + 1000);
	expect_code(fx->s, id2, OTP_CODE_USED, 1, T0 + 3000);
	assert_int_equal(codes_count(fx->s, NULL, -1), 2);
}

/* The admin's statuses of a number's codes, oldest first, as of now_ms
 * (they derive from the columns: store_code_row). */
static void code_statuses(const struct fixture *fx, const char *phone, int64_t now_ms,
                          char *out, size_t len)
{
	static struct store_code_row rows[CODES_MAX];
	size_t n = codes_all(fx->s, phone, rows), used = 0;

	out[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		const struct store_code_row *r = &rows[i];
		const char *st = r->state == OTP_CODE_USED        ? "used"
		                 : r->state == OTP_CODE_CANCELLED ? "cancelled"
		                 : r->state == OTP_CODE_REPLACED  ? "replaced"
		                 : r->attempts >= r->max_attempts ? "exhausted"
		                 : r->expires_ms <= now_ms        ? "expired"
		                                                  : "valid";
		char ended[32];
		int k;

		if (r->ended_ms < 0)
			snprintf(ended, sizeof(ended), "-");
		else
			snprintf(ended, sizeof(ended), "%lld", (long long)(r->ended_ms - T0));
		k = snprintf(out + used, len - used, "%s%s:%d/%d:%s", i ? "," : "", st,
		             r->attempts, r->max_attempts, ended);
		assert_true(k > 0 && (size_t)k < len - used);
		used += (size_t)k;
	}
}

/* Every code issued is kept, with what became of it; the current code is
 * the newest; an earlier one never verifies again. */
static void test_history_every_code(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	int64_t ids[6];
	char got[1024];

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
	assert_int_equal(codes_count(fx->s, NULL, -1), 6);
}

/* A code is judged with the attempts it was issued with, unless the
 * policy allows fewer now. */
static void test_max_attempts_of_the_code(void **state)
{
	struct fixture *fx = *state;
	const struct otp_policy five = {.expiry_ms = 300000, .max_attempts = 5,
	                                .send_limit = 3, .send_window_ms = 120000};
	struct store_verify_result vr = untouched_verify();
	struct store_code_row rows[CODES_MAX];

	/* Issued with 3, verified under 5: 3. */
	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(verify(fx->s, &five, PHONE, 9, T0 + 1, NULL, &vr), OTPD_INVALID_CODE);
	assert_int_equal(vr.remaining_attempts, 2);
	/* Issued with 5, verified under 3: 3 (lowering applies at once). */
	issue_ok(fx->s, &five, PHONE2, 2, T0);
	expect_invalid(fx->s, PHONE2, 9, T0 + 1, 2);
	assert_int_equal(codes_all(fx->s, NULL, rows), 2);
	assert_int_equal(rows[0].max_attempts, 3);
	assert_int_equal(rows[1].max_attempts, 5);
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

	/* In the history: both unsent codes cancelled (the replaced one too:
	 * its SMS never went out), ended when the cancel came; the used one
	 * used.  Each failure counted once. */
	expect_code(fx->s, id1, OTP_CODE_CANCELLED, 0, T0 + 500);
	expect_code(fx->s, id2, OTP_CODE_CANCELLED, 0, T0 + 2);
	expect_code(fx->s, id3, OTP_CODE_USED, 0, T0 + 2);
	assert_int_equal(stats_total(fx->s).sms_failures, 2);
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

	/* The limit counted codes that were replaced: every one issued is
	 * kept (none pruned), each replaced by the next; the refused
	 * requests left none. */
	assert_int_equal(codes_count(fx->s, PHONE, -1), 5);
	assert_int_equal(codes_count(fx->s, PHONE, OTP_CODE_REPLACED), 4);
	assert_int_equal(stats_total(fx->s).sends, 6);
}

static void test_session_recorded_atomically(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	struct store_session sess, next = session_of(9, T0 + 10);
	struct store_session_info r[SESSIONS_MAX];
	struct store_rotate_result rr = untouched_rotate();
	struct store_user u;
	char family[STORE_JTI_LEN + 1];

	memset(&sess, 0, sizeof(sess));
	memset(sess.jti, 'a', STORE_JTI_LEN);
	memset(sess.family, 'f', STORE_JTI_LEN);
	sess.expires_ms = T0 + 86400000;
	memcpy(family, sess.family, sizeof(family));
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
	int64_t user2 = vr.user.id;
	assert_true(user2 != user_id);

	/* Two users (one per number, and the failed login made none), a
	 * record each: live, in family f, with its expiry. */
	assert_int_equal(store_user_get(fx->s, user_id, &u), OTPD_OK);
	assert_string_equal(u.phone_number, PHONE);
	assert_int_equal(store_user_get(fx->s, user2, &u), OTPD_OK);
	assert_string_equal(u.phone_number, PHONE2);
	for (int k = 0; k < 2; k++) {
		assert_int_equal(sessions_of(fx->s, k ? user2 : user_id, r), 1);
		assert_string_equal(r[0].family, family);
		assert_int_equal(r[0].state, 0);
		assert_int_equal(r[0].created_ms, 0);
		assert_int_equal(r[0].expires_ms, T0 + 86400000);
		assert_int_equal(r[0].rotated_ms, -1);
	}
	/* Each record is the jti it was recorded with, of its own user: jti a
	 * is the first user's (the second user cannot rotate it). */
	memset(sess.jti, 'a', STORE_JTI_LEN);
	expect_refused(fx, sess.jti, user2, 0, T0 + 10, OTPD_INVALID_TOKEN);
	assert_int_equal(store_session_rotate(fx->s, sess.jti, user_id, &next, 0, T0 + 10, &rr),
	                 OTPD_OK);
	assert_int_equal(rr.user.id, user_id);
	assert_string_equal(rr.session.family, family);
}

static void test_inactive_user(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	struct store_user_change off = {.set_active = true, .is_active = false};
	struct store_session_info r[SESSIONS_MAX];
	struct store_session sess;
	struct store_user u;

	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(verify(fx->s, &defaults, PHONE, 1, T0, NULL, &vr), OTPD_OK);
	int64_t user_id = vr.user.id;
	assert_int_equal(store_user_update(fx->s, user_id, &off, NULL, &u), OTPD_OK);
	assert_false(u.is_active);

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
	/* The code is used up all the same; no session, no login recorded,
	 * no other user. */
	expect_plain(fx->s, PHONE, 2, T0 + 3000, OTPD_OTP_EXPIRED);
	assert_int_equal(sessions_of(fx->s, user_id, r), 0);
	assert_int_equal(store_user_get(fx->s, user_id, &u), OTPD_OK);
	assert_int_equal(u.last_login_ms, T0);
	assert_false(u.is_active);
	assert_int_equal(stats_total(fx->s).logins, 1);
	assert_int_equal(stats_total(fx->s).new_users, 1);
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

static void test_session_fields_recorded(void **state)
{
	struct fixture *fx = *state;
	struct store_verify_result vr = untouched_verify();
	/* created_ms is the tokens' iat (whole seconds), not the verify's now. */
	struct store_session ss = session_of(1, T0 - 500), n1 = session_of(2, T0 + 1000);
	struct store_session_info r[SESSIONS_MAX];

	issue_ok(fx->s, &defaults, PHONE, 1, T0);
	assert_int_equal(verify(fx->s, &defaults, PHONE, 1, T0, &ss, &vr), OTPD_OK);
	assert_int_equal(sessions_of(fx->s, vr.user.id, r), 1);
	assert_string_equal(r[0].family, ss.family);
	assert_int_equal(r[0].state, 0);
	assert_int_equal(r[0].created_ms, ss.created_ms);
	assert_int_equal(r[0].expires_ms, ss.expires_ms);
	assert_int_equal(r[0].rotated_ms, -1);
	/* Recorded under its jti, for that user. */
	rotate_ok(fx->s, &ss, vr.user.id, &n1, GRACE_MS, T0 + 1000);
}

static void test_rotate(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0);
	struct store_session n1 = session_of(2, T0 + 1000); /* its own family: ignored */
	struct store_session n2 = session_of(3, T0 + 2000);
	struct store_session n9 = session_of(9, T0 + 1500);
	struct store_session_info r;
	struct store_rotate_result rr;
	int64_t uid = login(fx, PHONE, &s0);

	rr = rotate_ok(fx->s, &s0, uid, &n1, GRACE_MS, T0 + 1000);
	assert_string_equal(rr.session.family, s0.family);
	assert_string_equal(rr.user.phone_number, PHONE);
	assert_true(rr.user.is_active);
	/* s0 rotated then; n1 recorded, live, in s0's family. */
	assert_true(session_find(fx->s, uid, s0.family, s0.created_ms, &r));
	assert_int_equal(r.state, 1);
	assert_int_equal(r.rotated_ms, T0 + 1000);
	assert_int_equal(r.expires_ms, s0.expires_ms);
	assert_true(session_find(fx->s, uid, s0.family, n1.created_ms, &r));
	assert_int_equal(r.state, 0);
	assert_int_equal(r.expires_ms, n1.expires_ms);
	assert_int_equal(r.rotated_ms, -1);
	/* The family auth/ put into next was not used. */
	struct store_session own = session_of(2, 0);
	assert_int_equal(family_count(fx->s, uid, own.family, ANY), 0);
	assert_int_equal(family_count(fx->s, uid, s0.family, ANY), 2);
	/* s0 is replaced by n1: inside the grace window s0 gives n1's pair,
	 * both jtis and both times as recorded (and changes nothing). */
	rr = untouched_rotate();
	assert_int_equal(store_session_rotate(fx->s, s0.jti, uid, &n9, GRACE_MS, T0 + 1500, &rr),
	                 OTPD_OK);
	assert_true(rr.replayed);
	assert_session_equal(&rr.session, &n1);
	assert_int_equal(family_count(fx->s, uid, s0.family, ANY), 2);

	/* The successor rotates in its turn; the family goes on. */
	rr = rotate_ok(fx->s, &n1, uid, &n2, GRACE_MS, T0 + 2000);
	assert_string_equal(rr.session.family, s0.family);
	assert_int_equal(family_count(fx->s, uid, s0.family, ANY), 3);
	assert_int_equal(family_count(fx->s, uid, s0.family, LIVE), 1);
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
	assert_int_equal(family_count(fx->s, uid, s0.family, ANY), 2);
	assert_int_equal(family_count(fx->s, uid, s0.family, NOT_REVOKED), 0);
	/* The thief's (or the victim's) successor is revoked with it. */
	expect_refused(fx, n1.jti, uid, GRACE_MS, T0 + 12000, OTPD_INVALID_TOKEN);
	/* Only that family: the other logins of the user go on. */
	rotate_ok(fx->s, &t0, uid, &t1, GRACE_MS, T0 + 13000);

	/* grace_ms 0: any second use is a replay, even in the same millisecond. */
	rotate_ok(fx->s, &u0, uid, &u1, 0, T0 + 5000);
	expect_refused(fx, u0.jti, uid, 0, T0 + 5000, OTPD_INVALID_TOKEN);
	expect_refused(fx, u1.jti, uid, 0, T0 + 5001, OTPD_INVALID_TOKEN);
	assert_int_equal(family_count(fx->s, uid, u0.family, NOT_REVOKED), 0);
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
	sessions_snapshot(fx->s, &uid, 1, before, sizeof(before));

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
	sessions_snapshot(fx->s, &uid, 1, after, sizeof(after));
	assert_string_equal(after, before);
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
	assert_int_equal(family_count(fx->s, uid, s0.family, NOT_REVOKED), 0);

	/* Likewise when the successor has expired in the meantime. */
	assert_int_equal(login(fx, PHONE, &t0), uid);
	t1.expires_ms = T0 + 1500;
	rotate_ok(fx->s, &t0, uid, &t1, GRACE_MS, T0 + 1000);
	expect_refused(fx, t0.jti, uid, GRACE_MS, T0 + 1500, OTPD_INVALID_TOKEN);
	assert_int_equal(family_count(fx->s, uid, t0.family, NOT_REVOKED), 0);
}

static void test_rotate_unknown_jti(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), n1 = session_of(2, T0 + 1000);
	char before[8192], after[8192], longjti[300];
	int64_t uid = login(fx, PHONE, &s0);

	sessions_snapshot(fx->s, &uid, 1, before, sizeof(before));
	expect_refused(fx, session_of(77, T0).jti, uid, GRACE_MS, T0 + 1, OTPD_INVALID_TOKEN);
	expect_refused(fx, s0.access_jti, uid, GRACE_MS, T0 + 1, OTPD_INVALID_TOKEN);
	expect_refused(fx, "", uid, GRACE_MS, T0 + 1, OTPD_INVALID_TOKEN);
	expect_refused(fx, "' OR 1=1 --", uid, GRACE_MS, T0 + 1, OTPD_INVALID_TOKEN);
	memset(longjti, 'a', sizeof(longjti) - 1);
	longjti[sizeof(longjti) - 1] = '\0';
	expect_refused(fx, longjti, uid, GRACE_MS, T0 + 1, OTPD_INVALID_TOKEN);
	expect_refused(fx, NULL, uid, GRACE_MS, T0 + 1, OTPD_INVALID_TOKEN);
	sessions_snapshot(fx->s, &uid, 1, after, sizeof(after));
	assert_string_equal(after, before);
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

	sessions_snapshot(fx->s, &uid, 1, before, sizeof(before));
	/* exp reached: refused (RFC 7519 §4.1.4), nothing changes. */
	expect_refused(fx, s0.jti, uid, GRACE_MS, s0.expires_ms, OTPD_INVALID_TOKEN);
	expect_refused(fx, s0.jti, uid, GRACE_MS, s0.expires_ms + DAY_MS,
	               OTPD_INVALID_TOKEN);
	sessions_snapshot(fx->s, &uid, 1, after, sizeof(after));
	assert_string_equal(after, before);
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
	const int64_t both[] = {a, b};

	assert_true(a != b);
	sessions_snapshot(fx->s, both, 2, before, sizeof(before));
	expect_refused(fx, s0.jti, b, GRACE_MS, T0 + 1000, OTPD_INVALID_TOKEN);
	expect_refused(fx, s0.jti, 424242, GRACE_MS, T0 + 1000, OTPD_INVALID_TOKEN);
	expect_refused(fx, t0.jti, a, GRACE_MS, T0 + 1000, OTPD_INVALID_TOKEN);
	sessions_snapshot(fx->s, both, 2, after, sizeof(after));
	assert_string_equal(after, before);
	rotate_ok(fx->s, &s0, a, &n1, GRACE_MS, T0 + 1000);
	/* A rotated-out token under another user id is no replay of it. */
	expect_refused(fx, s0.jti, b, GRACE_MS, T0 + 60000, OTPD_INVALID_TOKEN);
	assert_int_equal(fx->reuses, 0);
	assert_int_equal(family_count(fx->s, a, s0.family, LIVE), 1);
}

/* A user deactivated by store_user_update(): every session ends with it
 * (refused as revoked tokens: no reuse to report), also inside a grace
 * window, and a reactivation brings none back; a new login works again.
 * (A live record of an inactive user, which only a change behind the
 * store's back leaves, is test_sqlite.c's test_rotate_inactive_user.) */
static void test_rotate_deactivated_user(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), n1 = session_of(2, T0 + 1000);
	struct store_session t0 = session_of(10, T0 + 70000), t1 = session_of(11, T0 + 71000);
	struct store_user_change off = {.set_active = true, .is_active = false};
	struct store_user_change on = {.set_active = true, .is_active = true};
	char before[8192], after[8192];
	int64_t uid = login(fx, PHONE, &s0);

	rotate_ok(fx->s, &s0, uid, &n1, GRACE_MS, T0 + 1000);
	assert_int_equal(store_user_update(fx->s, uid, &off, NULL, NULL), OTPD_OK);
	assert_int_equal(family_count(fx->s, uid, s0.family, ANY), 2);
	assert_int_equal(family_count(fx->s, uid, s0.family, NOT_REVOKED), 0);
	sessions_snapshot(fx->s, &uid, 1, before, sizeof(before));

	expect_refused(fx, n1.jti, uid, GRACE_MS, T0 + 2000, OTPD_INVALID_TOKEN);
	/* Inside s0's grace window, and outside it (a replay otherwise). */
	expect_refused(fx, s0.jti, uid, GRACE_MS, T0 + 2000, OTPD_INVALID_TOKEN);
	expect_refused(fx, s0.jti, uid, GRACE_MS, T0 + 60000, OTPD_INVALID_TOKEN);
	sessions_snapshot(fx->s, &uid, 1, after, sizeof(after));
	assert_string_equal(after, before);
	assert_int_equal(fx->reuses, 0);

	/* Reactivated: the sessions stay revoked; a new login works. */
	assert_int_equal(store_user_update(fx->s, uid, &on, NULL, NULL), OTPD_OK);
	expect_refused(fx, n1.jti, uid, GRACE_MS, T0 + 70000, OTPD_INVALID_TOKEN);
	assert_int_equal(login(fx, PHONE, &t0), uid);
	rotate_ok(fx->s, &t0, uid, &t1, GRACE_MS, T0 + 71000);
	assert_int_equal(fx->reuses, 0);
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
	assert_int_equal(family_count(fx->s, uid, s0.family, ANY), 3);
	assert_int_equal(family_count(fx->s, uid, s0.family, NOT_REVOKED), 0);
	/* Idempotent: again, with another member, unknown, empty, none. */
	assert_int_equal(store_session_revoke(fx->s, s0.jti), OTPD_OK);
	assert_int_equal(store_session_revoke(fx->s, n2.jti), OTPD_OK);
	assert_int_equal(store_session_revoke(fx->s, session_of(99, T0).jti), OTPD_OK);
	assert_int_equal(store_session_revoke(fx->s, ""), OTPD_OK);
	assert_int_equal(store_session_revoke(fx->s, NULL), OTPD_OK);
	assert_int_equal(family_count(fx->s, uid, s0.family, NOT_REVOKED), 0);

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
	struct store_session_info r[SESSIONS_MAX];
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
	assert_int_equal(sessions_of(fx->s, uid, r), 6);

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
	/* Left: d (rotated) and e, its live successor. */
	assert_int_equal(sessions_of(fx->s, uid, r), 2);
	assert_string_equal(r[0].family, d.family);
	assert_int_equal(r[0].created_ms, e.created_ms);
	assert_int_equal(r[0].state, 0);
	assert_string_equal(r[1].family, d.family);
	assert_int_equal(r[1].created_ms, d.created_ms);
	assert_int_equal(r[1].state, 1);
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
	unsigned seed; /* rand_r() */
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

	me->seed = (unsigned)me->index * 2654435761u + 1;
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
		/* A pause of a random length, growing with the failures (up to
		 * 64 ms), before the next try: a database that queues the
		 * racers fairly (PostgreSQL's lock queue, a commit each) would
		 * otherwise keep them in lockstep (every send, then every
		 * verify), where only the last sender can ever win. */
		usleep((useconds_t)(rand_r(&me->seed) %
		                    (1000u << (me->rounds < 6 ? me->rounds : 6))));
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
	/* Counted once too. */
	expect_stats(fx->s, 1, 0, 1, 1, 0);
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
	expect_stats(fx->s, 1, 0, 0, 0, 3);
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
	/* Three codes, two replaced by the next; three sends counted. */
	assert_int_equal(codes_count(fx->s, NULL, -1), 3);
	assert_int_equal(codes_count(fx->s, NULL, OTP_CODE_REPLACED), 2);
	assert_int_equal(codes_count(fx->s, NULL, OTP_CODE_ACTIVE), 1);
	assert_int_equal(stats_total(fx->s).sends, 3);
}

static void race_first_login(struct fixture *fx, int nstores)
{
	enum { N = 10 };
	struct race r;
	struct racer rs[N];
	struct store_user u;
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
	/* One user, of that number; one created in the stats, N logins. */
	assert_int_equal(store_user_get(fx->s, rs[0].vr.user.id, &u), OTPD_OK);
	assert_string_equal(u.phone_number, PHONE);
	assert_int_equal(stats_total(fx->s).new_users, 1);
	assert_int_equal(stats_total(fx->s).logins, N);
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
	/* Never two live records from one token: one successor was recorded;
	 * with grace 0 the replays revoked it with the family. */
	struct store_session_info recs[SESSIONS_MAX];
	assert_int_equal(family_count(fx->s, uid, s0.family, ANY), 2);
	long long live = family_count(fx->s, uid, s0.family, LIVE);
	assert_in_range(live, 0, 1);
	assert_int_equal(live, grace_ms == 0 ? 0 : 1);
	assert_int_equal(sessions_of(fx->s, uid, recs), 2);
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
/* ---- group commit: many callers, few writers (store/queue.c) ----
 *
 * Concurrent writes are committed in batches, one transaction each, every
 * job in a savepoint of its own.  These check what a caller must not be able
 * to tell: every call answers as if it had run alone, a job that fails
 * undoes only itself, and reads never wait for a batch.  (A batch that
 * fails whole needs the database to fail: test_sqlite.c makes one.) */

#define GC_THREADS 32
#define GC_ROUNDS 8

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
	static struct store_code_row rows[CODES_MAX];
	char phone[OTP_PHONE_LEN + 1];
	int applied = UNTOUCHED;
	size_t n, sessions = 0;

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
	/* Every code used once, after exactly one wrong guess. */
	n = codes_all(fx->s, NULL, rows);
	assert_int_equal(n, GC_THREADS * GC_ROUNDS);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(rows[i].state, OTP_CODE_USED);
		assert_int_equal(rows[i].attempts, 1);
	}
	/* Each event counted once, whatever batch it committed in. */
	expect_stats(fx->s, GC_THREADS * GC_ROUNDS, 0, GC_THREADS * GC_ROUNDS,
	             GC_THREADS * GC_ROUNDS, GC_THREADS * GC_ROUNDS);
	/* A session for every login of every other thread, none else. */
	for (int i = 0; i < GC_THREADS; i++) {
		for (int r = 0; r < GC_ROUNDS; r++) {
			struct store_session_info recs[SESSIONS_MAX];
			size_t k = sessions_of(fx->s, ws[i].user_ids[r], recs);

			assert_int_equal(k, i % 2 ? 1 : 0);
			sessions += k;
		}
	}
	assert_int_equal(sessions, GC_THREADS / 2 * GC_ROUNDS);

	/* Durable: another handle on the database sees all of it. */
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

/* A login that fails its own statements, in a batch with others: it alone
 * is undone.  The batch is made by holding the writer (gate_hold_writer)
 * while the jobs queue: they then commit in one transaction. */
struct gc_job {
	struct store_verify_result vr;
	enum otpd_status status;
	sem_t *finished;
};

static void gc_job_done(void *arg, enum otpd_status status)
{
	struct gc_job *g = arg;

	g->status = status;
	sem_post(g->finished);
}

static void test_group_commit_job_fails_alone(void **state)
{
	struct fixture *fx = *state;
	struct store_session taken = session_of(1, T0), fresh[GC_JOBS];
	const struct store_session *offered[GC_JOBS];
	struct gc_job jobs[GC_JOBS];
	char phones[GC_JOBS][OTP_PHONE_LEN + 1];
	uint8_t hashes[GC_JOBS][OTP_HASH_LEN];
	struct store *s = open_one_writer(fx, 0);
	struct gate gate;
	sem_t finished;
	int64_t taken_uid, uids[GC_JOBS];

	/* A login records session `taken`: a later login offering the same
	 * jti fails its own insert (UNIQUE), after it has marked its code
	 * used and created its user — both must be undone, for it alone. */
	taken_uid = login(fx, PHONE, &taken);
	memset(jobs, 0, sizeof(jobs));
	assert_int_equal(sem_init(&finished, 0, 0), 0);
	for (int i = 0; i < GC_JOBS; i++) {
		gc_phone(100, i, phones[i]);
		issue_ok(fx->s, &lenient, phones[i], 10 + i, T0);
		hash_of(10 + i, hashes[i]);
		fresh[i] = session_of(100 + (unsigned)i, T0 + 10);
		offered[i] = i % 3 == 1 ? &taken : &fresh[i];
		jobs[i].vr = untouched_verify();
		jobs[i].status = _OTPD_STATUS_MAX;
		jobs[i].finished = &finished;
	}

	/* Every job queued behind the held writer: one batch. */
	gate_init(&gate);
	gate_hold_writer(s, &gate);
	for (int i = 0; i < GC_JOBS; i++)
		assert_int_equal(store_otp_verify_start(s, &lenient, phones[i], hashes[i], DOMAIN,
		                                        offered[i], T0 + 10, NULL, &jobs[i].vr,
		                                        gc_job_done, &jobs[i]),
		                 OTPD_OK);
	gate_release(&gate);
	for (int i = 0; i < GC_JOBS; i++)
		while (sem_wait(&finished) != 0)
			;
	sem_destroy(&finished);
	store_close(s); /* it says how it batched: the gate's job, then the twelve */
	gate_destroy(&gate);
	assert_true(log_contains(fx, "13 operations in 2 transactions"));

	for (int i = 0; i < GC_JOBS; i++) {
		struct store_verify_result vr = untouched_verify();

		if (offered[i] == &taken) {
			assert_int_equal(jobs[i].status, OTPD_INTERNAL);
			assert_int_equal(jobs[i].vr.user.id, UNTOUCHED);
			/* Undone: the code still works, and the user is new. */
			assert_int_equal(verify(fx->s, &lenient, phones[i], 10 + i, T0 + 20,
			                        &fresh[i], &vr),
			                 OTPD_OK);
			assert_true(vr.is_new_user);
			uids[i] = vr.user.id;
		} else {
			assert_int_equal(jobs[i].status, OTPD_OK);
			assert_true(jobs[i].vr.is_new_user);
			assert_string_equal(jobs[i].vr.user.phone_number, phones[i]);
			expect_plain(fx->s, phones[i], 10 + i, T0 + 20, OTPD_OTP_EXPIRED);
			uids[i] = jobs[i].vr.user.id;
		}
	}
	/* Each failed insert logged once, nothing else. */
	assert_int_equal(log_count(fx, "store.error"), GC_JOBS / 3);
	/* One user per number, one record per login: the failed logins left
	 * none (taken's user still has its one). */
	struct store_session_info recs[SESSIONS_MAX];
	assert_int_equal(sessions_of(fx->s, taken_uid, recs), 1);
	assert_string_equal(recs[0].family, taken.family);
	for (int i = 0; i < GC_JOBS; i++) {
		struct store_user u;

		assert_int_equal(store_user_get(fx->s, uids[i], &u), OTPD_OK);
		assert_string_equal(u.phone_number, phones[i]);
		for (int k = 0; k < i; k++)
			assert_true(uids[k] != uids[i]);
		assert_int_equal(sessions_of(fx->s, uids[i], recs), 1);
		assert_string_equal(recs[0].family, fresh[i].family);
	}
	/* The stats count the logins that committed, each once: the first
	 * one, the batch's good ones, then the retried ones. */
	assert_int_equal(stats_total(fx->s).logins, 1 + GC_JOBS);
	assert_int_equal(stats_total(fx->s).new_users, 1 + GC_JOBS);
}

/* ---- a store that cannot keep up: the bounded queue ---- */

static void as_count(void *arg, enum otpd_status status)
{
	atomic_int *answered = arg;

	if (status == OTPD_OK)
		atomic_fetch_add(answered, 1);
}

static void as_never(void *arg, enum otpd_status status)
{
	(void)arg, (void)status;
	fail_msg("done called for an operation that was refused");
}

/* With queue_max jobs waiting for a writer, every further write answers
 * OTPD_UNAVAILABLE at once, records nothing, and is logged once; reads do
 * not wait for the writer; once the queue drains, the same handle works
 * again.  (A lock held by another process: test_sqlite.c.) */
static void test_queue_full_is_unavailable(void **state)
{
	struct fixture *fx = *state;
	struct store *s = open_one_writer(fx, 2);
	struct store_issue_result ir[3], late = {.otp_id = UNTOUCHED};
	struct store_verify_result vr = untouched_verify();
	struct store_stats_bucket b[4];
	struct store_delivery_pending p[4];
	struct store_code_row rows[CODES_MAX];
	struct store_session_info recs[SESSIONS_MAX];
	struct store_codes_query q = {0};
	uint8_t h[OTP_HASH_LEN], secret[32], got[32];
	atomic_int answered = 0;
	struct gate gate;
	size_t n;
	int64_t t;

	issue_ok(s, &defaults, PHONE, 1, T0);
	gate_init(&gate);
	gate_hold_writer(s, &gate);
	/* Two jobs wait (the queue's bound), then the queue is full. */
	hash_of(2, h);
	assert_int_equal(store_otp_issue_start(s, &lenient, "+989120000001", h, T0 + 1, NULL, &ir[0],
	                                       as_count, &answered),
	                 OTPD_OK);
	assert_int_equal(store_otp_issue_start(s, &lenient, "+989120000002", h, T0 + 1, NULL, &ir[1],
	                                       as_count, &answered),
	                 OTPD_OK);
	t = mono_ms();
	assert_int_equal(issue(s, &lenient, "+989120000003", 3, T0 + 2, &late),
	                 OTPD_UNAVAILABLE);
	assert_int_equal(late.otp_id, UNTOUCHED);
	assert_int_equal(verify(s, &defaults, PHONE, 1, T0 + 2, NULL, &vr), OTPD_UNAVAILABLE);
	assert_int_equal(vr.user.id, UNTOUCHED);
	assert_int_equal(store_otp_cancel(s, PHONE, 1, T0 + 2), OTPD_UNAVAILABLE);
	memset(secret, 7, sizeof(secret));
	assert_int_equal(store_secret_get_or_create(s, "k", secret, 32, got, 32),
	                 OTPD_UNAVAILABLE);
	assert_int_equal(store_otp_issue_start(s, &lenient, "+989120000004", h, T0 + 2, NULL, &ir[2],
	                                       as_never, NULL),
	                 OTPD_UNAVAILABLE);
	assert_int_equal(store_otp_sms_accepted_start(s, 1, 900001, T0 + 2, NULL, NULL),
	                 OTPD_UNAVAILABLE);
	assert_true(mono_ms() - t < 5000); /* at once: nothing waited */
	/* The reads that never wait for the writer answer meanwhile. */
	assert_int_equal(store_stats(s, T0 - DAY_MS, T0 + DAY_MS, b, 4, &n), OTPD_OK);
	assert_int_equal(n, 1);
	assert_int_equal(b[0].sends, 1);
	assert_int_equal(store_otp_delivery_pending(s, T0 - 1, 4, p, &n), OTPD_OK);
	assert_int_equal(n, 0);
	assert_int_equal(store_codes_list(s, &q, rows, 10, &n), OTPD_OK);
	assert_int_equal(n, 1);
	assert_int_equal(store_user_sessions(s, 1, recs, 10, &n), OTPD_OK);
	assert_int_equal(n, 0);
	/* Logged once until the queue drains, with what to expect. */
	assert_int_equal(log_count(fx, "write queue is full"), 1);
	assert_int_equal(atomic_load(&answered), 0);

	gate_release(&gate);
	/* The queued jobs commit; then the same handle works again. */
	for (t = mono_ms(); atomic_load(&answered) < 2; usleep(1000))
		assert_true(mono_ms() - t < 10000);
	issue_ok(s, &lenient, "+989120000005", 5, T0 + 3);
	assert_int_equal(verify(s, &defaults, PHONE, 1, T0 + 4, NULL, &vr), OTPD_OK);
	store_close(s);
	gate_destroy(&gate);
	/* Recorded: the first code, the two queued, the later one; none refused. */
	assert_int_equal(codes_all(fx->s, NULL, rows), 4);
	assert_string_equal(rows[0].phone, PHONE);
	assert_int_equal(rows[0].state, OTP_CODE_USED);
	assert_string_equal(rows[1].phone, "+989120000001");
	assert_string_equal(rows[2].phone, "+989120000002");
	assert_string_equal(rows[3].phone, "+989120000005");
	assert_int_equal(rows[1].id, ir[0].otp_id);
	assert_int_equal(rows[2].id, ir[1].otp_id);
	expect_stats(fx->s, 4, 0, 1, 1, 0);
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
	                           T0 + 1, NULL, &it->vr, as_verified, it) != OTPD_OK)
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
		                                       NULL, &it->ir, as_issued, it),
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
	                                        T0, NULL, &it.vr, as_status, &it),
	                 OTPD_OK);
	while (sem_wait(&finished) != 0)
		;
	assert_int_equal(it.verify_status, OTPD_OTP_EXPIRED);
	assert_int_equal(it.vr.remaining_attempts, UNTOUCHED);
	assert_int_equal(it.vr.user.id, UNTOUCHED);
	/* A wrong code: OTPD_INVALID_CODE with remaining_attempts. */
	int64_t otp_id = issue_ok(fx->s, &defaults, PHONE, 8, T0);
	assert_int_equal(store_otp_verify_start(fx->s, &defaults, PHONE, it.hash, DOMAIN, NULL,
	                                        T0 + 1, NULL, &it.vr, as_status, &it),
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

/* The asynchronous list calls: wait for done, once, and give its status. */
struct list_wait {
	sem_t sem;
	enum otpd_status status;
	atomic_int calls;
};

static void list_waited(void *arg, enum otpd_status status)
{
	struct list_wait *w = arg;

	w->status = status;
	atomic_fetch_add(&w->calls, 1);
	sem_post(&w->sem);
}

static enum otpd_status list_wait(struct list_wait *w)
{
	assert_int_equal(sem_wait(&w->sem), 0);
	assert_int_equal(atomic_load(&w->calls), 1);
	sem_destroy(&w->sem);
	return w->status;
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
	/* No bucket outside the range either. */
	assert_int_equal(stats_total(fx->s).buckets, 3);
	/* Without waiting: the same buckets; an empty range or cap is refused. */
	{
		struct store_stats_bucket ag[8];
		struct list_wait w = {0};

		n = UNTOUCHED;
		assert_int_equal(sem_init(&w.sem, 0, 0), 0);
		assert_int_equal(store_stats_start(fx->s, B0, b9 + BUCKET_MS, ag, 8, &n, list_waited, &w),
		                 OTPD_OK);
		assert_int_equal(list_wait(&w), OTPD_OK);
		assert_int_equal(n, 3);
		expect_bucket(&ag[0], B0, 4, 1, 1, 1, 1);
		expect_bucket(&ag[1], b2, 3, 0, 1, 0, 3);
		expect_bucket(&ag[2], b9, 1, 0, 0, 0, 0);
		assert_int_equal(sem_init(&w.sem, 0, 0), 0);
		w.calls = 0;
		assert_int_equal(store_stats_start(fx->s, B0 + BUCKET_MS, b2, ag, 8, &n, list_waited, &w),
		                 OTPD_OK);
		assert_int_equal(list_wait(&w), OTPD_OK);
		assert_int_equal(n, 0);
		/* an empty range: no bucket; a cap of 0: refused before anything is queued */
		assert_int_equal(sem_init(&w.sem, 0, 0), 0);
		w.calls = 0;
		n = UNTOUCHED;
		assert_int_equal(store_stats_start(fx->s, b2, b2, ag, 8, &n, list_waited, &w), OTPD_OK);
		assert_int_equal(list_wait(&w), OTPD_OK);
		assert_int_equal(n, 0);
		assert_int_equal(store_stats_start(fx->s, B0, b9, ag, 0, &n, list_waited, &w),
		                 OTPD_INTERNAL);
	}
}


/* The writer sums a batch's events per bucket: a batch whose operations
 * fall in more buckets than it keeps at once still counts each once. */
static void test_stats_one_batch(void **state)
{
	struct fixture *fx = *state;
	enum { N = 14, BUCKETS = 7 };
	static struct as_item items[N];
	struct store_stats_bucket got[BUCKETS + 1];
	struct store *s = open_one_writer(fx, 0);
	struct gate gate;
	sem_t finished;
	size_t n = 0;

	assert_int_equal(sem_init(&finished, 0, 0), 0);
	memset(items, 0, sizeof(items));
	gate_init(&gate);
	/* The first holds the writer once it has committed (its done waits);
	 * the others queue behind it meanwhile, and commit as one batch. */
	for (int i = 0; i < N; i++) {
		struct as_item *it = &items[i];

		it->finished = &finished;
		snprintf(it->phone, sizeof(it->phone), "+98912%07d", 2000000 + i);
		hash_of(700 + i, it->hash);
		assert_int_equal(store_otp_issue_start(s, &lenient, it->phone, it->hash,
		                                       B0 + (i % BUCKETS) * BUCKET_MS + i, NULL, &it->ir,
		                                       i ? as_status : gate_hold,
		                                       i ? (void *)it : (void *)&gate),
		                 OTPD_OK);
		if (i == 0)
			gate_wait_entered(&gate);
	}
	gate_release(&gate);
	for (int i = 1; i < N; i++)
		while (sem_wait(&finished) != 0)
			;
	sem_destroy(&finished);
	assert_int_equal(gate.status, OTPD_OK);
	for (int i = 1; i < N; i++)
		assert_int_equal(items[i].verify_status, OTPD_OK);
	store_close(s); /* it says how it batched: the first alone, then the rest */
	gate_destroy(&gate);
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
	struct store_stats_bucket b[8];
	struct store_code_row r;
	int64_t ahead, old1, old2, recent, last, next;
	int deleted = UNTOUCHED;
	size_t n;

	/* By id: one written by a clock that ran ahead, two older than the
	 * retention, one recent: each a code and a stats bucket. */
	ahead = issue_ok(fx->s, &lenient, PHONE, 1, T0 + DAY_MS);
	old1 = issue_ok(fx->s, &lenient, PHONE, 2, T0 - 40 * DAY_MS);
	old2 = issue_ok(fx->s, &lenient, PHONE2, 3, T0 - 35 * DAY_MS);
	recent = issue_ok(fx->s, &lenient, PHONE2, 4, T0 - DAY_MS);
	assert_true(old1 > ahead && old2 > old1 && recent > old2);
	assert_int_equal(stats_total(fx->s).buckets, 4);

	/* A limit below 1 deletes nothing. */
	assert_int_equal(store_history_purge(fx->s, cut, 0, &deleted), OTPD_OK);
	assert_int_equal(deleted, 0);
	assert_int_equal(store_history_purge(fx->s, cut, -1, &deleted), OTPD_OK);
	assert_int_equal(deleted, 0);
	/* At most `limit` rows a call: the old buckets first, ... */
	assert_int_equal(store_history_purge(fx->s, cut, 2, &deleted), OTPD_OK);
	assert_int_equal(deleted, 2);
	assert_int_equal(store_stats(fx->s, INT64_MIN, cut, b, 8, &n), OTPD_OK);
	assert_int_equal(n, 0);
	assert_int_equal(codes_count(fx->s, NULL, -1), 4); /* no code yet */
	/* ... then the codes among the oldest `limit` ids: the one ahead does
	 * not hold back the old ones behind it. */
	assert_int_equal(store_history_purge(fx->s, cut, 2, &deleted), OTPD_OK);
	assert_int_equal(deleted, 1);
	assert_int_equal(store_history_purge(fx->s, cut, 2, &deleted), OTPD_OK);
	assert_int_equal(deleted, 1);
	assert_int_equal(store_history_purge(fx->s, cut, 2, &deleted), OTPD_OK);
	assert_int_equal(deleted, 0);
	assert_false(code_get(fx->s, old1, &r));
	assert_false(code_get(fx->s, old2, &r));
	assert_true(code_get(fx->s, ahead, &r));
	assert_true(code_get(fx->s, recent, &r));
	assert_int_equal(codes_count(fx->s, NULL, -1), 2);
	assert_int_equal(stats_total(fx->s).buckets, 2);
	/* What is left works: PHONE2's current code is the recent one. */
	assert_int_equal(verify(fx->s, &lenient, PHONE2, 4, T0 - DAY_MS + 1, NULL, &vr), OTPD_OK);

	/* Everything older than tomorrow + 1: all of it goes, and an id is
	 * never given again. */
	last = issue_ok(fx->s, &lenient, "+989121112233", 5, T0);
	assert_int_equal(store_history_purge(fx->s, T0 + 2 * DAY_MS, 1000, &deleted), OTPD_OK);
	/* 3 codes and 3 buckets (T0 - 1 d, T0, T0 + 1 d); a bucket is one row
	 * on SQLite, and on PostgreSQL one per connection that counted in it
	 * (T0 - 1 d: a send and a verify), 16 at most. */
	assert_in_range(deleted, 3 + 3, 3 + 3 * 16);
	if (!fx->server)
		assert_int_equal(deleted, 3 + 3);
	assert_int_equal(store_history_purge(fx->s, T0 + 2 * DAY_MS, 1000, &deleted), OTPD_OK);
	assert_int_equal(deleted, 0);
	assert_int_equal(codes_count(fx->s, NULL, -1), 0);
	assert_int_equal(stats_total(fx->s).buckets, 0);
	next = issue_ok(fx->s, &lenient, PHONE, 6, T0);
	assert_true(next > last);
}

/* ---- SMS delivery (store_otp_sms_accepted_start, _delivery_*) ---- */

/* A code's SMS columns: message id (0: none), status and its time (-1: none). */
static void expect_sms(struct store *s, int64_t id, int64_t message_id, int status,
                       int64_t status_ms)
{
	struct store_code_row r;

	if (!code_get(s, id, &r))
		fail_msg("code %lld is not there", (long long)id);
	assert_int_equal(r.sms_message_id, message_id);
	assert_int_equal(r.sms_status, status);
	assert_int_equal(r.sms_status_ms, status_ms);
}

static void test_sms_delivery(void **state)
{
	struct fixture *fx = *state;
	struct store_delivery_status st[3];
	struct store_code_row rows[CODES_MAX];
	struct as_item it;
	sem_t finished;
	int64_t a, b, c;

	a = issue_ok(fx->s, &lenient, PHONE, 1, T0);
	b = issue_ok(fx->s, &lenient, PHONE2, 2, T0 + 1000);
	c = issue_ok(fx->s, &lenient, "+989121112233", 3, T0 + 2000);

	/* Fire and forget (done NULL), then one with done.  The first is
	 * committed soon after, but not necessarily before the second (with a
	 * pool of writers, jobs of different connections commit in any
	 * order): the pending list is polled for it below. */
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

	for (int polls = 0;; polls++) {
		struct store_delivery_pending got[4];
		size_t n = UNTOUCHED;

		assert_int_equal(store_otp_delivery_pending(fx->s, T0 - 1, 4, got, &n), OTPD_OK);
		if (n == 2)
			break;
		assert_true(polls < 1000); /* 10 s; the store's bound is 100 ms */
		usleep(10 * 1000);
	}
	/* Pending: with a message id, no final status, created after since,
	 * oldest first, at most limit; c has no message id. */
	expect_pending(fx->s, T0 - 1, 8, 2, (int64_t[]){a, b}, (int64_t[]){900001, 900002});
	expect_pending(fx->s, T0 - 1, 1, 1, (int64_t[]){a}, (int64_t[]){900001});
	expect_pending(fx->s, T0, 8, 1, (int64_t[]){b}, (int64_t[]){900002});
	expect_pending(fx->s, T0 - 1, 0, 0, NULL, NULL);
	expect_sms(fx->s, a, 900001, -1, T0 + 100);

	/* In one call: a in progress (4), b delivered (10, final). */
	st[0] = (struct store_delivery_status){.otp_id = a, .status = 4, .now_ms = T0 + 5000};
	st[1] = (struct store_delivery_status){.otp_id = b, .status = 10, .now_ms = T0 + 5000};
	st[2] = (struct store_delivery_status){.otp_id = 999999, .status = 10, .now_ms = T0}; /* unknown */
	assert_int_equal(store_otp_delivery_set(fx->s, 3, st), OTPD_OK);
	expect_pending(fx->s, T0 - 1, 8, 1, (int64_t[]){a}, (int64_t[]){900001});
	expect_sms(fx->s, a, 900001, 4, T0 + 5000);
	/* a undelivered (11, final); a late "in progress" does not undo it. */
	st[0] = (struct store_delivery_status){.otp_id = a, .status = 11, .now_ms = T0 + 6000};
	assert_int_equal(store_otp_delivery_set(fx->s, 1, st), OTPD_OK);
	st[0] = (struct store_delivery_status){.otp_id = a, .status = 4, .now_ms = T0 + 7000};
	assert_int_equal(store_otp_delivery_set(fx->s, 1, st), OTPD_OK);
	assert_int_equal(store_otp_delivery_set(fx->s, 0, NULL), OTPD_OK);
	expect_pending(fx->s, T0 - 1, 8, 0, NULL, NULL);
	expect_sms(fx->s, a, 900001, 11, T0 + 6000);
	expect_sms(fx->s, b, 900002, 10, T0 + 5000);
	expect_sms(fx->s, c, 0, -1, -1);
	/* Three codes, and no other (the unknown id made none); the codes
	 * themselves are untouched by all of it. */
	assert_int_equal(codes_all(fx->s, NULL, rows), 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(rows[i].state, OTP_CODE_ACTIVE);
		assert_int_equal(rows[i].attempts, 0);
		assert_int_equal(rows[i].ended_ms, -1);
	}
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


/* ---- the staff console (store_codes_list, store_user_sessions,
 * store_user_update) ---- */

static void expect_page(struct store *s, const struct store_codes_query *q, size_t cap,
                        size_t want_n, const int64_t *want_ids)
{
	struct store_code_row rows[16];
	size_t n = UNTOUCHED;

	assert_true(cap <= 16);
	assert_int_equal(store_codes_list(s, q, rows, cap, &n), OTPD_OK);
	assert_int_equal(n, want_n);
	for (size_t i = 0; i < want_n; i++)
		assert_int_equal(rows[i].id, want_ids[i]);
}

/* Every column but the hash, newest first; by number, by time, paged
 * with the cursor. */
static void test_codes_list(void **state)
{
	struct fixture *fx = *state;
	struct store_delivery_status st = {.status = 10, .now_ms = T0 + 4000};
	struct store_verify_result vr = untouched_verify();
	struct store_codes_query q;
	struct store_code_row rows[16];
	int64_t p[3], o[2];
	size_t n;

	p[0] = issue_ok(fx->s, &lenient, PHONE, 1, T0);          /* replaced by p[1] */
	o[0] = issue_ok(fx->s, &lenient, PHONE2, 2, T0 + 500);   /* cancelled */
	assert_int_equal(store_otp_cancel(fx->s, PHONE2, o[0], T0 + 600), OTPD_OK);
	p[1] = issue_ok(fx->s, &lenient, PHONE, 3, T0 + 1000);   /* a wrong guess, then used */
	expect_invalid(fx->s, PHONE, 9, T0 + 1100, 2);
	assert_int_equal(verify(fx->s, &lenient, PHONE, 3, T0 + 1200, NULL, &vr), OTPD_OK);
	o[1] = issue_ok(fx->s, &defaults, PHONE2, 4, T0 + 1500); /* delivered, active */
	assert_int_equal(store_otp_sms_accepted_start(fx->s, o[1], 77, T0 + 1600, NULL, NULL),
	                 OTPD_OK);
	p[2] = issue_ok(fx->s, &lenient, PHONE, 5, T0 + 2000);   /* after p[1] was used */
	st.otp_id = o[1]; /* after the message id (one writer, in order) */
	assert_int_equal(store_otp_delivery_set(fx->s, 1, &st), OTPD_OK);

	/* Every number: newest first, every column. */
	memset(&q, 0, sizeof(q));
	n = UNTOUCHED;
	assert_int_equal(store_codes_list(fx->s, &q, rows, 16, &n), OTPD_OK);
	assert_int_equal(n, 5);
	const int64_t all[] = {p[2], o[1], p[1], o[0], p[0]};
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(rows[i].id, all[i]);
	/* The asynchronous form gives the same rows; with a number, its codes only. */
	{
		struct store_code_row arows[16];
		struct list_wait w = {0};
		size_t an = UNTOUCHED;

		assert_int_equal(sem_init(&w.sem, 0, 0), 0);
		assert_int_equal(store_codes_list_start(fx->s, &q, arows, 16, &an, list_waited, &w),
		                 OTPD_OK);
		assert_int_equal(list_wait(&w), OTPD_OK);
		assert_int_equal(an, 5);
		for (size_t i = 0; i < 5; i++) {
			assert_int_equal(arows[i].id, rows[i].id);
			assert_string_equal(arows[i].phone, rows[i].phone);
			assert_int_equal(arows[i].created_ms, rows[i].created_ms);
			assert_int_equal(arows[i].ended_ms, rows[i].ended_ms);
			assert_int_equal(arows[i].attempts, rows[i].attempts);
			assert_int_equal(arows[i].state, rows[i].state);
			assert_int_equal(arows[i].sms_message_id, rows[i].sms_message_id);
			assert_int_equal(arows[i].sms_status, rows[i].sms_status);
		}
		q.phone = PHONE2;
		assert_int_equal(sem_init(&w.sem, 0, 0), 0);
		w.calls = 0;
		assert_int_equal(store_codes_list_start(fx->s, &q, arows, 1, &an, list_waited, &w),
		                 OTPD_OK);
		assert_int_equal(list_wait(&w), OTPD_OK);
		assert_int_equal(an, 1);
		assert_int_equal(arows[0].id, o[1]);
		q.phone = NULL;
		an = UNTOUCHED;
		assert_int_equal(store_codes_list_start(fx->s, &q, arows, 0, &an, list_waited, &w),
		                 OTPD_INTERNAL);
		assert_int_equal(an, (size_t)UNTOUCHED);
	}
	/* p[2]: active, untouched. */
	assert_string_equal(rows[0].phone, PHONE);
	assert_int_equal(rows[0].created_ms, T0 + 2000);
	assert_int_equal(rows[0].expires_ms, T0 + 2000 + 300000);
	assert_int_equal(rows[0].ended_ms, -1);
	assert_int_equal(rows[0].attempts, 0);
	assert_int_equal(rows[0].max_attempts, 3);
	assert_int_equal(rows[0].state, OTP_CODE_ACTIVE);
	assert_int_equal(rows[0].sms_message_id, 0);
	assert_int_equal(rows[0].sms_status, -1);
	assert_int_equal(rows[0].sms_status_ms, -1);
	/* o[1]: accepted and delivered. */
	assert_string_equal(rows[1].phone, PHONE2);
	assert_int_equal(rows[1].state, OTP_CODE_ACTIVE);
	assert_int_equal(rows[1].sms_message_id, 77);
	assert_int_equal(rows[1].sms_status, 10);
	assert_int_equal(rows[1].sms_status_ms, T0 + 4000);
	/* p[1]: a wrong guess, then used; p[0] replaced by it; o[0] cancelled. */
	assert_int_equal(rows[2].state, OTP_CODE_USED);
	assert_int_equal(rows[2].attempts, 1);
	assert_int_equal(rows[2].ended_ms, T0 + 1200);
	assert_int_equal(rows[3].state, OTP_CODE_CANCELLED);
	assert_int_equal(rows[3].ended_ms, T0 + 600);
	assert_int_equal(rows[4].state, OTP_CODE_REPLACED);
	assert_int_equal(rows[4].ended_ms, T0 + 1000);
	assert_int_equal(rows[4].expires_ms, T0 + 300000);
	/* "" is every number too. */
	q.phone = "";
	expect_page(fx->s, &q, 16, 5, all);

	/* One number's codes; a number without any has none. */
	q.phone = PHONE;
	expect_page(fx->s, &q, 16, 3, (int64_t[]){p[2], p[1], p[0]});
	q.phone = PHONE2;
	expect_page(fx->s, &q, 16, 2, (int64_t[]){o[1], o[0]});
	q.phone = "+989000000000";
	expect_page(fx->s, &q, 16, 0, NULL);
	q.phone = "' OR 1=1 --";
	expect_page(fx->s, &q, 16, 0, NULL);

	/* Pages: the cursor is the last id of the page before. */
	memset(&q, 0, sizeof(q));
	expect_page(fx->s, &q, 2, 2, (int64_t[]){p[2], o[1]});
	q.before_id = o[1];
	expect_page(fx->s, &q, 2, 2, (int64_t[]){p[1], o[0]});
	q.before_id = o[0];
	expect_page(fx->s, &q, 2, 1, (int64_t[]){p[0]});
	q.before_id = p[0];
	expect_page(fx->s, &q, 2, 0, NULL);
	q.phone = PHONE;
	q.before_id = p[2];
	expect_page(fx->s, &q, 1, 1, (int64_t[]){p[1]});
	q.before_id = p[2] + 1000; /* past the newest: from the newest */
	expect_page(fx->s, &q, 1, 1, (int64_t[]){p[2]});

	/* Created in [since, until); 0 is no bound. */
	memset(&q, 0, sizeof(q));
	q.since_ms = T0 + 1000;
	expect_page(fx->s, &q, 16, 3, (int64_t[]){p[2], o[1], p[1]});
	q.since_ms = 0;
	q.until_ms = T0 + 1000;
	expect_page(fx->s, &q, 16, 2, (int64_t[]){o[0], p[0]});
	q.since_ms = T0 + 500;
	q.until_ms = T0 + 1501;
	expect_page(fx->s, &q, 16, 3, (int64_t[]){o[1], p[1], o[0]});
	q.phone = PHONE2;
	expect_page(fx->s, &q, 16, 2, (int64_t[]){o[1], o[0]});
	q.before_id = o[1];
	expect_page(fx->s, &q, 1, 1, (int64_t[]){o[0]});
	q.phone = PHONE;
	q.before_id = 0;
	q.since_ms = T0 + 3000;
	q.until_ms = T0 + 4000;
	expect_page(fx->s, &q, 16, 0, NULL);
	q.since_ms = T0 - DAY_MS; /* bounds before 1970 and far ahead */
	q.until_ms = INT64_MAX;
	expect_page(fx->s, &q, 16, 3, (int64_t[]){p[2], p[1], p[0]});

	/* A page holds 1 to STORE_PAGE_MAX rows; anything else is refused,
	 * *ret_n untouched. */
	memset(&q, 0, sizeof(q));
	n = UNTOUCHED;
	assert_int_equal(store_codes_list(fx->s, &q, rows, 0, &n), OTPD_INTERNAL);
	assert_int_equal(store_codes_list(fx->s, &q, rows, STORE_PAGE_MAX + 1, &n),
	                 OTPD_INTERNAL);
	assert_int_equal(store_codes_list(fx->s, NULL, rows, 16, &n), OTPD_INTERNAL);
	assert_int_equal(n, (size_t)UNTOUCHED);
	static struct store_code_row big[STORE_PAGE_MAX];
	assert_int_equal(store_codes_list(fx->s, &q, big, STORE_PAGE_MAX, &n), OTPD_OK);
	assert_int_equal(n, 5);
}

/* A user's refresh records, newest first, by family; nobody else's. */
static void test_user_sessions(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), n1 = session_of(2, T0 + 1000);
	struct store_session t0 = session_of(10, T0 + 100), u0 = session_of(20, T0 + 50);
	struct store_session_info r[SESSIONS_MAX];
	size_t n = UNTOUCHED;
	int64_t a, b;

	a = login(fx, PHONE, &s0);
	assert_int_equal(login(fx, PHONE, &t0), a);
	b = login(fx, PHONE2, &u0);
	rotate_ok(fx->s, &s0, a, &n1, GRACE_MS, T0 + 1000);
	assert_int_equal(store_session_revoke(fx->s, t0.jti), OTPD_OK);

	assert_int_equal(sessions_of(fx->s, a, r), 3);
	/* n1: live, in s0's family */
	assert_string_equal(r[0].family, s0.family);
	assert_int_equal(r[0].state, 0);
	assert_int_equal(r[0].created_ms, T0 + 1000);
	assert_int_equal(r[0].expires_ms, n1.expires_ms);
	assert_int_equal(r[0].rotated_ms, -1);
	/* t0: revoked */
	assert_string_equal(r[1].family, t0.family);
	assert_int_equal(r[1].state, 2);
	assert_int_equal(r[1].created_ms, T0 + 100);
	assert_int_equal(r[1].rotated_ms, -1);
	/* s0: rotated */
	assert_string_equal(r[2].family, s0.family);
	assert_int_equal(r[2].state, 1);
	assert_int_equal(r[2].created_ms, T0);
	assert_int_equal(r[2].expires_ms, s0.expires_ms);
	assert_int_equal(r[2].rotated_ms, T0 + 1000);

	assert_int_equal(sessions_of(fx->s, b, r), 1);
	assert_string_equal(r[0].family, u0.family);
	assert_int_equal(sessions_of(fx->s, 424242, r), 0);
	/* The asynchronous form: the same records. */
	{
		struct store_session_info ar[SESSIONS_MAX], want[SESSIONS_MAX];
		struct list_wait w = {0};
		size_t an = UNTOUCHED;

		assert_int_equal(sessions_of(fx->s, a, want), 3);
		assert_int_equal(sem_init(&w.sem, 0, 0), 0);
		assert_int_equal(store_user_sessions_start(fx->s, a, ar, SESSIONS_MAX, &an,
		                                           list_waited, &w), OTPD_OK);
		assert_int_equal(list_wait(&w), OTPD_OK);
		assert_int_equal(an, 3);
		for (size_t i = 0; i < 3; i++) {
			assert_string_equal(ar[i].family, want[i].family);
			assert_int_equal(ar[i].state, want[i].state);
			assert_int_equal(ar[i].created_ms, want[i].created_ms);
			assert_int_equal(ar[i].rotated_ms, want[i].rotated_ms);
		}
		assert_int_equal(sem_init(&w.sem, 0, 0), 0);
		w.calls = 0;
		assert_int_equal(store_user_sessions_start(fx->s, 424242, ar, SESSIONS_MAX, &an,
		                                           list_waited, &w), OTPD_OK);
		assert_int_equal(list_wait(&w), OTPD_OK);
		assert_int_equal(an, 0);
	}

	/* At most cap, the newest; a cap of 1..STORE_PAGE_MAX. */
	assert_int_equal(store_user_sessions(fx->s, a, r, 2, &n), OTPD_OK);
	assert_int_equal(n, 2);
	assert_int_equal(r[0].created_ms, T0 + 1000);
	assert_int_equal(r[1].created_ms, T0 + 100);
	n = UNTOUCHED;
	assert_int_equal(store_user_sessions(fx->s, a, r, 0, &n), OTPD_INTERNAL);
	assert_int_equal(store_user_sessions(fx->s, a, r, STORE_PAGE_MAX + 1, &n),
	                 OTPD_INTERNAL);
	assert_int_equal(n, (size_t)UNTOUCHED);
	/* Purged records are gone from it. */
	int deleted = 0;
	assert_int_equal(store_session_purge(fx->s, T0 + DAY_MS + 500, 100, &deleted), OTPD_OK);
	assert_int_equal(deleted, 3); /* s0, t0 (and b's u0) expired; n1 not */
	assert_int_equal(sessions_of(fx->s, a, r), 1);
	assert_int_equal(r[0].created_ms, T0 + 1000);
	assert_int_equal(sessions_of(fx->s, b, r), 0);
}

/* is_active and is_staff, each only when asked; deactivating revokes every
 * record of the user and no one else's; an unknown id is not found. */
static void test_user_update(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0), n1 = session_of(2, T0 + 1000);
	struct store_session t0 = session_of(10, T0), v0 = session_of(30, T0 + 5000);
	struct store_session v1 = session_of(31, T0 + 6000);
	const struct store_user_change none = {0};
	const struct store_user_change staff = {.set_staff = true, .is_staff = true};
	const struct store_user_change off = {.set_active = true, .is_active = false};
	const struct store_user_change both = {.set_active = true, .is_active = true,
	                                       .set_staff = true, .is_staff = false};
	struct store_session_info r[SESSIONS_MAX];
	struct store_user before, u, got;
	int applied = UNTOUCHED;
	int64_t a, b;

	a = login(fx, PHONE, &s0);
	rotate_ok(fx->s, &s0, a, &n1, GRACE_MS, T0 + 1000);
	b = login(fx, PHONE2, &t0);
	assert_int_equal(store_user_get(fx->s, a, &before), OTPD_OK);

	/* Unknown: not found, ret untouched, nothing changes. */
	u.id = UNTOUCHED;
	assert_int_equal(store_user_update(fx->s, 424242, &off, NULL, &u), OTPD_NOT_FOUND);
	assert_int_equal(u.id, UNTOUCHED);
	assert_int_equal(store_user_update(fx->s, 424242, &none, NULL, NULL), OTPD_NOT_FOUND);
	assert_int_equal(store_user_update(fx->s, a, NULL, NULL, &u), OTPD_INTERNAL);
	assert_int_equal(u.id, UNTOUCHED);

	/* No change: the user as it is. */
	assert_int_equal(store_user_update(fx->s, a, &none, NULL, &u), OTPD_OK);
	assert_memory_equal(&u, &before, sizeof(u));

	/* Staff: only that flag; the sessions go on. */
	assert_int_equal(store_user_update(fx->s, a, &staff, NULL, &u), OTPD_OK);
	assert_true(u.is_staff);
	assert_true(u.is_active);
	assert_int_equal(u.id, a);
	assert_string_equal(u.phone_number, PHONE);
	assert_int_equal(u.created_ms, before.created_ms);
	assert_int_equal(u.last_login_ms, before.last_login_ms);
	assert_int_equal(store_user_get(fx->s, a, &got), OTPD_OK);
	assert_memory_equal(&got, &u, sizeof(u));
	assert_int_equal(family_count(fx->s, a, s0.family, LIVE), 1);

	/* Deactivated: the flag, and every record of the user revoked, of
	 * every state; the other user's untouched; staff kept. */
	assert_int_equal(store_user_update(fx->s, a, &off, NULL, &u), OTPD_OK);
	assert_false(u.is_active);
	assert_true(u.is_staff);
	assert_int_equal(sessions_of(fx->s, a, r), 2);
	assert_int_equal(r[0].state, 2);
	assert_int_equal(r[1].state, 2);
	assert_int_equal(r[1].rotated_ms, T0 + 1000); /* when it was rotated: kept */
	assert_int_equal(family_count(fx->s, b, t0.family, LIVE), 1);
	assert_int_equal(store_user_get(fx->s, b, &got), OTPD_OK);
	assert_true(got.is_active);
	/* Again: nothing more to do. */
	assert_int_equal(store_user_update(fx->s, a, &off, NULL, &u), OTPD_OK);
	assert_false(u.is_active);

	/* Both at once; reactivated, its sessions stay revoked. */
	assert_int_equal(store_user_update(fx->s, a, &both, NULL, &u), OTPD_OK);
	assert_true(u.is_active);
	assert_false(u.is_staff);
	expect_refused(fx, n1.jti, a, GRACE_MS, T0 + 2000, OTPD_INVALID_TOKEN);
	assert_int_equal(fx->reuses, 0);
	/* A new login is recorded live, and rotates. */
	assert_int_equal(login(fx, PHONE, &v0), a);
	rotate_ok(fx->s, &v0, a, &v1, GRACE_MS, T0 + 6000);
	assert_int_equal(family_count(fx->s, a, v0.family, LIVE), 1);

	/* Durable. */
	store_user_update(fx->s, b, &staff, NULL, NULL);
	store_close(fx->s);
	fx->s = NULL;
	assert_int_equal(open_url(fx->url, 1000, &fx->s), OTPD_OK);
	assert_int_equal(store_migrate(fx->s, &applied), OTPD_OK);
	assert_int_equal(store_user_get(fx->s, b, &got), OTPD_OK);
	assert_true(got.is_staff);
	assert_true(got.is_active);
	assert_int_equal(store_user_get(fx->s, a, &got), OTPD_OK);
	assert_true(got.is_active);
	assert_false(got.is_staff);
}

/* ---- the audit log, and the admin's operations (store.h) ---- */

static struct store_audit_entry audit_of(const char *actor, const char *action,
                                         const char *target, const char *client,
                                         int64_t time_ms)
{
	struct store_audit_entry e;

	memset(&e, 0, sizeof(e));
	e.id = UNTOUCHED;
	e.time_ms = time_ms;
	snprintf(e.actor, sizeof(e.actor), "%s", actor);
	snprintf(e.action, sizeof(e.action), "%s", action);
	snprintf(e.target, sizeof(e.target), "%s", target);
	if (client) {
		snprintf(e.client, sizeof(e.client), "%s", client);
		e.has_client = true;
	}
	return e;
}

/* Every entry, newest first, paged by 2 (the cursor is the last id). */
static size_t audit_all(struct store *s, struct store_audit_entry *ret, size_t cap)
{
	size_t total = 0, n = 0;
	int64_t before = 0;

	do {
		n = UNTOUCHED;
		assert_int_equal(store_audit_list(s, before, ret + total, 2, &n), OTPD_OK);
		assert_true(n <= 2);
		total += n;
		assert_true(total <= cap);
		if (n)
			before = ret[total - 1].id;
	} while (n == 2);
	return total;
}

static void test_audit_log(void **state)
{
	struct fixture *fx = *state;
	struct store_audit_entry a = audit_of("cli", "user.set_staff", "user:1", NULL, T0);
	struct store_audit_entry b = audit_of("user:7", "user.deactivate", "user:2",
	                                      "2001:db8::1", T0 + 1);
	struct store_audit_entry c = audit_of("user:7", "codes.search_by_code", PHONE,
	                                      "127.0.0.1", T0 + 2);
	struct store_audit_entry bad = audit_of("", "user.activate", "user:1", NULL, T0);
	struct store_audit_entry got[8];
	size_t n = UNTOUCHED;

	/* Empty. */
	assert_int_equal(store_audit_list(fx->s, 0, got, 8, &n), OTPD_OK);
	assert_int_equal(n, 0);
	/* Refused: no actor, no action, a page out of bounds; nothing written. */
	assert_int_equal(store_audit_append(fx->s, &bad), OTPD_INTERNAL);
	bad = audit_of("cli", "", "user:1", NULL, T0);
	assert_int_equal(store_audit_append(fx->s, &bad), OTPD_INTERNAL);
	assert_int_equal(store_audit_append(fx->s, NULL), OTPD_INTERNAL);
	assert_int_equal(store_audit_list(fx->s, 0, got, 0, &n), OTPD_INTERNAL);
	assert_int_equal(store_audit_list(fx->s, 0, got, STORE_PAGE_MAX + 1, &n), OTPD_INTERNAL);

	assert_int_equal(store_audit_append(fx->s, &a), OTPD_OK);
	assert_int_equal(store_audit_append(fx->s, &b), OTPD_OK);
	assert_int_equal(store_audit_append(fx->s, &c), OTPD_OK);
	/* Newest first, every field as given, paged. */
	assert_int_equal(audit_all(fx->s, got, 8), 3);
	assert_true(got[0].id > got[1].id && got[1].id > got[2].id && got[2].id > 0);
	assert_string_equal(got[0].action, "codes.search_by_code");
	assert_string_equal(got[0].target, PHONE);
	assert_string_equal(got[0].client, "127.0.0.1");
	assert_true(got[0].has_client);
	assert_int_equal(got[1].time_ms, T0 + 1);
	assert_string_equal(got[1].actor, "user:7");
	assert_string_equal(got[1].client, "2001:db8::1");
	assert_string_equal(got[2].actor, "cli");
	assert_string_equal(got[2].action, "user.set_staff");
	assert_string_equal(got[2].target, "user:1");
	assert_false(got[2].has_client);
	assert_string_equal(got[2].client, "");
	/* The cursor: older than an id. */
	assert_int_equal(store_audit_list(fx->s, got[1].id, got + 4, 4, &n), OTPD_OK);
	assert_int_equal(n, 1);
	assert_int_equal(got[4].id, got[2].id);

	/* Durable. */
	store_close(fx->s);
	fx->s = NULL;
	assert_int_equal(open_url(fx->url, 1000, &fx->s), OTPD_OK);
	assert_int_equal(audit_all(fx->s, got, 8), 3);
}

static void test_user_update_audited(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0);
	const struct store_user_change off = {.set_active = true, .is_active = false};
	struct store_audit_entry e = audit_of("user:9", "user.deactivate", "user:x", "10.0.0.1",
	                                      T0 + 5);
	struct store_audit_entry got[4];
	struct store_user u;
	int64_t a;

	a = login(fx, PHONE, &s0);
	/* Unknown user: nothing changes, and no entry. */
	assert_int_equal(store_user_update(fx->s, 424242, &off, &e, &u), OTPD_NOT_FOUND);
	assert_int_equal(audit_all(fx->s, got, 4), 0);
	/* A bad entry refuses the change too. */
	struct store_audit_entry bad = audit_of("", "user.deactivate", "", NULL, T0);
	assert_int_equal(store_user_update(fx->s, a, &off, &bad, &u), OTPD_INTERNAL);
	assert_int_equal(store_user_get(fx->s, a, &u), OTPD_OK);
	assert_true(u.is_active);
	/* The change and its entry. */
	assert_int_equal(store_user_update(fx->s, a, &off, &e, &u), OTPD_OK);
	assert_false(u.is_active);
	assert_int_equal(family_count(fx->s, a, s0.family, LIVE), 0);
	assert_int_equal(audit_all(fx->s, got, 4), 1);
	assert_string_equal(got[0].action, "user.deactivate");
	assert_string_equal(got[0].actor, "user:9");
	assert_int_equal(got[0].time_ms, T0 + 5);
}

static void test_user_update_by_phone(void **state)
{
	struct fixture *fx = *state;
	struct store_session s0 = session_of(1, T0);
	const struct store_user_change staff = {.set_staff = true, .is_staff = true};
	const struct store_user_change off = {.set_active = true, .is_active = false};
	struct store_audit_entry e = audit_of("cli", "user.set_staff", PHONE2, NULL, T0 + 10);
	struct store_audit_entry got[4];
	struct store_user u, v;
	bool created = true;
	int64_t a;

	/* A number that never logged in: not found without create. */
	u.id = UNTOUCHED;
	assert_int_equal(store_user_update_by_phone(fx->s, PHONE2, &off, false, NULL, &e, T0,
	                                            &u, &created),
	                 OTPD_NOT_FOUND);
	assert_int_equal(u.id, UNTOUCHED);
	assert_int_equal(store_user_get_by_phone(fx->s, PHONE2, &u), OTPD_NOT_FOUND);
	assert_int_equal(audit_all(fx->s, got, 4), 0);
	/* ... created with create, as a first login would make it, unlogged. */
	assert_int_equal(store_user_update_by_phone(fx->s, PHONE2, &staff, true, DOMAIN, &e,
	                                            T0 + 10, &u, &created),
	                 OTPD_OK);
	assert_true(created);
	assert_true(u.id > 0);
	assert_true(u.is_staff);
	assert_true(u.is_active);
	assert_string_equal(u.phone_number, PHONE2);
	assert_string_equal(u.username, "989351112233");
	assert_string_equal(u.email, "989351112233@" DOMAIN);
	assert_int_equal(u.created_ms, T0 + 10);
	assert_int_equal(u.last_login_ms, -1);
	assert_int_equal(store_user_get_by_phone(fx->s, PHONE2, &v), OTPD_OK);
	assert_memory_equal(&u, &v, sizeof(u));
	assert_int_equal(audit_all(fx->s, got, 4), 1);
	assert_string_equal(got[0].target, PHONE2);
	/* Again: the same user, not created. */
	assert_int_equal(store_user_update_by_phone(fx->s, PHONE2, &staff, true, DOMAIN, &e,
	                                            T0 + 20, &v, &created),
	                 OTPD_OK);
	assert_false(created);
	assert_int_equal(v.id, u.id);
	assert_int_equal(v.created_ms, T0 + 10);
	/* Its first login finds it (no second user), and logs in. */
	struct store_verify_result vr = untouched_verify();
	issue_ok(fx->s, &lenient, PHONE2, 3, T0 + 30);
	assert_int_equal(verify(fx->s, &lenient, PHONE2, 3, T0 + 30, NULL, &vr), OTPD_OK);
	assert_false(vr.is_new_user);
	assert_int_equal(vr.user.id, u.id);
	assert_true(vr.user.is_staff);

	/* A known number: deactivated by number, its sessions revoked. */
	a = login(fx, PHONE, &s0);
	assert_int_equal(store_user_update_by_phone(fx->s, PHONE, &off, false, NULL, NULL, T0,
	                                            &u, NULL),
	                 OTPD_OK);
	assert_int_equal(u.id, a);
	assert_false(u.is_active);
	assert_int_equal(family_count(fx->s, a, s0.family, LIVE), 0);
	assert_int_equal(audit_all(fx->s, got, 4), 2); /* that one had no entry */
	/* Refused: no number, no change, create without a domain. */
	assert_int_equal(store_user_update_by_phone(fx->s, NULL, &off, false, NULL, NULL, T0,
	                                            &u, NULL),
	                 OTPD_INTERNAL);
	assert_int_equal(store_user_update_by_phone(fx->s, PHONE, NULL, false, NULL, NULL, T0,
	                                            &u, NULL),
	                 OTPD_INTERNAL);
	assert_int_equal(store_user_update_by_phone(fx->s, PHONE, &off, true, NULL, NULL, T0,
	                                            &u, NULL),
	                 OTPD_INTERNAL);
}

/* set-staff of a new number, raced by threads on one or two handles
 * (two nodes), and by its first login: one user, created once. */
struct staff_racer {
	struct store *s;
	pthread_barrier_t *start;
	bool login;
	enum otpd_status status;
	bool created;
	struct store_user user;
	struct store_verify_result vr;
};

static void *staff_race_one(void *arg)
{
	struct staff_racer *r = arg;
	const struct store_user_change staff = {.set_staff = true, .is_staff = true};
	struct store_audit_entry e = audit_of("cli", "user.set_staff", PHONE, NULL, T0 + 1);

	pthread_barrier_wait(r->start);
	if (r->login)
		r->status = verify(r->s, &lenient, PHONE, 1, T0 + 1, NULL, &r->vr);
	else
		r->status = store_user_update_by_phone(r->s, PHONE, &staff, true, DOMAIN, &e,
		                                       T0 + 1, &r->user, &r->created);
	return NULL;
}

static void race_set_staff(struct fixture *fx, int nstores)
{
	enum { N = 8 };
	struct staff_racer rs[N];
	struct store *other = NULL;
	pthread_barrier_t start;
	pthread_t t[N];
	struct store_audit_entry got[N + 1];
	struct store_users_query q = {.phone = PHONE};
	struct store_user users[4];
	int created = 0, new_users = 0;
	int64_t id = 0;
	size_t n = 0;

	if (nstores > 1)
		assert_int_equal(open_url(fx->url, 30000, &other), OTPD_OK);
	issue_ok(fx->s, &lenient, PHONE, 1, T0);
	assert_int_equal(pthread_barrier_init(&start, NULL, N), 0);
	for (int i = 0; i < N; i++) {
		memset(&rs[i], 0, sizeof(rs[i]));
		rs[i].s = other && i % 2 ? other : fx->s;
		rs[i].start = &start;
		rs[i].login = i == N - 1; /* and the number's first login */
		rs[i].vr = untouched_verify();
		assert_int_equal(pthread_create(&t[i], NULL, staff_race_one, &rs[i]), 0);
	}
	for (int i = 0; i < N; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&start);
	store_close(other);
	for (int i = 0; i < N; i++) {
		int64_t uid = rs[i].login ? rs[i].vr.user.id : rs[i].user.id;

		assert_int_equal(rs[i].status, OTPD_OK);
		if (!id)
			id = uid;
		assert_int_equal(uid, id);
		created += !rs[i].login && rs[i].created;
		new_users += rs[i].login && rs[i].vr.is_new_user;
	}
	assert_int_equal(created + new_users, 1);
	assert_int_equal(store_users_list(fx->s, &q, users, 4, &n), OTPD_OK);
	assert_int_equal(n, 1);
	assert_true(users[0].is_staff);
	/* Every set-staff has its entry. */
	assert_int_equal(audit_all(fx->s, got, N + 1), N - 1);
}

static void test_race_set_staff(void **state) { race_set_staff(*state, 1); }
static void test_race_set_staff_2(void **state) { race_set_staff(*state, 2); }

static void make_user(struct fixture *fx, const char *phone, int64_t now_ms)
{
	const struct store_user_change none = {0};

	assert_int_equal(store_user_update_by_phone(fx->s, phone, &none, true, DOMAIN, NULL,
	                                            now_ms, NULL, NULL),
	                 OTPD_OK);
}

static void test_users_list(void **state)
{
	struct fixture *fx = *state;
	static const char *const phones[] = {"+989121000001", "+989121000002", "+989351000003",
	                                     "+989121000004", "+989901000005"};
	struct store_users_query q;
	struct store_user u[8], one;
	int64_t ids[5];
	size_t n;

	for (int i = 0; i < 5; i++) {
		make_user(fx, phones[i], T0 + i);
		assert_int_equal(store_user_get_by_phone(fx->s, phones[i], &one), OTPD_OK);
		ids[i] = one.id;
	}
	/* Every user, newest first, paged by 2 through the id cursor. */
	memset(&q, 0, sizeof(q));
	assert_int_equal(store_users_list(fx->s, &q, u, 2, &n), OTPD_OK);
	assert_int_equal(n, 2);
	assert_int_equal(u[0].id, ids[4]);
	assert_int_equal(u[1].id, ids[3]);
	q.before_id = u[1].id;
	assert_int_equal(store_users_list(fx->s, &q, u, 2, &n), OTPD_OK);
	assert_int_equal(n, 2);
	assert_int_equal(u[0].id, ids[2]);
	assert_int_equal(u[1].id, ids[1]);
	q.before_id = u[1].id;
	assert_int_equal(store_users_list(fx->s, &q, u, 2, &n), OTPD_OK);
	assert_int_equal(n, 1);
	assert_int_equal(u[0].id, ids[0]);
	assert_string_equal(u[0].phone_number, phones[0]);

	/* By number: exact. */
	memset(&q, 0, sizeof(q));
	q.phone = phones[2];
	assert_int_equal(store_users_list(fx->s, &q, u, 8, &n), OTPD_OK);
	assert_int_equal(n, 1);
	assert_int_equal(u[0].id, ids[2]);
	q.phone = "+989121000009";
	assert_int_equal(store_users_list(fx->s, &q, u, 8, &n), OTPD_OK);
	assert_int_equal(n, 0);
	q.phone = phones[2];
	q.before_id = ids[2]; /* past it */
	assert_int_equal(store_users_list(fx->s, &q, u, 8, &n), OTPD_OK);
	assert_int_equal(n, 0);

	/* By username prefix: in username order, after the cursor. */
	memset(&q, 0, sizeof(q));
	q.username_prefix = "98912";
	assert_int_equal(store_users_list(fx->s, &q, u, 8, &n), OTPD_OK);
	assert_int_equal(n, 3);
	assert_string_equal(u[0].username, "989121000001");
	assert_string_equal(u[1].username, "989121000002");
	assert_string_equal(u[2].username, "989121000004");
	assert_int_equal(store_users_list(fx->s, &q, u, 2, &n), OTPD_OK);
	assert_int_equal(n, 2);
	q.after_username = "989121000002";
	assert_int_equal(store_users_list(fx->s, &q, u, 2, &n), OTPD_OK);
	assert_int_equal(n, 1);
	assert_string_equal(u[0].username, "989121000004");
	q.after_username = NULL;
	q.username_prefix = "989901000005"; /* the whole username */
	assert_int_equal(store_users_list(fx->s, &q, u, 8, &n), OTPD_OK);
	assert_int_equal(n, 1);
	assert_int_equal(u[0].id, ids[4]);
	q.username_prefix = "9899"; /* bytewise: 98990... only */
	assert_int_equal(store_users_list(fx->s, &q, u, 8, &n), OTPD_OK);
	assert_int_equal(n, 1);
	q.username_prefix = "9891200";
	assert_int_equal(store_users_list(fx->s, &q, u, 8, &n), OTPD_OK);
	assert_int_equal(n, 0);
	/* Characters no username has, or SQL: nobody. */
	q.username_prefix = "98912%";
	assert_int_equal(store_users_list(fx->s, &q, u, 8, &n), OTPD_OK);
	assert_int_equal(n, 0);
	q.username_prefix = "' OR 1=1 --";
	assert_int_equal(store_users_list(fx->s, &q, u, 8, &n), OTPD_OK);
	assert_int_equal(n, 0);
	q.username_prefix = "\xdb\xb9"; /* Persian 9 */
	assert_int_equal(store_users_list(fx->s, &q, u, 8, &n), OTPD_OK);
	assert_int_equal(n, 0);
	/* Page bounds. */
	assert_int_equal(store_users_list(fx->s, &q, u, 0, &n), OTPD_INTERNAL);
	assert_int_equal(store_users_list(fx->s, NULL, u, 8, &n), OTPD_INTERNAL);
}

static void test_codes_match(void **state)
{
	struct fixture *fx = *state;
	struct store_audit_entry e = audit_of("user:1", "codes.search_by_code", PHONE,
	                                      "127.0.0.1", T0 + 100000);
	struct store_verify_result vr = untouched_verify();
	struct store_audit_entry got[8];
	struct store_code_row r[8];
	uint8_t h[OTP_HASH_LEN];
	int64_t used, replaced, exhausted, expired, valid, other;
	size_t n;

	/* One of each end, all of them with seed 5's hash but the wrong guesses. */
	used = issue_ok(fx->s, &lenient, PHONE, 5, T0);
	assert_int_equal(verify(fx->s, &lenient, PHONE, 5, T0 + 10, NULL, &vr), OTPD_OK);
	replaced = issue_ok(fx->s, &lenient, PHONE, 5, T0 + 20);
	exhausted = issue_ok(fx->s, &lenient, PHONE, 5, T0 + 30); /* replaces the one before */
	for (int i = 0; i < 3; i++)
		verify(fx->s, &lenient, PHONE, 6, T0 + 31 + i, NULL, &vr);
	expired = issue_ok(fx->s, &lenient, PHONE, 5, T0 + 40);
	other = issue_ok(fx->s, &lenient, PHONE2, 5, T0 + 50); /* another number's */
	(void)other;

	/* expired is still the current code: valid until T0 + 40 + 300000. */
	hash_of(5, h);
	n = UNTOUCHED;
	assert_int_equal(store_codes_match(fx->s, PHONE, h, T0 + 100000, &e, r, 8, &n), OTPD_OK);
	assert_int_equal(n, 3);
	assert_int_equal(r[0].id, exhausted);
	assert_int_equal(r[0].attempts, 3);
	assert_int_equal(r[1].id, replaced);
	assert_int_equal(r[1].state, OTP_CODE_REPLACED);
	assert_int_equal(r[2].id, used);
	assert_int_equal(r[2].state, OTP_CODE_USED);
	/* Once expired, it matches too. */
	assert_int_equal(store_codes_match(fx->s, PHONE, h, T0 + 40 + 300000, &e, r, 8, &n),
	                 OTPD_OK);
	assert_int_equal(n, 4);
	assert_int_equal(r[0].id, expired);
	assert_int_equal(r[0].state, OTP_CODE_ACTIVE);
	/* A valid code never matches: a fresh one, right hash. */
	valid = issue_ok(fx->s, &lenient, PHONE2, 7, T0 + 60);
	hash_of(7, h);
	assert_int_equal(store_codes_match(fx->s, PHONE2, h, T0 + 61, &e, r, 8, &n), OTPD_OK);
	assert_int_equal(n, 0);
	/* ... until it is used. */
	assert_int_equal(verify(fx->s, &lenient, PHONE2, 7, T0 + 62, NULL, &vr), OTPD_OK);
	assert_int_equal(store_codes_match(fx->s, PHONE2, h, T0 + 63, &e, r, 8, &n), OTPD_OK);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].id, valid);
	/* A wrong hash, or another number: nothing. */
	hash_of(8, h);
	assert_int_equal(store_codes_match(fx->s, PHONE, h, T0 + 100000, &e, r, 8, &n), OTPD_OK);
	assert_int_equal(n, 0);
	hash_of(5, h);
	assert_int_equal(store_codes_match(fx->s, "+989000000000", h, T0 + 100000, &e, r, 8, &n),
	                 OTPD_OK);
	assert_int_equal(n, 0);
	/* A page of one. */
	assert_int_equal(store_codes_match(fx->s, PHONE, h, T0 + 100000, &e, r, 1, &n), OTPD_OK);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].id, exhausted);
	/* Every search has its entry, whatever it found; none without one. */
	assert_int_equal(audit_all(fx->s, got, 8), 7);
	assert_string_equal(got[0].action, "codes.search_by_code");
	assert_int_equal(store_codes_match(fx->s, PHONE, h, T0, NULL, r, 8, &n), OTPD_INTERNAL);
	assert_int_equal(store_codes_match(fx->s, PHONE, h, T0, &e, r, 0, &n), OTPD_INTERNAL);
	assert_int_equal(audit_all(fx->s, got, 8), 7);
}

static void test_purge_count(void **state)
{
	struct fixture *fx = *state;
	struct store_purge_counts pc = {UNTOUCHED, UNTOUCHED, UNTOUCHED};
	struct store_session s0 = session_of(1, T0);
	int deleted = 0;

	/* Codes at T0, T0 + 1 day, T0 + 2 days; a session expiring at its
	 * expires_ms. */
	login(fx, PHONE, &s0);
	issue_ok(fx->s, &lenient, PHONE2, 2, T0 + DAY_MS);
	issue_ok(fx->s, &lenient, PHONE2, 3, T0 + 2 * DAY_MS);
	assert_int_equal(store_purge_count(fx->s, T0 + DAY_MS + 1, s0.expires_ms + 1, 1000, &pc),
	                 OTPD_OK);
	assert_int_equal(pc.codes, 2);
	assert_true(pc.stats >= 2); /* the buckets of T0 and T0 + 1 day (PostgreSQL: per slot) */
	assert_int_equal(pc.sessions, 1);
	/* Bounded by max. */
	assert_int_equal(store_purge_count(fx->s, T0 + 3 * DAY_MS, s0.expires_ms + 1, 1, &pc),
	                 OTPD_OK);
	assert_int_equal(pc.codes, 1);
	assert_int_equal(pc.stats, 1);
	/* Nothing old enough (T0's bucket starts at most 5 minutes before it). */
	assert_int_equal(store_purge_count(fx->s, T0 - STORE_STATS_BUCKET_MS, s0.expires_ms, 1000,
	                                   &pc),
	                 OTPD_OK);
	assert_int_equal(pc.codes, 0);
	assert_int_equal(pc.stats, 0);
	assert_int_equal(pc.sessions, 0);
	assert_int_equal(store_purge_count(fx->s, T0, T0, 0, &pc), OTPD_INTERNAL);
	/* It deletes nothing: the purge then deletes what it counted. */
	assert_int_equal(store_history_purge(fx->s, T0 + DAY_MS + 1, 1000, &deleted), OTPD_OK);
	assert_true(deleted >= 4);
	assert_int_equal(store_purge_count(fx->s, T0 + DAY_MS + 1, T0, 1000, &pc), OTPD_OK);
	assert_int_equal(pc.codes, 0);
	assert_int_equal(pc.stats, 0);
}

/* The admin API's asynchronous forms: queued, answered once, rows and
 * counts written before done. */
struct async_wait {
	sem_t sem;
	enum otpd_status status;
	int calls;
};

static void async_done(void *arg, enum otpd_status status)
{
	struct async_wait *w = arg;

	w->status = status;
	w->calls++;
	sem_post(&w->sem);
}

static enum otpd_status async_wait(struct async_wait *w, enum otpd_status started)
{
	assert_int_equal(started, OTPD_OK);
	while (sem_wait(&w->sem) != 0)
		;
	assert_int_equal(w->calls, 1);
	w->calls = 0;
	return w->status;
}

static void test_admin_async(void **state)
{
	struct fixture *fx = *state;
	const struct store_user_change staff = {.set_staff = true, .is_staff = true};
	struct store_audit_entry e = audit_of("user:1", "user.set_staff", "user:2", "::1", T0);
	struct store_users_query q = {.phone = PHONE};
	struct store_codes_query cq = {.phone = PHONE};
	struct store_audit_entry got[4];
	struct store_code_row rows[4];
	struct store_session_info si[4];
	struct store_stats_bucket b[4];
	struct store_user u[2];
	struct async_wait w = {0};
	uint8_t h[OTP_HASH_LEN];
	size_t n;
	int64_t id;

	assert_int_equal(sem_init(&w.sem, 0, 0), 0);
	make_user(fx, PHONE, T0);
	issue_ok(fx->s, &lenient, PHONE, 1, T0);
	assert_int_equal(store_user_get_by_phone(fx->s, PHONE, &u[1]), OTPD_OK);
	id = u[1].id;

	assert_int_equal(async_wait(&w, store_user_update_start(fx->s, id, &staff, &e, &u[0],
	                                                        async_done, &w)),
	                 OTPD_OK);
	assert_true(u[0].is_staff);
	assert_int_equal(async_wait(&w, store_user_update_start(fx->s, 424242, &staff, &e, &u[0],
	                                                        async_done, &w)),
	                 OTPD_NOT_FOUND);
	n = UNTOUCHED;
	assert_int_equal(async_wait(&w, store_audit_list_start(fx->s, 0, got, 4, &n, async_done,
	                                                       &w)),
	                 OTPD_OK);
	assert_int_equal(n, 1);
	assert_string_equal(got[0].client, "::1");
	assert_int_equal(async_wait(&w, store_audit_append_start(fx->s, &e, async_done, &w)),
	                 OTPD_OK);
	assert_int_equal(async_wait(&w, store_user_get_by_phone_start(fx->s, PHONE, &u[1],
	                                                              async_done, &w)),
	                 OTPD_OK);
	assert_true(u[1].is_staff);
	assert_int_equal(async_wait(&w, store_user_get_by_phone_start(fx->s, PHONE2, &u[1],
	                                                              async_done, &w)),
	                 OTPD_NOT_FOUND);
	n = UNTOUCHED;
	assert_int_equal(async_wait(&w, store_users_list_start(fx->s, &q, u, 2, &n, async_done,
	                                                       &w)),
	                 OTPD_OK);
	assert_int_equal(n, 1);
	q.phone = NULL;
	q.username_prefix = "%";
	n = UNTOUCHED;
	assert_int_equal(async_wait(&w, store_users_list_start(fx->s, &q, u, 2, &n, async_done,
	                                                       &w)),
	                 OTPD_OK);
	assert_int_equal(n, 0);
	n = UNTOUCHED;
	assert_int_equal(async_wait(&w, store_codes_list_start(fx->s, &cq, rows, 4, &n,
	                                                       async_done, &w)),
	                 OTPD_OK);
	assert_int_equal(n, 1);
	hash_of(1, h);
	n = UNTOUCHED;
	assert_int_equal(async_wait(&w, store_codes_match_start(fx->s, PHONE, h, T0 + 1, &e, rows,
	                                                        4, &n, async_done, &w)),
	                 OTPD_OK);
	assert_int_equal(n, 0); /* still valid */
	n = UNTOUCHED;
	assert_int_equal(async_wait(&w, store_user_sessions_start(fx->s, id, si, 4, &n,
	                                                          async_done, &w)),
	                 OTPD_OK);
	assert_int_equal(n, 0);
	n = UNTOUCHED;
	assert_int_equal(async_wait(&w, store_stats_start(fx->s, T0 - DAY_MS, T0 + DAY_MS, b, 4,
	                                                  &n, async_done, &w)),
	                 OTPD_OK);
	assert_int_equal(n, 1);
	assert_int_equal(b[0].sends, 1);
	/* Refused before anything is queued: done is never called. */
	assert_int_equal(store_users_list_start(fx->s, &q, u, 0, &n, async_done, &w),
	                 OTPD_INTERNAL);
	assert_int_equal(store_codes_match_start(fx->s, PHONE, h, T0, NULL, rows, 4, &n,
	                                         async_done, &w),
	                 OTPD_INTERNAL);
	assert_int_equal(store_stats_start(fx->s, T0, T0 + 1, b, 0, &n, async_done, &w),
	                 OTPD_INTERNAL);
	assert_int_equal(w.calls, 0);
	sem_destroy(&w.sem);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_open_refused),
		T(test_migrate_idempotent),
		T(test_not_migrated),
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
		T(test_rotate_deactivated_user),
		T(test_revoke),
		T(test_purge),
		T(test_sessions_survive_reopen),
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
		T(test_group_commit_job_fails_alone),
		T(test_queue_full_is_unavailable),
		T(test_async_start),
		T(test_async_answers),
		T(test_stats_buckets),
		T(test_stats_one_batch),
		T(test_history_purge),
		T(test_sms_delivery),
		T(test_sms_accepted_alone),
		T(test_codes_list),
		T(test_user_sessions),
		T(test_user_update),
		T(test_audit_log),
		T(test_user_update_audited),
		T(test_user_update_by_phone),
		T(test_race_set_staff),
		T(test_race_set_staff_2),
		T(test_users_list),
		T(test_codes_match),
		T(test_purge_count),
		T(test_admin_async),
	};
	const char *url = getenv("OTPD_TEST_DATABASE_URL");

	if (url && url[0] && !fixture_is_postgres_url(url)) {
		fprintf(stderr, "OTPD_TEST_DATABASE_URL: expected postgres://... or "
		                "postgresql://... (unset: a temporary SQLite file per test)\n");
		return 1;
	}
	test_server = url && url[0] ? url : NULL;
	return cmocka_run_group_tests_name(test_server ? "store (postgres)" : "store (sqlite)",
	                                   tests, NULL, NULL);
}
