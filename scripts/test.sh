#!/usr/bin/env bash
# test.sh — runs every test of comfy-multi on a fresh Debian/Ubuntu machine.
#
# Why this exists: the tests talk to real services (a private redis-server per
# test, later a real CPU ComfyUI and Chromium), so the one test command must
# also install what they need. README's test command and .ci/run call this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/test-deps.sh

# Rust: unit tests, integration tests against real redis-server processes
# and real CPU ComfyUI processes. The reliability tests (fault scenarios,
# hostile input) leave their records in target/reliability/, rendered below
# into target/reliability/RELIABILITY.md (scripts/reliability.sh publishes
# docs/RELIABILITY.md the same way).
export COMFY_MULTI_REPORT_DIR="$PWD/target/reliability"
rm -rf "$COMFY_MULTI_REPORT_DIR"
cargo test --locked --all-targets
cargo run --locked --quiet --bin reliability-report -- \
  "$COMFY_MULTI_REPORT_DIR" "$COMFY_MULTI_REPORT_DIR/RELIABILITY.md" \
  --commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  --date "$(date -u '+%Y-%m-%d %H:%M UTC')"

# The NixOS appliance: parse, evaluate where a nixpkgs copy exists, verify
# the rendered systemd units and nginx config.
bash scripts/check-nix.sh
