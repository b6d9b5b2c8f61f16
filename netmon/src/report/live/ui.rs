//! The panels of the live view, drawn from [`State`] alone: a header
//! (interface, XDP mode, uptime, flows, netmon's own cost per packet),
//! rates with their history, the interval's counts by class, frame size
//! and the interface's drops, the flow table (with each conversation's
//! passive RTT), the probes (with the passive p50 of real traffic to each
//! target beside theirs), and a line of keys. Snapshot-tested on
//! ratatui's test backend.

use std::{fmt::Write as _, net::IpAddr};

use netmon_common::SIZE_CLASS_LABELS;
use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Paragraph, Row, Sparkline, Table},
};

use super::state::{FlowRow, State};
use crate::{
    report::{Flow, proto_name, text::ms},
    units,
};

const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);
const DIM: Style = Style::new().add_modifier(Modifier::DIM);
const REVERSED: Style = Style::new().add_modifier(Modifier::REVERSED);
/// Eighths of a cell, for the latency histograms.
const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Draws every panel into the frame.
pub fn draw(f: &mut Frame, s: &mut State) {
    let probes = if s.probes.is_empty() {
        0
    } else {
        s.probes.len() as u16 + 3
    };
    let [header, rates, counts, flows, probe_area, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Min(5),
        Constraint::Length(probes),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_header(f, header, s);
    draw_rates(f, rates, s);
    draw_counts(f, counts, s);
    draw_flows(f, flows, s);
    if probes > 0 {
        draw_probes(f, probe_area, s);
    }
    draw_help(f, help, s);
}

/// `1m 05s`, `2h 03m`.
fn uptime(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s / 60 % 60),
    }
}

/// A rate of bits per second in bits or bytes, as the `u` key chose.
fn rate(bps: f64, bytes: bool) -> String {
    if bytes {
        format!("{}B/s", units::si(bps / 8.0))
    } else {
        units::bits_per_second(bps)
    }
}

pub fn draw_header(f: &mut Frame, area: Rect, s: &mut State) {
    let (in_view, _) = s.flow_counts();
    let in_table = s.last.as_ref().map_or(in_view, |i| i.flows.in_table);
    let cost = s
        .cost
        .and_then(|c| c.ns_per_run())
        .map_or_else(|| "n/a".to_owned(), |ns| format!("{ns:.0} ns/packet"));
    let link = match (s.link_up, s.setup.link_bps) {
        (Some(false), _) => "link down".to_owned(),
        (_, Some(bps)) => format!("link {}", units::bits_per_second(bps as f64)),
        (_, None) => "link speed unknown".to_owned(),
    };
    let header = Line::from(vec![
        Span::styled(" netmon ", REVERSED),
        Span::styled(format!(" {} ", s.setup.iface), BOLD),
        Span::raw(format!(
            "{} XDP · up {} · flows {in_table} of {} · ",
            s.setup.xdp_mode,
            uptime(s.uptime_s),
            s.setup.max_flows
        )),
        Span::raw("self-cost "),
        Span::styled(cost, BOLD),
        Span::raw(format!(" (XDP, last interval) · {link}")),
    ]);
    f.render_widget(Paragraph::new(header), area);
}

pub fn draw_rates(f: &mut Frame, area: Rect, s: &mut State) {
    let [numbers, rx_chart, tx_chart] = Layout::horizontal([
        Constraint::Length(32),
        Constraint::Fill(2),
        Constraint::Fill(1),
    ])
    .areas(area);
    let bytes = s.bytes;
    let r = s.last.as_ref().map(|i| i.rates);
    let secs = r.map_or(1.0, |r| r.interval_s.max(f64::EPSILON));
    let tx = s.last.as_ref().and_then(|i| i.if_counters);
    let line = |dir: &str, pps: f64, bps: f64| {
        Line::from(vec![
            Span::styled(format!("{dir} "), BOLD),
            Span::raw(format!(
                "{:>12} {:>14}",
                units::packets_per_second(pps),
                rate(bps, bytes)
            )),
        ])
    };
    let mut lines = vec![
        line("rx", r.map_or(0.0, |r| r.pps), r.map_or(0.0, |r| r.bps)),
        Line::raw(format!(
            "   util {}",
            r.and_then(|r| r.util_pct)
                .map_or_else(|| "-".to_owned(), |u| format!("{u:.1}%"))
        )),
    ];
    match tx {
        Some(c) => {
            lines.push(line(
                "tx",
                c.tx_packets as f64 / secs,
                c.tx_bytes as f64 * 8.0 / secs,
            ));
            lines.push(Line::styled("   (tx: interface counters)", DIM));
        }
        None => lines.push(Line::raw("tx  (no interface counters)")),
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" rates ")),
        numbers,
    );
    for (area, title, history) in [(rx_chart, "rx", &s.rx_bps), (tx_chart, "tx", &s.tx_bps)] {
        let width = area.width.saturating_sub(2) as usize;
        let shown: Vec<u64> = history
            .iter()
            .skip(history.len().saturating_sub(width))
            .copied()
            .collect();
        let peak = shown.iter().copied().max().unwrap_or(0);
        let title = format!(
            " {title} {}, peak {} ",
            rate_unit(bytes),
            rate(peak as f64, bytes)
        );
        f.render_widget(
            Sparkline::default()
                .block(Block::bordered().title(title))
                .data(&shown),
            area,
        );
    }
}

