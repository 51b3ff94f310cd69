/* The store suites' fixture and helpers, shared by tests/store/test_store.c
 * (the conformance suite: the public API only, on any backend) and
 * tests/store/test_sqlite.c (the SQLite dialect's own suite).  Each test
 * binary is one .c file: every helper here is static inline, so that a
 * suite that does not use one is not warned about it.  Include after
 * <cmocka.h> (the helpers assert).
 *
 * The database of a test: fixture_setup(state, server) gives every test a
 * fresh one, migrated, and a log file of its own:
 * - server NULL: a temporary SQLite file (fx->path);
 * - server "postgres://..." or "postgresql://...": a database of its own,
 *   otpd_t<pid>_<n>, created on that server (libpq, with the server URL's
 *   host, port, user and parameters) and dropped WITH (FORCE) after the
 *   test.  The URL may carry a password: it is never printed.
 * fixture_extra_url() makes one more empty database (not migrated) the
 * same way.  Nothing else here knows which backend runs. */
#ifndef OTPD_TESTS_STORE_FIXTURE_H
#define OTPD_TESTS_STORE_FIXTURE_H

#include <dirent.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "log.h"
#include "store/store.h"

#define T0 1700000000000LL /* an arbitrary "now", epoch milliseconds */
#define DOMAIN "temp.pilito.com"
#define PHONE "+989123456789"
#define PHONE2 "+989351112233"
#define UNTOUCHED (-12345)
#define DAY_MS 86400000LL
#define GRACE_MS 10000LL

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

#define FIXTURE_DBS_MAX 4

struct fixture {
	char dir[64];   /* a temporary folder: the log (and SQLite's files) */
	char path[128]; /* SQLite: the database file; "" otherwise */
	char url[1024]; /* the test's database */
	char log[128];
	int log_fd;
	int applied;    /* by the first migrate */
	struct store *s;
	int reuses;     /* refusals that reported a reuse (expect_refused) */
	/* PostgreSQL: the server (OTPD_TEST_DATABASE_URL), and the databases
	 * made on it for this test, dropped by fixture_teardown(). */
	const char *server;
	char dbs[FIXTURE_DBS_MAX][64];
	int n_dbs;
	int n_extra;    /* SQLite: extra files made */
};

static inline bool fixture_is_postgres_url(const char *url)
{
	return url && (strncmp(url, "postgres://", 11) == 0 ||
	               strncmp(url, "postgresql://", 13) == 0);
}

/* store_open() with a busy timeout and the default options; a refusal as
 * configuration is logged (err NULL). */
static inline enum otpd_status open_url(const char *url, int busy_timeout_ms,
                                        struct store **ret)
{
	struct store_options opt = {.busy_timeout_ms = busy_timeout_ms};

	return store_open(url, &opt, NULL, 0, ret);
}

/* ---- PostgreSQL: a database per test ---- */

/* Run one command on the server's own database (CREATE / DROP DATABASE
 * cannot run inside a transaction: each is a command of its own). */
static inline bool fixture_pg_command(const char *server, const char *sql)
{
	PGconn *pg = PQconnectdb(server);
	PGresult *res;
	bool ok;

	if (PQstatus(pg) != CONNECTION_OK) {
		fprintf(stderr, "OTPD_TEST_DATABASE_URL: cannot connect: %s", PQerrorMessage(pg));
		PQfinish(pg);
		return false;
	}
	res = PQexec(pg, sql);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		fprintf(stderr, "%s: %s", sql, PQerrorMessage(pg));
	PQclear(res);
	PQfinish(pg);
	return ok;
}

/* Append s percent-encoded (RFC 3986: all but the unreserved characters). */
static inline bool fixture_url_append(char *url, size_t len, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(url);

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		bool plain = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		             (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' ||
		             ch == '~';

		if (n + (plain ? 1 : 3) >= len)
			return false;
		if (plain) {
			url[n++] = (char)ch;
		} else {
			url[n++] = '%';
			url[n++] = hex[ch >> 4];
			url[n++] = hex[ch & 15];
		}
	}
	url[n] = '\0';
	return true;
}

/* The URL of database `db` on the server of `server`: every parameter of
 * the server's URL (host, port, user, password, sslmode, ...) but the
 * database, as query parameters of a postgresql:// URI (which store_open
 * takes, and libpq parses). */
