#!/usr/bin/env bash
# run.sh — starts comfy-multi on this machine for a try-out: a private
# redis-server (AOF on) in the state directory and the hub in front of it.
#
# Why this exists: one command for a new user on a fresh Debian/Ubuntu
# machine. It installs what is missing, builds the release binary and runs
# until Ctrl-C. (Later issues replace the body with `comfy-multi up`, which
# also starts every participant's editor and the workers.)
#   scripts/run.sh [--state-dir DIR] [--port PORT]
set -euo pipefail
cd "$(dirname "$0")/.."

state_dir=".state"
port=8189
while [ $# -gt 0 ]; do
  case "$1" in
    --state-dir) state_dir="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    *) echo "usage: scripts/run.sh [--state-dir DIR] [--port PORT]" >&2; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v redis-server >/dev/null 2>&1; then
  echo "run.sh: installing redis-server"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "run.sh: Rust is not installed; install it with rustup (https://rustup.rs) and run again" >&2
  exit 1
fi

cargo build --release --locked --bin comfy-multi
mkdir -p "$state_dir/redis"
state_dir=$(cd "$state_dir" && pwd)
sock="$state_dir/redis/redis.sock"
redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 \
  --dir "$state_dir/redis" --appendonly yes --appendfsync always \
  --maxmemory-policy noeviction --save "" --daemonize no \
  --logfile "$state_dir/redis/redis.log" &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

echo "run.sh: hub on http://127.0.0.1:$port (health: /healthz); state in $state_dir; Ctrl-C stops"
COMFY_MULTI_STATE_DIR="$state_dir" ./target/release/comfy-multi serve \
  --listen "127.0.0.1:$port" --redis "redis+unix://$sock"
