#!/usr/bin/env bash
# reliability.sh — runs the reliability suite and rewrites docs/RELIABILITY.md
# from what it counted.
#
#   scripts/reliability.sh           fault scenarios + hostile-input classes
#   scripts/reliability.sh --load    the same, plus the 200-participant load run
#   scripts/reliability.sh --load-only
#
# Why this exists: the report must be regenerated from a run, never typed by
# hand. Every test that writes a report record (tests/support/report.rs) is
# part of the suite — found by grepping for `Record::new`, so a new scenario
# or input class joins without editing this script. Records of a kind that
# is not run this time (e.g. the long load run) are kept from the last run
# and show their own date in the report. Exits non-zero when anything failed;
# the report is written either way.
set -euo pipefail
cd "$(dirname "$0")/.."

run_suite=1 run_load=0
case "${1:-}" in
  "") ;;
  --load) run_load=1 ;;
  --load-only) run_suite=0 run_load=1 ;;
  *) echo "usage: scripts/reliability.sh [--load | --load-only]" >&2; exit 2 ;;
esac

bash scripts/test-deps.sh
export COMFY_MULTI_REPORT_DIR="$PWD/target/reliability-published"
mkdir -p "$COMFY_MULTI_REPORT_DIR"
failed=0

if [ "$run_suite" = 1 ]; then
  find "$COMFY_MULTI_REPORT_DIR" -name 'fault-*.json' -delete
  find "$COMFY_MULTI_REPORT_DIR" -name 'input-*.json' -delete
  tests=()
  for f in $(grep -l 'Record::new' tests/*.rs); do
    name=$(basename "$f" .rs)
    [ "$name" = reliability_load ] && continue
    tests+=(--test "$name")
  done
  echo "reliability.sh: running ${tests[*]}"
  if ! cargo test --locked "${tests[@]}"; then failed=$((failed + 1)); fi
fi

if [ "$run_load" = 1 ]; then
  find "$COMFY_MULTI_REPORT_DIR" -name 'load-*.json' -delete
  if ! cargo test --locked --release --test reliability_load -- --ignored --nocapture; then
    failed=$((failed + 1))
  fi
fi

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- src tests 2>/dev/null; then commit="$commit + uncommitted changes"; fi
cargo run --locked --quiet --bin reliability-report -- \
  "$COMFY_MULTI_REPORT_DIR" docs/RELIABILITY.md \
  --commit "$commit" --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
  --failed-runs "$failed"
