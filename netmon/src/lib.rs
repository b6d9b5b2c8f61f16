//! netmon: a network monitor for Linux. See README.md and ARCHITECTURE.md.
//!
//! The binary (`main.rs`) only parses the command line and starts a
//! runtime; everything else is here, so the integration tests and the
//! benches load, attach and read through the same code as the monitor.
//!
//! - [`sys`]: the only code that touches aya, the kernel's maps, netlink,
//!   /proc and /sys, and the clocks;
//! - [`monitor`]: the interval loop and the flow table, fed through
//!   [`monitor::Source`];
//! - [`report`]: the values the loop produces and the sinks that render
//!   them;
//! - [`probe`]: ping, sweep, scan and the continuous probes, with their own
//!   sockets.

pub mod cli;
pub mod export;
#[cfg(test)]
mod fuzz;
pub mod log;
pub mod monitor;
pub mod probe;
pub mod report;
pub mod sys;
pub mod units;

/// An error in what the user asked for: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
