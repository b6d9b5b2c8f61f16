//! Finds the BPF toolchain and installs what is missing.
//!
//! Two ways to compile Rust for `bpfel-unknown-none` are recognised:
//! - Debian's Rust (`rustc-web`) with its prebuilt `core` for BPF
//!   (`libstd-rust-web-dev-bpf`): what this machine kind uses;
//! - a rustup nightly with `rust-src`, building `core` with `-Z build-std`:
//!   aya's usual path, used when present.
//!
//! Either way bpf-linker links the object; it must be built against the
//! LLVM major of the compiler (22 for Debian's Rust 1.96).
//!
//! Provisioning is idempotent: when everything is there it only looks at a
//! few files and asks bpf-linker its version.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{is_root, step};

pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_BPF_CORE_DIR: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";
const APT_PACKAGES: &[&str] = &[
    "rustc-web",
    "libstd-rust-web-dev-bpf",
    "rust-web-clippy",
    "cargo-web",
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
/// Programs the integration tests call, with the Debian package of each.
pub const TEST_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("sysctl", "procps"),
    ("ss", "iproute2"),
    // The real consumers of the exports (tests/tests/exports.rs).
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("nfcapd", "nfdump"),
    ("nfdump", "nfdump"),
    ("tshark", "tshark"),
    // tests/live.rs drives the live view in a real terminal.
    ("tmux", "tmux"),
    // tests/rtt.rs: the NFQUEUE delay line's rules (nftables' `queue`
    // expression is not in this kernel; xtables' NFQUEUE target is), bulk
    // TCP through it, and ping as the delay line's own check.
    ("iptables", "iptables"),
    ("ip6tables", "iptables"),
    ("iperf3", "iperf3"),
    ("ping", "iputils-ping"),
];
/// Programs `cargo xtask bench veth` calls.
pub const BENCH_VETH_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("ethtool", "ethtool"),
];
/// Programs `cargo xtask bench probes` compares netmon with.
pub const BENCH_PROBES_TOOLS: &[(&str, &str)] =
    &[("ip", "iproute2"), ("fping", "fping"), ("nmap", "nmap")];

pub enum Kind {
    /// Debian's rustc with a prebuilt `core` for BPF.
    Debian { rustc: PathBuf },
    /// rustup nightly with rust-src (`-Z build-std=core`).
    Nightly,
}

pub struct Toolchain {
    pub kind: Kind,
    /// The cargo that drives the BPF build.
    pub cargo: PathBuf,
}

fn cargo_bin_dir() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// PATH with cargo's bin directory (where bpf-linker is installed) first.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    path_with_first(cargo_bin_dir())
}

/// PATH with `dir` first.
pub fn path_with_first(dir: impl Into<PathBuf>) -> std::ffi::OsString {
    let mut parts = vec![dir.into()];
    if let Some(path) = env::var_os("PATH") {
        parts.extend(env::split_paths(&path));
    }
    env::join_paths(parts).unwrap_or_default()
}

fn debian_bpf_core() -> bool {
    Path::new(DEBIAN_RUSTC).exists()
        && std::fs::read_dir(DEBIAN_BPF_CORE_DIR).is_ok_and(|dir| {
            dir.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
        })
}

fn debian_complete() -> bool {
    debian_bpf_core()
        && Path::new(LLVM_PREFIX).join("lib/libLLVM.so").exists()
        && Path::new("/usr/bin/clippy-driver").exists()
        && Path::new(DEBIAN_CARGO).exists()
}

fn nightly_with_rust_src() -> bool {
    let Ok(out) = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
    else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    out.status.success()
        && Path::new(&sysroot)
            .join("lib/rustlib/src/rust/library/core")
            .exists()
}

fn bpf_linker_ok() -> bool {
    Command::new(cargo_bin_dir().join("bpf-linker"))
        .arg("--version")
        .output()
        .or_else(|_| Command::new("bpf-linker").arg("--version").output())
        .is_ok_and(|o| o.status.success())
}

fn have_apt() -> bool {
    Path::new("/usr/bin/apt-get").exists()
}

/// Where `program` is: itself when it is a path, else the first match on
/// PATH.
pub fn which(program: impl AsRef<Path>) -> Option<PathBuf> {
    let program = program.as_ref();
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|f| f.is_file())
}

/// `program`'s path, or an error that names it and the Debian package that
/// has it (never a bare "No such file or directory").
pub fn require(program: impl AsRef<Path>, package: &str) -> Result<PathBuf> {
    let program = program.as_ref();
    which(program).with_context(|| {
        format!(
            "{} not found: it comes with the Debian package {package} \
             (`cargo xtask provision`, as root, installs it; \
             `cargo xtask provision --check` lists everything)",
            program.display()
        )
    })
}

