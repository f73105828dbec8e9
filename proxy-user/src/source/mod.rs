//! Where skiff-proxy gets its Services and EndpointSlices from.
//!
//! Owns the `--source` specification and the [`Snapshot`] every source yields: the complete set
//! of objects at one moment, handed whole to `translate`. Sources only read and parse; they never
//! interpret the objects (that is `translate`'s job) and never touch the dataplane.

pub mod file;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

pub use file::{DEFAULT_POLL_INTERVAL, FileSource, PollOutcome};

/// Every Service and EndpointSlice a source holds at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
}

/// Where a document or object sits in a source file: its 1-based document number and, inside a
/// `List`, its index in `items`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub document: usize,
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(formatter, ", items[{item}]")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `message` is the parser's, with the line and column it knows.
    #[error("{}: {location}: YAML syntax error: {message}", .path.display())]
    Syntax {
        path: PathBuf,
        location: Location,
        /// 1-based line in the file, when the parser knows it.
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error(
        "{}: {location}: no apiVersion and kind; every document must be a Kubernetes object",
        .path.display()
    )]
    NotAnObject { path: PathBuf, location: Location },
    #[error(
        "{}: {location}: unsupported kind {kind:?} (apiVersion {api_version:?}); expected v1 \
         Service, discovery.k8s.io/v1 EndpointSlice or v1 List",
        .path.display()
    )]
    UnsupportedKind {
        path: PathBuf,
        location: Location,
        api_version: String,
        kind: String,
    },
    #[error("{}: {location}: {kind} {name}: {message}", .path.display())]
    InvalidObject {
        path: PathBuf,
        location: Location,
        kind: String,
        name: String,
        message: String,
    },
    #[error("--source {spec:?}: expected file:PATH")]
    UnknownSource { spec: String },
}

/// A `--source` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// `file:PATH`: a multi-document YAML file of Services and EndpointSlices, reloaded on change.
    File(PathBuf),
}

impl FromStr for SourceSpec {
    type Err = SourceError;

    fn from_str(spec: &str) -> Result<SourceSpec, SourceError> {
        match spec.split_once(':') {
            Some(("file", path)) if !path.is_empty() => Ok(SourceSpec::File(PathBuf::from(path))),
            _ => Err(SourceError::UnknownSource {
                spec: spec.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_source_spec_names_its_path() {
        assert_eq!(
            "file:/etc/skiff/services.yaml"
                .parse::<SourceSpec>()
                .expect("valid"),
            SourceSpec::File(PathBuf::from("/etc/skiff/services.yaml"))
        );
    }

    #[test]
    fn unknown_source_spec_says_what_is_expected() {
        let error = "kube:default"
            .parse::<SourceSpec>()
            .expect_err("no kube source yet");

        assert_eq!(
            error.to_string(),
            r#"--source "kube:default": expected file:PATH"#
        );
    }
}
