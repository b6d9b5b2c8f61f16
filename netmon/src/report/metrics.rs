//! The Prometheus sink (`--metrics ADDR`): keeps the latest totals of every
//! interval and renders them at each scrape in the OpenMetrics text format,
//! through the Prometheus project's client (`prometheus-client`).
//!
//! Counters are the kernel's totals since the attach (monotonic: the
//! program's per-CPU counters only grow while it is attached), so a scrape
//! between two intervals repeats the last interval's values, never goes
//! back. Label cardinality is bounded: one interface, fixed classes, and
//! the probe targets the user named on the command line (passive RTT is
//! exported for those targets only, beside their probe RTT).
//!
//! Two expositions, the client's choice (HTTP `Accept`): OpenMetrics 1.0
//! text, which Prometheus asks for, and the classic Prometheus text format
//! 0.0.4 for everything else (curl, promtool, older scrapers).
//!
//! The sink is pure: the HTTP endpoint (`export::metrics`) asks
//! [`MetricsState::encode`] for the text.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use netmon_common::{Counters, SIZE_CLASS_LABELS};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use super::{IfCounters, Interval, Link, ProbeKind, RttStats, Sink, Summary, latency::Latency};

/// A text exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
}

impl Exposition {
    /// What a client whose `Accept` header is `accept` gets.
    #[must_use]
    pub fn for_accept(accept: &str) -> Self {
        if accept.contains("application/openmetrics-text") {
            Self::OpenMetrics
        } else {
            Self::Prometheus
        }
    }

    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Upper bounds of the RTT histogram buckets, in seconds: 100 µs to 10 s,
/// about three per decade.
pub const RTT_BUCKETS_S: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Everything a probe target has done since the start.
#[derive(Clone, Debug, Default)]
struct ProbeTotals {
    sent: u64,
    received: u64,
    duplicates: u64,
    not_sent: u64,
    latency: Latency,
    /// Passive RTT of real traffic to the target (with passive RTT): its
    /// samples since the start, and the figures of the latest interval
    /// that had samples (percentiles of intervals do not add up).
    passive_samples: u64,
    passive_last: Option<RttStats>,
}

/// What a scrape shows: the latest values, shared between the sink (which
/// writes them every interval) and the endpoint (which reads them).
#[derive(Debug)]
pub struct MetricsState {
    iface: String,
    xdp_mode: String,
    /// Kernel totals since the attach, as of the last interval.
    totals: Counters,
    /// The same of the transmit side, when the egress program counts.
    tx_totals: Option<Counters>,
    flows_in_table: u64,
    /// Whether the interface's link was up at its last change.
    link_up: Option<bool>,
    /// The interface's own counters (sysfs) summed over the intervals
    /// since the start, when sysfs has them.
    if_counters: Option<IfCounters>,
    /// Per (kind, target), in the order of the command line.
    probes: BTreeMap<(usize, ProbeKind, String), ProbeTotals>,
}

impl MetricsState {
    #[must_use]
    pub fn new(iface: &str, xdp_mode: &str) -> Self {
        MetricsState {
            iface: iface.to_owned(),
            xdp_mode: xdp_mode.to_owned(),
            totals: Counters::default(),
            tx_totals: None,
            flows_in_table: 0,
            link_up: None,
            if_counters: None,
            probes: BTreeMap::new(),
        }
    }

