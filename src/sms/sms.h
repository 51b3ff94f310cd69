/* The SMS interface: asynchronous, so that no server thread ever waits on
 * the network.  sms_send() queues a job and returns at once; a worker thread
 * (libcurl multi for kavenegar) runs it and calls done() from that thread.
 *
 * Backends: "console" (writes the code to the log: development only) and
 * "kavenegar" (REST API, docs/KAVENEGAR.md). */
#ifndef OTPD_SMS_H
#define OTPD_SMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../status.h"

struct sms;

enum sms_backend {
	SMS_CONSOLE = 0,
	SMS_KAVENEGAR = 1,
};

struct sms_config {
	enum sms_backend backend;
	const char *api_url;    /* KAVENEGAR_API_URL, no trailing slash needed */
	const char *api_key;    /* KAVENEGAR_API_KEY (letters and digits) */
	const char *sender;     /* KAVENEGAR_SENDER */
	const char *template_name; /* KAVENEGAR_TEMPLATE or NULL: verify/lookup */
	const char *message;    /* OTP_MESSAGE, contains "{code}": sms/send */
	long connect_timeout_ms;
	long timeout_ms;
	int max_queue;          /* jobs waiting or in flight; beyond -> UNAVAILABLE */
	long credit_interval_s; /* kavenegar: read the credit at start and this often (0: never) */
	double credit_alert;    /* warn once when the credit drops below (0: never) */
};

/* The outcome handed to done(). */
struct sms_result {
	enum otpd_status status;  /* OTPD_OK, OTPD_SMS_REJECTED, OTPD_SMS_UNAVAILABLE */
	int provider_status;      /* with OTPD_SMS_REJECTED: Kavenegar's return.status */
	int return_status;        /* the envelope's return.status whenever the provider
	                             answered one (200 too), else -1: for the metrics */
	int64_t message_id;       /* with OTPD_OK: the provider's messageid (0: none) */
};

typedef void (*sms_done_fn)(void *arg, const struct sms_result *result);

/* Delivery states (docs/KAVENEGAR.md §6) of messages sent earlier. */
#define SMS_STATUS_MAX 500
struct sms_delivery {
	int64_t message_id;
	int status;
};
typedef void (*sms_status_fn)(void *arg, enum otpd_status status,
                              const struct sms_delivery *d, size_t n);

/* Start the worker thread.  cfg strings are copied. */
enum otpd_status sms_new(const struct sms_config *cfg, struct sms **ret);

/* Queue one code for phone ("+989XXXXXXXXX").  The code is copied and wiped
 * after sending.  On OTPD_OK done(arg, result) is called exactly once, later,
 * from the worker thread (never from inside sms_send).  On any other return
 * (queue full, shutting down, no memory) done is never called. */
enum otpd_status sms_send(struct sms *sms, const char *phone, const char *code,
                          sms_done_fn done, void *arg);

/* Stop the worker: jobs still queued or in flight finish first (their done()
 * is called), for at most wait_ms; any left after that get
 * OTPD_SMS_UNAVAILABLE.  Then free everything.  Accepts NULL. */
void sms_free(struct sms *sms, long wait_ms);

/* Ask the provider (kavenegar only) for the delivery state of n message ids
 * (1..SMS_STATUS_MAX), on the worker thread.  On OTPD_OK done is called
 * once, later, from the worker: OTPD_OK with the states the provider gave
 * (an id it does not know comes back as 100), or a failure (logged).  Not
 * counted against max_queue. */
enum otpd_status sms_status_query(struct sms *sms, const int64_t *ids, size_t n,
                                  sms_status_fn done, void *arg);

/* One account/info call (kavenegar only), synchronously, for `otpd
 * check-config`: OTPD_OK and the remaining credit (Rial) when the provider
 * accepts the key; else OTPD_SMS_REJECTED (the provider refused: a bad
 * key, a blocked account) or OTPD_SMS_UNAVAILABLE (not reached, not
 * understood), with why (one line, never the URL or the key).  Bounded by
 * cfg's timeouts.  Starts no thread. */
enum otpd_status sms_account_check(const struct sms_config *cfg, double *ret_credit,
                                   char *why, size_t whylen);

#endif
