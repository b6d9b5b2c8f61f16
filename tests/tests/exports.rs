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
    B4, Netmon, Pair,
    collectors::{Prometheus, http_get},
    netmon_run,
    traffic::send_through,
};

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
            "netmon_protocol_packets_total{{iface=\"{}\",protocol=\"udp\"}}",
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
