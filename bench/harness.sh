#!/usr/bin/env bash
# Copied from ../shared/bench/run_bench.sh with the real rewind command lines.
# Backup-tool benchmark harness: init / backup / no-change backup / backup after
# mutate / restore (+ byte-exact verify) / check / check with full data read.
#
# Usage (all settings are env vars):
#   DATASET=<dir>          source tree (required); it is copied, never modified
#   TOOLS="restic borg borg-zstd rustic bupstash kopia rewind"   tools to run, in order
#   SCRATCH=/tmp/rewind-bench   repos, caches, work copy, restores live here
#   RESULTS=$SCRATCH/results.csv  CSV rows are appended (header written if new)
#   LABEL=<name>           dataset label in the CSV (default: basename of DATASET)
#   RUNS=1                 repeat each tool's whole sequence RUNS times
#   RUN_START=1            number of the first run (to add runs to a CSV later)
#   DROP_CACHES=1          sync + drop page cache before every measured step
#                          (falls back to warm cache, recorded per row)
#   MUTATE_SEED=2          seed for `make_dataset.py mutate`
#   MUTATE_FRACTION=0.01
#   KEEP=0                 1 = keep repos/restores after each tool
#   REWIND_BIN=rewind      the tool under development; skipped when missing
#   PASSWORD=bench-password-not-secret
#   QUIET_GATE=1           before each step wait until the machine is idle
#                          (other processes' CPU < QUIET_THRESHOLD cores over
#                          3 s), at most QUIET_MAX_WAIT s; the wait is recorded
#   QUIET_THRESHOLD=0.15  QUIET_MAX_WAIT=600 (per step)  QUIET_TOTAL_WAIT=3600
#                          (per harness invocation; after that, no more waiting)
# Every measured command runs under /usr/bin/time -v as `sh -c 'CMD; sync'`,
# so wall time includes flushing what the tool wrote.  Only local files are used.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SHARED_BENCH="${SHARED_BENCH:-$HERE/../../shared/bench}"
: "${DATASET:?set DATASET to the source tree}"
DATASET="$(cd "$DATASET" && pwd)"
TOOLS="${TOOLS:-restic borg borg-zstd rustic bupstash kopia rewind}"
SCRATCH="${SCRATCH:-/tmp/rewind-bench}"
RESULTS="${RESULTS:-$SCRATCH/results.csv}"
LABEL="${LABEL:-$(basename "$DATASET")}"
RUNS="${RUNS:-1}"
RUN_START="${RUN_START:-1}"
DROP_CACHES="${DROP_CACHES:-1}"
MUTATE_SEED="${MUTATE_SEED:-2}"
MUTATE_FRACTION="${MUTATE_FRACTION:-0.01}"
KEEP="${KEEP:-0}"
REWIND_BIN="${REWIND_BIN:-rewind}"
PASSWORD="${PASSWORD:-bench-password-not-secret}"
PY="${PYTHON:-python3}"
QUIET_GATE="${QUIET_GATE:-1}"
QUIET_THRESHOLD="${QUIET_THRESHOLD:-0.15}"
QUIET_MAX_WAIT="${QUIET_MAX_WAIT:-600}"
QUIET_TOTAL_WAIT="${QUIET_TOTAL_WAIT:-3600}"

mkdir -p "$SCRATCH"
SRC="$SCRATCH/src"          # the path every tool backs up (same for all tools)
LOGDIR="$SCRATCH/logs"
mkdir -p "$LOGDIR"
HEADER="dataset,dataset_bytes,dataset_files,tool,version,run,step,wall_s,user_s,sys_s,cpu_s,max_rss_kib,exit,repo_bytes,repo_du_kib,cache_du_kib,verify,cache_state,settings,timestamp,other_cpu_s,steal_s,load1,gate_wait_s"
[ -s "$RESULTS" ] || echo "$HEADER" > "$RESULTS"

