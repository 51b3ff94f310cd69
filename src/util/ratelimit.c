#include "ratelimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 24
#define STRIPES 64
#define PROBE 8

struct slot {
	int64_t tat_ms;          /* theoretical arrival time; 0 = free */
	unsigned char len;
	unsigned char key[KEY_MAX];
};

struct ratelimit {
	int64_t interval_ms;     /* period / count */
	int64_t tolerance_ms;    /* period - interval: the burst */
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
	rl->interval_ms = rate.period_ms / rate.count;
	if (rl->interval_ms < 1)
		rl->interval_ms = 1;
	rl->tolerance_ms = rate.period_ms - rl->interval_ms;
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
		if (s->tat_ms != 0 && s->len == len && memcmp(s->key, key, len) == 0)
			return s;
		if (!victim || s->tat_ms < victim->tat_ms)
			victim = s;
	}
	/* Evicting a live entry forgives that key: bounded memory wins. */
	victim->tat_ms = 0;
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
	int64_t tat = s->tat_ms > now_ms ? s->tat_ms : now_ms;
	int64_t allow_at = tat - rl->tolerance_ms;
	if (allow_at > now_ms) {
		int64_t wait = allow_at - now_ms;
		*ret_retry_after_s = (int)((wait + 999) / 1000);
		ok = false;
	} else {
		s->tat_ms = tat + rl->interval_ms;
		ok = true;
	}
	pthread_mutex_unlock(lock);
	return ok;
}
