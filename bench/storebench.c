/* bench/storebench — BENCHMARK ONLY: the store alone, without HTTP.
 *
 *   storebench DATABASE_URL [--threads T] [--seconds S] [--ops N] [--pool P]
 *
 * T threads call store_otp_issue() with a new phone number each time for S
 * seconds, then T threads call store_otp_verify() on those codes (right
 * hash, a new user and a session each), and it prints the rate of each:
 * the ceiling the store's group commit allows on this machine, to compare
 * with the HTTP scenarios of bench/run.sh.  The file should be new.
 * --ops N: exactly N issues, then N verifies, instead of a time: a fixed
 * workload, whose instruction count (valgrind --tool=callgrind, with
 * --threads 1) compares two builds on a machine others share. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "otp/policy.h"
#include "auth/jwt.h"
#include "store/store.h"

static struct store *st;
static struct otp_policy pol = {.expiry_ms = 86400000, .max_attempts = 5,
                                .send_limit = 100000, .send_window_ms = 3600000};
static atomic_long next_index, issued, verified, failed;
static atomic_bool stop;
static long issued_total, max_ops;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void phone_of(long i, char *buf, size_t cap)
{
	snprintf(buf, cap, "+98912%07ld", i % 10000000);
}

static void hash_of(long i, uint8_t h[OTP_HASH_LEN])
{
	memset(h, 0, OTP_HASH_LEN);
	memcpy(h, &i, sizeof(i));
}

static void *issuer(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		long i = atomic_fetch_add(&next_index, 1);
		char phone[32];
		uint8_t h[OTP_HASH_LEN];
		struct store_issue_result r;

		if (max_ops && i >= max_ops)
			break;
		phone_of(i, phone, sizeof(phone));
		hash_of(i, h);
		if (store_otp_issue(st, &pol, phone, h, now_ms(), NULL, &r) == OTPD_OK)
			atomic_fetch_add(&issued, 1);
		else
			atomic_fetch_add(&failed, 1);
	}
	return NULL;
}

static void *verifier(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop)) {
		long i = atomic_fetch_add(&next_index, 1);
		char phone[32];
		uint8_t h[OTP_HASH_LEN];
		struct store_session s;
		struct store_verify_result r;

		if (i >= issued_total)
			break;
		phone_of(i, phone, sizeof(phone));
		hash_of(i, h);
		memset(&s, 0, sizeof(s));
		/* The daemon's own jtis (auth_session_prepare()). */
		if (auth_jti_new(now_ms(), s.jti) != OTPD_OK || auth_jti_new(now_ms(), s.access_jti) != OTPD_OK ||
		    auth_jti_new(now_ms(), s.family) != OTPD_OK)
			abort();
		s.created_ms = now_ms();
		s.expires_ms = s.created_ms + 86400000;
		if (store_otp_verify(st, &pol, phone, h, "example.com", &s,
		                     s.created_ms, NULL, &r) == OTPD_OK)
			atomic_fetch_add(&verified, 1);
		else
			atomic_fetch_add(&failed, 1);
	}
	return NULL;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double run(void *(*fn)(void *), int threads, double seconds)
{
	pthread_t t[1024];
	double t0 = mono_s();

	atomic_store(&stop, false);
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, fn, NULL);
	if (!max_ops) {
		struct timespec d = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};

		nanosleep(&d, NULL);
		atomic_store(&stop, true);
	}
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	return mono_s() - t0;
}

int main(int argc, char **argv)
{
	int threads = 64, pool = 0;
	double seconds = 5;
	int applied;

	if (argc < 2) {
		fprintf(stderr, "usage: storebench DATABASE_URL [--threads T] [--seconds S]\n");
		return 2;
	}
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--threads"))
			threads = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--seconds"))
			seconds = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--ops"))
			max_ops = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--pool")) /* PostgreSQL: connections */
			pool = atoi(argv[i + 1]);
	}
	if (threads < 1 || threads > 1024 || seconds <= 0 || max_ops < 0)
		return 2;
	if (store_open(argv[1], &(struct store_options){.busy_timeout_ms = 5000, .pool_size = pool}, NULL, 0, &st) != OTPD_OK ||
	    store_migrate(st, &applied) != OTPD_OK)
		return 1;
	double el = run(issuer, threads, seconds);
	issued_total = atomic_load(&issued);
	printf("issue:  %ld in %.2f s = %.0f /s (%d threads)\n", issued_total, el,
	       (double)issued_total / el, threads);
	atomic_store(&next_index, 0);
	el = run(verifier, threads, seconds);
	printf("verify: %ld in %.2f s = %.0f /s (%d threads)\n",
	       atomic_load(&verified), el, (double)atomic_load(&verified) / el, threads);
	printf("failed: %ld\n", atomic_load(&failed));
	store_close(st);
	return 0;
}
