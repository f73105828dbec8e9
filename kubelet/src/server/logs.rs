//! `/containerLogs/{namespace}/{pod}/{container}`: what `kubectl logs` reads through the API
//! server.
//!
//! Owns the request's query (`follow`, `tailLines`, `timestamps`, `previous`, `limitBytes`,
//! `sinceSeconds`, `sinceTime`, parsed as upstream's kubelet parses `PodLogOptions`), choosing
//! which container instance's log to read from the pod's status (upstream's
//! `validateContainerLogStatus`, with its error texts), finding that instance's log file (CRI
//! `ContainerStatus.logPath`, else the `/var/log/pods` layout) and producing the output: the
//! current file rendered by [`crate::cri::log::render`], or, with `follow`, its lines and then
//! new ones as the runtime writes them, until the client goes away, `limitBytes` is reached or the
//! container instance stops running (a restart is a new instance with a new file: the stream ends,
//! as upstream's does).
//!
//! Reads log files and asks the runtime about one container; never writes, rotates or deletes a
//! log, never changes a pod.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{ContainerStatus, Pod},
    jiff::{SignedDuration, Timestamp},
};
use tokio::sync::mpsc;
use tracing::debug;

use crate::{
    cri::{
        Runtime,
        api::ContainerState,
        log::{LogFollower, LogLine, LogOptions, read_log_file, render},
    },
    pod::{pod_name, sandbox::container_logs_directory},
};

/// How often a followed log file is looked at for new entries.
const FOLLOW_POLL_PERIOD: Duration = Duration::from_millis(100);
/// How long a followed log may stay quiet before the runtime is asked whether the container still
/// runs.
const STATE_CHECK_PERIOD: Duration = Duration::from_secs(1);

/// The options of one log request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Keep streaming new lines (`follow`).
    pub follow: bool,
    /// The previous (terminated) instance of the container (`previous`).
    pub previous: bool,
    /// `tailLines`, `timestamps`, `limitBytes` and the start time of `sinceSeconds`/`sinceTime`.
    pub options: LogOptions,
}

/// Parses the query of a log request, as upstream's kubelet does (`true`/`1` are true; invalid
/// numbers are errors). `now` resolves `sinceSeconds`.
pub fn parse_query(pairs: &[(String, String)], now: Timestamp) -> Result<LogQuery, String> {
    let mut query = LogQuery::default();
    for (key, value) in pairs {
        match key.as_str() {
            "follow" => query.follow = parse_bool(key, value)?,
            "previous" => query.previous = parse_bool(key, value)?,
            "timestamps" => query.options.timestamps = parse_bool(key, value)?,
            "tailLines" => {
                let lines: i64 = parse_number(key, value)?;
                // Upstream treats a negative tailLines as "all lines".
                query.options.tail_lines = usize::try_from(lines).ok();
            }
            "limitBytes" => {
                let bytes: i64 = parse_number(key, value)?;
                if bytes < 1 {
                    return Err(format!(
                        "limitBytes: Invalid value: {bytes}: must be greater than 0"
                    ));
                }
                query.options.limit_bytes = Some(usize::try_from(bytes).unwrap_or(usize::MAX));
            }
            "sinceSeconds" => {
                let seconds: i64 = parse_number(key, value)?;
                if seconds < 1 {
                    return Err(format!(
                        "sinceSeconds: Invalid value: {seconds}: must be greater than 0"
                    ));
                }
                query.options.since = now.checked_sub(SignedDuration::from_secs(seconds)).ok();
            }
            "sinceTime" => {
                let time: Timestamp = value.parse().map_err(|_| {
                    format!("sinceTime: Invalid value: {value:?}: must be an RFC 3339 time")
                })?;
                query.options.since = Some(time);
            }
            _ => {}
        }
    }
    Ok(query)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "" | "true" | "True" | "TRUE" | "1" | "t" | "T" => Ok(true),
        "false" | "False" | "FALSE" | "0" | "f" | "F" => Ok(false),
        _ => Err(format!("{key}: invalid boolean value {value:?}")),
    }
}

fn parse_number(key: &str, value: &str) -> Result<i64, String> {
    value
        .parse()
        .map_err(|_| format!("{key}: invalid integer value {value:?}"))
}

