//! Harness for netmon's integration tests: network namespaces and veth pairs
//! behind guards that remove them on every exit path (a panic included), a
//! running netmon behind a guard that kills it, and nftables counters as
//! ground truth for what a namespace sent.
//!
//! These tests need root and the binary built by `cargo xtask build`; run
//! them with `cargo xtask test`, which sets `NETMON_BIN`.

pub mod frames;
use std::{
    io::{BufRead, BufReader, Read},
    net::IpAddr,
    os::fd::AsRawFd,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod collectors;
pub mod delay;
pub mod routed;
pub mod traffic;

/// The netmon binary under test.
#[must_use]
pub fn netmon_bin() -> PathBuf {
    let path = std::env::var_os("NETMON_BIN")
        .map(PathBuf::from)
        .expect("NETMON_BIN is not set: run the integration tests with `cargo xtask test`");
    assert!(
        path.exists(),
        "NETMON_BIN={} does not exist",
        path.display()
    );
    path
}

/// A name unique to this process and call, at most 15 bytes (IFNAMSIZ - 1).
#[must_use]
pub fn unique(prefix: &str) -> String {
    let name = unique_name(prefix);
    assert!(name.len() <= 15, "name {name} too long for an interface");
    name
}

/// A name unique to this process and call, of any length (files,
/// directories).
#[must_use]
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// Runs a command, panicking with its stderr if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns
    }

    /// `ip -n NS ARGS...` (whitespace-separated), panicking on failure.
    pub fn ip(&self, args: &str) -> String {
        run(Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args.split_whitespace()))
    }

    /// `ip netns exec NS PROGRAM`, not yet started.
    #[must_use]
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs a shell command inside the namespace, panicking on failure.
    pub fn sh(&self, script: &str) -> String {
        run(self.command("sh").args(["-c", script]))
    }

    /// Runs `f` on a thread that has joined this namespace: sockets it
    /// opens live there.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        thread::scope(|s| {
            s.spawn(|| {
                self.join_this_thread()
                    .unwrap_or_else(|e| panic!("cannot enter {}: {e}", self.name));
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Moves the calling thread into this namespace, for good: only for
    /// threads spawned to work there.
    pub fn join_this_thread(&self) -> std::io::Result<()> {
        join_netns(&self.name)
    }
}

/// Moves the calling thread into the network namespace `name` (as `ip
/// netns` keeps it), for good: only for threads spawned to work there.
pub fn join_netns(name: &str) -> std::io::Result<()> {
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path)?;
    // SAFETY: setns on a valid namespace fd; it changes only this thread's
    // network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes the veth end inside it, and with it
        // the peer and any XDP program attached to either.
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if !out.is_ok_and(|o| o.status.success()) {
            eprintln!("warning: could not delete network namespace {}", self.name);
        }
    }
}

pub const A4: &str = "198.51.100.1";
pub const B4: &str = "198.51.100.2";
pub const A6: &str = "2001:db8::1";
pub const B6: &str = "2001:db8::2";