DS_BYTES=$(du -sb "$DATASET" | cut -f1)
DS_FILES=$(find "$DATASET" -type f | wc -l)

# machine-wide busy and steal jiffies from /proc/stat (to detect other load)
cpu_busy() { awk '/^cpu / {print $2+$3+$4+$7+$8, $9}' /proc/stat; }
HZ=$(getconf CLK_TCK)

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

GATE_TOTAL=0
wait_quiet() {  # sets GW = seconds waited for the machine to become idle
  local a b busy
  GW=0
  [ "$QUIET_GATE" = 1 ] || return 0
  while [ "$GATE_TOTAL" -lt "$QUIET_TOTAL_WAIT" ]; do
    a=$(cpu_busy); sleep 3; b=$(cpu_busy)
    busy=$(awk -v a="$a" -v b="$b" -v hz="$HZ" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.2f", (y[1]-x[1])/hz/3}')
    if awk -v b="$busy" -v t="$QUIET_THRESHOLD" 'BEGIN{exit !(b < t)}'; then break; fi
    GW=$((GW + 3)); GATE_TOTAL=$((GATE_TOTAL + 3))
    [ $((GW % 60)) -eq 0 ] && log "  waiting for idle machine (busy ${busy} cores, ${GW}s)"
    if [ "$GW" -ge "$QUIET_MAX_WAIT" ]; then log "  machine still busy after ${GW}s, measuring anyway"; break; fi
  done
  return 0
}

drop_caches() {
  sync
  if [ "$DROP_CACHES" = 1 ] && { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
    echo cold
  else
    echo warm
  fi
}

# ---------------------------------------------------------------- tool adapters
# Each adapter defines, for tool $1: tool_available, tool_version, tool_settings
# and tool_run STEP (init|backup|restore|check|check-read) executed with the
# right env, cwd = $SRC for backups and $RESTORE for restores.

tool_bin() {
  case "$1" in
    restic) echo restic ;;
    borg|borg-zstd) echo borg ;;
    rustic) echo rustic ;;
    bupstash) echo bupstash ;;
    kopia) echo kopia ;;
    rewind|rewind-unlocked|rewind-fast) echo "$REWIND_BIN" ;;
  esac
}

tool_available() { command -v "$(tool_bin "$1")" >/dev/null 2>&1; }

tool_version() {
  case "$1" in
    restic) restic version | head -1 ;;
    borg|borg-zstd) borg --version ;;
    rustic) rustic --version 2>/dev/null | head -1 ;;
    bupstash) bupstash version 2>/dev/null | head -1 ;;
    kopia) kopia --version 2>/dev/null | head -1 ;;
    rewind|rewind-unlocked|rewind-fast) "$REWIND_BIN" --version 2>/dev/null | head -1 || echo rewind ;;
  esac
}

tool_settings() {
  case "$1" in
    restic) echo "repo v2; compression auto (zstd fastest); AES-256-CTR+Poly1305" ;;
    borg) echo "repokey (AES-CTR+HMAC-SHA256); compression default lz4" ;;
    borg-zstd) echo "repokey (AES-CTR+HMAC-SHA256); --compression zstd,3" ;;
    rustic) echo "default (repo v2; zstd level 3); AES-256-CTR+Poly1305" ;;
    bupstash) echo "default (zstd:3; libsodium public-key encryption); check = list; check-read = get latest > /dev/null" ;;
    kopia) echo "default (AES256-GCM; compression none unless policy set)" ;;
    rewind) echo "rewind defaults" ;;
    rewind-unlocked) echo "rewind defaults, the key from \`rewind unlock\` (no key derivation a command)" ;;
    rewind-fast) echo "as rewind-unlocked, with --compression fast (zstd 1)" ;;
  esac
}

