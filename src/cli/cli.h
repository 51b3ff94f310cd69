/* The operator's command line (docs/API.md §7): otpd user list|show|
 * set-staff|unset-staff|activate|deactivate, otpd codes PHONE, otpd purge,
 * otpd check-config.  main.c hands it the command line when argv[1] names
 * one of them.
 *
 * The commands use DATABASE_URL (and the rest of the environment) as
 * serve does, and may run while it does.  Exit status: 0 success, 1 an
 * error (one line "otpd: ..." on stderr), 2 bad usage.  --json prints one
 * JSON document on stdout; --help the command's usage.  Every change is
 * written to the audit log with actor "cli", in the change's transaction.
 * No secret is ever printed. */
#ifndef OTPD_CLI_H
#define OTPD_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* Whether cmd is one of the commands above. */
bool cli_is_command(const char *cmd);

/* Run argv[1] (a cli_is_command() command) with its arguments; returns
 * the exit status. */
int cli_main(int argc, char **argv);

/* The commands, one line each, for `otpd --help`. */
void cli_print_commands(FILE *out);

#endif
