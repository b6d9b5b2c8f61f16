//! Types shared by the XDP program (`netmon-ebpf`) and userspace (`netmon`).
//!
//! Everything here is `#[repr(C)]`, `Copy`, and laid out without implicit
//! padding, so the kernel and userspace agree on every byte of a map key or
//! value. The `user` feature adds the `aya::Pod` impls that userspace needs.
#![no_std]

use core::mem::size_of;

/// Name of the XDP program (ingress) inside the shipped eBPF object.
pub const XDP_PROGRAM: &str = "netmon_xdp";
/// Name of the TC program (egress, attached through TCX) inside the
/// shipped eBPF object. It shares the XDP program's maps, counting into
/// the transmit side of them ([`DIR_TX`]).
pub const TC_PROGRAM: &str = "netmon_tc";

/// `FlowKey::direction` and the index of a direction's [`Counters`] in
/// [`COUNTERS_MAP`]: received (XDP ingress).
pub const DIR_RX: u8 = 0;
/// Transmitted (TC egress).
pub const DIR_TX: u8 = 1;
/// Entries of [`COUNTERS_MAP`]: one [`Counters`] per direction.
pub const DIRECTIONS: u32 = 2;

/// Names of the bench object's programs, maps and globals (`netmon-bench`,
/// built beside the shipped object by `cargo xtask build`, loaded only by
/// `netmon-benches`). Not part of what netmon ships: the `bench` feature,
/// which only the kernel crate and the benches enable.
#[cfg(feature = "bench")]
pub mod bench {
    /// A program that only returns `XDP_PASS`: the floor the benches
    /// subtract from netmon's cost. Never attached to a real NIC.
    pub const FLOOR_PROGRAM: &str = "netmon_floor";
    /// A program that returns `XDP_TX`: the traffic generator of `cargo
    /// xtask bench veth` (live-frames test runs).
    pub const TX_PROGRAM: &str = "netmon_bench_tx";
    /// The driver of `cargo xtask bench xdp`/`flows`: moves the IPv4 source
    /// address of the frame on in place (so every run of a repeated test run
    /// is a new flow), then tail-calls entry 0 of [`TAIL_MAP`] (netmon's
    /// program from the shipped object, or [`FLOOR_PROGRAM`]).
    pub const NEW_FLOW_PROGRAM: &str = "netmon_bench_new_flow";
    /// The program array of [`NEW_FLOW_PROGRAM`]'s tail call.
    pub const TAIL_MAP: &str = "BENCH_TAIL";
    /// Offset of the IPv4 source address in an untagged Ethernet frame.
    pub const NEW_FLOW_OFFSET: usize = 26;
    /// Global of [`NEW_FLOW_PROGRAM`]: when not 0, the driver cycles the
    /// source address through this many addresses from [`CYCLE_BASE_GLOBAL`]
    /// (`cargo xtask bench flows`), instead of moving it on for ever.
    pub const CYCLE_GLOBAL: &str = "BENCH_CYCLE";
    /// Global of [`NEW_FLOW_PROGRAM`]: the first source address of the
    /// cycle, in host order.
    pub const CYCLE_BASE_GLOBAL: &str = "BENCH_CYCLE_BASE";
    /// A TC classifier that only returns `TC_ACT_UNSPEC`: the floor of the
    /// egress cases of `cargo xtask bench xdp` (the skb test run's own
    /// overhead, which differs from XDP's).
    pub const TC_FLOOR_PROGRAM: &str = "netmon_tc_floor";
    /// The echo driver of `cargo xtask bench xdp`: adds one to the TCP
    /// TSecr at [`ECHO_OFFSET`] in place (so every run of a repeated test
    /// run echoes a timestamp not looked up before), then tail-calls entry
    /// 0 of [`TAIL_MAP`], as [`NEW_FLOW_PROGRAM`] does.
    pub const ECHO_PROGRAM: &str = "netmon_bench_echo";
    /// Offset of the TSecr in an untagged IPv4/TCP frame (20-byte IP
    /// header) whose options start with NOP, NOP, timestamp.
    pub const ECHO_OFFSET: usize = 62;
    /// Every program of the bench object, and every map and global name
    /// that belongs to it: none of them may be in the shipped object.
    pub const PROGRAMS: [&str; 5] = [
        FLOOR_PROGRAM,
        TX_PROGRAM,
        NEW_FLOW_PROGRAM,
        TC_FLOOR_PROGRAM,
        ECHO_PROGRAM,
    ];
    pub const SYMBOLS: [&str; 3] = [TAIL_MAP, CYCLE_GLOBAL, CYCLE_BASE_GLOBAL];
}

