/* config.c against the environment table of docs/API.md §1: every default,
 * the derived defaults (SMS_BACKEND, COOKIE_SECURE), "a bad value stops the
 * start with one clear line naming the variable", secrets never echoed
 * (§4), and the production checks (OTPD_ENV=production: secret set, real SMS
 * backend, secure cookies).  The environment is a small name/value table
 * served through config_load_from's lookup function. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "config.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_VARS 8
#define SECRET32 "0123456789abcdef0123456789ABCDEF"   /* 32 bytes */
#define SECRET31 "0123456789abcdef0123456789ABCDE"    /* 31 bytes */
#define GOOD_KEY "4A6B7C8D9E0F1A2B3C4D5E6F7A8B9C0D"   /* letters and digits */

struct kv {
	const char *name;
	const char *value;
};

/* The environment the lookup function serves; NULL-name terminated. */
static const struct kv *env;

static const char *lookup(const char *name)
{
	for (const struct kv *p = env; p && p->name; p++)
		if (strcmp(p->name, name) == 0)
			return p->value;
	return NULL;
}

static struct config cfg;
static char err[512];

static bool load(const struct kv *vars)
{
	env = vars;
	memset(&cfg, 0, sizeof(cfg));
	memset(err, 0, sizeof(err));
	return config_load_from(lookup, &cfg, err, sizeof(err));
}

static void load_ok(const struct kv *vars)
{
	if (!load(vars))
		fail_msg("config refused: %s", err);
}

/* Refused with one line that starts with "NAME:" (STYLE.md's example
 * "OTP_MAX_ATTEMPTS: expected an integer 1..100, got 'abc'"), and the
 * out-param untouched (STYLE.md: out-params untouched on failure). */
static void expect_refused(const struct kv *vars, const char *name)
{
	static struct config before;
	size_t n = strlen(name);

	env = vars;
	memset(&cfg, 0xa5, sizeof(cfg));
	before = cfg;
	memset(err, 0, sizeof(err));
	if (config_load_from(lookup, &cfg, err, sizeof(err)))
		fail_msg("config with %s=%s accepted", vars[0].name, vars[0].value);
	if (strncmp(err, name, n) != 0 || err[n] != ':')
		fail_msg("error line does not start with \"%s:\": \"%s\"", name, err);
	assert_null(strchr(err, '\n'));
	assert_true(strlen(err) > n + 2); /* says what was expected */
	assert_memory_equal(&cfg, &before, sizeof(cfg));
}

/* Refused naming one of two variables (either names the problem). */
static void expect_refused_either(const struct kv *vars, const char *a, const char *b)
{
	assert_false(load(vars));
	if (!((strncmp(err, a, strlen(a)) == 0 && err[strlen(a)] == ':') ||
	      (strncmp(err, b, strlen(b)) == 0 && err[strlen(b)] == ':')))
		fail_msg("error line names neither %s nor %s: \"%s\"", a, b, err);
}

static void expect_sockaddr(int family, const char *host, unsigned port)
{
	assert_int_equal(cfg.listen_addr.ss_family, family);
	if (family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&cfg.listen_addr;
		struct in_addr want;

		assert_int_equal(cfg.listen_addr_len, sizeof(*in));
		assert_int_equal(inet_pton(AF_INET, host, &want), 1);
		assert_memory_equal(&in->sin_addr, &want, sizeof(want));
		assert_int_equal(ntohs(in->sin_port), port);
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&cfg.listen_addr;
		struct in6_addr want;

		assert_int_equal(cfg.listen_addr_len, sizeof(*in6));
		assert_int_equal(inet_pton(AF_INET6, host, &want), 1);
		assert_memory_equal(&in6->sin6_addr, &want, sizeof(want));
		assert_int_equal(ntohs(in6->sin6_port), port);
	}
}

/* ---- defaults ---- */

