//! netmon: a network monitor for Linux. See README.md.

mod cli;
mod flowtable;
#[cfg(test)]
mod fuzz;
mod monitor;
mod netif;
mod netlink;
mod output;
mod probe;
mod stats;
mod sys;
mod units;

use std::{
    io::{self, Write},
    process::ExitCode,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

use anyhow::{Context, Result};
use clap::Parser;
use netmon_common::{Counters, FlowKey, FlowValue};

use crate::cli::{Cli, Command, MonitorArgs};

/// An error in what the user asked for: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("netmon: {} (see netmon --help)", cli::usage_line(&e));
            return ExitCode::from(2);
        }
    };
    let verbose = match &cli.command {
        None => cli.monitor.verbose,
        Some(Command::Ping(a)) => a.verbose,
        Some(Command::Sweep(a)) => a.verbose,
        Some(Command::Scan(_)) => false,
    };
    StderrLog::install(verbose);

    // ping and sweep drive one ICMP socket per address family: on one
    // thread they avoid cross-thread wake-ups that cost more than the work
    // on fast paths (a sweep of 127.0.0.0/20: 13 ms against 20 ms median).
    // The monitor and the scan (connects in flight on every core) use all.
    let mut builder = match &cli.command {
        Some(Command::Ping(_) | Command::Sweep(_)) => tokio::runtime::Builder::new_current_thread(),
        None | Some(Command::Scan(_)) => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netmon: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            None => run_monitor(cli.monitor).await,
            Some(Command::Ping(args)) => probe::ping(args).await,
            Some(Command::Sweep(args)) => probe::sweep(args).await,
            Some(Command::Scan(args)) => probe::scan(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // A closed stdout (`netmon | head`) is not an error.
            if e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("netmon: {e:#}");
            if e.chain().any(<dyn std::error::Error>::is::<UsageError>) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The attached program as a monitor [`monitor::Source`]: its counters,
/// and the flow table merged from its per-CPU flow caches.
///
/// A thread of its own ([`RingDrainer`]) empties the kernel's eviction ring
/// every [`monitor::SERVICE_EVERY`] into `Shared::evicted`, whatever the
/// monitor loop is doing: the ring (about 10,000 flows) never waits behind
/// an interval's work or a growing flow table, only for the lock, which
/// nothing holds for longer than one read of the maps. The loop moves the
/// records into the table between intervals ([`monitor::Source::service`])
/// and at each interval, after reading the slots.
struct XdpSource {
    shared: Arc<Mutex<Shared>>,
    drainer: Option<RingDrainer>,
    table: flowtable::FlowTable,
    /// Reused buffers: kernel sightings, and records taken from `evicted`.
    seen: Vec<flowtable::Occupancy>,
    ended: Vec<flowtable::Occupancy>,
}

/// What the ring thread and the monitor loop share.
struct Shared {
    attachment: sys::Attachment,
    /// Final records taken from the eviction ring, oldest first, not yet in
    /// the flow table.
    evicted: Vec<flowtable::Occupancy>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A panic elsewhere cannot leave Shared half-updated in a way that
    // matters here: keep going with what is there.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The thread that empties the eviction ring and publishes the clock the
/// program stamps flows with, every 10 ms: neither waits behind the
/// monitor loop's interval work.
struct RingDrainer {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

impl RingDrainer {
    fn start(shared: Arc<Mutex<Shared>>) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("netmon-ring".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || {
                    let mut clock_failed = false;
                    while !stop.load(Ordering::Acquire) {
                        thread::park_timeout(monitor::SERVICE_EVERY);
                        let mut s = lock(&shared);
                        let Shared {
                            attachment,
                            evicted,
                        } = &mut *s;
                        if let Err(e) = attachment.publish_clock()
                            && !std::mem::replace(&mut clock_failed, true)
                        {
                            log::warn!("{e}; flow first/last-seen times stop advancing");
                        }
                        attachment.drain_evicted(evicted);
                    }
                }
            })
            .context("cannot start the eviction ring thread")?;
        Ok(RingDrainer { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        // A panic in the thread has been reported on stderr already.
        let _ = self.thread.join();
    }
}

impl XdpSource {
    fn new(attachment: sys::Attachment, table: flowtable::FlowTable) -> Result<Self> {
        let shared = Arc::new(Mutex::new(Shared {
            attachment,
            evicted: Vec::new(),
        }));
        let drainer = RingDrainer::start(Arc::clone(&shared))?;
        Ok(XdpSource {
            shared,
            drainer: Some(drainer),
            table,
            seen: Vec::new(),
            ended: Vec::new(),
        })
    }

    /// Moves the final records of evicted flows into the table: those the
    /// ring thread took, then what is in the ring now.
    fn take_evicted(&mut self) {
        {
            let mut s = lock(&self.shared);
            let Shared {
                attachment,
                evicted,
            } = &mut *s;
            attachment.drain_evicted(evicted);
            std::mem::swap(evicted, &mut self.ended);
        }
        for o in &self.ended {
            self.table.ended(o);
        }
        self.ended.clear();
    }
}

impl Drop for XdpSource {
    fn drop(&mut self) {
        if let Some(d) = self.drainer.take() {
            d.stop();
        }
    }
}

impl monitor::Source for XdpSource {
    fn counters(&mut self) -> Result<Counters> {
        let mut c = lock(&self.shared).attachment.counters()?;
        // Packets of flows the full table could not take join those the
        // kernel could not count to a flow.
        c.flow_insert_failed += self.table.untracked().0;
        Ok(c)
    }
    fn flow_changes(&mut self, changed: &mut Vec<(FlowKey, FlowValue)>) -> Result<usize> {
        // The slots first, then the ring (see Attachment::drain_evicted):
        // every record taken after the slots were read goes in after them.
        self.table.new_round();
        self.seen.clear();
        self.seen
            .extend(lock(&self.shared).attachment.occupancies()?.iter());
        for o in &self.seen {
            self.table.seen(o);
        }
        self.take_evicted();
        self.table.take_changes(changed);
        Ok(self.table.len())
    }
    fn expire_idle(&mut self, removed: &mut Vec<(FlowKey, FlowValue)>) -> Result<()> {
        self.table.expire(sys::monotonic_ns(), removed);
        Ok(())
    }
    fn flows(&mut self) -> Result<Vec<(FlowKey, FlowValue)>> {
        self.flow_changes(&mut Vec::new())?;
        Ok(self.table.snapshot())
    }
    fn service(&mut self) {
        self.take_evicted();
    }
    fn finish(&mut self) {
        lock(&self.shared).attachment.detach();
        // Detaching does not wait for runs of the program already under way
        // on other CPUs (they finish within microseconds); the final reads
        // come after them.
        thread::sleep(std::time::Duration::from_millis(20));
        if let Some(d) = self.drainer.take() {
            d.stop();
        }
    }
    fn drain_log(&mut self) {
        lock(&self.shared).attachment.flush_log();
    }
}

/// Offset from CLOCK_MONOTONIC to Unix time. The kernel stamps flows with
/// the monotonic time netmon publishes to it every 10 ms.
fn mono_to_unix_ns() -> i128 {
    let mono = sys::clock_ns(libc::CLOCK_MONOTONIC);
    sys::clock_ns(libc::CLOCK_REALTIME) - mono
}

/// A future that resolves on Ctrl-C, SIGTERM or SIGHUP. The handlers are
/// installed here, before it is first polled, so a signal that arrives
/// right after netmon says it is counting still ends the run with a
/// summary. SIGHUP (the terminal went away, or a supervisor's reload) ends
/// the run like SIGTERM: with the summary and exit 0, never with counts
/// lost.
fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    })
}

async fn run_monitor(args: MonitorArgs) -> Result<ExitCode> {
    let iface = match args.iface {
        Some(i) => i,
        None => netif::default_interface().ok_or_else(|| {
            UsageError(
                "no default route to take the interface from; name one with --iface IF".into(),
            )
        })?,
    };
    let ifindex = sys::ifindex(&iface)?;
    let links = watch_link(&iface, ifindex)?;
    let shutdown = shutdown_signal()?;
    // Probes are prepared first, so a bad target ends the run before
    // anything is attached; they start sending once the program counts.
    let probes = if args.ping.is_empty() && args.tcp.is_empty() {
        None
    } else {
        Some(
            probe::continuous::ContinuousProbes::prepare(&args.ping, &args.tcp, args.interval)
                .await?,
        )
    };
    let slot_bytes = size_of::<netmon_common::FlowSlot>() as u64;
    let flow_slots = args
        .flow_slots
        .unwrap_or_else(|| netmon_common::default_flow_slots(netif::l2_cache_bytes(), slot_bytes));
    let attachment = sys::Attachment::attach(&iface, ifindex, args.xdp_mode, flow_slots)?;
    let probes = probes.map(probe::continuous::Prepared::start);
    eprintln!(
        "netmon: counting on {iface} (ifindex {}) in {} XDP mode, up to {} flows, {} kernel flow \
         slots per CPU ({} KiB each); {}",
        ifindex,
        attachment.mode.as_str(),
        args.max_flows,
        flow_slots,
        (u64::from(flow_slots) * slot_bytes) >> 10,
        match args.duration {
            Some(d) => format!("stopping after {d:?} or on Ctrl-C"),
            None => "Ctrl-C to stop".to_owned(),
        }
    );
    let cfg = monitor::Config {
        link_bps: netif::link_speed_bps(&iface),
        iface,
        interval: args.interval,
        duration: args.duration,
        format: args.format,
        top: args.top,
        mono_to_unix_ns: mono_to_unix_ns(),
    };
    let idle_ns = u64::try_from(args.idle_timeout.as_nanos()).unwrap_or(u64::MAX);
    let mut source = XdpSource::new(
        attachment,
        flowtable::FlowTable::new(args.max_flows as usize, idle_ns),
    )?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = monitor::run(
        &cfg,
        &mut source,
        &mut out,
        shutdown,
        probes.as_ref(),
        links,
    )
    .await
    .context("monitor stopped");
    // Finished by monitor::run; after an error, dropping them aborts them.
    drop(probes);
    let ended = result?;
    out.flush()?;
    if ended == monitor::Ended::InterfaceGone {
        eprintln!(
            "netmon: interface {} was deleted or moved to another network namespace; \
             stopped counting (the summary has everything counted until then)",
            cfg.iface
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Watches `iface` (index `ifindex`) through rtnetlink: a channel of its
/// link changes (up/down, each only when it changes) and its deletion.
fn watch_link(
    iface: &str,
    ifindex: u32,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<netlink::LinkEvent>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watch = match netlink::LinkWatch::open(ifindex) {
        Ok(w) => w,
        Err(e) => {
            // Counting does not depend on it: go on without link events.
            log::warn!(
                "cannot watch {iface}'s link state through netlink ({e}); link changes and a \
                 deleted interface will not be reported"
            );
            return Ok(rx);
        }
    };
    // Checked again after subscribing, so a deletion in between is seen.
    if sys::ifindex(iface).ok() != Some(ifindex) {
        anyhow::bail!("interface '{iface}' went away while netmon started");
    }
    let mut up = netif::link_up(iface);
    tokio::spawn(async move {
        loop {
            let events = match watch.next().await {
                Ok(events) => events,
                Err(e) => {
                    log::warn!("netlink: {e}; link changes are no longer reported");
                    return;
                }
            };
            for event in events {
                let report = match event {
                    netlink::LinkEvent::Deleted => true,
                    netlink::LinkEvent::State { up: now } => up.replace(now) != Some(now),
                };
                if report && tx.send(event).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

/// `log` backend: kernel (aya-log) and loader messages on stderr.
struct StderrLog {
    level: log::LevelFilter,
}

impl StderrLog {
    fn install(verbose: bool) {
        let level = if verbose {
            log::LevelFilter::Debug
        } else {
            log::LevelFilter::Warn
        };
        let logger = Box::leak(Box::new(StderrLog { level }));
        if log::set_logger(logger).is_ok() {
            log::set_max_level(level);
        }
    }
}

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // aya's own debug output (relocations, feature probes) is for aya's
        // developers, not for operators.
        let limit = if metadata.target().starts_with("aya") {
            log::Level::Warn
        } else {
            log::Level::Trace
        };
        metadata.level() <= self.level && metadata.level() <= limit
    }
    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "netmon: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            );
        }
    }
    fn flush(&self) {}
}
