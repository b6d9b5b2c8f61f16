//! `netmon scan`: TCP connect scan with bounded concurrency.

use std::{
    collections::{HashMap, VecDeque},
    io::{self, Write},
    net::{IpAddr, SocketAddr},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;

use super::{
    ScanArgs,
    progress::Progress,
    targets::{parse_ports, resolve},
    tcp::{Attempt, Spare, connect_with, raise_nofile_limit},
};
use crate::{
    UsageError,
    report::{Format, text::ms},
};

/// Descriptors kept free for everything else when sizing the concurrency.
const RESERVED_FDS: u64 = 64;
/// Upper bound of the default concurrency.
const MAX_DEFAULT_CONCURRENCY: u64 = 4096;
/// How often a port is retried for reasons that are not its own (our own
/// ephemeral port, no local port or descriptor free).
const MAX_AGAIN: u32 = 50;

/// The verdict on one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    Open(Duration),
    Closed,
    Filtered,
}

/// The default number of connects in flight for a descriptor limit.
#[must_use]
pub fn default_concurrency(nofile: u64) -> usize {
    nofile
        .saturating_sub(RESERVED_FDS)
        .clamp(16, MAX_DEFAULT_CONCURRENCY) as usize
}

/// Attempts a port may get while its host is answering slowly (see
/// [`RetryPlan`]), the first included.
pub const PACED_ATTEMPTS: u32 = 8;
/// Silent retries in a row after which a paced host is taken to drop,
/// not to rate-limit: a host that answers at least once per timeout would
/// have answered one of them.
pub const PACED_SILENT_STREAK: u32 = 3;

/// How the retries of one host go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryMode {
    /// The first retry goes alone: whether it is answered tells a host that
    /// limits its answers (ICMP rate limiting) from one that drops probes.
    Probe,
    /// Silent ports look dropped: retries go out together, `--retries` each.
    Parallel,
    /// The host answers, but not every probe (a rate limit): one retry at a
    /// time, so each one meets a refilled limit; a silent port is retried
    /// next, up to [`PACED_ATTEMPTS`] attempts.
    Paced,
}

/// The retries of the ports of one host that timed out on their first
/// attempt: when each is tried again. Pure.
///
/// Retrying every silent port at once (as netmon did) sends them all into
/// a limit the first wave just exhausted: Linux answers with ICMP errors at
/// most once a second per peer after a burst of 6 (`icmp_ratelimit`,
/// `icmp_msgs_per_sec`), so ports beyond the burst looked filtered. Here a
/// host whose silent ports answer on a retry gets its retries one at a time.
#[derive(Debug)]
pub struct RetryPlan {
    queue: VecDeque<usize>,
    /// Attempts made so far, per port index (first attempts included).
    attempts: HashMap<usize, u32>,
    /// Silent ports out of attempts in the mode they were in.
    exhausted: Vec<usize>,
    mode: RetryMode,
    in_flight: usize,
    parallel: usize,
    retries: u32,
    silent_streak: u32,
}

impl RetryPlan {
    /// Ports (by index) that timed out once; up to `parallel` retries in
    /// flight while the host looks like it drops probes.
    #[must_use]
    pub fn new(silent: impl IntoIterator<Item = usize>, retries: u32, parallel: usize) -> Self {
        let queue: VecDeque<usize> = if retries == 0 {
            VecDeque::new()
        } else {
            silent.into_iter().collect()
        };
        let attempts = queue.iter().map(|&i| (i, 1)).collect();
        Self {
            queue,
            attempts,
            exhausted: Vec::new(),
            mode: RetryMode::Probe,
            in_flight: 0,
            parallel: parallel.max(1),
            retries,
            silent_streak: 0,
        }
    }

    #[must_use]
    pub fn mode(&self) -> RetryMode {
        self.mode
    }

    fn cap(&self) -> u32 {
        match self.mode {
            RetryMode::Paced => (self.retries + 1).max(PACED_ATTEMPTS),
            RetryMode::Probe | RetryMode::Parallel => self.retries + 1,
        }
    }

    /// The next port to retry now, if one may go.
    pub fn next(&mut self) -> Option<usize> {
        let limit = match self.mode {
            RetryMode::Probe | RetryMode::Paced => 1,
            RetryMode::Parallel => self.parallel,
        };
        let cap = self.cap();
        while self.in_flight < limit {
            let i = self.queue.pop_front()?;
            let n = self
                .attempts
                .get_mut(&i)
                .expect("queued ports have a count");
            if *n >= cap {
                self.exhausted.push(i);
                continue;
            }
            *n += 1;
            self.in_flight += 1;
            return Some(i);
        }
        None
    }

