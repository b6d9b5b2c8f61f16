//! What netmon reports, and where it goes: the values the monitor and the
//! probes produce ([`values`]: plain data, no rendering) and the sinks
//! that take them ([`Sink`]). The monitor loop hands every interval, link
//! change and the summary to one [`Sink`] (usually [`Sinks`], several at
//! once) and knows nothing of formats.
//!
//! Adding an output means adding one sink file here (as `text.rs` and
//! `json.rs` are) and pushing it onto the monitor's [`Sinks`] in
//! `monitor/start.rs`.
//!
//! May use: `netmon_common` (plain types), `units`, std, serde. Must not
//! use: `monitor` or `probe` (they feed it; values flow one way), `sys`,
//! aya, tokio.

use std::io::Write;

#[cfg(test)]
mod fixtures;
pub mod ipfix;
pub mod ipfix_wire;
pub mod json;
pub mod latency;
pub mod live;
pub mod metrics;
pub mod text;
pub mod values;

pub use self::{
    json::JsonSink,
    text::TextSink,
    values::{
        Flow, FlowChanges, FlowSummary, HostRtt, IfCounters, Interval, IntervalFlows, Link,
        PassiveRttSummary, ProbeKind, ProbeStats, ProgramCost, Rates, RttProto, RttStats, Side,
        Summary, direction_name, proto_name,
    },
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

impl Format {
    /// The sink that writes this format to `w`.
    pub fn sink<'a>(self, w: impl Write + 'a) -> Box<dyn Sink + 'a> {
        match self {
            Self::Text => Box::new(TextSink::new(w)),
            Self::Json => Box::new(JsonSink::new(w)),
        }
    }
}

/// Where the monitor's values go. Each call gets a value the sink may
/// render, keep (clone it) or ignore; a sink decides when to flush its
/// output. An error ends the run (as a closed stdout does).
pub trait Sink {
    /// Every interval, in order.
    fn interval(&mut self, interval: &Interval) -> anyhow::Result<()>;
    /// A change of the link state, when it happens (between intervals).
    fn link(&mut self, link: &Link) -> anyhow::Result<()>;
    /// Once, at the end.
    fn summary(&mut self, summary: &Summary) -> anyhow::Result<()>;
    /// Every interval after [`Sink::interval`], and once more at the end
    /// before [`Sink::summary`] (`end`): the flows that changed and those
    /// removed, for sinks that follow every flow (IPFIX). Most ignore it.
    fn flows(&mut self, _changes: &FlowChanges) -> anyhow::Result<()> {
        Ok(())
    }
    /// Whether this sink wants every flow of each interval
    /// ([`IntervalFlows::every`]), not just the top ones. Asked once,
    /// before the first interval; decoding them costs the loop what
    /// changed in the interval.
    fn wants_every_flow(&self) -> bool {
        false
    }
}

/// A sink lent to a fan-out or a test and used again after.
impl<S: Sink + ?Sized> Sink for &mut S {
    fn interval(&mut self, interval: &Interval) -> anyhow::Result<()> {
        (**self).interval(interval)
    }
    fn link(&mut self, link: &Link) -> anyhow::Result<()> {
        (**self).link(link)
    }
    fn summary(&mut self, summary: &Summary) -> anyhow::Result<()> {
        (**self).summary(summary)
    }
    fn flows(&mut self, changes: &FlowChanges) -> anyhow::Result<()> {
        (**self).flows(changes)
    }
    fn wants_every_flow(&self) -> bool {
        (**self).wants_every_flow()
    }
}

/// Several sinks at once, in the order pushed. Every sink gets every value
/// even when one before it failed (one sink's failure does not keep the
/// value from the others); the first error is returned.
#[derive(Default)]
pub struct Sinks<'a>(Vec<Box<dyn Sink + 'a>>);

impl<'a> Sinks<'a> {
    #[must_use]
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn push(&mut self, sink: Box<dyn Sink + 'a>) {
        self.0.push(sink);
    }

    fn each(
        &mut self,
        mut f: impl FnMut(&mut dyn Sink) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut first_error = None;
        for s in &mut self.0 {
            if let Err(e) = f(s.as_mut()) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Sink for Sinks<'_> {
    fn interval(&mut self, interval: &Interval) -> anyhow::Result<()> {
        self.each(|s| s.interval(interval))
    }
    fn link(&mut self, link: &Link) -> anyhow::Result<()> {
        self.each(|s| s.link(link))
    }
    fn summary(&mut self, summary: &Summary) -> anyhow::Result<()> {
        self.each(|s| s.summary(summary))
    }
    fn flows(&mut self, changes: &FlowChanges) -> anyhow::Result<()> {
        self.each(|s| s.flows(changes))
    }
    fn wants_every_flow(&self) -> bool {
        self.0.iter().any(|s| s.wants_every_flow())
    }
}
