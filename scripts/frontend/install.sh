#!/usr/bin/env bash
# scripts/frontend/install.sh — fetch the pinned ComfyUI web frontend.
#
# Why this exists: comfy-multi serves the *real* ComfyUI web editor to every
# workshop participant from our own Rust server (under /userNN/), instead of
# proxying a ComfyUI instance's static files. The editor is published on PyPI
# as the `comfyui-frontend-package` wheel; this script downloads exactly the
# pinned version, verifies its sha256, unpacks it into a cache directory and
# keeps only `comfyui_frontend_package/static/` (index.html + assets/ ...),
# which is the directory the Rust server (and tests/browser) serve.
#
# The frontend version is pinned on purpose: the Rust server implements the
# boot API that this exact bundle calls (see tests/browser/BOOT_NOTES.md and
# /work/shared/reference/comfyui-api.md). Bump version + sha256 together and
# re-run tests/browser/editor_smoke.mjs when upgrading.
#
# Usage:
#   scripts/frontend/install.sh           # install (idempotent), last line: "frontend-static: PATH"
#   scripts/frontend/install.sh --check   # exit 0 if installed (prints the line too), 1 otherwise
#
# Env:
#   COMFY_MULTI_CACHE   cache root (default: $HOME/.cache/comfy-multi)
#   PYTHON              python interpreter with pip (default: python3)
set -euo pipefail

VERSION="1.58.1"
WHEEL="comfyui_frontend_package-${VERSION}-py3-none-any.whl"
SHA256="37912597537a731a8f421179618a736c24184c5bdbfa327f38b2fb7c291852d9"

CACHE_ROOT="${COMFY_MULTI_CACHE:-$HOME/.cache/comfy-multi}"
DEST="${CACHE_ROOT}/comfyui-frontend-${VERSION}"
STATIC="${DEST}/static"
STAMP="${DEST}/.installed"
PYTHON="${PYTHON:-python3}"

is_installed() {
  [[ -f "$STAMP" && -f "$STATIC/index.html" && -d "$STATIC/assets" ]] \
    && [[ "$(cat "$STAMP")" == "$SHA256" ]]
}

if [[ "${1:-}" == "--check" ]]; then
  if is_installed; then
    echo "frontend-static: $STATIC"
    exit 0
  fi
  echo "comfyui-frontend-package ${VERSION} not installed under $DEST" >&2
  exit 1
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--check]" >&2
  exit 2
fi

if is_installed; then
  echo "comfyui-frontend-package ${VERSION} already installed" >&2
  echo "frontend-static: $STATIC"
  exit 0
fi

mkdir -p "$DEST"
TMP="$(mktemp -d "${DEST}/.tmp.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# Reuse a previously downloaded wheel if it is still there and matches.
WHEEL_PATH="${DEST}/${WHEEL}"
if [[ ! -f "$WHEEL_PATH" ]] || ! echo "${SHA256}  ${WHEEL_PATH}" | sha256sum -c --status -; then
  echo "downloading comfyui-frontend-package==${VERSION} from PyPI ..." >&2
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$TMP/dl" "comfyui-frontend-package==${VERSION}" >&2
  mv "$TMP/dl/${WHEEL}" "$WHEEL_PATH"
fi

if ! echo "${SHA256}  ${WHEEL_PATH}" | sha256sum -c --status -; then
  echo "sha256 mismatch for ${WHEEL_PATH}" >&2
  echo "  expected ${SHA256}" >&2
  echo "  got      $(sha256sum "$WHEEL_PATH" | cut -d' ' -f1)" >&2
  rm -f "$WHEEL_PATH"
  exit 1
fi

# Unpack only the static dir (use python's zipfile if unzip is absent).
if command -v unzip >/dev/null 2>&1; then
  unzip -q "$WHEEL_PATH" 'comfyui_frontend_package/static/*' -d "$TMP/x"
else
  "$PYTHON" - "$WHEEL_PATH" "$TMP/x" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("comfyui_frontend_package/static/")])
PY
fi
[[ -f "$TMP/x/comfyui_frontend_package/static/index.html" ]] || { echo "wheel has no static/index.html" >&2; exit 1; }

rm -rf "$STATIC"
mv "$TMP/x/comfyui_frontend_package/static" "$STATIC"
rm -f "$WHEEL_PATH"            # keep only the static dir
echo "$SHA256" > "$STAMP"

echo "installed comfyui-frontend-package ${VERSION} into $DEST" >&2
echo "frontend-static: $STATIC"