/// Two namespaces joined by a veth pair: netmon watches `if_a` in `a`,
/// traffic comes from `b`. `b` says nothing on its own: static neighbours
/// (no ARP, no neighbour discovery), no IPv6 link-local address, and
/// nftables drops its MLD and router solicitations. Every IP packet `b`
/// sends out is counted by nftables (`sent_total`), the ground truth; GSO
/// is limited to one segment so a counted skb is one frame on the wire.
pub struct Pair {
    // Field order: namespaces go last, after everything inside them.
    pub if_a: String,
    pub if_b: String,
    pub a: Netns,
    pub b: Netns,
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

/// (packets, bytes) of the named nftables counter in `table` (`inet t`)
/// of `ns`.
#[must_use]
pub fn nft_counter(ns: &Netns, table: &str, name: &str) -> (u64, u64) {
    let text = ns.sh(&format!("nft -j list counter {table} {name}"));
    let v: Value = serde_json::from_str(&text).expect("nft -j prints JSON");
    let counter = v["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i.get("counter")))
        .unwrap_or_else(|| panic!("no counter {name} in {text}"));
    (
        counter["packets"].as_u64().unwrap(),
        counter["bytes"].as_u64().unwrap(),
    )
}

impl Pair {
    #[must_use]
    pub fn new() -> Self {
        Self::named("nm")
    }

    /// Like [`Pair::new`], with names that start with `prefix` (namespaces
    /// `{prefix}a…`/`{prefix}b…`, links `{prefix}va…`/`{prefix}vb…`).
    #[must_use]
    pub fn named(prefix: &str) -> Self {
        let a = Netns::new(&format!("{prefix}a"));
        let b = Netns::new(&format!("{prefix}b"));
        let (if_a, if_b) = if prefix == "nm" {
            (unique("va"), unique("vb"))
        } else {
            (
                unique(&format!("{prefix}va")),
                unique(&format!("{prefix}vb")),
            )
        };
        run(Command::new("ip").args([
            "link", "add", &if_a, "netns", &a.name, "type", "veth", "peer", "name", &if_b, "netns",
            &b.name,
        ]));
        // Ground truth and silence first, then addresses, then link up.
        b.sh(&format!(
            "nft -f - <<'EOF'\n\
             table inet nmtest {{\n\
               counter sent_total {{ }}\n\
               chain out {{\n\
                 type filter hook output priority 0; policy accept;\n\
                 oifname \"{if_b}\" icmpv6 type {{ mld-listener-report, mld2-listener-report, mld-listener-done, nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} drop\n\
                 oifname \"{if_b}\" counter name sent_total\n\
               }}\n\
             }}\nEOF"
        ));
        // The monitored side's own multicast listener reports and
        // solicitations are silenced too: netmon counts what `a` sends
        // (the egress program), and an MLD report sent a moment after the
        // program attached is one flow more than a test sent.
        a.sh(&format!(
            "nft -f - <<'EOF'\n\
             table inet nmquiet {{\n\
               chain out {{\n\
                 type filter hook output priority 0; policy accept;\n\
                 oifname \"{if_a}\" icmpv6 type {{ mld-listener-report, mld2-listener-report, mld-listener-done, nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} drop\n\
               }}\n\
             }}\nEOF"
        ));
        for (ns, iface, v4, v6) in [(&a, &if_a, A4, A6), (&b, &if_b, B4, B6)] {
            ns.ip(&format!("link set dev {iface} addrgenmode none"));
            // One wire packet per skb: nftables counts skbs at the output
            // hook, XDP sees frames; a GSO super-packet would be one to the
            // first and several to the second.
            ns.ip(&format!("link set dev {iface} gso_max_segs 1"));
            ns.sh(&format!("sysctl -qw net.ipv6.conf.{iface}.accept_ra=0 net.ipv6.conf.{iface}.router_solicitations=0"));
            ns.ip(&format!("addr add {v4}/24 dev {iface}"));
            ns.ip(&format!("addr add {v6}/64 dev {iface} nodad"));
        }
        let (mac_a, mac_b) = (mac(&a, &if_a), mac(&b, &if_b));
        for (ns, iface, peer4, peer6, peer_mac) in
            [(&a, &if_a, B4, B6, &mac_b), (&b, &if_b, A4, A6, &mac_a)]
        {
            ns.ip(&format!(
                "neigh replace {peer4} lladdr {peer_mac} dev {iface} nud permanent"
            ));
            ns.ip(&format!(
                "neigh replace {peer6} lladdr {peer_mac} dev {iface} nud permanent"
            ));
        }
        a.ip(&format!("link set dev {if_a} up"));
        b.ip(&format!("link set dev {if_b} up"));
        Pair { if_a, if_b, a, b }
    }

    /// Adds a named nftables counter in `b` for packets out of `if_b`
    /// matching `expr` (an nft match such as `udp dport 9000`).
    pub fn count_sent(&self, name: &str, expr: &str) {
        self.b.sh(&format!(
            "nft add counter inet nmtest {name} && nft add rule inet nmtest out oifname \"{}\" {expr} counter name {name}",
            self.if_b
        ));
    }

    /// (packets, L3 bytes) of a named counter in `b`.
    #[must_use]
    pub fn sent(&self, name: &str) -> (u64, u64) {
        nft_counter(&self.b, "inet nmtest", name)
    }

    /// (packets, L2 bytes) of everything `b` sent: IP bytes plus a 14-byte
    /// Ethernet header each.
    #[must_use]
    pub fn sent_frames(&self, name: &str) -> (u64, u64) {
        let (packets, bytes) = self.sent(name);
        (packets, bytes + 14 * packets)
    }

    /// Whether an XDP program is attached to `if_a`.
    #[must_use]
    pub fn xdp_attached(&self) -> bool {
        self.a
            .ip(&format!("link show dev {}", self.if_a))
            .contains("xdp")
    }
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

/// A finished netmon run.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Every stdout line parsed as JSON (panics on a line that is not).
    #[must_use]
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l}\nstderr: {}", self.stderr))
            })
            .collect()
    }

    /// The `summary` object.
    #[must_use]
    pub fn summary(&self) -> Value {
        self.json_lines()
            .into_iter()
            .find(|v| v["type"] == "summary")
            .unwrap_or_else(|| {
                panic!(
                    "no summary in output:\n{}\nstderr: {}",
                    self.stdout, self.stderr
                )
            })
    }
}

