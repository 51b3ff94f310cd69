#include "parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool parse_int64(const char *s, int64_t min, int64_t max, int64_t *ret)
{
	char *end;
	long long v;

	if (!s || !*s || isspace((unsigned char)*s))
		return false;
	if (*s == '+')
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end != '\0' || v < min || v > max)
		return false;
	*ret = v;
	return true;
}

bool parse_bool(const char *s, bool *ret)
{
	static const char *const yes[] = {"true", "1", "yes", "on"};
	static const char *const no[] = {"false", "0", "no", "off"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*ret = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*ret = false;
			return true;
		}
	}
	return false;
}

bool parse_rate(const char *s, struct rate *ret)
{
	static const struct {
		const char *name;
		int64_t ms;
	} periods[] = {
		{"s", 1000},        {"sec", 1000},       {"second", 1000},
		{"m", 60000},       {"min", 60000},      {"minute", 60000},
		{"h", 3600000},     {"hour", 3600000},   {"d", 86400000},
		{"day", 86400000},
	};
	const char *slash = s ? strchr(s, '/') : NULL;
	char num[16];
	int64_t n;

	if (!slash || (size_t)(slash - s) >= sizeof(num))
		return false;
	memcpy(num, s, (size_t)(slash - s));
	num[slash - s] = '\0';
	if (!parse_int64(num, 1, 1000000, &n))
		return false;
	for (size_t i = 0; i < sizeof(periods) / sizeof(periods[0]); i++) {
		if (strcasecmp(slash + 1, periods[i].name) == 0) {
			ret->count = n;
			ret->period_ms = periods[i].ms;
			return true;
		}
	}
	return false;
}

/* n decimal digits at s, in [lo, hi]. */
static bool digits(const char *s, int n, int lo, int hi, int *ret)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v < lo || v > hi)
		return false;
	*ret = v;
	return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

bool parse_time_ms(const char *s, int64_t *ret)
{
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int y, mo, d, h, mi, sec, ms = 0, oh = 0, om = 0, sign = 0;
	const char *p;
	int64_t t;

	if (!s || strlen(s) < 20)
		return false;
	if (!digits(s, 4, 1970, 9999, &y) || s[4] != '-' || !digits(s + 5, 2, 1, 12, &mo) ||
	    s[7] != '-' || !digits(s + 8, 2, 1, 31, &d) ||
	    (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(s + 11, 2, 0, 23, &h) ||
	    s[13] != ':' || !digits(s + 14, 2, 0, 59, &mi) || s[16] != ':' ||
	    !digits(s + 17, 2, 0, 59, &sec))
		return false;
	if (d > mdays[mo - 1] ||
	    (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))))
		return false;
	p = s + 19;
	if (*p == '.') {
		int n = 0;
		for (p++; *p >= '0' && *p <= '9'; p++, n++)
			if (n < 3)
				ms = ms * 10 + (*p - '0');
		if (n == 0)
			return false;
		for (; n < 3; n++)
			ms *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p == '+' ? 1 : -1;
		if (!digits(p + 1, 2, 0, 23, &oh) || p[3] != ':' || !digits(p + 4, 2, 0, 59, &om))
			return false;
		p += 6;
	} else {
		return false;
	}
	if (*p)
		return false;
	t = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + sec;
	t -= sign * (oh * 3600 + om * 60);
	if (t < 0)
		return false;
	*ret = t * 1000 + ms;
	return true;
}
