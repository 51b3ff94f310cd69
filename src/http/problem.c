#include "problem.h"

#include <stdio.h>

static const struct problem_info table[_OTPD_STATUS_MAX] = {
	[OTPD_OK] = {200, "ok", "OK", "OK"},
	[OTPD_MALFORMED_REQUEST] = {400, "malformed_request", "Malformed request", "The request body is not a JSON object or a form that can be decoded."},
	[OTPD_VALIDATION_ERROR] = {400, "validation_error", "Invalid input", "One or more fields are missing or invalid."},
	[OTPD_INVALID_CODE] = {400, "invalid_code", "Invalid code", "The code is not correct."},
	[OTPD_TOO_MANY_ATTEMPTS] = {400, "too_many_attempts", "Too many attempts", "This code has no attempts left; request a new one."},
	[OTPD_OTP_EXPIRED] = {400, "otp_expired", "Code expired", "There is no usable code for this number; request a new one."},
	[OTPD_INVALID_TOKEN] = {401, "invalid_token", "Invalid token", "The token is missing, invalid or expired."},
	[OTPD_USER_INACTIVE] = {403, "user_inactive", "User inactive", "This account is deactivated."},
	[OTPD_FORBIDDEN] = {403, "forbidden", "Forbidden", "This request is not allowed."},
	[OTPD_NOT_FOUND] = {404, "not_found", "Not found", "There is no such resource."},
	[OTPD_METHOD_NOT_ALLOWED] = {405, "method_not_allowed", "Method not allowed", "This method is not allowed on this resource."},
	[OTPD_LENGTH_REQUIRED] = {411, "length_required", "Length required", "Send the body with a Content-Length header (at most 4 KiB); chunked request bodies are not accepted."},
	[OTPD_PAYLOAD_TOO_LARGE] = {413, "payload_too_large", "Payload too large", "The request body is too large."},
	[OTPD_UNSUPPORTED_MEDIA_TYPE] = {415, "unsupported_media_type", "Unsupported media type", "Send application/json or application/x-www-form-urlencoded."},
	[OTPD_THROTTLED] = {429, "throttled", "Too many requests", "Too many requests from this address; try again later."},
	[OTPD_OTP_RATE_LIMITED] = {429, "otp_rate_limited", "Too many codes requested", "Too many codes were requested for this number; try again later."},
	[OTPD_SMS_REJECTED] = {502, "sms_rejected", "SMS rejected", "The SMS provider refused the message."},
	[OTPD_SMS_UNAVAILABLE] = {503, "sms_unavailable", "SMS unavailable", "The SMS provider could not be reached in time; try again later."},
	[OTPD_UNAVAILABLE] = {503, "unavailable", "Service unavailable", "The database is not reachable; try again later."},
	[OTPD_INTERNAL] = {500, "internal_error", "Internal error", "An internal error occurred."},
	[OTPD_NOMEM] = {500, "internal_error", "Internal error", "An internal error occurred."},
};

const struct problem_info *http_problem_info(enum otpd_status st)
{
	if ((unsigned)st >= _OTPD_STATUS_MAX || !table[st].code)
		return &table[OTPD_INTERNAL];
	return &table[st];
}

json_t *http_problem_new(enum otpd_status st, const char *detail, json_t *extra)
{
	const struct problem_info *p = http_problem_info(st);
	char type[64];
	json_t *o;

	snprintf(type, sizeof(type), "urn:otpd:error:%s", p->code);
	o = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", type, "title", p->title,
	              "status", (int)p->http_status, "detail", detail ? detail : p->detail,
	              "code", p->code);
	if (o && extra)
		json_object_update_missing(o, extra); /* extras never override */
	json_decref(extra);
	return o;
}
