#!/usr/bin/env bash
# Hearth load benchmark (issue 5): Hearth against the physical floor, on this machine.
#
#   bench/run.sh                 # builds, seeds, runs every row, prints the table
#
# Environment (all optional):
#   BENCH_DIR   working directory on a real disk (default /var/tmp/hearth-bench; tmpfs refused)
#   DURATION    seconds per measured row (default 10)
#   TENANTS     seeded tenants, 5 consent versions each (default 10000)
#   AUDIT       audit records seeded before start-up is measured (default 1000000)
#   SKIP_BUILD  set to 1 to use the binaries already in target/release
#
# What it does, bounded in time and cleaning up after itself:
#  1. builds `hearth` and the examples (floor servers, seeding program) in release mode;
#  2. seeds a fresh store: TENANTS tenants, 5×TENANTS consent versions, AUDIT audit records;
#  3. starts the bare floor, the durable floor (group-commit fdatasync to a file in
#     BENCH_DIR) and Hearth; measures Hearth's start-up (process start → /readyz 200);
#  4. drives each with wrk over 127.0.0.1 (same bodies, same connections, same duration);
#  5. stops Hearth and runs `hearth audit verify` over the store;
#  6. prints the table (and writes it to BENCH_DIR/results.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-/var/tmp/hearth-bench}"
DURATION="${DURATION:-10}"
TENANTS="${TENANTS:-10000}"
AUDIT="${AUDIT:-1000000}"
WARMUP=2
THREADS=2
HEARTH_PORT=18080
BARE_PORT=18081
DURABLE_PORT=18082
CLINIC_TOKEN=bench-token-riverside-ehr
HOUSING_TOKEN=bench-token-housing-worker
CLK_TCK="$(getconf CLK_TCK)"
REL="$ROOT/target/release"

SCRIPT_START=$(date +%s)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -f "$BENCH_DIR/floor.log" # the durable floor's appended bodies (gigabytes)
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }

# --- tools --------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
  say "installing wrk (Debian package)…"
  (apt-get install -y wrk >/dev/null 2>&1 || (apt-get update >/dev/null && apt-get install -y wrk >/dev/null)) \
    || die "could not install wrk"
fi
command -v curl >/dev/null || die "curl is needed"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  say "building (release)…"
  (cd "$ROOT" && cargo build --release --bin hearth --example floor --example bench_seed) >&2
fi
for b in hearth examples/floor examples/bench_seed; do
  [[ -x "$REL/$b" ]] || die "$REL/$b is missing (build first)"
done

