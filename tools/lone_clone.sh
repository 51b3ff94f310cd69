#!/usr/bin/env bash
# The lone-clone check: a clone with nothing beside it must build and pass the
# unit tests and the fake-provider tests.  It catches a test or a build that
# reads a file from outside the repository (which a user's clone lacks).
# It tests what is committed (HEAD), not the work tree.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q . "$tmp/otpd"
cd "$tmp/otpd"
echo "== lone clone in $tmp/otpd (only the clone in that folder)"
[ "$(ls -A "$tmp")" = "otpd" ]
make -s -j"$(nproc)" WERROR=1 all unit > "$tmp/unit.log" 2>&1 || { tail -50 "$tmp/unit.log"; exit 1; }
grep -E '^\[  (PASSED|FAILED|SKIPPED)  \]' "$tmp/unit.log" | sort | uniq -c
if grep -qE '^\[  (FAILED|SKIPPED)  \]' "$tmp/unit.log"; then
	echo "lone clone: a unit test failed or was skipped"; exit 1
fi
OTPD_BIN="$tmp/otpd/build/otpd" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
	tests/blackbox/test_fake.py tests/blackbox/test_sms_provider.py
