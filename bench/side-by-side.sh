#!/usr/bin/env bash
# Compares two builds of auth-challenge under the same load at the same moment, which a noisy
# machine cannot give run after run: the benchmark starts this checkout's stack with a fixed key,
# one auth-challenge of OTHER (another checkout, already built with `npm ci && npx tsc -b`) joins
# the same queue group, and NATS splits the requests between the two. Per instance it prints the
# requests handled, the mean handling time (mfa_request_duration_seconds) and the CPU per request.
#
#   bench/side-by-side.sh ../other-checkout [rate pairs/s, default 1500]
set -euo pipefail
other=$(cd "${1:?usage: bench/side-by-side.sh OTHER_CHECKOUT [rate]}" && pwd)
rate=${2:-1500}
here=$(cd "$(dirname "$0")/.." && pwd)
key=$(head -c 32 /dev/urandom | base64)
out=$(mktemp -d)
port=3991

cd "$here"
BENCH_MASTER_KEY=$key node_modules/.bin/node bench/dist/main.js --rate "$rate" --duration 20 --warmup 3 --scenarios totp >"$out/bench.txt" 2>&1 &
bench=$!
until grep -q "seeding" "$out/bench.txt"; do sleep 0.1; done
(cd "$other" && MFA_ENCRYPTION_KEY=$key NODE_ENV=production LOG_LEVEL=warn HTTP_PORT=$port INSTANCE_NAME=other \
  exec node_modules/node/bin/node services/auth-challenge/dist/main.js >"$out/other.log" 2>&1) &
other_pid=$!
until grep -q "totp: measuring" "$out/bench.txt"; do sleep 0.05; done

this_pid=$(pgrep -f -- "--enable-source-maps $here/services/auth-challenge/dist/main.js" | tail -1)
this_port=$(ss -ltnp | grep "pid=$this_pid," | grep -o '127.0.0.1:[0-9]*' | head -1)
other_real=$(pgrep -P "$other_pid" | head -1 || true); other_real=${other_real:-$other_pid}
sample() { # requests, seconds handling them, CPU ticks
  curl -s "http://$1/metrics" | awk -v t="$(awk '{print $14+$15}' /proc/$2/stat)" \
    '/^mfa_request_duration_seconds_count/ {n+=$2} /^mfa_request_duration_seconds_sum/ {s+=$2} END {print n, s, t}'
}
a0=$(sample "$this_port" "$this_pid"); b0=$(sample "127.0.0.1:$port" "$other_real")
sleep 16 # inside the 20 s measured window
a1=$(sample "$this_port" "$this_pid"); b1=$(sample "127.0.0.1:$port" "$other_real")
kill "$other_pid" 2>/dev/null || true
wait "$bench" || true
report() {
  read -r n0 s0 t0 <<<"$2"; read -r n1 s1 t1 <<<"$3"
  awk -v name="$1" -v n="$((n1 - n0))" -v s="$(awk -v a="$s1" -v b="$s0" 'BEGIN{print a-b}')" -v t="$((t1 - t0))" \
    'BEGIN {printf "%-8s %7d requests   mean handling %7.2f ms   CPU %6.1f us/request\n", name, n, s/n*1000, t*10000/n}'
}
report this "$a0" "$a1"
report other "$b0" "$b1"
grep -A2 "^scenario" "$out/bench.txt" | tail -2
rm -rf "$out"
