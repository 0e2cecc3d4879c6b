#!/usr/bin/env bash
# Every test of the project: installs what is missing, builds the module,
# nginx (from the nginx-src crate) and the vcsim launcher, then runs the
# unit, property and integration tests, clippy and a short fuzz run.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

scripts/install.sh
# `cargo test` does not rebuild a cdylib that no test links: build it first.
cargo build --workspace --all-targets
scripts/build-vcsim.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace -- --test-threads="${DWEPC_TEST_THREADS:-2}"
scripts/fuzz.sh "${DWEPC_FUZZ_SECONDS:-30}"
echo "test.sh: all tests passed"
