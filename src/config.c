#include "config.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "sms/kavenegar.h"

enum kind { K_STR, K_INT, K_BOOL, K_RATE, K_ENV, K_SMS, K_JWTALG, K_LOGLEVEL,
            K_LOGFORMAT, K_LISTEN, K_URL, K_DBURL, K_CIDRS };

struct var {
	const char *name;
	enum kind kind;
	size_t offset;
	size_t size;      /* K_STR: the field's size (bound = size - 1) */
	const char *def;  /* NULL: derived after the table (see finish()) */
	int64_t min, max; /* K_INT */
	const char *help;
};

#define F(field) offsetof(struct config, field), sizeof(((struct config *)0)->field)

/* docs/API.md §1, plus a few operational knobs (OTPD_*, *_MS). */
static const struct var vars[] = {
	{"OTPD_LISTEN", K_LISTEN, F(listen), "127.0.0.1:8000", 0, 0, "address:port to listen on ([::1]:8000 for IPv6)"},
	{"DATABASE_URL", K_DBURL, F(database_url), "sqlite:otpd.db", 0, 0, "sqlite:PATH (embedded, one node) or postgres://USER:PASSWORD@HOST:PORT/DB (libpq URI: many nodes share it)"},
	{"DATABASE_POOL_SIZE", K_INT, F(db_pool_size), "0", 0, 1000, "PostgreSQL connections per node, each driven by a store thread of its own (0: 2 per core, 4 to 16)"},
	{"DATABASE_STATEMENT_TIMEOUT_MS", K_INT, F(db_statement_timeout_ms), "5000", 100, 600000, "PostgreSQL: a statement running longer is cancelled (503)"},
	{"DATABASE_CONNECT_TIMEOUT_MS", K_INT, F(db_connect_timeout_ms), "5000", 1000, 600000, "PostgreSQL: how long a connection attempt may take (at start, and when reconnecting)"},
	{"OTPD_STORE_MAX_QUEUE", K_INT, F(store_max_queue), "10000", 1, 1000000, "database jobs waiting at most (beyond: 503)"},
	{"SECRET_KEY", K_STR, F(secret_key), "", 0, 0, "signs tokens (HS256) and keys code hashes; generated and kept in the db when unset"},
	{"OTPD_ENV", K_ENV, F(env), "development", 0, 0, "development or production (strict checks)"},
	{"SMS_BACKEND", K_SMS, F(sms_backend), NULL, 0, 0, "console or kavenegar (default: kavenegar if KAVENEGAR_API_KEY is set)"},
	{"KAVENEGAR_API_KEY", K_STR, F(kavenegar_api_key), "", 0, 0, "Kavenegar API key (letters and digits; never logged)"},
	{"KAVENEGAR_SENDER", K_STR, F(kavenegar_sender), "10008663", 0, 0, "sender line for sms/send"},
	{"KAVENEGAR_API_URL", K_URL, F(kavenegar_api_url), "https://api.kavenegar.com", 0, 0, "base URL of the Kavenegar REST API"},
	{"KAVENEGAR_TEMPLATE", K_STR, F(kavenegar_template), "", 0, 0, "when set, codes go through verify/lookup with this template"},
	{"OTP_MESSAGE", K_STR, F(otp_message), "\xda\xa9\xd8\xaf \xd9\x88\xd8\xb1\xd9\x88\xd8\xaf \xd8\xb4\xd9\x85\xd8\xa7: {code}", 0, 0, "SMS body for sms/send; {code} is replaced by the code"},
	{"OTP_EXPIRY_TIME", K_INT, F(otp_expiry_s), "300", 1, 86400, "seconds a code stays valid"},
	{"OTP_MAX_ATTEMPTS", K_INT, F(otp_max_attempts), "3", 1, 100, "wrong guesses allowed on one code"},
	{"OTP_SEND_LIMIT", K_INT, F(otp_send_limit), "3", 1, 100000, "send requests per phone number per window"},
	{"OTP_SEND_WINDOW", K_INT, F(otp_send_window_s), "120", 1, 604800, "the send-limit window, seconds"},
	{"OTP_THROTTLE_RATE", K_RATE, F(throttle_send), "5/min", 0, 0, "per client address on the send endpoint (N/sec, N/min, N/hour, N/day)"},
	{"OTP_VERIFY_THROTTLE_RATE", K_RATE, F(throttle_verify), "20/min", 0, 0, "per client address on the verify endpoint"},
	{"OTPD_TRUSTED_PROXIES", K_CIDRS, F(trusted_proxies_raw), "", 0, 0, "addresses or CIDRs allowed to name the client in X-Forwarded-For"},
	{"JWT_ACCESS_TTL", K_INT, F(jwt_access_ttl_s), "300", 1, 2592000, "access token lifetime, seconds"},
	{"JWT_REFRESH_TTL", K_INT, F(jwt_refresh_ttl_s), "86400", 1, 31536000, "refresh token lifetime, seconds"},
	{"JWT_REFRESH_GRACE", K_INT, F(jwt_refresh_grace_s), "10", 0, 300, "seconds a rotated refresh token still returns the pair it was exchanged for (0: never)"},
	{"JWT_ALGORITHM", K_JWTALG, F(jwt_alg), "HS256", 0, 0, "HS256 (keyed by SECRET_KEY) or ES256 (JWT_PRIVATE_KEY_FILE; public keys at /.well-known/jwks.json)"},
	{"JWT_PRIVATE_KEY_FILE", K_STR, F(jwt_private_key_file), "", 0, 0, "P-256 private key (PEM) for ES256"},
	{"JWT_PREVIOUS_PUBLIC_KEY_FILE", K_STR, F(jwt_previous_public_key_file), "", 0, 0, "previous public key that still verifies"},
	{"OTPD_ALLOWED_ORIGINS", K_STR, F(allowed_origins), "", 0, 0, "origins allowed to send cookie-authenticated requests"},
	{"COOKIE_SECURE", K_BOOL, F(cookie_secure), NULL, 0, 0, "Secure attribute on auth cookies (default: true in production)"},
	{"EMAIL_PLACEHOLDER_DOMAIN", K_STR, F(email_domain), "temp.pilito.com", 0, 0, "domain of the placeholder e-mail of new users"},
	{"OTPD_AUTO_MIGRATE", K_BOOL, F(auto_migrate), "true", 0, 0, "serve applies pending migrations on start"},
	{"KAVENEGAR_CREDIT_INTERVAL", K_INT, F(kavenegar_credit_interval_s), "300", 0, 86400, "seconds between reads of the provider's credit (account/info; also at start; 0: never)"},
	{"KAVENEGAR_CREDIT_ALERT", K_INT, F(kavenegar_credit_alert), "0", 0, 1000000000000000, "credit (Rial) below which otpd warns once and otpd_sms_credit_low is 1 (0: off)"},
	{"KAVENEGAR_DELIVERY_INTERVAL", K_INT, F(kavenegar_delivery_interval_s), "60", 0, 86400, "seconds between polls of sms/status for the delivery of accepted SMS (at most 10 x 500 ids a pass, for 48 h each; 0: never)"},
	{"KAVENEGAR_TIMEOUT_MS", K_INT, F(kavenegar_timeout_ms), "10000", 100, 120000, "total time for one provider call"},
	{"KAVENEGAR_CONNECT_TIMEOUT_MS", K_INT, F(kavenegar_connect_timeout_ms), "3000", 100, 60000, "time to connect to the provider"},
	{"OTPD_ALLOW_SHARED_DB_FILE", K_BOOL, F(allow_shared_db_file), "false", 0, 0, "start on a database file that other users can read or write (otherwise refused; otpd creates its files 0600)"},
	{"OTPD_DB_BUSY_TIMEOUT_MS", K_INT, F(db_busy_timeout_ms), "5000", 0, 600000, "how long a write waits for a database lock before 503"},
	{"OTPD_SHUTDOWN_TIMEOUT", K_INT, F(shutdown_timeout_s), "10", 0, 600, "seconds to finish requests in flight on SIGTERM"},
	{"OTPD_THREADS", K_INT, F(threads), "0", 0, 256, "HTTP worker threads (0 = one per core); no request holds one while it waits for the database or the SMS provider"},
	{"OTPD_MAX_CONNECTIONS", K_INT, F(max_connections), "4096", 16, 1000000, "open client connections at most"},
	{"OTPD_SMS_MAX_QUEUE", K_INT, F(sms_max_queue), "10000", 1, 1000000, "SMS jobs waiting or in flight at most (beyond: 503)"},
	{"OTPD_PURGE_INTERVAL", K_INT, F(purge_interval_s), "300", 1, 86400, "seconds between purges of expired refresh records"},
	{"OTPD_CODE_RETENTION", K_INT, F(code_retention_s), "2592000", 3600, 315360000, "seconds issued codes and the dashboard's counters are kept (the purge deletes older ones)"},
	{"OTPD_LOG_LEVEL", K_LOGLEVEL, F(log_level), "info", 0, 0, "error, warn, info or debug"},
	{"OTPD_METRICS_TOKEN", K_STR, F(metrics_token), "", 0, 0, "when set, GET /metrics requires Authorization: Bearer <token> (never logged)"},
	{"OTPD_LOG_FORMAT", K_LOGFORMAT, F(log_format), "auto", 0, 0, "json, text (short lines for a person) or auto: text when stderr is a terminal and OTPD_ENV=development"},
};

