#!/bin/bash
# Where the XDP program's time goes, instruction by instruction
# (BENCHMARKS.md, "Where the time goes, instruction by instruction"), from
# `perf record -e cpu-clock` samples of every CPU. Needs root, perf,
# bpftool, objdump (binutils) and python3.
#
#   xdp-profile.sh OUTDIR tcp|tcp_ts [NETMON] [REPEAT]
#       NETMON (default target/release/netmon) on a veth in a namespace of
#       its own (xpA<pid>, removed on every exit path); its attached XDP
#       program runs under BPF_PROG_TEST_RUN on one established TCP segment
#       (with the timestamp option for tcp_ts) REPEAT times (100 million)
#       on CPU 1. The test run never transmits: no packet leaves.
#   xdp-profile.sh OUTDIR new_flow [FLOWS]
#       `cargo xtask bench flows`, kernel part, at FLOWS (100000) flows:
#       every packet a new flow for its slot (the bench's new_flow path).
#
# Writes OUTDIR/functions.txt (samples by source function, then the
# instructions one run executes as the samples trace them, by kind and by
# source function), OUTDIR/instructions.txt (samples by JITed instruction)
# and OUTDIR/path.txt (the traced instructions), and prints the first.
set -eu
out=$1 kind=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
py="$here/xdp-profile.py"
if [ "$kind" = new_flow ]; then
    flows=${3:-100000}
    # The bench loads netmon's object: capture the program while it runs.
    before=$(bpftool -j prog show | python3 -c 'import json,sys; print(max([p["id"] for p in json.load(sys.stdin)] or [0]))')
    NETMON_BENCH_FLOWS=kernel NETMON_BENCH_FLOW_COUNTS=$flows \
        perf record -q -e cpu-clock -F 25000 -a -o "$out/perf.data" -- \
        cargo xtask bench flows >"$out/bench.txt" 2>&1 &
    bench=$!
    id=
    for _ in $(seq 1200); do
        id=$(bpftool -j prog show | python3 -c "import json,sys; print(max([p['id'] for p in json.load(sys.stdin) if p.get('name')=='netmon_xdp' and p['id']>$before] or ['']))")
        [ -n "$id" ] && break
        sleep 0.1
    done
    [ -n "$id" ] || { echo "the bench loaded no netmon_xdp"; wait $bench; exit 1; }
    python3 "$py" capture "$id" "$out"
    wait $bench
    grep -A6 "^XDP per-packet cost by active flows" "$out/bench.txt" || true
else
    bin=${3:-target/release/netmon} repeat=${4:-100000000}
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
    python3 "$py" frame "$out/frame.bin" "$kind"
    python3 "$py" capture "$id" "$out"
    bpftool prog run id "$id" data_in "$out/frame.bin" repeat 1000 >/dev/null
    perf record -q -e cpu-clock -F 25000 -a -o "$out/perf.data" -- \
        taskset -c 1 bpftool prog run id "$id" data_in "$out/frame.bin" repeat "$repeat" 2>&1 | grep -i duration || true
fi
perf script -i "$out/perf.data" -F ip,sym,symoff 2>/dev/null | awk '{print $2}' | sort | uniq -c >"$out/samples.txt"
python3 "$py" analyze "$out" "$out/samples.txt"
cat "$out/functions.txt"
