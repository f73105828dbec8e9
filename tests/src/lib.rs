//! Skiff's shared test harness.
//!
//! Owns everything a privileged test needs to build a topology and tear it down again, even when
//! the test panics: network namespaces ([`netns`]), veth pairs ([`veth`]), a private containerd per
//! test ([`containerd`]), local OCI images built from Debian's static busybox ([`oci_image`]) and a
//! CRI client over containerd's socket ([`cri`]). [`privileged`] decides whether privileged tests
//! may run. It never touches the machine's own interfaces, routes, firewall or system containerd:
//! every object it creates lives in namespaces, directories and sockets it created, under unique
//! names.

pub mod containerd;
pub mod cri;
pub mod netns;
pub mod oci_image;
pub mod packet;
pub mod privileged;
pub mod veth;

/// A name unique to this process and call: `<prefix>-<pid>-<n>`, used for namespaces, interfaces'
/// peers and temporary directories. Stale objects of dead test processes are recognised by the pid.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}
