//! What the monitor and the probes produce, as plain data: every
//! interval's [`Interval`], a [`Link`] change, the end-of-run [`Summary`],
//! and the pieces they are made of. No rendering here (the sinks do it) and
//! no I/O; all owned and `Clone`, so a sink can keep the latest to serve
//! it later.
//!
//! [`Flow::new`] decodes a kernel flow key; `monitor::stats` makes the
//! other flow values ([`Rates::between`] two counter snapshots,
//! [`IntervalFlows`], [`FlowSummary`]); the probes fill [`ProbeStats`].

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use netmon_common::{
    Counters, DIR_TX, FlowKey, FlowValue, IP_V4, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

use super::latency::Latency;

/// One interval of the monitor.
#[derive(Clone, Debug)]
pub struct Interval {
    pub iface: String,
    /// Unix time at the end of the interval, in seconds.
    pub unix_time: f64,
    /// Traffic during the interval.
    pub rates: Rates,
    /// Every counter since the attach, at the end of the interval (an
    /// exporter serves these as monotonic counters).
    pub totals: Counters,
    /// What the counters counted during the interval (`totals` minus the
    /// totals of the interval before): packets by class, TCP flags, frame
    /// sizes, malformed.
    pub counts: Counters,
    /// The interface's own counters during the interval (its drops and
    /// errors among them), when sysfs has them.
    pub if_counters: Option<IfCounters>,
    /// What running the kernel programs cost during the interval, when
    /// the kernel's BPF run-time statistics are on (the live view turns
    /// them on).
    pub cost: Option<ProgramCost>,
    pub flows: IntervalFlows,
    /// The `--ping`/`--tcp` probes that finished during the interval, per
    /// target (`--ping` first); empty without probes.
    pub probes: Vec<ProbeStats>,
    /// What was transmitted (the egress program), as `rates`, `totals` and
    /// `counts` are for what was received; `None` when netmon counts
    /// ingress only (no TCX).
    pub tx: Option<Side>,
    /// Passive RTT of the interval: every (remote host, protocol) with
    /// samples, most samples first; `None` when passive RTT is not measured
    /// (no egress program), empty when it is and nothing was matched.
    pub passive_rtt: Option<Vec<HostRtt>>,
}

/// One direction's traffic in an [`Interval`].
#[derive(Clone, Copy, Debug)]
pub struct Side {
    pub rates: Rates,
    pub totals: Counters,
    pub counts: Counters,
}

/// A change of the watched interface's link state: administratively up and
/// with carrier, or not.
#[derive(Clone, Debug)]
pub struct Link {
    pub iface: String,
    /// Unix time of the notification, in seconds.
    pub unix_time: f64,
    pub up: bool,
}

/// Everything the end-of-run summary shows.
#[derive(Clone, Debug)]
pub struct Summary {
    pub iface: String,
    pub duration_s: f64,
    /// Final totals of what was received, read after the detach.
    pub counters: Counters,
    /// Final totals of what was transmitted; `None` when netmon counted
    /// ingress only.
    pub tx_counters: Option<Counters>,
    /// Distinct flows of the run (exact or estimated), the top flows
    /// (sorted and truncated), and what was dropped of retired flows.
    pub flows: FlowSummary,
    /// Adds to a kernel monotonic timestamp (a flow's first and last
    /// packet) to give Unix time in ns.
    pub mono_to_unix_ns: i128,
    /// Statistics of the `--ping`/`--tcp` probes since the start; empty
    /// without probes.
    pub probes: Vec<ProbeStats>,
    /// Passive RTT since the start; `None` when it was not measured.
    pub passive_rtt: Option<PassiveRttSummary>,
}

/// Which round trips a passive RTT sample timed: TCP (timestamps echoed,
/// the handshake) or ICMP/ICMPv6 echo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RttProto {
    Tcp,
    Icmp,
}

impl RttProto {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Icmp => "icmp",
        }
    }

    /// The round trips a probe of `kind` times too: `--ping` pairs with
    /// ICMP echo, `--tcp` with TCP.
    #[must_use]
    pub fn of_probe(kind: ProbeKind) -> Self {
        match kind {
            ProbeKind::Icmp => Self::Icmp,
            ProbeKind::Tcp => Self::Tcp,
        }
    }
}

/// Passive RTT samples of one span (an interval or the run), in
/// milliseconds: the count, min and max exact, the percentiles from a
/// histogram (within its precision, and inside [min, max]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RttStats {
    pub samples: u64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Passive RTT to one remote host over one protocol.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRtt {
    pub host: IpAddr,
    pub proto: RttProto,
    pub rtt: RttStats,
}

