//! Skiff's shared test harness.
//!
//! Owns everything a privileged test needs to build a topology and tear it down again, even when
//! the test panics: network namespaces ([`netns`]), veth pairs ([`veth`]), a private containerd per
//! test ([`containerd`]), local OCI images built from Debian's static busybox ([`oci_image`]), a
//! CRI client over containerd's socket ([`cri`]), and skiff-control with an HTTPS client for
//! tests of other packages ([`control`]; binaries are found by [`workspace_binary`]).
//! [`privileged`] decides whether privileged tests may run. It never touches the machine's own
//! interfaces, routes, firewall or system containerd: every object it creates lives in
//! namespaces, directories and sockets it created, under unique names.

pub mod bpffs;
pub mod containerd;
pub mod control;
pub mod cri;
pub mod echo;
pub mod etcd;
pub mod forward;
pub mod http;
pub mod netns;
pub mod oci_image;
pub mod packet;
pub mod privileged;
pub mod process;
pub mod topology;
pub mod veth;

/// A name unique to this process and call: `<prefix>-<pid>-<n>`, used for namespaces, interfaces'
/// peers and temporary directories. Stale objects of dead test processes are recognised by the pid.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// The path of a binary of this workspace (`skiff-control`, `skiff-kubelet`, `skiff-cni`, ...) in
/// the target directory the running test was built into (`target/debug/<name>`). Cargo gives a
/// test only its own package's binaries (`CARGO_BIN_EXE_*`); cross-package tests use this.
/// Panics naming the command that builds it when it is missing (`cargo xtask test` builds every
/// binary before running tests).
#[track_caller]
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let test_binary = std::env::current_exe().expect("the running test's path");
    // <target>/<profile>/deps/<test> -> <target>/<profile>/<name>
    let profile_dir = test_binary
        .parent()
        .and_then(std::path::Path::parent)
        .expect("tests run from <target>/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} does not exist: build it first with `cargo build --bins --workspace` \
         (`cargo xtask test` does)",
        path.display()
    );
    path
}

/// Whether a process with this pid exists.
pub(crate) fn process_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a harness name `<prefix>-<pid>-<n>` (see [`unique_name`]).
pub(crate) fn owner_pid(name: &str) -> Option<i32> {
    let mut parts = name.rsplit('-');
    let _n = parts.next()?;
    parts.next()?.parse().ok()
}

/// Entries of `dir` named `<prefix>-...-<pid>-<n>` whose owning process no longer exists: what a
/// killed test process left behind. Returns (name, path) pairs.
pub(crate) fn abandoned_entries(dir: &str, prefix: &str) -> Vec<(String, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            )
        })
        .filter(|(name, _)| name.starts_with(&format!("{prefix}-")))
        .filter(|(name, _)| owner_pid(name).is_some_and(|pid| !process_alive(pid)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_is_read_from_the_second_to_last_field() {
        assert_eq!(owner_pid("sk-veth-a-4242-7"), Some(4242));
        assert_eq!(owner_pid("sk-x-1-0"), Some(1));
        assert_eq!(owner_pid("cni-1234"), None);
    }

    #[test]
    fn unique_names_carry_this_process_as_owner() {
        let name = unique_name("sk-probe");
        assert_eq!(owner_pid(&name), Some(std::process::id() as i32));
        assert_ne!(name, unique_name("sk-probe"));
    }
}
