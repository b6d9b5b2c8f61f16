//! The frame abstraction every parser reads through: a program context that
//! gives the start and end of the packet data (`XdpContext`, `TcContext`),
//! and checked views of a header inside it.
//!
//! A read of the packet is one bounds check ([`Header::at`], the only
//! comparison against `data_end`) followed by loads at constant offsets
//! into the checked header ([`Header::get`]), whose bounds are proven at
//! compile time. The verifier sees exactly one packet-pointer comparison
//! per header.
#![expect(clippy::inline_always, reason = "per-packet path, see lib.rs")]

use core::{marker::PhantomData, mem::size_of, ptr::read_unaligned};

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    programs::{TcContext, XdpContext},
};
use netmon_common::{DIR_RX, DIR_TX};

/// A program context with packet data: what the parsers need of it.
pub trait Frame {
    /// The direction its frames are counted in (`DIR_RX`, `DIR_TX`): the
    /// hook each context is used at (XDP ingress, TC egress).
    const DIRECTION: u8;
    /// Address of the first byte of the frame.
    fn data(&self) -> usize;
    /// Address one past the last byte the program may read.
    fn data_end(&self) -> usize;
    /// Length of the frame in bytes as counted: the L2 frame length without
    /// FCS. For XDP the readable bytes; for TC the whole skb, which may be
    /// longer than its linear part (`data..data_end`).
    fn wire_len(&self) -> u64;
    /// Length of the packet the headers' length fields are checked
    /// against: the readable bytes for XDP, the whole skb for TC (whose
    /// paged part the program cannot read directly, but which the IP
    /// header's length covers).
    fn packet_len(&self) -> usize;
    /// Packets this frame is on the wire: a GSO/TSO super-packet's segment
    /// count, 1 for anything else.
    #[inline(always)]
    fn segments(&self) -> u64 {
        1
    }
    /// Payload bytes per segment of a GSO/TSO super-packet (0 otherwise).
    #[inline(always)]
    fn segment_size(&self) -> u64 {
        0
    }
    /// `parse::walk_options` on this frame, through a global function
    /// (see [`netmon_tcp_options_xdp`]).
    fn walk_options(&self, opts: usize, opts_end: usize) -> u64;
}

// The TCP option walk as global functions (BTF linkage global), one per
// context type: the verifier checks a global function once, on its own,
// instead of once per state that reaches the call. Inline, the walk's
// variable offsets multiplied with the parser's (VLAN tags, MPLS, IPv6
// extension headers) past the verifier's million instructions. Only a
// segment whose options are not in the canonical layout (a SYN) calls it.

/// The TCP option walk on an XDP frame (`parse::walk_options`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netmon_tcp_options_xdp(ctx: *mut xdp_md, opts: u64, opts_end: u64) -> u64 {
    crate::parse::walk_options(&XdpContext::new(ctx), opts as usize, opts_end as usize)
}

/// The TCP option walk on a TC frame (`parse::walk_options`).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn netmon_tcp_options_tc(ctx: *mut __sk_buff, opts: u64, opts_end: u64) -> u64 {
    crate::parse::walk_options(&TcContext::new(ctx), opts as usize, opts_end as usize)
}

impl Frame for XdpContext {
    const DIRECTION: u8 = DIR_RX;
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
    #[inline(always)]
    fn wire_len(&self) -> u64 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u64
    }
    #[inline(always)]
    fn packet_len(&self) -> usize {
        XdpContext::data_end(self) - XdpContext::data(self)
    }
    #[inline(always)]
    fn walk_options(&self, opts: usize, opts_end: usize) -> u64 {
        netmon_tcp_options_xdp(self.ctx, opts as u64, opts_end as u64)
    }
}

