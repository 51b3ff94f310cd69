/* The store: one interface that owns every SQL statement and the
 * migrations.  Each operation is one transaction named after a domain rule,
 * so every guarantee (single use, attempt counts, send limits, one user per
 * number) holds atomically under concurrency and across nodes.  A write is
 * durable (synced) before the call returns OTPD_OK.
 *
 * One engine (store/queue.c: a bounded queue, worker threads, group commit)
 * drives two dialects, store/sqlite.c and store/postgres.c; store_open()
 * picks one from the DATABASE_URL scheme (store/backend.h says how they
 * fit).  All calls are thread-safe.  Driver errors are translated in the
 * dialect and logged once: unreachable / locked / read-only / disk full /
 * a queue that is full -> OTPD_UNAVAILABLE. */
#ifndef OTPD_STORE_H
#define OTPD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../status.h"
#include "../otp/code.h"
#include "../otp/phone.h"
#include "../otp/policy.h"

struct store;

#define STORE_NAME_MAX 150   /* first_name, last_name */
#define STORE_EMAIL_MAX 254
#define STORE_USERNAME_MAX 150
#define STORE_JTI_LEN 32     /* hex of 16 random bytes */

struct store_user {
	int64_t id;
	int64_t created_ms;    /* when it was created (its first login) */
	int64_t last_login_ms; /* its last login; -1: none recorded */
	char phone_number[OTP_PHONE_LEN + 1];
	char username[STORE_USERNAME_MAX + 1];
	char email[STORE_EMAIL_MAX + 1];
	char first_name[STORE_NAME_MAX + 1]; /* "" with has_first_name false = null */
	char last_name[STORE_NAME_MAX + 1];
	bool has_first_name;
	bool has_last_name;
	bool is_active;
	bool is_staff;
};

/* A refresh-token record, created in the same transaction as a login or a
 * rotation.  It holds what is needed to mint its token pair again
 * (the rotation grace window): both jtis and both times. */
struct store_session {
	char jti[STORE_JTI_LEN + 1];        /* the refresh token's jti */
	char access_jti[STORE_JTI_LEN + 1]; /* the access token minted with it */
	char family[STORE_JTI_LEN + 1];     /* the login it descends from */
	int64_t created_ms;                 /* iat of both tokens */
	int64_t expires_ms;                 /* exp of the refresh token */
};

struct store_rotate_result {
	struct store_user user;
	struct store_session session; /* the pair to hand out (new, or the one
	                                 already minted inside the grace window) */
	bool replayed;                /* true: inside the grace window */
	/* With OTPD_INVALID_TOKEN: a rotated-out token was presented again and
	 * its family (revoked_records records) is revoked.  Not logged by the
	 * store: the caller reports it, once. */
	bool reuse_detected;
	int revoked_records;
};

struct store_issue_result {
	int64_t otp_id;        /* identifies this code for store_otp_cancel() */
	int retry_after_s;     /* with OTPD_OTP_RATE_LIMITED and OTPD_THROTTLED */
};

/* A per-client throttle (OTP_THROTTLE_RATE, OTP_VERIFY_THROTTLE_RATE) that a
 * database shared by several nodes counts for all of them: a GCRA of
 * `count` requests per `period_ms` (bursts up to count) on `key` (the
 * endpoint and the client's address, its /64 for IPv6), checked first in
 * the operation's own transaction.  When the client is over it, the
 * operation answers OTPD_THROTTLED with retry_after_s and does nothing
 * else.  A dialect whose database one node owns (SQLite) leaves it to the
 * in-memory throttle each node keeps in front (src/util/ratelimit.c),
 * which is exact there.  NULL: no throttle. */
#define STORE_THROTTLE_KEY_MAX 24

struct store_throttle {
	uint8_t key[STORE_THROTTLE_KEY_MAX];
	size_t key_len;
	int64_t count;     /* >= 1 */
	int64_t period_ms; /* >= 1 */
};

