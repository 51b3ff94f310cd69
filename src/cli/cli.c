/* The operator's command line (cli.h, docs/API.md §7).
 *
 * Each command: parse its arguments (a bad one: usage on stderr, exit 2),
 * load the configuration (a bad variable: its one line, exit 1), open the
 * store on DATABASE_URL (pending migrations applied first, as serve does,
 * unless OTPD_AUTO_MIGRATE=false), run, print text or --json on stdout.
 * The log goes to stderr as text at level warn unless OTPD_LOG_LEVEL says
 * otherwise: a command prints its answer, not the store's progress.  A
 * database failure is logged once where the store translates it; the
 * command then says which step failed, in one line. */
#include "cli.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "../auth/jwt.h"
#include "../config.h"
#include "../log.h"
#include "../otp/code.h"
#include "../otp/phone.h"
#include "../sms/sms.h"
#include "../store/store.h"
#include "../util/parse.h"

#define EXIT_USAGE 2
#define LIST_DEFAULT 50
#define LIST_MAX 200          /* docs/API.md §6: limit 1..200 */
#define SHOW_CODES 10         /* user show: its most recent codes */
#define SHOW_SESSIONS 200     /* user show: refresh records read */
#define PURGE_BATCH 1000      /* rows per transaction */
#define PURGE_COUNT_MAX 100000000 /* purge --dry-run counts at most this many of each */
#define CLI_ACTOR "cli"

/* ---- arguments ---- */

struct args {
	const char *cmd;     /* "user", "codes", ... */
	const char *sub;     /* user's subcommand */
	const char *pos[2];  /* positional arguments */
	int npos;
	bool json, help, dry_run;
	long limit;          /* 0: the default */
	const char *cursor;
};

static void usage_user(FILE *out)
{
	fprintf(out,
	        "usage: otpd user list [QUERY] [--limit N] [--cursor C] [--json]\n"
	        "       otpd user show PHONE [--json]\n"
	        "       otpd user set-staff|unset-staff|activate|deactivate PHONE [--json]\n"
	        "\n"
	        "list         users, newest first; QUERY: a phone number (that number's user) or a\n"
	        "             username prefix (in username order); --limit 1..%d (default %d);\n"
	        "             --cursor: the next_cursor of the page before\n"
	        "show         the user of a number, its %d most recent codes and live sessions\n"
	        "set-staff    make the number's user staff; a number that never logged in gets\n"
	        "             its user now\n"
	        "unset-staff  drop its staff status\n"
	        "activate     let it log in again\n"
	        "deactivate   refuse its logins and end every session it has\n"
	        "\n"
	        "PHONE in any accepted form (+989..., 00989..., 09..., Persian or Arabic digits).\n"
	        "Every change is written to the audit log (actor \"cli\").  Exit status: 0 done,\n"
	        "1 error (no such user, database unavailable, bad configuration), 2 bad usage.\n",
	        LIST_MAX, LIST_DEFAULT, SHOW_CODES);
}

static void usage_codes(FILE *out)
{
	fprintf(out,
	        "usage: otpd codes PHONE [--limit N] [--cursor C] [--json]\n"
	        "\n"
	        "The codes issued to a number, newest first: when, until when, attempts, status\n"
	        "(valid, used, expired, exhausted, replaced, cancelled) and the SMS delivery.\n"
	        "Never the code nor its hash.  --limit 1..%d (default %d); --cursor: the\n"
	        "next_cursor of the page before.  Exit status 0, 1 on an error, 2 bad usage.\n",
	        LIST_MAX, LIST_DEFAULT);
}

static void usage_purge(FILE *out)
{
	fprintf(out,
	        "usage: otpd purge [--dry-run] [--json]\n"
	        "\n"
	        "Delete what is kept no longer: codes (the send records) and dashboard counters\n"
	        "older than OTPD_CODE_RETENTION (never newer than a code can verify or count in\n"
	        "the send window), and refresh-token records that have expired.  In batches of\n"
	        "%d rows (one transaction each), while serve runs too; progress on a terminal.\n"
	        "--dry-run: count what would be deleted, delete nothing.  The purge is written\n"
	        "to the audit log.  Exit status 0, 1 on an error, 2 bad usage.\n",
	        PURGE_BATCH);
}

