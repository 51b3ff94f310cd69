/* store/rules.c: the decisions of the store's transactions that do not
 * depend on a database (every dialect asks them): the stats bucket of a
 * time, whether a send replaces the current code, the policy a verify
 * judges with and when a wrong guess ends the code, a first login's user,
 * and the steps of a refresh rotation (store_session_rotate() in store.h,
 * docs/API.md §3 "Tokens"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <string.h>

#include "store/rules.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define T0 1700000000000LL /* an arbitrary "now" in epoch milliseconds */
#define B STORE_STATS_BUCKET_MS
#define DAY_MS 86400000LL
#define GRACE_MS 10000LL

/* OTP_EXPIRY_TIME 300, OTP_MAX_ATTEMPTS 3, OTP_SEND_LIMIT 3,
 * OTP_SEND_WINDOW 120 (docs/API.md §1). */
static const struct otp_policy defaults = {
	.expiry_ms = 300000,
	.max_attempts = 3,
	.send_limit = 3,
	.send_window_ms = 120000,
};

/* ---- store_rules_bucket ---- */

/* The start of the bucket: a multiple of STORE_STATS_BUCKET_MS at or
 * below the time, also before 1970 (floor, not truncation). */
static void test_bucket(void **state)
{
	static const struct {
		int64_t ms, want;
	} cases[] = {
		{0, 0},
		{1, 0},
		{B - 1, 0},
		{B, B},
		{B + 1, B},
		{T0, T0 - T0 % B},
		{T0 - T0 % B, T0 - T0 % B},
		{T0 - T0 % B - 1, T0 - T0 % B - B},
		/* before the epoch */
		{-1, -B},
		{-B + 1, -B},
		{-B, -B},
		{-B - 1, -2 * B},
		{-T0, -T0 - (B - T0 % B)},
		/* far ahead: no overflow */
		{INT64_MAX, INT64_MAX - INT64_MAX % B},
	};

	(void)state;
	assert_int_equal(T0 % B, 200000); /* T0 is inside a bucket, not at its start */
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		int64_t got = store_rules_bucket(cases[i].ms);

		if (got != cases[i].want)
			fail_msg("bucket(%lld) = %lld, expected %lld", (long long)cases[i].ms,
			         (long long)got, (long long)cases[i].want);
		assert_int_equal(got % B, 0);
		assert_true(got <= cases[i].ms && cases[i].ms - got < B);
	}
}

/* ---- store_rules_code_live ---- */

static struct store_rules_code live_code(void)
{
	struct store_rules_code c = {
		.created_ms = T0,
		.expires_ms = T0 + 300000,
		.attempts = 0,
		.max_attempts = 3,
		.state = OTP_CODE_ACTIVE,
	};

	return c;
}

static void test_code_live(void **state)
{
	static const int over[] = {OTP_CODE_USED, OTP_CODE_CANCELLED, OTP_CODE_REPLACED};
	struct store_rules_code c = live_code();

	(void)state;
	/* Active, attempts left, not expired: until expires_ms (excluded). */
	assert_true(store_rules_code_live(&c, T0));
	assert_true(store_rules_code_live(&c, c.expires_ms - 1));
	assert_false(store_rules_code_live(&c, c.expires_ms));
	assert_false(store_rules_code_live(&c, c.expires_ms + DAY_MS));
	/* A guess or two used: still live; the last one used: over. */
	c.attempts = 2;
	assert_true(store_rules_code_live(&c, T0));
	c.attempts = 3;
	assert_false(store_rules_code_live(&c, T0));
	c.attempts = 4; /* max_attempts lowered below the count */
	assert_false(store_rules_code_live(&c, T0));
	/* Used, cancelled, replaced: over, whatever else. */
	for (size_t i = 0; i < ARRAY_LEN(over); i++) {
		c = live_code();
		c.state = over[i];
		assert_false(store_rules_code_live(&c, T0));
	}
}

/* ---- store_rules_verify_policy ---- */

