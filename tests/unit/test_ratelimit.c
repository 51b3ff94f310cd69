/* util/ratelimit.c: the per-address throttle (OTP_THROTTLE_RATE,
 * OTP_VERIFY_THROTTLE_RATE; docs/API.md §1 and the `throttled` row of §4).
 *
 * Expected values come from the GCRA definition (ITU-T I.371 virtual
 * scheduling; "N per period, bursts up to N"): the emission interval is
 * T = period / N and the tolerance tau = period - T.  With TAT starting at
 * now, a request at t conforms iff t >= TAT - tau, and then
 * TAT = max(TAT, t) + T; a refused request changes nothing.  So at one
 * instant N requests conform, the next one waits T, and retry_after is
 * ceil(wait / 1 s). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "util/ratelimit.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
#define T0 1700000000000LL /* an arbitrary epoch-ms "now" */
#define NO_RETRY (-777)

/* The limiters a test made, freed by the teardown even when it fails. */
static struct ratelimit *made[4];

static struct ratelimit *new_rl(int64_t count, int64_t period_ms, size_t slots)
{
	struct rate r = {count, period_ms};
	struct ratelimit *rl = ratelimit_new(r, slots);
	size_t i = 0;

	assert_non_null(rl);
	while (i < ARRAY_LEN(made) && made[i])
		i++;
	assert_true(i < ARRAY_LEN(made));
	made[i] = rl;
	return rl;
}

static void free_rl(struct ratelimit *rl)
{
	for (size_t i = 0; i < ARRAY_LEN(made); i++)
		if (made[i] == rl)
			made[i] = NULL;
	ratelimit_free(rl);
}

static int teardown(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(made); i++) {
		ratelimit_free(made[i]);
		made[i] = NULL;
	}
	return 0;
}

static bool hit(struct ratelimit *rl, const char *key, int64_t now, int *retry)
{
	*retry = NO_RETRY;
	return ratelimit_hit(rl, key, strlen(key), now, retry);
}

static void expect_allowed(struct ratelimit *rl, const char *key, int64_t now)
{
	int retry;

	if (!hit(rl, key, now, &retry))
		fail_msg("key %s at %lld ms: refused (retry_after %d), want allowed", key,
		         (long long)now, retry);
}

static void expect_refused(struct ratelimit *rl, const char *key, int64_t now,
                           int want_retry)
{
	int retry;

	if (hit(rl, key, now, &retry))
		fail_msg("key %s at %lld ms: allowed, want refused", key, (long long)now);
	if (retry != want_retry)
		fail_msg("key %s at %lld ms: retry_after %d, want %d", key, (long long)now,
		         retry, want_retry);
}

/* The brief's case: 3/min -> T = 20 s. */
static void test_three_per_minute(void **state)
{
	struct ratelimit *rl = new_rl(3, MIN, 1024);

	(void)state;
	expect_allowed(rl, "1.2.3.4", 0);
	expect_allowed(rl, "1.2.3.4", 0);
	expect_allowed(rl, "1.2.3.4", 0);
	expect_refused(rl, "1.2.3.4", 0, 20);
	/* waiting lowers retry_after; a partial second rounds up */
	expect_refused(rl, "1.2.3.4", 5 * SEC, 15);
	expect_refused(rl, "1.2.3.4", 19 * SEC, 1);
	expect_refused(rl, "1.2.3.4", 20 * SEC - 1, 1);
	/* after 20 s exactly one more */
	expect_allowed(rl, "1.2.3.4", 20 * SEC);
	expect_refused(rl, "1.2.3.4", 20 * SEC, 20);
	expect_allowed(rl, "1.2.3.4", 40 * SEC);
	expect_refused(rl, "1.2.3.4", 40 * SEC + 500, 20);
	free_rl(rl);
}

/* Same with a realistic clock, and a full refill after a quiet period. */
static void test_refill(void **state)
{
	struct ratelimit *rl = new_rl(3, MIN, 1024);

	(void)state;
	for (int i = 0; i < 3; i++)
		expect_allowed(rl, "k", T0);
	expect_refused(rl, "k", T0, 20);
	/* one period of silence restores the whole burst, and no more */
	for (int i = 0; i < 3; i++)
		expect_allowed(rl, "k", T0 + MIN);
	expect_refused(rl, "k", T0 + MIN, 20);
	/* a long silence does not bank more than N */
	for (int i = 0; i < 3; i++)
		expect_allowed(rl, "k", T0 + 10 * DAY);
	expect_refused(rl, "k", T0 + 10 * DAY, 20);
	free_rl(rl);
}

