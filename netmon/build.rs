//! Embeds the XDP object built by `cargo xtask build` (passed in
//! `NETMON_EBPF_OBJ`). Without it, an empty object is embedded: the binary
//! still builds and its probers work, and the monitor says how to get the
//! real thing. This keeps plain `cargo build`/`cargo test` free of the BPF
//! toolchain.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rerun-if-env-changed=NETMON_EBPF_OBJ");
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("netmon.bpf.o");
    match env::var_os("NETMON_EBPF_OBJ") {
        Some(path) if !path.is_empty() => {
            println!("cargo::rerun-if-changed={}", path.to_string_lossy());
            fs::copy(&path, &out).unwrap_or_else(|e| {
                panic!(
                    "cannot copy the eBPF object {}: {e}",
                    path.to_string_lossy()
                )
            });
        }
        _ => fs::write(&out, b"").expect("cannot write to OUT_DIR"),
    }
}
