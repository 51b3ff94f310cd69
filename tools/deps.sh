#!/usr/bin/env bash
# Install the Debian 12 packages otpd needs to build, run and test.
# Idempotent: asks apt only for what is missing.
set -euo pipefail

PKGS=(
  build-essential clang libclang-rt-14-dev pkg-config
  libmicrohttpd-dev libjansson-dev libsqlite3-dev libpq-dev
  libcurl4-openssl-dev libssl-dev libjwt-dev libcmocka-dev
  python3 python3-pytest python3-requests python3-jwt python3-cryptography
  python3-jsonschema
  sqlite3 curl openssl
)
# make lint-openapi runs the linter of package-lock.json with node and npm.
# Debian's nodejs + npm only where there is no node at all: a newer node
# (e.g. from another repository) comes with its own npm, which Debian's npm
# package conflicts with.
command -v node >/dev/null 2>&1 || PKGS+=(nodejs npm)
[ "${1:-}" = "--bench" ] && PKGS+=(wrk nginx-light linux-perf)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "otpd: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
