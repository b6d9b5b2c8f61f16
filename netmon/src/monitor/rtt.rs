//! Passive RTT of real traffic: the samples the kernel matched (a sent
//! packet timed by the packet that answered it, see `RTT_PENDING_MAP` in
//! netmon-common), per remote host and protocol and per conversation, per
//! interval and since the start. Pure: samples in, report values out.
//!
//! Each span keeps a count, the exact min and max (ns), and its samples in
//! µs: the first [`FEW`] as they are (exact percentiles, no allocation),
//! then in an hdrhistogram from 1 µs to [`HIGHEST_US`] (16.8 s; the
//! kernel's pending entries are deleted after 10 s, so no sample comes near
//! it, and a longer one is counted there): 3 significant digits per host
//! (a sample is exact up to 2,048 µs and within 0.1% above), 2 per
//! conversation (exact up to 256 µs, within 1% above). A sample goes into
//! its interval's figures only; they join the run's when the interval ends.
//!
//! Cost per sample (indicative, AMD EPYC KVM guest shared with other
//! builds): about 0.4-0.5 µs with the hosts and conversations kept (two
//! hash lookups and a histogram's counter, most of it cache misses), about
//! 1-1.6 µs when every sample brings a new host past the bound (choosing
//! the one to drop reads every pair's count).
//!
//! Memory is bounded whatever the traffic: at most [`MAX_HOSTS`] (remote
//! host, protocol) pairs beside the probe targets (pinned: always kept),
//! and [`MAX_CONVERSATIONS`] conversations. A pair past the bound replaces
//! the kept pair with the fewest samples since the start (the least
//! recently sampled among equals); a conversation past it replaces the
//! least recently sampled one. What is dropped is counted (the summary's
//! `passive_rtt_*_dropped`). Each histogram grows with the largest sample
//! it holds ([`Histogram::new`] resizes itself); at most, with a sample
//! above 8.4 s, a pair costs [`HOST_MAX_BYTES`] (about 180 KiB) and a
//! conversation [`CONVERSATION_MAX_BYTES`] (27 KiB), so the whole is at
//! most 128 × 180 KiB + 512 × 27 KiB ≈ 36 MiB plus 180 KiB per probe
//! target; with every sample below 8.2 ms, 48 KiB and 10.5 KiB, ≈ 11 MiB.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use hdrhistogram::{Counter, Histogram};
use netmon_common::{
    DIR_TX, FlowValue, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, RTT_ICMP_ECHO, RTT_TCP_SYN,
    RTT_TCP_SYNACK, RTT_TCP_TS, RttSample,
};

use crate::report::{Flow, HostRtt, PassiveRttSummary, ProbeStats, RttProto, RttStats};

/// (Remote host, protocol) pairs kept, beside the probe targets.
pub const MAX_HOSTS: usize = 128;
/// Conversations kept.
pub const MAX_CONVERSATIONS: usize = 512;
/// The longest RTT a histogram holds, in µs (2^24 - 1, 16.8 s).
pub const HIGHEST_US: u64 = (1 << 24) - 1;
const HOST_DIGITS: u8 = 3;
const CONVERSATION_DIGITS: u8 = 2;

/// The most counters a histogram of `digits` significant digits holds
/// with samples up to [`HIGHEST_US`]: hdrhistogram keeps
/// `2^⌈log2(2·10^digits)⌉ / 2` of them per power of two of the range, for
/// 15 powers (3 digits: 1,024 each) or 18 (2 digits: 128 each).
const fn max_counters(digits: u8) -> usize {
    match digits {
        3 => 15 * 1024,
        _ => 18 * 128,
    }
}

/// What a (host, protocol) pair costs at most: both histograms at their
/// largest (`u64` counts since the start, `u32` for the interval); its
/// bookkeeping (map entry, counts) adds about 200 bytes.
pub const HOST_MAX_BYTES: usize = max_counters(HOST_DIGITS) * (8 + 4);
/// What a conversation costs at most.
pub const CONVERSATION_MAX_BYTES: usize = max_counters(CONVERSATION_DIGITS) * (8 + 4);

/// The span of a figure: the current interval, or the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    Interval,
    Run,
}

/// Samples a span keeps as they are before it makes a histogram: a new
/// key costs no allocation (conversations that come and go, past the
/// bound, churn through the table without one), and few samples give
/// exact percentiles.
const FEW: usize = 8;

/// Where a span's samples go: as they are (µs), or, past [`FEW`], into a
/// histogram of µs.
#[derive(Clone, Debug)]
enum Store<T: Counter> {
    Few { len: usize, us: [u32; FEW] },
    Hist(Histogram<T>),
}