static void test_verify_policy(void **state)
{
	struct otp_policy five = defaults, got;

	(void)state;
	five.max_attempts = 5;
	/* The code's attempts when the policy allows more now... */
	got = store_rules_verify_policy(&five, 3);
	assert_int_equal(got.max_attempts, 3);
	/* ... the policy's when it allows fewer (a lowered OTP_MAX_ATTEMPTS
	 * applies at once), and when they are the same. */
	got = store_rules_verify_policy(&defaults, 5);
	assert_int_equal(got.max_attempts, 3);
	got = store_rules_verify_policy(&defaults, 3);
	assert_int_equal(got.max_attempts, 3);
	got = store_rules_verify_policy(&defaults, 1);
	assert_int_equal(got.max_attempts, 1);
	/* The rest of the policy is p's, and p itself is not changed. */
	got = store_rules_verify_policy(&five, 2);
	assert_int_equal(got.expiry_ms, five.expiry_ms);
	assert_int_equal(got.send_limit, five.send_limit);
	assert_int_equal(got.send_window_ms, five.send_window_ms);
	assert_int_equal(five.max_attempts, 5);
}

/* ---- store_rules_last_guess ---- */

static void test_last_guess(void **state)
{
	struct otp_policy one = defaults;

	(void)state;
	/* OTP_MAX_ATTEMPTS 3: the third wrong guess (2 before it) is the last. */
	assert_false(store_rules_last_guess(&defaults, 0));
	assert_false(store_rules_last_guess(&defaults, 1));
	assert_true(store_rules_last_guess(&defaults, 2));
	assert_true(store_rules_last_guess(&defaults, 3));
	/* One attempt: the first guess is the last. */
	one.max_attempts = 1;
	assert_true(store_rules_last_guess(&one, 0));
	/* No overflow at the top of int. */
	assert_true(store_rules_last_guess(&defaults, INT_MAX));
	one.max_attempts = INT_MAX;
	assert_false(store_rules_last_guess(&one, INT_MAX - 2));
	assert_true(store_rules_last_guess(&one, INT_MAX - 1));
}

/* ---- store_rules_new_user ---- */

static struct store_user untouched_user(void)
{
	struct store_user u;

	memset(&u, 0x5a, sizeof(u));
	u.id = -12345;
	return u;
}

static void expect_untouched_user(const struct store_user *u)
{
	struct store_user want = untouched_user();

	assert_memory_equal(u, &want, sizeof(want));
}

static void test_new_user(void **state)
{
	struct store_user u = untouched_user();

	(void)state;
	/* docs/API.md §3, the example user: active, not staff, no names. */
	assert_true(store_rules_new_user("+989123456789", "temp.pilito.com", &u));
	assert_int_equal(u.id, 0);
	assert_string_equal(u.phone_number, "+989123456789");
	assert_string_equal(u.username, "989123456789");
	assert_string_equal(u.email, "989123456789@temp.pilito.com");
	assert_string_equal(u.first_name, "");
	assert_string_equal(u.last_name, "");
	assert_false(u.has_first_name);
	assert_false(u.has_last_name);
	assert_true(u.is_active);
	assert_false(u.is_staff);
	/* No domain: the e-mail is the digits and '@' (what the store is given). */
	u = untouched_user();
	assert_true(store_rules_new_user("+989351112233", NULL, &u));
	assert_string_equal(u.email, "989351112233@");
	assert_string_equal(u.username, "989351112233");
}

/* The e-mail must fit STORE_EMAIL_MAX: 12 digits, '@' and the domain. */
static void test_new_user_domain_length(void **state)
{
	char domain[STORE_EMAIL_MAX + 8];
	struct store_user u = untouched_user();
	size_t fits = STORE_EMAIL_MAX - strlen("989123456789@");

	(void)state;
	memset(domain, 'd', fits);
	domain[fits] = '\0';
	assert_true(store_rules_new_user("+989123456789", domain, &u));
	assert_int_equal(strlen(u.email), STORE_EMAIL_MAX);
	assert_int_equal(memcmp(u.email, "989123456789@", 13), 0);
	/* One more: refused, ret untouched. */
	u = untouched_user();
	domain[fits] = 'd';
	domain[fits + 1] = '\0';
	assert_false(store_rules_new_user("+989123456789", domain, &u));
	expect_untouched_user(&u);
	memset(domain, 'd', sizeof(domain) - 1);
	domain[sizeof(domain) - 1] = '\0';
	assert_false(store_rules_new_user("+989123456789", domain, &u));
	expect_untouched_user(&u);
}

