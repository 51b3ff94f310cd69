/* Kavenegar REST client pieces used by the worker in sms.c.
 * docs/KAVENEGAR.md §1 (request), §2-§3 (envelope, HTTP status), §10 (client rules).
 *
 * The API key is a path segment of the URL, so the URL is never logged, and
 * neither are curl's error texts (they can carry the URL) nor
 * CURLINFO_EFFECTIVE_URL.  Failures are logged once, here, with the masked
 * phone, the CURLcode name, the HTTP status and return.status. */
#include "kavenegar.h"

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../log.h"
#include "../otp/phone.h"

#define DEFAULT_API_URL "https://api.kavenegar.com"
#define CODE_MAX 32             /* longest code accepted (OTP codes are 6) */
#define CODE_ESCAPED "%7Bcode%7D" /* "{code}" after curl_easy_escape */
#define HOST_MAX 256

struct sms_kavenegar {
	char *url;            /* {api_url}/v1/{key}/{method}.json: secret */
	size_t url_len;
	char *info_url;       /* …/account/info.json: secret too */
	char *status_url;     /* …/sms/status.json: secret too */
	size_t side_url_len;
	char *fixed;          /* "&sender=…" or "&template=…" (escaped), maybe "" */
	char *message;        /* escaped OTP_MESSAGE (sms/send) or NULL (lookup) */
	struct curl_slist *headers;
	long connect_timeout_ms;
	long timeout_ms;
	char host[HOST_MAX];  /* for log lines */
};

struct sms_kavenegar_call {
	const struct sms_kavenegar *kv;
	char phone[OTP_PHONE_LEN + 1];
	char *body;           /* form body; holds the code: wiped */
	size_t body_len;
	char *resp;
	size_t resp_len;
	size_t resp_cap;
	bool resp_too_big;
};

/* Alert-worthy refusals (docs/KAVENEGAR.md §10): configuration or account problems
 * an operator must fix.  Logged as errors; other refusals as warnings. */
static const int alert_codes[] = {401, 403, 407, 412, 416, 418, 424, 426, 432, 501};

static bool is_alert_code(int code)
{
	for (size_t i = 0; i < sizeof(alert_codes) / sizeof(alert_codes[0]); i++)
		if (alert_codes[i] == code)
			return true;
	return false;
}

/* The name of a CURLcode, for logs (curl_easy_strerror is not used: an
 * error text may carry the URL).  NULL when not in this list. */
static const char *curl_code_name(int code)
{
	switch (code) {
	case CURLE_OK: return "CURLE_OK";
	case CURLE_UNSUPPORTED_PROTOCOL: return "CURLE_UNSUPPORTED_PROTOCOL";
	case CURLE_URL_MALFORMAT: return "CURLE_URL_MALFORMAT";
	case CURLE_COULDNT_RESOLVE_PROXY: return "CURLE_COULDNT_RESOLVE_PROXY";
	case CURLE_COULDNT_RESOLVE_HOST: return "CURLE_COULDNT_RESOLVE_HOST";
	case CURLE_COULDNT_CONNECT: return "CURLE_COULDNT_CONNECT";
	case CURLE_WEIRD_SERVER_REPLY: return "CURLE_WEIRD_SERVER_REPLY";
	case CURLE_HTTP2: return "CURLE_HTTP2";
	case CURLE_PARTIAL_FILE: return "CURLE_PARTIAL_FILE";
	case CURLE_WRITE_ERROR: return "CURLE_WRITE_ERROR";
	case CURLE_OUT_OF_MEMORY: return "CURLE_OUT_OF_MEMORY";
	case CURLE_OPERATION_TIMEDOUT: return "CURLE_OPERATION_TIMEDOUT";
	case CURLE_SSL_CONNECT_ERROR: return "CURLE_SSL_CONNECT_ERROR";
	case CURLE_GOT_NOTHING: return "CURLE_GOT_NOTHING";
	case CURLE_SEND_ERROR: return "CURLE_SEND_ERROR";
	case CURLE_RECV_ERROR: return "CURLE_RECV_ERROR";
	case CURLE_PEER_FAILED_VERIFICATION: return "CURLE_PEER_FAILED_VERIFICATION";
	case CURLE_SSL_CACERT_BADFILE: return "CURLE_SSL_CACERT_BADFILE";
	case CURLE_BAD_CONTENT_ENCODING: return "CURLE_BAD_CONTENT_ENCODING";
	case CURLE_HTTP2_STREAM: return "CURLE_HTTP2_STREAM";
	case CURLE_HTTP3: return "CURLE_HTTP3";
	case CURLE_PROXY: return "CURLE_PROXY";
	case CURLE_ABORTED_BY_CALLBACK: return "CURLE_ABORTED_BY_CALLBACK";
	default: return NULL;
	}
}

