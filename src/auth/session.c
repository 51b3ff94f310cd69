#define _GNU_SOURCE /* pthread_setname_np */
#include "session.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../log.h"
#include "admin.h"
#include "internal.h"

#define PURGE_BATCH 1000
#define PURGE_MAX_BATCHES 100

enum otpd_status auth_session_prepare(const struct auth *a, int64_t now_ms,
                                      struct store_session *ret)
{
	struct store_session s = {0};
	int64_t now_s = now_ms / 1000;
	enum otpd_status st;

	st = auth_jti_new(now_ms, s.jti);
	if (st == OTPD_OK)
		st = auth_jti_new(now_ms, s.access_jti);
	if (st == OTPD_OK)
		st = auth_jti_new(now_ms, s.family);
	if (st != OTPD_OK)
		return st;
	s.created_ms = now_s * 1000;
	s.expires_ms = (now_s + a->cfg->jwt_refresh_ttl_s) * 1000;
	*ret = s;
	return OTPD_OK;
}

enum otpd_status auth_session_mint(const struct auth *a, int64_t user_id,
                                   const struct store_session *s,
                                   char **ret_access, char **ret_refresh)
{
	int64_t iat = s->created_ms / 1000;
	char *access = NULL, *refresh = NULL;
	enum otpd_status st;

	st = auth_jwt_sign(a->jwt, AUTH_TOKEN_ACCESS, user_id, iat,
	                   iat + a->cfg->jwt_access_ttl_s, s->access_jti, s->family, &access);
	if (st == OTPD_OK)
		st = auth_jwt_sign(a->jwt, AUTH_TOKEN_REFRESH, user_id, iat,
		                   s->expires_ms / 1000, s->jti, s->family, &refresh);
	if (st != OTPD_OK) {
		free(access);
		return st;
	}
	*ret_access = access;
	*ret_refresh = refresh;
	return OTPD_OK;
}

/* Store thread: the rotation or revocation is answered. */
static void on_session_done(void *arg, enum otpd_status status)
{
	struct auth_session_op *op = arg;

	op->status = status;
	op->done(op->arg);
}

enum otpd_status auth_refresh_start(struct auth *a, const char *refresh_token,
                                    int64_t now_ms, struct auth_session_op *op,
                                    auth_verify_done_fn done, void *arg)
{
	struct auth_claims c;
	enum otpd_status st;

	memset(op, 0, sizeof(*op));
	op->a = a;
	op->now_ms = now_ms;
	op->done = done;
	op->arg = arg;
	op->status = OTPD_INTERNAL;
	st = auth_jwt_verify(a->jwt, refresh_token, AUTH_TOKEN_REFRESH, now_ms / 1000, true, &c);
	if (st != OTPD_OK)
		return st;
	if (strlen(c.jti) >= sizeof(op->jti))
		return OTPD_INVALID_TOKEN; /* longer than any jti we issue */
	memcpy(op->jti, c.jti, strlen(c.jti) + 1);
	op->user_id = c.user_id;
	st = auth_session_prepare(a, now_ms, &op->next);
	if (st != OTPD_OK)
		return st;
	return store_session_rotate_start(a->store, op->jti, op->user_id, &op->next,
	                                  a->cfg->jwt_refresh_grace_s * 1000, now_ms,
	                                  &op->rr, on_session_done, op);
}

enum otpd_status auth_refresh_finish(struct auth_session_op *op, struct auth_tokens *ret)
{
	const struct auth *a = op->a;
	enum otpd_status st = op->status;

	memset(ret, 0, sizeof(*ret));
	/* Only a genuine token the store refused (op->jti is set once the
	 * signature and claims have passed): a bad JWT is not worth a warning. */
	if (st == OTPD_INVALID_TOKEN && op->jti[0] && op->rr.reuse_detected)
		log_warn("auth.token_reuse", "rotated-out refresh token of user %lld presented "
		         "again: its family is revoked (%d records)",
		         (long long)op->user_id, op->rr.revoked_records);
	else if (st == OTPD_INVALID_TOKEN && op->jti[0])
		log_warn("auth.refresh_refused", "refresh token of user %lld refused (unknown, "
		         "expired or revoked)", (long long)op->user_id);
	if (st != OTPD_OK)
		return st;
	if (op->rr.user.is_staff && !auth_csrf_token(a, op->rr.session.family, ret->csrf_token))
		return OTPD_INTERNAL;
	st = auth_session_mint(a, op->rr.user.id, &op->rr.session, &ret->access_token,
	                       &ret->refresh_token);
	if (st != OTPD_OK)
		return st;
	/* Max-Age = what is left of each token's life, in whole seconds on the
	 * same clock as its exp claim (inside the grace window the pair handed
	 * out again is older than this request). */
	ret->access_ttl_s = op->rr.session.created_ms / 1000 + a->cfg->jwt_access_ttl_s -
	                    op->now_ms / 1000;
	if (ret->access_ttl_s < 0)
		ret->access_ttl_s = 0;
	ret->refresh_ttl_s = op->rr.session.expires_ms / 1000 - op->now_ms / 1000;
	if (ret->refresh_ttl_s < 0)
		ret->refresh_ttl_s = 0;
	log_info("auth.refresh", "user %lld refreshed%s", (long long)op->rr.user.id,
	         op->rr.replayed ? " (inside the grace window: same pair again)" : "");
	return OTPD_OK;
}

void auth_tokens_release(struct auth_tokens *t)
{
	free(t->access_token);
	free(t->refresh_token);
	t->access_token = NULL;
	t->refresh_token = NULL;
}

bool auth_logout_start(struct auth *a, const char *refresh_token,
                       struct auth_session_op *op, auth_verify_done_fn done, void *arg)
{
	struct auth_claims c;
	struct timespec now;

