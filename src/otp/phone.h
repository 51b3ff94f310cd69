/* Iranian mobile numbers (docs/API.md §2).  Pure: libc only. */
#ifndef OTPD_OTP_PHONE_H
#define OTPD_OTP_PHONE_H

#include <stddef.h>
#include "../status.h"

#define OTP_PHONE_LEN 13          /* "+989XXXXXXXXX" */
#define OTP_PHONE_MAX_CHARS 32    /* longer input is refused (characters, not bytes) */
#define OTP_PHONE_MASKED_LEN 16   /* buffer size for otp_phone_mask() */
#define OTP_PHONE_NATIONAL_LEN 11 /* "09XXXXXXXXX" */

/* Normalise `in` (len bytes of UTF-8, not NUL-terminated) to "+989XXXXXXXXX".
 * Accepts +989…, 00989…, 989…, 09…, 9… after removing spaces, '-', '(' and
 * ')', in ASCII, Persian (U+06F0..U+06F9) or Arabic-Indic (U+0660..U+0669)
 * digits or a mix.  Returns OTPD_OK and fills ret (NUL-terminated), or
 * OTPD_VALIDATION_ERROR and leaves ret untouched. */
enum otpd_status otp_phone_normalize(const char *in, size_t len,
                                     char ret[OTP_PHONE_LEN + 1]);

/* "+989123456789" -> "+98912***6789" (for logs).  Anything that is not a
 * normalised number becomes "***". */
void otp_phone_mask(const char *phone, char ret[OTP_PHONE_MASKED_LEN]);

/* "+989123456789" -> "09123456789" (the form Kavenegar documents). */
void otp_phone_national(const char *phone, char ret[OTP_PHONE_NATIONAL_LEN + 1]);

/* "+989123456789" -> "989123456789" (username and e-mail local part). */
const char *otp_phone_digits(const char *phone);

#endif