struct store_verify_result {
	int retry_after_s;          /* with OTPD_THROTTLED */
	int remaining_attempts;     /* with OTPD_INVALID_CODE */
	bool is_new_user;           /* with OTPD_OK */
	struct store_user user;     /* with OTPD_OK and OTPD_USER_INACTIVE */
};

/* The dashboard's counters (store_stats) are kept per bucket of this many
 * milliseconds: a bucket starts at a multiple of it (epoch time). */
#define STORE_STATS_BUCKET_MS 300000

/* One bucket: the events of [bucket_ms, bucket_ms + STORE_STATS_BUCKET_MS),
 * each counted once, in the transaction of the operation it counts. */
struct store_stats_bucket {
	int64_t bucket_ms;
	int64_t sends;         /* codes issued (store_otp_issue answered OTPD_OK) */
	int64_t sms_failures;  /* codes cancelled (store_otp_cancel changed one) */
	int64_t logins;        /* verify answered OTPD_OK */
	int64_t new_users;     /* ... with is_new_user */
	int64_t wrong_guesses; /* verify answered OTPD_INVALID_CODE (an attempt used) */
	int64_t locks;         /* none yet: always 0 */
};

/* SMS delivery statuses, as the provider numbers them (Kavenegar: 1 queued,
 * 2 scheduled, 4 and 5 sent to the operator: in progress; 6 failed, 10
 * delivered, 11 undelivered, 13 cancelled, 14 blocked, 100 unknown message
 * id: final).  The store only needs to know which are final: those from
 * STORE_SMS_STATUS_FINAL up (another provider maps its statuses onto these
 * numbers).  The partial index otp_codes_delivery (migration 4) holds the
 * same 6. */
#define STORE_SMS_STATUS_FINAL 6

/* A code whose SMS was accepted and whose delivery is not known yet. */
struct store_delivery_pending {
	int64_t otp_id;
	int64_t message_id; /* the provider's */
	int64_t created_ms; /* when the code was issued */
	char phone[OTP_PHONE_LEN + 1];
};

/* A delivery status learnt from the provider. */
struct store_delivery_status {
	int64_t otp_id;
	int status;     /* the provider's, see STORE_SMS_STATUS_FINAL */
	int64_t now_ms; /* when it was learnt */
};

/* Called once an asynchronous operation (store_*_start) is answered; see
 * "Asynchronous forms" below. */
typedef void (*store_done_fn)(void *arg, enum otpd_status status);

struct store_options {
	/* How long a write waits for a lock before the call answers
	 * OTPD_UNAVAILABLE (SQLite's busy timeout; PostgreSQL's
	 * lock_timeout). */
	int busy_timeout_ms;
	/* PostgreSQL: connections per node (DATABASE_POOL_SIZE), each driven
	 * by a store thread of its own; a statement's time limit
	 * (statement_timeout) and how long a connection attempt may take.
	 * 0: the defaults. */
	int pool_size;
	int statement_timeout_ms;
	int connect_timeout_ms;
	/* Jobs waiting for the database at most (OTPD_STORE_MAX_QUEUE); past
	 * it a call answers OTPD_UNAVAILABLE.  0: the default. */
	size_t queue_max;
	/* Jobs per transaction at most (a savepoint each); 0: the dialect's
	 * choice (SQLite 512, PostgreSQL 1: see store/postgres.c).  The
	 * tests of the engine's batches set it. */
	int batch_max;
	/* Open a database file (or side file) that users other than its
	 * owner may read or write (OTPD_ALLOW_SHARED_DB_FILE), with a
	 * warning; refused otherwise. */
	bool allow_shared_file;
};

