//! The text sink: lines for people (`--format text`), and the text
//! renderers of probe statistics that `netmon ping` shares.

use std::{
    fmt::Write as _,
    io::{self, Write},
    net::IpAddr,
};

use netmon_common::{DIR_TX, SIZE_CLASS_LABELS};

use super::{
    Flow, HostRtt, Interval, Link, PassiveRttSummary, ProbeKind, ProbeStats, RttProto, RttStats,
    Sink, Summary, proto_name,
};
use crate::units;
use netmon_common::Counters;

/// Flows listed under each rate line.
const TOP_PER_INTERVAL: usize = 3;

/// Latency histogram rows per probe target in the summary.
const PROBE_HISTOGRAM_BINS: usize = 10;

/// Passive-RTT host lines under each rate line, and in the summary (the
/// NDJSON lists them all).
const RTT_HOSTS_PER_INTERVAL: usize = 10;
const RTT_HOSTS_IN_SUMMARY: usize = 20;

/// Writes text lines to `W`, flushed after every interval, link change
/// and the summary (someone is watching).
pub struct TextSink<W: Write> {
    w: W,
    /// The column header goes above the first rate line.
    header_done: bool,
}

impl<W: Write> TextSink<W> {
    pub fn new(w: W) -> Self {
        Self {
            w,
            header_done: false,
        }
    }
}

impl<W: Write> Sink for TextSink<W> {
    /// The rate line, the interval's top flows by bytes under it, then one
    /// line per probe target.
    fn interval(&mut self, i: &Interval) -> anyhow::Result<()> {
        let w = &mut self.w;
        let r = &i.rates;
        if !self.header_done {
            writeln!(
                w,
                "{:<10} {:>12} {:>12} {:>14} {:>16} {:>7} {:>8}",
                "time(UTC)", "packets", "bytes", "rate(pps)", "rate(bit/s)", "util", "flows"
            )?;
            self.header_done = true;
        }
        let util = r
            .util_pct
            .map_or_else(|| "-".to_owned(), |u| format!("{u:.1}%"));
        writeln!(
            w,
            "{}   {:>12} {:>12} {:>14} {:>16} {:>7} {:>8}",
            clock(i.unix_time),
            r.packets,
            units::bytes(r.bytes),
            units::packets_per_second(r.pps),
            units::bits_per_second(r.bps),
            util,
            i.flows.active,
        )?;
        if let Some(line) = counts_line(&i.counts, i.if_counters.as_ref()) {
            writeln!(w, "    {line}")?;
        }
        // The transmit side under the receive side, in the same columns.
        if let Some(tx) = &i.tx {
            let t = &tx.rates;
            let util = t
                .util_pct
                .map_or_else(|| "-".to_owned(), |u| format!("{u:.1}%"));
            writeln!(
                w,
                "      tx   {:>12} {:>12} {:>14} {:>16} {:>7}",
                t.packets,
                units::bytes(t.bytes),
                units::packets_per_second(t.pps),
                units::bits_per_second(t.bps),
                util,
            )?;
            if let Some(line) = counts_line(&tx.counts, None) {
                writeln!(w, "    tx {line}")?;
            }
        }
        for f in i.flows.top_bytes.iter().take(TOP_PER_INTERVAL) {
            let per_s = |n: u64| n as f64 / r.interval_s.max(f64::EPSILON);
            writeln!(
                w,
                "    {:<7} {} -> {}  {}  {}{}{}",
                proto_text(f.proto),
                endpoint(f, f.src, f.sport),
                endpoint(f, f.dst, f.dport),
                units::packets_per_second(per_s(f.packets)),
                units::bits_per_second(per_s(f.bytes) * 8.0),
                tx_mark(f),
                flow_rtt(f),
            )?;
        }
        if let Some(hosts) = &i.passive_rtt {
            write_rtt_hosts(w, hosts, RTT_HOSTS_PER_INTERVAL)?;
        }
        for s in &i.probes {
            let passive = if i.passive_rtt.is_some() {
                passive_p50(s.passive_rtt.as_ref())
            } else {
                String::new()
            };
            writeln!(w, "    {}{passive}", probe_interval_line(s))?;
        }
        w.flush()?;
        Ok(())
    }