fn rate_unit(bytes: bool) -> &'static str {
    if bytes { "B/s" } else { "bit/s" }
}

/// Per second over the interval, as a short number: `959`, `1.05 k`,
/// `0.5`.
fn per_s(n: u64, secs: f64) -> String {
    let v = n as f64 / secs;
    if v > 0.0 && v < 10.0 && v.fract() != 0.0 {
        format!("{v:.1}")
    } else {
        units::si(v).trim_end().to_owned()
    }
}

pub fn draw_counts(f: &mut Frame, area: Rect, s: &mut State) {
    let [classes, sizes, drops] = Layout::horizontal([
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Fill(1),
    ])
    .areas(area);
    let (c, secs, ifc) = s.last.as_ref().map_or_else(
        || (netmon_common::Counters::default(), 1.0, None),
        |i| {
            (
                i.counts,
                i.rates.interval_s.max(f64::EPSILON),
                i.if_counters,
            )
        },
    );
    let pair = |a: (&str, u64), b: (&str, u64)| {
        Line::raw(format!(
            "{:<9}{:>8}   {:<9}{:>8}",
            a.0,
            per_s(a.1, secs),
            b.0,
            per_s(b.1, secs)
        ))
    };
    let lines = vec![
        pair(("tcp", c.tcp), ("syn", c.tcp_syn)),
        pair(("udp", c.udp), ("fin", c.tcp_fin)),
        pair(("icmp", c.icmp), ("rst", c.tcp_rst)),
        pair(("icmpv6", c.icmpv6), ("arp", c.arp)),
        pair(("other-ip", c.other_ip), ("other-l2", c.other_l2)),
        Line::from(vec![Span::raw(format!("{:<9}", "malformed")), {
            let text = format!("{:>8}", per_s(c.malformed, secs));
            if c.malformed > 0 {
                Span::styled(text, BOLD)
            } else {
                Span::raw(text)
            }
        }]),
    ];
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" packets/s by class ")),
        classes,
    );
    let width = sizes.width.saturating_sub(2 + 10 + 9) as usize;
    let top = c.size_classes.iter().copied().max().unwrap_or(0).max(1);
    let lines: Vec<Line> = SIZE_CLASS_LABELS
        .iter()
        .zip(c.size_classes)
        .map(|(label, n)| {
            let bar = "▇".repeat((n as usize * width).div_ceil(top as usize).min(width));
            Line::raw(format!("{label:>9} {:>8} {bar}", per_s(n, secs)))
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" frames/s by size (bytes+FCS) ")),
        sizes,
    );
    let lines: Vec<Line> = match ifc {
        Some(ifc) => ifc
            .drops_and_errors()
            .iter()
            .filter(|(name, n)| {
                *n > 0
                    || matches!(
                        *name,
                        "rx_dropped" | "rx_missed_errors" | "rx_errors" | "tx_dropped"
                    )
            })
            .map(|(name, n)| {
                let text = format!("{name:<18}{n:>8}");
                if *n > 0 {
                    Line::styled(text, BOLD)
                } else {
                    Line::raw(text)
                }
            })
            .collect(),
        None => vec![Line::raw("(no counters in sysfs)")],
    };
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(" interface drops, errors (interval) ")),
        drops,
    );
}

/// `addr:port`, `[v6]:port`, or the bare address without ports.
fn endpoint(f: &Flow, addr: IpAddr, port: u16) -> String {
    match (addr, f.has_ports()) {
        (IpAddr::V6(a), true) => format!("[{a}]:{port}"),
        (a, true) => format!("{a}:{port}"),
        (a, false) => a.to_string(),
    }
}