/* Open by URL: "sqlite:PATH" (also "sqlite://PATH") -> store/sqlite.c;
 * "postgres://..." or "postgresql://..." (libpq's URI, with its parameters,
 * e.g. ?sslmode=require) -> store/postgres.c.
 * The files it creates (the database, its -wal and -shm) are readable and
 * writable by their owner only: the database holds code hashes, sessions
 * and, without SECRET_KEY, the signing secret.  (It sets the process umask
 * to 077 while it creates the file: call it before starting threads that
 * create files of their own.)
 *
 * On failure *ret is untouched and one line says why.  It is logged, except
 * when the database is refused as configuration, like a bad variable: a
 * file that others can read or write, without allow_shared_file.  Then the
 * call answers OTPD_FORBIDDEN, logs nothing, and writes the line to err
 * ("DATABASE_URL: otpd.db is readable by other users (mode 0644); ...", no
 * newline) for the caller to print; with err NULL it is logged too. */
enum otpd_status store_open(const char *url, const struct store_options *opt,
                            char *err, size_t errlen, struct store **ret);
void store_close(struct store *s); /* accepts NULL */

/* Apply pending migrations (embedded, append-only, versioned). */
enum otpd_status store_migrate(struct store *s, int *ret_applied);

/* OTPD_OK when the database answers (readyz). */
enum otpd_status store_ping(struct store *s);

/* A named secret kept in the database: returns the stored value, or stores
 * `fresh` (len bytes) if there is none yet, atomically (one value wins even
 * when several nodes start at once).  ret_len must equal len. */
enum otpd_status store_secret_get_or_create(struct store *s, const char *name,
                                            const uint8_t *fresh, size_t len,
                                            uint8_t *ret, size_t ret_len);

/* Send request (docs/API.md §3), one transaction: if the phone already has
 * send_limit codes issued within the last send_window (whatever became of
 * them: used, cancelled, replaced all count), answer OTPD_OTP_RATE_LIMITED
 * with retry_after_s (a refused request is not recorded); else mark the
 * phone's current code replaced (state 3, when it was still valid: it stops
 * working), record the new code (a row of its own: the hash, expiring at
 * now + expiry, 0 attempts of p->max_attempts), count a send in the stats,
 * and return its otp_id.  Codes are kept until store_history_purge(). */
enum otpd_status store_otp_issue(struct store *s, const struct otp_policy *p,
                                 const char *phone,
                                 const uint8_t hash[OTP_HASH_LEN],
                                 int64_t now_ms, const struct store_throttle *throttle,
                                 struct store_issue_result *ret);

/* The SMS for code otp_id of phone was not accepted: it must never verify.
 * The code becomes cancelled (state 2, ended at now_ms), also when a newer
 * code has replaced it meanwhile (its SMS never went out either); the newer
 * code is untouched.  A used or already cancelled code, or an otp_id of
 * another phone, is left as it is.  An SMS failure is counted in the stats
 * when the code changed (so a repeated cancel counts once). */
enum otpd_status store_otp_cancel(struct store *s, const char *phone,
                                  int64_t otp_id, int64_t now_ms);

/* The provider accepted the SMS of code otp_id and named it message_id:
 * record it (sms_message_id, and sms_status_ms = now_ms with no status
 * yet), so that store_otp_delivery_pending() lists the code until a final
 * status is known.  Whatever the code's state.  Only as an asynchronous
 * operation (below); done may be NULL: fire and forget (a failure is
 * logged, and nobody is told). */
enum otpd_status store_otp_sms_accepted_start(struct store *s, int64_t otp_id,
                                              int64_t message_id, int64_t now_ms,
                                              store_done_fn done, void *arg);

/* The codes whose SMS was accepted (a message id) and whose delivery status
 * is not final (none yet, or below STORE_SMS_STATUS_FINAL), created after
 * since_ms, oldest first, at most `limit` of them, into ret[0..*ret_n).  A
 * read: it never waits for the writer (the codes accepted by a write that
 * has not committed yet are not seen). */
enum otpd_status store_otp_delivery_pending(struct store *s, int64_t since_ms,
                                            size_t limit,
                                            struct store_delivery_pending *ret,
                                            size_t *ret_n);

/* Record n delivery statuses (sms_status, sms_status_ms = the item's
 * now_ms), in one transaction: all or none.  A code whose status is final
 * already keeps it (a late "in progress" never overwrites "delivered");
 * an unknown otp_id is skipped. */
