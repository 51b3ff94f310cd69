#!/usr/bin/env bash
# Set everything up and run all the tests:
#   0. the lone-clone check: a fresh clone of HEAD, with nothing beside it, builds and
#      passes the unit and fake-provider tests (tools/lone_clone.sh)
#   1. gcc build (-Werror), module-boundary checks, cmocka unit + store tests, pytest black-box suite,
#      and the Debian package + systemd unit (make test-deploy: in this pass only, not under SAN=1)
#   2. clang build (-Werror)
#   3. the whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
jobs=$(nproc)
export WERROR=1

echo "== lone clone: unit + fake-provider tests in a clone with nothing beside it"
tools/lone_clone.sh

echo "== gcc: build + all tests"
make -j"$jobs" CC=gcc all
make CC=gcc test

echo "== clang: build"
make -j"$jobs" CC=clang BUILD=build-clang all

echo "== ASan + UBSan: build + all tests"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
make -j"$jobs" CC=clang SAN=1 all
make CC=clang SAN=1 test
echo "== all tests passed"
