#!/usr/bin/env bash
# What the ransomware scan costs a backup, on the benchmark dataset.
#
#   bench/scan_overhead.sh [DATASET_DIR] [RUNS]
#
# Backs DATASET_DIR (default /tmp/bench-data, the ~2 GiB default profile of
# ../shared/bench/make_dataset.py) up once, applies `make_dataset.py mutate`
# (1 % of the files changed) to a copy of it, then times RUNS (default 3)
# backups of that copy with the scan and RUNS with `--no-scan`, alternating,
# each into a fresh copy of the first repository (page cache warm: the
# dataset is read once before). Prints each run and the medians; the
# difference is the scan's cost on a backup of ordinary changes.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/.."
DATASET="${1:-/tmp/bench-data}"
RUNS="${2:-3}"
BIN="${REWIND_BIN:-$ROOT/target/release/rewind}"
WORK="${WORK:-/tmp/rewind-scan-overhead}"
SHARED_BENCH="${SHARED_BENCH:-$ROOT/../shared/bench}"
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --locked -p rewind-cli)

rm -rf "$WORK" && mkdir -p "$WORK"
export REWIND_PASSWORD=bench
cp -a "$DATASET" "$WORK/data"
"$BIN" --repo "$WORK/base" init >/dev/null 2>&1
"$BIN" --repo "$WORK/base" backup "$WORK/data" >/dev/null 2>&1
python3 "$SHARED_BENCH/make_dataset.py" mutate "$WORK/data" --seed 7 >/dev/null
find "$WORK/data" -type f -exec cat {} + >/dev/null

time_backup() { # REPO [ARGS...]: prints seconds
  local repo="$1"; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$BIN" --repo "$repo" backup "$@" "$WORK/data" >/dev/null 2>&1 || [ $? -eq 4 ]
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

scan=(); noscan=()
for i in $(seq 1 "$RUNS"); do
  for mode in scan noscan; do
    rm -rf "$WORK/repo" && cp -a "$WORK/base" "$WORK/repo"
    if [ "$mode" = scan ]; then
      s=$(time_backup "$WORK/repo"); scan+=("$s")
    else
      s=$(time_backup "$WORK/repo" --no-scan); noscan+=("$s")
    fi
    printf 'run %d %-6s %.3f s\n' "$i" "$mode" "$s"
  done
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms=$(median "${scan[@]}"); mn=$(median "${noscan[@]}")
printf 'median with scan %.3f s, --no-scan %.3f s: %+.1f %%\n' "$ms" "$mn" "$(echo "($ms - $mn) / $mn * 100" | bc -l)"
