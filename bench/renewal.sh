#!/usr/bin/env bash
# AppJWT renewal under steady traffic: rounds alternate A (a token short
# enough to be renewed three times per round) and B (a token that outlives
# the round), each in a fresh Caddy; reports latency percentiles, the token
# fetches CC saw and the requests that waited for one, and the p99 ratio
# A/B. See bench/renewal/main.go for the details. Everything runs on
# 127.0.0.1.
#
#   bench/renewal.sh [path/to/caddy]   (default: ./caddy, built by ./xcaddy.sh if missing)
#
# Environment: ROUNDS (default 4), DURATION (default 12s), CLIENTS
# (default 8), LIFETIME (default 4s), FETCH_DELAY (default 200ms),
# WAITED_OVER (default 150ms). Needs Go.
set -euo pipefail
if [ $# -gt 0 ]; then case $1 in /*) ;; *) set -- "$PWD/$1" ;; esac; fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec go run ./bench/renewal "$@"
