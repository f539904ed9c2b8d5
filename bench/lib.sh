# What the shell benchmarks share; source it after cd to the repository
# root, with the caddy binary's path (may be empty) as its argument:
#
#   . bench/lib.sh "${1:-}"
#
# It sets $caddy (built by ./xcaddy.sh if missing) and $work (a temporary
# directory holding caddy's XDG dirs, removed at exit, with every process
# in $pids killed), and defines free_port, wait_port, start_caddy,
# emulator_caddyfile, lpauth_site, logins and machine. Everything runs on 127.0.0.1.

caddy=${1:-./caddy}
[ -x "$caddy" ] || ./xcaddy.sh "$caddy" >/dev/null
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

# start_caddy NAME [LOG]: runs $work/NAME.Caddyfile in the background,
# output to LOG (default $work/NAME.log); its pid goes to $pids and $last_pid.
start_caddy() {
	"$caddy" run --config "$work/$1.Caddyfile" --adapter caddyfile >"${2:-$work/$1.log}" 2>&1 &
	last_pid=$!
	pids+=("$last_pid")
}

# emulator_caddyfile PORT: the CC emulator on PORT, its control API under
# /_ccemu (as internal/caddyproc.Emulator writes it for the Go benchmarks).
emulator_caddyfile() {
	cat <<EOC
{
	admin off
	persist_config off
	auto_https off
	default_bind 127.0.0.1
}
http://127.0.0.1:$1 {
	ccemu {
		control_path /_ccemu
	}
}
EOC
}

# lpauth_site PORT UPSTREAM [LINES]: a site on PORT with lpauth (the
# emulator's demo user, LINES inside its block) in front of reverse_proxy
# to UPSTREAM (host:port), logging in at the emulator on $emu_port (as
# internal/caddyproc.Proxy writes it for the Go benchmarks).
lpauth_site() {
	cat <<EOC
http://127.0.0.1:$1 {
	lpauth {
		account_id 12345678
		username demo-agent
		password demo-password
		csds http://127.0.0.1:$emu_port
		${3:-}
	}
	reverse_proxy $2
}
EOC
}

# logins: the login attempts the emulator at $control has seen.
logins() { curl -fsS "$control/counters" | python3 -c 'import json,sys; print(json.load(sys.stdin)["login_attempts"])'; }

machine() { echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"; }
