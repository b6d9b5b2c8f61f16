//! `cargo xtask bench probes`: netmon's sweep and scan against Debian's
//! fping and nmap, side by side in one run, on loopback inside a network
//! namespace the bench creates (and deletes, on every exit path).
//!
//! - **sweep**: every address of 127.0.0.0/20 (4,094 hosts, all alive on
//!   loopback). netmon at an unlimited rate (`--rate 1000000`), fping at its
//!   fastest (`-i 0`, root only); both with one retry, a 500 ms timeout and
//!   no backoff (`-B 1`: fping otherwise stretches each retry's timeout).
//! - **scan**: all 65,535 TCP ports of 127.0.0.1 with 20 listeners the bench
//!   opens. netmon's defaults (1 s timeout, 1 retry) against `nmap -sT -p-`
//!   with one retry (`--max-retries 1`), no DNS (`-n`) and no host discovery
//!   (`-Pn`), as netmon does neither.
//!
//! Runs alternate (netmon, other, netmon, other, ...) so both see the same
//! machine; each run's result set is checked against the ground truth (the
//! whole range alive; exactly the 20 listeners open). Wall time is from
//! spawn to exit of the process, which joins the namespace with setns
//! between fork and exec (no `ip netns exec` in the measurement). The
//! figure is the median of [`REPEATS`] runs. Results go to
//! `target/bench/probes.json`.

use crate::util::{median, write_report};
use std::{
    collections::BTreeSet,
    fs,
    net::{Ipv4Addr, TcpListener},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

const REPEATS: usize = 9;
const SWEEP_RANGE: &str = "127.0.0.0/20";
const SCAN_HOST: &str = "127.0.0.1";
/// Ports the bench listens on during the scan: well-known, registered and
/// ephemeral-range ports, the first and the last.
const LISTEN_PORTS: [u16; 20] = [
    1, 22, 80, 443, 3306, 5432, 6379, 8080, 8443, 9000, 9090, 10_000, 20_000, 25_565, 27_017,
    33_000, 40_000, 50_000, 60_000, 65_535,
];

const NETMON_SWEEP: &[&str] = &[
    "sweep",
    SWEEP_RANGE,
    "--rate",
    "1000000",
    "--retries",
    "1",
    "--timeout",
    "500ms",
    "--format",
    "json",
];
const FPING_SWEEP: &[&str] = &[
    "-a",
    "-q",
    "-g",
    SWEEP_RANGE,
    "-r",
    "1",
    "-t",
    "500",
    "-B",
    "1",
    "-i",
    "0",
];
const NETMON_SCAN: &[&str] = &[
    "scan",
    SCAN_HOST,
    "--ports",
    "-",
    "--timeout",
    "1s",
    "--retries",
    "1",
    "--format",
    "json",
];
const NMAP_SCAN: &[&str] = &[
    "-sT",
    "-p-",
    "-n",
    "-Pn",
    "--max-retries",
    "1",
    "-oG",
    "-",
    SCAN_HOST,
];

/// A network namespace with loopback up, deleted on drop.
struct Netns {
    name: String,
    file: fs::File,
}

impl Netns {
    fn new() -> Result<Self> {
        let name = format!("nmbench{}", std::process::id() % 100_000);
        sh(Command::new("ip").args(["netns", "add", &name]))?;
        let path = format!("/run/netns/{name}");
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
                return Err(e).with_context(|| format!("open {path}"));
            }
        };
        let ns = Self { name, file };
        sh(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// Runs `f` on a thread inside the namespace (sockets it opens live there).
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.file.as_raw_fd();
        thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on a valid namespace fd; changes only this thread.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error()).context("setns");
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
        })
    }

    /// Runs `cmd` inside the namespace to completion: (stdout, wall time).
    fn time(&self, program: &Path, args: &[&str]) -> Result<(String, Duration)> {
        let fd = self.file.as_raw_fd();
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stderr(Stdio::piped());
        // SAFETY: setns is async-signal-safe; the closure touches nothing else.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let start = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {}", program.display()))?;
        let took = start.elapsed();
        // fping exits 1 when some host is unreachable: judged by the result set.
        if !out.status.success() && out.stdout.is_empty() {
            bail!(
                "{} {} failed ({}): {}",
                program.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok((String::from_utf8_lossy(&out.stdout).into_owned(), took))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn netmon_alive(stdout: &str) -> Result<BTreeSet<Ipv4Addr>> {
    let mut set = BTreeSet::new();
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("netmon printed a line that is not JSON: {line}"))?;
        if v["type"] == "host" {
            set.insert(v["addr"].as_str().context("host without addr")?.parse()?);
        }
    }
    Ok(set)
}

fn fping_alive(stdout: &str) -> Result<BTreeSet<Ipv4Addr>> {
    stdout
        .lines()
        .map(|l| {
            l.trim()
                .parse()
                .with_context(|| format!("fping printed {l}"))
        })
        .collect()
}

fn netmon_open(stdout: &str) -> Result<BTreeSet<u16>> {
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line)?;
        if v["type"] == "scan_summary" {
            return v["open"]
                .as_array()
                .context("open is a list")?
                .iter()
                .map(|p| {
                    p.as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                        .context("a port number")
                })
                .collect();
        }
    }
    bail!("netmon printed no scan_summary")
}

