//! Shared by the probe_* tests: a bounded netmon run, nftables rules and
//! counters in a namespace, and the binomial interval for loss checks.

#![allow(dead_code, reason = "each probe_* test uses a different part")]

use std::{
    io::Read,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use netmon_tests::{Finished, Netns, netmon_bin, run};
use serde_json::Value;

/// Runs `netmon ARGS` in `ns`; kills it and panics if it runs past `limit`.
#[must_use]
pub fn netmon(ns: &Netns, args: &[&str], limit: Duration) -> Finished {
    let mut child = ns
        .command(netmon_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start netmon");
    let (mut out, mut err) = (
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("netmon {args:?} still running after {limit:?}: killed");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Finished {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Loads an nftables ruleset (nft -f syntax) into `ns`.
pub fn nft(ns: &Netns, ruleset: &str) {
    ns.sh(&format!("nft -f - <<'EOF'\n{ruleset}\nEOF"));
}

/// Packets of the named counter in `table` (`inet probe`) of `ns`.
#[must_use]
pub fn counter(ns: &Netns, table: &str, name: &str) -> u64 {
    let text = ns.sh(&format!("nft -j list counter {table} {name}"));
    let v: Value = serde_json::from_str(&text).expect("nft -j prints JSON");
    v["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i.get("counter")))
        .and_then(|c| c["packets"].as_u64())
        .unwrap_or_else(|| panic!("no counter {name} in {text}"))
}

/// The two-sided 99 % interval of a binomial(n, p) count (normal
/// approximation with continuity correction; n p (1-p) is large here).
#[must_use]
pub fn binomial_99(n: u64, p: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (mean - 2.576 * sd - 0.5, mean + 2.576 * sd + 0.5)
}

/// The MAC address of `iface` in `ns`.
#[must_use]
pub fn mac(ns: &Netns, iface: &str) -> String {
    let out = ns.ip(&format!("-br link show dev {iface}"));
    out.split_whitespace()
        .nth(2)
        .expect("ip -br link shows the MAC")
        .to_owned()
}

/// Checks that none of `names` (namespaces or links) still exists.
pub fn assert_gone(names: &[String]) {
    let netns = run(std::process::Command::new("ip").args(["netns", "list"]));
    let links = run(std::process::Command::new("ip").args(["-br", "link"]));
    for line in netns.lines().chain(links.lines()) {
        let name = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap_or("");
        assert!(!names.iter().any(|n| n == name), "left behind: {line}");
    }
}

/// JSON lines of a finished run whose `type` is `kind`.
#[must_use]
pub fn of_type(f: &Finished, kind: &str) -> Vec<Value> {
    f.json_lines()
        .into_iter()
        .filter(|v| v["type"] == kind)
        .collect()
}
