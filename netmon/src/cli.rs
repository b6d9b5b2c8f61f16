//! Command line: the monitor is the default command; `ping`, `sweep` and
//! `scan` are the active probers.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::{
    probe::{PingArgs, ScanArgs, SweepArgs},
    report::Format,
    sys::XdpMode,
    units::parse_positive_duration,
};

#[derive(Debug, Parser)]
#[command(
    name = "netmon",
    version,
    about = "Network monitor for Linux: exact per-flow XDP counters, rates, and ICMP/TCP probers",
    long_about = "Network monitor for Linux.\n\n\
        Without a command, attaches an XDP program to an interface, counts every received \
        packet per flow without dropping or changing any, and prints packets, bytes, pps and \
        bit/s every interval and a summary with the top flows at the end (after --duration, \
        Ctrl-C or SIGTERM).\n\n\
        DUR values take a unit: 500ms, 2s, 1m.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub monitor: MonitorArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ping targets (ICMP echo, IPv4 and IPv6): loss, RTT percentiles, jitter.
    Ping(PingArgs),
    /// Find the hosts that answer ICMP echo in address ranges (CIDR or A-B).
    Sweep(SweepArgs),
    /// TCP connect scan: open, closed and filtered ports, connect latency.
    Scan(ScanArgs),
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Interface to monitor [default: the interface of the default route]
    #[arg(long, short = 'i', value_name = "IF")]
    pub iface: Option<String>,

    /// Time between two rate lines
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_positive_duration)]
    pub interval: Duration,

    /// Stop after this long and print the summary [default: until Ctrl-C or SIGTERM]
    #[arg(long, value_name = "DUR", value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,

    /// Output format [default: the live view when stdout is a terminal,
    /// text otherwise]
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Print nothing on stdout: no interval lines, no summary, no live
    /// view; only the exports (--metrics, --ipfix) and stderr's start line
    /// and warnings. For running as a service
    #[arg(long, short = 'q', conflicts_with = "format")]
    pub quiet: bool,

    /// XDP attach mode
    #[arg(long, value_enum, default_value_t)]
    pub xdp_mode: XdpMode,

    /// Flows tracked at once (about 240 bytes of memory each, taken at
    /// start); packets of flows beyond them are still counted in the totals
    /// and reported as untracked (flow_insert_failed)
    #[arg(long, value_name = "N", default_value_t = netmon_common::DEFAULT_MAX_FLOWS,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_flows: u32,

    /// Flow slots per CPU in the kernel's flow cache (a power of two, 64 to
    /// 1048576); a flow whose slot is taken by another goes to userspace
    /// with its counts, so this trades memory for fewer evictions
    /// [default: as many as fit a quarter of the CPU's L2 cache, 1024 to
    /// 16384; 4096 when the L2 size is unknown]
    #[arg(long, value_name = "N", value_parser = parse_flow_slots)]
    pub flow_slots: Option<u32>,

    /// Number of flows listed in the summary and, in NDJSON, per interval
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,

    /// Remove flows silent this long from the flow table (their counts
    /// stay in the summary), making room for new ones
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,

    /// Serve Prometheus metrics (OpenMetrics text) at http://ADDR/metrics:
    /// PORT (on 127.0.0.1), HOST:PORT or [V6]:PORT. Only on the address named.
    #[arg(long, value_name = "ADDR", value_parser = crate::export::metrics::parse_addr)]
    pub metrics: Option<std::net::SocketAddr>,

    /// Export flow records over IPFIX (RFC 7011, UDP) to the collector at
    /// HOST:PORT (e.g. 127.0.0.1:4739)
    #[arg(long, value_name = "HOST:PORT")]
    pub ipfix: Option<String>,

    /// Send a record of a flow still active after this long (its counts
    /// so far; the next record starts from there)
    #[arg(long, value_name = "DUR", default_value = "60s", value_parser = parse_positive_duration)]
    pub ipfix_active_timeout: Duration,

    /// IPFIX observation domain [default: the interface's index]
    #[arg(long, value_name = "N")]
    pub ipfix_domain: Option<u32>,

    /// Also ping TARGET every interval (repeatable)
    #[arg(long = "ping", value_name = "TARGET")]
    pub ping: Vec<String>,

    /// Also measure TCP connect latency to HOST:PORT every interval (repeatable)
    #[arg(long = "tcp", value_name = "HOST:PORT")]
    pub tcp: Vec<String>,

    /// Say more on stderr (attach mode, map sizes, kernel log lines)
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

fn parse_flow_slots(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a whole number"))?;
    if n.is_power_of_two() && (64..=1 << 20).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "{n} is not a power of two from 64 to 1048576 (e.g. 4096)"
        ))
    }
}

/// One line for a command-line error: clap's first line (which names the
/// bad value), or, for missing arguments, which ones ("a TARGET is required").
#[must_use]
pub fn usage_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() == ErrorKind::MissingRequiredArgument {
        if let Some(ContextValue::Strings(args)) = e.get(ContextKind::InvalidArg) {
            let names: Vec<String> = args
                .iter()
                .map(|a| a.trim_end_matches("...").replace(['<', '>'], ""))
                .collect();
            if !names.is_empty() {
                return format!("a {} is required", names.join(" and a "));
            }
        }
    }
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn monitor_is_the_default_command() {
        let cli = Cli::try_parse_from([
            "netmon",
            "--iface",
            "lo",
            "--duration",
            "7s",
            "--format",
            "json",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.monitor.iface.as_deref(), Some("lo"));
        assert_eq!(cli.monitor.duration, Some(Duration::from_secs(7)));
        assert_eq!(cli.monitor.format, Some(Format::Json));
        assert_eq!(cli.monitor.interval, Duration::from_secs(1));
        let cli = Cli::try_parse_from(["netmon"]).unwrap();
        assert_eq!(cli.monitor.format, None, "auto: live view on a terminal");
    }

    #[test]
    fn missing_arguments_are_named() {
        for (args, want) in [
            (&["netmon", "ping"][..], "a TARGET is required"),
            (
                &["netmon", "sweep", "--rate", "5"],
                "a CIDR|RANGE is required",
            ),
            (&["netmon", "scan", "-p", "80"], "a HOST is required"),
        ] {
            let err = Cli::try_parse_from(args).expect_err("must be rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert_eq!(usage_line(&err), want, "{args:?}");
        }
        let err = Cli::try_parse_from(["netmon", "--duration", "7x"]).unwrap_err();
        assert!(usage_line(&err).contains("'7x'"), "{}", usage_line(&err));
    }

    #[test]
    fn malformed_values_are_usage_errors() {
        for args in [
            &["netmon", "--duration", "7x"][..],
            &["netmon", "--format", "yaml"],
            &["netmon", "--interval", "0s"],
            &["netmon", "--max-flows", "0"],
            &["netmon", "--flow-slots", "1000"],
            &["netmon", "--flow-slots", "32"],
        ] {
            let err = Cli::try_parse_from(args).expect_err("must be rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
