//! skiff-kubelet's library: the node agent's parts, each with one job. The `skiff-kubelet` binary
//! wires them together.

pub mod api_client;
pub mod cri;
pub mod host;
pub mod image_import;
pub mod node;
pub mod pod;
pub mod server;
pub mod worker;
