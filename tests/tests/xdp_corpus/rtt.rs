//! Passive RTT in the kernel, packet by packet: the shipped object's TC
//! program (egress) records, its XDP program (ingress) matches, both run
//! through `BPF_PROG_TEST_RUN` in the order a conversation would see them;
//! the samples are read from the `RTT_SAMPLES` ring and the pending
//! entries from `RTT_PENDING` through `sys::RttMaps`, as netmon reads
//! them. Every test checks the five RTT counters exactly, and that both
//! programs hand every frame back unchanged with their fixed verdict.
//!
//! This host is 198.51.100.1 (2001:db8::1), the peer 198.51.100.2
//! (2001:db8::2): transmitted frames go from the host to the peer,
//! received ones the other way.

use netmon::sys::{Counting, FlowMaps, Object, RttMaps, object::TestRunOptions};
use netmon_common::{
    Counters, DEFAULT_RING_ENTRIES, DEFAULT_RTT_PENDING, DEFAULT_RTT_SAMPLES_BYTES, DIR_RX, DIR_TX,
    FlowKey, IP_V4, IP_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, RTT_ICMP_ECHO, RTT_TCP_SYN,
    RTT_TCP_SYNACK, RTT_TCP_TS, RttKey, RttPending, RttSample, TC_PROGRAM, XDP_PROGRAM,
};
use netmon_tests::frames::{
    self, Addr, Segment, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, bsd_syn_options, icmp_echo,
    syn_options, tcp_frame, ts_option,
};

use super::{XDP_PASS, hex, pin_to_this_cpu, shipped_object};

const TC_ACT_UNSPEC: u32 = u32::MAX; // -1
const HOST4: Addr = Addr::V4([198, 51, 100, 1]);
const PEER4: Addr = Addr::V4([198, 51, 100, 2]);
const HOST6: Addr = Addr::V6(frames::v6(1));
const PEER6: Addr = Addr::V6(frames::v6(2));
/// This host's port and the peer's.
const HPORT: u16 = 40_000;
const PPORT: u16 = 443;
/// A clock value, and the next tick's.
const TICK_1: u64 = 1_000_000_000;
const TICK_2: u64 = 1_010_000_000;

/// The five RTT counters: the first two counted by the TC program (in the
/// transmit entry), the others by the XDP program (receive entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RttCounts {
    recorded: u64,
    pending_full: u64,
    samples: u64,
    lost: u64,
    ambiguous: u64,
}

/// The shipped object with both programs loaded (not attached), its
/// counting maps and its RTT maps.
struct RttKernel {
    object: Object,
    maps: FlowMaps,
    rtt: RttMaps,
}

impl RttKernel {
    /// Loads the shipped object with `pending` entries in `RTT_PENDING`,
    /// the clock at [`TICK_1`], and pins the test to its CPU (the flow
    /// slots, which hold the per-flow RTT state, are per CPU).
    fn load(pending: u32) -> Self {
        pin_to_this_cpu();
        let (path, bytes) = shipped_object();
        let counting = Counting {
            slots_per_cpu: 64,
            hash_seed: 0x0123_4567_89ab_cdef,
            ring_entries_per_cpu: DEFAULT_RING_ENTRIES,
            rtt_pending: pending,
        };
        let (mut object, mut maps) = Object::load_counting(&bytes, &counting)
            .unwrap_or_else(|e| panic!("loading {path} (needs root): {e}"));
        object
            .load_xdp(XDP_PROGRAM)
            .unwrap_or_else(|e| panic!("the verifier rejected {XDP_PROGRAM}: {e}"));
        object
            .load_tc(TC_PROGRAM)
            .unwrap_or_else(|e| panic!("the verifier rejected {TC_PROGRAM}: {e}"));
        let rtt = RttMaps::take(&mut object)
            .expect("RTT maps")
            .expect("the shipped object has the RTT maps");
        maps.set_clock(TICK_1).expect("set CLOCK");
        Self { object, maps, rtt }
    }