/* ---- the pure part ---------------------------------------------------- */

/* An envelope is a JSON object whose "return" is an object with an integer
 * "status" (docs/KAVENEGAR.md §2).  Returns true and sets *ret_status if body is one. */
/* entries[0].messageid of an accepted send (entries an array, or a bare
 * object: docs/KAVENEGAR.md §4.2); 0 when there is none. */
static int64_t first_message_id(const json_t *root)
{
	json_t *e = json_object_get(root, "entries"), *id;

	if (json_is_array(e))
		e = json_array_get(e, 0);
	id = json_is_object(e) ? json_object_get(e, "messageid") : NULL;
	return json_is_integer(id) && json_integer_value(id) > 0 ? (int64_t)json_integer_value(id) : 0;
}

/* As parse_envelope(), and the first message id (ret_message_id not NULL):
 * the body is parsed once. */
static bool parse_envelope_id(const char *body, size_t len, int *ret_status,
                              int64_t *ret_message_id)
{
	json_error_t err;
	json_t *root, *ret, *status;
	json_int_t v;
	bool ok = false;

	if (!body || len == 0)
		return false;
	root = json_loadb(body, len, 0, &err);
	if (!root)
		return false;
	if (!json_is_object(root))
		goto out;
	ret = json_object_get(root, "return");
	if (!json_is_object(ret))
		goto out;
	status = json_object_get(ret, "status");
	if (!json_is_integer(status))
		goto out;
	v = json_integer_value(status);
	if (v < 0 || v > 99999)
		goto out;
	*ret_status = (int)v;
	if (ret_message_id)
		*ret_message_id = v == 200 ? first_message_id(root) : 0;
	ok = true;
out:
	json_decref(root);
	return ok;
}

/* sms_kavenegar_classify() plus the envelope's status (-1 if none). */

static bool parse_envelope(const char *body, size_t len, int *ret_status)
{
	return parse_envelope_id(body, len, ret_status, NULL);
}

static struct sms_result classify(int transport_ok, const char *body,
                                  size_t len, int *ret_envelope)
{
	struct sms_result r = {OTPD_SMS_UNAVAILABLE, 0, -1, 0};
	int status;

	*ret_envelope = -1;
	if (!transport_ok || !parse_envelope_id(body, len, &status, &r.message_id))
		return r;
	*ret_envelope = status;
	r.return_status = status;
	if (status == 200) {
		r.status = OTPD_OK;
	} else if (status == 409) {
		r.status = OTPD_SMS_UNAVAILABLE;  /* busy: the one retryable code */
	} else {
		r.status = OTPD_SMS_REJECTED;
		r.provider_status = status;
	}
	return r;
}

struct sms_result sms_kavenegar_classify(int transport_ok, long http_status,
                                         const char *body, size_t len)
{
	int envelope;

	/* docs/KAVENEGAR.md §3: the envelope decides whatever the HTTP status. */
	(void)http_status;
	return classify(transport_ok, body, len, &envelope);
}

bool sms_alnum_is_valid(const char *s, size_t max)
{
	size_t n = 0;

	if (!s)
		return false;
	for (; s[n]; n++) {
		char c = s[n];
		if (n >= max)
			return false;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      (c >= '0' && c <= '9')))
			return false;
	}
	return n > 0;
}

bool sms_kavenegar_key_is_valid(const char *key)
{
	return sms_alnum_is_valid(key, SMS_KEY_MAX);
}

/* ---- setup ------------------------------------------------------------ */

/* Checks the base URL (http or https, with a host) and copies its host. */
static bool base_url_is_valid(const char *url, char host[HOST_MAX])
{
	CURLU *u = curl_url();
	char *scheme = NULL, *h = NULL;
	bool ok = false;

	if (!u)
		return false;
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
		goto out;
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK)
		goto out;
	if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
		goto out;
	if (strlen(h) >= HOST_MAX)
		goto out;
	memcpy(host, h, strlen(h) + 1);
	ok = true;
out:
	curl_free(scheme);
	curl_free(h);
	curl_url_cleanup(u);
	return ok;
}

