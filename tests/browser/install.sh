#!/usr/bin/env bash
# tests/browser/install.sh -- prepare the headless-browser harness used by the
# Rust tests to check that comfy-multi serves a working ComfyUI editor.
# Idempotent:
#   * installs Debian's `chromium` if /usr/bin/chromium is missing
#     (playwright's own browser download is not used: we drive the system
#     Chromium through playwright-core with executablePath);
#   * runs `npm ci` here if node_modules/ is missing (versions pinned in
#     package.json + package-lock.json).
# The ComfyUI frontend itself is installed by scripts/frontend/install.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ ! -x /usr/bin/chromium ]]; then
  echo "installing Debian chromium ..." >&2
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
fi

if [[ ! -d node_modules/playwright-core ]]; then
  echo "npm ci in $(pwd) ..." >&2
  npm ci --no-audit --no-fund
fi

echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo '?')"
echo "playwright-core: $(node -p "require('./node_modules/playwright-core/package.json').version")"
