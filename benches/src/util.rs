//! What every benchmark shares: medians, the JSON report file, and a
//! description of the machine the figures were measured on.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

/// Median of `v` (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// Writes `report` to `dir/NAME` (`target/bench` under `cargo xtask
/// bench`); returns the path.
pub fn write_report(dir: &Path, name: &str, report: &Value) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(name);
    fs::write(&path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The value of the first `key : value` line of /proc/cpuinfo.
fn cpuinfo_field(cpuinfo: &str, key: &str) -> String {
    cpuinfo
        .lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

fn read_trimmed(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// What the figures were measured on: CPU vendor, family, model and name,
/// L2 size, core count, kernel, and every entry of
/// /sys/devices/system/cpu/vulnerabilities (the mitigations change what a
/// call or a return costs, so figures differ between CPUs). Every bench
/// writes it into its JSON and prints it with [`print_machine`].
pub fn machine() -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut vulns = Map::new();
    if let Ok(dir) = fs::read_dir("/sys/devices/system/cpu/vulnerabilities") {
        let mut entries: Vec<_> = dir.filter_map(Result::ok).collect();
        entries.sort_by_key(fs::DirEntry::file_name);
        for e in entries {
            vulns.insert(
                e.file_name().to_string_lossy().into_owned(),
                Value::String(read_trimmed(e.path())),
            );
        }
    }
    // index2 is the unified L2 on x86 and arm64.
    let l2 = read_trimmed("/sys/devices/system/cpu/cpu0/cache/index2/size");
    json!({
        "cpu": cpuinfo_field(&cpuinfo, "model name"),
        "vendor": cpuinfo_field(&cpuinfo, "vendor_id"),
        "family": cpuinfo_field(&cpuinfo, "cpu family"),
        "model": cpuinfo_field(&cpuinfo, "model"),
        "l2_per_core": l2,
        // Online CPUs of the machine (a bench may have pinned itself to one,
        // which available_parallelism would report).
        // SAFETY: sysconf has no preconditions.
        "cpus": unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) },
        "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
        "vulnerabilities": vulns,
    })
}

/// Prints [`machine`] in a few lines (the mitigations that change call and
/// return costs first).
pub fn print_machine(m: &Value) {
    let s = |k: &str| m[k].as_str().unwrap_or("?").to_owned();
    println!(
        "machine: {} ({}, family {} model {}), L2 {} per core, {} CPUs, kernel {}",
        s("cpu"),
        s("vendor"),
        s("family"),
        s("model"),
        s("l2_per_core"),
        m["cpus"],
        s("kernel")
    );
    if let Some(v) = m["vulnerabilities"].as_object() {
        for key in ["spectre_v2", "spec_rstack_overflow", "retbleed"] {
            if let Some(state) = v.get(key).and_then(Value::as_str) {
                println!("  {key}: {state}");
            }
        }
        let others: Vec<String> = v
            .iter()
            .filter(|(k, _)| {
                !["spectre_v2", "spec_rstack_overflow", "retbleed"].contains(&k.as_str())
            })
            .map(|(k, state)| format!("{k}={}", state.as_str().unwrap_or("?")))
            .collect();
        println!("  others: {}", others.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-12);
    }

    #[test]
    fn cpuinfo_fields_by_exact_key() {
        let info =
            "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n";
        assert_eq!(cpuinfo_field(info, "model"), "1");
        assert_eq!(cpuinfo_field(info, "model name"), "AMD EPYC");
        assert_eq!(cpuinfo_field(info, "vendor_id"), "AuthenticAMD");
        assert_eq!(cpuinfo_field(info, "stepping"), "");
    }
}
