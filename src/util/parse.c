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
