#!/usr/bin/env bash
# What a repository's size costs (docs/SCALE.md): for each chunk count, a
# local repository grown to it with synthetic index files and sparse packs
# (crates/rewind-core/examples/synth_repo.rs), then, each with its peak RSS
# and wall time: a backup that adds 1 GiB (64 files of random data), a
# restore of that snapshot, `check` and `prune` (nothing to remove: it walks
# every snapshot and keeps everything). Then a second backup adding 1 GiB,
# which starts from the on-disk index table the first one built when the
# index is over MAX_MEMORY (docs/DESIGN.md §6b). The repositories are kept in
# $W (default /tmp/rw-scale) and grow by 2 GiB a run.
#
#   [MAX_MEMORY=64M] bench/scale.sh [CHUNKS ...]    (default: 100000 10000000)
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("${@:-100000 10000000}")
[ $# -eq 0 ] && counts=(100000 10000000)
W=${W:-/tmp/rw-scale}
rewind=${REWIND:-target/release/rewind}
cargo build -q --release -p rewind-core --example synth_repo
synth=target/release/examples/synth_repo
export REWIND_PASSWORD=bench XDG_CACHE_HOME="$W/cache"
[ -n "${MAX_MEMORY:-}" ] && export REWIND_MAX_MEMORY=$MAX_MEMORY
unset REWIND_REPOSITORY
mkdir -p "$W"
# Prints "SECONDS RSS_MIB" of a command (GNU time).
measure() {
  /usr/bin/time -f "%e %M" -o "$W/time" "$@" >/dev/null 2>"$W/err" || { cat "$W/err"; exit 1; }
  awk '{ printf "%8.2f s %8.0f MiB", $1, $2/1024 }' "$W/time"
}
printf '%-12s %-26s %-26s %-26s %-26s %-26s\n' chunks "backup +1 GiB" "restore 1 GiB" "backup +1 GiB again" check prune
for n in "${counts[@]}"; do
  R="$W/repo-$n"
  if [ ! -f "$R/.synth-$n" ]; then
    rm -rf "$R"
    "$rewind" -r "$R" init >/dev/null 2>&1
    "$synth" "$R" "$n" 2>/dev/null
    touch "$R/.synth-$n"
  fi
  rm -rf "$W/cache" "$W/out" "$W/src"
  # New data every run: each backup adds the whole 1 GiB.
  mkdir -p "$W/src"
  for i in $(seq 0 63); do head -c 16M /dev/urandom > "$W/src/f$i"; done
  b=$(measure "$rewind" -r "$R" backup --no-scan "$W/src")
  r=$(measure "$rewind" -r "$R" restore latest --path "$W/src" --target "$W/out")
  rm -rf "$W/src" "$W/out"
  mkdir -p "$W/src"
  for i in $(seq 0 63); do head -c 16M /dev/urandom > "$W/src/g$i"; done
  b2=$(measure "$rewind" -r "$R" backup --no-scan "$W/src")
  c=$(measure "$rewind" -r "$R" check)
  p=$(measure "$rewind" -r "$R" prune)
  printf '%-12s %-26s %-26s %-26s %-26s %-26s\n' "$n" "$b" "$r" "$b2" "$c" "$p"
done
