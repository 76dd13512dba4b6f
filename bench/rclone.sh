#!/usr/bin/env bash
# The rclone path's throughput beside reading the same files locally.
#
#   bench/rclone.sh [DATA_DIR (default /tmp/bench-data)] [REWIND (default target/release/rewind)]
#
# Backs up DATA_DIR twice into fresh repositories: as files, and as the
# rclone remote `:local:DATA_DIR` (listing by rclone lsjson, content streamed
# from rclone serve http). Page cache dropped before each first backup
# (root). Then a no-change backup of each.
set -euo pipefail
data=${1:-/tmp/bench-data}
rewind=$(realpath "${2:-target/release/rewind}")
work=$(mktemp -d /tmp/rw-rclone.XXXXXX)
trap 'rm -rf "$work"' EXIT
export REWIND_PASSWORD=bench RCLONE_CONFIG=/dev/null
size=$(du -sb "$data" | cut -f1)
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
t() { local s=$(date +%s.%N); "$@" > /dev/null; echo "$(date +%s.%N) - $s" | bc; }
for kind in files rclone; do
  export REWIND_REPOSITORY=$work/$kind
  "$rewind" init -q
  src=$data; [ $kind = rclone ] && src="rclone::local:$data"
  drop
  first=$(t "$rewind" backup -q "$src")
  again=$(t "$rewind" backup -q "$src")
  printf '%-7s first %6.2f s (%5.0f MiB/s)   no-change %5.2f s\n' $kind "$first" "$(echo "$size / 1048576 / $first" | bc -l)" "$again"
done
