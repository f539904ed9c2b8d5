#!/usr/bin/env bash
# What a CC expiry costs the clients of a cluster against one instance:
# concurrent GETs right after CC ended the session, one instance vs
# clusters of 3 and 10, on file_system and Redis storage. See
# bench/cluster-recovery/main.go for the details. Everything runs on
# 127.0.0.1.
#
#   bench/cluster-recovery.sh [path/to/caddy]   (default: a build with Redis storage)
#
# Environment: ROUNDS (default 3), REQUESTS (default 60), SIZES (default
# "1 3 10"), REDIS_ADDR (default: a redis-server of its own). Needs Go and
# redis-server.
set -euo pipefail
if [ $# -gt 0 ]; then case $1 in /*) ;; *) set -- "$PWD/$1" ;; esac; fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec go run ./bench/cluster-recovery "$@"
