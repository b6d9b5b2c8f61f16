//! The transmit side end to end: netmon in namespace `a` counts what `a`
//! sends through its TC egress program (TCX), exactly as the receiving
//! namespace `b` counts it on the wire (nftables on `b`'s input hook, one
//! count per packet that arrived), GSO super-packets as the segments the
//! wire carries; and a killed netmon leaves neither program attached.
//!
//! Ground truth never comes from netmon: nftables in `b` (IP bytes per
//! packet; a frame is those plus its 14-byte Ethernet header) and the
//! senders' and receivers' own counts.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    thread,
    time::{Duration, Instant},
};

use netmon_tests::{
    A4, A6, B4, B6, Netmon, Pair, find_flow, find_flow_in, nft_counter,
    traffic::{Received, send_udp},
};
use serde_json::Value;

fn u64_of(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

/// Adds to `b` a counter `name` of packets that arrive on `if_b` for the
/// local stack and match `expr` (input hook: after any reassembly, before
/// the socket; IP bytes).
fn count_received(pair: &Pair, name: &str, expr: &str) {
    pair.b.sh(&format!(
        "nft add table inet nmrx && \
         nft add counter inet nmrx {name} && \
         nft add chain inet nmrx in '{{ type filter hook input priority 0; policy accept; }}' && \
         nft add rule inet nmrx in iifname \"{}\" {expr} counter name {name}",
        pair.if_b
    ));
}

/// Adds to `a` a counter `name` of the skbs its stack sends out of `if_a`
/// matching `expr` (output hook: before GSO segmentation, so a
/// super-packet counts once).
fn count_skbs_out(pair: &Pair, name: &str, expr: &str) {
    pair.a.sh(&format!(
        "nft add table inet nmtx && \
         nft add counter inet nmtx {name} && \
         nft add chain inet nmtx out '{{ type filter hook output priority 0; policy accept; }}' && \
         nft add rule inet nmtx out oifname \"{}\" {expr} counter name {name}",
        pair.if_a
    ));
}

/// (packets, frame bytes) of `b`'s counter `name`: IP bytes plus 14 per
/// packet.
fn received_frames(pair: &Pair, name: &str) -> (u64, u64) {
    let (packets, bytes) = nft_counter(&pair.b, "inet nmrx", name);
    (packets, bytes + 14 * packets)
}

fn start_netmon(pair: &Pair, duration: &str) -> Netmon {
    let netmon = Netmon::start(
        &pair.a,
        &[
            "--iface",
            &pair.if_a,
            "--duration",
            duration,
            "--format",
            "json",
        ],
    );
    assert_eq!(
        tcx_egress(pair),
        ["netmon_tc"],
        "the egress program is attached: {}",
        netmon.stderr()
    );
    netmon
}

/// The summary's transmitted flow `(src, dst, dport, proto)`: its packets
/// and bytes equal what b's nftables counted (`bytes`: IP bytes + 14 each).
fn assert_tx_flow<'a>(
    summary: &'a Value,
    (src, dst, dport, proto): (&str, &str, u16, &str),
    packets: u64,
    bytes: u64,
) -> &'a Value {
    let flow = find_flow_in(summary, "tx", src, dst, dport, proto)
        .unwrap_or_else(|| panic!("no transmitted {proto} flow in {summary}"));
    assert_eq!(
        u64_of(&flow["packets"]),
        packets,
        "tx packets vs b's nftables"
    );
    assert_eq!(
        u64_of(&flow["bytes"]),
        bytes,
        "tx bytes vs b's nftables + 14 each"
    );
    flow
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
    .parse()
    .unwrap()
}

