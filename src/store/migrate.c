/* The migration runner, shared by every dialect (backend.h): each pending
 * version in a transaction of its own, recorded in schema_migrations in
 * that same transaction, so a version is applied exactly once even when
 * several processes (nodes) start at once: SQLite's BEGIN IMMEDIATE, or the
 * dialect's migrate_lock (PostgreSQL: an advisory lock), makes them take
 * turns, and whoever comes second finds the version recorded.  The engine
 * runs this on a writer, alone, outside any batch. */
#include "backend.h"

/* Apply version `version` unless it is recorded already. */
static enum otpd_status migrate_one(const struct store_dialect *d, struct store_conn *c,
                                    int version, const char *sql, bool *ret_applied)
{
	enum otpd_status status;
	bool found = false;

	status = d->begin(c);
	if (status != OTPD_OK)
		return status;
	if (d->migrate_lock)
		status = d->migrate_lock(c);
	if (status == OTPD_OK)
		status = d->migrations_table(c);
	if (status == OTPD_OK)
		status = d->migration_has(c, version, &found);
	if (status == OTPD_OK && !found)
		status = d->exec(c, version, sql);
	if (status == OTPD_OK && !found)
		status = d->migration_add(c, version);
	if (status == OTPD_OK)
		status = d->commit(c);
	if (status != OTPD_OK) {
		d->rollback(c);
		return status;
	}
	*ret_applied = !found;
	return OTPD_OK;
}

enum otpd_status store_migrate_run(const struct store_dialect *d, struct store_conn *c,
                                   int *ret_applied, int64_t *ret_version)
{
	const struct store_migrations *m = d->migrations;
	enum otpd_status status = OTPD_OK;
	int applied = 0;

	if (d->migrate_enter)
		d->migrate_enter(c);
	for (size_t i = 0; i < m->count && status == OTPD_OK; i++) {
		bool did = false;

		status = migrate_one(d, c, (int)i + 1, m->sql[i], &did);
		applied += did;
	}
	if (d->migrate_leave)
		d->migrate_leave(c);
	if (status != OTPD_OK)
		return status;
	*ret_applied = applied;
	status = d->schema_version(c, ret_version);
	if (status == OTPD_OK && *ret_version > (int64_t)m->count)
		log_warn("store.migrate", "database schema version %lld is newer than this otpd's %zu",
		         (long long)*ret_version, m->count);
	return status;
}
