//! `skiff-cni node-routes`: keeps this node's cross-node routes in sync with a nodes file.
//!
//! Owns the loop (reread the file when it changes, resync at least every interval, log what
//! changed), its options and the single-sync entry point. A malformed file is reported and changes
//! nothing: the routes of the last good node list stay, and are kept in sync. It works in the
//! network namespace of the calling thread and touches only what [`super::kernel`] may touch.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::RoutesError;
use super::desired::{
    self, DEFAULT_VXLAN_PORT, DEFAULT_VXLAN_VNI, MAX_VXLAN_VNI, Mode, RoutingMode, VxlanSettings,
};
use super::diff::{self, Change};
use super::kernel::Kernel;
use super::nodes::{self, NodeList, SkippedNode};

/// Default for [`NodeRoutesOptions::resync_interval`].
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(10);
/// How often the loop looks at the file's metadata (and at the stop flag, in slices).
const POLL_INTERVAL: Duration = Duration::from_secs(1);
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// Observe–plan–apply rounds per sync when objects keep appearing concurrently (`EEXIST`).
const MAX_ROUNDS: usize = 3;

/// Options of `skiff-cni node-routes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRoutesOptions {
    /// `--nodes-file`: `kubectl get nodes -o json` output.
    pub nodes_file: PathBuf,
    /// `--node-name`: this node's `metadata.name`.
    pub node_name: String,
    /// `--mode direct|vxlan` (default direct).
    pub mode: RoutingMode,
    /// `--vxlan-port` (default [`DEFAULT_VXLAN_PORT`], 8472).
    pub vxlan_port: u16,
    /// `--vxlan-vni` (default [`DEFAULT_VXLAN_VNI`], 1; at most 2^24 − 1).
    pub vxlan_vni: u32,
    /// `--resync-interval` (default 10s; see [`parse_duration`]).
    pub resync_interval: Duration,
    /// `--once`: sync once and return.
    pub once: bool,
}

impl NodeRoutesOptions {
    /// Options with every default: direct mode, port 8472, VNI 1, resync every 10s, looping.
    pub fn new(nodes_file: impl Into<PathBuf>, node_name: impl Into<String>) -> Self {
        NodeRoutesOptions {
            nodes_file: nodes_file.into(),
            node_name: node_name.into(),
            mode: RoutingMode::Direct,
            vxlan_port: DEFAULT_VXLAN_PORT,
            vxlan_vni: DEFAULT_VXLAN_VNI,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            once: false,
        }
    }

    fn validated_mode(&self) -> Result<Mode, RoutesError> {
        let invalid = |problem: String| Err(RoutesError::InvalidOptions { problem });
        if self.node_name.is_empty() {
            return invalid("--node-name must not be empty".to_owned());
        }
        if self.resync_interval.is_zero() {
            return invalid("--resync-interval must be longer than 0s".to_owned());
        }
        match self.mode {
            RoutingMode::Direct => Ok(Mode::Direct),
            RoutingMode::Vxlan if self.vxlan_vni > MAX_VXLAN_VNI => invalid(format!(
                "--vxlan-vni {} is larger than the largest VNI {MAX_VXLAN_VNI}",
                self.vxlan_vni
            )),
            RoutingMode::Vxlan if self.vxlan_port == 0 => {
                invalid("--vxlan-port must not be 0".to_owned())
            }
            RoutingMode::Vxlan => Ok(Mode::Vxlan(VxlanSettings {
                vni: self.vxlan_vni,
                port: self.vxlan_port,
            })),
        }
    }
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The changes made, in order (empty when everything was in place).
    pub applied: Vec<Change>,
    /// Nodes that got no route, and why.
    pub skipped: Vec<SkippedNode>,
}

/// Reads the nodes file and syncs once, in the calling thread's network namespace. Logs every
/// change and skipped node. A malformed file, an unknown local node or invalid options change
/// nothing. Errors after changes began list every change that failed (the others are made).
pub fn sync_node_routes(options: &NodeRoutesOptions) -> Result<SyncReport, RoutesError> {
    let mode = options.validated_mode()?;
    let list = read_node_list(&options.nodes_file)?;
    log_skipped(&list.skipped);
    block_on(async {
        let kernel = Kernel::connect()?;
        let report = sync(&kernel, &list, options, &mode).await?;
        log_skipped_by_overlap(&report.skipped, &list);
        Ok(report)
    })
}

