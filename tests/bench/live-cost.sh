#!/bin/bash
# The live view's cost (BENCHMARKS.md, "The live view with 100,000 flows"):
# netmon with its live view open in a tmux terminal (200x50), attached to
# one end of a veth pair between two namespaces this script creates
# (lcA<pid>, lcB<pid>; removed on every exit path), while the other end
# sends FLOWS distinct UDP flows over and over at RATE frames/s
# (flows-send.c). After WARM_S s, netmon's CPU time (utime+stime from
# /proc/PID/stat) is read over MEASURE_S s. Then the same without the view
# (--format json to a file), for comparison. Needs root and tmux; traffic
# never leaves the two namespaces.
#
#   live-cost.sh NETMON [FLOWS RATE WARM_S MEASURE_S]   (100000 100000 20 30)
set -u
bin=$1 flows=${2:-100000} rate=${3:-100000} warm=${4:-20} measure=${5:-30}
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-target/bench/live}; mkdir -p "$out"
sender=$out/flows-send
gcc -O2 -Wall -o "$sender" "$here/flows-send.c" || exit 1
A=lcA$$ B=lcB$$ VA=lcva$$ VB=lcvb$$ T=lc$$
tx= pid=
cleanup() {
    [ -n "$tx" ] && kill "$tx" 2>/dev/null
    [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null && sleep 2
    tmux -L $T kill-server 2>/dev/null
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
ticks=$(getconf CLK_TCK)
# utime+stime of PID over MEASURE_S s, as a share of one core in percent.
cpu_share() {
    local pid=$1 t0 t1
    t0=$(awk '{print $14+$15}' /proc/$pid/stat)
    sleep "$measure"
    t1=$(awk '{print $14+$15}' /proc/$pid/stat)
    echo "scale=1; ($t1 - $t0) * 100 / $ticks / $measure" | bc
}
send() {
    ip netns exec $B "$sender" $VB "$mac" "$rate" 1000000000 $((warm + measure + 5)) "$flows" >"$out/sent-$1.txt" &
    tx=$!
}

for mode in live json; do
    if [ $mode = live ]; then
        tmux -L $T -f /dev/null new-session -d -x 200 -y 50 -s cost \
            "ip netns exec $A $bin --iface $VA --max-flows 262144; sleep 600"
        sleep 3
        # The pane's shell runs netmon (ip netns exec execs it) as its child.
        pid=$(pgrep -P "$(tmux -L $T display-message -p -t cost '#{pane_pid}')")
    else
        ip netns exec $A "$bin" --iface $VA --max-flows 262144 --format json >"$out/json.ndjson" 2>/dev/null &
        pid=$!
        sleep 3
    fi
    kill -0 "$pid" 2>/dev/null || { echo "netmon did not start" >&2; exit 1; }
    send $mode
    sleep "$warm"
    [ $mode = live ] && tmux -L $T capture-pane -p -t cost >"$out/screen-before.txt"
    share=$(cpu_share "$pid")
    [ $mode = live ] && tmux -L $T capture-pane -p -t cost >"$out/screen.txt"
    echo "$mode: netmon used $share % of a core over ${measure} s ($flows flows at $rate frames/s)"
    wait $tx; tx=
    kill -INT "$pid"; sleep 3; pid=
    tmux -L $T kill-server 2>/dev/null
done
grep -m1 'model name' /proc/cpuinfo