/* Only a normalised number (+989XXXXXXXXX) makes a user. */
static void test_new_user_not_normalised(void **state)
{
	static const char *const bad[] = {
		"",
		"09123456789",     /* national form */
		"989123456789",    /* no + */
		"+98912345678",    /* a digit short */
		"+9891234567890",  /* a digit long */
		"+989123456789 ",  /* trailing space */
		"+98912345678a",
		"+449123456789",   /* not Iran */
		"+988123456789",   /* not a mobile number */
	};
	struct store_user u = untouched_user();

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		if (store_rules_new_user(bad[i], "temp.pilito.com", &u))
			fail_msg("'%s' made a user", bad[i]);
		expect_untouched_user(&u);
	}
	assert_false(store_rules_new_user(NULL, "temp.pilito.com", &u));
	expect_untouched_user(&u);
}

/* ---- refresh rotation ---- */

/* A live record of user 7, issued at T0, expiring a day later. */
static struct store_session_row row(const char *jti, const char *family)
{
	struct store_session_row r;

	memset(&r, 0, sizeof(r));
	strcpy(r.sess.jti, jti);
	strcpy(r.sess.family, family);
	r.sess.created_ms = T0;
	r.sess.expires_ms = T0 + DAY_MS;
	r.user_id = 7;
	r.state = STORE_SESSION_LIVE;
	return r;
}

/* Rotated at `at`, replaced by `by`. */
static struct store_session_row rotated(int64_t at, const char *by)
{
	struct store_session_row r = row("s0", "f0");

	r.state = STORE_SESSION_ROTATED;
	r.has_rotated_ms = true;
	r.rotated_ms = at;
	strcpy(r.replaced_by, by);
	return r;
}

static void test_rotate_first(void **state)
{
	struct store_session_row r = row("s0", "f0");

	(void)state;
	/* Live or rotated, unexpired, of the user: read the user next. */
	assert_int_equal(store_rules_rotate_first(&r, 7, T0), STORE_ROTATE_CHECK_USER);
	assert_int_equal(store_rules_rotate_first(&r, 7, r.sess.expires_ms - 1),
	                 STORE_ROTATE_CHECK_USER);
	r = rotated(T0 + 1000, "n1");
	assert_int_equal(store_rules_rotate_first(&r, 7, T0 + 2000), STORE_ROTATE_CHECK_USER);
	/* Expired: exp reached (RFC 7519 §4.1.4), whatever the state. */
	r = row("s0", "f0");
	assert_int_equal(store_rules_rotate_first(&r, 7, r.sess.expires_ms), STORE_ROTATE_REFUSE);
	assert_int_equal(store_rules_rotate_first(&r, 7, r.sess.expires_ms + DAY_MS),
	                 STORE_ROTATE_REFUSE);
	r = rotated(T0 + 1000, "n1");
	assert_int_equal(store_rules_rotate_first(&r, 7, r.sess.expires_ms), STORE_ROTATE_REFUSE);
	/* Another user's. */
	r = row("s0", "f0");
	assert_int_equal(store_rules_rotate_first(&r, 8, T0), STORE_ROTATE_REFUSE);
	assert_int_equal(store_rules_rotate_first(&r, 0, T0), STORE_ROTATE_REFUSE);
	/* Revoked: refused, also inside its lifetime. */
	r.state = STORE_SESSION_REVOKED;
	assert_int_equal(store_rules_rotate_first(&r, 7, T0), STORE_ROTATE_REFUSE);
	r = rotated(T0 + 1000, "n1");
	r.state = STORE_SESSION_REVOKED;
	assert_int_equal(store_rules_rotate_first(&r, 7, T0 + 1001), STORE_ROTATE_REFUSE);
}

