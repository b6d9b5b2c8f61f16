//! Fail-open and differential check of the XDP program, without attaching
//! it: every frame of a seeded corpus (valid templates truncated at every
//! offset, flipped bytes, lying length fields, long and looping IPv6
//! extension chains, VLAN stacks, MPLS, PPPoE and AH damaged, random bytes)
//! goes through BPF_PROG_TEST_RUN once.
//!
//! - Fail-open: each run returns `XDP_PASS` and hands back the frame
//!   unchanged (same length, same bytes).
//! - Differential: a userspace reference parser (`reference.rs`, on top of
//!   etherparse) says what each frame should count and which flow it belongs
//!   to. Checked per frame (the change in the summed `COUNTERS`, and the
//!   expected flow's packet count in the kernel) and at the end (every flow
//!   the kernel holds against the reference's multiset of flows, every
//!   counter).
//!
//! The kernel's flows are read the way netmon reads them: the final records
//! in each CPU's `EVICTED` ring and the `FLOW_SLOTS`. The object is loaded
//! with one slot per CPU, so every change of flow evicts the previous one:
//! the corpus drives the eviction path on nearly every IP frame. At the
//! end, the program's count of flow records must equal the occupancies
//! found in rings and slots.
//!
//! The rules both sides follow: Ethernet (< 14 bytes malformed), up to four
//! VLAN tags (0x8100/0x88A8 in any order, a tag cut off is malformed, a
//! fifth tag leaves "other L2"); then IPv4, IPv6, ARP, or one of: an MPLS
//! label stack (0x8847/0x8848; up to 8 entries of 4 bytes, an entry cut off
//! is malformed, no bottom of stack within 8 is "other L2"; after the bottom
//! of stack the first nibble picks IPv4 (4) or IPv6 (6), anything else is
//! "other L2", no payload byte is malformed) or a PPPoE session header
//! (0x8864; 6 bytes and the 2-byte PPP protocol, cut off is malformed;
//! version/type 0x11, code 0 and protocol 0x0021 (IPv4) or 0x0057 (IPv6),
//! anything else "other L2"; the PPPoE length is not checked). Nothing is
//! stepped over after MPLS or PPPoE. IPv4 (version 4, IHL >= 20 bytes, IHL
//! <= total length <= frame; padding after total length ignored; ports only
//! when the fragment offset is 0); IPv6 (version 6, 40-byte header in the
//! frame, payload length within the frame, 0 meaning "to the end of the
//! frame"; up to 8 extension headers 0/43/60/44/51 walked, each wholly
//! inside the packet, AH (51) being (length + 2) * 4 bytes long; the last
//! fragment header decides whether ports are read; a ninth extension header
//! is "chain too long": other IP, keyed by that next header, ports 0); L4
//! needs 20 (TCP), 8 (UDP) or 4 (ICMP, ICMPv6, by protocol number alone)
//! bytes inside the packet.
//!
//! BPF_PROG_TEST_RUN refuses XDP input shorter than ETH_HLEN (14 bytes) with
//! EINVAL, so frames truncated below 14 bytes cannot be fed this way.
//!
//! Needs root and the built object: `cargo xtask test` sets
//! `NETMON_EBPF_OBJ`. The seed is printed first and with every failure;
//! `NETMON_CORPUS_SEED=<seed>` replays a corpus.

#[path = "xdp_corpus/corpus.rs"]
mod corpus;
#[path = "xdp_corpus/reference.rs"]
mod reference;
#[path = "xdp_corpus/rtt.rs"]
mod rtt;

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    fmt::Write as _,
    time::{Duration, Instant},
};

use corpus::Frame;
use netmon::sys::{Counting, FlowMaps, Object, object::TestRunOptions};
use netmon_common::{
    Counters, DEFAULT_RING_ENTRIES, DEFAULT_RTT_PENDING, DIR_RX, DIR_TX, Evicted, FlowKey,
    FlowValue, TC_PROGRAM, XDP_PROGRAM,
};
use netmon_tests::frames;
use reference::Outcome;

const XDP_PASS: u32 = 2;
/// The corpus used unless `NETMON_CORPUS_SEED` names another.
const DEFAULT_SEED: u64 = 0x6e65_746d_6f6e_0005;
/// Failures listed in full per kind; the rest are only counted. The
/// per-frame counter disagreements come first and say the most.
const SHOWN: usize = 10;
const SHOWN_SECONDARY: usize = 4;
/// Bytes of a frame printed in a failure (the headers are in front).
const HEX_BYTES: usize = 160;
/// Frames kept per expected flow, to print next to a mismatching entry.
const FRAMES_PER_FLOW: usize = 2;

