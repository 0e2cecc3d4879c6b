#!/usr/bin/env bash
# Builds libnginx-mod-http-dwepc_<version>-1_<arch>.deb for the nginx of this
# Debian release, the way Debian's own libnginx-mod-* packages are made:
#
#   - compiled against the nginx source that Debian ships in `nginx-dev`
#     (/usr/share/nginx/src), configured with Debian's own flags (its
#     `conf_flags`, which include --with-compat), so the module's signature
#     matches the distribution's nginx binary;
#   - depends on the exact nginx ABI it was built for (the `nginx-abi-*`
#     virtual package that Debian's nginx provides, read from the same
#     source's debian/libnginx-mod.abisubstvars) and on the shared libraries
#     the .so links (dpkg-shlibdeps);
#   - ships /usr/lib/nginx/modules/ngx_http_dwepc_module.so, the load_module
#     line in /usr/share/nginx/modules-available/mod-http-dwepc.conf, enabled
#     on install as /etc/nginx/modules-enabled/50-mod-http-dwepc.conf (set
#     aside as *.removed on remove, deleted on purge, as Debian's modules
#     do), and the example configuration in /usr/share/doc/.
#
# Usage: scripts/build-deb.sh [OUTDIR]          (default: target/deb)
# Environment:
#   NGINX_SRC   nginx source with Debian's conf_flags and
#               debian/libnginx-mod.abisubstvars (default: nginx-dev's
#               /usr/share/nginx/src). For another nginx version, install that
#               distribution's nginx-dev or point NGINX_SRC at its source.
# Prints the path of the package on its last line.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
out="$(mkdir -p "${1:-target/deb}" && cd "${1:-target/deb}" && pwd)"
src="${NGINX_SRC:-/usr/share/nginx/src}"

scripts/install.sh >/dev/null
for f in "$src/conf_flags" "$src/src/core/nginx.h" "$src/debian/libnginx-mod.abisubstvars"; do
    if [ ! -f "$f" ]; then
        echo "build-deb.sh: $f is missing: install nginx-dev or set NGINX_SRC" >&2
        exit 1
    fi
done

ngx_version="$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$src/src/core/nginx.h")"
abi="$(sed -n 's/^nginx:abi=//p' "$src/debian/libnginx-mod.abisubstvars")"
version="$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)-1"
arch="$(dpkg --print-architecture)"
pkg=libnginx-mod-http-dwepc
if [ -z "$ngx_version" ] || [ -z "$abi" ] || [ "$version" = "-1" ]; then
    echo "build-deb.sh: cannot read nginx version ($ngx_version), ABI ($abi) or our version ($version)" >&2
    exit 1
fi
echo "build-deb.sh: $pkg $version for nginx $ngx_version ($abi)"

# 1. nginx's source, configured as Debian configured its nginx
ngx="$out/nginx-$ngx_version"
if [ ! -f "$ngx/objs/ngx_auto_config.h" ] || [ "$src/conf_flags" -nt "$ngx/objs/ngx_auto_config.h" ]; then
    rm -rf "$ngx"
    cp -a "$src" "$ngx"
    (
        cd "$ngx"
        # shellcheck disable=SC1091
        . ./conf_flags
        ./configure "${NGX_CONF_FLAGS[@]}" >"$out/configure.log" 2>&1
    ) || { echo "build-deb.sh: nginx configure failed, see $out/configure.log" >&2; exit 1; }
fi

# 2. the module against it (its own target directory: the tests' nginx
#    from nginx-src is a different version)
NGINX_SOURCE_DIR="$ngx" NGINX_BUILD_DIR="$ngx/objs" \
    cargo build --release -p dwepc --lib --target-dir "$out/cargo"
so="$out/cargo/release/libdwepc.so"

# 3. the package tree
root="$out/root"
rm -rf "$root"
doc="$root/usr/share/doc/$pkg"
install -d "$root/DEBIAN" "$root/usr/lib/nginx/modules" \
    "$root/usr/share/nginx/modules-available" "$doc/examples"
