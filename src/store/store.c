/* store_open() picks a backend from the DATABASE_URL scheme; the other
 * store_* functions are one-line wrappers over the backend's ops (Redis
 * ConnectionType, curl Curl_ssl).  No SQL here. */
#include "store.h"

#include <semaphore.h>
#include <string.h>
#include "../log.h"
#include "backend.h"

static bool has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

enum otpd_status store_open(const char *url, const struct store_options *opt,
                            char *err, size_t errlen, struct store **ret)
{
	struct store_options o = *opt;
	const char *path;

	if (err && errlen)
		err[0] = '\0';

	if (!url) {
		log_error("store.open", "no database URL");
		return OTPD_INTERNAL;
	}
	/* "sqlite://PATH" first: "sqlite:" is a prefix of it. */
	if (has_prefix(url, "sqlite://"))
		path = url + strlen("sqlite://");
	else if (has_prefix(url, "sqlite:"))
		path = url + strlen("sqlite:");
	else if (has_prefix(url, "postgres://") || has_prefix(url, "postgresql://")) {
		log_error("store.open", "PostgreSQL store not built yet");
		return OTPD_INTERNAL;
	} else {
		/* The URL may carry a password: name only what was expected. */
		log_error("store.open",
		          "unsupported DATABASE_URL scheme: expected 'sqlite:PATH' "
		          "or 'postgres://user:pass@host:port/db'");
		return OTPD_INTERNAL;
	}
	if (path[0] == '\0') {
		log_error("store.open", "DATABASE_URL 'sqlite:' names no file");
		return OTPD_INTERNAL;
	}
	if (o.busy_timeout_ms < 0)
		o.busy_timeout_ms = 0;
	return store_sqlite_open(path, &o, err, errlen, ret);
}

void store_close(struct store *s)
{
	if (s)
		s->ops->close(s);
}

enum otpd_status store_migrate(struct store *s, int *ret_applied)
{
	return s->ops->migrate(s, ret_applied);
}

enum otpd_status store_ping(struct store *s)
{
	return s->ops->ping(s);
}

enum otpd_status store_secret_get_or_create(struct store *s, const char *name,
                                            const uint8_t *fresh, size_t len,
                                            uint8_t *ret, size_t ret_len)
{
	return s->ops->secret_get_or_create(s, name, fresh, len, ret, ret_len);
}

/* A synchronous call is its asynchronous form plus a wait. */
struct waiter {
	sem_t sem;
	enum otpd_status status;
};

static void waiter_wake(void *arg, enum otpd_status status)
{
	struct waiter *w = arg;

	w->status = status;
	sem_post(&w->sem);
}

static bool waiter_init(struct waiter *w)
{
	if (sem_init(&w->sem, 0, 0) == 0)
		return true;
	log_error("store.error", "cannot create a semaphore");
	return false;
}

/* started: what the _start call returned; waits only when it queued. */
static enum otpd_status waiter_wait(struct waiter *w, enum otpd_status started)
{
	if (started == OTPD_OK) {
		while (sem_wait(&w->sem) != 0)
			; /* EINTR */
		started = w->status;
	}
	sem_destroy(&w->sem);
	return started;
}

enum otpd_status store_otp_issue_start(struct store *s, const struct otp_policy *p,
                                       const char *phone,
                                       const uint8_t hash[OTP_HASH_LEN],
                                       int64_t now_ms, struct store_issue_result *ret,
                                       store_done_fn done, void *arg)
{
	return s->ops->otp_issue(s, p, phone, hash, now_ms, ret, done, arg);
}

enum otpd_status store_otp_issue(struct store *s, const struct otp_policy *p,
                                 const char *phone,
                                 const uint8_t hash[OTP_HASH_LEN],
                                 int64_t now_ms, struct store_issue_result *ret)
{
	struct waiter w;

	if (!waiter_init(&w))
		return OTPD_INTERNAL;
	return waiter_wait(&w, store_otp_issue_start(s, p, phone, hash, now_ms, ret,
	                                             waiter_wake, &w));
}

enum otpd_status store_otp_cancel_start(struct store *s, const char *phone,
                                        int64_t otp_id, int64_t now_ms,
                                        store_done_fn done, void *arg)
{
	return s->ops->otp_cancel(s, phone, otp_id, now_ms, done, arg);
}

