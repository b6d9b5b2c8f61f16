//! Rendering of monitor results as text lines or NDJSON. Writes to any
//! `impl Write`; knows nothing about where the numbers came from.

pub mod ipfix_wire;

use std::{
    io::{self, Write},
    net::IpAddr,
};

use netmon_common::{Counters, SIZE_CLASS_LABELS};
use serde_json::{Value, json};

use crate::{
    monitor::stats::{Flow, FlowSummary, IntervalFlows, Rates, proto_name},
    probe::continuous::{self, ProbeStats},
    units,
};

/// Output format shared by every command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object per line (NDJSON) on stdout, nothing else on stdout.
    Json,
}

/// Everything the end-of-run summary shows.
pub struct Summary<'a> {
    pub iface: &'a str,
    pub duration_s: f64,
    pub counters: &'a Counters,
    /// Distinct flows of the run (exact or estimated), the top flows
    /// (sorted and truncated), and what was dropped of retired flows.
    pub flows: &'a FlowSummary,
    /// Adds to a kernel monotonic timestamp to give Unix time in ns.
    pub mono_to_unix_ns: i128,
    /// Statistics of the `--ping`/`--tcp` probes since the start.
    pub probes: &'a [ProbeStats],
}

/// The `--ping`/`--tcp` probes of one interval: text lines under the rate
/// line, or one `{"type":"probes"}` object.
pub fn write_probes(
    w: &mut impl Write,
    format: Format,
    unix_time: f64,
    stats: &[ProbeStats],
) -> io::Result<()> {
    match format {
        Format::Json => {
            let v = json!({
                "type": "probes",
                "time": unix_time,
                "probes": continuous::stats_json_array(stats),
            });
            writeln!(w, "{v}")
        }
        Format::Text => {
            for s in stats {
                writeln!(w, "    {}", continuous::interval_line(s))?;
            }
            Ok(())
        }
    }
}

fn proto_json(proto: u8) -> Value {
    proto_name(proto).map_or_else(|| json!(proto), |n| json!(n))
}

fn proto_text(proto: u8) -> String {
    proto_name(proto).map_or_else(|| proto.to_string(), str::to_owned)
}

/// One line per interval (text: plus the interval's top flows by bytes).
/// A change of the watched interface's link state (administratively up and
/// with carrier, or not): one NDJSON `link` object, or one text line.
pub fn write_link(
    w: &mut impl Write,
    format: Format,
    iface: &str,
    unix_time: f64,
    up: bool,
) -> io::Result<()> {
    let state = if up { "up" } else { "down" };
    match format {
        Format::Json => {
            let v = json!({"type": "link", "time": unix_time, "iface": iface, "state": state});
            writeln!(w, "{v}")
        }
        Format::Text => {
            let secs = unix_time as u64 % 86_400;
            writeln!(
                w,
                "{:02}:{:02}:{:02}   link {iface} {state}",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            )
        }
    }
}

pub fn write_rates(
    w: &mut impl Write,
    format: Format,
    iface: &str,
    unix_time: f64,
    first: bool,
    r: &Rates,
    flows: &IntervalFlows,
) -> io::Result<()> {
    match format {
        Format::Json => {
            let mut v = json!({
                "type": "rates",
                "time": unix_time,
                "iface": iface,
                "interval_s": r.interval_s,
                "packets": r.packets,
                "bytes": r.bytes,
                "pps": r.pps,
                "bps": r.bps,
                "flows_in_table": flows.in_table,
                "active_flows": flows.active,
                "top_bytes": flows.top_bytes.iter().map(|f| flow_json(f, None)).collect::<Vec<_>>(),
                "top_packets": flows.top_packets.iter().map(|f| flow_json(f, None)).collect::<Vec<_>>(),
            });
            if let Some(u) = r.util_pct {
                v["util_pct"] = json!(u);
            }
            writeln!(w, "{v}")
        }
        Format::Text => {
            if first {
                writeln!(
                    w,
                    "{:<10} {:>12} {:>12} {:>14} {:>16} {:>7} {:>8}",
                    "time(UTC)", "packets", "bytes", "rate(pps)", "rate(bit/s)", "util", "flows"
                )?;
            }
            let secs = unix_time as u64 % 86_400;
            let util = r
                .util_pct
                .map_or_else(|| "-".to_owned(), |u| format!("{u:.1}%"));
            writeln!(
                w,
                "{:02}:{:02}:{:02}   {:>12} {:>12} {:>14} {:>16} {:>7} {:>8}",
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                r.packets,
                units::bytes(r.bytes),
                units::packets_per_second(r.pps),
                units::bits_per_second(r.bps),
                util,
                flows.active,
            )?;
            for f in flows.top_bytes.iter().take(TEXT_TOP_PER_INTERVAL) {
                let per_s = |n: u64| n as f64 / r.interval_s.max(f64::EPSILON);
                writeln!(
                    w,
                    "    {:<7} {} -> {}  {}  {}",
                    proto_text(f.proto),
                    endpoint(f, f.src, f.sport),
                    endpoint(f, f.dst, f.dport),
                    units::packets_per_second(per_s(f.packets)),
                    units::bits_per_second(per_s(f.bytes) * 8.0),
                )?;
            }
            Ok(())
        }
    }
}

