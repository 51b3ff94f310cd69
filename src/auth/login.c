#include "login.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../log.h"
#include "../otp/code.h"
#include "../otp/phone.h"
#include "../otp/policy.h"
#include "admin.h"
#include "internal.h"
#include "jwt.h"

#define CODE_KEY_LABEL "otpd/v1/code-hash"
#define CSRF_KEY_LABEL "otpd/v1/csrf"

/* One send in flight: from auth_send_start() to its done(). */
struct auth_send {
	struct auth *a;
	char phone[OTP_PHONE_LEN + 1];
	char code[OTP_CODE_LEN + 1];
	uint8_t hash[OTP_HASH_LEN];
	struct store_throttle throttle; /* the store reads it until on_issued */
	bool has_throttle;
	struct store_issue_result issued;
	struct auth_send_result result;
	auth_send_done_fn done;
	void *arg;
};

enum otpd_status auth_new(const struct config *cfg, struct store *store,
                          struct sms *sms, const void *secret, size_t secret_len,
                          struct auth **ret)
{
	char err[512] = "";
	struct auth *a = calloc(1, sizeof(*a));
	enum otpd_status st;

	if (!a)
		return OTPD_NOMEM;
	a->cfg = cfg;
	a->store = store;
	a->sms = sms;
	a->policy = (struct otp_policy){
		.expiry_ms = cfg->otp_expiry_s * 1000,
		.max_attempts = (int)cfg->otp_max_attempts,
		.send_limit = (int)cfg->otp_send_limit,
		.send_window_ms = cfg->otp_send_window_s * 1000,
	};
	{
		uint8_t code_key[OTP_KEY_LEN], csrf_key[OTP_KEY_LEN];
		bool ok = otp_derive_key(secret, secret_len, CODE_KEY_LABEL, code_key) &&
		          otp_derive_key(secret, secret_len, CSRF_KEY_LABEL, csrf_key);

		a->code_hasher = ok ? otp_hasher_new(code_key, sizeof(code_key)) : NULL;
		a->csrf_hasher = ok ? otp_hasher_new(csrf_key, sizeof(csrf_key)) : NULL;
		otp_wipe(code_key, sizeof(code_key));
		otp_wipe(csrf_key, sizeof(csrf_key));
		if (!a->code_hasher || !a->csrf_hasher) {
			otp_hasher_free(a->code_hasher);
			otp_hasher_free(a->csrf_hasher);
			free(a);
			return OTPD_INTERNAL;
		}
	}
	if (cfg->jwt_alg == CONFIG_JWT_ES256)
		st = auth_jwt_new_es256(cfg->jwt_private_key_file,
		                        cfg->jwt_previous_public_key_file, err, sizeof(err),
		                        &a->jwt);
	else
		st = auth_jwt_new_hs256(secret, secret_len, &a->jwt);
	if (st != OTPD_OK) {
		if (cfg->jwt_alg == CONFIG_JWT_ES256)
			log_error("config.jwt_key", "%s", err);
		auth_free(a);
		return st;
	}
	*ret = a;
	return OTPD_OK;
}

void auth_free(struct auth *a)
{
	if (!a)
		return;
	auth_jwt_free(a->jwt);
	otp_hasher_free(a->code_hasher);
	otp_hasher_free(a->csrf_hasher);
	free(a);
}

static void send_job_free(struct auth_send *job)
{
	otp_wipe(job->code, sizeof(job->code));
	otp_wipe(job->hash, sizeof(job->hash));
	free(job);
}

/* The end of every send that was started: report, then forget the code. */
static void send_finish(struct auth_send *job)
{
	job->done(job->arg, &job->result);
	send_job_free(job);
}

/* Store thread: the code is cancelled (or could not be). */
static void on_cancelled(void *arg, enum otpd_status status)
{
	struct auth_send *job = arg;
	char masked[OTP_PHONE_MASKED_LEN];

	if (status != OTPD_OK) {
		otp_phone_mask(job->phone, masked);
		log_error("otp.cancel_failed", "cannot cancel the unsent code for %s", masked);
	}
	send_finish(job);
}

