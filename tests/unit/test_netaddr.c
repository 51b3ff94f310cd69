/* util/netaddr.c: addresses, OTPD_TRUSTED_PROXIES lists, the client address
 * behind trusted proxies (docs/API.md §1: "only a request from one of them
 * may name the client in X-Forwarded-For") and OTPD_LISTEN.
 * Expected bytes come from RFC 791 / RFC 4291 notation (2.2; 2.5.5.2 for
 * ::ffff:a.b.c.d), prefix arithmetic from RFC 4632 and RFC 4291 2.3. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "util/netaddr.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static struct netaddr v4(unsigned a, unsigned b, unsigned c, unsigned d)
{
	struct netaddr n;

	memset(&n, 0, sizeof(n));
	n.family = AF_INET;
	n.bytes[0] = (unsigned char)a;
	n.bytes[1] = (unsigned char)b;
	n.bytes[2] = (unsigned char)c;
	n.bytes[3] = (unsigned char)d;
	return n;
}

/* Eight 16-bit groups, RFC 4291 2.2 form 1. */
static struct netaddr v6(unsigned g0, unsigned g1, unsigned g2, unsigned g3,
                         unsigned g4, unsigned g5, unsigned g6, unsigned g7)
{
	const unsigned g[8] = {g0, g1, g2, g3, g4, g5, g6, g7};
	struct netaddr n;

	memset(&n, 0, sizeof(n));
	n.family = AF_INET6;
	for (int i = 0; i < 8; i++) {
		n.bytes[2 * i] = (unsigned char)(g[i] >> 8);
		n.bytes[2 * i + 1] = (unsigned char)(g[i] & 0xff);
	}
	return n;
}

static bool same_addr(const struct netaddr *a, const struct netaddr *b)
{
	if (a->family != b->family)
		return false;
	return memcmp(a->bytes, b->bytes, a->family == AF_INET ? 4 : 16) == 0;
}

static const char *show(const struct netaddr *a, char buf[NETADDR_STRLEN])
{
	if (a->family != AF_INET && a->family != AF_INET6)
		return "(no family)";
	netaddr_format(a, buf);
	return buf;
}

static void expect_addr(const struct netaddr *got, const struct netaddr *want,
                        const char *what)
{
	char g[NETADDR_STRLEN], w[NETADDR_STRLEN];

	if (!same_addr(got, want))
		fail_msg("%s: got %s, want %s", what, show(got, g), show(want, w));
}

static struct netaddr must_parse(const char *s)
{
	struct netaddr a;

	if (!netaddr_parse(s, &a))
		fail_msg("netaddr_parse(\"%s\") refused", s);
	return a;
}

static struct netaddr_list must_list(const char *s)
{
	struct netaddr_list l;

	if (!netaddr_list_parse(s, &l))
		fail_msg("netaddr_list_parse(\"%s\") refused", s);
	return l;
}

/* ---- netaddr_parse ---- */

static void test_parse_addresses(void **state)
{
	const struct {
		const char *in;
		struct netaddr want;
	} cases[] = {
		{"1.2.3.4", v4(1, 2, 3, 4)},
		{"0.0.0.0", v4(0, 0, 0, 0)},
		{"255.255.255.255", v4(255, 255, 255, 255)},
		{"10.0.0.1", v4(10, 0, 0, 1)},
		{"::1", v6(0, 0, 0, 0, 0, 0, 0, 1)},
		{"::", v6(0, 0, 0, 0, 0, 0, 0, 0)},
		{"2001:db8::1", v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)},
		{"2001:DB8:0:0:0:0:0:1", v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)},
		{"fe80::1:2", v6(0xfe80, 0, 0, 0, 0, 0, 1, 2)},
		{"2001:db8:1:2:3:4:5:6", v6(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6)},
		/* RFC 4291 2.5.5.2: IPv4-mapped addresses are the IPv4 host */
		{"::ffff:1.2.3.4", v4(1, 2, 3, 4)},
		{"::FFFF:10.0.0.1", v4(10, 0, 0, 1)},
		{"::ffff:102:304", v4(1, 2, 3, 4)},
		{"0:0:0:0:0:ffff:c000:0201", v4(192, 0, 2, 1)},
		/* ... but the deprecated IPv4-compatible form (2.5.5.1) and other
		 * embeddings are not mapped addresses */
		{"::1.2.3.4", v6(0, 0, 0, 0, 0, 0, 0x102, 0x304)},
		{"64:ff9b::1.2.3.4", v6(0x64, 0xff9b, 0, 0, 0, 0, 0x102, 0x304)},
		{"::fffe:1.2.3.4", v6(0, 0, 0, 0, 0, 0xfffe, 0x102, 0x304)},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct netaddr a = must_parse(cases[i].in);

		expect_addr(&a, &cases[i].want, cases[i].in);
	}
}