    /// The current values in `format`.
    #[must_use]
    pub fn encode(state: &Arc<Mutex<MetricsState>>, format: Exposition) -> String {
        let mut registry = Registry::with_prefix("netmon");
        registry.register_collector(Box::new(Scrape(Arc::clone(state))));
        let mut out = String::new();
        match format {
            Exposition::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &registry)
            }
            Exposition::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            }
        }
        .expect("writing to a String cannot fail");
        out
    }

    fn interval(&mut self, i: &Interval) {
        self.totals = i.totals;
        self.tx_totals = i.tx.map(|t| t.totals);
        self.flows_in_table = i.flows.in_table as u64;
        if let Some(d) = &i.if_counters {
            self.if_counters.get_or_insert_default().accumulate(d);
        }
        for (order, p) in i.probes.iter().enumerate() {
            let t = self
                .probes
                .entry((order, p.kind, p.target.clone()))
                .or_default();
            t.sent += p.sent;
            t.received += p.received;
            t.duplicates += p.duplicates;
            t.not_sent += p.not_sent;
            t.latency.merge(&p.latency);
            if let Some(r) = &p.passive_rtt {
                t.passive_samples += r.samples;
                t.passive_last = Some(*r);
            }
        }
    }
}

fn lock(state: &Mutex<MetricsState>) -> std::sync::MutexGuard<'_, MetricsState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sink half: updates the shared state every interval.
pub struct MetricsSink(Arc<Mutex<MetricsState>>);

impl MetricsSink {
    #[must_use]
    pub fn new(state: Arc<Mutex<MetricsState>>) -> Self {
        MetricsSink(state)
    }
}

impl Sink for MetricsSink {
    fn interval(&mut self, interval: &Interval) -> anyhow::Result<()> {
        lock(&self.0).interval(interval);
        Ok(())
    }
    fn link(&mut self, link: &Link) -> anyhow::Result<()> {
        lock(&self.0).link_up = Some(link.up);
        Ok(())
    }
    fn summary(&mut self, summary: &Summary) -> anyhow::Result<()> {
        // The final totals (read after the detach), for a last scrape
        // before netmon exits.
        let mut s = lock(&self.0);
        s.totals = summary.counters;
        s.tx_totals = summary.tx_counters;
        Ok(())
    }
}

/// One scrape's view of the state, as a prometheus-client collector.
#[derive(Debug)]
struct Scrape(Arc<Mutex<MetricsState>>);

type Labels = Vec<(&'static str, String)>;

/// Encodes one counter family: `(labels, value)` rows.
fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: &[(Labels, u64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels, i64)],
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let s = lock(&self.0);
        encode_traffic(&s, &mut enc)?;
        encode_probes(&s, &mut enc)
    }
}

/// One counter of a [`Counters`].
type Field = fn(&Counters) -> u64;