/// The received flow with these endpoints in a summary, if any.
#[must_use]
pub fn find_flow<'a>(
    summary: &'a Value,
    src: &str,
    dst: &str,
    dport: u16,
    proto: &str,
) -> Option<&'a Value> {
    find_flow_in(summary, "rx", src, dst, dport, proto)
}

/// The flow of `direction` (`rx`, `tx`) with these endpoints in a
/// summary, if any.
#[must_use]
pub fn find_flow_in<'a>(
    summary: &'a Value,
    direction: &str,
    src: &str,
    dst: &str,
    dport: u16,
    proto: &str,
) -> Option<&'a Value> {
    let canon = |s: &str| {
        s.parse::<IpAddr>()
            .map_or_else(|_| s.to_owned(), |a| a.to_string())
    };
    summary["flows"].as_array()?.iter().find(|f| {
        f["direction"] == direction
            && f["src"] == canon(src)
            && f["dst"] == canon(dst)
            && f["dport"] == dport
            && f["proto"] == proto
    })
}

/// A running netmon, killed on drop if still running.
pub struct Netmon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    stdout: Option<thread::JoinHandle<String>>,
    /// What netmon printed on stdout so far (the reader thread appends).
    stdout_so_far: Arc<Mutex<String>>,
    /// What netmon said when it became ready (`STATUS=` of its readiness
    /// notification), e.g. "counting on va1x0 in native XDP mode".
    status: String,
}

/// The socket netmon tells it is ready on (`NOTIFY_SOCKET`, the systemd
/// notification protocol): a Unix datagram socket in a directory of its
/// own, removed on drop.
struct NotifySocket {
    sock: UnixDatagram,
    dir: PathBuf,
}