/// Open ports from nmap's grepable output: `Ports: 22/open/tcp//ssh///, ...`.
fn nmap_open(stdout: &str) -> Result<BTreeSet<u16>> {
    let line = stdout
        .lines()
        .find(|l| l.contains("Ports:"))
        .context("nmap printed no Ports: line")?;
    let ports = line
        .split("Ports:")
        .nth(1)
        .unwrap_or("")
        .split('\t')
        .next()
        .unwrap_or("");
    Ok(ports
        .split(',')
        .filter_map(|item| {
            let mut f = item.trim().split('/');
            let port = f.next()?.parse().ok()?;
            (f.next()? == "open").then_some(port)
        })
        .collect())
}

struct Side {
    times: Vec<f64>,
    mismatches: usize,
}

impl Side {
    fn new() -> Self {
        Self {
            times: Vec::new(),
            mismatches: 0,
        }
    }

    fn json(&self) -> Value {
        json!({"median_s": median(&self.times), "runs_s": self.times, "runs_with_wrong_set": self.mismatches})
    }
}

fn version(program: &Path, arg: &str) -> String {
    Command::new(program).arg(arg).output().map_or_else(
        |_| "unknown".into(),
        |o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines().next().unwrap_or("unknown").trim().to_owned()
        },
    )
}

/// Alternating sweeps of [`SWEEP_RANGE`]: (netmon, fping, hosts).
fn bench_sweep(ns: &Netns, netmon: &Path, fping: &Path) -> Result<(Side, Side, usize)> {
    // Sweep: every address of the /20 answers on loopback.
    let expected_alive: BTreeSet<Ipv4Addr> = (u32::from(Ipv4Addr::LOCALHOST)
        ..=u32::from(Ipv4Addr::new(127, 0, 15, 254)))
        .map(Ipv4Addr::from)
        .collect();
    let (mut nm_sweep, mut fp_sweep) = (Side::new(), Side::new());
    for i in 0..REPEATS {
        let (out, t) = ns.time(netmon, NETMON_SWEEP)?;
        nm_sweep.times.push(t.as_secs_f64());
        nm_sweep.mismatches += usize::from(netmon_alive(&out)? != expected_alive);
        let (out, t) = ns.time(fping, FPING_SWEEP)?;
        fp_sweep.times.push(t.as_secs_f64());
        let alive = fping_alive(&out)?;
        fp_sweep.mismatches += usize::from(alive != expected_alive);
        eprintln!(
            "bench: sweep run {}: netmon {:.4} s, fping {:.4} s ({} alive)",
            i + 1,
            nm_sweep.times[i],
            fp_sweep.times[i],
            alive.len()
        );
    }

    Ok((nm_sweep, fp_sweep, expected_alive.len()))
}

/// Alternating scans of all ports of [`SCAN_HOST`] with 20 listeners: (netmon, nmap).
fn bench_scan(ns: &Netns, netmon: &Path, nmap: &Path) -> Result<(Side, Side)> {
    // Scan: exactly the bench's listeners are open.
    let listeners: Vec<TcpListener> = ns
        .enter(|| {
            LISTEN_PORTS
                .iter()
                .map(|&p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)))
                .collect::<std::io::Result<Vec<_>>>()
        })?
        .context("opening the 20 listeners")?;
    let expected_open: BTreeSet<u16> = LISTEN_PORTS.into();
    let (mut nm_scan, mut nmap_scan) = (Side::new(), Side::new());
    for i in 0..REPEATS {
        let (out, t) = ns.time(netmon, NETMON_SCAN)?;
        nm_scan.times.push(t.as_secs_f64());
        nm_scan.mismatches += usize::from(netmon_open(&out)? != expected_open);
        let (out, t) = ns.time(nmap, NMAP_SCAN)?;
        nmap_scan.times.push(t.as_secs_f64());
        nmap_scan.mismatches += usize::from(nmap_open(&out)? != expected_open);
        eprintln!(
            "bench: scan run {}: netmon {:.4} s, nmap {:.4} s",
            i + 1,
            nm_scan.times[i],
            nmap_scan.times[i]
        );
    }
    drop(listeners);
    Ok((nm_scan, nmap_scan))
}

