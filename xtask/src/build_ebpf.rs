//! `cargo xtask build-ebpf`: builds the BPF objects of proxy-ebpf on their own.
//!
//! The same build runs inside `cargo build` through proxy-user's build.rs (aya-build); this entry
//! point exists to inspect the objects (`bpftool`, `llvm-objdump`) without building skiff-proxy.

use std::path::Path;

use crate::command;

pub const BPF_TARGET: &str = "bpfel-unknown-none";

/// The flags aya-build passes, so both builds produce the same objects.
pub fn bpf_rustflags() -> String {
    [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
    ]
    .join("\x1f")
}

pub fn run(root: &Path) -> anyhow::Result<()> {
    let target_dir = root.join("target/bpf");
    command::run(
        std::process::Command::new("rustup")
            .current_dir(root)
            .args([
                "run",
                "nightly",
                "cargo",
                "build",
                "--package",
                "proxy-ebpf",
                "--bins",
                "--release",
            ])
            .args([
                "--target",
                BPF_TARGET,
                "-Z",
                "build-std=core",
                "--target-dir",
            ])
            .arg(&target_dir)
            .env("CARGO_ENCODED_RUSTFLAGS", bpf_rustflags())
            .env_remove("RUSTC")
            .env_remove("RUSTUP_TOOLCHAIN"),
    )?;
    let objects = target_dir.join(BPF_TARGET).join("release");
    for program in ["tc_pod", "xdp_uplink"] {
        println!("{}", objects.join(program).display());
    }
    Ok(())
}
