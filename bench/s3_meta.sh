#!/usr/bin/env bash
# What the local metadata cache saves on S3: `snapshots`, `ls`, a
# no-change backup, `ls -R` and `find` over every snapshot (tree blobs)
# on a SeaweedFS repository of N snapshots (default 40), rewind without
# its cache (--no-cache, every index and snapshot file fetched), rewind
# with a warm cache, the same through `rewind serve` whose --storage is
# the same SeaweedFS (a backup token; the client's cache of the rest:
# repository), and restic (its own cache warm), in one run. Also a one-file
# restore.
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
  -s3.port.iceberg=0 -s3.port.lance=0 -bucket=rwb,rsb,rwsrv > "$W/weed.log" 2>&1 &
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
sport=$((port + 11))
"$rewind" serve token add --data "$W/server" --storage "s3:http://127.0.0.1:$port/rwsrv/repos" \
  --repo bench --role backup > "$W/token" 2>/dev/null
"$rewind" serve --data "$W/server" --listen "127.0.0.1:$sport" \
  --storage "s3:http://127.0.0.1:$port/rwsrv/repos" > "$W/serve.out" 2> "$W/serve.log" &
spid=$!
trap 'kill $wpid $spid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$sport) 2>/dev/null && break; sleep 0.1; done
export REWIND_SERVER_TOKEN_FILE="$W/token"
SV="rest:http://127.0.0.1:$sport/bench"
"$rewind" -r "$SV" init >/dev/null
for i in $(seq 1 "$N"); do
  echo "change $i" > "$src/change.txt"
  "$rewind" -r "$RW" -q backup "$src" --no-scan
  "$rewind" -r "$SV" -q backup "$src" --no-scan
  restic -r "$RS" -q backup "$src"
done
one=$(find "$src" -type f -name '*.html' -print -quit)
[ -n "$one" ] || one="$src/change.txt"
set -f  # restic's patterns below go to restic as they are
# Seconds of a command; -1 if it failed.
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || { echo -1; return; }; e=$(date +%s.%N); echo "$e - $s" | bc; }
row() { printf '%-28s %10.3f %10.3f %10.3f %10.3f %10.3f\n' "$@"; }
printf '%-28s %10s %10s %10s %10s %10s\n' "$N snapshots" "no cache" "warm" "serve,none" "serve,warm" "restic"
"$rewind" -r "$RW" snapshots >/dev/null   # fills the cache
"$rewind" -r "$SV" snapshots >/dev/null
restic -r "$RS" snapshots >/dev/null      # fills restic's
# Each: rewind on S3 without and with its cache, through serve without and
# with, restic.
five() {
  local a=("$@")
  row "${a[0]}" "$(t "$rewind" -r "$RW" --no-cache "${a[@]:2}")" "$(t "$rewind" -r "$RW" "${a[@]:2}")" \
    "$(t "$rewind" -r "$SV" --no-cache "${a[@]:2}")" "$(t "$rewind" -r "$SV" "${a[@]:2}")" "$(t restic -r "$RS" ${a[1]})"
}
five "snapshots" "snapshots" snapshots
five "ls latest" "ls latest" ls latest
five "no-change backup" "backup $src" backup "$src" --no-scan
"$rewind" -r "$RW" ls -R latest >/dev/null   # fills the tree cache
"$rewind" -r "$SV" ls -R latest >/dev/null
restic -r "$RS" ls latest >/dev/null
five "ls -R latest" "ls latest" ls -R latest
five "find *.html (every snapshot)" "find *.html" find '*.html'
rm -rf "$W/o"*
row "one-file restore" \
  "$(t "$rewind" -r "$RW" --no-cache restore latest --include "$one" --target "$W/o1")" \
  "$(t "$rewind" -r "$RW" restore latest --include "$one" --target "$W/o2")" \
  "$(t "$rewind" -r "$SV" --no-cache restore latest --include "$one" --target "$W/o3")" \
  "$(t "$rewind" -r "$SV" restore latest --include "$one" --target "$W/o4")" \
  "$(t restic -r "$RS" restore latest --include "$one" --target "$W/o5")"
for o in o1 o2 o3 o4 o5; do cmp -s "$one" "$W/$o$one" || echo "$o: the restored file differs"; done
