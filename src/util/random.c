#include "random.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <string.h>

#define POOL_BYTES 512

static _Thread_local unsigned char pool[POOL_BYTES];
static _Thread_local size_t pool_left; /* unread bytes at the end of pool */

bool util_random_id_bytes(void *buf, size_t n)
{
	unsigned char *p;

	if (n > POOL_BYTES / 4)
		return RAND_bytes(buf, (int)n) == 1;
	if (pool_left < n) {
		if (RAND_bytes(pool, POOL_BYTES) != 1) {
			OPENSSL_cleanse(pool, POOL_BYTES);
			pool_left = 0;
			return false;
		}
		pool_left = POOL_BYTES;
	}
	p = pool + POOL_BYTES - pool_left;
	memcpy(buf, p, n);
	OPENSSL_cleanse(p, n);
	pool_left -= n;
	return true;
}