/// Name of the per-CPU array holding, per CPU, one [`Counters`] per
/// direction (index [`DIR_RX`], [`DIR_TX`]).
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the array of [`FlowSlot`]s: every CPU's flow cache, CPU `c`'s
/// slots at indices `c << SLOT_SHIFT ..`, in one contiguous, page-aligned
/// array (`BPF_F_MMAPABLE`), so that a slot is two whole cache lines and
/// its address one multiply away (a per-CPU array adds a load of a
/// per-element pointer, and its 8-aligned elements often span three
/// lines). Its size is (highest possible CPU id + 1) << `SLOT_SHIFT`.
pub const FLOW_SLOTS_MAP: &str = "FLOW_SLOTS";
/// Name of the array of [`Evicted`] entries: every CPU's eviction ring,
/// the final state of occupants pushed out of a slot by another flow. CPU
/// `c`'s ring is entries `c << RING_SHIFT ..`, a single-producer,
/// single-consumer ring whose positions are in [`EVICT_POS_MAP`]. Page
/// aligned (`BPF_F_MMAPABLE`), mapped by userspace, which reads the entries
/// where the program wrote them: an eviction is one copy, with no helper
/// call and no lock (the BPF ring buffer it replaced took a copy into a
/// per-CPU batch, then a helper call, a lock and a second copy per batch).
/// Its size is (highest possible CPU id + 1) << `RING_SHIFT`.
pub const EVICTED_MAP: &str = "EVICTED";
/// Name of the array of [`RingPos`], one per CPU id: where each CPU's
/// eviction ring in [`EVICTED_MAP`] is written and read. Mapped by
/// userspace like the ring.
pub const EVICT_POS_MAP: &str = "EVICT_POS";
/// Name of the global holding the ring-index mask: eviction ring entries
/// per CPU minus one. Userspace sets it at load time.
pub const RING_MASK_GLOBAL: &str = "RING_MASK";
/// Name of the global holding log2 of the eviction ring entries per CPU.
/// Userspace sets it at load time.
pub const RING_SHIFT_GLOBAL: &str = "RING_SHIFT";
/// Name of the global (one `u64`) holding the clock the program stamps
/// flows with: kernel monotonic time in ns, which userspace writes every
/// 10 ms. Reading it is one load from its address; the kernel's clock
/// helpers are a call whose return, on CPUs with return-thunk mitigations
/// (AMD's "Safe RET"), costs more than the rest of an established packet's
/// path, and an array lookup a round trip of its index through the stack.
pub const CLOCK_GLOBAL: &str = "CLOCK";
/// Name of the map aya makes of the object's `.bss` (an array of one
/// value, the whole section), through which userspace writes the clock.
/// [`CLOCK_GLOBAL`] is the only thing in `.bss`, so the value is that `u64`
/// (`cargo xtask build` checks it).
pub const CLOCK_MAP: &str = ".bss";
/// Name of the global (read-only data) holding the slot-index mask: slots
/// per CPU minus one. Userspace sets it at load time.
pub const SLOT_MASK_GLOBAL: &str = "SLOT_MASK";
/// Name of the global holding log2 of the slots per CPU. Userspace sets it
/// at load time.
pub const SLOT_SHIFT_GLOBAL: &str = "SLOT_SHIFT";
/// `BPF_F_MMAPABLE`: an array whose values start on a page boundary.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;
/// Name of the global holding the slot hash's seeds, one per key word
/// ([`hash_seeds`]). Userspace sets it at load time from a random source,
/// so that nobody can aim collisions at a slot.
pub const HASH_SEEDS_GLOBAL: &str = "HASH_SEEDS";

/// The slot hash's seeds for the random `seed`: one per key word, word `i`'s
/// the seed rotated left by `13 * i` bits. Computed once here rather than
/// on every packet (four rotations, 16 instructions).
#[must_use]
pub fn hash_seeds(seed: u64) -> [u64; 5] {
    core::array::from_fn(|i| seed.rotate_left(13 * i as u32))
}