    /// The frame goes out: one run of the TC program.
    fn tx(&mut self, frame: &[u8]) {
        let mut out = vec![0u8; frame.len() + 256];
        let r = self
            .object
            .test_run_tc(
                TC_PROGRAM,
                TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    repeat: 1,
                    ..TestRunOptions::default()
                },
            )
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN (tc) on {}: {e}", hex(frame)));
        out.truncate(r.data_size_out as usize);
        assert_eq!((r.return_value, out.as_slice()), (TC_ACT_UNSPEC, frame));
    }

    /// The frame comes in: one run of the XDP program.
    fn rx(&mut self, frame: &[u8]) {
        let mut out = vec![0u8; frame.len() + 256];
        let r = self
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
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN (xdp) on {}: {e}", hex(frame)));
        out.truncate(r.data_size_out as usize);
        assert_eq!((r.return_value, out.as_slice()), (XDP_PASS, frame));
    }

    /// The samples sent since the last call.
    fn samples(&mut self) -> Vec<RttSample> {
        let mut out = Vec::new();
        assert_eq!(
            self.rtt.drain_samples(&mut out),
            0,
            "records of another size"
        );
        out
    }

    /// The pending entries, ordered by kind and id.
    fn pending(&self) -> Vec<(RttKey, RttPending)> {
        let mut v = self.rtt.pending().expect("read RTT_PENDING");
        v.sort_by_key(|(k, _)| (k.flow.pad, k.id));
        v
    }

    /// (kind, id, ambiguous) of every pending entry, ordered.
    fn pending_ids(&self) -> Vec<(u8, u32, bool)> {
        self.pending()
            .iter()
            .map(|(k, v)| (k.flow.pad, k.id, v.ambiguous != 0))
            .collect()
    }

    fn counters(&self) -> (Counters, Counters) {
        (
            self.maps.counters_of(DIR_TX).expect("tx counters"),
            self.maps.counters_of(DIR_RX).expect("rx counters"),
        )
    }

    /// The RTT counters, after checking that each program counts only its
    /// own (the TC program never matches, the XDP program never records).
    fn counts(&self) -> RttCounts {
        let (tx, rx) = self.counters();
        assert_eq!(
            (
                tx.rtt_samples,
                tx.rtt_samples_lost,
                tx.rtt_ambiguous,
                rx.rtt_recorded,
                rx.rtt_pending_full
            ),
            (0, 0, 0, 0, 0),
            "tx {tx:?}, rx {rx:?}"
        );
        RttCounts {
            recorded: tx.rtt_recorded,
            pending_full: tx.rtt_pending_full,
            samples: rx.rtt_samples,
            lost: rx.rtt_samples_lost,
            ambiguous: rx.rtt_ambiguous,
        }
    }
}

fn counts(recorded: u64, pending_full: u64, samples: u64, ambiguous: u64) -> RttCounts {
    RttCounts {
        recorded,
        pending_full,
        samples,
        lost: 0,
        ambiguous,
    }
}

/// The key of what this host sent: `src` (this host) to `dst`, as the TC
/// program keys it, with `kind` in the pad byte.
fn sent(src: Addr, dst: Addr, ports: (u16, u16), proto: u8, kind: u8) -> FlowKey {
    let mut key = FlowKey {
        sport_be: ports.0.to_be(),
        dport_be: ports.1.to_be(),
        proto,
        direction: DIR_TX,
        pad: kind,
        ..FlowKey::default()
    };
    match (src, dst) {
        (Addr::V4(s), Addr::V4(d)) => {
            key.src[..4].copy_from_slice(&s);
            key.dst[..4].copy_from_slice(&d);
            key.ip_version = IP_V4;
        }
        (Addr::V6(s), Addr::V6(d)) => {
            key.src = s;
            key.dst = d;
            key.ip_version = IP_V6;
        }
        _ => panic!("mixed versions"),
    }
    key
}

/// A segment from this host to the peer (`out`) or back.
fn seg(out: bool, seq: u32, ack: u32, flags: u8, options: Vec<u8>, payload: usize) -> Segment {
    let (sport, dport) = if out { (HPORT, PPORT) } else { (PPORT, HPORT) };
    Segment {
        sport,
        dport,
        seq,
        ack,
        flags,
        options,
        payload,
    }
}

fn out4(s: &Segment) -> Vec<u8> {
    tcp_frame(HOST4, PEER4, s)
}

fn in4(s: &Segment) -> Vec<u8> {
    tcp_frame(PEER4, HOST4, s)
}

/// Checks `samples` is exactly one sample of `key` with a positive RTT
/// (the answer's XDP run came after the send's TC run), shorter than the
/// test.
fn one_sample(samples: &[RttSample], key: FlowKey) {
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].flow, key);
    assert!(
        samples[0].rtt_ns > 0 && samples[0].rtt_ns < 10_000_000_000,
        "{samples:?}"
    );
}

