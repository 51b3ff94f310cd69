#include "admin.h"

#include <openssl/crypto.h>
#include <string.h>
#include "internal.h"

bool auth_csrf_token(const struct auth *a, const char *family, char ret[AUTH_CSRF_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t mac[OTP_HASH_LEN];

	if (!family || !*family || !otp_hasher_mac(a->csrf_hasher, family, strlen(family), mac))
		return false;
	for (size_t i = 0; i < sizeof(mac); i++) {
		ret[2 * i] = hex[mac[i] >> 4];
		ret[2 * i + 1] = hex[mac[i] & 15];
	}
	ret[AUTH_CSRF_LEN] = '\0';
	otp_wipe(mac, sizeof(mac));
	return true;
}

bool auth_code_hash(const struct auth *a, const char *phone, const char *code,
                    uint8_t ret[OTP_HASH_LEN])
{
	return otp_hasher_hash(a->code_hasher, phone, code, ret);
}

/* given is the expected token: same length, same bytes, compared in
 * constant time (the length is public: always AUTH_CSRF_LEN). */
static bool csrf_equal(const char *given, const char *want)
{
	return given && strlen(given) == AUTH_CSRF_LEN &&
	       CRYPTO_memcmp(given, want, AUTH_CSRF_LEN) == 0;
}

static void on_staff_read(void *arg, enum otpd_status status)
{
	struct auth_admin_op *op = arg;

	op->status = status;
	op->done(op->arg);
}

enum otpd_status auth_admin_start(struct auth *a, const char *access_token, int64_t now_ms,
                                  bool csrf_required, const char *csrf_header,
                                  const char *csrf_cookie, struct auth_admin_op *op,
                                  auth_verify_done_fn done, void *arg)
{
	enum otpd_status st;

	memset(op, 0, sizeof(*op));
	op->status = OTPD_INTERNAL;
	op->done = done;
	op->arg = arg;
	st = auth_jwt_verify(a->jwt, access_token, AUTH_TOKEN_ACCESS, now_ms / 1000, true,
	                     &op->claims);
	if (st != OTPD_OK)
		return st;
	if (csrf_required) {
		char want[AUTH_CSRF_LEN + 1];
		bool ok = auth_csrf_token(a, op->claims.sid, want) &&
		          csrf_equal(csrf_header, want) && csrf_equal(csrf_cookie, want);

		otp_wipe(want, sizeof(want));
		if (!ok)
			return OTPD_FORBIDDEN;
	}
	return store_user_get_start(a->store, op->claims.user_id, &op->staff, on_staff_read, op);
}

enum otpd_status auth_admin_finish(const struct auth_admin_op *op)
{
	if (op->status == OTPD_NOT_FOUND)
		return OTPD_INVALID_TOKEN;
	if (op->status != OTPD_OK)
		return op->status;
	if (!op->staff.is_active)
		return OTPD_USER_INACTIVE;
	if (!op->staff.is_staff)
		return OTPD_FORBIDDEN;
	return OTPD_OK;
}