/// Default number of flows userspace tracks at once (`--max-flows`): what a
/// busy 10G link holds within the default 60 s idle timeout. CAIDA sizes
/// the flow tables of its monitors on 10G (OC-192) backbone links at
/// 500,000 entries; `cargo xtask bench flows` keeps twice that exact at a
/// million packets/s in a fifth of a core. netmon allocates the table at
/// start: about 240 bytes a flow, 120 MiB for this default (BENCHMARKS.md,
/// "Userspace by active flows"). 65,536 before, which a busy link filled
/// in seconds.
pub const DEFAULT_MAX_FLOWS: u32 = 524_288;
/// Slots per CPU when the object is loaded unchanged (a power of two).
pub const DEFAULT_SLOTS_PER_CPU: u32 = 4096;
/// A cache size as sysfs writes it (`512K`, `2048K`, `1M`), in bytes.
#[must_use]
pub fn parse_cache_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let mult = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        _ => return None,
    };
    Some(n * mult)
}

/// Default slots per CPU of the kernel's flow cache: the largest power of
/// two whose slots (`slot_bytes` each) fill at most a quarter of the L2
/// cache, within 1024..=16384; 4096 when the L2 size is unknown.
///
/// Why a quarter: a new flow's slot is a random one, and what it costs is
/// mostly whether that slot is still in the L2 beside the packet data, the
/// ring and the rest of the kernel. On an AMD EPYC (512 KiB L2) `cargo
/// xtask bench xdp` measured a new flow at 57, 87 and 153 ns over the floor
/// with 256, 1024 and 4096 slots (24, 96 and 384 KiB).
#[must_use]
pub fn default_flow_slots(l2_bytes: Option<u64>, slot_bytes: u64) -> u32 {
    let Some(l2) = l2_bytes else {
        return 4096;
    };
    let fit = (l2 / 4 / slot_bytes).max(1);
    let pow2 = 1u64 << fit.ilog2();
    pow2.clamp(1024, 16384) as u32
}

/// Eviction ring entries per CPU when the object is loaded unchanged (a
/// power of two). netmon sets its own size at load ([`ring_entries_per_cpu`]).
pub const DEFAULT_RING_ENTRIES: u32 = 8192;

/// Bytes of eviction ring netmon sets up, shared out among the CPUs: 8 MiB,
/// about 80,000 evicted flows (see [`ring_entries_per_cpu`]).
pub const RING_BYTES: u64 = 8 << 20;

/// Eviction ring entries per CPU netmon sets up for `cpus` CPUs (the
/// highest possible CPU id + 1): [`RING_BYTES`] shared out, rounded down
/// to a power of two, within 16,384..=65,536 (1.7-6.8 MiB per CPU).
///
/// Its reader empties every CPU's ring every 10 ms. When every packet of
/// a link evicts a flow (a busy 10G link: about a million packets/s among a
/// million active flows, see BENCHMARKS.md, "Userspace by active flows"),
/// 10 ms bring 10,000 evictions, all on one CPU at worst (one RSS queue).
/// 16,384 entries leave room for 16 ms of that on each CPU, and the 32,768
/// of a two-CPU machine for 32 ms, for a reader held up by a busy machine.
#[must_use]
pub fn ring_entries_per_cpu(cpus: u32) -> u32 {
    let per_cpu = RING_BYTES / u64::from(cpus.max(1)) / size_of::<Evicted>() as u64;
    let pow2 = 1u64 << per_cpu.max(1).ilog2();
    pow2.clamp(16_384, 65_536) as u32
}

/// `FlowKey::ip_version` values.
pub const IP_V4: u8 = 4;
pub const IP_V6: u8 = 6;

/// IP protocol numbers the program looks into.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;

/// Key of the flow table: one direction of one conversation.
///
/// Addresses are stored as they appear on the wire; an IPv4 address fills the
/// first 4 bytes and the rest stay zero. Ports are in network byte order
/// (the program copies them without swapping); for ICMP and for non-first
/// IPv4 fragments they are 0.
///
/// Aligned to 8 so the program can hash and compare it as five `u64`s.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    /// [`IP_V4`] or [`IP_V6`].
    pub ip_version: u8,
    /// [`DIR_RX`] (counted by the XDP program) or [`DIR_TX`] (the TC
    /// egress program): the two directions of one conversation are two
    /// flows anyway, and a host talking to itself through a veth would
    /// otherwise merge a packet's rx and tx sightings.
    pub direction: u8,
    /// Explicit padding to 40 bytes; always zero so equal flows hash equally.
    pub pad: u8,
}