/// A SYN out, the SYN-ACK acknowledging it in: one sample of kind SYN.
/// A SYN-ACK acknowledging something else before it matches nothing, and
/// the SYN-ACK again after it neither (the entry went with the match).
#[test]
fn rtt_syn_then_synack_gives_one_sample() {
    let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
    k.tx(&out4(&seg(true, 1000, 0, TCP_SYN, vec![], 0)));
    assert_eq!(k.pending_ids(), [(RTT_TCP_SYN, 1001, false)]);
    k.rx(&in4(&seg(false, 7000, 1002, TCP_SYN | TCP_ACK, vec![], 0)));
    assert_eq!(k.samples(), []);
    k.rx(&in4(&seg(false, 7000, 1001, TCP_SYN | TCP_ACK, vec![], 0)));
    one_sample(
        &k.samples(),
        sent(HOST4, PEER4, (HPORT, PPORT), PROTO_TCP, RTT_TCP_SYN),
    );
    k.rx(&in4(&seg(false, 7000, 1001, TCP_SYN | TCP_ACK, vec![], 0)));
    assert_eq!(k.samples(), []);
    assert_eq!(k.pending_ids(), []);
    assert_eq!(k.counts(), counts(1, 0, 1, 0));
    let (tx, rx) = k.counters();
    assert_eq!((tx.tcp, tx.tcp_syn, rx.tcp, rx.tcp_syn), (1, 1, 3, 3));
}

/// A connection the host accepts: the peer's SYN in, the SYN-ACK out, the
/// peer's first ACK in: one sample of kind SYN-ACK. A later ACK of the same
/// number does not look the handshake up any more (a SYN-ACK sent again
/// on the same connection stays pending).
#[test]
fn rtt_synack_then_first_ack_gives_one_sample() {
    let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
    k.rx(&in4(&seg(false, 7000, 0, TCP_SYN, vec![], 0)));
    k.tx(&out4(&seg(true, 5000, 7001, TCP_SYN | TCP_ACK, vec![], 0)));
    assert_eq!(k.pending_ids(), [(RTT_TCP_SYNACK, 5001, false)]);
    k.rx(&in4(&seg(false, 7001, 5001, TCP_ACK, vec![], 0)));
    one_sample(
        &k.samples(),
        sent(HOST4, PEER4, (HPORT, PPORT), PROTO_TCP, RTT_TCP_SYNACK),
    );
    // The SYN-ACK once more (the peer's flow has shown its ACK now).
    k.tx(&out4(&seg(true, 5000, 7001, TCP_SYN | TCP_ACK, vec![], 0)));
    k.rx(&in4(&seg(
        false,
        7001,
        5001,
        TCP_ACK | TCP_PSH,
        vec![],
        100,
    )));
    assert_eq!(k.samples(), []);
    assert_eq!(k.pending_ids(), [(RTT_TCP_SYNACK, 5001, false)]);
    assert_eq!(k.counts(), counts(2, 0, 1, 0));
}

/// A connection the host opens: the server's flow starts with its SYN-ACK,
/// so the server's next ACK is no first ACK of a SYN-ACK the host sent,
/// even when one with a matching number is pending.
#[test]
fn rtt_the_servers_ack_is_no_answer_to_a_synack() {
    let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
    k.tx(&out4(&seg(true, 1000, 0, TCP_SYN, vec![], 0)));
    k.rx(&in4(&seg(false, 7000, 1001, TCP_SYN | TCP_ACK, vec![], 0)));
    assert_eq!(k.samples().len(), 1);
    // A SYN-ACK of the host's on the same ports (contrived, to have an
    // entry the server's ACK would match).
    k.tx(&out4(&seg(true, 3000, 7001, TCP_SYN | TCP_ACK, vec![], 0)));
    k.rx(&in4(&seg(false, 7001, 3001, TCP_ACK, vec![], 0)));
    assert_eq!(k.samples(), []);
    assert_eq!(k.pending_ids(), [(RTT_TCP_SYNACK, 3001, false)]);
    assert_eq!(k.counts(), counts(2, 0, 1, 0));
}

