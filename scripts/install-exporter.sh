#!/usr/bin/env bash
# Creates the virtual environment with vmware_exporter (the exporter most
# VMware shops run in front of Prometheus), which the Prometheus-source
# tests and the lab's fleet runs use: ${CARGO_TARGET_DIR:-target}/exporter-venv,
# from Debian's python3 (python3-venv, installed by scripts/install.sh),
# with the versions pinned in scripts/exporter-requirements.txt. Does
# nothing when it is there with those versions.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
target="${CARGO_TARGET_DIR:-$here/../target}"
venv="$target/exporter-venv"
req="$here/exporter-requirements.txt"
stamp="$venv/.requirements"

if [ -x "$venv/bin/vmware_exporter" ] && cmp -s "$req" "$stamp"; then
    echo "install-exporter.sh: $venv is up to date"
    exit 0
fi
rm -rf "$venv"
/usr/bin/python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$req"
"$venv/bin/pip" check
cp "$req" "$stamp"
echo "install-exporter.sh: vmware_exporter installed in $venv"
