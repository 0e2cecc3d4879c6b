#!/usr/bin/env bash
# The main job: on a fresh Debian machine, installs what is missing, builds
# nginx + the module + the lab (release), and runs a short lab run (about
# 7 minutes): real nginx with the module in front of five emulated VMs of
# different sizes, counters from the VMs' measured usage through the real
# vSphere API (vcsim), T2 load at the cluster's capacity, five policies side
# by side. Prints the summary table; results and plots in lab/report/demo/.
#
# The whole lab (T1/T2, six load levels, three scenarios, about 80 min):
#     target/release/dwepc-lab full --duration 40
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/install.sh
cargo build --release --workspace
scripts/build-vcsim.sh
exec target/release/dwepc-lab demo "$@"
