//! `cargo xtask`: provision the BPF toolchain, build, run, test, benchmark.
//!
//! The XDP program is built for `bpfel-unknown-none` either with Debian's
//! Rust (which ships a prebuilt `core` for BPF) or with a rustup nightly that
//! has `rust-src` (`-Z build-std=core`), and linked by bpf-linker. See
//! ARCHITECTURE.md and the shared TOOLCHAIN notes.

mod objcheck;
mod provision;

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run, test and benchmark netmon")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing of everything the other commands call: the
    /// BPF toolchain, and the tools of the tests and benches (idempotent).
    Provision {
        /// Only list what the commands rely on and whether each is there;
        /// install nothing (exit status 1 when something is missing).
        #[arg(long)]
        check: bool,
    },
    /// Build the kernel objects (the shipped XDP object, checked to hold
    /// nothing of the benches, and the bench object) and
    /// target/release/netmon with the shipped one embedded.
    Build,
    /// Build, then run `netmon ARGS` (as root, via sudo when needed).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then run every test: unit tests and the root-only integration
    /// tests in network namespaces.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Format check and clippy on every crate, the kernel crate for its BPF
    /// target included.
    Lint,
    /// Property-based fuzzing of every parser of user and wire input
    /// (netmon/src/fuzz.rs), each target for a bounded time; then, as
    /// root, the XDP program's parser against its reference on corpora of
    /// random frames under BPF_PROG_TEST_RUN (xdp_corpus, a new seed each
    /// time) for as long again.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Benchmarks; results go to target/bench/*.json and BENCHMARKS.md.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Clone, Copy, Subcommand)]
enum Bench {
    /// Per-packet cost of the XDP program under BPF_PROG_TEST_RUN, in ns
    /// above a bare XDP_PASS program.
    Xdp,
    /// Per-packet cost of the XDP program with 1,000 to 1,000,000 active
    /// flows sending round robin, in ns above the floor.
    Flows,
    /// Packets pushed across a veth pair with and without netmon attached.
    Veth,
    /// netmon sweep and scan side by side with fping and nmap.
    Probes,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Cmd::Provision { check: true } => {
            if !provision::check() {
                std::process::exit(1);
            }
        }
        Cmd::Provision { check: false } => {
            provision::ensure_all()?;
        }
        Cmd::Build => {
            build(&root)?;
        }
        Cmd::Run { args } => {
            let bin = build(&root)?;
            let mut cmd = if is_root() {
                Command::new(&bin)
            } else {
                let mut c = Command::new("sudo");
                c.arg(&bin);
                c
            };
            let status = cmd.args(&args).status().context("cannot start netmon")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test { args } => {
            let bin = build(&root)?;
            if !is_root() {
                bail!(
                    "the integration tests create network namespaces and attach XDP programs, \
                     which needs root: run `sudo -E env PATH=$PATH cargo xtask test`"
                );
            }
            provision::ensure_test_tools()?;
            step("running unit and integration tests");
            // Every test binary runs even when an earlier one fails, so one
            // report shows every failure.
            let status = cargo()
                .args([
                    "test",
                    "--workspace",
                    "--exclude",
                    "netmon-ebpf",
                    "--no-fail-fast",
                ])
                .args(&args)
                .env("NETMON_BIN", &bin)
                .env("NETMON_EBPF_OBJ", root.join(EBPF_OBJECT))
                .current_dir(&root)
                .status()?;
            if !status.success() {
                bail!("tests failed");
            }
        }
        Cmd::Lint => lint(&root)?,
        Cmd::Fuzz { seconds } => fuzz(&root, seconds)?,
        Cmd::Bench { which } => {
            if !is_root() {
                bail!("benchmarks attach XDP programs and create namespaces: run as root");
            }
            bench(&root, which)?;
        }
    }
    Ok(())
}

