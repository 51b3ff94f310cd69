/* The Kavenegar backend of sms.c (docs/KAVENEGAR.md).
 *
 * Only sms.c and kavenegar.c include curl/curl.h, so this header speaks of
 * easy handles as `void *` (libcurl's CURL is a typedef of void). */
#ifndef OTPD_SMS_KAVENEGAR_H
#define OTPD_SMS_KAVENEGAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "sms.h"

/* Responses larger than this are a transport failure (docs/KAVENEGAR.md §2 bodies
 * are a few hundred bytes). */
#define SMS_KAVENEGAR_MAX_RESPONSE (64 * 1024)

/* Decide the outcome of one call (docs/KAVENEGAR.md §3, §10).  Pure.
 * transport_ok: the transfer completed (CURLE_OK).  When it did and body is
 * a JSON object with an integer return.status, that decides, whatever the
 * HTTP status: 200 -> OTPD_OK, 409 (busy, retry later) ->
 * OTPD_SMS_UNAVAILABLE, anything else -> OTPD_SMS_REJECTED with
 * provider_status.  Everything else (transport error, HTML, empty body, bad
 * JSON, no envelope) -> OTPD_SMS_UNAVAILABLE. */
struct sms_result sms_kavenegar_classify(int transport_ok, long http_status,
                                         const char *body, size_t len);

#define SMS_KEY_MAX 512

/* 1..max ASCII letters and digits (keys, codes, national numbers). */
bool sms_alnum_is_valid(const char *s, size_t max);

/* Kavenegar API keys are letters and digits only (docs/KAVENEGAR.md §1). */
bool sms_kavenegar_key_is_valid(const char *key);

/* The backend's settings, built once from the config (holds the URL, which
 * contains the API key: wiped on free). */
struct sms_kavenegar;
/* One request in flight: its form body (holds the code) and the response. */
struct sms_kavenegar_call;

/* Validate cfg and build the backend.  OTPD_INTERNAL (logged, without the
 * key) on a bad key, URL or message; OTPD_NOMEM. */
enum otpd_status sms_kavenegar_new(const struct sms_config *cfg,
                                   struct sms_kavenegar **ret);
void sms_kavenegar_free(struct sms_kavenegar *kv);

/* Configure the easy handle `easy` (a CURL *) for sending `code` to `phone`
 * ("+989XXXXXXXXX").  The call must outlive the transfer. */
enum otpd_status sms_kavenegar_call_new(const struct sms_kavenegar *kv,
                                        void *easy, const char *phone,
                                        const char *code,
                                        struct sms_kavenegar_call **ret);

/* The transfer on `easy` ended with `curl_code` (a CURLcode): classify it and
 * log a failure once (masked phone, curl code name, HTTP status,
 * return.status; never the URL, key, code or message). */
struct sms_result sms_kavenegar_call_finish(struct sms_kavenegar_call *call,
                                            void *easy, int curl_code);

/* The worker's own calls: account/info (the credit) and sms/status (the
 * delivery of up to SMS_KAVENEGAR_STATUS_MAX message ids), on easy handles
 * configured like a send's.  side_finish says whether the provider answered
 * 200; on any other outcome it writes why (never the URL) and logs nothing:
 * the worker logs a failure once per streak. */
#define SMS_KAVENEGAR_STATUS_MAX 500
enum otpd_status sms_kavenegar_info_new(const struct sms_kavenegar *kv, void *easy,
                                        struct sms_kavenegar_call **ret);
enum otpd_status sms_kavenegar_status_new(const struct sms_kavenegar *kv, void *easy,
                                          const int64_t *ids, size_t n,
                                          struct sms_kavenegar_call **ret);
enum otpd_status sms_kavenegar_side_finish(struct sms_kavenegar_call *call, void *easy,
                                           int curl_code, char *why, size_t whylen);
const char *sms_kavenegar_call_response(const struct sms_kavenegar_call *call,
                                        size_t *ret_len);

/* Pure: entries.remaincredit of an account/info answer (Rial). */
bool sms_kavenegar_parse_credit(const char *body, size_t len, double *ret);

struct sms_kavenegar_status {
	int64_t message_id;
	int status;        /* docs/KAVENEGAR.md §6: 10 delivered, 6/11/13/14 failed, 100 unknown */
};
/* Pure: the entries of an sms/status answer, at most cap; returns how many. */
size_t sms_kavenegar_parse_statuses(const char *body, size_t len,
                                    struct sms_kavenegar_status *out, size_t cap);

/* Wipe the body and free.  Accepts NULL. */
void sms_kavenegar_call_free(struct sms_kavenegar_call *call);

#endif
