/* The delivery poller (auth/delivery.c): the provider's delivery state of
 * each accepted SMS, kept with its code and counted in the metrics. */
#ifndef OTPD_AUTH_DELIVERY_H
#define OTPD_AUTH_DELIVERY_H

#include "../metrics.h"
#include "../status.h"

struct store;
struct sms;
struct auth_delivery;

/* Start the poller thread: a pass every interval_s seconds (kavenegar only:
 * the caller does not start it for the console backend). */
enum otpd_status auth_delivery_start(struct store *store, struct sms *sms, int interval_s,
                                     struct auth_delivery **ret);
/* Stop the thread and wait for it (a query in flight is not waited for).
 * Call it before sms_free(). */
void auth_delivery_stop(struct auth_delivery *dl);
/* Free: after sms_free(), which answers a query still in flight into dl.
 * Stops the thread first if that was not done.  Accepts NULL. */
void auth_delivery_free(struct auth_delivery *dl);

/* A provider delivery status as the metrics count it: 10 delivered; 6, 11,
 * 13, 14 failed; anything else final (100, or past the window) unknown. */
enum metrics_delivery auth_delivery_class(int status);

#endif