# --- working directory on a real disk ------------------------------------------------
mkdir -p "$BENCH_DIR"
FSTYPE="$(stat -f -c %T "$BENCH_DIR")"
[[ "$FSTYPE" == tmpfs || "$FSTYPE" == ramfs ]] && die "$BENCH_DIR is on $FSTYPE; use a real disk (BENCH_DIR=…)"
rm -rf "$BENCH_DIR/data" "$BENCH_DIR/floor.log" "$BENCH_DIR/rows" "$BENCH_DIR"/*.tmpl
mkdir -p "$BENCH_DIR/rows"
DATA="$BENCH_DIR/data"
CFG="$BENCH_DIR/hearth.toml"
DEVICE="$(findmnt -n -o SOURCE -T "$BENCH_DIR")"
MOUNT_FS="$(findmnt -n -o FSTYPE -T "$BENCH_DIR")"
ROTA="$(lsblk -n -d -o ROTA "$DEVICE" 2>/dev/null | tr -d ' ' || true)"

CPU_MODEL="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
MACHINE="$(nproc) cores ($CPU_MODEL), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
STORAGE="$BENCH_DIR on $DEVICE ($MOUNT_FS; the block device reports rotational=${ROTA:-?})"
WRK_VERSION="$( (wrk -v 2>&1 || true) | head -1 | awk '{print $1, $2}')"
REVISION="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
# The revision names what is measured only if the binary is newer than every source file.
stale_sources() { (cd "$ROOT" && find src mappings profiles Cargo.toml Cargo.lock -newer "$REL/hearth" -type f 2>/dev/null | head -3 | tr '\n' ' '); }
STALE="$(stale_sources)"
[[ -n "$STALE" ]] && say "WARNING: sources changed after target/release/hearth was built: $STALE"
say "machine: $MACHINE"
say "storage: $STORAGE"
say "load generator: $WRK_VERSION, $THREADS threads, on the same machine"

# --- seed ----------------------------------------------------------------------------
"$REL/examples/bench_seed" config --out "$CFG" --data-dir "$DATA" --listen "127.0.0.1:$HEARTH_PORT"
"$REL/examples/bench_seed" bodies --out "$BENCH_DIR" >&2
"$REL/hearth" validate "$BENCH_DIR/notice-sample.json" >/dev/null || die "the notice body does not validate"
"$REL/hearth" validate "$BENCH_DIR/bundle-sample.json" >/dev/null || die "the bundle body does not validate"
NOTICE_BYTES="$(stat -c %s "$BENCH_DIR/notice-sample.json")"
BUNDLE_BYTES="$(stat -c %s "$BENCH_DIR/bundle-sample.json")"
say "seeding $TENANTS tenants, $((TENANTS * 5)) consent versions, $AUDIT audit records…"
SEED_START=$(date +%s%N)
timeout 900 "$REL/examples/bench_seed" population --data-dir "$DATA" --tenants "$TENANTS" --audit "$AUDIT" \
  >"$BENCH_DIR/seed.out" || die "seeding failed"
# The consent versions' own feed entries come first; the feed rows read pages above them.
FEED_SEEDED="$(awk -F= '/^feed_head=/ {print $2}' "$BENCH_DIR/seed.out")"
[[ -n "$FEED_SEEDED" ]] || die "the seeder did not report the feed's head"
echo "$FEED_SEEDED" >"$BENCH_DIR/feed-seeded"
SEED_S=$(awk -v a="$SEED_START" -v b="$(date +%s%N)" 'BEGIN {printf "%.1f", (b-a)/1e9}')
DB_MB=$(du -m "$DATA/hearth.db" | cut -f1)
say "seeded in ${SEED_S}s; store file ${DB_MB} MB"

# --- servers -------------------------------------------------------------------------
wait_ready() { # url pid timeout_s
  local url=$1 pid=$2 limit=$3 start=$(date +%s)
  until curl -sf -o /dev/null "$url"; do
    kill -0 "$pid" 2>/dev/null || die "server $pid exited (see $BENCH_DIR/*.err)"
    (( $(date +%s) - start < limit )) || die "$url not ready after ${limit}s"
    sleep 0.002
  done
}

"$REL/examples/floor" bare --listen "127.0.0.1:$BARE_PORT" 2>"$BENCH_DIR/bare.err" &
BARE_PID=$!; PIDS+=("$BARE_PID")
"$REL/examples/floor" durable --listen "127.0.0.1:$DURABLE_PORT" --file "$BENCH_DIR/floor.log" 2>"$BENCH_DIR/durable.err" &
DURABLE_PID=$!; PIDS+=("$DURABLE_PID")

# The audit records in the store before start-up, as `hearth audit head` reports them.
STARTUP_RECORDS=$("$REL/hearth" audit head --data-dir "$DATA" | cut -d' ' -f1)
T0=$(date +%s%N)
"$REL/hearth" serve --config "$CFG" 2>"$BENCH_DIR/hearth.err" &
HEARTH_PID=$!; PIDS+=("$HEARTH_PID")
wait_ready "http://127.0.0.1:$HEARTH_PORT/readyz" "$HEARTH_PID" 60
STARTUP_MS=$(awk -v a="$T0" -v b="$(date +%s%N)" 'BEGIN {printf "%.0f", (b-a)/1e6}')
say "Hearth ready in ${STARTUP_MS} ms with ${STARTUP_RECORDS} audit records"
wait_ready "http://127.0.0.1:$BARE_PORT/" "$BARE_PID" 10
wait_ready "http://127.0.0.1:$DURABLE_PORT/" "$DURABLE_PID" 10

# Smoke test: the bodies are accepted (201 created, not a replay or a refusal).
smoke() { # path file expect
  local code
  code=$(curl -s -o "$BENCH_DIR/smoke.out" -w '%{http_code}' -X POST "http://127.0.0.1:$HEARTH_PORT$1" \
    -H "Authorization: Bearer $CLINIC_TOKEN" -H 'Content-Type: application/fhir+json' --data-binary @"$2")
  [[ "$code" == "$3" ]] || die "smoke test $1 answered $code, expected $3: $(head -c 600 "$BENCH_DIR/smoke.out")"
}
smoke /fhir/Communication "$BENCH_DIR/notice-sample.json" 201
smoke /fhir "$BENCH_DIR/bundle-sample.json" 200
grep -q '"201 Created"' "$BENCH_DIR/smoke.out" || die "bundle entries were not created: $(head -c 600 "$BENCH_DIR/smoke.out")"

# --- measurement ---------------------------------------------------------------------
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hwm_mb() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
# CPU ticks of the process's group-commit writer thread (Hearth's store writer, the
# durable floor's writer), 0 when it has none.
writer_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    case "$(cat "$t/comm" 2>/dev/null)" in
      hearth-store-wr | floor-writer) awk '{print $14 + $15}' "$t/stat"; return ;;
    esac
  done
  echo 0
}
# fsync/fdatasync calls are counted with perf tracepoints when perf can (evidence of
# durability and of the group-commit batch size); otherwise the column shows "–".
SYNC_EVENTS=syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync
HAVE_PERF=0
if command -v perf >/dev/null && perf stat -e "$SYNC_EVENTS" true >/dev/null 2>&1; then HAVE_PERF=1; fi

# run KEY PID CONNS DURATION SCRIPT URL [VAR=VALUE…]: one wrk run; writes rows/KEY as
#   req/s p50_ms p99_ms cpu_us/req rss_peak_mb non2xx sockerr requests writer_ticks syncs
run() {
  local key=$1 pid=$2 conns=$3 dur=$4 script=$5 url=$6; shift 6
  local before after wbefore wafter out perf_pid="" syncs=-1
  before=$(ticks "$pid"); wbefore=$(writer_ticks "$pid")
  if [[ $HAVE_PERF == 1 ]]; then
    perf stat -x, -e "$SYNC_EVENTS" -p "$pid" -o "$BENCH_DIR/rows/$key.syncs" &
    perf_pid=$!
  fi
  out=$(env "$@" RUN="$key-$(date +%s%N)" wrk -t"$THREADS" -c"$conns" -d"${dur}s" --timeout 10s --latency \
        -s "$ROOT/bench/$script" "$url")
  after=$(ticks "$pid"); wafter=$(writer_ticks "$pid")
  if [[ -n "$perf_pid" ]]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    syncs=$(awk -F, '/syscalls:sys_enter_f/ {n += $1} END {print n + 0}' "$BENCH_DIR/rows/$key.syncs")
  fi
  printf '%s\n' "$out" >"$BENCH_DIR/rows/$key.wrk"
  echo "$out" | awk -v t="$((after - before))" -v w="$((wafter - wbefore))" -v syncs="$syncs" \
      -v hz="$CLK_TCK" -v hwm="$(hwm_mb "$pid")" '
    /^RESULT/ {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
      rps = r["requests"] / (r["duration_us"] / 1e6)
      cpu = r["requests"] ? t / hz * 1e6 / r["requests"] : 0
      printf "%.0f %.2f %.2f %.0f %s %d %d %d %d %d\n", rps, r["p50_us"]/1000, r["p99_us"]/1000, cpu, hwm,
        r["non2xx"], r["sockerr"], r["requests"], w, syncs
    }' >"$BENCH_DIR/rows/$key"
  say "  $key: $(cat "$BENCH_DIR/rows/$key")"
  local bad sock
  read -r _ _ _ _ _ bad sock _ <"$BENCH_DIR/rows/$key"
  [[ "$bad" == 0 && "$sock" == 0 ]] || say "  WARNING: $key had $bad non-2xx answers and $sock socket errors"
}

post() { # key pid port conns template path
  run "$1" "$2" "$4" "$DURATION" post.lua "http://127.0.0.1:$3$6" TEMPLATE="$BENCH_DIR/$5" TENANTS="$TENANTS" TOKEN="$CLINIC_TOKEN"
}

# Everything else on the machine shows up as CPU used outside the benchmark's processes
# (the servers, and this script's children: wrk, curl, perf) while the rows run.
busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
steal_ticks() { awk '/^cpu / {print $9}' /proc/stat; }
own_ticks() {
  local t=0 pid
  for pid in "${PIDS[@]}"; do t=$((t + $(ticks "$pid"))); done
  echo $((t + $(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)))
}
M_BUSY=$(busy_ticks); M_STEAL=$(steal_ticks); M_OWN=$(own_ticks); M_START=$(date +%s)

say "warming up (${WARMUP}s each)…"
for s in "bare $BARE_PID $BARE_PORT" "durable $DURABLE_PID $DURABLE_PORT" "hearth $HEARTH_PID $HEARTH_PORT"; do
  set -- $s
  run "warmup-$1" "$2" 64 "$WARMUP" post.lua "http://127.0.0.1:$3/fhir/Communication" \
    TEMPLATE="$BENCH_DIR/notice.tmpl" TENANTS="$TENANTS" TOKEN="$CLINIC_TOKEN" 2>/dev/null
done

NOTICES_SENT=0
for conns in 8 64; do
  say "inbound notice, $conns connections…"
  post "notice$conns-bare" "$BARE_PID" "$BARE_PORT" "$conns" notice.tmpl /fhir/Communication
  post "notice$conns-durable" "$DURABLE_PID" "$DURABLE_PORT" "$conns" notice.tmpl /fhir/Communication
  post "notice$conns-hearth" "$HEARTH_PID" "$HEARTH_PORT" "$conns" notice.tmpl /fhir/Communication
  NOTICES_SENT=$(( NOTICES_SENT + $(awk '{print $8 - $6}' "$BENCH_DIR/rows/notice$conns-hearth") ))
done

say "transaction Bundle of 10 entries, 8 connections…"
post bundle8-bare "$BARE_PID" "$BARE_PORT" 8 bundle.tmpl /fhir
post bundle8-durable "$DURABLE_PID" "$DURABLE_PORT" 8 bundle.tmpl /fhir
post bundle8-hearth "$HEARTH_PID" "$HEARTH_PORT" 8 bundle.tmpl /fhir

say "updates feed (pages of 100), 4 connections, while 8 connections post notices…"
run feed4-bare "$BARE_PID" 4 "$DURATION" feed.lua "http://127.0.0.1:$BARE_PORT/" MINSEQ="$FEED_SEEDED" MAXSEQ="$((FEED_SEEDED + NOTICES_SENT))" TOKEN="$HOUSING_TOKEN"
FEED_BEFORE=$(ticks "$HEARTH_PID"); FEED_WBEFORE=$(writer_ticks "$HEARTH_PID")
run writers8-hearth "$HEARTH_PID" 8 "$DURATION" post.lua "http://127.0.0.1:$HEARTH_PORT/fhir/Communication" \
  TEMPLATE="$BENCH_DIR/notice.tmpl" TENANTS="$TENANTS" TOKEN="$CLINIC_TOKEN" &
WRITERS=$!
sleep 0.2
run feed4-hearth "$HEARTH_PID" 4 "$DURATION" feed.lua "http://127.0.0.1:$HEARTH_PORT/" MINSEQ="$FEED_SEEDED" MAXSEQ="$((FEED_SEEDED + NOTICES_SENT))" TOKEN="$HOUSING_TOKEN"
wait "$WRITERS"
FEED_AFTER=$(ticks "$HEARTH_PID"); FEED_WAFTER=$(writer_ticks "$HEARTH_PID")
# Both runs overlap, so their CPU is reported over their combined requests.
MIXED=$(awk -v t="$((FEED_AFTER - FEED_BEFORE))" -v w="$((FEED_WAFTER - FEED_WBEFORE))" -v hz="$CLK_TCK" \
  -v a="$(awk '{print $8}' "$BENCH_DIR/rows/feed4-hearth")" -v b="$(awk '{print $8}' "$BENCH_DIR/rows/writers8-hearth")" \
  'BEGIN {printf "%.0f* %.0f*", t / hz * 1e6 / (a + b), w / hz * 1e6 / (a + b)}')
HEARTH_HWM=$(hwm_mb "$HEARTH_PID")
FOREIGN=$(awk -v busy="$(( $(busy_ticks) - M_BUSY ))" -v own="$(( $(own_ticks) - M_OWN ))" \
  -v steal="$(( $(steal_ticks) - M_STEAL ))" -v secs="$(( $(date +%s) - M_START ))" -v hz="$CLK_TCK" -v ncpu="$(nproc)" \
  'BEGIN {f = (busy - own) / hz; if (f < 0) f = 0
          printf "during the %d s of measured rows, other processes and the kernel used %.1f CPU-seconds of %d, hypervisor steal %.1f s", secs, f, ncpu * secs, steal / hz}')
say "$FOREIGN"

# --- stop Hearth, verify the audit chain ----------------------------------------------
kill -TERM "$HEARTH_PID"
for _ in $(seq 1 300); do kill -0 "$HEARTH_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$HEARTH_PID" 2>/dev/null && die "Hearth did not stop within 30s"
wait "$HEARTH_PID" || die "Hearth exited with an error (see $BENCH_DIR/hearth.err)"
VERIFY_DB_MB=$(du -m "$DATA/hearth.db" | cut -f1)
# Let the kernel finish writing back the shutdown checkpoint first, so the row measures
# verification rather than the tail of the load's disk writes.
sync
say "verifying the audit chain…"
VERIFY_OUT=$(timeout 600 "$REL/hearth" audit verify --data-dir "$DATA") || die "audit verify failed: $VERIFY_OUT"
say "  $VERIFY_OUT"
VERIFY_RECORDS=$(echo "$VERIFY_OUT" | sed -n 's/^OK: \([0-9]*\) records verified in \([0-9.]*\)s (\([0-9]*\) records\/s).*/\1/p')
VERIFY_SECS=$(echo "$VERIFY_OUT" | sed -n 's/^OK: \([0-9]*\) records verified in \([0-9.]*\)s (\([0-9]*\) records\/s).*/\2/p')
VERIFY_RATE=$(echo "$VERIFY_OUT" | sed -n 's/^OK: \([0-9]*\) records verified in \([0-9.]*\)s (\([0-9]*\) records\/s).*/\3/p')

