//! The static file source: a multi-document YAML file of Services and EndpointSlices, watched for
//! changes.
//!
//! Owns parsing the file into a [`Snapshot`] (documents separated by `---`, empty documents
//! ignored, `v1 List` unpacked; a document without a namespace is in `default`, as kubectl does)
//! and noticing when the file changes, by polling. A file that fails to parse never replaces the
//! last good snapshot. Never interprets the objects beyond their kind.

use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use serde_yaml::Value;

use super::{Location, Snapshot, SourceError};

/// How often [`FileSource::wait_for_change`] looks at the file: well inside the 100 ms in which
/// new flows must avoid a backend removed from the file.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A file modified this recently may be modified again within the file system's timestamp
/// granularity without its metadata changing, so its content is compared too (as git does for
/// "racily clean" files).
const RACY_WINDOW: Duration = Duration::from_secs(2);

const DEFAULT_NAMESPACE: &str = "default";

/// What [`FileSource::poll`] found.
#[derive(Debug)]
pub enum PollOutcome {
    /// The file's content is what it was at the previous poll.
    Unchanged,
    /// The file changed and parsed: [`FileSource::snapshot`] is the new content.
    Reloaded,
    /// The file changed but cannot be used: the last good snapshot stays.
    Rejected(SourceError),
}

/// Metadata that changes whenever the file is written or replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStat {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Fingerprint {
    Unreadable(std::io::ErrorKind),
    Read { stat: FileStat, content_hash: u64 },
}

/// A YAML file of Services and EndpointSlices, reloaded when it changes.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    poll_interval: Duration,
    fingerprint: Option<Fingerprint>,
    snapshot: Option<Snapshot>,
}

impl FileSource {
    /// A source for `path`; nothing is read until [`FileSource::poll`] or [`FileSource::load`].
    pub fn new(path: impl Into<PathBuf>) -> FileSource {
        FileSource {
            path: path.into(),
            poll_interval: DEFAULT_POLL_INTERVAL,
            fingerprint: None,
            snapshot: None,
        }
    }

    /// Sets how often [`FileSource::wait_for_change`] polls.
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> FileSource {
        self.poll_interval = poll_interval;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// The last snapshot that parsed, if any did.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Reads and parses the file now, without touching the watch state.
    pub fn load(&self) -> Result<Snapshot, SourceError> {
        let text = fs::read_to_string(&self.path).map_err(|source| self.read_error(source))?;
        parse_documents(&self.path, &text)
    }

    /// Looks at the file once: whether it changed since the previous poll and, if so, whether it
    /// parsed. The first poll always reports `Reloaded` or `Rejected`. A change is reported once:
    /// polling an unchanged bad file again is `Unchanged`.
    pub fn poll(&mut self) -> PollOutcome {
        let (stat, bytes) = match self.read_if_changed() {
            ReadOutcome::SameStat => return PollOutcome::Unchanged,
            ReadOutcome::Read { stat, bytes } => (stat, bytes),
            ReadOutcome::Unreadable(error) => {
                let fingerprint = Fingerprint::Unreadable(error.kind());
                if self.fingerprint.as_ref() == Some(&fingerprint) {
                    return PollOutcome::Unchanged;
                }
                self.fingerprint = Some(fingerprint);
                return PollOutcome::Rejected(self.read_error(error));
            }
        };
        let mut hasher = DefaultHasher::new();
        hasher.write(&bytes);
        let content_hash = hasher.finish();
        let same_content = matches!(
            &self.fingerprint,
            Some(Fingerprint::Read { content_hash: previous, .. }) if *previous == content_hash
        );
        self.fingerprint = Some(Fingerprint::Read { stat, content_hash });
        if same_content {
            return PollOutcome::Unchanged;
        }
        let parsed = match String::from_utf8(bytes) {
            Ok(text) => parse_documents(&self.path, &text),
            Err(error) => {
                Err(self.read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, error)))
            }
        };
        match parsed {
            Ok(snapshot) => {
                self.snapshot = Some(snapshot);
                PollOutcome::Reloaded
            }
            Err(error) => PollOutcome::Rejected(error),
        }
    }

    /// Polls every [`FileSource::poll_interval`] until the file changes; returns what the change
    /// brought (never [`PollOutcome::Unchanged`]).
    pub fn wait_for_change(&mut self) -> PollOutcome {
        loop {
            match self.poll() {
                PollOutcome::Unchanged => std::thread::sleep(self.poll_interval),
                changed => return changed,
            }
        }
    }

    fn read_error(&self, source: std::io::Error) -> SourceError {
        SourceError::Read {
            path: self.path.clone(),
            source,
        }
    }

    fn read_if_changed(&self) -> ReadOutcome {
        let metadata = match fs::metadata(&self.path) {
            Ok(metadata) => metadata,
            Err(error) => return ReadOutcome::Unreadable(error),
        };
        let stat = FileStat {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        };
        let racy = metadata.modified().map_or(true, |modified| {
            SystemTime::now()
                .duration_since(modified)
                .map_or(true, |age| age < RACY_WINDOW)
        });
        if !racy
            && matches!(&self.fingerprint, Some(Fingerprint::Read { stat: previous, .. }) if *previous == stat)
        {
            return ReadOutcome::SameStat;
        }
        match fs::read(&self.path) {
            Ok(bytes) => ReadOutcome::Read { stat, bytes },
            Err(error) => ReadOutcome::Unreadable(error),
        }
    }
}