/// The interface's counters and gauges.
#[expect(clippy::too_many_lines, reason = "one metric family after another")]
fn encode_traffic(s: &MetricsState, enc: &mut DescriptorEncoder) -> std::fmt::Result {
    // One series per direction: rx (XDP), and tx (TC egress) when it counts.
    let mut directions: Vec<(&str, &Counters)> = vec![("rx", &s.totals)];
    if let Some(t) = &s.tx_totals {
        directions.push(("tx", t));
    }
    let base =
        |dir: &str| -> Labels { vec![("iface", s.iface.clone()), ("direction", dir.into())] };
    let with = |dir: &str, k: &'static str, v: &str| -> Labels {
        let mut l = base(dir);
        l.push((k, v.to_owned()));
        l
    };
    // Rows of one counter of every side.
    let each = |f: fn(&Counters) -> u64| -> Vec<(Labels, u64)> {
        directions.iter().map(|(d, c)| (base(d), f(c))).collect()
    };
    // Rows of a labelled family: every label value of every side.
    let each_with = |k: &'static str, values: &[(&str, Field)]| {
        directions
            .iter()
            .flat_map(|(d, c)| values.iter().map(move |(v, f)| (with(d, k, v), f(c))))
            .collect::<Vec<_>>()
    };
    counters(
        enc,
        "packets",
        "Frames counted since the attach: received (XDP, direction rx) and transmitted (TC \
             egress, direction tx; a GSO packet as the segments the wire carries)",
        None,
        &each(|c| c.packets),
    )?;
    counters(
        enc,
        "frame",
        "L2 frame bytes (Ethernet header included, FCS excluded) since the attach",
        Some(&Unit::Bytes),
        &each(|c| c.bytes),
    )?;
    counters(
        enc,
        "protocol_packets",
        "Frames by protocol: tcp, udp, icmp, icmpv6, other_ip (other IP protocols), arp, \
             other_l2 (neither IP nor ARP)",
        None,
        &each_with(
            "protocol",
            &[
                ("tcp", |c| c.tcp),
                ("udp", |c| c.udp),
                ("icmp", |c| c.icmp),
                ("icmpv6", |c| c.icmpv6),
                ("other_ip", |c| c.other_ip),
                ("arp", |c| c.arp),
                ("other_l2", |c| c.other_l2),
            ],
        ),
    )?;
    let sizes: Vec<_> = directions
        .iter()
        .flat_map(|(d, c)| {
            SIZE_CLASS_LABELS
                .iter()
                .zip(c.size_classes)
                .map(|(l, v)| (with(d, "size", l), v))
        })
        .collect();
    counters(
        enc,
        "size_class_packets",
        "Frames by RFC 2819 size class (frame length with the 4-byte FCS, as etherStats)",
        None,
        &sizes,
    )?;
    counters(
        enc,
        "tcp_flag_packets",
        "TCP segments with SYN, FIN or RST set",
        None,
        &each_with(
            "flag",
            &[
                ("syn", |c| c.tcp_syn),
                ("fin", |c| c.tcp_fin),
                ("rst", |c| c.tcp_rst),
            ],
        ),
    )?;
    counters(
        enc,
        "malformed_packets",
        "Frames whose headers end before the packet says they should",
        None,
        &each(|c| c.malformed),
    )?;
    counters(
        enc,
        "flow_insert_failed_packets",
        "Packets counted to no flow (the eviction ring or the flow table was full); still in \
             every other counter",
        None,
        &each(|c| c.flow_insert_failed),
    )?;
    counters(
        enc,
        "flow_records",
        "Flow records the kernel started (a flow's first packet on a CPU, or its first after \
             its slot was taken)",
        None,
        &each(|c| c.flow_records),
    )?;
    let iface = || -> Labels { vec![("iface", s.iface.clone())] };
    gauges(
        enc,
        "flows",
        "Flows in netmon's flow table",
        &[(iface(), i64::try_from(s.flows_in_table).unwrap_or(i64::MAX))],
    )?;
    let mut mode = iface();
    mode.push(("mode", s.xdp_mode.clone()));
    gauges(
        enc,
        "xdp_attached",
        "1 while the XDP program is attached, in the mode the label names",
        &[(mode, 1)],
    )?;
    if let Some(ifc) = &s.if_counters {
        let rows: Vec<_> = ifc
            .named()
            .into_iter()
            .filter(|(name, _)| name.contains("dropped") || name.contains("errors"))
            .map(|(name, v)| {
                let mut l = iface();
                l.push(("counter", name.to_owned()));
                (l, v)
            })
            .collect();
        counters(
            enc,
            "interface_errors",
            "The interface's own drop and error counters (sysfs statistics: rx_dropped, \
             rx_missed_errors, ...) since netmon started; a NIC shedding packets before XDP",
            None,
            &rows,
        )?;
    }
    if let Some(up) = s.link_up {
        gauges(
            enc,
            "link_up",
            "1 when the interface was up with carrier at its last change, 0 when down",
            &[(iface(), i64::from(up))],
        )?;
    }
    Ok(())
}

