//! The exports, read by their real consumers: `--metrics` by promtool and
//! by a Prometheus server scraping netmon every second, inside the test's
//! namespace. Ground truth is what nftables counted in the sending
//! namespace, never netmon's own numbers.

use std::{
    io::Write,
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use netmon_tests::{
    A4, A6, B4, B6, Netmon, Pair,
    collectors::{Capture, Nfcapd, Prometheus, http_get},
    netmon_run,
    traffic::{Received, send_between, send_through, send_udp},
};
use serde_json::Value;

const METRICS: &str = "127.0.0.1:9464";

/// `promtool check metrics` on `text` (it reads the exposition on stdin):
/// (success, what it said).
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start promtool (cargo xtask test installs the prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_scrape_passes_promtool() {
    let pair = Pair::new();
    let netmon = Netmon::start(
        &pair.a,
        &[
            "--iface",
            &pair.if_a,
            "--format",
            "json",
            "--metrics",
            METRICS,
            "--ping",
            B4,
        ],
    );
    send_through(&pair, 40_000, 9000, 100, 64);
    // A second interval, so the probes have answers in the histogram.
    netmon.wait_for_stdout("\"type\":\"probes\"", Duration::from_secs(10));
    let r = http_get(&pair.a, METRICS, "/metrics").expect("netmon answers on /metrics");
    assert_eq!(r.status, 200, "{r:?}");
    // No Accept header: the classic text format, which promtool checks.
    assert_eq!(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    let (ok, said) = promtool_check(&r.body);
    assert!(ok, "promtool check metrics failed: {said}\n{}", r.body);
    assert!(
        r.body.contains("# TYPE netmon_probe_rtt_seconds histogram"),
        "{}",
        r.body
    );
    assert_eq!(
        http_get(&pair.a, METRICS, "/nothing").map(|r| r.status),
        Some(404)
    );
    let run = netmon.stop();
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
}

#[test]
fn prometheus_reads_the_packets_nftables_counted() {
    const N: u64 = 500;
    let pair = Pair::new();
    let netmon = Netmon::start(
        &pair.a,
        &[
            "--iface",
            &pair.if_a,
            "--format",
            "json",
            "--metrics",
            METRICS,
        ],
    );
    let prometheus = Prometheus::start(&pair.a, &[METRICS]);
    // Scraped at least once before the traffic: the counter exists (and
    // is 0), so Prometheus' later value is the whole count, not a rate
    // started mid-way.
    prometheus.wait_for("up{job=\"netmon\"}", Duration::from_secs(30), |v| {
        (v - 1.0).abs() < f64::EPSILON
    });
    send_through(&pair, 40_000, 9000, N, 100);
    let (sent, _) = pair.sent("sent_total");
    assert!(sent >= N, "nftables counted {sent} of {N} datagrams");
    // The interval after the traffic, then a scrape after that.
    let expr = format!(
        "netmon_packets_total{{iface=\"{}\",direction=\"rx\"}}",
        pair.if_a
    );
    let got = prometheus.wait_for(&expr, Duration::from_secs(30), |v| v >= sent as f64);
    // Counts below 2^53 are exact in Prometheus' float64 samples.
    assert_eq!(
        got as u64, sent,
        "Prometheus' netmon_packets_total vs nftables in the sender"
    );
    let udp = prometheus
        .value(&format!(
            "netmon_protocol_packets_total{{iface=\"{}\",direction=\"rx\",protocol=\"udp\"}}",
            pair.if_a
        ))
        .expect("the udp series");
    assert_eq!(udp as u64, N, "UDP datagrams as Prometheus has them");
    drop(prometheus);
    let run = netmon.stop();
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
    assert_eq!(run.summary()["packets"], sent);
}

#[test]
fn a_taken_metrics_port_attaches_nothing() {
    let pair = Pair::new();
    // Something else already listens there.
    let taken: SocketAddr = METRICS.parse().unwrap();
    let _holder = pair.a.enter(|| std::net::TcpListener::bind(taken).unwrap());
    let run = netmon_run(
        &pair.a,
        &["--iface", &pair.if_a, "--metrics", METRICS],
        Duration::from_secs(10),
    );
    assert!(!run.status.success());
    assert!(
        run.stderr
            .contains("cannot listen on 127.0.0.1:9464 for --metrics"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "one clear line: {}",
        run.stderr
    );
    assert!(!pair.xdp_attached(), "nothing stays attached");
}

const COLLECTOR_PORT: u16 = 4739;

/// Every flow record nfdump has for the flow from `src`:`sport` to
/// `dst`:`dport`: (packets, octets).
fn records_of(records: &[Value], src: &str, sport: u16, dst: &str, dport: u16) -> Vec<(u64, u64)> {
    let v6 = src.contains(':');
    let (sk, dk) = if v6 {
        ("src6_addr", "dst6_addr")
    } else {
        ("src4_addr", "dst4_addr")
    };
    records
        .iter()
        .filter(|r| {
            r[sk] == src && r[dk] == dst && r["src_port"] == sport && r["dst_port"] == dport
        })
        .map(|r| {
            (
                r["in_packets"].as_u64().unwrap_or_else(|| panic!("{r}")),
                r["in_bytes"].as_u64().unwrap_or_else(|| panic!("{r}")),
            )
        })
        .collect()
}

fn sum(records: &[(u64, u64)]) -> (u64, u64) {
    records.iter().fold((0, 0), |(p, o), r| (p + r.0, o + r.1))
}

/// How often tshark's decode says `Flow End Reason: {reason}`.
fn end_reasons(decoded: &str, reason: &str) -> usize {
    decoded
        .lines()
        .filter(|l| {
            l.trim_start()
                .starts_with(&format!("Flow End Reason: {reason}"))
        })
        .count()
}

fn sockaddr(ip: &str, port: u16) -> SocketAddr {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
    .parse()
    .unwrap()
}

/// nfcapd and a tshark capture on the collector port of `pair.a`, and
/// netmon exporting to them, with `extra` arguments.
fn start_ipfix_run<'a>(pair: &'a Pair, extra: &[&str]) -> (Nfcapd, Capture<'a>, Netmon) {
    let nfcapd = Nfcapd::start(&pair.a, COLLECTOR_PORT);
    let capture = Capture::start(&pair.a, COLLECTOR_PORT);
    let collector = format!("127.0.0.1:{COLLECTOR_PORT}");
    let mut args = vec![
        "--iface", &pair.if_a, "--format", "json", "--ipfix", &collector,
    ];
    args.extend_from_slice(extra);
    let netmon = Netmon::start(&pair.a, &args);
    (nfcapd, capture, netmon)
}

#[test]
fn ipfix_records_carry_every_packet_once_with_rfc7012_octets() {
    let pair = Pair::new();
    let (nfcapd, capture, netmon) =
        start_ipfix_run(&pair, &["--interval", "200ms", "--idle-timeout", "1s"]);
    // IPv4 and IPv6, two payload sizes each.
    let flows = [
        (B4, 40_001, A4, 9001, 300, 120),
        (B4, 40_002, A4, 9002, 200, 1),
        (B6, 40_003, A6, 9003, 250, 700),
        (B6, 40_004, A6, 9004, 100, 3),
    ];
    let mut sent = Vec::new();
    for (src, sport, dst, dport, n, payload) in flows {
        sent.push(send_between(
            &pair,
            sockaddr(src, sport),
            sockaddr(dst, dport),
            n,
            payload,
        ));
    }
    // All four in the table, then gone idle: each leaves with one record.
    let mark = netmon.wait_for_stdout_after(0, "\"flows_in_table\":4", Duration::from_secs(10));
    netmon.wait_for_stdout_after(mark, "\"flows_in_table\":0", Duration::from_secs(10));
    let run = netmon.stop();
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
    let records = nfcapd.finish();
    for ((src, sport, dst, dport, _, payload), sent) in flows.into_iter().zip(sent) {
        let got = records_of(&records, src, sport, dst, dport);
        assert!(!got.is_empty(), "no record of {src}:{sport} in {records:?}");
        // RFC 7012 octetDeltaCount: IP header and payload.
        let ip_header = if src.contains(':') { 40 } else { 20 };
        assert_eq!(
            sum(&got),
            (sent, sent * (ip_header + 8 + payload as u64)),
            "{src}:{sport} -> {dst}:{dport}: {got:?}"
        );
        // Removed as idle: one record.
        assert_eq!(got.len(), 1, "{got:?}");
    }
    let decoded = capture.finish();
    // nfdump keeps no end reason; tshark shows it.
    assert_eq!(end_reasons(&decoded, "Forced end"), 0);
    assert_eq!(
        end_reasons(&decoded, "Idle timeout"),
        flows.len(),
        "{decoded}"
    );
    assert!(
        decoded.contains("Cisco NetFlow/IPFIX") && decoded.contains("Octets"),
        "tshark decoded no IPFIX:\n{decoded}"
    );
    assert!(
        !decoded.to_lowercase().contains("malformed"),
        "tshark found a malformed packet:\n{decoded}"
    );
}

#[test]
fn ipfix_counts_survive_kernel_evictions_and_active_timeouts() {
    const FLOWS: u16 = 512;
    const ROUNDS: u64 = 6;
    const PER_ROUND: u64 = 2;
    let pair = Pair::new();
    // 512 flows through 64 kernel slots per CPU (the fewest): most packets
    // evict another flow's slot. A record every second of activity.
    let (nfcapd, capture, netmon) = start_ipfix_run(
        &pair,
        &[
            "--flow-slots",
            "64",
            "--interval",
            "200ms",
            "--ipfix-active-timeout",
            "1s",
        ],
    );
    let to = sockaddr(A4, 9000);
    for _ in 0..ROUNDS {
        // Every flow PER_ROUND datagrams, all received before the pause.
        let received = Received::start(&pair.a, to, u64::from(FLOWS) * PER_ROUND);
        pair.b.enter(|| {
            for f in 0..FLOWS {
                send_udp(sockaddr(B4, 41_000 + f), to, PER_ROUND, 32);
            }
        });
        received.wait();
        std::thread::sleep(Duration::from_millis(400));
    }
    let run = netmon.stop();
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
    let summary = run.summary();
    assert!(
        summary["counters"]["flow_records"].as_u64().unwrap() > u64::from(FLOWS),
        "the kernel cache evicted flows: {summary}"
    );
    let records = nfcapd.finish();
    let decoded = capture.finish();
    let mut split = 0;
    let mut total_records = 0;
    for f in 0..FLOWS {
        let got = records_of(&records, B4, 41_000 + f, A4, 9000);
        assert_eq!(
            sum(&got),
            (ROUNDS * PER_ROUND, ROUNDS * PER_ROUND * (20 + 8 + 32)),
            "flow {}: {got:?}",
            41_000 + f
        );
        total_records += got.len();
        if got.len() > 1 {
            split += 1;
        }
    }
    assert!(
        split > 0,
        "no flow was split by the active timeout: {records:?}"
    );
    // No flow was idle for --idle-timeout (60 s): every record left on the
    // active timeout, or when netmon stopped (a flow with packets after its
    // last active-timeout record), never twice for the same packets.
    let (active, forced) = (
        end_reasons(&decoded, "Active timeout"),
        end_reasons(&decoded, "Forced end"),
    );
    assert_eq!(active + forced, total_records, "{active} + {forced}");
    assert!(active >= split, "{active} active-timeout records");
    assert!(forced <= usize::from(FLOWS));
    assert_eq!(end_reasons(&decoded, "Idle timeout"), 0);
}

/// The capabilities `contrib/netmon.service` grants (its
/// `AmbientCapabilities=` line), as setpriv names them: `+bpf,+perfmon,...`.
fn unit_capabilities() -> String {
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/netmon.service"),
    )
    .expect("contrib/netmon.service");
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit grants capabilities");
    caps.split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

/// netmon as contrib/netmon.service runs it: not root, with only the
/// unit's capabilities, `--quiet` with an IPFIX export; SIGTERM (systemctl
/// stop) flushes every flow and exits 0, with nothing on stdout.
#[test]
fn as_a_service_it_runs_unprivileged_and_flushes_on_sigterm() {
    const N: u64 = 200;
    let pair = Pair::new();
    let nfcapd = Nfcapd::start(&pair.a, COLLECTOR_PORT);
    let collector = format!("127.0.0.1:{COLLECTOR_PORT}");
    let caps = unit_capabilities();
    let netmon = netmon_tests::netmon_bin();
    let netmon = netmon.to_str().unwrap();
    let service = Netmon::start_bin(
        std::path::Path::new("/usr/bin/setpriv"),
        &pair.a,
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps=-all,{caps}"),
            &format!("--ambient-caps=-all,{caps}"),
            &format!("--bounding-set=-all,{caps}"),
            "--",
            netmon,
            "--iface",
            &pair.if_a,
            "--quiet",
            "--ipfix",
            &collector,
        ],
    );
    let sent = send_between(&pair, sockaddr(B4, 40_100), sockaddr(A4, 9100), N, 50);
    service.signal(libc::SIGTERM);
    let run = service.wait(Duration::from_secs(15));
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    assert_eq!(run.stdout, "", "--quiet prints nothing on stdout");
    let records = nfcapd.finish();
    assert_eq!(
        sum(&records_of(&records, B4, 40_100, A4, 9100)),
        (sent, sent * (20 + 8 + 50))
    );
    assert!(!pair.xdp_attached());
}

#[test]
fn quiet_without_an_export_is_a_usage_error() {
    let pair = Pair::new();
    let run = netmon_run(
        &pair.a,
        &["--iface", &pair.if_a, "--quiet"],
        Duration::from_secs(10),
    );
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("--quiet prints nothing"),
        "{}",
        run.stderr
    );
    assert!(!pair.xdp_attached());
}