    /// The outcome of a retry of port `i`: answered (open, closed or an
    /// ICMP error) or silent again.
    pub fn outcome(&mut self, i: usize, answered: bool) {
        self.in_flight -= 1;
        if answered {
            self.attempts.remove(&i);
            self.silent_streak = 0;
            if self.mode != RetryMode::Paced {
                self.mode = RetryMode::Paced;
                let cap = self.cap();
                let attempts = &self.attempts;
                let (again, out): (Vec<usize>, Vec<usize>) =
                    self.exhausted.drain(..).partition(|p| attempts[p] < cap);
                self.exhausted = out;
                self.queue.extend(again);
            }
            return;
        }
        match self.mode {
            RetryMode::Probe => self.mode = RetryMode::Parallel,
            RetryMode::Paced => {
                self.silent_streak += 1;
                if self.silent_streak >= PACED_SILENT_STREAK {
                    self.mode = RetryMode::Parallel;
                    self.silent_streak = 0;
                }
            }
            RetryMode::Parallel => {}
        }
        if self.attempts[&i] >= self.cap() {
            self.exhausted.push(i);
        } else if self.mode == RetryMode::Paced {
            self.queue.push_front(i);
        } else {
            self.queue.push_back(i);
        }
    }

    /// Whether every retry is done.
    #[must_use]
    pub fn done(&self) -> bool {
        self.queue.is_empty() && self.in_flight == 0
    }
}

/// One attempt on a port, repeated quietly while it says nothing about the
/// port (our own ephemeral port, no local port or descriptor free).
pub async fn attempt_port(
    addr: SocketAddr,
    timeout: Duration,
    spare: &mut Option<Spare>,
) -> io::Result<Attempt> {
    let mut again = 0u32;
    loop {
        match connect_with(addr, timeout, spare).await? {
            Attempt::Again => {
                if again >= MAX_AGAIN {
                    return Err(io::Error::other(format!(
                        "connecting to {addr} keeps failing for lack of local ports or descriptors; lower --concurrency"
                    )));
                }
                again += 1;
                tokio::time::sleep(Duration::from_millis(u64::from(again))).await;
            }
            a => return Ok(a),
        }
    }
}

/// The verdict of an attempt that got an answer.
fn verdict(a: Attempt) -> Option<PortState> {
    match a {
        Attempt::Open(rtt) => Some(PortState::Open(rtt)),
        Attempt::Closed => Some(PortState::Closed),
        Attempt::Unreachable => Some(PortState::Filtered),
        Attempt::Timeout | Attempt::Again => None,
    }
}

/// Scans `ports` of `ip`: first attempts with `concurrency` workers, then
/// the retries of the silent ports as a [`RetryPlan`] says.
async fn scan_host(
    ip: IpAddr,
    ports: Arc<Vec<u16>>,
    concurrency: usize,
    timeout: Duration,
    retries: u32,
) -> anyhow::Result<Vec<PortState>> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency.min(ports.len()).max(1))
        .map(|_| {
            let (next, done, ports) = (Arc::clone(&next), Arc::clone(&done), Arc::clone(&ports));
            tokio::spawn(async move {
                let mut found = Vec::new();
                let mut spare = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&port) = ports.get(i) else { break };
                    let a = attempt_port(SocketAddr::new(ip, port), timeout, &mut spare).await?;
                    found.push((i, verdict(a)));
                    done.fetch_add(1, Ordering::Relaxed);
                    // Refused connects on local paths finish without
                    // awaiting: let the other tasks run now and then.
                    if found.len().is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
                Ok::<_, io::Error>(found)
            })
        })
        .collect();
    let mut progress = Progress::new("scan", ports.len() as u64);
    let mut states = vec![PortState::Filtered; ports.len()];
    let mut silent = Vec::new();
    for w in workers {
        let mut w = w;
        let found = loop {
            tokio::select! {
                r = &mut w => break r,
                () = tokio::time::sleep(Duration::from_millis(100)) => progress.update(done.load(Ordering::Relaxed), || ip.to_string()),
            }
        };
        for (i, s) in found.map_err(|e| anyhow::anyhow!("a scan task failed: {e}"))?? {
            match s {
                Some(s) => states[i] = s,
                None => silent.push(i),
            }
        }
    }
    silent.sort_unstable();
    let mut plan = RetryPlan::new(silent, retries, concurrency);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while let Some(i) = plan.next() {
            let addr = SocketAddr::new(ip, ports[i]);
            tasks.spawn(async move { (i, attempt_port(addr, timeout, &mut None).await) });
        }
        if plan.done() {
            break;
        }
        let Some(r) = tasks.join_next().await else {
            break;
        };
        let (i, a) = r.map_err(|e| anyhow::anyhow!("a scan task failed: {e}"))?;
        match verdict(a?) {
            Some(s) => {
                states[i] = s;
                plan.outcome(i, true);
            }
            None => plan.outcome(i, false),
        }
        progress.update(done.load(Ordering::Relaxed), || format!("{ip}: retries"));
    }
    progress.finish();
    log::debug!("{ip}: retries ended in mode {:?}", plan.mode());
    Ok(states)
}