fn seed() -> u64 {
    match std::env::var("NETMON_CORPUS_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("NETMON_CORPUS_SEED={s}: {e}"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * HEX_BYTES + 32);
    for b in bytes.iter().take(HEX_BYTES) {
        write!(s, "{b:02x}").expect("write to String");
    }
    if bytes.len() > HEX_BYTES {
        write!(s, "... ({} bytes)", bytes.len()).expect("write to String");
    }
    s
}

fn describe(frames: &[Frame], i: usize) -> String {
    let f = &frames[i];
    format!(
        "frame #{i} ({}, {} bytes): {}",
        f.origin,
        f.bytes.len(),
        hex(&f.bytes)
    )
}

/// The counters as named numbers, for comparing and printing field by field.
fn fields(c: &Counters) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = [
        ("packets", c.packets),
        ("bytes", c.bytes),
        ("tcp", c.tcp),
        ("udp", c.udp),
        ("icmp", c.icmp),
        ("icmpv6", c.icmpv6),
        ("other_ip", c.other_ip),
        ("arp", c.arp),
        ("other_l2", c.other_l2),
        ("tcp_syn", c.tcp_syn),
        ("tcp_fin", c.tcp_fin),
        ("tcp_rst", c.tcp_rst),
        ("malformed", c.malformed),
        ("flow_insert_failed", c.flow_insert_failed),
        ("flow_records", c.flow_records),
    ]
    .into_iter()
    .map(|(name, n)| (name.to_owned(), n))
    .collect();
    for (i, n) in c.size_classes.iter().enumerate() {
        v.push((format!("size_classes[{i}]"), *n));
    }
    v
}

