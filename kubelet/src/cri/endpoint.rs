//! Where the container runtime listens, and the gRPC channel to it.
//!
//! Owns the parsing of the kubelet's `--container-runtime-endpoint` syntax (`unix:///path`, and a
//! bare absolute path as upstream still accepts) and the opening of one tonic [`Channel`] over that
//! unix socket. Knows nothing about CRI messages; never retries a failed first connection (the
//! caller decides whether to wait for the runtime). Once open, the channel reconnects on its own
//! when the runtime restarts.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tonic::transport::{Channel, Endpoint};

use super::error::{CriError, error_chain};

/// The unix socket `endpoint` names: `unix:///run/containerd/containerd.sock` (also `unix:/…`)
/// or a bare absolute path. Other schemes (`tcp://`, `npipe://`) are refused: the kubelet only
/// talks to a local runtime over a unix socket.
pub(crate) fn socket_path(endpoint: &str) -> Result<PathBuf, CriError> {
    let invalid = |reason| CriError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let path = if let Some(rest) = endpoint.strip_prefix("unix:") {
        // `unix:///p` (empty authority) and `unix:/p` both name `/p`.
        rest.strip_prefix("//").unwrap_or(rest)
    } else if endpoint.contains("://") {
        return Err(invalid("only unix sockets are supported"));
    } else {
        endpoint
    };
    if path.is_empty() {
        return Err(invalid("it names no socket"));
    }
    if !path.starts_with('/') {
        return Err(invalid("the socket path must be absolute"));
    }
    Ok(PathBuf::from(path))
}

/// Opens a channel to the runtime on `socket`, giving up after `timeout`.
pub(crate) async fn connect(
    endpoint: &str,
    socket: &Path,
    timeout: Duration,
) -> Result<Channel, CriError> {
    let connect_error = |reason: String| CriError::Connect {
        endpoint: endpoint.to_owned(),
        socket: socket.to_owned(),
        reason,
    };
    let path = socket.to_owned();
    // The URI is a placeholder: the connector ignores it and dials the socket (the authority
    // becomes `localhost`, as in containerd's own Go client).
    let placeholder = Endpoint::from_static("http://localhost");
    let connecting = placeholder.connect_with_connector(tower::service_fn(move |_| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    }));
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(error)) => Err(connect_error(error_chain(&error))),
        Err(_elapsed) => Err(connect_error(format!("no answer within {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_uris_and_bare_paths_name_the_socket() {
        for endpoint in [
            "unix:///run/containerd/containerd.sock",
            "unix:/run/containerd/containerd.sock",
            "/run/containerd/containerd.sock",
        ] {
            assert_eq!(
                socket_path(endpoint).ok(),
                Some(PathBuf::from("/run/containerd/containerd.sock")),
                "{endpoint}"
            );
        }
    }

    #[test]
    fn other_schemes_relative_and_empty_paths_are_refused() {
        for (endpoint, reason) in [
            ("tcp://127.0.0.1:2375", "only unix sockets are supported"),
            (
                "npipe:////./pipe/containerd",
                "only unix sockets are supported",
            ),
            (
                "unix://run/containerd.sock",
                "the socket path must be absolute",
            ),
            ("containerd.sock", "the socket path must be absolute"),
            ("unix://", "it names no socket"),
            ("", "it names no socket"),
        ] {
            match socket_path(endpoint) {
                Err(CriError::InvalidEndpoint { reason: got, .. }) => {
                    assert_eq!(got, reason, "{endpoint}");
                }
                other => panic!("{endpoint}: expected InvalidEndpoint, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn connecting_to_a_missing_socket_names_it() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("missing.sock");
        let endpoint = format!("unix://{}", socket.display());
        let error = connect(&endpoint, &socket, Duration::from_secs(5))
            .await
            .expect_err("nothing listens there");
        let text = error.to_string();
        assert!(text.contains(&socket.display().to_string()), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");
    }
}