/* "&name=" + escaped value, malloc'ed. */
static char *form_pair(const char *name, const char *value)
{
	char *esc, *out = NULL;
	size_t n;

	esc = curl_easy_escape(NULL, value, 0);
	if (!esc)
		return NULL;
	n = strlen(name) + strlen(esc) + 3;
	out = malloc(n);
	if (out)
		snprintf(out, n, "&%s=%s", name, esc);
	curl_free(esc);
	return out;
}

static void wipe_free(char *s, size_t len)
{
	if (!s)
		return;
	OPENSSL_cleanse(s, len);
	free(s);
}

enum otpd_status sms_kavenegar_new(const struct sms_config *cfg,
                                   struct sms_kavenegar **ret)
{
	struct sms_kavenegar *kv = NULL;
	enum otpd_status st = OTPD_INTERNAL;
	const char *base = cfg->api_url && cfg->api_url[0] ? cfg->api_url
	                                                    : DEFAULT_API_URL;
	const char *method;
	size_t base_len;
	bool lookup = cfg->template_name && cfg->template_name[0];

	if (!sms_kavenegar_key_is_valid(cfg->api_key)) {
		/* Never print the key, not even a bad one. */
		log_error("sms.config", "KAVENEGAR_API_KEY: expected letters and digits only");
		goto out;
	}
	kv = calloc(1, sizeof(*kv));
	if (!kv) {
		st = OTPD_NOMEM;
		goto out;
	}
	if (!base_url_is_valid(base, kv->host)) {
		log_error("sms.config", "KAVENEGAR_API_URL: expected an http or https URL");
		goto out;
	}
	if (!lookup && (!cfg->message || !strstr(cfg->message, "{code}"))) {
		log_error("sms.config", "OTP_MESSAGE: must contain {code}");
		goto out;
	}

	st = OTPD_NOMEM;
	base_len = strlen(base);
	while (base_len > 0 && base[base_len - 1] == '/')
		base_len--;
	method = lookup ? "/verify/lookup.json" : "/sms/send.json";
	kv->url_len = base_len + strlen("/v1/") + strlen(cfg->api_key) + strlen(method) + 1;
	kv->url = malloc(kv->url_len);
	if (!kv->url)
		goto out;
	snprintf(kv->url, kv->url_len, "%.*s/v1/%s%s", (int)base_len, base,
	         cfg->api_key, method);
	kv->side_url_len = base_len + strlen("/v1/") + strlen(cfg->api_key) +
	                   strlen("/account/info.json") + 1;
	kv->info_url = malloc(kv->side_url_len);
	kv->status_url = malloc(kv->side_url_len);
	if (!kv->info_url || !kv->status_url)
		goto out;
	snprintf(kv->info_url, kv->side_url_len, "%.*s/v1/%s/account/info.json",
	         (int)base_len, base, cfg->api_key);
	snprintf(kv->status_url, kv->side_url_len, "%.*s/v1/%s/sms/status.json",
	         (int)base_len, base, cfg->api_key);

	if (lookup) {
		kv->fixed = form_pair("template", cfg->template_name);
	} else if (cfg->sender && cfg->sender[0]) {
		kv->fixed = form_pair("sender", cfg->sender);
	} else {
		kv->fixed = strdup("");  /* the account's default line */
	}
	if (!kv->fixed)
		goto out;
	if (!lookup) {
		char *esc = curl_easy_escape(NULL, cfg->message, 0);
		if (!esc)
			goto out;
		kv->message = strdup(esc);
		curl_free(esc);
		if (!kv->message)
			goto out;
	}
	kv->headers = curl_slist_append(NULL, "Accept: application/json");
	if (!kv->headers)
		goto out;
	{
		struct curl_slist *h = curl_slist_append(kv->headers, "Expect:");
		if (!h)
			goto out;
		kv->headers = h;
	}
	kv->connect_timeout_ms = cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 3000;
	kv->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 10000;

	*ret = kv;
	kv = NULL;
	st = OTPD_OK;
out:
	sms_kavenegar_free(kv);
	return st;
}

void sms_kavenegar_free(struct sms_kavenegar *kv)
{
	if (!kv)
		return;
	wipe_free(kv->url, kv->url_len);
	wipe_free(kv->info_url, kv->side_url_len);
	wipe_free(kv->status_url, kv->side_url_len);
	free(kv->fixed);
	free(kv->message);
	curl_slist_free_all(kv->headers);
	free(kv);
}

