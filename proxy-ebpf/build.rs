//! Rebuilds the BPF objects when the project's BPF linker changes (a new bpf-linker means new
//! bytes). `cargo xtask setup` installs it into `.tools/bin`, which `.cargo/config.toml` names.
fn main() {
    println!("cargo:rerun-if-changed=../.tools/bin/bpf-linker");
}
