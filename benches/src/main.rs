//! netmon's benchmarks. `cargo xtask bench NAME` provisions the tools,
//! builds netmon and the kernel objects, and runs this binary as root with
//! their paths; each bench prints a table, writes `NAME.json` to
//! `--out-dir` and says whether its targets were met.

mod flows;
mod probes;
mod util;
mod veth;
mod xdp;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    /// Per-packet cost of the XDP program under BPF_PROG_TEST_RUN, in ns
    /// above a bare XDP_PASS program.
    Xdp,
    /// Per-packet cost of the XDP program with 1,000 to 1,000,000 active
    /// flows sending round robin, in ns above the floor; then netmon's
    /// userspace at those flow counts and 1,000,000 packets/s (CPU,
    /// memory, every flow's count).
    Flows,
    /// Packets pushed across a veth pair with and without netmon attached.
    Veth,
    /// netmon sweep and scan side by side with fping and nmap.
    Probes,
}

#[derive(Parser)]
#[command(
    name = "netmon-benches",
    about = "netmon's benchmarks (use `cargo xtask bench`)"
)]
struct Cli {
    #[arg(value_enum)]
    which: Which,
    /// The shipped kernel object (netmon's XDP program).
    #[arg(long)]
    object: PathBuf,
    /// The bench object (floor, generator, new-flow driver).
    #[arg(long)]
    bench_object: PathBuf,
    /// The netmon binary (veth, probes, flows).
    #[arg(long)]
    netmon: PathBuf,
    /// fping (probes).
    #[arg(long, default_value = "/usr/bin/fping")]
    fping: PathBuf,
    /// nmap (probes).
    #[arg(long, default_value = "/usr/bin/nmap")]
    nmap: PathBuf,
    /// Where the JSON results go.
    #[arg(long)]
    out_dir: PathBuf,
}

/// What every bench gets.
pub struct Ctx {
    pub object: PathBuf,
    pub bench_object: PathBuf,
    pub netmon: PathBuf,
    pub fping: PathBuf,
    pub nmap: PathBuf,
    pub out_dir: PathBuf,
}

/// Prints one step of a bench, so a slow step is never silent.
pub fn step(what: &str) {
    eprintln!("bench: {what}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = Ctx {
        object: cli.object,
        bench_object: cli.bench_object,
        netmon: cli.netmon,
        fping: cli.fping,
        nmap: cli.nmap,
        out_dir: cli.out_dir,
    };
    let result = match cli.which {
        Which::Xdp => xdp::run(&ctx),
        Which::Flows => flows::run(&ctx),
        Which::Veth => veth::run(&ctx),
        Which::Probes => probes::run(&ctx),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
