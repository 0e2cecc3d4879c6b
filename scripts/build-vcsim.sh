#!/usr/bin/env bash
# Builds the dwepc vSphere test peer (tests/vcsim/main.go, a launcher around
# govmomi's vcsim) to ${CARGO_TARGET_DIR:-<repo>/target}/vcsim/dwepc-vcsim.
#
# Needs Debian's golang-go and golang-github-vmware-govmomi-dev (installed by
# the install script, not here). Builds in GOPATH mode against the packaged
# sources, so no Go module proxy or network access is needed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$target" in
/*) ;;
*) target="$repo/$target" ;; # cargo resolves a relative CARGO_TARGET_DIR against the cwd; we use the repo
esac
out_dir="$target/vcsim"
bin="$out_dir/dwepc-vcsim"
src_dir="$repo/tests/vcsim"
gopath=/usr/share/gocode
govmomi="$gopath/src/github.com/vmware/govmomi"

missing=()
command -v go >/dev/null 2>&1 || missing+=(golang-go)
[ -f "$govmomi/simulator/simulator.go" ] || missing+=(golang-github-vmware-govmomi-dev)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "build-vcsim.sh: missing Debian package(s): ${missing[*]}" >&2
    echo "build-vcsim.sh: install them with: apt-get install golang-go golang-github-vmware-govmomi-dev" >&2
    exit 1
fi

# Up to date? (binary newer than every source file of the launcher)
if [ -x "$bin" ] && [ -z "$(find "$src_dir" -name '*.go' -newer "$bin" -print -quit)" ]; then
    echo "build-vcsim.sh: $bin is up to date"
    exit 0
fi

mkdir -p "$out_dir/gocache"
# A private build directory: GOPATH mode builds "the package in the current
# directory"; keep only main.go there so stray files can't break the build.
build_dir="$out_dir/src"
rm -rf "$build_dir"
mkdir -p "$build_dir"
cp "$src_dir/main.go" "$build_dir/main.go"

echo "build-vcsim.sh: building $bin"
(
    cd "$build_dir"
    GO111MODULE=off \
        GOPATH="$gopath" \
        GOCACHE="$out_dir/gocache" \
        GOFLAGS= \
        CGO_ENABLED=0 \
        go build -o "$bin.tmp" .
)
mv -f "$bin.tmp" "$bin"
echo "build-vcsim.sh: built $bin"