/// The probes' counters and RTT histograms (nothing without probes).
fn encode_probes(s: &MetricsState, enc: &mut DescriptorEncoder) -> std::fmt::Result {
    if s.probes.is_empty() {
        return Ok(());
    }
    let probe = |kind: ProbeKind, target: &str| -> Labels {
        vec![
            ("kind", kind.as_str().into()),
            ("target", target.to_owned()),
        ]
    };
    let rows = |f: fn(&ProbeTotals) -> u64| -> Vec<(Labels, u64)> {
        s.probes
            .iter()
            .map(|((_, k, t), p)| (probe(*k, t), f(p)))
            .collect()
    };
    counters(
        enc,
        "probe_sent",
        "Probes sent whose outcome is known (answered or timed out)",
        None,
        &rows(|p| p.sent),
    )?;
    counters(
        enc,
        "probe_received",
        "Probes answered",
        None,
        &rows(|p| p.received),
    )?;
    counters(
        enc,
        "probe_duplicates",
        "Duplicate answers",
        None,
        &rows(|p| p.duplicates),
    )?;
    counters(
        enc,
        "probe_not_sent",
        "Probes that could not be sent (no route, refused locally)",
        None,
        &rows(|p| p.not_sent),
    )?;
    let mut m = enc.encode_descriptor(
        "probe_rtt",
        "Round-trip time of answered probes",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for ((_, k, t), p) in &s.probes {
        let counts = p.latency.cumulative_counts(&RTT_BUCKETS_S);
        // The last bucket (+Inf) holds every sample; prometheus-client
        // takes per-bucket counts and accumulates them.
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(RTT_BUCKETS_S.len() + 1);
        let mut below = 0;
        for (b, c) in RTT_BUCKETS_S.iter().zip(counts) {
            buckets.push((*b, c - below));
            below = c;
        }
        buckets.push((f64::INFINITY, p.latency.count() - below));
        let labels = probe(*k, t);
        m.encode_family(&labels)?.encode_histogram::<Labels>(
            p.latency.sum_s(),
            p.latency.count(),
            &buckets,
            None,
        )?;
    }
    encode_passive(s, enc, probe)
}

/// Passive RTT of real traffic to each probe target, beside the probe's
/// own histogram. Per target only: per remote host the series would come
/// and go with the traffic, with no bound the user chose.
fn encode_passive(
    s: &MetricsState,
    enc: &mut DescriptorEncoder,
    probe: impl Fn(ProbeKind, &str) -> Labels,
) -> std::fmt::Result {
    let rows: Vec<(Labels, u64)> = s
        .probes
        .iter()
        .filter(|(_, p)| p.passive_samples > 0)
        .map(|((_, k, t), p)| (probe(*k, t), p.passive_samples))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    counters(
        enc,
        "passive_rtt_samples",
        "Passive RTT samples of real traffic to the probe target (ICMP echo for kind icmp, TCP \
             for kind tcp), timed by the kernel between a packet sent and its answer",
        None,
        &rows,
    )?;
    let mut m = enc.encode_descriptor(
        "passive_rtt",
        "Passive RTT of real traffic to the probe target: the quantiles of the latest interval \
             that had samples",
        Some(&Unit::Seconds),
        MetricType::Gauge,
    )?;
    for ((_, k, t), p) in &s.probes {
        let Some(r) = &p.passive_last else {
            continue;
        };
        for (q, ms) in [("0.5", r.p50), ("0.9", r.p90), ("0.99", r.p99)] {
            let mut labels = probe(*k, t);
            // Not `quantile`: Prometheus reserves that label for summaries
            // (promtool rejects it on a gauge), and an interval's
            // percentiles are no summary of the run.
            labels.push(("percentile", q.to_owned()));
            ConstGauge::new(ms / 1e3).encode(m.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::{IntervalFlows, ProbeStats, Rates, Side};

    fn interval(packets: u64, probes: Vec<ProbeStats>) -> Interval {
        Interval {
            iface: "veth0".into(),
            unix_time: 1.0,
            rates: Rates {
                interval_s: 1.0,
                packets,
                bytes: packets * 100,
                pps: packets as f64,
                bps: packets as f64 * 800.0,
                util_pct: None,
            },
            totals: Counters {
                packets,
                bytes: packets * 100,
                udp: packets,
                tcp_syn: 2,
                ..Counters::default()
            },
            counts: Counters::default(),
            if_counters: Some(IfCounters {
                rx_dropped: 1,
                rx_missed_errors: 2,
                ..IfCounters::default()
            }),
            cost: None,
            flows: IntervalFlows {
                in_table: 3,
                ..IntervalFlows::default()
            },
            probes,
            tx: None,
            passive_rtt: None,
        }
    }

    fn probe(rtts_ms: &[u64]) -> ProbeStats {
        let mut p = ProbeStats::new(
            ProbeKind::Icmp,
            "192.0.2.1",
            Some("192.0.2.1".parse().unwrap()),
            None,
        );
        for ms in rtts_ms {
            p.record(Some(Duration::from_millis(*ms)));
        }
        p.record(None);
        p
    }

    /// The value of the sample line that starts with `series` (name and
    /// labels).
    fn sample<'a>(text: &'a str, series: &str) -> &'a str {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn the_transmit_side_is_a_series_of_its_own() {
        let state = Arc::new(Mutex::new(MetricsState::new("veth0", "native")));
        let mut sink = MetricsSink::new(Arc::clone(&state));
        sink.interval(&interval(10, Vec::new())).unwrap();
        let text = MetricsState::encode(&state, Exposition::OpenMetrics);
        assert!(!text.contains(r#"direction="tx""#), "no tx without egress");
        let mut i = interval(10, Vec::new());
        let tx = Counters {
            packets: 7,
            bytes: 700,
            tcp: 7,
            ..Counters::default()
        };
        i.tx = Some(Side {
            rates: i.rates,
            totals: tx,
            counts: tx,
        });
        sink.interval(&i).unwrap();
        let text = MetricsState::encode(&state, Exposition::OpenMetrics);
        let (rx, txl) = (
            r#"{iface="veth0",direction="rx"}"#,
            r#"{iface="veth0",direction="tx"}"#,
        );
        assert_eq!(sample(&text, &format!("netmon_packets_total{rx}")), "10");
        assert_eq!(sample(&text, &format!("netmon_packets_total{txl}")), "7");
        assert_eq!(
            sample(&text, &format!("netmon_frame_bytes_total{txl}")),
            "700"
        );
        assert_eq!(
            sample(
                &text,
                r#"netmon_protocol_packets_total{iface="veth0",direction="tx",protocol="tcp"}"#
            ),
            "7"
        );
    }

    #[test]
    fn a_scrape_shows_the_latest_totals_and_cumulative_probes() {
        let state = Arc::new(Mutex::new(MetricsState::new("veth0", "native")));
        let mut sink = MetricsSink::new(Arc::clone(&state));
        sink.interval(&interval(10, vec![probe(&[1, 3])])).unwrap();
        sink.interval(&interval(25, vec![probe(&[20])])).unwrap();
        let text = MetricsState::encode(&state, Exposition::OpenMetrics);
        let rx = r#"{iface="veth0",direction="rx"}"#;
        assert_eq!(sample(&text, &format!("netmon_packets_total{rx}")), "25");
        assert_eq!(
            sample(&text, &format!("netmon_frame_bytes_total{rx}")),
            "2500"
        );
        assert_eq!(
            sample(
                &text,
                r#"netmon_protocol_packets_total{iface="veth0",direction="rx",protocol="udp"}"#
            ),
            "25"
        );
        assert_eq!(
            sample(
                &text,
                r#"netmon_tcp_flag_packets_total{iface="veth0",direction="rx",flag="syn"}"#
            ),
            "2"
        );
        assert_eq!(sample(&text, r#"netmon_flows{iface="veth0"}"#), "3");
        // Two intervals of interface counters, summed.
        assert_eq!(
            sample(
                &text,
                r#"netmon_interface_errors_total{iface="veth0",counter="rx_missed_errors"}"#
            ),
            "4"
        );
        assert_eq!(
            sample(&text, r#"netmon_xdp_attached{iface="veth0",mode="native"}"#),
            "1"
        );
        let t = r#"kind="icmp",target="192.0.2.1""#;
        // Two intervals of probes: 3 answered of 5 sent.
        assert_eq!(
            sample(&text, &format!("netmon_probe_sent_total{{{t}}}")),
            "5"
        );
        assert_eq!(
            sample(&text, &format!("netmon_probe_received_total{{{t}}}")),
            "3"
        );
        assert_eq!(
            sample(&text, &format!("netmon_probe_rtt_seconds_count{{{t}}}")),
            "3"
        );
        let sum: f64 = sample(&text, &format!("netmon_probe_rtt_seconds_sum{{{t}}}"))
            .parse()
            .unwrap();
        assert!((sum - 0.024).abs() < 1e-9, "{sum}");
        // Cumulative buckets: 1 ms and 3 ms by 5 ms, all three by 25 ms.
        assert_eq!(
            sample(
                &text,
                &format!("netmon_probe_rtt_seconds_bucket{{le=\"0.005\",{t}}}")
            ),
            "2"
        );
        assert_eq!(
            sample(
                &text,
                &format!("netmon_probe_rtt_seconds_bucket{{le=\"0.025\",{t}}}")
            ),
            "3"
        );
        assert_eq!(
            sample(
                &text,
                &format!("netmon_probe_rtt_seconds_bucket{{le=\"+Inf\",{t}}}")
            ),
            "3"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        // The classic format has the same samples, without the EOF marker.
        let classic = MetricsState::encode(&state, Exposition::Prometheus);
        assert_eq!(sample(&classic, &format!("netmon_packets_total{rx}")), "25");
        assert!(
            classic.contains("# HELP netmon_packets_total "),
            "{classic}"
        );
        assert!(!classic.contains("# EOF"));
    }

    #[test]
    fn passive_rtt_of_probe_targets_is_a_series_beside_theirs() {
        let state = Arc::new(Mutex::new(MetricsState::new("veth0", "native")));
        let mut sink = MetricsSink::new(Arc::clone(&state));
        sink.interval(&interval(10, vec![probe(&[1])])).unwrap();
        let text = MetricsState::encode(&state, Exposition::OpenMetrics);
        assert!(
            !text.contains("passive"),
            "no series without samples: {text}"
        );
        let passive = |samples, p50| RttStats {
            samples,
            min: 0.5,
            p50,
            p90: 2.0,
            p99: 4.0,
            max: 4.5,
        };
        let mut p = probe(&[1]);
        p.passive_rtt = Some(passive(12, 1.5));
        sink.interval(&interval(10, vec![p])).unwrap();
        // An interval without samples keeps the latest figures.
        sink.interval(&interval(10, vec![probe(&[1])])).unwrap();
        let mut p = probe(&[1]);
        p.passive_rtt = Some(passive(3, 2.5));
        sink.interval(&interval(10, vec![p.clone()])).unwrap();
        sink.interval(&interval(10, vec![probe(&[1])])).unwrap();
        let text = MetricsState::encode(&state, Exposition::OpenMetrics);
        let t = r#"kind="icmp",target="192.0.2.1""#;
        assert_eq!(
            sample(&text, &format!("netmon_passive_rtt_samples_total{{{t}}}")),
            "15"
        );
        assert_eq!(
            sample(
                &text,
                &format!("netmon_passive_rtt_seconds{{{t},percentile=\"0.5\"}}")
            ),
            "0.0025"
        );
        assert_eq!(
            sample(
                &text,
                &format!("netmon_passive_rtt_seconds{{{t},percentile=\"0.99\"}}")
            ),
            "0.004"
        );
        assert!(
            text.contains("# TYPE netmon_passive_rtt_seconds gauge"),
            "{text}"
        );
    }
}
