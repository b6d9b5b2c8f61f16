//! The real consumers of netmon's exports, run inside a test's namespace:
//! a Prometheus server that scrapes netmon's `/metrics`, nfcapd, the
//! IPFIX/NetFlow collector of nfdump, and tshark's decoder. Each runs behind a guard that stops
//! it (and removes its files) on every exit path. Their answers are the
//! ground truth the export tests compare with nftables counters and the
//! senders' own counts.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use std::os::unix::process::CommandExt as _;

use serde_json::Value;

use crate::{Netns, unique_name};

/// A directory under the temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_name(prefix));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TempDir(dir)
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTP response: status code, `Content-Type`, body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET path` from `addr` (e.g. `127.0.0.1:9464`) inside `ns`, HTTP/1.0
/// (the server closes the connection after the body). `None` when nothing
/// answers.
#[must_use]
pub fn http_get(ns: &Netns, addr: &str, path: &str) -> Option<Response> {
    ns.enter(|| {
        let mut stream = TcpStream::connect(addr).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.lines();
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let content_type = lines
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default();
        Some(Response {
            status,
            content_type,
            body: body.to_owned(),
        })
    })
}

/// Percent-encodes a query-string value.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Kills `child` on drop if it is still running.
struct Process {
    child: Child,
    name: &'static str,
}

impl Process {
    fn spawn(name: &'static str, cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process { child, name }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then wait (at most `limit`, then SIGKILL).
    fn terminate(&mut self, limit: Duration) {
        if self.exited().is_some() {
            return;
        }
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: kill on our own, not yet reaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        while self.exited().is_none() {
            if Instant::now() > deadline {
                eprintln!(
                    "warning: {} ignored SIGTERM for {limit:?}: killed",
                    self.name
                );
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Capture<'_> {
    fn drop(&mut self) {
        // dumpcap too, when a test fails before finish(); after finish()
        // the group has ended (and its id may be reused): nothing to do.
        if self.process.exited().is_none() {
            let group = -i32::try_from(self.process.child.id()).expect("pid fits i32");
            // SAFETY: kill on the process group of our own, running child.
            unsafe { libc::kill(group, libc::SIGKILL) };
        }
    }
}

/// A Prometheus server on `127.0.0.1:9090` of a test's namespace that
/// scrapes the given targets every second.
pub struct Prometheus<'a> {
    ns: &'a Netns,
    process: Process,
    _dir: TempDir,
}

/// Where the Prometheus of [`Prometheus::start`] listens (inside the
/// namespace).
pub const PROMETHEUS_ADDR: &str = "127.0.0.1:9090";

impl<'a> Prometheus<'a> {
    /// Starts Prometheus in `ns`, scraping `targets` (`host:port`, path
    /// `/metrics`) every second, and waits until it is ready.
    #[must_use]
    pub fn start(ns: &'a Netns, targets: &[&str]) -> Self {
        let dir = TempDir::new("netmon-prometheus-");
        let targets = targets
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: netmon\n    scrape_interval: 1s\n    \
                 scrape_timeout: 1s\n    static_configs:\n      - targets: [{targets}]\n"
            ),
        )
        .expect("write prometheus.yml");
        let mut process = Process::spawn(
            "prometheus",
            ns.command("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={PROMETHEUS_ADDR}")),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http_get(ns, PROMETHEUS_ADDR, "/-/ready").is_some_and(|r| r.status == 200) {
                break;
            }
            assert!(
                process.exited().is_none(),
                "prometheus exited while starting"
            );
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready within 60 s"
            );
            thread::sleep(Duration::from_millis(100));
        }
        Prometheus {
            ns,
            process,
            _dir: dir,
        }
    }

    /// The result of an instant query (`/api/v1/query`): the `data.result`
    /// array.
    #[must_use]
    pub fn query(&self, expr: &str) -> Vec<Value> {
        let r = http_get(
            self.ns,
            PROMETHEUS_ADDR,
            &format!("/api/v1/query?query={}", urlencode(expr)),
        )
        .expect("prometheus answers");
        let v: Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("prometheus answered no JSON ({e}): {}", r.body));
        assert_eq!(v["status"], "success", "query {expr}: {}", r.body);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query with one result as a number, if it has one.
    #[must_use]
    pub fn value(&self, expr: &str) -> Option<f64> {
        let result = self.query(expr);
        assert!(result.len() <= 1, "{expr} has several series: {result:?}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits (at most `limit`) until `expr` has one value that `ok`
    /// accepts; returns it, or panics with the last answer.
    pub fn wait_for(&self, expr: &str, limit: Duration, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.value(expr);
            if let Some(v) = v
                && ok(v)
            {
                return v;
            }
            assert!(Instant::now() < deadline, "{expr} is {v:?} after {limit:?}");
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        self.process.terminate(Duration::from_secs(10));
    }
}

/// nfcapd, nfdump's IPFIX/NetFlow collector, listening on UDP
/// `127.0.0.1:PORT` of a test's namespace and writing its files to a
/// directory of its own.
pub struct Nfcapd {
    process: Process,
    dir: TempDir,
}

impl Nfcapd {
    /// Starts nfcapd in `ns` on UDP `127.0.0.1:port`.
    #[must_use]
    pub fn start(ns: &Netns, port: u16) -> Self {
        let dir = TempDir::new("netmon-nfcapd-");
        let mut process = Process::spawn(
            "nfcapd",
            ns.command("nfcapd")
                .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-w"])
                .arg(dir.path()),
        );
        // Ready once it listens (it binds before anything else).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ns
            .sh("ss -lunH")
            .lines()
            .any(|l| l.contains(&format!("127.0.0.1:{port} ")))
        {
            assert!(process.exited().is_none(), "nfcapd exited while starting");
            assert!(
                Instant::now() < deadline,
                "nfcapd did not listen on 127.0.0.1:{port} within 20 s"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Nfcapd { process, dir }
    }

    /// Stops nfcapd (SIGTERM: it writes what it holds to its file) and
    /// returns every flow record of its files, as `nfdump -o json` prints
    /// them.
    #[must_use]
    pub fn finish(mut self) -> Vec<Value> {
        self.process.terminate(Duration::from_secs(10));
        let out = Command::new("nfdump")
            .arg("-R")
            .arg(self.dir.path())
            .args(["-o", "json"])
            .output()
            .expect("cannot start nfdump");
        assert!(
            out.status.success(),
            "nfdump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        // nfdump 1.7 prints "[\nNo matching flows\n]" when there are none.
        if text.trim().is_empty() || text.contains("No matching flows") {
            return Vec::new();
        }
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("nfdump printed no JSON ({e}): {text}"));
        v.as_array().cloned().unwrap_or_default()
    }
}

/// A live capture and decode by tshark of the UDP datagrams to one port
/// on a test namespace's loopback, as IPFIX.
///
/// Complete by construction: a marker message (a valid IPFIX message
/// without sets, observation domain [`MARKER_DOMAIN`]) is sent until tshark
/// shows one before the test starts, and one more at the end is awaited
/// before the capture stops; loopback delivers in order, so everything in
/// between was decoded.
pub struct Capture<'a> {
    ns: &'a Netns,
    process: Process,
    port: u16,
    decoded: Arc<Mutex<String>>,
}

/// The observation domain of the capture's marker messages.
pub const MARKER_DOMAIN: u32 = 0xffff_fffe;

impl<'a> Capture<'a> {
    /// Starts capturing in `ns` and waits until tshark decodes.
    #[must_use]
    pub fn start(ns: &'a Netns, port: u16) -> Self {
        // A process group of its own: tshark captures through a dumpcap
        // child, which must go with it.
        let mut child = ns
            .command("tshark")
            .process_group(0)
            .args(["-i", "lo", "-l", "-f", &format!("udp port {port}")])
            .args(["-d", &format!("udp.port=={port},cflow"), "-V"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start tshark");
        let decoded = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("piped");
        let sink = Arc::clone(&decoded);
        thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let mut s = sink.lock().expect("capture buffer");
                s.push_str(&line);
                s.push('\n');
            }
        });
        let capture = Capture {
            ns,
            process: Process {
                child,
                name: "tshark",
            },
            port,
            decoded,
        };
        capture.mark(1, Duration::from_secs(30));
        capture
    }

    fn markers_seen(&self) -> usize {
        let needle = format!("Observation Domain Id: {MARKER_DOMAIN}");
        self.decoded
            .lock()
            .expect("capture buffer")
            .lines()
            .filter(|l| l.trim() == needle)
            .count()
    }

    /// Sends markers until tshark has shown `n` of them.
    fn mark(&self, n: usize, limit: Duration) {
        let mut marker = vec![0u8; 16];
        marker[0..2].copy_from_slice(&10u16.to_be_bytes());
        marker[2..4].copy_from_slice(&16u16.to_be_bytes());
        marker[12..16].copy_from_slice(&MARKER_DOMAIN.to_be_bytes());
        let deadline = Instant::now() + limit;
        let to: std::net::SocketAddr = ([127, 0, 0, 1], self.port).into();
        let socket = self
            .ns
            .enter(|| std::net::UdpSocket::bind("127.0.0.1:0"))
            .expect("marker socket");
        while self.markers_seen() < n {
            assert!(
                Instant::now() < deadline,
                "tshark did not decode a marker within {limit:?}"
            );
            socket.send_to(&marker, to).expect("send a marker");
            // One marker at a time: wait for it before sending another.
            let wait = Instant::now() + Duration::from_millis(500);
            while self.markers_seen() < n && Instant::now() < wait {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Waits until tshark has decoded everything sent so far, stops it and
    /// returns its full decode (`-V`).
    #[must_use]
    pub fn finish(mut self) -> String {
        let seen = self.markers_seen();
        self.mark(seen + 1, Duration::from_secs(30));
        // SAFETY: kill on the process group of our own, unreaped child.
        let group = -i32::try_from(self.process.child.id()).expect("pid fits i32");
        unsafe { libc::kill(group, libc::SIGTERM) };
        self.process.terminate(Duration::from_secs(10));
        self.decoded.lock().expect("capture buffer").clone()
    }
}