/* Refused requests do not count: hammering does not push the next slot away. */
static void test_refusals_do_not_count(void **state)
{
	struct ratelimit *rl = new_rl(3, MIN, 1024);

	(void)state;
	for (int i = 0; i < 3; i++)
		expect_allowed(rl, "k", T0);
	for (int i = 0; i < 1000; i++)
		expect_refused(rl, "k", T0 + i, (int)((20 * SEC - i + 999) / 1000));
	expect_allowed(rl, "k", T0 + 20 * SEC);
	free_rl(rl);
}

/* Burst = N and first retry_after = ceil(period / N / 1 s) for a range of
 * rates, the contract defaults 5/min and 20/min among them. */
static void test_rates(void **state)
{
	static const struct {
		int64_t count, period_ms;
		int retry; /* ceil(period_ms / count / 1000) */
	} cases[] = {
		{5, MIN, 12},
		{20, MIN, 3},
		{1, SEC, 1},
		{1, MIN, 60},
		{7, MIN, 9},         /* 8.571 s */
		{10, HOUR, 360},
		{100, DAY, 864},
		{1, DAY, 86400},
		{3, SEC, 1},         /* 333 ms */
		{300, SEC, 1},       /* 3.33 ms */
		{1000, SEC, 1},      /* 1 ms */
		{1000000, DAY, 1},   /* 86.4 ms */
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct ratelimit *rl = new_rl(cases[i].count, cases[i].period_ms, 1024);
		int retry;

		for (int64_t k = 0; k < cases[i].count; k++) {
			if (!hit(rl, "k", T0, &retry))
				fail_msg("%lld per %lld ms: request %lld of the burst refused",
				         (long long)cases[i].count, (long long)cases[i].period_ms,
				         (long long)k + 1);
		}
		if (hit(rl, "k", T0, &retry))
			fail_msg("%lld per %lld ms: request %lld allowed, burst is %lld",
			         (long long)cases[i].count, (long long)cases[i].period_ms,
			         (long long)cases[i].count + 1, (long long)cases[i].count);
		if (retry != cases[i].retry)
			fail_msg("%lld per %lld ms: retry_after %d, want %d",
			         (long long)cases[i].count, (long long)cases[i].period_ms,
			         retry, cases[i].retry);
		free_rl(rl);
	}
}

/* Over a long steady stream the long-run rate is N per period: 3/min,
 * one request a second from t=0 to t=600 s inclusive: the burst of 3 at the
 * start, then one every 20 s at 20, 40, ..., 600 = 3 + 30 = 33. */
static void test_sustained(void **state)
{
	struct ratelimit *rl = new_rl(3, MIN, 1024);
	int allowed = 0, retry;

	(void)state;
	for (int64_t t = 0; t <= 600; t++) {
		if (hit(rl, "k", T0 + t * SEC, &retry)) {
			allowed++;
		} else {
			assert_true(retry >= 1);
			assert_true(retry <= 20);
		}
	}
	assert_int_equal(allowed, 33);

	/* 300/sec for 10 s, a request every 1 ms: 300 + 300 * 10 */
	struct ratelimit *fast = new_rl(300, SEC, 1024);
	allowed = 0;
	for (int64_t t = 0; t <= 10 * SEC; t++)
		if (hit(fast, "k", T0 + t, &retry))
			allowed++;
	assert_int_equal(allowed, 300 + 300 * 10);
	free_rl(fast);
	free_rl(rl);
}

static void test_keys_independent(void **state)
{
	struct ratelimit *rl = new_rl(3, MIN, 1024);
	/* the server uses the raw address bytes: 4 for IPv4, 16 for IPv6 */
	const unsigned char a4[16] = {1, 2, 3, 4};
	const unsigned char b4[4] = {1, 2, 3, 5};
	int retry;

	(void)state;
	for (int i = 0; i < 3; i++)
		expect_allowed(rl, "1.2.3.4", T0);
	expect_refused(rl, "1.2.3.4", T0, 20);
	for (int i = 0; i < 3; i++)
		expect_allowed(rl, "1.2.3.5", T0);
	expect_refused(rl, "1.2.3.5", T0, 20);
	/* a key that is a prefix of another is a different key */
	for (int i = 0; i < 3; i++)
		expect_allowed(rl, "1.2.3.", T0);
	expect_refused(rl, "1.2.3.", T0, 20);

	for (int i = 0; i < 3; i++)
		assert_true(ratelimit_hit(rl, a4, 4, T0, &retry));
	assert_false(ratelimit_hit(rl, a4, 4, T0, &retry));
	/* the same first bytes with another length (an IPv6 address) */
	for (int i = 0; i < 3; i++)
		assert_true(ratelimit_hit(rl, a4, 16, T0, &retry));
	assert_false(ratelimit_hit(rl, a4, 16, T0, &retry));
	for (int i = 0; i < 3; i++)
		assert_true(ratelimit_hit(rl, b4, 4, T0, &retry));
	assert_false(ratelimit_hit(rl, b4, 4, T0, &retry));
	free_rl(rl);
}

