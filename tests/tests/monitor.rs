//! The monitor end to end: netmon attached to one end of a veth pair counts
//! exactly what the other namespace sent (ground truth: the sender's own
//! count and nftables counters in the sending namespace).

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use netmon_tests::{
    A4, A6, B4, B6, Netmon, Pair, find_flow, mac, netmon_run,
    traffic::{Received, send_through, send_udp},
};
use serde_json::Value;

fn u64_of(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

/// Totals equal the sum of everything the sending namespace put on the wire.
fn assert_totals(pair: &Pair, summary: &Value) {
    let (packets, bytes) = pair.sent_frames("sent_total");
    assert_eq!(
        u64_of(&summary["packets"]),
        packets,
        "total packets vs nftables in the sender: {summary}"
    );
    assert_eq!(
        u64_of(&summary["bytes"]),
        bytes,
        "total bytes vs nftables in the sender: {summary}"
    );
}

fn udp_exact(v6: bool) {
    const N: u64 = 1000;
    const S: usize = 100;
    let pair = Pair::new();
    let (src, dst) = if v6 { (B6, A6) } else { (B4, A4) };
    let mut netmon = Netmon::start(
        &pair.a,
        &[
            "--iface",
            &pair.if_a,
            "--duration",
            "7s",
            "--format",
            "json",
        ],
    );
    let from: SocketAddr = if v6 {
        format!("[{src}]:40000")
    } else {
        format!("{src}:40000")
    }
    .parse()
    .unwrap();
    let to: SocketAddr = if v6 {
        format!("[{dst}]:9000")
    } else {
        format!("{dst}:9000")
    }
    .parse()
    .unwrap();
    let received = Received::start(&pair.a, to, N);
    let sent = pair.b.enter(|| send_udp(from, to, N, S));
    // Everything sent has passed XDP before the 7 s are up (or the test
    // fails here, not on a count).
    received.wait();
    assert!(
        netmon.running(),
        "netmon stopped before the traffic was through"
    );
    let run = netmon.wait(Duration::from_secs(20));
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
    let summary = run.summary();
    let flow = find_flow(&summary, src, dst, 9000, "udp")
        .unwrap_or_else(|| panic!("no UDP flow in {summary}"));
    let overhead = if v6 { 62 } else { 42 };
    assert_eq!(u64_of(&flow["packets"]), sent);
    assert_eq!(u64_of(&flow["bytes"]), sent * (S as u64 + overhead));
    assert_eq!(flow["sport"], 40000);
    assert_totals(&pair, &summary);
    let rates: u64 = run
        .json_lines()
        .iter()
        .filter(|v| v["type"] == "rates")
        .map(|v| u64_of(&v["packets"]))
        .sum();
    assert!(
        rates <= u64_of(&summary["packets"]),
        "interval lines add up to no more than the total"
    );
    assert_eq!(summary["counters"]["udp"], sent);
}

#[test]
fn udp_ipv4_counts_every_datagram_and_byte() {
    udp_exact(false);
}

#[test]
fn udp_ipv6_counts_every_datagram_and_byte() {
    udp_exact(true);
}

fn tcp_exact(v6: bool) {
    let pair = Pair::new();
    let (src, dst) = if v6 { (B6, A6) } else { (B4, A4) };
    let port = 9001;
    pair.count_sent("tcp_flow", &format!("meta l4proto tcp th dport {port}"));
    let listen: SocketAddr = if v6 {
        format!("[{dst}]:{port}")
    } else {
        format!("{dst}:{port}")
    }
    .parse()
    .unwrap();
    let listener = pair
        .a
        .enter(|| TcpListener::bind(listen).expect("listen in a"));
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).expect("read");
        buf.len()
    });
    let netmon = Netmon::start(&pair.a, &["--iface", &pair.if_a, "--format", "json"]);
    pair.b.enter(|| {
        let mut conn =
            TcpStream::connect_timeout(&listen, Duration::from_secs(5)).expect("connect");
        conn.set_nodelay(true).unwrap();
        // Writes below the MSS: one segment each, never a GSO super-packet.
        for _ in 0..50 {
            conn.write_all(&[7u8; 200]).unwrap();
        }
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
    });
    assert_eq!(
        server.join().unwrap(),
        50 * 200,
        "the listener got every byte"
    );
    // b's last packet is its ACK of a's FIN; a's socket leaves LAST_ACK
    // (and the table) when that ACK reaches a's stack, after XDP saw it.
    // Wait for that (bounded) rather than for a quiet spell.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pair
        .a
        .sh(&format!("ss -Htan '( sport = :{port} )'"))
        .trim()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "a still has a socket on port {port}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    let run = netmon.stop();
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
    let summary = run.summary();
    let (packets, l3_bytes) = pair.sent("tcp_flow");
    let flow = find_flow(&summary, src, dst, port, "tcp")
        .unwrap_or_else(|| panic!("no TCP flow in {summary}"));
    // SYN, data (small writes may be coalesced: autocorking), FIN at least.
    assert!(
        packets >= 3,
        "a whole connection was sent, got {packets} packets"
    );
    assert_eq!(u64_of(&flow["packets"]), packets);
    assert_eq!(u64_of(&flow["bytes"]), l3_bytes + 14 * packets);
    // SYN and FIN both came from b on this flow.
    let flags = u64_of(&flow["tcp_flags"]);
    assert_eq!(flags & 0x03, 0x03, "SYN and FIN seen: flags {flags:#x}");
    assert_eq!(summary["counters"]["tcp_syn"], 1);
    assert_totals(&pair, &summary);
}

