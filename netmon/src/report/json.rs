//! The NDJSON sink (`--format json`): one object per line, the keys of
//! README.md's contract; and the JSON of probe statistics that `netmon
//! ping` shares.

use std::io::Write;

use netmon_common::{Counters, PROTO_TCP, SIZE_CLASS_LABELS};
use serde_json::{Value, json};

use super::{Flow, HostRtt, Interval, Link, ProbeStats, RttStats, Sink, Summary, proto_name};

/// Writes NDJSON to `W`, flushed after every interval, link change and
/// the summary (a reader acts on each line as it comes).
pub struct JsonSink<W: Write> {
    w: W,
}

impl<W: Write> JsonSink<W> {
    pub fn new(w: W) -> Self {
        Self { w }
    }

    fn line(&mut self, v: &Value) -> anyhow::Result<()> {
        writeln!(self.w, "{v}")?;
        Ok(())
    }
}

impl<W: Write> Sink for JsonSink<W> {
    /// A `rates` object, then (with probes) a `probes` object.
    fn interval(&mut self, i: &Interval) -> anyhow::Result<()> {
        let r = &i.rates;
        let flows = |top: &[Flow]| top.iter().map(|f| flow_json(f, None)).collect::<Vec<_>>();
        let mut v = json!({
            "type": "rates",
            "time": i.unix_time,
            "iface": i.iface,
            "interval_s": r.interval_s,
            "packets": r.packets,
            "bytes": r.bytes,
            "pps": r.pps,
            "bps": r.bps,
            "flows_in_table": i.flows.in_table,
            "active_flows": i.flows.active,
            "top_bytes": flows(&i.flows.top_bytes),
            "top_packets": flows(&i.flows.top_packets),
            "counters": counters_json(&i.counts),
        });
        if let Some(u) = r.util_pct {
            v["util_pct"] = json!(u);
        }
        // The transmit side, beside the keys above (which are the receive
        // side), when the egress program counts.
        if let Some(tx) = &i.tx {
            let t = &tx.rates;
            v["tx_packets"] = json!(t.packets);
            v["tx_bytes"] = json!(t.bytes);
            v["tx_pps"] = json!(t.pps);
            v["tx_bps"] = json!(t.bps);
            if let Some(u) = t.util_pct {
                v["tx_util_pct"] = json!(u);
            }
            v["tx_counters"] = counters_json(&tx.counts);
        }
        if let Some(hosts) = &i.passive_rtt {
            v["passive_rtt"] = hosts_json(hosts);
        }
        if let Some(c) = &i.if_counters {
            let named: serde_json::Map<String, Value> = c
                .named()
                .iter()
                .map(|(k, n)| ((*k).to_owned(), json!(n)))
                .collect();
            v["if_counters"] = Value::Object(named);
        }
        self.line(&v)?;
        if !i.probes.is_empty() {
            self.line(&json!({
                "type": "probes",
                "time": i.unix_time,
                "probes": probes_json(&i.probes, i.passive_rtt.is_some()),
            }))?;
        }
        self.w.flush()?;
        Ok(())
    }

    fn link(&mut self, l: &Link) -> anyhow::Result<()> {
        let state = if l.up { "up" } else { "down" };
        self.line(&json!({"type": "link", "time": l.unix_time, "iface": l.iface, "state": state}))?;
        self.w.flush()?;
        Ok(())
    }

    fn summary(&mut self, s: &Summary) -> anyhow::Result<()> {
        let c = &s.counters;
        let flows = s.flows.top.iter();
        let mut v = json!({
            "type": "summary",
            "iface": s.iface,
            "duration_s": s.duration_s,
            "packets": c.packets,
            "bytes": c.bytes,
            "flows_tracked": s.flows.tracked,
            "flows_tracked_exact": s.flows.tracked_exact,
            "retired_flows_kept": s.flows.retired_kept,
            "retired_flows_dropped": s.flows.retired_dropped,
            "retired_flows_dropped_max_bytes": s.flows.retired_dropped_max_bytes,
            "counters": counters_json(c),
            "flows": flows.map(|f| flow_json(f, Some(s.mono_to_unix_ns))).collect::<Vec<_>>(),
        });
        if let Some(t) = &s.tx_counters {
            v["tx"] = json!({
                "packets": t.packets,
                "bytes": t.bytes,
                "counters": counters_json(t),
            });
        }
        if !s.probes.is_empty() {
            v["probes"] = probes_json(&s.probes, s.passive_rtt.is_some());
        }
        if let Some(p) = &s.passive_rtt {
            v["passive_rtt"] = hosts_json(&p.hosts);
            v["rtt_pending_expired"] = json!(p.pending_expired);
            v["passive_rtt_hosts_kept"] = json!(p.hosts_kept);
            v["passive_rtt_hosts_dropped"] = json!(p.hosts_dropped);
            v["passive_rtt_host_samples_dropped"] = json!(p.host_samples_dropped);
            v["passive_rtt_conversations_dropped"] = json!(p.conversations_dropped);
        }
        self.line(&v)?;
        self.w.flush()?;
        Ok(())
    }
}

