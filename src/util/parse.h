/* Bounded parsers for configuration values (strtonum-style). */
#ifndef OTPD_UTIL_PARSE_H
#define OTPD_UTIL_PARSE_H

#include <stdbool.h>
#include <stdint.h>

/* A whole decimal integer in [min, max]; no sign games, no trailing junk. */
bool parse_int64(const char *s, int64_t min, int64_t max, int64_t *ret);

/* "true/false/1/0/yes/no/on/off" (case-insensitive). */
bool parse_bool(const char *s, bool *ret);

/* A throttle rate "N/sec" | "N/min" | "N/hour" | "N/day" (also "second",
 * "minute", "s", "m", "h", "d"), N in 1..1000000. */
struct rate {
	int64_t count;
	int64_t period_ms;
};
bool parse_rate(const char *s, struct rate *ret);

/* An RFC 3339 date-time, "YYYY-MM-DDTHH:MM:SS" with optional fraction
 * (milliseconds kept, more digits cut) and "Z" or "+HH:MM"/"-HH:MM" ("t" and
 * "z" too, or a space for "T"), from 1970 to 9999: Unix milliseconds.  No
 * leap second (:60), no missing part, nothing after. */
bool parse_time_ms(const char *s, int64_t *ret);

#endif
