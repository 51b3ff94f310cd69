/* Random bytes for identifiers (request ids, jtis, session families): the
 * output of OpenSSL's CSPRNG (RAND_bytes), drawn in blocks into a buffer of
 * each thread and handed out from there, each byte once (wiped when
 * taken).  RAND_bytes costs the same for 8 bytes as for 512 (a DRBG
 * generate call: locks and an AES key schedule), and a login takes four
 * identifiers.  Secrets (OTP codes) do not come from here: they call
 * RAND_bytes themselves. */
#ifndef OTPD_UTIL_RANDOM_H
#define OTPD_UTIL_RANDOM_H

#include <stdbool.h>
#include <stddef.h>

/* n random bytes into buf; false (and buf untouched) when the CSPRNG fails. */
bool util_random_id_bytes(void *buf, size_t n) __attribute__((warn_unused_result));

#endif
