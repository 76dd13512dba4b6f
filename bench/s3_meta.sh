#!/usr/bin/env bash
# What the local metadata cache saves on S3: `snapshots`, `ls`, a
# no-change backup, `ls -R` and `find` over every snapshot (tree blobs)
# on a SeaweedFS repository of N snapshots (default 40), rewind without
# its cache (--no-cache, every index and snapshot file fetched), rewind
# with a warm cache, and restic (its own cache warm), in one run.
#
#   [SRC=DIR] bench/s3_meta.sh [N]   (SRC: the tree backed up, default /usr/share/doc/bash)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-40}
W=/tmp/rw-s3meta
rm -rf "$W"; mkdir -p "$W"
weed=${REWIND_TEST_WEED:-target/test-tools/venv/bin/weed}
rewind=${REWIND:-target/release/rewind}
port=$((20000 + RANDOM % 10000))
mkdir -p "$W/weed"
AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s "$weed" mini -dir="$W/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -s3.port=$port -master.port=$((port+1)) -volume.port=$((port+2)) -filer.port=$((port+3)) \
  -webdav.port=$((port+4)) -admin.port=$((port+5)) -s3.port.grpc=$((port+6)) -master.port.grpc=$((port+7)) \
  -volume.port.grpc=$((port+8)) -filer.port.grpc=$((port+9)) -admin.port.grpc=$((port+10)) \
  -s3.port.iceberg=0 -s3.port.lance=0 -bucket=rwb,rsb > "$W/weed.log" 2>&1 &
wpid=$!
trap 'kill $wpid 2>/dev/null || true' EXIT
until grep -q "All enabled components are running" "$W/weed.log"; do sleep 0.2; done
export AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s AWS_REGION=us-east-1
export REWIND_PASSWORD=bench RESTIC_PASSWORD=bench XDG_CACHE_HOME="$W/cache"
unset REWIND_REPOSITORY RESTIC_REPOSITORY
RW="s3:http://127.0.0.1:$port/rwb/repo"; RS="s3:http://127.0.0.1:$port/rsb/repo"
src="$W/src"; mkdir -p "$src"
cp -r "${SRC:-/usr/share/doc/bash}" "$src/"
"$rewind" -r "$RW" init >/dev/null
restic -r "$RS" init >/dev/null 2>&1
for i in $(seq 1 "$N"); do
  echo "change $i" > "$src/change.txt"
  "$rewind" -r "$RW" -q backup "$src" --no-scan
  restic -r "$RS" -q backup "$src"
done
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
printf '%-28s %10s %10s %10s\n' "$N snapshots" "no cache" "warm" "restic"
"$rewind" -r "$RW" snapshots >/dev/null   # fills the cache
restic -r "$RS" snapshots >/dev/null      # fills restic's
printf '%-28s %10.3f %10.3f %10.3f\n' "snapshots" \
  "$(t "$rewind" -r "$RW" --no-cache snapshots)" "$(t "$rewind" -r "$RW" snapshots)" "$(t restic -r "$RS" snapshots)"
printf '%-28s %10.3f %10.3f %10.3f\n' "ls latest" \
  "$(t "$rewind" -r "$RW" --no-cache ls latest)" "$(t "$rewind" -r "$RW" ls latest)" "$(t restic -r "$RS" ls latest)"
printf '%-28s %10.3f %10.3f %10.3f\n' "no-change backup" \
  "$(t "$rewind" -r "$RW" --no-cache backup "$src" --no-scan)" "$(t "$rewind" -r "$RW" backup "$src" --no-scan)" "$(t restic -r "$RS" backup "$src")"
"$rewind" -r "$RW" ls -R latest >/dev/null   # fills the tree cache
restic -r "$RS" ls latest >/dev/null
printf '%-28s %10.3f %10.3f %10.3f\n' "ls -R latest" \
  "$(t "$rewind" -r "$RW" --no-cache ls -R latest)" "$(t "$rewind" -r "$RW" ls -R latest)" "$(t restic -r "$RS" ls latest)"
"$rewind" -r "$RW" find '*.html' >/dev/null
printf '%-28s %10.3f %10.3f %10.3f\n' "find *.html (every snapshot)" \
  "$(t "$rewind" -r "$RW" --no-cache find '*.html')" "$(t "$rewind" -r "$RW" find '*.html')" "$(t restic -r "$RS" find '*.html')"