static void usage_check(FILE *out)
{
	fprintf(out,
	        "usage: otpd check-config [--json]\n"
	        "\n"
	        "Validate the environment, print the effective configuration (SECRET_KEY, API\n"
	        "keys, tokens and the database password redacted), check that the database\n"
	        "answers and, with SMS_BACKEND=kavenegar, that the key works (account/info, the\n"
	        "remaining credit).  Changes nothing.  Exit status 0 when all is well, 1 when a\n"
	        "check fails (one line says which), 2 bad usage.\n\n");
	config_print_help(out);
}

bool cli_is_command(const char *cmd)
{
	return strcmp(cmd, "user") == 0 || strcmp(cmd, "codes") == 0 ||
	       strcmp(cmd, "purge") == 0 || strcmp(cmd, "check-config") == 0;
}

void cli_print_commands(FILE *out)
{
	fprintf(out,
	        "  user         list|show|set-staff|unset-staff|activate|deactivate: users, staff\n"
	        "  codes PHONE  the codes issued to a number (never the codes themselves)\n"
	        "  purge        delete expired codes, old send records and dead sessions\n"
	        "  check-config validate the environment, the database and the SMS provider key\n");
}

static void usage_of(const char *cmd, FILE *out)
{
	if (strcmp(cmd, "user") == 0)
		usage_user(out);
	else if (strcmp(cmd, "codes") == 0)
		usage_codes(out);
	else if (strcmp(cmd, "purge") == 0)
		usage_purge(out);
	else
		usage_check(out);
}

static int bad_usage(const struct args *a, const char *what, const char *arg)
{
	fprintf(stderr, "otpd %s: %s%s%s%s\n", a->cmd, what, arg ? " '" : "", arg ? arg : "",
	        arg ? "'" : "");
	fprintf(stderr, "see 'otpd %s --help'\n", a->cmd);
	return EXIT_USAGE;
}

/* argv[1] is the command; for user, argv[2] its subcommand.  Returns 0, or
 * the exit status of a usage error (already reported). */
static int parse_args(int argc, char **argv, struct args *a)
{
	static const char *const subs[] = {"list", "show", "set-staff", "unset-staff",
	                                   "activate", "deactivate", NULL};
	int i = 2;

	memset(a, 0, sizeof(*a));
	a->cmd = argv[1];
	for (; i < argc; i++) {
		const char *s = argv[i];
		const char *val = NULL;

		if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) {
			a->help = true;
		} else if (strcmp(s, "--json") == 0) {
			a->json = true;
		} else if (strcmp(s, "--dry-run") == 0 && strcmp(a->cmd, "purge") == 0) {
			a->dry_run = true;
		} else if ((strcmp(s, "--limit") == 0 || strcmp(s, "--cursor") == 0 ||
		            !strncmp(s, "--limit=", 8) || !strncmp(s, "--cursor=", 9)) &&
		           (strcmp(a->cmd, "codes") == 0 ||
		            (strcmp(a->cmd, "user") == 0 && a->sub && strcmp(a->sub, "list") == 0))) {
			bool limit = !strncmp(s, "--limit", 7);
			const char *eq = strchr(s, '=');
			int64_t n = 0;

			if (eq) {
				val = eq + 1;
			} else if (i + 1 < argc) {
				val = argv[++i];
			} else {
				return bad_usage(a, "missing value for", s);
			}
			if (limit) {
				if (!parse_int64(val, 1, LIST_MAX, &n))
					return bad_usage(a, "--limit: expected an integer 1..200, got", val);
				a->limit = (long)n;
			} else {
				if (!val[0] || strlen(val) > STORE_USERNAME_MAX)
					return bad_usage(a, "--cursor: expected the next_cursor of a page, got",
					                 val);
				a->cursor = val;
			}
		} else if (s[0] == '-' && s[1] != '\0' && !(s[1] >= '0' && s[1] <= '9')) {
			return bad_usage(a, "unknown option", s);
		} else if (strcmp(a->cmd, "user") == 0 && !a->sub) {
			for (size_t k = 0; subs[k]; k++)
				if (strcmp(s, subs[k]) == 0)
					a->sub = subs[k];
			if (!a->sub)
				return bad_usage(a, "unknown subcommand", s);
		} else if (a->npos < 2) {
			a->pos[a->npos++] = s;
		} else {
			return bad_usage(a, "too many arguments", NULL);
		}
	}
	if (a->help)
		return 0;
	if (strcmp(a->cmd, "user") == 0) {
		if (!a->sub)
			return bad_usage(a, "expected a subcommand: list, show, set-staff, unset-staff, "
			                    "activate or deactivate", NULL);
		if (strcmp(a->sub, "list") == 0 ? a->npos > 1 : a->npos != 1)
			return bad_usage(a, strcmp(a->sub, "list") == 0 ? "too many arguments"
			                                                : "expected one phone number", NULL);
	} else if (strcmp(a->cmd, "codes") == 0) {
		if (a->npos != 1)
			return bad_usage(a, "expected one phone number", NULL);
	} else if (a->npos != 0) {
		return bad_usage(a, "unexpected argument", a->pos[0]);
	}
	return 0;
}

