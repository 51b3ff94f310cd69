/* bench/prefill — BENCHMARK ONLY: fill an otpd database (a SQLite file or a
 * PostgreSQL database) before the daemon starts, with codes whose values the
 * wrk scripts can reproduce.
 *
 *   prefill DB SECRET_KEY [--codes K] [--total N] [--users U]
 *                         [--expiry S] [--via-store]
 *
 * DB is a SQLite file's path, or a postgres:// or postgresql:// URL.
 * The schema is always the daemon's own: the database is opened with
 * store_open() and migrated with store_migrate() first (so it matches
 * src/store/migrations_*.c whatever they hold today).
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
 *                bench only), then put back in WAL mode.  On PostgreSQL the
 *                same rows go in with COPY (one transaction), then ANALYZE.
 *                The rows are the ones store_otp_issue() leaves: one
 *                otp_codes row per code, one code per phone.  Fast: ~10 M
 *                codes in about a minute.
 * Nothing here is used by the daemon; it links the daemon's objects
 * (build/obj/src/... minus main.o) only for the store and the hashing. */
#include <errno.h>
#include <stdarg.h>
#include <libpq-fe.h>
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

/* Where the bulk rows go: a SQLite file (prepared INSERTs) or PostgreSQL
 * (COPY ... FROM STDIN, text format). */
struct code_row {
	const char *phone;
	const uint8_t *hash;
	int64_t created, expires, ended; /* ended: < 0 for NULL */
	int attempts, state;
};
struct user_row {
	const char *phone, *username, *email;
	int64_t created, last_login;
};
struct sink {
	void (*begin_codes)(void);
	void (*code)(const struct code_row *r, long n);
	void (*begin_users)(void);
	void (*user)(const struct user_row *r, long n);
	void (*finish)(void);
};

/* --- SQLite */
static sqlite3_stmt *sq_otp, *sq_user;

static void sq_begin_codes(void)
{
	if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
		die("open");
	exec_sql("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
	         "PRAGMA cache_size=-2000000; PRAGMA temp_store=MEMORY;"
	         "PRAGMA foreign_keys=OFF");
	sq_otp = prep("INSERT INTO otp_codes (phone, code_hash, created_ms, expires_ms,"
	              " attempts, max_attempts, state, ended_ms)"
	              " VALUES (?1, ?2, ?3, ?4, ?5, 3, ?6, ?7)");
	sq_user = prep("INSERT INTO users (phone_number, username, email, first_name,"
	               " last_name, is_active, is_staff, created_at_ms, last_login_ms)"
	               " VALUES (?1, ?2, ?3, NULL, NULL, 1, 0, ?4, ?5)");
	exec_sql("BEGIN");
}