/// Runs `cmd` after checking that its program exists.
fn run(cmd: &mut Command, what: &str, package: &str) -> Result<()> {
    require(cmd.get_program(), package)?;
    let status = cmd
        .status()
        .with_context(|| format!("cannot start: {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// The commands a person runs to provision by hand.
fn manual_steps() -> String {
    format!(
        "install the BPF toolchain, then run this again:\n  \
         sudo apt-get update\n  \
         sudo apt-get install -y {}\n  \
         LLVM_PREFIX={LLVM_PREFIX} cargo install bpf-linker --version {BPF_LINKER_VERSION} --no-default-features --features llvm-22",
        APT_PACKAGES.join(" ")
    )
}

fn apt_install(packages: &[&str]) -> Result<()> {
    step(&format!("apt-get install {}", packages.join(" ")));
    run(
        Command::new("apt-get").args(["update", "-q"]),
        "apt-get update",
        "apt",
    )?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
        "apt",
    )
}

/// Makes sure a BPF toolchain is there, installing what is missing.
pub fn ensure() -> Result<Toolchain> {
    let can_install = is_root() && have_apt();
    let kind = if debian_complete() {
        Kind::Debian {
            rustc: DEBIAN_RUSTC.into(),
        }
    } else if !debian_bpf_core() && nightly_with_rust_src() && bpf_linker_ok() {
        step("using rustup nightly with rust-src (-Z build-std=core)");
        Kind::Nightly
    } else if can_install {
        step("installing Debian's Rust with a prebuilt core for BPF, and LLVM 22 for bpf-linker");
        apt_install(APT_PACKAGES)?;
        if !debian_bpf_core() {
            bail!(
                "apt installed the packages but {DEBIAN_BPF_CORE_DIR} has no libcore; {}",
                manual_steps()
            );
        }
        Kind::Debian {
            rustc: DEBIAN_RUSTC.into(),
        }
    } else {
        bail!(
            "the BPF toolchain is missing and this process cannot install it (needs root and apt); {}",
            manual_steps()
        );
    };

    if !bpf_linker_ok() {
        if !(is_root() || env::var_os("CARGO_HOME").is_some() || env::var_os("HOME").is_some()) {
            bail!("bpf-linker is missing; {}", manual_steps());
        }
        if !Path::new(LLVM_PREFIX).join("lib/libLLVM.so").exists() {
            if !can_install {
                bail!(
                    "bpf-linker is missing and LLVM 22 is not installed; {}",
                    manual_steps()
                );
            }
            apt_install(&[
                "llvm-22-dev",
                "libpolly-22-dev",
                "zlib1g-dev",
                "libzstd-dev",
            ])?;
        }
        step(&format!(
            "building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 2 minutes)"
        ));
        run(
            Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args([
                    "install",
                    "bpf-linker",
                    "--locked",
                    "--version",
                    BPF_LINKER_VERSION,
                ])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", LLVM_PREFIX),
            "cargo install bpf-linker",
            "cargo (rustup)",
        )?;
    }
    step(match kind {
        Kind::Debian { .. } => {
            "BPF toolchain ready: Debian's rustc with a prebuilt core for BPF, bpf-linker"
        }
        Kind::Nightly => "BPF toolchain ready: rustup nightly with rust-src, bpf-linker",
    });
    let cargo = match kind {
        // rustup's cargo drives Debian's rustc (RUSTC=...), as verified.
        Kind::Debian { .. } => {
            env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
        }
        Kind::Nightly => PathBuf::from("cargo"),
    };
    Ok(Toolchain { kind, cargo })
}

/// Tools the integration tests call: ip (iproute2), nft (nftables) and
/// sysctl (procps).
pub fn ensure_test_tools() -> Result<()> {
    ensure_tools(TEST_TOOLS, "the tests")
}

/// Installs with apt the packages of the `(binary, package)` pairs whose
/// binary is not on PATH, then checks that each binary is there; `who`
/// names the caller in the error when apt is not there.
pub fn ensure_tools(tools: &[(&str, &str)], who: &str) -> Result<()> {
    let mut missing: Vec<&str> = tools
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !(is_root() && have_apt()) {
        bail!(
            "{who} need the Debian packages {}; install them (as root: apt-get install {}) and run again",
            missing.join(", "),
            missing.join(" ")
        );
    }
    apt_install(&missing)?;
    for (bin, pkg) in tools {
        require(bin, pkg)?;
    }
    Ok(())
}

/// Everything the xtask commands call: the BPF toolchain, the tools of the
/// tests and of the benches.
pub fn ensure_all() -> Result<Toolchain> {
    let toolchain = ensure()?;
    let mut tools: Vec<(&str, &str)> = Vec::new();
    for t in TEST_TOOLS
        .iter()
        .chain(BENCH_VETH_TOOLS)
        .chain(BENCH_PROBES_TOOLS)
    {
        if !tools.contains(t) {
            tools.push(*t);
        }
    }
    ensure_tools(&tools, "the tests and benches")?;
    Ok(toolchain)
}

/// One thing the xtask commands rely on.
struct Need {
    /// A program name (looked up on PATH) or an absolute path; a path
    /// ending in `*` matches any file with that prefix.
    probe: String,
    /// Where it comes from.
    source: String,
    /// Which command needs it.
    used_by: &'static str,
}

fn present(probe: &str) -> bool {
    if let Some(prefix) = probe.strip_suffix('*') {
        let prefix = Path::new(prefix);
        let (Some(dir), Some(stem)) = (prefix.parent(), prefix.file_name()) else {
            return false;
        };
        return std::fs::read_dir(dir).is_ok_and(|d| {
            d.filter_map(Result::ok).any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&*stem.to_string_lossy())
            })
        });
    }
    which(probe).is_some()
}

