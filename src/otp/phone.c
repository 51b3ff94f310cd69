/* Iranian mobile numbers (docs/API.md §2).  Pure: libc only. */
#include "phone.h"
#include "digits.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static bool is_separator(uint32_t cp)
{
	return cp == ' ' || cp == '-' || cp == '(' || cp == ')';
}

/* Reduce `in` to ASCII: separators dropped, digits mapped to '0'..'9', a
 * '+' kept only as the first remaining character.  Refuses more than
 * OTP_PHONE_MAX_CHARS code points and any other character.  ret holds at
 * most OTP_PHONE_MAX_CHARS bytes plus NUL; *ret_len excludes the NUL. */
static bool reduce(const char *in, size_t len,
                   char ret[OTP_PHONE_MAX_CHARS + 1], size_t *ret_len)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t pos = 0, chars = 0, n = 0;

	while (pos < len) {
		uint32_t cp;
		int d;

		if (++chars > OTP_PHONE_MAX_CHARS || !otp_utf8_next(s, len, &pos, &cp))
			return false;
		if (is_separator(cp))
			continue;
		d = otp_digit_value(cp);
		if (d != OTP_NOT_A_DIGIT)
			ret[n++] = (char)('0' + d);
		else if (cp == '+' && n == 0)
			ret[n++] = '+';
		else
			return false;
	}
	ret[n] = '\0';
	*ret_len = n;
	return true;
}

/* The accepted forms, told apart by their prefix and total length; what
 * follows the prefix is the 10-digit subscriber part "9XXXXXXXXX". */
static const struct {
	const char *prefix;
	size_t len;
} forms[] = {
	{ "+98", 13 },  /* +989XXXXXXXXX */
	{ "0098", 14 }, /* 00989XXXXXXXXX */
	{ "98", 12 },   /* 989XXXXXXXXX */
	{ "0", 11 },    /* 09XXXXXXXXX */
	{ "", 10 },     /* 9XXXXXXXXX */
};

/* The subscriber part of a reduced number, or NULL if it has no accepted
 * form.  `s` holds only digits apart from an optional leading '+'. */
static const char *subscriber(const char *s, size_t n)
{
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		size_t plen = strlen(forms[i].prefix);

		if (n == forms[i].len && memcmp(s, forms[i].prefix, plen) == 0)
			return s[plen] == '9' ? s + plen : NULL;
	}
	return NULL;
}

enum otpd_status otp_phone_normalize(const char *in, size_t len,
                                     char ret[OTP_PHONE_LEN + 1])
{
	char buf[OTP_PHONE_MAX_CHARS + 1];
	const char *sub;
	size_t n;

	if (!in || !reduce(in, len, buf, &n))
		return OTPD_VALIDATION_ERROR;
	sub = subscriber(buf, n);
	if (!sub)
		return OTPD_VALIDATION_ERROR;
	memcpy(ret, "+98", 3);
	memcpy(ret + 3, sub, OTP_PHONE_LEN - 3);
	ret[OTP_PHONE_LEN] = '\0';
	return OTPD_OK;
}

/* True for exactly "+989" followed by 9 ASCII digits. */
static bool is_normalized(const char *phone)
{
	if (!phone || strncmp(phone, "+989", 4) != 0)
		return false;
	for (size_t i = 4; i < OTP_PHONE_LEN; i++)
		if (phone[i] < '0' || phone[i] > '9')
			return false;
	return phone[OTP_PHONE_LEN] == '\0';
}

/* Keeps "+98" and the operator prefix (6 chars) and the last 4 digits. */
void otp_phone_mask(const char *phone, char ret[OTP_PHONE_MASKED_LEN])
{
	if (!is_normalized(phone)) {
		memcpy(ret, "***", 4);
		return;
	}
	memcpy(ret, phone, 6);
	memcpy(ret + 6, "***", 3);
	memcpy(ret + 9, phone + OTP_PHONE_LEN - 4, 4);
	ret[13] = '\0';
}

/* A phone that is not normalised yields "". */
void otp_phone_national(const char *phone, char ret[OTP_PHONE_NATIONAL_LEN + 1])
{
	if (!is_normalized(phone)) {
		ret[0] = '\0';
		return;
	}
	ret[0] = '0';
	memcpy(ret + 1, phone + 3, OTP_PHONE_NATIONAL_LEN - 1);
	ret[OTP_PHONE_NATIONAL_LEN] = '\0';
}

/* Points into `phone` (borrowed); a phone that is not normalised yields "". */
const char *otp_phone_digits(const char *phone)
{
	return is_normalized(phone) ? phone + 1 : "";
}