    /// `HH:MM:SS   link IFACE down`.
    fn link(&mut self, l: &Link) -> anyhow::Result<()> {
        let state = if l.up { "up" } else { "down" };
        writeln!(self.w, "{}   link {} {state}", clock(l.unix_time), l.iface)?;
        self.w.flush()?;
        Ok(())
    }

    fn summary(&mut self, s: &Summary) -> anyhow::Result<()> {
        write_summary(&mut self.w, s)?;
        self.w.flush()?;
        Ok(())
    }
}

/// The interval's counts that are not zero, in one line: packets by class,
/// TCP flags, frame sizes (`65-127B`), then the interface's drops and
/// errors by their sysfs names: `counts: udp 959  icmpv6 1  512-1023B 959
/// rx_dropped 3`. `None` when all are zero.
#[must_use]
pub fn counts_line(c: &Counters, iface: Option<&super::IfCounters>) -> Option<String> {
    let mut items: Vec<(String, u64)> = [
        ("tcp", c.tcp),
        ("udp", c.udp),
        ("icmp", c.icmp),
        ("icmpv6", c.icmpv6),
        ("other-ip", c.other_ip),
        ("arp", c.arp),
        ("other-l2", c.other_l2),
        ("malformed", c.malformed),
        ("syn", c.tcp_syn),
        ("fin", c.tcp_fin),
        ("rst", c.tcp_rst),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    items.extend(
        SIZE_CLASS_LABELS
            .iter()
            .zip(c.size_classes)
            .map(|(label, n)| (format!("{label}B"), n)),
    );
    if let Some(f) = iface {
        items.extend(f.drops_and_errors().map(|(k, v)| (k.to_owned(), v)));
    }
    let shown: Vec<String> = items
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    (!shown.is_empty()).then(|| format!("counts: {}", shown.join("  ")))
}

/// The time of day (UTC) of a Unix time: `HH:MM:SS`.
fn clock(unix_time: f64) -> String {
    let secs = unix_time as u64 % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `  (tx)` after a transmitted flow; nothing after a received one.
fn tx_mark(f: &Flow) -> &'static str {
    if f.direction == DIR_TX { "  (tx)" } else { "" }
}

/// `  rtt p50 5.012 ms` after a flow whose conversation had passive-RTT
/// samples; nothing after the others.
fn flow_rtt(f: &Flow) -> String {
    f.rtt
        .as_ref()
        .map_or_else(String::new, |r| format!("  rtt p50 {:.3} ms", r.p50))
}

/// `  passive p50 5.012 ms (212 samples)` after a probe line, `  passive
/// -` without samples.
fn passive_p50(r: Option<&RttStats>) -> String {
    r.map_or_else(
        || "  passive -".to_owned(),
        |r| format!("  passive p50 {:.3} ms ({} samples)", r.p50, r.samples),
    )
}

/// `rtt 198.51.100.2 tcp  p50 5.012 ms  p90 5.100 ms  p99 6.000 ms  max
/// 6.100 ms  min 4.900 ms  (212 samples)`.
#[must_use]
pub fn rtt_host_line(h: &HostRtt) -> String {
    let r = &h.rtt;
    format!(
        "rtt {} {}  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  min {:.3} ms  ({} samples)",
        h.host,
        h.proto.as_str(),
        r.p50,
        r.p90,
        r.p99,
        r.max,
        r.min,
        r.samples
    )
}

/// The first `most` of `hosts`, a line each, and how many more there are.
fn write_rtt_hosts(w: &mut impl Write, hosts: &[HostRtt], most: usize) -> io::Result<()> {
    for h in hosts.iter().take(most) {
        writeln!(w, "    {}", rtt_host_line(h))?;
    }
    if hosts.len() > most {
        writeln!(
            w,
            "    rtt: {} more hosts with samples (NDJSON lists them all)",
            hosts.len() - most
        )?;
    }
    Ok(())
}

fn proto_text(proto: u8) -> String {
    proto_name(proto).map_or_else(|| proto.to_string(), str::to_owned)
}

/// `addr:port`, `[v6]:port`, or the bare address for protocols without
/// ports.
fn endpoint(f: &Flow, addr: IpAddr, port: u16) -> String {
    match (addr, f.has_ports()) {
        (IpAddr::V6(a), true) => format!("[{a}]:{port}"),
        (a, true) => format!("{a}:{port}"),
        (a, false) => a.to_string(),
    }
}

fn write_summary(w: &mut impl Write, s: &Summary) -> io::Result<()> {
    let c = &s.counters;
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
    if let Some(t) = &s.tx_counters {
        writeln!(
            w,
            "  transmitted: {} packets, {} (average {}, {})",
            t.packets,
            units::bytes(t.bytes),
            units::packets_per_second(t.packets as f64 / secs),
            units::bits_per_second(t.bytes as f64 * 8.0 / secs),
        )?;
        writeln!(
            w,
            "  tx by protocol (packets): tcp {}  udp {}  icmp {}  icmpv6 {}  other-ip {}  arp {}  other-l2 {}  malformed {}",
            t.tcp, t.udp, t.icmp, t.icmpv6, t.other_ip, t.arp, t.other_l2, t.malformed
        )?;
    }
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
            s.flows.retired_dropped, s.flows.retired_dropped_max_bytes, s.flows.retired_kept
        )?;
    }
    write_top_flows(w, &s.flows.top)?;
    if !s.probes.is_empty() {
        writeln!(w, "  probes:")?;
        for p in &s.probes {
            write_probe_stats(w, p, PROBE_HISTOGRAM_BINS)?;
            if s.passive_rtt.is_some() {
                write_probe_passive(w, p)?;
            }
        }
    }
    if let Some(p) = &s.passive_rtt {
        write_passive_summary(w, p, &s.counters, s.tx_counters.as_ref())?;
    }
    Ok(())
}

