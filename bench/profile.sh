#!/usr/bin/env bash
# Profiles Hearth under the 64-connection inbound-notice load (or the feed), on the store
# `bench/run.sh` left in BENCH_DIR. Prints where the CPU goes (perf, DWARF call graphs),
# the fsync and pwrite calls per request, and how often SQLite re-prepares a statement.
#
#   bench/run.sh && bench/profile.sh          # inbound notices, 64 connections
#   WORKLOAD=feed bench/profile.sh            # feed pages of 100, 4 connections
#   CONNS=8 bench/profile.sh                  # another connection count
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-/var/tmp/hearth-bench}"
DURATION="${DURATION:-6}"
WORKLOAD="${WORKLOAD:-notice}"
HEARTH="$ROOT/target/release/hearth"
[[ -f "$BENCH_DIR/hearth.toml" && -f "$BENCH_DIR/notice.tmpl" ]] || { echo "run bench/run.sh first" >&2; exit 1; }
command -v perf >/dev/null || { echo "perf is needed" >&2; exit 1; }

PID=""; LOAD=""
cleanup() {
  [[ -n "$LOAD" ]] && kill "$LOAD" 2>/dev/null || true
  [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  perf probe -q -d 'probe_hearth:*' 2>/dev/null || true
}
trap cleanup EXIT

"$HEARTH" serve --config "$BENCH_DIR/hearth.toml" 2>"$BENCH_DIR/profile-hearth.err" &
PID=$!
until curl -sf -o /dev/null http://127.0.0.1:18080/readyz; do sleep 0.05; done

case "$WORKLOAD" in
  notice) CONNS=${CONNS:-64}; ARGS=(-s "$ROOT/bench/post.lua" http://127.0.0.1:18080/fhir/Communication)
          ENVS=(TEMPLATE="$BENCH_DIR/notice.tmpl" TENANTS="${TENANTS:-10000}" TOKEN=bench-token-riverside-ehr) ;;
  feed)   CONNS=${CONNS:-4}; ARGS=(-s "$ROOT/bench/feed.lua" http://127.0.0.1:18080/)
          MINSEQ="${MINSEQ:-$(cat "$BENCH_DIR/feed-seeded" 2>/dev/null || echo 0)}"
          ENVS=(MINSEQ="$MINSEQ" MAXSEQ="${MAXSEQ:-$((MINSEQ + 50000))}" TOKEN=bench-token-housing-worker) ;;
  *) echo "WORKLOAD is notice or feed" >&2; exit 1 ;;
esac
TOTAL=$((3 * DURATION + 4))
env "${ENVS[@]}" RUN="profile-$(date +%s%N)" wrk -t2 -c"$CONNS" -d"${TOTAL}s" --timeout 10s "${ARGS[@]}" >"$BENCH_DIR/profile.wrk" &
LOAD=$!
sleep 2

perf stat -x, -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync,syscalls:sys_enter_pwrite64,syscalls:sys_enter_pread64 \
  -p "$PID" -o "$BENCH_DIR/profile.syscalls" -- sleep "$DURATION" 2>/dev/null || true

: >"$BENCH_DIR/profile.reprepare"
if perf probe -q -x "$HEARTH" --add sqlite3Reprepare 2>/dev/null; then
  perf stat -x, -e 'probe_hearth:sqlite3Reprepare' -p "$PID" -o "$BENCH_DIR/profile.reprepare" -- sleep "$DURATION" 2>/dev/null || true
fi
echo "recording (${DURATION}s counts, ${DURATION}s uprobe, ${DURATION}s perf record)…" >&2
perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$PID" -o "$BENCH_DIR/perf.data" -- sleep "$DURATION" 2>/dev/null
wait "$LOAD" || true; LOAD=""

RPS=$(awk '/^RESULT/ {for (i = 2; i <= NF; i++) {split($i, kv, "="); r[kv[1]] = kv[2]}
     printf "%.0f", r["requests"] / (r["duration_us"] / 1e6)}' "$BENCH_DIR/profile.wrk")
echo "== load: $RPS requests/s over the whole ${TOTAL}s run (profiled parts included)"
echo "== per request, over ${DURATION}s windows at that rate (perf tracepoints / uprobe)"
cat "$BENCH_DIR/profile.syscalls" "$BENCH_DIR/profile.reprepare" | awk -F, -v rps="$RPS" -v d="$DURATION" '
  /syscalls:|probe_hearth:/ {name = $3; sub(/.*:(sys_enter_)?/, "", name); printf "  %-18s %8d calls  %6.2f per request\n", name, $1, $1 / (rps * d)}'

echo "== CPU profile ($WORKLOAD, $CONNS connections, ${DURATION}s, perf record -F 499 --call-graph dwarf)"
perf script -i "$BENCH_DIR/perf.data" -F comm,tid,ip,sym 2>/dev/null >"$BENCH_DIR/perf.stacks"
"$ROOT/bench/perf_inclusive.py" "$BENCH_DIR/perf.stacks" \
  'store writer thread (writer_loop)=hearth::store::sqlite::writer_loop' \
  '  jobs: commit_one (exchange, items, feed and audit rows)=hearth::store::sqlite::commit_one' \
  '    audit record: serialise, chain hash, insert (WriteCtx::audit)=WriteCtx::audit' \
  '    statement-journal page copies for per-job savepoints=subjournalPageIfRequired' \
  '    B-tree inserts (sqlite3BtreeInsert)=sqlite3BtreeInsert' \
  '  COMMIT: WAL frames, fsync, checkpoints (Transaction::commit)=commit \(inlined\)|Transaction::commit' \
  '    fsync=unixSync' \
  '    WAL frame writes (walWriteOneFrame)=walWriteOneFrame' \
  '    checkpoints (walCheckpoint)=walCheckpoint' \
  'SQLite statement re-preparation (sqlite3Reprepare)=sqlite3Reprepare' \
  'SQLite statement execution, any thread (sqlite3_step)=sqlite3_step' \
  'body read + parse + canonical digest (JsonBody extractor)=Rejection> as axum_core::extract::FromRequest<S>>::from_request' \
  '  JSON parse (serde_json::from_slice)=serde_json::de::from_slice' \
  'profile validation (static_checks)=gateway::static_checks' \
  'mapping (Mappings::translate)=Mappings::translate' \
  'inbound read: link + consents + renewal (inbound_context)=inbound_context' \
  '  consent versions (consent_versions)=sqlite::consent_versions' \
  'consent::decide=hearth::consent::decide' \
  'OperationOutcome building (operation_outcome)=fhir::outcome::operation_outcome' \
  'feed read: SQL + item JSON parse (sqlite feed closure)=hearth::store::sqlite::.*::feed::' \
  '  stored item JSON parsed again (serde_json from_str)=serde_json::de::from_str|serde_json::de::from_trait' \
  'feed entries serialised (Serialize for FeedEntry)=Serialize for hearth::store::FeedEntry' \
  'response body to bytes (axum Json into_response)=Json<T> as axum_core::response::into_response' \
  'audit append from the envelope (AuditStore::append)=AuditStore.*append' \
  'store reads on the blocking pool (SqliteStore::read)=sqlite::\{impl#[0-9]+\}::read::' \
  'context switches (finish_task_switch)=finish_task_switch' \
  'request logging (tracing fmt)=tracing_subscriber::fmt' \
  'malloc/free (mimalloc, or glibc)=^_?mi_|^(_int_malloc|malloc|_int_free|cfree|malloc_consolidate|_int_realloc|realloc)( \(inlined\))?$'