struct word {
	const char *name;
	int value;
};

static const struct word env_words[] = {{"development", CONFIG_ENV_DEVELOPMENT}, {"production", CONFIG_ENV_PRODUCTION}, {NULL, 0}};
static const struct word sms_words[] = {{"console", SMS_CONSOLE}, {"kavenegar", SMS_KAVENEGAR}, {NULL, 0}};
static const struct word alg_words[] = {{"HS256", CONFIG_JWT_HS256}, {"ES256", CONFIG_JWT_ES256}, {NULL, 0}};
static const struct word level_words[] = {{"error", LOG_LEVEL_ERROR}, {"warn", LOG_LEVEL_WARN}, {"info", LOG_LEVEL_INFO}, {"debug", LOG_LEVEL_DEBUG}, {NULL, 0}};
static const struct word format_words[] = {{"auto", CONFIG_LOG_FORMAT_AUTO}, {"json", CONFIG_LOG_FORMAT_JSON}, {"text", CONFIG_LOG_FORMAT_TEXT}, {NULL, 0}};

static bool parse_word(const struct word *w, const char *s, int *ret)
{
	for (; w->name; w++) {
		if (strcmp(w->name, s) == 0) {
			*ret = w->value;
			return true;
		}
	}
	return false;
}

static bool is_http_url(const char *s)
{
	const char *host;

	if (strncmp(s, "http://", 7) == 0)
		host = s + 7;
	else if (strncmp(s, "https://", 8) == 0)
		host = s + 8;
	else
		return false;
	if (!*host || *host == '/' || *host == ':')
		return false;
	for (const char *p = host; *p; p++)
		if (!isgraph((unsigned char)*p) || *p == '?' || *p == '#' || *p == '@')
			return false;
	return true;
}

