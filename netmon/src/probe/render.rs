//! What people and programs read: per-target probe statistics as text with
//! a small latency histogram or as NDJSON values, and a progress line on a
//! terminal. Writes to any `impl Write`.

use std::{
    io::{self, IsTerminal, Write},
    net::IpAddr,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::latency::Latency;

/// What a probe measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// ICMP or ICMPv6 echo.
    Icmp,
    /// TCP connect (SYN to SYN-ACK, as the caller sees it).
    Tcp,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Icmp => "icmp",
            Self::Tcp => "tcp",
        }
    }
}

/// Counts and latency of one target.
#[derive(Clone, Debug)]
pub struct ProbeStats {
    pub kind: ProbeKind,
    /// As the user wrote it.
    pub target: String,
    pub addr: Option<IpAddr>,
    /// TCP only.
    pub port: Option<u16>,
    /// Probes sent whose outcome is known (answered or timed out).
    pub sent: u64,
    /// Probes that could not be sent at all (no route, refused locally).
    pub not_sent: u64,
    /// Why the last probe that could not be sent failed.
    pub error: Option<String>,
    pub received: u64,
    pub duplicates: u64,
    pub late: u64,
    pub latency: Latency,
}

impl ProbeStats {
    #[must_use]
    pub fn new(kind: ProbeKind, target: &str, addr: Option<IpAddr>, port: Option<u16>) -> Self {
        Self {
            kind,
            target: target.to_owned(),
            addr,
            port,
            sent: 0,
            not_sent: 0,
            error: None,
            received: 0,
            duplicates: 0,
            late: 0,
            latency: Latency::new(),
        }
    }

    /// One outcome: the RTT, or `None` for a probe that got no answer in time.
    pub fn record(&mut self, rtt: Option<Duration>) {
        self.sent += 1;
        if let Some(rtt) = rtt {
            self.received += 1;
            self.latency.record(rtt);
        }
    }

    /// A probe that never left this host, and why.
    pub fn record_not_sent(&mut self, reason: &str) {
        self.not_sent += 1;
        if self.error.as_deref() != Some(reason) {
            self.error = Some(reason.to_owned());
        }
    }

    /// Share of the sent probes that got no answer (0 when none was sent).
    #[must_use]
    pub fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            (self.sent - self.received) as f64 * 100.0 / self.sent as f64
        }
    }
}

/// The DESIGN.md `ping` object (with `kind`, and `port` for TCP).
#[must_use]
pub fn stats_json(s: &ProbeStats) -> Value {
    let rtt = s.latency.summary().map_or(Value::Null, |l| {
        json!({
            "min": l.min, "mean": l.mean, "p50": l.p50, "p90": l.p90, "p99": l.p99,
            "max": l.max, "stddev": l.stddev, "jitter": l.jitter,
        })
    });
    let mut v = json!({
        "type": "ping",
        "kind": s.kind.as_str(),
        "target": s.target,
        "addr": s.addr.map(|a| a.to_string()),
        "sent": s.sent,
        "received": s.received,
        // Loss of nothing is undefined when every probe failed to leave.
        "loss_pct": if s.sent == 0 && s.not_sent > 0 { Value::Null } else { json!(s.loss_pct()) },
        "not_sent": s.not_sent,
        "error": s.error,
        "duplicates": s.duplicates,
        "late": s.late,
        "rtt_ms": rtt,
    });
    if let Some(p) = s.port {
        v["port"] = json!(p);
    }
    v
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

/// Text block for one target: counts, RTT summary and, with `hist_bins` > 0,
/// a small histogram.
pub fn write_stats_text(w: &mut impl Write, s: &ProbeStats, hist_bins: usize) -> io::Result<()> {
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

/// A one-line progress display on stderr, only when stderr is a terminal.
pub struct Progress {
    label: &'static str,
    total: u64,
    active: bool,
    last: Option<Instant>,
}

impl Progress {
    #[must_use]
    pub fn new(label: &'static str, total: u64) -> Self {
        Self {
            label,
            total,
            active: io::stderr().is_terminal(),
            last: None,
        }
    }

    /// Redraws at most ten times a second.
    pub fn update(&mut self, done: u64, note: impl FnOnce() -> String) {
        if !self.active
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(Instant::now());
        let width = 30u64;
        let filled = (done * width)
            .checked_div(self.total)
            .unwrap_or(width)
            .min(width) as usize;
        let note = note();
        let mut e = io::stderr().lock();
        let _ = write!(
            e,
            "\r{} [{}{}] {done}/{} {note}\x1b[K",
            self.label,
            "=".repeat(filled),
            " ".repeat(width as usize - filled),
            self.total
        );
        let _ = e.flush();
    }

    pub fn finish(&mut self) {
        if self.active && self.last.is_some() {
            let _ = write!(io::stderr().lock(), "\r\x1b[K");
        }
        self.active = false;
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn sample() -> ProbeStats {
        let mut s = ProbeStats::new(
            ProbeKind::Icmp,
            "localhost",
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            None,
        );
        for us in [100, 200, 300, 400] {
            s.record(Some(Duration::from_micros(us)));
        }
        s.record(None);
        s
    }

    #[test]
    fn json_has_the_design_shape() {
        let v = stats_json(&sample());
        assert_eq!(v["type"], "ping");
        assert_eq!(v["kind"], "icmp");
        assert_eq!(v["addr"], "127.0.0.1");
        assert_eq!(v["sent"], 5);
        assert_eq!(v["received"], 4);
        assert!((v["loss_pct"].as_f64().unwrap() - 20.0).abs() < 1e-9);
        for k in [
            "min", "mean", "p50", "p90", "p99", "max", "stddev", "jitter",
        ] {
            assert!(v["rtt_ms"][k].is_f64(), "{k}");
        }
        assert!((v["rtt_ms"]["mean"].as_f64().unwrap() - 0.25).abs() < 1e-9);
        let none = ProbeStats::new(ProbeKind::Tcp, "h:1", None, Some(1));
        let v = stats_json(&none);
        assert!(v["rtt_ms"].is_null());
        assert_eq!(v["port"], 1);
        assert_eq!(v["loss_pct"], 0.0);
    }

    #[test]
    fn requests_that_never_left_are_not_loss() {
        let mut s = ProbeStats::new(ProbeKind::Icmp, "203.0.113.1", None, None);
        for _ in 0..3 {
            s.record_not_sent("Network is unreachable");
        }
        let v = stats_json(&s);
        assert_eq!(v["sent"], 0);
        assert_eq!(v["not_sent"], 3);
        assert_eq!(v["error"], "Network is unreachable");
        assert!(v["loss_pct"].is_null(), "{v}");
        let mut out = Vec::new();
        write_stats_text(&mut out, &s, 4).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.lines().nth(1),
            Some("0 sent, 0 received, 3 not sent (Network is unreachable)")
        );
        // A probe that did leave keeps the usual meaning of loss.
        s.record(None);
        let v = stats_json(&s);
        assert_eq!(v["loss_pct"], 100.0);
        assert!(stats_json(&sample())["error"].is_null());
    }

    #[test]
    fn text_block() {
        let mut out = Vec::new();
        write_stats_text(&mut out, &sample(), 4).unwrap();
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
