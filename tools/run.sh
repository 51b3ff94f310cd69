#!/usr/bin/env bash
# Install what is needed to build and run otpd (tools/deps.sh run: no test tools), build it,
# and serve in the foreground on the embedded default: 127.0.0.1:8000, SQLite otpd.db in the
# repository root, codes printed to the log (development mode; on a terminal the log is text
# and each code stands on a "CODE" line).  Environment variables pass through to otpd
# (OTPD_LISTEN=127.0.0.1:9000 tools/run.sh).
#
# Quiet: apt's and the compiler's output go to build/run-setup.log, one line per step here;
# when a step fails, the last lines of that log and its path.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
log=build/run-setup.log
: >"$log"

failed() {
  echo "otpd: $1 failed; the last lines of $log:" >&2
  tail -n 25 "$log" | sed 's/^/  | /' >&2
  echo "otpd: the whole log is $PWD/$log" >&2
  exit 1
}

missing=$(tools/deps.sh run --missing) || failed "checking the packages"
if [ -n "$missing" ]; then
  echo "otpd: installing build packages (log: $log)…" >&2
  tools/deps.sh run >>"$log" 2>&1 || failed "installing the packages"
fi

echo "otpd: building (log: $log)…" >&2
make -j"$(nproc)" all >>"$log" 2>&1 || failed "building"

echo "otpd: serving on http://${OTPD_LISTEN:-127.0.0.1:8000} (Ctrl-C stops)" >&2
exec build/otpd serve