impl FlowKey {
    /// The key as five machine words, for hashing and comparing.
    #[expect(clippy::inline_always, reason = "called per packet in the XDP program")]
    #[inline(always)]
    #[must_use]
    pub fn words(&self) -> &[u64; 5] {
        // SAFETY: FlowKey is repr(C), 40 bytes, 8-aligned, without implicit
        // padding (asserted below), and every bit pattern is a valid u64.
        unsafe { &*core::ptr::from_ref(self).cast::<[u64; 5]>() }
    }

    /// The key whose [`words`](Self::words) are `w`: the addresses in words
    /// 0-1 and 2-3 (wire order), and in word 4 the ports (wire order, bits
    /// 0-31), the protocol (bits 32-39), the IP version (bits 40-47) and
    /// the direction (bits 48-55), on
    /// a little-endian machine (the BPF target and x86/arm64 hosts).
    #[expect(clippy::inline_always, reason = "called per packet in the XDP program")]
    #[inline(always)]
    #[must_use]
    pub fn from_words(w: [u64; 5]) -> FlowKey {
        // SAFETY: as in words(): same size and alignment, any bits valid.
        unsafe { core::mem::transmute::<[u64; 5], FlowKey>(w) }
    }
}

/// What one CPU counted for one flow. Within a [`FlowSlot`] it is updated
/// with plain adds: only the CPU that owns the slot writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub packets: u64,
    /// Sum of L2 frame lengths (Ethernet header included, FCS excluded).
    pub bytes: u64,
    /// Sum of IP packet lengths, IP header included (IPv4 total length,
    /// IPv6 40 bytes plus payload length): what IPFIX's octetDeltaCount
    /// counts (RFC 7012). No link-layer header, VLAN tag or padding.
    pub ip_bytes: u64,
    /// Kernel monotonic time (`CLOCK_MONOTONIC`, as published by userspace
    /// every 10 ms, see `CLOCK_MAP`) of the first and last packet.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// OR of the TCP flags seen (0 for other protocols).
    pub tcp_flags: u32,
    pub pad: u32,
}

impl FlowValue {
    /// Adds `more`, another record of the same flow (later, or from another
    /// CPU), into `self`.
    pub fn merge(&mut self, more: &FlowValue) {
        self.packets += more.packets;
        self.bytes += more.bytes;
        self.ip_bytes += more.ip_bytes;
        self.first_seen_ns = self.first_seen_ns.min(more.first_seen_ns);
        self.last_seen_ns = self.last_seen_ns.max(more.last_seen_ns);
        self.tcp_flags |= more.tcp_flags;
    }
}

/// One entry of a CPU's flow cache: a direct-mapped slot, chosen by a hash
/// of the key. A flow that hashes to an occupied slot evicts its occupant
/// (to its CPU's ring in [`EVICTED_MAP`], with its final counts) and takes the slot.
///
/// `seq` numbers the slot's occupants per CPU (0 is an empty slot), so
/// userspace can tell one occupancy from the next: twice the direction's
/// `flow_records` count plus the direction (rx 2, 4, ...; tx 3, 5, ...),
/// since the XDP and TC programs each count their own. The program
/// writes `seq_end` first and `seq` last when a new flow moves in: on a CPU
/// that keeps stores in order (x86), a reader that copies the slot in
/// address order and finds `seq == seq_end` has a copy that is not torn
/// across a change of occupant. Elsewhere (arm64) a torn copy can pass the
/// check; userspace then corrects it with the next copy or the final record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    pub seq: u64,
    pub key: FlowKey,
    pub value: FlowValue,
    pub seq_end: u64,
    /// Passive-RTT state of this occupancy (kernel only; userspace ignores
    /// it; both 0 when a flow moves in): unused on a transmitted flow; on a
    /// received flow, the last TCP
    /// TSecr it looked up, so a segment echoing the same value as the one
    /// before costs no lookup.
    pub rtt_mark: u32,
    /// On a transmitted flow, the last TSval it sent (any segment): only a
    /// TSval's first segment may be recorded, because the peer echoes a
    /// TSval from the first segment that carried it. Unused on a received
    /// flow.
    pub rtt_pad: u32,
    /// Pads the slot to 128 bytes: in the page-aligned slot array every
    /// slot then covers exactly two cache lines (104 bytes would straddle
    /// three for some slots). The first line holds what every packet of an
    /// established flow reads (the key) and the first counters.
    pub reserved: [u64; 2],
}

