/* One status type crosses every module boundary (curl's CURLcode idea).
 * OTPD_OK is 0; there is one value per contract error `code`
 * (docs/API.md §4) plus OTPD_NOMEM and OTPD_INTERNAL.  http/problem.c holds
 * the only table from a status to its HTTP status, code and title. */
#ifndef OTPD_STATUS_H
#define OTPD_STATUS_H

enum otpd_status {
	OTPD_OK = 0,
	OTPD_MALFORMED_REQUEST,     /* 400 malformed_request */
	OTPD_VALIDATION_ERROR,      /* 400 validation_error */
	OTPD_INVALID_CODE,          /* 400 invalid_code */
	OTPD_TOO_MANY_ATTEMPTS,     /* 400 too_many_attempts */
	OTPD_OTP_EXPIRED,           /* 400 otp_expired */
	OTPD_INVALID_TOKEN,         /* 401 invalid_token */
	OTPD_USER_INACTIVE,         /* 403 user_inactive */
	OTPD_FORBIDDEN,             /* 403 forbidden */
	OTPD_NOT_FOUND,             /* 404 not_found */
	OTPD_METHOD_NOT_ALLOWED,    /* 405 method_not_allowed */
	OTPD_LENGTH_REQUIRED,       /* 411 length_required */
	OTPD_PAYLOAD_TOO_LARGE,     /* 413 payload_too_large */
	OTPD_UNSUPPORTED_MEDIA_TYPE,/* 415 unsupported_media_type */
	OTPD_THROTTLED,             /* 429 throttled */
	OTPD_OTP_RATE_LIMITED,      /* 429 otp_rate_limited */
	OTPD_SMS_REJECTED,          /* 502 sms_rejected */
	OTPD_SMS_UNAVAILABLE,       /* 503 sms_unavailable */
	OTPD_UNAVAILABLE,           /* 503 unavailable */
	OTPD_INTERNAL,              /* 500 internal_error */
	OTPD_NOMEM,                 /* 500 internal_error */
	_OTPD_STATUS_MAX,
};

#endif