enum otpd_status store_otp_delivery_set(struct store *s, size_t n,
                                        const struct store_delivery_status *items);

/* The stats buckets with since_ms <= bucket_ms < until_ms, oldest first,
 * at most cap of them (the oldest), into ret[0..*ret_n).  Buckets without
 * any event are absent.  "Per 5 minutes over the last 24 h" is since =
 * now - 86400000, at most 289 buckets.  A read: it never waits for the
 * writer. */
enum otpd_status store_stats(struct store *s, int64_t since_ms, int64_t until_ms,
                             struct store_stats_bucket *ret, size_t cap,
                             size_t *ret_n);

/* Retention: delete at most `limit` rows in all, of the stats buckets that
 * start before before_ms and of the codes created before before_ms, taken
 * from the oldest (codes by id: ids follow creation, so a pass reads only
 * the oldest `limit` codes and deletes those among them that are old
 * enough); *ret_deleted says how many (a stats bucket is one row on
 * SQLite; on PostgreSQL one per connection that counted in it, up to 16).  Bounded work per call: call again
 * while it deletes any.  The caller keeps before_ms behind the code expiry
 * and the send window (a newer code still counts). */
enum otpd_status store_history_purge(struct store *s, int64_t before_ms, int limit,
                                     int *ret_deleted);

/* Verify (docs/API.md §3), one transaction: load the phone's current code
 * (its newest: an earlier code is never judged, so an old code presented
 * after a resend is a wrong guess against the current one), judge it with
 * otp_policy_judge() (hash compared with otp_hash_equal(); attempts allowed:
 * the smaller of the code's max_attempts and p's), apply the verdict (count
 * the attempt, ended when it was the last / mark used).  On a right code:
 * get or create the user (username = digits, email = digits@email_domain);
 * if the user is inactive answer OTPD_USER_INACTIVE (the code is used up
 * all the same); else record `session` (when not NULL) and answer OTPD_OK.
 * The stats count a wrong guess, or a login (and a new user). */
enum otpd_status store_otp_verify(struct store *s, const struct otp_policy *p,
                                  const char *phone,
                                  const uint8_t hash[OTP_HASH_LEN],
                                  const char *email_domain,
                                  const struct store_session *session,
                                  int64_t now_ms, const struct store_throttle *throttle,
                                  struct store_verify_result *ret);

/* OTPD_OK and the user, or OTPD_NOT_FOUND. */
enum otpd_status store_user_get(struct store *s, int64_t id,
                                struct store_user *ret);

/* ---- the staff console (admin API): what an admin reads and changes ---- */

/* A page of a list holds at most this many rows. */
#define STORE_PAGE_MAX 1000

/* Which codes store_codes_list() returns. */
struct store_codes_query {
	const char *phone; /* NULL or "": the codes of every number */
	int64_t before_id; /* the cursor: only ids below it (the last id of the
	                      page before); 0: from the newest */
	int64_t since_ms;  /* created_ms >= since_ms; 0: no lower bound */
	int64_t until_ms;  /* created_ms < until_ms; 0: no upper bound */
};

/* An issued code as an admin sees it: everything but its hash.  What it is
 * called derives from these (migration 4): used, cancelled and replaced are
 * states; an active code is exhausted (attempts >= max_attempts), expired
 * (now >= expires_ms) or valid. */
struct store_code_row {
	int64_t id;             /* its otp_id */
	char phone[OTP_PHONE_LEN + 1];
	int64_t created_ms;
	int64_t expires_ms;
	int64_t ended_ms;       /* used, cancelled, replaced or exhausted then; -1: not */
	int attempts;
	int max_attempts;
	int state;              /* enum otp_code_state: 0 active, 1 used, 2 cancelled,
	                           3 replaced */
	int64_t sms_message_id; /* the provider's, once it accepted the SMS; 0: none */
	int sms_status;         /* its delivery status (STORE_SMS_STATUS_FINAL); -1: none */
	int64_t sms_status_ms;  /* when that was learnt (or the message id recorded);
	                           -1: never */
};

