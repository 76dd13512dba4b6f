#!/usr/bin/env bash
# Backup and restore over SFTP to an OpenSSH sshd on loopback, rewind beside
# restic (its sftp backend), in one run.
#
#   bench/sftp.sh [DATASET_DIR]
#
# Starts /usr/sbin/sshd on 127.0.0.1 with its own host and client keys (as
# root: it logs in as the current user), then measures, cold cache, under
# /usr/bin/time -v: first backup, restore of it (then `diff -r` against the
# source), for rewind and restic. Results: $SCRATCH/sftp.csv.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/.."
DATASET="${1:-${DATASET:-/tmp/rewind-bench-data}}"
DATASET="$(cd "$DATASET" && pwd)"
SCRATCH="${SCRATCH:-/tmp/rewind-sftp-bench}"
PASSWORD=bench-password-not-secret
PORT="${PORT:-18622}"

(cd "$ROOT" && cargo build --release --locked -p rewind-cli)
REWIND="$ROOT/target/release/rewind"

rm -rf "$SCRATCH" && mkdir -p "$SCRATCH/keys" "$SCRATCH/remote"
K="$SCRATCH/keys"
ssh-keygen -q -t ed25519 -N '' -f "$K/host"
ssh-keygen -q -t ed25519 -N '' -f "$K/client"
cp "$K/client.pub" "$K/authorized_keys"
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$K/host.pub")" > "$K/known_hosts"
cat > "$K/sshd_config" <<CONF
Port $PORT
ListenAddress 127.0.0.1
HostKey $K/host
PidFile none
AuthorizedKeysFile $K/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
CONF
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$K/sshd_config" 2> "$SCRATCH/sshd.log" &
SSHD_PID=$!
trap 'kill $SSHD_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

ARGS="-F none -i $K/client -o IdentitiesOnly=yes -o UserKnownHostsFile=$K/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes"
USER_NAME="$(id -un)"
export REWIND_REPOSITORY="sftp:$USER_NAME@127.0.0.1:$PORT$SCRATCH/remote/rewind" REWIND_PASSWORD="$PASSWORD"
export RESTIC_REPOSITORY="sftp:$USER_NAME@127.0.0.1:$SCRATCH/remote/restic" RESTIC_PASSWORD="$PASSWORD"
export RESTIC_CACHE_DIR="$SCRATCH/restic-cache"
RESTIC_SFTP=(-o "sftp.command=ssh $ARGS -p $PORT $USER_NAME@127.0.0.1 -s sftp")
"$REWIND" -o "sftp.args=$ARGS" init -q
restic "${RESTIC_SFTP[@]}" init -q

CSV="$SCRATCH/sftp.csv"
echo "tool,step,seconds,max_rss_kib" > "$CSV"
. "$HERE/measure.sh"
cd "$DATASET"
measure rewind backup "$REWIND" -o "sftp.args=$ARGS" backup -q .
measure restic backup restic "${RESTIC_SFTP[@]}" backup -q .
measure rewind restore "$REWIND" -o "sftp.args=$ARGS" restore -q latest --target "$SCRATCH/r-rewind"
measure restic restore restic "${RESTIC_SFTP[@]}" restore -q latest --target "$SCRATCH/r-restic"
diff -r "$DATASET" "$SCRATCH/r-rewind$DATASET" >/dev/null && echo "rewind restore: identical"
rr="$SCRATCH/r-restic$DATASET"; [ -d "$rr" ] || rr="$SCRATCH/r-restic"
diff -r "$DATASET" "$rr" >/dev/null && echo "restic restore: identical"
cat "$CSV"
