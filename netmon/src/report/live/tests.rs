//! Snapshots of every panel, drawn from fixed values on ratatui's test
//! backend (no terminal, no privileges). The expected screens are in
//! `golden/`; `NETMON_UPDATE_GOLDEN=1 cargo test -p netmon live` rewrites
//! them (then read the diff).

use std::time::Duration;

use ratatui::{Frame, Terminal, backend::TestBackend, buffer::Buffer, layout::Rect};

use super::{
    state::{Setup, State},
    ui,
};
use crate::report::{Link, ProbeKind, ProbeStats, fixtures};

fn setup() -> Setup {
    Setup {
        iface: "veth0".into(),
        xdp_mode: "native".into(),
        max_flows: 65536,
        link_bps: Some(10_000_000_000),
        idle_timeout_s: 60.0,
    }
}

/// A view after a few seconds of the fixtures' traffic, with probes.
fn busy_state() -> State {
    let mut s = State::new(setup());
    for n in 0..12u32 {
        let mut i = fixtures::busy_interval();
        // A rate that varies, for the sparklines.
        i.rates.bps *= f64::from(n % 5 + 1) / 3.0;
        if let Some(c) = &mut i.if_counters {
            c.tx_bytes = u64::from(n) * 1000;
        }
        if n != 11 {
            // The last interval: only the first flow is active.
            i.flows.every.truncate(1);
        }
        i.probes = vec![fixtures::sample_probe(), tcp_probe()];
        s.interval(i);
    }
    s
}

fn tcp_probe() -> ProbeStats {
    let mut p = ProbeStats::new(
        ProbeKind::Tcp,
        "198.51.100.1:22",
        Some("198.51.100.1".parse().unwrap()),
        Some(22),
    );
    for ms in [1, 2, 2, 3, 40] {
        p.record(Some(Duration::from_millis(ms)));
    }
    p
}

/// The buffer as text, trailing blanks cut.
fn text(buffer: &Buffer) -> String {
    let width = buffer.area.width as usize;
    let mut out = String::new();
    for row in buffer.content.chunks(width) {
        let line: String = row.iter().map(ratatui::buffer::Cell::symbol).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Draws with `draw` on a `width` x `height` screen and compares with
/// `golden/NAME.txt`.
fn snapshot(
    name: &str,
    width: u16,
    height: u16,
    state: &mut State,
    draw: fn(&mut Frame, Rect, &mut State),
) {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|f| {
            let area = f.area();
            draw(f, area, state);
        })
        .unwrap();
    let got = text(terminal.backend().buffer());
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/report/live/golden")
        .join(format!("{name}.txt"));
    if std::env::var_os("NETMON_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (NETMON_UPDATE_GOLDEN=1 writes it)", path.display()));
    fixtures::assert_writes(&want, |out| out.extend_from_slice(got.as_bytes()));
}

#[test]
fn header() {
    let mut s = busy_state();
    snapshot("header", 140, 1, &mut s, ui::draw_header);
    // Before any packet: no cost to show; a link that went down says so.
    let mut s = State::new(setup());
    s.link(false);
    snapshot("header_start", 140, 1, &mut s, ui::draw_header);
}

#[test]
fn rates() {
    snapshot("rates", 120, 6, &mut busy_state(), ui::draw_rates);
    let mut s = busy_state();
    s.key(crossterm::event::KeyEvent::from(
        crossterm::event::KeyCode::Char('u'),
    ));
    snapshot("rates_bytes", 120, 6, &mut s, ui::draw_rates);
}

#[test]
fn counts() {
    snapshot("counts", 132, 9, &mut busy_state(), ui::draw_counts);
}

#[test]
fn flows() {
    use crossterm::event::{KeyCode, KeyEvent};
    let mut s = busy_state();
    snapshot("flows", 120, 8, &mut s, ui::draw_flows);
    s.key(KeyEvent::from(KeyCode::Char('s')));
    snapshot("flows_by_packets", 120, 8, &mut s, ui::draw_flows);
    for k in "/udp".chars() {
        s.key(KeyEvent::from(KeyCode::Char(k)));
    }
    s.key(KeyEvent::from(KeyCode::Enter));
    snapshot("flows_filtered", 120, 6, &mut s, ui::draw_flows);
}

#[test]
fn probes() {
    snapshot("probes", 132, 5, &mut busy_state(), ui::draw_probes);
}

#[test]
fn help() {
    use crossterm::event::{KeyCode, KeyEvent};
    let mut s = busy_state();
    snapshot("help", 120, 1, &mut s, ui::draw_help);
    s.key(KeyEvent::from(KeyCode::Char('/')));
    for k in "9000".chars() {
        s.key(KeyEvent::from(KeyCode::Char(k)));
    }
    snapshot("help_filter", 120, 1, &mut s, ui::draw_help);
    s.key(KeyEvent::from(KeyCode::Esc));
    s.key(KeyEvent::from(KeyCode::Char('q')));
    snapshot("help_stopping", 120, 1, &mut s, ui::draw_help);
}

/// The whole screen, as the README shows it.
#[test]
fn whole_view() {
    let mut s = busy_state();
    s.link(true);
    let _ = Link {
        iface: String::new(),
        unix_time: 0.0,
        up: true,
    };
    snapshot("view", 132, 34, &mut s, |f, _, s| ui::draw(f, s));
}

/// Passive RTT: the conversation's p50 in the flow table (kept from the
/// last interval that had samples), the probes' passive p50 of the last
/// interval beside theirs.
#[test]
fn passive_rtt() {
    let mut s = State::new(setup());
    s.interval(fixtures::rtt_interval());
    // An interval without samples keeps the flows' last RTT; the probes
    // show the new interval's (none for the TCP target, as before).
    let mut quiet = fixtures::rtt_interval();
    for f in &mut quiet.flows.every {
        f.rtt = None;
    }
    s.interval(quiet);
    snapshot("flows_rtt", 120, 5, &mut s, ui::draw_flows);
    snapshot("probes_rtt", 132, 5, &mut s, ui::draw_probes);
}
