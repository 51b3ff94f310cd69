#ifndef OTPD_VERSION_H
#define OTPD_VERSION_H

/* "0.1.0" from a release tarball; "0.1.0+g1a2b3c4" (and "-dirty" with
 * uncommitted changes) from a git checkout. */
const char *otpd_version(void);

#endif