# --- table ---------------------------------------------------------------------------
row() { # label conns key floor_bare_key floor_durable_key ["cpu writer" override]
  local label=$1 conns=$2 key=$3 bare=$4 durable=$5 override=${6:-}
  local rps p50 p99 cpu hwm bad sock n wt syncs brps="" drps="" wcpu
  read -r rps p50 p99 cpu hwm bad sock n wt syncs <"$BENCH_DIR/rows/$key"
  wcpu=$(awk -v w="$wt" -v n="$n" -v hz="$CLK_TCK" 'BEGIN {print (w > 0 && n > 0) ? sprintf("%.0f", w / hz * 1e6 / n) : "–"}')
  [[ -n "$override" ]] && read -r cpu wcpu <<<"$override"
  [[ -n "$bare" ]] && brps=$(awk '{print $1}' "$BENCH_DIR/rows/$bare")
  [[ -n "$durable" ]] && drps=$(awk '{print $1}' "$BENCH_DIR/rows/$durable")
  awk -v l="$label" -v c="$conns" -v s="${key##*-}" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v cpu="$cpu" \
      -v wcpu="$wcpu" -v syncs="$syncs" -v n="$n" -v hwm="$hwm" -v b="$brps" -v d="$drps" -v bad="$bad" 'BEGIN {
    rb = (b != "" && s == "hearth") ? sprintf("%.3f", rps / b) : ""
    rd = (d != "" && s == "hearth") ? sprintf("%.3f", rps / d) : ""
    bs = (syncs > 0) ? sprintf("%.1f", n / syncs) : (syncs == 0 ? "no syncs" : "–")
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |%s\n", l, c, s, rps, p50, p99, cpu, wcpu, bs, hwm, rb, rd, (bad > 0 ? " " bad " non-2xx" : "")
  }'
}

