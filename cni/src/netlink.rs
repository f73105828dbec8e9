//! The netlink operations of Skiff's routed pod network: one veth per pod, no bridge.
//!
//! Owns creating, verifying and deleting a pod's veth pair and everything that hangs off it, the
//! model of Calico's routed dataplane:
//!
//! - in the pod's network namespace: `ifname` (usually `eth0`) with `<pod address>/32`, a route
//!   `169.254.1.1 dev eth0 scope link` and `default via 169.254.1.1 dev eth0`;
//! - in the namespace the plugin runs in (the node): the host side
//!   [`host_interface_name`]`(container_id, ifname)`, up, with `proxy_arp=1`, `proxy_delay=0` and
//!   `forwarding=1`, and a route `<pod address>/32 dev <host veth> scope link` marked with
//!   [`ROUTE_PROTOCOL`].
//!
//! The pod's ARP request for [`GATEWAY`] is answered by proxy ARP on the host veth with the host
//! veth's MAC. The kernel answers a proxy ARP request only if the node has a route to the
//! requested address through another interface, so **the node needs a route covering
//! 169.254.1.1** — its default route does. Pod-to-pod traffic also needs `ip_forward=1` on the
//! node; that, the node's default route and the cross-node routes are not this module's
//! ([`crate::routes`] and the node's own setup own them).
//!
//! Must not touch any interface, route or sysctl it did not create: on the node it only ever
//! names `host_ifname` (names starting with `skf` are Skiff's), in the pod only `ifname` and a
//! temporary `skp…` name. All work goes through rtnetlink (no `ip` subprocesses).
//!
//! Threads: every public function is synchronous and runs its work on a dedicated thread with a
//! current-thread tokio runtime (so callers may or may not be inside a runtime themselves). That
//! thread starts in the calling thread's network namespace, which is therefore "the node". Work
//! inside a pod's namespace uses a netlink socket opened by a short-lived thread that entered it;
//! the caller's thread never changes namespace. Sysctls are written through `/proc/sys` by the
//! worker thread, so they land in the node's namespace.

mod check;
mod link;
mod name;
mod route;
mod runtime;
mod setup;
mod sysctl;

use std::{net::Ipv4Addr, path::PathBuf};

use tracing::info_span;

pub use name::{host_interface_name, is_host_interface_name};

/// The pods' default gateway: a link-local address no interface has. The host veth answers ARP
/// for it (proxy ARP), so every pod reaches the node through the same gateway address.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The routing protocol number (`rtm_protocol`) of every route Skiff's CNI creates, on the node
/// and in pods: `ip route show proto 83` lists them. Not one of the kernel's or iproute2's
/// well-known numbers (0–18, 42, 99, 186–192; Calico's Felix uses 80). Add `83 skiff` to
/// `/etc/iproute2/rt_protos.d/skiff.conf` to see it by name.
pub const ROUTE_PROTOCOL: u8 = 83;

/// A pod's attachment to the routed network: what to create, or what to expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    /// The pod's network namespace (`CNI_NETNS`), e.g. `/var/run/netns/cni-…`.
    pub netns: PathBuf,
    /// The interface name inside the pod (`CNI_IFNAME`), e.g. `eth0`.
    pub ifname: String,
    /// The host-side veth's name in the node's namespace; normally
    /// [`host_interface_name`]`(container_id, ifname)`.
    pub host_ifname: String,
    /// The pod's address, assigned as a /32.
    pub address: Ipv4Addr,
    /// The MTU of both ends of the veth.
    pub mtu: u32,
}

/// What [`add_pod_interface`] created, for the CNI result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterfaceCreated {
    /// The host veth's MAC, `aa:bb:cc:dd:ee:ff`.
    pub host_mac: String,
    /// The pod interface's MAC, `aa:bb:cc:dd:ee:ff`.
    pub pod_mac: String,
    /// The pod interface's index inside the pod's namespace.
    pub pod_ifindex: u32,
}