/// Flows listed under each text rate line.
const TEXT_TOP_PER_INTERVAL: usize = 3;

/// `addr:port`, `[v6]:port`, or the bare address for protocols without
/// ports.
fn endpoint(f: &Flow, addr: IpAddr, port: u16) -> String {
    match (addr, f.has_ports()) {
        (IpAddr::V6(a), true) => format!("[{a}]:{port}"),
        (a, true) => format!("{a}:{port}"),
        (a, false) => a.to_string(),
    }
}

/// A flow as JSON; with `mono_to_unix_ns`, its first and last packet times
/// as Unix seconds.
fn flow_json(f: &Flow, mono_to_unix_ns: Option<i128>) -> Value {
    let mut v = json!({
        "src": f.src.to_string(),
        "dst": f.dst.to_string(),
        "sport": f.sport,
        "dport": f.dport,
        "proto": proto_json(f.proto),
        "packets": f.packets,
        "bytes": f.bytes,
    });
    if let Some(offset) = mono_to_unix_ns {
        let unix = |ns: u64| (i128::from(ns) + offset) as f64 / 1e9;
        v["first_seen"] = json!(unix(f.first_seen_ns));
        v["last_seen"] = json!(unix(f.last_seen_ns));
    }
    if f.proto == netmon_common::PROTO_TCP {
        v["tcp_flags"] = json!(f.tcp_flags);
    }
    v
}

fn counters_json(c: &Counters) -> Value {
    let sizes: serde_json::Map<String, Value> = SIZE_CLASS_LABELS
        .iter()
        .zip(c.size_classes.iter())
        .map(|(label, n)| ((*label).to_owned(), json!(n)))
        .collect();
    json!({
        "tcp": c.tcp, "udp": c.udp, "icmp": c.icmp, "icmpv6": c.icmpv6,
        "other_ip": c.other_ip, "arp": c.arp, "other_l2": c.other_l2,
        "malformed": c.malformed,
        "size_classes": sizes,
        "tcp_syn": c.tcp_syn, "tcp_fin": c.tcp_fin, "tcp_rst": c.tcp_rst,
        "flow_insert_failed": c.flow_insert_failed,
        "flow_records": c.flow_records,
    })
}

/// The end-of-run summary.
pub fn write_summary(w: &mut impl Write, format: Format, s: &Summary) -> io::Result<()> {
    let c = s.counters;
    match format {
        Format::Json => {
            let mut v = json!({
                "type": "summary",
                "iface": s.iface,
                "duration_s": s.duration_s,
                "packets": c.packets,
                "bytes": c.bytes,
                "flows_tracked": s.flows.tracked,
                "flows_tracked_exact": s.flows.tracked_exact,
                "retired_flows_kept": s.flows.retired_kept,
                "retired_flows_dropped": s.flows.retired_dropped,
                "retired_flows_dropped_max_bytes": s.flows.retired_dropped_max_bytes,
                "counters": counters_json(c),
                "flows": s.flows.top.iter().map(|f| flow_json(f, Some(s.mono_to_unix_ns))).collect::<Vec<_>>(),
            });
            if !s.probes.is_empty() {
                v["probes"] = continuous::stats_json_array(s.probes);
            }
            writeln!(w, "{v}")
        }
        Format::Text => {
            let secs = s.duration_s.max(f64::EPSILON);
            writeln!(w)?;
            writeln!(
                w,
                "summary for {} over {:.2} s: {} packets, {} (average {}, {})",
                s.iface,
                s.duration_s,
                c.packets,
                units::bytes(c.bytes),
                units::packets_per_second(c.packets as f64 / secs),
                units::bits_per_second(c.bytes as f64 * 8.0 / secs),
            )?;
            writeln!(
                w,
                "  by protocol (packets): tcp {}  udp {}  icmp {}  icmpv6 {}  other-ip {}  arp {}  other-l2 {}  malformed {}",
                c.tcp, c.udp, c.icmp, c.icmpv6, c.other_ip, c.arp, c.other_l2, c.malformed
            )?;
            write!(w, "  by frame size (bytes, FCS excluded):")?;
            for (label, n) in SIZE_CLASS_LABELS.iter().zip(c.size_classes.iter()) {
                write!(w, "  {label}: {n}")?;
            }
            writeln!(w)?;
            writeln!(
                w,
                "  tcp segments with: syn {}  fin {}  rst {}",
                c.tcp_syn, c.tcp_fin, c.tcp_rst
            )?;
            if s.flows.tracked_exact {
                write!(w, "  flows: {} tracked", s.flows.tracked)?;
            } else {
                write!(
                    w,
                    "  flows: about {} tracked (estimate, standard error 0.4%)",
                    s.flows.tracked
                )?;
            }
            write!(w, " ({} kernel flow records)", c.flow_records)?;
            if c.flow_insert_failed > 0 {
                write!(
                    w,
                    "; {} packets counted to no flow (raise --max-flows)",
                    c.flow_insert_failed
                )?;
            }
            writeln!(w)?;
            if s.flows.retired_dropped > 0 {
                writeln!(
                    w,
                    "  per-flow counts leave out {} records of idle flows, of at most {} bytes \
                     each (the summary keeps the {} biggest; totals are exact)",
                    s.flows.retired_dropped,
                    s.flows.retired_dropped_max_bytes,
                    s.flows.retired_kept
                )?;
            }
            write_top_text(w, &s.flows.top)?;
            if !s.probes.is_empty() {
                writeln!(w, "  probes:")?;
                for p in s.probes {
                    continuous::write_stats_text(w, p, PROBE_HISTOGRAM_BINS)?;
                }
            }
            Ok(())
        }
    }
}

