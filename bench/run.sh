#!/usr/bin/env bash
# Benchmark rewind beside restic, borg (zstd,3) and bupstash in one run.
#
#   bench/run.sh [DATASET_DIR]
#
# Builds the release binary, generates the default (~2 GiB) dataset with
# ../shared/bench/make_dataset.py unless DATASET_DIR exists, installs the
# other tools where missing (restic: apt; borg: pip venv; bupstash: cargo
# install), then runs bench/harness.sh (a copy of the shared harness with
# rewind's real commands). Results: $SCRATCH/results.csv and a Markdown table
# on stdout; copy the figures into docs/BENCHMARKS.md.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/.."
SHARED_BENCH="${SHARED_BENCH:-$ROOT/../shared/bench}"
DATASET="${1:-${DATASET:-/tmp/rewind-bench-data}}"
export SCRATCH="${SCRATCH:-/tmp/rewind-bench}"
export TOOLS="${TOOLS:-rewind restic borg-zstd bupstash}"

(cd "$ROOT" && cargo build --release --locked -p rewind-cli)
export REWIND_BIN="$ROOT/target/release/rewind"

if [ ! -d "$DATASET" ]; then
  python3 "$SHARED_BENCH/make_dataset.py" generate "$DATASET" --profile default
fi

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v restic >/dev/null; then sudo_ apt-get install -y -qq restic; fi
if ! command -v borg >/dev/null; then
  sudo_ apt-get install -y -qq libacl1-dev libssl-dev liblz4-dev libzstd-dev libxxhash-dev pkg-config python3-dev
  python3 -m venv /tmp/borg-venv && /tmp/borg-venv/bin/pip install -q borgbackup
  export PATH="$PATH:/tmp/borg-venv/bin"
fi
if ! command -v bupstash >/dev/null; then
  sudo_ apt-get install -y -qq libsodium-dev
  cargo install bupstash --locked
fi

DATASET="$DATASET" SHARED_BENCH="$SHARED_BENCH" bash "$HERE/harness.sh"
