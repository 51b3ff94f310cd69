/* util/random: identifiers' bytes from a per-thread buffer of CSPRNG output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util/random.h"

#define DRAWS 2000
#define LEN 10

static int cmp(const void *a, const void *b) { return memcmp(a, b, LEN); }

/* Draws that cross many refills of the buffer are all different, and the
 * bytes are spread (every value of a byte seen, none far too often). */
static void test_draws_differ(void **state)
{
	static unsigned char d[DRAWS][LEN];
	size_t count[256] = {0};

	(void)state;
	for (int i = 0; i < DRAWS; i++) {
		memset(d[i], 0, LEN);
		assert_true(util_random_id_bytes(d[i], i % 3 ? LEN : 7));
		if (i % 3 == 0) /* a 7-byte draw: the 3 bytes after it untouched */
			assert_memory_equal(d[i] + 7, "\0\0\0", 3);
	}
	for (int i = 0; i < DRAWS; i++)
		for (int k = 0; k < 7; k++)
			count[d[i][k]]++;
	for (int v = 0; v < 256; v++) {
		assert_true(count[v] > 0);
		assert_true(count[v] < 3 * DRAWS * 7 / 256);
	}
	qsort(d, DRAWS, LEN, cmp);
	for (int i = 1; i < DRAWS; i++)
		assert_true(memcmp(d[i - 1], d[i], LEN) != 0);
}

/* A draw larger than the buffer's share goes to RAND_bytes directly. */
static void test_large_draw(void **state)
{
	unsigned char a[300], b[300];

	(void)state;
	assert_true(util_random_id_bytes(a, sizeof(a)));
	assert_true(util_random_id_bytes(b, sizeof(b)));
	assert_true(memcmp(a, b, sizeof(a)) != 0);
	assert_true(util_random_id_bytes(a, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_draws_differ),
		cmocka_unit_test(test_large_draw),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