/* What an admin calls code r at now_ms (docs/API.md §6): "used",
 * "cancelled", "replaced" (its state), else "exhausted" (out of attempts,
 * or ended by its last guess), "expired" (now_ms >= expires_ms) or
 * "valid". */
const char *store_code_status(const struct store_code_row *r, int64_t now_ms);

/* The codes issued that match q, newest first (by id), at most cap of them
 * (1..STORE_PAGE_MAX: a page), into ret[0..*ret_n).  The next page: the same
 * query with before_id = the last row's id; fewer than cap rows: the last
 * page.  A number's codes are read through its index; without a number the
 * codes are walked by id from the cursor down, and the time bounds only
 * filter that walk (a range that holds fewer than cap codes reads every
 * code older than it).  A read: it never waits for the writer. */
enum otpd_status store_codes_list(struct store *s, const struct store_codes_query *q,
                                  struct store_code_row *ret, size_t cap, size_t *ret_n);

/* A refresh-token record as an admin sees it: the login it descends from
 * (its family), not the token's jti. */
struct store_session_info {
	char family[STORE_JTI_LEN + 1];
	int state;          /* 0 live, 1 rotated, 2 revoked */
	int64_t created_ms;
	int64_t expires_ms;
	int64_t rotated_ms; /* -1: not rotated */
};

/* The refresh-token records of user user_id (until store_session_purge()
 * deletes them), newest first (by created_ms), at most cap of them
 * (1..STORE_PAGE_MAX), into ret[0..*ret_n).  An unknown user has none.  A
 * read: it never waits for the writer. */
enum otpd_status store_user_sessions(struct store *s, int64_t user_id,
                                     struct store_session_info *ret, size_t cap,
                                     size_t *ret_n);

/* What store_user_update() changes: each flag only when its set_ is true. */
struct store_user_change {
	bool set_active;
	bool is_active;
	bool set_staff;
	bool is_staff;
};

/* ---- the audit log: every admin action, append-only ----
 *
 * An entry says who (actor), did what (action), to what (target), when
 * (time_ms) and from where (client).  The store has no operation that
 * changes or deletes an entry.  Conventions (docs/ARCHITECTURE.md, "Audit
 * log"):
 * - actor: "cli" for the command line, "user:<id>" for a staff user of the
 *   admin API;
 * - action: user.activate, user.deactivate, user.set_staff,
 *   user.unset_staff, codes.search_by_code, purge, ...;
 * - target: "user:<id>" for a user (an entry given to store_user_update*()
 *   with an empty target gets "user:<id>" of the user changed), the number
 *   (E.164) for a search, a summary for a purge;
 * - client: the client's address (admin API), or none (the command line).
 * Text is stored as given (bounded by the sizes below); the caller keeps
 * secrets out of it. */
#define STORE_AUDIT_ACTOR_MAX 64
#define STORE_AUDIT_ACTION_MAX 64
#define STORE_AUDIT_TARGET_MAX 256
#define STORE_AUDIT_CLIENT_MAX 64

struct store_audit_entry {
	int64_t id;      /* assigned by the store (ignored when appending) */
	int64_t time_ms;
	char actor[STORE_AUDIT_ACTOR_MAX + 1];   /* not empty */
	char action[STORE_AUDIT_ACTION_MAX + 1]; /* not empty */
	char target[STORE_AUDIT_TARGET_MAX + 1];
	char client[STORE_AUDIT_CLIENT_MAX + 1]; /* "" with has_client false = null */
	bool has_client;
};

/* Append e (its id is ignored), one transaction.  OTPD_OK once it is
 * durable; OTPD_INTERNAL (logged) when actor or action is empty or a field
 * is not NUL-terminated within its size. */
enum otpd_status store_audit_append(struct store *s, const struct store_audit_entry *e);

