#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ one after the other, each for a
# bounded time on one core, at low priority, and prints a summary (also in
# fuzz/last-run/summary.txt; each target's libFuzzer log beside it).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default: 60 s, every target
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# SANITIZER=address to build with AddressSanitizer (default none: the code
# under test forbids unsafe, and without it a target runs several times
# more inputs). FUZZ_ARGS adds libFuzzer flags.
#
# Each target starts from fuzz/seeds/TARGET (committed, made from the v1
# fixture) and keeps what it finds in fuzz/corpus/TARGET, so later runs go
# on from there. A crash stops that target; the input is saved under
# fuzz/artifacts/TARGET/ (reproduce: cargo +nightly fuzz run -s none TARGET
# FILE). Exit status 1 when any target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
san=${SANITIZER:-none}
case "$secs" in '' | *[!0-9]*)
  echo "usage: $0 [SECONDS] [TARGET...]" >&2
  exit 2
  ;;
esac

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

out=fuzz/last-run
mkdir -p "$out"
# Build once; the targets then run as built (a source edited meanwhile is
# not rebuilt into the middle of the timings).
nice -n 10 cargo +nightly fuzz build -s "$san" >"$out/build.log" 2>&1 || {
  cat "$out/build.log" >&2
  exit 1
}
bin="fuzz/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"

summary="$out/summary.txt"
{
  echo "# scripts/fuzz.sh $secs s per target, sanitizer $san, $(date -u +%FT%TZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  printf '%-20s %7s %12s %9s %7s %s\n' target seconds execs execs/s crashes corpus
} >"$summary"
failed=0
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  dirs=("$corpus")
  [ -d "fuzz/seeds/$t" ] && dirs+=("fuzz/seeds/$t")
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  start=$(date +%s)
  status=0
  # shellcheck disable=SC2086
  nice -n 10 "$bin/$t" -artifact_prefix="fuzz/artifacts/$t/" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    ${FUZZ_ARGS:-} "${dirs[@]}" >"$out/$t.log" 2>&1 || status=$?
  took=$(($(date +%s) - start))
  after=$(find "fuzz/artifacts/$t" -type f | wc -l)
  crashes=$((after - before))
  if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    crashes="?(exit $status)"
  fi
  [ "$status" -ne 0 ] && failed=1
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log" | tail -1)
  execs=${execs:-?}
  rate='?'
  [ "$execs" != '?' ] && [ "$took" -gt 0 ] && rate=$((execs / took))
  printf '%-20s %7s %12s %9s %7s %s\n' "$t" "$took" "$execs" "$rate" "$crashes" \
    "$(find "$corpus" -type f | wc -l) files" >>"$summary"
  tail -1 "$summary"
done
echo
cat "$summary"
exit "$failed"
