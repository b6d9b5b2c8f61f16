//! The live view (on a terminal without `--format`): one more sink.
//!
//! The sink never draws. It hands each value over a channel to a thread of
//! its own ([`LiveSink::open`]), which owns the terminal: it keeps the
//! [`State`], redraws it five times a second and on every key, and reads
//! the keys. So the monitor loop's map reads never wait for the terminal,
//! and the view stays responsive while the loop works. `q` or Ctrl-C (a
//! key in raw mode, not a signal) calls the `quit` the view was opened
//! with, which ends the monitor loop like a signal; the loop then hands
//! over the summary, and the sink closes the view (terminal restored) and
//! prints the summary as text on the normal screen.
//!
//! The terminal is restored on every way out: the summary, the sink being
//! dropped (the loop failed), and a panic anywhere (a panic hook). SIGTERM
//! and SIGHUP end the loop, which hands over the summary.

pub mod state;
pub mod ui;

use std::{
    io::{self, Write},
    sync::{
        Once,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
use crossterm::{
    cursor::{Hide, Show},
    event::{self, Event, KeyEventKind},
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use ratatui::{Terminal, backend::CrosstermBackend};

pub use self::state::{Setup, State};
use super::{Interval, Link, Sink, Summary, TextSink};

/// Redraws at least this often (the rates and "last seen" move on).
const REDRAW_EVERY: Duration = Duration::from_millis(200);
/// The longest a value waits in the channel before the view takes it.
const POLL: Duration = Duration::from_millis(50);

enum Msg {
    Interval(Box<Interval>),
    Link(bool),
    Stop,
}

/// Whether the terminal is in the view's mode (raw, alternate screen).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back as it was, once (a no-op when it is).
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    }
}

/// A panic, in the view's thread or anywhere else, restores the terminal
/// before the message is printed (raw mode would garble it, the alternate
/// screen would hide it).
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// The live view as a sink: forwards values to the thread that draws.
pub struct LiveSink {
    tx: mpsc::Sender<Msg>,
    ui: Option<thread::JoinHandle<()>>,
    /// Closed (disconnected) when the view's thread ends, however it ends.
    done: mpsc::Receiver<()>,
}

/// How long [`LiveSink::close`] waits for the view's thread. It answers
/// within one [`POLL`] unless it is stuck reading a terminal that went
/// away (crossterm retries a hung-up tty without returning); then netmon
/// goes on without it, and the thread ends with the process.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

impl LiveSink {
    /// Opens the view on the terminal of stdout and starts its thread.
    /// `quit` is called (from that thread) when the user asks to stop.
    pub fn open(setup: Setup, quit: impl Fn() + Send + 'static) -> anyhow::Result<Self> {
        install_panic_hook();
        enable_raw_mode().context("cannot put the terminal in raw mode for the live view")?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut out = io::stdout();
        if let Err(e) = execute!(out, EnterAlternateScreen, Hide) {
            restore();
            return Err(e).context("cannot open the live view");
        }
        let terminal = match Terminal::new(CrosstermBackend::new(out)) {
            Ok(t) => t,
            Err(e) => {
                restore();
                return Err(e).context("cannot open the live view");
            }
        };
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel::<()>();
        let ui = thread::Builder::new()
            .name("netmon-view".into())
            .spawn(move || {
                // Dropped when the thread ends (a panic included).
                let _done = done_tx;
                if let Err(e) = run(terminal, &rx, State::new(setup), &quit) {
                    // The terminal is gone or broken: stop the run (its
                    // summary still prints), with the reason after it.
                    log::warn!("the live view stopped: {e}");
                    quit();
                }
            })
            .context("cannot start the live view's thread")?;
        Ok(Self {
            tx,
            ui: Some(ui),
            done,
        })
    }

    /// Stops the thread and restores the terminal.
    fn close(&mut self) {
        if let Some(ui) = self.ui.take() {
            let _ = self.tx.send(Msg::Stop);
            match self.done.recv_timeout(CLOSE_WAIT) {
                // A panic in the thread was reported (and the terminal
                // restored) by the hook.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = ui.join();
                }
                Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {
                    log::warn!(
                        "the live view did not stop within {CLOSE_WAIT:?} (its terminal is gone?); \
                         going on without it"
                    );
                }
            }
        }
        restore();
    }
}

impl Drop for LiveSink {
    fn drop(&mut self) {
        self.close();
    }
}

impl Sink for LiveSink {
    fn interval(&mut self, interval: &Interval) -> anyhow::Result<()> {
        // Unbounded: the loop never waits for the view. The thread takes
        // every value within POLL.
        let _ = self.tx.send(Msg::Interval(Box::new(interval.clone())));
        Ok(())
    }

    fn link(&mut self, link: &Link) -> anyhow::Result<()> {
        let _ = self.tx.send(Msg::Link(link.up));
        Ok(())
    }

    /// Closes the view, then prints the summary as `--format text` does.
    fn summary(&mut self, summary: &Summary) -> anyhow::Result<()> {
        self.close();
        let mut out = io::stdout().lock();
        TextSink::new(&mut out).summary(summary)?;
        out.flush()?;
        Ok(())
    }

    fn wants_every_flow(&self) -> bool {
        true
    }
}

/// The view's thread: takes values, reads keys, redraws.
fn run<W: Write>(
    mut terminal: Terminal<CrosstermBackend<W>>,
    rx: &mpsc::Receiver<Msg>,
    mut state: State,
    quit: &dyn Fn(),
) -> io::Result<()> {
    let mut next_draw = Instant::now();
    let mut dirty = true;
    loop {
        loop {
            match rx.try_recv() {
                Ok(Msg::Interval(i)) => {
                    state.interval(*i);
                    dirty = true;
                }
                Ok(Msg::Link(up)) => {
                    state.link(up);
                    dirty = true;
                }
                Ok(Msg::Stop) | Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        let now = Instant::now();
        if dirty || now >= next_draw {
            terminal.draw(|f| ui::draw(f, &mut state))?;
            next_draw = now + REDRAW_EVERY;
            dirty = false;
        }
        let wait = next_draw
            .saturating_duration_since(Instant::now())
            .min(POLL);
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    if state.key(k) == state::Action::Quit {
                        quit();
                    }
                    dirty = true;
                }
                Event::Resize(..) => {
                    terminal.autoresize()?;
                    dirty = true;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
