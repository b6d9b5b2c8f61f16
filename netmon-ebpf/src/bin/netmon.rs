//! The shipped object: netmon's XDP program (ingress) and TC program
//! (egress, attached through TCX), which count every frame in per-CPU
//! totals and every IP packet in a flow table, per direction, then let it
//! go on untouched. Both are in this one object so that they share the
//! maps of the counting code (`netmon_ebpf::flow`); it holds nothing else:
//! `cargo xtask build` checks that no bench program or map is in it.
//!
//! Invariant: the XDP program returns `XDP_PASS` and the TC program
//! `TC_ACT_UNSPEC` (go on with the next program, then the kernel's default)
//! for every input, and neither writes to packet memory. Parsing failures
//! only decide which counter a frame lands in.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

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

#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[classifier] macro fixes the signature"
)]
pub fn netmon_tc(ctx: TcContext) -> i32 {
    // As on ingress: counted, then on its way, unchanged.
    netmon_ebpf::flow::count_frame(&ctx);
    TC_ACT_UNSPEC
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
