/* The PostgreSQL dialect of the store (backend.h): not written yet. */
#include "backend.h"

const struct store_migrations store_postgres_migrations = {.sql = NULL, .count = 0};

enum otpd_status store_postgres_open(const char *url, const struct store_options *opt,
                                     char *err, size_t errlen, struct store **ret)
{
	(void)url, (void)opt, (void)err, (void)errlen, (void)ret;
	log_error("store.open", "PostgreSQL store not built yet");
	return OTPD_INTERNAL;
}
