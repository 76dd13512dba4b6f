#!/usr/bin/env bash
# A phone inbox end to end (DESIGN §18c): rclone's WebDAV backend uploads a
# tree to `rewind serve`'s inbox on loopback, then the server snapshots it.
# Prints the upload's time and throughput, the same upload to a plain local
# directory with rclone (what WebDAV and the inbox cost), and the time from
# the last upload to the snapshot in the server's log (settle time 1 s
# included).
#
#   [SRC=DIR] bench/dav.sh     (SRC default: /tmp/bench-data/documents)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${SRC:-/tmp/bench-data/documents}
W=/tmp/rw-davbench
rm -rf "$W"; mkdir -p "$W"
rewind=${REWIND:-target/release/rewind}
export REWIND_PASSWORD=bench RCLONE_CONFIG=/dev/null
"$rewind" serve token add --data "$W/data" --repo phone --role admin > "$W/admin" 2>/dev/null
port=$((20000 + RANDOM % 10000))
"$rewind" serve --data "$W/data" --listen 127.0.0.1:$port --inbox-settle 1 > /dev/null 2> "$W/serve.log" &
spid=$!
trap 'kill $spid 2>/dev/null || true' EXIT
sleep 0.5
"$rewind" -r rest:http://127.0.0.1:$port/phone --token-file "$W/admin" init > /dev/null 2>&1
pw=$("$rewind" serve dav add --data "$W/data" --repo phone 2>/dev/null | sed -n 's/^password: //p')
export RCLONE_CONFIG_INBOX_TYPE=webdav RCLONE_CONFIG_INBOX_URL=http://127.0.0.1:$port/dav/phone/ \
  RCLONE_CONFIG_INBOX_USER=phone RCLONE_CONFIG_INBOX_PASS=$(rclone obscure "$pw")
bytes=$(du -sb "$SRC" | cut -f1); files=$(find "$SRC" -type f | wc -l)
t() { local s e; s=$(date +%s.%N); "$@"; e=$(date +%s.%N); echo "$e - $s" | bc; }
local_s=$(t rclone copy "$SRC" "$W/plain" --transfers 4)
dav_s=$(t rclone copy "$SRC" inbox: --transfers 4)
end=$(date +%s.%N)
until grep -q "snapshot .* in repository phone: $files new" "$W/serve.log"; do sleep 0.1; done
snap_s=$(echo "$(date +%s.%N) - $end" | bc)
# The same tree with curl (MKCOL per folder, then 4 PUTs at once), into
# another folder of the inbox: the server's side without rclone's pacing.
up() {
  (cd "$SRC" && find . -mindepth 1 -type d | sort | while read -r d; do
    curl -sf -o /dev/null -u "phone:$pw" -X MKCOL "http://127.0.0.1:$port/dav/phone/curl/${d#./}/"; done
   cd "$SRC" && find . -type f -print0 | xargs -0 -P4 -I{} curl -sf -o /dev/null -u "phone:$pw" -T {} "http://127.0.0.1:$port/dav/phone/curl/{}")
}
curl -sf -o /dev/null -u "phone:$pw" -X MKCOL "http://127.0.0.1:$port/dav/phone/curl/"
curl_s=$(t up)
printf '%s: %d files, %.0f MiB\n' "$SRC" "$files" "$(echo "$bytes / 1048576" | bc -l)"
printf 'rclone to a local directory   %6.2f s  %6.1f MiB/s\n' "$local_s" "$(echo "$bytes / 1048576 / $local_s" | bc -l)"
printf 'rclone to the inbox (WebDAV)  %6.2f s  %6.1f MiB/s\n' "$dav_s" "$(echo "$bytes / 1048576 / $dav_s" | bc -l)"
printf 'curl to the inbox (WebDAV)    %6.2f s  %6.1f MiB/s\n' "$curl_s" "$(echo "$bytes / 1048576 / $curl_s" | bc -l)"
printf 'last upload to snapshot       %6.2f s  (settle 1 s included)\n' "$snap_s"
grep "inbox phone: snapshot" "$W/serve.log" | tail -1
