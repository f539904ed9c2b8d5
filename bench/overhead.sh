#!/usr/bin/env bash
# Throughput cost of lpauth on the request path: wrk through one Caddy
# process with three sites, all proxying to the same fast upstream.
#
#   A: lpauth + reverse_proxy (lpauth logged in to the CC emulator beforehand)
#   B: reverse_proxy with a static header_up Authorization "Bearer <64 hex>",
#      the floor a user would otherwise hand-write
#   C: plain reverse_proxy
#
# Variants alternate A B C A B C ... for ROUNDS rounds, in one run. The
# upstream (respond "ok" 200) and the CC emulator (ccemu) run in two more
# Caddy processes of the same binary. Everything runs on 127.0.0.1.
#
#   bench/overhead.sh [path/to/caddy]     (default: ./caddy, built by ./xcaddy.sh if missing)
#
# Environment: ROUNDS (default 5), DURATION per wrk run (default 5s),
# WARMUP per variant before round 1 (default 2s), THREADS (default 2),
# CONNECTIONS (default 50). Needs wrk, curl, python3.
#
# Target: median req/s of A / median req/s of B >= 0.98. Exit status 0 when
# it is met, 1 when it is missed or requests failed.
set -euo pipefail
if [ $# -gt 0 ]; then case $1 in /*) ;; *) set -- "$PWD/$1" ;; esac; fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."

rounds=${ROUNDS:-5}
duration=${DURATION:-5s}
warmup=${WARMUP:-2s}
threads=${THREADS:-2}
conns=${CONNECTIONS:-50}
for tool in wrk curl python3; do
	command -v "$tool" >/dev/null || { echo "overhead.sh: $tool is required (apt-get install -y $tool)" >&2; exit 1; }
done
. bench/lib.sh "${1:-}"

emu_port=$(free_port)
up_port=$(free_port)
a_port=$(free_port)
b_port=$(free_port)
c_port=$(free_port)
static_bearer=$(python3 -c 'import secrets; print(secrets.token_hex(32))')

global='{
	admin off
	persist_config off
	auto_https off
	default_bind 127.0.0.1
}'

emulator_caddyfile "$emu_port" >"$work/emu.Caddyfile"

# The fast upstream. /_check answers whether an Authorization header of the
# expected shape arrived (never the header itself).
cat >"$work/upstream.Caddyfile" <<EOC
$global
http://127.0.0.1:$up_port {
	handle /_check {
		@bearer header_regexp Authorization ^Bearer\s[0-9a-f]{64}\$
		respond @bearer "bearer" 200
		respond "none" 200
	}
	respond "ok" 200
}
EOC

cat >"$work/proxy.Caddyfile" <<EOC
$global
$(lpauth_site "$a_port" "127.0.0.1:$up_port")
http://127.0.0.1:$b_port {
	reverse_proxy 127.0.0.1:$up_port {
		header_up Authorization "Bearer $static_bearer"
	}
}
http://127.0.0.1:$c_port {
	reverse_proxy 127.0.0.1:$up_port
}
EOC

start_caddy emu
start_caddy upstream
start_caddy proxy
for port in "$emu_port" "$up_port" "$a_port" "$b_port" "$c_port"; do wait_port "$port"; done
control="http://127.0.0.1:$emu_port/_ccemu"

declare -A port_of=([A]=$a_port [B]=$b_port [C]=$c_port)
# Check each variant: A and B carry a 64-hex bearer upstream, C none. The
# first request through A logs in.
for v in A B C; do
	want=bearer
	[ "$v" = C ] && want=none
	got=$(curl -fsS --max-time 15 "http://127.0.0.1:${port_of[$v]}/_check" || echo "request failed")
	if [ "$got" != "$want" ]; then
		echo "overhead.sh: variant $v: upstream saw '$got', want '$want'" >&2
		tail -n 20 "$work/proxy.log" >&2
		exit 1
	fi
done

echo "command: bench/overhead.sh  (ROUNDS=$rounds DURATION=$duration WARMUP=$warmup; wrk -t$threads -c$conns -d$duration --latency)"
echo "machine: $(machine)"
echo "caddy:   $("$caddy" version)"
echo

for v in A B C; do wrk -t"$threads" -c"$conns" -d"$warmup" "http://127.0.0.1:${port_of[$v]}/" >/dev/null; done
logins_before=$(logins)

: >"$work/results.tsv"
for r in $(seq 1 "$rounds"); do
	for v in A B C; do
		wrk -t"$threads" -c"$conns" -d"$duration" --latency "http://127.0.0.1:${port_of[$v]}/" >"$work/wrk-$r-$v.txt"
		python3 - "$work/wrk-$r-$v.txt" "$r" "$v" >>"$work/results.tsv" <<'EOP'
import re, sys
text = open(sys.argv[1]).read()
def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
errors = sum(int(x) for x in sock.groups()) if sock else 0
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{rps:.1f}\t{ms(*p99.groups()):.3f}\t{int(non2xx.group(1)) if non2xx else 0}\t{errors}")
EOP
		tail -n 1 "$work/results.tsv" | awk -F'\t' '{printf "round %s %s: %s req/s, p99 %s ms\n", $1, $2, $3, $4}' >&2
	done
done
logins_during=$(($(logins) - logins_before))

python3 - "$work/results.tsv" "$logins_during" <<'EOP'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
names = {"A": "A: lpauth + reverse_proxy", "B": "B: reverse_proxy + static header_up", "C": "C: plain reverse_proxy"}
rps = {v: [float(r[2]) for r in rows if r[1] == v] for v in "ABC"}
p99 = {v: [float(r[3]) for r in rows if r[1] == v] for v in "ABC"}
bad = {v: sum(int(r[4]) + int(r[5]) for r in rows if r[1] == v) for v in "ABC"}
med = {v: statistics.median(rps[v]) for v in "ABC"}
print("| variant | median req/s | median p99 (ms) | req/s per round | non-2xx + socket errors |")
print("|---|---|---|---|---|")
for v in "ABC":
    print(f"| {names[v]} | {med[v]:.0f} | {statistics.median(p99[v]):.2f} | {' '.join(f'{x:.0f}' for x in rps[v])} | {bad[v]} |")
print()
ratio = med["A"] / med["B"]
print(f"median(A)/median(B) req/s = {ratio:.3f}   target >= 0.98: {'yes' if ratio >= 0.98 else 'NO'}")
print(f"median(A)/median(C) req/s = {med['A'] / med['C']:.3f}   median(B)/median(C) = {med['B'] / med['C']:.3f}   (for reference)")
print(f"logins CC saw during the measured runs: {sys.argv[2]} (expect 0)")
if any(bad.values()):
    print("WARNING: some requests failed; the numbers above are not comparable")
    sys.exit(1)
if ratio < 0.98:
    sys.exit(1)
EOP