/// Latency histogram rows per probe target in the text summary.
const PROBE_HISTOGRAM_BINS: usize = 10;

/// The top-flows table of the text summary.
fn write_top_text(w: &mut impl Write, top: &[Flow]) -> io::Result<()> {
    if top.is_empty() {
        return Ok(());
    }
    let rows: Vec<[String; 3]> = top
        .iter()
        .map(|f| {
            [
                proto_text(f.proto),
                endpoint(f, f.src, f.sport),
                endpoint(f, f.dst, f.dport),
            ]
        })
        .collect();
    let width = rows
        .iter()
        .map(|r| r[1].len().max(r[2].len()))
        .max()
        .unwrap_or(0)
        .max(11);
    writeln!(w, "  top {} flows by bytes:", top.len())?;
    writeln!(
        w,
        "    {:<7} {:<width$}    {:<width$} {:>12} {:>12}",
        "proto", "source", "destination", "packets", "bytes"
    )?;
    for (f, [proto, src, dst]) in top.iter().zip(rows) {
        writeln!(
            w,
            "    {proto:<7} {src:<width$} -> {dst:<width$} {:>12} {:>12}",
            f.packets, f.bytes
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            src: "198.51.100.2".parse::<IpAddr>().unwrap(),
            dst: "198.51.100.1".parse::<IpAddr>().unwrap(),
            sport: 40000,
            dport: 9000,
            proto: netmon_common::PROTO_UDP,
            packets: 100,
            bytes: 14_200,
            first_seen_ns: 1_000_000_000,
            last_seen_ns: 2_000_000_000,
            tcp_flags: 0,
        }
    }

    #[test]
    fn summary_json_follows_the_contract() {
        let counters = Counters {
            packets: 101,
            bytes: 14_242,
            udp: 100,
            arp: 1,
            ..Counters::default()
        };
        let flows = FlowSummary {
            top: vec![flow()],
            tracked: 1,
            tracked_exact: true,
            retired_kept: 4096,
            retired_dropped: 0,
            retired_dropped_max_bytes: 0,
        };
        let mut out = Vec::new();
        write_summary(
            &mut out,
            Format::Json,
            &Summary {
                iface: "veth0",
                duration_s: 7.0,
                counters: &counters,
                flows: &flows,
                mono_to_unix_ns: 1_700_000_000_000_000_000,
                probes: &[],
            },
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["packets"], 101);
        assert_eq!(v["bytes"], 14_242);
        assert_eq!(v["counters"]["arp"], 1);
        assert_eq!(v["flows_tracked"], 1);
        assert_eq!(v["flows_tracked_exact"], true);
        let f = &v["flows"][0];
        assert_eq!(f["src"], "198.51.100.2");
        assert_eq!(f["dport"], 9000);
        assert_eq!(f["proto"], "udp");
        assert_eq!(f["bytes"], 14_200);
        assert!((f["first_seen"].as_f64().unwrap() - 1_700_000_001.0).abs() < 1e-3);
    }

    #[test]
    fn unknown_protocols_are_numbers() {
        assert_eq!(proto_json(47), json!(47));
        assert_eq!(proto_json(6), json!("tcp"));
    }

    #[test]
    fn rates_json_and_text() {
        let r = Rates {
            interval_s: 1.0,
            packets: 10,
            bytes: 1000,
            pps: 10.0,
            bps: 8000.0,
            util_pct: None,
        };
        let mut out = Vec::new();
        write_rates(
            &mut out,
            Format::Json,
            "lo",
            1.5,
            true,
            &r,
            &IntervalFlows::default(),
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "rates");
        assert_eq!(v["pps"], 10.0);
        assert!(v.get("util_pct").is_none());
        let mut out = Vec::new();
        write_rates(
            &mut out,
            Format::Text,
            "lo",
            3661.0,
            true,
            &r,
            &IntervalFlows::default(),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("01:01:01"), "{text}");
        assert!(text.contains("8.00 kbit/s"), "{text}");
    }
}
