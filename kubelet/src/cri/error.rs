//! What can go wrong talking to the container runtime.
//!
//! Owns [`CriError`] and the mapping of a gRPC [`tonic::Status`] onto it. Every variant names the
//! CRI call and the object it was about, so a log line or a pod event says what failed where.
//! Does not decide what a caller does about an error; [`CriError::is_not_found`] and
//! [`CriError::is_timeout`] only classify it.

use std::{path::PathBuf, time::Duration};

/// A failed CRI call or connection.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The `--container-runtime-endpoint` value cannot name a unix socket.
    #[error(
        "container runtime endpoint {endpoint:?} is invalid: {reason} \
         (expected unix:///path/to/socket or an absolute socket path, \
         e.g. unix:///run/containerd/containerd.sock)"
    )]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Nothing answered on the socket.
    #[error(
        "cannot connect to the container runtime at {socket} (endpoint {endpoint}): {reason}; \
         is containerd running, and is this its socket?"
    )]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// The unix socket it names.
        socket: PathBuf,
        /// The failure, with its causes.
        reason: String,
    },
    /// The socket answers, but not with CRI `runtime.v1`.
    #[error(
        "the container runtime at {endpoint} does not serve CRI runtime.v1 ({call} answered \
         Unimplemented: {message}); is containerd's CRI plugin enabled (not listed in \
         disabled_plugins of its config.toml)?"
    )]
    NotCri {
        /// The endpoint as given.
        endpoint: String,
        /// The call that was refused.
        call: &'static str,
        /// The runtime's message.
        message: String,
    },
    /// The runtime answered the call with an error.
    #[error("CRI {call} for {object} failed: {code:?}: {message}")]
    Call {
        /// The CRI call, e.g. `CreateContainer`.
        call: &'static str,
        /// What the call was about, e.g. `container 3f2a…`.
        object: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The runtime's message.
        message: String,
    },
    /// The call did not finish within its deadline (or the runtime reported that its own
    /// deadline, such as an ExecSync timeout, passed).
    #[error("CRI {call} for {object} did not finish within {after:?}")]
    Timeout {
        /// The CRI call.
        call: &'static str,
        /// What the call was about.
        object: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// The runtime answered without a field the call must return.
    #[error("CRI {call} for {object} answered without {field}")]
    MissingField {
        /// The CRI call.
        call: &'static str,
        /// What the call was about.
        object: String,
        /// The missing field, as the CRI API names it.
        field: &'static str,
    },
}

impl CriError {
    /// Whether the runtime said the object does not exist (gRPC `NotFound`).
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }

    /// Whether the call ran out of time (ours or the runtime's deadline).
    pub fn is_timeout(&self) -> bool {
        matches!(self, CriError::Timeout { .. })
    }

    /// The gRPC status code the runtime answered with, if it answered with an error.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            CriError::Call { code, .. } => Some(*code),
            CriError::NotCri { .. } => Some(tonic::Code::Unimplemented),
            _ => None,
        }
    }

    /// Maps the runtime's error answer to `call` about `object`. `DeadlineExceeded` becomes
    /// [`CriError::Timeout`] after `deadline`; an unknown CRI service becomes [`CriError::NotCri`].
    pub(crate) fn from_status(
        endpoint: &str,
        call: &'static str,
        object: &str,
        deadline: Duration,
        status: &tonic::Status,
    ) -> CriError {
        match status.code() {
            tonic::Code::DeadlineExceeded => CriError::Timeout {
                call,
                object: object.to_owned(),
                after: deadline,
            },
            // grpc-go's answer for a service it does not serve: "unknown service runtime.v1.…".
            tonic::Code::Unimplemented if status.message().contains("unknown service") => {
                CriError::NotCri {
                    endpoint: endpoint.to_owned(),
                    call,
                    message: status.message().to_owned(),
                }
            }
            code => CriError::Call {
                call,
                object: object.to_owned(),
                code,
                message: status.message().to_owned(),
            },
        }
    }
}

/// `error` and its causes joined with `: `, each repeated message once (tonic wraps an I/O error
/// in layers that print the same text).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        next = error.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_answers_are_recognised() {
        let error = CriError::from_status(
            "unix:///run/containerd/containerd.sock",
            "StopPodSandbox",
            "pod sandbox abc",
            Duration::from_secs(60),
            &tonic::Status::not_found("sandbox \"abc\" not found"),
        );
        assert!(error.is_not_found());
        assert_eq!(
            error.to_string(),
            "CRI StopPodSandbox for pod sandbox abc failed: NotFound: sandbox \"abc\" not found"
        );
    }

    #[test]
    fn deadline_exceeded_is_a_timeout_naming_the_call() {
        let error = CriError::from_status(
            "unix:///c.sock",
            "ExecSync",
            "container abc",
            Duration::from_secs(1),
            &tonic::Status::deadline_exceeded("timeout 1s exceeded: context deadline exceeded"),
        );
        assert!(error.is_timeout());
        assert!(!error.is_not_found());
        assert_eq!(
            error.to_string(),
            "CRI ExecSync for container abc did not finish within 1s"
        );
    }

    #[test]
    fn unknown_service_points_at_the_cri_plugin() {
        let error = CriError::from_status(
            "unix:///run/containerd/containerd.sock",
            "Version",
            "the runtime",
            Duration::from_secs(60),
            &tonic::Status::unimplemented("unknown service runtime.v1.RuntimeService"),
        );
        assert!(matches!(error, CriError::NotCri { .. }), "{error:?}");
        assert!(error.to_string().contains("disabled_plugins"), "{error}");
    }

    #[test]
    fn error_chain_repeats_no_message() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Middle);
        #[derive(Debug, thiserror::Error)]
        #[error("{0}")]
        struct Middle(#[source] std::io::Error);
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let text = error_chain(&Outer(Middle(io)));
        assert_eq!(text, "outer: no such file");
    }
}
