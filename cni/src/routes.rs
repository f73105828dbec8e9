//! Cross-node pod routes: every node routes to every other node's podCIDR, either directly over a
//! shared L2 segment (`direct`, flannel's host-gw) or through one VXLAN device (`vxlan`).
//!
//! Owns, in the node's network namespace: the IPv4 routes in the main table whose `protocol` is
//! [`ROUTE_PROTOCOL`], and the VXLAN device [`VXLAN_DEVICE`] with its address, permanent
//! neighbours and forwarding-database entries. Never changes, replaces or deletes a route of
//! another protocol (a conflicting route is reported instead), any other interface, address or
//! neighbour, or any other namespace; it does no IPAM and never creates pod interfaces.
//!
//! The pipeline is pure until the last step:
//! [`nodes::parse_node_list`] (the `kubectl get nodes -o json` file) →
//! [`desired::desired_state`] (routes, VXLAN device, neighbours, FDB) →
//! [`diff::plan`] (ordered changes against what [`kernel::Kernel::observe`] read) →
//! [`kernel::Kernel::apply`] (netlink). [`run_node_routes`] is the node-side loop around it.

#![warn(missing_docs)]

pub mod desired;
pub mod diff;
pub mod kernel;
mod node_routes;
pub mod nodes;

use std::path::PathBuf;

pub use desired::{
    DEFAULT_VXLAN_PORT, DEFAULT_VXLAN_VNI, MacAddress, ROUTE_PROTOCOL, RoutingMode, VXLAN_DEVICE,
};
pub use node_routes::{
    DEFAULT_RESYNC_INTERVAL, NodeRoutesOptions, SyncReport, parse_duration, run_node_routes,
    run_node_routes_until, sync_node_routes,
};

/// Why the node routes could not be read, computed or applied.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    /// The nodes file could not be read at all.
    #[error("reading the nodes file {path}: {source}")]
    ReadNodesFile {
        /// `--nodes-file`.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The nodes file is not a node list; nothing was changed.
    #[error("the nodes file {path} is malformed, so no route was changed: {problem}")]
    MalformedNodesFile {
        /// `--nodes-file`.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        problem: nodes::NodeListError,
    },
    /// The node list does not allow computing this node's routes; nothing was changed.
    #[error("the nodes file {path} cannot be used, so no route was changed: {problem}")]
    UnusableNodeList {
        /// `--nodes-file`.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        problem: desired::DesiredStateError,
    },
    /// The options make no sense (reported before anything is touched).
    #[error("invalid node-routes options: {problem}")]
    InvalidOptions {
        /// Which option, and what is wrong with it.
        problem: String,
    },
    /// The observed state does not allow a plan (e.g. the VXLAN device has no underlay).
    #[error(transparent)]
    Plan(#[from] diff::PlanError),
    /// A link named [`VXLAN_DEVICE`] exists but is not a VXLAN device: it is not ours.
    #[error(
        "a link named {VXLAN_DEVICE} exists but is a {kind} device, not a VXLAN device; it is \
         left alone: remove or rename it"
    )]
    ForeignDevice {
        /// The link's kind (`dummy`, `bridge`, ...).
        kind: String,
    },
    /// Reading the kernel's state failed.
    #[error("netlink: {action}: {source}")]
    Netlink {
        /// What was being read.
        action: String,
        /// The netlink error.
        #[source]
        source: rtnetlink::Error,
    },
    /// The netlink socket or the async runtime could not be set up.
    #[error("{action}: {source}")]
    Setup {
        /// What was being set up.
        action: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Some changes failed or conflicted; the others were applied.
    #[error(
        "{} of the route changes could not be made ({applied} were):\n  {}",
        failures.len(),
        failures.join("\n  ")
    )]
    Apply {
        /// How many changes were made.
        applied: usize,
        /// Each failed or conflicting change, with the reason.
        failures: Vec<String>,
    },
}