/* With no configuration at all: every default of docs/API.md §1. */
static void test_defaults(void **state)
{
	static const struct kv none[] = {{NULL, NULL}};

	(void)state;
	load_ok(none);
	assert_string_equal(cfg.listen, "127.0.0.1:8000");
	expect_sockaddr(AF_INET, "127.0.0.1", 8000);
	assert_string_equal(cfg.database_url, "sqlite:otpd.db");
	assert_string_equal(cfg.secret_key, "");          /* generated, kept in the db */
	assert_int_equal(cfg.env, CONFIG_ENV_DEVELOPMENT);
	assert_int_equal(cfg.sms_backend, SMS_CONSOLE);
	assert_string_equal(cfg.kavenegar_api_key, "");
	assert_string_equal(cfg.kavenegar_sender, "10008663");
	assert_string_equal(cfg.kavenegar_api_url, "https://api.kavenegar.com");
	assert_string_equal(cfg.kavenegar_template, "");  /* sms/send */
	assert_true(cfg.otp_expiry_s == 300);
	assert_true(cfg.otp_max_attempts == 3);
	assert_true(cfg.otp_send_limit == 3);
	assert_true(cfg.otp_send_window_s == 120);
	assert_true(cfg.throttle_send.count == 5);
	assert_true(cfg.throttle_send.period_ms == 60000);
	assert_true(cfg.throttle_verify.count == 20);
	assert_true(cfg.throttle_verify.period_ms == 60000);
	assert_int_equal(cfg.trusted_proxies.n, 0);
	assert_true(cfg.jwt_access_ttl_s == 300);
	assert_true(cfg.jwt_refresh_ttl_s == 86400);
	assert_int_equal(cfg.jwt_alg, CONFIG_JWT_HS256);
	assert_string_equal(cfg.jwt_private_key_file, "");
	assert_string_equal(cfg.jwt_previous_public_key_file, "");
	assert_string_equal(cfg.allowed_origins, "");
	assert_false(cfg.cookie_secure);                  /* false outside production */
	assert_string_equal(cfg.email_domain, "temp.pilito.com");
	assert_true(cfg.auto_migrate);                    /* serve migrates unless false */
	assert_true(cfg.purge_interval_s == 300);
	assert_true(cfg.code_retention_s == 2592000);     /* 30 days */
	assert_string_equal(cfg.metrics_token, "");       /* /metrics open */
	assert_true(cfg.kavenegar_credit_interval_s == 300);
	assert_true(cfg.kavenegar_credit_alert == 0);     /* off */
	assert_int_equal(cfg.log_format, CONFIG_LOG_FORMAT_AUTO);
	assert_false(cfg.allow_shared_db_file);           /* a db file others can read: refused */

	/* OTP_MESSAGE: "a short Persian text with {code}": contains {code} and
	 * at least one letter of the Arabic block U+0600..U+06FF (UTF-8 lead
	 * byte D8..DB, then a continuation byte) */
	assert_non_null(strstr(cfg.otp_message, "{code}"));
	bool persian = false;
	for (const unsigned char *p = (const unsigned char *)cfg.otp_message; p[0] && p[1]; p++)
		if (p[0] >= 0xd8 && p[0] <= 0xdb && (p[1] & 0xc0) == 0x80)
			persian = true;
	assert_true(persian);
	assert_true(strlen(cfg.otp_message) < 160); /* "short" */
}

/* A variable set to "" counts as unset (the shell's ${VAR:-default}), so a
 * blank line in an env file keeps the contract default. */
static void test_empty_is_default(void **state)
{
	static const struct kv vars[] = {
		{"OTP_MAX_ATTEMPTS", ""}, {"OTPD_LISTEN", ""}, {"SMS_BACKEND", ""},
		{"COOKIE_SECURE", ""}, {NULL, NULL},
	};

	(void)state;
	load_ok(vars);
	assert_true(cfg.otp_max_attempts == 3);
	assert_string_equal(cfg.listen, "127.0.0.1:8000");
	assert_int_equal(cfg.sms_backend, SMS_CONSOLE);
	assert_false(cfg.cookie_secure);
}

