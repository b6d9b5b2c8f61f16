//! The shipped object: netmon's XDP program, which counts every frame in
//! per-CPU totals and every IP packet in a flow table, then passes it on
//! untouched. It holds this program and the maps of the counting code
//! (`netmon_ebpf::flow`), nothing else: `cargo xtask build` checks that no
//! bench program or map is in it.
//!
//! Invariant: the program returns `XDP_PASS` for every input and never writes
//! to packet memory. Parsing failures only decide which counter a frame lands
//! in.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
pub fn netmon_xdp(ctx: XdpContext) -> u32 {
    // Whatever happens while counting, the frame goes on: a monitor never
    // drops traffic.
    netmon_ebpf::flow::count_frame(&ctx);
    xdp_action::XDP_PASS
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
