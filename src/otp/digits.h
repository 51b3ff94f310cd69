/* Digits in the three scripts users type (docs/API.md §2): ASCII,
 * Arabic-Indic (U+0660..U+0669) and Persian (U+06F0..U+06F9), read from
 * strict UTF-8.  Pure: libc only.  Shared by phone.c and code.c. */
#ifndef OTPD_OTP_DIGITS_H
#define OTPD_OTP_DIGITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OTP_NOT_A_DIGIT (-1)

/* Decode one code point of strict UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) at s[*pos], pos < len.  On success
 * advances *pos and returns true; on invalid or truncated input returns
 * false. */
bool otp_utf8_next(const unsigned char *s, size_t len, size_t *pos, uint32_t *ret_cp);

/* 0..9 for an ASCII, Arabic-Indic or Persian digit, else OTP_NOT_A_DIGIT. */
int otp_digit_value(uint32_t cp);

#endif
