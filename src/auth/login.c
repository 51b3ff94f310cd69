#include "login.h"

#include <stdlib.h>
#include <string.h>
#include "../log.h"
#include "../otp/code.h"
#include "../otp/phone.h"
#include "../otp/policy.h"
#include "internal.h"
#include "jwt.h"

#define CODE_KEY_LABEL "otpd/v1/code-hash"

struct auth_send {
	struct auth *a;
	char phone[OTP_PHONE_LEN + 1];
	char code[OTP_CODE_LEN + 1];
	int64_t otp_id;
	auth_send_done_fn done;
	void *arg;
};

enum otpd_status auth_new(const struct config *cfg, struct store *store,
                          struct sms *sms, const void *secret, size_t secret_len,
                          struct auth **ret)
{
	char err[512];
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
	if (!otp_derive_key(secret, secret_len, CODE_KEY_LABEL, a->code_key)) {
		free(a);
		return OTPD_INTERNAL;
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
	otp_wipe(a->code_key, sizeof(a->code_key));
	free(a);
}

static void send_job_free(struct auth_send *job)
{
	otp_wipe(job->code, sizeof(job->code));
	free(job);
}

enum otpd_status auth_send_begin(struct auth *a, const char *phone, int64_t now_ms,
                                 struct auth_send **ret_job, int *ret_retry_after_s)
{
	struct auth_send *job = calloc(1, sizeof(*job));
	uint8_t hash[OTP_HASH_LEN];
	struct store_issue_result issued = {0};
	enum otpd_status st;

	if (!job)
		return OTPD_NOMEM;
	job->a = a;
	memcpy(job->phone, phone, sizeof(job->phone));
	st = otp_code_generate(job->code);
	if (st != OTPD_OK)
		goto fail;
	if (!otp_code_hash(a->code_key, phone, job->code, hash)) {
		st = OTPD_INTERNAL;
		goto fail;
	}
	st = store_otp_issue(a->store, &a->policy, phone, hash, now_ms, &issued);
	if (st == OTPD_OTP_RATE_LIMITED)
		*ret_retry_after_s = issued.retry_after_s;
	if (st != OTPD_OK)
		goto fail;
	job->otp_id = issued.otp_id;
	*ret_job = job;
	return OTPD_OK;
fail:
	send_job_free(job);
	return st;
}

static void cancel_code(struct auth_send *job)
{
	char masked[OTP_PHONE_MASKED_LEN];

	if (store_otp_cancel(job->a->store, job->phone, job->otp_id) != OTPD_OK) {
		otp_phone_mask(job->phone, masked);
		log_error("otp.cancel_failed", "cannot cancel the unsent code for %s", masked);
	}
}

/* Runs on the SMS worker thread. */
static void on_sms_done(void *arg, const struct sms_result *result)
{
	struct auth_send *job = arg;

	/* API-CONTRACT §3 / issue 3: a code whose SMS was not accepted never
	 * verifies.  Cancelled before the client hears the answer. */
	if (result->status != OTPD_OK)
		cancel_code(job);
	job->done(job->arg, result);
	send_job_free(job);
}

enum otpd_status auth_send_dispatch(struct auth_send *job, auth_send_done_fn done,
                                    void *arg)
{
	enum otpd_status st;

	job->done = done;
	job->arg = arg;
	st = sms_send(job->a->sms, job->phone, job->code, on_sms_done, job);
	if (st != OTPD_OK) {
		cancel_code(job);
		send_job_free(job);
	}
	return st;
}

enum otpd_status auth_verify_code(struct auth *a, const char *phone, const char *code,
                                  int64_t now_ms, struct auth_login *ret)
{
	uint8_t hash[OTP_HASH_LEN];
	struct store_session session;
	struct store_verify_result vr;
	enum otpd_status st;

	memset(ret, 0, sizeof(*ret));
	memset(&vr, 0, sizeof(vr));
	if (!otp_code_hash(a->code_key, phone, code, hash))
		return OTPD_INTERNAL;
	st = auth_session_prepare(a, now_ms, &session);
	if (st != OTPD_OK)
		return st;
	st = store_otp_verify(a->store, &a->policy, phone, hash, a->cfg->email_domain,
	                      &session, now_ms, &vr);
	ret->remaining_attempts = vr.remaining_attempts;
	if (st == OTPD_OK || st == OTPD_USER_INACTIVE)
		ret->user = vr.user;
	if (st != OTPD_OK)
		return st;
	ret->is_new_user = vr.is_new_user;
	ret->access_ttl_s = a->cfg->jwt_access_ttl_s;
	ret->refresh_ttl_s = a->cfg->jwt_refresh_ttl_s;
	return auth_session_mint(a, vr.user.id, &session, &ret->access_token,
	                         &ret->refresh_token);
}

void auth_login_release(struct auth_login *l)
{
	free(l->access_token);
	free(l->refresh_token);
	l->access_token = NULL;
	l->refresh_token = NULL;
}