/* ---- output ---- */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* RFC 3339, UTC, to the second. */
static void rfc3339(int64_t ms, char ret[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(ret, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(ret, 32, "?");
}

static json_t *json_time(int64_t ms)
{
	char buf[32];

	if (ms < 0)
		return json_null();
	rfc3339(ms, buf);
	return json_string(buf);
}

static json_t *user_json(const struct store_user *u)
{
	return json_pack("{s:I, s:s, s:s, s:s, s:o, s:o, s:b, s:b, s:o, s:o}",
	                 "id", (json_int_t)u->id, "phone_number", u->phone_number,
	                 "email", u->email, "username", u->username,
	                 "first_name", u->has_first_name ? json_string(u->first_name) : json_null(),
	                 "last_name", u->has_last_name ? json_string(u->last_name) : json_null(),
	                 "is_active", u->is_active, "is_staff", u->is_staff,
	                 "date_joined", json_time(u->created_ms),
	                 "last_login", json_time(u->last_login_ms));
}

/* The provider's delivery states (store.h, STORE_SMS_STATUS_FINAL). */
static const char *delivery_name(int status)
{
	switch (status) {
	case -1:
		return "accepted";
	case 10:
		return "delivered";
	case 6:
	case 11:
	case 13:
	case 14:
		return "failed";
	case 100:
		return "unknown";
	default:
		return status >= STORE_SMS_STATUS_FINAL ? "failed" : "in_progress";
	}
}

static json_t *code_json(const struct store_code_row *r, int64_t now)
{
	json_t *sms = json_null();

	if (r->sms_message_id)
		sms = json_pack("{s:I, s:s, s:o, s:o}", "message_id", (json_int_t)r->sms_message_id,
		                "state", delivery_name(r->sms_status),
		                "provider_status", r->sms_status >= 0 ? json_integer(r->sms_status)
		                                                      : json_null(),
		                "updated_at", json_time(r->sms_status_ms));
	return json_pack("{s:I, s:s, s:o, s:o, s:o, s:i, s:i, s:s, s:o}",
	                 "id", (json_int_t)r->id, "phone_number", r->phone,
	                 "created_at", json_time(r->created_ms),
	                 "expires_at", json_time(r->expires_ms),
	                 "used_at", json_time(r->state == OTP_CODE_USED ? r->ended_ms : -1),
	                 "attempts", r->attempts, "max_attempts", r->max_attempts,
	                 "status", store_code_status(r, now), "sms", sms);
}

/* Print a JSON document on stdout (steals root). */
static int print_json(json_t *root)
{
	char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_ENSURE_ASCII) : NULL;

	json_decref(root);
	if (!text) {
		fprintf(stderr, "otpd: out of memory\n");
		return EXIT_FAILURE;
	}
	printf("%s\n", text);
	free(text);
	return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static void print_user_text(const struct store_user *u)
{
	char joined[32], last[32];

	rfc3339(u->created_ms, joined);
	if (u->last_login_ms >= 0)
		rfc3339(u->last_login_ms, last);
	else
		snprintf(last, sizeof(last), "never");
	printf("%-8lld %-14s %-16s %-8s %-5s %-20s %s\n", (long long)u->id, u->phone_number,
	       u->username, u->is_active ? "active" : "inactive", u->is_staff ? "staff" : "-",
	       joined, last);
}

static void print_user_header(void)
{
	printf("%-8s %-14s %-16s %-8s %-5s %-20s %s\n", "ID", "PHONE", "USERNAME", "STATE",
	       "STAFF", "JOINED", "LAST LOGIN");
}

static void print_code_header(void)
{
	printf("%-10s %-14s %-20s %-20s %-9s %-8s %s\n", "ID", "PHONE", "CREATED", "EXPIRES",
	       "STATUS", "ATTEMPTS", "SMS");
}

static void print_code_text(const struct store_code_row *r, int64_t now)
{
	char created[32], expires[32], attempts[24], sms[48];

	rfc3339(r->created_ms, created);
	rfc3339(r->expires_ms, expires);
	snprintf(attempts, sizeof(attempts), "%d/%d", r->attempts, r->max_attempts);
	if (r->sms_message_id)
		snprintf(sms, sizeof(sms), "%s (id %lld)", delivery_name(r->sms_status),
		         (long long)r->sms_message_id);
	else
		snprintf(sms, sizeof(sms), "-");
	printf("%-10lld %-14s %-20s %-20s %-9s %-8s %s\n", (long long)r->id, r->phone, created,
	       expires, store_code_status(r, now), attempts, sms);
}

/* ---- configuration and the store ---- */

struct ctx {
	struct config cfg;
	struct store *store;
};

static int load(struct ctx *x)
{
	char err[512];

	if (!config_load(&x->cfg, err, sizeof(err))) {
		fprintf(stderr, "otpd: %s\n", err);
		return -1;
	}
	/* The answer, not the progress: warn unless OTPD_LOG_LEVEL is set. */
	log_set_level(getenv("OTPD_LOG_LEVEL") && getenv("OTPD_LOG_LEVEL")[0]
	                      ? (enum log_level)x->cfg.log_level : LOG_LEVEL_WARN);
	log_set_format(x->cfg.log_format == CONFIG_LOG_FORMAT_JSON ? LOG_FORMAT_JSON
	                                                             : LOG_FORMAT_TEXT);
	return 0;
}

static int open_db(struct ctx *x, bool migrate)
{
	struct store_options opt = {
		.busy_timeout_ms = (int)x->cfg.db_busy_timeout_ms,
		.allow_shared_file = x->cfg.allow_shared_db_file,
		.pool_size = 1, /* one command, one connection */
		.statement_timeout_ms = (int)x->cfg.db_statement_timeout_ms,
		.connect_timeout_ms = (int)x->cfg.db_connect_timeout_ms,
	};
	char err[1400];
	int applied = 0;

	if (store_open(x->cfg.database_url, &opt, err, sizeof(err), &x->store) != OTPD_OK) {
		fprintf(stderr, "otpd: %s\n", err[0] ? err : "cannot open the database (DATABASE_URL)");
		return -1;
	}
	if (migrate && x->cfg.auto_migrate && store_migrate(x->store, &applied) != OTPD_OK) {
		fprintf(stderr, "otpd: cannot apply the database migrations\n");
		return -1;
	}
	return 0;
}

static void ctx_release(struct ctx *x)
{
	store_close(x->store);
	x->store = NULL;
	otp_wipe(&x->cfg, sizeof(x->cfg));
}

static const char *status_text(enum otpd_status st)
{
	switch (st) {
	case OTPD_UNAVAILABLE:
		return "the database is unavailable";
	case OTPD_NOMEM:
		return "out of memory";
	default:
		return "the database failed";
	}
}

static int db_failed(const struct args *a, enum otpd_status st)
{
	fprintf(stderr, "otpd: %s%s%s: %s\n", a->cmd, a->sub ? " " : "", a->sub ? a->sub : "",
	        status_text(st));
	return EXIT_FAILURE;
}

/* A phone number in any accepted form, normalised; else one line. */
static bool phone_arg(const struct args *a, const char *in, char ret[OTP_PHONE_LEN + 1])
{
	if (otp_phone_normalize(in, strlen(in), ret) == OTPD_OK)
		return true;
	fprintf(stderr, "otpd: %s%s%s: not an Iranian mobile number (expected +989XXXXXXXXX, "
	        "09XXXXXXXXX or another accepted form)\n",
	        a->cmd, a->sub ? " " : "", a->sub ? a->sub : "");
	return false;
}

static struct store_audit_entry cli_audit(const char *action, const char *target)
{
	struct store_audit_entry e;

	otp_wipe(&e, sizeof(e));
	e.time_ms = now_ms();
	snprintf(e.actor, sizeof(e.actor), "%s", CLI_ACTOR);
	snprintf(e.action, sizeof(e.action), "%s", action);
	snprintf(e.target, sizeof(e.target), "%s", target);
	e.has_client = false;
	return e;
}

/* ---- user ---- */

static int user_list(struct ctx *x, const struct args *a)
{
	struct store_users_query q = {0};
	struct store_user *rows = NULL;
	char phone[OTP_PHONE_LEN + 1];
	size_t cap = a->limit ? (size_t)a->limit : LIST_DEFAULT, n = 0;
	const char *query = a->npos ? a->pos[0] : NULL;
	bool by_prefix = false;
	enum otpd_status st;
	int rc = EXIT_FAILURE;

	if (query && otp_phone_normalize(query, strlen(query), phone) == OTPD_OK) {
		q.phone = phone;
	} else if (query) {
		q.username_prefix = query;
		by_prefix = true;
	}
	if (a->cursor) {
		int64_t id = 0;

		if (by_prefix) {
			q.after_username = a->cursor;
		} else if (parse_int64(a->cursor, 1, INT64_MAX, &id)) {
			q.before_id = id;
		} else {
			return bad_usage(a, "--cursor: expected the next_cursor of a page, got",
			                 a->cursor);
		}
	}
	if (open_db(x, true) < 0)
		return EXIT_FAILURE;
	rows = calloc(cap, sizeof(*rows));
	if (!rows) {
		fprintf(stderr, "otpd: out of memory\n");
		return EXIT_FAILURE;
	}
	st = store_users_list(x->store, &q, rows, cap, &n);
	if (st != OTPD_OK) {
		rc = db_failed(a, st);
		goto out;
	}
	if (a->json) {
		json_t *items = json_array(), *next = json_null();

		for (size_t i = 0; i < n; i++)
			json_array_append_new(items, user_json(&rows[i]));
		if (n == cap && !q.phone)
			next = by_prefix ? json_string(rows[n - 1].username)
			                 : json_sprintf("%lld", (long long)rows[n - 1].id);
		rc = print_json(json_pack("{s:o, s:o}", "items", items, "next_cursor", next));
	} else {
		print_user_header();
		for (size_t i = 0; i < n; i++)
			print_user_text(&rows[i]);
		if (n == cap && !q.phone && by_prefix)
			printf("(more: --cursor %s)\n", rows[n - 1].username);
		else if (n == cap && !q.phone)
			printf("(more: --cursor %lld)\n", (long long)rows[n - 1].id);
		rc = EXIT_SUCCESS;
	}
out:
	free(rows);
	return rc;
}

/* The live refresh families of the user's records: created (the login),
 * last used (the newest record: a rotation makes one), expires (the live
 * record's). */
static json_t *sessions_json(const struct store_session_info *r, size_t n, int64_t now)
{
	json_t *out = json_array();

	for (size_t i = 0; i < n; i++) {
		int64_t created = r[i].created_ms, used = r[i].created_ms;

		if (r[i].state != 0 || r[i].expires_ms <= now)
			continue;
		for (size_t k = 0; k < n; k++) {
			if (strcmp(r[k].family, r[i].family) != 0)
				continue;
			if (r[k].created_ms < created)
				created = r[k].created_ms;
			if (r[k].created_ms > used)
				used = r[k].created_ms;
		}
		json_array_append_new(out, json_pack("{s:o, s:o, s:o}", "created_at",
		                                     json_time(created), "last_used_at",
		                                     json_time(used), "expires_at",
		                                     json_time(r[i].expires_ms)));
	}
	return out;
}

static int user_show(struct ctx *x, const struct args *a)
{
	char phone[OTP_PHONE_LEN + 1];
	struct store_user u;
	struct store_codes_query q = {0};
	struct store_code_row codes[SHOW_CODES];
	struct store_session_info *sess = NULL;
	size_t nc = 0, ns = 0;
	int64_t now = now_ms();
	enum otpd_status st;
	int rc = EXIT_FAILURE;

	if (!phone_arg(a, a->pos[0], phone))
		return EXIT_FAILURE;
	if (open_db(x, true) < 0)
		return EXIT_FAILURE;
	st = store_user_get_by_phone(x->store, phone, &u);
	if (st == OTPD_NOT_FOUND) {
		fprintf(stderr, "otpd: user show: no user has this number\n");
		return EXIT_FAILURE;
	}
	if (st != OTPD_OK)
		return db_failed(a, st);
	q.phone = phone;
	sess = calloc(SHOW_SESSIONS, sizeof(*sess));
	if (!sess) {
		fprintf(stderr, "otpd: out of memory\n");
		return EXIT_FAILURE;
	}
	st = store_codes_list(x->store, &q, codes, SHOW_CODES, &nc);
	if (st == OTPD_OK)
		st = store_user_sessions(x->store, u.id, sess, SHOW_SESSIONS, &ns);
	if (st != OTPD_OK) {
		rc = db_failed(a, st);
		goto out;
	}
	if (a->json) {
		json_t *user = user_json(&u), *recent = json_array();

		for (size_t i = 0; i < nc; i++)
			json_array_append_new(recent, code_json(&codes[i], now));
		json_object_set_new(user, "recent_codes", recent);
		json_object_set_new(user, "sessions", sessions_json(sess, ns, now));
		rc = print_json(user);
	} else {
		json_t *live = sessions_json(sess, ns, now);

		print_user_header();
		print_user_text(&u);
		printf("\nlive sessions: %zu\n\nrecent codes:\n", json_array_size(live));
		json_decref(live);
		print_code_header();
		for (size_t i = 0; i < nc; i++)
			print_code_text(&codes[i], now);
		rc = EXIT_SUCCESS;
	}
out:
	free(sess);
	return rc;
}

static int user_change(struct ctx *x, const struct args *a)
{
	struct store_user_change c = {0};
	struct store_audit_entry e;
	struct store_user u;
	char phone[OTP_PHONE_LEN + 1];
	const char *action;
	bool create = false, created = false;
	enum otpd_status st;

	if (strcmp(a->sub, "set-staff") == 0) {
		c.set_staff = c.is_staff = true;
		create = true; /* docs/API.md §7 */
		action = "user.set_staff";
	} else if (strcmp(a->sub, "unset-staff") == 0) {
		c.set_staff = true;
		action = "user.unset_staff";
	} else if (strcmp(a->sub, "activate") == 0) {
		c.set_active = c.is_active = true;
		action = "user.activate";
	} else {
		c.set_active = true;
		action = "user.deactivate";
	}
	if (!phone_arg(a, a->pos[0], phone))
		return EXIT_FAILURE;
	if (open_db(x, true) < 0)
		return EXIT_FAILURE;
	e = cli_audit(action, ""); /* the store names the user: "user:<id>" */
	st = store_user_update_by_phone(x->store, phone, &c, create, x->cfg.email_domain, &e,
	                                e.time_ms, &u, &created);
	if (st == OTPD_NOT_FOUND) {
		fprintf(stderr, "otpd: user %s: no user has this number (it has never logged in)\n",
		        a->sub);
		return EXIT_FAILURE;
	}
	if (st != OTPD_OK)
		return db_failed(a, st);
	if (a->json) {
		json_t *user = user_json(&u);

		json_object_set_new(user, "created", json_boolean(created));
		return print_json(user);
	}
	printf("user %lld (%s)%s: %s, %s\n", (long long)u.id, u.phone_number,
	       created ? " created" : "", u.is_active ? "active" : "inactive",
	       u.is_staff ? "staff" : "not staff");
	return EXIT_SUCCESS;
}

/* ---- codes ---- */

static int codes_cmd(struct ctx *x, const struct args *a)
{
	struct store_codes_query q = {0};
	struct store_code_row *rows = NULL;
	char phone[OTP_PHONE_LEN + 1];
	size_t cap = a->limit ? (size_t)a->limit : LIST_DEFAULT, n = 0;
	int64_t now = now_ms();
	enum otpd_status st;
	int rc = EXIT_FAILURE;

	if (a->cursor && !parse_int64(a->cursor, 1, INT64_MAX, &q.before_id))
		return bad_usage(a, "--cursor: expected the next_cursor of a page, got", a->cursor);
	if (!phone_arg(a, a->pos[0], phone))
		return EXIT_FAILURE;
	q.phone = phone;
	if (open_db(x, true) < 0)
		return EXIT_FAILURE;
	rows = calloc(cap, sizeof(*rows));
	if (!rows) {
		fprintf(stderr, "otpd: out of memory\n");
		return EXIT_FAILURE;
	}
	st = store_codes_list(x->store, &q, rows, cap, &n);
	if (st != OTPD_OK) {
		rc = db_failed(a, st);
		goto out;
	}
	if (a->json) {
		json_t *items = json_array();

		for (size_t i = 0; i < n; i++)
			json_array_append_new(items, code_json(&rows[i], now));
		rc = print_json(json_pack("{s:o, s:o}", "items", items, "next_cursor",
		                          n == cap ? json_sprintf("%lld", (long long)rows[n - 1].id)
		                                   : json_null()));
	} else {
		print_code_header();
		for (size_t i = 0; i < n; i++)
			print_code_text(&rows[i], now);
		if (n == cap)
			printf("(more: --cursor %lld)\n", (long long)rows[n - 1].id);
		rc = EXIT_SUCCESS;
	}
out:
	free(rows);
	return rc;
}

/* ---- purge ---- */

static void progress(bool tty, long long history, long long sessions, bool done)
{
	if (!tty)
		return;
	fprintf(stderr, "\rpurging: %lld codes and counters, %lld sessions%s", history, sessions,
	        done ? "\n" : "");
	fflush(stderr);
}

static int purge_cmd(struct ctx *x, const struct args *a)
{
	int64_t now = now_ms(), keep_ms;
	long long history = 0, sessions = 0;
	bool tty = isatty(2) && !a->json;
	enum otpd_status st = OTPD_OK;
	int deleted = 0;

	if (open_db(x, true) < 0)
		return EXIT_FAILURE;
	/* As the janitor (auth/session.c): never newer than a code can verify
	 * or count in the send window. */
	keep_ms = x->cfg.code_retention_s * 1000;
	if (keep_ms < x->cfg.otp_expiry_s * 1000)
		keep_ms = x->cfg.otp_expiry_s * 1000;
	if (keep_ms < x->cfg.otp_send_window_s * 1000)
		keep_ms = x->cfg.otp_send_window_s * 1000;
	if (a->dry_run) {
		struct store_purge_counts pc;

		st = store_purge_count(x->store, now - keep_ms, now, PURGE_COUNT_MAX, &pc);
		if (st != OTPD_OK)
			return db_failed(a, st);
		if (a->json)
			return print_json(json_pack("{s:b, s:I, s:I, s:I, s:I}", "dry_run", 1,
			                            "codes_and_stats", (json_int_t)(pc.codes + pc.stats),
			                            "codes", (json_int_t)pc.codes,
			                            "stats_buckets", (json_int_t)pc.stats,
			                            "sessions", (json_int_t)pc.sessions));
		printf("would delete %lld codes, %lld dashboard counter rows and %lld expired "
		       "refresh records (older than %lld s)\n", (long long)pc.codes,
		       (long long)pc.stats, (long long)pc.sessions, (long long)(keep_ms / 1000));
		return EXIT_SUCCESS;
	}
	/* Bounded batches: a batch reads the oldest rows only; go on while one
	 * deletes any (history) or a whole batch (sessions). */
	do {
		st = store_session_purge(x->store, now, PURGE_BATCH, &deleted);
		if (st == OTPD_OK)
			sessions += deleted;
		progress(tty, history, sessions, false);
	} while (st == OTPD_OK && deleted == PURGE_BATCH);
	while (st == OTPD_OK) {
		st = store_history_purge(x->store, now - keep_ms, PURGE_BATCH, &deleted);
		if (st != OTPD_OK || deleted == 0)
			break;
		history += deleted;
		progress(tty, history, sessions, false);
	}
	progress(tty, history, sessions, true);
	if (st == OTPD_OK) {
		char target[STORE_AUDIT_TARGET_MAX + 1];
		struct store_audit_entry e;

		snprintf(target, sizeof(target), "codes_and_stats=%lld sessions=%lld", history,
		         sessions);
		e = cli_audit("purge", target);
		st = store_audit_append(x->store, &e);
	}
	if (st != OTPD_OK)
		return db_failed(a, st);
	if (a->json)
		return print_json(json_pack("{s:b, s:I, s:I}", "dry_run", 0, "codes_and_stats",
		                            (json_int_t)history, "sessions", (json_int_t)sessions));
	printf("deleted %lld codes and dashboard counter rows, %lld expired refresh records\n",
	       history, sessions);
	return EXIT_SUCCESS;
}

/* ---- check-config ---- */

struct config_out {
	json_t *obj;
	bool json;
};

static void config_line(void *arg, const char *name, const char *value)
{
	struct config_out *o = arg;

	if (o->json)
		json_object_set_new(o->obj, name, json_string(value));
	else
		printf("%-30s %s\n", name, value);
}

static int check_config(struct ctx *x, const struct args *a)
{
	struct config_out o = {.json = a->json};
	struct auth_jwt *probe = NULL;
	const char *db_kind = strncmp(x->cfg.database_url, "sqlite", 6) == 0 ? "sqlite"
	                                                                      : "postgres";
	enum otpd_status st;
	char why[512] = "";
	double credit = 0;
	bool db_ok, db_opened, sms_ok = true, key_ok = true;
	json_t *sms = NULL;

	if (x->cfg.jwt_alg == CONFIG_JWT_ES256 &&
	    auth_jwt_new_es256(x->cfg.jwt_private_key_file, x->cfg.jwt_previous_public_key_file,
	                       why, sizeof(why), &probe) != OTPD_OK) {
		key_ok = false;
	}
	auth_jwt_free(probe);
	if (!key_ok) {
		fprintf(stderr, "otpd: %s\n", why);
		return EXIT_FAILURE;
	}
	o.obj = json_object();
	if (!a->json)
		printf("configuration (from the environment; secrets redacted):\n");
	config_each(&x->cfg, config_line, &o);

	db_opened = open_db(x, false) == 0; /* a failure is said there */
	db_ok = db_opened && store_ping(x->store) == OTPD_OK;
	if (x->cfg.sms_backend == SMS_KAVENEGAR) {
		struct sms_config sc = {
			.backend = SMS_KAVENEGAR,
			.api_url = x->cfg.kavenegar_api_url,
			.api_key = x->cfg.kavenegar_api_key,
			.sender = x->cfg.kavenegar_sender,
			.template_name = x->cfg.kavenegar_template[0] ? x->cfg.kavenegar_template : NULL,
			.message = x->cfg.otp_message,
			.connect_timeout_ms = (long)x->cfg.kavenegar_connect_timeout_ms,
			.timeout_ms = (long)x->cfg.kavenegar_timeout_ms,
			.max_queue = 1,
		};

		st = sms_account_check(&sc, &credit, why, sizeof(why));
		sms_ok = st == OTPD_OK;
		sms = json_pack("{s:s, s:b, s:o, s:o}", "backend", "kavenegar", "ok", sms_ok,
		                "credit", sms_ok ? json_real(credit) : json_null(),
		                "error", sms_ok ? json_null() : json_string(why));
	} else {
		sms = json_pack("{s:s, s:b}", "backend", "console", "ok", 1);
	}
	if (a->json) {
		print_json(json_pack("{s:o, s:{s:s, s:b}, s:o, s:b}", "config", o.obj, "database",
		                     "backend", db_kind, "ok", db_ok, "sms", sms, "ok",
		                     db_ok && sms_ok));
	} else {
		json_decref(o.obj);
		json_decref(sms);
		printf("\ndatabase: %s (%s)\n", db_ok ? "ok" : "FAILED", db_kind);
		if (x->cfg.sms_backend == SMS_KAVENEGAR) {
			if (sms_ok)
				printf("sms: ok (kavenegar, credit %.0f)\n", credit);
			else
				printf("sms: FAILED (kavenegar: %s)\n", why);
		} else {
			printf("sms: console (codes are written to the log: development only)\n");
		}
	}
	if (!db_ok) {
		if (db_opened)
			fprintf(stderr, "otpd: check-config: the database does not answer "
			                "(DATABASE_URL)\n");
		return EXIT_FAILURE;
	}
	if (!sms_ok) {
		fprintf(stderr, "otpd: check-config: the Kavenegar key does not work: %s\n", why);
		return EXIT_FAILURE;
	}
	return EXIT_SUCCESS;
}

/* ---- dispatch ---- */

int cli_main(int argc, char **argv)
{
	struct args a;
	struct ctx x;
	int rc = parse_args(argc, argv, &a);

	if (rc != 0)
		return rc;
	if (a.help) {
		usage_of(a.cmd, stdout);
		return EXIT_SUCCESS;
	}
	otp_wipe(&x, sizeof(x));
	if (load(&x) < 0)
		return EXIT_FAILURE;
	if (strcmp(a.cmd, "user") == 0) {
		if (strcmp(a.sub, "list") == 0)
			rc = user_list(&x, &a);
		else if (strcmp(a.sub, "show") == 0)
			rc = user_show(&x, &a);
		else
			rc = user_change(&x, &a);
	} else if (strcmp(a.cmd, "codes") == 0) {
		rc = codes_cmd(&x, &a);
	} else if (strcmp(a.cmd, "purge") == 0) {
		rc = purge_cmd(&x, &a);
	} else {
		rc = check_config(&x, &a);
	}
	ctx_release(&x);
	return rc;
}