/* ---- one call --------------------------------------------------------- */

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct sms_kavenegar_call *call = userdata;
	size_t n = size * nmemb;

	if (n > SMS_KAVENEGAR_MAX_RESPONSE - call->resp_len) {
		call->resp_too_big = true;
		return 0;  /* -> CURLE_WRITE_ERROR */
	}
	if (call->resp_len + n > call->resp_cap) {
		size_t cap = call->resp_cap ? call->resp_cap : 1024;
		char *p;
		while (cap < call->resp_len + n)
			cap *= 2;
		if (cap > SMS_KAVENEGAR_MAX_RESPONSE)
			cap = SMS_KAVENEGAR_MAX_RESPONSE;
		p = realloc(call->resp, cap);
		if (!p)
			return 0;
		call->resp = p;
		call->resp_cap = cap;
	}
	memcpy(call->resp + call->resp_len, ptr, n);
	call->resp_len += n;
	return n;
}

/* The form body.  National number and code are letters/digits, which
 * curl_easy_escape leaves as they are, so they are copied in directly and
 * the code never passes through a buffer we cannot wipe. */
static char *build_body(const struct sms_kavenegar *kv, const char *national,
                        const char *code, size_t *ret_len)
{
	size_t code_len = strlen(code);
	size_t esc_len = strlen(CODE_ESCAPED);
	size_t n, len;
	const char *p;
	char *body, *w;

	n = strlen("receptor=") + strlen(national) + strlen(kv->fixed);
	if (kv->message) {
		n += strlen("&message=");
		for (p = kv->message; *p;) {
			if (strncmp(p, CODE_ESCAPED, esc_len) == 0) {
				n += code_len;
				p += esc_len;
			} else {
				n++;
				p++;
			}
		}
	} else {
		n += strlen("&token=") + code_len;
	}
	body = malloc(n + 1);
	if (!body)
		return NULL;
	len = (size_t)snprintf(body, n + 1, "receptor=%s%s%s", national, kv->fixed,
	                       kv->message ? "&message=" : "&token=");
	w = body + len;
	if (kv->message) {
		for (p = kv->message; *p;) {
			if (strncmp(p, CODE_ESCAPED, esc_len) == 0) {
				memcpy(w, code, code_len);
				w += code_len;
				p += esc_len;
			} else {
				*w++ = *p++;
			}
		}
	} else {
		memcpy(w, code, code_len);
		w += code_len;
	}
	*w = '\0';
	*ret_len = (size_t)(w - body);
	return body;
}

static enum otpd_status configure(struct sms_kavenegar_call *call, CURL *h,
                                  const char *url);

enum otpd_status sms_kavenegar_call_new(const struct sms_kavenegar *kv,
                                        void *easy, const char *phone,
                                        const char *code,
                                        struct sms_kavenegar_call **ret)
{
	struct sms_kavenegar_call *call = NULL;
	char national[OTP_PHONE_NATIONAL_LEN + 1] = "";
	enum otpd_status st = OTPD_INTERNAL;
	CURL *h = easy;

	if (strlen(phone) != OTP_PHONE_LEN || !sms_alnum_is_valid(code, CODE_MAX))
		goto out;
	otp_phone_national(phone, national);
	if (!sms_alnum_is_valid(national, OTP_PHONE_NATIONAL_LEN))
		goto out;

	st = OTPD_NOMEM;
	call = calloc(1, sizeof(*call));
	if (!call)
		goto out;
	call->kv = kv;
	memcpy(call->phone, phone, OTP_PHONE_LEN + 1);
	call->body = build_body(kv, national, code, &call->body_len);
	if (!call->body)
		goto out;

	st = configure(call, h, kv->url);
	if (st != OTPD_OK)
		goto out;
	*ret = call;
	call = NULL;
out:
	OPENSSL_cleanse(national, sizeof(national));
	sms_kavenegar_call_free(call);
	return st;
}

/* docs/KAVENEGAR.md §1 recipe, for any method: a form POST of call->body to
 * url.  POSTFIELDS (not COPYPOSTFIELDS): curl does not keep its own copy of
 * the body (a send's holds the code; ours is wiped in call_free). */
static enum otpd_status configure(struct sms_kavenegar_call *call, CURL *h, const char *url)
{
	const struct sms_kavenegar *kv = call->kv;
	CURLcode rc = CURLE_OK;