/* Far more keys than slots: bounded memory, no crash, and a key never seen
 * before is always allowed (its burst is N >= 1). */
static void test_many_keys(void **state)
{
	static const size_t sizes[] = {1, 64, 1024};

	(void)state;
	for (size_t s = 0; s < ARRAY_LEN(sizes); s++) {
		struct ratelimit *rl = new_rl(1, DAY, sizes[s]);
		int retry;

		for (uint32_t i = 0; i < 200000; i++) {
			unsigned char key[16] = {0x20, 0x01, 0x0d, 0xb8};

			memcpy(key + 12, &i, sizeof(i));
			retry = NO_RETRY;
			if (!ratelimit_hit(rl, key, sizeof(key), T0 + i, &retry))
				fail_msg("fresh key %u refused (table %zu, retry %d)", i, sizes[s], retry);
		}
		/* the most recent key is remembered: its second hit is refused */
		{
			unsigned char key[16] = {0x20, 0x01, 0x0d, 0xb8};
			uint32_t last = 199999;

			memcpy(key + 12, &last, sizeof(last));
			assert_false(ratelimit_hit(rl, key, sizeof(key), T0 + last, &retry));
			assert_true(retry >= 1);
		}
		free_rl(rl);
	}
}

/* Long keys and odd lengths are safe (the table keeps a bounded copy). */
static void test_odd_keys(void **state)
{
	struct ratelimit *rl = new_rl(2, MIN, 0);
	char longkey[200];
	int retry;

	(void)state;
	memset(longkey, 'k', sizeof(longkey));
	assert_true(ratelimit_hit(rl, longkey, sizeof(longkey), T0, &retry));
	assert_true(ratelimit_hit(rl, longkey, sizeof(longkey), T0, &retry));
	assert_false(ratelimit_hit(rl, longkey, sizeof(longkey), T0, &retry));
	assert_int_equal(retry, 30);
	assert_true(ratelimit_hit(rl, "", 0, T0, &retry));
	free_rl(rl);
	ratelimit_free(NULL); /* _free accepts NULL (STYLE.md) */
}

/* retry_after is always a whole number of seconds >= 1, never 0. */
static void test_retry_at_least_one(void **state)
{
	static const struct rate rates[] = {
		{1000, SEC}, {1000000, SEC}, {999, SEC}, {3, MIN}, {1, DAY}, {7, 13},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(rates); i++) {
		struct ratelimit *rl = new_rl(rates[i].count, rates[i].period_ms, 1024);
		int retry;

		for (int64_t t = 0; t < 3000; t++) {
			for (int k = 0; k < 3; k++) {
				retry = NO_RETRY;
				if (!ratelimit_hit(rl, "k", 1, T0 + t, &retry)) {
					if (retry < 1)
						fail_msg("rate %lld/%lld ms at +%lld ms: retry_after %d",
						         (long long)rates[i].count, (long long)rates[i].period_ms,
						         (long long)t, retry);
				}
			}
		}
		free_rl(rl);
	}
}

/* Concurrent hits on one key: the burst is still exactly N ("thread-safe",
 * util/ratelimit.h), whatever the interleaving. */
#define THREADS 8
#define HITS_PER_THREAD 1000

struct worker {
	struct ratelimit *rl;
	int allowed;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	int retry;

	for (int i = 0; i < HITS_PER_THREAD; i++)
		if (ratelimit_hit(w->rl, "shared", 6, T0, &retry))
			w->allowed++;
	return NULL;
}

static void test_threads(void **state)
{
	struct ratelimit *rl = new_rl(1000, MIN, 1024);
	struct worker w[THREADS];
	pthread_t tid[THREADS];
	int total = 0;

	(void)state;
	for (int i = 0; i < THREADS; i++) {
		w[i] = (struct worker){rl, 0};
		assert_int_equal(pthread_create(&tid[i], NULL, worker_run, &w[i]), 0);
	}
	for (int i = 0; i < THREADS; i++) {
		assert_int_equal(pthread_join(tid[i], NULL), 0);
		total += w[i].allowed;
	}
	assert_int_equal(total, 1000);
	free_rl(rl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_three_per_minute, teardown),
		cmocka_unit_test_teardown(test_refill, teardown),
		cmocka_unit_test_teardown(test_refusals_do_not_count, teardown),
		cmocka_unit_test_teardown(test_rates, teardown),
		cmocka_unit_test_teardown(test_sustained, teardown),
		cmocka_unit_test_teardown(test_keys_independent, teardown),
		cmocka_unit_test_teardown(test_many_keys, teardown),
		cmocka_unit_test_teardown(test_odd_keys, teardown),
		cmocka_unit_test_teardown(test_retry_at_least_one, teardown),
		cmocka_unit_test_teardown(test_threads, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