/// `name: want -> got` for every field that differs.
fn counter_diff(want: &Counters, got: &Counters) -> String {
    fields(want)
        .into_iter()
        .zip(fields(got))
        .filter(|((_, w), (_, g))| w != g)
        .map(|((name, w), (_, g))| format!("{name}: want {w} got {g}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `got - before`, field by field: what one frame added.
/// What one frame added to the counters, as the reference counts it.
fn delta(got: &Counters, before: &Counters) -> Counters {
    let mut d = got.minus(before);
    // Which packets start a flow record depends on the cache, which the
    // reference does not model; the records are checked by conservation.
    d.flow_records = 0;
    d
}

fn outcome_str(o: &Outcome) -> String {
    match o {
        Outcome::Malformed => "malformed".to_owned(),
        Outcome::Arp => "arp".to_owned(),
        Outcome::OtherL2 => "other L2".to_owned(),
        Outcome::Ip(p) => format!(
            "{}, tcp flags {:#04x}{}",
            key_str(&p.key),
            p.tcp_flags,
            if p.chain_too_long {
                ", chain too long"
            } else {
                ""
            }
        ),
    }
}

fn key_str(k: &FlowKey) -> String {
    let (src, dst) = if k.ip_version == 4 {
        (hex(&k.src[..4]), hex(&k.dst[..4]))
    } else {
        (hex(&k.src), hex(&k.dst))
    };
    format!(
        "v{} proto {} {src}:{} -> {dst}:{}",
        k.ip_version,
        k.proto,
        u16::from_be(k.sport_be),
        u16::from_be(k.dport_be)
    )
}

/// Failures of one kind: the first few in full, then a count.
struct Failures {
    what: &'static str,
    limit: usize,
    shown: Vec<String>,
    total: usize,
}

impl Failures {
    fn new(what: &'static str, limit: usize) -> Self {
        Self {
            what,
            limit,
            shown: Vec::new(),
            total: 0,
        }
    }

    fn add(&mut self, detail: impl FnOnce() -> String) {
        self.total += 1;
        if self.shown.len() < self.limit {
            self.shown.push(detail());
        }
    }

    fn report(&self, out: &mut String) {
        if self.total > 0 {
            writeln!(out, "\n{} ({} in all):", self.what, self.total).expect("write to String");
            for s in &self.shown {
                writeln!(out, "  {s}").expect("write to String");
            }
        }
    }
}

/// What the reference expects of one flow.
#[derive(Default)]
struct ExpectedFlow {
    packets: u64,
    bytes: u64,
    ip_bytes: u64,
    tcp_flags: u32,
    /// The first frames that made it (indices into the corpus).
    frames: Vec<usize>,
}

struct Kernel {
    // Owns the program; the maps were taken out of it.
    object: Object,
    maps: FlowMaps,
    /// Slots per CPU: CPU `c`'s at `c * slot_count`.
    slot_count: u32,
    /// Final records taken from the ring so far, summed per flow.
    ended: StdHashMap<FlowKey, FlowValue>,
    /// Occupancies (CPU, seq) in the records taken from the ring so far.
    ended_ids: HashSet<(u32, u64)>,
    /// Possible CPUs: per-CPU values come in this many copies.
    cpus: usize,
}

/// The shipped object `cargo xtask build` wrote, from `NETMON_EBPF_OBJ`.
pub(crate) fn shipped_object() -> (String, Vec<u8>) {
    let path = std::env::var("NETMON_EBPF_OBJ").unwrap_or_else(|_| {
        panic!(
            "NETMON_EBPF_OBJ is not set: run `cargo xtask test`, or point it at the object \
             that `cargo xtask build` writes (target/bpf/bpfel-unknown-none/release/netmon)"
        )
    });
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    (path, bytes)
}

impl Kernel {
    /// Loads the object with `slots` flow slots per CPU (a power of two) and
    /// the program into the kernel, without attaching it anywhere.
    fn load(slots: u32) -> Self {
        Self::load_with(slots, None)
    }

    /// As [`load`](Self::load), with eviction rings of `ring_entries` per
    /// CPU instead of the object's default.
    fn load_with(slots: u32, ring_entries: Option<u32>) -> Self {
        let (path, bytes) = shipped_object();
        let counting = Counting {
            slots_per_cpu: slots,
            hash_seed: 0x1234_5678_9abc_def0,
            ring_entries_per_cpu: ring_entries.unwrap_or(DEFAULT_RING_ENTRIES),
            rtt_pending: DEFAULT_RTT_PENDING,
        };
        // Through netmon's own loading code (netmon::sys).
        let (mut object, mut maps) = Object::load_counting(&bytes, &counting)
            .unwrap_or_else(|e| panic!("loading {path} (needs root): {e}"));
        object
            .load_xdp(XDP_PROGRAM)
            .unwrap_or_else(|e| panic!("the verifier rejected {XDP_PROGRAM}: {e}"));
        // The clock netmon publishes: any nonzero time will do here.
        maps.set_clock(1_000_000_000).expect("set CLOCK");
        Self {
            cpus: maps.cpu_ids().len(),
            object,
            maps,
            slot_count: slots,
            ended: StdHashMap::new(),
            ended_ids: HashSet::new(),
        }
    }

    /// Runs the program once on `frame`: the verdict, the frame it hands
    /// back, and the kernel's measured run time.
    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>, Duration) {
        // Room beyond the frame, so a program that grew it would show.
        let mut out = vec![0u8; frame.len() + 256];
        let result = self
            .object
            .test_run(
                XDP_PROGRAM,
                TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    repeat: 1,
                    ..TestRunOptions::default()
                },
            )
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {}: {e}", hex(frame)));
        out.truncate(result.data_size_out as usize);
        (result.return_value, out, result.duration)
    }

    /// `COUNTERS` summed over the CPUs.
    fn counters(&self) -> Counters {
        self.maps.counters().expect("read COUNTERS")
    }

    /// Takes the final records out of the rings, as netmon does, after
    /// checking each is whole and that the drain takes exactly those.
    fn drain(&mut self) {
        let unread = self.maps.unread_evicted();
        let mut out = Vec::new();
        while self.maps.drain_evicted(&mut out, 1000) {}
        assert!(self.maps.unread_evicted().is_empty(), "the rings are empty");
        assert_eq!(out.len(), unread.len(), "the drain took what was unread");
        for (o, (cpu, e)) in out.iter().zip(&unread) {
            assert!(e.seq != 0 && e.seq == e.seq_end, "{e:?}");
            assert!((*cpu as usize) < self.cpus, "CPU {cpu}");
            assert_eq!(
                (o.cpu, o.seq, o.key, o.value),
                (*cpu, e.seq, e.key, e.value),
                "drained in ring order"
            );
            assert!(
                self.ended_ids.insert((*cpu, e.seq)),
                "occupancy (CPU {cpu}, seq {}) ended twice",
                e.seq
            );
            self.ended
                .entry(e.key)
                .and_modify(|v| v.merge(&e.value))
                .or_insert(e.value);
        }
    }

    /// What is still in the kernel: the occupied slots and the unread ring
    /// entries of every CPU. The program does not run while this reads,
    /// so every copy is whole.
    /// With the CPU of each (for a slot, its part of the array; the
    /// possible CPUs of a test machine are 0..n).
    fn live(&self) -> Vec<(u32, Evicted)> {
        let mut out = Vec::new();
        let slots = self.maps.slots().expect("read FLOW_SLOTS");
        for (i, slot) in slots.into_iter().enumerate() {
            if slot.seq != 0 {
                assert_eq!(slot.seq, slot.seq_end, "a slot copy is whole");
                out.push((i as u32 / self.slot_count, Evicted::from(&slot)));
            }
        }
        out.extend(self.maps.unread_evicted());
        out
    }

    fn flow(&mut self, key: &FlowKey) -> Option<FlowValue> {
        self.drain();
        let mut total = self.ended.get(key).copied();
        for (_, slot) in self.live().iter().filter(|(_, s)| s.key == *key) {
            match &mut total {
                Some(v) => v.merge(&slot.value),
                None => total = Some(slot.value),
            }
        }
        total
    }

    fn all_flows(&mut self) -> StdHashMap<FlowKey, FlowValue> {
        self.drain();
        let mut all = self.ended.clone();
        for (_, slot) in self.live() {
            all.entry(slot.key)
                .and_modify(|v| v.merge(&slot.value))
                .or_insert(slot.value);
        }
        all
    }

    /// Flow records the program started, against the occupancies found;
    /// panics if one occupancy shows up twice.
    fn records(&mut self) -> (u64, u64) {
        self.drain();
        let mut ids = self.ended_ids.clone();
        for (cpu, slot) in self.live() {
            assert!(
                ids.insert((cpu, slot.seq)),
                "occupancy (CPU {cpu}, seq {}) in two places",
                slot.seq
            );
        }
        (self.counters().flow_records, ids.len() as u64)
    }
}

/// The reference's view of the whole corpus, and what the per-frame checks
/// found while feeding it.
struct Fed {
    verdicts: Failures,
    per_frame: Failures,
    per_flow: Failures,
    counters: Counters,
    flows: StdHashMap<FlowKey, ExpectedFlow>,
    /// Time the kernel measured inside the program, summed.
    kernel_time: Duration,
    /// IP frames (counted to a flow with its ports, not "chain too long")
    /// behind 3-4 VLAN tags, MPLS, PPPoE, and IPv6 AH.
    deep: Deep,
}

/// How many IP frames of the corpus the reference found behind each of the
/// encapsulations stepped over since issue 14 (item 7).
#[derive(Debug, Default)]
struct Deep {
    vlan3_4: u64,
    mpls: u64,
    pppoe: u64,
    ipv6_ah: u64,
}

impl Deep {
    fn add(&mut self, outcome: &Outcome, seen: &reference::Seen) {
        if matches!(outcome, Outcome::Ip(p) if !p.chain_too_long) {
            self.vlan3_4 += u64::from(seen.vlan_tags >= 3);
            self.mpls += u64::from(seen.mpls);
            self.pppoe += u64::from(seen.pppoe);
            self.ipv6_ah += u64::from(seen.ipv6_ah);
        }
    }

    fn smallest(&self) -> u64 {
        self.vlan3_4
            .min(self.mpls)
            .min(self.pppoe)
            .min(self.ipv6_ah)
    }
}

/// Feeds every frame once; after each, checks the verdict and the frame
/// handed back, what the summed counters gained, and that the flow the
/// reference names holds as many packets as the reference has seen for it.
fn feed(kernel: &mut Kernel, frames: &[Frame]) -> Fed {
    let mut fed = Fed {
        verdicts: Failures::new("not XDP_PASS, or the frame changed", SHOWN),
        per_frame: Failures::new("counters: kernel and reference disagree on a frame", SHOWN),
        per_flow: Failures::new(
            "flow: the kernel did not count the frame to the reference's key",
            SHOWN_SECONDARY,
        ),
        counters: Counters::default(),
        flows: StdHashMap::new(),
        kernel_time: Duration::ZERO,
        deep: Deep::default(),
    };
    let mut before = kernel.counters();
    assert_eq!(
        before,
        Counters::default(),
        "a fresh object has zero counters"
    );
    for (i, frame) in frames.iter().enumerate() {
        let bytes = &frame.bytes;
        let (verdict, out, took) = kernel.run(bytes);
        fed.kernel_time += took;
        if verdict != XDP_PASS || out != *bytes {
            fed.verdicts.add(|| {
                format!(
                    "verdict {verdict}, {} bytes back: {}",
                    out.len(),
                    describe(frames, i)
                )
            });
        }

        let (outcome, seen) = reference::parse_seen(bytes);
        fed.deep.add(&outcome, &seen);
        let mut want = Counters::default();
        reference::count(&mut want, bytes.len(), &outcome);
        fed.counters.accumulate(&want);
        let after = kernel.counters();
        let got = delta(&after, &before);
        before = after;
        if got != want {
            fed.per_frame.add(|| {
                format!(
                    "{}; reference: {}\n      {}",
                    counter_diff(&want, &got),
                    outcome_str(&outcome),
                    describe(frames, i)
                )
            });
        }

        if let Outcome::Ip(p) = outcome {
            let e = fed.flows.entry(p.key).or_default();
            e.packets += 1;
            e.bytes += bytes.len() as u64;
            e.ip_bytes += p.ip_len;
            e.tcp_flags |= u32::from(p.tcp_flags);
            if e.frames.len() < FRAMES_PER_FLOW {
                e.frames.push(i);
            }
            let got = kernel.flow(&p.key).map(|v| v.packets);
            if got != Some(e.packets) {
                let want = e.packets;
                fed.per_flow.add(|| {
                    format!(
                        "reference: {} (packet {want} of the flow), kernel has {got:?} packets \
                         for it\n      {}",
                        key_str(&p.key),
                        describe(frames, i)
                    )
                });
            }
        }
    }
    fed
}

/// Every kernel flow against the reference's multiset of flows: packets,
/// bytes, OR of TCP flags, and sane timestamps.
fn compare_flows(
    want: &StdHashMap<FlowKey, ExpectedFlow>,
    got: &StdHashMap<FlowKey, FlowValue>,
    frames: &[Frame],
) -> Failures {
    let mut flows = Failures::new("kernel flows that differ from the reference", SHOWN);
    let mut keys: Vec<&FlowKey> = want.keys().chain(got.keys()).collect();
    keys.sort_by_key(|k| (k.ip_version, k.proto, k.src, k.dst, k.sport_be, k.dport_be));
    keys.dedup();
    for key in keys {
        let w = want.get(key);
        let g = got.get(key);
        let want_t = w.map(|w| (w.packets, w.bytes, w.ip_bytes, w.tcp_flags));
        let got_t = g.map(|g| (g.packets, g.bytes, g.ip_bytes, g.tcp_flags));
        let times_ok = g.is_none_or(|g| g.first_seen_ns != 0 && g.first_seen_ns <= g.last_seen_ns);
        if want_t != got_t || !times_ok {
            flows.add(|| {
                let mut s = format!(
                    "{}: want (packets, bytes, ip bytes, flags) {want_t:?}, got {got_t:?}",
                    key_str(key)
                );
                if let Some(g) = g.filter(|_| !times_ok) {
                    write!(s, ", bad times {}..{}", g.first_seen_ns, g.last_seen_ns)
                        .expect("write to String");
                }
                for &i in w.map(|w| w.frames.as_slice()).unwrap_or_default() {
                    write!(s, "\n      from {}", describe(frames, i)).expect("write to String");
                }
                s
            });
        }
    }
    flows
}

#[test]
fn xdp_passes_every_frame_unchanged_and_counts_like_the_reference() {
    let seed = seed();
    println!("xdp_corpus: seed {seed:#x} (replay with NETMON_CORPUS_SEED={seed:#x})");
    let started = Instant::now();
    let frames = corpus::generate(seed);
    assert!(
        frames.len() >= 100_000,
        "corpus too small: {}",
        frames.len()
    );
    // One slot per CPU: every change of flow evicts (see the top).
    let mut kernel = Kernel::load(1);

    let fed = feed(&mut kernel, &frames);
    let got_flows = kernel.all_flows();
    let flows = compare_flows(&fed.flows, &got_flows, &frames);
    let got_counters = kernel.counters();
    let mut totals = Failures::new("COUNTERS totals that differ from the reference", 2);
    let mut got_without_records = got_counters;
    got_without_records.flow_records = 0;
    if got_without_records != fed.counters {
        totals.add(|| counter_diff(&fed.counters, &got_without_records));
    }
    let (records, found) = kernel.records();
    if records != found {
        totals.add(|| {
            format!("{records} flow records started, {found} found in ring, pending and slots")
        });
    }

    println!(
        "xdp_corpus: {} frames fed, {} distinct flows (reference {}), {} malformed \
         (reference {}); {:.1?} in the program ({:.0} ns/frame), {:.1?} in all",
        frames.len(),
        got_flows.len(),
        fed.flows.len(),
        got_counters.malformed,
        fed.counters.malformed,
        fed.kernel_time,
        fed.kernel_time.as_nanos() as f64 / frames.len() as f64,
        started.elapsed()
    );
    let coverage: Vec<String> = fields(&got_counters)
        .into_iter()
        .skip(2)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    println!("xdp_corpus: kernel counters: {}", coverage.join(", "));
    println!(
        "xdp_corpus: IP frames behind encapsulations: {:?}",
        fed.deep
    );
    // The corpus reaches IP behind each encapsulation often enough to
    // matter (a generator bug would otherwise pass unnoticed).
    assert!(
        fed.deep.smallest() >= 500,
        "seed {seed:#x}: too few IP frames behind an encapsulation: {:?}",
        fed.deep
    );
    let mut report = String::new();
    for f in [
        &fed.verdicts,
        &fed.per_frame,
        &fed.per_flow,
        &flows,
        &totals,
    ] {
        f.report(&mut report);
    }
    assert!(
        report.is_empty(),
        "seed {seed:#x} (replay with NETMON_CORPUS_SEED={seed:#x}):{report}"
    );
}

/// The walk's limit, frame by frame: eight extension headers are walked to
/// the UDP header behind them, a ninth is "chain too long". Small and
/// fixed, so a failure of the corpus at this boundary is easy to read.
#[test]
fn xdp_walks_eight_ipv6_extension_headers_to_l4() {
    for exts in [7, 8, 9] {
        let frame = frames::ipv6_udp_behind_hop_by_hop(exts);
        let Outcome::Ip(want) = reference::parse(&frame) else {
            panic!("the fixture is IPv6")
        };
        let mut kernel = Kernel::load(16);
        let (verdict, out, _) = kernel.run(&frame);
        assert_eq!((verdict, &out), (XDP_PASS, &frame));
        let mut want_counters = Counters::default();
        reference::count(&mut want_counters, frame.len(), &Outcome::Ip(want));
        let mut got_counters = kernel.counters();
        got_counters.flow_records = 0;
        let flows: Vec<String> = kernel.all_flows().keys().map(key_str).collect();
        assert!(
            got_counters == want_counters && kernel.flow(&want.key).is_some(),
            "{exts} hop-by-hop headers, frame {}:\n  want {} ({})\n  got flows {flows:?} ({})",
            hex(&frame),
            key_str(&want.key),
            if want.chain_too_long {
                "other_ip"
            } else {
                "udp"
            },
            counter_diff(&want_counters, &got_counters),
        );
    }
}

/// A full eviction ring: the program keeps a slot's occupant when it cannot
/// evict it, counts the packet in `flow_insert_failed`, and every packet is
/// still either in a flow (ring, slots) or in that counter.
#[test]
fn a_full_ring_keeps_the_occupant_and_counts_what_it_could_not_track() {
    const FLOWS: u16 = 200;
    const RING: u32 = 64;
    // All runs on one CPU, so one ring and one slot fill up.
    pin_to_this_cpu();
    let mut kernel = Kernel::load_with(1, Some(RING));
    let template = frames::ipv6_udp_behind_hop_by_hop(0);
    let sport = template.len() - 8;
    for i in 0..FLOWS {
        let mut frame = template.clone();
        frame[sport..sport + 2].copy_from_slice(&(1000 + i).to_be_bytes());
        let (verdict, out, _) = kernel.run(&frame);
        assert_eq!((verdict, &out), (XDP_PASS, &frame));
        // The ring is not read while the frames go in.
    }
    let counters = kernel.counters();
    assert_eq!(counters.udp, u64::from(FLOWS));
    // The first flow took the empty slot; the next RING evicted one each
    // into the ring; every later one found the ring full.
    assert_eq!(
        counters.flow_insert_failed,
        u64::from(FLOWS) - u64::from(RING) - 1,
        "{counters:?}"
    );
    assert_eq!(kernel.maps.unread_evicted().len(), RING as usize);
    let flows = kernel.all_flows();
    // Every tracked flow is whole (one packet each): the ring's and the
    // slot's occupant, which stayed.
    assert_eq!(flows.len() as u64, u64::from(RING) + 1);
    assert!(flows.values().all(|v| v.packets == 1));
    let (records, found) = kernel.records();
    assert_eq!(records, found);
    // Read, the ring takes evictions again.
    let mut frame = template.clone();
    frame[sport..sport + 2].copy_from_slice(&7u16.to_be_bytes());
    kernel.run(&frame);
    assert_eq!(
        kernel.counters().flow_insert_failed,
        counters.flow_insert_failed
    );
    assert_eq!(kernel.maps.unread_evicted().len(), 1);
}

/// Makes the i-th flow's frame of a family of keys.
type FrameOf = fn(u16) -> Vec<u8>;

/// The slot hash spreads flows over a CPU's slots as a random function
/// would, whatever part of the key varies: 1,000 flows into 1,024 slots
/// (one packet each, on one CPU) occupy 639 slots on average for a random
/// function, standard deviation about 10; the seed is fixed, so the count
/// is the same on every run, and it must lie within four deviations. A
/// hash that loses bits of the ports, of an IPv4 address or of the upper
/// words of an IPv6 address lands far outside (a port that reached only
/// the low 8 bits of the slot index would fill at most 256).
#[test]
fn the_slot_hash_spreads_flows_like_a_random_function() {
    const SLOTS: u32 = 1024;
    const FLOWS: u16 = 1000;
    pin_to_this_cpu();
    let families: [(&str, FrameOf); 4] = [
        ("source ports", |i| {
            frames::ipv4_udp(
                frames::ETH,
                ([192, 0, 2, 1], 1000 + i),
                ([198, 51, 100, 1], 53),
                64,
            )
        }),
        ("IPv4 sources", |i| {
            let [hi, lo] = i.to_be_bytes();
            frames::ipv4_udp(
                frames::ETH,
                ([10, 1, hi, lo], 4000),
                ([198, 51, 100, 1], 53),
                64,
            )
        }),
        ("IPv6 sources, low word", |i| {
            let mut src = frames::v6(1);
            src[14..].copy_from_slice(&i.to_be_bytes());
            frames::ipv6_udp(frames::ETH, (src, 4000), (frames::v6(2), 53), 80)
        }),
        ("IPv6 sources, high word", |i| {
            let mut src = frames::v6(1);
            src[4..6].copy_from_slice(&i.to_be_bytes());
            frames::ipv6_udp(frames::ETH, (src, 4000), (frames::v6(2), 53), 80)
        }),
    ];
    for (what, frame) in families {
        let mut kernel = Kernel::load(SLOTS);
        for i in 0..FLOWS {
            let f = frame(i);
            let (verdict, out, _) = kernel.run(&f);
            assert_eq!((verdict, &out), (XDP_PASS, &f));
        }
        let slots = kernel.maps.slots().expect("read FLOW_SLOTS");
        let taken = slots.iter().filter(|s| s.seq != 0).count();
        // Every flow is somewhere: in its slot, or evicted by a later one.
        assert_eq!(kernel.all_flows().len(), usize::from(FLOWS), "{what}");
        println!("{what}: {FLOWS} flows took {taken} of {SLOTS} slots (random: 639 ± 10)");
        assert!(
            (600..=679).contains(&taken),
            "{what}: {FLOWS} flows took {taken} of {SLOTS} slots, a random function 639 ± 10"
        );
    }
}

/// The shipped object holds netmon's program, the counting code's maps and
/// passive RTT's, nothing of the benches (`cargo xtask build` checks its symbol table;
/// this reads it as netmon's loader sees it).
#[test]
fn the_shipped_object_holds_netmons_program_and_maps_only() {
    let (path, bytes) = shipped_object();
    let object = Object::load(&bytes).unwrap_or_else(|e| panic!("loading {path}: {e}"));
    // Sorted: the TC egress program, then the XDP program.
    assert_eq!(object.program_names(), [TC_PROGRAM, XDP_PROGRAM], "{path}");
    // Global data sections (.rodata, ...) aside.
    let maps: Vec<String> = object
        .map_names()
        .into_iter()
        .filter(|m| !m.starts_with('.'))
        .collect();
    assert_eq!(
        maps,
        [
            "AYA_LOGS",
            "COUNTERS",
            "EVICTED",
            "EVICT_POS",
            "FLOW_SLOTS",
            "RTT_PENDING",
            "RTT_SAMPLES"
        ],
        "{path}"
    );
}

/// The TC egress program parses and counts exactly as the XDP program
/// (which the test above holds to the reference parser): every corpus
/// frame of skb size (14 bytes up to a page, what `BPF_PROG_TEST_RUN`
/// takes for TC) through both, then the transmit counters equal the
/// receive counters and every received flow has its transmitted twin with
/// the same counts. The TC program returns `TC_ACT_UNSPEC` and leaves the
/// frame as it was, every time.
#[test]
fn tc_egress_counts_every_frame_as_the_xdp_program_does() {
    const TC_ACT_UNSPEC: u32 = u32::MAX; // -1
    pin_to_this_cpu();
    let seed = seed();
    println!("tc vs xdp: seed {seed:#x} (replay with NETMON_CORPUS_SEED={seed:#x})");
    let frames: Vec<Frame> = corpus::generate(seed)
        .into_iter()
        .filter(|f| (14..=3000).contains(&f.bytes.len()))
        .collect();
    // Evictions go to the ring, drained every 1024 frames (2048 runs).
    let mut kernel = Kernel::load(1 << 14);
    kernel
        .object
        .load_tc(TC_PROGRAM)
        .unwrap_or_else(|e| panic!("the verifier rejected {TC_PROGRAM}: {e}"));
    // Frames the kernel's skb test run refuses (EINVAL before the program
    // runs: some short frames whose EtherType promises a header) go to
    // neither program.
    let mut refused = 0u64;
    for (i, f) in frames.iter().enumerate() {
        let mut out = vec![0u8; f.bytes.len() + 256];
        let r = match kernel.object.test_run_tc(
            TC_PROGRAM,
            TestRunOptions {
                data_in: Some(&f.bytes),
                data_out: Some(&mut out),
                repeat: 1,
                ..TestRunOptions::default()
            },
        ) {
            Ok(r) => r,
            Err(e) if e.to_string().contains("os error 22") => {
                refused += 1;
                continue;
            }
            Err(e) => panic!("BPF_PROG_TEST_RUN (tc) on {}: {e}", hex(&f.bytes)),
        };
        let (verdict, _, _) = kernel.run(&f.bytes);
        assert_eq!(verdict, 2, "XDP_PASS: {}", describe(&frames, i));
        assert_eq!(r.return_value, TC_ACT_UNSPEC, "{}", describe(&frames, i));
        out.truncate(r.data_size_out as usize);
        assert_eq!(
            out,
            f.bytes,
            "the frame unchanged: {}",
            describe(&frames, i)
        );
        if i % 1024 == 1023 {
            kernel.drain();
        }
    }
    // flow_records aside: stays in a slot depend on the order the two
    // directions' flows met in the shared slots.
    let rx = Counters {
        flow_records: 0,
        ..kernel.maps.counters_of(DIR_RX).expect("rx counters")
    };
    let tx = Counters {
        flow_records: 0,
        ..kernel.maps.counters_of(DIR_TX).expect("tx counters")
    };
    assert_eq!(rx.packets + refused, frames.len() as u64);
    assert!(
        refused * 10 < frames.len() as u64,
        "{refused} of {} frames refused by the skb test run",
        frames.len()
    );
    assert_eq!(
        fields(&tx),
        fields(&rx),
        "tx counters vs rx counters: {}",
        counter_diff(&rx, &tx)
    );
    let flows = kernel.all_flows();
    let (mut rx_flows, mut tx_flows) = (0, 0);
    for (key, value) in &flows {
        if key.direction == DIR_TX {
            tx_flows += 1;
            continue;
        }
        rx_flows += 1;
        let twin = FlowKey {
            direction: DIR_TX,
            ..*key
        };
        let got = flows
            .get(&twin)
            .map(|v| (v.packets, v.bytes, v.ip_bytes, v.tcp_flags));
        assert_eq!(
            got,
            Some((value.packets, value.bytes, value.ip_bytes, value.tcp_flags)),
            "the transmitted twin of {}",
            key_str(key)
        );
    }
    assert_eq!(tx_flows, rx_flows, "as many transmitted flows as received");
    println!(
        "tc vs xdp: {} frames ({refused} refused by the skb test run), {rx_flows} flows each way, {} malformed",
        frames.len(),
        rx.malformed
    );
}

/// Pins the calling thread to the CPU it runs on.
pub(crate) fn pin_to_this_cpu() {
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned here.
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(cpu >= 0, "sched_getcpu");
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set),
            0,
            "sched_setaffinity"
        );
    }
}
