//! The live view end to end: the real binary in a real terminal (tmux),
//! watching one end of a veth pair while the other namespace sends known
//! traffic (ground truth: nftables counters in the sender). The screen
//! must show each flow with its exact packet count once the traffic has
//! stopped; the sort and filter keys must change what is shown; `q` must
//! end netmon with status 0, the terminal restored and the text summary
//! on the normal screen.

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use netmon_tests::{A4, B4, Pair, netmon_bin, run, unique};

/// A tmux server of its own (`tmux -L NAME`) with one 200x50 session,
/// killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `command` (a shell command line) in a new detached session.
    fn start(command: &str) -> Self {
        let tmux = Tmux {
            socket: unique("nmtmux"),
        };
        run(tmux.cmd().args([
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            "-s",
            "live",
            command,
        ]));
        tmux
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    /// Types `keys` (tmux key names: `s`, `Enter`, `/`).
    fn keys(&self, keys: &[&str]) {
        run(self.cmd().args(["send-keys", "-t", "live"]).args(keys));
    }

    /// The screen as text.
    fn screen(&self) -> String {
        run(self.cmd().args(["capture-pane", "-p", "-t", "live"]))
    }

    /// Whether the pane is on the alternate screen (a full-screen program
    /// holds it).
    fn alternate_on(&self) -> bool {
        run(self
            .cmd()
            .args(["display-message", "-p", "-t", "live", "#{alternate_on}"]))
        .trim()
            == "1"
    }

    /// Waits (at most `limit`) until `ok` holds for the screen; returns it.
    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} on the screen within {limit:?}; it shows:\n{screen}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// The packets column of the flow table's row for `src -> dst`, if shown.
fn packets_shown(screen: &str, src: &str, dst: &str) -> Option<u64> {
    screen.lines().find_map(|line| {
        let cols: Vec<&str> = line
            .trim_matches(|c: char| c == '│' || c.is_whitespace())
            .split_whitespace()
            .collect();
        (cols.len() >= 4 && cols[1] == src && cols[2] == dst)
            .then(|| cols[3].parse().ok())
            .flatten()
    })
}