enum otpd_status store_otp_cancel(struct store *s, const char *phone,
                                  int64_t otp_id, int64_t now_ms)
{
	struct waiter w;

	if (!waiter_init(&w))
		return OTPD_INTERNAL;
	return waiter_wait(&w, store_otp_cancel_start(s, phone, otp_id, now_ms,
	                                              waiter_wake, &w));
}

enum otpd_status store_otp_sms_accepted_start(struct store *s, int64_t otp_id,
                                              int64_t message_id, int64_t now_ms,
                                              store_done_fn done, void *arg)
{
	return s->ops->otp_sms_accepted(s, otp_id, message_id, now_ms, done, arg);
}

enum otpd_status store_otp_delivery_pending(struct store *s, int64_t since_ms,
                                            size_t limit,
                                            struct store_delivery_pending *ret,
                                            size_t *ret_n)
{
	return s->ops->otp_delivery_pending(s, since_ms, limit, ret, ret_n);
}

enum otpd_status store_otp_delivery_set(struct store *s, size_t n,
                                        const struct store_delivery_status *items)
{
	return s->ops->otp_delivery_set(s, n, items);
}

enum otpd_status store_stats(struct store *s, int64_t since_ms, int64_t until_ms,
                             struct store_stats_bucket *ret, size_t cap,
                             size_t *ret_n)
{
	return s->ops->stats(s, since_ms, until_ms, ret, cap, ret_n);
}

enum otpd_status store_history_purge(struct store *s, int64_t before_ms, int limit,
                                     int *ret_deleted)
{
	return s->ops->history_purge(s, before_ms, limit, ret_deleted);
}

enum otpd_status store_otp_verify_start(struct store *s, const struct otp_policy *p,
                                        const char *phone,
                                        const uint8_t hash[OTP_HASH_LEN],
                                        const char *email_domain,
                                        const struct store_session *session,
                                        int64_t now_ms,
                                        struct store_verify_result *ret,
                                        store_done_fn done, void *arg)
{
	return s->ops->otp_verify(s, p, phone, hash, email_domain, session, now_ms,
	                          ret, done, arg);
}

enum otpd_status store_otp_verify(struct store *s, const struct otp_policy *p,
                                  const char *phone,
                                  const uint8_t hash[OTP_HASH_LEN],
                                  const char *email_domain,
                                  const struct store_session *session,
                                  int64_t now_ms,
                                  struct store_verify_result *ret)
{
	struct waiter w;

	if (!waiter_init(&w))
		return OTPD_INTERNAL;
	return waiter_wait(&w, store_otp_verify_start(s, p, phone, hash, email_domain,
	                                              session, now_ms, ret,
	                                              waiter_wake, &w));
}

enum otpd_status store_user_get(struct store *s, int64_t id,
                                struct store_user *ret)
{
	return s->ops->user_get(s, id, ret);
}

enum otpd_status store_session_rotate_start(struct store *s, const char *jti,
                                            int64_t user_id,
                                            const struct store_session *next,
                                            int64_t grace_ms, int64_t now_ms,
                                            struct store_rotate_result *ret,
                                            store_done_fn done, void *arg)
{
	return s->ops->session_rotate(s, jti, user_id, next, grace_ms, now_ms, ret,
	                              done, arg);
}

enum otpd_status store_session_rotate(struct store *s, const char *jti,
                                      int64_t user_id,
                                      const struct store_session *next,
                                      int64_t grace_ms, int64_t now_ms,
                                      struct store_rotate_result *ret)
{
	struct waiter w;

	if (!waiter_init(&w))
		return OTPD_INTERNAL;
	return waiter_wait(&w, store_session_rotate_start(s, jti, user_id, next, grace_ms,
	                                                  now_ms, ret, waiter_wake, &w));
}

enum otpd_status store_session_revoke_start(struct store *s, const char *jti,
                                            store_done_fn done, void *arg)
{
	return s->ops->session_revoke(s, jti, done, arg);
}

enum otpd_status store_session_revoke(struct store *s, const char *jti)
{
	struct waiter w;

	if (!jti)
		return OTPD_OK; /* nothing to revoke */
	if (!waiter_init(&w))
		return OTPD_INTERNAL;
	return waiter_wait(&w, store_session_revoke_start(s, jti, waiter_wake, &w));
}

enum otpd_status store_session_purge(struct store *s, int64_t now_ms, int limit,
                                     int *ret_deleted)
{
	return s->ops->session_purge(s, now_ms, limit, ret_deleted);
}
