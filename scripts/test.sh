#!/usr/bin/env bash
# Every test of the project: installs what is missing, builds the module,
# nginx (from the nginx-src crate), the vcsim launcher and the Debian
# package, then runs the
# unit, property and integration tests, clippy and a short fuzz run.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

scripts/install.sh
# `cargo test` does not rebuild a cdylib that no test links: build it first.
cargo build --workspace --all-targets
scripts/build-vcsim.sh
# vmware_exporter in a virtual environment (tests/prometheus_source.rs)
scripts/install-exporter.sh
# the Debian package for the machine's nginx (tests/debian.rs installs it)
scripts/build-deb.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace -- --test-threads="${DWEPC_TEST_THREADS:-2}"
scripts/fuzz.sh "${DWEPC_FUZZ_SECONDS:-30}"
echo "test.sh: all tests passed"
