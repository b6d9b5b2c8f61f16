//! The monitor loop: every interval, read the counters and hand the
//! interval's values to the sink; at the end, detach, read everything once
//! more and hand over the summary. What becomes of the values (text,
//! NDJSON, more at once) is the sink's business (`report`).
//!
//! May use: `report` (values and the [`Sink`] trait, never a format),
//! `probe` (the continuous probes), `sys` (the XDP source, start-up, link
//! events: the loop reads the kernel only through [`Source`]), `units`.
//! Nothing else in the crate uses `monitor`, except the binary.

use std::{future::Future, time::Duration};

use anyhow::Result;
use netmon_common::{Counters, FlowKey, FlowValue, RTT_PENDING_TIMEOUT_NS, RttSample};
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};

use self::{
    rtt::{RttTable, Span},
    stats::{FlowTracker, RETIRED_KEEP, interval_flows},
};
use crate::{
    probe::continuous::ContinuousProbes,
    report::{
        FlowChanges, HostRtt, IfCounters, Interval, IntervalFlows, Link, ProbeStats, ProgramCost,
        Rates, RttProto, Side, Sink, Summary,
    },
    sys::{self, netlink::LinkEvent},
};

pub mod flowtable;
pub mod rtt;
pub mod start;
pub mod stats;
pub mod xdp;

/// Where the counters come from: the attached XDP program, or a fake in tests.
pub trait Source {
    /// The counters of what was received.
    fn counters(&mut self) -> Result<Counters>;
    /// The counters of what was transmitted; `None` when only ingress is
    /// counted.
    fn tx_counters(&mut self) -> Result<Option<Counters>> {
        Ok(None)
    }
    /// Reads the kernel's flows into the flow table and appends to
    /// `changed` every flow that carried packets since the last call, with
    /// the packets and bytes of that time (see `FlowTable::take_changes`);
    /// returns the number of flows in the table.
    fn flow_changes(&mut self, changed: &mut Vec<(FlowKey, FlowValue)>) -> Result<usize>;
    /// Removes the flows silent for the idle timeout from the table,
    /// appending each with its totals to `removed`.
    fn expire_idle(&mut self, removed: &mut Vec<(FlowKey, FlowValue)>) -> Result<()>;
    /// Reads the kernel's flows once more and returns every flow in the
    /// table with its totals (for the summary: costs the whole table).
    fn flows(&mut self) -> Result<Vec<(FlowKey, FlowValue)>>;
    /// Stops counting (detach); later reads see final values.
    fn finish(&mut self);
    /// Forwards any kernel log records.
    fn drain_log(&mut self) {}
    /// Called every [`SERVICE_EVERY`] between intervals (the XDP source
    /// moves the eviction records its ring thread took into the table).
    fn service(&mut self) {}
    /// The watched interface's own counters since it came up, if known.
    fn if_counters(&mut self) -> Option<IfCounters> {
        None
    }
    /// What the kernel programs cost since they were loaded, if the
    /// kernel's run-time statistics are on.
    fn program_cost(&mut self) -> Option<ProgramCost> {
        None
    }
    /// Whether passive RTT is measured (the egress program records what is
    /// sent): asked once, at the start. Without it the loop never calls
    /// the two below and the values carry no passive RTT.
    fn passive_rtt(&self) -> bool {
        false
    }
    /// Moves the passive-RTT samples the kernel matched since the last
    /// call to `out` (called every [`SERVICE_EVERY`] and at each interval).
    fn rtt_samples(&mut self, _out: &mut Vec<RttSample>) {}
    /// Deletes the sends still waiting for their answer that were sent
    /// before `before_ns` (kernel monotonic ns); returns how many it
    /// deleted. Called every [`RTT_EXPIRE_EVERY`].
    fn expire_rtt_pending(&mut self, _before_ns: u64) -> Result<u64> {
        Ok(0)
    }
}

/// How often [`Source::service`] runs.
pub const SERVICE_EVERY: Duration = Duration::from_millis(10);

/// How often sends still unanswered after `RTT_PENDING_TIMEOUT_NS` are
/// deleted ([`Source::expire_rtt_pending`]): an entry lives at most this
/// much longer than the timeout.
pub const RTT_EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// Passive RTT as the loop keeps it: the table of samples, and the
/// sends the source deleted unanswered.
struct PassiveRtt {
    table: RttTable,
    /// Reused buffer of the source's samples.
    samples: Vec<RttSample>,
    expired: u64,
    next_expiry: Instant,
}