/* sqlite:PATH, or a PostgreSQL URI (libpq checks the rest of it when the
 * store opens, and says what is wrong without echoing it). */
static bool is_db_url(const char *s)
{
	if (strncmp(s, "sqlite:", 7) == 0)
		return s[7] != '\0';
	if (strncmp(s, "postgres://", 11) == 0 || strncmp(s, "postgresql://", 13) == 0) {
		for (const char *p = s; *p; p++)
			if (!isgraph((unsigned char)*p))
				return false;
		return true;
	}
	return false;
}

/* Parse one value into its field; on failure fill `expected`. */
static bool parse_var(const struct var *v, const char *val, struct config *c,
                      char *expected, size_t explen)
{
	char *field = (char *)c + v->offset;
	int w;

	switch (v->kind) {
	case K_STR:
		if (strlen(val) >= v->size) {
			snprintf(expected, explen, "at most %zu bytes", v->size - 1);
			return false;
		}
		strcpy(field, val);
		return true;
	case K_INT:
		snprintf(expected, explen, "an integer %lld..%lld", (long long)v->min, (long long)v->max);
		return parse_int64(val, v->min, v->max, (int64_t *)(void *)field);
	case K_BOOL:
		snprintf(expected, explen, "true or false");
		return parse_bool(val, (bool *)(void *)field);
	case K_RATE:
		snprintf(expected, explen, "a rate N/sec, N/min, N/hour or N/day");
		return parse_rate(val, (struct rate *)(void *)field);
	case K_ENV:
	case K_SMS:
	case K_JWTALG:
	case K_LOGLEVEL:
	case K_LOGFORMAT: {
		const struct word *words = v->kind == K_ENV ? env_words
		                           : v->kind == K_SMS ? sms_words
		                           : v->kind == K_JWTALG ? alg_words
		                           : v->kind == K_LOGLEVEL ? level_words : format_words;
		size_t n = 0;
		expected[0] = '\0';
		for (const struct word *p = words; p->name; p++)
			n += (size_t)snprintf(expected + n, n < explen ? explen - n : 0, "%s%s",
			                      p == words ? "one of " : ", ", p->name);
		if (!parse_word(words, val, &w))
			return false;
		if (v->kind == K_LOGLEVEL)
			*(int *)(void *)field = w;
		else if (v->kind == K_ENV)
			*(enum config_env *)(void *)field = (enum config_env)w;
		else if (v->kind == K_SMS)
			*(enum sms_backend *)(void *)field = (enum sms_backend)w;
		else if (v->kind == K_LOGFORMAT)
			*(enum config_log_format *)(void *)field = (enum config_log_format)w;
		else
			*(enum config_jwt_alg *)(void *)field = (enum config_jwt_alg)w;
		return true;
	}
	case K_LISTEN:
		snprintf(expected, explen, "HOST:PORT with a literal address, e.g. 127.0.0.1:8000 or [::1]:8000");
		if (strlen(val) >= v->size ||
		    !netaddr_parse_listen(val, &c->listen_addr, &c->listen_addr_len))
			return false;
		strcpy(field, val);
		return true;
	case K_URL:
		snprintf(expected, explen, "an http:// or https:// URL");
		if (strlen(val) >= v->size || !is_http_url(val))
			return false;
		strcpy(field, val);
		return true;
	case K_DBURL:
		snprintf(expected, explen, "sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DB");
		if (strlen(val) >= v->size || !is_db_url(val))
			return false;
		strcpy(field, val);
		return true;
	case K_CIDRS:
		snprintf(expected, explen, "comma-separated IP addresses or CIDRs");
		if (strlen(val) >= v->size || !netaddr_list_parse(val, &c->trusted_proxies))
			return false;
		strcpy(field, val);
		return true;
	}
	return false;
}

