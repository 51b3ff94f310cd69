/* One-time codes: generation from the OS CSPRNG, keyed hashing, constant-time
 * comparison.  Pure: libc + libcrypto, no clock, no I/O besides RAND_bytes. */
#ifndef OTPD_OTP_CODE_H
#define OTPD_OTP_CODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../status.h"

#define OTP_CODE_LEN 6
#define OTP_HASH_LEN 32   /* HMAC-SHA256 */
#define OTP_KEY_LEN 32

/* A uniform code in 000000..999999 from RAND_bytes (rejection sampling, no
 * modulo bias), written as 6 ASCII digits + NUL.  OTPD_INTERNAL if the CSPRNG
 * fails (ret untouched). */
enum otpd_status otp_code_generate(char ret[OTP_CODE_LEN + 1])
	__attribute__((warn_unused_result));

/* The sampling step, with the random source injected (tests): draws 32-bit
 * words from next() until one falls below the largest multiple of 10^6 and
 * returns it mod 10^6.  Returns -1 if next() fails. */
long otp_code_from_words(int (*next)(void *arg, uint32_t *ret_word), void *arg);

/* Normalise a submitted code: exactly 6 digits in ASCII, Persian or
 * Arabic-Indic script (mixed allowed) -> 6 ASCII digits.  len is in bytes.
 * OTPD_VALIDATION_ERROR otherwise. */
enum otpd_status otp_code_normalize(const char *in, size_t len,
                                    char ret[OTP_CODE_LEN + 1]);

/* HMAC-SHA256 (OpenSSL).  Returns false on failure. */
bool otp_hmac_sha256(const void *key, size_t key_len, const void *msg,
                     size_t msg_len, uint8_t ret[OTP_HASH_LEN]);

/* Derive a 32-byte subkey: HMAC-SHA256(secret, label). */
bool otp_derive_key(const void *secret, size_t secret_len, const char *label,
                    uint8_t ret[OTP_KEY_LEN]);

/* The stored form of a code: HMAC-SHA256(key, phone ":" code). */
bool otp_code_hash(const uint8_t key[OTP_KEY_LEN], const char *phone,
                   const char *code, uint8_t ret[OTP_HASH_LEN]);

/* HMAC-SHA256 with a key prepared once: the algorithm looked up and the key
 * scheduled when it is made, a copy of that context per message (safe from
 * several threads at once).  OpenSSL 3 looks HMAC and SHA-256 up by name on
 * every EVP_MAC_init().  Used for code hashes and HS256 tokens. */
struct otp_hasher;
struct otp_hasher *otp_hasher_new(const void *key, size_t key_len);
void otp_hasher_free(struct otp_hasher *h);
/* HMAC-SHA256(key, msg): the same result as otp_hmac_sha256(). */
bool otp_hasher_mac(const struct otp_hasher *h, const void *msg, size_t len,
                    uint8_t ret[OTP_HASH_LEN]);
/* The same result as otp_code_hash() with the hasher's key. */
bool otp_hasher_hash(const struct otp_hasher *h, const char *phone,
                     const char *code, uint8_t ret[OTP_HASH_LEN]);

/* Constant-time equality (CRYPTO_memcmp). */
bool otp_hash_equal(const uint8_t a[OTP_HASH_LEN], const uint8_t b[OTP_HASH_LEN])
	__attribute__((warn_unused_result));

/* Wipe a secret (OPENSSL_cleanse). */
void otp_wipe(void *p, size_t len);

#endif
