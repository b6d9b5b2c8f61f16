//! The monitor loop: every interval, read the counters, print rates; at the
//! end, detach, read everything once more and print the summary.

use std::{future::Future, io::Write, time::Duration};

use anyhow::Result;
use netmon_common::{Counters, FlowKey, FlowValue};
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};

use crate::{
    cli::Format,
    netlink::LinkEvent,
    output::{self, Summary},
    probe::continuous::ContinuousProbes,
    stats::{FlowTracker, Rates, top_by_bytes},
};

/// Where the counters come from: the attached XDP program, or a fake in tests.
pub trait Source {
    fn counters(&mut self) -> Result<Counters>;
    fn flows(&mut self) -> Result<Vec<(FlowKey, FlowValue)>>;
    /// Removes a flow from the table, returning its final value.
    fn remove_flow(&mut self, key: &FlowKey) -> Result<Option<FlowValue>>;
    /// The clock of the flow timestamps (kernel monotonic), in ns.
    fn now_ns(&self) -> u64;
    /// Stops counting (detach); later reads see final values.
    fn finish(&mut self);
    /// Forwards any kernel log records.
    fn drain_log(&mut self) {}
    /// Called every [`SERVICE_EVERY`] between intervals (the XDP source
    /// empties its eviction ring there, long before it fills).
    fn service(&mut self) {}
}

/// How often [`Source::service`] runs.
pub const SERVICE_EVERY: Duration = Duration::from_millis(10);

pub struct Config {
    pub iface: String,
    pub interval: Duration,
    pub duration: Option<Duration>,
    pub format: Format,
    pub top: usize,
    /// Flows silent this long are removed from the flow table (their
    /// counts stay in the summary).
    pub idle_timeout: Duration,
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

/// Runs until `duration` passes, `shutdown` completes or `links` says the
/// interface is gone, then writes the summary. `probes` (from
/// `--ping`/`--tcp`) report every interval and in the summary; changes of
/// the link state (`links`) are reported as they come.
pub async fn run(
    cfg: &Config,
    source: &mut impl Source,
    out: &mut impl Write,
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
    let deadline = cfg.duration.map(|d| start + d);
    let until_deadline = async {
        match deadline {
            Some(d) => sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(shutdown, until_deadline);

    let mut prev = source.counters()?;
    let mut prev_at = Instant::now();
    let mut first = true;
    let mut tracker = FlowTracker::default();
    let idle_ns = u64::try_from(cfg.idle_timeout.as_nanos()).unwrap_or(u64::MAX);
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
                LinkEvent::State { up } => {
                    output::write_link(out, cfg.format, &cfg.iface, unix_now(), up)?;
                    out.flush()?;
                }
            },
            _ = service.tick() => source.service(),
            _ = ticks.tick() => {
                source.drain_log();
                let now = Instant::now();
                let cur = source.counters()?;
                let rates = Rates::between(&prev, &cur, now - prev_at, cfg.link_bps);
                let flows = tracker.interval(source.flows()?, cfg.top);
                let time = unix_now();
                output::write_rates(out, cfg.format, &cfg.iface, time, first, &rates, &flows)?;
                if let Some(p) = probes {
                    output::write_probes(out, cfg.format, time, &p.take_interval())?;
                }
                out.flush()?;
                for key in tracker.idle(source.now_ns(), idle_ns) {
                    if let Some(last) = source.remove_flow(&key)? {
                        tracker.retire(key, &last);
                    }
                }
                first = false;
                prev = cur;
                prev_at = now;
            }
        }
    }

    // Probes end before the program is detached: the replies they count
    // crossed the interface while it counted (see ContinuousProbes).
    if let Some(p) = probes {
        p.finish().await;
    }
    source.finish();
    source.drain_log();
    // Flows first: reading them counts the packets of flows the table
    // could not take, which the counters then include.
    let mut flows = tracker.all(&source.flows()?);
    let counters = source.counters()?;
    let flows_tracked = flows.len();
    top_by_bytes(&mut flows, cfg.top);
    output::write_summary(
        out,
        cfg.format,
        &Summary {
            iface: &cfg.iface,
            duration_s: start.elapsed().as_secs_f64(),
            counters: &counters,
            flows_tracked,
            top: &flows,
            mono_to_unix_ns: cfg.mono_to_unix_ns,
            probes: &probes.map(ContinuousProbes::cumulative).unwrap_or_default(),
        },
    )?;
    out.flush()?;
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use netmon_common::{IP_V4, PROTO_UDP};
    use serde_json::Value;

    use super::*;

    /// Counts `per_read` more packets of 100 bytes at every counters() read,
    /// in one flow; stops growing after finish().
    struct Fake {
        packets: u64,
        per_read: u64,
        finished: bool,
    }

    impl Source for Fake {
        fn counters(&mut self) -> Result<Counters> {
            if !self.finished {
                self.packets += self.per_read;
            }
            Ok(Counters {
                packets: self.packets,
                bytes: self.packets * 100,
                udp: self.packets,
                ..Counters::default()
            })
        }
        fn flows(&mut self) -> Result<Vec<(FlowKey, FlowValue)>> {
            let key = FlowKey {
                ip_version: IP_V4,
                proto: PROTO_UDP,
                ..FlowKey::default()
            };
            let value = FlowValue {
                packets: self.packets,
                bytes: self.packets * 100,
                ..FlowValue::default()
            };
            Ok(vec![(key, value)])
        }
        fn remove_flow(&mut self, _key: &FlowKey) -> Result<Option<FlowValue>> {
            Ok(None)
        }
        fn now_ns(&self) -> u64 {
            0
        }
        fn finish(&mut self) {
            self.finished = true;
        }
    }

    impl Fake {
        fn new(per_read: u64) -> Self {
            Fake {
                packets: 0,
                per_read,
                finished: false,
            }
        }
    }

    /// NDJSON every second on `test0`, for `duration`.
    fn json_config(duration: Option<Duration>) -> Config {
        Config {
            iface: "test0".into(),
            interval: Duration::from_secs(1),
            duration,
            format: Format::Json,
            top: 5,
            idle_timeout: Duration::from_secs(60),
            link_bps: None,
            mono_to_unix_ns: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn prints_one_line_per_interval_then_the_summary() {
        let cfg = json_config(Some(Duration::from_millis(3500)));
        let mut source = Fake::new(10);
        let mut out = Vec::new();
        let (_link_tx, link_rx) = tokio::sync::mpsc::unbounded_channel();
        run(
            &cfg,
            &mut source,
            &mut out,
            std::future::pending(),
            None,
            link_rx,
        )
        .await
        .unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
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
        let mut out = Vec::new();
        let (tx, link_rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(LinkEvent::State { up: false }).unwrap();
        tx.send(LinkEvent::State { up: true }).unwrap();
        tx.send(LinkEvent::Deleted).unwrap();
        let ended = run(
            &cfg,
            &mut source,
            &mut out,
            std::future::pending(),
            None,
            link_rx,
        )
        .await
        .unwrap();
        assert_eq!(ended, Ended::InterfaceGone);
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
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
        let mut out = Vec::new();
        let (_link_tx, link_rx) = tokio::sync::mpsc::unbounded_channel();
        run(
            &cfg,
            &mut source,
            &mut out,
            tokio::time::sleep(Duration::from_millis(1500)),
            None,
            link_rx,
        )
        .await
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["type"], "summary");
        assert_eq!(text.lines().count(), 2);
    }
}