/* A page of the audit log, newest first (by id): the entries with id <
 * before_id (0: from the newest), at most cap (1..STORE_PAGE_MAX), into
 * ret[0..*ret_n).  The next page: before_id = the last entry's id; fewer
 * than cap: the last page.  Through the primary key.  A read: it never
 * waits for the writer. */
enum otpd_status store_audit_list(struct store *s, int64_t before_id,
                                  struct store_audit_entry *ret, size_t cap,
                                  size_t *ret_n);

/* Change user id, one transaction: is_active and is_staff as c says;
 * deactivating (set_active, is_active false) also revokes every refresh
 * record of the user (state 2: every session ends, and a reactivation
 * brings none back).  With audit not NULL, that entry is appended in the
 * same transaction (only when the user exists): a change is never without
 * its entry, nor an entry without its change.  OTPD_OK and *ret = the user
 * after the change (ret may be NULL), or OTPD_NOT_FOUND. */
enum otpd_status store_user_update(struct store *s, int64_t id,
                                   const struct store_user_change *c,
                                   const struct store_audit_entry *audit,
                                   struct store_user *ret);

/* The same for the user of a number (phone normalised, +989XXXXXXXXX; the
 * command line names users by number).  With create true a number that
 * never logged in gets its user first (as a first login would make it:
 * username = digits, email = digits@email_domain, active, no last login,
 * created at now_ms), then the change: one user per number holds when
 * raced (UNIQUE, insert-or-conflict).  *ret_created (may be NULL) says
 * whether it was created.  OTPD_NOT_FOUND without create when the number
 * has no user. */
enum otpd_status store_user_update_by_phone(struct store *s, const char *phone,
                                            const struct store_user_change *c,
                                            bool create, const char *email_domain,
                                            const struct store_audit_entry *audit,
                                            int64_t now_ms, struct store_user *ret,
                                            bool *ret_created);

/* OTPD_OK and the user of a number (normalised), or OTPD_NOT_FOUND.  A
 * read through the unique index on phone_number. */
enum otpd_status store_user_get_by_phone(struct store *s, const char *phone,
                                         struct store_user *ret);

/* Which users store_users_list() returns: one of
 * - phone (normalised): that number's user (0 or 1 row, with id < before_id);
 * - username_prefix: the users whose username starts with it, in username
 *   order (bytewise), after after_username ("" or NULL: from the first):
 *   a range of the username index.  A prefix of other characters than
 *   ASCII letters, digits and "@.+-_" (the characters of a username) or
 *   longer than STORE_USERNAME_MAX matches nobody;
 * - neither: every user, newest first (by id), with id < before_id (0:
 *   from the newest), through the primary key. */
struct store_users_query {
	const char *phone;
	const char *username_prefix;
	int64_t before_id;
	const char *after_username;
};

/* A page of users (1..STORE_PAGE_MAX of them) into ret[0..*ret_n).  The
 * next page: before_id = the last row's id (or after_username = its
 * username, for a prefix); fewer than cap rows: the last page.  A read: it
 * never waits for the writer. */
enum otpd_status store_users_list(struct store *s, const struct store_users_query *q,
                                  struct store_user *ret, size_t cap, size_t *ret_n);

/* The search by code (docs/API.md §6, GET /admin/codes?code=): the codes of
 * number phone whose hash equals `hash` (the caller's otp_code_hash() of
 * the candidate, with the key that issued them) AMONG those that can no
 * longer be used: used, cancelled or replaced, exhausted (attempts >=
 * max_attempts, or ended), or expired at now_ms.  A still valid code
 * never matches, so the search cannot be used to guess a live code.
 * Newest first, at most cap (1..STORE_PAGE_MAX), into ret[0..*ret_n); the
 * hash is never returned.  `audit` (required: every search by code is in
 * the audit log) is appended in the same transaction: a search answered
 * is a search recorded.  A write (it waits for the writer). */