/* ---- every contract variable takes effect ---- */

static void test_overrides(void **state)
{
	static const struct kv vars[] = {
		{"OTPD_LISTEN", "[::1]:8443"},
		{"DATABASE_URL", "sqlite:/var/lib/otpd/main.db"},
		{"SECRET_KEY", "dev-secret"},
		{"KAVENEGAR_SENDER", "2000500666"},
		{"KAVENEGAR_API_URL", "http://127.0.0.1:8089"},
		{"KAVENEGAR_TEMPLATE", "otp-login"},
		{"OTP_MESSAGE", "Your code: {code}"},
		{"OTP_EXPIRY_TIME", "120"},
		{"OTP_MAX_ATTEMPTS", "5"},
		{"OTP_SEND_LIMIT", "10"},
		{"OTP_SEND_WINDOW", "3600"},
		{"OTP_THROTTLE_RATE", "10/hour"},
		{"OTP_VERIFY_THROTTLE_RATE", "2/sec"},
		{"OTPD_TRUSTED_PROXIES", "10.0.0.0/8, ::1"},
		{"JWT_ACCESS_TTL", "600"},
		{"JWT_REFRESH_TTL", "604800"},
		{"JWT_ALGORITHM", "HS256"},
		{"OTPD_ALLOWED_ORIGINS", "https://app.example"},
		{"COOKIE_SECURE", "true"},
		{"EMAIL_PLACEHOLDER_DOMAIN", "example.org"},
		{"OTPD_AUTO_MIGRATE", "false"},
		{"OTPD_ALLOW_SHARED_DB_FILE", "true"},
		{"OTPD_ENV", "development"},
		{NULL, NULL},
	};
	struct netaddr a;

	(void)state;
	load_ok(vars);
	assert_string_equal(cfg.listen, "[::1]:8443");
	expect_sockaddr(AF_INET6, "::1", 8443);
	assert_string_equal(cfg.database_url, "sqlite:/var/lib/otpd/main.db");
	assert_string_equal(cfg.secret_key, "dev-secret");
	assert_string_equal(cfg.kavenegar_sender, "2000500666");
	assert_string_equal(cfg.kavenegar_api_url, "http://127.0.0.1:8089");
	assert_string_equal(cfg.kavenegar_template, "otp-login");
	assert_string_equal(cfg.otp_message, "Your code: {code}");
	assert_true(cfg.otp_expiry_s == 120);
	assert_true(cfg.otp_max_attempts == 5);
	assert_true(cfg.otp_send_limit == 10);
	assert_true(cfg.otp_send_window_s == 3600);
	assert_true(cfg.throttle_send.count == 10 && cfg.throttle_send.period_ms == 3600000);
	assert_true(cfg.throttle_verify.count == 2 && cfg.throttle_verify.period_ms == 1000);
	assert_int_equal(cfg.trusted_proxies.n, 2);
	assert_true(netaddr_parse("10.20.30.40", &a));
	assert_true(netaddr_list_contains(&cfg.trusted_proxies, &a));
	assert_true(netaddr_parse("::1", &a));
	assert_true(netaddr_list_contains(&cfg.trusted_proxies, &a));
	assert_true(netaddr_parse("192.168.1.1", &a));
	assert_false(netaddr_list_contains(&cfg.trusted_proxies, &a));
	assert_true(cfg.jwt_access_ttl_s == 600);
	assert_true(cfg.jwt_refresh_ttl_s == 604800);
	assert_int_equal(cfg.jwt_alg, CONFIG_JWT_HS256);
	assert_string_equal(cfg.allowed_origins, "https://app.example");
	assert_true(cfg.cookie_secure);
	assert_string_equal(cfg.email_domain, "example.org");
	assert_false(cfg.auto_migrate);
	assert_true(cfg.allow_shared_db_file);
	assert_int_equal(cfg.env, CONFIG_ENV_DEVELOPMENT);
	assert_int_equal(cfg.sms_backend, SMS_CONSOLE);
}

