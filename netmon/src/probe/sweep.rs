//! `netmon sweep`: echo requests to every address of the ranges, paced by
//! one global rate, replies collected as they come, silent hosts retried.

use std::{
    collections::VecDeque,
    io::{self, Write},
    net::IpAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::sync::mpsc;

use super::{SweepArgs, pinger::Pinger, render::Progress, targets::expand_ranges};
use crate::{UsageError, cli::Format};

/// Spaces sends `1/rate` apart on average. After an idle spell it allows a
/// burst of at most `burst` worth of sends, not the whole backlog.
#[derive(Debug)]
pub struct Pacer {
    period: Duration,
    burst: Duration,
    next: Instant,
}

impl Pacer {
    #[must_use]
    pub fn new(rate: u32, start: Instant) -> Self {
        let period = Duration::from_nanos(1_000_000_000 / u64::from(rate.max(1)));
        Self {
            period,
            burst: Duration::from_millis(2).max(period),
            next: start,
        }
    }

    /// `None`: send now (and the send is booked). `Some(t)`: wait until `t`.
    pub fn poll(&mut self, now: Instant) -> Option<Instant> {
        if self.next > now {
            return Some(self.next);
        }
        self.next = self.next.max(now.checked_sub(self.burst).unwrap_or(now)) + self.period;
        None
    }
}

/// Which target to probe next and when a target is finished. Pure.
#[derive(Debug)]
pub struct Plan {
    retries: u32,
    queue: VecDeque<(usize, u32)>,
    rtt: Vec<Option<Duration>>,
    finished: usize,
}

impl Plan {
    #[must_use]
    pub fn new(targets: usize, retries: u32) -> Self {
        Self {
            retries,
            queue: (0..targets).map(|i| (i, 0)).collect(),
            rtt: vec![None; targets],
            finished: 0,
        }
    }

    /// The next (target, attempt) to send, if any is waiting.
    pub fn next(&mut self) -> Option<(usize, u32)> {
        self.queue.pop_front()
    }

    /// Whether something waits to be sent.
    #[must_use]
    pub fn has_next(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The outcome of attempt `attempt` on target `i`.
    pub fn outcome(&mut self, i: usize, attempt: u32, rtt: Option<Duration>) {
        match rtt {
            Some(r) => {
                self.rtt[i] = Some(r);
                self.finished += 1;
            }
            None if attempt < self.retries => self.queue.push_back((i, attempt + 1)),
            None => self.finished += 1,
        }
    }

    #[must_use]
    pub fn done(&self) -> bool {
        self.finished == self.rtt.len()
    }

    #[must_use]
    pub fn finished(&self) -> usize {
        self.finished
    }

    /// RTT per target (`None`: never answered).
    #[must_use]
    pub fn into_results(self) -> Vec<Option<Duration>> {
        self.rtt
    }
}

pub async fn run(args: SweepArgs) -> anyhow::Result<ExitCode> {
    if args.rate == 0 {
        return Err(UsageError("--rate must be at least 1 echo request per second".into()).into());
    }
    let targets = expand_ranges(&args.targets, args.force)?;
    if targets.is_empty() {
        return Err(UsageError("the ranges hold no address".into()).into());
    }
    let pinger = Pinger::new(
        targets.iter().any(IpAddr::is_ipv4),
        targets.iter().any(IpAddr::is_ipv6),
    )?;
    pinger.reserve(targets.len());
    for (family, kind) in pinger.kinds() {
        log::debug!("{family}: {}", kind.as_str());
    }
    let started = Instant::now();
    let results = sweep_sharded(Arc::new(pinger), &targets, &args, started).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut found: Vec<(IpAddr, Duration)> = targets
        .iter()
        .zip(results)
        .filter_map(|(a, r)| r.map(|r| (*a, r)))
        .collect();
    found.sort();
    write_results(
        &mut io::BufWriter::new(io::stdout().lock()),
        args.format,
        &found,
        targets.len(),
        elapsed,
    )?;
    Ok(if found.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Splits the targets over one sender task per CPU (each at its share of
/// the rate), all on the same sockets: on fast paths (loopback, a LAN) the
/// kernel's work per echo request, done on the sending CPU, is the limit.
async fn sweep_sharded(
    pinger: Arc<Pinger>,
    targets: &[IpAddr],
    args: &SweepArgs,
    started: Instant,
) -> anyhow::Result<Vec<Option<Duration>>> {
    // One shard per thread the runtime has (one for the current-thread
    // runtime that `netmon sweep` uses).
    let cpus = match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => 1,
        _ => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
    };
    // Below ~1000/s per shard one sender keeps up easily.
    let shards = cpus
        .min(targets.len())
        .min((args.rate / 1000).max(1) as usize)
        .max(1);
    let rate = (args.rate / shards as u32).max(1);
    let finished = Arc::new(AtomicU64::new(0));
    let alive = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..shards)
        .map(|s| {
            let mine: Vec<IpAddr> = targets.iter().skip(s).step_by(shards).copied().collect();
            let shard = Shard {
                pinger: Arc::clone(&pinger),
                rate,
                timeout: args.timeout,
                retries: args.retries,
                finished: Arc::clone(&finished),
                alive: Arc::clone(&alive),
            };
            tokio::spawn(async move { shard.run(&mine, started).await })
        })
        .collect();
    let mut progress = Progress::new("sweep", targets.len() as u64);
    let mut results = vec![None; targets.len()];
    for (s, mut h) in handles.into_iter().enumerate() {
        let part = loop {
            tokio::select! {
                r = &mut h => break r.map_err(|e| anyhow::anyhow!("a sweep task failed: {e}"))?,
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    let a = alive.load(Ordering::Relaxed);
                    progress.update(finished.load(Ordering::Relaxed), || format!("{a} alive"));
                }
            }
        };
        for (k, r) in part.into_iter().enumerate() {
            results[s + k * shards] = r;
        }
    }
    progress.finish();
    Ok(results)
}

/// One sender's share of a sweep.
struct Shard {
    pinger: Arc<Pinger>,
    rate: u32,
    timeout: Duration,
    retries: u32,
    /// Targets finished and found alive, over all shards (for progress).
    finished: Arc<AtomicU64>,
    alive: Arc<AtomicU64>,
}

impl Shard {
    /// Sends, retries and collects until every target has answered or used
    /// up its attempts. One task: replies come over a channel, timeouts from a
    /// queue in send order (one timeout for all, so deadlines come in order).
    async fn run(&self, targets: &[IpAddr], started: Instant) -> Vec<Option<Duration>> {
        /// Marks a probe that never left: it times out without asking the pinger.
        const NOT_SENT: u64 = u64::MAX;
        let tag = |i: usize, attempt: u32| ((i as u64) << 32) | u64::from(attempt);
        let untag = |t: u64| ((t >> 32) as usize, t as u32);
        let pinger = &self.pinger;
        let mut plan = Plan::new(targets.len(), self.retries);
        let mut pacer = Pacer::new(self.rate, started);
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Duration)>();
        let mut deadlines: VecDeque<(Instant, u64, u64)> = VecDeque::new();
        let mut reported = 0;
        let mut sent = 0u64;
        while !plan.done() {
            while let Ok((t, rtt)) = rx.try_recv() {
                let (i, attempt) = untag(t);
                self.alive.fetch_add(1, Ordering::Relaxed);
                plan.outcome(i, attempt, Some(rtt));
            }
            let now = Instant::now();
            while let Some(&(at, id, t)) = deadlines.front() {
                if at > now {
                    break;
                }
                deadlines.pop_front();
                if id == NOT_SENT || pinger.expire(id) {
                    let (i, attempt) = untag(t);
                    plan.outcome(i, attempt, None);
                }
            }
            self.finished
                .fetch_add((plan.finished() - reported) as u64, Ordering::Relaxed);
            reported = plan.finished();
            if plan.done() {
                break;
            }
            let mut wake = deadlines.front().map(|d| d.0);
            if plan.has_next() {
                match pacer.poll(now) {
                    None => {
                        let (i, attempt) = plan.next().expect("has_next said so");
                        let addr = targets[i];
                        let id = match pinger.send_tagged(addr, tx.clone(), tag(i, attempt)).await {
                            Ok(id) => id,
                            Err(e) => {
                                log::debug!("echo request to {addr} not sent: {e}");
                                NOT_SENT
                            }
                        };
                        deadlines.push_back((Instant::now() + self.timeout, id, tag(i, attempt)));
                        sent += 1;
                        if sent.is_multiple_of(16) {
                            pinger.drain_now();
                        }
                        continue;
                    }
                    Some(at) => wake = Some(wake.map_or(at, |w| w.min(at))),
                }
            }
            let wake = wake.unwrap_or_else(|| now + self.timeout);
            tokio::select! {
                () = tokio::time::sleep_until(wake.into()) => {}
                Some((t, rtt)) = rx.recv() => {
                    let (i, attempt) = untag(t);
                    self.alive.fetch_add(1, Ordering::Relaxed);
                    plan.outcome(i, attempt, Some(rtt));
                }
            }
        }
        self.finished
            .fetch_add((plan.finished() - reported) as u64, Ordering::Relaxed);
        plan.into_results()
    }
}

/// Alive hosts, sorted, then the summary.
fn write_results(
    out: &mut impl Write,
    format: Format,
    found: &[(IpAddr, Duration)],
    scanned: usize,
    elapsed: f64,
) -> io::Result<()> {
    for (addr, rtt) in found {
        let rtt_ms = rtt.as_secs_f64() * 1e3;
        match format {
            // An address and a finite float need no JSON escaping: written
            // directly, a /16 is printed without a map per line.
            Format::Json => writeln!(
                out,
                r#"{{"type":"host","addr":"{addr}","rtt_ms":{rtt_ms}}}"#
            )?,
            Format::Text => writeln!(out, "{addr:<39} alive  {} ms", super::render::ms(rtt_ms))?,
        }
    }
    match format {
        Format::Json => {
            let v = json!({"type": "sweep_summary", "scanned": scanned, "alive": found.len(), "elapsed_s": elapsed});
            writeln!(out, "{v}")?;
        }
        Format::Text => writeln!(
            out,
            "{} of {scanned} addresses alive in {elapsed:.3} s",
            found.len()
        )?,
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spaces_sends_and_limits_bursts() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000, t0);
        assert_eq!(p.poll(t0), None);
        assert_eq!(p.poll(t0), Some(t0 + Duration::from_millis(1)));
        assert_eq!(p.poll(t0 + Duration::from_millis(1)), None);
        // After 100 ms of silence: a 2 ms burst, then back to the rate.
        let later = t0 + Duration::from_millis(101);
        let sent = (0..100).take_while(|_| p.poll(later).is_none()).count();
        assert_eq!(sent, 3);
        // At a high rate, sends over one second match the rate.
        let mut fast = Pacer::new(50_000, t0);
        let mut n = 0;
        let mut now = t0;
        while now < t0 + Duration::from_secs(1) {
            match fast.poll(now) {
                None => n += 1,
                Some(at) => now = at,
            }
        }
        assert_eq!(n, 50_000);
    }

    #[test]
    fn plan_retries_silent_targets_then_gives_up() {
        let mut plan = Plan::new(3, 1);
        let first: Vec<_> = std::iter::from_fn(|| plan.next()).collect();
        assert_eq!(first, [(0, 0), (1, 0), (2, 0)]);
        plan.outcome(1, 0, Some(Duration::from_millis(1)));
        plan.outcome(0, 0, None);
        plan.outcome(2, 0, None);
        assert!(!plan.done());
        assert_eq!(plan.next(), Some((0, 1)));
        assert_eq!(plan.next(), Some((2, 1)));
        assert_eq!(plan.next(), None);
        plan.outcome(0, 1, None);
        plan.outcome(2, 1, Some(Duration::from_millis(2)));
        assert!(plan.done());
        assert_eq!(
            plan.into_results(),
            [
                None,
                Some(Duration::from_millis(1)),
                Some(Duration::from_millis(2))
            ]
        );
    }

    #[test]
    fn no_retries() {
        let mut plan = Plan::new(1, 0);
        assert_eq!(plan.next(), Some((0, 0)));
        plan.outcome(0, 0, None);
        assert!(plan.done());
        assert_eq!(plan.next(), None);
    }
}