tool_env() {  # prints env assignments for tool $1
  local t=$1
  case "$t" in
    restic) echo "RESTIC_REPOSITORY=$REPO RESTIC_PASSWORD=$PASSWORD RESTIC_CACHE_DIR=$CACHE" ;;
    borg|borg-zstd) echo "BORG_REPO=$REPO BORG_PASSPHRASE=$PASSWORD BORG_BASE_DIR=$CACHE BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes" ;;
    rustic) echo "RUSTIC_REPOSITORY=$REPO RUSTIC_PASSWORD=$PASSWORD RUSTIC_CACHE_DIR=$CACHE RUSTIC_NO_PROGRESS=true" ;;
    bupstash) echo "BUPSTASH_REPOSITORY=$REPO BUPSTASH_KEY=$CACHE/bench.key BUPSTASH_SEND_LOG=$CACHE/send.log BUPSTASH_QUERY_CACHE=$CACHE/query.cache" ;;
    kopia) echo "KOPIA_PASSWORD=$PASSWORD KOPIA_CONFIG_PATH=$CACHE/repository.config KOPIA_CACHE_DIRECTORY=$CACHE/cache KOPIA_CHECK_FOR_UPDATES=false" ;;
    rewind) echo "REWIND_REPOSITORY=$REPO REWIND_PASSWORD=$PASSWORD" ;;
    rewind-unlocked) echo "REWIND_REPOSITORY=$REPO XDG_RUNTIME_DIR=$CACHE/run" ;;
    rewind-fast) echo "REWIND_REPOSITORY=$REPO XDG_RUNTIME_DIR=$CACHE/run REWIND_COMPRESSION=fast" ;;
  esac
}

# tool_cmd TOOL STEP N -> the shell command line (run via sh -c) for that step.
# N is the backup number (1..3); archive names are b1..b3 where a tool needs them.
tool_cmd() {
  local t=$1 step=$2 n=${3:-0}
  case "$t:$step" in
    restic:init)        echo "restic init" ;;
    restic:backup)      echo "restic backup ." ;;
    restic:restore)     echo "restic restore latest --target ." ;;
    restic:check)       echo "restic check" ;;
    restic:check-read)  echo "restic check --read-data" ;;

    borg:init|borg-zstd:init) echo "borg init --encryption repokey" ;;
    borg:backup)        echo "borg create --stats ::b$n ." ;;
    borg-zstd:backup)   echo "borg create --stats --compression zstd,3 ::b$n ." ;;
    borg:restore|borg-zstd:restore) echo "borg extract ::b$n" ;;
    borg:check|borg-zstd:check) echo "borg check" ;;
    borg:check-read|borg-zstd:check-read) echo "borg check --verify-data" ;;

    rustic:init)        echo "rustic init" ;;
    rustic:backup)      echo "rustic backup ." ;;
    rustic:restore)     echo "rustic restore latest ." ;;
    rustic:check)       echo "rustic check" ;;
    rustic:check-read)  echo "rustic check --read-data" ;;

    # bupstash has no repository check command: "check" lists items (metadata
    # only), "check-read" fetches, decrypts and verifies the latest snapshot.
    bupstash:init)      echo "bupstash new-key -o $CACHE/bench.key && bupstash init" ;;
    bupstash:backup)    echo "bupstash put name=b$n ." ;;
    bupstash:restore)   echo "bupstash restore --into . name=b$n" ;;
    bupstash:check)     echo "bupstash list" ;;
    bupstash:check-read) echo "bupstash get name=b3 > /dev/null" ;;

    kopia:init)         echo "kopia repository create filesystem --path=$REPO && kopia policy set --global --compression=zstd" ;;
    kopia:backup)       echo "kopia snapshot create ." ;;
    kopia:restore)      echo "kopia snapshot restore \$(kopia snapshot list $SRC --json | $PY -c 'import json,sys; print(json.load(sys.stdin)[-1][\"id\"])') ." ;;
    kopia:check)        echo "kopia snapshot verify" ;;
    kopia:check-read)   echo "kopia snapshot verify --verify-files-percent=100" ;;

    rewind:init)        echo "$REWIND_BIN init" ;;
    rewind:backup)      echo "$REWIND_BIN backup --quiet ." ;;
    rewind:restore)     echo "$REWIND_BIN restore --quiet latest:$SRC --target ." ;;
    rewind:check)       echo "$REWIND_BIN check" ;;
    rewind:check-read)  echo "$REWIND_BIN check --read-data" ;;

    # The same commands with the key kept by `rewind unlock` (made at init).
    rewind-unlocked:init) echo "mkdir -p $CACHE/run && REWIND_PASSWORD=$PASSWORD $REWIND_BIN init && REWIND_PASSWORD=$PASSWORD $REWIND_BIN unlock --for 4h" ;;
    rewind-unlocked:*)  tool_cmd rewind "$step" "$n" ;;
    rewind-fast:*)      tool_cmd rewind-unlocked "$step" "$n" ;;
  esac
}

