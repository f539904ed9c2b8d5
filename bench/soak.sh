#!/usr/bin/env bash
# Soak under faults: steady traffic (8 clients, POST bodies up to 64 KiB,
# each checked byte for byte) through the ./xcaddy.sh binary while the CC
# emulator, one fault at a time, expires sessions, fails logins with 500 and
# 429, delays logins and fails refreshes. Prints requests, failures (and
# whether each was a 503 while CC login was failing), altered bodies, logins,
# and the caddy process's goroutines and RSS at the start and the end.
#
#   bench/soak.sh [duration]       (default 10m; CI runs a 3m one)
#
# Set LPAUTH_CADDY_BIN to soak an existing binary instead of building one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
duration=${1:-10m}
echo "command: bench/soak.sh $duration"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"
LPAUTH_SOAK="$duration" go test -run '^TestE2ESoak$' -count=1 -v -timeout 60m ./e2e |
	grep -E 'soak_test.go|^(--- |ok|FAIL)' | sed 's/^ *soak_test.go:[0-9]*: //'