fn proto_json(proto: u8) -> Value {
    proto_name(proto).map_or_else(|| json!(proto), |n| json!(n))
}

/// A flow as JSON; with `mono_to_unix_ns`, its first and last packet times
/// as Unix seconds.
fn flow_json(f: &Flow, mono_to_unix_ns: Option<i128>) -> Value {
    let mut v = json!({
        "src": f.src.to_string(),
        "dst": f.dst.to_string(),
        "sport": f.sport,
        "dport": f.dport,
        "proto": proto_json(f.proto),
        "direction": f.direction_name(),
        "packets": f.packets,
        "bytes": f.bytes,
    });
    if let Some(offset) = mono_to_unix_ns {
        let unix = |ns: u64| (i128::from(ns) + offset) as f64 / 1e9;
        v["first_seen"] = json!(unix(f.first_seen_ns));
        v["last_seen"] = json!(unix(f.last_seen_ns));
    }
    if f.proto == PROTO_TCP {
        v["tcp_flags"] = json!(f.tcp_flags);
    }
    if let Some(rtt) = &f.rtt {
        v["rtt_ms"] = rtt_json(rtt, true);
    }
    v
}

/// Passive RTT figures in ms: `{"min","p50","p90","p99","max"}`, with
/// `samples` inside when asked (a host object has it beside).
fn rtt_json(r: &RttStats, with_samples: bool) -> Value {
    let mut v = json!({"min": r.min, "p50": r.p50, "p90": r.p90, "p99": r.p99, "max": r.max});
    if with_samples {
        v["samples"] = json!(r.samples);
    }
    v
}

/// `[{"host","proto","samples","rtt_ms"}, ..]`, in the given order.
fn hosts_json(hosts: &[HostRtt]) -> Value {
    Value::Array(
        hosts
            .iter()
            .map(|h| {
                json!({
                    "host": h.host.to_string(),
                    "proto": h.proto.as_str(),
                    "samples": h.rtt.samples,
                    "rtt_ms": rtt_json(&h.rtt, false),
                })
            })
            .collect(),
    )
}

fn counters_json(c: &Counters) -> Value {
    let sizes: serde_json::Map<String, Value> = SIZE_CLASS_LABELS
        .iter()
        .zip(c.size_classes.iter())
        .map(|(label, n)| ((*label).to_owned(), json!(n)))
        .collect();
    json!({
        "tcp": c.tcp, "udp": c.udp, "icmp": c.icmp, "icmpv6": c.icmpv6,
        "other_ip": c.other_ip, "arp": c.arp, "other_l2": c.other_l2,
        "malformed": c.malformed,
        "size_classes": sizes,
        "tcp_syn": c.tcp_syn, "tcp_fin": c.tcp_fin, "tcp_rst": c.tcp_rst,
        "flow_insert_failed": c.flow_insert_failed,
        "flow_records": c.flow_records,
        "rtt_recorded": c.rtt_recorded, "rtt_pending_full": c.rtt_pending_full,
        "rtt_samples": c.rtt_samples, "rtt_samples_lost": c.rtt_samples_lost,
        "rtt_ambiguous": c.rtt_ambiguous,
    })
}

/// One probe target: the DESIGN.md `ping` object (with `kind`, and `port`
/// for TCP). `netmon ping` prints it as is; the monitor lists them.
#[must_use]
pub fn probe_json(s: &ProbeStats) -> Value {
    let rtt = s.latency.summary().map_or(Value::Null, |l| {
        json!({
            "min": l.min, "mean": l.mean, "p50": l.p50, "p90": l.p90, "p99": l.p99,
            "max": l.max, "stddev": l.stddev, "jitter": l.jitter,
        })
    });
    let mut v = json!({
        "type": "ping",
        "kind": s.kind.as_str(),
        "target": s.target,
        "addr": s.addr.map(|a| a.to_string()),
        "sent": s.sent,
        "received": s.received,
        // Loss of nothing is undefined when every probe failed to leave.
        "loss_pct": if s.sent == 0 && s.not_sent > 0 { Value::Null } else { json!(s.loss_pct()) },
        "not_sent": s.not_sent,
        "error": s.error,
        "duplicates": s.duplicates,
        "late": s.late,
        "rtt_ms": rtt,
    });
    if let Some(p) = s.port {
        v["port"] = json!(p);
    }
    v
}

