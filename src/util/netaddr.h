/* Addresses, CIDR lists and the client address behind trusted proxies. */
#ifndef OTPD_UTIL_NETADDR_H
#define OTPD_UTIL_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <netinet/in.h>

#define NETADDR_MAX_CIDRS 64
#define NETADDR_STRLEN 46 /* INET6_ADDRSTRLEN */

struct netaddr {
	int family;               /* AF_INET or AF_INET6 */
	unsigned char bytes[16];  /* network order; 4 used for IPv4 */
};

struct netaddr_cidr {
	struct netaddr addr;
	int prefix;
};

struct netaddr_list {
	size_t n;
	struct netaddr_cidr items[NETADDR_MAX_CIDRS];
};

/* A literal IPv4 or IPv6 address (no port, no brackets).  IPv4-mapped IPv6
 * addresses (::ffff:a.b.c.d) become IPv4. */
bool netaddr_parse(const char *s, struct netaddr *ret);
bool netaddr_from_sockaddr(const struct sockaddr *sa, struct netaddr *ret);
void netaddr_format(const struct netaddr *a, char ret[NETADDR_STRLEN]);

/* "10.0.0.0/8, 127.0.0.1, ::1, fd00::/8" -> list.  Empty string -> empty
 * list.  false on any bad entry or more than NETADDR_MAX_CIDRS. */
bool netaddr_list_parse(const char *s, struct netaddr_list *ret);
bool netaddr_list_contains(const struct netaddr_list *l, const struct netaddr *a);

/* The client address: the peer, unless the peer is a trusted proxy and an
 * X-Forwarded-For header is present; then the rightmost entry of the header
 * that is not itself a trusted proxy (entries to its left are the client's
 * own word and are ignored).  A malformed entry at that point stops the walk
 * and the last trusted hop is used. */
void netaddr_client(const struct netaddr *peer, const char *xff,
                    const struct netaddr_list *trusted, struct netaddr *ret);

/* "127.0.0.1:8000", "[::1]:8000", "0.0.0.0:80" -> sockaddr.  Port 0..65535. */
bool netaddr_parse_listen(const char *s, struct sockaddr_storage *ret,
                          socklen_t *ret_len);

#endif
