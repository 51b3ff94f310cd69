/* Per-key rate limiting (GCRA: N requests per period, bursts up to N),
 * in memory, bounded: a fixed table; when it is full the entry closest to
 * expiry is reused.  Thread-safe (striped locks).  `now_ms` is passed in. */
#ifndef OTPD_UTIL_RATELIMIT_H
#define OTPD_UTIL_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "parse.h"

struct ratelimit;

struct ratelimit *ratelimit_new(struct rate rate, size_t slots);
void ratelimit_free(struct ratelimit *rl);

/* Count one request for key (len bytes).  true: allowed.  false: refused,
 * *ret_retry_after_s = whole seconds (>= 1) until one more is allowed. */
bool ratelimit_hit(struct ratelimit *rl, const void *key, size_t len,
                   int64_t now_ms, int *ret_retry_after_s);

#endif
