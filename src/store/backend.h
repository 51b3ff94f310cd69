/* Private to src/store/: what store.c needs from each backend, and what a
 * backend needs from its migrations file.  Nothing outside store/ includes
 * this; the rest of otpd sees only store.h. */
#ifndef OTPD_STORE_BACKEND_H
#define OTPD_STORE_BACKEND_H

#include <stddef.h>
#include "store.h"

/* store/sqlite.c: open (or create, mode 0600) the database file at `path`,
 * check its files' modes, apply the connection settings (WAL,
 * synchronous=FULL, foreign keys, busy timeout).  Does not migrate.
 * Failures as store_open(). */
enum otpd_status store_sqlite_open(const char *path, const struct store_options *opt,
                                   char *err, size_t errlen, struct store **ret);

/* store/migrations_sqlite.c: the schema, append-only.  Element i is version
 * i + 1; a released element is never edited, only new ones are added. */
extern const char *const store_sqlite_migrations[];
extern const size_t store_sqlite_migrations_count;

/* store/sqlite.c: the SQL of its i-th statement (every one it prepares)
 * and its name, or NULL past the last: the conformance suite reads their
 * query plans. */
const char *store_sqlite_statement(size_t i, const char **ret_name);

#endif