static void test_other_good_values(void **state)
{
	static const struct kv listen_any[] = {{"OTPD_LISTEN", "0.0.0.0:9000"}, {NULL, NULL}};
	static const struct kv sqlite_path[] = {{"DATABASE_URL", "sqlite:/var/lib/otpd/otpd.db"}, {NULL, NULL}};
	static const struct kv sqlite_slashes[] = {{"DATABASE_URL", "sqlite:///var/lib/otpd/otpd.db"}, {NULL, NULL}};
	static const struct kv rate_day[] = {{"OTP_THROTTLE_RATE", "100/day"}, {NULL, NULL}};
	static const struct kv bool_words[] = {{"COOKIE_SECURE", "yes"}, {"OTPD_AUTO_MIGRATE", "0"}, {NULL, NULL}};
	static const struct kv retention_min[] = {{"OTPD_CODE_RETENTION", "3600"}, {NULL, NULL}};
	static const struct kv retention_max[] = {{"OTPD_CODE_RETENTION", "315360000"}, {NULL, NULL}};

	(void)state;
	load_ok(listen_any);
	expect_sockaddr(AF_INET, "0.0.0.0", 9000);
	load_ok(sqlite_path);
	assert_string_equal(cfg.database_url, "sqlite:/var/lib/otpd/otpd.db");
	load_ok(sqlite_slashes);
	assert_string_equal(cfg.database_url, "sqlite:///var/lib/otpd/otpd.db");
	load_ok(rate_day);
	assert_true(cfg.throttle_send.count == 100 && cfg.throttle_send.period_ms == 86400000);
	load_ok(bool_words);
	assert_true(cfg.cookie_secure);
	assert_false(cfg.auto_migrate);
	load_ok(retention_min);
	assert_true(cfg.code_retention_s == 3600);
	load_ok(retention_max);
	assert_true(cfg.code_retention_s == 315360000);
}

/* ---- SMS backend default ---- */

static void test_sms_backend(void **state)
{
	static const struct kv with_key[] = {{"KAVENEGAR_API_KEY", GOOD_KEY}, {NULL, NULL}};
	static const struct kv key_console[] = {
		{"KAVENEGAR_API_KEY", GOOD_KEY}, {"SMS_BACKEND", "console"}, {NULL, NULL}};
	static const struct kv explicit_kn[] = {
		{"SMS_BACKEND", "kavenegar"}, {"KAVENEGAR_API_KEY", GOOD_KEY}, {NULL, NULL}};
	static const struct kv kn_no_key[] = {{"SMS_BACKEND", "kavenegar"}, {NULL, NULL}};

	(void)state;
	/* KAVENEGAR_API_KEY set -> kavenegar by default */
	load_ok(with_key);
	assert_int_equal(cfg.sms_backend, SMS_KAVENEGAR);
	assert_string_equal(cfg.kavenegar_api_key, GOOD_KEY);
	assert_false(cfg.cookie_secure); /* still development */
	/* an explicit choice wins */
	load_ok(key_console);
	assert_int_equal(cfg.sms_backend, SMS_CONSOLE);
	load_ok(explicit_kn);
	assert_int_equal(cfg.sms_backend, SMS_KAVENEGAR);
	/* kavenegar cannot send without a key */
	expect_refused_either(kn_no_key, "KAVENEGAR_API_KEY", "SMS_BACKEND");
}

/* ---- bad values ---- */

