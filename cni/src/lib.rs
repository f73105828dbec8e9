//! skiff-cni's library: the CNI protocol (configuration, environment, results and errors), the
//! node-local IPAM, the netlink operations of the routed pod network, and the cross-node routes.
//! The `skiff-cni` binary is the thin command dispatcher over these.

pub mod install;
pub mod ipam;
pub mod netlink;
pub mod plugin;
pub mod routes;
pub mod spec;