static inline bool fixture_pg_url(const char *server, const char *db, char *url, size_t len)
{
	PQconninfoOption *opts = PQconninfoParse(server, NULL);
	bool ok = opts != NULL;
	char sep = '?';

	if (!ok) {
		fprintf(stderr, "OTPD_TEST_DATABASE_URL is not a libpq connection URI\n");
		return false;
	}
	snprintf(url, len, "postgresql:///");
	ok = fixture_url_append(url, len, db);
	for (PQconninfoOption *o = opts; ok && o->keyword; o++) {
		size_t n = strlen(url);

		if (!o->val || strcmp(o->keyword, "dbname") == 0)
			continue;
		ok = n + 2 < len;
		if (ok) {
			url[n] = sep;
			url[n + 1] = '\0';
			sep = '&';
			ok = fixture_url_append(url, len, o->keyword) && strlen(url) + 2 < len;
		}
		if (ok) {
			strcat(url, "=");
			ok = fixture_url_append(url, len, o->val);
		}
	}
	PQconninfoFree(opts);
	if (!ok)
		fprintf(stderr, "OTPD_TEST_DATABASE_URL: the test database's URL is too long\n");
	return ok;
}

/* A new, empty database on fx's server, dropped after the test. */
static inline bool fixture_pg_create(struct fixture *fx, char *url, size_t len)
{
	static int made; /* databases this process made: their names differ */
	char sql[160];
	char *db;

	if (fx->n_dbs == FIXTURE_DBS_MAX)
		return false;
	db = fx->dbs[fx->n_dbs];
	snprintf(db, sizeof(fx->dbs[0]), "otpd_t%ld_%d", (long)getpid(), ++made);
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
	if (!fixture_pg_command(fx->server, sql))
		return false;
	fx->n_dbs++;
	return fixture_pg_url(fx->server, db, url, len);
}

/* ---- setup and teardown ---- */

static inline void fixture_remove_dir(const char *dir)
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

/* One more database for this test, empty (not migrated): its URL. */
static inline void fixture_extra_url(struct fixture *fx, char *url, size_t len)
{
	if (fx->server) {
		assert_true(fixture_pg_create(fx, url, len));
		return;
	}
	assert_true((size_t)snprintf(url, len, "sqlite:%s/extra%d.db", fx->dir, ++fx->n_extra) <
	            len);
}

static inline int fixture_teardown(void **state);

/* server: NULL for a SQLite file, else a postgres:// URL (see above). */
static inline int fixture_setup(void **state, const char *server)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	if (!fx)
		return -1;
	fx->log_fd = -1;
	strcpy(fx->dir, "/tmp/otpd-store-XXXXXX");
	if (!mkdtemp(fx->dir)) {
		free(fx);
		return -1;
	}
	*state = fx;
	snprintf(fx->log, sizeof(fx->log), "%s/log", fx->dir);
	/* Store errors go to a file the tests can read. */
	fx->log_fd = open(fx->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (fx->log_fd < 0)
		goto fail;
	log_set_fd(fx->log_fd);
	if (server) {
		fx->server = server;
		if (!fixture_pg_create(fx, fx->url, sizeof(fx->url)))
			goto fail;
	} else {
		snprintf(fx->path, sizeof(fx->path), "%s/otpd.db", fx->dir);
		snprintf(fx->url, sizeof(fx->url), "sqlite:%s", fx->path);
	}
	if (open_url(fx->url, 10000, &fx->s) != OTPD_OK ||
	    store_migrate(fx->s, &fx->applied) != OTPD_OK)
		goto fail;
	return 0;
fail:
	fixture_teardown(state);
	*state = NULL;
	return -1;
}

static inline bool log_contains(const struct fixture *fx, const char *needle)
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

