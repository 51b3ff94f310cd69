#!/usr/bin/env bash
# Set everything up and run otpd on its embedded default:
# 127.0.0.1:8000, SQLite otpd.db, codes printed to the log (development mode).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
make -j"$(nproc)" >&2
exec build/otpd serve
