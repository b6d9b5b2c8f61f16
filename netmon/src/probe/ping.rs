//! `netmon ping`: every target probed `--count` times, `--interval` apart,
//! all targets at once over one socket per address family.

use std::{
    io::{self, Write},
    net::IpAddr,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use tokio::time::Instant;

use super::{
    PingArgs,
    pinger::{Outcome, Pinger},
    targets::resolve,
};
use crate::report::{
    Format, ProbeKind, ProbeStats,
    json::probe_json,
    text::{ms, write_probe_stats},
};

/// Send times of a target's probes: `start + i * interval`, `count` of them.
pub fn schedule(
    start: Instant,
    interval: Duration,
    count: u64,
) -> impl Iterator<Item = (u64, Instant)> {
    (0..count).map(move |i| {
        (
            i,
            start + interval.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX)),
        )
    })
}

pub async fn run(args: PingArgs) -> anyhow::Result<ExitCode> {
    if args.count == 0 {
        return Err(crate::UsageError("--count must be at least 1".into()).into());
    }
    let mut addrs = Vec::with_capacity(args.targets.len());
    // Names resolve concurrently.
    let lookups: Vec<_> = args
        .targets
        .iter()
        .map(|t| {
            let t = t.clone();
            tokio::spawn(async move { resolve(&t).await })
        })
        .collect();
    for l in lookups {
        addrs.push(l.await.context("a resolver task failed")??);
    }
    let pinger = Arc::new(Pinger::new(
        addrs.iter().any(IpAddr::is_ipv4),
        addrs.iter().any(IpAddr::is_ipv6),
    )?);
    for (family, kind) in pinger.kinds() {
        log::debug!("{family}: {}", kind.as_str());
    }
    let text = args.format == Format::Text;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (target, &addr) in args.targets.iter().zip(&addrs) {
        let pinger = Arc::clone(&pinger);
        let target = target.clone();
        let (count, interval, timeout) = (args.count, args.interval, args.timeout);
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::with_capacity(count.min(1 << 20) as usize);
            for (seq, at) in schedule(start, interval, count) {
                tokio::time::sleep_until(at).await;
                let pinger = Arc::clone(&pinger);
                let target = target.clone();
                waits.push(tokio::spawn(async move {
                    let outcome = pinger.probe_outcome(addr, timeout).await;
                    if text {
                        let line = match &outcome {
                            Outcome::Reply(r) => format!(
                                "{target} ({addr}): seq={seq} time={} ms",
                                ms(r.as_secs_f64() * 1e3)
                            ),
                            Outcome::NoReply => format!("{target} ({addr}): seq={seq} no reply"),
                            Outcome::NotSent(why) => {
                                format!("{target} ({addr}): seq={seq} not sent: {why}")
                            }
                        };
                        // Broken pipes are caught when the summary is written.
                        let _ = writeln!(io::stdout().lock(), "{line}");
                    }
                    outcome
                }));
            }
            let mut stats = ProbeStats::new(ProbeKind::Icmp, &target, Some(addr), None);
            // In send order, as the jitter estimate wants.
            for w in waits {
                match w.await.unwrap_or(Outcome::NoReply) {
                    Outcome::Reply(rtt) => stats.record(Some(rtt)),
                    Outcome::NoReply => stats.record(None),
                    Outcome::NotSent(why) => stats.record_not_sent(&why),
                }
            }
            stats
        }));
    }
    let mut all = Vec::with_capacity(tasks.len());
    for t in tasks {
        all.push(t.await.context("a ping task failed")?);
    }
    let mut out = io::BufWriter::new(io::stdout().lock());
    for s in &mut all {
        if let Some(a) = s.addr {
            let extra = pinger.extra(a);
            (s.duplicates, s.late) = (extra.duplicates, extra.late);
        }
        match args.format {
            Format::Json => writeln!(out, "{}", probe_json(s))?,
            Format::Text => {
                writeln!(out)?;
                write_probe_stats(&mut out, s, 8)?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::from(exit_status(all.iter().map(|s| s.received))))
}

/// fping-style exit status of a ping: 0 when every target answered at
/// least once; 1 when some target never did (no reply, or no request could
/// be sent to it). Usage errors (2) and runtime failures (1) end the run
/// before this.
#[must_use]
pub fn exit_status(received_per_target: impl IntoIterator<Item = u64>) -> u8 {
    u8::from(received_per_target.into_iter().any(|r| r == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_is_zero_only_when_every_target_answered() {
        assert_eq!(exit_status([3, 1]), 0);
        assert_eq!(exit_status([3, 0]), 1);
        assert_eq!(exit_status([0, 0]), 1);
        assert_eq!(exit_status([0]), 1);
    }

    #[test]
    fn schedule_is_evenly_spaced_and_bounded() {
        let start = Instant::now();
        let v: Vec<_> = schedule(start, Duration::from_millis(10), 3).collect();
        assert_eq!(
            v,
            vec![
                (0, start),
                (1, start + Duration::from_millis(10)),
                (2, start + Duration::from_millis(20))
            ]
        );
        assert_eq!(schedule(start, Duration::from_millis(1), 0).count(), 0);
    }
}
