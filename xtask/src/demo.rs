//! `cargo xtask demo`: Skiff's main job until the node stack exists — run setup, then start a
//! busybox pod through CRI on a private containerd and print its IP and log line.

use std::path::Path;

use crate::{command, setup};

pub fn run(root: &Path) -> anyhow::Result<()> {
    setup::run(root)?;
    command::run(command::cargo(root).args([
        "run",
        "--quiet",
        "--package",
        "skiff-tests",
        "--example",
        "cri-demo",
    ]))
}
