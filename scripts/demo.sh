#!/usr/bin/env bash
# The main job: on a fresh Debian machine, installs what is missing, builds
# nginx + the module + the lab (release), and runs a short lab cell (about
# 4 minutes): real nginx with the module in front of five emulated VMs of
# different sizes, counters from the VMs' measured usage through the real
# vSphere API (vcsim) at vSphere's own cadence (20-s averages, 5 s late),
# load at 0.8x of the cluster's capacity, and from 30 s a batch job inside
# vm5 holding 40-50 % of its CPU. dwepc's default (shares per response
# time, dwepc_least_time), its shares with pick=least_conn (dwepc), the
# least_time baseline, nginx's least_conn and weighted round robin run side
# by side, each on its own copy of the cluster with the same load. Prints the comparison; results
# and plots in lab/report/demo/.
#
# The whole lab matrix of BENCHMARKS.md (about 2 hours):
#     target/release/dwepc-lab matrix
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/install.sh
cargo build --release --workspace
scripts/build-vcsim.sh
exec target/release/dwepc-lab demo "$@"