	if (!rc) rc = curl_easy_setopt(h, CURLOPT_URL, url);
	if (!rc) rc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	if (!rc) rc = curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	if (!rc) rc = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)call->body_len);
	if (!rc) rc = curl_easy_setopt(h, CURLOPT_POSTFIELDS, call->body);
	if (!rc) rc = curl_easy_setopt(h, CURLOPT_HTTPHEADER, kv->headers);
	if (!rc) rc = curl_easy_setopt(h, CURLOPT_USERAGENT, "otpd");
	if (!rc) rc = curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, kv->connect_timeout_ms);
	if (!rc) rc = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, kv->timeout_ms);
	if (!rc) rc = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	if (!rc) rc = curl_easy_setopt(h, CURLOPT_FAILONERROR, 0L);
	if (!rc) rc = curl_easy_setopt(h, CURLOPT_VERBOSE, 0L);
	if (!rc) rc = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	if (!rc) rc = curl_easy_setopt(h, CURLOPT_WRITEDATA, call);
	if (rc) {
		log_error("sms.internal", "cannot configure the SMS request: curl error %d (%s)",
		          (int)rc, curl_code_name(rc) ? curl_code_name(rc) : "?");
		return OTPD_INTERNAL;
	}
	return OTPD_OK;
}

struct sms_result sms_kavenegar_call_finish(struct sms_kavenegar_call *call,
                                            void *easy, int curl_code)
{
	char masked[OTP_PHONE_MASKED_LEN];
	struct sms_result r;
	long http = 0;
	int envelope;
	const char *name = curl_code_name(curl_code);
	json_t *fields;

	curl_off_t total_us = 0;

	curl_easy_getinfo((CURL *)easy, CURLINFO_RESPONSE_CODE, &http);
	curl_easy_getinfo((CURL *)easy, CURLINFO_TOTAL_TIME_T, &total_us);
	r = classify(curl_code == CURLE_OK, call->resp, call->resp_len, &envelope);
	otp_phone_mask(call->phone, masked);

	/* The one line per provider failure (nothing above logs it again):
	 * status, masked number, latency; never the URL, which holds the key. */
	fields = json_pack("{s:s, s:i, s:I, s:I}", "phone", masked, "curl_code", curl_code,
	                   "http_status", (json_int_t)http,
	                   "duration_ms", (json_int_t)(total_us / 1000));
	if (fields && envelope >= 0)
		json_object_set_new(fields, "provider_status", json_integer(envelope));

	if (r.status == OTPD_OK) {
		log_fields(LOG_LEVEL_DEBUG, "sms.accepted", fields,
		           "SMS for %s accepted by the provider", masked);
	} else if (r.status == OTPD_SMS_REJECTED) {
		log_fields(is_alert_code(envelope) ? LOG_LEVEL_ERROR : LOG_LEVEL_WARN,
		           "sms.rejected", fields,
		           "SMS provider '%s' refused the SMS for %s: return.status %d (HTTP %ld)",
		           call->kv->host, masked, envelope, http);
	} else if (envelope >= 0) {
		log_fields(LOG_LEVEL_WARN, "sms.unavailable", fields,
		           "SMS provider '%s' is busy: return.status %d (HTTP %ld), SMS for %s not sent",
		           call->kv->host, envelope, http, masked);
	} else if (curl_code != CURLE_OK) {
		if (call->resp_too_big)
			name = "response larger than 64 KiB";
		log_fields(LOG_LEVEL_WARN, "sms.unavailable", fields,
		           "cannot reach SMS provider '%s': %s (curl error %d, HTTP %ld), SMS for %s not sent",
		           call->kv->host, name ? name : "error", curl_code, http, masked);
	} else {
		log_fields(LOG_LEVEL_WARN, "sms.unavailable", fields,
		           "SMS provider '%s' answered HTTP %ld without a Kavenegar envelope (%zu bytes), SMS for %s not sent",
		           call->kv->host, http, call->resp_len, masked);
	}
	return r;
}

void sms_kavenegar_call_free(struct sms_kavenegar_call *call)
{
	if (!call)
		return;
	wipe_free(call->body, call->body_len);
	free(call->resp);
	free(call);
}

/* ---- account/info and sms/status (the worker's own calls) ---------------- */