/// The samples of one span.
#[derive(Clone, Debug)]
struct Dist<T: Counter> {
    store: Store<T>,
    digits: u8,
    count: u64,
    min_ns: u64,
    max_ns: u64,
}

/// The nearest rank of quantile `p` among `n` samples (1-based), as
/// hdrhistogram counts it.
fn rank(p: f64, n: usize) -> usize {
    ((p * n as f64).ceil() as usize).clamp(1, n)
}

impl<T: Counter> Dist<T> {
    fn new(digits: u8) -> Self {
        Self {
            store: Store::Few {
                len: 0,
                us: [0; FEW],
            },
            digits,
            count: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }

    fn record(&mut self, ns: u64) {
        let us = (ns.saturating_add(500) / 1000).clamp(1, HIGHEST_US);
        self.record_us(us);
        self.count += 1;
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// Keeps one sample of `us` (the count, min and max are the caller's).
    fn record_us(&mut self, us: u64) {
        match &mut self.store {
            Store::Few { len, us: few } if *len < FEW => {
                // At most HIGHEST_US: fits.
                few[*len] = us as u32;
                *len += 1;
            }
            // Within the range a self-resizing histogram takes: recording
            // cannot fail.
            _ => {
                let _ = self.hist().record(us);
            }
        }
    }

    /// The histogram, made from the samples kept as they are if there is
    /// none yet.
    fn hist(&mut self) -> &mut Histogram<T> {
        if let Store::Few { len, us } = &self.store {
            let mut hist =
                Histogram::new(self.digits).expect("1 to 5 significant digits are valid");
            for &v in &us[..*len] {
                let _ = hist.record(u64::from(v));
            }
            self.store = Store::Hist(hist);
        }
        let Store::Hist(hist) = &mut self.store else {
            unreachable!("made above");
        };
        hist
    }

    /// Empties it, keeping the memory.
    fn clear(&mut self) {
        if self.count > 0 {
            match &mut self.store {
                Store::Few { len, .. } => *len = 0,
                Store::Hist(hist) => hist.clear(),
            }
            (self.count, self.min_ns, self.max_ns) = (0, u64::MAX, 0);
        }
    }

    /// Counters its histogram holds (0 without one).
    #[cfg(test)]
    fn counters(&self) -> usize {
        match &self.store {
            Store::Few { .. } => 0,
            Store::Hist(hist) => hist.distinct_values(),
        }
    }

    /// `None` without samples.
    fn stats(&self) -> Option<RttStats> {
        if self.count == 0 {
            return None;
        }
        let (min, max) = (self.min_ns as f64 / 1e6, self.max_ns as f64 / 1e6);
        let [p50, p90, p99] = match &self.store {
            Store::Few { len, us } => {
                let mut sorted = *us;
                sorted[..*len].sort_unstable();
                [0.5, 0.9, 0.99].map(|p| f64::from(sorted[rank(p, *len) - 1]))
            }
            // The highest value of the quantile's bucket (hdrhistogram's
            // and the probes' convention).
            Store::Hist(hist) => [0.5, 0.9, 0.99].map(|p| hist.value_at_quantile(p) as f64),
        };
        // µs to ms, inside [min, max].
        let ms = |us: f64| (us / 1e3).clamp(min, max);
        Some(RttStats {
            samples: self.count,
            min,
            p50: ms(p50),
            p90: ms(p90),
            p99: ms(p99),
            max,
        })
    }
}

impl Dist<u64> {
    /// Adds `other`'s samples (a later span of the same key), as if each
    /// had been recorded here; a histogram's in one pass over its counters.
    fn merge<U: Counter>(&mut self, other: &Dist<U>) {
        if other.count == 0 {
            return;
        }
        match &other.store {
            Store::Few { len, us } => {
                for &v in &us[..*len] {
                    self.record_us(u64::from(v));
                }
            }
            Store::Hist(theirs) => {
                let ours = self.hist();
                for v in theirs.iter_recorded() {
                    // The highest value of the bucket: the same bucket here
                    // (same digits).
                    let _ = ours.record_n(v.value_iterated_to(), v.count_at_value().as_u64());
                }
            }
        }
        self.count += other.count;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }
}

/// The samples of one key, per interval and since the start. A sample
/// goes into the interval's figures only, which join the run's when the
/// interval ends: one histogram touched per sample (a cache miss each,
/// with hundreds of keys), the merge a pass over the interval's counters.
#[derive(Clone, Debug)]
struct Rtts {
    interval: Dist<u32>,
    /// Every interval before the current one.
    run: Dist<u64>,
    /// The sequence number of its last sample (recency).
    last: u64,
}

impl Rtts {
    fn new(digits: u8) -> Self {
        Self {
            interval: Dist::new(digits),
            run: Dist::new(digits),
            last: 0,
        }
    }

    fn record(&mut self, ns: u64, seq: u64) {
        self.interval.record(ns);
        self.last = seq;
    }

    fn end_interval(&mut self) {
        self.run.merge(&self.interval);
        self.interval.clear();
    }

    fn stats(&self, span: Span) -> Option<RttStats> {
        match span {
            Span::Interval => self.interval.stats(),
            Span::Run if self.interval.count == 0 => self.run.stats(),
            // Mid-interval (tests; the summary ends the interval first).
            Span::Run => {
                let mut all = self.run.clone();
                all.merge(&self.interval);
                all.stats()
            }
        }
    }
}

/// A (host, protocol) pair: what choosing the one to drop reads, inline
/// (a pass over the map's few bytes per pair), the figures boxed.
struct HostEntry {
    /// Samples since the start, and the sequence number of the last.
    samples: u64,
    last: u64,
    /// A probe target's: never dropped.
    pinned: bool,
    rtts: Box<Rtts>,
}

impl HostEntry {
    fn new(pinned: bool) -> Self {
        Self {
            samples: 0,
            last: 0,
            pinned,
            rtts: Box::new(Rtts::new(HOST_DIGITS)),
        }
    }

    fn record(&mut self, ns: u64, seq: u64) {
        self.samples += 1;
        self.last = seq;
        self.rtts.record(ns, seq);
    }
}

/// Both directions of one exchange, from this host's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Conversation {
    proto: u8,
    local: IpAddr,
    lport: u16,
    remote: IpAddr,
    rport: u16,
}

impl Conversation {
    /// A transmitted flow goes from this host, a received one to it.
    fn of(f: &Flow) -> Self {
        let (local, lport, remote, rport) = if f.direction == DIR_TX {
            (f.src, f.sport, f.dst, f.dport)
        } else {
            (f.dst, f.dport, f.src, f.sport)
        };
        Self {
            proto: f.proto,
            local: local.to_canonical(),
            lport,
            remote: remote.to_canonical(),
            rport,
        }
    }
}

/// Which protocol a sample times: by its kind, else by the IP protocol;
/// `None` for neither TCP nor ICMP (no such sample comes from netmon's
/// program).
#[expect(
    clippy::match_same_arms,
    reason = "the kind decides first, the IP protocol only without one"
)]
fn proto_of(s: &RttSample) -> Option<RttProto> {
    match (s.flow.pad, s.flow.proto) {
        (RTT_TCP_TS | RTT_TCP_SYN | RTT_TCP_SYNACK, _) => Some(RttProto::Tcp),
        (RTT_ICMP_ECHO, _) => Some(RttProto::Icmp),
        (_, PROTO_TCP) => Some(RttProto::Tcp),
        (_, PROTO_ICMP | PROTO_ICMPV6) => Some(RttProto::Icmp),
        _ => None,
    }
}

