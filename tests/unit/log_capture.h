/* Log capture for the cmocka suites: a temporary file as the log fd.
 * Include after <cmocka.h> (it asserts). */
#ifndef OTPD_TEST_LOG_CAPTURE_H
#define OTPD_TEST_LOG_CAPTURE_H

#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>
#include "log.h"

static int log_capture_start(void)
{
	char path[] = "/tmp/otpd-test-log-XXXXXX";
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	unlink(path);
	log_set_fd(fd);
	return fd;
}

/* Everything logged since log_capture_start(fd), NUL-terminated (static
 * buffer); logging goes back to stderr. */
static char *log_capture_end(int fd)
{
	static char buf[65536];
	ssize_t n;

	log_set_fd(2);
	assert_true(lseek(fd, 0, SEEK_SET) == 0);
	n = read(fd, buf, sizeof(buf) - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	close(fd);
	return buf;
}

#endif
