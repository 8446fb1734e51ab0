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
# WORKLOAD (notice or feed), TENANTS (10000, as seeded), MINSEQ (the seeded consents' feed
# entries, as run.sh recorded) and MAXSEQ (MINSEQ + 50000): feed cursors between them,
# BENCH_DIR. A run with failed requests (non-2xx, socket errors) is marked: its rate is
# not comparable.
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
MINSEQ="${MINSEQ:-$(cat "$BENCH_DIR/feed-seeded" 2>/dev/null || echo 0)}"
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

# wrk runs in place of the function's shell (exec), so the PID a caller holds is wrk's.
notices() { # connections seconds [wrk options…]
  local conns=$1 seconds=$2; shift 2
  exec env TEMPLATE="$BENCH_DIR/notice.tmpl" TENANTS="${TENANTS:-10000}" TOKEN=bench-token-riverside-ehr \
    RUN="ab-$(date +%s%N)" wrk -t2 -c"$conns" -d"${seconds}s" --timeout 10s "$@" \
    -s "$ROOT/bench/post.lua" http://127.0.0.1:18080/fhir/Communication
}
# One measured load into FILE: the notices, or feed pages while 8 connections post notices
# (as bench/run.sh's mixed row). The Lua scripts end with a RESULT line.
load() { # seconds file
  local seconds=$1 file=$2
  if [[ "$WORKLOAD" == notice ]]; then
    (notices "$CONNS" "$seconds") >"$file"
  else
    (notices 8 "$seconds") >/dev/null & WRITERS=$!
    env MINSEQ="$MINSEQ" MAXSEQ="${MAXSEQ:-$((MINSEQ + 50000))}" TOKEN=bench-token-housing-worker wrk -t2 -c"$CONNS" -d"${seconds}s" \
      --timeout 10s -s "$ROOT/bench/feed.lua" http://127.0.0.1:18080/ >"$file"
    wait "$WRITERS" || true; WRITERS=""
  fi
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
field() { # name file: a RESULT field
  awk -v k="$1" '/^RESULT/ {for (i = 2; i <= NF; i++) {split($i, kv, "="); if (kv[1] == k) print kv[2]}}' "$2"
}

OUT="$BENCH_DIR/ab.out"
declare -a SUM
for ((round = 1; round <= ROUNDS; round++)); do
  for ((b = 1; b <= $#; b++)); do
    build="${!b}"
    "$build" serve --config "$BENCH_DIR/hearth.toml" 2>"$BENCH_DIR/ab-hearth.err" &
    PID=$!
    ready=0
    for _ in $(seq 600); do
      kill -0 "$PID" 2>/dev/null || { echo "$build exited (see $BENCH_DIR/ab-hearth.err)" >&2; exit 1; }
      curl -sf -o /dev/null http://127.0.0.1:18080/readyz && { ready=1; break; }
      sleep 0.05
    done
    ((ready)) || { echo "$build not ready after 30 s" >&2; exit 1; }
    load 2 /dev/null
    before=$(cpu_ticks "$PID")
    load "$DURATION" "$OUT"
    after=$(cpu_ticks "$PID")
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    n=$(field requests "$OUT"); us=$(field duration_us "$OUT")
    [[ -n "$n" && "$n" -gt 0 ]] || { echo "$build: no requests completed (see $OUT)" >&2; exit 1; }
    rps=$(awk -v n="$n" -v us="$us" 'BEGIN {printf "%.0f", n / (us / 1e6)}')
    p99=$(awk -v us="$(field p99_us "$OUT")" 'BEGIN {printf "%.2fms", us / 1000}')
    failed=$(( $(field non2xx "$OUT") + $(field sockerr "$OUT") ))
    cpu=$(( (after - before) * 1000000 / TCK / n ))
    printf 'round %d  %-32s %7s %s/s  p99 %9s  CPU %4d µs/request  failed %s%s\n' \
      "$round" "$build" "$rps" "$UNIT" "$p99" "$cpu" "$failed" "$( ((failed)) && echo '  (not comparable)')"
    SUM[b]=$(( ${SUM[b]:-0} + rps ))
  done
done
for ((b = 1; b <= $#; b++)); do
  printf 'mean  %-32s %7d %s/s\n' "${!b}" $(( SUM[b] / ROUNDS )) "$UNIT"
done
