//! Signals that end a run.

use anyhow::{Context, Result};

/// A future that resolves on Ctrl-C, SIGTERM or SIGHUP. The handlers are
/// installed here, before it is first polled, so a signal that arrives
/// right after netmon says it is counting still ends the run with a
/// summary. SIGHUP (the terminal went away, or a supervisor's reload) ends
/// the run like SIGTERM: with the summary and exit 0, never with counts
/// lost.
pub fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = hup.recv() => {}
        }
    })
}