/* Defaults that depend on other variables, and the cross-checks. */
static bool finish(const char *(*lookup)(const char *), struct config *c,
                   char *err, size_t errlen)
{
	const char *v;

	v = lookup("SMS_BACKEND");
	if (!v || !*v)
		c->sms_backend = c->kavenegar_api_key[0] ? SMS_KAVENEGAR : SMS_CONSOLE;
	v = lookup("COOKIE_SECURE");
	if (!v || !*v)
		c->cookie_secure = c->env == CONFIG_ENV_PRODUCTION;

	if (c->sms_backend == SMS_KAVENEGAR && !sms_kavenegar_key_is_valid(c->kavenegar_api_key)) {
		snprintf(err, errlen, "KAVENEGAR_API_KEY: expected letters and digits (required with SMS_BACKEND=kavenegar)%s",
		         c->kavenegar_api_key[0] ? ", got a value with other characters" : ", got nothing");
		return false;
	}
	if (c->sms_backend == SMS_KAVENEGAR && !c->kavenegar_template[0] &&
	    !strstr(c->otp_message, "{code}")) {
		snprintf(err, errlen, "OTP_MESSAGE: expected a text containing {code}");
		return false;
	}
	if (c->jwt_alg == CONFIG_JWT_ES256 && !c->jwt_private_key_file[0]) {
		snprintf(err, errlen, "JWT_PRIVATE_KEY_FILE: expected a P-256 private key file (PEM) with JWT_ALGORITHM=ES256, got nothing");
		return false;
	}
	if (c->env == CONFIG_ENV_PRODUCTION) {
		if (strlen(c->secret_key) < CONFIG_SECRET_MIN_PROD) {
			snprintf(err, errlen, "SECRET_KEY: expected at least %d bytes when OTPD_ENV=production, got %zu",
			         CONFIG_SECRET_MIN_PROD, strlen(c->secret_key));
			return false;
		}
		if (c->sms_backend == SMS_CONSOLE) {
			/* Say what to set: console is the default without a key. */
			v = lookup("SMS_BACKEND");
			snprintf(err, errlen, "SMS_BACKEND: expected kavenegar when OTPD_ENV=production, got console "
			         "(set %sKAVENEGAR_API_KEY, and KAVENEGAR_SENDER or KAVENEGAR_TEMPLATE)",
			         v && *v ? "SMS_BACKEND=kavenegar with " : "");
			return false;
		}
		if (!c->cookie_secure) {
			snprintf(err, errlen, "COOKIE_SECURE: expected true when OTPD_ENV=production, got false");
			return false;
		}
	}
	return true;
}

