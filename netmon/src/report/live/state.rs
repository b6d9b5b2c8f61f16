//! What the live view shows, kept from the values the monitor hands over,
//! and what the keys do to it. Pure: no terminal, no clock (time is the
//! sum of the intervals seen), so every panel is tested from fixed data.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::report::{Flow, IfCounters, Interval, ProbeStats, ProgramCost, Rates, proto_name};

/// Intervals of rate history kept (the sparklines show the last ones that
/// fit).
pub const HISTORY: usize = 300;

/// What the view knows before the first interval.
#[derive(Clone, Debug)]
pub struct Setup {
    pub iface: String,
    /// `native` or `generic`.
    pub xdp_mode: String,
    pub max_flows: u32,
    pub link_bps: Option<u64>,
    /// Flows silent this long leave the view (as they leave the flow
    /// table: `--idle-timeout`), in seconds.
    pub idle_timeout_s: f64,
}

/// The order of the flow table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    Bytes,
    Packets,
    /// Bytes per second over the last interval.
    Rate,
    /// Most recent packet first.
    LastSeen,
}

impl SortBy {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Bytes => "bytes",
            Self::Packets => "packets",
            Self::Rate => "rate",
            Self::LastSeen => "last seen",
        }
    }

    fn next(self) -> Self {
        match self {
            Self::Bytes => Self::Packets,
            Self::Packets => Self::Rate,
            Self::Rate => Self::LastSeen,
            Self::LastSeen => Self::Bytes,
        }
    }
}

/// One flow as the view keeps it: its counts since the view first saw it
/// (the flow table's totals: exact) and its rate over the last interval.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRow {
    /// Packets and bytes since first seen; first and last packet.
    pub flow: Flow,
    pub pps: f64,
    pub bps: f64,
    /// View time (seconds of intervals) of its last packets.
    seen_at_s: f64,
}

impl FlowRow {
    /// View time (seconds of intervals) of its last packets.
    #[must_use]
    pub fn seen_at(&self) -> f64 {
        self.seen_at_s
    }
}

type FlowId = (IpAddr, IpAddr, u16, u16, u8);

fn id(f: &Flow) -> FlowId {
    (f.src, f.dst, f.sport, f.dport, f.proto)
}

/// One probe target: since the start (counts merged interval by interval)
/// and its last interval (with the passive RTT of real traffic to it,
/// which does not merge: percentiles of intervals make none of the run).
#[derive(Clone, Debug)]
pub struct ProbeRow {
    pub total: ProbeStats,
    pub last: ProbeStats,
}

/// A filter on flows: every term must match. A term is a protocol name
/// (`udp`) or number, a port (`9000`, either end), an address prefix in
/// CIDR form (`198.51.100.0/24`), or text found in either address
/// (`198.51.100.2`, `2001:db8`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub text: String,
    terms: Vec<Term>,
}

#[derive(Clone, Debug, PartialEq)]
enum Term {
    Proto(u8),
    Port(u16),
    Net(IpAddr, u8),
    Text(String),
}

impl Filter {
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let terms = text
            .split_whitespace()
            .map(|t| {
                let lower = t.to_ascii_lowercase();
                if let Some(p) = (0..=255u8).find(|&p| proto_name(p) == Some(lower.as_str())) {
                    return Term::Proto(p);
                }
                if let Ok(port) = t.parse::<u16>() {
                    return Term::Port(port);
                }
                if let Some((addr, len)) = t.split_once('/')
                    && let (Ok(addr), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u8>())
                {
                    return Term::Net(addr, len);
                }
                Term::Text(lower)
            })
            .collect();
        Self {
            text: text.trim().to_owned(),
            terms,
        }
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    #[must_use]
    pub fn matches(&self, f: &Flow) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Proto(p) => f.proto == *p,
            // A port is a port of TCP or UDP; ICMP flows have none.
            Term::Port(p) => f.has_ports() && (f.sport == *p || f.dport == *p),
            Term::Net(net, len) => in_net(f.src, *net, *len) || in_net(f.dst, *net, *len),
            Term::Text(s) => f.src.to_string().contains(s) || f.dst.to_string().contains(s),
        })
    }
}

