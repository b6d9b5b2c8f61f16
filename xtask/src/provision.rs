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
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
const TEST_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("sysctl", "procps"),
];

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

fn run(cmd: &mut Command, what: &str) -> Result<()> {
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
    )?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
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
/// binary is not on PATH; `who` names the caller in the error when apt is
/// not there.
pub fn ensure_tools(tools: &[(&str, &str)], who: &str) -> Result<()> {
    let path = env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(bin, _)| !env::split_paths(&path).any(|dir| dir.join(bin).is_file()))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !have_apt() {
        bail!(
            "{who} need {}; install them and run again",
            missing.join(", ")
        );
    }
    apt_install(&missing)
}
