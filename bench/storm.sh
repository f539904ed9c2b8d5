#!/usr/bin/env bash
# Login storm through lpauth: bursts of 1,000 concurrent GETs with a live
# session and right after CC expired it (re-login delayed 200ms); reports
# latency percentiles and the logins and refreshes CC saw. See
# bench/storm/main.go for the details. Everything runs on 127.0.0.1.
#
#   bench/storm.sh [path/to/caddy]     (default: ./caddy, built by ./xcaddy.sh if missing)
#
# Environment: REPEAT (default 3), REQUESTS (default 1000), LOGIN_DELAY
# (default 200ms). Needs Go.
set -euo pipefail
if [ $# -gt 0 ]; then case $1 in /*) ;; *) set -- "$PWD/$1" ;; esac; fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec go run ./bench/storm "$@"