/// A `TcContext` is netmon's egress hook (TCX egress): its frames count as
/// transmitted. Only the linear part of the skb (`data..data_end`) is
/// read; the stack builds the headers of what it sends there.
impl Frame for TcContext {
    const DIRECTION: u8 = DIR_TX;
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    fn wire_len(&self) -> u64 {
        u64::from(self.len())
    }
    #[inline(always)]
    fn packet_len(&self) -> usize {
        self.len() as usize
    }
    #[inline(always)]
    fn segments(&self) -> u64 {
        // SAFETY: the context pointer the kernel passed in; the verifier
        // rewrites the read into one of skb_shinfo(skb)->gso_segs.
        // Not a GSO packet: 0 or 1.
        u64::from(unsafe { (*self.skb.skb).gso_segs }).max(1)
    }
    #[inline(always)]
    fn segment_size(&self) -> u64 {
        // SAFETY: as above (skb_shinfo(skb)->gso_size, Linux 5.7).
        u64::from(unsafe { (*self.skb.skb).gso_size })
    }
    #[inline(always)]
    fn walk_options(&self, opts: usize, opts_end: usize) -> u64 {
        netmon_tcp_options_tc(self.skb.skb, opts as u64, opts_end as u64)
    }
}

/// A header runs past the end of the frame, or a length field lies.
pub struct Malformed;

/// Pointer to a `T` at `offset` bytes into the frame, if the frame is long
/// enough to hold it. The one bounds check every packet read goes through.
#[inline(always)]
pub fn ptr_at<T, F: Frame>(f: &F, offset: usize) -> Result<*const T, Malformed> {
    let start = f.data();
    let end = f.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(Malformed);
    }
    Ok((start + offset) as *const T)
}

/// Reads a `T` (an integer or byte array) at `offset`: one bounds check,
/// one load. Packet data carries no alignment guarantee, hence
/// `read_unaligned`.
#[inline(always)]
pub fn read<T: Copy, F: Frame>(f: &F, offset: usize) -> Result<T, Malformed> {
    let p = ptr_at::<T, F>(f, offset)?;
    // SAFETY: ptr_at checked that size_of::<T>() bytes at p are in the frame.
    Ok(unsafe { read_unaligned(p) })
}

/// Reads a big-endian `u16` at `offset`.
#[inline(always)]
pub fn read_be16<F: Frame>(f: &F, offset: usize) -> Result<u16, Malformed> {
    read::<u16, F>(f, offset).map(u16::from_be)
}

/// Length of the packet in bytes ([`Frame::packet_len`]), for checks of
/// the lengths that headers claim. `black_box` keeps LLVM from using these scalar checks to prove a
/// later bounds check redundant: the verifier only trusts comparisons of
/// packet pointers, so every check of [`ptr_at`] must stay.
#[inline(always)]
pub fn frame_len<F: Frame>(f: &F) -> usize {
    core::hint::black_box(f.packet_len())
}

/// `N` bytes of the frame whose bounds have been checked: fields at
/// constant offsets inside them are read without another check.
pub struct Header<const N: usize> {
    p: *const u8,
    _frame: PhantomData<[u8; N]>,
}

impl<const N: usize> Header<N> {
    /// The `N` bytes at `offset`, if the frame holds them (one bounds
    /// check).
    #[inline(always)]
    pub fn at<F: Frame>(f: &F, offset: usize) -> Result<Self, Malformed> {
        Ok(Self {
            p: ptr_at::<[u8; N], F>(f, offset)?.cast(),
            _frame: PhantomData,
        })
    }

    /// The `T` at byte `OFF` of the header, as it is in memory (network
    /// order for multi-byte fields). `OFF + size_of::<T>() <= N` is checked
    /// at compile time.
    #[inline(always)]
    #[must_use]
    pub fn get<T: Copy, const OFF: usize>(&self) -> T {
        const { assert!(OFF + size_of::<T>() <= N, "field outside the header") };
        // SAFETY: `at` checked the N bytes at p; the field lies inside them
        // (asserted above). With allows-misaligned-mem-access
        // (.cargo/config.toml) this is one load.
        unsafe { read_unaligned(self.p.add(OFF).cast::<T>()) }
    }

    /// The big-endian `u16` at byte `OFF`.
    #[inline(always)]
    #[must_use]
    pub fn be16<const OFF: usize>(&self) -> u16 {
        u16::from_be(self.get::<u16, OFF>())
    }

    /// Address of the header's first byte (for programs that write to
    /// their frame; netmon's never do).
    #[inline(always)]
    #[must_use]
    pub fn ptr(&self) -> *const u8 {
        self.p
    }
}
