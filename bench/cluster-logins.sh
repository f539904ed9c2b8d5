#!/usr/bin/env bash
# Logins CC sees when N Caddy instances front one CC user, with cluster mode
# (shared file_system storage) off and on: a start under load, then a
# server-side expiry under load. Everything runs on 127.0.0.1.
#
#   bench/cluster-logins.sh [path/to/caddy]     (default: ./caddy, built by ./xcaddy.sh if missing)
#
# Environment: COUNTS (default "1 3 5"), PER_INSTANCE concurrent requests per
# instance and phase (default 20).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

caddy=${1:-./caddy}
[ -x "$caddy" ] || ./xcaddy.sh "$caddy" >/dev/null
counts=${COUNTS:-1 3 5}
per=${PER_INSTANCE:-20}
work=$(mktemp -d)
export XDG_CONFIG_HOME="$work/xdg" XDG_DATA_HOME="$work/xdg"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

emu_port=$(free_port)
cat >"$work/emu.Caddyfile" <<EOC
{
	admin off
	persist_config off
	auto_https off
}
http://127.0.0.1:$emu_port {
	ccemu {
		control_path /_ccemu
	}
}
EOC
"$caddy" run --config "$work/emu.Caddyfile" >"$work/emu.log" 2>&1 &
pids+=($!)
wait_port "$emu_port"
control="http://127.0.0.1:$emu_port/_ccemu"
logins() { curl -fsS "$control/counters" | python3 -c 'import json,sys; print(json.load(sys.stdin)["login_attempts"])'; }

# run MODE N: prints "startup expiry" login counts
run() {
	local mode=$1 n=$2 ports=() i
	curl -fsS -X POST "$control/reset" >/dev/null
	curl -fsS -X POST "$control/delay-logins?count=1&delay=300ms" >/dev/null
	local storage=""
	if [ "$mode" = on ]; then storage="storage"; fi
	local run_pids=()
	for i in $(seq 1 "$n"); do
		local port
		port=$(free_port)
		ports+=("$port")
		cat >"$work/inst$i.Caddyfile" <<EOC
{
	admin off
	persist_config off
	auto_https off
	storage file_system {
		root $work/shared-$n-$mode
	}
}
http://127.0.0.1:$port {
	lpauth {
		account_id 12345678
		username demo-agent
		password demo-password
		csds http://127.0.0.1:$emu_port
		$storage
	}
	reverse_proxy 127.0.0.1:$emu_port
}
EOC
		"$caddy" run --config "$work/inst$i.Caddyfile" >"$work/inst$i-$mode.log" 2>&1 &
		run_pids+=($!)
		pids+=($!)
	done
	for port in "${ports[@]}"; do wait_port "$port"; done
	load() {
		for port in "${ports[@]}"; do
			seq 1 "$per" | sed "s|.*|http://127.0.0.1:$port/api/account/12345678/bench/&|"
		done | xargs -P $((per * n)) -n 1 curl -s -o /dev/null -w '%{http_code}\n' >"$work/codes"
		if grep -qv '^200$' "$work/codes"; then echo "non-200 answers: $(sort "$work/codes" | uniq -c | tr '\n' ' ')" >&2; fi
	}
	load
	local startup
	startup=$(logins)
	curl -fsS -X POST "$control/expire" >/dev/null
	load
	local total
	total=$(logins)
	for p in "${run_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	echo "$startup $((total - startup))"
}

echo "command: bench/cluster-logins.sh  (COUNTS=\"$counts\" PER_INSTANCE=$per)"
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"
echo
printf '| instances | cluster off: logins at start | off: re-logins after expiry | cluster on: logins at start | on: re-logins after expiry |\n'
printf '|---|---|---|---|---|\n'
for n in $counts; do
	read -r off_start off_expiry < <(run off "$n")
	read -r on_start on_expiry < <(run on "$n")
	printf '| %s | %s | %s | %s | %s |\n' "$n" "$off_start" "$off_expiry" "$on_start" "$on_expiry"
done