impl PassiveRtt {
    /// With the probe targets' pairs kept whatever the traffic.
    fn new(probes: Option<&ContinuousProbes>, now: Instant) -> Self {
        let pinned = probes
            .map(ContinuousProbes::cumulative)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| Some((p.addr?, RttProto::of_probe(p.kind))));
        Self {
            table: RttTable::new(pinned),
            samples: Vec::new(),
            expired: 0,
            next_expiry: now + RTT_EXPIRE_EVERY,
        }
    }

    /// Takes the source's new samples into the table.
    fn take(&mut self, source: &mut impl Source) {
        self.samples.clear();
        source.rtt_samples(&mut self.samples);
        self.table.add(&self.samples);
    }

    /// Between intervals: the new samples; every [`RTT_EXPIRE_EVERY`], has
    /// the source delete stale sends.
    fn service(&mut self, source: &mut impl Source, now: Instant) -> Result<()> {
        self.take(source);
        if now >= self.next_expiry {
            self.next_expiry = now + RTT_EXPIRE_EVERY;
            let before = sys::monotonic_ns().saturating_sub(RTT_PENDING_TIMEOUT_NS);
            self.expired += source.expire_rtt_pending(before)?;
        }
        Ok(())
    }

    /// At the end of an interval: the last samples in, the RTT of the
    /// interval on its flows and probes, and every host with samples.
    /// The caller calls [`RttTable::end_interval`] once it is reported.
    fn interval(
        &mut self,
        source: &mut impl Source,
        flows: &mut IntervalFlows,
        probes: &mut [ProbeStats],
    ) -> Vec<HostRtt> {
        self.take(source);
        let t = &self.table;
        t.annotate_flows(&mut flows.top_bytes, Span::Interval);
        t.annotate_flows(&mut flows.top_packets, Span::Interval);
        t.annotate_flows(&mut flows.every, Span::Interval);
        t.annotate_probes(probes, Span::Interval);
        t.interval_hosts()
    }
}

pub struct Config {
    pub iface: String,
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub top: usize,
    pub link_bps: Option<u64>,
    /// Adds to a kernel monotonic timestamp to give Unix time in ns.
    pub mono_to_unix_ns: i128,
}

/// Unix time now, in seconds.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// `--duration` passed, or a signal asked.
    Asked,
    /// The interface went away (deleted, or moved to another namespace).
    InterfaceGone,
}