static void test_bad_values(void **state)
{
	static const struct kv bad[] = {
		/* the brief's list */
		{"OTP_MAX_ATTEMPTS", "abc"},
		{"OTP_THROTTLE_RATE", "5/fortnight"},
		{"SMS_BACKEND", "pigeon"},
		{"KAVENEGAR_API_URL", "not-a-url"},
		{"OTPD_LISTEN", "nonsense"},
		{"DATABASE_URL", "mysql://x"},
		{"COOKIE_SECURE", "maybe"},
		{"OTPD_TRUSTED_PROXIES", "1.2.3.4/99"},
		/* more of the same kinds */
		{"OTP_MAX_ATTEMPTS", "0"},
		{"OTP_MAX_ATTEMPTS", "-1"},
		{"OTP_MAX_ATTEMPTS", "3.5"},
		{"OTP_MAX_ATTEMPTS", "99999999999999999999999"},
		{"OTP_EXPIRY_TIME", "0"},
		{"OTP_EXPIRY_TIME", "5m"},
		{"OTP_EXPIRY_TIME", " 300"},
		{"OTP_SEND_LIMIT", "x"},
		{"OTP_SEND_LIMIT", "0"},
		{"OTP_SEND_WINDOW", "1.5"},
		{"OTP_SEND_WINDOW", "-120"},
		{"OTP_THROTTLE_RATE", "0/min"},
		{"OTP_THROTTLE_RATE", "5"},
		{"OTP_VERIFY_THROTTLE_RATE", "x/min"},
		{"OTP_VERIFY_THROTTLE_RATE", "20/"},
		{"JWT_ACCESS_TTL", "abc"},
		{"JWT_ACCESS_TTL", "0"},
		{"JWT_REFRESH_TTL", "-1"},
		{"JWT_ALGORITHM", "none"},
		{"JWT_ALGORITHM", "RS256"},
		{"OTPD_ENV", "staging"},
		{"OTPD_AUTO_MIGRATE", "perhaps"},
		{"OTPD_ALLOW_SHARED_DB_FILE", "sometimes"},
		{"SMS_BACKEND", "twilio"},
		{"KAVENEGAR_API_URL", "ftp://api.kavenegar.com"},
		{"KAVENEGAR_API_URL", "api.kavenegar.com"},
		{"KAVENEGAR_API_URL", "https://"},
		{"OTPD_LISTEN", "127.0.0.1"},
		{"OTPD_LISTEN", "127.0.0.1:99999"},
		{"OTPD_LISTEN", "::1:8000"},
		{"DATABASE_URL", "otpd.db"},
		{"DATABASE_URL", "sqlite:"},
		{"OTPD_TRUSTED_PROXIES", "10.0.0.0/8, junk"},
		{"OTPD_TRUSTED_PROXIES", "localhost"},
		{"OTPD_CODE_RETENTION", "3599"},
		{"OTPD_CODE_RETENTION", "315360001"},
		{"OTPD_LOG_FORMAT", "xml"},
		{"OTPD_LOG_FORMAT", "JSON"},
		{"OTPD_LOG_FORMAT", "tty"},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		const struct kv vars[] = {bad[i], {NULL, NULL}};

		expect_refused(vars, bad[i].name);
		/* a non-secret bad value is quoted so the operator sees it */
		if (!strstr(err, bad[i].value))
			fail_msg("%s=%s: the error does not show the value: \"%s\"",
			         bad[i].name, bad[i].value, err);
	}
}

/* A bad value is refused even when other variables are fine, and the first
 * bad one is named, not a later good one. */
static void test_bad_among_good(void **state)
{
	static const struct kv vars[] = {
		{"OTPD_LISTEN", "127.0.0.1:9000"}, {"OTP_MAX_ATTEMPTS", "abc"},
		{"OTP_EXPIRY_TIME", "300"}, {NULL, NULL},
	};

	(void)state;
	expect_refused(vars, "OTP_MAX_ATTEMPTS");
}

/* ---- secrets (docs/API.md §4: never the API key or SECRET_KEY) ---- */

static void expect_not_echoed(const char *secret)
{
	char chunk[9];
	size_t n = strlen(secret);

	assert_null(strstr(err, secret));
	/* not even a piece of it */
	for (size_t i = 0; i + 8 <= n; i++) {
		memcpy(chunk, secret + i, 8);
		chunk[8] = '\0';
		if (strstr(err, chunk))
			fail_msg("error line shows part of the secret (\"%s\"): \"%s\"", chunk, err);
	}
}