/// Timestamps: a data segment's TSval out, its echo in: one sample of kind
/// TS. A second echo of the same TSecr gives none.
#[test]
fn rtt_timestamp_then_echo_gives_one_sample() {
    let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
    k.tx(&out4(&seg(
        true,
        1,
        1,
        TCP_ACK | TCP_PSH,
        ts_option(1000, 55),
        100,
    )));
    assert_eq!(k.pending_ids(), [(RTT_TCP_TS, 1000, false)]);
    k.rx(&in4(&seg(false, 1, 101, TCP_ACK, ts_option(60, 999), 0)));
    assert_eq!(k.samples(), []);
    k.rx(&in4(&seg(false, 1, 101, TCP_ACK, ts_option(60, 1000), 0)));
    one_sample(
        &k.samples(),
        sent(HOST4, PEER4, (HPORT, PPORT), PROTO_TCP, RTT_TCP_TS),
    );
    k.rx(&in4(&seg(false, 1, 101, TCP_ACK, ts_option(61, 1000), 0)));
    assert_eq!(k.samples(), []);
    assert_eq!(k.pending_ids(), []);
    assert_eq!(k.counts(), counts(1, 0, 1, 0));
}

/// An incoming segment whose TSecr is the one its flow looked up last is
/// not looked up: an entry recorded in between is not matched by it, only
/// after the flow echoed another value.
#[test]
fn rtt_the_same_tsecr_twice_is_looked_up_once() {
    let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
    k.rx(&in4(&seg(false, 1, 1, TCP_ACK, ts_option(60, 1000), 0)));
    k.tx(&out4(&seg(
        true,
        1,
        1,
        TCP_ACK | TCP_PSH,
        ts_option(1000, 60),
        100,
    )));
    k.rx(&in4(&seg(false, 1, 101, TCP_ACK, ts_option(61, 1000), 0)));
    assert_eq!(k.samples(), []);
    assert_eq!(k.pending_ids(), [(RTT_TCP_TS, 1000, false)]);
    // TSecr 0 (no echo) is never looked up, and does not reset the mark.
    k.rx(&in4(&seg(false, 1, 101, TCP_ACK, ts_option(62, 0), 0)));
    k.rx(&in4(&seg(false, 1, 101, TCP_ACK, ts_option(62, 1000), 0)));
    assert_eq!(k.samples(), []);
    k.rx(&in4(&seg(false, 1, 101, TCP_ACK, ts_option(62, 999), 0)));
    k.rx(&in4(&seg(false, 1, 101, TCP_ACK, ts_option(63, 1000), 0)));
    assert_eq!(k.samples().len(), 1);
    assert_eq!(k.counts(), counts(1, 0, 1, 0));
}

/// Pure ACKs are not recorded (their echo would time the peer's
/// application), and a TSval first sent on a pure ACK is not recorded from
/// a later data segment either (the peer may echo it for the ACK). A FIN
/// is recorded.
#[test]
fn rtt_pure_acks_are_not_recorded() {
    let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
    k.tx(&out4(&seg(true, 1, 1, TCP_ACK, ts_option(1000, 55), 0)));
    assert_eq!(k.pending_ids(), []);
    k.tx(&out4(&seg(
        true,
        1,
        1,
        TCP_ACK | TCP_PSH,
        ts_option(1000, 55),
        100,
    )));
    assert_eq!(k.pending_ids(), []);
    k.maps.set_clock(TICK_2).expect("set CLOCK");
    k.tx(&out4(&seg(
        true,
        101,
        1,
        TCP_ACK | TCP_FIN,
        ts_option(1004, 55),
        0,
    )));
    assert_eq!(k.pending_ids(), [(RTT_TCP_TS, 1004, false)]);
    // No timestamp option: nothing to record.
    k.tx(&out4(&seg(true, 102, 1, TCP_ACK | TCP_PSH, vec![], 100)));
    assert_eq!(k.counts(), counts(1, 0, 0, 0));
    let (tx, _) = k.counters();
    assert_eq!((tx.tcp, tx.tcp_fin), (4, 1));
}