static void test_parse_refuses(void **state)
{
	static const char *const bad[] = {
		"", " ", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.-4", "1.2.3.4/8",
		"1.2.3.4:80", " 1.2.3.4", "1.2.3.4 ", "[::1]", "::1/128", "::g",
		"1::2::3", "2001:db8:1:2:3:4:5:6:7", "localhost", "example.com",
		"abc", "1.2.3.4,5.6.7.8",
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct netaddr a = v4(9, 9, 9, 9);
		struct netaddr before = a;

		if (netaddr_parse(bad[i], &a))
			fail_msg("netaddr_parse(\"%s\") accepted", bad[i]);
		assert_memory_equal(&a, &before, sizeof(a));
	}
}

static void test_format(void **state)
{
	static const char *const canonical[] = {
		"1.2.3.4", "0.0.0.0", "::1", "2001:db8::1", "fe80::1:2",
	};
	char buf[NETADDR_STRLEN];
	struct netaddr a;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(canonical); i++) {
		a = must_parse(canonical[i]);
		netaddr_format(&a, buf);
		assert_string_equal(buf, canonical[i]);
	}
	/* RFC 5952: lower case, longest zero run compressed */
	a = must_parse("2001:DB8:0:0:0:0:0:1");
	netaddr_format(&a, buf);
	assert_string_equal(buf, "2001:db8::1");
	/* a mapped address is reported as the IPv4 client it is */
	a = must_parse("::ffff:1.2.3.4");
	netaddr_format(&a, buf);
	assert_string_equal(buf, "1.2.3.4");
}

static void test_from_sockaddr(void **state)
{
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
	struct netaddr a, want;

	(void)state;
	memset(&in, 0, sizeof(in));
	in.sin_family = AF_INET;
	in.sin_port = htons(4711);
	assert_int_equal(inet_pton(AF_INET, "203.0.113.7", &in.sin_addr), 1);
	assert_true(netaddr_from_sockaddr((const struct sockaddr *)&in, &a));
	want = v4(203, 0, 113, 7);
	expect_addr(&a, &want, "sockaddr_in");

	memset(&in6, 0, sizeof(in6));
	in6.sin6_family = AF_INET6;
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::7", &in6.sin6_addr), 1);
	assert_true(netaddr_from_sockaddr((const struct sockaddr *)&in6, &a));
	want = v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
	expect_addr(&a, &want, "sockaddr_in6");

	/* a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d */
	assert_int_equal(inet_pton(AF_INET6, "::ffff:198.51.100.9", &in6.sin6_addr), 1);
	assert_true(netaddr_from_sockaddr((const struct sockaddr *)&in6, &a));
	want = v4(198, 51, 100, 9);
	expect_addr(&a, &want, "mapped sockaddr_in6");

	assert_false(netaddr_from_sockaddr(NULL, &a));
	struct sockaddr other;
	memset(&other, 0, sizeof(other));
	other.sa_family = AF_UNIX;
	assert_false(netaddr_from_sockaddr(&other, &a));
}

/* ---- netaddr_list_parse / netaddr_list_contains ---- */

