//! skiff-proxy: the user side of Skiff's eBPF service dataplane.
//!
//! Today it owns the embedded BPF objects ([`programs`]), attaching them to interfaces
//! ([`attach`]) and reading their statistics ([`stats`]). The service translation and map sync
//! (issue #3) will live beside these modules; none of them knows about Kubernetes.

pub mod attach;
pub mod daemon;
pub mod healthcheck;
pub mod links;
pub mod maglev;
pub mod maps;
pub mod metrics;
pub mod programs;
pub mod source;
pub mod stats;
pub mod status;
pub mod sync;
pub mod translate;
pub mod uplink;