static void test_rotate_next(void **state)
{
	struct store_session_row r = row("s0", "f0");

	(void)state;
	/* Live: rotate it now, grace or not. */
	assert_int_equal(store_rules_rotate_next(&r, GRACE_MS, T0), STORE_ROTATE_NOW);
	assert_int_equal(store_rules_rotate_next(&r, 0, T0), STORE_ROTATE_NOW);
	/* Rotated less than grace_ms ago, with a successor: the grace window. */
	r = rotated(T0 + 1000, "n1");
	assert_int_equal(store_rules_rotate_next(&r, GRACE_MS, T0 + 1000), STORE_ROTATE_GRACE);
	assert_int_equal(store_rules_rotate_next(&r, GRACE_MS, T0 + 1000 + GRACE_MS - 1),
	                 STORE_ROTATE_GRACE);
	/* A clock behind the one that rotated it (another node): still inside. */
	assert_int_equal(store_rules_rotate_next(&r, GRACE_MS, T0), STORE_ROTATE_GRACE);
	/* Exactly grace_ms ago, or later: a replay. */
	assert_int_equal(store_rules_rotate_next(&r, GRACE_MS, T0 + 1000 + GRACE_MS),
	                 STORE_ROTATE_REUSE);
	assert_int_equal(store_rules_rotate_next(&r, GRACE_MS, T0 + DAY_MS), STORE_ROTATE_REUSE);
	/* grace_ms 0 (or below): no grace at all, even with clock skew. */
	assert_int_equal(store_rules_rotate_next(&r, 0, T0 + 1000), STORE_ROTATE_REUSE);
	assert_int_equal(store_rules_rotate_next(&r, 0, T0), STORE_ROTATE_REUSE);
	assert_int_equal(store_rules_rotate_next(&r, -1, T0 + 1000), STORE_ROTATE_REUSE);
	/* Rotated without a time or without a successor recorded (a record of
	 * an older schema): a replay. */
	r = rotated(T0 + 1000, "n1");
	r.has_rotated_ms = false;
	assert_int_equal(store_rules_rotate_next(&r, GRACE_MS, T0 + 1000), STORE_ROTATE_REUSE);
	r = rotated(T0 + 1000, "");
	assert_int_equal(store_rules_rotate_next(&r, GRACE_MS, T0 + 1000), STORE_ROTATE_REUSE);
}

static void test_successor_usable(void **state)
{
	struct store_session_row cur = rotated(T0 + 1000, "n1");
	struct store_session_row succ = row("n1", "f0");

	(void)state;
	succ.sess.created_ms = T0 + 1000;
	succ.sess.expires_ms = T0 + 1000 + DAY_MS;
	/* Live, unexpired, same user, same family: the pair again. */
	assert_true(store_rules_successor_usable(&cur, &succ, 7, T0 + 2000));
	assert_true(store_rules_successor_usable(&cur, &succ, 7, succ.sess.expires_ms - 1));
	/* Expired meanwhile. */
	assert_false(store_rules_successor_usable(&cur, &succ, 7, succ.sess.expires_ms));
	/* Not live: rotated already, or revoked. */
	succ.state = STORE_SESSION_ROTATED;
	assert_false(store_rules_successor_usable(&cur, &succ, 7, T0 + 2000));
	succ.state = STORE_SESSION_REVOKED;
	assert_false(store_rules_successor_usable(&cur, &succ, 7, T0 + 2000));
	succ.state = STORE_SESSION_LIVE;
	/* Another user's, or asked for by another user. */
	succ.user_id = 8;
	assert_false(store_rules_successor_usable(&cur, &succ, 7, T0 + 2000));
	succ.user_id = 7;
	assert_false(store_rules_successor_usable(&cur, &succ, 8, T0 + 2000));
	/* Another family. */
	strcpy(succ.sess.family, "f1");
	assert_false(store_rules_successor_usable(&cur, &succ, 7, T0 + 2000));
	strcpy(succ.sess.family, "f0");
	assert_true(store_rules_successor_usable(&cur, &succ, 7, T0 + 2000));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bucket),
		cmocka_unit_test(test_code_live),
		cmocka_unit_test(test_verify_policy),
		cmocka_unit_test(test_last_guess),
		cmocka_unit_test(test_new_user),
		cmocka_unit_test(test_new_user_domain_length),
		cmocka_unit_test(test_new_user_not_normalised),
		cmocka_unit_test(test_rotate_first),
		cmocka_unit_test(test_rotate_next),
		cmocka_unit_test(test_successor_usable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