/// What the summary says about passive RTT.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassiveRttSummary {
    /// Every (host, protocol) kept, since the start, most samples first
    /// (its `min` is the path's base RTT).
    pub hosts: Vec<HostRtt>,
    /// Pending sends userspace deleted unanswered (older than
    /// `RTT_PENDING_TIMEOUT_NS`).
    pub pending_expired: u64,
    /// The most (host, protocol) pairs kept (beside the probe targets,
    /// always kept); past it the one with the fewest samples is dropped.
    pub hosts_kept: usize,
    /// Pairs dropped, and the samples they had: those samples are in no
    /// host's figures.
    pub hosts_dropped: u64,
    pub host_samples_dropped: u64,
    /// Conversations whose RTT was dropped (least recently sampled first)
    /// to make room: their flows show the RTT since they came back only.
    pub conversations_dropped: u64,
}

/// The flows of one interval, for sinks that follow each flow (IPFIX).
#[derive(Clone, Copy, Debug)]
pub struct FlowChanges<'a> {
    /// Flows that carried packets since the last call, with the packets,
    /// bytes and IP bytes of that time (first and last packet and TCP
    /// flags as in the flow's totals).
    pub changed: &'a [(FlowKey, FlowValue)],
    /// Flows removed from the table as idle, with their totals.
    pub removed: &'a [(FlowKey, FlowValue)],
    /// The run is over: no call follows (flows still in the table end).
    pub end: bool,
    /// Kernel monotonic time of the call, ns (the clock of first/last
    /// seen).
    pub now_ns: u64,
    /// Adds to kernel monotonic ns to give Unix time in ns.
    pub mono_to_unix_ns: i128,
}

/// One flow, decoded for people.
#[derive(Clone, Debug, PartialEq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// `DIR_RX` or `DIR_TX`.
    pub direction: u8,
    pub packets: u64,
    pub bytes: u64,
    /// Kernel monotonic time, ns.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub tcp_flags: u32,
    /// Passive RTT of the conversation (this flow and its reverse) over
    /// the same span as the counts, when it had samples; boxed, as most
    /// flows have none.
    pub rtt: Option<Box<RttStats>>,
}

impl Flow {
    /// A kernel flow key and its counts, decoded.
    #[must_use]
    pub fn new(key: &FlowKey, value: &FlowValue) -> Self {
        let addr = |a: [u8; 16]| -> IpAddr {
            if key.ip_version == IP_V4 {
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            } else {
                IpAddr::V6(Ipv6Addr::from(a))
            }
        };
        Flow {
            src: addr(key.src),
            dst: addr(key.dst),
            sport: u16::from_be(key.sport_be),
            dport: u16::from_be(key.dport_be),
            proto: key.proto,
            direction: key.direction,
            packets: value.packets,
            bytes: value.bytes,
            first_seen_ns: value.first_seen_ns,
            last_seen_ns: value.last_seen_ns,
            tcp_flags: value.tcp_flags,
            rtt: None,
        }
    }
}

impl Flow {
    /// Whether the protocol has ports (TCP, UDP).
    #[must_use]
    pub fn has_ports(&self) -> bool {
        matches!(self.proto, PROTO_TCP | PROTO_UDP)
    }
}

impl Flow {
    /// `rx` or `tx`.
    #[must_use]
    pub fn direction_name(&self) -> &'static str {
        direction_name(self.direction)
    }
}

/// `rx` for `DIR_RX`, `tx` for `DIR_TX`.
#[must_use]
pub fn direction_name(direction: u8) -> &'static str {
    if direction == DIR_TX { "tx" } else { "rx" }
}

/// `tcp`, `udp`, `icmp`, `icmpv6`, or `None` for other protocols (shown by
/// number).
#[must_use]
pub fn proto_name(proto: u8) -> Option<&'static str> {
    match proto {
        PROTO_TCP => Some("tcp"),
        PROTO_UDP => Some("udp"),
        PROTO_ICMP => Some("icmp"),
        PROTO_ICMPV6 => Some("icmpv6"),
        _ => None,
    }
}

/// Traffic during one interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rates {
    pub interval_s: f64,
    pub packets: u64,
    pub bytes: u64,
    pub pps: f64,
    /// Bits per second of L2 frames (FCS excluded).
    pub bps: f64,
    /// Share of the link's capacity in percent, wire overhead included;
    /// `None` when the link speed is unknown.
    pub util_pct: Option<f64>,
}