/// Sends `count` datagrams of `payload` bytes from `from` to `to`, paced.
fn send_udp(from: SocketAddr, to: SocketAddr, count: u64, payload: usize) {
    let socket = UdpSocket::bind(from).expect("bind sender");
    let data = vec![0x5au8; payload];
    for i in 0..count {
        socket.send_to(&data, to).expect("send_to");
        if i % 64 == 63 {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn the_live_view_shows_exact_flows_sorts_filters_and_quits_cleanly() {
    let pair = Pair::named("lv");
    pair.count_sent("small", "udp dport 9000");
    pair.count_sent("big", "udp dport 9001");
    let tmux = Tmux::start(&format!(
        "ip netns exec {} {} --iface {} --interval 500ms; echo \"netmon exited $?\"; sleep 600",
        pair.a.name,
        netmon_bin().display(),
        pair.if_a
    ));
    // The view opens once the program counts.
    tmux.wait_for("live view", Duration::from_secs(30), |s| {
        s.contains("self-cost") && s.contains(&pair.if_a)
    });
    assert!(tmux.alternate_on(), "the view is on the alternate screen");

    // Small: more packets, fewer bytes; big: the other way round.
    let (small_src, small_dst) = (format!("{B4}:40000"), format!("{A4}:9000"));
    let (big_src, big_dst) = (format!("{B4}:40001"), format!("{A4}:9001"));
    pair.b.enter(|| {
        send_udp(
            small_src.parse().unwrap(),
            small_dst.parse().unwrap(),
            300,
            20,
        );
        send_udp(
            big_src.parse().unwrap(),
            big_dst.parse().unwrap(),
            100,
            1000,
        );
    });
    let (small, _) = pair.sent("small");
    let (big, _) = pair.sent("big");
    assert_eq!((small, big), (300, 100), "nftables counted what was sent");

    // Exact counts once the traffic has stopped, by bytes: big first.
    let screen = tmux.wait_for(
        "both flows with exact counts",
        Duration::from_secs(10),
        |s| {
            packets_shown(s, &small_src, &small_dst) == Some(small)
                && packets_shown(s, &big_src, &big_dst) == Some(big)
        },
    );
    let row = |s: &str, src: &str| s.lines().position(|l| l.contains(src)).unwrap();
    assert!(screen.contains("flows by bytes"), "{screen}");
    assert!(
        row(&screen, &big_src) < row(&screen, &small_src),
        "by bytes:\n{screen}"
    );

    // s: by packets, small first.
    tmux.keys(&["s"]);
    let screen = tmux.wait_for("flows by packets", Duration::from_secs(5), |s| {
        s.contains("flows by packets")
    });
    assert!(
        row(&screen, &small_src) < row(&screen, &big_src),
        "by packets:\n{screen}"
    );

    // A filter on the big flow's port: the small flow is gone.
    tmux.keys(&["/", "9001", "Enter"]);
    let screen = tmux.wait_for("the filtered table", Duration::from_secs(5), |s| {
        s.contains("filter '9001'")
    });
    assert_eq!(
        packets_shown(&screen, &big_src, &big_dst),
        Some(big),
        "{screen}"
    );
    assert_eq!(
        packets_shown(&screen, &small_src, &small_dst),
        None,
        "{screen}"
    );
    // Esc clears it.
    tmux.keys(&["Escape"]);
    tmux.wait_for("the whole table again", Duration::from_secs(5), |s| {
        packets_shown(s, &small_src, &small_dst) == Some(small)
    });

    // q: netmon ends with 0, the summary on the normal screen.
    tmux.keys(&["q"]);
    assert_ended_cleanly(&tmux, &pair.if_a, &small_src, small);
}

/// After `q`: netmon exited 0, the alternate screen is left and the
/// terminal is no longer raw, the summary (with `src`'s exact `packets`)
/// is on the normal screen and nothing of the view is.
fn assert_ended_cleanly(tmux: &Tmux, iface: &str, src: &str, packets: u64) {
    let screen = tmux.wait_for("netmon's exit", Duration::from_secs(15), |s| {
        s.contains("netmon exited")
    });
    assert!(screen.contains("netmon exited 0"), "{screen}");
    assert!(!tmux.alternate_on(), "the alternate screen is left");
    assert!(
        screen.contains(&format!("summary for {iface} over")),
        "{screen}"
    );
    // The summary's top flows table has the exact counts too.
    let summary_row = screen
        .lines()
        .find(|l| l.contains(src) && l.contains("->"))
        .unwrap_or_else(|| panic!("no summary row for the small flow:\n{screen}"));
    assert!(
        summary_row
            .split_whitespace()
            .any(|w| w == packets.to_string()),
        "{summary_row}"
    );
    // Nothing of the view is left on the screen.
    for tui in ["self-cost", "(rows ", "packets/s by class"] {
        assert!(!screen.contains(tui), "{tui:?} still on screen:\n{screen}");
    }
    // Raw mode is off: the terminal is canonical and echoes again.
    let tty = run(tmux
        .cmd()
        .args(["display-message", "-p", "-t", "live", "#{pane_tty}"]));
    let modes = run(Command::new("stty").args(["-F", tty.trim(), "-a"]));
    let has = |flag: &str| modes.split_whitespace().any(|w| w == flag);
    assert!(
        has("icanon") && has("echo"),
        "the terminal is still raw: {modes}"
    );
}

/// The terminal goes away under the view (its tmux server is killed, the
/// pty hangs up, netmon gets SIGHUP): netmon ends within seconds and leaves
/// nothing attached.
#[test]
fn when_the_terminal_goes_away_netmon_ends() {
    terminal_goes_away("", false);
}

/// The same in a session of its own (`setsid`): no SIGHUP comes, and the
/// view's thread is stuck in crossterm reading the hung-up terminal; a
/// SIGTERM still ends netmon (it stops waiting for the view after a
/// second) and detaches everything.
#[test]
fn after_its_terminal_went_away_sigterm_still_ends_netmon() {
    terminal_goes_away("setsid -w", true);
}

fn terminal_goes_away(prefix: &str, sigterm: bool) {
    let pair = Pair::named("lh");
    let tmux = Tmux::start(&format!(
        "{prefix} ip netns exec {} {} --iface {} --interval 500ms",
        pair.a.name,
        netmon_bin().display(),
        pair.if_a
    ));
    tmux.wait_for("live view", Duration::from_secs(30), |s| {
        s.contains("self-cost") && s.contains(&pair.if_a)
    });
    // netmon itself (setsid's and ip's command lines name it too).
    let pattern = format!("^{} --iface {} ", netmon_bin().display(), pair.if_a);
    let pids = run(Command::new("pgrep").args(["-f", "--", &pattern]));
    let pid = pids.lines().next().expect("netmon runs").trim().to_owned();
    assert!(pair.xdp_attached());
    drop(tmux);
    if sigterm {
        run(Command::new("kill").args(["-TERM", &pid]));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            Instant::now() < deadline,
            "netmon (pid {pid}) still runs 10 s after its terminal went away (SIGTERM: \
             {sigterm})"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert!(!pair.xdp_attached(), "nothing stays attached");
}
