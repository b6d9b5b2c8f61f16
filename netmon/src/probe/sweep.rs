//! `netmon sweep`: echo requests to every address of the ranges, paced by
//! one global rate, replies collected as they come, silent hosts retried.
//!
//! Targets are streamed from the ranges: memory follows the rate (requests
//! in flight) and the hosts found, never the size of the ranges. Ctrl-C or
//! SIGTERM ends a sweep early with what it found so far and the summary.

use std::{
    collections::{BTreeMap, VecDeque},
    io::{self, Write},
    net::IpAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::sync::mpsc;

use super::{
    SweepArgs,
    pinger::{Outcome, Pinger, reason},
    progress::Progress,
    targets::parse_ranges,
};
use crate::{
    UsageError,
    report::{Format, text::ms},
};

/// Highest `--rate`: the pacer remembers the last `rate` send times.
pub const MAX_RATE: u32 = 1_000_000;

/// Spaces sends `1/rate` apart. After a late wake-up it catches up with a
/// burst of at most `burst` worth of sends, and never lets more than
/// `rate` sends into any one-second window (it keeps the times of the last
/// `rate` sends), so the rate holds over every second, not only on average.
#[derive(Debug)]
pub struct Pacer {
    rate: usize,
    period: Duration,
    burst: Duration,
    next: Instant,
    /// Times of the last `rate` sends, oldest first.
    window: VecDeque<Instant>,
}

impl Pacer {
    #[must_use]
    pub fn new(rate: u32, start: Instant) -> Self {
        let rate = rate.clamp(1, MAX_RATE);
        let period = Duration::from_nanos(1_000_000_000 / u64::from(rate));
        Self {
            rate: rate as usize,
            period,
            burst: Duration::from_millis(2).max(period),
            next: start,
            window: VecDeque::with_capacity((rate as usize).min(4096)),
        }
    }

    /// `None`: send now (and the send is booked). `Some(t)`: wait until `t`.
    pub fn poll(&mut self, now: Instant) -> Option<Instant> {
        if self.next > now {
            return Some(self.next);
        }
        if self.window.len() == self.rate {
            let free_at = self.window[0] + Duration::from_secs(1);
            if free_at > now {
                return Some(free_at);
            }
            self.window.pop_front();
        }
        self.window.push_back(now);
        self.next = self.next.max(now.checked_sub(self.burst).unwrap_or(now)) + self.period;
        None
    }

    /// The send booked by the last [`Self::poll`] finished at `at`: its
    /// one-second window counts from then, so that a send delayed in the
    /// kernel cannot bring the next ones closer than a second.
    pub fn sent_at(&mut self, at: Instant) {
        if let Some(last) = self.window.back_mut() {
            *last = (*last).max(at);
        }
    }
}

/// Which address to probe next, and what became of each. Pure. Retries
/// go before fresh addresses, so the queue of silent hosts waiting for
/// another attempt stays as short as the requests of one timeout.
pub struct Plan<I: Iterator> {
    fresh: std::iter::Peekable<I>,
    retries: u32,
    retry: VecDeque<(IpAddr, u32)>,
    /// Addresses taken from the ranges so far.
    pub taken: u64,
    /// Addresses with a verdict (alive, silent after every attempt, not sent).
    pub finished: u64,
    pub alive: Vec<(IpAddr, Duration)>,
    /// Addresses none of whose requests could be sent, by reason.
    pub not_sent: BTreeMap<String, u64>,
}

impl<I: Iterator<Item = IpAddr>> Plan<I> {
    #[must_use]
    pub fn new(fresh: I, retries: u32) -> Self {
        Self {
            fresh: fresh.peekable(),
            retries,
            retry: VecDeque::new(),
            taken: 0,
            finished: 0,
            alive: Vec::new(),
            not_sent: BTreeMap::new(),
        }
    }

    /// The next (address, attempt) to send, if any.
    pub fn next(&mut self) -> Option<(IpAddr, u32)> {
        if let Some(r) = self.retry.pop_front() {
            return Some(r);
        }
        let a = self.fresh.next()?;
        self.taken += 1;
        Some((a, 0))
    }

    /// Whether something waits to be sent.
    pub fn has_next(&mut self) -> bool {
        !self.retry.is_empty() || self.fresh.peek().is_some()
    }

    /// Silent hosts waiting for another attempt.
    #[cfg(test)]
    #[must_use]
    pub fn retries_waiting(&self) -> usize {
        self.retry.len()
    }

    /// The outcome of attempt `attempt` on `addr`.
    pub fn outcome(&mut self, addr: IpAddr, attempt: u32, outcome: Outcome) {
        match outcome {
            Outcome::Reply(rtt) => {
                self.alive.push((addr, rtt));
                self.finished += 1;
            }
            Outcome::NoReply if attempt < self.retries => self.retry.push_back((addr, attempt + 1)),
            Outcome::NoReply => self.finished += 1,
            // A request that cannot leave now will not leave on a retry
            // either (no route, a local firewall, a broadcast address).
            Outcome::NotSent(why) => {
                *self.not_sent.entry(why).or_default() += 1;
                self.finished += 1;
            }
        }
    }

    #[must_use]
    pub fn not_sent_total(&self) -> u64 {
        self.not_sent.values().sum()
    }
}

/// Exit status of a sweep: 0 when some host answered and a request could
/// be sent to every address; 1 when no host answered, or some address
/// could not be probed at all.
#[must_use]
pub fn exit_status(alive: usize, not_sent: u64) -> u8 {
    u8::from(alive == 0 || not_sent > 0)
}

/// Requests in flight, by a small slot number (the tag the pinger hands
/// back with a reply). Freed slots are reused.
#[derive(Debug, Default)]
struct Slots {
    used: Vec<Option<(IpAddr, u32)>>,
    free: Vec<usize>,
}

impl Slots {
    fn put(&mut self, v: (IpAddr, u32)) -> usize {
        if let Some(i) = self.free.pop() {
            self.used[i] = Some(v);
            i
        } else {
            self.used.push(Some(v));
            self.used.len() - 1
        }
    }

    /// Requests in flight.
    fn in_use(&self) -> usize {
        self.used.len() - self.free.len()
    }

    fn take(&mut self, i: usize) -> Option<(IpAddr, u32)> {
        let v = self.used.get_mut(i)?.take();
        if v.is_some() {
            self.free.push(i);
        }
        v
    }
}

/// What the summary says.
struct Summary {
    scanned: u64,
    total: u128,
    sent: u64,
    interrupted: bool,
    elapsed: f64,
}

#[allow(
    clippy::too_many_lines,
    reason = "one send/receive/timeout loop, easier to follow in one piece"
)]
pub async fn run(args: SweepArgs) -> anyhow::Result<ExitCode> {
    if args.rate == 0 || args.rate > MAX_RATE {
        return Err(UsageError(format!(
            "--rate must be from 1 to {MAX_RATE} echo requests per second"
        ))
        .into());
    }
    let ranges = parse_ranges(&args.targets, args.force)?;
    if ranges.is_empty() {
        return Err(UsageError("the ranges hold no address".into()).into());
    }
    // Late replies are not reported by a sweep: finished probes are
    // remembered only as long as a probe waits.
    let pinger = Pinger::with_memory(ranges.has_v4(), ranges.has_v6(), args.timeout)?;
    let in_flight = (f64::from(args.rate) * args.timeout.as_secs_f64() * 2.0) as usize;
    pinger.reserve(in_flight.min(1 << 20));
    for (family, kind) in pinger.kinds() {
        log::debug!("{family}: {}", kind.as_str());
    }
    let mut shutdown = std::pin::pin!(crate::sys::signal::shutdown_signal()?);
    let stdout = io::stdout();
    let started = Instant::now();
    let mut plan = Plan::new(ranges.iter(), args.retries);
    let mut pacer = Pacer::new(args.rate, started);
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Duration)>();
    // (deadline, probe id, slot), in send order: one timeout for all, so
    // deadlines come in order.
    let mut deadlines: VecDeque<(Instant, u64, usize)> = VecDeque::new();
    let mut slots = Slots::default();
    let mut progress = Progress::new("sweep", u64::try_from(ranges.len()).unwrap_or(u64::MAX));
    let mut sent = 0u64;
    let mut interrupted = false;
    loop {
        while let Ok((slot, rtt)) = rx.try_recv() {
            if let Some((a, attempt)) = slots.take(slot as usize) {
                plan.outcome(a, attempt, Outcome::Reply(rtt));
            }
        }
        let now = Instant::now();
        while let Some(&(at, id, slot)) = deadlines.front() {
            if at > now {
                break;
            }
            deadlines.pop_front();
            if pinger.expire(id) {
                if let Some((a, attempt)) = slots.take(slot) {
                    plan.outcome(a, attempt, Outcome::NoReply);
                }
            }
        }
        progress.update(plan.finished, || format!("{} alive", plan.alive.len()));
        let mut wake = deadlines.front().map(|d| d.0);
        if plan.has_next() {
            match pacer.poll(now) {
                None => {
                    let (addr, attempt) = plan.next().expect("has_next said so");
                    let slot = slots.put((addr, attempt));
                    match pinger.send_tagged(addr, tx.clone(), slot as u64).await {
                        Ok(id) => {
                            sent += 1;
                            let now = Instant::now();
                            pacer.sent_at(now);
                            deadlines.push_back((now + args.timeout, id, slot));
                        }
                        Err(e) => {
                            slots.take(slot);
                            let why = reason(&e);
                            write_not_sent(&mut stdout.lock(), args.format, addr, &why)?;
                            plan.outcome(addr, attempt, Outcome::NotSent(why));
                        }
                    }
                    if sent.is_multiple_of(16) {
                        pinger.drain_now();
                    }
                    continue;
                }
                Some(at) => wake = Some(wake.map_or(at, |w| w.min(at))),
            }
        } else if slots.in_use() == 0 {
            // Every address has its verdict.
            break;
        }
        let wake = wake.unwrap_or_else(|| now + args.timeout);
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            Some((slot, rtt)) = rx.recv() => {
                if let Some((a, attempt)) = slots.take(slot as usize) {
                    plan.outcome(a, attempt, Outcome::Reply(rtt));
                }
            }
            () = &mut shutdown => {
                interrupted = true;
                break;
            }
        }
    }
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let mut found = std::mem::take(&mut plan.alive);
    found.sort();
    let summary = Summary {
        scanned: plan.taken,
        total: ranges.len(),
        sent,
        interrupted,
        elapsed,
    };
    write_results(
        &mut io::BufWriter::new(stdout.lock()),
        args.format,
        &found,
        &plan.not_sent,
        &summary,
    )?;
    Ok(ExitCode::from(exit_status(
        found.len(),
        plan.not_sent_total(),
    )))
}

