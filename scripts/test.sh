#!/usr/bin/env bash
# Sets up what the test suite needs on a fresh Debian machine with the Rust
# toolchain, then runs every test. README.md and .ci/run both call this.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v setfattr >/dev/null 2>&1 || need+=(attr)
command -v tar >/dev/null 2>&1 || need+=(tar)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

cargo test --workspace --locked "$@"