/// UDP from `a` to `b`: the tx flow's packets and bytes equal what `b`
/// received, frame for frame; the receive side does not see them.
fn udp_tx_exact(v6: bool) {
    const N: u64 = 1000;
    const S: usize = 200;
    let pair = Pair::named("eg");
    count_received(&pair, "rx9000", "udp dport 9000");
    let (src, dst) = if v6 { (A6, B6) } else { (A4, B4) };
    let mut netmon = start_netmon(&pair, "6s");
    let received = Received::start(&pair.b, addr(dst, 9000), N);
    let sent = pair
        .a
        .enter(|| send_udp(addr(src, 40000), addr(dst, 9000), N, S));
    received.wait();
    assert!(
        netmon.running(),
        "netmon stopped before the traffic was through"
    );
    let run = netmon.wait(Duration::from_secs(20));
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
    let summary = run.summary();
    let (packets, bytes) = received_frames(&pair, "rx9000");
    assert_eq!(packets, sent, "b received every datagram");
    let flow = assert_tx_flow(&summary, (src, dst, 9000, "udp"), packets, bytes);
    assert_eq!(flow["sport"], 40000);
    assert_eq!(u64_of(&summary["tx"]["counters"]["udp"]), packets);
    // Nothing of it on the receive side.
    assert!(find_flow(&summary, src, dst, 9000, "udp").is_none());
    assert_eq!(u64_of(&summary["counters"]["udp"]), 0, "{summary}");
    // Every interval line carries the transmit side; together no more than
    // the total.
    let tx_rates: u64 = run
        .json_lines()
        .iter()
        .filter(|v| v["type"] == "rates")
        .map(|v| u64_of(&v["tx_packets"]))
        .sum();
    assert!(tx_rates <= u64_of(&summary["tx"]["packets"]));
}

#[test]
fn udp_ipv4_sent_counts_as_the_receiver_counts() {
    udp_tx_exact(false);
}

#[test]
fn udp_ipv6_sent_counts_as_the_receiver_counts() {
    udp_tx_exact(true);
}

/// `UDP_SEGMENT` (linux/udp.h): the socket's sends become GSO super-packets
/// of datagrams of this many payload bytes.
const UDP_SEGMENT: libc::c_int = 103;

/// UDP GSO: each send is one super-packet at the egress hook (Pair limits
/// the veth to one segment per skb, so the device segments it after the
/// hook, in software), `K` datagrams on the wire. The tx counts must be the
/// wire's, as `b` counts them.
#[test]
fn udp_gso_super_packets_count_as_their_segments() {
    const SENDS: u64 = 200;
    const K: u64 = 8;
    const SEG: usize = 1000;
    let pair = Pair::named("eg");
    count_received(&pair, "rx9001", "udp dport 9001");
    count_skbs_out(&pair, "skb9001", "udp dport 9001");
    let mut netmon = start_netmon(&pair, "6s");
    let received = Received::start(&pair.b, addr(B4, 9001), SENDS * K);
    pair.a.enter(|| {
        let s = UdpSocket::bind(addr(A4, 40001)).expect("bind");
        let seg = libc::c_int::try_from(SEG).unwrap();
        // SAFETY: setsockopt on a valid socket with a c_int value.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_UDP,
                UDP_SEGMENT,
                (&raw const seg).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
        let data = vec![0x5au8; SEG * K as usize];
        for i in 0..SENDS {
            assert_eq!(s.send_to(&data, addr(B4, 9001)).expect("send"), data.len());
            if i % 16 == 15 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    });
    received.wait();
    assert!(
        netmon.running(),
        "netmon stopped before the traffic was through"
    );
    let run = netmon.wait(Duration::from_secs(20));
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
    let summary = run.summary();
    let (packets, bytes) = received_frames(&pair, "rx9001");
    assert_eq!(packets, SENDS * K, "b received every segment as a datagram");
    // GSO happened: a's stack sent one skb per send.
    assert_eq!(nft_counter(&pair.a, "inet nmtx", "skb9001").0, SENDS);
    assert_tx_flow(&summary, (A4, B4, 9001, "udp"), packets, bytes);
    let tx = &summary["tx"];
    assert_eq!(u64_of(&tx["counters"]["udp"]), packets);
    // Every segment is a 1042-byte frame: the 1024-1518 class.
    assert_eq!(
        u64_of(&tx["counters"]["size_classes"]["1024-1518"]),
        packets
    );
}

/// TCP bulk with GSO on: `a` builds super-packets (gso_max_segs raised,
/// TSO off, so the kernel segments them in software after the egress
/// hook) and `b` receives MSS-sized segments. The tx flow equals what `b`
/// counted, packet for packet and byte for byte.
#[test]
fn tcp_bulk_with_gso_counts_as_the_receiver_counts() {
    const BYTES: usize = 8 << 20;
    let pair = Pair::named("eg");
    pair.a
        .ip(&format!("link set dev {} gso_max_segs 65535", pair.if_a));
    pair.a.sh(&format!(
        "ethtool -K {} tso off gso on >/dev/null",
        pair.if_a
    ));
    count_received(&pair, "rx5201", "tcp dport 5201");
    count_skbs_out(&pair, "skb5201", "tcp dport 5201");
    let listener = pair
        .b
        .enter(|| TcpListener::bind(addr(B4, 5201)).expect("listen"));
    let reader = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            match s.read(&mut buf).expect("read") {
                0 => break total,
                n => total += n,
            }
        }
    });
    let mut netmon = start_netmon(&pair, "8s");
    pair.a.enter(|| {
        let mut s = TcpStream::connect(addr(B4, 5201)).expect("connect");
        let data = vec![0x11u8; 1 << 16];
        let mut left = BYTES;
        while left > 0 {
            let n = left.min(data.len());
            s.write_all(&data[..n]).expect("write");
            left -= n;
        }
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        // Wait for b's FIN: every segment of ours has been acknowledged.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("read to end");
    });
    assert_eq!(reader.join().expect("reader"), BYTES);
    assert!(
        netmon.running(),
        "netmon stopped before the traffic was through"
    );
    let run = netmon.wait(Duration::from_secs(20));
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
    let summary = run.summary();
    let (packets, bytes) = received_frames(&pair, "rx5201");
    assert_tx_flow(&summary, (A4, B4, 5201, "tcp"), packets, bytes);
    // GSO happened: a's stack sent fewer skbs than the wire carried.
    let skbs = nft_counter(&pair.a, "inet nmtx", "skb5201").0;
    assert!(skbs < packets, "{skbs} skbs for {packets} packets: no GSO");
    println!("tcp bulk: {skbs} skbs at a's output hook, {packets} packets at b's input");
    // At least one packet per MSS of data (1448 bytes with timestamps).
    assert!(
        packets >= (BYTES / 1448) as u64,
        "{packets} packets for {BYTES} bytes"
    );
    // No frame bigger than the wire's: super-packets were counted as their
    // segments.
    assert_eq!(
        u64_of(&summary["tx"]["counters"]["size_classes"][">1518"]),
        0
    );
}

