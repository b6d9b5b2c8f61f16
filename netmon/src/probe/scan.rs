//! `netmon scan`: TCP connect scan with bounded concurrency.

use std::{
    io::{self, Write},
    net::{IpAddr, SocketAddr},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;

use super::{
    ScanArgs,
    render::{Progress, ms},
    targets::{parse_ports, resolve},
    tcp::{Attempt, Spare, connect_with, raise_nofile_limit},
};
use crate::{UsageError, cli::Format};

/// Descriptors kept free for everything else when sizing the concurrency.
const RESERVED_FDS: u64 = 64;
/// Upper bound of the default concurrency.
const MAX_DEFAULT_CONCURRENCY: u64 = 4096;
/// How often a port is retried for reasons that are not its own (our own
/// ephemeral port, no local port or descriptor free).
const MAX_AGAIN: u32 = 50;

/// The verdict on one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    Open(Duration),
    Closed,
    Filtered,
}

/// The default number of connects in flight for a descriptor limit.
#[must_use]
pub fn default_concurrency(nofile: u64) -> usize {
    nofile
        .saturating_sub(RESERVED_FDS)
        .clamp(16, MAX_DEFAULT_CONCURRENCY) as usize
}

/// Tries a port until there is a verdict: timeouts are retried `retries`
/// times; attempts that say nothing about the port are retried quietly.
pub async fn probe_port(
    addr: SocketAddr,
    timeout: Duration,
    retries: u32,
    spare: &mut Option<Spare>,
) -> io::Result<PortState> {
    let (mut timeouts, mut again) = (0u32, 0u32);
    loop {
        match connect_with(addr, timeout, spare).await? {
            Attempt::Open(rtt) => return Ok(PortState::Open(rtt)),
            Attempt::Closed => return Ok(PortState::Closed),
            Attempt::Unreachable => return Ok(PortState::Filtered),
            Attempt::Timeout => {
                if timeouts >= retries {
                    return Ok(PortState::Filtered);
                }
                timeouts += 1;
            }
            Attempt::Again => {
                if again >= MAX_AGAIN {
                    return Err(io::Error::other(format!(
                        "connecting to {addr} keeps failing for lack of local ports or descriptors; lower --concurrency"
                    )));
                }
                again += 1;
                tokio::time::sleep(Duration::from_millis(u64::from(again))).await;
            }
        }
    }
}

/// Scans `ports` of `ip` with `concurrency` workers.
async fn scan_host(
    ip: IpAddr,
    ports: Arc<Vec<u16>>,
    concurrency: usize,
    timeout: Duration,
    retries: u32,
) -> anyhow::Result<Vec<PortState>> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency.min(ports.len()).max(1))
        .map(|_| {
            let (next, done, ports) = (Arc::clone(&next), Arc::clone(&done), Arc::clone(&ports));
            tokio::spawn(async move {
                let mut found = Vec::new();
                let mut spare = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&port) = ports.get(i) else { break };
                    let state =
                        probe_port(SocketAddr::new(ip, port), timeout, retries, &mut spare).await?;
                    found.push((i, state));
                    done.fetch_add(1, Ordering::Relaxed);
                    // Refused connects on local paths finish without
                    // awaiting: let the other tasks run now and then.
                    if found.len().is_multiple_of(64) {
                        tokio::task::yield_now().await;
                    }
                }
                Ok::<_, io::Error>(found)
            })
        })
        .collect();
    let mut progress = Progress::new("scan", ports.len() as u64);
    let mut states = vec![PortState::Filtered; ports.len()];
    for w in workers {
        let mut w = w;
        let found = loop {
            tokio::select! {
                r = &mut w => break r,
                () = tokio::time::sleep(Duration::from_millis(100)) => progress.update(done.load(Ordering::Relaxed), || ip.to_string()),
            }
        };
        for (i, s) in found.map_err(|e| anyhow::anyhow!("a scan task failed: {e}"))?? {
            states[i] = s;
        }
    }
    progress.finish();
    Ok(states)
}