static void test_list_entries(void **state)
{
	struct netaddr_list l;
	struct netaddr want;

	(void)state;
	/* the example of util/netaddr.h */
	l = must_list("10.0.0.0/8, 127.0.0.1, ::1, fd00::/8");
	assert_int_equal(l.n, 4);
	want = v4(10, 0, 0, 0);
	expect_addr(&l.items[0].addr, &want, "item 0");
	assert_int_equal(l.items[0].prefix, 8);
	want = v4(127, 0, 0, 1);
	expect_addr(&l.items[1].addr, &want, "item 1");
	assert_int_equal(l.items[1].prefix, 32);   /* a bare v4 address is a /32 */
	want = v6(0, 0, 0, 0, 0, 0, 0, 1);
	expect_addr(&l.items[2].addr, &want, "item 2");
	assert_int_equal(l.items[2].prefix, 128);  /* a bare v6 address is a /128 */
	want = v6(0xfd00, 0, 0, 0, 0, 0, 0, 0);
	expect_addr(&l.items[3].addr, &want, "item 3");
	assert_int_equal(l.items[3].prefix, 8);

	/* separators: with or without blanks */
	l = must_list("10.0.0.0/8,192.168.0.0/16");
	assert_int_equal(l.n, 2);
	l = must_list("  10.0.0.0/8 ,\t::1  ");
	assert_int_equal(l.n, 2);
	l = must_list("1.2.3.4");
	assert_int_equal(l.n, 1);

	/* an IPv4-mapped CIDR is the IPv4 CIDR: ::ffff:10.0.0.0/104 = 10.0.0.0/8 */
	l = must_list("::ffff:10.0.0.0/104");
	assert_int_equal(l.n, 1);
	want = must_parse("10.200.3.4");
	assert_true(netaddr_list_contains(&l, &want));
	want = must_parse("11.0.0.1");
	assert_false(netaddr_list_contains(&l, &want));
}

static void test_list_empty(void **state)
{
	struct netaddr_list l;
	struct netaddr a;

	(void)state;
	l = must_list("");
	assert_int_equal(l.n, 0);
	a = must_parse("127.0.0.1");
	assert_false(netaddr_list_contains(&l, &a));
	a = must_parse("::1");
	assert_false(netaddr_list_contains(&l, &a));
}

static void test_list_refuses(void **state)
{
	static const char *const bad[] = {
		"1.2.3.4/99", "1.2.3.4/33", "::1/129", "fd00::/200",
		"1.2.3.4/", "1.2.3.4/-1", "1.2.3.4/+8", "1.2.3.4/8x", "1.2.3.4/0x8",
		"1.2.3.4/ 8", "1.2.3.4/8/8", "/8", "/", "junk", "10.0.0.0/8, junk",
		"junk, 10.0.0.0/8", "10.0.0.0/8;127.0.0.1", "256.0.0.0/8",
		"localhost", "example.com/24", "[::1]", "1.2.3.4:80",
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct netaddr_list l;

		memset(&l, 0x5a, sizeof(l));
		if (netaddr_list_parse(bad[i], &l))
			fail_msg("netaddr_list_parse(\"%s\") accepted (%zu entries)", bad[i], l.n);
		/* untouched on failure */
		for (size_t k = 0; k < sizeof(l); k++)
			assert_int_equal(((unsigned char *)&l)[k], 0x5a);
	}
}

static void test_list_too_many(void **state)
{
	char s[NETADDR_MAX_CIDRS * 20 + 32];
	size_t n = 0;
	struct netaddr_list l;
	struct netaddr a;

	(void)state;
	/* exactly the maximum: accepted, every entry kept */
	for (int i = 0; i < NETADDR_MAX_CIDRS; i++)
		n += (size_t)snprintf(s + n, sizeof(s) - n, "%s10.0.%d.1", i ? ", " : "", i);
	l = must_list(s);
	assert_int_equal(l.n, NETADDR_MAX_CIDRS);
	a = v4(10, 0, NETADDR_MAX_CIDRS - 1, 1);
	assert_true(netaddr_list_contains(&l, &a));

	/* one more: refused, not silently truncated */
	snprintf(s + n, sizeof(s) - n, ", 10.1.0.1");
	assert_false(netaddr_list_parse(s, &l));
}

struct contains_case {
	const char *list;
	const char *addr;
	bool want;
};