/// Prints one provisioning/build step, so a slow step is never silent.
pub fn step(what: &str) {
    eprintln!("xtask: {what}");
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The cargo that runs this xtask.
fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// A cargo command for the BPF build with the outer cargo's variables
/// cleared, so nothing of the host build leaks into it.
fn clean_cargo(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTUP_TOOLCHAIN"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd
}

/// Where the BPF build leaves the shipped object (netmon's XDP program).
pub const EBPF_OBJECT: &str = "target/bpf/bpfel-unknown-none/release/netmon";
/// Where the BPF build leaves the bench object (bench programs only).
pub const BENCH_OBJECT: &str = "target/bpf/bpfel-unknown-none/release/netmon-bench";

/// The kernel objects of one build.
struct Objects {
    /// What netmon embeds and attaches.
    shipped: PathBuf,
    /// What the benches load beside it.
    bench: PathBuf,
}

/// Builds the kernel objects (every binary of netmon-ebpf) and checks that
/// the shipped one holds netmon's program and maps and nothing of the
/// benches.
fn build_ebpf(root: &Path) -> Result<Objects> {
    let toolchain = provision::ensure()?;
    step("building the kernel objects (netmon-ebpf, bpfel-unknown-none): netmon, netmon-bench");
    let target_dir = root.join("target/bpf");
    let mut cmd = clean_cargo(&toolchain.cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--package",
            "netmon-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("PATH", provision::path_with_cargo_bin());
    match &toolchain.kind {
        provision::Kind::Debian { rustc } => {
            cmd.env("RUSTC", rustc);
        }
        provision::Kind::Nightly => {
            cmd.args(["-Z", "build-std=core"])
                .env("RUSTUP_TOOLCHAIN", "nightly");
        }
    }
    let status = cmd.status().context("cannot run cargo for the BPF build")?;
    if !status.success() {
        bail!("building the kernel objects failed");
    }
    let objects = Objects {
        shipped: root.join(EBPF_OBJECT),
        bench: root.join(BENCH_OBJECT),
    };
    let inv = objcheck::check_shipped(&objects.shipped)?;
    step(&format!(
        "shipped object checked: programs {:?}, maps {:?}; nothing of the benches",
        inv.programs, inv.maps
    ));
    Ok(objects)
}

/// Builds the kernel objects and the release binary with the shipped one
/// embedded; returns the binary's path and the objects.
fn build_all(root: &Path) -> Result<(PathBuf, Objects)> {
    let objects = build_ebpf(root)?;
    step("building target/release/netmon with the XDP program embedded");
    let status = cargo()
        .current_dir(root)
        .args(["build", "--release", "--package", "netmon"])
        .env("NETMON_EBPF_OBJ", &objects.shipped)
        .status()?;
    if !status.success() {
        bail!("building netmon failed");
    }
    Ok((root.join("target/release/netmon"), objects))
}

/// As [`build_all`], for the commands that only need the binary.
fn build(root: &Path) -> Result<PathBuf> {
    build_all(root).map(|(bin, _)| bin)
}

/// Provisions what bench `which` runs, builds netmon, the kernel object
/// and the benches crate, and runs the bench (`netmon-benches`).
fn bench(root: &Path, which: Bench) -> Result<()> {
    let (name, tools) = match which {
        Bench::Xdp => ("xdp", None),
        Bench::Flows => ("flows", None),
        Bench::Veth => ("veth", Some(provision::BENCH_VETH_TOOLS)),
        Bench::Probes => ("probes", Some(provision::BENCH_PROBES_TOOLS)),
    };
    if let Some(tools) = tools {
        provision::ensure_tools(tools, &format!("bench {name}"))?;
    }
    let (netmon, objects) = build_all(root)?;
    step("building the benches (netmon-benches)");
    let status = cargo()
        .current_dir(root)
        .args(["build", "--release", "--package", "netmon-benches"])
        .env("NETMON_EBPF_OBJ", &objects.shipped)
        .status()?;
    if !status.success() {
        bail!("building the benches failed");
    }
    let mut cmd = Command::new(root.join("target/release/netmon-benches"));
    cmd.arg(name)
        .arg("--object")
        .arg(&objects.shipped)
        .arg("--bench-object")
        .arg(&objects.bench)
        .arg("--netmon")
        .arg(&netmon)
        .arg("--out-dir")
        .arg(root.join("target/bench"))
        .current_dir(root);
    if let Bench::Probes = which {
        cmd.arg("--fping")
            .arg(provision::require("fping", "fping")?)
            .arg("--nmap")
            .arg(provision::require("nmap", "nmap")?);
    }
    let status = cmd.status().context("cannot run netmon-benches")?;
    if !status.success() {
        bail!("bench {name} failed");
    }
    Ok(())
}

fn fuzz(root: &Path, seconds: u64) -> Result<()> {
    step(&format!(
        "fuzzing the parsers, {seconds} s per target (optimised build)"
    ));
    let status = cargo()
        .current_dir(root)
        .args([
            "test",
            "--profile",
            "fuzz",
            "--package",
            "netmon",
            "--lib",
            "--",
            "fuzz::",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("NETMON_FUZZ_SECS", seconds.to_string())
        .status()?;
    if !status.success() {
        bail!("a fuzz target failed (its minimal failing input is printed above)");
    }
    if !is_root() {
        step("skipping the XDP parser's corpora: BPF_PROG_TEST_RUN needs root");
        return Ok(());
    }
    let object = build_ebpf(root)?.shipped;
    step(&format!(
        "XDP parser against its reference on random corpora for {seconds} s"
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let mut corpora = 0u32;
    loop {
        // A new seed each corpus; the test prints it for a replay.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let status = cargo()
            .current_dir(root)
            .args([
                "test",
                "--package",
                "netmon-tests",
                "--test",
                "xdp_corpus",
                "--",
                "--exact",
                "xdp_passes_every_frame_unchanged_and_counts_like_the_reference",
                "--nocapture",
            ])
            .env("NETMON_EBPF_OBJ", &object)
            .env("NETMON_CORPUS_SEED", format!("{seed:#x}"))
            .status()?;
        if !status.success() {
            bail!("the XDP parser differs from its reference on corpus seed {seed:#x}");
        }
        corpora += 1;
        if std::time::Instant::now() >= deadline {
            break;
        }
    }
    step(&format!(
        "{corpora} random corpora (about 260,000 frames each) agreed with the reference"
    ));
    Ok(())
}

fn lint(root: &Path) -> Result<()> {
    step("cargo fmt --check");
    let ok = cargo()
        .current_dir(root)
        .args(["fmt", "--all", "--check"])
        .status()?
        .success();
    if !ok {
        bail!("code is not formatted: run `cargo fmt --all`");
    }
    step("clippy on the userspace crates");
    let ok = cargo()
        .current_dir(root)
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "netmon-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .status()?
        .success();
    if !ok {
        bail!("clippy found problems in the userspace crates");
    }
    step("clippy on the kernel crate (bpfel-unknown-none)");
    let toolchain = provision::ensure()?;
    let provision::Kind::Debian { rustc } = &toolchain.kind else {
        step("skipping kernel clippy: it needs Debian's clippy for BPF (rust-web-clippy)");
        return Ok(());
    };
    let debian_cargo = provision::require(provision::DEBIAN_CARGO, "cargo-web")?;
    provision::require("/usr/bin/clippy-driver", "rust-web-clippy")?;
    let ok = clean_cargo(&debian_cargo)
        .current_dir(root)
        .args([
            "clippy",
            "--package",
            "netmon-ebpf",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "--",
            "-D",
            "warnings",
        ])
        .env("CARGO_TARGET_DIR", root.join("target/bpf-clippy"))
        .env("RUSTC", rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        // Debian's cargo-clippy must find Debian's clippy-driver, which
        // knows the BPF sysroot, before rustup's.
        .env("PATH", provision::path_with_first("/usr/bin"))
        .status()?
        .success();
    if !ok {
        bail!("clippy found problems in the kernel crate");
    }
    Ok(())
}