pub async fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let ports = Arc::new(parse_ports(&args.ports)?);
    let nofile = raise_nofile_limit();
    let concurrency = match args.concurrency {
        Some(0) => return Err(UsageError("--concurrency must be at least 1".into()).into()),
        Some(n) => {
            if n as u64 + RESERVED_FDS > nofile {
                log::warn!(
                    "--concurrency {n} is near the descriptor limit ({nofile}); connects may be retried"
                );
            }
            n
        }
        None => default_concurrency(nofile),
    };
    let mut addrs = Vec::new();
    for h in &args.hosts {
        addrs.push(resolve(h).await?);
    }
    let stdout = io::stdout();
    for (host, ip) in args.hosts.iter().zip(addrs) {
        let started = Instant::now();
        let states = scan_host(
            ip,
            Arc::clone(&ports),
            concurrency,
            args.timeout,
            args.retries,
        )
        .await?;
        let elapsed = started.elapsed().as_secs_f64();
        write_host(
            &mut io::BufWriter::new(stdout.lock()),
            args.format,
            host,
            ip,
            &ports,
            &states,
            elapsed,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Open ports, then the summary of one host.
fn write_host(
    out: &mut impl Write,
    format: Format,
    host: &str,
    ip: IpAddr,
    ports: &[u16],
    states: &[PortState],
    elapsed: f64,
) -> io::Result<()> {
    let open: Vec<(u16, Duration)> = ports
        .iter()
        .zip(states)
        .filter_map(|(&p, s)| {
            if let PortState::Open(d) = s {
                Some((p, *d))
            } else {
                None
            }
        })
        .collect();
    let closed = states.iter().filter(|s| **s == PortState::Closed).count();
    let filtered: Vec<u16> = ports
        .iter()
        .zip(states)
        .filter(|(_, s)| **s == PortState::Filtered)
        .map(|(p, _)| *p)
        .collect();
    match format {
        Format::Json => {
            for (p, d) in &open {
                let v = json!({"type": "port", "host": host, "addr": ip.to_string(), "port": p, "state": "open", "rtt_ms": d.as_secs_f64() * 1e3});
                writeln!(out, "{v}")?;
            }
            let mut v = json!({
                "type": "scan_summary",
                "host": host,
                "addr": ip.to_string(),
                "scanned": ports.len(),
                "open": open.iter().map(|o| o.0).collect::<Vec<_>>(),
                "closed": closed,
                "filtered": filtered.len(),
                "elapsed_s": elapsed,
            });
            // The list of filtered ports while it stays readable.
            if filtered.len() <= 1024 {
                v["filtered_ports"] = json!(filtered);
            }
            writeln!(out, "{v}")?;
        }
        Format::Text => {
            writeln!(out, "{host} ({ip})")?;
            if !open.is_empty() {
                writeln!(out, "{:<10} {:<8} {:>10}", "PORT", "STATE", "CONNECT")?;
            }
            for (p, d) in &open {
                writeln!(
                    out,
                    "{:<10} {:<8} {:>7} ms",
                    format!("{p}/tcp"),
                    "open",
                    ms(d.as_secs_f64() * 1e3)
                )?;
            }
            if !filtered.is_empty() && filtered.len() <= 32 {
                let list: Vec<String> = filtered.iter().map(u16::to_string).collect();
                writeln!(out, "filtered: {}", list.join(","))?;
            }
            writeln!(
                out,
                "{} open, {closed} closed, {} filtered of {} ports in {elapsed:.3} s",
                open.len(),
                filtered.len(),
                ports.len()
            )?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use super::*;

    #[test]
    fn concurrency_follows_the_descriptor_limit() {
        assert_eq!(default_concurrency(1024), 960);
        assert_eq!(default_concurrency(1 << 20), 4096);
        assert_eq!(default_concurrency(10), 16);
    }

    #[tokio::test]
    async fn scan_of_loopback_ports() {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
            .collect();
        let mut ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let free = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        ports.push(free);
        let states = scan_host(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Arc::new(ports),
            2,
            Duration::from_secs(1),
            0,
        )
        .await
        .unwrap();
        assert!(matches!(states[0], PortState::Open(_)));
        assert!(matches!(states[1], PortState::Open(_)));
        assert!(matches!(states[2], PortState::Open(_)));
        assert_eq!(states[3], PortState::Closed);
    }
}
