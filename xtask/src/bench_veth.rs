//! `cargo xtask bench veth`.

use std::path::Path;

use anyhow::{Result, bail};

pub fn run(_root: &Path, _input: &Path) -> Result<()> {
    bail!("cargo xtask bench veth is not written yet")
}
