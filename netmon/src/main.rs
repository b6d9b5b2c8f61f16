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
struct XdpSource {
    attachment: sys::Attachment,
    table: flowtable::FlowTable,
    /// Reused buffer of kernel sightings.
    seen: Vec<flowtable::Occupancy>,
}

impl XdpSource {
    /// Takes the final records of evicted flows from the ring.
    fn drain(&mut self) {
        self.seen.clear();
        self.attachment.drain_evicted(&mut self.seen);
        for o in &self.seen {
            self.table.ended(o);
        }
    }
}

impl monitor::Source for XdpSource {
    fn counters(&mut self) -> Result<Counters> {
        let mut c = self.attachment.counters()?;
        // Packets of flows the full table could not take join those the
        // kernel could not count to a flow.
        c.flow_insert_failed += self.table.untracked().0;
        Ok(c)
    }
    fn flows(&mut self) -> Result<Vec<(FlowKey, FlowValue)>> {
        // The slots first, then the ring (see Attachment::drain_evicted).
        self.table.new_round();
        for o in &self.attachment.occupancies()? {
            self.table.seen(o);
        }
        self.drain();
        Ok(self.table.snapshot())
    }
    fn remove_flow(&mut self, key: &FlowKey) -> Result<Option<FlowValue>> {
        Ok(self.table.remove(key))
    }
    fn service(&mut self) {
        if let Err(e) = self.attachment.publish_clock() {
            log::warn!("{e}");
        }
        self.drain();
    }
    fn now_ns(&self) -> u64 {
        sys::monotonic_ns()
    }
    fn finish(&mut self) {
        self.attachment.detach();
        // Detaching does not wait for runs of the program already under way
        // on other CPUs (they finish within microseconds); the final reads
        // come after them.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    fn drain_log(&mut self) {
        self.attachment.flush_log();
    }
}

/// Reads `clock` in ns.
fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer for clock_gettime.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Offset from CLOCK_MONOTONIC to Unix time. The kernel stamps flows with
/// the monotonic time netmon publishes to it every 10 ms.
fn mono_to_unix_ns() -> i128 {
    let mono = clock_ns(libc::CLOCK_MONOTONIC);
    clock_ns(libc::CLOCK_REALTIME) - mono
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
        idle_timeout: args.idle_timeout,
        mono_to_unix_ns: mono_to_unix_ns(),
    };
    let mut source = XdpSource {
        attachment,
        table: flowtable::FlowTable::new(args.max_flows as usize),
        seen: Vec::new(),
    };
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
    let mut watch = netlink::LinkWatch::open(ifindex)
        .context("cannot watch the interface's link state (netlink)")?;
    // Checked again after subscribing, so a deletion in between is seen.
    if sys::ifindex(iface).ok() != Some(ifindex) {
        return Err(UsageError(format!(
            "interface '{iface}' went away while netmon started"
        ))
        .into());
    }
    let mut up = netif::link_up(iface);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
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
