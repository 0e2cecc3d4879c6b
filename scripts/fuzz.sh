#!/usr/bin/env bash
# A short libFuzzer run of the vSphere XML response parser (cargo fuzz).
# Usage: scripts/fuzz.sh [seconds]   (default 30)
# cargo-fuzz needs nightly flags; the stable toolchain accepts them with
# RUSTC_BOOTSTRAP=1. cargo-fuzz is installed from crates.io when missing.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-30}"
cd "$repo"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# seed corpus: the recorded vcsim responses
mkdir -p fuzz/corpus/xml_response
cp -n fuzz/seeds/*.xml fuzz/corpus/xml_response/ 2>/dev/null || true
RUSTC_BOOTSTRAP=1 cargo fuzz run xml_response --fuzz-dir fuzz -- \
    -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 2>&1 | tail -n 5
echo "fuzz.sh: ${secs}s without a crash"
