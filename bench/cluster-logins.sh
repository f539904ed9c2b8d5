#!/usr/bin/env bash
# Logins CC sees when N Caddy instances front one CC user, with cluster mode
# (shared file_system storage) off and on: a start under load, then a
# server-side expiry under load. Everything runs on 127.0.0.1.
#
# With cluster mode off the emulator lets the user hold several sessions
# (multiple-sessions): the column shows the logins N independent instances
# make, which is what cluster mode saves. Under CC's rule (one session per
# user) those instances would end each other's sessions, and lpauth's
# conflict wait, not this count, would bound their logins. With cluster
# mode on the rule stays on: the members never end each other's sessions.
#
#   bench/cluster-logins.sh [path/to/caddy]     (default: ./caddy, built by ./xcaddy.sh if missing)
#
# Environment: COUNTS (default "1 3 5"), PER_INSTANCE concurrent requests per
# instance and phase (default 20).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

. bench/lib.sh "${1:-}"
counts=${COUNTS:-1 3 5}
per=${PER_INSTANCE:-20}

emu_port=$(free_port)
emulator_caddyfile "$emu_port" >"$work/emu.Caddyfile"
start_caddy emu
wait_port "$emu_port"
control="http://127.0.0.1:$emu_port/_ccemu"

# run MODE N: prints "startup expiry" login counts
run() {
	local mode=$1 n=$2 ports=() i
	curl -fsS -X POST "$control/reset" >/dev/null
	local several=false
	if [ "$mode" = off ]; then several=true; fi
	curl -fsS -X POST "$control/multiple-sessions?allowed=$several" >/dev/null
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
$(lpauth_site "$port" "127.0.0.1:$emu_port" "$storage")
EOC
		start_caddy "inst$i" "$work/inst$i-$mode.log"
		run_pids+=("$last_pid")
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
	if [ "$mode" = on ]; then
		local ended
		ended=$(curl -fsS "$control/counters" | python3 -c 'import json,sys; print(json.load(sys.stdin)["sessions_ended_by_login"])')
		[ "$ended" = 0 ] || echo "cluster on: $ended sessions ended by another member's login" >&2
	fi
	for p in "${run_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	echo "$startup $((total - startup))"
}

echo "command: bench/cluster-logins.sh  (COUNTS=\"$counts\" PER_INSTANCE=$per)"
echo "machine: $(machine)"
echo
printf '| instances | cluster off: logins at start | off: re-logins after expiry | cluster on: logins at start | on: re-logins after expiry |\n'
printf '|---|---|---|---|---|\n'
for n in $counts; do
	read -r off_start off_expiry < <(run off "$n")
	read -r on_start on_expiry < <(run on "$n")
	printf '| %s | %s | %s | %s | %s |\n' "$n" "$off_start" "$off_expiry" "$on_start" "$on_expiry"
done