#[test]
fn tcp_ipv4_flow_matches_the_senders_count() {
    tcp_exact(false);
}

#[test]
fn tcp_ipv6_flow_matches_the_senders_count() {
    tcp_exact(true);
}

/// Sends `count` ICMP echo requests with `payload` bytes through an ICMP
/// datagram socket (enabled for root's group in `b` only), then waits
/// (bounded) for the `count` replies: `a` answered each request after its
/// XDP program saw it, so every request has been counted.
fn send_echo(v6: bool, to: &str, count: u16, payload: usize) {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (domain, proto) = if v6 {
        (libc::AF_INET6, libc::IPPROTO_ICMPV6)
    } else {
        (libc::AF_INET, libc::IPPROTO_ICMP)
    };
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM, proto) };
    assert!(fd >= 0, "ICMP socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh, valid descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // UdpSocket is just a datagram fd with send_to: it serves an ICMP
    // datagram socket as well.
    let sock = UdpSocket::from(fd);
    let to: SocketAddr = if v6 {
        format!("[{to}]:0")
    } else {
        format!("{to}:0")
    }
    .parse()
    .unwrap();
    for seq in 0..count {
        let mut msg = vec![if v6 { 128 } else { 8 }, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&seq.to_be_bytes());
        msg.resize(8 + payload, 0x5a);
        sock.send_to(&msg, to).expect("send echo request");
    }
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 2048];
    for n in 0..count {
        sock.recv(&mut buf)
            .unwrap_or_else(|e| panic!("echo reply {n} of {count}: {e}"));
    }
}

fn icmp_exact(v6: bool) {
    const N: u16 = 20;
    const S: usize = 56;
    let pair = Pair::new();
    pair.b.sh("sysctl -qw net.ipv4.ping_group_range='0 0'");
    let (src, dst) = if v6 { (B6, A6) } else { (B4, A4) };
    let netmon = Netmon::start(&pair.a, &["--iface", &pair.if_a, "--format", "json"]);
    pair.b.enter(|| send_echo(v6, dst, N, S));
    let run = netmon.stop();
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
    let summary = run.summary();
    let proto = if v6 { "icmpv6" } else { "icmp" };
    let flow = find_flow(&summary, src, dst, 0, proto)
        .unwrap_or_else(|| panic!("no {proto} flow in {summary}"));
    let l3 = if v6 { 40 } else { 20 };
    assert_eq!(u64_of(&flow["packets"]), u64::from(N));
    assert_eq!(
        u64_of(&flow["bytes"]),
        u64::from(N) * (14 + l3 + 8 + S as u64)
    );
    assert_eq!(summary["counters"][proto], u64::from(N));
    assert_totals(&pair, &summary);
}

#[test]
fn icmp_echo_requests_are_counted_exactly() {
    icmp_exact(false);
}

#[test]
fn icmpv6_echo_requests_are_counted_exactly() {
    icmp_exact(true);
}

#[test]
fn generic_mode_counts_the_same() {
    let pair = Pair::new();
    let netmon = Netmon::start(
        &pair.a,
        &[
            "--iface",
            &pair.if_a,
            "--xdp-mode",
            "generic",
            "--format",
            "json",
        ],
    );
    // Its readiness says the mode (stderr's line may not be read yet).
    assert!(
        netmon.ready_status().ends_with(" in generic XDP mode"),
        "{}",
        netmon.ready_status()
    );
    let sent = send_through(&pair, 40001, 9002, 300, 10);
    let run = netmon.stop();
    let summary = run.summary();
    let flow = find_flow(&summary, B4, A4, 9002, "udp").expect("flow");
    assert_eq!(u64_of(&flow["packets"]), sent);
    assert_eq!(u64_of(&flow["bytes"]), sent * 52);
    assert_totals(&pair, &summary);
}

