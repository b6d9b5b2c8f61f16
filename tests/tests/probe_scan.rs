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

/// Port states of an `nmap -oG` line: (port, state) for every port listed.
fn nmap_states(grepable: &str) -> Vec<(u16, String)> {
    let ports = grepable
        .lines()
        .find_map(|l| l.split_once("Ports: ").map(|(_, p)| p))
        .unwrap_or_else(|| panic!("no Ports in nmap output:\n{grepable}"));
    ports
        .split(", ")
        .map(|p| {
            let mut f = p.split('/');
            let port = f.next().unwrap().trim().parse().unwrap();
            (port, f.next().unwrap().to_owned())
        })
        .collect()
}

/// The far end of a pair set up as the rate-limited target: a listener
/// on port 22, every other port of 20-30 rejected with ICMP port
/// unreachable, ICMP errors limited as Linux does by default (one a second
/// per peer after a burst of 6; 1000 a second after a burst of 50).
fn rate_limited_target(pair: &Pair) -> TcpListener {
    let b4: Ipv4Addr = netmon_tests::B4.parse().unwrap();
    let listener = pair.b.enter(|| TcpListener::bind((b4, 22)).expect("bind"));
    pair.b.sh(
        "sysctl -qw net.ipv4.icmp_ratelimit=1000 net.ipv4.icmp_ratemask=6168 \
         net.ipv4.icmp_msgs_per_sec=1000 net.ipv4.icmp_msgs_burst=50",
    );
    nft(
        &pair.b,
        "table inet probe {
           counter rejected { }
           chain input {
             type filter hook input priority 0; policy accept;
             tcp dport 20-30 tcp dport != 22 counter name rejected reject with icmp type port-unreachable
           }
         }",
    );
    listener
}

/// Issue 14, item 4: a target that rejects with ICMP port unreachable and
/// rate-limits ICMP. nmap -sT says closed; so must netmon, every time.
/// Each run uses fresh namespaces for each tool (the limit is per peer
/// and per namespace), both scanned at the same time; 20 runs.
#[test]
fn rate_limited_icmp_rejects_read_closed_like_nmap() {
    let expected: Vec<(u16, String)> = (20..=30)
        .map(|p| (p, if p == 22 { "open" } else { "closed" }.to_owned()))
        .collect();
    for run in 0..20 {
        let (for_nmap, for_netmon) = (Pair::named("pr"), Pair::named("pr"));
        let names = [
            for_nmap.a.name.clone(),
            for_nmap.b.name.clone(),
            for_netmon.a.name.clone(),
            for_netmon.b.name.clone(),
        ];
        let listeners = [
            rate_limited_target(&for_nmap),
            rate_limited_target(&for_netmon),
        ];
        let (nmap, netmon) = std::thread::scope(|s| {
            let nmap = s.spawn(|| {
                for_nmap.a.sh(&format!(
                    "timeout 120 nmap -n -Pn -sT -p 20-30 -oG - {}",
                    netmon_tests::B4
                ))
            });
            let netmon = netmon_run(
                &for_netmon.a,
                &["scan", netmon_tests::B4, "-p", "20-30", "--format", "json"],
                Duration::from_secs(120),
            );
            (nmap.join().expect("nmap thread"), netmon)
        });
        let nmap = nmap_states(&nmap);
        assert!(netmon.status.success(), "{}", netmon.stderr);
        let summary = &of_type(&netmon, "scan_summary")[0];
        eprintln!(
            "run {run}: netmon {summary}, {} rejects; nmap {nmap:?}",
            netmon_tests::nft_counter(&for_netmon.b, "inet probe", "rejected").0
        );
        assert_eq!(nmap, expected, "nmap, run {run}");
        let mine: Vec<(u16, String)> = (20..=30)
            .map(|p| {
                let state = if ports(&summary["open"]).contains(&p) {
                    "open"
                } else if ports(&summary["filtered_ports"]).contains(&p) {
                    "filtered"
                } else {
                    "closed"
                };
                (p, state.to_owned())
            })
            .collect();
        assert_eq!(mine, nmap, "netmon against nmap, run {run}");
        assert_eq!(summary["closed"], 10);
        drop(listeners);
        drop((for_nmap, for_netmon));
        assert_gone(&names);
    }
}