static enum otpd_status side_new(const struct sms_kavenegar *kv, CURL *h, const char *url,
                                 char *body, struct sms_kavenegar_call **ret)
{
	struct sms_kavenegar_call *call = calloc(1, sizeof(*call));
	enum otpd_status st;

	if (!call || !body) {
		free(call);
		free(body);
		return OTPD_NOMEM;
	}
	call->kv = kv;
	call->body = body;
	call->body_len = strlen(body);
	st = configure(call, h, url);
	if (st != OTPD_OK) {
		sms_kavenegar_call_free(call);
		return st;
	}
	*ret = call;
	return OTPD_OK;
}

enum otpd_status sms_kavenegar_info_new(const struct sms_kavenegar *kv, void *easy,
                                        struct sms_kavenegar_call **ret)
{
	return side_new(kv, easy, kv->info_url, strdup(""), ret);
}

enum otpd_status sms_kavenegar_status_new(const struct sms_kavenegar *kv, void *easy,
                                          const int64_t *ids, size_t n,
                                          struct sms_kavenegar_call **ret)
{
	size_t cap = strlen("messageid=") + n * 21 + 1, len;
	char *body;

	if (n == 0 || n > SMS_KAVENEGAR_STATUS_MAX)
		return OTPD_INTERNAL;
	body = malloc(cap);
	if (!body)
		return OTPD_NOMEM;
	len = (size_t)snprintf(body, cap, "messageid=");
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(body + len, cap - len, "%s%lld", i ? "%2C" : "",
		                        (long long)ids[i]);
	return side_new(kv, easy, kv->status_url, body, ret);
}

enum otpd_status sms_kavenegar_side_finish(struct sms_kavenegar_call *call, void *easy,
                                           int curl_code, char *why, size_t whylen)
{
	long http = 0;
	int envelope = -1;
	const char *name;

	curl_easy_getinfo((CURL *)easy, CURLINFO_RESPONSE_CODE, &http);
	if (curl_code != CURLE_OK) {
		name = call->resp_too_big ? "response larger than 64 KiB" : curl_code_name(curl_code);
		snprintf(why, whylen, "cannot reach '%s': %s (curl error %d, HTTP %ld)",
		         call->kv->host, name ? name : "error", curl_code, http);
		return OTPD_SMS_UNAVAILABLE;
	}
	if (!parse_envelope(call->resp, call->resp_len, &envelope)) {
		snprintf(why, whylen, "'%s' answered HTTP %ld without a Kavenegar envelope",
		         call->kv->host, http);
		return OTPD_SMS_UNAVAILABLE;
	}
	if (envelope != 200) {
		snprintf(why, whylen, "'%s' refused: return.status %d (HTTP %ld)",
		         call->kv->host, envelope, http);
		return envelope == 409 ? OTPD_SMS_UNAVAILABLE : OTPD_SMS_REJECTED;
	}
	return OTPD_OK;
}

const char *sms_kavenegar_call_response(const struct sms_kavenegar_call *call, size_t *ret_len)
{
	*ret_len = call->resp_len;
	return call->resp;
}

bool sms_kavenegar_parse_credit(const char *body, size_t len, double *ret)
{
	json_t *root = json_loadb(body, len, 0, NULL), *e, *c;
	bool ok = false;

	e = root ? json_object_get(root, "entries") : NULL;
	if (json_is_array(e)) /* tolerated, as for verify/lookup */
		e = json_array_get(e, 0);
	c = json_is_object(e) ? json_object_get(e, "remaincredit") : NULL;
	if (json_is_number(c) && json_number_value(c) >= 0) {
		*ret = json_number_value(c);
		ok = true;
	}
	json_decref(root);
	return ok;
}

size_t sms_kavenegar_parse_statuses(const char *body, size_t len,
                                    struct sms_kavenegar_status *out, size_t cap)
{
	json_t *root = json_loadb(body, len, 0, NULL), *e, *item;
	size_t n = 0, i;

	e = root ? json_object_get(root, "entries") : NULL;
	if (json_is_object(e)) { /* a single entry as a bare object */
		json_t *a = json_array();
		json_array_append(a, e);
		e = a;
	} else {
		json_incref(e);
	}
	json_array_foreach(e, i, item) {
		json_t *id = json_object_get(item, "messageid"), *st = json_object_get(item, "status");
		if (n == cap)
			break;
		if (!json_is_integer(id) || !json_is_integer(st) || json_integer_value(id) <= 0 ||
		    json_integer_value(st) < 0 || json_integer_value(st) > 99999)
			continue;
		out[n].message_id = (int64_t)json_integer_value(id);
		out[n].status = (int)json_integer_value(st);
		n++;
	}
	json_decref(e);
	json_decref(root);
	return n;
}