bool config_load_from(const char *(*lookup)(const char *name), struct config *ret,
                      char *err, size_t errlen)
{
	struct config *c = calloc(1, sizeof(*c));
	bool ok = false;

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const struct var *v = &vars[i];
		const char *val = lookup(v->name);
		char expected[160];

		if (!val || !*val)
			val = v->def;
		if (!val)
			continue;
		if (!parse_var(v, val, c, expected, sizeof(expected))) {
			/* Never echo a secret back. */
			bool secret = strstr(v->name, "KEY") != NULL || strstr(v->name, "TOKEN") != NULL ||
			              (v->kind == K_DBURL && (strchr(val, '@') || /* user:password@ */
			                                      strncmp(val, "postgres", 8) == 0));
			snprintf(err, errlen, "%s: expected %s, got '%.64s'", v->name, expected,
			         secret ? "(hidden)" : val);
			goto out;
		}
	}
	if (!finish(lookup, c, err, errlen))
		goto out;
	*ret = *c;
	ok = true;
out:
	OPENSSL_cleanse(c, sizeof(*c)); /* holds the secret; a memset before free is optimised away */
	free(c);
	return ok;
}

bool config_log_is_text(const struct config *c, bool stderr_is_tty)
{
	if (c->log_format == CONFIG_LOG_FORMAT_AUTO)
		return stderr_is_tty && c->env == CONFIG_ENV_DEVELOPMENT;
	return c->log_format == CONFIG_LOG_FORMAT_TEXT;
}

static const char *env_lookup(const char *name) { return getenv(name); }

bool config_load(struct config *ret, char *err, size_t errlen)
{
	return config_load_from(env_lookup, ret, err, errlen);
}

void config_print_help(FILE *out)
{
	fprintf(out, "Environment (defaults in brackets):\n");
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const struct var *v = &vars[i];
		fprintf(out, "  %-30s %s", v->name, v->help);
		if (v->def && *v->def && v->kind != K_STR)
			fprintf(out, " [%s]", v->def);
		else if (v->def && *v->def && strcmp(v->name, "OTP_MESSAGE") != 0)
			fprintf(out, " [%s]", v->def);
		fputc('\n', out);
	}
}