static void sq_code(const struct code_row *r, long n)
{
	sqlite3_bind_text(sq_otp, 1, r->phone, -1, SQLITE_STATIC);
	sqlite3_bind_blob(sq_otp, 2, r->hash, OTP_HASH_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(sq_otp, 3, r->created);
	sqlite3_bind_int64(sq_otp, 4, r->expires);
	sqlite3_bind_int(sq_otp, 5, r->attempts);
	sqlite3_bind_int(sq_otp, 6, r->state);
	if (r->ended >= 0)
		sqlite3_bind_int64(sq_otp, 7, r->ended);
	else
		sqlite3_bind_null(sq_otp, 7);
	step_reset(sq_otp, "insert otp_codes");
	if ((n + 1) % BATCH == 0)
		exec_sql("COMMIT; BEGIN");
}

static void sq_begin_users(void)
{
}

static void sq_user_row(const struct user_row *r, long n)
{
	sqlite3_bind_text(sq_user, 1, r->phone, -1, SQLITE_STATIC);
	sqlite3_bind_text(sq_user, 2, r->username, -1, SQLITE_STATIC);
	sqlite3_bind_text(sq_user, 3, r->email, -1, SQLITE_STATIC);
	sqlite3_bind_int64(sq_user, 4, r->created);
	sqlite3_bind_int64(sq_user, 5, r->last_login);
	step_reset(sq_user, "insert users");
	if ((n + 1) % BATCH == 0)
		exec_sql("COMMIT; BEGIN");
}

static void sq_finish(void)
{
	exec_sql("COMMIT");
	sqlite3_finalize(sq_otp);
	sqlite3_finalize(sq_user);
	exec_sql("ANALYZE; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL");
	if (sqlite3_close(db) != SQLITE_OK)
		die("close");
	db = NULL;
}

static const struct sink sqlite_sink = {
	sq_begin_codes, sq_code, sq_begin_users, sq_user_row, sq_finish,
};

/* --- PostgreSQL: one transaction, two COPYs, buffered in 1 MiB pieces */
static PGconn *pg;
static long pg_users; /* users loaded */
static char pg_buf[1 << 20];
static size_t pg_len;

static void pg_die(const char *what)
{
	fprintf(stderr, "prefill: %s: %s", what, pg ? PQerrorMessage(pg) : "?\n");
	exit(1);
}

static void pg_exec(const char *sql, ExecStatusType want)
{
	PGresult *r = PQexec(pg, sql);

	if (PQresultStatus(r) != want) {
		PQclear(r);
		pg_die(sql);
	}
	PQclear(r);
}

static void pg_flush(void)
{
	if (pg_len && PQputCopyData(pg, pg_buf, (int)pg_len) != 1)
		pg_die("COPY data");
	pg_len = 0;
}

static void pg_put(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void pg_put(const char *fmt, ...)
{
	va_list ap;
	int n;

	if (sizeof(pg_buf) - pg_len < 512)
		pg_flush();
	va_start(ap, fmt);
	n = vsnprintf(pg_buf + pg_len, sizeof(pg_buf) - pg_len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(pg_buf) - pg_len) {
		fprintf(stderr, "prefill: a COPY row does not fit\n");
		exit(1);
	}
	pg_len += (size_t)n;
}

static void pg_end_copy(void)
{
	PGresult *r;

	pg_flush();
	if (PQputCopyEnd(pg, NULL) != 1)
		pg_die("COPY end");
	r = PQgetResult(pg);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		PQclear(r);
		pg_die("COPY");
	}
	PQclear(r);
	while ((r = PQgetResult(pg)))
		PQclear(r);
}

static void pg_begin_codes(void)
{
	pg = PQconnectdb(db_path);
	if (PQstatus(pg) != CONNECTION_OK)
		pg_die("connect");
	pg_exec("BEGIN", PGRES_COMMAND_OK);
	pg_exec("COPY otp_codes (phone, code_hash, created_ms, expires_ms, attempts,"
	        " max_attempts, state, ended_ms) FROM STDIN",
	        PGRES_COPY_IN);
}

static void pg_code(const struct code_row *r, long n)
{
	static const char hex[] = "0123456789abcdef";
	char h[2 * OTP_HASH_LEN + 1];
	char ended[24] = "\\N";

	(void)n;
	for (int i = 0; i < OTP_HASH_LEN; i++) {
		h[2 * i] = hex[r->hash[i] >> 4];
		h[2 * i + 1] = hex[r->hash[i] & 15];
	}
	h[2 * OTP_HASH_LEN] = '\0';
	if (r->ended >= 0)
		snprintf(ended, sizeof(ended), "%lld", (long long)r->ended);
	/* bytea in hex: \x...; in COPY's text format the backslash doubles */
	pg_put("%s\t\\\\x%s\t%lld\t%lld\t%d\t3\t%d\t%s\n", r->phone, h, (long long)r->created,
	       (long long)r->expires, r->attempts, r->state, ended);
}

static void pg_begin_users(void)
{
	pg_end_copy();
	pg_exec("COPY users (phone_number, username, email, is_active, is_staff,"
	        " created_at_ms, last_login_ms) FROM STDIN",
	        PGRES_COPY_IN);
}

static void pg_user_row(const struct user_row *r, long n)
{
	pg_users = n + 1;
	pg_put("%s\t%s\t%s\tt\tf\t%lld\t%lld\n", r->phone, r->username, r->email,
	       (long long)r->created, (long long)r->last_login);
}

static void pg_finish(void)
{
	pg_end_copy();
	pg_exec("COMMIT", PGRES_COMMAND_OK);
	/* Not an empty users table: PostgreSQL would then plan every lookup
	 * of a user (and the foreign key check of each new session) as a
	 * scan of a table it believes empty, and keep that plan while the
	 * table grows.  Never analyzed, it assumes a few pages and uses the
	 * indexes, as on a database that has been running for a while. */
	pg_exec(pg_users ? "ANALYZE otp_codes, users" : "ANALYZE otp_codes", PGRES_COMMAND_OK);
	PQfinish(pg);
	pg = NULL;
}

static const struct sink postgres_sink = {
	pg_begin_codes, pg_code, pg_begin_users, pg_user_row, pg_finish,
};

static void bulk(const struct sink *out, const uint8_t key[OTP_KEY_LEN], long k, long total,
                 long users, int64_t expiry_s)
{
	const int64_t now = now_ms();
	char phone[OTP_PHONE_LEN + 1], code[OTP_CODE_LEN + 1], uname[32], email[64];
	uint8_t hash[OTP_HASH_LEN];

	out->begin_codes();
	/* The filler first (the oldest ids), then the known codes. */
	for (long n = 0; n < total; n++) {
		const long i = n < total - k ? k + n : n - (total - k);
		struct code_row r = {.phone = phone, .hash = hash, .ended = -1};

		pool_entry(i, phone, code);
		if (i < k) {
			if (!otp_code_hash(key, phone, code, hash)) {
				fprintf(stderr, "prefill: otp_code_hash failed\n");
				exit(1);
			}
			r.created = now;
			r.expires = now + expiry_s * 1000;
		} else {
			for (int w = 0; w < OTP_HASH_LEN; w += 8) {
				uint64_t x = rng();
				memcpy(hash + w, &x, 8);
			}
			/* sent over the last 29 days (older first), at least
			 * a second ago; about a third used, a few with wrong
			 * guesses, the rest expired unused */
			const int64_t span = 29LL * 86400 * 1000;
			r.created = now - 1000 - span + (int64_t)((double)span * (double)n / (double)total);
			r.expires = r.created + 300000;
			r.state = (i % 3 == 0) ? 1 : 0;
			r.attempts = (i % 7 == 0) ? 1 : 0;
			if (r.state == 1)
				r.ended = r.created + 30000;
		}
		out->code(&r, n);
	}
	out->begin_users();
	for (long i = 0; i < users; i++) {
		int64_t created = now - 1000 - (int64_t)(rng() % (365LL * 86400 * 1000));

		put_digits(phone, USER_PREFIX, i, 7);
		snprintf(uname, sizeof(uname), "%s", phone + 1);
		snprintf(email, sizeof(email), "%s@temp.pilito.com", phone + 1);
		out->user(&(struct user_row){phone, uname, email, created, created + 1000}, i);
	}
	out->finish();
	otp_wipe(hash, sizeof(hash));
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: prefill DB SECRET_KEY [--codes K] [--total N] [--users U]\n"
	        "                             [--expiry SECONDS] [--via-store]\n"
	        "  DB           a SQLite file, or a postgres:// URL (PostgreSQL: loaded with COPY)\n"
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

	const bool postgres = !strncmp(db_path, "postgres://", 11) || !strncmp(db_path, "postgresql://", 13);

	if (postgres)
		snprintf(url, sizeof(url), "%s", db_path);
	else
		snprintf(url, sizeof(url), "sqlite:%s", db_path);
	if (store_open(url, &(struct store_options){.busy_timeout_ms = 5000}, NULL, 0, &s) != OTPD_OK || store_migrate(s, &applied) != OTPD_OK) {
		fprintf(stderr, "prefill: cannot open or migrate %s\n", postgres ? "the PostgreSQL database" : db_path);
		return 1;
	}
	if (use_store)
		via_store(s, key, k, expiry_s);
	store_close(s);
	if (!use_store && (total || users))
		bulk(postgres ? &postgres_sink : &sqlite_sink, key, k, total, users, expiry_s);
	otp_wipe(key, sizeof(key));
	printf("{\"codes\":%ld,\"known\":%ld,\"users\":%ld,\"via_store\":%s,\"seconds\":%.2f}\n",
	       total, k, users, use_store ? "true" : "false", mono_s() - t0);
	return 0;
}