/// Passive RTT per (remote host, protocol) and per conversation, bounded
/// (see the module doc).
pub struct RttTable {
    hosts: HashMap<(IpAddr, RttProto), HostEntry>,
    /// Hosts in `hosts` that are not pinned.
    unpinned: usize,
    conversations: HashMap<Conversation, Rtts>,
    /// Conversations by the sequence number of their last sample.
    lru: BTreeMap<u64, Conversation>,
    /// Samples taken, as sequence numbers.
    seq: u64,
    max_hosts: usize,
    max_conversations: usize,
    hosts_dropped: u64,
    host_samples_dropped: u64,
    conversations_dropped: u64,
}

impl RttTable {
    /// A table of at most [`MAX_HOSTS`] pairs and [`MAX_CONVERSATIONS`]
    /// conversations that always keeps `pinned` (the probe targets).
    #[must_use]
    pub fn new(pinned: impl IntoIterator<Item = (IpAddr, RttProto)>) -> Self {
        Self::with_bounds(pinned, MAX_HOSTS, MAX_CONVERSATIONS)
    }

    /// As [`Self::new`], with other bounds (tests).
    #[must_use]
    pub fn with_bounds(
        pinned: impl IntoIterator<Item = (IpAddr, RttProto)>,
        max_hosts: usize,
        max_conversations: usize,
    ) -> Self {
        let hosts = pinned
            .into_iter()
            .map(|(host, proto)| ((host.to_canonical(), proto), HostEntry::new(true)))
            .collect();
        Self {
            hosts,
            unpinned: 0,
            conversations: HashMap::new(),
            lru: BTreeMap::new(),
            seq: 0,
            max_hosts: max_hosts.max(1),
            max_conversations: max_conversations.max(1),
            hosts_dropped: 0,
            host_samples_dropped: 0,
            conversations_dropped: 0,
        }
    }