#[test]
fn without_iface_the_default_routes_interface_is_used() {
    let pair = Pair::new();
    pair.a
        .ip(&format!("route add default via {B4} dev {}", pair.if_a));
    let netmon = Netmon::start(&pair.a, &["--format", "json"]);
    assert!(
        netmon
            .ready_status()
            .starts_with(&format!("counting on {} ", pair.if_a)),
        "{}",
        netmon.ready_status()
    );
    let run = netmon.stop();
    assert_eq!(run.summary()["iface"], pair.if_a.as_str());
}

#[test]
fn text_output_has_rate_lines_and_a_summary() {
    let pair = Pair::new();
    let netmon = Netmon::start(&pair.a, &["--iface", &pair.if_a, "--interval", "200ms"]);
    let sent = pair.b.enter(|| {
        send_udp(
            format!("{B4}:40002").parse().unwrap(),
            format!("{A4}:9003").parse().unwrap(),
            100,
            100,
        )
    });
    thread::sleep(Duration::from_millis(500));
    let run = netmon.stop();
    assert!(run.status.success());
    assert!(run.stdout.contains("rate(bit/s)"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("summary for {}", pair.if_a)),
        "{}",
        run.stdout
    );
    let line = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains(&format!("{B4}:40002")))
        .unwrap_or_else(|| panic!("{}", run.stdout));
    assert!(
        line.contains(&format!(" {sent} ")) && line.contains(&format!(" {}", sent * 142)),
        "{line}"
    );
}

#[test]
fn kill_9_leaves_no_program_attached() {
    let pair = Pair::new();
    let netmon = Netmon::start(&pair.a, &["--iface", &pair.if_a]);
    assert!(pair.xdp_attached(), "attached while running");
    netmon.signal(libc::SIGKILL);
    let _ = netmon.wait(Duration::from_secs(5));
    // The bpf_link goes with the last fd; the kernel releases it right after
    // the process exits. Poll briefly, bounded.
    let deadline = Instant::now() + Duration::from_secs(3);
    while pair.xdp_attached() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !pair.xdp_attached(),
        "an XDP program survived kill -9: {}",
        pair.a.ip(&format!("link show dev {}", pair.if_a))
    );
}

#[test]
fn sigterm_ends_with_a_summary_and_detaches() {
    let pair = Pair::new();
    let netmon = Netmon::start(&pair.a, &["--iface", &pair.if_a, "--format", "json"]);
    netmon.signal(libc::SIGTERM);
    let run = netmon.wait(Duration::from_secs(10));
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.summary()["type"], "summary");
    assert!(!pair.xdp_attached());
}

/// SIGHUP (a closed terminal, a supervisor) ends the run like SIGTERM:
/// the summary with every packet, exit 0, nothing left attached. (Before,
/// it killed netmon with status 129 and no summary.)
#[test]
fn sighup_ends_with_a_summary_and_detaches() {
    let pair = Pair::new();
    let netmon = Netmon::start(&pair.a, &["--iface", &pair.if_a, "--format", "json"]);
    let sent = send_through(&pair, 40400, 9400, 25, 20);
    netmon.signal(libc::SIGHUP);
    let run = netmon.wait(Duration::from_secs(10));
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    let summary = run.summary();
    let flow = find_flow(&summary, B4, A4, 9400, "udp").expect("the flow");
    assert_eq!(u64_of(&flow["packets"]), sent);
    assert_totals(&pair, &summary);
    assert!(!pair.xdp_attached());
}

/// An interface deleted under netmon (here with its veth peer's
/// namespace intact: `ip link del` of the watched end) ends the run by
/// itself: one line on stderr that says so, the summary with every packet
/// counted until then, exit status 1. (Before, netmon printed zero lines
/// for as long as it ran and exited 0.)
#[test]
fn a_deleted_interface_ends_the_run_with_the_summary_and_exit_1() {
    let pair = Pair::new();
    let netmon = Netmon::start(&pair.a, &["--iface", &pair.if_a, "--format", "json"]);
    let sent = send_through(&pair, 40410, 9410, 30, 20);
    pair.a.ip(&format!("link del dev {}", pair.if_a));
    let run = netmon.wait(Duration::from_secs(10));
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert_eq!(
        run.stderr.lines().count(),
        2,
        "start line and one more: {}",
        run.stderr
    );
    assert!(run.stderr.contains("was deleted"), "{}", run.stderr);
    let summary = run.summary();
    let flow = find_flow(&summary, B4, A4, 9410, "udp").expect("the flow");
    assert_eq!(u64_of(&flow["packets"]), sent);
}

