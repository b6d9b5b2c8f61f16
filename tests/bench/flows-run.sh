#!/bin/bash
# The flow-table benchmark of BENCHMARKS.md ("Userspace flow table under a
# flood of new flows"): netmon attached to one end of a veth pair between
# two namespaces it creates (fbA<pid>, fbB<pid>; removed on every exit
# path), a paced sender of new flows (flows-send.c: UDP from 203.0.113.x,
# a new source port every 256 frames, to 198.51.100.1:9) on the other end,
# netmon's RSS and CPU sampled every 5 s. Needs root. Traffic never leaves
# the two namespaces.
#
#   flows-run.sh NAME NETMON RATE COUNT SEND_S TOTAL_S -- NETMON_ARGS...
#
# sends at most COUNT frames at RATE/s for at most SEND_S s, samples for
# TOTAL_S s, then stops netmon with SIGINT (summary). Writes OUT/NAME/
# {samples.txt,stdout.json,stderr.txt,sent.txt} (OUT defaults to
# target/bench/flows).
set -u
name=$1 bin=$2 rate=$3 count=$4 send_s=$5 total_s=$6; shift 7
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-target/bench/flows}/$name; mkdir -p "$out"
sender=$out/../flows-send
gcc -O2 -Wall -o "$sender" "$here/flows-send.c" || exit 1
A=fbA$$ B=fbB$$ VA=fbva$$ VB=fbvb$$
nm= tx=
cleanup() {
    [ -n "$tx" ] && kill "$tx" 2>/dev/null
    if [ -n "$nm" ]; then
        kill -INT "$nm" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$nm" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$nm" 2>/dev/null
    fi
    ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null
}
trap cleanup EXIT
trap 'exit 1' INT TERM
ip netns add $A && ip netns add $B || exit 1
ip link add $VA netns $A type veth peer name $VB netns $B || exit 1
ip -n $A link set lo up; ip -n $B link set lo up
ip -n $A addr add 198.51.100.1/24 dev $VA
ip -n $A link set $VA up; ip -n $B link set $VB up
mac=$(ip -n $A link show $VA | awk '/link\/ether/ {print $2}')
# `ip netns exec` execs netmon: $! is netmon's pid.
ip netns exec $A "$bin" --iface $VA --format json --interval 1s "$@" >"$out/stdout.json" 2>"$out/stderr.txt" &
nm=$!
# Traffic starts once netmon counts (its start line), not after a guess:
# loading the programs takes seconds on a busy machine, and frames sent
# before the attach are not counted.
for _ in $(seq 300); do
    grep -q "counting on" "$out/stderr.txt" 2>/dev/null && break
    kill -0 $nm 2>/dev/null || { cat "$out/stderr.txt"; exit 1; }
    sleep 0.1
done
grep -q "counting on" "$out/stderr.txt" || { echo "netmon not counting after 30 s"; exit 1; }
ip netns exec $B "$sender" $VB "$mac" "$rate" "$count" "$send_s" >"$out/sent.txt" &
tx=$!
t0=$(date +%s.%N)
echo "t_s rss_kib cpu_ticks(1/$(getconf CLK_TCK) s)" >"$out/samples.txt"
while :; do
    el=$(echo "$(date +%s.%N) - $t0" | bc)
    rss=$(awk '/VmRSS/ {print $2}' /proc/$nm/status)
    cpu=$(awk '{print $14+$15}' /proc/$nm/stat)
    echo "$el $rss $cpu" >>"$out/samples.txt"
    [ "$(echo "$el >= $total_s" | bc)" = 1 ] && break
    sleep 5
done
wait $tx; tx=
kill -INT $nm
for _ in $(seq 150); do kill -0 $nm 2>/dev/null || break; sleep 0.2; done
kill -0 $nm 2>/dev/null && { echo "netmon did not stop"; kill -9 $nm; }
nm=
echo "sent=$(cat "$out/sent.txt")"