# --------------------------------------------------------------- measurement
# measure TOOL RUN STEPNAME CWD CMDLINE [VERIFY]
measure() {
  local tool=$1 run=$2 step=$3 cwd=$4 cmdline=$5
  local state tf lf rc gw
  wait_quiet; gw=$GW
  state=$(drop_caches)
  tf="$LOGDIR/$LABEL-$tool-r$run-$step.time"
  lf="$LOGDIR/$LABEL-$tool-r$run-$step.log"
  log "$tool run $run: $step ($state cache): $cmdline"
  local b0 b1
  b0=$(cpu_busy)
  set +e
  ( cd "$cwd" && env $(tool_env "$tool") /usr/bin/time -v -o "$tf" sh -c "$cmdline"'; rc=$?; sync; exit $rc' ) > "$lf" 2>&1
  rc=$?
  set -e
  b1=$(cpu_busy)
  local wall user sys rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$tf")
  user=$(awk -F': ' '/User time/ {print $2}' "$tf")
  sys=$(awk -F': ' '/System time/ {print $2}' "$tf")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")
  local cpu
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN{printf "%.2f", u+s}')
  local rb rk ck
  rb=$(du -sb "$REPO" 2>/dev/null | cut -f1 || echo 0)
  rk=$(du -sk "$REPO" 2>/dev/null | cut -f1 || echo 0)
  ck=$(du -sk "$CACHE" 2>/dev/null | cut -f1 || echo 0)
  local verify="${VERIFY:-}" other steal load1
  other=$(awk -v a="$b0" -v b="$b1" -v c="$cpu" -v hz="$HZ" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.1f", (y[1]-x[1])/hz - c}')
  steal=$(awk -v a="$b0" -v b="$b1" -v hz="$HZ" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.1f", (y[2]-x[2])/hz}')
  load1=$(cut -d' ' -f1 /proc/loadavg)
  [ $rc -ne 0 ] && { log "  FAILED rc=$rc, see $lf"; tail -5 "$lf" >&2; }
  echo "$LABEL,$DS_BYTES,$DS_FILES,$tool,\"$VERSION\",$run,$step,$wall,$user,$sys,$cpu,$rss,$rc,$rb,$rk,$ck,$verify,$state,\"$SETTINGS\",$(date -u +%FT%TZ),$other,$steal,$load1,$gw" >> "$RESULTS"
  log "  wall=${wall}s cpu=${cpu}s rss=${rss}KiB repo=$((rb/1048576))MiB other_cpu=${other}s load1=$load1 gate_wait=${gw}s"
  return $rc
}

verify_restore() {  # verify_restore RESTORED -> prints "ok" or "FAIL(n)"
  local res=$1 n m
  n=$(diff -r --no-dereference -q "$SRC" "$res" 2>&1 | tee "$LOGDIR/$LABEL-$TOOL-r$RUN-verify.diff" | wc -l)
  # metadata: size, mode and integer mtime of regular files
  m=$(diff <(cd "$SRC" && find . -type f -printf '%P %s %m %T@\n' | awk '{sub(/\..*/,"",$4); print}' | sort) \
           <(cd "$res" && find . -type f -printf '%P %s %m %T@\n' | awk '{sub(/\..*/,"",$4); print}' | sort) | grep -c '^[<>]' || true)
  if [ "$n" -eq 0 ] && [ "$m" -eq 0 ]; then echo ok; elif [ "$n" -eq 0 ]; then echo "bytes-ok/meta-diff($m)"; else echo "FAIL($n)"; fi
}

# --------------------------------------------------------------- main loop
for TOOL in $TOOLS; do
  if ! tool_available "$TOOL"; then
    log "$TOOL: binary '$(tool_bin "$TOOL")' not found, skipped"
    echo "$LABEL,$DS_BYTES,$DS_FILES,$TOOL,\"not installed\",0,skipped,,,,,,,,,,,,\"\",$(date -u +%FT%TZ),,,,"  >> "$RESULTS"
    continue
  fi
  VERSION=$(tool_version "$TOOL" | tr -d '",')
  SETTINGS=$(tool_settings "$TOOL")
  for RUN in $(seq "$RUN_START" $((RUN_START + RUNS - 1))); do
    REPO="$SCRATCH/repo-$TOOL"
    CACHE="$SCRATCH/cache-$TOOL"
    RESTORE="$SCRATCH/restore-$TOOL"
    rm -rf "$REPO" "$CACHE" "$RESTORE" "$SRC"
    mkdir -p "$CACHE" "$RESTORE"
    log "$TOOL run $RUN: copying dataset"
    cp -a "$DATASET" "$SRC"
    [ "$TOOL" = kopia ] && mkdir -p "$REPO"
    VERIFY=""
    ok=1
    measure "$TOOL" "$RUN" init "$SRC" "$(tool_cmd "$TOOL" init)" || ok=0
    [ $ok = 1 ] && { measure "$TOOL" "$RUN" backup1-initial "$SRC" "$(tool_cmd "$TOOL" backup 1)" || ok=0; }
    [ $ok = 1 ] && { measure "$TOOL" "$RUN" backup2-nochange "$SRC" "$(tool_cmd "$TOOL" backup 2)" || ok=0; }
    if [ $ok = 1 ]; then
      "$PY" "$SHARED_BENCH/make_dataset.py" mutate "$SRC" --seed "$MUTATE_SEED" --fraction "$MUTATE_FRACTION" > "$LOGDIR/$LABEL-$TOOL-r$RUN-mutate.log"
      measure "$TOOL" "$RUN" backup3-mutated "$SRC" "$(tool_cmd "$TOOL" backup 3)" || ok=0
    fi
    if [ $ok = 1 ]; then
      if measure "$TOOL" "$RUN" restore "$RESTORE" "$(tool_cmd "$TOOL" restore 3)"; then
        V=$(verify_restore "$RESTORE")
        log "  restore verify: $V"
        # rewrite the verify column of the restore row just written
        "$PY" - "$RESULTS" "$V" <<'EOF'
import sys
p, v = sys.argv[1], sys.argv[2]
lines = open(p).read().splitlines()
import csv, io
row = next(csv.reader([lines[-1]]))
row[16] = v
buf = io.StringIO(); csv.writer(buf, lineterminator="").writerow(row)
lines[-1] = buf.getvalue()
open(p, "w").write("\n".join(lines) + "\n")
EOF
      fi
      measure "$TOOL" "$RUN" check "$SRC" "$(tool_cmd "$TOOL" check)" || true
      measure "$TOOL" "$RUN" check-read "$SRC" "$(tool_cmd "$TOOL" check-read)" || true
    fi
    if [ "$KEEP" != 1 ]; then rm -rf "$REPO" "$RESTORE" "$CACHE"; fi
  done
done
rm -rf "$SRC"
"$PY" "$SHARED_BENCH/summarize.py" "$RESULTS" --dataset "$LABEL"
