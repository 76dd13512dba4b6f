#!/usr/bin/env bash
# Backup and restore through `rewind serve` on loopback (plain HTTP, a backup
# token), beside rewind and restic on a local repository, in one run.
# restic's rest-server is not packaged in Debian or PyPI, so restic runs
# local here; bench/sftp.sh has restic over SFTP.
#
#   bench/serve.sh [DATASET_DIR]
#
# Measures, cold cache, under /usr/bin/time -v: first backup and restore of
# it (then `diff -r` against the source) for each; then the server's peak
# RSS (VmHWM). Results: $SCRATCH/serve.csv.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/.."
DATASET="${1:-${DATASET:-/tmp/rewind-bench-data}}"
DATASET="$(cd "$DATASET" && pwd)"
SCRATCH="${SCRATCH:-/tmp/rewind-serve-bench}"
PASSWORD=bench-password-not-secret
PORT="${PORT:-18420}"

(cd "$ROOT" && cargo build --release --locked -p rewind-cli)
REWIND="$ROOT/target/release/rewind"

rm -rf "$SCRATCH" && mkdir -p "$SCRATCH"
"$REWIND" serve token add --data "$SCRATCH/server" --repo bench --role backup > "$SCRATCH/token" 2>/dev/null
"$REWIND" serve --data "$SCRATCH/server" --listen "127.0.0.1:$PORT" > "$SCRATCH/serve.out" 2> "$SCRATCH/serve.log" &
SERVE_PID=$!
trap 'kill $SERVE_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

export REWIND_SERVER_TOKEN="$(cat "$SCRATCH/token")" REWIND_PASSWORD="$PASSWORD"
export RESTIC_REPOSITORY="$SCRATCH/restic" RESTIC_PASSWORD="$PASSWORD" RESTIC_CACHE_DIR="$SCRATCH/restic-cache"
SERVED="rest:http://127.0.0.1:$PORT/bench"
"$REWIND" -r "$SERVED" init -q
"$REWIND" -r "$SCRATCH/rewind-local" init -q
restic init -q

CSV="$SCRATCH/serve.csv"
echo "tool,step,seconds,max_rss_kib" > "$CSV"
. "$HERE/measure.sh"
cd "$DATASET"
measure rewind-serve backup "$REWIND" -r "$SERVED" backup -q .
measure rewind-local backup "$REWIND" -r "$SCRATCH/rewind-local" backup -q .
measure restic-local backup restic backup -q .
measure rewind-serve restore "$REWIND" -r "$SERVED" restore -q latest --target "$SCRATCH/r-serve"
measure rewind-local restore "$REWIND" -r "$SCRATCH/rewind-local" restore -q latest --target "$SCRATCH/r-local"
measure restic-local restore restic restore -q latest --target "$SCRATCH/r-restic"
for r in r-serve r-local; do
  diff -r "$DATASET" "$SCRATCH/$r$DATASET" >/dev/null && echo "$r: identical"
done
rr="$SCRATCH/r-restic$DATASET"; [ -d "$rr" ] || rr="$SCRATCH/r-restic"
diff -r "$DATASET" "$rr" >/dev/null && echo "r-restic: identical"
echo "server peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$SERVE_PID/status)"
du -sh "$SCRATCH/server/repos/bench" "$SCRATCH/rewind-local" "$SCRATCH/restic"
cat "$CSV"
