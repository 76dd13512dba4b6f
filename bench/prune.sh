#!/usr/bin/env bash
# Forget + prune on a repository with N snapshots (default 100), rewind beside
# restic and borg (zstd,3), in one run.
#
#   bench/prune.sh [DATASET_DIR]
#
# 1. Copies DATASET_DIR (default /tmp/rewind-bench-data, the default ~2 GiB
#    profile of ../shared/bench/make_dataset.py) to $SCRATCH/src.
# 2. N times: `make_dataset.py mutate --seed i --fraction $FRACTION` on the
#    copy, then one backup per tool, dated i days after 2025-01-01 (rewind
#    --time, restic --time, borg --timestamp), so the history spans N days.
# 3. Measured (cold cache, /usr/bin/time -v, wall time includes `sync`):
#      rewind:  rewind forget --keep-last $KEEP --allow-short-history --prune --now
#      restic:  restic forget --keep-last $KEEP --prune
#      borg:    borg prune --keep-last $KEEP && borg compact
#    then each tool's check, and rewind's restore of the newest snapshot
#    compared with the source.
# Results: $SCRATCH/prune.csv (tool,step,seconds,max_rss_kib,repo_bytes).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/.."
SHARED_BENCH="${SHARED_BENCH:-$ROOT/../shared/bench}"
DATASET="${1:-${DATASET:-/tmp/rewind-bench-data}}"
SCRATCH="${SCRATCH:-/tmp/rewind-prune-bench}"
N="${N:-100}"
KEEP="${KEEP:-10}"
FRACTION="${FRACTION:-0.01}"
PASSWORD=bench-password-not-secret
export PATH="$PATH:/tmp/borg-venv/bin"

(cd "$ROOT" && cargo build --release --locked -p rewind-cli)
REWIND="$ROOT/target/release/rewind"
[ -d "$DATASET" ] || python3 "$SHARED_BENCH/make_dataset.py" generate "$DATASET" --profile default

rm -rf "$SCRATCH" && mkdir -p "$SCRATCH"
cp -a "$DATASET" "$SCRATCH/src"
SRC="$SCRATCH/src"
export REWIND_REPOSITORY="$SCRATCH/rewind" REWIND_PASSWORD="$PASSWORD"
export RESTIC_REPOSITORY="$SCRATCH/restic" RESTIC_PASSWORD="$PASSWORD" RESTIC_CACHE_DIR="$SCRATCH/restic-cache"
export BORG_REPO="$SCRATCH/borg" BORG_PASSPHRASE="$PASSWORD" BORG_BASE_DIR="$SCRATCH/borg-base"
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

"$REWIND" init -q
restic init -q
borg init --encryption repokey

for i in $(seq 1 "$N"); do
  if [ "$i" -gt 1 ]; then
    python3 "$SHARED_BENCH/make_dataset.py" mutate "$SRC" --seed "$i" --fraction "$FRACTION" >/dev/null
  fi
  day=$(date -u -d "2025-01-01 + $i days" +%Y-%m-%d)
  (cd "$SRC" && "$REWIND" backup -q --time "$day 12:00:00" "$SRC")
  (cd "$SRC" && restic backup -q --time "$day 12:00:00" "$SRC" >/dev/null)
  (cd "$SRC" && borg create --compression zstd,3 --timestamp "${day}T12:00:00" "::b$i" "$SRC")
  echo "snapshot $i of $N done"
done

CSV="$SCRATCH/prune.csv"
echo "tool,step,seconds,max_rss_kib,repo_bytes" > "$CSV"
measure() { # tool step repo cmd...
  local tool=$1 step=$2 repo=$3; shift 3
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -v -o "$SCRATCH/time.txt" sh -c "$*; rc=\$?; sync; exit \$rc" > "$SCRATCH/$tool-$step.log" 2>&1
  local secs rss bytes
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$SCRATCH/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$SCRATCH/time.txt")
  bytes=$(du -sb "$repo" | cut -f1)
  echo "$tool,$step,$secs,$rss,$bytes" | tee -a "$CSV"
}
for tool in rewind restic borg; do
  case $tool in
    rewind) repo=$REWIND_REPOSITORY ;;
    restic) repo=$RESTIC_REPOSITORY ;;
    borg) repo=$BORG_REPO ;;
  esac
  echo "$tool,before,0,0,$(du -sb "$repo" | cut -f1)" | tee -a "$CSV"
done
measure rewind forget-prune "$REWIND_REPOSITORY" "$REWIND" forget -q --keep-last "$KEEP" --allow-short-history --prune --now
measure restic forget-prune "$RESTIC_REPOSITORY" restic forget -q --keep-last "$KEEP" --prune
measure borg forget-prune "$BORG_REPO" "borg prune --keep-last $KEEP && borg compact"
measure rewind check "$REWIND_REPOSITORY" "$REWIND" check
measure restic check "$RESTIC_REPOSITORY" restic check
measure borg check "$BORG_REPO" borg check
rm -rf "$SCRATCH/restore"
"$REWIND" restore latest --target "$SCRATCH/restore" -q
diff -r "$SRC" "$SCRATCH/restore$SRC" >/dev/null && echo "rewind restore after prune: identical to the source"
cat "$CSV"