/// Under a probe target's block in the monitor's summary: the passive RTT
/// of real traffic to the same address over the run.
fn write_probe_passive(w: &mut impl Write, p: &ProbeStats) -> io::Result<()> {
    let Some(addr) = p.addr else {
        return Ok(());
    };
    let proto = RttProto::of_probe(p.kind).as_str();
    match &p.passive_rtt {
        Some(r) => writeln!(
            w,
            "passive rtt ms (real traffic to {addr}, {proto}): min {:.3} p50 {:.3} p90 {:.3} p99 {:.3} max {:.3} ({} samples)",
            r.min, r.p50, r.p90, r.p99, r.max, r.samples
        ),
        None => writeln!(
            w,
            "passive rtt: no samples of real traffic to {addr} ({proto})"
        ),
    }
}

/// The summary's passive RTT: each host since the start, the kernel's
/// RTT counters, and what the bounds dropped.
fn write_passive_summary(
    w: &mut impl Write,
    p: &PassiveRttSummary,
    rx: &Counters,
    tx: Option<&Counters>,
) -> io::Result<()> {
    if p.hosts.is_empty() {
        writeln!(w, "  passive rtt: no samples")?;
    } else {
        writeln!(
            w,
            "  passive rtt of real traffic since the start (min: the path's base rtt):"
        )?;
        write_rtt_hosts(w, &p.hosts, RTT_HOSTS_IN_SUMMARY)?;
    }
    let (recorded, full) = tx.map_or((0, 0), |t| (t.rtt_recorded, t.rtt_pending_full));
    writeln!(
        w,
        "  passive rtt counters: {recorded} sends recorded ({full} not: pending map full), {} \
         samples ({} lost: ring full), {} answers to sends repeated (no sample), {} sends \
         expired unanswered",
        rx.rtt_samples, rx.rtt_samples_lost, rx.rtt_ambiguous, p.pending_expired
    )?;
    if p.hosts_dropped > 0 || p.conversations_dropped > 0 {
        writeln!(
            w,
            "  passive rtt keeps the {} hosts with the most samples: dropped {} ({} samples), \
             and {} conversations (least recently sampled)",
            p.hosts_kept, p.hosts_dropped, p.host_samples_dropped, p.conversations_dropped
        )?;
    }
    Ok(())
}

/// The top-flows table of the summary.
fn write_top_flows(w: &mut impl Write, top: &[Flow]) -> io::Result<()> {
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
            "    {proto:<7} {src:<width$} -> {dst:<width$} {:>12} {:>12}{}{}",
            f.packets,
            f.bytes,
            tx_mark(f),
            flow_rtt(f)
        )?;
    }
    Ok(())
}

