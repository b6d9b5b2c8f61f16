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
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(alive(&out), ["::1".parse::<IpAddr>().unwrap()]);
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
