//! The per-interface sysctls of a pod's host-side veth.
//!
//! Owns which settings the routed model needs on the host veth and writing or verifying them
//! through `/proc/sys`. Files under `/proc/sys/net` belong to the network namespace of the thread
//! that opens them, so these functions must run on the worker thread (in the node's namespace);
//! they never touch the namespace-wide (`all`, `default`) settings or `ip_forward`, which are the
//! node's to set.

use std::path::PathBuf;

use super::NetlinkError;

/// The settings that make the host veth the pod's router:
/// - `proxy_arp=1`: the node answers the pod's ARP for the gateway 169.254.1.1 with the host
///   veth's MAC (the node must have a route covering 169.254.1.1, such as its default route, or
///   proxy ARP stays silent);
/// - `proxy_delay=0`: answer at once instead of after a random delay of up to 0.8 s;
/// - `forwarding=1`: route what the pod sends (also needed for proxy ARP's route lookup).
const HOST_INTERFACE_SYSCTLS: [(&str, &str, &str); 3] = [
    ("ipv4/conf", "proxy_arp", "1"),
    ("ipv4/neigh", "proxy_delay", "0"),
    ("ipv4/conf", "forwarding", "1"),
];

/// `/proc/sys/net/<family>/<interface>/<name>` and the value Skiff wants there.
fn settings(interface: &str) -> impl Iterator<Item = (PathBuf, &'static str)> + '_ {
    HOST_INTERFACE_SYSCTLS
        .iter()
        .map(move |(directory, name, value)| {
            (
                PathBuf::from(format!("/proc/sys/net/{directory}/{interface}/{name}")),
                *value,
            )
        })
}

/// Writes the host veth's settings in the calling thread's namespace.
pub(super) fn write_host_interface_sysctls(interface: &str) -> Result<(), NetlinkError> {
    for (path, value) in settings(interface) {
        std::fs::write(&path, value).map_err(|source| NetlinkError::Io {
            operation: format!("write {value} to {}", path.display()),
            source,
        })?;
    }
    Ok(())
}

/// Verifies the host veth's settings; the first one that differs is a
/// [`NetlinkError::Mismatch`].
pub(super) fn check_host_interface_sysctls(interface: &str) -> Result<(), NetlinkError> {
    for (path, value) in settings(interface) {
        let found = std::fs::read_to_string(&path).map_err(|source| NetlinkError::Io {
            operation: format!("read {}", path.display()),
            source,
        })?;
        if found.trim() != value {
            return Err(NetlinkError::Mismatch {
                what: format!("{} is {} instead of {value}", path.display(), found.trim()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_the_interfaces_own_files() {
        let paths: Vec<_> = settings("skf0123456789ab")
            .map(|(path, value)| format!("{}={value}", path.display()))
            .collect();
        assert_eq!(
            paths,
            [
                "/proc/sys/net/ipv4/conf/skf0123456789ab/proxy_arp=1",
                "/proc/sys/net/ipv4/neigh/skf0123456789ab/proxy_delay=0",
                "/proc/sys/net/ipv4/conf/skf0123456789ab/forwarding=1",
            ]
        );
    }
}
