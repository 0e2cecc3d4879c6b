#!/usr/bin/env bash
# dwepc-place against the vcsim launcher, from a fresh clone: a cluster of
# three hosts (8 x 2000 MHz, 64 GB each) where two disk-heavy VMs (db-1,
# db-2) share host DC0_C0_H0 while DC0_C0_H1 idles. Prints the plan, applies
# it (RelocateVM_Task in the simulator), and asks again (nothing to do).
# Everything runs on loopback; the simulator is stopped by its own PID.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
scripts/install.sh
cargo build --release -p dwepc-place
scripts/build-vcsim.sh
place="$repo/target/release/dwepc-place"
vcsim="$repo/target/vcsim/dwepc-vcsim"

dir="$(mktemp -d /tmp/dwepc-place-demo.XXXXXX)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

cat >"$dir/hosts.json" <<'EOF'
[{"cpu_mhz": 2000, "cores": 8, "memory_mb": 65536},
 {"cpu_mhz": 2000, "cores": 8, "memory_mb": 65536},
 {"cpu_mhz": 2000, "cores": 8, "memory_mb": 65536}]
EOF
cat >"$dir/vms.json" <<'EOF'
[{"name": "db-1", "num_cpu": 2, "memory_mb": 4096, "host": "DC0_C0_H0"},
 {"name": "db-2", "num_cpu": 2, "memory_mb": 4096, "host": "DC0_C0_H0"},
 {"name": "web-1", "num_cpu": 2, "memory_mb": 4096, "host": "DC0_C0_H1"},
 {"name": "web-2", "num_cpu": 2, "memory_mb": 4096, "host": "DC0_C0_H2"}]
EOF
# KB/s of disk I/O per VM (and some CPU and memory)
cat >"$dir/counters.json" <<'EOF'
{"db-1":  {"cpu.usagemhz.average": 1000, "mem.consumed.average": 2097152, "disk.usage.average": 900},
 "db-2":  {"cpu.usagemhz.average": 1000, "mem.consumed.average": 2097152, "disk.usage.average": 800},
 "web-1": {"cpu.usagemhz.average": 1000, "mem.consumed.average": 2097152, "disk.usage.average": 100},
 "web-2": {"cpu.usagemhz.average": 1000, "mem.consumed.average": 2097152, "disk.usage.average": 120}}
EOF
echo "demo" >"$dir/pass"

TMPDIR="$dir" "$vcsim" -listen 127.0.0.1:0 -hosts "$dir/hosts.json" -vms "$dir/vms.json" \
    -counters "$dir/counters.json" -ready "$dir/ready.json" -user demo -pass demo \
    >"$dir/vcsim.out" 2>"$dir/vcsim.log" &
pid=$!
for _ in $(seq 1 300); do
    [ -s "$dir/ready.json" ] && break
    sleep 0.1
done
if [ ! -s "$dir/ready.json" ]; then
    echo "place-demo.sh: the simulator did not start:" >&2
    cat "$dir/vcsim.log" >&2
    exit 1
fi
url="$(sed -n 's/.*"url":"\([^"]*\)".*/\1/p' "$dir/ready.json")"

run() {
    echo "\$ dwepc-place --url $url --user demo --password-file PASS --insecure-http $*"
    "$place" --url "$url" --user demo --password-file "$dir/pass" --insecure-http "$@"
    echo
}
run --since 1h
run --since 1h --apply
run --since 1h
