#!/bin/bash
# Where the XDP program's time goes, instruction by instruction
# (BENCHMARKS.md, "Where the time goes, instruction by instruction").
# Starts NETMON on a veth in a namespace of its own (xpA<pid>, removed on
# every exit path), runs netmon's attached XDP program under
# BPF_PROG_TEST_RUN on one frame REPEAT times on CPU 1 while
# `perf record -e cpu-clock` samples every CPU, and reports the samples by
# source function and by JITed instruction (xdp-profile.py). Needs root,
# perf, bpftool, objdump (binutils) and python3. No packet leaves the
# namespace: the test run never transmits.
#
#   xdp-profile.sh OUTDIR [tcp|tcp_ts] [NETMON] [REPEAT]
set -eu
out=$1 kind=${2:-tcp} bin=${3:-target/release/netmon} repeat=${4:-100000000}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
ns=xpA$$ nm=
cleanup() {
    [ -n "$nm" ] && kill "$nm" 2>/dev/null && sleep 0.5
    ip netns del $ns 2>/dev/null || true
}
trap cleanup EXIT
ip netns add $ns
ip -n $ns link add xpv0 type veth peer name xpv1
ip -n $ns link set xpv0 up; ip -n $ns link set xpv1 up
ip netns exec $ns "$bin" --iface xpv0 --interval 100s --format json >/dev/null 2>"$out/netmon.err" &
nm=$!
for _ in $(seq 150); do grep -q "counting on" "$out/netmon.err" && break; sleep 0.2; done
id=$(ip -n $ns -j link show xpv0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["xdp"]["prog"]["id"])')
python3 "$here/xdp-profile.py" frame "$out/frame.bin" "$kind"
bpftool prog run id "$id" data_in "$out/frame.bin" repeat 1000 >/dev/null
perf record -q -e cpu-clock -F 25000 -a -o "$out/perf.data" -- \
    taskset -c 1 bpftool prog run id "$id" data_in "$out/frame.bin" repeat "$repeat" 2>&1 | grep -i duration || true
perf script -i "$out/perf.data" -F ip,sym,symoff 2>/dev/null | awk '{print $2}' | sort | uniq -c >"$out/samples.txt"
python3 "$here/xdp-profile.py" report "$id" "$out/samples.txt" "$out"
cat "$out/functions.txt"