    /// Adds samples (in the order the kernel sent them).
    pub fn add(&mut self, samples: &[RttSample]) {
        for s in samples {
            self.add_one(s);
        }
    }

    fn add_one(&mut self, s: &RttSample) {
        let Some(proto) = proto_of(s) else {
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        // The sent packet's flow: from this host to the remote one.
        let sent = Flow {
            direction: DIR_TX,
            ..Flow::new(&s.flow, &FlowValue::default())
        };
        let conversation = Conversation::of(&sent);
        let ns = s.rtt_ns;
        let key = (conversation.remote, proto);
        if let Some(h) = self.hosts.get_mut(&key) {
            h.record(ns, seq);
        } else {
            if self.unpinned >= self.max_hosts {
                self.drop_host();
            }
            let mut h = HostEntry::new(false);
            h.record(ns, seq);
            self.hosts.insert(key, h);
            self.unpinned += 1;
        }
        if let Some(c) = self.conversations.get_mut(&conversation) {
            self.lru.remove(&c.last);
            c.record(ns, seq);
        } else {
            if self.conversations.len() >= self.max_conversations
                && let Some((_, oldest)) = self.lru.pop_first()
            {
                self.conversations.remove(&oldest);
                self.conversations_dropped += 1;
            }
            let mut rtts = Rtts::new(CONVERSATION_DIGITS);
            rtts.record(ns, seq);
            self.conversations.insert(conversation, rtts);
        }
        self.lru.insert(seq, conversation);
    }

    /// Drops the unpinned pair with the fewest samples since the start,
    /// the least recently sampled of those.
    fn drop_host(&mut self) {
        let victim = self
            .hosts
            .iter()
            .filter(|(_, h)| !h.pinned)
            .min_by_key(|(_, h)| (h.samples, h.last))
            .map(|(k, _)| *k);
        if let Some(k) = victim
            && let Some(h) = self.hosts.remove(&k)
        {
            self.unpinned -= 1;
            self.hosts_dropped += 1;
            self.host_samples_dropped += h.samples;
        }
    }

    /// The pairs with samples in the interval, most samples first.
    #[must_use]
    pub fn interval_hosts(&self) -> Vec<HostRtt> {
        self.hosts_with(Span::Interval)
    }

    fn hosts_with(&self, span: Span) -> Vec<HostRtt> {
        let mut v: Vec<HostRtt> = self
            .hosts
            .iter()
            .filter_map(|(&(host, proto), h)| {
                Some(HostRtt {
                    host,
                    proto,
                    rtt: h.rtts.stats(span)?,
                })
            })
            .collect();
        v.sort_by(|a, b| {
            b.rtt
                .samples
                .cmp(&a.rtt.samples)
                .then_with(|| (a.host, a.proto).cmp(&(b.host, b.proto)))
        });
        v
    }

    /// Passive RTT to `host` over `proto` in `span`; `None` without
    /// samples.
    #[must_use]
    pub fn host(&self, host: IpAddr, proto: RttProto, span: Span) -> Option<RttStats> {
        self.hosts
            .get(&(host.to_canonical(), proto))?
            .rtts
            .stats(span)
    }

    /// Passive RTT of the conversation `flow` belongs to (either
    /// direction) in `span`; `None` without samples.
    #[must_use]
    pub fn conversation(&self, flow: &Flow, span: Span) -> Option<RttStats> {
        self.conversations.get(&Conversation::of(flow))?.stats(span)
    }

    /// Gives each flow its conversation's RTT in `span` (none without
    /// samples).
    pub fn annotate_flows(&self, flows: &mut [Flow], span: Span) {
        if self.conversations.is_empty() {
            return;
        }
        for f in flows {
            f.rtt = self.conversation(f, span).map(Box::new);
        }
    }

    /// Gives each probe target the passive RTT of its address and
    /// protocol in `span`: side by side with what the probe measured over
    /// the same span.
    pub fn annotate_probes(&self, probes: &mut [ProbeStats], span: Span) {
        for p in probes {
            p.passive_rtt = p
                .addr
                .and_then(|a| self.host(a, RttProto::of_probe(p.kind), span));
        }
    }

    /// Ends the interval: its samples join the run's, and the interval
    /// figures go back to none. Costs a pass over the counters of each
    /// key that had samples.
    pub fn end_interval(&mut self) {
        for h in self.hosts.values_mut() {
            h.rtts.end_interval();
        }
        for c in self.conversations.values_mut() {
            c.end_interval();
        }
    }

    /// The summary's figures, with `pending_expired` (counted by the
    /// caller).
    #[must_use]
    pub fn summary(&self, pending_expired: u64) -> PassiveRttSummary {
        PassiveRttSummary {
            hosts: self.hosts_with(Span::Run),
            pending_expired,
            hosts_kept: self.max_hosts,
            hosts_dropped: self.hosts_dropped,
            host_samples_dropped: self.host_samples_dropped,
            conversations_dropped: self.conversations_dropped,
        }
    }

    /// Pairs and conversations kept now (tests, memory).
    #[must_use]
    pub fn len(&self) -> (usize, usize) {
        (self.hosts.len(), self.conversations.len())
    }

    /// Whether no sample was kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }
}

#[cfg(test)]
#[expect(
    clippy::float_cmp,
    reason = "min and max are exact: whole ns over 1e6, the same rounding as the literals"
)]
mod tests {
    use netmon_common::{FlowKey, IP_V4, IP_V6};

    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    /// A sample of `kind` sent from 198.51.100.1:`lport` to
    /// 198.51.100.`host`:`rport` over `proto`.
    fn sample(host: u8, proto: u8, kind: u8, ports: (u16, u16), rtt_us: u64) -> RttSample {
        RttSample {
            flow: FlowKey {
                src: v4([198, 51, 100, 1]),
                dst: v4([198, 51, 100, host]),
                sport_be: ports.0.to_be(),
                dport_be: ports.1.to_be(),
                proto,
                ip_version: IP_V4,
                direction: DIR_TX,
                pad: kind,
            },
            rtt_ns: rtt_us * 1000,
        }
    }