fn in_net(a: IpAddr, net: IpAddr, len: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// What a key asks of the view's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond a redraw.
    Redraw,
    /// Stop the monitor (it then prints the summary).
    Quit,
}

/// Everything the panels draw.
#[derive(Debug)]
pub struct State {
    pub setup: Setup,
    /// Seconds of intervals seen.
    pub uptime_s: f64,
    /// The latest interval (its `flows.every` taken out).
    pub last: Option<Interval>,
    /// Received bits (or bytes) and packets per second, oldest first.
    pub rx_bps: VecDeque<u64>,
    pub rx_pps: VecDeque<u64>,
    /// Sent, from the interface's own counters.
    pub tx_bps: VecDeque<u64>,
    pub link_up: Option<bool>,
    /// Programs' cost over the last interval with runs.
    pub cost: Option<ProgramCost>,
    flows: Vec<FlowRow>,
    index: HashMap<FlowId, usize>,
    /// Indexes into `flows` that pass the filter, in the sort order.
    order: Vec<usize>,
    order_stale: bool,
    /// How many of `order` are in the sort order (the rest: not yet).
    sorted: usize,
    pub probes: Vec<ProbeRow>,
    pub sort: SortBy,
    pub filter: Filter,
    /// The filter being typed (after `/`), if any.
    pub editing: Option<String>,
    /// The first flow row shown.
    pub scroll: usize,
    /// Rows of flows the last draw had room for (paging).
    pub page: usize,
    /// Rates in bytes rather than bits.
    pub bytes: bool,
    /// The user asked to quit; the monitor is finishing.
    pub stopping: bool,
}

impl State {
    #[must_use]
    pub fn new(setup: Setup) -> Self {
        Self {
            setup,
            uptime_s: 0.0,
            last: None,
            rx_bps: VecDeque::with_capacity(HISTORY),
            rx_pps: VecDeque::with_capacity(HISTORY),
            tx_bps: VecDeque::with_capacity(HISTORY),
            link_up: None,
            cost: None,
            flows: Vec::new(),
            index: HashMap::new(),
            order: Vec::new(),
            order_stale: false,
            sorted: 0,
            probes: Vec::new(),
            sort: SortBy::Bytes,
            filter: Filter::default(),
            editing: None,
            scroll: 0,
            page: 10,
            bytes: false,
            stopping: false,
        }
    }

    /// Takes in one interval: rates into the history, every flow's counts
    /// into its row, probes into their targets.
    pub fn interval(&mut self, mut i: Interval) {
        let r: Rates = i.rates;
        self.uptime_s += r.interval_s;
        push(&mut self.rx_bps, r.bps as u64);
        push(&mut self.rx_pps, r.pps as u64);
        let secs = r.interval_s.max(f64::EPSILON);
        let tx = i.if_counters.map_or(0, |c: IfCounters| c.tx_bytes);
        push(&mut self.tx_bps, (tx as f64 * 8.0 / secs) as u64);
        if let Some(c) = i.cost
            && c.runs > 0
        {
            self.cost = Some(c);
        }
        for row in &mut self.flows {
            (row.pps, row.bps) = (0.0, 0.0);
        }
        for f in std::mem::take(&mut i.flows.every) {
            let (pps, bps) = (f.packets as f64 / secs, f.bytes as f64 * 8.0 / secs);
            if let Some(&at) = self.index.get(&id(&f)) {
                let row = &mut self.flows[at];
                row.flow.packets += f.packets;
                row.flow.bytes += f.bytes;
                row.flow.last_seen_ns = row.flow.last_seen_ns.max(f.last_seen_ns);
                row.flow.tcp_flags |= f.tcp_flags;
                // The conversation's RTT of the last interval that had
                // samples.
                if f.rtt.is_some() {
                    row.flow.rtt = f.rtt;
                }
                (row.pps, row.bps, row.seen_at_s) = (pps, bps, self.uptime_s);
            } else {
                self.index.insert(id(&f), self.flows.len());
                self.flows.push(FlowRow {
                    flow: f,
                    pps,
                    bps,
                    seen_at_s: self.uptime_s,
                });
            }
        }
        self.forget_idle();
        for p in &i.probes {
            match self
                .probes
                .iter_mut()
                .find(|row| row.total.kind == p.kind && row.total.target == p.target)
            {
                Some(row) => {
                    merge_probe(&mut row.total, p);
                    row.last = p.clone();
                }
                None => self.probes.push(ProbeRow {
                    total: p.clone(),
                    last: p.clone(),
                }),
            }
        }
        self.last = Some(i);
        self.order_stale = true;
    }

