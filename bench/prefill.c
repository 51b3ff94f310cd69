/* bench/prefill — BENCHMARK ONLY: fill an otpd SQLite database before the
 * daemon starts, with codes whose values the wrk scripts can reproduce.
 *
 *   prefill DB SECRET_KEY [--codes K] [--total N] [--users U]
 *                         [--expiry S] [--via-store]
 *
 * The schema is always the daemon's own: the file is opened with
 * store_open() and migrated with store_migrate() first (so it matches
 * src/store/migrations_sqlite.c whatever that holds today).
 *
 * Known codes (the verify pool), i in [0, K):
 *     phone "+98910" + 7-digit i      code  i mod 10^6, 6 digits, zero-padded
 *     stored hash = otp_code_hash(otp_derive_key(SECRET_KEY, "otpd/v1/code-hash"),
 *                                 phone, code)         — as src/auth/login.c does
 * Filler codes (the large database), i in [K, N): the same phones, random
 * hashes (they never verify), expired or used, created over the last 29 days
 * in id order (as otpd writes them: the retention purge reads the oldest ids
 * first), before the known codes (created now).
 * Users (the large database), i in [0, U): "+98911" + 7-digit i, so that a
 * verified pool code still creates a new user, as on an empty database.
 *
 * Two ways to write:
 *   --via-store  the daemon's path: one store_otp_issue() per known code
 *                (one durable transaction and one fsync each; slow but
 *                exact — use it to check the bulk path, or for small K).
 *   default      bulk: after the migration the file is written directly with
 *                SQLite, rows in key order, many per transaction, with
 *                journal and sync off (a crash while loading ruins the file:
 *                bench only), then put back in WAL mode.  The rows are the
 *                ones store_otp_issue() leaves: one otp_codes row per code
 *                (schema version 4), one code per phone.  Fast: ~10 M codes
 *                in about a minute.
 * Nothing here is used by the daemon; it links the daemon's objects
 * (build/obj/src/... minus main.o) only for the store and the hashing. */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "otp/code.h"
#include "otp/policy.h"
#include "store/store.h"

#define CODE_KEY_LABEL "otpd/v1/code-hash" /* = src/auth/login.c */
#define POOL_PREFIX "+98910"
#define USER_PREFIX "+98911"
#define MAX_INDEX 10000000L /* 7 digits after the prefix */
#define BATCH 50000

static const char *db_path;
static sqlite3 *db;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "prefill: %s: %s\n", what, db ? sqlite3_errmsg(db) : strerror(errno));
	exit(1);
}

static void exec_sql(const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
		fprintf(stderr, "prefill: %s: %s\n", sql, err ? err : "?");
		exit(1);
	}
}

static sqlite3_stmt *prep(const char *sql)
{
	sqlite3_stmt *st;

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
		die(sql);
	return st;
}

static void step_reset(sqlite3_stmt *st, const char *what)
{
	if (sqlite3_step(st) != SQLITE_DONE)
		die(what);
	sqlite3_reset(st);
}

static long parse_long(const char *s, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 0 || v > max) {
		fprintf(stderr, "prefill: bad number '%s' (0..%ld)\n", s, max);
		exit(2);
	}
	return v;
}

/* prefix + the last `digits` digits of i, zero-padded */
static void put_digits(char *dst, const char *prefix, long i, int digits)
{
	size_t n = strlen(prefix);

	memcpy(dst, prefix, n);
	for (int d = digits - 1; d >= 0; d--, i /= 10)
		dst[n + (size_t)d] = (char)('0' + i % 10);
	dst[n + (size_t)digits] = '\0';
}

static void pool_entry(long i, char phone[OTP_PHONE_LEN + 1], char code[OTP_CODE_LEN + 1])
{
	put_digits(phone, POOL_PREFIX, i, 7);
	put_digits(code, "", i, OTP_CODE_LEN);
}

/* xorshift64*: filler hashes only (never verified; not a secret). */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}