/// Link down and up again are reported as they happen (NDJSON `link`
/// events), and counting goes on after them.
#[test]
fn link_down_and_up_are_reported_and_counting_goes_on() {
    let pair = Pair::new();
    let netmon = Netmon::start(&pair.a, &["--iface", &pair.if_a, "--format", "json"]);
    pair.a.ip(&format!("link set dev {} down", pair.if_a));
    netmon.wait_for_stdout(r#""state":"down""#, Duration::from_secs(5));
    pair.a.ip(&format!("link set dev {} up", pair.if_a));
    netmon.wait_for_stdout(r#""state":"up""#, Duration::from_secs(5));
    let sent = send_through(&pair, 40420, 9420, 20, 20);
    let run = netmon.stop();
    assert!(run.status.success(), "{}", run.stderr);
    let states: Vec<String> = run
        .json_lines()
        .iter()
        .filter(|v| v["type"] == "link")
        .map(|v| v["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["down", "up"]);
    let summary = run.summary();
    let flow = find_flow(&summary, B4, A4, 9420, "udp").expect("the flow");
    assert_eq!(u64_of(&flow["packets"]), sent);
}

/// A second netmon (or any XDP program) on the interface: the attach fails
/// with EBUSY, and netmon says so in one line, whatever the mode, instead
/// of blaming the driver or showing only the generic-mode error.
#[test]
fn an_interface_with_a_program_already_attached_is_named_as_busy() {
    let pair = Pair::new();
    let first = Netmon::start(&pair.a, &["--iface", &pair.if_a, "--format", "json"]);
    for mode in ["native", "auto", "generic"] {
        let run = netmon_run(
            &pair.a,
            &[
                "--iface",
                &pair.if_a,
                "--xdp-mode",
                mode,
                "--duration",
                "1s",
            ],
            Duration::from_secs(30),
        );
        assert_one_line_error(&run, 1, "another XDP program is attached");
        assert!(
            !run.stderr.contains("driver may lack"),
            "{mode}: {}",
            run.stderr
        );
    }
    // The first one is untouched and still counts.
    assert!(pair.xdp_attached());
    let run = first.stop();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(!pair.xdp_attached());
}

/// One line on stderr, exit status `code`, nothing on stdout, no panic.
fn assert_one_line_error(run: &netmon_tests::Finished, code: i32, needle: &str) {
    assert_eq!(run.status.code(), Some(code), "stderr: {}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "one line: {:?}", run.stderr);
    assert!(
        run.stderr.contains(needle),
        "{:?} should mention {needle:?}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn bad_input_is_one_line_and_attaches_nothing() {
    let pair = Pair::new();
    let run = netmon_run(
        &pair.a,
        &["--iface", "nosuch0", "--duration", "1s"],
        Duration::from_secs(30),
    );
    assert_one_line_error(&run, 2, "no interface named 'nosuch0'");
    let run = netmon_run(
        &pair.a,
        &["--iface", &pair.if_a, "--duration", "7x"],
        Duration::from_secs(30),
    );
    assert_one_line_error(&run, 2, "unknown unit 'x'");
    let run = netmon_run(
        &pair.a,
        &["--iface", &pair.if_a, "--format", "yaml"],
        Duration::from_secs(30),
    );
    assert_one_line_error(&run, 2, "yaml");
    assert!(!pair.xdp_attached());
}

#[test]
fn without_privileges_it_says_how_to_get_them() {
    let pair = Pair::new();
    let mut cmd = pair.a.command("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ])
    .arg(netmon_tests::netmon_bin())
    .args(["--iface", &pair.if_a, "--duration", "1s"]);
    let out = cmd.output().expect("setpriv");
    let run = netmon_tests::Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_one_line_error(&run, 1, "run as root");
    assert!(!pair.xdp_attached());
}

#[test]
fn a_full_flow_table_keeps_totals_exact_and_says_what_it_missed() {
    const FLOWS: u16 = 20;
    const PER_FLOW: u64 = 5;
    const TABLE: u64 = 8;
    let pair = Pair::new();
    let netmon = Netmon::start(
        &pair.a,
        &[
            "--iface",
            &pair.if_a,
            "--max-flows",
            &TABLE.to_string(),
            "--top",
            "100",
            "--format",
            "json",
        ],
    );
    let to: SocketAddr = format!("{A4}:9100").parse().unwrap();
    let received = Received::start(&pair.a, to, u64::from(FLOWS) * PER_FLOW);
    pair.b.enter(|| {
        for port in 0..FLOWS {
            let from: SocketAddr = format!("{B4}:{}", 41000 + port).parse().unwrap();
            send_udp(from, to, PER_FLOW, 20);
        }
    });
    received.wait();
    let run = netmon.stop();
    let summary = run.summary();
    assert_eq!(u64_of(&summary["flows_tracked"]), TABLE, "{summary}");
    let in_flows: u64 = summary["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| u64_of(&f["packets"]))
        .sum();
    assert_eq!(in_flows, TABLE * PER_FLOW);
    assert_eq!(
        u64_of(&summary["counters"]["flow_insert_failed"]),
        (u64::from(FLOWS) - TABLE) * PER_FLOW,
        "packets of the flows that did not fit"
    );
    // netmon said so on stderr.
    assert!(run.stderr.contains("flow table full"), "{}", run.stderr);
    assert_totals(&pair, &summary);
}

/// Many more flows than kernel flow slots: flows keep evicting each other
/// (through the pending batches and the ring to userspace), and every flow
/// still ends with exactly what was sent in it, v4 and v6 alike.
#[test]
fn flows_evicted_from_the_kernel_cache_keep_exact_counts() {
    const FLOWS: u16 = 1500;
    const PER_FLOW: u64 = 3;
    let pair = Pair::new();
    let netmon = Netmon::start(
        &pair.a,
        &[
            "--iface",
            &pair.if_a,
            "--flow-slots",
            "64",
            // Reads of the slots while flows are being evicted.
            "--interval",
            "20ms",
            "--top",
            "100000",
            "--format",
            "json",
        ],
    );
    // A dual-stack socket takes the v4 and the v6 datagrams.
    let received = Received::start(
        &pair.a,
        "[::]:9300".parse().unwrap(),
        u64::from(FLOWS) * PER_FLOW,
    );
    pair.b.enter(|| {
        // Round after round over all flows, so each flow's packets arrive
        // far apart and its slot has been taken in between.
        let sockets: Vec<(UdpSocket, SocketAddr)> = (0..FLOWS)
            .map(|i| {
                let (from, to) = if i % 2 == 0 {
                    (format!("{B4}:{}", 20000 + i), format!("{A4}:9300"))
                } else {
                    (format!("[{B6}]:{}", 20000 + i), format!("[{A6}]:9300"))
                };
                let s = UdpSocket::bind(from.parse::<SocketAddr>().unwrap()).expect("bind");
                (s, to.parse().unwrap())
            })
            .collect();
        for _ in 0..PER_FLOW {
            for (n, (s, to)) in sockets.iter().enumerate() {
                assert_eq!(s.send_to(&[0x5a; 40], to).expect("send_to"), 40);
                if n % 64 == 63 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
    });
    received.wait();
    let run = netmon.stop();
    let summary = run.summary();
    assert_totals(&pair, &summary);
    let counters = &summary["counters"];
    assert_eq!(u64_of(&counters["flow_insert_failed"]), 0, "{counters}");
    assert!(
        u64_of(&counters["flow_records"]) >= u64::from(FLOWS) * 2,
        "flows were evicted and came back: {counters}"
    );
    // (source address, source port) -> packets, for the test's flows.
    let mut got: HashMap<(String, u64), u64> = HashMap::new();
    for f in summary["flows"].as_array().expect("flows") {
        if f["dport"] == 9300 && f["proto"] == "udp" {
            let key = (f["src"].as_str().unwrap().to_owned(), u64_of(&f["sport"]));
            *got.entry(key).or_default() += u64_of(&f["packets"]);
        }
    }
    assert_eq!(got.len(), usize::from(FLOWS), "one entry per flow");
    let canon = |a: &str| a.parse::<IpAddr>().unwrap().to_string();
    let mut wrong = Vec::new();
    for i in 0..FLOWS {
        let src = canon(if i % 2 == 0 { B4 } else { B6 });
        let packets = got.get(&(src, u64::from(20000 + i))).copied().unwrap_or(0);
        if packets != PER_FLOW {
            wrong.push((i, packets));
        }
    }
    assert!(
        wrong.is_empty(),
        "flows with the wrong count (port offset, packets): {wrong:?}"
    );
}

#[test]
fn idle_flows_leave_the_table_but_keep_their_counts() {
    let pair = Pair::new();
    let netmon = Netmon::start(
        &pair.a,
        &[
            "--iface",
            &pair.if_a,
            "--interval",
            "100ms",
            "--idle-timeout",
            "300ms",
            "--format",
            "json",
        ],
    );
    let from: SocketAddr = format!("{B4}:42000").parse().unwrap();
    let to: SocketAddr = format!("{A4}:9200").parse().unwrap();
    let received = Received::start(&pair.a, to, 11);
    pair.b.enter(|| send_udp(from, to, 7, 30));
    // Bounded wait until the flow has gone idle and been removed.
    thread::sleep(Duration::from_millis(900));
    pair.b.enter(|| send_udp(from, to, 4, 30));
    received.wait();
    // Intervals that see the second burst before the stop.
    thread::sleep(Duration::from_millis(300));
    let run = netmon.stop();
    let lines = run.json_lines();
    let in_table: Vec<u64> = lines
        .iter()
        .filter(|v| v["type"] == "rates")
        .map(|v| u64_of(&v["flows_in_table"]))
        .collect();
    assert!(
        in_table.contains(&1) && in_table.contains(&0),
        "the flow was in the table, then removed: {in_table:?}"
    );
    let active: u64 = lines
        .iter()
        .filter(|v| v["type"] == "rates")
        .map(|v| u64_of(&v["active_flows"]))
        .sum();
    assert!(active >= 2, "active in two intervals at least: {active}");
    let summary = run.summary();
    let flow = find_flow(&summary, B4, A4, 9200, "udp").expect("flow");
    assert_eq!(
        u64_of(&flow["packets"]),
        11,
        "both bursts, across the removal"
    );
    assert_eq!(u64_of(&flow["bytes"]), 11 * 72);
    assert_totals(&pair, &summary);
}

/// More flows go idle than the summary keeps of them (max(--top, 4096)):
/// it drops the smallest and says so, the biggest keeps its exact counts
/// across its removal, `flows_tracked` stays exact, totals stay exact.
#[test]
fn more_idle_flows_than_the_summary_keeps() {
    const SMALL: u16 = 4200;
    /// netmon keeps max(--top, 4096) retired flows.
    const KEPT: u64 = 4096;
    const FRAME: u64 = 14 + 20 + 8 + 100;
    let pair = Pair::new();
    let netmon = Netmon::start(
        &pair.a,
        &[
            "--iface",
            &pair.if_a,
            "--interval",
            "100ms",
            "--idle-timeout",
            "300ms",
            "--top",
            "3",
            "--format",
            "json",
        ],
    );
    let to: SocketAddr = format!("{A4}:9400").parse().unwrap();
    let big: SocketAddr = format!("{B4}:45000").parse().unwrap();
    let received = Received::start(&pair.a, to, u64::from(SMALL) + 50 + 30);
    pair.b.enter(|| {
        send_udp(big, to, 50, 100);
        for i in 0..SMALL {
            let from: SocketAddr = format!("{B4}:{}", 46000 + i).parse().unwrap();
            let socket = UdpSocket::bind(from).expect("bind sender");
            assert_eq!(socket.send_to(&[0x5a; 100], to).expect("send_to"), 100);
            if i % 64 == 63 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    });
    // Bounded wait until every flow has gone idle and been removed.
    thread::sleep(Duration::from_millis(900));
    pair.b.enter(|| send_udp(big, to, 30, 100));
    received.wait();
    thread::sleep(Duration::from_millis(300));
    let run = netmon.stop();
    let summary = run.summary();
    assert_totals(&pair, &summary);
    let flow = &summary["flows"][0];
    assert_eq!(
        (flow["src"].as_str(), u64_of(&flow["sport"])),
        (Some(B4), 45000),
        "{summary}"
    );
    assert_eq!(u64_of(&flow["packets"]), 80, "both bursts: {summary}");
    assert_eq!(u64_of(&flow["bytes"]), 80 * FRAME);
    assert_eq!(
        u64_of(&summary["flows_tracked"]),
        u64::from(SMALL) + 1,
        "{summary}"
    );
    assert_eq!(summary["flows_tracked_exact"], true);
    assert_eq!(u64_of(&summary["retired_flows_kept"]), KEPT);
    assert_eq!(
        u64_of(&summary["retired_flows_dropped"]),
        u64::from(SMALL) + 1 - KEPT,
        "every flow went idle once, the big one is kept: {summary}"
    );
    assert_eq!(u64_of(&summary["retired_flows_dropped_max_bytes"]), FRAME);
}

/// Probes and counters cover the same window: the probes start once the
/// program is attached and the last one is answered before it is detached,
/// so every reply a probe counted was counted by XDP too, exactly.
#[test]
fn monitor_probes_ping_and_tcp_beside_the_counters() {
    let pair = Pair::new();
    let listener = pair
        .b
        .enter(|| TcpListener::bind(format!("{B4}:9300")).expect("listen in b"));
    // Accept the probes' connections until the test is done (bounded).
    let done = Arc::new(AtomicBool::new(false));
    let server = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                if listener.accept().is_err() {
                    thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    let tcp_target = format!("{B4}:9300");
    let netmon = Netmon::start(
        &pair.a,
        &[
            "--iface",
            &pair.if_a,
            "--interval",
            "200ms",
            "--duration",
            "1500ms",
            "--ping",
            B4,
            "--tcp",
            &tcp_target,
            "--top",
            "1000",
            "--format",
            "json",
        ],
    );
    let run = netmon.wait(Duration::from_secs(20));
    done.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    let lines = run.json_lines();
    let intervals = lines.iter().filter(|v| v["type"] == "probes").count();
    assert!(intervals >= 5, "a probes line per interval: {intervals}");
    let summary = run.summary();
    let probes = summary["probes"].as_array().expect("probes in the summary");
    assert_eq!(probes.len(), 2);
    for p in probes {
        let sent = u64_of(&p["sent"]);
        assert!(sent >= 5, "one probe per interval: {p}");
        assert_eq!(u64_of(&p["received"]), sent, "no loss on a quiet veth: {p}");
        assert!(p["rtt_ms"]["p50"].as_f64().unwrap() > 0.0, "{p}");
    }
    let (icmp, tcp) = (&probes[0], &probes[1]);
    assert_eq!(icmp["kind"], "icmp");
    assert_eq!(tcp["kind"], "tcp");
    // Every echo reply crossed the watched interface while XDP counted, and
    // nothing else of ICMP did (b is silent on its own).
    let replies = find_flow(&summary, B4, A4, 0, "icmp").expect("echo replies from b");
    assert_eq!(replies["packets"], icmp["received"], "{summary}");
    assert_eq!(summary["counters"]["icmp"], icmp["received"], "{summary}");
    // Every SYN-ACK likewise: one per answered connect, on the reply flows
    // from the listener's port; b sends no other SYN.
    assert_eq!(summary["counters"]["tcp_syn"], tcp["received"], "{summary}");
    let syn_flows = summary["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter(|f| {
            f["src"] == B4 && f["sport"] == 9300 && f["proto"] == "tcp" && {
                u64_of(&f["tcp_flags"]) & 0x02 != 0
            }
        })
        .count() as u64;
    assert_eq!(syn_flows, u64_of(&tcp["received"]), "{summary}");
}

/// Frame builders for the encapsulation test: IPv4/UDP (with a correct
/// header checksum, so `a` accepts the plain one) and IPv6 with an
/// Authentication Header in front of a TCP SYN.
mod frames {
    pub fn ipv4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: usize) -> Vec<u8> {
        let total = 20 + 8 + payload;
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip.extend_from_slice(&sport.to_be_bytes());
        ip.extend_from_slice(&dport.to_be_bytes());
        ip.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0]); // no UDP checksum (allowed in IPv4)
        ip.resize(total, 0x5a);
        ip
    }

    /// IPv6 2001:db8::2 -> 2001:db8::1, AH (next header TCP), TCP SYN.
    pub fn ipv6_ah_tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
        let mut ah = vec![6u8, 4, 0, 0]; // next TCP, length (4+2)*4 = 24 bytes
        ah.extend_from_slice(&[0; 20]); // SPI, sequence, 12 bytes of ICV
        let mut tcp = Vec::new();
        tcp.extend_from_slice(&sport.to_be_bytes());
        tcp.extend_from_slice(&dport.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        let payload_len = (ah.len() + tcp.len()) as u16;
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&payload_len.to_be_bytes());
        ip.extend_from_slice(&[51, 64]); // next header AH, hop limit
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let mut dst = src;
        src[15] = 2;
        dst[15] = 1;
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend(ah);
        ip.extend(tcp);
        ip
    }

    fn checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
}

/// Sends `frames` whole (Ethernet header included) out of `iface` through
/// an AF_PACKET socket of the calling thread's namespace; returns their
/// lengths as sent.
fn send_raw(iface: &str, frames: &[Vec<u8>]) -> Vec<usize> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: if_nametoindex on a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0, "no interface {iface}");
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = i32::try_from(ifindex).unwrap();
    frames
        .iter()
        .map(|f| {
            // SAFETY: sendto with a valid buffer and sockaddr_ll.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            assert_eq!(
                usize::try_from(n).ok(),
                Some(f.len()),
                "{}",
                std::io::Error::last_os_error()
            );
            f.len()
        })
        .collect()
}

/// Frames tshark decodes to an inner IP flow, sent on a real veth: three
/// VLAN tags, an MPLS label stack, a PPPoE session, and IPv6 with an
/// Authentication Header before TCP. Each counts to its inner flow (ports,
/// and the SYN for AH) with exactly the frames and bytes sent (the sender's
/// own count). A plain datagram sent last on the same socket and queue is
/// received in `a` only after XDP saw every frame before it. (On 12d8466
/// the first three were "other L2" with no flow, and AH a flow of protocol
/// 51 without ports.)
#[test]
fn encapsulated_frames_count_to_their_inner_flows() {
    const EACH: usize = 5;
    let pair = Pair::new();
    let netmon = Netmon::start(
        &pair.a,
        &["--iface", &pair.if_a, "--top", "100", "--format", "json"],
    );
    let (mac_a, mac_b) = (mac(&pair.a, &pair.if_a), mac(&pair.b, &pair.if_b));
    let parse_mac = |m: &str| -> Vec<u8> {
        m.split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    };
    let eth = |ether_type: u16| -> Vec<u8> {
        let mut f = parse_mac(&mac_a);
        f.extend(parse_mac(&mac_b));
        f.extend_from_slice(&ether_type.to_be_bytes());
        f
    };
    let (b4, a4) = ([198, 51, 100, 2], [198, 51, 100, 1]);
    // Three VLAN tags: 802.1ad, 802.1Q, 802.1Q, then IPv4.
    let mut vlan3 = eth(0x88A8);
    for (tci, next) in [(10u16, 0x8100u16), (20, 0x8100), (30, 0x0800)] {
        vlan3.extend_from_slice(&tci.to_be_bytes());
        vlan3.extend_from_slice(&next.to_be_bytes());
    }
    vlan3.extend(frames::ipv4_udp(b4, a4, 41001, 9501, 30));
    // MPLS: two labels, the second the bottom of the stack, then IPv4.
    let mut mpls = eth(0x8847);
    mpls.extend_from_slice(&[0x00, 0x01, 0x00, 0x40, 0x00, 0x02, 0x01, 0x40]);
    mpls.extend(frames::ipv4_udp(b4, a4, 41002, 9502, 30));
    // PPPoE session (version/type 0x11, code 0, session 1), PPP IPv4.
    let inner = frames::ipv4_udp(b4, a4, 41003, 9503, 30);
    let mut pppoe = eth(0x8864);
    pppoe.extend_from_slice(&[0x11, 0x00, 0x00, 0x01]);
    pppoe.extend_from_slice(&((inner.len() + 2) as u16).to_be_bytes());
    pppoe.extend_from_slice(&[0x00, 0x21]);
    pppoe.extend(inner);
    let mut ah = eth(0x86DD);
    ah.extend(frames::ipv6_ah_tcp_syn(41004, 9504));
    let mut plain = eth(0x0800);
    plain.extend(frames::ipv4_udp(b4, a4, 41005, 9505, 10));

    let mut all = Vec::new();
    for _ in 0..EACH {
        all.extend([vlan3.clone(), mpls.clone(), pppoe.clone(), ah.clone()]);
    }
    all.push(plain.clone());
    let marker = Received::start(&pair.a, format!("{A4}:9505").parse().unwrap(), 1);
    let if_b = pair.if_b.clone();
    let sent = pair.b.enter(move || send_raw(&if_b, &all));
    marker.wait();
    let run = netmon.stop();
    assert!(run.status.success(), "{}", run.stderr);
    let summary = run.summary();
    for (frame, sport, dport, proto) in [
        (&vlan3, 41001, 9501, "udp"),
        (&mpls, 41002, 9502, "udp"),
        (&pppoe, 41003, 9503, "udp"),
        (&ah, 41004, 9504, "tcp"),
    ] {
        let (src, dst) = if proto == "tcp" { (B6, A6) } else { (B4, A4) };
        let flow = find_flow(&summary, src, dst, dport, proto)
            .unwrap_or_else(|| panic!("no {proto} flow to port {dport} in {summary}"));
        assert_eq!(flow["sport"], sport, "{flow}");
        assert_eq!(u64_of(&flow["packets"]), EACH as u64, "{flow}");
        assert_eq!(
            u64_of(&flow["bytes"]),
            (EACH * frame.len()) as u64,
            "{flow}"
        );
    }
    let counters = &summary["counters"];
    assert_eq!(u64_of(&counters["tcp_syn"]), EACH as u64, "{counters}");
    assert_eq!(u64_of(&counters["other_l2"]), 0, "{counters}");
    // Every frame sent, and nothing else, crossed the interface.
    let total: usize = sent.iter().sum();
    assert_eq!(u64_of(&summary["packets"]), sent.len() as u64, "{summary}");
    assert_eq!(u64_of(&summary["bytes"]), total as u64, "{summary}");
}
