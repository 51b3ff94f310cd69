/* The SMS interface: asynchronous, so that no server thread ever waits on
 * the network.  sms_send() queues a job and returns at once; a worker thread
 * (libcurl multi for kavenegar) runs it and calls done() from that thread.
 *
 * Backends: "console" (writes the code to the log: development only) and
 * "kavenegar" (REST API, docs/KAVENEGAR.md). */
#ifndef OTPD_SMS_H
#define OTPD_SMS_H

#include <stdbool.h>
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
};

/* The outcome handed to done(). */
struct sms_result {
	enum otpd_status status;  /* OTPD_OK, OTPD_SMS_REJECTED, OTPD_SMS_UNAVAILABLE */
	int provider_status;      /* with OTPD_SMS_REJECTED: Kavenegar's return.status */
	int return_status;        /* the envelope's return.status whenever the provider
	                             answered one (200 too), else -1: for the metrics */
};

typedef void (*sms_done_fn)(void *arg, const struct sms_result *result);

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

#endif
