//! skiff-control's library: the Kubernetes API server (TLS, authentication, the resource API on
//! a [`skiff_store::Store`]), its PKI and the admin kubeconfig. The `skiff-control` binary wires
//! these together; tests and benchmarks use them directly.

pub mod api;
pub mod auth;
pub mod kubeconfig;
pub mod kubelet_client;
pub mod pki;
pub mod server;