fn needs() -> Vec<Need> {
    let deb = |probe: &str, package: &str, used_by| Need {
        probe: probe.to_owned(),
        source: format!("apt: {package}"),
        used_by,
    };
    let mut v = vec![
        deb("apt-get", "apt", "provision"),
        deb(
            DEBIAN_RUSTC,
            "rustc-web",
            "build: compiles the kernel crate",
        ),
        deb(
            &format!("{DEBIAN_BPF_CORE_DIR}/libcore-*"),
            "libstd-rust-web-dev-bpf",
            "build: core for bpfel-unknown-none",
        ),
        deb(
            "/usr/bin/clippy-driver",
            "rust-web-clippy",
            "lint: kernel crate",
        ),
        deb(DEBIAN_CARGO, "cargo-web", "lint: kernel crate"),
        deb(
            &format!("{LLVM_PREFIX}/lib/libLLVM.so"),
            "llvm-22-dev",
            "provision: builds bpf-linker",
        ),
        deb(
            &format!("{LLVM_PREFIX}/lib/libPolly*"),
            "libpolly-22-dev",
            "provision: builds bpf-linker",
        ),
        deb(
            "/usr/include/zlib.h",
            "zlib1g-dev",
            "provision: builds bpf-linker",
        ),
        deb(
            "/usr/include/zstd.h",
            "libzstd-dev",
            "provision: builds bpf-linker",
        ),
        Need {
            probe: cargo_bin_dir()
                .join("bpf-linker")
                .to_string_lossy()
                .into_owned(),
            source: format!("cargo install bpf-linker --version {BPF_LINKER_VERSION}"),
            used_by: "build: links the kernel object",
        },
    ];
    for (tools, used_by) in [
        (TEST_TOOLS, "test"),
        (BENCH_VETH_TOOLS, "bench veth"),
        (BENCH_PROBES_TOOLS, "bench probes"),
    ] {
        for (bin, pkg) in tools {
            if let Some(n) = v.iter_mut().find(|n| n.probe == *bin) {
                n.used_by = if n.used_by == "test" {
                    "test, benches"
                } else {
                    n.used_by
                };
            } else {
                v.push(deb(bin, pkg, used_by));
            }
        }
    }
    v
}

/// Lists everything the xtask commands rely on and whether each is there.
/// Installs nothing. Returns whether all are present.
pub fn check() -> bool {
    let needs = needs();
    let mut missing = 0;
    println!(
        "{:<8} {:<52} {:<44} needed by",
        "status", "looked for", "comes from"
    );
    for n in &needs {
        let ok = present(&n.probe);
        if !ok {
            missing += 1;
        }
        println!(
            "{:<8} {:<52} {:<44} {}",
            if ok { "ok" } else { "MISSING" },
            n.probe,
            n.source,
            n.used_by
        );
    }
    if missing == 0 {
        println!("all {} present", needs.len());
    } else {
        println!(
            "{missing} of {} missing: `cargo xtask provision` (as root, with apt) installs them",
            needs.len()
        );
    }
    missing == 0
}