static void via_store(struct store *s, const uint8_t key[OTP_KEY_LEN], long k,
                      int64_t expiry_s)
{
	struct otp_policy p = {
		.expiry_ms = expiry_s * 1000,
		.max_attempts = 3,
		.send_limit = 100000,
		.send_window_ms = 1000,
	};
	char phone[OTP_PHONE_LEN + 1], code[OTP_CODE_LEN + 1];
	uint8_t hash[OTP_HASH_LEN];

	for (long i = 0; i < k; i++) {
		struct store_issue_result r;

		pool_entry(i, phone, code);
		if (!otp_code_hash(key, phone, code, hash)) {
			fprintf(stderr, "prefill: otp_code_hash failed\n");
			exit(1);
		}
		if (store_otp_issue(s, &p, phone, hash, now_ms(), NULL, &r) != OTPD_OK) {
			fprintf(stderr, "prefill: store_otp_issue failed at %ld\n", i);
			exit(1);
		}
	}
}

static void bulk(const uint8_t key[OTP_KEY_LEN], long k, long total, long users,
                 int64_t expiry_s)
{
	const int64_t now = now_ms();
	char phone[OTP_PHONE_LEN + 1], code[OTP_CODE_LEN + 1], uname[32], email[64];
	uint8_t hash[OTP_HASH_LEN];
	sqlite3_stmt *otp, *user;

	if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
		die("open");
	exec_sql("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
	         "PRAGMA cache_size=-2000000; PRAGMA temp_store=MEMORY;"
	         "PRAGMA foreign_keys=OFF");
	otp = prep("INSERT INTO otp_codes (phone, code_hash, created_ms, expires_ms,"
	           " attempts, max_attempts, state, ended_ms)"
	           " VALUES (?1, ?2, ?3, ?4, ?5, 3, ?6, ?7)");
	user = prep("INSERT INTO users (phone_number, username, email, first_name,"
	            " last_name, is_active, is_staff, created_at_ms, last_login_ms)"
	            " VALUES (?1, ?2, ?3, NULL, NULL, 1, 0, ?4, ?5)");

	exec_sql("BEGIN");
	/* The filler first (the oldest ids), then the known codes. */
	for (long n = 0; n < total; n++) {
		const long i = n < total - k ? k + n : n - (total - k);
		const bool known = i < k;
		int64_t created, expires;
		int state = 0, attempts = 0;

		pool_entry(i, phone, code);
		if (known) {
			if (!otp_code_hash(key, phone, code, hash)) {
				fprintf(stderr, "prefill: otp_code_hash failed\n");
				exit(1);
			}
			created = now;
			expires = now + expiry_s * 1000;
		} else {
			for (int w = 0; w < OTP_HASH_LEN; w += 8) {
				uint64_t r = rng();
				memcpy(hash + w, &r, 8);
			}
			/* sent over the last 29 days (older first), at least
			 * a second ago; about a third used, a few with wrong
			 * guesses, the rest expired unused */
			const int64_t span = 29LL * 86400 * 1000;
			created = now - 1000 - span + (int64_t)((double)span * (double)n / (double)total);
			expires = created + 300000;
			state = (i % 3 == 0) ? 1 : 0;
			attempts = (i % 7 == 0) ? 1 : 0;
		}
		sqlite3_bind_text(otp, 1, phone, -1, SQLITE_STATIC);
		sqlite3_bind_blob(otp, 2, hash, OTP_HASH_LEN, SQLITE_STATIC);
		sqlite3_bind_int64(otp, 3, created);
		sqlite3_bind_int64(otp, 4, expires);
		sqlite3_bind_int(otp, 5, attempts);
		sqlite3_bind_int(otp, 6, state);
		if (state == 1)
			sqlite3_bind_int64(otp, 7, created + 30000);
		else
			sqlite3_bind_null(otp, 7);
		step_reset(otp, "insert otp_codes");
		if ((n + 1) % BATCH == 0)
			exec_sql("COMMIT; BEGIN");
	}
	for (long i = 0; i < users; i++) {
		int64_t created = now - 1000 - (int64_t)(rng() % (365LL * 86400 * 1000));

		put_digits(phone, USER_PREFIX, i, 7);
		snprintf(uname, sizeof(uname), "%s", phone + 1);
		snprintf(email, sizeof(email), "%s@temp.pilito.com", phone + 1);
		sqlite3_bind_text(user, 1, phone, -1, SQLITE_STATIC);
		sqlite3_bind_text(user, 2, uname, -1, SQLITE_STATIC);
		sqlite3_bind_text(user, 3, email, -1, SQLITE_STATIC);
		sqlite3_bind_int64(user, 4, created);
		sqlite3_bind_int64(user, 5, created + 1000);
		step_reset(user, "insert users");
		if ((i + 1) % BATCH == 0)
			exec_sql("COMMIT; BEGIN");
	}
	exec_sql("COMMIT");
	sqlite3_finalize(otp);
	sqlite3_finalize(user);
	exec_sql("ANALYZE; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL");
	if (sqlite3_close(db) != SQLITE_OK)
		die("close");
	db = NULL;
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: prefill DB SECRET_KEY [--codes K] [--total N] [--users U]\n"
	        "                             [--expiry SECONDS] [--via-store]\n"
	        "  --codes K    known codes: phone " POOL_PREFIX "+7-digit i, code i mod 10^6 (i < K)\n"
	        "  --total N    all codes, K..N-1 with random hashes (large database; N >= K)\n"
	        "  --users U    users " USER_PREFIX "+7-digit i (i < U)\n"
	        "  --expiry S   seconds the known codes stay valid [86400]\n"
	        "  --via-store  write the known codes through store_otp_issue() (slow, exact)\n");
	exit(2);
}

