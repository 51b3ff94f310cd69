/* POST /api/v1/usr/otp and POST /api/v1/usr/otp/verify (API-CONTRACT §3). */
#include <stdio.h>
#include <string.h>
#include "../log.h"
#include "../otp/code.h"
#include "internal.h"

/* SMS worker thread: hand the outcome over and wake the connection. */
static void on_sms_done(void *arg, const struct sms_result *result)
{
	struct request *r = arg;

	r->sms = *result;
	atomic_store(&r->phase, PHASE_SMS_DONE);
	MHD_resume_connection(r->conn);
}

enum otpd_status http_h_otp_send(struct request *r)
{
	struct auth_send *job = NULL;
	int retry = 0;
	enum otpd_status st;

	st = http_throttle(r, r->srv->rl_send);
	if (st != OTPD_OK)
		return st;
	st = http_request_decode(r);
	if (st != OTPD_OK)
		return st;
	if (!http_field_phone(r, r->phone))
		return OTPD_VALIDATION_ERROR;
	st = auth_send_begin(r->srv->auth, r->phone, http_now_ms(), &job, &retry);
	if (st == OTPD_OTP_RATE_LIMITED) {
		r->retry_after_s = retry;
		r->extra = json_pack("{s:i}", "retry_after", retry);
	}
	if (st != OTPD_OK)
		return st;

	/* Suspend first, so the worker's resume can never come before it. */
	atomic_store(&r->phase, PHASE_SENDING);
	MHD_suspend_connection(r->conn);
	st = auth_send_dispatch(job, on_sms_done, r);
	if (st != OTPD_OK) {
		r->sms.status = st;
		atomic_store(&r->phase, PHASE_SMS_DONE);
		MHD_resume_connection(r->conn);
	}
	return OTPD_OK; /* the answer comes from http_h_otp_finish() */
}

/* Called when the resumed connection comes back with the SMS outcome. */
enum otpd_status http_h_otp_finish(struct request *r)
{
	char masked[OTP_PHONE_MASKED_LEN];

	otp_phone_mask(r->phone, masked);
	switch (r->sms.status) {
	case OTPD_OK:
		log_info("otp.sent", "code sent to %s", masked);
		r->http_status = MHD_HTTP_OK;
		r->resp = json_pack("{s:s, s:s, s:I}", "phone_number", r->phone,
		                    "message", "OTP sent successfully",
		                    "expires_in", (json_int_t)r->srv->cfg->otp_expiry_s);
		return r->resp ? OTPD_OK : OTPD_NOMEM;
	case OTPD_SMS_REJECTED:
		log_warn("otp.sms_rejected", "provider refused the SMS to %s (status %d)",
		         masked, r->sms.provider_status);
		r->extra = json_pack("{s:i}", "provider_status", r->sms.provider_status);
		return OTPD_SMS_REJECTED;
	case OTPD_SMS_UNAVAILABLE:
		log_warn("otp.sms_unavailable", "provider unavailable for %s", masked);
		r->retry_after_s = HTTP_SMS_RETRY_AFTER;
		return OTPD_SMS_UNAVAILABLE;
	default:
		return r->sms.status;
	}
}

enum otpd_status http_h_otp_verify(struct request *r)
{
	char phone[OTP_PHONE_LEN + 1];
	char code[OTP_CODE_LEN + 1];
	char masked[OTP_PHONE_MASKED_LEN];
	enum otpd_status st;
	bool ok;

	st = http_throttle(r, r->srv->rl_verify);
	if (st != OTPD_OK)
		return st;
	st = http_request_decode(r);
	if (st != OTPD_OK)
		return st;
	ok = http_field_phone(r, phone);
	ok = http_field_code(r, code) && ok;
	if (!ok)
		return OTPD_VALIDATION_ERROR;

	st = auth_verify_code(r->srv->auth, phone, code, http_now_ms(), &r->login);
	otp_wipe(code, sizeof(code));
	otp_phone_mask(phone, masked);
	if (st == OTPD_INVALID_CODE) {
		log_info("otp.invalid_code", "wrong code for %s, %d attempts left", masked,
		         r->login.remaining_attempts);
		r->extra = json_pack("{s:i}", "remaining_attempts", r->login.remaining_attempts);
		return st;
	}
	if (st != OTPD_OK) {
		log_info("otp.verify_refused", "verify for %s refused: %s", masked,
		         st == OTPD_TOO_MANY_ATTEMPTS ? "too many attempts"
		         : st == OTPD_OTP_EXPIRED ? "no usable code"
		         : st == OTPD_USER_INACTIVE ? "user inactive" : "error");
		return st;
	}
	log_info("auth.login", "user %lld logged in%s (%s)", (long long)r->login.user.id,
	         r->login.is_new_user ? " (new user)" : "", masked);

	r->resp = json_pack("{s:s, s:s, s:b, s:o}",
	                    "access_token", r->login.access_token,
	                    "refresh_token", r->login.refresh_token,
	                    "is_new_user", r->login.is_new_user,
	                    "user", http_user_json(&r->login.user));
	if (!r->resp)
		return OTPD_NOMEM;
	r->http_status = MHD_HTTP_OK;
	http_set_auth_cookies(r, r->login.access_token, r->login.refresh_token,
	                      r->login.access_ttl_s, r->login.refresh_ttl_s);
	return OTPD_OK;
}
