#include "netaddr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include "parse.h"

static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void from_v6(const unsigned char b[16], struct netaddr *ret)
{
	memset(ret, 0, sizeof(*ret));
	if (memcmp(b, v4mapped, sizeof(v4mapped)) == 0) {
		ret->family = AF_INET;
		memcpy(ret->bytes, b + 12, 4);
		return;
	}
	ret->family = AF_INET6;
	memcpy(ret->bytes, b, 16);
}

bool netaddr_parse(const char *s, struct netaddr *ret)
{
	unsigned char b[16];

	if (inet_pton(AF_INET, s, b) == 1) {
		memset(ret, 0, sizeof(*ret));
		ret->family = AF_INET;
		memcpy(ret->bytes, b, 4);
		return true;
	}
	if (inet_pton(AF_INET6, s, b) == 1) {
		from_v6(b, ret);
		return true;
	}
	return false;
}

bool netaddr_from_sockaddr(const struct sockaddr *sa, struct netaddr *ret)
{
	if (!sa)
		return false;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		memset(ret, 0, sizeof(*ret));
		ret->family = AF_INET;
		memcpy(ret->bytes, &in->sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		from_v6(in6->sin6_addr.s6_addr, ret);
		return true;
	}
	return false;
}

void netaddr_format(const struct netaddr *a, char ret[NETADDR_STRLEN])
{
	if (!inet_ntop(a->family, a->bytes, ret, NETADDR_STRLEN))
		strcpy(ret, "unknown");
}

static bool cidr_parse(const char *s, struct netaddr_cidr *ret)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	int64_t prefix;
	struct netaddr a;

	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (!netaddr_parse(buf, &a))
		return false;
	int max = a.family == AF_INET ? 32 : 128;
	/* "::ffff:10.0.0.0/104" was mapped to IPv4: shift the prefix too. */
	if (slash) {
		if (!parse_int64(slash + 1, 0, 128, &prefix))
			return false;
		if (a.family == AF_INET && strchr(buf, ':')) {
			if (prefix < 96)
				return false;
			prefix -= 96;
		}
		if (prefix > max)
			return false;
	} else {
		prefix = max;
	}
	ret->addr = a;
	ret->prefix = (int)prefix;
	return true;
}

bool netaddr_list_parse(const char *s, struct netaddr_list *ret)
{
	struct netaddr_list l = {0};
	const char *p = s;

	while (*p) {
		char item[64];
		size_t n;

		while (*p == ' ' || *p == ',' || *p == '\t')
			p++;
		if (!*p)
			break;
		n = strcspn(p, ", \t");
		if (n >= sizeof(item) || l.n == NETADDR_MAX_CIDRS)
			return false;
		memcpy(item, p, n);
		item[n] = '\0';
		if (!cidr_parse(item, &l.items[l.n]))
			return false;
		l.n++;
		p += n;
	}
	*ret = l;
	return true;
}

static bool cidr_contains(const struct netaddr_cidr *c, const struct netaddr *a)
{
	int full = c->prefix / 8, rest = c->prefix % 8;

	if (c->addr.family != a->family)
		return false;
	if (memcmp(c->addr.bytes, a->bytes, (size_t)full) != 0)
		return false;
	if (rest == 0)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (c->addr.bytes[full] & mask) == (a->bytes[full] & mask);
}

bool netaddr_list_contains(const struct netaddr_list *l, const struct netaddr *a)
{
	for (size_t i = 0; i < l->n; i++)
		if (cidr_contains(&l->items[i], a))
			return true;
	return false;
}

/* One X-Forwarded-For entry, trimmed; "[v6]" and "v4:port" forms accepted. */
static bool xff_entry(const char *p, size_t n, struct netaddr *ret)
{
	char buf[64];

	while (n > 0 && (*p == ' ' || *p == '\t')) {
		p++;
		n--;
	}
	while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	if (n == 0 || n >= sizeof(buf))
		return false;
	memcpy(buf, p, n);
	buf[n] = '\0';
	if (buf[0] == '[') {
		char *end = strchr(buf, ']');
		if (!end)
			return false;
		*end = '\0';
		return netaddr_parse(buf + 1, ret);
	}
	if (netaddr_parse(buf, ret))
		return true;
	char *colon = strchr(buf, ':');
	if (colon && !strchr(colon + 1, ':')) { /* a.b.c.d:port */
		*colon = '\0';
		return netaddr_parse(buf, ret) && ret->family == AF_INET;
	}
	return false;
}

void netaddr_client(const struct netaddr *peer, const char *xff,
                    const struct netaddr_list *trusted, struct netaddr *ret)
{
	struct netaddr cur = *peer;

	if (xff && netaddr_list_contains(trusted, peer)) {
		size_t end = strlen(xff);
		/* Walk from the right while the hop we stand on is trusted. */
		while (netaddr_list_contains(trusted, &cur)) {
			size_t start = end;
			struct netaddr next;

			while (start > 0 && xff[start - 1] != ',')
				start--;
			if (start == end && start == 0)
				break;
			if (!xff_entry(xff + start, end - start, &next))
				break;
			cur = next;
			if (start == 0)
				break;
			end = start - 1;
		}
	}
	*ret = cur;
}

bool netaddr_parse_listen(const char *s, struct sockaddr_storage *ret,
                          socklen_t *ret_len)
{
	char host[64];
	const char *colon;
	int64_t port;
	struct netaddr a;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return false;
		size_t n = (size_t)(close - s - 1);
		if (n == 0 || n >= sizeof(host))
			return false;
		memcpy(host, s + 1, n);
		host[n] = '\0';
		colon = close + 1;
		if (inet_pton(AF_INET6, host, &(struct in6_addr){0}) != 1)
			return false;
	} else {
		colon = strrchr(s, ':');
		if (!colon || (size_t)(colon - s) >= sizeof(host) || colon == s)
			return false;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
		if (strcmp(host, "localhost") == 0)
			strcpy(host, "127.0.0.1");
		if (strchr(host, ':'))
			return false; /* IPv6 needs brackets */
	}
	if (!parse_int64(colon + 1, 0, 65535, &port) || !netaddr_parse(host, &a))
		return false;
	memset(ret, 0, sizeof(*ret));
	if (s[0] == '[') {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ret;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		inet_pton(AF_INET6, host, &in6->sin6_addr);
		*ret_len = sizeof(*in6);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)ret;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		memcpy(&in->sin_addr, a.bytes, 4);
		*ret_len = sizeof(*in);
	}
	return true;
}
