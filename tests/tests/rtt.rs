//! Passive RTT end to end (issue 11): netmon in namespace `m` times real
//! traffic to a peer `p` across a router `r` that holds every packet on its
//! way back to `m` for a known delay D (an NFQUEUE delay line: this kernel
//! has no netem), so every round trip from `m` to `p` takes D plus the
//! path's own cost (about 0.2 ms here: each packet's trip through the
//! delay line's userspace, and forwarding).
//!
//! Ground truth never comes from netmon: D itself (a hard floor: the delay
//! line never releases a packet early), the RTT the kernel's own TCP
//! reports for the same connection (`ss -ti` in `m`), `ping`, the probe
//! RTT netmon's prober measures for the same echo packets (outside the
//! kernel programs), `r`'s nftables drop counters and `m`'s retransmission
//! counter (/proc/net/snmp).
//!
//! The tests take turns (one lock): each times a path to a fraction of a
//! millisecond, which a second test's iperf3 on the same two CPUs would
//! blur. The delay line itself is checked first, without netmon.
//!
//! `kill -9` leaving neither program attached is tests/egress.rs's
//! `kill_9_leaves_neither_xdp_nor_tc_attached`.

use std::{
    sync::{Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use netmon_tests::{
    Finished, Netmon, nft_counter,
    routed::{
        Background, M4, P4, P6, Routed, TcpInfo, iperf3_server, median, ping_times, ss_tcp,
        tcp_retrans_segs,
    },
    run,
};
use serde_json::Value;

/// One test at a time (see the module docs); a failed test must not stop
/// the others, so a poisoned lock is taken all the same.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The delay line adds D to a round trip, no less and little more: `ping`
/// from `m` to `p` (IPv4 and IPv6) through `r`.
fn delay_line_delays_ping(d: Duration) {
    let _turn = serial();
    let path = Routed::new("re");
    let line = path.delay_to_m(1, d);
    let mut all = Vec::new();
    for target in [P4, P6] {
        let out = run(path
            .m
            .command("ping")
            .args(["-n", "-c", "40", "-i", "0.05", "-W", "2", target]));
        let mut times = ping_times(&out);
        assert_eq!(times.len(), 40, "every echo came back: {out}");
        let (min, max) = (
            times.iter().copied().fold(f64::MAX, f64::min),
            times.iter().copied().fold(0.0, f64::max),
        );
        let med = median(&mut times);
        println!(
            "delay line D = {:.0} ms: ping {target}: min {min:.3} / median {med:.3} / max {max:.3} ms",
            ms(d)
        );
        assert!(min >= ms(d), "a round trip shorter than D: {min} ms");
        all.push(med);
    }
    let stats = line.stop();
    println!("delay line D = {:.0} ms: {stats}", ms(d));
    assert_eq!(
        stats.packets, 80,
        "every echo reply, and only those, was held"
    );
    assert_eq!(stats.overruns, 0);
    assert!(stats.min_hold >= d);
    // Little more than D: the path's own cost and the release's lateness
    // stay well inside the tolerance the RTT tests grant netmon (5 % +
    // 0.2 ms of D).
    for med in all {
        assert!(
            med <= ms(d) * 1.05 + 0.2,
            "median round trip {med} ms for D = {d:?}: the delay line is too slow"
        );
    }
}

#[test]
fn delay_line_delays_ping_by_5ms() {
    delay_line_delays_ping(Duration::from_millis(5));
}

#[test]
fn delay_line_delays_ping_by_20ms() {
    delay_line_delays_ping(Duration::from_millis(20));
}

/// An iperf3 TCP run from `m` to `p` (`-b 20M`, `secs` seconds) through the
/// delay line, sampling `ss -ti` in `m` every 500 ms after the first second;
/// returns the data connection's samples and the client's JSON report.
fn iperf3_through(path: &Routed, port: u16, secs: u32) -> (Vec<TcpInfo>, String) {
    let server = iperf3_server(&path.p, P4, port);
    let mut client = Background::spawn(path.m.command("iperf3").args([
        "-c",
        P4,
        "-p",
        &port.to_string(),
        "-b",
        "20M",
        "-t",
        &secs.to_string(),
        "-J",
    ]));
    let mut samples = Vec::new();
    let start = Instant::now();
    thread::sleep(Duration::from_secs(1));
    while client.running() && start.elapsed() < Duration::from_secs(u64::from(secs) + 10) {
        // The data connection is the one that moves bytes (iperf3 has a
        // control connection to the same port).
        if let Some(data) = ss_tcp(&path.m, P4)
            .into_iter()
            .filter(|c| c.peer.ends_with(&format!(":{port}")))
            .max_by_key(|c| c.bytes_acked)
            .filter(|c| c.bytes_acked > 1 << 20)
        {
            samples.push(data);
        }
        thread::sleep(Duration::from_millis(500));
    }
    let report = client.wait(Duration::from_secs(u64::from(secs) + 15));
    drop(server);
    (samples, report)
}

/// The delay line carries bulk TCP: iperf3 at 20 Mbit/s through it, and the
/// kernel's own smoothed RTT for the connection (`ss -ti` in `m`) is D.
fn delay_line_carries_tcp(d: Duration) {
    let _turn = serial();
    let path = Routed::new("re");
    let line = path.delay_to_m(1, d);
    let (samples, report) = iperf3_through(&path, 5201, 5);
    let stats = line.stop();
    let mut rtts: Vec<f64> = samples.iter().map(|c| c.rtt_ms).collect();
    assert!(
        rtts.len() >= 4,
        "ss samples of the data connection: {samples:?}"
    );
    let med = median(&mut rtts);
    let report: Value = serde_json::from_str(&report).expect("iperf3 -J");
    let sent = &report["end"]["sum_sent"];
    println!(
        "delay line D = {:.0} ms: iperf3 {:.1} Mbit/s, {} retransmits; ss rtt median {med:.3} ms \
         (samples {rtts:?}), minrtt {:?}; {stats}",
        ms(d),
        sent["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6,
        sent["retransmits"],
        samples.last().and_then(|c| c.min_rtt_ms),
    );
    assert_eq!(stats.overruns, 0);
    assert!(stats.min_hold >= d);
    assert!(
        sent["bits_per_second"].as_f64().unwrap_or(0.0) > 15e6,
        "iperf3 got through at the rate asked for: {sent}"
    );
    assert!(
        med >= ms(d) && med <= ms(d) * 1.05 + 0.2,
        "ss rtt median {med} ms for D = {d:?}"
    );
}

#[test]
fn delay_line_carries_tcp_at_5ms() {
    delay_line_carries_tcp(Duration::from_millis(5));
}

#[test]
fn delay_line_carries_tcp_at_20ms() {
    delay_line_carries_tcp(Duration::from_millis(20));
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

/// The `(host, proto)` object of a `passive_rtt` list, if any.
fn passive<'a>(list: &'a Value, host: &str, proto: &str) -> Option<&'a Value> {
    list.as_array()
        .unwrap_or_else(|| panic!("passive_rtt is not a list: {list}"))
        .iter()
        .find(|e| e["host"] == host && e["proto"] == proto)
}

/// The summary's ICMP probe object for `addr`.
fn icmp_probe<'a>(summary: &'a Value, addr: &str) -> &'a Value {
    summary["probes"]
        .as_array()
        .unwrap_or_else(|| panic!("no probes in the summary: {summary}"))
        .iter()
        .find(|p| p["kind"] == "icmp" && p["addr"] == addr)
        .unwrap_or_else(|| panic!("no icmp probe of {addr} in {}", summary["probes"]))
}

