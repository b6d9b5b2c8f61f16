//! `netmon sweep` on loopback and across a veth pair where only some
//! addresses exist. Ground truth: the addresses the test configured.
//! Needs root; run with `cargo xtask test` (sets NETMON_BIN).

mod probe_support;

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use netmon_tests::{A4, A6, Netns, Pair, mac, netmon_run};
use probe_support::{assert_gone, of_type};

fn alive(out: &netmon_tests::Finished) -> Vec<IpAddr> {
    of_type(out, "host")
        .iter()
        .map(|h| h["addr"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn loopback_slash_24_has_exactly_254_hosts() {
    let ns = Netns::new("nms");
    let out = netmon_run(
        &ns,
        &[
            "sweep",
            "127.0.0.0/24",
            "--timeout",
            "500ms",
            "--format",
            "json",
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", out.stderr);
    let found = alive(&out);
    let expected: Vec<IpAddr> = (1..=254)
        .map(|i| format!("127.0.0.{i}").parse().unwrap())
        .collect();
    assert_eq!(found, expected, "sorted, without network and broadcast");
    let summary = &of_type(&out, "sweep_summary")[0];
    assert_eq!(summary["scanned"], 254);
    assert_eq!(summary["alive"], 254);
    assert!(summary["elapsed_s"].as_f64().unwrap() > 0.0);
    // Every host line has an RTT.
    assert!(
        of_type(&out, "host")
            .iter()
            .all(|h| h["rtt_ms"].as_f64().is_some_and(|r| r > 0.0))
    );
}

#[test]
fn loopback_ipv6_and_text_output() {
    let ns = Netns::new("nms");
    let out = netmon_run(
        &ns,
        &[
            "sweep",
            "::1",
            "::2-::3",
            "--timeout",
            "300ms",
            "--format",
            "json",
        ],
        Duration::from_secs(30),
    );
    // Only ::1 is routed in the namespace: ::2 and ::3 cannot be probed,
    // which makes the sweep fail (exit 1) though ::1 answered.
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(alive(&out), ["::1".parse::<IpAddr>().unwrap()]);
    let unprobed: Vec<String> = of_type(&out, "not_sent")
        .iter()
        .map(|v| v["addr"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(unprobed, ["::2", "::3"]);
    assert_eq!(of_type(&out, "sweep_summary")[0]["scanned"], 3);
    let text = netmon_run(&ns, &["sweep", "127.0.0.8-10"], Duration::from_secs(30));
    assert!(text.status.success(), "{}", text.stderr);
    assert!(text.stdout.contains("127.0.0.9 "), "{}", text.stdout);
    assert!(
        text.stdout.contains("3 of 3 addresses alive"),
        "{}",
        text.stdout
    );
}

/// The far namespace holds `extra` addresses besides its own; a sweep of the
/// /24 (or /120) from the near one must find exactly those, plus both ends.
fn finds_exactly_the_configured_hosts(v6: bool) {
    let pair = Pair::new();
    let names = [
        pair.a.name.clone(),
        pair.b.name.clone(),
        pair.if_a.clone(),
        pair.if_b.clone(),
    ];
    let mac_b = mac(&pair.b, &pair.if_b);
    let (range, own, far, extra): (&str, &str, &str, &[&str]) = if v6 {
        (
            "2001:db8::/120",
            A6,
            "2001:db8::2",
            &["2001:db8::7", "2001:db8::64", "2001:db8::ff"],
        )
    } else {
        (
            "198.51.100.0/24",
            A4,
            "198.51.100.2",
            &["198.51.100.7", "198.51.100.100", "198.51.100.254"],
        )
    };
    for addr in extra {
        let plen = if v6 { "64 nodad" } else { "24" };
        pair.b
            .ip(&format!("addr add {addr}/{plen} dev {}", pair.if_b));
        // The far side's neighbour discovery is muted (see Pair): static entries.
        pair.a.ip(&format!(
            "neigh replace {addr} lladdr {mac_b} dev {} nud permanent",
            pair.if_a
        ));
    }
    let out = netmon_run(
        &pair.a,
        &[
            "sweep",
            range,
            "--timeout",
            "300ms",
            "--retries",
            "1",
            "--rate",
            "2000",
            "--format",
            "json",
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", out.stderr);
    let found: BTreeSet<IpAddr> = alive(&out).into_iter().collect();
    let expected: BTreeSet<IpAddr> = [own, far]
        .iter()
        .chain(extra)
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(found, expected, "{}", out.stdout);
    let summary = &of_type(&out, "sweep_summary")[0];
    assert_eq!(summary["scanned"], if v6 { 256 } else { 254 });
    assert_eq!(summary["alive"], expected.len());
    drop(pair);
    assert_gone(&names);
}

#[test]
fn ipv4_namespace_sweep_finds_exactly_the_configured_hosts() {
    finds_exactly_the_configured_hosts(false);
}

#[test]
fn ipv6_namespace_sweep_finds_exactly_the_configured_hosts() {
    finds_exactly_the_configured_hosts(true);
}

#[test]
fn nothing_alive_is_exit_1_and_limits_are_usage_errors() {
    let ns = Netns::new("nms");
    // No route for 203.0.113.0/24 in an empty namespace: nothing leaves it.
    let out = netmon_run(
        &ns,
        &[
            "sweep",
            "203.0.113.0/30",
            "--timeout",
            "100ms",
            "--format",
            "json",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert_eq!(of_type(&out, "sweep_summary")[0]["alive"], 0);
    for (args, needle) in [
        (&["sweep", "10.0.0.0/15"][..], "--force"),
        (&["sweep", "10.0.0.0/33"], "bad address range"),
        (&["sweep", "10.0.0.9-10.0.0.1"], "bad address range"),
        (&["sweep", "10.0.0.0/24", "--rate", "0"], "--rate"),
    ] {
        let out = netmon_run(&ns, args, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty());
    }
}

/// Issue 14, item 2: addresses a sweep cannot send to are named with the
/// reason, not counted as silent. Ground truth: the namespace has no
/// route for 203.0.113.0/24 (only loopback), and nftables counts what
/// leaves it: nothing but the loopback requests.
#[test]
fn addresses_that_cannot_be_probed_are_named_with_the_reason() {
    let ns = Netns::new("prs");
    probe_support::nft(
        &ns,
        "table inet probe {
           counter requests { }
           chain out {
             type filter hook output priority 0; policy accept;
             icmp type echo-request counter name requests
           }
         }",
    );
    let out = netmon_run(
        &ns,
        &[
            "sweep",
            "203.0.113.0/29",
            "127.0.0.1-2",
            "--timeout",
            "200ms",
            "--format",
            "json",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    let not_sent = of_type(&out, "not_sent");
    let addrs: Vec<&str> = not_sent
        .iter()
        .map(|v| v["addr"].as_str().unwrap())
        .collect();
    assert_eq!(
        addrs,
        (1..=6)
            .map(|i| format!("203.0.113.{i}"))
            .collect::<Vec<_>>()
    );
    for v in &not_sent {
        assert_eq!(v["error"], "Network is unreachable", "{v}");
    }
    assert_eq!(
        alive(&out),
        ["127.0.0.1", "127.0.0.2"]
            .map(|a| a.parse::<IpAddr>().unwrap())
            .to_vec()
    );
    let s = &of_type(&out, "sweep_summary")[0];
    assert_eq!(s["scanned"], 8);
    assert_eq!(s["not_sent"], 6);
    assert_eq!(s["errors"]["Network is unreachable"], 6);
    let sent = netmon_tests::nft_counter(&ns, "inet probe", "requests").0;
    assert_eq!(sent, 2, "only the loopback requests left");
    assert_eq!(s["sent"], sent);
    // Text: the reason per address and in the summary.
    let text = netmon_run(&ns, &["sweep", "203.0.113.0/30"], Duration::from_secs(10));
    assert_eq!(text.status.code(), Some(1), "{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", text.stdout);
    for (line, addr) in lines.iter().zip(["203.0.113.1", "203.0.113.2"]) {
        assert_eq!(
            *line,
            format!("{addr:<39} not sent: Network is unreachable")
        );
    }
    assert!(
        lines[2].starts_with("0 of 2 addresses alive in ")
            && lines[2].ends_with("; 2 could not be probed (Network is unreachable: 2)"),
        "{}",
        text.stdout
    );
}

/// Issue 14, item 3: a sweep of 16,777,216 addresses starts probing at
/// once, in little memory, at the rate asked for in every second, and
/// Ctrl-C ends it with its summary. The route for the range leads to the
/// far namespace, which drops it; a packet socket there timestamps every
/// request (ground truth for the first probe, the rate and the count).
#[test]
fn a_sweep_of_2_pow_24_addresses_streams_at_its_rate() {
    const RATE: usize = 1000;
    let pair = Pair::named("pr");
    let names = [
        pair.a.name.clone(),
        pair.b.name.clone(),
        pair.if_a.clone(),
        pair.if_b.clone(),
    ];
    pair.a.ip(&format!(
        "-6 route add 2001:db8:ff::/104 via {} dev {}",
        netmon_tests::B6,
        pair.if_a
    ));
    probe_support::nft(
        &pair.b,
        "table inet probe {
           counter swept { }
           chain pre {
             type filter hook prerouting priority -300; policy accept;
             ip6 daddr 2001:db8:ff::/104 counter name swept drop
           }
         }",
    );
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (times, out, spawned_ns, max_rss_kib, signalled_ns) = std::thread::scope(|s| {
        // Echo requests (ICMPv6 type 128) to 2001:db8:ff::/104 only.
        let swept = |ip6: &[u8]| {
            ip6.len() > 40
                && ip6[6] == 58
                && ip6[24..37] == [0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0, 0, 0, 0, 0, 0]
                && ip6[40] == 128
        };
        let capture = {
            let (b, if_b, stop) = (&pair.b, &pair.if_b, &stop);
            s.spawn(move || probe_support::capture_ipv6(b, if_b, swept, &ready_tx, stop))
        };
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("capture ready");
        let spawned_ns = probe_support::realtime_ns();
        let run = probe_support::Background::start(
            &pair.a,
            &[
                "sweep",
                "2001:db8:ff::/104",
                "--force",
                "--rate",
                "1000",
                "--format",
                "json",
            ],
        );
        // Memory while it runs, for 3.5 s (bounded), then Ctrl-C.
        let mut max_rss = 0;
        let until = std::time::Instant::now() + Duration::from_millis(3500);
        while std::time::Instant::now() < until {
            if let Some(kib) = probe_support::vm_rss_kib(run.pid()) {
                max_rss = max_rss.max(kib);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let signalled_ns = probe_support::realtime_ns();
        run.signal(libc::SIGINT);
        let out = run.wait(Duration::from_secs(10));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let times = capture.join().expect("capture thread");
        (times, out, spawned_ns, max_rss, signalled_ns)
    });
    let swept = netmon_tests::nft_counter(&pair.b, "inet probe", "swept").0;
    eprintln!(
        "{} requests captured ({swept} dropped by nftables), max RSS {max_rss_kib} KiB; stderr: {}",
        times.len(),
        out.stderr
    );
    assert!(!times.is_empty(), "no request reached the far namespace");
    let first_ms = (times[0] - spawned_ns) as f64 / 1e6;
    eprintln!("first request {first_ms:.1} ms after the spawn");
    assert!(first_ms < 100.0, "first request after {first_ms:.1} ms");
    assert!(
        max_rss_kib > 0 && max_rss_kib < 50 * 1024,
        "RSS {max_rss_kib} KiB"
    );
    // Every request was captured and dropped, and no window of one second
    // holds more than the rate.
    assert_eq!(times.len() as u64, swept);
    let max = probe_support::max_per_second(&times);
    eprintln!("at most {max} requests in one second");
    assert!(max <= RATE, "{max} requests in one second at --rate {RATE}");
    assert!(
        times.iter().all(|&t| t < signalled_ns + 50_000_000),
        "requests after Ctrl-C"
    );
    // Ctrl-C: the summary, with exactly the requests that left.
    assert_eq!(out.status.code(), Some(1), "nothing alive: {}", out.stderr);
    assert!(alive(&out).is_empty());
    let s = &of_type(&out, "sweep_summary")[0];
    assert_eq!(s["interrupted"], true);
    assert_eq!(s["total"], 1u64 << 24);
    assert_eq!(s["sent"], swept);
    // Three and a half seconds at 1000 a second, retries (after 500 ms)
    // before fresh addresses: about 1750 addresses twice each.
    let scanned = s["scanned"].as_u64().unwrap();
    assert!(scanned > 1000 && scanned < 3500, "{s}");
    drop(pair);
    assert_gone(&names);
}

/// Issue 14, item 3: Ctrl-C or SIGTERM during a sweep prints the hosts
/// found so far and the summary. Ground truth: the addresses the far
/// namespace holds; those early in the range answer before the signal,
/// the one at the end is not reached.
#[test]
fn an_interrupted_sweep_prints_what_it_found() {
    let pair = Pair::named("pr");
    let mac_b = mac(&pair.b, &pair.if_b);
    for addr in ["198.51.100.7", "198.51.100.250"] {
        pair.b.ip(&format!("addr add {addr}/24 dev {}", pair.if_b));
        pair.a.ip(&format!(
            "neigh replace {addr} lladdr {mac_b} dev {} nud permanent",
            pair.if_a
        ));
    }
    for (signal, format) in [(libc::SIGINT, "json"), (libc::SIGTERM, "text")] {
        // 50 a second: the first 50 addresses in the first second.
        let run = probe_support::Background::start(
            &pair.a,
            &[
                "sweep",
                "198.51.100.0/24",
                "--rate",
                "50",
                "--format",
                format,
            ],
        );
        std::thread::sleep(Duration::from_secs(1));
        run.signal(signal);
        let out = run.wait(Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(0), "{}", out.stderr);
        if format == "json" {
            let found: Vec<String> = alive(&out).iter().map(ToString::to_string).collect();
            assert_eq!(found, [A4, "198.51.100.2", "198.51.100.7"]);
            let s = &of_type(&out, "sweep_summary")[0];
            assert_eq!(s["interrupted"], true);
            assert_eq!(s["alive"], 3);
            assert_eq!(s["total"], 254);
            let scanned = s["scanned"].as_u64().unwrap();
            assert!((8..250).contains(&scanned), "{s}");
        } else {
            let lines: Vec<&str> = out.stdout.lines().collect();
            assert_eq!(lines.len(), 4, "{}", out.stdout);
            assert!(lines[2].starts_with("198.51.100.7 "), "{}", out.stdout);
            assert!(
                lines[3].starts_with("3 of ") && lines[3].contains("; interrupted after "),
                "{}",
                out.stdout
            );
        }
    }
}