/// The flows of one interval.
#[derive(Clone, Debug, Default)]
pub struct IntervalFlows {
    /// Flows in the flow table at the end of the interval.
    pub in_table: usize,
    /// Flows that carried packets during the interval.
    pub active: usize,
    /// Top flows by bytes and by packets, counting this interval's traffic
    /// only.
    pub top_bytes: Vec<Flow>,
    pub top_packets: Vec<Flow>,
    /// Every flow that carried packets during the interval, with this
    /// interval's packets and bytes, in no order; empty unless a sink asked
    /// for them (`Sink::wants_every_flow`: the live view).
    pub every: Vec<Flow>,
}

/// The interface's own counters (`/sys/class/net/IF/statistics`), since
/// it came up or, in an [`Interval`], during the interval. The driver
/// counts them, beside and before XDP: `rx_dropped` and `rx_missed_errors`
/// show a NIC shedding packets netmon never saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_dropped: u64,
    pub rx_missed_errors: u64,
    pub rx_errors: u64,
    pub rx_fifo_errors: u64,
    pub rx_crc_errors: u64,
    pub rx_frame_errors: u64,
    pub rx_length_errors: u64,
    pub rx_over_errors: u64,
    pub tx_dropped: u64,
    pub tx_errors: u64,
}

impl IfCounters {
    /// The counters with their sysfs names, in this order (NDJSON keys).
    #[must_use]
    pub fn named(&self) -> [(&'static str, u64); 14] {
        [
            ("rx_packets", self.rx_packets),
            ("rx_bytes", self.rx_bytes),
            ("tx_packets", self.tx_packets),
            ("tx_bytes", self.tx_bytes),
            ("rx_dropped", self.rx_dropped),
            ("rx_missed_errors", self.rx_missed_errors),
            ("rx_errors", self.rx_errors),
            ("rx_fifo_errors", self.rx_fifo_errors),
            ("rx_crc_errors", self.rx_crc_errors),
            ("rx_frame_errors", self.rx_frame_errors),
            ("rx_length_errors", self.rx_length_errors),
            ("rx_over_errors", self.rx_over_errors),
            ("tx_dropped", self.tx_dropped),
            ("tx_errors", self.tx_errors),
        ]
    }

    /// Just the drop and error counters, with their names.
    #[must_use]
    pub fn drops_and_errors(&self) -> [(&'static str, u64); 10] {
        let n = self.named();
        std::array::from_fn(|i| n[i + 4])
    }

    /// `self - before`, field by field (a counter that went back, as when
    /// the driver resets, gives 0).
    #[must_use]
    pub fn minus(&self, before: &Self) -> Self {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Self {
            rx_packets: d(self.rx_packets, before.rx_packets),
            rx_bytes: d(self.rx_bytes, before.rx_bytes),
            tx_packets: d(self.tx_packets, before.tx_packets),
            tx_bytes: d(self.tx_bytes, before.tx_bytes),
            rx_dropped: d(self.rx_dropped, before.rx_dropped),
            rx_missed_errors: d(self.rx_missed_errors, before.rx_missed_errors),
            rx_errors: d(self.rx_errors, before.rx_errors),
            rx_fifo_errors: d(self.rx_fifo_errors, before.rx_fifo_errors),
            rx_crc_errors: d(self.rx_crc_errors, before.rx_crc_errors),
            rx_frame_errors: d(self.rx_frame_errors, before.rx_frame_errors),
            rx_length_errors: d(self.rx_length_errors, before.rx_length_errors),
            rx_over_errors: d(self.rx_over_errors, before.rx_over_errors),
            tx_dropped: d(self.tx_dropped, before.tx_dropped),
            tx_errors: d(self.tx_errors, before.tx_errors),
        }
    }

    /// Adds `more` (the next interval's counts), field by field.
    pub fn accumulate(&mut self, more: &Self) {
        let fields = [
            (&mut self.rx_packets, more.rx_packets),
            (&mut self.rx_bytes, more.rx_bytes),
            (&mut self.tx_packets, more.tx_packets),
            (&mut self.tx_bytes, more.tx_bytes),
            (&mut self.rx_dropped, more.rx_dropped),
            (&mut self.rx_missed_errors, more.rx_missed_errors),
            (&mut self.rx_errors, more.rx_errors),
            (&mut self.rx_fifo_errors, more.rx_fifo_errors),
            (&mut self.rx_crc_errors, more.rx_crc_errors),
            (&mut self.rx_frame_errors, more.rx_frame_errors),
            (&mut self.rx_length_errors, more.rx_length_errors),
            (&mut self.rx_over_errors, more.rx_over_errors),
            (&mut self.tx_dropped, more.tx_dropped),
            (&mut self.tx_errors, more.tx_errors),
        ];
        for (a, b) in fields {
            *a += b;
        }
    }
}

/// Time the kernel spent running netmon's programs, from its BPF run-time
/// statistics (`BPF_ENABLE_STATS`): since the load or, in an [`Interval`],
/// during the interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramCost {
    /// Nanoseconds in the programs, summed over CPUs.
    pub run_ns: u64,
    /// Runs of the programs (one per packet for XDP).
    pub runs: u64,
}

impl ProgramCost {
    /// Average nanoseconds per run; `None` without runs.
    #[must_use]
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_ns as f64 / self.runs as f64)
    }

    #[must_use]
    pub fn minus(&self, before: &Self) -> Self {
        Self {
            run_ns: self.run_ns.saturating_sub(before.run_ns),
            runs: self.runs.saturating_sub(before.runs),
        }
    }
}

