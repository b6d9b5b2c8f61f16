//! A progress line on stderr for the long probes (sweep, scan), drawn
//! only on a terminal.

use std::{
    io::{self, IsTerminal, Write},
    time::{Duration, Instant},
};

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
