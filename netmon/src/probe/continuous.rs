//! Probes that run beside the monitor (`--ping TARGET`, `--tcp HOST:PORT`):
//! one probe per target per interval, statistics per interval and since
//! the start.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    sync::watch,
    task::{JoinHandle, JoinSet},
    time::MissedTickBehavior,
};

use super::{
    pinger::{Extra, Pinger},
    targets::{resolve, split_host_port},
    tcp::{Attempt, connect},
};
use crate::report::{ProbeKind, ProbeStats};

struct Slot {
    interval: ProbeStats,
    cumulative: ProbeStats,
    /// Duplicates and late replies already reported in an interval.
    extra_seen: Extra,
}

/// Running continuous probes. Dropping it without [`Self::finish`] aborts
/// them.
///
/// They cover the monitor's counting window: they are [prepared](Self::prepare)
/// (targets resolved, sockets opened) before the program is attached,
/// [started](Prepared::start) after it, and [finished](Self::finish) —
/// no new probe, every probe in flight answered or timed out — before it
/// is detached. So every reply a probe counts crossed the interface while
/// the program counted.
pub struct ContinuousProbes {
    // A std Mutex: held only to add an outcome or copy the statistics,
    // never across an .await.
    slots: Arc<Mutex<Vec<Slot>>>,
    pinger: Option<Arc<Pinger>>,
    stop_tx: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Probes with their targets resolved and sockets open, not yet sending.
pub struct Prepared {
    targets: Vec<Target>,
    slots: Vec<ProbeStats>,
    pinger: Option<Arc<Pinger>>,
    interval: Duration,
}

/// How long a continuous probe waits for its answer: the interval, but at
/// least 1 s and at most 5 s. Probes overlap when it exceeds the interval.
#[must_use]
pub fn probe_timeout(interval: Duration) -> Duration {
    interval.clamp(Duration::from_secs(1), Duration::from_secs(5))
}

enum Target {
    Icmp(IpAddr),
    Tcp(SocketAddr),
}

impl ContinuousProbes {
    /// Resolves the targets and opens the ICMP sockets needed; sends
    /// nothing. Errors: bad `HOST:PORT`, unresolvable names, no permission
    /// for ICMP.
    pub async fn prepare(
        ping: &[String],
        tcp: &[String],
        interval: Duration,
    ) -> anyhow::Result<Prepared> {
        let mut targets = Vec::new();
        let mut slots = Vec::new();
        for t in ping {
            let addr = resolve(t).await?;
            targets.push(Target::Icmp(addr));
            slots.push(ProbeStats::new(ProbeKind::Icmp, t, Some(addr), None));
        }
        for t in tcp {
            let (host, port) = split_host_port(t)?;
            let addr = resolve(&host).await?;
            targets.push(Target::Tcp(SocketAddr::new(addr, port)));
            slots.push(ProbeStats::new(ProbeKind::Tcp, t, Some(addr), Some(port)));
        }
        let icmp: Vec<IpAddr> = targets
            .iter()
            .filter_map(|t| {
                if let Target::Icmp(a) = t {
                    Some(*a)
                } else {
                    None
                }
            })
            .collect();
        let pinger = if icmp.is_empty() {
            None
        } else {
            let p = Pinger::new(
                icmp.iter().any(IpAddr::is_ipv4),
                icmp.iter().any(IpAddr::is_ipv6),
            )?;
            for (family, kind) in p.kinds() {
                log::debug!("--ping {family}: {}", kind.as_str());
            }
            Some(Arc::new(p))
        };
        Ok(Prepared {
            targets,
            slots,
            pinger,
            interval,
        })
    }
}

impl Prepared {
    /// Starts one task per target: the first probes go out now.
    #[must_use]
    pub fn start(self) -> ContinuousProbes {
        let Prepared {
            targets,
            slots,
            pinger,
            interval,
        } = self;
        let slots = Arc::new(Mutex::new(
            slots
                .into_iter()
                .map(|s| Slot {
                    interval: s.clone(),
                    cumulative: s,
                    extra_seen: Extra::default(),
                })
                .collect::<Vec<_>>(),
        ));
        let (stop_tx, stop_rx) = watch::channel(false);
        let timeout = probe_timeout(interval);
        let tasks = targets
            .into_iter()
            .enumerate()
            .map(|(i, target)| {
                let (slots, pinger, mut stop) =
                    (Arc::clone(&slots), pinger.clone(), stop_rx.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(interval);
                    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    let mut inflight = JoinSet::new();
                    loop {
                        tokio::select! {
                            biased;
                            _ = stop.changed() => break,
                            _ = tick.tick() => {}
                        }
                        // Reap finished probes so the set stays small.
                        while inflight.try_join_next().is_some() {}
                        let (slots, pinger) = (Arc::clone(&slots), pinger.clone());
                        let probe = match target {
                            Target::Icmp(a) => {
                                ProbeOnce::Icmp(pinger.expect("opened for --ping targets"), a)
                            }
                            Target::Tcp(a) => ProbeOnce::Tcp(a),
                        };
                        inflight.spawn(async move {
                            let rtt = probe.run(timeout).await;
                            let mut s = slots.lock().expect("probe stats poisoned");
                            s[i].interval.record(rtt);
                            s[i].cumulative.record(rtt);
                        });
                    }
                    // Every probe in flight ends by itself within the
                    // timeout; its outcome counts.
                    while inflight.join_next().await.is_some() {}
                })
            })
            .collect();
        ContinuousProbes {
            slots,
            pinger,
            stop_tx,
            tasks: Mutex::new(tasks),
        }
    }
}

