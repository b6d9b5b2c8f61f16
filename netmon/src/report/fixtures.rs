//! Fixed values for the sinks' tests: a run whose text and NDJSON are
//! kept in `golden/`, printed by the renderers before the report seam
//! (commit fd98cb8), so the tests prove the output unchanged; changed on
//! purpose since, for the transmit side (a `tx` line and flow, `tx_*`
//! keys, `direction` on every flow: the receive side's lines and keys are
//! as they were), and for passive RTT (an interval and a summary added at
//! the end, the RTT counters added to `counters`: every line before is as
//! it was).

use std::{net::IpAddr, time::Duration};

use netmon_common::{Counters, DIR_RX, DIR_TX, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use super::{
    Flow, FlowSummary, HostRtt, IfCounters, Interval, IntervalFlows, Link, PassiveRttSummary,
    ProbeKind, ProbeStats, ProgramCost, Rates, RttProto, RttStats, Side, Sink, Summary,
};

/// A transmitted flow: the answers to the first of [`flows`].
pub fn tx_flow() -> Flow {
    Flow {
        direction: DIR_TX,
        ..flow(
            "198.51.100.1",
            "198.51.100.2",
            (9000, 51284),
            PROTO_UDP,
            12,
            1500,
            0,
        )
    }
}

/// What the busy interval transmitted.
fn tx_side() -> Side {
    Side {
        rates: Rates {
            interval_s: 1.0012,
            packets: 12,
            bytes: 1500,
            pps: 11.99,
            bps: 11_986.0,
            util_pct: Some(0.0001),
        },
        totals: Counters::default(),
        counts: Counters {
            packets: 12,
            bytes: 1500,
            udp: 12,
            size_classes: [0, 12, 0, 0, 0, 0, 0],
            ..Counters::default()
        },
    }
}

fn flow(
    src: &str,
    dst: &str,
    ports: (u16, u16),
    proto: u8,
    packets: u64,
    bytes: u64,
    tcp_flags: u32,
) -> Flow {
    Flow {
        src: src.parse::<IpAddr>().unwrap(),
        dst: dst.parse::<IpAddr>().unwrap(),
        sport: ports.0,
        dport: ports.1,
        proto,
        direction: DIR_RX,
        packets,
        bytes,
        first_seen_ns: 1_000_000_000,
        last_seen_ns: 3_500_000_000,
        tcp_flags,
        rtt: None,
    }
}

/// IPv4 and IPv6 with ports, a protocol without ports, one by number.
pub fn flows() -> Vec<Flow> {
    vec![
        flow(
            "198.51.100.2",
            "198.51.100.1",
            (51284, 9000),
            PROTO_UDP,
            959,
            531_286,
            0,
        ),
        flow(
            "2001:db8::2",
            "2001:db8::1",
            (40000, 443),
            PROTO_TCP,
            96,
            13_632,
            0x12,
        ),
        flow(
            "fe80::f0c0:8aff:fe06:c434",
            "ff02::16",
            (0, 0),
            PROTO_ICMPV6,
            1,
            90,
            0,
        ),
        flow("192.0.2.1", "192.0.2.2", (0, 0), 47, 1, 60, 0),
    ]
}

/// Answers with a histogram, duplicates and late replies; a TCP target;
/// a target no probe could be sent to.
pub fn probes() -> Vec<ProbeStats> {
    let mut a = ProbeStats::new(
        ProbeKind::Icmp,
        "localhost",
        Some("127.0.0.1".parse().unwrap()),
        None,
    );
    for us in [100, 200, 300, 400, 12_500] {
        a.record(Some(Duration::from_micros(us)));
    }
    a.record(None);
    (a.duplicates, a.late) = (2, 1);
    let mut b = ProbeStats::new(
        ProbeKind::Tcp,
        "[::1]:22",
        Some("::1".parse().unwrap()),
        Some(22),
    );
    b.record(Some(Duration::from_millis(150)));
    let mut c = ProbeStats::new(ProbeKind::Icmp, "203.0.113.1", None, None);
    c.record_not_sent("Network is unreachable");
    vec![a, b, c]
}

/// Four answers of 0.1-0.4 ms and one loss.
pub fn sample_probe() -> ProbeStats {
    let mut s = ProbeStats::new(
        ProbeKind::Icmp,
        "localhost",
        Some("127.0.0.1".parse().unwrap()),
        None,
    );
    for us in [100, 200, 300, 400] {
        s.record(Some(Duration::from_micros(us)));
    }
    s.record(None);
    s
}

/// Hands `sink` two intervals (the first with probes and a known link
/// speed, the second empty), a link going down and up, and two summaries
/// (estimated flows with dropped records and probes; an exact, empty one).
pub fn run(sink: &mut impl Sink) {
    sink.interval(&busy_interval()).unwrap();
    sink.interval(&Interval {
        iface: "veth0".into(),
        unix_time: 1_700_000_186.75,
        rates: Rates {
            interval_s: 0.999,
            packets: 0,
            bytes: 0,
            pps: 0.0,
            bps: 0.0,
            util_pct: None,
        },
        totals: Counters::default(),
        counts: Counters::default(),
        if_counters: Some(IfCounters::default()),
        cost: None,
        flows: IntervalFlows::default(),
        probes: Vec::new(),
        tx: None,
        passive_rtt: None,
    })
    .unwrap();
    for (unix_time, up) in [(1_700_000_187.1, false), (1_700_000_188.9, true)] {
        sink.link(&Link {
            iface: "veth0".into(),
            unix_time,
            up,
        })
        .unwrap();
    }
    sink.summary(&Summary {
        iface: "veth0".into(),
        duration_s: 3.5412,
        counters: Counters {
            packets: 3613,
            bytes: 1_866_000,
            tcp: 96,
            udp: 3508,
            icmpv6: 5,
            other_ip: 1,
            arp: 2,
            other_l2: 3,
            malformed: 4,
            size_classes: [1, 5, 328, 0, 3280, 0, 2],
            tcp_syn: 7,
            tcp_fin: 8,
            tcp_rst: 9,
            flow_insert_failed: 11,
            flow_records: 8,
            ..Counters::default()
        },
        tx_counters: Some(Counters {
            packets: 40,
            bytes: 5000,
            udp: 38,
            icmpv6: 2,
            size_classes: [0, 40, 0, 0, 0, 0, 0],
            ..Counters::default()
        }),
        flows: FlowSummary {
            top: flows().into_iter().chain([tx_flow()]).collect(),
            tracked: 20_345,
            tracked_exact: false,
            retired_kept: 4096,
            retired_dropped: 3,
            retired_dropped_max_bytes: 1234,
        },
        mono_to_unix_ns: 1_700_000_000_000_000_000,
        probes: probes(),
        passive_rtt: None,
    })
    .unwrap();
    sink.summary(&Summary {
        iface: "lo".into(),
        duration_s: 2.0,
        counters: Counters {
            packets: 10,
            bytes: 1000,
            udp: 10,
            ..Counters::default()
        },
        tx_counters: None,
        flows: FlowSummary {
            top: Vec::new(),
            tracked: 0,
            tracked_exact: true,
            retired_kept: 4096,
            retired_dropped: 0,
            retired_dropped_max_bytes: 0,
        },
        mono_to_unix_ns: 0,
        probes: Vec::new(),
        passive_rtt: None,
    })
    .unwrap();
    // Added with passive RTT (issue 11), after everything above.
    sink.interval(&rtt_interval()).unwrap();
    sink.summary(&rtt_summary()).unwrap();
}

/// The first interval of [`run`]: flows of every kind, probes, a known
/// link speed, interface drops, the programs' cost.
pub fn busy_interval() -> Interval {
    Interval {
        iface: "veth0".into(),
        unix_time: 1_700_000_185.75,
        rates: Rates {
            interval_s: 1.0012,
            packets: 1047,
            bytes: 539_965,
            pps: 1045.7,
            bps: 4_314_536.2,
            util_pct: Some(0.0431),
        },
        totals: Counters::default(),
        counts: interval_counts(),
        if_counters: Some(IfCounters {
            rx_packets: 1050,
            rx_bytes: 540_000,
            tx_packets: 12,
            tx_bytes: 1500,
            rx_dropped: 3,
            rx_missed_errors: 2,
            ..IfCounters::default()
        }),
        cost: Some(ProgramCost {
            run_ns: 67_005,
            runs: 1047,
        }),
        flows: IntervalFlows {
            in_table: 6,
            active: 4,
            top_bytes: flows().into_iter().take(2).chain([tx_flow()]).collect(),
            top_packets: flows()[1..3].to_vec(),
            every: flows(),
        },
        probes: probes(),
        tx: Some(tx_side()),
        passive_rtt: None,
    }
}

/// One interval of 10 packets, 1000 bytes in 1 s at 01:01:01 on `lo`, no
/// link speed, no flows.
pub fn small_interval() -> Interval {
    Interval {
        iface: "lo".into(),
        unix_time: 3661.0,
        rates: Rates {
            interval_s: 1.0,
            packets: 10,
            bytes: 1000,
            pps: 10.0,
            bps: 8000.0,
            util_pct: None,
        },
        totals: Counters::default(),
        counts: Counters::default(),
        if_counters: None,
        cost: None,
        flows: IntervalFlows::default(),
        probes: Vec::new(),
        tx: None,
        passive_rtt: None,
    }
}

/// The counts of the first interval of [`run`]: 1047 packets of every
/// kind but ARP.
pub fn interval_counts() -> Counters {
    Counters {
        packets: 1047,
        bytes: 539_965,
        tcp: 96,
        udp: 945,
        icmpv6: 1,
        other_ip: 1,
        other_l2: 2,
        malformed: 2,
        size_classes: [2, 1, 96, 0, 948, 0, 0],
        tcp_syn: 1,
        tcp_fin: 1,
        tcp_rst: 0,
        flow_insert_failed: 0,
        flow_records: 4,
        ..Counters::default()
    }
}

fn rtt(samples: u64, min: f64, p50: f64, p90: f64, p99: f64, max: f64) -> RttStats {
    RttStats {
        samples,
        min,
        p50,
        p90,
        p99,
        max,
    }
}

/// Passive RTT to two hosts over TCP and ICMP.
pub fn rtt_hosts() -> Vec<HostRtt> {
    let host = |h: &str, proto, rtt| HostRtt {
        host: h.parse().unwrap(),
        proto,
        rtt,
    };
    vec![
        host(
            "198.51.100.2",
            RttProto::Tcp,
            rtt(212, 4.900_123, 5.003, 5.103, 6.003, 6.100_456),
        ),
        host(
            "198.51.100.2",
            RttProto::Icmp,
            rtt(3, 5.01, 5.011, 5.2, 5.2, 5.2),
        ),
        host(
            "2001:db8::2",
            RttProto::Tcp,
            rtt(1, 20.25, 20.25, 20.25, 20.25, 20.25),
        ),
    ]
}

/// A TCP conversation with passive RTT, its two directions.
fn rtt_flows() -> Vec<Flow> {
    let stats = Some(Box::new(rtt(
        210, 4.900_123, 5.003, 5.103, 6.003, 6.100_456,
    )));
    let tx = Flow {
        direction: DIR_TX,
        rtt: stats.clone(),
        ..flow(
            "198.51.100.1",
            "198.51.100.2",
            (40000, 80),
            PROTO_TCP,
            900,
            1_300_000,
            0x18,
        )
    };
    let rx = Flow {
        rtt: stats,
        ..flow(
            "198.51.100.2",
            "198.51.100.1",
            (80, 40000),
            PROTO_TCP,
            450,
            29_700,
            0x10,
        )
    };
    vec![tx, rx]
}

/// `--ping` and `--tcp` to the host of [`rtt_hosts`]: the ping with passive
/// RTT beside it, the TCP probe without (no sample of that span).
fn rtt_probes() -> Vec<ProbeStats> {
    let addr = Some("198.51.100.2".parse().unwrap());
    let mut ping = ProbeStats::new(ProbeKind::Icmp, "198.51.100.2", addr, None);
    ping.record(Some(Duration::from_micros(5_020)));
    ping.passive_rtt = Some(rtt(3, 5.01, 5.011, 5.2, 5.2, 5.2));
    let mut tcp = ProbeStats::new(ProbeKind::Tcp, "198.51.100.2:80", addr, Some(80));
    tcp.record(Some(Duration::from_micros(5_110)));
    vec![ping, tcp]
}

/// An interval with passive RTT: hosts, flows and probes with it.
pub fn rtt_interval() -> Interval {
    Interval {
        iface: "veth0".into(),
        unix_time: 1_700_000_189.75,
        flows: IntervalFlows {
            in_table: 2,
            active: 2,
            top_bytes: rtt_flows(),
            top_packets: rtt_flows(),
            every: rtt_flows(),
        },
        probes: rtt_probes(),
        tx: Some(tx_side()),
        passive_rtt: Some(rtt_hosts()),
        ..small_interval()
    }
}

/// A summary with passive RTT: the kernel's RTT counters, what the
/// bounds dropped.
fn rtt_summary() -> Summary {
    let mut probes = rtt_probes();
    probes[1].passive_rtt = Some(rtt(212, 4.900_123, 5.003, 5.103, 6.003, 6.100_456));
    Summary {
        iface: "veth0".into(),
        duration_s: 4.0,
        counters: Counters {
            packets: 1350,
            bytes: 1_329_700,
            tcp: 1350,
            rtt_samples: 216,
            rtt_samples_lost: 1,
            rtt_ambiguous: 2,
            ..Counters::default()
        },
        tx_counters: Some(Counters {
            packets: 900,
            bytes: 1_300_000,
            tcp: 900,
            rtt_recorded: 230,
            rtt_pending_full: 4,
            ..Counters::default()
        }),
        flows: FlowSummary {
            top: rtt_flows(),
            tracked: 2,
            tracked_exact: true,
            retired_kept: 4096,
            retired_dropped: 0,
            retired_dropped_max_bytes: 0,
        },
        mono_to_unix_ns: 1_700_000_000_000_000_000,
        probes,
        passive_rtt: Some(PassiveRttSummary {
            hosts: rtt_hosts(),
            pending_expired: 9,
            hosts_kept: 128,
            hosts_dropped: 2,
            host_samples_dropped: 5,
            conversations_dropped: 7,
        }),
    }
}

/// Checks that `write` writes exactly `golden`, line by line first so a
/// difference names its line.
pub fn assert_writes(golden: &str, write: impl FnOnce(&mut Vec<u8>)) {
    let mut out = Vec::new();
    write(&mut out);
    let got = String::from_utf8(out).unwrap();
    for (i, (g, w)) in got.lines().zip(golden.lines()).enumerate() {
        assert_eq!(g, w, "line {}", i + 1);
    }
    assert_eq!(got, golden);
}