/// Which instance of `container` in `pod` a log request reads: the runtime's container ID
/// (without the `containerd://` scheme) and the restart count the instance's log file is named
/// after. The errors are upstream's texts, returned with `400 Bad Request`.
pub fn select_instance(pod: &Pod, container: &str, previous: bool) -> Result<Instance, String> {
    let name = pod_name(pod);
    let status = pod.status.as_ref();
    let statuses = [
        status.and_then(|status| status.container_statuses.as_ref()),
        status.and_then(|status| status.init_container_statuses.as_ref()),
        status.and_then(|status| status.ephemeral_container_statuses.as_ref()),
    ];
    let Some(found) = statuses
        .into_iter()
        .flatten()
        .flatten()
        .find(|status| status.name == container)
    else {
        return Err(format!(
            "container {container:?} in pod {name:?} is not available"
        ));
    };
    let restart_count = u32::try_from(found.restart_count).unwrap_or_default();
    let state = found.state.as_ref();
    let last_terminated = found
        .last_state
        .as_ref()
        .and_then(|last| last.terminated.as_ref())
        .and_then(|terminated| terminated.container_id.as_deref())
        .filter(|id| !id.is_empty());
    let previous_instance = |id: &str| Instance::new(id, restart_count.saturating_sub(1));
    if previous {
        return last_terminated.map(previous_instance).ok_or_else(|| {
            format!("previous terminated container {container:?} in pod {name:?} not found")
        });
    }
    let terminated_error = || format!("container {container:?} in pod {name:?} is terminated");
    if let Some(running) = state.and_then(|state| state.running.as_ref()) {
        let _ = running;
        return current_id(found)
            .map(|id| Instance::new(id, restart_count))
            .ok_or_else(|| waiting_error(container, name, ""));
    }
    if state.and_then(|state| state.terminated.as_ref()).is_some() {
        return match current_id(found) {
            Some(id) => Ok(Instance::new(id, restart_count)),
            None => last_terminated
                .map(previous_instance)
                .ok_or_else(terminated_error),
        };
    }
    if let Some(id) = last_terminated {
        return Ok(previous_instance(id));
    }
    if found
        .last_state
        .as_ref()
        .and_then(|last| last.terminated.as_ref())
        .is_some()
    {
        return Err(terminated_error());
    }
    match state.and_then(|state| state.waiting.as_ref()) {
        Some(waiting) => Err(waiting_error(
            container,
            name,
            waiting.reason.as_deref().unwrap_or_default(),
        )),
        None => Err(format!(
            "container {container:?} in pod {name:?} is waiting to start - no logs yet"
        )),
    }
}

fn current_id(status: &ContainerStatus) -> Option<&str> {
    status.container_id.as_deref().filter(|id| !id.is_empty())
}

fn waiting_error(container: &str, pod: &str, reason: &str) -> String {
    let detail = match reason {
        "ErrImagePull" => "image can't be pulled",
        "ImagePullBackOff" => "trying and failing to pull image",
        other => other,
    };
    format!("container {container:?} in pod {pod:?} is waiting to start: {detail}")
}

/// One instance of a container, as a log request reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The runtime's container ID, without a `<runtime>://` scheme.
    pub container_id: String,
    /// The instance's restart count: its log file is `<restart count>.log`.
    pub restart_count: u32,
}

impl Instance {
    fn new(id: &str, restart_count: u32) -> Instance {
        let id = id.split_once("://").map_or(id, |(_, id)| id);
        Instance {
            container_id: id.to_owned(),
            restart_count,
        }
    }
}

/// The log file of `instance`: the runtime's `logPath` when it still knows the container, else
/// `<pod logs root>/<namespace>_<name>_<uid>/<container>/<restart count>.log`.
pub async fn log_path(
    runtime: Option<&Runtime>,
    pod_logs_root: &Path,
    pod: &Pod,
    container: &str,
    instance: &Instance,
) -> PathBuf {
    if let Some(runtime) = runtime
        && let Ok(Some(status)) = runtime.container_status(&instance.container_id).await
        && !status.log_path.is_empty()
    {
        return PathBuf::from(status.log_path);
    }
    let directory = container_logs_directory(&pod_logs_root.display().to_string(), pod, container);
    Path::new(&directory).join(format!("{}.log", instance.restart_count))
}

/// The whole answer to a request without `follow`.
pub fn read_once(path: &Path, options: &LogOptions) -> Result<Vec<u8>, String> {
    match read_log_file(path) {
        Ok(lines) => Ok(render(&lines, options)),
        // A container that has not written anything may have no file yet.
        Err(_) if !path.exists() => Ok(Vec::new()),
        Err(error) => Err(error.to_string()),
    }
}

/// Output pieces of a followed log, as the response body sends them.
pub type Chunks = mpsc::Receiver<Result<Vec<u8>, std::io::Error>>;