impl ContinuousProbes {
    fn with_extra(&self, take: bool) -> Vec<ProbeStats> {
        let extras: Vec<Option<Extra>> = {
            let s = self.slots.lock().expect("probe stats poisoned");
            s.iter()
                .map(|slot| {
                    slot.cumulative
                        .addr
                        .filter(|_| slot.cumulative.kind == ProbeKind::Icmp)
                })
                .collect::<Vec<_>>()
        }
        .into_iter()
        .map(|a| Some(self.pinger.as_ref()?.extra(a?)))
        .collect();
        let mut s = self.slots.lock().expect("probe stats poisoned");
        s.iter_mut()
            .zip(extras)
            .map(|(slot, extra)| {
                let extra = extra.unwrap_or_default();
                slot.cumulative.duplicates = extra.duplicates;
                slot.cumulative.late = extra.late;
                if take {
                    let mut out = std::mem::replace(&mut slot.interval, {
                        let c = &slot.cumulative;
                        ProbeStats::new(c.kind, &c.target, c.addr, c.port)
                    });
                    out.duplicates = extra.duplicates - slot.extra_seen.duplicates;
                    out.late = extra.late - slot.extra_seen.late;
                    slot.extra_seen = extra;
                    out
                } else {
                    slot.cumulative.clone()
                }
            })
            .collect()
    }

    /// Statistics of the probes that finished since the last call, per
    /// target in the order given to [`Prepared::start`] (`--ping` first).
    #[must_use]
    pub fn take_interval(&self) -> Vec<ProbeStats> {
        self.with_extra(true)
    }

    /// Statistics since the start.
    #[must_use]
    pub fn cumulative(&self) -> Vec<ProbeStats> {
        self.with_extra(false)
    }

    /// Sends no new probe and waits until every probe in flight is
    /// answered or timed out (at most [`probe_timeout`]), so the statistics
    /// are final.
    pub async fn finish(&self) {
        let _ = self.stop_tx.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("probe tasks poisoned"));
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for ContinuousProbes {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().expect("probe tasks poisoned").iter() {
            t.abort();
        }
    }
}

enum ProbeOnce {
    Icmp(Arc<Pinger>, IpAddr),
    Tcp(SocketAddr),
}

impl ProbeOnce {
    async fn run(self, timeout: Duration) -> Option<Duration> {
        match self {
            Self::Icmp(p, a) => p.probe(a, timeout).await,
            // A refused or unanswered connect is a failed probe.
            Self::Tcp(a) => match connect(a, timeout).await {
                Ok(Attempt::Open(rtt)) => Some(rtt),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use super::*;
    use crate::report::{json::probe_json, text::probe_interval_line};

    #[test]
    fn timeout_is_bounded() {
        assert_eq!(
            probe_timeout(Duration::from_millis(10)),
            Duration::from_secs(1)
        );
        assert_eq!(
            probe_timeout(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert_eq!(
            probe_timeout(Duration::from_secs(60)),
            Duration::from_secs(5)
        );
    }

    #[tokio::test]
    async fn tcp_probes_on_loopback() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let open = l.local_addr().unwrap().to_string();
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let p = ContinuousProbes::prepare(
            &[],
            &[open.clone(), closed.clone()],
            Duration::from_millis(20),
        )
        .await
        .unwrap()
        .start();
        // Bounded wait for at least five outcomes per target.
        for _ in 0..200 {
            if p.cumulative().iter().all(|s| s.sent >= 5) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let first = p.take_interval();
        let second = p.take_interval();
        let all = p.cumulative();
        p.finish().await;
        assert_eq!(all[0].target, open);
        assert!(
            all[0].sent >= 5 && all[0].received == all[0].sent,
            "{:?}",
            all[0]
        );
        assert!(all[1].sent >= 5 && all[1].received == 0, "{:?}", all[1]);
        assert!((all[1].loss_pct() - 100.0).abs() < 1e-9);
        // Intervals partition the cumulative counts.
        assert_eq!(first[0].sent + second[0].sent, all[0].sent);
        let v = probe_json(&all[0]);
        assert_eq!(v["kind"], "tcp");
        assert!(v["rtt_ms"]["p50"].as_f64().unwrap() > 0.0);
        assert!(probe_json(&all[1])["rtt_ms"].is_null());
        assert!(probe_interval_line(&all[0]).starts_with(&format!("tcp {open}: ")));
    }

    #[tokio::test]
    async fn icmp_probes_on_loopback() {
        let p = match ContinuousProbes::prepare(
            &["127.0.0.1".into(), "::1".into()],
            &[],
            Duration::from_millis(20),
        )
        .await
        {
            Ok(p) => p.start(),
            Err(e) if e.to_string().contains("no permission") => {
                eprintln!("skipped: ICMP needs root or ping_group_range ({e})");
                return;
            }
            Err(e) => panic!("{e:#}"),
        };
        for _ in 0..200 {
            if p.cumulative().iter().all(|s| s.sent >= 5) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let all = p.cumulative();
        p.finish().await;
        for s in &all {
            assert!(s.sent >= 5 && s.received == s.sent, "{s:?}");
            assert_eq!(s.duplicates, 0);
        }
        assert_eq!(probe_json(&all[1])["addr"], "::1");
    }

    #[tokio::test]
    async fn bad_targets_are_refused() {
        let e = ContinuousProbes::prepare(&[], &["nope".into()], Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("HOST:PORT"), "{e}");
    }
}