static void test_list_contains(void **state)
{
	static const struct contains_case cases[] = {
		/* /0 is a whole family */
		{"0.0.0.0/0", "1.2.3.4", true},
		{"0.0.0.0/0", "255.255.255.255", true},
		{"0.0.0.0/0", "::1", false},
		{"::/0", "2001:db8::1", true},
		{"::/0", "::1", true},
		/* /32 and /128 are one host */
		{"1.2.3.4/32", "1.2.3.4", true},
		{"1.2.3.4/32", "1.2.3.5", false},
		{"1.2.3.4", "1.2.3.4", true},
		{"1.2.3.4", "1.2.3.3", false},
		{"2001:db8::1/128", "2001:db8::1", true},
		{"2001:db8::1/128", "2001:db8::2", false},
		{"::1", "::1", true},
		{"::1", "127.0.0.1", false},
		/* byte-aligned prefixes */
		{"10.0.0.0/8", "10.0.0.1", true},
		{"10.0.0.0/8", "10.255.255.255", true},
		{"10.0.0.0/8", "11.0.0.0", false},
		{"10.0.0.0/8", "9.255.255.255", false},
		{"192.168.1.0/24", "192.168.1.255", true},
		{"192.168.1.0/24", "192.168.2.0", false},
		/* prefixes that split a byte: 172.16.0.0/12 = 172.16.0.0 .. 172.31.255.255 */
		{"172.16.0.0/12", "172.16.0.0", true},
		{"172.16.0.0/12", "172.31.255.255", true},
		{"172.16.0.0/12", "172.32.0.0", false},
		{"172.16.0.0/12", "172.15.255.255", false},
		{"100.64.0.0/10", "100.127.255.255", true},
		{"100.64.0.0/10", "100.128.0.0", false},
		{"203.0.113.128/25", "203.0.113.200", true},
		{"203.0.113.128/25", "203.0.113.127", false},
		{"203.0.113.5/31", "203.0.113.4", true},
		{"203.0.113.5/31", "203.0.113.6", false},
		/* IPv6 */
		{"2001:db8::/32", "2001:db8:ffff::1", true},
		{"2001:db8::/32", "2001:db9::", false},
		{"fd00::/8", "fdff:1::1", true},
		{"fd00::/8", "fe00::1", false},
		{"fe80::/10", "febf:ffff::1", true},
		{"fe80::/10", "fec0::1", false},
		{"2001:db8:0:1::/64", "2001:db8:0:1:ffff:ffff:ffff:ffff", true},
		{"2001:db8:0:1::/64", "2001:db8:0:2::", false},
		{"2001:db8::/127", "2001:db8::1", true},
		{"2001:db8::/127", "2001:db8::2", false},
		/* a mapped address is its IPv4 self */
		{"10.0.0.0/8", "::ffff:10.1.2.3", true},
		{"10.0.0.0/8", "::ffff:11.1.2.3", false},
		/* families never cross */
		{"::/0", "1.2.3.4", false},
		/* any entry of a list */
		{"192.168.0.0/16, 10.0.0.0/8, ::1", "10.9.9.9", true},
		{"192.168.0.0/16, 10.0.0.0/8, ::1", "::1", true},
		{"192.168.0.0/16, 10.0.0.0/8, ::1", "172.16.0.1", false},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct netaddr_list l = must_list(cases[i].list);
		struct netaddr a = must_parse(cases[i].addr);

		if (netaddr_list_contains(&l, &a) != cases[i].want)
			fail_msg("\"%s\" contains %s: want %s", cases[i].list, cases[i].addr,
			         cases[i].want ? "yes" : "no");
	}
}

/* ---- netaddr_client ---- */

#define TRUSTED "10.0.0.0/8, ::1, fd00::/8"

struct client_case {
	const char *peer;
	const char *xff;      /* NULL: no header */
	const char *trusted;
	const char *want;
};