pub fn draw_flows(f: &mut Frame, area: Rect, s: &mut State) {
    let rows_room = area.height.saturating_sub(3) as usize;
    s.page = rows_room.max(1);
    let (in_view, shown) = s.flow_counts();
    let (bytes, sort, scroll) = (s.bytes, s.sort, s.scroll);
    let now_s = s.uptime_s;
    let filter = if s.filter.is_empty() {
        String::new()
    } else {
        format!(", filter '{}': {shown} of {in_view}", s.filter.text)
    };
    let title = format!(
        " flows by {}{filter} (rows {}-{} of {shown}) ",
        sort.name(),
        (scroll + 1).min(shown),
        (scroll + rows_room).min(shown)
    );
    let rows: Vec<Row> = s
        .visible_flows(rows_room)
        .into_iter()
        .map(|r: &FlowRow| {
            let fl = &r.flow;
            let idle = now_s - r.seen_at();
            Row::new(vec![
                proto_name(fl.proto).map_or_else(|| fl.proto.to_string(), str::to_owned),
                endpoint(fl, fl.src, fl.sport),
                endpoint(fl, fl.dst, fl.dport),
                format!("{:>12}", fl.packets),
                format!("{:>11}", units::bytes(fl.bytes)),
                format!("{:>14}", rate(r.bps, bytes)),
                fl.rtt
                    .as_ref()
                    .map_or_else(|| format!("{:>8}", "-"), |r| format!("{:>8}", ms(r.p50))),
                if idle < 0.5 {
                    "now".to_owned()
                } else {
                    format!("{} ago", uptime(idle))
                },
            ])
        })
        .collect();
    let header = Row::new(vec![
        "proto",
        "source",
        "destination",
        "     packets",
        "      bytes",
        "          rate",
        " rtt p50",
        "last seen",
    ])
    .style(BOLD);
    let table = Table::new(
        rows,
        [
            Constraint::Length(6),
            Constraint::Fill(1),
            Constraint::Fill(1),
            Constraint::Length(12),
            Constraint::Length(11),
            Constraint::Length(14),
            Constraint::Length(8),
            Constraint::Length(10),
        ],
    )
    .header(header)
    .block(Block::bordered().title(title));
    f.render_widget(table, area);
}

pub fn draw_probes(f: &mut Frame, area: Rect, s: &mut State) {
    let hist_width = 24;
    let mut lines = vec![Line::styled(
        format!(
            "{:<28} {:>11} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}  rtt histogram (run)",
            "target", "recv/sent", "loss", "p50 ms", "passive", "p90 ms", "p99 ms", "jitter"
        ),
        BOLD,
    )];
    for p in &s.probes {
        let t = &p.total;
        let mut line = format!(
            "{:<28} {:>11} {:>6.1}%",
            format!("{} {}", t.kind.as_str(), t.target),
            format!("{}/{}", t.received, t.sent),
            t.loss_pct()
        );
        // The passive p50 of the last interval, beside the probes' p50.
        let passive = p
            .last
            .passive_rtt
            .as_ref()
            .map_or_else(|| "-".to_owned(), |r| ms(r.p50));
        match t.latency.summary() {
            Some(l) => {
                let _ = write!(
                    line,
                    " {:>8} {passive:>8} {:>8} {:>8} {:>8}  ",
                    ms(l.p50),
                    ms(l.p90),
                    ms(l.p99),
                    ms(l.jitter)
                );
                let bins = t.latency.bins(hist_width);
                let top = bins.iter().map(|b| b.1).max().unwrap_or(0).max(1);
                for (_, n) in bins {
                    line.push(if n == 0 {
                        ' '
                    } else {
                        LEVELS[((n * 7).div_ceil(top)) as usize]
                    });
                }
                let _ = write!(line, " ≤{} ms", ms(l.max));
            }
            None => {
                let _ = write!(
                    line,
                    " {:>8} {passive:>8}",
                    t.error.as_deref().map_or("-", |_| "not sent")
                );
            }
        }
        lines.push(Line::raw(line));
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(
            " probes (since start; passive: p50 of real traffic to the target, last interval) ",
        )),
        area,
    );
}

pub fn draw_help(f: &mut Frame, area: Rect, s: &mut State) {
    let line = if s.stopping {
        Line::styled(
            " stopping: probes in flight finish, then the summary follows ",
            REVERSED,
        )
    } else if let Some(text) = &s.editing {
        Line::from(vec![
            Span::styled(" filter: ", REVERSED),
            Span::raw(format!(" {text}▏")),
            Span::styled(
                "  (protocol, port, address or CIDR; Enter applies, Esc cancels)",
                DIM,
            ),
        ])
    } else {
        let mut spans = Vec::new();
        for (k, what) in [
            ("q", "quit"),
            ("s", "sort"),
            ("/", "filter"),
            ("Esc", "clear filter"),
            ("↑↓ PgUp PgDn", "scroll"),
            ("u", if s.bytes { "bits" } else { "bytes" }),
        ] {
            spans.push(Span::styled(format!(" {k} "), REVERSED));
            spans.push(Span::raw(format!(" {what}  ")));
        }
        Line::from(spans)
    };
    f.render_widget(Paragraph::new(line), area);
}
