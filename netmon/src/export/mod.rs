//! The exporters' I/O: the HTTP endpoint of `--metrics` and the UDP
//! sender of `--ipfix`. What they send is made by pure sinks in `report`
//! (`report::metrics`, `report::ipfix`); this folder only moves bytes.
//!
//! May use: `report`, tokio, std sockets. Must not use: `monitor`,
//! `probe`, `sys`, aya.

pub mod ipfix;
pub mod metrics;