int main(int argc, char **argv)
{
	long k = 0, total = -1, users = 0;
	int64_t expiry_s = 86400;
	bool use_store = false;
	uint8_t key[OTP_KEY_LEN];
	struct store *s = NULL;
	char url[4096];
	int applied = 0;
	double t0 = mono_s();

	if (argc < 3)
		usage();
	db_path = argv[1];
	for (int i = 3; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--via-store")) {
			use_store = true;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		if (!strcmp(a, "--codes"))
			k = parse_long(argv[++i], MAX_INDEX);
		else if (!strcmp(a, "--total"))
			total = parse_long(argv[++i], MAX_INDEX);
		else if (!strcmp(a, "--users"))
			users = parse_long(argv[++i], MAX_INDEX);
		else if (!strcmp(a, "--expiry"))
			expiry_s = parse_long(argv[++i], 86400);
		else
			usage();
	}
	if (total < 0)
		total = k;
	if (total < k || (use_store && (total > k || users)))
		usage();
	if (!otp_derive_key(argv[2], strlen(argv[2]), CODE_KEY_LABEL, key)) {
		fprintf(stderr, "prefill: otp_derive_key failed\n");
		return 1;
	}

	snprintf(url, sizeof(url), "sqlite:%s", db_path);
	if (store_open(url, &(struct store_options){.busy_timeout_ms = 5000}, NULL, 0, &s) != OTPD_OK || store_migrate(s, &applied) != OTPD_OK) {
		fprintf(stderr, "prefill: cannot open or migrate %s\n", db_path);
		return 1;
	}
	if (use_store)
		via_store(s, key, k, expiry_s);
	store_close(s);
	if (!use_store && (total || users))
		bulk(key, k, total, users, expiry_s);
	otp_wipe(key, sizeof(key));
	printf("{\"codes\":%ld,\"known\":%ld,\"users\":%ld,\"via_store\":%s,\"seconds\":%.2f}\n",
	       total, k, users, use_store ? "true" : "false", mono_s() - t0);
	return 0;
}