/// The rate limit: only a TSval that is a multiple of 4 is recorded (a
/// rule on the value, so every CPU makes the same choice), once; the same
/// on every flow.
#[test]
fn rtt_only_every_fourth_tsval_is_recorded() {
    let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
    let data = |tsval| {
        out4(&seg(
            true,
            1,
            1,
            TCP_ACK | TCP_PSH,
            ts_option(tsval, 55),
            100,
        ))
    };
    for tsval in 1..=3 {
        k.tx(&data(tsval));
    }
    assert_eq!(k.pending_ids(), []);
    k.tx(&data(4));
    k.tx(&data(4));
    assert_eq!(k.pending_ids(), [(RTT_TCP_TS, 4, false)]);
    // Another clock tick changes nothing.
    k.maps.set_clock(TICK_2).expect("set CLOCK");
    for tsval in 5..=8 {
        k.tx(&data(tsval));
    }
    assert_eq!(
        k.pending_ids(),
        [(RTT_TCP_TS, 4, false), (RTT_TCP_TS, 8, false)]
    );
    // Another flow (another port), the same TSval.
    let mut other = seg(true, 1, 1, TCP_ACK | TCP_PSH, ts_option(8, 55), 100);
    other.sport = HPORT + 1;
    k.tx(&out4(&other));
    assert_eq!(k.pending().len(), 3);
    assert_eq!(k.counts(), counts(3, 0, 0, 0));
}

/// Handshakes with timestamps (a SYN records its TSval too): the SYN-ACK
/// answers both entries and gives one sample, of the timestamp; the same
/// for the first ACK of a SYN-ACK the host sent. The timestamp option is
/// found where Linux puts it in a SYN (third) and where BSD does (sixth).
#[test]
fn rtt_a_handshake_with_timestamps_gives_one_sample() {
    for (name, options) in [
        ("linux", syn_options as fn(u32, u32) -> Vec<u8>),
        ("bsd", bsd_syn_options),
    ] {
        let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
        k.tx(&out4(&seg(true, 1000, 0, TCP_SYN, options(100, 0), 0)));
        assert_eq!(
            k.pending_ids(),
            [(RTT_TCP_TS, 100, false), (RTT_TCP_SYN, 1001, false)],
            "{name}"
        );
        k.rx(&in4(&seg(
            false,
            7000,
            1001,
            TCP_SYN | TCP_ACK,
            options(900, 100),
            0,
        )));
        one_sample(
            &k.samples(),
            sent(HOST4, PEER4, (HPORT, PPORT), PROTO_TCP, RTT_TCP_TS),
        );
        assert_eq!(k.pending_ids(), [], "{name}");
        assert_eq!(k.counts(), counts(2, 0, 1, 0), "{name}");

        // The other way round, on another pair of ports.
        let (mut syn, mut synack, mut ack) = (
            seg(false, 7000, 0, TCP_SYN, options(900, 0), 0),
            seg(true, 5000, 7001, TCP_SYN | TCP_ACK, options(200, 900), 0),
            seg(false, 7001, 5001, TCP_ACK, ts_option(901, 200), 0),
        );
        syn.dport = 8080;
        synack.sport = 8080;
        ack.dport = 8080;
        k.rx(&in4(&syn));
        k.tx(&out4(&synack));
        k.rx(&in4(&ack));
        one_sample(
            &k.samples(),
            sent(HOST4, PEER4, (8080, PPORT), PROTO_TCP, RTT_TCP_TS),
        );
        assert_eq!(k.pending_ids(), [], "{name}");
        assert_eq!(k.counts(), counts(4, 0, 2, 0), "{name}");
    }
}

/// The option walk's limit: a timestamp option behind seven NOPs is the
/// eighth option and found; behind eight it is not looked for (the SYN is
/// still recorded as a handshake).
#[test]
fn rtt_the_option_walk_stops_after_eight_options() {
    for (nops, want) in [(7, 2), (8, 1)] {
        let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
        let mut options = vec![1u8; nops];
        options.extend_from_slice(&[8, 10, 0, 0, 0, 100, 0, 0, 0, 0]);
        options.resize(options.len().next_multiple_of(4), 0);
        k.tx(&out4(&seg(true, 1000, 0, TCP_SYN, options, 0)));
        assert_eq!(k.counts(), counts(want, 0, 0, 0), "{nops} NOPs");
    }
}