/// The final state of one occupancy of a [`FlowSlot`], as it leaves the
/// slot, an entry of a CPU's eviction ring ([`EVICTED_MAP`]): the slot
/// without what only the kernel reads (the passive-RTT state) and without
/// its padding, 104 bytes instead of 128. `seq` and `seq_end` as in the
/// slot; the program writes them in the same order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evicted {
    pub seq: u64,
    pub key: FlowKey,
    pub value: FlowValue,
    pub seq_end: u64,
}

impl From<&FlowSlot> for Evicted {
    fn from(s: &FlowSlot) -> Self {
        Self {
            seq: s.seq,
            key: s.key,
            value: s.value,
            seq_end: s.seq_end,
        }
    }
}

/// Where one CPU's eviction ring stands (an entry of [`EVICT_POS_MAP`]):
/// entries `tail..head` (counted from 0 for ever; entry `n` at ring index
/// `n & RING_MASK`) are evictions userspace has not read yet.
///
/// The program alone writes `head` and userspace alone writes `tail`, each
/// on its own cache line. The program writes an entry whole, then `head`;
/// userspace reads `head`, then the entries below it, then moves `tail`
/// past what it read. The ring is full when `head - tail` is its size: the
/// program then keeps the slot's occupant (and counts the packet that
/// could not take the slot in `flow_insert_failed`). On a CPU that keeps
/// stores in order (x86), a reader that sees a `head` sees the entries
/// below it whole; elsewhere (arm64) the entry's `seq == seq_end` check is
/// what userspace has.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingPos {
    /// Evictions this CPU's program has written.
    pub head: u64,
    pub head_line: [u64; 7],
    /// Evictions userspace has read.
    pub tail: u64,
    pub tail_line: [u64; 7],
}

/// Name of the hash map of sent packets waiting for the packet that
/// answers them (passive RTT, ePPing's method): [`RttKey`] to
/// [`RttPending`], shared by every CPU (the answer may come in on another
/// one). The TC egress program records; the XDP program looks up, sends a
/// sample to [`RTT_SAMPLES_MAP`] and deletes the entry it matched.
///
/// What is recorded, per kind:
/// - [`RTT_TCP_TS`]: a segment's TCP TSval, matched by the first incoming
///   segment of the reverse flow whose TSecr equals it. Only the first
///   segment carrying a TSval is recorded (a later one with the same value
///   finds the entry taken), and only a TSval that is a multiple of 4 (the
///   rate limit, the same rule on every CPU). An echo arrives
///   at most once per entry (the entry goes on the first); a retransmitted
///   segment carries a new TSval, so its echo times it and no earlier send.
/// - [`RTT_TCP_SYN`]: a SYN (no ACK), id = its sequence number + 1, matched
///   by the SYN-ACK acknowledging it.
/// - [`RTT_TCP_SYNACK`]: a SYN-ACK the host sends (a connection it
///   accepts), id = its sequence number + 1, matched by the peer's first
///   ACK of it.
/// - [`RTT_ICMP_ECHO`]: an ICMP or ICMPv6 echo request, id = identifier
///   << 16 | sequence number, matched by the echo reply.
///
/// A SYN or echo request sent again with the same id (a retransmission)
/// marks the entry ambiguous: its answer gives no sample (Karn's rule) and
/// counts in `Counters::rtt_ambiguous`. Bounded: an insert into the full map
/// fails and counts in `Counters::rtt_pending_full`; userspace deletes
/// entries older than [`RTT_PENDING_TIMEOUT_NS`].
pub const RTT_PENDING_MAP: &str = "RTT_PENDING";
/// Name of the ring buffer of [`RttSample`]s.
pub const RTT_SAMPLES_MAP: &str = "RTT_SAMPLES";
/// Entries of [`RTT_PENDING_MAP`] when the object is loaded unchanged.
pub const DEFAULT_RTT_PENDING: u32 = 16_384;
/// Size of [`RTT_SAMPLES_MAP`] in bytes.
pub const DEFAULT_RTT_SAMPLES_BYTES: u32 = 1 << 18;
/// Pending entries older than this get no sample: userspace deletes them.
pub const RTT_PENDING_TIMEOUT_NS: u64 = 10_000_000_000;

