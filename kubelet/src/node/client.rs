//! The API client of the node side, built from a kubeconfig file.
//!
//! Owns turning `--kubeconfig` into a `kube::Client` (its current context, its CA, its
//! credentials). Never falls back to in-cluster configuration or `~/.kube/config`: the node agent
//! talks to exactly the API the operator named.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::NodeError;

/// A client for the current context of the kubeconfig at `path`.
pub(super) async fn from_kubeconfig(path: &Path) -> Result<kube::Client, NodeError> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| NodeError::Kubeconfig {
        path: path.to_owned(),
        source,
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| NodeError::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    kube::Client::try_from(config).map_err(|source| NodeError::Client {
        path: path.to_owned(),
        source,
    })
}