enum otpd_status store_codes_match(struct store *s, const char *phone,
                                   const uint8_t hash[OTP_HASH_LEN], int64_t now_ms,
                                   const struct store_audit_entry *audit,
                                   struct store_code_row *ret, size_t cap, size_t *ret_n);

/* What the retention purge would delete (otpd purge --dry-run), counted
 * the way the purges walk: codes created before codes_before_ms among the
 * oldest `max` codes (by id), stats buckets that start before it (at most
 * max), refresh records expired before sessions_before_ms (at most max).
 * A read: it never waits for the writer. */
struct store_purge_counts {
	int64_t codes, stats, sessions;
};
enum otpd_status store_purge_count(struct store *s, int64_t codes_before_ms,
                                   int64_t sessions_before_ms, int64_t max,
                                   struct store_purge_counts *ret);

/* Refresh-token rotation with reuse detection (docs/API.md §3 "Tokens",
 * RFC 9700 §4.14), one transaction:
 * - jti unknown, revoked, expired, of another user than user_id, or the user
 *   is gone: OTPD_INVALID_TOKEN, nothing changes;
 * - the user is inactive: OTPD_USER_INACTIVE, nothing changes;
 * - jti live (state 0): mark it rotated (remember when, and its successor),
 *   insert `next` (jti, access_jti, created_ms, expires_ms; the family is
 *   copied from the old record, next->family is ignored), OTPD_OK with
 *   ret->session = the inserted record, ret->user;
 * - jti already rotated less than grace_ms ago and its successor is still
 *   live: OTPD_OK with ret->session = that successor (the same pair again,
 *   ret->replayed = true), nothing changes;
 * - jti already rotated otherwise (a replay): revoke its whole family (every
 *   record with that family: state 2), OTPD_INVALID_TOKEN — committed, so
 *   the revocation holds.
 * Of several concurrent calls with one live jti and grace_ms 0 exactly one
 * gets OTPD_OK; never do two live records descend from one jti. */
enum otpd_status store_session_rotate(struct store *s, const char *jti,
                                      int64_t user_id,
                                      const struct store_session *next,
                                      int64_t grace_ms, int64_t now_ms,
                                      struct store_rotate_result *ret);

/* Logout: revoke the whole family of refresh token jti.  OTPD_OK also when
 * jti is unknown or already revoked (idempotent). */
enum otpd_status store_session_revoke(struct store *s, const char *jti);

/* Delete at most `limit` refresh records that expired before now_ms (any
 * state); *ret_deleted says how many.  Bounded work per call. */
enum otpd_status store_session_purge(struct store *s, int64_t now_ms, int limit,
                                     int *ret_deleted);

/* ---- Asynchronous forms (the request path: no server thread waits) ----
 *
 * store_otp_issue_start(), store_otp_cancel_start(), store_otp_verify_start(),
 * store_session_rotate_start() and store_session_revoke_start() (jti not
 * NULL) do exactly what their synchronous forms above
 * do, without making the caller wait; store_otp_sms_accepted_start() (above)
 * has no synchronous form.  On OTPD_OK the operation is queued,
 * and done(arg, status) is called exactly once, later, from a thread of the
 * store (never from inside the call), when its transaction has committed
 * (durably) or failed; `status` is what the synchronous form would have
 * returned and *ret is filled as it would have been.  Every pointer passed
 * (policy, phone, hash, session, ret, ...) must stay valid until done is
 * called.  done runs on the thread that commits for every caller: it must
 * be short, must not call a synchronous store function (the store would
 * wait on itself), and may start another asynchronous operation.  On any
 * other return done is never called and nothing was queued.  With done
 * NULL (store_otp_sms_accepted_start() only) nobody is called: the
 * operation still commits (or fails, logged), within 100 ms.  No order is
 * promised between operations: with a pool of connections (PostgreSQL)
 * two jobs queued one after the other may commit in either order; each
 * operation's own rule is what is atomic.
 *
 * The synchronous forms wait for the same thing (store.c). */