/// Follows the log at `path` in a task: first what the file holds (shaped by `options`), then
/// each new line as it is written. Ends when the receiver is dropped (the client went away), when
/// `limitBytes` is reached, or when `runtime` says the container `container_id` no longer runs
/// (after sending what it wrote last). Without a runtime it ends only with the client.
pub fn follow(
    path: PathBuf,
    options: LogOptions,
    runtime: Option<Runtime>,
    container_id: String,
) -> Chunks {
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        let ended =
            stream_new_lines(&path, &options, runtime.as_ref(), &container_id, &sender).await;
        debug!(path = %path.display(), container_id, "stopped following a container log: {ended}");
    });
    receiver
}

/// The body of [`follow`]; returns why it ended.
async fn stream_new_lines(
    path: &Path,
    options: &LogOptions,
    runtime: Option<&Runtime>,
    container_id: &str,
    sender: &mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) -> &'static str {
    const CLIENT_GONE: &str = "the client went away";
    const LIMIT: &str = "limitBytes reached";
    let failed = |error: crate::cri::log::LogError| Err(std::io::Error::other(error.to_string()));
    let mut follower = LogFollower::new(path);
    let mut sent = 0usize;
    let first = match follower.read_new() {
        Ok(lines) => render(&lines, options),
        Err(error) => {
            let _ = sender.send(failed(error)).await;
            return "the log could not be read";
        }
    };
    // The tail applied to what the file held; new lines all count.
    let streaming = LogOptions {
        tail_lines: None,
        ..options.clone()
    };
    match send(sender, first, &streaming, &mut sent).await {
        Sent::More => {}
        Sent::ClientGone => return CLIENT_GONE,
        Sent::LimitReached => return LIMIT,
    }
    let mut quiet_since = Instant::now();
    loop {
        tokio::select! {
            () = sender.closed() => return CLIENT_GONE,
            () = tokio::time::sleep(FOLLOW_POLL_PERIOD) => {}
        }
        let lines = match follower.read_new() {
            Ok(lines) => lines,
            Err(error) => {
                let _ = sender.send(failed(error)).await;
                return "the log could not be read";
            }
        };
        if !lines.is_empty() {
            quiet_since = Instant::now();
            match send(
                sender,
                render_new(&lines, &streaming),
                &streaming,
                &mut sent,
            )
            .await
            {
                Sent::More => continue,
                Sent::ClientGone => return CLIENT_GONE,
                Sent::LimitReached => return LIMIT,
            }
        }
        if quiet_since.elapsed() < STATE_CHECK_PERIOD {
            continue;
        }
        quiet_since = Instant::now();
        if let Some(runtime) = runtime
            && !still_running(runtime, container_id).await
        {
            // The runtime wrote everything before it reported the exit.
            let mut last = follower.read_new().unwrap_or_default();
            last.extend(follower.take_incomplete());
            let _ = send(sender, render_new(&last, &streaming), &streaming, &mut sent).await;
            return "the container is not running";
        }
    }
}

/// New lines of a followed log with `options` (no tail: that applied to the first read).
fn render_new(lines: &[LogLine], options: &LogOptions) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        if options.since.is_some_and(|since| line.timestamp < since) {
            continue;
        }
        line.write_to(&mut out, options.timestamps);
    }
    out
}

/// What [`send`] achieved.
enum Sent {
    /// Sent; the stream goes on.
    More,
    /// The receiver is gone.
    ClientGone,
    /// Sent up to `limitBytes`; the stream ends.
    LimitReached,
}

/// Sends `bytes`, cut to what `limitBytes` still allows.
async fn send(
    sender: &mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    mut bytes: Vec<u8>,
    options: &LogOptions,
    sent: &mut usize,
) -> Sent {
    let mut reached = false;
    if let Some(limit) = options.limit_bytes {
        let left = limit.saturating_sub(*sent);
        if bytes.len() >= left {
            bytes.truncate(left);
            reached = true;
        }
    }
    *sent += bytes.len();
    if !bytes.is_empty() && sender.send(Ok(bytes)).await.is_err() {
        return Sent::ClientGone;
    }
    if reached {
        Sent::LimitReached
    } else {
        Sent::More
    }
}