/* How many times needle is in the log. */
static inline int log_count(const struct fixture *fx, const char *needle)
{
	char buf[262144];
	FILE *f = fopen(fx->log, "r");
	size_t n;
	int count = 0;

	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	for (const char *p = buf; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		count++;
	return count;
}

static inline int fixture_teardown(void **state)
{
	struct fixture *fx = *state;
	char sql[160];
	int rc = 0;

	if (!fx)
		return 0;
	store_close(fx->s);
	for (int i = 0; i < fx->n_dbs; i++) {
		snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", fx->dbs[i]);
		if (!fixture_pg_command(fx->server, sql))
			rc = -1;
	}
	log_set_fd(2);
	if (fx->log_fd >= 0)
		close(fx->log_fd);
	/* Phone numbers reach the log only masked (docs/API.md §4). */
	if (log_contains(fx, "9123456789") || log_contains(fx, "9351112233")) {
		fprintf(stderr, "an unmasked phone number was logged (%s)\n", fx->log);
		rc = -1;
	} else {
		fixture_remove_dir(fx->dir);
	}
	free(fx);
	return rc;
}

/* ---- codes: send and verify ---- */

/* A stand-in for a code's hash: distinct seeds, distinct hashes. */
static inline void hash_of(int seed, uint8_t ret[OTP_HASH_LEN])
{
	uint32_t u = (uint32_t)seed;

	for (int i = 0; i < OTP_HASH_LEN; i++)
		ret[i] = (uint8_t)(i * 7 + 1);
	for (int i = 0; i < 4; i++)
		ret[i] = (uint8_t)(u >> (8 * i));
}

static inline enum otpd_status issue(struct store *s, const struct otp_policy *p,
                                     const char *phone, int seed, int64_t now_ms,
                                     struct store_issue_result *ret)
{
	uint8_t h[OTP_HASH_LEN];

	hash_of(seed, h);
	return store_otp_issue(s, p, phone, h, now_ms, NULL, ret);
}

static inline enum otpd_status verify(struct store *s, const struct otp_policy *p,
                                      const char *phone, int seed, int64_t now_ms,
                                      const struct store_session *session,
                                      struct store_verify_result *ret)
{
	uint8_t h[OTP_HASH_LEN];

	hash_of(seed, h);
	return store_otp_verify(s, p, phone, h, DOMAIN, session, now_ms, NULL, ret);
}

static inline struct store_verify_result untouched_verify(void)
{
	struct store_verify_result r;

	memset(&r, 0, sizeof(r));
	r.remaining_attempts = UNTOUCHED;
	r.user.id = UNTOUCHED;
	return r;
}

static inline int64_t issue_ok(struct store *s, const struct otp_policy *p,
                               const char *phone, int seed, int64_t now_ms)
{
	struct store_issue_result ir = {.otp_id = UNTOUCHED};

	assert_int_equal(issue(s, p, phone, seed, now_ms, &ir), OTPD_OK);
	assert_true(ir.otp_id > 0);
	return ir.otp_id;
}

static inline void expect_invalid(struct store *s, const char *phone, int seed,
                                  int64_t now_ms, int remaining)
{
	struct store_verify_result vr = untouched_verify();

	assert_int_equal(verify(s, &defaults, phone, seed, now_ms, NULL, &vr),
	                 OTPD_INVALID_CODE);
	assert_int_equal(vr.remaining_attempts, remaining);
}

/* A status that carries no data leaves ret untouched (STYLE.md). */
static inline void expect_plain(struct store *s, const char *phone, int seed,
                                int64_t now_ms, enum otpd_status want)
{
	struct store_verify_result vr = untouched_verify();

	assert_int_equal(verify(s, &defaults, phone, seed, now_ms, NULL, &vr), want);
	assert_int_equal(vr.remaining_attempts, UNTOUCHED);
	assert_int_equal(vr.user.id, UNTOUCHED);
}

/* ---- what the store holds, through its reads ---- */

/* Every code of phone (NULL: of every number), OLDEST first, read in pages
 * of `page` rows (store_codes_list, newest first, the cursor moving down);
 * at most cap of them.  Returns how many. */
static inline size_t codes_paged(struct store *s, const char *phone, size_t page,
                                 struct store_code_row *ret, size_t cap)
{
	struct store_codes_query q = {.phone = phone};
	size_t total = 0, n;

	assert_true(page >= 1 && page <= STORE_PAGE_MAX);
	do {
		assert_true(total + page <= cap); /* room for a whole page */
		n = UNTOUCHED;
		assert_int_equal(store_codes_list(s, &q, ret + total, page, &n), OTPD_OK);
		assert_true(n <= page);
		for (size_t i = 0; i < n; i++) {
			if (total + i > 0) /* newest first, no id twice */
				assert_true(ret[total + i].id < ret[total + i - 1].id);
			if (phone && phone[0])
				assert_string_equal(ret[total + i].phone, phone);
		}
		total += n;
		if (n)
			q.before_id = ret[total - 1].id;
	} while (n == page);
	for (size_t i = 0; i < total / 2; i++) { /* oldest first */
		struct store_code_row t = ret[i];

		ret[i] = ret[total - 1 - i];
		ret[total - 1 - i] = t;
	}
	return total;
}

#define CODES_MAX 512

/* Every code of phone (NULL: all), oldest first, into ret[CODES_MAX]. */
static inline size_t codes_all(struct store *s, const char *phone, struct store_code_row *ret)
{
	return codes_paged(s, phone, 7, ret, CODES_MAX);
}

/* How many codes of phone (NULL: all) are in state `state` (-1: any). */
static inline size_t codes_count(struct store *s, const char *phone, int state)
{
	static struct store_code_row rows[CODES_MAX];
	size_t n = codes_all(s, phone, rows), c = 0;

	for (size_t i = 0; i < n; i++)
		c += state < 0 || rows[i].state == state;
	return c;
}

/* Code `id`: true and *ret when it is there. */
static inline bool code_get(struct store *s, int64_t id, struct store_code_row *ret)
{
	struct store_codes_query q = {.before_id = id + 1};
	struct store_code_row r;
	size_t n = UNTOUCHED;

	assert_int_equal(store_codes_list(s, &q, &r, 1, &n), OTPD_OK);
	assert_true(n <= 1);
	if (n == 0 || r.id != id)
		return false;
	*ret = r;
	return true;
}

/* Code `id` is there: state, attempts and ended_ms (-1: not ended) as given. */
static inline void expect_code(struct store *s, int64_t id, int state, int attempts,
                               int64_t ended_ms)
{
	struct store_code_row r;

	if (!code_get(s, id, &r))
		fail_msg("code %lld is not there", (long long)id);
	assert_int_equal(r.state, state);
	assert_int_equal(r.attempts, attempts);
	assert_int_equal(r.ended_ms, ended_ms);
}

/* Every stats bucket, summed. */
struct stats_total {
	int64_t buckets, sends, sms_failures, logins, new_users, wrong_guesses, locks;
};

static inline struct stats_total stats_total(struct store *s)
{
	static struct store_stats_bucket b[1000];
	struct stats_total t;
	size_t n = UNTOUCHED;

	memset(&t, 0, sizeof(t));
	assert_int_equal(store_stats(s, INT64_MIN, INT64_MAX, b, 1000, &n), OTPD_OK);
	assert_true(n < 1000);
	t.buckets = (int64_t)n;
	for (size_t i = 0; i < n; i++) {
		t.sends += b[i].sends;
		t.sms_failures += b[i].sms_failures;
		t.logins += b[i].logins;
		t.new_users += b[i].new_users;
		t.wrong_guesses += b[i].wrong_guesses;
		t.locks += b[i].locks;
	}
	return t;
}

/* The stats sums are these (over every bucket). */
static inline void expect_stats(struct store *s, int64_t sends, int64_t sms_failures,
                                int64_t logins, int64_t new_users, int64_t wrong_guesses)
{
	struct stats_total t = stats_total(s);

	assert_int_equal(t.sends, sends);
	assert_int_equal(t.sms_failures, sms_failures);
	assert_int_equal(t.logins, logins);
	assert_int_equal(t.new_users, new_users);
	assert_int_equal(t.wrong_guesses, wrong_guesses);
	assert_int_equal(t.locks, 0);
}

#define SESSIONS_MAX 64

/* Every refresh record of user uid (newest first), into ret[SESSIONS_MAX]. */
static inline size_t sessions_of(struct store *s, int64_t uid, struct store_session_info *ret)
{
	size_t n = UNTOUCHED;

	assert_int_equal(store_user_sessions(s, uid, ret, SESSIONS_MAX, &n), OTPD_OK);
	assert_true(n < SESSIONS_MAX);
	for (size_t i = 1; i < n; i++)
		assert_true(ret[i].created_ms <= ret[i - 1].created_ms);
	return n;
}

enum which { ANY, LIVE, NOT_REVOKED };

/* How many records of user uid are in `family` (and in the state asked). */
static inline long long family_count(struct store *s, int64_t uid, const char *family,
                                     enum which which)
{
	struct store_session_info r[SESSIONS_MAX];
	size_t n = sessions_of(s, uid, r);
	long long c = 0;

	for (size_t i = 0; i < n; i++)
		c += strcmp(r[i].family, family) == 0 &&
		     (which == ANY || (which == LIVE && r[i].state == 0) ||
		      (which == NOT_REVOKED && r[i].state != 2));
	return c;
}

/* The record of user uid in `family` created at created_ms: true and *ret
 * when there is exactly one. */
static inline bool session_find(struct store *s, int64_t uid, const char *family,
                                int64_t created_ms, struct store_session_info *ret)
{
	struct store_session_info r[SESSIONS_MAX];
	size_t n = sessions_of(s, uid, r);
	int found = 0;

	for (size_t i = 0; i < n; i++) {
		if (strcmp(r[i].family, family) == 0 && r[i].created_ms == created_ms) {
			*ret = r[i];
			found++;
		}
	}
	return found == 1;
}

/* Every record of the users uids[0..n), every field: for "nothing changes". */
static inline void sessions_snapshot(struct store *s, const int64_t *uids, size_t n_uids,
                                     char *out, size_t len)
{
	size_t used = 0;

	out[0] = '\0';
	for (size_t u = 0; u < n_uids; u++) {
		struct store_session_info r[SESSIONS_MAX];
		size_t n = sessions_of(s, uids[u], r);
		int k = snprintf(out + used, len - used, "%lld:%zu:", (long long)uids[u], n);

		assert_true(k > 0 && (size_t)k < len - used);
		used += (size_t)k;
		for (size_t i = 0; i < n; i++) {
			k = snprintf(out + used, len - used, "%s,%d,%lld,%lld,%lld;", r[i].family,
			             r[i].state, (long long)r[i].created_ms,
			             (long long)r[i].expires_ms, (long long)r[i].rotated_ms);
			assert_true(k > 0 && (size_t)k < len - used);
			used += (size_t)k;
		}
	}
}

/* ---- sessions: rotate, revoke (store.h, docs/API.md §3 "Tokens") ---- */

/* A session as auth/ prepares one: jtis distinct for each n (32 hex). */
static inline struct store_session session_of(unsigned n, int64_t created_ms)
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

static inline struct store_rotate_result untouched_rotate(void)
{
	struct store_rotate_result r;

	memset(&r, 0, sizeof(r));
	r.user.id = UNTOUCHED;
	r.session.created_ms = UNTOUCHED;
	return r;
}

static inline void assert_session_equal(const struct store_session *got,
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
static inline int64_t login(struct fixture *fx, const char *phone,
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
static inline struct store_rotate_result rotate_ok(struct store *s,
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
 * offered is not recorded (a rotation records it under user_id: that user
 * has as many records as before). */
static inline void expect_refused(struct fixture *fx, const char *jti, int64_t user_id,
                                  int64_t grace_ms, int64_t now_ms,
                                  enum otpd_status want)
{
	struct store_session next = session_of(0xdead, now_ms);
	struct store_rotate_result rr = untouched_rotate();
	struct store_session_info r[SESSIONS_MAX];
	size_t before = sessions_of(fx->s, user_id, r);

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
	assert_int_equal(sessions_of(fx->s, user_id, r), before);
}

/* ---- many callers (group commit) ---- */

/* Distinct numbers for the group-commit tests: +98912 + 7 digits. */
static inline void gc_phone(int thread, int round, char ret[OTP_PHONE_LEN + 1])
{
	snprintf(ret, OTP_PHONE_LEN + 1, "+98912%07d", thread * 1000 + round);
}

#define GC_JOBS 12 /* a batch's worth of concurrent logins */

struct gc_verify {
	struct store *s;
	const char *phone;
	int seed;
	const struct store_session *session;
	enum otpd_status status;
	struct store_verify_result vr;
	atomic_int *finished;
};

static inline void *gc_verify_one(void *arg)
{
	struct gc_verify *v = arg;

	v->vr = untouched_verify();
	v->status = verify(v->s, &lenient, v->phone, v->seed, T0 + 10, v->session, &v->vr);
	if (v->finished)
		atomic_fetch_add(v->finished, 1);
	return NULL;
}

/* ---- SMS delivery ---- */

static inline void expect_pending(struct store *s, int64_t since_ms, size_t limit,
                                  size_t want_n, const int64_t *want_ids,
                                  const int64_t *want_msgs)
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

#endif