    /// Removes the flows silent for the idle timeout, as the flow table
    /// does, so the view holds no more flows than the table.
    fn forget_idle(&mut self) {
        let (now, idle) = (self.uptime_s, self.setup.idle_timeout_s);
        let before = self.flows.len();
        self.flows.retain(|row| now - row.seen_at_s < idle);
        if self.flows.len() != before {
            self.index.clear();
            for (at, row) in self.flows.iter().enumerate() {
                self.index.insert(id(&row.flow), at);
            }
        }
    }

    /// A change of the link state.
    pub fn link(&mut self, up: bool) {
        self.link_up = Some(up);
    }

    /// Flows in the view, and how many pass the filter.
    #[must_use]
    pub fn flow_counts(&mut self) -> (usize, usize) {
        self.refresh_order(0);
        (self.flows.len(), self.order.len())
    }

    /// The rows to show: those that pass the filter, in the sort order,
    /// from the scroll position on, at most `n`.
    pub fn visible_flows(&mut self, n: usize) -> Vec<&FlowRow> {
        self.refresh_order(0);
        self.scroll = self.scroll.min(self.order.len().saturating_sub(1));
        self.refresh_order(self.scroll + n);
        self.order
            .iter()
            .skip(self.scroll)
            .take(n)
            .map(|&at| &self.flows[at])
            .collect()
    }

    /// Makes `order` the flows that pass the filter, its first `need` in
    /// the sort order. Only those are sorted (a linear selection first):
    /// with 100,000 flows, sorting them all every interval was most of the
    /// view's cost.
    fn refresh_order(&mut self, need: usize) {
        if self.order_stale {
            self.order_stale = false;
            self.sorted = 0;
            let flows = &self.flows;
            self.order.clear();
            self.order.extend(
                (0..flows.len())
                    .filter(|&at| self.filter.is_empty() || self.filter.matches(&flows[at].flow)),
            );
        }
        let need = need.min(self.order.len());
        if self.sorted >= need {
            return;
        }
        let flows = &self.flows;
        let rank = |r: &FlowRow| -> (u64, u64) {
            match self.sort {
                SortBy::Bytes => (r.flow.bytes, r.flow.packets),
                SortBy::Packets => (r.flow.packets, r.flow.bytes),
                SortBy::Rate => (r.bps as u64, r.pps as u64),
                SortBy::LastSeen => (r.flow.last_seen_ns, r.flow.bytes),
            }
        };
        // Largest first; ties in address order, so rows do not jump.
        let order = |a: &usize, b: &usize| {
            let (fa, fb) = (&flows[*a], &flows[*b]);
            rank(fb)
                .cmp(&rank(fa))
                .then_with(|| id(&fa.flow).cmp(&id(&fb.flow)))
        };
        if need < self.order.len() {
            self.order.select_nth_unstable_by(need - 1, order);
        }
        self.order[..need].sort_unstable_by(order);
        self.sorted = need;
    }