static void test_api_key_not_echoed(void **state)
{
	static const char bad_key[] = "SeCrEtKeY-With/Slash+Plus";
	const struct kv vars[] = {{"KAVENEGAR_API_KEY", bad_key}, {NULL, NULL}};
	const struct kv explicit_kn[] = {
		{"SMS_BACKEND", "kavenegar"}, {"KAVENEGAR_API_KEY", bad_key}, {NULL, NULL}};
	const struct kv prod[] = {
		{"OTPD_ENV", "production"}, {"SECRET_KEY", SECRET32},
		{"KAVENEGAR_API_KEY", bad_key}, {NULL, NULL}};

	(void)state;
	expect_refused(vars, "KAVENEGAR_API_KEY");
	expect_not_echoed(bad_key);
	expect_refused(explicit_kn, "KAVENEGAR_API_KEY");
	expect_not_echoed(bad_key);
	expect_refused(prod, "KAVENEGAR_API_KEY");
	expect_not_echoed(bad_key);
	expect_not_echoed(SECRET32);
}

static void test_long_secrets_not_echoed(void **state)
{
	static char long_secret[1500];
	static char long_key[400];
	const struct kv secret_vars[] = {{"SECRET_KEY", long_secret}, {NULL, NULL}};
	const struct kv key_vars[] = {{"KAVENEGAR_API_KEY", long_key}, {NULL, NULL}};

	(void)state;
	for (size_t i = 0; i + 1 < sizeof(long_secret); i++)
		long_secret[i] = "Zq7"[i % 3];
	for (size_t i = 0; i + 1 < sizeof(long_key); i++)
		long_key[i] = "Kx9"[i % 3];
	expect_refused(secret_vars, "SECRET_KEY");
	expect_not_echoed(long_secret);
	expect_refused(key_vars, "KAVENEGAR_API_KEY");
	expect_not_echoed(long_key);
}

/* ---- PostgreSQL URLs: accepted; one that cannot be a URI is refused unechoed ---- */

static void test_postgres_url(void **state)
{
	static const struct kv pg[] = {
		{"DATABASE_URL", "postgres://otpd:Pw0rdPw0rd@db.internal:5432/otpd?sslmode=require"},
		{"DATABASE_POOL_SIZE", "12"}, {NULL, NULL}};
	static const struct kv pg_short[] = {
		{"DATABASE_URL", "postgresql://otpd@localhost/otpd"}, {NULL, NULL}};
	static const struct kv pg_space[] = {
		{"DATABASE_URL", "postgres://otpd:Pw0rd Pw0rd@db.internal/otpd"}, {NULL, NULL}};
	static const struct kv pg_param[] = {
		{"DATABASE_URL", "postgres:///otpd?password=Pw0rd Pw0rd"}, {NULL, NULL}};
	static const struct kv pool_bad[] = {
		{"DATABASE_URL", "postgres://otpd@localhost/otpd"}, {"DATABASE_POOL_SIZE", "1001"},
		{NULL, NULL}};

	(void)state;
	assert_true(load(pg));
	assert_string_equal(cfg.database_url, pg[0].value);
	assert_int_equal(cfg.db_pool_size, 12);
	assert_int_equal(cfg.db_statement_timeout_ms, 5000);
	assert_int_equal(cfg.db_connect_timeout_ms, 5000);
	assert_int_equal(cfg.store_max_queue, 10000);
	assert_true(load(pg_short));
	assert_int_equal(cfg.db_pool_size, 0); /* the store's default */
	expect_refused(pg_space, "DATABASE_URL");
	expect_not_echoed("Pw0rd"); /* the URL may carry a password */
	expect_refused(pg_param, "DATABASE_URL");
	expect_not_echoed("Pw0rd");
	expect_refused(pool_bad, "DATABASE_POOL_SIZE");
}