/// [`RttKey`] kinds (in `flow.pad`), see [`RTT_PENDING_MAP`].
pub const RTT_TCP_TS: u8 = 1;
pub const RTT_TCP_SYN: u8 = 2;
pub const RTT_TCP_SYNACK: u8 = 3;
pub const RTT_ICMP_ECHO: u8 = 4;

/// Key of [`RTT_PENDING_MAP`]: the sent packet's flow as the TC program
/// keys it (source = this host, `direction` = [`DIR_TX`]), with the kind in
/// `flow.pad` and what the answer must echo in `id`. For ICMP the ports
/// are 0, as in every flow key.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RttKey {
    pub flow: FlowKey,
    pub id: u32,
    pub pad: u32,
}

/// Value of [`RTT_PENDING_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttPending {
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the packet was sent.
    pub sent_ns: u64,
    /// Not 0: sent more than once with this id; its answer is no sample.
    pub ambiguous: u32,
    pub pad: u32,
}

/// Record of the [`RTT_SAMPLES_MAP`] ring: one round trip of real traffic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttSample {
    /// The sent packet's flow (source = this host, destination = the
    /// remote host, `direction` = [`DIR_TX`]), the kind in `pad`.
    pub flow: FlowKey,
    /// From the send (TC egress) to the answer (XDP ingress), both
    /// `bpf_ktime_get_ns`, in ns.
    pub rtt_ns: u64,
}

/// Frame-size classes of RFC 2819 (etherStatsPkts*Octets), by L2 length
/// without FCS: the RFC's 64 octets include the 4-byte FCS, so the class
/// bounds here are 4 lower.
pub const SIZE_CLASSES: usize = 7;
pub const SIZE_CLASS_LABELS: [&str; SIZE_CLASSES] = [
    "64",
    "65-127",
    "128-255",
    "256-511",
    "512-1023",
    "1024-1518",
    ">1518",
];

/// Upper bound (inclusive, without FCS) of each size class but the last.
pub const SIZE_CLASS_MAX: [u32; SIZE_CLASSES - 1] = [60, 123, 251, 507, 1019, 1514];

/// Index of the size class of a frame of `len` bytes (FCS excluded).
#[expect(clippy::inline_always, reason = "called per packet in the XDP program")]
#[inline(always)]
#[must_use]
pub fn size_class(len: u32) -> usize {
    // A chain of comparisons: the verifier needs no loop and the branch
    // predictor learns the common sizes.
    if len <= SIZE_CLASS_MAX[0] {
        0
    } else if len <= SIZE_CLASS_MAX[1] {
        1
    } else if len <= SIZE_CLASS_MAX[2] {
        2
    } else if len <= SIZE_CLASS_MAX[3] {
        3
    } else if len <= SIZE_CLASS_MAX[4] {
        4
    } else if len <= SIZE_CLASS_MAX[5] {
        5
    } else {
        6
    }
}

/// Global counters, one copy per CPU, summed by userspace. Exact whatever
/// happens to the flow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub tcp: u64,
    pub udp: u64,
    pub icmp: u64,
    pub icmpv6: u64,
    /// IP packets of any other protocol (including IPv6 whose extension
    /// header chain was too long to walk to the end).
    pub other_ip: u64,
    pub arp: u64,
    /// Frames that are neither IP nor ARP.
    pub other_l2: u64,
    pub size_classes: [u64; SIZE_CLASSES],
    pub tcp_syn: u64,
    pub tcp_fin: u64,
    pub tcp_rst: u64,
    /// Frames whose headers end before the packet says they should.
    pub malformed: u64,
    /// Packets counted to no flow: the kernel could not evict a slot's
    /// occupant because the eviction ring was full (userspace adds the
    /// packets of flows its full table could not take). They are still in
    /// every other counter.
    pub flow_insert_failed: u64,
    /// Flow records started: a flow's first packet on a CPU, or its first
    /// after its slot was taken by another flow. Also the last `seq` this
    /// CPU gave out.
    pub flow_records: u64,
    /// Passive RTT (see [`RTT_PENDING_MAP`]), counted by the program that
    /// does the work: in the transmit entry, timestamps recorded, and those
    /// the full pending map could not hold; in the receive entry, samples
    /// sent to [`RTT_SAMPLES_MAP`], samples lost because that ring was
    /// full, and echoes of a timestamp sent more than once (a retransmitted
    /// SYN or echo request: Karn's rule, no sample).
    pub rtt_recorded: u64,
    pub rtt_pending_full: u64,
    pub rtt_samples: u64,
    pub rtt_samples_lost: u64,
    pub rtt_ambiguous: u64,
}