	memset(op, 0, sizeof(*op));
	op->a = a;
	op->done = done;
	op->arg = arg;
	op->status = OTPD_INTERNAL;
	clock_gettime(CLOCK_REALTIME, &now);
	if (!refresh_token ||
	    auth_jwt_verify(a->jwt, refresh_token, AUTH_TOKEN_REFRESH, now.tv_sec, false, &c) != OTPD_OK ||
	    strlen(c.jti) >= sizeof(op->jti))
		return false;
	memcpy(op->jti, c.jti, strlen(c.jti) + 1);
	op->user_id = c.user_id;
	return store_session_revoke_start(a->store, op->jti, on_session_done, op) == OTPD_OK;
}

void auth_logout_finish(struct auth_session_op *op)
{
	if (op->status == OTPD_OK)
		log_info("auth.logout", "user %lld logged out (family revoked)",
		         (long long)op->user_id);
}

/* Store thread: the user is read. */
static void on_me_read(void *arg, enum otpd_status status)
{
	struct auth_me_op *op = arg;

	op->status = status;
	op->done(op->arg);
}

enum otpd_status auth_me_start(struct auth *a, const char *access_token, int64_t now_ms,
                               struct auth_me_op *op, auth_verify_done_fn done, void *arg)
{
	struct auth_claims c;
	enum otpd_status st;

	memset(op, 0, sizeof(*op));
	op->status = OTPD_INTERNAL;
	op->done = done;
	op->arg = arg;
	st = auth_jwt_verify(a->jwt, access_token, AUTH_TOKEN_ACCESS, now_ms / 1000, true, &c);
	if (st != OTPD_OK)
		return st;
	return store_user_get_start(a->store, c.user_id, &op->user, on_me_read, op);
}

enum otpd_status auth_me_finish(const struct auth_me_op *op, struct store_user *ret)
{
	if (op->status == OTPD_NOT_FOUND)
		return OTPD_INVALID_TOKEN;
	if (op->status != OTPD_OK)
		return op->status;
	if (!op->user.is_active)
		return OTPD_USER_INACTIVE;
	*ret = op->user;
	return OTPD_OK;
}

const char *auth_jwks(const struct auth *a) { return auth_jwt_jwks(a->jwt); }

struct auth_janitor {
	struct auth *a;
	int interval_s;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
};

/* Codes and stats older than OTPD_CODE_RETENTION, in bounded batches.  A
 * code still counts while it can verify or is inside the send window: the
 * cut is never later than those allow. */
static void purge_history(struct auth *a, int64_t now_ms)
{
	int64_t keep_ms = a->cfg->code_retention_s * 1000;
	int deleted = 0, total = 0;

	if (keep_ms < a->policy.expiry_ms)
		keep_ms = a->policy.expiry_ms;
	if (keep_ms < a->policy.send_window_ms)
		keep_ms = a->policy.send_window_ms;
	/* A batch reads the oldest codes by id and deletes those old enough:
	 * go on while one deletes any (a clock that went back leaves a few
	 * newer rows among the oldest ids; they do not stop the purge). */
	for (int i = 0; i < PURGE_MAX_BATCHES; i++) {
		if (store_history_purge(a->store, now_ms - keep_ms, PURGE_BATCH, &deleted) != OTPD_OK)
			break;
		total += deleted;
		if (deleted == 0)
			break;
	}
	if (total)
		log_info("auth.purge", "%d code(s) and stats bucket(s) older than %lld s deleted",
		         total, (long long)(keep_ms / 1000));
}

static void purge_once(struct auth *a)
{
	struct timespec now;
	int deleted = 0, total = 0;

	clock_gettime(CLOCK_REALTIME, &now);
	int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	for (int i = 0; i < PURGE_MAX_BATCHES; i++) {
		if (store_session_purge(a->store, now_ms, PURGE_BATCH, &deleted) != OTPD_OK)
			break;
		total += deleted;
		if (deleted < PURGE_BATCH)
			break;
	}
	if (total)
		log_info("auth.purge", "%d expired refresh record(s) deleted", total);
	purge_history(a, now_ms);
}

static void *janitor_main(void *arg)
{
	struct auth_janitor *j = arg;

	pthread_setname_np(pthread_self(), "otpd-janitor"); /* for top -H and perf */
	pthread_mutex_lock(&j->lock);
	while (!j->stop) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += j->interval_s;
		while (!j->stop && pthread_cond_timedwait(&j->cond, &j->lock, &until) != ETIMEDOUT)
			;
		if (j->stop)
			break;
		pthread_mutex_unlock(&j->lock);
		purge_once(j->a);
		pthread_mutex_lock(&j->lock);
	}
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

enum otpd_status auth_janitor_start(struct auth *a, int interval_s, struct auth_janitor **ret)
{
	struct auth_janitor *j = calloc(1, sizeof(*j));

	if (!j)
		return OTPD_NOMEM;
	j->a = a;
	j->interval_s = interval_s > 0 ? interval_s : 1;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cond, NULL);
	purge_once(a);
	if (pthread_create(&j->thread, NULL, janitor_main, j) != 0) {
		pthread_mutex_destroy(&j->lock);
		pthread_cond_destroy(&j->cond);
		free(j);
		return OTPD_INTERNAL;
	}
	*ret = j;
	return OTPD_OK;
}

void auth_janitor_stop(struct auth_janitor *j)
{
	if (!j)
		return;
	pthread_mutex_lock(&j->lock);
	j->stop = true;
	pthread_cond_signal(&j->cond);
	pthread_mutex_unlock(&j->lock);
	pthread_join(j->thread, NULL);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->cond);
	free(j);
}
