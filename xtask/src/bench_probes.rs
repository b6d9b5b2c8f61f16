//! `cargo xtask bench probes`.

use std::path::Path;

use anyhow::{Result, bail};

pub fn run(_root: &Path, _netmon: &Path) -> Result<()> {
    bail!("cargo xtask bench probes is not written yet")
}
