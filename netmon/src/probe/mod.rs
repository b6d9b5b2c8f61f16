//! Active probers: ICMP echo (ping, sweep) and TCP connect (scan), and the
//! continuous probes of the monitor.
//!
//! Only `icmp` and `tcp` touch sockets; `targets`, `wire` and the
//! schedulers in `ping`/`sweep` are pure. What a probe measures is a
//! `report::ProbeStats`; the text and JSON renderers of `report` print it,
//! for `netmon ping` as for the monitor.
//!
//! May use: `report` (values, renderers, `Format`), `sys` (clocks,
//! signals), `units`. Must not use: `monitor` (the monitor drives the
//! continuous probes, not the other way round).

pub mod continuous;
mod icmp;
mod ping;
mod pinger;
mod progress;
mod scan;
mod sweep;
pub(crate) mod targets;
mod tcp;
pub(crate) mod wire;

use std::time::Duration;

use clap::Args;

use crate::{report::Format, units::parse_positive_duration};

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 every target answered; 1 some target never answered \
    (no reply, or no echo request could be sent to it: the reason is in the output), or a \
    runtime failure; 2 usage error."
)]
pub struct PingArgs {
    /// Hosts to ping: names, IPv4 or IPv6 addresses
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Echo requests per target
    #[arg(long, short = 'c', default_value_t = 5)]
    pub count: u64,
    /// Time between two requests to one target
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_positive_duration)]
    pub interval: Duration,
    /// How long to wait for each reply
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Say which socket kind is used
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Ctrl-C or SIGTERM stops a sweep early; it then prints the hosts found \
    so far and the summary.\n\n\
    Exit status: 0 some host answered and every address could be probed; 1 no host answered, \
    or some address could not be probed (no echo request could be sent: the reason is in the \
    output), or a runtime failure; 2 usage error."
)]
pub struct SweepArgs {
    /// Address ranges: CIDR (192.0.2.0/24, 2001:db8::/120) or A-B
    #[arg(required = true, value_name = "CIDR|RANGE")]
    pub targets: Vec<String>,
    /// Echo requests per second, all targets together, in every second (at most 1000000)
    #[arg(long, value_name = "PPS", default_value_t = 1000)]
    pub rate: u32,
    /// How long to wait for a reply before retrying
    #[arg(long, value_name = "DUR", default_value = "500ms", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// Extra attempts for a silent host
    #[arg(long, default_value_t = 1)]
    pub retries: u32,
    /// Allow more than 65,536 targets
    #[arg(long)]
    pub force: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Say which socket kind is used
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Hosts to scan: names, IPv4 or IPv6 addresses
    #[arg(required = true, value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Ports: 22,80,443 or 1-1024 or - (all 65535), mixed
    #[arg(long, short = 'p', value_name = "SPEC", default_value = "1-1024")]
    pub ports: String,
    /// Connections in flight [default: from RLIMIT_NOFILE]
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// How long to wait for each connect
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// Extra attempts for a port that timed out (more, one at a time, on a
    /// host that rate-limits its answers)
    #[arg(long, default_value_t = 1)]
    pub retries: u32,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

pub async fn ping(args: PingArgs) -> anyhow::Result<std::process::ExitCode> {
    ping::run(args).await
}

pub async fn sweep(args: SweepArgs) -> anyhow::Result<std::process::ExitCode> {
    sweep::run(args).await
}

pub async fn scan(args: ScanArgs) -> anyhow::Result<std::process::ExitCode> {
    scan::run(args).await
}