/// The `rates` lines of a run.
fn intervals(run: &Finished) -> Vec<Value> {
    run.json_lines()
        .into_iter()
        .filter(|v| v["type"] == "rates")
        .collect()
}

/// Starts netmon on `m`'s interface: NDJSON, 1 s intervals, plus `extra`.
fn netmon_on(path: &Routed, extra: &[&str]) -> Netmon {
    let mut args = vec![
        "--iface",
        &path.if_m,
        "--format",
        "json",
        "--interval",
        "1s",
    ];
    args.extend_from_slice(extra);
    Netmon::start(&path.m, &args)
}

/// A probe's passive RTT beside its own: the same echo packets, timed by
/// the kernel between the egress and ingress hooks and by the prober from
/// the kernel's transmit timestamp (taken before the qdisc, just before the
/// egress hook) to the socket's receive timestamp (just after XDP). So
/// every passive sample is a little shorter than its probe's, and so is the
/// median: exactly, up to the histograms' 0.1 % (3 significant digits); and
/// issue 11 asks for the medians within 50 µs. One passive sample per reply
/// (at the end netmon lets the probes finish, then detaches, then takes the
/// last samples, so even an echo in flight at the stop counts on both
/// sides).
///
/// Before the prober read the kernel's transmit time (it took its clock
/// right before `sendto`), the passive median was 22-61 µs below the
/// probe's on an AMD EPYC guest at load average 2-3: the system call and
/// the send path to the device.
fn assert_probe_side_by_side(summary: &Value, addr: &str, d: Duration) {
    let probe = icmp_probe(summary, addr);
    let received = u64_of(&probe["received"]);
    let passive_rtt = &probe["passive_rtt_ms"];
    assert!(
        passive_rtt.is_object(),
        "the probe of {addr} has no passive RTT beside it: {probe}"
    );
    let (probe_p50, passive_p50) = (f64_of(&probe["rtt_ms"]["p50"]), f64_of(&passive_rtt["p50"]));
    let samples = u64_of(&passive_rtt["samples"]);
    println!(
        "D = {:.0} ms, ICMP {addr}: probe p50 {probe_p50:.3} ms ({received} replies), \
         passive p50 {passive_p50:.3} ms ({samples} samples), min {:.3}, max {:.3}; \
         difference {:.1} µs",
        ms(d),
        f64_of(&passive_rtt["min"]),
        f64_of(&passive_rtt["max"]),
        (passive_p50 - probe_p50) * 1e3
    );
    assert!(received >= 5, "probes answered: {probe}");
    assert_eq!(
        samples, received,
        "a passive sample per echo reply the prober got: {probe}"
    );
    assert!(
        passive_p50 <= probe_p50 * 1.001,
        "passive ICMP p50 {passive_p50} ms above the probe's p50 {probe_p50} ms: the kernel's \
         hooks lie inside the prober's send-to-receive span"
    );
    assert!(
        probe_p50 - passive_p50 <= 0.050,
        "passive ICMP p50 {passive_p50} ms is more than 50 µs below the probe's p50 \
         {probe_p50} ms: the prober's send time is not the kernel's"
    );
    assert!(f64_of(&passive_rtt["min"]) >= ms(d), "{probe}");
    // The summary's per-host list says the same.
    let entry = passive(&summary["passive_rtt"], addr, "icmp")
        .unwrap_or_else(|| panic!("no ({addr}, icmp) in {}", summary["passive_rtt"]));
    assert_eq!(
        entry["samples"], passive_rtt["samples"],
        "{entry} vs {probe}"
    );
    assert_eq!(
        entry["rtt_ms"]["p50"], passive_rtt["p50"],
        "{entry} vs {probe}"
    );
}

