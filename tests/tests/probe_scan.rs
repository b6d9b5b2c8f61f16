//! `netmon scan`: exactly the ports the test opened are open, nftables-
//! dropped and -rejected ports are filtered, the rest closed; IPv4 on
//! loopback (all 65,535 ports) and IPv6 across a veth pair.
//! Needs root; run with `cargo xtask test` (sets NETMON_BIN).

mod probe_support;

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr, TcpListener},
    time::Duration,
};

use netmon_tests::{Netns, Pair, netmon_run};
use probe_support::{assert_gone, nft, of_type};

fn ports(v: &serde_json::Value) -> BTreeSet<u16> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| u16::try_from(p.as_u64().unwrap()).unwrap())
        .collect()
}

#[test]
fn ipv4_loopback_all_ports() {
    let ns = Netns::new("nmc");
    // 20 listeners on ports the kernel picks, inside the namespace.
    let listeners: Vec<TcpListener> = ns.enter(|| {
        (0..20)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind"))
            .collect()
    });
    let open: BTreeSet<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let dropped: BTreeSet<u16> = [7, 1999, 31_337].into();
    let rejected: BTreeSet<u16> = [19].into();
    nft(
        &ns,
        "table inet probe {
           chain input {
             type filter hook input priority 0; policy accept;
             tcp dport { 7, 1999, 31337 } drop
             tcp dport 19 reject with icmpx type admin-prohibited
           }
         }",
    );
    let out = netmon_run(
        &ns,
        &[
            "scan",
            "127.0.0.1",
            "--ports",
            "-",
            "--timeout",
            "500ms",
            "--retries",
            "1",
            "--format",
            "json",
        ],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", out.stderr);
    let summary = &of_type(&out, "scan_summary")[0];
    eprintln!("{summary}");
    assert_eq!(ports(&summary["open"]), open);
    let filtered: BTreeSet<u16> = dropped.union(&rejected).copied().collect();
    assert_eq!(ports(&summary["filtered_ports"]), filtered);
    assert_eq!(summary["filtered"], filtered.len());
    assert_eq!(summary["closed"], 65_535 - open.len() - filtered.len());
    assert_eq!(summary["scanned"], 65_535);
    let port_lines = of_type(&out, "port");
    assert_eq!(port_lines.len(), open.len());
    for p in &port_lines {
        assert_eq!(p["state"], "open");
        assert_eq!(p["host"], "127.0.0.1");
        assert!(p["rtt_ms"].as_f64().is_some_and(|r| r > 0.0), "{p}");
    }
    drop(listeners);
}

#[test]
fn ipv6_across_veth_open_closed_filtered() {
    let pair = Pair::new();
    let names = [
        pair.a.name.clone(),
        pair.b.name.clone(),
        pair.if_a.clone(),
        pair.if_b.clone(),
    ];
    let b6: Ipv6Addr = netmon_tests::B6.parse().unwrap();
    let open: BTreeSet<u16> = [22, 80, 443, 2222].into();
    let listeners: Vec<TcpListener> = pair.b.enter(|| {
        open.iter()
            .map(|&p| TcpListener::bind((b6, p)).expect("bind"))
            .collect()
    });
    nft(
        &pair.b,
        "table inet probe {
           chain input {
             type filter hook input priority 0; policy accept;
             tcp dport { 25, 2999 } drop
             tcp dport 81 reject with icmpx type admin-prohibited
           }
         }",
    );
    let out = netmon_run(
        &pair.a,
        &[
            "scan",
            "2001:db8::2",
            "-p",
            "1-3000",
            "--timeout",
            "500ms",
            "--retries",
            "1",
            "--format",
            "json",
        ],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", out.stderr);
    let summary = &of_type(&out, "scan_summary")[0];
    assert_eq!(ports(&summary["open"]), open);
    assert_eq!(ports(&summary["filtered_ports"]), [25, 81, 2999].into());
    assert_eq!(summary["closed"], 3000 - 4 - 3);
    // Text output of the same, with a short list.
    let text = netmon_run(
        &pair.a,
        &["scan", "2001:db8::2", "-p", "20-30,80,81"],
        Duration::from_secs(30),
    );
    assert!(text.status.success(), "{}", text.stderr);
    assert!(text.stdout.contains("22/tcp"), "{}", text.stdout);
    assert!(text.stdout.contains("filtered: 25,81"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains("2 open, 9 closed, 2 filtered of 13 ports"),
        "{}",
        text.stdout
    );
    drop(listeners);
    drop(pair);
    assert_gone(&names);
}

#[test]
fn bad_specs_are_usage_errors() {
    let ns = Netns::new("nmc");
    for (args, needle) in [
        (&["scan", "127.0.0.1", "-p", "0"][..], "bad port spec"),
        (&["scan", "127.0.0.1", "-p", "10-5"], "bad port spec"),
        (&["scan", "127.0.0.1", "-p", "http"], "bad port spec"),
        (
            &["scan", "127.0.0.1", "--concurrency", "0"],
            "--concurrency",
        ),
    ] {
        let out = netmon_run(&ns, args, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
    let out = netmon_run(
        &ns,
        &["scan", "no-such-host.invalid", "-p", "80"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.starts_with("netmon: cannot resolve"),
        "{}",
        out.stderr
    );
}
