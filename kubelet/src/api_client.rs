//! The API client of the node agent, built from a kubeconfig file.
//!
//! Owns turning `--kubeconfig` into a `kube::Client` (its current context, its CA, its
//! credentials), for the node side and the pod side alike. Never falls back to in-cluster
//! configuration or `~/.kube/config`: the node agent talks to exactly the API the operator named.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Why no client could be built from a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum ApiClientError {
    /// The kubeconfig could not be read or understood.
    #[error("loading kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The kubeconfig file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No API client could be built from the kubeconfig.
    #[error("building an API client from {path}: {source}")]
    Client {
        /// The kubeconfig file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

/// A client for the current context of the kubeconfig at `path`.
pub async fn from_kubeconfig(path: &Path) -> Result<kube::Client, ApiClientError> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|source| ApiClientError::Kubeconfig {
        path: path.to_owned(),
        source,
    })?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|source| ApiClientError::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    kube::Client::try_from(config).map_err(|source| ApiClientError::Client {
        path: path.to_owned(),
        source,
    })
}
