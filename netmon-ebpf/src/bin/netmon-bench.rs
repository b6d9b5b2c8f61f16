//! The bench object (`cargo xtask bench`, never shipped): the floor
//! programs (XDP and TC), a traffic generator and the drivers (new flow,
//! new TCP echo). netmon's own program is not
//! here: the benches load the shipped object and measure its program
//! itself, the driver reaching it by a tail call through [`BENCH_TAIL`]
//! (a program array may hold a program of another object of the same type).
//!
//! It does not link the kernel library (`netmon_ebpf`): a binary that does
//! gets the library's exported maps and globals (COUNTERS, FLOW_SLOTS, ...,
//! HASH_SEEDS) whether it uses them or not, and this object has no use for
//! them.
#![no_std]
#![no_main]

use core::{
    mem::size_of,
    ptr::{read_unaligned, read_volatile, write_unaligned},
};

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, map, xdp},
    maps::ProgramArray,
    programs::{TcContext, XdpContext},
};
use netmon_common::bench::{ECHO_OFFSET, NEW_FLOW_OFFSET};

/// A program that only passes the frame: the floor that `cargo xtask bench
/// xdp` subtracts from netmon's cost (BPF_PROG_TEST_RUN's own overhead).
#[xdp]
pub fn netmon_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The floor of the egress cases: a classifier that only returns
/// `TC_ACT_UNSPEC`, as netmon's `netmon_tc` does (the skb test run's own
/// overhead).
#[classifier]
pub fn netmon_tc_floor(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// The generator of `cargo xtask bench veth`: run with
/// `BPF_F_TEST_XDP_LIVE_FRAMES` on one end of a veth pair, it sends every
/// frame out of that end to the peer (where netmon's program sees it as a
/// native XDP frame).
#[xdp]
pub fn netmon_bench_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// Addresses [`netmon_bench_new_flow`] cycles through (0: no cycle, a new
/// address every run). Set by the bench at load time.
#[unsafe(no_mangle)]
static BENCH_CYCLE: u32 = 0;

/// First address of the cycle, host order. Set by the bench at load time.
#[unsafe(no_mangle)]
static BENCH_CYCLE_BASE: u32 = 0;

/// Tail-call target of [`netmon_bench_new_flow`], set by the bench: the
/// shipped object's `netmon_xdp`, or [`netmon_floor`].
#[map(name = "BENCH_TAIL")]
static BENCH_TAIL: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// The `new_flow` driver of `cargo xtask bench xdp`: adds one to the IPv4
/// source address of the frame in place, so that every run of a repeated
/// test run carries a flow not seen before (or, for `cargo xtask bench
/// flows`, moves it round robin through [`BENCH_CYCLE`] addresses), then
/// tail-calls netmon's program (or the floor, for the driver's own cost).
/// It writes to the frame: test runs only.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
pub fn netmon_bench_new_flow(ctx: XdpContext) -> u32 {
    // The one bounds check of the 4 bytes (see netmon_ebpf::frame::ptr_at).
    let at = ctx.data() + NEW_FLOW_OFFSET;
    if at + size_of::<u32>() <= ctx.data_end() {
        let p = at as *mut u32;
        // SAFETY: globals in read-only data, set by the bench before load.
        let (cycle, base) = unsafe {
            (
                read_volatile(&raw const BENCH_CYCLE),
                read_volatile(&raw const BENCH_CYCLE_BASE),
            )
        };
        // SAFETY: the 4 bytes are in the frame (checked above); test runs
        // own their frame.
        let raw = unsafe { read_unaligned(p) };
        let next = if cycle == 0 {
            raw.wrapping_add(1)
        } else {
            // The next address of the cycle, round robin.
            let offset = u32::from_be(raw).wrapping_sub(base).wrapping_add(1) % cycle;
            base.wrapping_add(offset).to_be()
        };
        // SAFETY: as above.
        unsafe { write_unaligned(p, next) };
    }
    // SAFETY: entry 0 holds an XDP program (or nothing: then this returns).
    unsafe { BENCH_TAIL.tail_call(&ctx, 0) };
    xdp_action::XDP_PASS
}

/// The echo driver of `cargo xtask bench xdp`: adds one to the TCP TSecr
/// at [`ECHO_OFFSET`] in place (an untagged IPv4/TCP frame with the
/// canonical timestamp option), so that every run of a repeated test run
/// echoes a timestamp its flow has not looked up before, then tail-calls
/// netmon's program (or the floor). It writes to the frame: test runs only.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
pub fn netmon_bench_echo(ctx: XdpContext) -> u32 {
    let at = ctx.data() + ECHO_OFFSET;
    if at + size_of::<u32>() <= ctx.data_end() {
        let p = at as *mut u32;
        // SAFETY: the 4 bytes are in the frame (checked above); test runs
        // own their frame. TSecr is big-endian: one more as a number.
        unsafe {
            let next = u32::from_be(read_unaligned(p)).wrapping_add(1);
            write_unaligned(p, next.to_be());
        }
    }
    // SAFETY: entry 0 holds an XDP program (or nothing: then this returns).
    unsafe { BENCH_TAIL.tail_call(&ctx, 0) };
    xdp_action::XDP_PASS
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Never called: the verifier rejects a program that could panic.
    loop {}
}