/// The `ping` objects of all targets (`"probes": [...]`); with
/// `passive`, each with `passive_rtt_ms` (null without samples).
fn probes_json(stats: &[ProbeStats], passive: bool) -> Value {
    Value::Array(
        stats
            .iter()
            .map(|s| {
                let mut v = probe_json(s);
                if passive {
                    v["passive_rtt_ms"] = s
                        .passive_rtt
                        .as_ref()
                        .map_or(Value::Null, |r| rtt_json(r, true));
                }
                v
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::{super::fixtures, *};
    use crate::report::{FlowSummary, ProbeKind, text::write_probe_stats};

    #[test]
    fn a_run_prints_as_before() {
        fixtures::assert_writes(include_str!("golden/monitor.ndjson"), |out| {
            fixtures::run(&mut JsonSink::new(out));
        });
    }

    /// As `netmon ping --format json` prints them.
    #[test]
    fn ping_objects_print_as_before() {
        fixtures::assert_writes(include_str!("golden/ping.ndjson"), |out| {
            for s in fixtures::probes() {
                writeln!(out, "{}", probe_json(&s)).unwrap();
            }
        });
    }

    #[test]
    fn summary_json_follows_the_contract() {
        let counters = Counters {
            packets: 101,
            bytes: 14_242,
            udp: 100,
            arp: 1,
            ..Counters::default()
        };
        let mut flow = fixtures::flows().swap_remove(0);
        (flow.sport, flow.packets, flow.bytes) = (40000, 100, 14_200);
        let flows = FlowSummary {
            top: vec![flow],
            tracked: 1,
            tracked_exact: true,
            retired_kept: 4096,
            retired_dropped: 0,
            retired_dropped_max_bytes: 0,
        };
        let mut out = Vec::new();
        JsonSink::new(&mut out)
            .summary(&Summary {
                iface: "veth0".into(),
                duration_s: 7.0,
                counters,
                tx_counters: Some(Counters {
                    packets: 3,
                    bytes: 300,
                    udp: 3,
                    ..Counters::default()
                }),
                flows,
                mono_to_unix_ns: 1_700_000_000_000_000_000,
                probes: Vec::new(),
                passive_rtt: None,
            })
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["packets"], 101);
        assert_eq!(v["bytes"], 14_242);
        assert_eq!(v["counters"]["arp"], 1);
        assert_eq!(v["flows_tracked"], 1);
        assert_eq!(v["flows_tracked_exact"], true);
        let f = &v["flows"][0];
        assert_eq!(f["src"], "198.51.100.2");
        assert_eq!(f["dport"], 9000);
        assert_eq!(f["proto"], "udp");
        assert_eq!(f["bytes"], 14_200);
        assert_eq!(f["direction"], "rx");
        assert_eq!(v["tx"]["packets"], 3);
        assert_eq!(v["tx"]["bytes"], 300);
        assert_eq!(v["tx"]["counters"]["udp"], 3);
        assert!((f["first_seen"].as_f64().unwrap() - 1_700_000_001.0).abs() < 1e-3);
    }

    #[test]
    fn unknown_protocols_are_numbers() {
        assert_eq!(proto_json(47), json!(47));
        assert_eq!(proto_json(6), json!("tcp"));
    }

    #[test]
    fn rates_without_link_speed_have_no_util() {
        let mut out = Vec::new();
        JsonSink::new(&mut out)
            .interval(&fixtures::small_interval())
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "rates");
        assert_eq!(v["pps"], 10.0);
        assert!(v.get("util_pct").is_none());
    }

    #[test]
    fn probe_json_has_the_design_shape() {
        let v = probe_json(&fixtures::sample_probe());
        assert_eq!(v["type"], "ping");
        assert_eq!(v["kind"], "icmp");
        assert_eq!(v["addr"], "127.0.0.1");
        assert_eq!(v["sent"], 5);
        assert_eq!(v["received"], 4);
        assert!((v["loss_pct"].as_f64().unwrap() - 20.0).abs() < 1e-9);
        for k in [
            "min", "mean", "p50", "p90", "p99", "max", "stddev", "jitter",
        ] {
            assert!(v["rtt_ms"][k].is_f64(), "{k}");
        }
        assert!((v["rtt_ms"]["mean"].as_f64().unwrap() - 0.25).abs() < 1e-9);
        let none = ProbeStats::new(ProbeKind::Tcp, "h:1", None, Some(1));
        let v = probe_json(&none);
        assert!(v["rtt_ms"].is_null());
        assert_eq!(v["port"], 1);
        assert_eq!(v["loss_pct"], 0.0);
    }

    #[test]
    fn requests_that_never_left_are_not_loss() {
        let mut s = ProbeStats::new(ProbeKind::Icmp, "203.0.113.1", None, None);
        for _ in 0..3 {
            s.record_not_sent("Network is unreachable");
        }
        let v = probe_json(&s);
        assert_eq!(v["sent"], 0);
        assert_eq!(v["not_sent"], 3);
        assert_eq!(v["error"], "Network is unreachable");
        assert!(v["loss_pct"].is_null(), "{v}");
        let mut out = Vec::new();
        write_probe_stats(&mut out, &s, 4).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text.lines().nth(1),
            Some("0 sent, 0 received, 3 not sent (Network is unreachable)")
        );
        // A probe that did leave keeps the usual meaning of loss.
        s.record(None);
        let v = probe_json(&s);
        assert_eq!(v["loss_pct"], 100.0);
        assert!(probe_json(&fixtures::sample_probe())["error"].is_null());
    }
}