{
  echo "Hearth revision $REVISION, measured $(date -u +%Y-%m-%dT%H:%MZ)."
  STALE_END="$(stale_sources)"
  [[ -z "$STALE$STALE_END" ]] || echo "WARNING: the binary is older than these sources, so the revision is not exactly what ran: $STALE $STALE_END"
  echo "Machine: $MACHINE."
  echo "Store and floor file: $STORAGE."
  echo "Load: $WRK_VERSION, $THREADS threads, on the same $(nproc) cores, ${DURATION}s per row after a ${WARMUP}s warm-up per server."
  echo "Interference: $FOREIGN."
  echo "Population: $TENANTS tenants, $((TENANTS * 5)) consent versions, $STARTUP_RECORDS audit records (seeded in ${SEED_S}s; store file ${DB_MB} MB)."
  echo "Bodies: notice $NOTICE_BYTES bytes (discharge Communication, 6 contained resources); Bundle $BUNDLE_BYTES bytes (transaction, 10 Communications)."
  echo
  echo "| workload | conns | server | req/s | p50 ms | p99 ms | CPU µs/req | writer thread µs/req | req per fsync | RSS peak MB | ÷ bare | ÷ durable |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for c in 8 64; do
    for s in bare durable hearth; do
      row "inbound notice" "$c" "notice$c-$s" "notice$c-bare" "notice$c-durable"
    done
  done
  for s in bare durable hearth; do
    row "transaction Bundle (10 entries)" 8 "bundle8-$s" bundle8-bare bundle8-durable
  done
  row "feed page of 100" 4 feed4-bare "" ""
  row "feed page of 100, writers running" 4 feed4-hearth feed4-bare "" "$MIXED"
  row "inbound notice beside feed reads" 8 writers8-hearth notice8-bare notice8-durable "$MIXED"
  echo
  echo "\\* The feed and writer runs overlap: CPU over their combined requests."
  echo "RSS peak is the server's VmHWM since it started (Hearth's includes every earlier row)."
  echo "\"req per fsync\" counts fsync+fdatasync calls of the server process during the row (perf tracepoints)."
  echo
  echo "| one-off | result |"
  echo "|---|---|"
  echo "| start-up with $STARTUP_RECORDS audit records (exec → /readyz 200) | ${STARTUP_MS} ms |"
  echo "| \`hearth audit verify\` (store file ${VERIFY_DB_MB} MB) | ${VERIFY_RECORDS} records in ${VERIFY_SECS} s = ${VERIFY_RATE} records/s |"
  echo "| Hearth resident memory peak (VmHWM) over the whole run | ${HEARTH_HWM} MB |"
} | tee "$BENCH_DIR/results.md"
say "written to $BENCH_DIR/results.md (whole run: $(( $(date +%s) - SCRIPT_START ))s)"