/// Issue 11's acceptance at delay D: bulk TCP from `m` to `p` for 8 s with
/// netmon watching `m` and probing `p` by ICMP.
///
/// - TCP: the summary's passive RTT to `p` (p50) lies within 5 % of the
///   RTT the kernel reports for the iperf3 data connection (`ss -ti`, median
///   of samples taken during the transfer) and within 5 % + 0.2 ms of D;
///   the data connection's own flow object says the same; nothing is below
///   D.
/// - ICMP: see [`assert_probe_side_by_side`].
fn passive_rtt_at(d: Duration) {
    let _turn = serial();
    let path = Routed::new("re");
    let line = path.delay_to_m(1, d);
    let netmon = netmon_on(&path, &["--ping", P4]);
    let (samples, _) = iperf3_through(&path, 5201, 8);
    // Two more probes with nothing else going on.
    thread::sleep(Duration::from_secs(2));
    let run = netmon.stop();
    let stats = line.stop();
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
    assert_eq!(stats.overruns, 0);
    let summary = run.summary();

    let mut ss: Vec<f64> = samples.iter().map(|c| c.rtt_ms).collect();
    assert!(
        ss.len() >= 8,
        "ss samples of the data connection: {samples:?}"
    );
    let ss_p50 = median(&mut ss);
    let tcp = passive(&summary["passive_rtt"], P4, "tcp")
        .unwrap_or_else(|| panic!("no ({P4}, tcp) in {}", summary["passive_rtt"]));
    let rtt = &tcp["rtt_ms"];
    let p50 = f64_of(&rtt["p50"]);
    println!(
        "D = {:.0} ms, TCP {P4}: passive p50 {p50:.3} ms (min {:.3}, p90 {:.3}, p99 {:.3}, \
         max {:.3}; {} samples), ss rtt median {ss_p50:.3} ms over {} samples; delay line {stats}",
        ms(d),
        f64_of(&rtt["min"]),
        f64_of(&rtt["p90"]),
        f64_of(&rtt["p99"]),
        f64_of(&rtt["max"]),
        tcp["samples"],
        ss.len(),
    );
    println!(
        "counters: tx {}, rx {}, rtt_pending_expired {}",
        counters_rtt(&summary["tx"]["counters"]),
        counters_rtt(&summary["counters"]),
        summary["rtt_pending_expired"]
    );
    assert!(
        (p50 - ss_p50).abs() <= 0.05 * ss_p50,
        "passive TCP p50 {p50} ms is not within 5 % of ss's {ss_p50} ms"
    );
    assert!(
        (p50 - ms(d)).abs() <= 0.05 * ms(d) + 0.2,
        "passive TCP p50 {p50} ms is not within 5 % + 0.2 ms of D = {d:?}"
    );
    assert!(f64_of(&rtt["min"]) >= ms(d), "a sample below D: {tcp}");
    // iperf3 -b 20M sends its 128 KiB blocks about 19 times a second, each
    // burst starting with a fresh TSval; the kernel records the TSvals that
    // are multiples of 4 (one ms in four), so about one burst in four or
    // more is timed: at least 20 of the ~150 bursts of the 8 s.
    assert!(
        u64_of(&tcp["samples"]) >= 20,
        "{} TCP samples in 8 s at D = {d:?}",
        tcp["samples"]
    );
    assert_every_sample_counted(&summary);

    // The data connection's own flow: the transmitted flow to port 5201
    // with the most bytes.
    let flow = summary["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .filter(|f| {
            f["direction"] == "tx" && f["src"] == M4 && f["dst"] == P4 && f["dport"] == 5201
        })
        .max_by_key(|f| u64_of(&f["bytes"]))
        .unwrap_or_else(|| panic!("no transmitted flow to {P4}:5201 in {summary}"));
    let flow_rtt = &flow["rtt_ms"];
    assert!(flow_rtt.is_object(), "the data flow has no rtt_ms: {flow}");
    let flow_p50 = f64_of(&flow_rtt["p50"]);
    println!(
        "D = {:.0} ms, data flow {}:{} -> {P4}:5201: rtt p50 {flow_p50:.3} ms over {} samples",
        ms(d),
        flow["src"],
        flow["sport"],
        flow_rtt["samples"]
    );
    assert!(
        (flow_p50 - ss_p50).abs() <= 0.05 * ss_p50,
        "the data flow's p50 {flow_p50} ms is not within 5 % of ss's {ss_p50} ms"
    );
    assert!(f64_of(&flow_rtt["min"]) >= ms(d), "{flow}");

    // Every interval carries the list (the egress program is attached);
    // the intervals of the transfer have TCP samples to p, none below D.
    let lines = intervals(&run);
    let mut with_tcp = 0;
    let mut interval_samples = 0;
    for rates in &lines {
        let list = &rates["passive_rtt"];
        assert!(list.is_array(), "an interval without passive_rtt: {rates}");
        if let Some(e) = passive(list, P4, "tcp") {
            with_tcp += 1;
            interval_samples += u64_of(&e["samples"]);
            assert!(f64_of(&e["rtt_ms"]["min"]) >= ms(d), "{e}");
        }
    }
    assert!(
        with_tcp >= 6,
        "{with_tcp} intervals with TCP samples to {P4}"
    );
    assert!(interval_samples <= u64_of(&tcp["samples"]));

    assert_probe_side_by_side(&summary, P4, d);
}