/// Sleeps until `deadline`; forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Runs until `duration` passes, `shutdown` completes or `links` says the
/// interface is gone, then hands `sink` the summary. `probes` (from
/// `--ping`/`--tcp`) report every interval and in the summary; changes of
/// the link state (`links`) are reported as they come.
pub async fn run(
    cfg: &Config,
    source: &mut impl Source,
    sink: &mut impl Sink,
    shutdown: impl Future<Output = ()>,
    probes: Option<&ContinuousProbes>,
    mut links: tokio::sync::mpsc::UnboundedReceiver<LinkEvent>,
) -> Result<Ended> {
    let start = Instant::now();
    let mut ticks = interval_at(start + cfg.interval, cfg.interval);
    // A slow reader must not produce a burst of catch-up lines.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut service = interval_at(start + SERVICE_EVERY, SERVICE_EVERY);
    service.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let until_deadline = until(cfg.duration.map(|d| start + d));
    tokio::pin!(shutdown, until_deadline);

    let mut prev = source.counters()?;
    let mut prev_tx = source.tx_counters()?;
    let mut prev_at = Instant::now();
    let mut prev_if = source.if_counters();
    let mut prev_cost = source.program_cost();
    let every_flow = sink.wants_every_flow();
    let mut tracker = FlowTracker::new(cfg.top.max(RETIRED_KEEP));
    // Reused buffers of changed and removed flows.
    let mut changed = Vec::new();
    let mut removed = Vec::new();
    let mut passive = source
        .passive_rtt()
        .then(|| PassiveRtt::new(probes, Instant::now()));
    let mut ended = Ended::Asked;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut until_deadline => break,
            Some(event) = links.recv() => match event {
                LinkEvent::Deleted => {
                    ended = Ended::InterfaceGone;
                    break;
                }
                LinkEvent::State { up } => sink.link(&Link {
                    iface: cfg.iface.clone(),
                    unix_time: unix_now(),
                    up,
                })?,
            },
            _ = service.tick() => {
                source.service();
                if let Some(p) = &mut passive {
                    p.service(source, Instant::now())?;
                }
            }
            _ = ticks.tick() => {
                source.drain_log();
                let now = Instant::now();
                let cur = source.counters()?;
                let rates = Rates::between(&prev, &cur, now - prev_at, cfg.link_bps);
                let cur_tx = source.tx_counters()?;
                let tx = cur_tx.zip(prev_tx).map(|(cur, prev)| Side {
                    rates: Rates::between(&prev, &cur, now - prev_at, cfg.link_bps),
                    totals: cur,
                    counts: cur.minus(&prev),
                });
                changed.clear();
                let in_table = source.flow_changes(&mut changed)?;
                let if_now = source.if_counters();
                let cost_now = source.program_cost();
                let mut flows = interval_flows(in_table, &changed, cfg.top, every_flow);
                let mut probe_stats =
                    probes.map(ContinuousProbes::take_interval).unwrap_or_default();
                let passive_rtt =
                    passive.as_mut().map(|p| p.interval(source, &mut flows, &mut probe_stats));
                sink.interval(&Interval {
                    iface: cfg.iface.clone(),
                    unix_time: unix_now(),
                    rates,
                    totals: cur,
                    counts: cur.minus(&prev),
                    if_counters: if_now.zip(prev_if).map(|(now, before)| now.minus(&before)),
                    cost: cost_now.zip(prev_cost).map(|(now, before)| now.minus(&before)),
                    flows,
                    probes: probe_stats,
                    tx,
                    passive_rtt,
                })?;
                if let Some(p) = &mut passive {
                    p.table.end_interval();
                }
                (prev_if, prev_cost) = (if_now, cost_now);
                removed.clear();
                source.expire_idle(&mut removed)?;
                sink.flows(&FlowChanges {
                    changed: &changed,
                    removed: &removed,
                    end: false,
                    now_ns: sys::monotonic_ns(),
                    mono_to_unix_ns: cfg.mono_to_unix_ns,
                })?;
                for (key, value) in &removed {
                    tracker.retire(*key, value);
                }
                prev = cur;
                prev_tx = cur_tx;
                prev_at = now;
            }
        }
    }

    wind_up(cfg, source, sink, probes, &mut tracker, passive, start).await?;
    Ok(ended)
}

