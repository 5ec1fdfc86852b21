#!/usr/bin/env bash
# Compares two builds of auth-challenge under the same load at the same moment, which a noisy
# machine cannot give run after run: the benchmark starts this checkout's stack with a fixed key,
# one auth-challenge of OTHER (another checkout, already built with `npm ci && npx tsc -b`) joins
# the same queue group, and NATS splits the requests between the two. Per instance it prints the
# requests handled, the mean handling time (mfa_request_duration_seconds) and the CPU per request.
# Over the same window it prints what Redis spent: its CPU per request (INFO cpu; meaningful when
# nothing else uses that Redis) and the script calls with their mean time (INFO commandstats).
# OTHER `none` runs this checkout alone, which is how Redis's cost of one build is measured.
#
#   bench/side-by-side.sh ../other-checkout|none [rate pairs/s, default 1500]
#   (REDIS_URL, NATS_URL and BENCH_DATABASE_URL are passed on; SIDE_BY_SIDE_PORT [3991] is OTHER's HTTP port;
#   SIDE_BY_SIDE_POLICY=on runs the bench with --policy on: 50 trusted ranges, remember MFA)
set -euo pipefail
other=${1:?usage: bench/side-by-side.sh OTHER_CHECKOUT|none [rate]}
[ "$other" = none ] || other=$(cd "$other" && pwd)
rate=${2:-1500}
here=$(cd "$(dirname "$0")/.." && pwd)
key=$(head -c 32 /dev/urandom | base64)
platform=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
out=$(mktemp -d)
port=${SIDE_BY_SIDE_PORT:-3991}
redis_url=${REDIS_URL:-redis://127.0.0.1:6379}

cd "$here"
# Both builds on one NATS (the bench would otherwise start its own), users seeded, no exporter
# (OTHER runs without one): the two instances see the same load under the same settings.
export NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
BENCH_NATS_URL=$NATS_URL BENCH_MASTER_KEY=$key BENCH_PLATFORM_API_KEY=$platform node_modules/.bin/node bench/dist/main.js --rate "$rate" --duration 20 --warmup 3 --scenarios totp --users seed --tracing off --policy "${SIDE_BY_SIDE_POLICY:-off}" >"$out/bench.txt" 2>&1 &
bench=$!
until grep -q "seeding" "$out/bench.txt"; do sleep 0.1; done
if [ "$other" != none ]; then
  (cd "$other" && MFA_ENCRYPTION_KEY=$key MFA_PLATFORM_API_KEY=$platform NODE_ENV=production LOG_LEVEL=warn HTTP_PORT=$port INSTANCE_NAME=other \
    exec node_modules/node/bin/node services/auth-challenge/dist/main.js >"$out/other.log" 2>&1) &
  other_pid=$!
fi
until grep -q "totp: measuring" "$out/bench.txt"; do sleep 0.05; done

this_pid=$(pgrep -f -- "--enable-source-maps $here/services/auth-challenge/dist/main.js" | tail -1)
this_port=$(ss -ltnp | grep "pid=$this_pid," | grep -o '127.0.0.1:[0-9]*' | head -1)
if [ "$other" != none ]; then other_real=$(pgrep -P "$other_pid" | head -1 || true); other_real=${other_real:-$other_pid}; fi
sample() { # requests, seconds handling them, CPU ticks
  curl -s "http://$1/metrics" | awk -v t="$(awk '{print $14+$15}' /proc/$2/stat)" \
    '/^mfa_request_duration_seconds_count/ {n+=$2} /^mfa_request_duration_seconds_sum/ {s+=$2} END {print n, s, t}'
}
redis_sample() { # Redis CPU seconds (user + sys), script calls, microseconds spent in them
  redis-cli -u "$redis_url" INFO all | tr -d '\r' | awk -F'[:,=]' \
    '/^used_cpu_(user|sys):/ {cpu+=$2} /^cmdstat_eval(sha)?:/ {calls+=$3; usec+=$5} END {printf "%.6f %d %d\n", cpu, calls, usec}'
}
b0="0 0 0"; b1="0 0 0"
a0=$(sample "$this_port" "$this_pid"); [ "$other" = none ] || b0=$(sample "127.0.0.1:$port" "$other_real"); r0=$(redis_sample)
sleep 16 # inside the 20 s measured window
a1=$(sample "$this_port" "$this_pid"); [ "$other" = none ] || b1=$(sample "127.0.0.1:$port" "$other_real"); r1=$(redis_sample)
[ "$other" = none ] || kill "$other_pid" 2>/dev/null || true
wait "$bench" || true
report() {
  read -r n0 s0 t0 <<<"$2"; read -r n1 s1 t1 <<<"$3"
  awk -v name="$1" -v n="$((n1 - n0))" -v s="$(awk -v a="$s1" -v b="$s0" 'BEGIN{print a-b}')" -v t="$((t1 - t0))" \
    'BEGIN {printf "%-8s %7d requests   mean handling %7.2f ms   CPU %6.1f us/request\n", name, n, s/n*1000, t*10000/n}'
}
report this "$a0" "$a1"
[ "$other" = none ] || report other "$b0" "$b1"
read -r an0 _ _ <<<"$a0"; read -r an1 _ _ <<<"$a1"; read -r bn0 _ _ <<<"$b0"; read -r bn1 _ _ <<<"$b1"
read -r c0 k0 u0 <<<"$r0"; read -r c1 k1 u1 <<<"$r1"
awk -v n="$((an1 - an0 + bn1 - bn0))" -v cpu="$(awk -v a="$c1" -v b="$c0" 'BEGIN{print a-b}')" -v k="$((k1 - k0))" -v u="$((u1 - u0))" \
  'BEGIN {printf "redis    CPU %6.1f us/request   %d script calls (%.2f per request), %.1f us each\n", cpu*1e6/n, k, k/n, (k ? u/k : 0)}'
grep -A2 "^scenario" "$out/bench.txt" | tail -2
rm -rf "$out"