/// Karn's rule: a SYN sent twice (same sequence number, no timestamps)
/// makes its entry ambiguous; the SYN-ACK deletes it, counts it and gives
/// no sample. The same for an echo request sent twice.
#[test]
fn rtt_a_retransmitted_syn_or_echo_request_gives_no_sample() {
    let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
    let syn = out4(&seg(true, 1000, 0, TCP_SYN, vec![], 0));
    k.tx(&syn);
    k.tx(&syn);
    assert_eq!(k.pending_ids(), [(RTT_TCP_SYN, 1001, true)]);
    k.rx(&in4(&seg(false, 7000, 1001, TCP_SYN | TCP_ACK, vec![], 0)));
    assert_eq!(k.samples(), []);
    assert_eq!(k.pending_ids(), []);
    assert_eq!(k.counts(), counts(1, 0, 0, 1));

    let request = icmp_echo(HOST4, PEER4, false, 0x4242, 7);
    k.tx(&request);
    k.tx(&request);
    assert_eq!(k.pending_ids(), [(RTT_ICMP_ECHO, 0x4242_0007, true)]);
    k.rx(&icmp_echo(PEER4, HOST4, true, 0x4242, 7));
    assert_eq!(k.samples(), []);
    assert_eq!(k.counts(), counts(2, 0, 0, 2));
}

/// A SYN sent again with a new TSval (as Linux does, a second later): the
/// SYN entry is ambiguous, but the SYN-ACK echoes the second TSval, and
/// that timestamp gives the sample. The first TSval stays pending (for
/// userspace to expire).
#[test]
fn rtt_a_retransmitted_syn_with_timestamps_is_timed_by_its_tsval() {
    let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
    k.tx(&out4(&seg(true, 1000, 0, TCP_SYN, syn_options(100, 0), 0)));
    k.maps.set_clock(TICK_2).expect("set CLOCK");
    k.tx(&out4(&seg(true, 1000, 0, TCP_SYN, syn_options(1100, 0), 0)));
    assert_eq!(
        k.pending_ids(),
        [
            (RTT_TCP_TS, 100, false),
            (RTT_TCP_TS, 1100, false),
            (RTT_TCP_SYN, 1001, true)
        ]
    );
    k.rx(&in4(&seg(
        false,
        7000,
        1001,
        TCP_SYN | TCP_ACK,
        syn_options(900, 1100),
        0,
    )));
    one_sample(
        &k.samples(),
        sent(HOST4, PEER4, (HPORT, PPORT), PROTO_TCP, RTT_TCP_TS),
    );
    assert_eq!(k.pending_ids(), [(RTT_TCP_TS, 100, false)]);
    assert_eq!(k.counts(), counts(3, 0, 1, 0));
}

/// ICMP and ICMPv6 echo: request out, reply in, one sample each, keyed by
/// the request's flow (ports 0). A request coming in or a reply going out
/// (the peer pinging this host) records and matches nothing.
#[test]
fn rtt_icmp_and_icmpv6_echo() {
    let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
    for (host, peer, proto) in [(HOST4, PEER4, PROTO_ICMP), (HOST6, PEER6, PROTO_ICMPV6)] {
        k.tx(&icmp_echo(host, peer, false, 0x1234, 1));
        k.rx(&icmp_echo(peer, host, true, 0x1234, 2));
        assert_eq!(k.samples(), []);
        k.rx(&icmp_echo(peer, host, true, 0x1234, 1));
        one_sample(&k.samples(), sent(host, peer, (0, 0), proto, RTT_ICMP_ECHO));
        k.rx(&icmp_echo(peer, host, false, 0x5678, 1));
        k.tx(&icmp_echo(host, peer, true, 0x5678, 1));
    }
    assert_eq!(k.pending_ids(), []);
    assert_eq!(k.counts(), counts(2, 0, 2, 0));
    let (tx, rx) = k.counters();
    assert_eq!((tx.icmp, tx.icmpv6, rx.icmp, rx.icmpv6), (2, 2, 3, 3));
}