/* ---- production ---- */

static void test_production_secret(void **state)
{
	static const struct kv missing[] = {
		{"OTPD_ENV", "production"}, {"KAVENEGAR_API_KEY", GOOD_KEY}, {NULL, NULL}};
	static const struct kv short31[] = {
		{"OTPD_ENV", "production"}, {"KAVENEGAR_API_KEY", GOOD_KEY},
		{"SECRET_KEY", SECRET31}, {NULL, NULL}};

	(void)state;
	assert_int_equal(strlen(SECRET31), 31);
	expect_refused(missing, "SECRET_KEY");
	expect_refused(short31, "SECRET_KEY");
	expect_not_echoed(SECRET31);
	expect_not_echoed(GOOD_KEY);
}

static void test_production_console_refused(void **state)
{
	static const struct kv console[] = {
		{"OTPD_ENV", "production"}, {"SECRET_KEY", SECRET32},
		{"SMS_BACKEND", "console"}, {"KAVENEGAR_API_KEY", GOOD_KEY}, {NULL, NULL}};
	static const struct kv no_key[] = {
		{"OTPD_ENV", "production"}, {"SECRET_KEY", SECRET32}, {NULL, NULL}};

	(void)state;
	expect_refused(console, "SMS_BACKEND");
	expect_not_echoed(SECRET32);
	assert_string_equal(err, "SMS_BACKEND: expected kavenegar when OTPD_ENV=production, got console "
	                         "(set SMS_BACKEND=kavenegar with KAVENEGAR_API_KEY, "
	                         "and KAVENEGAR_SENDER or KAVENEGAR_TEMPLATE)");
	/* no key: the default is console, which production refuses, and the
	 * line says what to set */
	expect_refused(no_key, "SMS_BACKEND");
	assert_string_equal(err, "SMS_BACKEND: expected kavenegar when OTPD_ENV=production, got console "
	                         "(set KAVENEGAR_API_KEY, and KAVENEGAR_SENDER or KAVENEGAR_TEMPLATE)");
}

static void test_production_cookie_insecure_refused(void **state)
{
	static const struct kv vars[] = {
		{"OTPD_ENV", "production"}, {"SECRET_KEY", SECRET32},
		{"KAVENEGAR_API_KEY", GOOD_KEY}, {"COOKIE_SECURE", "false"}, {NULL, NULL}};

	(void)state;
	expect_refused(vars, "COOKIE_SECURE");
	expect_not_echoed(SECRET32);
	expect_not_echoed(GOOD_KEY);
}

static void test_production_good(void **state)
{
	static const char secret64[] =
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	static const struct kv vars[] = {
		{"OTPD_ENV", "production"}, {"SECRET_KEY", SECRET32},
		{"KAVENEGAR_API_KEY", GOOD_KEY}, {NULL, NULL}};
	static const struct kv explicit_secure[] = {
		{"OTPD_ENV", "production"}, {"SECRET_KEY", secret64},
		{"KAVENEGAR_API_KEY", GOOD_KEY}, {"SMS_BACKEND", "kavenegar"},
		{"COOKIE_SECURE", "true"}, {NULL, NULL}};

	(void)state;
	load_ok(vars);
	assert_int_equal(cfg.env, CONFIG_ENV_PRODUCTION);
	assert_int_equal(cfg.sms_backend, SMS_KAVENEGAR);
	assert_true(cfg.cookie_secure); /* COOKIE_SECURE defaults to true in production */
	assert_string_equal(cfg.secret_key, SECRET32);
	assert_string_equal(cfg.kavenegar_api_key, GOOD_KEY);

	load_ok(explicit_secure);
	assert_true(cfg.cookie_secure);
	assert_string_equal(cfg.secret_key, secret64);
}