/// One address none of whose requests could be sent, as it happens.
fn write_not_sent(out: &mut impl Write, format: Format, addr: IpAddr, why: &str) -> io::Result<()> {
    match format {
        Format::Json => {
            let v = json!({"type": "not_sent", "addr": addr.to_string(), "error": why});
            writeln!(out, "{v}")
        }
        Format::Text => writeln!(out, "{addr:<39} not sent: {why}"),
    }
}

/// Alive hosts, sorted, then the summary.
fn write_results(
    out: &mut impl Write,
    format: Format,
    found: &[(IpAddr, Duration)],
    not_sent: &BTreeMap<String, u64>,
    s: &Summary,
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
            Format::Text => writeln!(out, "{addr:<39} alive  {} ms", ms(rtt_ms))?,
        }
    }
    let not_sent_total: u64 = not_sent.values().sum();
    match format {
        Format::Json => {
            let v = json!({
                "type": "sweep_summary",
                "scanned": s.scanned,
                "alive": found.len(),
                "elapsed_s": s.elapsed,
                "total": u64::try_from(s.total).unwrap_or(u64::MAX),
                "sent": s.sent,
                "not_sent": not_sent_total,
                "errors": not_sent,
                "interrupted": s.interrupted,
            });
            writeln!(out, "{v}")?;
        }
        Format::Text => {
            write!(
                out,
                "{} of {} addresses alive in {:.3} s",
                found.len(),
                s.scanned,
                s.elapsed
            )?;
            if not_sent_total > 0 {
                let why: Vec<String> = not_sent.iter().map(|(r, n)| format!("{r}: {n}")).collect();
                write!(
                    out,
                    "; {not_sent_total} could not be probed ({})",
                    why.join(", ")
                )?;
            }
            if s.interrupted {
                write!(
                    out,
                    "; interrupted after {} of {} addresses",
                    s.scanned, s.total
                )?;
            }
            writeln!(out)?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// The most sends any window [t, t + 1 s) holds.
    fn max_per_second(times: &[Instant]) -> usize {
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..times.len() {
            while times[hi] - times[lo] >= Duration::from_secs(1) {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    /// Drives a pacer with a clock that the sender sometimes loses for
    /// `stall` (a busy CPU), for `secs` seconds; returns the send times.
    fn drive(rate: u32, secs: u64, stall: Duration, every: u64) -> Vec<Instant> {
        let t0 = Instant::now();
        let mut p = Pacer::new(rate, t0);
        let mut now = t0;
        let mut times = Vec::new();
        let mut n = 0u64;
        while now < t0 + Duration::from_secs(secs) {
            match p.poll(now) {
                None => {
                    times.push(now);
                    n += 1;
                    if every > 0 && n.is_multiple_of(every) {
                        now += stall;
                    }
                }
                // Timer wake-ups come late by up to 0.1 ms.
                Some(at) => now = at + Duration::from_micros(n % 100),
            }
        }
        times
    }

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
    }

    #[test]
    fn pacer_holds_the_rate_over_every_second() {
        // (rate, stall, sends between stalls, least average share of the rate)
        for (rate, stall, every, least) in [
            (1000, Duration::ZERO, 0, 0.999),
            (100_000, Duration::from_micros(1500), 150, 0.99),
            // Stalls longer than the burst are not made up for.
            (100_000, Duration::from_millis(30), 5000, 0.5),
            (7, Duration::from_millis(900), 3, 0.3),
        ] {
            let times = drive(rate, 5, stall, every);
            let max = max_per_second(&times);
            assert!(max <= rate as usize, "rate {rate}: {max} in one second");
            let per_s = times.len() as f64 / 5.0;
            assert!(
                per_s >= f64::from(rate) * least,
                "rate {rate}: {per_s} per second on average"
            );
        }
    }

    fn a(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
    }

    #[test]
    fn plan_retries_before_fresh_addresses_then_gives_up() {
        let mut plan = Plan::new((1..=3).map(a), 1);
        assert_eq!(plan.next(), Some((a(1), 0)));
        assert_eq!(plan.next(), Some((a(2), 0)));
        plan.outcome(a(1), 0, Outcome::NoReply);
        plan.outcome(a(2), 0, Outcome::Reply(Duration::from_millis(1)));
        // The retry of 1 goes before the fresh 3.
        assert_eq!(plan.next(), Some((a(1), 1)));
        assert_eq!(plan.next(), Some((a(3), 0)));
        assert_eq!(plan.next(), None);
        plan.outcome(a(1), 1, Outcome::NoReply);
        plan.outcome(a(3), 0, Outcome::NotSent("Network is unreachable".into()));
        assert_eq!(plan.next(), None, "no retry after a send error");
        assert_eq!((plan.taken, plan.finished), (3, 3));
        assert_eq!(plan.alive, [(a(2), Duration::from_millis(1))]);
        assert_eq!(plan.not_sent["Network is unreachable"], 1);
        assert_eq!(exit_status(plan.alive.len(), plan.not_sent_total()), 1);
    }

    #[test]
    fn plan_streams_without_holding_the_ranges() {
        // A range of 2^24 addresses: the plan holds the iterator, not them.
        let set = parse_ranges(&["2001:db8:ff::/104".into()], true).unwrap();
        let mut plan = Plan::new(set.iter(), 1);
        for _ in 0..1000 {
            let (addr, attempt) = plan.next().unwrap();
            plan.outcome(addr, attempt, Outcome::NoReply);
            // Silent hosts come back once, right away.
            assert_eq!(plan.retries_waiting(), 1);
            let (again, attempt) = plan.next().unwrap();
            assert_eq!((again, attempt), (addr, 1));
            plan.outcome(again, attempt, Outcome::NoReply);
        }
        assert_eq!((plan.taken, plan.finished), (1000, 1000));
        assert_eq!(plan.retries_waiting(), 0);
    }

    #[test]
    fn exit_status_of_a_sweep() {
        assert_eq!(exit_status(3, 0), 0);
        assert_eq!(exit_status(0, 0), 1);
        assert_eq!(exit_status(3, 1), 1);
    }

    #[test]
    fn slots_are_reused() {
        let mut s = Slots::default();
        let x = s.put((a(1), 0));
        let y = s.put((a(2), 0));
        assert_eq!(s.in_use(), 2);
        assert_eq!(s.take(x), Some((a(1), 0)));
        assert_eq!(s.take(x), None);
        assert_eq!(s.in_use(), 1);
        assert_eq!(s.put((a(3), 1)), x);
        assert_eq!(s.take(y), Some((a(2), 0)));
    }

    #[test]
    fn summary_text_names_the_reasons_and_the_interruption() {
        let mut out = Vec::new();
        let not_sent = BTreeMap::from([("Network is unreachable".to_owned(), 6)]);
        let s = Summary {
            scanned: 6,
            total: 6,
            sent: 0,
            interrupted: false,
            elapsed: 0.0,
        };
        write_results(&mut out, Format::Text, &[], &not_sent, &s).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "0 of 6 addresses alive in 0.000 s; 6 could not be probed (Network is unreachable: 6)\n"
        );
    }
}
