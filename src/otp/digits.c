#include "digits.h"

bool otp_utf8_next(const unsigned char *s, size_t len, size_t *pos,
                      uint32_t *ret_cp)
{
	size_t i = *pos, extra;
	uint32_t cp = s[i], min;

	if (cp < 0x80) {
		extra = 0;
		min = 0;
	} else if (cp >= 0xC2 && cp <= 0xDF) {
		extra = 1;
		cp &= 0x1F;
		min = 0x80;
	} else if (cp >= 0xE0 && cp <= 0xEF) {
		extra = 2;
		cp &= 0x0F;
		min = 0x800;
	} else if (cp >= 0xF0 && cp <= 0xF4) {
		extra = 3;
		cp &= 0x07;
		min = 0x10000;
	} else {
		return false;
	}
	if (len - i - 1 < extra)
		return false;
	for (size_t k = 1; k <= extra; k++) {
		if ((s[i + k] & 0xC0) != 0x80)
			return false;
		cp = cp << 6 | (s[i + k] & 0x3Fu);
	}
	if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return false;
	*pos = i + 1 + extra;
	*ret_cp = cp;
	return true;
}

int otp_digit_value(uint32_t cp)
{
	if (cp >= '0' && cp <= '9')
		return (int)(cp - '0');
	if (cp >= 0x0660 && cp <= 0x0669)
		return (int)(cp - 0x0660);
	if (cp >= 0x06F0 && cp <= 0x06F9)
		return (int)(cp - 0x06F0);
	return OTP_NOT_A_DIGIT;
}
