/* Configuration: the environment (docs/API.md §1) -> one const struct,
 * parsed from one table with bounds.  A bad value stops the start with one
 * line naming the variable and what was expected. */
#ifndef OTPD_CONFIG_H
#define OTPD_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include "sms/sms.h"
#include "util/netaddr.h"
#include "util/parse.h"

#define CONFIG_SECRET_MIN_PROD 32

enum config_env { CONFIG_ENV_DEVELOPMENT = 0, CONFIG_ENV_PRODUCTION = 1 };
enum config_jwt_alg { CONFIG_JWT_HS256 = 0, CONFIG_JWT_ES256 = 1 };
/* OTPD_LOG_FORMAT; auto is resolved at start by config_log_is_text(). */
enum config_log_format {
	CONFIG_LOG_FORMAT_AUTO = 0,
	CONFIG_LOG_FORMAT_JSON = 1,
	CONFIG_LOG_FORMAT_TEXT = 2,
};

struct config {
	char listen[128];
	struct sockaddr_storage listen_addr;
	socklen_t listen_addr_len;
	char database_url[1024];
	char secret_key[1024];          /* "" = generated and kept in the db */
	enum config_env env;
	enum sms_backend sms_backend;
	char kavenegar_api_key[256];
	char kavenegar_sender[64];
	char kavenegar_api_url[512];
	char kavenegar_template[128];   /* "" = sms/send */
	char otp_message[1024];
	int64_t otp_expiry_s;
	int64_t otp_max_attempts;
	int64_t otp_send_limit;
	int64_t otp_send_window_s;
	struct rate throttle_send;
	struct rate throttle_verify;
	char trusted_proxies_raw[2048];
	struct netaddr_list trusted_proxies;
	int64_t jwt_access_ttl_s;
	int64_t jwt_refresh_ttl_s;
	int64_t jwt_refresh_grace_s;
	enum config_jwt_alg jwt_alg;
	char jwt_private_key_file[1024];
	char jwt_previous_public_key_file[1024];
	char allowed_origins[2048];
	bool cookie_secure;
	char email_domain[200];
	bool auto_migrate;
	int64_t kavenegar_timeout_ms;
	int64_t kavenegar_connect_timeout_ms;
	int64_t db_busy_timeout_ms;
	int64_t db_pool_size;            /* 0: the default (store/postgres.c) */
	int64_t db_statement_timeout_ms;
	int64_t db_connect_timeout_ms;
	int64_t store_max_queue;
	bool allow_shared_db_file;      /* OTPD_ALLOW_SHARED_DB_FILE */
	int64_t shutdown_timeout_s;
	int64_t threads;                /* 0 = one per core */
	int64_t max_connections;
	int64_t sms_max_queue;
	int64_t purge_interval_s;
	int64_t code_retention_s;       /* codes and stats kept this long */
	int log_level;                  /* enum log_level */
	char metrics_token[256];        /* "" = /metrics open */
	int64_t kavenegar_credit_interval_s;
	int64_t kavenegar_credit_alert;  /* Rial; 0 = no alert */
	int64_t kavenegar_delivery_interval_s; /* 0 = no delivery polling */
	enum config_log_format log_format;
};

/* Fill *ret from getenv.  On a bad value writes one line to err (e.g.
 * "OTP_MAX_ATTEMPTS: expected an integer 1..100, got 'abc'") and returns
 * false. */
bool config_load(struct config *ret, char *err, size_t errlen);

/* Same, from an explicit lookup function (tests). */
bool config_load_from(const char *(*lookup)(const char *name), struct config *ret,
                      char *err, size_t errlen);

/* Whether the log is written as text lines (else JSON): OTPD_LOG_FORMAT=text,
 * or auto with stderr a terminal and OTPD_ENV=development. */
bool config_log_is_text(const struct config *c, bool stderr_is_tty);

/* Every variable with its effective value as text, in the table's order
 * (for `otpd check-config`), secrets redacted: SECRET_KEY,
 * KAVENEGAR_API_KEY, OTPD_METRICS_TOKEN and other keys and tokens read
 * "(set)" or "" (not set); DATABASE_URL without its password.  fn's value
 * is valid during the call only. */
void config_each(const struct config *c,
                 void (*fn)(void *arg, const char *name, const char *value), void *arg);

/* DATABASE_URL as it may be shown: a password (in the URL's user
 * information or a password= parameter) becomes ***. */
void config_redact_url(const char *url, char *ret, size_t len);

/* Print every variable with its default and meaning (for --help). */
void config_print_help(FILE *out);

#endif