static bool is_secret_var(const struct var *v)
{
	size_t n = strlen(v->name);

	if (n > 5 && strcmp(v->name + n - 5, "_FILE") == 0)
		return false; /* a key file's path, not the key */
	return strstr(v->name, "KEY") != NULL || strstr(v->name, "TOKEN") != NULL;
}

void config_redact_url(const char *url, char *ret, size_t len)
{
	const char *scheme = strstr(url, "://"), *at, *colon, *p;
	size_t o = 0;

	if (!len)
		return;
	ret[0] = '\0';
	/* userinfo: scheme://user:password@host */
	if (scheme) {
		const char *auth = scheme + 3, *end = auth + strcspn(auth, "/?#");

		at = memchr(auth, '@', (size_t)(end - auth));
		colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
		if (colon) {
			o = (size_t)snprintf(ret, len, "%.*s:***", (int)(colon - url), url);
			url = at;
		}
	}
	/* password=VALUE anywhere after (libpq's parameters) */
	for (p = url; *p && o < len; ) {
		if ((p == url || p[-1] == '?' || p[-1] == '&') && strncmp(p, "password=", 9) == 0) {
			o += (size_t)snprintf(ret + o, len - o, "password=***");
			p += 9 + strcspn(p + 9, "&#");
			continue;
		}
		if (o + 1 < len) {
			ret[o++] = *p;
			ret[o] = '\0';
		} else {
			break;
		}
		p++;
	}
}

static const char *word_of(const struct word *w, int value)
{
	for (; w->name; w++)
		if (w->value == value)
			return w->name;
	return "?";
}

void config_each(const struct config *c,
                 void (*fn)(void *arg, const char *name, const char *value), void *arg)
{
	static const char *const units[] = {"sec", "min", "hour", "day"};
	static const int64_t unit_ms[] = {1000, 60000, 3600000, 86400000};

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const struct var *v = &vars[i];
		const char *field = (const char *)c + v->offset;
		char buf[1200];

		buf[0] = '\0';
		switch (v->kind) {
		case K_STR:
			if (is_secret_var(v))
				snprintf(buf, sizeof(buf), "%s", field[0] ? "(set)" : "");
			else
				snprintf(buf, sizeof(buf), "%s", field);
			break;
		case K_LISTEN:
		case K_URL:
		case K_CIDRS:
			snprintf(buf, sizeof(buf), "%s", field);
			break;
		case K_DBURL:
			config_redact_url(field, buf, sizeof(buf));
			break;
		case K_INT:
			snprintf(buf, sizeof(buf), "%lld", (long long)*(const int64_t *)(const void *)field);
			break;
		case K_BOOL:
			snprintf(buf, sizeof(buf), "%s", *(const bool *)(const void *)field ? "true" : "false");
			break;
		case K_RATE: {
			const struct rate *r = (const void *)field;
			size_t u = 0;

			while (u < 3 && unit_ms[u] != r->period_ms)
				u++;
			if (unit_ms[u] == r->period_ms)
				snprintf(buf, sizeof(buf), "%lld/%s", (long long)r->count, units[u]);
			else
				snprintf(buf, sizeof(buf), "%lld per %lld ms", (long long)r->count,
				         (long long)r->period_ms);
			break;
		}
		case K_ENV:
			snprintf(buf, sizeof(buf), "%s", word_of(env_words, (int)c->env));
			break;
		case K_SMS:
			snprintf(buf, sizeof(buf), "%s", word_of(sms_words, (int)c->sms_backend));
			break;
		case K_JWTALG:
			snprintf(buf, sizeof(buf), "%s", word_of(alg_words, (int)c->jwt_alg));
			break;
		case K_LOGLEVEL:
			snprintf(buf, sizeof(buf), "%s", word_of(level_words, c->log_level));
			break;
		case K_LOGFORMAT:
			snprintf(buf, sizeof(buf), "%s", word_of(format_words, (int)c->log_format));
			break;
		}
		fn(arg, v->name, buf);
		OPENSSL_cleanse(buf, sizeof(buf));
	}
}
