#!/usr/bin/env bash
# Install the Debian 12 packages otpd needs.  Idempotent: asks apt only for what is missing.
#   tools/deps.sh            build, run and test (tools/test.sh): the run set + clang, cmocka, pytest…,
#                            headless Chromium + chromedriver + selenium, iproute2 and a font (the docs
#                            page's browser test, tests/blackbox/test_docs_page.py)
#                            + dpkg-dev, debhelper, lintian, systemd (systemd-analyze) for make
#                            test-deploy, nginx-light for the TLS proxy test (test_nginx.py)
#   tools/deps.sh run        build and run only (tools/run.sh): compiler, pkg-config, the -dev
#                            libraries, sqlite3, curl, openssl, ca-certificates
#                            and PostgreSQL 15 (the suite runs on both backends; it starts its own
#                            throwaway server, tests/pgcluster.py)
#   tools/deps.sh --bench    the test set + wrk, nginx, perf (make bench)
#   tools/deps.sh cluster    the run set + PostgreSQL 15 and nginx (tools/cluster.sh)
#   tools/deps.sh --missing [run|cluster|--bench]   print what is missing (one line), install nothing
set -euo pipefail

RUN_PKGS=(
  build-essential pkg-config
  libmicrohttpd-dev libjansson-dev libsqlite3-dev libpq-dev
  libcurl4-openssl-dev libssl-dev libjwt-dev
  sqlite3 curl openssl ca-certificates
)
TEST_PKGS=(
  clang libclang-rt-14-dev libcmocka-dev
  python3 python3-pytest python3-requests python3-jwt python3-cryptography
  python3-prometheus-client python3-jsonschema
  chromium chromium-driver python3-selenium iproute2 fonts-dejavu-core
  postgresql-15
  dpkg-dev debhelper lintian systemd nginx-light
)
CLUSTER_PKGS=(postgresql-15 nginx-light)
BENCH_PKGS=(wrk nginx-light linux-perf)

mode=test
list_only=0
for arg in "$@"; do
  case "$arg" in
    run|--run) mode=run ;;
    cluster|--cluster) mode=cluster ;;
    test|--test) mode=test ;;
    --bench) mode=bench ;;
    --missing) list_only=1 ;;
    *) echo "usage: tools/deps.sh [run|cluster|--bench] [--missing]" >&2; exit 2 ;;
  esac
done

PKGS=("${RUN_PKGS[@]}")
[ "$mode" = cluster ] && PKGS+=("${CLUSTER_PKGS[@]}")
[ "$mode" = test ] || [ "$mode" = bench ] && PKGS+=("${TEST_PKGS[@]}")
[ "$mode" = bench ] && PKGS+=("${BENCH_PKGS[@]}")
# make lint-openapi (tests) runs the linter of package-lock.json with node and npm:
# Debian's nodejs + npm only where there is no node at all (a newer node, e.g. from
# another repository, comes with its own npm, which Debian's npm package conflicts with).
if { [ "$mode" = test ] || [ "$mode" = bench ]; } && ! command -v node >/dev/null 2>&1; then
  PKGS+=(nodejs npm)
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "$list_only" = 1 ]; then
  [ ${#missing[@]} -eq 0 ] || echo "${missing[*]}"
  exit 0
fi
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "otpd: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
