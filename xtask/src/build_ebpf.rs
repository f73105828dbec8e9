//! `cargo xtask build-ebpf`: builds the BPF objects of proxy-ebpf on their own.
//!
//! The same build runs inside `cargo build` through proxy-user's build.rs (aya-build); this entry
//! point exists to inspect the objects (`bpftool`, `llvm-objdump`) without building skiff-proxy.
//! Owns how the nightly toolchain is invoked for the BPF target, which `cargo xtask test` reuses
//! for clippy.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::command;

pub const BPF_TARGET: &str = "bpfel-unknown-none";
const PROGRAMS: [&str; 3] = ["tc_pod", "sock", "xdp_uplink"];

/// Where these builds put their artifacts (apart from the host build's).
pub fn bpf_target_dir(root: &Path) -> PathBuf {
    root.join("target/bpf")
}

/// `rustup run nightly cargo <subcommand> --package proxy-ebpf --release` for the BPF target,
/// with `-Z build-std=core` and the flags aya-build passes, so both builds produce the same
/// objects.
pub fn nightly_bpf_cargo(root: &Path, subcommand: &str) -> Command {
    let mut cargo = Command::new("rustup");
    cargo
        .current_dir(root)
        .args([
            "run",
            "nightly",
            "cargo",
            subcommand,
            "--package",
            "proxy-ebpf",
            "--release",
        ])
        .args([
            "--target",
            BPF_TARGET,
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(bpf_target_dir(root))
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                "--cfg=bpf_target_arch=\"x86_64\"",
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
            ]
            .join("\x1f"),
        )
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
    cargo
}

pub fn run(root: &Path) -> anyhow::Result<()> {
    command::run(nightly_bpf_cargo(root, "build").arg("--bins"))?;
    let objects = bpf_target_dir(root).join(BPF_TARGET).join("release");
    for program in PROGRAMS {
        println!("{}", objects.join(program).display());
    }
    Ok(())
}