impl Counters {
    /// Adds `other` to `self` field by field (for summing per-CPU copies).
    pub fn accumulate(&mut self, other: &Counters) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.tcp += other.tcp;
        self.udp += other.udp;
        self.icmp += other.icmp;
        self.icmpv6 += other.icmpv6;
        self.other_ip += other.other_ip;
        self.arp += other.arp;
        self.other_l2 += other.other_l2;
        for (a, b) in self.size_classes.iter_mut().zip(other.size_classes.iter()) {
            *a += *b;
        }
        self.tcp_syn += other.tcp_syn;
        self.tcp_fin += other.tcp_fin;
        self.tcp_rst += other.tcp_rst;
        self.malformed += other.malformed;
        self.flow_insert_failed += other.flow_insert_failed;
        self.flow_records += other.flow_records;
        self.rtt_recorded += other.rtt_recorded;
        self.rtt_pending_full += other.rtt_pending_full;
        self.rtt_samples += other.rtt_samples;
        self.rtt_samples_lost += other.rtt_samples_lost;
        self.rtt_ambiguous += other.rtt_ambiguous;
    }

    /// `self - before`, field by field: what was counted between two reads
    /// (`before` the earlier one).
    #[must_use]
    pub fn minus(&self, before: &Counters) -> Counters {
        let mut size_classes = self.size_classes;
        for (a, b) in size_classes.iter_mut().zip(before.size_classes) {
            *a -= b;
        }
        Counters {
            packets: self.packets - before.packets,
            bytes: self.bytes - before.bytes,
            tcp: self.tcp - before.tcp,
            udp: self.udp - before.udp,
            icmp: self.icmp - before.icmp,
            icmpv6: self.icmpv6 - before.icmpv6,
            other_ip: self.other_ip - before.other_ip,
            arp: self.arp - before.arp,
            other_l2: self.other_l2 - before.other_l2,
            size_classes,
            tcp_syn: self.tcp_syn - before.tcp_syn,
            tcp_fin: self.tcp_fin - before.tcp_fin,
            tcp_rst: self.tcp_rst - before.tcp_rst,
            malformed: self.malformed - before.malformed,
            flow_insert_failed: self.flow_insert_failed - before.flow_insert_failed,
            flow_records: self.flow_records - before.flow_records,
            rtt_recorded: self.rtt_recorded - before.rtt_recorded,
            rtt_pending_full: self.rtt_pending_full - before.rtt_pending_full,
            rtt_samples: self.rtt_samples - before.rtt_samples,
            rtt_samples_lost: self.rtt_samples_lost - before.rtt_samples_lost,
            rtt_ambiguous: self.rtt_ambiguous - before.rtt_ambiguous,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, `repr(C)`, no implicit padding (checked by the
    // size assertions below), every bit pattern valid.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Evicted {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RingPos {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RttKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RttPending {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RttSample {}
}

// The layouts must have no implicit padding: the kernel hashes every key byte.
const _: () = assert!(size_of::<FlowKey>() == 40);
const _: () = assert!(size_of::<FlowValue>() == 48);
const _: () = assert!(size_of::<Counters>() == 8 * (20 + SIZE_CLASSES));
const _: () = assert!(size_of::<FlowSlot>() == 128);
const _: () = assert!(size_of::<RttKey>() == 48);
const _: () = assert!(size_of::<RttPending>() == 16);
const _: () = assert!(size_of::<RttSample>() == 48);
const _: () = assert!(size_of::<Evicted>() == 104);
const _: () = assert!(size_of::<RingPos>() == 128);

#[cfg(test)]
mod tests {
    #[test]
    fn the_eviction_rings_share_8_mib_within_bounds() {
        use super::ring_entries_per_cpu;
        assert_eq!(ring_entries_per_cpu(1), 65_536);
        assert_eq!(ring_entries_per_cpu(2), 32_768);
        assert_eq!(ring_entries_per_cpu(4), 16_384);
        assert_eq!(ring_entries_per_cpu(64), 16_384);
        assert_eq!(ring_entries_per_cpu(0), 65_536);
    }

    #[test]
    fn flow_slots_follow_the_l2() {
        use super::{default_flow_slots, parse_cache_size};
        assert_eq!(parse_cache_size("512K"), Some(512 << 10));
        assert_eq!(parse_cache_size("2048K\n"), Some(2 << 20));
        assert_eq!(parse_cache_size("1M"), Some(1 << 20));
        assert_eq!(parse_cache_size("12"), Some(12));
        assert_eq!(parse_cache_size("1G"), None);
        assert_eq!(parse_cache_size("K"), None);
        // AMD EPYC (Zen 3): 512 KiB L2 -> 1024 slots of 128 bytes fill a
        // quarter.
        assert_eq!(default_flow_slots(Some(512 << 10), 128), 1024);
        // Intel Xeon model 167: 2 MiB -> 4096.
        assert_eq!(default_flow_slots(Some(2 << 20), 128), 4096);
        assert_eq!(default_flow_slots(Some(64 << 20), 128), 16384);
        assert_eq!(default_flow_slots(Some(64 << 10), 128), 1024);
        assert_eq!(default_flow_slots(None, 128), 4096);
        // Not a power of two of slots: rounded down (96-byte slots).
        assert_eq!(default_flow_slots(Some(512 << 10), 96), 1024);
    }

    use super::*;

    #[test]
    fn size_class_bounds_follow_rfc2819_without_fcs() {
        assert_eq!(size_class(42), 0); // a padded-to-60 runt still lands in "64"
        assert_eq!(size_class(60), 0);
        assert_eq!(size_class(61), 1);
        assert_eq!(size_class(123), 1);
        assert_eq!(size_class(124), 2);
        assert_eq!(size_class(1514), 5);
        assert_eq!(size_class(1515), 6);
        assert_eq!(size_class(9000), 6);
    }

    #[test]
    fn accumulate_adds_every_field() {
        let mut one = Counters {
            packets: 1,
            bytes: 2,
            tcp: 3,
            udp: 4,
            icmp: 5,
            icmpv6: 6,
            other_ip: 7,
            arp: 8,
            other_l2: 9,
            size_classes: [1, 2, 3, 4, 5, 6, 7],
            tcp_syn: 10,
            tcp_fin: 11,
            tcp_rst: 12,
            malformed: 13,
            flow_insert_failed: 14,
            flow_records: 15,
            rtt_recorded: 16,
            rtt_pending_full: 17,
            rtt_samples: 18,
            rtt_samples_lost: 19,
            rtt_ambiguous: 20,
        };
        let copy = one;
        one.accumulate(&copy);
        assert_eq!(one.packets, 2);
        assert_eq!(one.flow_insert_failed, 28);
        assert_eq!(one.size_classes, [2, 4, 6, 8, 10, 12, 14]);
        assert_eq!(one.malformed, 26);
        // minus undoes accumulate, every field.
        assert_eq!(one.minus(&copy), copy);
    }

    #[test]
    fn merge_adds_counts_and_widens_the_time_span() {
        let mut a = FlowValue {
            packets: 2,
            bytes: 200,
            ip_bytes: 172,
            first_seen_ns: 10,
            last_seen_ns: 20,
            tcp_flags: 0x10,
            pad: 0,
        };
        a.merge(&FlowValue {
            packets: 1,
            bytes: 60,
            ip_bytes: 46,
            first_seen_ns: 5,
            last_seen_ns: 15,
            tcp_flags: 0x02,
            pad: 0,
        });
        assert_eq!(
            (
                a.packets,
                a.bytes,
                a.ip_bytes,
                a.first_seen_ns,
                a.last_seen_ns,
                a.tcp_flags
            ),
            (3, 260, 218, 5, 20, 0x12)
        );
    }
}