    fn tcp(host: u8, rtt_us: u64) -> RttSample {
        sample(host, PROTO_TCP, RTT_TCP_TS, (40000, 80), rtt_us)
    }

    fn addr(host: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, host])
    }

    #[test]
    fn percentiles_of_known_samples_are_exact_below_2048_us() {
        let mut t = RttTable::new([]);
        // 1..=1000 µs in a scrambled order: p50 500, p90 900, p99 990.
        let samples: Vec<RttSample> = (0..1000u64)
            .map(|i| tcp(2, (i * 7919) % 1000 + 1))
            .collect();
        t.add(&samples);
        let s = t.host(addr(2), RttProto::Tcp, Span::Interval).unwrap();
        assert_eq!(
            s,
            RttStats {
                samples: 1000,
                min: 0.001,
                p50: 0.5,
                p90: 0.9,
                p99: 0.99,
                max: 1.0
            }
        );
        assert_eq!(t.host(addr(2), RttProto::Tcp, Span::Run), Some(s));
        assert_eq!(t.host(addr(2), RttProto::Icmp, Span::Run), None);
        assert_eq!(t.host(addr(3), RttProto::Tcp, Span::Run), None);
    }

    #[test]
    fn few_samples_are_exact_and_more_go_to_the_histogram() {
        let ns = |v: u64| RttSample {
            rtt_ns: v,
            ..tcp(2, 0)
        };
        let mut t = RttTable::new([]);
        t.add(&[ns(12_345_678), ns(5_000_123), ns(7_500_000)]);
        let s = t.host(addr(2), RttProto::Tcp, Span::Run).unwrap();
        // Nearest rank of three: the 2nd, then the 3rd (µs, inside max).
        assert_eq!(
            (s.samples, s.min, s.p50, s.p90, s.p99, s.max),
            (3, 5.000_123, 7.5, 12.345_678, 12.345_678, 12.345_678)
        );
        // The ninth sample moves them all into the histogram: the same
        // figures, within its precision.
        t.add(&[ns(7_500_000); FEW - 2]);
        let h = &t.hosts[&(addr(2), RttProto::Tcp)].rtts;
        assert!(h.interval.counters() > 0);
        let s = t.host(addr(2), RttProto::Tcp, Span::Run).unwrap();
        assert_eq!((s.samples, s.min, s.max), (9, 5.000_123, 12.345_678));
        assert!((s.p50 - 7.5).abs() / 7.5 < 1e-3, "{s:?}");
        assert!((s.p99 - 12.345_678).abs() < 1e-9, "{s:?}");
        // The next interval starts empty (the histogram kept, cleared).
        t.end_interval();
        t.add(&[ns(2_000_000)]);
        let i = t.host(addr(2), RttProto::Tcp, Span::Interval).unwrap();
        assert_eq!((i.samples, i.p50, i.p99), (1, 2.0, 2.0));
    }

    #[test]
    fn larger_samples_are_within_a_thousandth_and_min_max_exact() {
        let mut t = RttTable::new([]);
        // 5.000123 ms .. 24.800123 ms in steps of 0.2 ms, ns precision.
        let samples: Vec<RttSample> = (0..100u64)
            .map(|i| RttSample {
                rtt_ns: 5_000_123 + i * 200_000,
                ..tcp(2, 0)
            })
            .collect();
        t.add(&samples);
        let s = t.host(addr(2), RttProto::Tcp, Span::Run).unwrap();
        assert_eq!((s.samples, s.min, s.max), (100, 5.000_123, 24.800_123));
        // Nearest rank: the 50th, 90th and 99th samples.
        for (got, want) in [
            (s.p50, 14.800_123),
            (s.p90, 22.800_123),
            (s.p99, 24.600_123),
        ] {
            assert!(
                got >= want - 0.001 && (got - want) / want < 1e-3,
                "{got} vs {want}"
            );
        }
        // The conversation's histogram has 2 digits: within 1%.
        let flow = Flow {
            direction: DIR_TX,
            ..Flow::new(&samples[0].flow, &FlowValue::default())
        };
        let c = t.conversation(&flow, Span::Run).unwrap();
        assert_eq!((c.samples, c.min, c.max), (100, 5.000_123, 24.800_123));
        assert!((c.p50 - 14.800_123).abs() / 14.8 < 1e-2, "{c:?}");
    }

    #[test]
    fn kinds_and_protocols_make_two_pairs_per_host() {
        let mut t = RttTable::new([]);
        t.add(&[
            sample(2, PROTO_TCP, RTT_TCP_SYN, (40000, 80), 300),
            sample(2, PROTO_TCP, RTT_TCP_SYNACK, (80, 40000), 200),
            sample(2, PROTO_TCP, RTT_TCP_TS, (40000, 80), 100),
            sample(2, PROTO_ICMP, RTT_ICMP_ECHO, (0, 0), 50),
            // No kind: the IP protocol decides. UDP is nothing.
            sample(2, PROTO_ICMPV6, 0, (0, 0), 70),
            sample(2, 17, 0, (5000, 53), 10),
        ]);
        let hosts = t.interval_hosts();
        let got: Vec<(IpAddr, RttProto, u64)> = hosts
            .iter()
            .map(|h| (h.host, h.proto, h.rtt.samples))
            .collect();
        assert_eq!(
            got,
            [(addr(2), RttProto::Tcp, 3), (addr(2), RttProto::Icmp, 2)]
        );
        assert_eq!(hosts[1].rtt.min, 0.05);
        assert_eq!(hosts[1].rtt.max, 0.07);
    }

    #[test]
    fn a_conversation_is_both_directions_of_a_flow() {
        let mut t = RttTable::new([]);
        // Exact in a conversation's histogram: below 256 µs.
        t.add(&[tcp(2, 100), tcp(2, 250)]);
        // Another connection to the same host.
        t.add(&[sample(2, PROTO_TCP, RTT_TCP_TS, (40001, 80), 70)]);
        let tx = Flow {
            direction: DIR_TX,
            ..Flow::new(&tcp(2, 0).flow, &FlowValue::default())
        };
        let rx = Flow {
            src: tx.dst,
            dst: tx.src,
            sport: tx.dport,
            dport: tx.sport,
            direction: netmon_common::DIR_RX,
            ..tx.clone()
        };
        let want = RttStats {
            samples: 2,
            min: 0.1,
            p50: 0.1,
            p90: 0.25,
            p99: 0.25,
            max: 0.25,
        };
        assert_eq!(t.conversation(&tx, Span::Interval), Some(want));
        assert_eq!(t.conversation(&rx, Span::Interval), Some(want));
        // The same addresses the other way round are another conversation.
        let wrong_way = Flow {
            direction: netmon_common::DIR_RX,
            ..tx.clone()
        };
        assert_eq!(t.conversation(&wrong_way, Span::Run), None);
        assert_eq!(
            t.host(addr(2), RttProto::Tcp, Span::Run).unwrap().samples,
            3
        );
    }

    #[test]
    fn intervals_start_empty_and_the_run_keeps_everything() {
        let mut t = RttTable::new([]);
        t.add(&[tcp(2, 100), tcp(3, 200)]);
        t.end_interval();
        assert!(t.interval_hosts().is_empty());
        t.add(&[tcp(3, 400), tcp(3, 600)]);
        let i = t.interval_hosts();
        assert_eq!(i.len(), 1);
        assert_eq!(
            (i[0].host, i[0].rtt.samples, i[0].rtt.min),
            (addr(3), 2, 0.4)
        );
        let s = t.summary(7);
        assert_eq!(s.pending_expired, 7);
        let run: Vec<(IpAddr, u64)> = s.hosts.iter().map(|h| (h.host, h.rtt.samples)).collect();
        assert_eq!(run, [(addr(3), 3), (addr(2), 1)]);
        assert_eq!(s.hosts[0].rtt.min, 0.2);
        assert_eq!((s.hosts_dropped, s.conversations_dropped), (0, 0));
    }

    #[test]
    fn the_run_is_every_interval_merged() {
        // 1..=3000 µs scrambled, in intervals of 1, 7 and 2992 samples
        // (kept as they are, then histograms), against all in one.
        let all: Vec<RttSample> = (0..3000u64)
            .map(|i| tcp(2, (i * 7919) % 3000 + 1))
            .collect();
        let mut split = RttTable::new([]);
        for part in [&all[..1], &all[1..8], &all[8..]] {
            split.add(part);
            split.end_interval();
        }
        let mut whole = RttTable::new([]);
        whole.add(&all);
        let mid_interval = whole.host(addr(2), RttProto::Tcp, Span::Run);
        whole.end_interval();
        let want = whole.host(addr(2), RttProto::Tcp, Span::Run);
        assert_eq!(split.host(addr(2), RttProto::Tcp, Span::Run), want);
        assert_eq!(mid_interval, want);
        let want = want.unwrap();
        assert_eq!((want.samples, want.min, want.max), (3000, 0.001, 3.0));
        // 1500 and 2700 are above 2048 µs: within 0.1%.
        assert!((want.p50 - 1.5).abs() / 1.5 < 1e-3, "{want:?}");
        assert!((want.p90 - 2.7).abs() / 2.7 < 1e-3, "{want:?}");
        let conv = |t: &RttTable| {
            let flow = Flow {
                direction: DIR_TX,
                ..Flow::new(&all[0].flow, &FlowValue::default())
            };
            t.conversation(&flow, Span::Run)
        };
        assert_eq!(conv(&split), conv(&whole));
    }

    #[test]
    fn hosts_past_the_bound_replace_the_one_with_fewest_samples() {
        let pinned = addr(200);
        let mut t = RttTable::with_bounds([(pinned, RttProto::Icmp)], 3, 100);
        // Hosts 1-3 with 3, 2 and 1 samples; the probe target with 1.
        t.add(&[
            tcp(1, 10),
            tcp(1, 10),
            tcp(1, 10),
            tcp(2, 10),
            tcp(2, 10),
            tcp(3, 10),
        ]);
        t.add(&[sample(200, PROTO_ICMP, RTT_ICMP_ECHO, (0, 0), 10)]);
        assert_eq!(t.len().0, 4);
        // Host 4 takes host 3's place; host 5 then takes host 4's (one
        // sample each, host 4 the least recent).
        t.add(&[tcp(4, 10), tcp(5, 10)]);
        assert_eq!(t.len().0, 4, "3 hosts and the pinned target");
        let s = t.summary(0);
        let kept: Vec<(IpAddr, u64)> = s.hosts.iter().map(|h| (h.host, h.rtt.samples)).collect();
        assert_eq!(
            kept,
            [(addr(1), 3), (addr(2), 2), (addr(5), 1), (pinned, 1)]
        );
        assert_eq!((s.hosts_dropped, s.host_samples_dropped), (2, 2));
        assert_eq!(s.hosts_kept, 3);
        // The pinned target is never dropped, even with no sample at all.
        let mut t = RttTable::with_bounds([(pinned, RttProto::Tcp)], 1, 100);
        t.add(&[tcp(1, 10), tcp(2, 10), tcp(3, 10)]);
        assert_eq!(t.len().0, 2);
        assert!(t.hosts.contains_key(&(pinned, RttProto::Tcp)));
        assert_eq!(t.summary(0).hosts_dropped, 2);
    }

    #[test]
    fn conversations_past_the_bound_drop_the_least_recently_sampled() {
        let mut t = RttTable::with_bounds([], 100, 2);
        let conv = |port: u16, us: u64| sample(2, PROTO_TCP, RTT_TCP_TS, (port, 80), us);
        t.add(&[conv(1, 10), conv(2, 20), conv(1, 30)]);
        // Port 2 is the least recent: port 3 takes its place.
        t.add(&[conv(3, 40)]);
        assert_eq!(t.len().1, 2);
        let flow = |port: u16| Flow {
            direction: DIR_TX,
            ..Flow::new(&conv(port, 0).flow, &FlowValue::default())
        };
        assert_eq!(t.conversation(&flow(1), Span::Run).unwrap().samples, 2);
        assert_eq!(t.conversation(&flow(2), Span::Run), None);
        assert_eq!(t.conversation(&flow(3), Span::Run).unwrap().samples, 1);
        assert_eq!(t.summary(0).conversations_dropped, 1);
        // Many more: the bound holds, the index with it.
        let many: Vec<RttSample> = (10..1010).map(|p| conv(p, 10)).collect();
        t.add(&many);
        assert_eq!(t.len().1, 2);
        assert_eq!(t.lru.len(), 2);
        assert_eq!(t.summary(0).conversations_dropped, 1001);
        // The host saw every sample all along.
        assert_eq!(
            t.host(addr(2), RttProto::Tcp, Span::Run).unwrap().samples,
            1004
        );
    }

    #[test]
    fn ipv6_hosts_print_canonically_and_probe_targets_match_mapped_addresses() {
        let mut key = tcp(2, 0).flow;
        key.ip_version = IP_V6;
        key.src = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        key.dst = "2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let mut t = RttTable::new([]);
        t.add(&[RttSample {
            flow: key,
            rtt_ns: 1_000_000,
        }]);
        assert_eq!(t.interval_hosts()[0].host.to_string(), "2001:db8::2");
        t.add(&[tcp(2, 10)]);
        let mapped: IpAddr = "::ffff:198.51.100.2".parse().unwrap();
        assert!(t.host(mapped, RttProto::Tcp, Span::Run).is_some());
    }

    #[test]
    fn memory_per_key_is_bounded_as_documented() {
        let mut t = RttTable::new([]);
        // Past the samples kept as they are: a histogram.
        let mut samples = vec![tcp(2, 1); FEW];
        t.add(&samples);
        let h = &t.hosts[&(addr(2), RttProto::Tcp)].rtts;
        assert_eq!((h.run.counters(), h.interval.counters()), (0, 0));
        samples.push(tcp(2, u64::MAX / 1000));
        t.add(&samples);
        t.end_interval();
        t.add(&samples);
        let h = &t.hosts[&(addr(2), RttProto::Tcp)].rtts;
        assert_eq!(h.run.counters(), max_counters(HOST_DIGITS));
        assert_eq!(h.interval.counters(), max_counters(HOST_DIGITS));
        let c = t.conversations.values().next().unwrap();
        assert_eq!(c.run.counters(), max_counters(CONVERSATION_DIGITS));
        // The longest sample counts at the top of the histogram's range,
        // and exactly in max.
        let s = t.host(addr(2), RttProto::Tcp, Span::Run).unwrap();
        assert_eq!(s.max, (u64::MAX / 1000 * 1000) as f64 / 1e6);
        let top = HIGHEST_US as f64 / 1e3;
        assert!((s.p99 - top).abs() / top < 1e-3, "{s:?}");
        // Samples below 8.2 ms: 4 powers of two, 48 KiB a pair.
        let mut t = RttTable::new([]);
        t.add(&[tcp(2, 8191); FEW + 1]);
        t.end_interval();
        let h = &t.hosts[&(addr(2), RttProto::Tcp)].rtts;
        assert_eq!(h.run.counters() * 12, 48 << 10);
        assert_eq!(HOST_MAX_BYTES, 180 << 10);
        assert_eq!(CONVERSATION_MAX_BYTES, 27 << 10);
    }

    #[test]
    fn probes_pair_with_their_address_and_protocol_over_the_same_span() {
        use crate::report::ProbeKind;
        let target = addr(2);
        let mut t = RttTable::new([(target, RttProto::Icmp), (target, RttProto::Tcp)]);
        t.add(&[
            sample(2, PROTO_ICMP, RTT_ICMP_ECHO, (0, 0), 40),
            tcp(2, 900),
            tcp(3, 10),
        ]);
        t.end_interval();
        t.add(&[sample(2, PROTO_ICMP, RTT_ICMP_ECHO, (0, 0), 60)]);
        let probes = || {
            vec![
                ProbeStats::new(ProbeKind::Icmp, "198.51.100.2", Some(target), None),
                ProbeStats::new(ProbeKind::Tcp, "198.51.100.2:80", Some(target), Some(80)),
                ProbeStats::new(ProbeKind::Icmp, "unresolved", None, None),
            ]
        };
        let mut interval = probes();
        t.annotate_probes(&mut interval, Span::Interval);
        let p50 = |p: &ProbeStats| p.passive_rtt.map(|r| (r.samples, r.p50));
        assert_eq!(p50(&interval[0]), Some((1, 0.06)), "ICMP of the interval");
        assert_eq!(p50(&interval[1]), None, "no TCP sample in the interval");
        assert_eq!(p50(&interval[2]), None);
        let mut run = probes();
        t.annotate_probes(&mut run, Span::Run);
        assert_eq!(p50(&run[0]), Some((2, 0.04)));
        assert_eq!(
            p50(&run[1]),
            Some((1, 0.9)),
            "TCP of the run, host 3's apart"
        );
    }
}