    /// Applies a key.
    pub fn key(&mut self, k: KeyEvent) -> Action {
        self.refresh_order(0);
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            self.stopping = true;
            return Action::Quit;
        }
        if let Some(text) = &mut self.editing {
            match k.code {
                KeyCode::Enter => {
                    self.filter = Filter::parse(text);
                    self.editing = None;
                    self.scroll = 0;
                    self.order_stale = true;
                }
                KeyCode::Esc => self.editing = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return Action::Redraw;
        }
        let last_page = |s: &Self| s.order.len().saturating_sub(1);
        match k.code {
            KeyCode::Char('q') => {
                self.stopping = true;
                return Action::Quit;
            }
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.order_stale = true;
            }
            KeyCode::Char('u') => self.bytes = !self.bytes,
            KeyCode::Char('/') => self.editing = Some(self.filter.text.clone()),
            KeyCode::Esc => {
                self.filter = Filter::default();
                self.order_stale = true;
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.scroll = (self.scroll + 1).min(last_page(self));
            }
            KeyCode::Up | KeyCode::Char('k') => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::PageDown => {
                self.scroll = (self.scroll + self.page.max(1)).min(last_page(self));
            }
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(self.page.max(1)),
            KeyCode::Home => self.scroll = 0,
            KeyCode::End => self.scroll = last_page(self),
            _ => {}
        }
        Action::Redraw
    }
}

fn push(history: &mut VecDeque<u64>, v: u64) {
    if history.len() == HISTORY {
        history.pop_front();
    }
    history.push_back(v);
}