static void test_client(void **state)
{
	static const struct client_case cases[] = {
		/* an untrusted peer cannot name anyone */
		{"203.0.113.5", "1.2.3.4", TRUSTED, "203.0.113.5"},
		{"203.0.113.5", "10.0.0.2", TRUSTED, "203.0.113.5"},
		{"203.0.113.5", "1.2.3.4", "", "203.0.113.5"},
		{"10.0.0.1", "1.2.3.4", "", "10.0.0.1"},
		{"2001:db8::99", "1.2.3.4", TRUSTED, "2001:db8::99"},
		/* no header, or an empty one: the peer */
		{"10.0.0.1", NULL, TRUSTED, "10.0.0.1"},
		{"10.0.0.1", "", TRUSTED, "10.0.0.1"},
		{"203.0.113.5", NULL, TRUSTED, "203.0.113.5"},
		/* a trusted proxy names the client */
		{"10.0.0.1", "1.2.3.4", TRUSTED, "1.2.3.4"},
		{"10.0.0.1", " 1.2.3.4 ", TRUSTED, "1.2.3.4"},
		/* the client may prepend anything: only the entry our proxy added counts */
		{"10.0.0.1", "spoof, 1.2.3.4", TRUSTED, "1.2.3.4"},
		{"10.0.0.1", "9.9.9.9, 1.2.3.4", TRUSTED, "1.2.3.4"},
		{"10.0.0.1", "10.0.0.7, 1.2.3.4", TRUSTED, "1.2.3.4"},
		{"10.0.0.1", "a,b,c,,, 1.2.3.4", TRUSTED, "1.2.3.4"},
		/* a chain of trusted proxies is walked from the right */
		{"10.0.0.1", "1.2.3.4, 10.0.0.2", TRUSTED, "1.2.3.4"},
		{"10.0.0.1", "1.2.3.4,10.0.0.2", TRUSTED, "1.2.3.4"},
		{"10.0.0.1", "spoof, 1.2.3.4, 10.0.0.3, 10.0.0.2", TRUSTED, "1.2.3.4"},
		{"10.0.0.1", "5.6.7.8, 1.2.3.4, 10.0.0.2", TRUSTED, "1.2.3.4"},
		/* every entry trusted: the leftmost is the best we know */
		{"10.0.0.1", "10.0.0.3, 10.0.0.2", TRUSTED, "10.0.0.3"},
		{"10.0.0.1", "10.0.0.2", TRUSTED, "10.0.0.2"},
		/* a malformed entry stops the walk at the last trusted hop */
		{"10.0.0.1", "1.2.3.4, junk", TRUSTED, "10.0.0.1"},
		{"10.0.0.1", "junk", TRUSTED, "10.0.0.1"},
		{"10.0.0.1", "1.2.3.4, ", TRUSTED, "10.0.0.1"},
		{"10.0.0.1", "1.2.3.4, 300.1.1.1", TRUSTED, "10.0.0.1"},
		{"10.0.0.1", "1.2.3.4, junk, 10.0.0.2", TRUSTED, "10.0.0.2"},
		/* IPv6 entries, bare and in brackets, with and without a port */
		{"::1", "2001:db8::1", TRUSTED, "2001:db8::1"},
		{"::1", "[2001:db8::1]", TRUSTED, "2001:db8::1"},
		{"::1", "[2001:db8::1]:4711", TRUSTED, "2001:db8::1"},
		{"10.0.0.1", "2001:db8::1", TRUSTED, "2001:db8::1"},
		{"::1", "1.2.3.4", TRUSTED, "1.2.3.4"},
		{"::1", "2001:db8::5, fd00::2", TRUSTED, "2001:db8::5"},
		{"::1", "2001:db8::5, [fd00::2]", TRUSTED, "2001:db8::5"},
		{"::1", "spoof, [2001:db8::5]:443, fd00::2", TRUSTED, "2001:db8::5"},
		{"::1", "2001:db8::5, [fd00::2", TRUSTED, "::1"},
		/* an IPv4 entry with a port */
		{"10.0.0.1", "1.2.3.4:5678", TRUSTED, "1.2.3.4"},
		/* an IPv4-mapped peer or entry is its IPv4 self */
		{"::ffff:10.0.0.1", "1.2.3.4", TRUSTED, "1.2.3.4"},
		{"10.0.0.1", "::ffff:1.2.3.4", TRUSTED, "1.2.3.4"},
		{"10.0.0.1", "1.2.3.4, ::ffff:10.0.0.2", TRUSTED, "1.2.3.4"},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		const struct client_case *c = &cases[i];
		struct netaddr_list l = must_list(c->trusted);
		struct netaddr peer = must_parse(c->peer);
		struct netaddr want = must_parse(c->want);
		struct netaddr got;
		char what[256];

		memset(&got, 0x5a, sizeof(got));
		netaddr_client(&peer, c->xff, &l, &got);
		snprintf(what, sizeof(what), "peer %s, X-Forwarded-For \"%s\", trusted \"%s\"",
		         c->peer, c->xff ? c->xff : "(none)", c->trusted);
		expect_addr(&got, &want, what);
	}
}