/// Every sample the kernel sent (its `rtt_samples`, counted on ingress)
/// is in exactly one summary (host, proto) object, or counted as dropped
/// with a pair the memory bound let go.
fn assert_every_sample_counted(summary: &Value) {
    let in_hosts: u64 = summary["passive_rtt"]
        .as_array()
        .expect("passive_rtt")
        .iter()
        .map(|e| u64_of(&e["samples"]))
        .sum();
    let dropped = u64_of(&summary["passive_rtt_host_samples_dropped"]);
    assert_eq!(
        in_hosts + dropped,
        u64_of(&summary["counters"]["rtt_samples"]),
        "the summary's samples vs the kernel's count: {}",
        summary["passive_rtt"]
    );
}

/// The five kernel RTT counters of a `counters` object, for the log.
fn counters_rtt(c: &Value) -> String {
    [
        "rtt_recorded",
        "rtt_pending_full",
        "rtt_samples",
        "rtt_samples_lost",
        "rtt_ambiguous",
    ]
    .iter()
    .map(|k| format!("{k} {}", c[k]))
    .collect::<Vec<_>>()
    .join(", ")
}

#[test]
fn passive_rtt_matches_ss_and_probe_at_5ms() {
    passive_rtt_at(Duration::from_millis(5));
}

#[test]
fn passive_rtt_matches_ss_and_probe_at_20ms() {
    passive_rtt_at(Duration::from_millis(20));
}

