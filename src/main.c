/* otpd: serve | migrate | the operator's commands (cli/) | --help.  Wiring,
 * signals; nothing else. */
#include <errno.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include "auth/delivery.h"
#include "auth/jwt.h"
#include "auth/login.h"
#include "auth/session.h"
#include "cli/cli.h"
#include "config.h"
#include "http/server.h"
#include "log.h"
#include "metrics.h"
#include "otp/code.h"
#include "sms/sms.h"
#include "store/store.h"
#include "version.h"

#define SECRET_NAME "secret_key"
#define SECRET_GENERATED_LEN 32

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: otpd <command> [--help]\n"
	        "       otpd --version\n"
	        "\n"
	        "A phone-number login service: SMS one-time codes, JWT sessions.\n"
	        "\n"
	        "commands:\n"
	        "  serve     apply pending migrations (unless OTPD_AUTO_MIGRATE=false) and serve HTTP\n"
	        "  migrate   apply pending database migrations and exit\n");
	cli_print_commands(out);
	fprintf(out,
	        "\n"
	        "Each command takes --help; the operator's commands also --json (exit status 0\n"
	        "done, 1 error, 2 bad usage).\n"
	        "\n"
	        "Configuration comes only from the environment; with none at all otpd serves on\n"
	        "127.0.0.1:8000, stores in SQLite otpd.db and prints codes to its log.\n\n");
	config_print_help(out);
}

static void usage_serve(FILE *out)
{
	fprintf(out, "usage: otpd serve\n\n"
	             "Serve the HTTP API (see README.md).  Stops cleanly on SIGTERM or SIGINT:\n"
	             "stops accepting, finishes requests in flight (OTPD_SHUTDOWN_TIMEOUT), exits 0.\n\n");
	config_print_help(out);
}

static void usage_migrate(FILE *out)
{
	fprintf(out, "usage: otpd migrate\n\n"
	             "Apply pending migrations to DATABASE_URL and exit (0 on success).\n\n");
	config_print_help(out);
}

static int load_config(struct config *cfg)
{
	char err[512];
	struct auth_jwt *probe = NULL;

	if (!config_load(cfg, err, sizeof(err))) {
		fprintf(stderr, "otpd: %s\n", err);
		return -1;
	}
	/* Key files are configuration too: refuse them before touching the
	 * database, with the same one-line message. */
	if (cfg->jwt_alg == CONFIG_JWT_ES256) {
		if (auth_jwt_new_es256(cfg->jwt_private_key_file, cfg->jwt_previous_public_key_file,
		                       err, sizeof(err), &probe) != OTPD_OK) {
			fprintf(stderr, "otpd: %s\n", err);
			return -1;
		}
		auth_jwt_free(probe);
	}
	log_set_level((enum log_level)cfg->log_level);
	log_set_format(config_log_is_text(cfg, isatty(2)) ? LOG_FORMAT_TEXT : LOG_FORMAT_JSON);
	return 0;
}

/* A database refused as configuration (a file that others can read) gets
 * the one line of a bad variable; other failures were logged by the store. */
static int open_store(const struct config *cfg, struct store **ret)
{
	struct store_options opt = {
		.busy_timeout_ms = (int)cfg->db_busy_timeout_ms,
		.allow_shared_file = cfg->allow_shared_db_file,
		.pool_size = (int)cfg->db_pool_size,
		.statement_timeout_ms = (int)cfg->db_statement_timeout_ms,
		.connect_timeout_ms = (int)cfg->db_connect_timeout_ms,
		.queue_max = (size_t)cfg->store_max_queue,
	};
	char err[1400];

	if (store_open(cfg->database_url, &opt, err, sizeof(err), ret) == OTPD_OK)
		return 0;
	if (err[0])
		fprintf(stderr, "otpd: %s\n", err);
	return -1;
}

