//! `netmon` without a subcommand: check the arguments, attach, count until
//! asked to stop, print the summary.

use std::{
    io::{self, IsTerminal},
    process::ExitCode,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};

use super::{Config, Ended, flowtable::FlowTable, xdp::XdpSource};
use crate::{
    UsageError,
    cli::MonitorArgs,
    export, probe,
    report::{
        Format, Sink, Sinks, live,
        metrics::{MetricsSink, MetricsState},
    },
    sys::{self, netif, netlink, signal::shutdown_signal},
};

pub async fn run_monitor(args: MonitorArgs) -> Result<ExitCode> {
    let iface = match args.iface.clone() {
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
    // Exporters' sockets too: a taken port attaches nothing.
    let exporters = Exporters::open(&args, ifindex).await?;
    let slot_bytes = size_of::<netmon_common::FlowSlot>() as u64;
    let flow_slots = args
        .flow_slots
        .unwrap_or_else(|| netmon_common::default_flow_slots(netif::l2_cache_bytes(), slot_bytes));
    // The flow table takes its memory before anything counts (see
    // FlowTable::new): a busy link's first second then finds it ready.
    let idle_ns = u64::try_from(args.idle_timeout.as_nanos()).unwrap_or(u64::MAX);
    let table = FlowTable::try_new(args.max_flows as usize, idle_ns).map_err(|e| {
        anyhow::anyhow!(
            "cannot allocate the flow table for --max-flows {} (about {} MiB): {e}; give a \
             smaller --max-flows",
            args.max_flows,
            FlowTable::memory_bound(args.max_flows as usize).div_ceil(1 << 20)
        )
    })?;
    let attachment = sys::Attachment::attach(&iface, ifindex, args.xdp_mode, flow_slots)?;
    let probes = probes.map(probe::continuous::Prepared::start);
    announce(
        &iface,
        ifindex,
        attachment.mode.as_str(),
        &args,
        flow_slots,
        attachment.ring_size(),
    );
    let cfg = Config {
        link_bps: netif::link_speed_bps(&iface),
        iface,
        interval: args.interval,
        duration: args.duration,
        top: args.top,
        mono_to_unix_ns: sys::mono_to_unix_ns(),
    };
    let xdp_mode = attachment.mode.as_str();
    let mut source = XdpSource::new(attachment, table)?.with_if_counters(&cfg.iface);
    // Without --format, a terminal gets the live view; a pipe, text;
    // --quiet, nothing.
    let live = !args.quiet && args.format.is_none() && io::stdout().is_terminal();
    // `q` in the live view ends the run as a signal does.
    let quit = Arc::new(tokio::sync::Notify::new());
    let shutdown = or_notified(shutdown, Arc::clone(&quit));
    // Every output is a sink; a new one (an exporter) is pushed here
    // beside the one of --format.
    let mut sinks = Sinks::new();
    if live {
        source = with_self_cost(source);
        sinks.push(open_live_view(
            &cfg,
            xdp_mode,
            (args.max_flows, args.idle_timeout),
            quit,
        )?);
    } else if !args.quiet {
        sinks.push(
            args.format
                .unwrap_or(Format::Text)
                .sink(io::stdout().lock()),
        );
    }
    let _metrics_server = exporters.start(&mut sinks, &cfg.iface, xdp_mode);
    let result = super::run(
        &cfg,
        &mut source,
        &mut sinks,
        shutdown,
        probes.as_ref(),
        links,
    )
    .await
    .context("monitor stopped");
    // Finished by monitor::run; after an error, dropping them aborts them.
    drop(probes);
    let ended = result?;
    if ended == Ended::InterfaceGone {
        eprintln!(
            "netmon: interface {} was deleted or moved to another network namespace; \
             stopped counting (the summary has everything counted until then)",
            cfg.iface
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Says on stderr what netmon counts on, and tells a supervisor (or a
/// test) through `NOTIFY_SOCKET` that it is ready: everything that crosses
/// the interface from here on is counted.
fn announce(
    iface: &str,
    ifindex: u32,
    mode: &str,
    args: &MonitorArgs,
    flow_slots: u32,
    (ring_entries, ring_bytes): (u32, usize),
) {
    let slot_bytes = size_of::<netmon_common::FlowSlot>() as u64;
    eprintln!(
        "netmon: counting on {iface} (ifindex {ifindex}) in {mode} XDP mode, flow table up to {} \
         flows (about {} MiB, --max-flows), {} kernel flow slots per CPU ({} KiB each), eviction \
         rings of {} flows per CPU ({:.1} MiB in all); {}",
        args.max_flows,
        FlowTable::memory_bound(args.max_flows as usize).div_ceil(1 << 20),
        flow_slots,
        (u64::from(flow_slots) * slot_bytes) >> 10,
        ring_entries,
        ring_bytes as f64 / f64::from(1 << 20),
        match args.duration {
            Some(d) => format!("stopping after {d:?} or on Ctrl-C"),
            None => "Ctrl-C to stop".to_owned(),
        }
    );
    let status = format!("READY=1\nSTATUS=counting on {iface} in {mode} XDP mode");
    if let Err(e) = sys::notify::notify(&status) {
        log::warn!("cannot tell NOTIFY_SOCKET that netmon is ready: {e}");
    }
}

/// The header of the live view shows what the programs cost: the kernel
/// times them while the view is open.
fn with_self_cost(source: XdpSource) -> XdpSource {
    match sys::bpf_stats::RunStats::enable() {
        Ok(run_stats) => source.with_run_stats(run_stats),
        Err(e) => {
            log::warn!("{e}; the live view shows no self-cost");
            source
        }
    }
}

/// `shutdown`, or `quit` notified, whichever comes first.
async fn or_notified(shutdown: impl Future<Output = ()>, quit: Arc<tokio::sync::Notify>) {
    tokio::select! {
        () = shutdown => {}
        () = quit.notified() => {}
    }
}

/// The live view on stdout's terminal, of a table of up to `max_flows`
/// flows that leave it after `idle_timeout`; `q` in it notifies `quit`.
fn open_live_view(
    cfg: &Config,
    xdp_mode: &str,
    (max_flows, idle_timeout): (u32, std::time::Duration),
    quit: Arc<tokio::sync::Notify>,
) -> Result<Box<dyn Sink>> {
    let setup = live::Setup {
        iface: cfg.iface.clone(),
        xdp_mode: xdp_mode.to_owned(),
        max_flows,
        link_bps: cfg.link_bps,
        idle_timeout_s: idle_timeout.as_secs_f64(),
    };
    Ok(Box::new(live::LiveSink::open(setup, move || {
        quit.notify_one();
    })?))
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

/// The exports' sockets, opened before anything is attached.
struct Exporters {
    metrics: Option<tokio::net::TcpListener>,
    ipfix: Option<export::ipfix::IpfixSink>,
}

impl Exporters {
    async fn open(args: &MonitorArgs, ifindex: u32) -> Result<Self> {
        if args.quiet && args.metrics.is_none() && args.ipfix.is_none() {
            return Err(UsageError(
                "--quiet prints nothing on stdout: export with --metrics ADDR or --ipfix \
                 HOST:PORT, or leave out --quiet"
                    .into(),
            )
            .into());
        }
        let metrics = match args.metrics {
            Some(addr) => Some(export::metrics::bind(addr).await?),
            None => None,
        };
        let ipfix = match &args.ipfix {
            Some(target) => Some(export::ipfix::IpfixSink::new(
                export::ipfix::resolve(target)?,
                args.ipfix_domain.unwrap_or(ifindex),
                args.ipfix_active_timeout,
            )?),
            None => None,
        };
        Ok(Exporters { metrics, ipfix })
    }

    /// Pushes the exporters' sinks onto `sinks` and starts the metrics
    /// endpoint (served until the returned guard is dropped).
    fn start(self, sinks: &mut Sinks<'_>, iface: &str, xdp_mode: &str) -> Option<AbortOnDrop> {
        if let Some(ipfix) = self.ipfix {
            sinks.push(Box::new(ipfix));
        }
        self.metrics.map(|listener| {
            let state = Arc::new(Mutex::new(MetricsState::new(iface, xdp_mode)));
            sinks.push(Box::new(MetricsSink::new(Arc::clone(&state))));
            AbortOnDrop(export::metrics::serve(listener, state))
        })
    }
}

/// Aborts a task when dropped (a server that lives as long as the run).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