/// ICMPv6 echo too, with IPv4 beside it: netmon's own probes of `p`'s two
/// addresses, timed passively, agree with the prober.
#[test]
fn passive_icmpv6_rtt_matches_probe() {
    let _turn = serial();
    let d = Duration::from_millis(5);
    let path = Routed::new("re");
    let line = path.delay_to_m(1, d);
    let netmon = netmon_on(&path, &["--ping", P6, "--ping", P4]);
    thread::sleep(Duration::from_secs(7));
    let run = netmon.stop();
    let stats = line.stop();
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
    println!("delay line {stats}");
    let summary = run.summary();
    assert_probe_side_by_side(&summary, P6, d);
    assert_probe_side_by_side(&summary, P4, d);
    assert_every_sample_counted(&summary);
    // Nothing but the probes: no TCP samples at all.
    assert!(passive(&summary["passive_rtt"], P4, "tcp").is_none());
}

/// Bulk TCP from `m` to `p` for 8 s at D = 5 ms, `m` (and `p`) sending
/// one segment per packet (`gso_max_segs 1`, as with GSO off: many packets
/// at the egress hook carry the same TSval, from whichever CPU sent them),
/// and, with `loss`, `r` dropping that % of the TCP segments it forwards,
/// both ways. No passive sample lies below the base RTT D, in any interval
/// or in the summary: D is a hard floor (the delay line never releases
/// early), so a shorter sample timed an echo from a later send than the
/// one echoed.
fn no_sample_below_base_rtt(loss: Option<u32>) {
    let _turn = serial();
    let d = Duration::from_millis(5);
    let path = Routed::new("re");
    for (ns, iface) in [(&path.m, &path.if_m), (&path.p, &path.if_p)] {
        ns.ip(&format!("link set dev {iface} gso_max_segs 1"));
    }
    let line = path.delay_to_m(1, d);
    if let Some(pct) = loss {
        path.drop_tcp(pct);
    }
    let retrans_before = tcp_retrans_segs(&path.m);
    let netmon = netmon_on(&path, &[]);
    let (samples, report) = iperf3_through(&path, 5201, 8);
    let run = netmon.stop();
    let stats = line.stop();
    assert!(run.status.success(), "netmon failed: {}", run.stderr);
    let retrans = tcp_retrans_segs(&path.m) - retrans_before;
    let report: Value = serde_json::from_str(&report).expect("iperf3 -J");
    let summary = run.summary();
    let what = loss.map_or_else(|| "no loss".to_owned(), |pct| format!("{pct} % loss"));
    println!(
        "{what}, one segment per packet, D = 5 ms: m retransmitted {retrans} segments \
         (iperf3: {}; ss: {:?}); delay line {stats}",
        report["end"]["sum_sent"]["retransmits"],
        samples.last().map(|c| c.retrans_total)
    );
    println!(
        "counters: tx {}, rx {}, rtt_pending_expired {}",
        counters_rtt(&summary["tx"]["counters"]),
        counters_rtt(&summary["counters"]),
        summary["rtt_pending_expired"]
    );
    if loss.is_some() {
        let (to_p, to_m) = (
            nft_counter(&path.r, "inet reloss", "dropped_to_p").0,
            nft_counter(&path.r, "inet reloss", "dropped_to_m").0,
        );
        println!("r dropped {to_p} segments to p and {to_m} to m");
        assert!(to_p > 0 && to_m > 0, "the loss rule dropped segments");
        assert!(retrans > 0, "m retransmitted nothing");
    }
    let tcp = passive(&summary["passive_rtt"], P4, "tcp")
        .unwrap_or_else(|| panic!("no ({P4}, tcp) in {}", summary["passive_rtt"]));
    println!(
        "summary ({P4}, tcp): {} samples, rtt_ms {}",
        tcp["samples"], tcp["rtt_ms"]
    );
    assert!(u64_of(&tcp["samples"]) > 0);
    assert_every_sample_counted(&summary);
    let mut below = Vec::new();
    let mut checked = 0;
    for rates in intervals(&run) {
        if let Some(e) = passive(&rates["passive_rtt"], P4, "tcp") {
            checked += 1;
            let min = f64_of(&e["rtt_ms"]["min"]);
            println!("  interval: {} samples, min {min:.3} ms", e["samples"]);
            if min < ms(d) {
                below.push(e.clone());
            }
        }
    }
    assert!(checked >= 4, "{checked} intervals with TCP samples");
    assert!(
        below.is_empty(),
        "intervals with a sample below D = {d:?}: {below:?}"
    );
    assert!(
        f64_of(&tcp["rtt_ms"]["min"]) >= ms(d),
        "the summary's base RTT is below D: {tcp}"
    );
}

/// Retransmissions (issue 11): 5 % of the forwarded TCP segments lost;
/// `m` retransmits (its own counter says so, and `r`'s nftables counted
/// the drops), and no sample is below the base RTT.
#[test]
fn retransmissions_give_no_sample_below_base_rtt() {
    no_sample_below_base_rtt(Some(5));
}

/// The same without loss: segments sharing a TSval never time an echo
/// from a later one of them.
#[test]
fn single_segments_give_no_sample_below_base_rtt() {
    no_sample_below_base_rtt(None);
}
