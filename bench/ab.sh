#!/usr/bin/env bash
# Interleaved A/B of Hearth builds on the store `bench/run.sh` left in BENCH_DIR: each
# round runs every build in turn (start, warm up, measure, stop), so the VM's drift over
# minutes falls on all of them alike. A single `bench/run.sh` per build cannot tell a 10%
# change from this machine's noise; rounds side by side can.
#
#   cp target/release/hearth /var/tmp/hearth-a            # build A
#   (change, cargo build --release) && cp target/release/hearth /var/tmp/hearth-b
#   bench/ab.sh /var/tmp/hearth-a /var/tmp/hearth-b       # 3 rounds, 64 connections
#   WORKLOAD=feed bench/ab.sh …   # feed pages of 100 (4 conns) while 8 conns post notices
#                                 # (its CPU per page then includes the writers')
#
# Environment: ROUNDS (3), CONNS (64 notices, 4 feed), DURATION (10 s per measurement),
# WORKLOAD (notice or feed), BENCH_DIR.
# A build may be a wrapper script that `exec`s hearth with settings (TOKIO_WORKER_THREADS=1).
# Prints one line per run and each build's mean; every run adds notices to the same store.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-/var/tmp/hearth-bench}"
ROUNDS="${ROUNDS:-3}"
WORKLOAD="${WORKLOAD:-notice}"
case "$WORKLOAD" in
  notice) CONNS="${CONNS:-64}"; UNIT=notices ;;
  feed) CONNS="${CONNS:-4}"; UNIT=pages ;;
  *) echo "WORKLOAD is notice or feed" >&2; exit 1 ;;
esac
DURATION="${DURATION:-10}"
TCK="$(getconf CLK_TCK)"
(($# >= 2)) || { echo "usage: bench/ab.sh BUILD_A BUILD_B [BUILD…]" >&2; exit 1; }
[[ -f "$BENCH_DIR/hearth.toml" && -f "$BENCH_DIR/notice.tmpl" ]] || { echo "run bench/run.sh first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is needed (bench/run.sh installs it)" >&2; exit 1; }

PID=""; WRITERS=""
cleanup() {
  [[ -n "$WRITERS" ]] && kill "$WRITERS" 2>/dev/null || true
  [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
}
trap cleanup EXIT

notices() { # connections seconds [wrk options…]
  local conns=$1 seconds=$2; shift 2
  env TEMPLATE="$BENCH_DIR/notice.tmpl" TENANTS="${TENANTS:-10000}" TOKEN=bench-token-riverside-ehr \
    RUN="ab-$(date +%s%N)" wrk -t2 -c"$conns" -d"${seconds}s" --timeout 10s "$@" \
    -s "$ROOT/bench/post.lua" http://127.0.0.1:18080/fhir/Communication
}
load() { # seconds [wrk options…]
  local seconds=$1; shift
  if [[ "$WORKLOAD" == notice ]]; then
    notices "$CONNS" "$seconds" "$@"
  else
    # The feed is measured while notices arrive, as in bench/run.sh.
    notices 8 $((seconds + 1)) >/dev/null & WRITERS=$!
    env MAXSEQ="${MAXSEQ:-50000}" TOKEN=bench-token-housing-worker wrk -t2 -c"$CONNS" -d"${seconds}s" \
      --timeout 10s "$@" -s "$ROOT/bench/feed.lua" http://127.0.0.1:18080/
    wait "$WRITERS" || true; WRITERS=""
  fi
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

declare -A SUM
for ((round = 1; round <= ROUNDS; round++)); do
  for build in "$@"; do
    "$build" serve --config "$BENCH_DIR/hearth.toml" 2>"$BENCH_DIR/ab-hearth.err" &
    PID=$!
    for _ in $(seq 600); do curl -sf -o /dev/null http://127.0.0.1:18080/readyz && break; sleep 0.05; done
    load 2 >/dev/null
    before=$(cpu_ticks "$PID")
    out=$(load "$DURATION" --latency)
    after=$(cpu_ticks "$PID")
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx/ {print $4}' <<<"$out")
    cpu=$(( (after - before) * 1000000 / TCK / n ))
    printf 'round %d  %-32s %9s %s/s  p99 %9s  CPU %4d µs/request  non-2xx %s\n' \
      "$round" "$build" "$rps" "$UNIT" "$p99" "$cpu" "${errors:-0}"
    SUM[$build]=$(awk -v a="${SUM[$build]:-0}" -v b="$rps" 'BEGIN {print a + b}')
  done
done
for build in "$@"; do
  awk -v s="${SUM[$build]}" -v r="$ROUNDS" -v b="$build" -v u="$UNIT" 'BEGIN {printf "mean  %-32s %9.0f %s/s\n", b, s / r, u}'
done
