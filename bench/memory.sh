#!/usr/bin/env bash
# Peak RSS of the Caddy proxy (lpauth + reverse_proxy) while 64 clients POST
# 1 MiB bodies (buffered for replay) and 4 MiB / 16 MiB bodies (streamed),
# and while 4 clients get a 300 MiB 401 from upstream (streamed back: lpauth
# holds back at most 64 KiB of a 401), each case in a fresh Caddy process.
# See bench/memory/main.go for the details. Everything runs on 127.0.0.1.
#
#   bench/memory.sh [path/to/caddy]     (default: ./caddy, built by ./xcaddy.sh if missing)
#
# Environment: CLIENTS (default 64), ROUNDS (default 5), SIZES (default
# "1MiB 4MiB 16MiB"), LARGE_401 (default 300MiB; 0 skips it),
# LARGE_401_CLIENTS (default 4). Needs Go and Linux (/proc/<pid>/status).
set -euo pipefail
if [ $# -gt 0 ]; then case $1 in /*) ;; *) set -- "$PWD/$1" ;; esac; fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec go run ./bench/memory "$@"