/// Adds one interval's statistics of a target to its totals.
fn merge_probe(total: &mut ProbeStats, p: &ProbeStats) {
    total.addr = p.addr.or(total.addr);
    total.sent += p.sent;
    total.received += p.received;
    total.not_sent += p.not_sent;
    total.duplicates += p.duplicates;
    total.late += p.late;
    if p.error.is_some() {
        total.error.clone_from(&p.error);
    }
    total.latency.merge(&p.latency);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    fn setup() -> Setup {
        Setup {
            iface: "veth0".into(),
            xdp_mode: "native".into(),
            max_flows: 65536,
            link_bps: Some(10_000_000_000),
            idle_timeout_s: 3.0,
        }
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn interval_with(every: Vec<Flow>) -> Interval {
        let mut i = fixtures::small_interval();
        i.flows.every = every;
        i
    }

    fn ports(s: &mut State) -> Vec<u16> {
        s.visible_flows(100).iter().map(|r| r.flow.sport).collect()
    }

    #[test]
    fn flow_counts_add_up_across_intervals() {
        let mut s = State::new(setup());
        let f = fixtures::flows();
        s.interval(interval_with(f.clone()));
        s.interval(interval_with(vec![f[0].clone()]));
        let rows = s.visible_flows(10);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].flow.packets, 2 * 959);
        assert_eq!(rows[0].flow.bytes, 2 * 531_286);
        // Only the first was active in the last interval.
        assert!(rows[0].bps > 0.0);
        assert!(rows[1].bps.abs() < f64::EPSILON);
    }

    #[test]
    fn sort_keys_change_the_order() {
        let mut s = State::new(setup());
        let mut f = fixtures::flows();
        // Fewer packets, more bytes than the second.
        (f[0].packets, f[0].bytes) = (10, 100_000);
        (f[1].packets, f[1].bytes) = (500, 50_000);
        s.interval(interval_with(f));
        assert_eq!(ports(&mut s)[..2], [51284, 40000]);
        assert_eq!(s.key(key(KeyCode::Char('s'))), Action::Redraw);
        assert_eq!(s.sort, SortBy::Packets);
        assert_eq!(ports(&mut s)[..2], [40000, 51284]);
        for want in [SortBy::Rate, SortBy::LastSeen, SortBy::Bytes] {
            s.key(key(KeyCode::Char('s')));
            assert_eq!(s.sort, want);
        }
    }

    #[test]
    fn the_filter_takes_protocols_ports_and_addresses() {
        let mut s = State::new(setup());
        s.interval(interval_with(fixtures::flows()));
        let typed = |s: &mut State, text: &str| {
            s.key(key(KeyCode::Char('/')));
            for c in text.chars() {
                s.key(key(KeyCode::Char(c)));
            }
            s.key(key(KeyCode::Enter));
            let mut p = ports(s);
            p.sort_unstable();
            p
        };
        assert_eq!(typed(&mut s, "udp"), [51284]);
        // Typing again starts from the current filter.
        s.key(key(KeyCode::Char('/')));
        for _ in 0..3 {
            s.key(key(KeyCode::Backspace));
        }
        s.key(key(KeyCode::Enter));
        assert_eq!(s.filter.text, "");
        assert_eq!(typed(&mut s, "443"), [40000]);
        s.key(key(KeyCode::Esc));
        assert_eq!(typed(&mut s, "2001:db8"), [40000]);
        s.key(key(KeyCode::Esc));
        assert_eq!(typed(&mut s, "192.0.2.0/24"), [0]);
        s.key(key(KeyCode::Esc));
        assert_eq!(typed(&mut s, "fe80::/10 icmpv6"), [0]);
        s.key(key(KeyCode::Esc));
        assert_eq!(typed(&mut s, "198.51.100.1 9000"), [51284]);
        assert_eq!(typed(&mut s, "tcp 9000"), Vec::<u16>::new());
        s.key(key(KeyCode::Esc));
        assert_eq!(ports(&mut s).len(), 4, "Esc clears the filter");
        // While typing, q is a letter, not quit.
        s.key(key(KeyCode::Char('/')));
        assert_eq!(s.key(key(KeyCode::Char('q'))), Action::Redraw);
        s.key(key(KeyCode::Esc));
        assert_eq!(s.key(key(KeyCode::Char('q'))), Action::Quit);
        assert_eq!(
            s.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
    }

    #[test]
    fn rows_past_the_first_page_are_in_order_too() {
        let mut s = State::new(setup());
        let base = fixtures::flows().swap_remove(0);
        let every: Vec<Flow> = (0..500u16)
            .map(|p| Flow {
                sport: p,
                packets: u64::from(p * 7 % 500),
                bytes: u64::from(p * 7 % 500) * 100,
                ..base.clone()
            })
            .collect();
        s.interval(interval_with(every));
        let first: Vec<u64> = s.visible_flows(10).iter().map(|r| r.flow.bytes).collect();
        assert_eq!(
            first,
            (490..500).rev().map(|b| b * 100).collect::<Vec<u64>>()
        );
        s.scroll = 200;
        let deeper: Vec<u64> = s.visible_flows(10).iter().map(|r| r.flow.bytes).collect();
        assert_eq!(
            deeper,
            (290..300).rev().map(|b| b * 100).collect::<Vec<u64>>()
        );
    }

    #[test]
    fn scrolling_stays_within_the_rows() {
        let mut s = State::new(setup());
        s.interval(interval_with(fixtures::flows()));
        s.page = 2;
        s.key(key(KeyCode::PageDown));
        assert_eq!(s.scroll, 2);
        s.key(key(KeyCode::PageDown));
        s.key(key(KeyCode::Down));
        assert_eq!(s.scroll, 3, "the last row stays on screen");
        assert_eq!(s.visible_flows(10).len(), 1);
        s.key(key(KeyCode::Home));
        s.key(key(KeyCode::Up));
        assert_eq!(s.scroll, 0);
    }

    #[test]
    fn idle_flows_leave_the_view() {
        let mut s = State::new(setup());
        let f = fixtures::flows();
        s.interval(interval_with(f.clone()));
        // The first flow stays active, the others go quiet for 3 s.
        for _ in 0..3 {
            s.interval(interval_with(vec![f[0].clone()]));
        }
        assert_eq!(s.flow_counts(), (1, 1));
        assert_eq!(s.visible_flows(5)[0].flow.packets, 4 * 959);
    }

    #[test]
    fn probes_add_up_per_target() {
        let mut s = State::new(setup());
        let mut i = fixtures::small_interval();
        i.probes = vec![fixtures::sample_probe()];
        s.interval(i.clone());
        s.interval(i);
        assert_eq!(s.probes.len(), 1);
        assert_eq!(
            (s.probes[0].total.sent, s.probes[0].total.received),
            (10, 8)
        );
        assert_eq!(s.probes[0].last.sent, 5);
        let l = s.probes[0].total.latency.summary().unwrap();
        assert!((l.mean - 0.25).abs() < 1e-9, "{l:?}");
        assert!((l.max - 0.4).abs() < 1e-3);
    }
}
