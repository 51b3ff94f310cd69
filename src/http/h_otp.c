/* POST /api/v1/usr/otp and POST /api/v1/usr/otp/verify (docs/API.md §3). */
#include <stdio.h>
#include <string.h>
#include "../log.h"
#include "../otp/code.h"
#include "internal.h"

/* Store or SMS thread: hand the outcome over and wake the connection. */
static void on_send_done(void *arg, const struct auth_send_result *result)
{
	struct request *r = arg;

	r->send = *result;
	http_resume(r);
}

enum otpd_status http_h_otp_send(struct request *r)
{
	struct store_throttle t;
	enum otpd_status st;

	st = http_throttle(r, r->srv->rl_send);
	if (st != OTPD_OK)
		return st;
	st = http_request_decode(r);
	if (st != OTPD_OK)
		return st;
	if (!http_field_phone(r, r->phone))
		return OTPD_VALIDATION_ERROR;
	/* This node's throttle said yes (it refuses a flood without asking the
	 * database); the store counts the same throttle for the cluster. */
	http_store_throttle(r, 'S', r->srv->cfg->throttle_send, &t);
	http_suspend(r);
	st = auth_send_start(r->srv->auth, r->phone, &t, http_now_ms(), on_send_done, r);
	if (st != OTPD_OK) {
		r->send.status = st;
		http_resume(r);
	}
	return OTPD_OK; /* the answer comes from http_h_otp_send_finish() */
}

/* The resumed connection, with the outcome of the send. */
enum otpd_status http_h_otp_send_finish(struct request *r)
{
	char masked[OTP_PHONE_MASKED_LEN];

	otp_phone_mask(r->phone, masked);
	switch (r->send.status) {
	case OTPD_OK:
		http_note(r, "otp.sent", "code sent to %s", masked);
		r->http_status = MHD_HTTP_OK;
		r->resp = json_pack("{s:s, s:s, s:I}", "phone_number", r->phone,
		                    "message", "OTP sent successfully",
		                    "expires_in", (json_int_t)r->srv->cfg->otp_expiry_s);
		return r->resp ? OTPD_OK : OTPD_NOMEM;
	case OTPD_OTP_RATE_LIMITED:
		r->retry_after_s = r->send.retry_after_s;
		r->extra = json_pack("{s:i, s:s}", "retry_after", r->send.retry_after_s,
		                     "limit", "phone_window");
		return OTPD_OTP_RATE_LIMITED;
	case OTPD_THROTTLED:
		return http_throttled(r, r->send.retry_after_s);
	case OTPD_SMS_REJECTED:
		/* Logged once, by the SMS backend that translated it. */
		http_note(r, "otp.sms_rejected", "SMS to %s refused by the provider (status %d)",
		          masked, r->send.provider_status);
		r->extra = json_pack("{s:i}", "provider_status", r->send.provider_status);
		return OTPD_SMS_REJECTED;
	case OTPD_SMS_UNAVAILABLE:
		http_note(r, "otp.sms_unavailable", "SMS to %s not sent: provider unavailable", masked);
		r->retry_after_s = HTTP_SMS_RETRY_AFTER;
		return OTPD_SMS_UNAVAILABLE;
	default:
		return r->send.status;
	}
}

enum otpd_status http_h_otp_verify(struct request *r)
{
	char code[OTP_CODE_LEN + 1];
	struct store_throttle t;
	enum otpd_status st;
	bool ok;

	st = http_throttle(r, r->srv->rl_verify);
	if (st != OTPD_OK)
		return st;
	st = http_request_decode(r);
	if (st != OTPD_OK)
		return st;
	ok = http_field_phone(r, r->phone);
	ok = http_field_code(r, code) && ok;
	if (!ok)
		return OTPD_VALIDATION_ERROR;

	http_store_throttle(r, 'V', r->srv->cfg->throttle_verify, &t);
	http_suspend(r);
	st = auth_verify_start(r->srv->auth, r->phone, code, &t, http_now_ms(), &r->verify,
	                       http_resume_cb, r);
	otp_wipe(code, sizeof(code));
	if (st != OTPD_OK) {
		r->verify.status = st;
		http_resume(r);
	}
	return OTPD_OK; /* the answer comes from http_h_otp_verify_finish() */
}

/* The resumed connection: the outcome of the verify, and the tokens. */
enum otpd_status http_h_otp_verify_finish(struct request *r)
{
	char masked[OTP_PHONE_MASKED_LEN];
	enum otpd_status st;

	st = auth_verify_finish(&r->verify, &r->login);
	otp_phone_mask(r->phone, masked);
	if (st == OTPD_INVALID_CODE) {
		http_note(r, "otp.invalid_code", "wrong code for %s, %d attempts left", masked,
		         r->login.remaining_attempts);
		r->extra = json_pack("{s:i}", "remaining_attempts", r->login.remaining_attempts);
		return st;
	}
	if (st == OTPD_THROTTLED)
		return http_throttled(r, r->login.retry_after_s);
	if (st != OTPD_OK) {
		http_note(r, "otp.verify_refused", "verify for %s refused: %s", masked,
		         st == OTPD_TOO_MANY_ATTEMPTS ? "too many attempts"
		         : st == OTPD_OTP_EXPIRED ? "no usable code"
		         : st == OTPD_USER_INACTIVE ? "user inactive" : "error");
		return st;
	}
	http_note(r, "auth.login", "user %lld logged in%s (%s)", (long long)r->login.user.id,
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
	if (r->login.csrf_token[0])
		r->cookie_csrf = r->login.csrf_token;
	return OTPD_OK;
}
