/* Shared by the files of auth/. */
#ifndef OTPD_AUTH_INTERNAL_H
#define OTPD_AUTH_INTERNAL_H

#include "../config.h"
#include "../otp/code.h"
#include "../otp/policy.h"
#include "../sms/sms.h"
#include "../store/store.h"
#include "jwt.h"

struct auth {
	const struct config *cfg;
	struct store *store;
	struct sms *sms;
	struct otp_policy policy;
	struct otp_hasher *code_hasher; /* keyed with a subkey of SECRET_KEY */
	struct otp_hasher *csrf_hasher; /* another subkey: staff sessions' CSRF tokens */
	struct auth_jwt *jwt;
};

/* Fresh jtis and times for a new session record (family filled too). */
enum otpd_status auth_session_prepare(const struct auth *a, int64_t now_ms,
                                      struct store_session *ret);

/* Mint the access + refresh pair of a session record: iat = created, the
 * refresh exp = the record's expiry, the access exp = iat + access TTL.
 * Minting the same record twice gives the same claims. */
enum otpd_status auth_session_mint(const struct auth *a, int64_t user_id,
                                   const struct store_session *s,
                                   char **ret_access, char **ret_refresh);

#endif
