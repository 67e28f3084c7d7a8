#!/usr/bin/env bash
# larder's one test command, locally and in CI:
#
#   1. scripts/services.sh: installs (apt-get, as root; tansu with cargo)
#      and starts what is missing of Redis, PostgreSQL, MariaDB and the tansu
#      Kafka broker; leaves running ones alone.
#   2. cargo fmt --check, cargo clippy -D warnings, the benchmarks once as a
#      smoke test, then cargo test (unit, integration and doc tests), with
#      the locked dependency versions, stopping at the first failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${CI:-}" = "true" ]; then
    export CARGO_TERM_COLOR=never
fi

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi

step() {
    printf '\n==> %s\n' "$*"
}

step "services"
bash scripts/services.sh

# The tests start their own redis-server processes (standalone and cluster).
LARDER_TEST_REDIS_BIN=${LARDER_TEST_REDIS_BIN:-$(command -v redis-server)}
export LARDER_TEST_REDIS_BIN
echo "LARDER_TEST_REDIS_BIN=$LARDER_TEST_REDIS_BIN"

# A minimal rustup profile lacks these components.
if ! cargo fmt --version >/dev/null 2>&1; then
    step "rustup component add rustfmt"
    rustup component add rustfmt
fi
if ! cargo clippy --version >/dev/null 2>&1; then
    step "rustup component add clippy"
    rustup component add clippy
fi

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets --locked -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "scripts/validate-manifests.sh (deploy/ manifests against Kubernetes 1.34 schemas)"
bash scripts/validate-manifests.sh
bash scripts/validate-manifests.sh --self-test

# The Flight example's test runs the example with pyarrow and pandas, in
# the same venv.
step "python packages for examples/flight_training_set.py (pyarrow, pandas)"
venv="${LARDER_VENV:-target/pyvenv}"
"$venv/bin/python" -c 'import pyarrow.flight, pandas' 2>/dev/null ||
    "$venv/bin/pip" install --quiet pyarrow==22.0.0 pandas==3.1.1

# The ingestion tests produce their messages with a Kafka client that is not
# larder's own: kafka-python, via examples/produce_driver_locations.py.
step "python package for the ingestion tests (kafka-python)"
"$venv/bin/python" -c 'import kafka' 2>/dev/null ||
    "$venv/bin/pip" install --quiet kafka-python==2.2.15

# Benchmarks run once each, as a smoke test; their numbers are measured
# with `cargo bench` (docs/PERFORMANCE.md), never asserted in tests.
step "cargo test --benches --locked (benchmarks run once)"
cargo test --benches --locked

step "cargo test --locked"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked 2>&1 | tee "$log"
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
