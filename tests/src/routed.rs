//! A routed path of three namespaces for latency tests: the monitored host
//! `m`, a router `r` that forwards (and may delay or drop), and a peer `p`.
//!
//! ```text
//!   m [if_m 198.51.100.1] ─── [if_rm 198.51.100.254] r [if_rp 203.0.113.254] ─── [if_p 203.0.113.2] p
//!       2001:db8:1::1               2001:db8:1::fe       2001:db8:2::fe               2001:db8:2::2
//! ```
//!
//! netmon watches `if_m` (XDP ingress, TC egress). Everything between `m`
//! and `p` crosses `r`'s forward path, where a test puts a known delay
//! ([`Routed::delay_to_m`], an NFQUEUE delay line) or loss (nftables) —
//! this kernel has no netem. Neighbours are static and IPv6 autoconfiguration
//! is off, so no ARP, neighbour discovery or router solicitation ever waits
//! in the delay line or mixes into a count.

use std::{
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{Netns, delay::DelayLine, mac, run, unique};

pub const M4: &str = "198.51.100.1";
pub const RM4: &str = "198.51.100.254";
pub const RP4: &str = "203.0.113.254";
pub const P4: &str = "203.0.113.2";
pub const M6: &str = "2001:db8:1::1";
pub const RM6: &str = "2001:db8:1::fe";
pub const RP6: &str = "2001:db8:2::fe";
pub const P6: &str = "2001:db8:2::2";

/// `m` ─ `r` ─ `p`, routed through `r`; see the module docs.
pub struct Routed {
    // Field order: namespaces go last, after everything inside them.
    pub if_m: String,
    pub if_rm: String,
    pub if_rp: String,
    pub if_p: String,
    pub m: Netns,
    pub r: Netns,
    pub p: Netns,
}

impl Routed {
    /// Namespaces `{prefix}m…`, `{prefix}r…`, `{prefix}p…`; links
    /// `{prefix}vm…`, `{prefix}vrm…`, `{prefix}vrp…`, `{prefix}vp…`.
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        let m = Netns::new(&format!("{prefix}m"));
        let r = Netns::new(&format!("{prefix}r"));
        let p = Netns::new(&format!("{prefix}p"));
        let routed = Routed {
            if_m: unique(&format!("{prefix}vm")),
            if_rm: unique(&format!("{prefix}vrm")),
            if_rp: unique(&format!("{prefix}vrp")),
            if_p: unique(&format!("{prefix}vp")),
            m,
            r,
            p,
        };
        for (a, if_a, b, if_b) in [
            (&routed.m, &routed.if_m, &routed.r, &routed.if_rm),
            (&routed.r, &routed.if_rp, &routed.p, &routed.if_p),
        ] {
            run(Command::new("ip").args([
                "link", "add", if_a, "netns", &a.name, "type", "veth", "peer", "name", if_b,
                "netns", &b.name,
            ]));
        }
        routed.configure();
        routed
    }

    fn configure(&self) {
        let ends = [
            (&self.m, &self.if_m, M4, M6),
            (&self.r, &self.if_rm, RM4, RM6),
            (&self.r, &self.if_rp, RP4, RP6),
            (&self.p, &self.if_p, P4, P6),
        ];
        for (ns, iface, v4, v6) in ends {
            ns.ip(&format!("link set dev {iface} addrgenmode none"));
            ns.sh(&format!(
                "sysctl -qw net.ipv6.conf.{iface}.accept_ra=0 net.ipv6.conf.{iface}.router_solicitations=0"
            ));
            ns.ip(&format!("addr add {v4}/24 dev {iface}"));
            ns.ip(&format!("addr add {v6}/64 dev {iface} nodad"));
        }
        self.r
            .sh("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
        // Static neighbours on both links, both families.
        let links = [
            (
                &self.m,
                &self.if_m,
                (RM4, RM6),
                &self.r,
                &self.if_rm,
                (M4, M6),
            ),
            (
                &self.r,
                &self.if_rp,
                (P4, P6),
                &self.p,
                &self.if_p,
                (RP4, RP6),
            ),
        ];
        for (a, if_a, (b4, b6), b, if_b, (a4, a6)) in links {
            let (mac_a, mac_b) = (mac(a, if_a), mac(b, if_b));
            for (ns, iface, peer4, peer6, peer_mac) in
                [(a, if_a, b4, b6, &mac_b), (b, if_b, a4, a6, &mac_a)]
            {
                ns.ip(&format!(
                    "neigh replace {peer4} lladdr {peer_mac} dev {iface} nud permanent"
                ));
                ns.ip(&format!(
                    "neigh replace {peer6} lladdr {peer_mac} dev {iface} nud permanent"
                ));
            }
        }
        for (ns, iface) in [
            (&self.m, &self.if_m),
            (&self.r, &self.if_rm),
            (&self.r, &self.if_rp),
            (&self.p, &self.if_p),
        ] {
            ns.ip(&format!("link set dev {iface} up"));
        }
        self.m
            .ip(&format!("route add default via {RM4} dev {}", self.if_m));
        self.m
            .ip(&format!("-6 route add default via {RM6} dev {}", self.if_m));
        self.p
            .ip(&format!("route add default via {RP4} dev {}", self.if_p));
        self.p
            .ip(&format!("-6 route add default via {RP6} dev {}", self.if_p));
    }

    /// Delays every packet `r` forwards from `p` to `m` (IPv4 and IPv6) by
    /// `delay`, on NFQUEUE queue `queue`; the other direction goes
    /// undelayed, so a round trip from `m` to `p` takes `delay` plus the
    /// path's own few tens of microseconds. Only the return direction:
    /// it carries the fewer packets (ACKs, echo replies) of the tests'
    /// traffic, which `m` sends. Stops with the returned guard (drop it
    /// before `self`).
    #[must_use]
    pub fn delay_to_m(&self, queue: u16, delay: Duration) -> DelayLine {
        // Bind first: a queue nobody listens on drops what a rule sends it.
        let line = DelayLine::start(&self.r, queue, delay);
        for tool in ["iptables", "ip6tables"] {
            self.r.sh(&format!(
                "{tool} -A FORWARD -i {} -o {} -j NFQUEUE --queue-num {queue}",
                self.if_rp, self.if_rm
            ));
        }
        line
    }

    /// Drops, in `r`, `pct` % of the TCP segments it forwards (either
    /// direction, chosen at random by nftables), counting them in the
    /// counters `dropped_to_p` and `dropped_to_m` of table `inet reloss`
    /// (the drops come before the delay line: lost segments are never
    /// queued). A veth hands `r` GSO super-packets whole, so `m` and `p` are
    /// made to send one segment per packet (`gso_max_segs 1`): each drop is
    /// one segment on the wire, and the loss rate is the one asked for.
    pub fn drop_tcp(&self, pct: u32) {
        self.m
            .ip(&format!("link set dev {} gso_max_segs 1", self.if_m));
        self.p
            .ip(&format!("link set dev {} gso_max_segs 1", self.if_p));
        self.r.sh(&format!(
            "nft -f - <<'EOF'\n\
             table inet reloss {{\n\
               counter dropped_to_p {{ }}\n\
               counter dropped_to_m {{ }}\n\
               chain lossy {{\n\
                 type filter hook forward priority -10; policy accept;\n\
                 iifname \"{rm}\" meta l4proto tcp numgen random mod 100 < {pct} counter name dropped_to_p drop\n\
                 iifname \"{rp}\" meta l4proto tcp numgen random mod 100 < {pct} counter name dropped_to_m drop\n\
               }}\n\
             }}\nEOF",
            rm = self.if_rm,
            rp = self.if_rp,
        ));
    }
}

/// A background process (a server, a client), killed and reaped on drop
/// if still running.
pub struct Background {
    child: Option<Child>,
    what: String,
}

impl Background {
    /// Starts `cmd` with stdout and stderr piped.
    #[must_use]
    pub fn spawn(cmd: &mut Command) -> Self {
        let what = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Background {
            child: Some(child),
            what,
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits (at most `limit`) for it to exit by itself and returns its
    /// stdout; panics if it runs longer or fails.
    #[must_use]
    pub fn wait(mut self, limit: Duration) -> String {
        let mut child = self.child.take().expect("once");
        let deadline = Instant::now() + limit;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} still running after {limit:?}: killed", self.what);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("collect output");
        assert!(
            out.status.success(),
            "{} failed ({}): {}{}",
            self.what,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An iperf3 server in `ns` on `addr:port` for one test (`-1`: it exits
/// after the first client), ready when this returns.
#[must_use]
pub fn iperf3_server(ns: &Netns, addr: &str, port: u16) -> Background {
    let server = Background::spawn(ns.command("iperf3").args([
        "-s",
        "-1",
        "-B",
        addr,
        "-p",
        &port.to_string(),
    ]));
    // Ready once it listens (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(5);
    let filter = format!("sport = :{port}");
    while !ns
        .command("ss")
        .args(["-Hltn", &filter])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "iperf3 server did not listen on {addr}:{port} within 5 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    server
}

/// One TCP connection as `ss -ti` shows it in the namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpInfo {
    pub local: String,
    pub peer: String,
    /// The kernel's smoothed RTT (`rtt:` first figure), ms.
    pub rtt_ms: f64,
    /// The kernel's minimum RTT seen (`minrtt:`), ms, if shown.
    pub min_rtt_ms: Option<f64>,
    /// Bytes the peer acknowledged.
    pub bytes_acked: u64,
    /// Segments retransmitted over the connection's life (`retrans:a/B`'s
    /// `B`).
    pub retrans_total: u64,
}

/// The established TCP connections to `peer` (an address) in `ns`, per
/// `ss -tin`.
#[must_use]
pub fn ss_tcp(ns: &Netns, peer: &str) -> Vec<TcpInfo> {
    let filter = format!("dst {peer}");
    let out = run(ns
        .command("ss")
        .args(["-H", "-tin", "state", "established", &filter]));
    parse_ss(&out)
}

/// Parses `ss -H -tin` output: a line with addresses, then an indented
/// line of `key:value` fields per connection.
#[must_use]
pub fn parse_ss(text: &str) -> Vec<TcpInfo> {
    let mut conns = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // Recv-Q Send-Q Local Peer (state filtered: no state column).
        if cols.len() < 4 || line.starts_with(char::is_whitespace) {
            continue;
        }
        let (local, peer) = (cols[2].to_owned(), cols[3].to_owned());
        let Some(info) = lines.next_if(|l| l.starts_with(char::is_whitespace)) else {
            continue;
        };
        let field = |key: &str| {
            info.split_whitespace()
                .find_map(|f| f.strip_prefix(key))
                .map(str::to_owned)
        };
        let Some(rtt) = field("rtt:") else { continue };
        let rtt_ms = rtt
            .split('/')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("ss rtt {rtt:?}"));
        conns.push(TcpInfo {
            local,
            peer,
            rtt_ms,
            min_rtt_ms: field("minrtt:").and_then(|v| v.parse().ok()),
            bytes_acked: field("bytes_acked:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            retrans_total: field("retrans:")
                .and_then(|v| v.split('/').nth(1).and_then(|t| t.parse().ok()))
                .unwrap_or(0),
        });
    }
    conns
}

/// The namespace's TCP `RetransSegs` (/proc/net/snmp, per namespace).
#[must_use]
pub fn tcp_retrans_segs(ns: &Netns) -> u64 {
    let snmp = ns.sh("cat /proc/net/snmp");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (
        tcp.next().expect("Tcp: names"),
        tcp.next().expect("Tcp: values"),
    );
    let i = names
        .split_whitespace()
        .position(|n| n == "RetransSegs")
        .expect("RetransSegs in /proc/net/snmp");
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// Each reply's `time=` of `ping` output, ms.
#[must_use]
pub fn ping_times(text: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("time=")))
        .map(|t| t.parse().unwrap_or_else(|_| panic!("ping time {t:?}")))
        .collect()
}

/// The median of `values` (sorted in place); panics on none.
#[must_use]
pub fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        f64::midpoint(values[n / 2 - 1], values[n / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_lines_parse() {
        let text = "0      0      198.51.100.1:41234 203.0.113.2:5201\n\
                    \t cubic wscale:7,7 rto:206 rtt:5.322/0.145 ato:40 mss:1448 pmtu:1500 rcvmss:536 advmss:1448 cwnd:10 bytes_sent:100 bytes_acked:9001 segs_out:5 retrans:0/3 minrtt:5.101\n\
                    0      0      198.51.100.1:41230 203.0.113.2:5201\n\
                    \t cubic rtt:5.9/2.9 minrtt:5.2\n";
        let c = parse_ss(text);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].peer, "203.0.113.2:5201");
        assert!((c[0].rtt_ms - 5.322).abs() < 1e-9);
        assert_eq!(c[0].min_rtt_ms, Some(5.101));
        assert_eq!(c[0].bytes_acked, 9001);
        assert_eq!(c[0].retrans_total, 3);
        assert_eq!(c[1].bytes_acked, 0);
    }

    #[test]
    fn ping_lines_parse() {
        let text = "64 bytes from 203.0.113.2: icmp_seq=1 ttl=63 time=5.12 ms\n\
                    64 bytes from 203.0.113.2: icmp_seq=2 ttl=63 time=20.1 ms\n";
        assert_eq!(ping_times(text), [5.12, 20.1]);
        assert!((median(&mut [3.0, 1.0, 2.0, 4.0]) - 2.5).abs() < 1e-12);
    }
}