static int64_t wall_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* docs/API.md §3 / issue 3: a code whose SMS was not accepted never
 * verifies.  It is cancelled before the client hears the answer (the
 * history records when: now, after the provider's answer). */
static void send_cancel(struct auth_send *job)
{
	char masked[OTP_PHONE_MASKED_LEN];

	if (store_otp_cancel_start(job->a->store, job->phone, job->issued.otp_id,
	                           wall_ms(), on_cancelled, job) == OTPD_OK)
		return;
	otp_phone_mask(job->phone, masked);
	log_error("otp.cancel_failed", "cannot cancel the unsent code for %s", masked);
	send_finish(job);
}

/* SMS worker thread: the provider's answer. */
static void on_sms_done(void *arg, const struct sms_result *sms)
{
	struct auth_send *job = arg;

	job->result.status = sms->status;
	job->result.provider_status = sms->provider_status;
	if (sms->status != OTPD_OK) {
		send_cancel(job);
		return;
	}
	/* The provider's id, for the delivery poller: written with the next
	 * batch, nobody waits for it (a failure is logged by the store). */
	if (sms->message_id > 0)
		store_otp_sms_accepted_start(job->a->store, job->issued.otp_id, sms->message_id,
		                             wall_ms(), NULL, NULL);
	send_finish(job);
}

/* Store thread: the code is stored (durably), or refused. */
static void on_issued(void *arg, enum otpd_status status)
{
	struct auth_send *job = arg;

	job->result.status = status;
	if (status == OTPD_OTP_RATE_LIMITED || status == OTPD_THROTTLED)
		job->result.retry_after_s = job->issued.retry_after_s;
	if (status != OTPD_OK) {
		send_finish(job);
		return;
	}
	/* sms_send only queues: this thread does not wait on the network. */
	status = sms_send(job->a->sms, job->phone, job->code, on_sms_done, job);
	if (status != OTPD_OK) {
		job->result.status = status;
		send_cancel(job);
	}
}

enum otpd_status auth_send_start(struct auth *a, const char *phone,
                                 const struct store_throttle *throttle, int64_t now_ms,
                                 auth_send_done_fn done, void *arg)
{
	struct auth_send *job = calloc(1, sizeof(*job));
	enum otpd_status st;

	if (!job)
		return OTPD_NOMEM;
	job->a = a;
	job->done = done;
	job->arg = arg;
	memcpy(job->phone, phone, sizeof(job->phone));
	if (throttle) {
		job->throttle = *throttle;
		job->has_throttle = true;
	}
	st = otp_code_generate(job->code);
	if (st != OTPD_OK) /* otp/ is pure: it reports, the use case logs */
		log_error("auth.internal", "cannot draw a code from the CSPRNG");
	if (st == OTPD_OK && !otp_hasher_hash(a->code_hasher, phone, job->code, job->hash)) {
		log_error("auth.internal", "cannot hash a new code (OpenSSL)");
		st = OTPD_INTERNAL;
	}
	if (st == OTPD_OK)
		st = store_otp_issue_start(a->store, &a->policy, job->phone, job->hash, now_ms,
		                           job->has_throttle ? &job->throttle : NULL,
		                           &job->issued, on_issued, job);
	if (st != OTPD_OK)
		send_job_free(job);
	return st;
}

/* Store thread: the verify transaction is answered. */
static void on_verified(void *arg, enum otpd_status status)
{
	struct auth_verify *v = arg;

	v->status = status;
	v->done(v->arg);
}

enum otpd_status auth_verify_start(struct auth *a, const char *phone, const char *code,
                                   const struct store_throttle *throttle,
                                   int64_t now_ms, struct auth_verify *v,
                                   auth_verify_done_fn done, void *arg)
{
	enum otpd_status st;

	memset(v, 0, sizeof(*v));
	v->a = a;
	v->done = done;
	v->arg = arg;
	v->status = OTPD_INTERNAL;
	memcpy(v->phone, phone, sizeof(v->phone));
	if (throttle) {
		v->throttle = *throttle;
		v->has_throttle = true;
	}
	if (!otp_hasher_hash(a->code_hasher, phone, code, v->hash)) {
		log_error("auth.internal", "cannot hash a submitted code (OpenSSL)");
		return OTPD_INTERNAL;
	}
	st = auth_session_prepare(a, now_ms, &v->session);
	if (st != OTPD_OK)
		return st;
	return store_otp_verify_start(a->store, &a->policy, v->phone, v->hash,
	                              a->cfg->email_domain, &v->session, now_ms,
	                              v->has_throttle ? &v->throttle : NULL, &v->vr,
	                              on_verified, v);
}

enum otpd_status auth_verify_finish(struct auth_verify *v, struct auth_login *ret)
{
	const struct auth *a = v->a;

	memset(ret, 0, sizeof(*ret));
	otp_wipe(v->hash, sizeof(v->hash));
	ret->remaining_attempts = v->vr.remaining_attempts;
	ret->retry_after_s = v->vr.retry_after_s;
	if (v->status == OTPD_OK || v->status == OTPD_USER_INACTIVE)
		ret->user = v->vr.user;
	if (v->status != OTPD_OK)
		return v->status;
	ret->is_new_user = v->vr.is_new_user;
	ret->access_ttl_s = a->cfg->jwt_access_ttl_s;
	ret->refresh_ttl_s = a->cfg->jwt_refresh_ttl_s;
	if (v->vr.user.is_staff && !auth_csrf_token(a, v->session.family, ret->csrf_token))
		return OTPD_INTERNAL;
	return auth_session_mint(a, v->vr.user.id, &v->session, &ret->access_token,
	                         &ret->refresh_token);
}

void auth_login_release(struct auth_login *l)
{
	free(l->access_token);
	free(l->refresh_token);
	l->access_token = NULL;
	l->refresh_token = NULL;
}