/// IPv6 TCP: handshake and timestamps as over IPv4.
#[test]
fn rtt_ipv6_tcp() {
    let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
    let out6 = |s: &Segment| tcp_frame(HOST6, PEER6, s);
    let in6 = |s: &Segment| tcp_frame(PEER6, HOST6, s);
    k.tx(&out6(&seg(true, 1000, 0, TCP_SYN, vec![], 0)));
    k.rx(&in6(&seg(false, 7000, 1001, TCP_SYN | TCP_ACK, vec![], 0)));
    one_sample(
        &k.samples(),
        sent(HOST6, PEER6, (HPORT, PPORT), PROTO_TCP, RTT_TCP_SYN),
    );
    k.tx(&out6(&seg(
        true,
        1001,
        7001,
        TCP_ACK | TCP_PSH,
        ts_option(8, 9),
        1000,
    )));
    k.rx(&in6(&seg(false, 7001, 2001, TCP_ACK, ts_option(10, 8), 0)));
    one_sample(
        &k.samples(),
        sent(HOST6, PEER6, (HPORT, PPORT), PROTO_TCP, RTT_TCP_TS),
    );
    assert_eq!(k.pending_ids(), []);
    assert_eq!(k.counts(), counts(2, 0, 2, 0));
}

/// A full pending map: inserts beyond its size fail and are counted in
/// `rtt_pending_full`; what it holds is matched as ever, and every packet is
/// counted and passed unchanged.
#[test]
fn rtt_a_full_pending_map_is_counted() {
    const SIZE: u16 = 4;
    const SENT: u16 = 7;
    let mut k = RttKernel::load(u32::from(SIZE));
    for seq in 0..SENT {
        k.tx(&icmp_echo(HOST4, PEER4, false, 1, seq));
    }
    assert_eq!(k.pending().len(), usize::from(SIZE));
    assert_eq!(
        k.counts(),
        counts(u64::from(SIZE), u64::from(SENT - SIZE), 0, 0)
    );
    for seq in 0..SENT {
        k.rx(&icmp_echo(PEER4, HOST4, true, 1, seq));
    }
    assert_eq!(k.samples().len(), usize::from(SIZE));
    // Room again.
    k.tx(&icmp_echo(HOST4, PEER4, false, 1, SENT));
    k.rx(&icmp_echo(PEER4, HOST4, true, 1, SENT));
    assert_eq!(k.samples().len(), 1);
    assert_eq!(
        k.counts(),
        counts(
            u64::from(SIZE) + 1,
            u64::from(SENT - SIZE),
            u64::from(SIZE) + 1,
            0
        )
    );
    let (tx, rx) = k.counters();
    let n = u64::from(SENT) + 1;
    assert_eq!((tx.packets, tx.icmp, rx.packets, rx.icmp), (n, n, n, n));
}

/// A full sample ring: answers beyond what `RTT_SAMPLES` holds are counted
/// in `rtt_samples_lost`, exactly; the ring keeps the first ones, and once
/// read there is room again. The ring holds `bytes / record` records, a
/// record being the sample and the ring's 8-byte header rounded up to 8
/// (the kernel's `__bpf_ringbuf_reserve`): 4,681 of 56 bytes in 256 KiB.
#[test]
fn rtt_a_full_sample_ring_is_counted() {
    let record = (size_of::<RttSample>() + 8).div_ceil(8) * 8;
    let fits = DEFAULT_RTT_SAMPLES_BYTES as usize / record;
    let pairs = fits + 19;
    let mut k = RttKernel::load(DEFAULT_RTT_PENDING);
    for seq in 0..pairs {
        let seq = u16::try_from(seq).expect("fewer pairs than sequence numbers");
        k.tx(&icmp_echo(HOST4, PEER4, false, 1, seq));
        k.rx(&icmp_echo(PEER4, HOST4, true, 1, seq));
    }
    let n = pairs as u64;
    assert_eq!(
        k.counts(),
        RttCounts {
            recorded: n,
            pending_full: 0,
            samples: fits as u64,
            lost: n - fits as u64,
            ambiguous: 0,
        }
    );
    let samples = k.samples();
    assert_eq!(samples.len(), fits);
    let key = sent(HOST4, PEER4, (0, 0), PROTO_ICMP, RTT_ICMP_ECHO);
    assert!(
        samples
            .iter()
            .all(|s| s.flow == key && s.rtt_ns > 0 && s.rtt_ns < 10_000_000_000),
        "{:?}",
        samples.iter().find(|s| s.flow != key)
    );
    // Room again.
    let last = u16::try_from(pairs).expect("fewer pairs than sequence numbers");
    k.tx(&icmp_echo(HOST4, PEER4, false, 1, last));
    k.rx(&icmp_echo(PEER4, HOST4, true, 1, last));
    assert_eq!(k.samples().len(), 1);
    assert_eq!(k.counts().samples, fits as u64 + 1);
    assert_eq!(k.counts().lost, n - fits as u64);
}
