# Contributor shortcuts. Nothing here is needed to build or test: see README.md.

default: test

fmt:
    cargo fmt --all

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

test:
    cargo test --workspace

# End-to-end tests with real third-party MCP peers (Python `mcp` SDK; venv made under target/).
e2e:
    cargo test --test it -- peers e2e

# The official MCP conformance suite's client authorization scenarios, the client under mcptap:
# a passed scenario must give no client finding, a broken client must be named (suite and a
# Node 22 from the npm registry installed under target/conformance on first use).
conformance:
    cargo test --test it conformance -- --nocapture

# Side-by-side benchmark: direct, plain tunnel, hudsucker, mitmdump and mcptap (see docs/benchmarks.md).
bench *ARGS:
    scripts/bench.sh {{ARGS}}

# Regenerates crates/cli/link-order.txt, the functions the linker places first (valgrind; the
# benchmark harness built by `just bench` once). Rerun after a toolchain or Cargo.lock upgrade
# and after changes to the engine (`just bench` warns when the list has gone stale).
link-order:
    scripts/link-order.sh

# Each fuzz target for SECONDS (default 60) with cargo-fuzz on nightly (see docs/fuzzing.md).
fuzz SECONDS="60":
    scripts/fuzz.sh {{SECONDS}}

run *ARGS:
    cargo run --release -- {{ARGS}}
