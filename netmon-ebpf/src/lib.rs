//! netmon's kernel side as a library: the parser over any program context
//! with packet data ([`frame::Frame`]: XDP and TC), the header layouts it
//! reads ([`hdr`]), the counting that every hook shares ([`flow`]: the
//! per-CPU totals, the flow cache, the eviction ring, and their maps), and
//! passive RTT ([`rtt`]: egress records, ingress matches).
//!
//! The programs are binaries of this crate, one object each:
//! - `netmon` (src/bin/netmon.rs): the shipped object, netmon's XDP
//!   program and the maps it uses, nothing else;
//! - `netmon-bench` (src/bin/netmon-bench.rs): the bench-only programs
//!   (`cargo xtask bench`), never shipped.
//!
//! A program for another hook is one more binary calling
//! [`flow::count_frame`] with its own context.
//!
//! Invariant of every program that counts: it never writes to packet memory
//! and its verdict does not depend on what it parsed.
#![no_std]
// BPF calls between functions cost stack and verifier work; the per-packet
// path is inlined on purpose (each module says so with its own `expect`).

pub mod flow;
pub mod frame;
pub mod hdr;
pub mod parse;
pub mod rtt;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a real panic, so this
    // is never called; looping satisfies the `!` type without UB.
    loop {}
}
