/* The store: one interface that owns every SQL statement and the
 * migrations.  Each operation is one transaction named after a domain rule,
 * so every guarantee (single use, attempt counts, send limits, one user per
 * number) holds atomically under concurrency and across nodes.  A write is
 * durable (synced) before the call returns OTPD_OK.
 *
 * Backends implement struct store_ops (store/sqlite.c now, store/postgres.c
 * later); store_open() picks one from the DATABASE_URL scheme.  All calls are
 * thread-safe.  Driver errors are translated here and logged once:
 * unreachable / locked / read-only / disk full -> OTPD_UNAVAILABLE. */
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
	int retry_after_s;     /* with OTPD_OTP_RATE_LIMITED */
};

struct store_verify_result {
	int remaining_attempts;     /* with OTPD_INVALID_CODE */
	bool is_new_user;           /* with OTPD_OK */
	struct store_user user;     /* with OTPD_OK and OTPD_USER_INACTIVE */
};

/* Called once an asynchronous operation (store_*_start) is answered; see
 * "Asynchronous forms" below. */
typedef void (*store_done_fn)(void *arg, enum otpd_status status);

struct store_ops {
	const char *name;
	enum otpd_status (*migrate)(struct store *s, int *ret_applied);
	enum otpd_status (*ping)(struct store *s);
	enum otpd_status (*secret_get_or_create)(struct store *s, const char *name,
	                                         const uint8_t *fresh, size_t len,
	                                         uint8_t *ret, size_t ret_len);
	enum otpd_status (*otp_issue)(struct store *s, const struct otp_policy *p,
	                              const char *phone,
	                              const uint8_t hash[OTP_HASH_LEN],
	                              int64_t now_ms,
	                              struct store_issue_result *ret,
	                              store_done_fn done, void *arg);
	enum otpd_status (*otp_cancel)(struct store *s, const char *phone,
	                               int64_t otp_id, store_done_fn done, void *arg);
	enum otpd_status (*otp_verify)(struct store *s, const struct otp_policy *p,
	                               const char *phone,
	                               const uint8_t hash[OTP_HASH_LEN],
	                               const char *email_domain,
	                               const struct store_session *session,
	                               int64_t now_ms,
	                               struct store_verify_result *ret,
	                               store_done_fn done, void *arg);
	enum otpd_status (*user_get)(struct store *s, int64_t id,
	                             struct store_user *ret);
	enum otpd_status (*session_rotate)(struct store *s, const char *jti,
	                                   int64_t user_id,
	                                   const struct store_session *next,
	                                   int64_t grace_ms, int64_t now_ms,
	                                   struct store_rotate_result *ret,
	                                   store_done_fn done, void *arg);
	enum otpd_status (*session_revoke)(struct store *s, const char *jti,
	                                   store_done_fn done, void *arg);
	enum otpd_status (*session_purge)(struct store *s, int64_t now_ms,
	                                  int limit, int *ret_deleted);
	void (*close)(struct store *s);
};

/* Every backend's handle starts with this. */
struct store {
	const struct store_ops *ops;
};

struct store_options {
	/* How long a write waits for a lock before the call answers
	 * OTPD_UNAVAILABLE. */
	int busy_timeout_ms;
	/* Open a database file (or side file) that users other than its
	 * owner may read or write (OTPD_ALLOW_SHARED_DB_FILE), with a
	 * warning; refused otherwise. */
	bool allow_shared_file;
};

/* Open by URL: "sqlite:PATH" (also "sqlite://PATH") -> store/sqlite.c.
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
 * send_limit sends within the last send_window, answer OTPD_OTP_RATE_LIMITED
 * with retry_after_s (a refused request is not recorded); else record the
 * send (it counts whether or not its SMS goes out), replace any earlier code
 * of this phone (it stops working) with the new hash, expiring at
 * now + expiry with 0 attempts, and return its otp_id. */
enum otpd_status store_otp_issue(struct store *s, const struct otp_policy *p,
                                 const char *phone,
                                 const uint8_t hash[OTP_HASH_LEN],
                                 int64_t now_ms, struct store_issue_result *ret);

/* The SMS for code otp_id was not accepted: it must never verify.  A no-op
 * when a newer code has replaced it. */
enum otpd_status store_otp_cancel(struct store *s, const char *phone,
                                  int64_t otp_id);

/* Verify (docs/API.md §3), one transaction: load the phone's code, judge it
 * with otp_policy_judge() (hash compared with otp_hash_equal()), apply the
 * verdict (count the attempt / mark used).  On a right code: get or create
 * the user (username = digits, email = digits@email_domain); if the user is
 * inactive answer OTPD_USER_INACTIVE (the code is used up all the same);
 * else record `session` (when not NULL) and answer OTPD_OK. */
enum otpd_status store_otp_verify(struct store *s, const struct otp_policy *p,
                                  const char *phone,
                                  const uint8_t hash[OTP_HASH_LEN],
                                  const char *email_domain,
                                  const struct store_session *session,
                                  int64_t now_ms,
                                  struct store_verify_result *ret);

/* OTPD_OK and the user, or OTPD_NOT_FOUND. */
enum otpd_status store_user_get(struct store *s, int64_t id,
                                struct store_user *ret);

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
 * do, without making the caller wait.  On OTPD_OK the operation is queued,
 * and done(arg, status) is called exactly once, later, from a thread of the
 * store (never from inside the call), when its transaction has committed
 * (durably) or failed; `status` is what the synchronous form would have
 * returned and *ret is filled as it would have been.  Every pointer passed
 * (policy, phone, hash, session, ret, ...) must stay valid until done is
 * called.  done runs on the thread that commits for every caller: it must
 * be short, must not call a synchronous store function (the store would
 * wait on itself), and may start another asynchronous operation.  On any
 * other return done is never called and nothing was queued.
 *
 * The synchronous forms wait for the same thing (store.c). */
enum otpd_status store_otp_issue_start(struct store *s, const struct otp_policy *p,
                                       const char *phone,
                                       const uint8_t hash[OTP_HASH_LEN],
                                       int64_t now_ms, struct store_issue_result *ret,
                                       store_done_fn done, void *arg);
enum otpd_status store_otp_cancel_start(struct store *s, const char *phone,
                                        int64_t otp_id, store_done_fn done, void *arg);
enum otpd_status store_otp_verify_start(struct store *s, const struct otp_policy *p,
                                        const char *phone,
                                        const uint8_t hash[OTP_HASH_LEN],
                                        const char *email_domain,
                                        const struct store_session *session,
                                        int64_t now_ms,
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

#endif