pub async fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let ports = Arc::new(parse_ports(&args.ports)?);
    let nofile = raise_nofile_limit();
    let concurrency = match args.concurrency {
        Some(0) => return Err(UsageError("--concurrency must be at least 1".into()).into()),
        Some(n) => {
            if n as u64 + RESERVED_FDS > nofile {
                log::warn!(
                    "--concurrency {n} is near the descriptor limit ({nofile}); connects may be retried"
                );
            }
            n
        }
        None => default_concurrency(nofile),
    };
    let mut addrs = Vec::new();
    for h in &args.hosts {
        addrs.push(resolve(h).await?);
    }
    let stdout = io::stdout();
    for (host, ip) in args.hosts.iter().zip(addrs) {
        let started = Instant::now();
        let states = scan_host(
            ip,
            Arc::clone(&ports),
            concurrency,
            args.timeout,
            args.retries,
        )
        .await?;
        let elapsed = started.elapsed().as_secs_f64();
        write_host(
            &mut io::BufWriter::new(stdout.lock()),
            args.format,
            host,
            ip,
            &ports,
            &states,
            elapsed,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Open ports, then the summary of one host.
fn write_host(
    out: &mut impl Write,
    format: Format,
    host: &str,
    ip: IpAddr,
    ports: &[u16],
    states: &[PortState],
    elapsed: f64,
) -> io::Result<()> {
    let open: Vec<(u16, Duration)> = ports
        .iter()
        .zip(states)
        .filter_map(|(&p, s)| {
            if let PortState::Open(d) = s {
                Some((p, *d))
            } else {
                None
            }
        })
        .collect();
    let closed = states.iter().filter(|s| **s == PortState::Closed).count();
    let filtered: Vec<u16> = ports
        .iter()
        .zip(states)
        .filter(|(_, s)| **s == PortState::Filtered)
        .map(|(p, _)| *p)
        .collect();
    match format {
        Format::Json => {
            for (p, d) in &open {
                let v = json!({"type": "port", "host": host, "addr": ip.to_string(), "port": p, "state": "open", "rtt_ms": d.as_secs_f64() * 1e3});
                writeln!(out, "{v}")?;
            }
            let mut v = json!({
                "type": "scan_summary",
                "host": host,
                "addr": ip.to_string(),
                "scanned": ports.len(),
                "open": open.iter().map(|o| o.0).collect::<Vec<_>>(),
                "closed": closed,
                "filtered": filtered.len(),
                "elapsed_s": elapsed,
            });
            // The list of filtered ports while it stays readable.
            if filtered.len() <= 1024 {
                v["filtered_ports"] = json!(filtered);
            }
            writeln!(out, "{v}")?;
        }
        Format::Text => {
            writeln!(out, "{host} ({ip})")?;
            if !open.is_empty() {
                writeln!(out, "{:<10} {:<8} {:>10}", "PORT", "STATE", "CONNECT")?;
            }
            for (p, d) in &open {
                writeln!(
                    out,
                    "{:<10} {:<8} {:>7} ms",
                    format!("{p}/tcp"),
                    "open",
                    ms(d.as_secs_f64() * 1e3)
                )?;
            }
            if !filtered.is_empty() && filtered.len() <= 32 {
                let list: Vec<String> = filtered.iter().map(u16::to_string).collect();
                writeln!(out, "filtered: {}", list.join(","))?;
            }
            writeln!(
                out,
                "{} open, {closed} closed, {} filtered of {} ports in {elapsed:.3} s",
                open.len(),
                filtered.len(),
                ports.len()
            )?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use super::*;

    #[test]
    fn concurrency_follows_the_descriptor_limit() {
        assert_eq!(default_concurrency(1024), 960);
        assert_eq!(default_concurrency(1 << 20), 4096);
        assert_eq!(default_concurrency(10), 16);
    }

    /// Plays a host against a plan: `answers(t)` says whether a retry sent
    /// as the `t`-th retry (0-based, in send order) is answered. Returns the
    /// ports that stayed silent and the number of retries sent.
    fn play(
        silent: usize,
        retries: u32,
        mut answers: impl FnMut(usize, usize) -> bool,
    ) -> (Vec<usize>, usize) {
        let mut plan = RetryPlan::new(0..silent, retries, 64);
        let mut sent = 0;
        let mut answered = Vec::new();
        while !plan.done() {
            let wave: Vec<usize> = std::iter::from_fn(|| plan.next()).collect();
            assert!(!wave.is_empty(), "a plan that is not done sends");
            for i in wave {
                let yes = answers(sent, i);
                sent += 1;
                if yes {
                    answered.push(i);
                }
                plan.outcome(i, yes);
            }
            assert!(sent < 100_000, "bounded");
        }
        let mut left: Vec<usize> = (0..silent).filter(|i| !answered.contains(i)).collect();
        left.sort_unstable();
        (left, sent)
    }

    #[test]
    fn retries_of_a_dropping_host_go_together_and_stop() {
        let mut plan = RetryPlan::new(0..5, 2, 64);
        // The first retry goes alone.
        assert_eq!(plan.next(), Some(0));
        assert_eq!(plan.next(), None);
        plan.outcome(0, false);
        assert_eq!(plan.mode(), RetryMode::Parallel);
        // Then all at once, `retries` each.
        let wave: Vec<usize> = std::iter::from_fn(|| plan.next()).collect();
        assert_eq!(wave, [1, 2, 3, 4, 0]);
        let (left, sent) = play(5, 2, |_, _| false);
        assert_eq!(left, [0, 1, 2, 3, 4]);
        assert_eq!(sent, 10, "two retries each, no more");
        // No retries asked for: none sent.
        let (left, sent) = play(5, 0, |_, _| true);
        assert_eq!((left.len(), sent), (5, 0));
    }

    #[test]
    fn a_rate_limited_host_gets_one_retry_at_a_time() {
        // A host that answers every other retry (one ICMP error per second,
        // one retry per one-second timeout) answers every port in the end,
        // with one retry in flight at a time.
        let (left, sent) = play(10, 1, |t, _| t % 2 == 0);
        assert_eq!(left, Vec::<usize>::new());
        assert_eq!(sent, 19);
        let mut plan = RetryPlan::new(0..3, 1, 64);
        assert_eq!(plan.next(), Some(0));
        plan.outcome(0, true);
        assert_eq!(plan.mode(), RetryMode::Paced);
        assert_eq!(plan.next(), Some(1));
        assert_eq!(plan.next(), None, "one at a time");
        // A silent port is retried next, beyond --retries while paced.
        plan.outcome(1, false);
        assert_eq!(plan.next(), Some(1));
        plan.outcome(1, true);
        assert_eq!(plan.next(), Some(2));
    }

    #[test]
    fn a_dropped_port_on_a_rate_limited_host_ends() {
        // Port 0 is dropped by a firewall; the others answer at one retry
        // in two. The dropped port does not hold up the rest for long, and
        // ends filtered after a bounded number of attempts.
        let (left, sent) = play(6, 1, |t, i| i != 0 && t % 2 == 1);
        assert_eq!(left, [0]);
        assert!(sent <= 6 * PACED_ATTEMPTS as usize, "{sent}");
        // A host that answered once and then drops everything falls back
        // to parallel retries.
        let mut plan = RetryPlan::new(0..4, 1, 64);
        assert_eq!(plan.next(), Some(0));
        plan.outcome(0, true);
        for _ in 0..PACED_SILENT_STREAK {
            let i = plan.next().unwrap();
            assert_eq!(i, 1);
            plan.outcome(i, false);
        }
        assert_eq!(plan.mode(), RetryMode::Parallel);
        let wave: Vec<usize> = std::iter::from_fn(|| plan.next()).collect();
        assert_eq!(wave, [2, 3], "port 1 is out of attempts");
    }

    #[tokio::test]
    async fn scan_of_loopback_ports() {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
            .collect();
        let mut ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        ports.push(free);
        let states = scan_host(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Arc::new(ports),
            2,
            Duration::from_secs(1),
            0,
        )
        .await
        .unwrap();
        assert!(matches!(states[0], PortState::Open(_)));
        assert!(matches!(states[1], PortState::Open(_)));
        assert!(matches!(states[2], PortState::Open(_)));
        assert_eq!(states[3], PortState::Closed);
    }
}