static int cmd_migrate(void)
{
	struct config cfg;
	struct store *store = NULL;
	int applied = 0;

	if (load_config(&cfg) < 0)
		return 1;
	if (open_store(&cfg, &store) < 0)
		return 1;
	if (store_migrate(store, &applied) != OTPD_OK) {
		store_close(store);
		return 1;
	}
	log_info("store.migrated", "%d migration(s) applied", applied);
	if (applied)
		printf("applied %d migration(s)\n", applied);
	else
		printf("nothing to apply\n");
	store_close(store);
	return 0;
}

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* SECRET_KEY, or one generated once and kept in the database. */
static int load_secret(const struct config *cfg, struct store *store, uint8_t *buf,
                       size_t *len)
{
	uint8_t fresh[SECRET_GENERATED_LEN];

	if (cfg->secret_key[0]) {
		*len = strlen(cfg->secret_key);
		memcpy(buf, cfg->secret_key, *len);
		return 0;
	}
	if (RAND_bytes(fresh, sizeof(fresh)) != 1)
		return -1;
	if (store_secret_get_or_create(store, SECRET_NAME, fresh, sizeof(fresh), buf,
	                               SECRET_GENERATED_LEN) != OTPD_OK) {
		otp_wipe(fresh, sizeof(fresh));
		return -1;
	}
	otp_wipe(fresh, sizeof(fresh));
	*len = SECRET_GENERATED_LEN;
	log_warn("config.secret_generated",
	         "SECRET_KEY is not set: using a key generated once and kept in the database; "
	         "set SECRET_KEY (32+ bytes) for production and for several nodes");
	return 0;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* Wait until no request is being answered or deadline_ms passes (requests
 * still receiving their body are not waited for).  Waiting counts apart:
 * a request can complete while the thread that resumed it is still
 * returning from MHD_resume_connection(). */
static bool draining(struct http_server *http)
{
	return http_server_busy(http) > 0 || http_server_waiting(http) > 0;
}

static void drain(struct http_server *http, long deadline_ms)
{
	for (long waited = 0; draining(http) && waited < deadline_ms; waited += 10)
		sleep_ms(10);
}

static void warn_development(const struct config *cfg)
{
	if (cfg->env == CONFIG_ENV_DEVELOPMENT)
		log_warn("config.development",
		         "DEVELOPMENT MODE (OTPD_ENV=development): not for production; "
		         "set OTPD_ENV=production for the strict checks");
}

static int cmd_serve(void)
{
	struct config cfg;
	struct store *store = NULL;
	struct sms *sms = NULL;
	struct auth *auth = NULL;
	struct http_server *http = NULL;
	struct auth_janitor *janitor = NULL;
	struct auth_delivery *delivery = NULL;
	uint8_t secret[sizeof(cfg.secret_key)];
	size_t secret_len = 0;
	sigset_t sigs;
	int sig = 0, rc = 1, applied = 0;
	long busy, left;

	if (load_config(&cfg) < 0)
		return 1;
	/* Signals are taken by sigwait() below; every thread inherits the mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();

	metrics_init(otpd_version(), cfg.sms_backend == SMS_CONSOLE ? "console" : "kavenegar");
	if (open_store(&cfg, &store) < 0)
		goto out;
	if (cfg.auto_migrate) {
		if (store_migrate(store, &applied) != OTPD_OK)
			goto out;
		if (applied)
			log_info("store.migrated", "%d migration(s) applied", applied);
	}
	if (load_secret(&cfg, store, secret, &secret_len) < 0) {
		log_error("config.secret", "cannot load or create the secret key");
		goto out;
	}
	struct sms_config sc = {
		.backend = cfg.sms_backend,
		.api_url = cfg.kavenegar_api_url,
		.api_key = cfg.kavenegar_api_key,
		.sender = cfg.kavenegar_sender,
		.template_name = cfg.kavenegar_template[0] ? cfg.kavenegar_template : NULL,
		.message = cfg.otp_message,
		.connect_timeout_ms = (long)cfg.kavenegar_connect_timeout_ms,
		.timeout_ms = (long)cfg.kavenegar_timeout_ms,
		.max_queue = (int)cfg.sms_max_queue,
		.credit_interval_s = (long)cfg.kavenegar_credit_interval_s,
		.credit_alert = (double)cfg.kavenegar_credit_alert,
	};
	if (sms_new(&sc, &sms) != OTPD_OK)
		goto out;
	if (auth_new(&cfg, store, sms, secret, secret_len, &auth) != OTPD_OK)
		goto out;
	/* The key schedule holds it now: no copy stays behind. */
	otp_wipe(secret, sizeof(secret));
	otp_wipe(cfg.secret_key, sizeof(cfg.secret_key));
	if (http_server_start(&cfg, auth, store, &http) != OTPD_OK)
		goto out;
	if (auth_janitor_start(auth, (int)cfg.purge_interval_s, &janitor) != OTPD_OK)
		goto out;
	if (cfg.sms_backend == SMS_KAVENEGAR && cfg.kavenegar_delivery_interval_s > 0 &&
	    auth_delivery_start(store, sms, (int)cfg.kavenegar_delivery_interval_s, &delivery) != OTPD_OK)
		goto out;

	warn_development(&cfg);
	log_fields(LOG_LEVEL_INFO, "server.listening",
	           json_pack("{s:s, s:i, s:s, s:s}", "listen", cfg.listen,
	                     "port", (int)http_server_port(http),
	                     "sms_backend", cfg.sms_backend == SMS_CONSOLE ? "console" : "kavenegar",
	                     "env", cfg.env == CONFIG_ENV_PRODUCTION ? "production" : "development"),
	           "otpd listening on %s (port %u)", cfg.listen, http_server_port(http));

	while (sigwait(&sigs, &sig) != 0)
		;
	http_server_quiesce(http);
	auth_delivery_stop(delivery); /* first: once the line is out, no new work starts */
	log_info("server.stopping", "signal %d: finishing requests in flight", sig);
	drain(http, (long)cfg.shutdown_timeout_s * 1000);
	sms_free(sms, 0); /* sends still waiting get sms_unavailable */
	sms = NULL;
	/* Requests waiting for a commit are answered once it is done or has
	 * failed: a batch waits at most the busy timeout for a lock. */
	drain(http, 2000 + 2 * (long)cfg.db_busy_timeout_ms);
	if (http_server_waiting(http) > 0) {
		/* Their connections are suspended, and the store's writer will
		 * still resume them: the server cannot be torn down under it. */
		log_error("server.stopping", "%ld requests still waiting for the database: "
		          "exiting without waiting for them", http_server_waiting(http));
		_Exit(1);
	}
	busy = http_server_busy(http);
	left = http_server_inflight(http);
	if (left > 0)
		log_info("server.stopping", "closing the connections of %ld requests "
		         "(%ld answers not sent in time, the others still being received)",
		         left, busy);
	rc = 0;
out:
	auth_janitor_stop(janitor);
	auth_delivery_stop(delivery);
	http_server_stop(http);
	sms_free(sms, 0);
	auth_delivery_free(delivery); /* after sms_free: see auth/delivery.h */
	auth_free(auth);
	store_close(store);
	otp_wipe(secret, sizeof(secret));
	otp_wipe(&cfg, sizeof(cfg));
	if (rc == 0)
		log_info("server.stopped", "stopped cleanly");
	return rc;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : NULL;
	bool help = argc > 2 && (strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0);

	if (cmd && (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) && argc == 2) {
		printf("otpd %s\n", otpd_version());
		return 0;
	}
	if (!cmd || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		usage(cmd ? stdout : stderr);
		return cmd ? 0 : 2;
	}
	if (strcmp(cmd, "serve") == 0) {
		if (help) {
			usage_serve(stdout);
			return 0;
		}
		if (argc > 2)
			goto bad;
		return cmd_serve();
	}
	if (strcmp(cmd, "migrate") == 0) {
		if (help) {
			usage_migrate(stdout);
			return 0;
		}
		if (argc > 2)
			goto bad;
		return cmd_migrate();
	}
	if (cli_is_command(cmd))
		return cli_main(argc, argv);
bad:
	fprintf(stderr, "otpd: unknown command or argument; see 'otpd --help'\n");
	return 2;
}
