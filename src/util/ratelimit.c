#include "ratelimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 24
#define STRIPES 64
#define PROBE 8

/* Times are kept in ticks of 1/count ms (now_ms * count), so the emission
 * interval period/count is exact: with whole milliseconds, 300/sec would
 * round 3.33 ms down to 3 ms and allow 333 per second.  count <= 1000000
 * (parse_rate) keeps epoch ms * count inside int64_t until the year 2262. */
struct slot {
	int64_t tat;             /* theoretical arrival time, ticks; 0 = free */
	unsigned char len;
	unsigned char key[KEY_MAX];
};

struct ratelimit {
	int64_t count;           /* ticks per ms */
	int64_t interval;        /* period / count, in ticks = period_ms */
	int64_t tolerance;       /* period - interval: the burst, in ticks */
	size_t nslots;
	struct slot *slots;
	pthread_mutex_t locks[STRIPES];
};

struct ratelimit *ratelimit_new(struct rate rate, size_t slots)
{
	struct ratelimit *rl = calloc(1, sizeof(*rl));

	if (!rl)
		return NULL;
	if (slots < STRIPES * PROBE)
		slots = STRIPES * PROBE;
	slots = (slots + STRIPES - 1) / STRIPES * STRIPES;
	rl->slots = calloc(slots, sizeof(*rl->slots));
	if (!rl->slots) {
		free(rl);
		return NULL;
	}
	rl->nslots = slots;
	rl->count = rate.count;
	rl->interval = rate.period_ms;
	rl->tolerance = rate.period_ms * (rate.count - 1);
	for (int i = 0; i < STRIPES; i++)
		pthread_mutex_init(&rl->locks[i], NULL);
	return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
	if (!rl)
		return;
	for (int i = 0; i < STRIPES; i++)
		pthread_mutex_destroy(&rl->locks[i]);
	free(rl->slots);
	free(rl);
}

/* FNV-1a: keys are client addresses, not attacker-chosen at scale; the
 * table is bounded either way. */
static uint64_t hash(const unsigned char *k, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= k[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* Find the key's slot within its stripe's probe window, or the best one to
 * take over: a free or expired slot, else the one closest to expiry. */
static struct slot *find(struct ratelimit *rl, size_t base, const void *key,
                         size_t len)
{
	struct slot *victim = NULL;

	for (size_t i = 0; i < PROBE; i++) {
		struct slot *s = &rl->slots[(base + i * STRIPES) % rl->nslots];
		if (s->tat != 0 && s->len == len && memcmp(s->key, key, len) == 0)
			return s;
		if (!victim || s->tat < victim->tat)
			victim = s;
	}
	/* Evicting a live entry forgives that key: bounded memory wins. */
	victim->tat = 0;
	victim->len = (unsigned char)len;
	memcpy(victim->key, key, len);
	return victim;
}

bool ratelimit_hit(struct ratelimit *rl, const void *key, size_t len,
                   int64_t now_ms, int *ret_retry_after_s)
{
	uint64_t h;
	size_t base;
	pthread_mutex_t *lock;
	struct slot *s;
	bool ok;

	if (len > KEY_MAX)
		len = KEY_MAX;
	h = hash(key, len);
	base = (size_t)(h % rl->nslots);
	lock = &rl->locks[base % STRIPES];

	pthread_mutex_lock(lock);
	s = find(rl, base, key, len);
	int64_t now = now_ms * rl->count;
	int64_t tat = s->tat > now ? s->tat : now;
	int64_t allow_at = tat - rl->tolerance;
	if (allow_at > now) {
		int64_t wait = allow_at - now, tps = rl->count * 1000;
		*ret_retry_after_s = (int)((wait + tps - 1) / tps);
		ok = false;
	} else {
		s->tat = tat + rl->interval;
		ok = true;
	}
	pthread_mutex_unlock(lock);
	return ok;
}