/// The end of a run: the probes finish, the program is detached, and the
/// sinks get the last flow changes and the summary, from final counts.
async fn wind_up(
    cfg: &Config,
    source: &mut impl Source,
    sink: &mut impl Sink,
    probes: Option<&ContinuousProbes>,
    tracker: &mut FlowTracker,
    mut passive: Option<PassiveRtt>,
    start: Instant,
) -> Result<()> {
    // Probes end before the program is detached: the replies they count
    // crossed the interface while it counted (see ContinuousProbes).
    if let Some(p) = probes {
        let finished = p.finish();
        tokio::pin!(finished);
        // Up to the probe timeout (5 s): the RTT ring is drained meanwhile,
        // so that it never fills.
        let mut service = tokio::time::interval(SERVICE_EVERY);
        loop {
            tokio::select! {
                () = &mut finished => break,
                _ = service.tick() => {
                    if let Some(r) = &mut passive {
                        r.take(source);
                    }
                }
            }
        }
    }
    source.finish();
    source.drain_log();
    // The samples of the answers that came before the detach.
    if let Some(p) = &mut passive {
        p.take(source);
    }
    // The last changes, for sinks that follow every flow: after the
    // detach, so they are final.
    let mut changed = Vec::new();
    source.flow_changes(&mut changed)?;
    sink.flows(&FlowChanges {
        changed: &changed,
        removed: &[],
        end: true,
        now_ns: sys::monotonic_ns(),
        mono_to_unix_ns: cfg.mono_to_unix_ns,
    })?;
    // Flows first: reading them counts the packets of flows the table
    // could not take, which the counters then include.
    let mut flows = tracker.summary(&source.flows()?, cfg.top);
    let counters = source.counters()?;
    let tx_counters = source.tx_counters()?;
    let mut probe_stats = probes.map(ContinuousProbes::cumulative).unwrap_or_default();
    let passive_rtt = passive.map(|mut p| {
        // The samples since the last interval join the run's.
        p.table.end_interval();
        p.table.annotate_flows(&mut flows.top, Span::Run);
        p.table.annotate_probes(&mut probe_stats, Span::Run);
        p.table.summary(p.expired)
    });
    sink.summary(&Summary {
        iface: cfg.iface.clone(),
        duration_s: start.elapsed().as_secs_f64(),
        counters,
        tx_counters,
        flows,
        mono_to_unix_ns: cfg.mono_to_unix_ns,
        probes: probe_stats,
        passive_rtt,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use netmon_common::{IP_V4, PROTO_UDP};
    use serde_json::Value;

    use super::*;
    use crate::{
        monitor::flowtable::{FlowTable, Occupancy},
        report::{JsonSink, Sinks, TextSink},
    };

    /// Counts `per_read` more packets of 100 bytes at every counters() read,
    /// in one flow, except at the reads numbered in `quiet` (the first read
    /// is 1); stops growing after finish(). The flow goes through a real
    /// flow table, as one occupancy per stretch of growth; its clock is the
    /// (paused) tokio clock.
    struct Fake {
        table: FlowTable,
        start: Instant,
        reads: u64,
        packets: u64,
        per_read: u64,
        quiet: std::ops::RangeInclusive<u64>,
        /// The current occupancy: sequence number, packets, last packet.
        seq: u64,
        occupancy_packets: u64,
        last_seen_ns: u64,
        finished: bool,
        /// The flow's key.
        key: FlowKey,
        /// With passive RTT: the samples still to come, each with the
        /// time it arrives (since the start), and the pending entries the
        /// loop had deleted (two per call).
        rtt: Option<Vec<(Duration, RttSample)>>,
        expire_calls: u64,
    }

    fn fake_key() -> FlowKey {
        FlowKey {
            ip_version: IP_V4,
            proto: PROTO_UDP,
            ..FlowKey::default()
        }
    }

    impl Fake {
        fn new(per_read: u64) -> Self {
            Self::with_idle(per_read, Duration::from_secs(60), 0..=0)
        }

        fn with_idle(per_read: u64, idle: Duration, quiet: std::ops::RangeInclusive<u64>) -> Self {
            Fake {
                table: FlowTable::new(10, idle.as_nanos() as u64),
                start: Instant::now(),
                reads: 0,
                packets: 0,
                per_read,
                quiet,
                seq: 0,
                occupancy_packets: 0,
                last_seen_ns: 0,
                finished: false,
                key: fake_key(),
                rtt: None,
                expire_calls: 0,
            }
        }

        fn now_ns(&self) -> u64 {
            self.start.elapsed().as_nanos() as u64 + 1
        }
    }

    impl Source for Fake {
        fn counters(&mut self) -> Result<Counters> {
            self.reads += 1;
            if self.finished || self.quiet.contains(&self.reads) {
                // A new occupancy when it grows again.
                self.occupancy_packets = 0;
            } else {
                if self.occupancy_packets == 0 {
                    self.seq += 1;
                }
                self.packets += self.per_read;
                self.occupancy_packets += self.per_read;
                self.last_seen_ns = self.now_ns();
            }
            Ok(Counters {
                packets: self.packets,
                bytes: self.packets * 100,
                udp: self.packets,
                ..Counters::default()
            })
        }
        fn flow_changes(&mut self, changed: &mut Vec<(FlowKey, FlowValue)>) -> Result<usize> {
            self.table.new_round();
            if self.occupancy_packets > 0 {
                self.table.seen(&Occupancy {
                    cpu: 0,
                    seq: self.seq,
                    key: self.key,
                    value: FlowValue {
                        packets: self.occupancy_packets,
                        bytes: self.occupancy_packets * 100,
                        first_seen_ns: 1,
                        last_seen_ns: self.last_seen_ns,
                        ..FlowValue::default()
                    },
                });
            }
            self.table.take_changes(changed);
            Ok(self.table.len())
        }
        fn expire_idle(&mut self, removed: &mut Vec<(FlowKey, FlowValue)>) -> Result<()> {
            let now = self.now_ns();
            self.table.expire(now, removed);
            Ok(())
        }
        fn flows(&mut self) -> Result<Vec<(FlowKey, FlowValue)>> {
            self.flow_changes(&mut Vec::new())?;
            Ok(self.table.snapshot())
        }
        fn finish(&mut self) {
            self.finished = true;
        }
        fn passive_rtt(&self) -> bool {
            self.rtt.is_some()
        }
        fn rtt_samples(&mut self, out: &mut Vec<RttSample>) {
            let now = self.start.elapsed();
            if let Some(rtt) = &mut self.rtt {
                let due = rtt.iter().take_while(|(at, _)| *at <= now).count();
                out.extend(rtt.drain(..due).map(|(_, s)| s));
            }
        }
        fn expire_rtt_pending(&mut self, _before_ns: u64) -> Result<u64> {
            self.expire_calls += 1;
            Ok(2)
        }
    }

    /// Every second on `test0`, for `duration`.
    fn json_config(duration: Option<Duration>) -> Config {
        Config {
            iface: "test0".into(),
            interval: Duration::from_secs(1),
            duration,
            top: 5,
            link_bps: None,
            mono_to_unix_ns: 0,
        }
    }

    /// Keeps every value the loop hands over.
    #[derive(Default)]
    struct Recorder {
        intervals: Vec<Interval>,
        links: Vec<Link>,
        summaries: Vec<Summary>,
    }

    impl Sink for Recorder {
        fn interval(&mut self, interval: &Interval) -> Result<()> {
            self.intervals.push(interval.clone());
            Ok(())
        }
        fn link(&mut self, link: &Link) -> Result<()> {
            self.links.push(link.clone());
            Ok(())
        }
        fn summary(&mut self, summary: &Summary) -> Result<()> {
            self.summaries.push(summary.clone());
            Ok(())
        }
    }

    /// Runs the loop on `source` until it ends (by `cfg.duration`,
    /// `shutdown` or `links`), with the NDJSON sink, the text sink and a
    /// [`Recorder`] at once; returns how it ended and every NDJSON line
    /// as JSON, after checking that the other two saw the same run.
    async fn run_json(
        cfg: &Config,
        source: &mut Fake,
        shutdown: impl Future<Output = ()>,
        link_events: Vec<LinkEvent>,
    ) -> (Ended, Vec<Value>) {
        let (ended, lines, _) = run_all(cfg, source, shutdown, link_events).await;
        (ended, lines)
    }

    /// [`run_json`], with the text output too.
    async fn run_all(
        cfg: &Config,
        source: &mut Fake,
        shutdown: impl Future<Output = ()>,
        link_events: Vec<LinkEvent>,
    ) -> (Ended, Vec<Value>, String) {
        let (tx, link_rx) = tokio::sync::mpsc::unbounded_channel();
        for event in link_events {
            tx.send(event).unwrap();
        }
        let (mut json, mut text, mut recorder) = (Vec::new(), Vec::new(), Recorder::default());
        let mut sinks = Sinks::new();
        sinks.push(Box::new(JsonSink::new(&mut json)));
        sinks.push(Box::new(TextSink::new(&mut text)));
        sinks.push(Box::new(&mut recorder));
        let ended = run(cfg, source, &mut sinks, shutdown, None, link_rx)
            .await
            .unwrap();
        drop(sinks);
        let lines: Vec<Value> = String::from_utf8(json)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let count = |t: &str| lines.iter().filter(|v| v["type"] == t).count();
        assert_eq!(recorder.intervals.len(), count("rates"));
        assert_eq!(recorder.links.len(), count("link"));
        assert_eq!(recorder.summaries.len(), 1);
        let text = String::from_utf8(text).unwrap();
        // Before the summary: the header (above the first interval), a
        // line per interval, its flows, a line per link change.
        let flow_lines: usize = lines
            .iter()
            .filter_map(|v| v["top_bytes"].as_array())
            .map(|top| top.len().min(3))
            .sum();
        let summary_at = text.find("\nsummary for test0 over ").unwrap();
        // A line of counts under each interval that counted something.
        let counts_lines = lines
            .iter()
            .filter(|v| v["type"] == "rates" && v["packets"] != 0)
            .count();
        // A line per host with passive-RTT samples.
        let rtt_lines: usize = lines
            .iter()
            .filter(|v| v["type"] == "rates")
            .filter_map(|v| v["passive_rtt"].as_array())
            .map(Vec::len)
            .sum();
        assert_eq!(
            text[..summary_at].lines().count(),
            usize::from(count("rates") > 0)
                + count("rates")
                + counts_lines
                + flow_lines
                + rtt_lines
                + count("link"),
            "{text}"
        );
        (ended, lines, text)
    }

    #[tokio::test(start_paused = true)]
    async fn prints_one_line_per_interval_then_the_summary() {
        let cfg = json_config(Some(Duration::from_millis(3500)));
        let mut source = Fake::new(10);
        let (_, lines) = run_json(&cfg, &mut source, std::future::pending(), Vec::new()).await;
        assert_eq!(lines.len(), 4, "3 rate lines and a summary: {lines:?}");
        for rates in &lines[..3] {
            assert_eq!(rates["type"], "rates");
            assert_eq!(rates["packets"], 10);
            assert_eq!(rates["bytes"], 1000);
        }
        let summary = &lines[3];
        assert_eq!(summary["type"], "summary");
        // initial read + 3 ticks; the read after finish() adds nothing.
        assert_eq!(summary["packets"], 40);
        assert_eq!(summary["flows"][0]["packets"], 40);
    }

    #[tokio::test(start_paused = true)]
    async fn link_changes_are_reported_and_a_vanished_interface_ends_the_run() {
        let cfg = json_config(None);
        let mut source = Fake::new(1);
        let events = vec![
            LinkEvent::State { up: false },
            LinkEvent::State { up: true },
            LinkEvent::Deleted,
        ];
        let (ended, lines) = run_json(&cfg, &mut source, std::future::pending(), events).await;
        assert_eq!(ended, Ended::InterfaceGone);
        let states: Vec<&str> = lines
            .iter()
            .filter(|v| v["type"] == "link")
            .map(|v| v["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["down", "up"]);
        assert_eq!(lines.last().unwrap()["type"], "summary");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_run_with_a_summary() {
        let cfg = json_config(None);
        let mut source = Fake::new(1);
        let shutdown = tokio::time::sleep(Duration::from_millis(1500));
        let (ended, lines) = run_json(&cfg, &mut source, shutdown, Vec::new()).await;
        assert_eq!(ended, Ended::Asked);
        assert_eq!(lines.last().unwrap()["type"], "summary");
        assert_eq!(lines.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_flow_leaves_the_table_and_keeps_its_counts() {
        let cfg = json_config(Some(Duration::from_millis(8500)));
        // Reads at 0 s (1), then at every tick 1-8 s (2-9): quiet at 2-5 s,
        // so the flow, last seen at 1 s, is 2 s idle at 3 s.
        let mut source = Fake::with_idle(10, Duration::from_secs(2), 3..=6);
        let (_, lines) = run_json(&cfg, &mut source, std::future::pending(), Vec::new()).await;
        let in_table: Vec<u64> = lines[..8]
            .iter()
            .map(|v| v["flows_in_table"].as_u64().unwrap())
            .collect();
        assert_eq!(in_table, [1, 1, 1, 0, 0, 1, 1, 1]);
        let active: Vec<u64> = lines[..8]
            .iter()
            .map(|v| v["active_flows"].as_u64().unwrap())
            .collect();
        assert_eq!(active, [1, 0, 0, 0, 0, 1, 1, 1]);
        let summary = &lines[8];
        assert_eq!(summary["type"], "summary");
        assert_eq!(summary["packets"], 50);
        assert_eq!(summary["flows"][0]["packets"], 50, "both stays: {summary}");
        assert_eq!(summary["flows_tracked"], 1);
        assert_eq!(summary["flows_tracked_exact"], true);
    }

    /// A TCP flow received from 198.51.100.2:80 at 198.51.100.1:40000,
    /// and a passive-RTT sample of `rtt_us` of its conversation (or of
    /// ICMP echo to `host`).
    fn rtt_key() -> FlowKey {
        let mut k = FlowKey {
            ip_version: IP_V4,
            proto: netmon_common::PROTO_TCP,
            sport_be: 80u16.to_be(),
            dport_be: 40000u16.to_be(),
            ..FlowKey::default()
        };
        k.src[..4].copy_from_slice(&[198, 51, 100, 2]);
        k.dst[..4].copy_from_slice(&[198, 51, 100, 1]);
        k
    }

    fn tcp_sample(rtt_us: u64) -> RttSample {
        let rx = rtt_key();
        RttSample {
            flow: FlowKey {
                src: rx.dst,
                dst: rx.src,
                sport_be: rx.dport_be,
                dport_be: rx.sport_be,
                direction: netmon_common::DIR_TX,
                pad: netmon_common::RTT_TCP_TS,
                ..rx
            },
            rtt_ns: rtt_us * 1000,
        }
    }

    fn icmp_sample(host: u8, rtt_us: u64) -> RttSample {
        let mut flow = FlowKey {
            ip_version: IP_V4,
            proto: netmon_common::PROTO_ICMP,
            direction: netmon_common::DIR_TX,
            pad: netmon_common::RTT_ICMP_ECHO,
            ..FlowKey::default()
        };
        flow.src[..4].copy_from_slice(&[198, 51, 100, 1]);
        flow.dst[..4].copy_from_slice(&[198, 51, 100, host]);
        RttSample {
            flow,
            rtt_ns: rtt_us * 1000,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn passive_rtt_per_interval_per_flow_and_in_the_summary() {
        let cfg = json_config(Some(Duration::from_millis(3500)));
        let mut source = Fake::new(10);
        source.key = rtt_key();
        let at = Duration::from_millis;
        // Below 256 µs: exact in a conversation's histogram too.
        source.rtt = Some(vec![
            (at(200), tcp_sample(100)),
            (at(500), tcp_sample(250)),
            (at(900), icmp_sample(3, 240)),
            // Nothing in the second interval; one in the third, and one
            // after it that only the summary has.
            (at(2500), tcp_sample(200)),
            (at(3200), icmp_sample(3, 150)),
        ]);
        let (_, lines, text) = run_all(&cfg, &mut source, std::future::pending(), Vec::new()).await;
        let rates: Vec<&Value> = lines.iter().filter(|v| v["type"] == "rates").collect();
        assert_eq!(rates.len(), 3);
        let host = |h: &str, proto: &str, samples: u64, [min, p50, p90, p99, max]: [f64; 5]| {
            serde_json::json!({"host": h, "proto": proto, "samples": samples,
                "rtt_ms": {"min": min, "p50": p50, "p90": p90, "p99": p99, "max": max}})
        };
        assert_eq!(
            rates[0]["passive_rtt"],
            serde_json::json!([
                host("198.51.100.2", "tcp", 2, [0.1, 0.1, 0.25, 0.25, 0.25]),
                host("198.51.100.3", "icmp", 1, [0.24; 5]),
            ])
        );
        assert_eq!(rates[1]["passive_rtt"], serde_json::json!([]));
        assert_eq!(
            rates[2]["passive_rtt"],
            serde_json::json!([host("198.51.100.2", "tcp", 1, [0.2; 5])])
        );
        // The received flow shows its conversation's RTT of the interval.
        let flow_rtt = |v: &Value| v["top_bytes"][0]["rtt_ms"].clone();
        assert_eq!(
            flow_rtt(rates[0]),
            serde_json::json!({"samples": 2, "min": 0.1, "p50": 0.1, "p90": 0.25, "p99": 0.25, "max": 0.25})
        );
        assert!(
            rates[1]["top_bytes"][0].get("rtt_ms").is_none(),
            "{}",
            rates[1]
        );
        let summary = lines.last().unwrap();
        assert_eq!(
            summary["passive_rtt"],
            serde_json::json!([
                host("198.51.100.2", "tcp", 3, [0.1, 0.2, 0.25, 0.25, 0.25]),
                host("198.51.100.3", "icmp", 2, [0.15, 0.15, 0.24, 0.24, 0.24]),
            ])
        );
        assert_eq!(summary["flows"][0]["rtt_ms"]["samples"], 3);
        // Expired every second: at 1, 2 and 3 s, two entries each.
        assert_eq!(source.expire_calls, 3);
        assert_eq!(summary["rtt_pending_expired"], 6);
        assert_eq!(summary["passive_rtt_hosts_dropped"], 0);
        assert!(
            text.contains(
                "\n    rtt 198.51.100.2 tcp  p50 0.100 ms  p90 0.250 ms  p99 0.250 ms  max 0.250 ms  \
                 min 0.100 ms  (2 samples)\n"
            ),
            "{text}"
        );
        assert!(text.contains("  rtt p50 0.100 ms\n"), "{text}");
        assert!(text.contains("6 sends expired unanswered"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_passive_rtt_no_key_and_no_expiry() {
        let cfg = json_config(Some(Duration::from_millis(2500)));
        let mut source = Fake::new(10);
        let (_, lines, text) = run_all(&cfg, &mut source, std::future::pending(), Vec::new()).await;
        for v in &lines {
            assert!(v.get("passive_rtt").is_none(), "{v}");
            assert!(v.get("rtt_pending_expired").is_none(), "{v}");
        }
        assert_eq!(source.expire_calls, 0);
        assert!(!text.contains("rtt"), "{text}");
    }
}