enum ReadOutcome {
    SameStat,
    Unreadable(std::io::Error),
    Read { stat: FileStat, bytes: Vec<u8> },
}

/// Parses a multi-document YAML text of Services and EndpointSlices (`path` is for messages).
pub fn parse_documents(path: &Path, text: &str) -> Result<Snapshot, SourceError> {
    let mut snapshot = Snapshot::default();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let location = Location {
            document: index + 1,
            item: None,
        };
        let value = Value::deserialize(document).map_err(|error| {
            let position = error.location();
            SourceError::Syntax {
                path: path.to_owned(),
                location,
                line: position.as_ref().map(|p| p.line()),
                column: position.as_ref().map(|p| p.column()),
                message: error.to_string(),
            }
        })?;
        if value.is_null() {
            continue;
        }
        add_object(path, location, value, &mut snapshot, true)?;
    }
    Ok(snapshot)
}

fn add_object(
    path: &Path,
    location: Location,
    value: Value,
    snapshot: &mut Snapshot,
    lists_allowed: bool,
) -> Result<(), SourceError> {
    let text_field = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
    let (Some(api_version), Some(kind)) = (text_field("apiVersion"), text_field("kind")) else {
        return Err(SourceError::NotAnObject {
            path: path.to_owned(),
            location,
        });
    };
    let name = value
        .get("metadata")
        .and_then(|metadata| metadata.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)")
        .to_owned();
    let invalid = |message: String| SourceError::InvalidObject {
        path: path.to_owned(),
        location,
        kind: kind.clone(),
        name: name.clone(),
        message,
    };
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => {
            let mut service: Service =
                serde_yaml::from_value(value).map_err(|error| invalid(error.to_string()))?;
            service
                .metadata
                .namespace
                .get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned());
            snapshot.services.push(service);
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let mut slice: EndpointSlice =
                serde_yaml::from_value(value).map_err(|error| invalid(error.to_string()))?;
            slice
                .metadata
                .namespace
                .get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned());
            snapshot.endpoint_slices.push(slice);
        }
        ("v1", "List") if lists_allowed => {
            let items = match value.get("items") {
                None | Some(Value::Null) => return Ok(()),
                Some(Value::Sequence(items)) => items.clone(),
                Some(_) => return Err(invalid("items is not a list".to_owned())),
            };
            for (item, value) in items.into_iter().enumerate() {
                let location = Location {
                    document: location.document,
                    item: Some(item),
                };
                add_object(path, location, value, snapshot, false)?;
            }
        }
        _ => {
            return Err(SourceError::UnsupportedKind {
                path: path.to_owned(),
                location,
                api_version,
                kind,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: 80
    targetPort: http
"#;

    const WEB_SLICE: &str = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
endpoints:
- addresses: ["10.0.1.5"]
  conditions: {ready: true}
  nodeName: node-a
"#;

    fn parse(text: &str) -> Result<Snapshot, SourceError> {
        parse_documents(Path::new("services.yaml"), text)
    }

    fn write(path: &Path, text: &str) {
        let mut file = fs::File::create(path).expect("create test file");
        file.write_all(text.as_bytes()).expect("write test file");
    }

    #[test]
    fn services_and_endpoint_slices_are_read_from_separate_documents() {
        let snapshot = parse(&format!("---\n{WEB}---\n{WEB_SLICE}")).expect("valid file");

        assert_eq!(snapshot.services.len(), 1);
        assert_eq!(snapshot.services[0].metadata.name.as_deref(), Some("web"));
        assert_eq!(snapshot.endpoint_slices.len(), 1);
        let slice = &snapshot.endpoint_slices[0];
        assert_eq!(slice.endpoints[0].addresses, ["10.0.1.5"]);
        assert_eq!(slice.ports.as_ref().expect("ports")[0].port, Some(8080));
    }

    #[test]
    fn empty_documents_and_an_empty_file_are_ignored() {
        assert_eq!(parse("").expect("empty file"), Snapshot::default());
        assert_eq!(
            parse("---\n---\n# only a comment\n---\n").expect("empty documents"),
            Snapshot::default()
        );

        let snapshot = parse(&format!("---\n---\n{WEB}---\n")).expect("valid file");
        assert_eq!(snapshot.services.len(), 1);
    }

    #[test]
    fn list_items_are_unpacked() {
        let text = format!(
            "apiVersion: v1\nkind: List\nitems:\n- {}\n- {}\n",
            indent_item(WEB),
            indent_item(WEB_SLICE)
        );

        let snapshot = parse(&text).expect("valid list");

        assert_eq!(
            (snapshot.services.len(), snapshot.endpoint_slices.len()),
            (1, 1)
        );
    }

    /// A document as a YAML list item: its first line after "- ", the others indented.
    fn indent_item(document: &str) -> String {
        document.trim().lines().collect::<Vec<_>>().join("\n  ")
    }

    #[test]
    fn missing_namespace_defaults_to_default() {
        let snapshot = parse(&WEB.replace("  namespace: shop\n", "")).expect("valid file");

        assert_eq!(
            snapshot.services[0].metadata.namespace.as_deref(),
            Some("default")
        );
    }

    #[test]
    fn unknown_kind_is_an_error_naming_the_kind_and_document() {
        let text =
            format!("{WEB}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\n");

        let error = parse(&text).expect_err("Deployment is not supported");

        assert_eq!(
            error.to_string(),
            r#"services.yaml: document 2: unsupported kind "Deployment" (apiVersion "apps/v1"); expected v1 Service, discovery.k8s.io/v1 EndpointSlice or v1 List"#
        );
    }

    #[test]
    fn document_without_kind_is_an_error() {
        let error = parse("name: web\nport: 80\n").expect_err("not an object");

        assert_eq!(
            error.to_string(),
            "services.yaml: document 1: no apiVersion and kind; every document must be a Kubernetes object"
        );
    }

    #[test]
    fn yaml_syntax_error_names_the_document_and_line() {
        let text = format!("{WEB}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: [broken\n");

        let error = parse(&text).expect_err("unclosed flow sequence");

        let SourceError::Syntax { location, line, .. } = &error else {
            panic!("expected a syntax error, got {error}");
        };
        assert_eq!(location.document, 2);
        let broken_line = 1 + text
            .lines()
            .position(|line| line.contains("[broken"))
            .expect("line");
        assert!(line.is_some_and(|line| line >= broken_line), "{error}");
        let message = error.to_string();
        assert!(
            message.starts_with("services.yaml: document 2: YAML syntax error: "),
            "{message}"
        );
        assert!(
            message.contains(&format!("at line {broken_line} column")),
            "{message}"
        );
    }

    #[test]
    fn object_that_does_not_match_its_kind_is_an_error_naming_it() {
        let text = WEB_SLICE.replace("port: 8080", "port: eighty");

        let error = parse(&text).expect_err("a port is a number");

        let message = error.to_string();
        assert!(
            message.starts_with("services.yaml: document 1: EndpointSlice web-abc: "),
            "{message}"
        );
        assert!(message.contains("eighty"), "{message}");
    }

    #[test]
    fn first_poll_loads_the_file() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("services.yaml");
        write(&path, WEB);
        let mut source = FileSource::new(&path);

        assert!(matches!(source.poll(), PollOutcome::Reloaded));
        assert_eq!(source.snapshot().expect("snapshot").services.len(), 1);
        assert!(matches!(source.poll(), PollOutcome::Unchanged));
    }

    #[test]
    fn rewritten_file_is_reloaded_even_with_the_same_size_and_timestamp_granule() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("services.yaml");
        write(&path, &format!("{WEB}---\n{WEB_SLICE}"));
        let mut source = FileSource::new(&path);
        source.poll();

        // Same length, written at once: only the content tells the change.
        write(
            &path,
            &format!("{WEB}---\n{}", WEB_SLICE.replace("10.0.1.5", "10.0.1.6")),
        );

        assert!(matches!(source.poll(), PollOutcome::Reloaded));
        let slices = &source.snapshot().expect("snapshot").endpoint_slices;
        assert_eq!(slices[0].endpoints[0].addresses, ["10.0.1.6"]);
    }

    #[test]
    fn bad_file_after_a_good_one_keeps_the_good_snapshot_and_reports_once() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("services.yaml");
        write(&path, WEB);
        let mut source = FileSource::new(&path);
        source.poll();
        let good = source.snapshot().cloned();

        write(&path, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n");

        let PollOutcome::Rejected(error) = source.poll() else {
            panic!("a Pod must be rejected");
        };
        assert!(
            error.to_string().contains(r#"unsupported kind "Pod""#),
            "{error}"
        );
        assert_eq!(source.snapshot().cloned(), good);
        assert!(
            matches!(source.poll(), PollOutcome::Unchanged),
            "the same bad file is reported once"
        );

        write(&path, &format!("{WEB}---\n{WEB_SLICE}"));
        assert!(matches!(source.poll(), PollOutcome::Reloaded));
        assert_eq!(
            source.snapshot().expect("snapshot").endpoint_slices.len(),
            1
        );
    }

    #[test]
    fn missing_file_is_reported_and_keeps_the_last_snapshot() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("services.yaml");
        write(&path, WEB);
        let mut source = FileSource::new(&path);
        source.poll();

        fs::remove_file(&path).expect("remove test file");

        let PollOutcome::Rejected(error) = source.poll() else {
            panic!("a missing file must be reported");
        };
        assert!(
            error
                .to_string()
                .starts_with(&format!("reading {}: ", path.display())),
            "{error}"
        );
        assert_eq!(source.snapshot().expect("snapshot").services.len(), 1);
        assert!(matches!(source.poll(), PollOutcome::Unchanged));
    }

    #[test]
    fn file_replaced_by_rename_is_reloaded() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("services.yaml");
        write(&path, WEB);
        let mut source = FileSource::new(&path);
        source.poll();

        let staged = directory.path().join("services.yaml.new");
        write(&staged, &format!("{WEB}---\n{WEB_SLICE}"));
        fs::rename(&staged, &path).expect("rename");

        assert!(matches!(source.poll(), PollOutcome::Reloaded));
        assert_eq!(
            source.snapshot().expect("snapshot").endpoint_slices.len(),
            1
        );
    }

    #[test]
    fn load_reads_without_changing_the_watch_state() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("services.yaml");
        write(&path, WEB);
        let mut source = FileSource::new(&path);

        assert_eq!(source.load().expect("valid file").services.len(), 1);
        assert!(source.snapshot().is_none());
        assert!(matches!(source.poll(), PollOutcome::Reloaded));
    }
}
