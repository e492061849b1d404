#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS (default 60) on nightly, seeded from fuzz/seeds/.
# New inputs go to fuzz/corpus/<target>/ (not committed); crashes to fuzz/artifacts/<target>/.
# Needs: rustup toolchain install nightly; cargo install cargo-fuzz.
set -euo pipefail
SECONDS_EACH=${1:-60}
cd "$(dirname "$0")/../fuzz"
TARGETS=$(cargo +nightly fuzz list)
for t in $TARGETS; do
    mkdir -p "corpus/$t"
    echo "== $t: ${SECONDS_EACH}s"
    cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
