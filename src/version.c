/* The version otpd reports (otpd --version): the VERSION file, and the git
 * commit it was built from when built from a checkout.  OTPD_VERSION is set
 * by the Makefile for this file alone. */
#include "version.h"

#ifndef OTPD_VERSION
#define OTPD_VERSION "unknown"
#endif

const char *otpd_version(void) { return OTPD_VERSION; }