/// One line per probe target for an interval: `icmp 127.0.0.1: 1/1 0.0%
/// loss rtt ms min 0.045 p50 0.045 p99 0.045 max 0.045 jitter 0.000`.
#[must_use]
pub fn probe_interval_line(s: &ProbeStats) -> String {
    let mut line = format!(
        "{} {}: {}/{} {:.1}% loss",
        s.kind.as_str(),
        s.target,
        s.received,
        s.sent,
        s.loss_pct()
    );
    if let Some(l) = s.latency.summary() {
        let _ = write!(
            line,
            " rtt ms min {} p50 {} p99 {} max {} jitter {}",
            ms(l.min),
            ms(l.p50),
            ms(l.p99),
            ms(l.max),
            ms(l.jitter)
        );
    }
    line
}

/// The block of one probe target (the monitor's summary, `netmon ping`):
/// counts, RTT summary and, with `hist_bins` > 0, a small histogram.
pub fn write_probe_stats(w: &mut impl Write, s: &ProbeStats, hist_bins: usize) -> io::Result<()> {
    let addr = s
        .addr
        .map_or_else(|| "unresolved".to_owned(), |a| a.to_string());
    let what = match (s.kind, s.port) {
        (ProbeKind::Tcp, Some(p)) => format!("tcp port {p}"),
        (k, _) => k.as_str().to_owned(),
    };
    writeln!(w, "--- {} ({addr}) {what} ---", s.target)?;
    write!(w, "{} sent, {} received", s.sent, s.received)?;
    if s.sent > 0 || s.not_sent == 0 {
        write!(w, ", {:.1}% loss", s.loss_pct())?;
    }
    if s.duplicates > 0 || s.late > 0 {
        write!(w, ", {} duplicates, {} late", s.duplicates, s.late)?;
    }
    if s.not_sent > 0 {
        write!(
            w,
            ", {} not sent ({})",
            s.not_sent,
            s.error.as_deref().unwrap_or("send failed")
        )?;
    }
    writeln!(w)?;
    if let Some(l) = s.latency.summary() {
        writeln!(
            w,
            "rtt ms: min {} mean {} p50 {} p90 {} p99 {} max {} stddev {} jitter {}",
            ms(l.min),
            ms(l.mean),
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max),
            ms(l.stddev),
            ms(l.jitter)
        )?;
        let bins = s.latency.bins(hist_bins);
        let top = bins.iter().map(|b| b.1).max().unwrap_or(0).max(1);
        for (upper, count) in bins {
            let bar = "#".repeat(((count * 30).div_ceil(top)) as usize);
            writeln!(w, "  <= {:>8} ms |{bar:<30}| {count}", ms(upper))?;
        }
    }
    Ok(())
}

/// Milliseconds with three significant-ish digits.
#[must_use]
pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures, *};

    #[test]
    fn a_run_prints_as_before() {
        fixtures::assert_writes(include_str!("golden/monitor.txt"), |out| {
            fixtures::run(&mut TextSink::new(out));
        });
    }

    /// As `netmon ping` prints them.
    #[test]
    fn ping_blocks_print_as_before() {
        fixtures::assert_writes(include_str!("golden/ping.txt"), |out| {
            for s in fixtures::probes() {
                writeln!(out).unwrap();
                write_probe_stats(out, &s, 8).unwrap();
            }
        });
    }

    #[test]
    fn rate_line() {
        let mut out = Vec::new();
        TextSink::new(&mut out)
            .interval(&fixtures::small_interval())
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("01:01:01"), "{text}");
        assert!(text.contains("8.00 kbit/s"), "{text}");
    }

    #[test]
    fn probe_block() {
        let mut out = Vec::new();
        write_probe_stats(&mut out, &fixtures::sample_probe(), 4).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "--- localhost (127.0.0.1) icmp ---");
        assert_eq!(lines[1], "5 sent, 4 received, 20.0% loss");
        assert_eq!(
            lines[2],
            "rtt ms: min 0.100 mean 0.250 p50 0.200 p90 0.400 p99 0.400 max 0.400 stddev 0.112 jitter 0.018"
        );
        assert_eq!(lines.len(), 3 + 4, "{text}");
        assert!(lines[6].starts_with("  <=    0.400 ms |"), "{text}");
    }
}