/// `skiff-cni node-routes`: with `once`, [`sync_node_routes`] and return; otherwise loop forever
/// (see [`run_node_routes_until`]). Returns an error only for bad options, a netlink socket that
/// cannot be opened, or (with `once`) a failed sync.
pub fn run_node_routes(options: &NodeRoutesOptions) -> Result<(), RoutesError> {
    if options.once {
        return sync_node_routes(options).map(|_| ());
    }
    run_node_routes_until(options, &AtomicBool::new(false))
}

/// The loop, until `stop` is set: looks at the file every second; rereads and syncs when it
/// changed, and at least every `resync_interval` (which also repairs routes removed by hand). A
/// malformed or missing file is logged and the last good node list stays in force. Sync errors
/// are logged and retried at the next resync. Ignores `options.once`.
pub fn run_node_routes_until(
    options: &NodeRoutesOptions,
    stop: &AtomicBool,
) -> Result<(), RoutesError> {
    let mode = options.validated_mode()?;
    block_on(async {
        let kernel = Kernel::connect()?;
        let path = &options.nodes_file;
        tracing::info!(
            nodes_file = %path.display(),
            node = %options.node_name,
            mode = %options.mode,
            "node routes: started"
        );
        let mut last_stamp = None;
        let mut last_good: Option<NodeList> = None;
        let mut next_resync = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let stamp = FileStamp::of(path);
            let changed = stamp != last_stamp;
            if changed || Instant::now() >= next_resync {
                last_stamp = stamp;
                next_resync = Instant::now() + options.resync_interval;
                match read_node_list(path) {
                    Ok(list) => {
                        if changed {
                            log_skipped(&list.skipped);
                        }
                        last_good = Some(list);
                    }
                    Err(error) if last_good.is_some() => tracing::error!(
                        "node routes: {error}; keeping the routes of the last good node list"
                    ),
                    Err(error) => tracing::error!("node routes: {error}"),
                }
                if let Some(list) = &last_good {
                    match sync(&kernel, list, options, &mode).await {
                        Ok(report) => {
                            if changed {
                                log_skipped_by_overlap(&report.skipped, list);
                            }
                            if report.applied.is_empty() {
                                tracing::debug!("node routes: in sync");
                            }
                        }
                        Err(error) => tracing::error!("node routes: {error}"),
                    }
                }
            }
            let wake = Instant::now() + POLL_INTERVAL.min(options.resync_interval);
            while Instant::now() < wake && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(STOP_CHECK_INTERVAL).await;
            }
        }
        tracing::info!("node routes: stopped");
        Ok(())
    })
}

/// Observe, plan, apply; again if a create met something new (`EEXIST`), at most
/// [`MAX_ROUNDS`] times.
async fn sync(
    kernel: &Kernel,
    list: &NodeList,
    options: &NodeRoutesOptions,
    mode: &Mode,
) -> Result<SyncReport, RoutesError> {
    let desired = desired::desired_state(list, &options.node_name, mode).map_err(|problem| {
        RoutesError::UnusableNodeList {
            path: options.nodes_file.clone(),
            problem,
        }
    })?;
    let mut applied = Vec::new();
    for round in 1..=MAX_ROUNDS {
        let current = kernel
            .observe(desired.vxlan.as_ref().map(|vxlan| vxlan.local))
            .await?;
        let plan = diff::plan(&desired, &current)?;
        let outcome = kernel
            .apply(&plan, current.vxlan.as_ref().map(|device| device.index))
            .await;
        for change in &outcome.applied {
            tracing::info!("node routes: {change}");
        }
        applied.extend(outcome.applied);
        if outcome.observe_again && round < MAX_ROUNDS {
            tracing::debug!("node routes: an object appeared concurrently; observing again");
            continue;
        }
        let mut failures = outcome.failures;
        failures.extend(plan.conflicts.iter().map(ToString::to_string));
        if outcome.observe_again {
            failures.push(format!(
                "routes or the device {} kept appearing while being created; gave up after \
                 {MAX_ROUNDS} rounds",
                desired::VXLAN_DEVICE
            ));
        }
        if failures.is_empty() {
            return Ok(SyncReport {
                applied,
                skipped: desired.skipped,
            });
        }
        return Err(RoutesError::Apply {
            applied: applied.len(),
            failures,
        });
    }
    Ok(SyncReport {
        applied,
        skipped: desired.skipped,
    })
}