/// The programs attached through TCX to `if_a`'s egress (the kernel's own
/// list, `BPF_PROG_QUERY`: this machine's bpftool and `tc` predate TCX).
fn tcx_egress(pair: &Pair) -> Vec<String> {
    pair.a
        .enter(|| netmon::sys::tcx_egress_programs(&pair.if_a))
        .expect("query TCX egress")
}

#[test]
fn kill_9_leaves_neither_xdp_nor_tc_attached() {
    let pair = Pair::named("eg");
    let netmon = Netmon::start(&pair.a, &["--iface", &pair.if_a, "--format", "json"]);
    assert!(pair.xdp_attached(), "XDP attached while running");
    assert_eq!(
        tcx_egress(&pair),
        ["netmon_tc"],
        "TC egress attached while running"
    );
    netmon.signal(libc::SIGKILL);
    let _ = netmon.wait(Duration::from_secs(5));
    // Links go with the last fd, right after the process exits; poll
    // briefly, bounded.
    let deadline = Instant::now() + Duration::from_secs(3);
    while (pair.xdp_attached() || !tcx_egress(&pair).is_empty()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !pair.xdp_attached(),
        "an XDP program survived kill -9: {}",
        pair.a.ip(&format!("link show dev {}", pair.if_a))
    );
    assert_eq!(
        tcx_egress(&pair),
        Vec::<String>::new(),
        "a TCX program survived kill -9"
    );
    // No netlink (clsact) filter either.
    let filters = pair.a.sh(&format!(
        "tc filter show dev {} egress 2>&1 || true",
        pair.if_a
    ));
    assert!(filters.trim().is_empty(), "a tc filter survived: {filters}");
}

/// A clean stop detaches both programs too.
#[test]
fn sigterm_detaches_both_programs() {
    let pair = Pair::named("eg");
    let netmon = Netmon::start(&pair.a, &["--iface", &pair.if_a, "--format", "json"]);
    assert_eq!(tcx_egress(&pair), ["netmon_tc"]);
    netmon.signal(libc::SIGTERM);
    let run = netmon.wait(Duration::from_secs(10));
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
    assert!(
        run.summary()["tx"].is_object(),
        "a summary with the transmit side"
    );
    assert!(!pair.xdp_attached());
    assert_eq!(tcx_egress(&pair), Vec::<String>::new());
}
