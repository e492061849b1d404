#!/usr/bin/env bash
# Runs the shared side-by-side proxy benchmark with mcptap as the candidate.
# The harness lives in ../shared/bench (read-only); it is copied to target/bench-harness and
# run there. Env: RUNS (default 3), DURATION (default 4), PROXIES (default: all + candidate).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SRC=${BENCH_HARNESS:-$ROOT/../shared/bench}
[ -d "$SRC" ] || { echo "benchmark harness not found at $SRC (set BENCH_HARNESS)" >&2; exit 2; }
B=$ROOT/target/bench-harness
mkdir -p "$B"
cp -r "$SRC"/. "$B"/
chmod -R u+w "$B"
# The copy sits inside this workspace's target/: make its crate a workspace of its own.
grep -q '^\[workspace\]' "$B/rs/Cargo.toml" || printf '\n[workspace]\n' >> "$B/rs/Cargo.toml"
(cd "$ROOT" && cargo build --release --bin mcptap)
# A stale link-order list costs memory, never correctness, and goes stale silently as the code
# changes (in session 10, 89 % of its names still matched and idle RSS was 1 MB higher): say so.
if command -v nm >/dev/null; then
  listed=$(grep -vc '^#' "$ROOT/crates/cli/link-order.txt" || true)
  present=$(nm --defined-only "$ROOT/target/release/mcptap" 2>/dev/null | awk '{print $3}' | sort -u |
    grep -Fxc -f <(grep -v '^#' "$ROOT/crates/cli/link-order.txt") || true)
  echo "link order: $present of $listed listed functions are in the binary"
  if [ "$listed" -gt 0 ] && [ $((present * 100)) -lt $((listed * 95)) ]; then
    echo "warning: the link-order list is stale; run scripts/link-order.sh (memory figures suffer)" >&2
  fi
fi
CONF=$B/mcptap-conf
mkdir -p "$CONF"
# Each run records a session (hundreds of MB under load): drop earlier benchmarks' sessions so
# they do not pile up on disk.
rm -rf "$CONF/sessions"
export CANDIDATE_PORT=${CANDIDATE_PORT:-18087}
export CANDIDATE_CA=$CONF/mcptap-ca-cert.pem
# Create the CA once so that its certificate exists before the harness starts.
"$ROOT/target/release/mcptap" ca --confdir "$CONF" --path >/dev/null
export CANDIDATE_CMD="$ROOT/target/release/mcptap proxy -q --confdir $CONF --listen-port $CANDIDATE_PORT --upstream-ca \$HERE/certs/upstream-ca.pem --no-system-roots ${MCPTAP_BENCH_ARGS:-}"
cd "$B"
RUNS=${RUNS:-3} DURATION=${DURATION:-4} ./run_all.sh "$@"