/// Why a netlink operation failed. Each variant names the object and the namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The pod's network namespace path does not exist (or is empty).
    #[error("network namespace {} does not exist", .path.display())]
    NetnsNotFound { path: PathBuf },
    /// The pod already has an interface with the requested name (CNI: "MUST return an error").
    #[error("interface {ifname} already exists in network namespace {}", .netns.display())]
    InterfaceExists { ifname: String, netns: PathBuf },
    /// CHECK found the pod's network different from what ADD creates; `what` names the first
    /// difference.
    #[error("the pod's network differs from what ADD created: {what}")]
    Mismatch { what: String },
    /// An interface ADD had just created was gone when ADD went on to configure it.
    #[error(
        "interface {ifname} disappeared from {place} while it was being set up; another process removed it"
    )]
    Vanished { ifname: String, place: String },
    /// The kernel refused a netlink request; `operation` says what was asked and where, e.g.
    /// `add route 10.244.1.5/32 dev skf… scope link proto 83 in the node's network namespace`.
    #[error("{operation}: {source}")]
    Netlink {
        operation: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// A system call outside netlink failed: opening a namespace, a sysctl file, a thread.
    #[error("{operation}: {source}")]
    Io {
        operation: String,
        #[source]
        source: std::io::Error,
    },
}

/// Creates the pod's veth pair with everything described in the module documentation, and
/// returns the MACs for the CNI result.
///
/// Idempotent against the leftovers of an earlier ADD for the same attachment that was killed: an
/// existing interface named `host_ifname` is deleted first, which removes its peer and route. If
/// `ifname` then still exists in the pod's namespace, that is [`NetlinkError::InterfaceExists`]
/// and nothing is created. A missing namespace is [`NetlinkError::NetnsNotFound`]. Any failure
/// after the veth was created deletes it again, so a failed ADD leaves nothing behind.
///
/// The pod side is created directly inside the pod's namespace under a temporary name and renamed
/// to `ifname` there, so it never appears in the node's namespace and cannot collide there.
pub fn add_pod_interface(pod: &PodInterface) -> Result<PodInterfaceCreated, NetlinkError> {
    let span = info_span!(
        "add_pod_interface",
        host_interface = %pod.host_ifname,
        ifname = %pod.ifname,
        netns = %pod.netns.display(),
        address = %pod.address,
    );
    runtime::run_on_worker(span, || setup::add(pod))
}

/// Deletes the host veth `host_ifname`; the kernel removes its peer in the pod and the host route
/// with it. Needs no pod namespace, so it works after the pod's namespace is gone. `Ok(false)`
/// when there was no such interface (DEL is idempotent).
pub fn delete_pod_interface(host_ifname: &str) -> Result<bool, NetlinkError> {
    let span = info_span!("delete_pod_interface", host_interface = %host_ifname);
    runtime::run_on_worker(span, || setup::delete(host_ifname))
}

/// The names of the host veths in the node's namespace that have the shape of
/// [`host_interface_name`]s: what GC compares with the attachments still in use.
pub fn host_interfaces() -> Result<Vec<String>, NetlinkError> {
    let span = info_span!("host_interfaces");
    runtime::run_on_worker(span, setup::host_interfaces)
}

/// Verifies what [`add_pod_interface`] creates: the host veth exists, is up, has the MTU, its
/// sysctls and the host route; `ifname` exists in the pod, is the host veth's peer, is up, has
/// the MTU, `address/32`, the gateway route and the default route. The first difference is a
/// [`NetlinkError::Mismatch`] naming it. Routes are compared by destination, gateway and device
/// only, so later plugins may adjust their other attributes. Only reads; repairs nothing.
pub fn check_pod_interface(pod: &PodInterface) -> Result<(), NetlinkError> {
    let span = info_span!(
        "check_pod_interface",
        host_interface = %pod.host_ifname,
        ifname = %pod.ifname,
        netns = %pod.netns.display(),
        address = %pod.address,
    );
    runtime::run_on_worker(span, || check::check(pod))
}