fn read_node_list(path: &Path) -> Result<NodeList, RoutesError> {
    let text = fs::read_to_string(path).map_err(|source| RoutesError::ReadNodesFile {
        path: path.to_owned(),
        source,
    })?;
    nodes::parse_node_list(&text).map_err(|problem| RoutesError::MalformedNodesFile {
        path: path.to_owned(),
        problem,
    })
}

fn log_skipped(skipped: &[SkippedNode]) {
    for node in skipped {
        tracing::warn!("node routes: {node}");
    }
}

/// Logs the nodes skipped by the overlap rules (those from the file were logged already).
fn log_skipped_by_overlap(skipped: &[SkippedNode], list: &NodeList) {
    let extra: Vec<SkippedNode> = skipped
        .iter()
        .filter(|node| !list.skipped.contains(node))
        .cloned()
        .collect();
    log_skipped(&extra);
}

/// Runs `work` on a current-thread runtime on this thread, so that every socket it opens belongs
/// to this thread's network namespace.
fn block_on<T>(
    work: impl std::future::Future<Output = Result<T, RoutesError>>,
) -> Result<T, RoutesError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| RoutesError::Setup {
            action: "starting the tokio runtime",
            source,
        })?
        .block_on(work)
}

/// Enough of a file's metadata to notice a rewrite (in place or by rename).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let metadata = fs::metadata(path).ok()?;
        Some(FileStamp {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        })
    }
}

/// Parses a duration like `10s`, `500ms`, `2m`, `1h` or `1m30s` (units `ms`, `s`, `m`, `h`;
/// whole numbers). A bare number is seconds. For `--resync-interval`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "{text:?} is not a duration like 10s, 500ms, 2m, 1h or 1m30s (whole numbers with \
             the units ms, s, m, h)"
        )
    };
    let text_trimmed = text.trim();
    if text_trimmed.is_empty() {
        return Err(invalid());
    }
    if text_trimmed.bytes().all(|byte| byte.is_ascii_digit()) {
        return text_trimmed
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = text_trimmed;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_length = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_length] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.checked_mul(60).ok_or_else(invalid)?),
            "h" => Duration::from_secs(number.checked_mul(3600).ok_or_else(invalid)?),
            _ => return Err(invalid()),
        };
        rest = &rest[unit_length..];
        total = total.checked_add(part).ok_or_else(invalid)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_the_units_operators_write() {
        for (text, expected) in [
            ("10s", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1m30s", Duration::from_secs(90)),
            ("15", Duration::from_secs(15)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for text in ["", "s", "10x", "1.5s", "-1s", "10 s"] {
            let error = parse_duration(text).unwrap_err();
            assert!(error.contains(&format!("{text:?}")), "{error}");
        }
    }

    #[test]
    fn options_default_to_direct_mode_and_flannel_vxlan_settings() {
        let options = NodeRoutesOptions::new("/tmp/nodes.json", "node-a");
        assert_eq!(options.mode, RoutingMode::Direct);
        assert_eq!((options.vxlan_port, options.vxlan_vni), (8472, 1));
        assert_eq!(options.resync_interval, Duration::from_secs(10));
        assert!(!options.once);
        assert_eq!(options.validated_mode().unwrap(), Mode::Direct);
    }

    #[test]
    fn invalid_options_are_rejected_before_anything_is_read() {
        let base = NodeRoutesOptions {
            mode: RoutingMode::Vxlan,
            ..NodeRoutesOptions::new("/nonexistent/nodes.json", "node-a")
        };
        for (options, expected) in [
            (
                NodeRoutesOptions {
                    vxlan_vni: 1 << 24,
                    ..base.clone()
                },
                "--vxlan-vni 16777216",
            ),
            (
                NodeRoutesOptions {
                    vxlan_port: 0,
                    ..base.clone()
                },
                "--vxlan-port",
            ),
            (
                NodeRoutesOptions {
                    resync_interval: Duration::ZERO,
                    ..base.clone()
                },
                "--resync-interval",
            ),
            (
                NodeRoutesOptions {
                    node_name: String::new(),
                    ..base.clone()
                },
                "--node-name",
            ),
        ] {
            let error = sync_node_routes(&options).unwrap_err();
            assert!(
                matches!(error, RoutesError::InvalidOptions { .. })
                    && error.to_string().contains(expected),
                "{error}"
            );
        }
    }

    #[test]
    fn missing_nodes_file_is_an_error_naming_it() {
        let error = sync_node_routes(&NodeRoutesOptions::new("/nonexistent/nodes.json", "node-a"))
            .unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/nodes.json"),
            "{error}"
        );
    }
}