impl NotifySocket {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique_name("netmon-ready-"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let sock = UnixDatagram::bind(dir.join("notify")).expect("bind the notify socket");
        // A netmon that is not root (as a service with capabilities) may
        // write to it too.
        std::fs::set_permissions(
            dir.join("notify"),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("chmod the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        NotifySocket { sock, dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("notify")
    }

    /// The next notification, if one comes within the read timeout.
    fn recv(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Netmon {
    /// Starts `netmon ARGS` in `ns` and waits until it is ready: counting,
    /// as its readiness notification says (see [`Netmon::start_bin`]).
    #[must_use]
    pub fn start(ns: &Netns, args: &[&str]) -> Self {
        Self::start_bin(&netmon_bin(), ns, args)
    }

    /// Starts the netmon binary `bin` with `ARGS` in `ns` and waits until it
    /// is ready. Readiness is machine-readable: netmon sends `READY=1` to
    /// `$NOTIFY_SOCKET` once everything that crosses the interface is
    /// counted (the systemd notification protocol), never matched in prose.
    #[must_use]
    pub fn start_bin(bin: &Path, ns: &Netns, args: &[&str]) -> Self {
        let notify = NotifySocket::new();
        let mut child = ns
            .command(bin)
            .args(args)
            .env("NOTIFY_SOCKET", notify.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout_so_far = Arc::new(Mutex::new(String::new()));
        let stdout = Some(read_lines_into(
            child.stdout.take().expect("piped"),
            Arc::clone(&stdout_so_far),
        ));
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_reader =
            read_lines_into(child.stderr.take().expect("piped"), Arc::clone(&stderr));
        let mut netmon = Netmon {
            child,
            stderr,
            stdout,
            stdout_so_far,
            status: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(message) = notify.recv()
                && message.lines().any(|l| l == "READY=1")
            {
                message
                    .lines()
                    .find_map(|l| l.strip_prefix("STATUS="))
                    .unwrap_or_default()
                    .clone_into(&mut netmon.status);
                return netmon;
            }
            if let Ok(Some(status)) = netmon.child.try_wait() {
                // Everything it printed, before the test says why it failed.
                let _ = stderr_reader.join();
                panic!(
                    "netmon exited ({status}) before it was ready; stderr:\n{}",
                    netmon.stderr()
                );
            }
            if Instant::now() > deadline {
                let _ = netmon.child.kill();
                let _ = netmon.child.wait();
                panic!(
                    "netmon was not ready within 30 s; stderr:\n{}",
                    netmon.stderr()
                );
            }
        }
    }

    /// What netmon said when it became ready (its `STATUS=`).
    #[must_use]
    pub fn ready_status(&self) -> &str {
        &self.status
    }

    /// The XDP mode netmon said it attached in ("native", "generic"; its
    /// status reads "counting on IF in MODE XDP mode"), or "?".
    #[must_use]
    pub fn xdp_mode(&self) -> &str {
        self.status
            .split(" in ")
            .nth(1)
            .and_then(|s| s.split(" XDP mode").next())
            .unwrap_or("?")
    }

    /// Whether netmon is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    #[must_use]
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    #[must_use]
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// Waits (at most `limit`) until netmon has printed a stdout line that
    /// contains `needle`; panics if it did not.
    pub fn wait_for_stdout(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let so_far = self.stdout_so_far.lock().expect("stdout buffer").clone();
            if so_far.lines().any(|l| l.contains(needle)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "netmon printed no line with {needle:?} within {limit:?}; stdout so far:\n{so_far}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (at most `limit`) until a stdout line that contains `needle`
    /// follows the first `mark` lines; returns how many lines there are
    /// then (a mark for the next wait). Panics if none came.
    pub fn wait_for_stdout_after(&self, mark: usize, needle: &str, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let so_far = self.stdout_so_far.lock().expect("stdout buffer").clone();
            if so_far.lines().skip(mark).any(|l| l.contains(needle)) {
                return so_far.lines().count();
            }
            assert!(
                Instant::now() < deadline,
                "netmon printed no line with {needle:?} after line {mark} within {limit:?}; \
                 stdout so far:\n{so_far}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to netmon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0, "kill failed");
    }

    /// Waits (at most `limit`) for netmon to exit by itself.
    #[must_use]
    pub fn wait(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "netmon still running after {limit:?}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = self
            .stdout
            .take()
            .expect("once")
            .join()
            .expect("stdout reader");
        // Give the stderr reader a moment to see EOF.
        thread::sleep(Duration::from_millis(50));
        Finished {
            status,
            stdout,
            stderr: self.stderr(),
        }
    }

    /// Ctrl-C, then wait for the summary.
    #[must_use]
    pub fn stop(self) -> Finished {
        self.signal(libc::SIGINT);
        self.wait(Duration::from_secs(10))
    }
}

impl Drop for Netmon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `netmon ARGS` in `ns` with stdout and stderr piped.
fn spawn_netmon(ns: &Netns, args: &[&str]) -> Child {
    ns.command(netmon_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start netmon")
}

/// Reads `pipe` line by line to its end on a thread of its own, appending
/// each line to `so_far` as it comes; the thread returns the whole text.
fn read_lines_into(
    pipe: impl Read + Send + 'static,
    so_far: Arc<Mutex<String>>,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut s = so_far.lock().expect("stdout buffer");
            s.push_str(&line);
            s.push('\n');
        }
        so_far.lock().expect("stdout buffer").clone()
    })
}

/// Reads `pipe` to its end on a thread of its own.
fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// Runs `netmon ARGS` in `ns`; kills it and panics if it runs past `limit`.
#[must_use]
pub fn netmon_run(ns: &Netns, args: &[&str], limit: Duration) -> Finished {
    let mut child = spawn_netmon(ns, args);
    let out = read_all(child.stdout.take().expect("piped"));
    let err = read_all(child.stderr.take().expect("piped"));
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