/// Whether the runtime still runs the container (an unanswered call counts as running).
async fn still_running(runtime: &Runtime, container_id: &str) -> bool {
    match runtime.container_status(container_id).await {
        Ok(Some(status)) => status.state == ContainerState::ContainerRunning as i32,
        Ok(None) => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn query(text: &str) -> Result<LogQuery, String> {
        let pairs: Vec<(String, String)> = text
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (key.to_owned(), value.to_owned())
            })
            .collect();
        parse_query(&pairs, "2024-05-01T10:00:00Z".parse().expect("a time"))
    }

    fn pod(statuses: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "main"}]},
            "status": {"containerStatuses": statuses},
        }))
        .expect("a pod")
    }

    #[test]
    fn query_options_parse_like_pod_log_options() {
        let parsed = query("follow=true&tailLines=5&timestamps=1&previous=false&limitBytes=100")
            .expect("valid");
        assert!(parsed.follow);
        assert!(!parsed.previous);
        assert_eq!(parsed.options.tail_lines, Some(5));
        assert!(parsed.options.timestamps);
        assert_eq!(parsed.options.limit_bytes, Some(100));
        assert_eq!(query("").expect("empty is valid"), LogQuery::default());
        assert_eq!(
            query("sinceSeconds=60").expect("valid").options.since,
            Some("2024-05-01T09:59:00Z".parse().expect("a time"))
        );
        assert_eq!(
            query("sinceTime=2024-05-01T08:00:00Z")
                .expect("valid")
                .options
                .since,
            Some("2024-05-01T08:00:00Z".parse().expect("a time"))
        );
        assert_eq!(
            query("tailLines=-1").expect("valid").options.tail_lines,
            None
        );
        assert!(query("tailLines=x").is_err());
        assert!(query("follow=maybe").is_err());
        assert!(query("limitBytes=0").is_err());
        assert!(query("sinceSeconds=0").is_err());
    }

    #[test]
    fn a_running_container_reads_its_current_instance() {
        let pod = pod(json!([{
            "name": "main", "image": "busybox", "imageID": "", "ready": true, "restartCount": 2,
            "containerID": "containerd://abc",
            "state": {"running": {"startedAt": "2024-05-01T10:00:00Z"}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://old"}},
        }]));
        assert_eq!(
            select_instance(&pod, "main", false),
            Ok(Instance {
                container_id: "abc".to_owned(),
                restart_count: 2
            })
        );
        assert_eq!(
            select_instance(&pod, "main", true),
            Ok(Instance {
                container_id: "old".to_owned(),
                restart_count: 1
            })
        );
    }

    #[test]
    fn instance_errors_use_upstream_texts() {
        let waiting = pod(json!([{
            "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        }]));
        assert_eq!(
            select_instance(&waiting, "main", false),
            Err(
                r#"container "main" in pod "web" is waiting to start: ContainerCreating"#
                    .to_owned()
            )
        );
        assert_eq!(
            select_instance(&waiting, "main", true),
            Err(r#"previous terminated container "main" in pod "web" not found"#.to_owned())
        );
        assert_eq!(
            select_instance(&waiting, "other", false),
            Err(r#"container "other" in pod "web" is not available"#.to_owned())
        );
        let pulling = pod(json!([{
            "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff"}},
        }]));
        assert_eq!(
            select_instance(&pulling, "main", false),
            Err(r#"container "main" in pod "web" is waiting to start: trying and failing to pull image"#.to_owned())
        );
        let backing_off = pod(json!([{
            "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "containerID": "containerd://dead"}},
        }]));
        assert_eq!(
            select_instance(&backing_off, "main", false),
            Ok(Instance {
                container_id: "dead".to_owned(),
                restart_count: 2
            }),
            "a crash-looping container shows its last instance's log"
        );
    }

    #[test]
    fn followed_output_skips_old_lines_and_keeps_the_limit() {
        let lines = crate::cri::log::parse_log(
            b"2024-05-01T10:00:00Z stdout F old\n2024-05-01T10:00:02Z stdout F new\n",
        );
        let options = LogOptions {
            since: Some("2024-05-01T10:00:01Z".parse().expect("a time")),
            timestamps: true,
            ..LogOptions::default()
        };
        assert_eq!(
            render_new(&lines, &options),
            b"2024-05-01T10:00:02.000000000Z new\n"
        );
    }

    #[tokio::test]
    async fn follow_sends_the_file_then_new_lines_up_to_the_limit() {
        use std::io::Write as _;
        let directory = tempfile::tempdir().expect("a temporary directory");
        let path = directory.path().join("0.log");
        std::fs::write(
            &path,
            "2024-05-01T10:00:00Z stdout F one\n2024-05-01T10:00:01Z stdout F two\n",
        )
        .expect("the log is written");
        let options = LogOptions {
            tail_lines: Some(1),
            limit_bytes: Some(9),
            ..LogOptions::default()
        };
        let mut chunks = follow(path.clone(), options, None, "c".to_owned());
        let first = chunks.recv().await.expect("a chunk").expect("no error");
        assert_eq!(first, b"two\n");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(b"2024-05-01T10:00:02Z stdout F three\n"))
            .expect("the log grows");
        let second = chunks.recv().await.expect("a chunk").expect("no error");
        assert_eq!(second, b"three");
        assert!(chunks.recv().await.is_none(), "the limit ends the stream");
    }
}