install -m 0644 "$so" "$root/usr/lib/nginx/modules/ngx_http_dwepc_module.so"
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
    "$root/usr/lib/nginx/modules/ngx_http_dwepc_module.so"
echo "load_module modules/ngx_http_dwepc_module.so;" \
    >"$root/usr/share/nginx/modules-available/mod-http-dwepc.conf"
install -m 0644 nginx-conf/dwepc.conf "$doc/examples/dwepc.conf"
install -m 0644 README.md "$doc/README.md"
gzip -9n "$doc/README.md"
cat >"$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: dwepc
Source: the dwepc repository

Files: *
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
cat >"$root/DEBIAN/changelog.tmp" <<EOF
$pkg ($version) unstable; urgency=medium

  * Built against nginx $ngx_version ($abi) by scripts/build-deb.sh.

 -- dwepc developers <dwepc@localhost>  $(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
EOF
gzip -9nc "$root/DEBIAN/changelog.tmp" >"$doc/changelog.Debian.gz"
rm "$root/DEBIAN/changelog.tmp"

# shared-library dependencies, as dpkg-shlibdeps computes them for Debian's
# packages (it wants a debian/control to sit beside)
shl="$out/shlibs"
rm -rf "$shl" && install -d "$shl/debian"
printf 'Source: dwepc\n\nPackage: %s\nArchitecture: any\n' "$pkg" >"$shl/debian/control"
shlibs="$(cd "$shl" && dpkg-shlibdeps -O "$root/usr/lib/nginx/modules/ngx_http_dwepc_module.so" 2>/dev/null \
    | sed -n 's/^shlibs:Depends=//p')"
if [ -z "$shlibs" ]; then
    echo "build-deb.sh: dpkg-shlibdeps found no dependencies" >&2
    exit 1
fi

size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat >"$root/DEBIAN/control" <<EOF
Package: $pkg
Version: $version
Architecture: $arch
Maintainer: dwepc developers <dwepc@localhost>
Installed-Size: $size
Depends: $abi, $shlibs
Section: httpd
Priority: optional
Description: nginx upstream balancer driven by VMware ESXi performance counters
 dwepc load-balances an nginx upstream of VMware virtual machines by their
 live ESXi performance counters (CPU, memory, network, disk, CPU ready),
 read from vCenter's API by a background thread in each worker.
 .
 Built for nginx $ngx_version. Enabled in /etc/nginx/modules-enabled/ on
 install; see /usr/share/doc/$pkg/ for the configuration.
EOF

link=/etc/nginx/modules-enabled/50-mod-http-dwepc.conf
avail=/usr/share/nginx/modules-available/mod-http-dwepc.conf
cat >"$root/DEBIAN/postinst" <<EOF
#!/bin/sh
set -e
if [ "\$1" = "configure" ]; then
    # enable on a first install, or again if a remove set the link aside;
    # an administrator who deleted the link on purpose is left alone
    if [ -L $link.removed ]; then
        rm -f $link.removed
        ln -sf $avail $link
    elif [ -z "\$2" ]; then
        ln -sf $avail $link
    fi
    if command -v dpkg-trigger >/dev/null 2>&1; then
        dpkg-trigger --no-await nginx-reload
    fi
fi
EOF
cat >"$root/DEBIAN/prerm" <<EOF
#!/bin/sh
set -e
if [ "\$1" = "remove" ] || [ "\$1" = "deconfigure" ]; then
    # nginx must not try to load a module that is going away
    if [ -L $link ]; then
        mv $link $link.removed
    fi
fi
EOF
cat >"$root/DEBIAN/postrm" <<EOF
#!/bin/sh
set -e
if [ "\$1" = "purge" ]; then
    rm -f $link $link.removed
fi
if [ "\$1" = "remove" ] && command -v dpkg-trigger >/dev/null 2>&1; then
    dpkg-trigger --no-await nginx-reload
fi
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

deb="$out/${pkg}_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"