/// What the summary says about flows.
#[derive(Clone, Debug)]
pub struct FlowSummary {
    /// The top flows by bytes, sorted.
    pub top: Vec<Flow>,
    /// Distinct flows of the run: in the table at the end or removed from
    /// it as idle before.
    pub tracked: u64,
    /// Whether `tracked` is exact (see `monitor::stats::DistinctFlows`).
    pub tracked_exact: bool,
    /// Retired flows kept for the summary at most.
    pub retired_kept: usize,
    /// Retired flows' records the summary dropped (their packets are in
    /// the totals, not in per-flow counts), and the most bytes one of them
    /// had.
    pub retired_dropped: u64,
    pub retired_dropped_max_bytes: u64,
}

/// What a probe measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProbeKind {
    /// ICMP or ICMPv6 echo.
    Icmp,
    /// TCP connect (SYN to SYN-ACK, as the caller sees it).
    Tcp,
}

impl ProbeKind {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Icmp => "icmp",
            Self::Tcp => "tcp",
        }
    }
}

/// Counts and latency of one probe target (`netmon ping`, or a
/// `--ping`/`--tcp` target of the monitor over an interval or the run).
#[derive(Clone, Debug)]
pub struct ProbeStats {
    pub kind: ProbeKind,
    /// As the user wrote it.
    pub target: String,
    pub addr: Option<IpAddr>,
    /// TCP only.
    pub port: Option<u16>,
    /// Probes sent whose outcome is known (answered or timed out).
    pub sent: u64,
    /// Probes that could not be sent at all (no route, refused locally).
    pub not_sent: u64,
    /// Why the last probe that could not be sent failed.
    pub error: Option<String>,
    pub received: u64,
    pub duplicates: u64,
    pub late: u64,
    pub latency: Latency,
    /// The monitor's probes: passive RTT of real traffic to the same
    /// address and protocol ([`RttProto::of_probe`]) over the same span;
    /// `None` without samples (or outside the monitor).
    pub passive_rtt: Option<RttStats>,
}

impl ProbeStats {
    #[must_use]
    pub fn new(kind: ProbeKind, target: &str, addr: Option<IpAddr>, port: Option<u16>) -> Self {
        Self {
            kind,
            target: target.to_owned(),
            addr,
            port,
            sent: 0,
            not_sent: 0,
            error: None,
            received: 0,
            duplicates: 0,
            late: 0,
            latency: Latency::new(),
            passive_rtt: None,
        }
    }

    /// One outcome: the RTT, or `None` for a probe that got no answer in time.
    pub fn record(&mut self, rtt: Option<Duration>) {
        self.sent += 1;
        if let Some(rtt) = rtt {
            self.received += 1;
            self.latency.record(rtt);
        }
    }

    /// A probe that never left this host, and why.
    pub fn record_not_sent(&mut self, reason: &str) {
        self.not_sent += 1;
        if self.error.as_deref() != Some(reason) {
            self.error = Some(reason.to_owned());
        }
    }

    /// Share of the sent probes that got no answer (0 when none was sent).
    #[must_use]
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            (self.sent - self.received) as f64 * 100.0 / self.sent as f64
        }
    }
}