/* Development is lenient: no secret, console, insecure cookies, all fine. */
static void test_development_lenient(void **state)
{
	static const struct kv vars[] = {
		{"OTPD_ENV", "development"}, {"SECRET_KEY", "short"},
		{"SMS_BACKEND", "console"}, {"COOKIE_SECURE", "false"}, {NULL, NULL}};

	(void)state;
	load_ok(vars);
	assert_int_equal(cfg.env, CONFIG_ENV_DEVELOPMENT);
	assert_false(cfg.cookie_secure);
}

/* OTPD_LOG_FORMAT: json and text are taken as they are; auto (the
 * default) is text only with stderr a terminal in development. */
static void test_log_format(void **state)
{
	static const struct kv json[] = {{"OTPD_LOG_FORMAT", "json"}, {NULL, NULL}};
	static const struct kv text[] = {{"OTPD_LOG_FORMAT", "text"}, {NULL, NULL}};
	static const struct kv autow[] = {{"OTPD_LOG_FORMAT", "auto"}, {NULL, NULL}};
	static const struct kv none[] = {{NULL, NULL}};
	static const struct kv prod_auto[] = {
		{"OTPD_ENV", "production"}, {"SECRET_KEY", SECRET32},
		{"KAVENEGAR_API_KEY", GOOD_KEY}, {NULL, NULL}};
	static const struct kv prod_text[] = {
		{"OTPD_ENV", "production"}, {"SECRET_KEY", SECRET32},
		{"KAVENEGAR_API_KEY", GOOD_KEY}, {"OTPD_LOG_FORMAT", "text"}, {NULL, NULL}};

	(void)state;
	load_ok(none);
	assert_int_equal(cfg.log_format, CONFIG_LOG_FORMAT_AUTO);
	assert_true(config_log_is_text(&cfg, true));
	assert_false(config_log_is_text(&cfg, false));
	load_ok(autow);
	assert_int_equal(cfg.log_format, CONFIG_LOG_FORMAT_AUTO);
	assert_true(config_log_is_text(&cfg, true));
	load_ok(json);
	assert_int_equal(cfg.log_format, CONFIG_LOG_FORMAT_JSON);
	assert_false(config_log_is_text(&cfg, true));
	assert_false(config_log_is_text(&cfg, false));
	load_ok(text);
	assert_int_equal(cfg.log_format, CONFIG_LOG_FORMAT_TEXT);
	assert_true(config_log_is_text(&cfg, true));
	assert_true(config_log_is_text(&cfg, false));
	load_ok(prod_auto);
	assert_false(config_log_is_text(&cfg, true));  /* production: JSON even on a terminal */
	load_ok(prod_text);
	assert_true(config_log_is_text(&cfg, false));  /* unless asked for */
}

/* A tiny error buffer is never overrun and still starts with the name. */
static void test_small_error_buffer(void **state)
{
	static const struct kv vars[] = {{"OTP_MAX_ATTEMPTS", "abc"}, {NULL, NULL}};
	char small[12];

	(void)state;
	memset(small, 'x', sizeof(small));
	env = vars;
	assert_false(config_load_from(lookup, &cfg, small, 8));
	assert_int_equal(strlen(small), 7);
	assert_memory_equal(small, "OTP_MAX", 7);
	assert_int_equal(small[8], 'x');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_empty_is_default),
		cmocka_unit_test(test_overrides),
		cmocka_unit_test(test_other_good_values),
		cmocka_unit_test(test_sms_backend),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_bad_among_good),
		cmocka_unit_test(test_api_key_not_echoed),
		cmocka_unit_test(test_long_secrets_not_echoed),
		cmocka_unit_test(test_postgres_url),
		cmocka_unit_test(test_production_secret),
		cmocka_unit_test(test_production_console_refused),
		cmocka_unit_test(test_production_cookie_insecure_refused),
		cmocka_unit_test(test_production_good),
		cmocka_unit_test(test_development_lenient),
		cmocka_unit_test(test_small_error_buffer),
		cmocka_unit_test(test_log_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
