#!/usr/bin/env bash
# Password rotation under steady POST traffic: the password changed at CC,
# written to the file lpauth reads it from, `caddy reload --force`,
# ROTATIONS times; once with CC keeping the user's live sessions at the
# change and once with CC ending them. Reports failed requests, logins,
# logouts, refused logins, upstream 401s, the steady p99 and the worst
# latency during each rotation. See bench/rotation/main.go for the
# details. Everything runs on 127.0.0.1.
#
#   bench/rotation.sh [path/to/caddy]   (default: ./caddy, built by ./xcaddy.sh if missing)
#
# Environment: ROTATIONS (default 5), CLIENTS (default 8), BODY (bytes,
# default 4096), DELAY (default 50ms), SETTLE (default 2s), GAP (default
# 0). Needs Go.
set -euo pipefail
if [ $# -gt 0 ]; then case $1 in /*) ;; *) set -- "$PWD/$1" ;; esac; fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec go run ./bench/rotation "$@"