enum otpd_status store_otp_issue_start(struct store *s, const struct otp_policy *p,
                                       const char *phone,
                                       const uint8_t hash[OTP_HASH_LEN],
                                       int64_t now_ms, const struct store_throttle *throttle,
                                       struct store_issue_result *ret,
                                       store_done_fn done, void *arg);
enum otpd_status store_otp_cancel_start(struct store *s, const char *phone,
                                        int64_t otp_id, int64_t now_ms,
                                        store_done_fn done, void *arg);
enum otpd_status store_otp_verify_start(struct store *s, const struct otp_policy *p,
                                        const char *phone,
                                        const uint8_t hash[OTP_HASH_LEN],
                                        const char *email_domain,
                                        const struct store_session *session,
                                        int64_t now_ms, const struct store_throttle *throttle,
                                        struct store_verify_result *ret,
                                        store_done_fn done, void *arg);
enum otpd_status store_session_rotate_start(struct store *s, const char *jti,
                                            int64_t user_id,
                                            const struct store_session *next,
                                            int64_t grace_ms, int64_t now_ms,
                                            struct store_rotate_result *ret,
                                            store_done_fn done, void *arg);
enum otpd_status store_session_revoke_start(struct store *s, const char *jti,
                                            store_done_fn done, void *arg);

/* Reads, asynchronously (the same rules; done runs on a store thread):
 * store_ping_start answers what store_ping() would; store_user_get_start
 * fills *ret and answers OTPD_OK, or answers OTPD_NOT_FOUND. */
enum otpd_status store_ping_start(struct store *s, store_done_fn done, void *arg);
enum otpd_status store_user_get_start(struct store *s, int64_t id, struct store_user *ret,
                                      store_done_fn done, void *arg);

/* The staff console's operations, asynchronously (the admin API's request
 * path): each does what its synchronous form above does, with the same
 * rules as the other _start forms; cap and the query are checked before
 * anything is queued (OTPD_INTERNAL, logged).  ret (room for cap rows) and
 * *ret_n are written by the store thread before done is called, and only
 * with OTPD_OK (ret may then be partly written on a failure).  The query
 * structs and the strings they point to must stay valid until done. */
enum otpd_status store_audit_append_start(struct store *s, const struct store_audit_entry *e,
                                          store_done_fn done, void *arg);
enum otpd_status store_audit_list_start(struct store *s, int64_t before_id,
                                        struct store_audit_entry *ret, size_t cap,
                                        size_t *ret_n, store_done_fn done, void *arg);
enum otpd_status store_user_update_start(struct store *s, int64_t id,
                                         const struct store_user_change *c,
                                         const struct store_audit_entry *audit,
                                         struct store_user *ret,
                                         store_done_fn done, void *arg);
enum otpd_status store_user_get_by_phone_start(struct store *s, const char *phone,
                                               struct store_user *ret,
                                               store_done_fn done, void *arg);
enum otpd_status store_users_list_start(struct store *s, const struct store_users_query *q,
                                        struct store_user *ret, size_t cap, size_t *ret_n,
                                        store_done_fn done, void *arg);
enum otpd_status store_codes_list_start(struct store *s, const struct store_codes_query *q,
                                        struct store_code_row *ret, size_t cap,
                                        size_t *ret_n, store_done_fn done, void *arg);
enum otpd_status store_codes_match_start(struct store *s, const char *phone,
                                         const uint8_t hash[OTP_HASH_LEN], int64_t now_ms,
                                         const struct store_audit_entry *audit,
                                         struct store_code_row *ret, size_t cap,
                                         size_t *ret_n, store_done_fn done, void *arg);
enum otpd_status store_user_sessions_start(struct store *s, int64_t user_id,
                                           struct store_session_info *ret, size_t cap,
                                           size_t *ret_n, store_done_fn done, void *arg);
enum otpd_status store_stats_start(struct store *s, int64_t since_ms, int64_t until_ms,
                                   struct store_stats_bucket *ret, size_t cap,
                                   size_t *ret_n, store_done_fn done, void *arg);

#endif
