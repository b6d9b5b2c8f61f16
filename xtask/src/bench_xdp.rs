//! `cargo xtask bench xdp`.

use std::path::Path;

use anyhow::{Result, bail};

pub fn run(_root: &Path, _input: &Path) -> Result<()> {
    bail!("cargo xtask bench xdp is not written yet")
}