/* A header far longer than any buffer: walked without overflow. */
static void test_client_long_header(void **state)
{
	static char xff[64 * 1024];
	struct netaddr_list l = must_list(TRUSTED);
	struct netaddr peer = must_parse("10.0.0.1"), got, want;
	size_t n = 0;

	(void)state;
	while (n + 16 < sizeof(xff) - 64)
		n += (size_t)snprintf(xff + n, sizeof(xff) - n, "10.0.0.2, ");
	snprintf(xff + n, sizeof(xff) - n, "10.0.0.3");
	netaddr_client(&peer, xff, &l, &got);
	want = must_parse("10.0.0.2"); /* the leftmost entry, every one trusted */
	expect_addr(&got, &want, "long all-trusted header");

	memset(xff, 'x', sizeof(xff) - 1);
	xff[sizeof(xff) - 1] = '\0';
	netaddr_client(&peer, xff, &l, &got);
	expect_addr(&got, &peer, "one huge junk entry");
}

/* ---- netaddr_parse_listen ---- */

static void test_listen_accepts(void **state)
{
	static const struct {
		const char *in;
		int family;
		const char *host;
		unsigned port;
	} cases[] = {
		{"127.0.0.1:8000", AF_INET, "127.0.0.1", 8000},
		{"[::1]:8000", AF_INET6, "::1", 8000},
		{"0.0.0.0:0", AF_INET, "0.0.0.0", 0},
		{"localhost:80", AF_INET, "127.0.0.1", 80},
		{"0.0.0.0:65535", AF_INET, "0.0.0.0", 65535},
		{"[::]:443", AF_INET6, "::", 443},
		{"192.0.2.10:1", AF_INET, "192.0.2.10", 1},
		{"[2001:db8::1]:8080", AF_INET6, "2001:db8::1", 8080},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		struct sockaddr_storage ss;
		socklen_t len = 0;

		memset(&ss, 0x5a, sizeof(ss));
		if (!netaddr_parse_listen(cases[i].in, &ss, &len))
			fail_msg("netaddr_parse_listen(\"%s\") refused", cases[i].in);
		assert_int_equal(ss.ss_family, cases[i].family);
		if (cases[i].family == AF_INET) {
			const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
			struct in_addr want;

			assert_int_equal(len, sizeof(struct sockaddr_in));
			assert_int_equal(inet_pton(AF_INET, cases[i].host, &want), 1);
			assert_memory_equal(&in->sin_addr, &want, sizeof(want));
			assert_int_equal(ntohs(in->sin_port), cases[i].port);
		} else {
			const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
			struct in6_addr want;

			assert_int_equal(len, sizeof(struct sockaddr_in6));
			assert_int_equal(inet_pton(AF_INET6, cases[i].host, &want), 1);
			assert_memory_equal(&in6->sin6_addr, &want, sizeof(want));
			assert_int_equal(ntohs(in6->sin6_port), cases[i].port);
		}
	}
}

static void test_listen_refuses(void **state)
{
	static const char *const bad[] = {
		"nonsense", "1.2.3.4", "1.2.3.4:99999", "::1:80",
		"", ":", ":80", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:-1", "1.2.3.4:+80",
		"1.2.3.4:80x", "1.2.3.4: 80", "1.2.3.4:0x50", "1.2.3.4:80:80",
		"[::1]", "[::1]:", "[::1]8000", "[::1]:8000x", "[::1]:99999", "[]:80",
		"[1.2.3.4]:80", "[::1:80", "::1]:80", "::1", "2001:db8::1:8000",
		"example.com:80", "256.0.0.1:80", "1.2.3:80", " 127.0.0.1:8000",
		"127.0.0.1 :8000", "localhost", "localhost:", "[localhost]:80",
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		struct sockaddr_storage ss, before;
		socklen_t len = 12345;

		memset(&ss, 0x5a, sizeof(ss));
		before = ss;
		if (netaddr_parse_listen(bad[i], &ss, &len))
			fail_msg("netaddr_parse_listen(\"%s\") accepted", bad[i]);
		assert_memory_equal(&ss, &before, sizeof(ss));
		assert_int_equal(len, 12345);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_addresses),
		cmocka_unit_test(test_parse_refuses),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_from_sockaddr),
		cmocka_unit_test(test_list_entries),
		cmocka_unit_test(test_list_empty),
		cmocka_unit_test(test_list_refuses),
		cmocka_unit_test(test_list_too_many),
		cmocka_unit_test(test_list_contains),
		cmocka_unit_test(test_client),
		cmocka_unit_test(test_client_long_header),
		cmocka_unit_test(test_listen_accepts),
		cmocka_unit_test(test_listen_refuses),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