pub fn run(ctx: &crate::Ctx) -> Result<()> {
    let netmon = &ctx.netmon;
    let (fping, nmap) = (&ctx.fping, &ctx.nmap);
    let ns = Netns::new()?;
    eprintln!(
        "bench: bench probes in namespace {}, {REPEATS} runs each, alternating",
        ns.name
    );

    let (nm_sweep, fp_sweep, hosts) = bench_sweep(&ns, netmon, fping)?;
    let (nm_scan, nmap_scan) = bench_scan(&ns, netmon, nmap)?;
    drop(ns);

    let ratio = |a: &Side, b: &Side| median(&a.times) / median(&b.times);
    let (sweep_ratio, scan_ratio) = (ratio(&nm_sweep, &fp_sweep), ratio(&nm_scan, &nmap_scan));
    let report = json!({
        "repeats": REPEATS,
        "machine": crate::util::machine(),
        "sweep": {
            "range": SWEEP_RANGE,
            "hosts": hosts,
            "netmon": nm_sweep.json(),
            "fping": fp_sweep.json(),
            "ratio": sweep_ratio,
            "netmon_command": format!("netmon {}", NETMON_SWEEP.join(" ")),
            "fping_command": format!("fping {}", FPING_SWEEP.join(" ")),
            "fping_version": version(fping, "--version"),
        },
        "scan": {
            "host": SCAN_HOST,
            "ports": 65_535,
            "listeners": LISTEN_PORTS,
            "netmon": nm_scan.json(),
            "nmap": nmap_scan.json(),
            "ratio": scan_ratio,
            "netmon_command": format!("netmon {}", NETMON_SCAN.join(" ")),
            "nmap_command": format!("nmap {}", NMAP_SCAN.join(" ")),
            "nmap_version": version(nmap, "--version"),
        },
    });
    let path = write_report(&ctx.out_dir, "probes.json", &report)?;
    println!(
        "| job | netmon (median) | reference (median) | netmon / reference | same result set |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| sweep {SWEEP_RANGE} ({} hosts) | {:.1} ms | fping {:.1} ms | {sweep_ratio:.2} | {} |",
        hosts,
        median(&nm_sweep.times) * 1e3,
        median(&fp_sweep.times) * 1e3,
        if nm_sweep.mismatches + fp_sweep.mismatches == 0 {
            "yes, every run"
        } else {
            "NO"
        }
    );
    println!(
        "| scan {SCAN_HOST} all 65,535 ports, 20 open | {:.0} ms | nmap -sT {:.0} ms | {scan_ratio:.2} | {} |",
        median(&nm_scan.times) * 1e3,
        median(&nmap_scan.times) * 1e3,
        if nm_scan.mismatches + nmap_scan.mismatches == 0 {
            "yes, every run"
        } else {
            "NO"
        }
    );
    crate::util::print_machine(&report["machine"]);
    eprintln!("bench: wrote {}", path.display());
    ensure!(
        nm_sweep.mismatches == 0 && nm_scan.mismatches == 0,
        "netmon missed or invented hosts or ports (see {})",
        path.display()
    );
    if fp_sweep.mismatches + nmap_scan.mismatches > 0 {
        eprintln!("bench: warning: fping or nmap did not find the whole ground truth in every run");
    }
    if sweep_ratio > 0.5 || scan_ratio > 0.5 {
        eprintln!(
            "bench: warning: netmon took more than half the reference's time (sweep {sweep_ratio:.2}, scan {scan_ratio:.2})"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nmap_grepable_output() {
        let out = "# Nmap 7.93 scan initiated\nHost: 127.0.0.1 ()\tStatus: Up\nHost: 127.0.0.1 ()\tPorts: 22/open/tcp//ssh///, 80/open/tcp//http///, 81/filtered/tcp/////\tIgnored State: closed (65532)\n";
        assert_eq!(nmap_open(out).unwrap(), [22, 80].into());
    }

    #[test]
    fn parses_netmon_and_fping_output() {
        let sweep = "{\"type\":\"host\",\"addr\":\"127.0.0.1\",\"rtt_ms\":0.1}\n{\"type\":\"sweep_summary\",\"scanned\":2,\"alive\":1,\"elapsed_s\":0.1}\n";
        assert_eq!(netmon_alive(sweep).unwrap(), [Ipv4Addr::LOCALHOST].into());
        assert_eq!(fping_alive("127.0.0.1\n127.0.0.2\n").unwrap().len(), 2);
        let scan =
            "{\"type\":\"port\",\"port\":22}\n{\"type\":\"scan_summary\",\"open\":[22,443]}\n";
        assert_eq!(netmon_open(scan).unwrap(), [22, 443].into());
    }
}
