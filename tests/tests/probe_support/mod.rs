//! Shared by the probe_* tests: nftables rulesets in a namespace, the
//! binomial interval for loss checks, leftovers and output filters.

#![allow(dead_code, reason = "each probe_* test uses a different part")]

use netmon_tests::{Finished, Netns, run};
use serde_json::Value;

/// Loads an nftables ruleset (nft -f syntax) into `ns`.
pub fn nft(ns: &Netns, ruleset: &str) {
    ns.sh(&format!("nft -f - <<'EOF'\n{ruleset}\nEOF"));
}

/// The two-sided 99 % interval of a binomial(n, p) count (normal
/// approximation with continuity correction; n p (1-p) is large here).
#[must_use]
pub fn binomial_99(n: u64, p: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (mean - 2.576 * sd - 0.5, mean + 2.576 * sd + 0.5)
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
