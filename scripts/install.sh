#!/usr/bin/env bash
# Installs the Debian packages dwepc needs, if any is missing:
#   libclang-dev                 bindgen (nginx-sys bindings)
#   libpcre2-dev libssl-dev zlib1g-dev make   building nginx from nginx-src
#   golang-go golang-github-vmware-govmomi-dev   the vcsim test peer
#   wrk                          HTTP load for benchmarks
#   python3-matplotlib           lab plots
#   prometheus                   promtool and the Prometheus server the
#                                exposition and the Prometheus source
#                                are tested with
#   python3-venv                 the virtual environment of vmware_exporter
#                                (scripts/install-exporter.sh)
#   nginx nginx-dev dpkg-dev     the Debian package: Debian's nginx and its
#                                source (build-deb.sh), dpkg-shlibdeps
# Runs apt-get update once, only when something is missing. Needs root (CI
# runs as root) or sudo.
set -euo pipefail

pkgs=(libclang-dev libpcre2-dev libssl-dev zlib1g-dev make pkg-config
      golang-go golang-github-vmware-govmomi-dev wrk python3-matplotlib
      prometheus python3-venv nginx nginx-dev dpkg-dev)

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install.sh: all packages present"
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "install.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
$sudo apt-get install -y --no-install-recommends "${missing[@]}"
