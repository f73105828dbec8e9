//! Builds the BPF programs of `proxy-ebpf` for `bpfel-unknown-none` with the nightly toolchain
//! (`-Z build-std=core`) and bpf-linker, and leaves one object per program in `OUT_DIR`, where
//! `src/programs.rs` embeds them. `cargo xtask setup` installs what this needs.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root_dir = std::path::Path::new(&manifest_dir).join("../proxy-ebpf");
    let root_dir = root_dir
        .to_str()
        .context("the proxy-ebpf path is not UTF-8")?;
    println!("cargo:rerun-if-changed={manifest_dir}/../proxy-ebpf/common");
    println!("cargo:rerun-if-changed={manifest_dir}/../.tools/bin/bpf-linker");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "proxy-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context(
        "building the BPF programs failed; `cargo xtask setup` installs the nightly rust-src \
         component and bpf-linker they need",
    )
}
