//! A thin CRI client for tests, and the handful of calls kubelet-like tests repeat.
//!
//! Owns the gRPC connection to a containerd's CRI socket (tonic over a unix socket), request
//! builders for pod sandboxes and containers with unique names, polling helpers with timeouts
//! (network ready, container exited) and parsing of CRI container log files
//! (`<RFC3339 time> <stream> <F|P> <text>`). Never starts, stops or configures containerd (that is
//! [`crate::containerd`]), never waits without a timeout and never hides a failed call: every error
//! names the call and the object it was about.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig, ListImagesRequest,
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatus,
    PodSandboxStatusRequest, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StatusRequest, StopContainerRequest, StopPodSandboxRequest,
    VersionRequest, VersionResponse, image_service_client::ImageServiceClient,
    runtime_service_client::RuntimeServiceClient,
};
use tonic::transport::{Channel, Endpoint};

/// How often the `wait_*` helpers poll.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Upper bound for one CRI call, so a wedged runtime fails the test instead of hanging it.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("connecting to the CRI socket {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("CRI {call} for {object} failed: {}: {}", status.code(), status.message())]
    Call {
        call: &'static str,
        object: String,
        status: Box<tonic::Status>,
    },
    #[error("CRI {call} for {object} answered without {field}")]
    Missing {
        call: &'static str,
        object: String,
        field: &'static str,
    },
    #[error("CRI {call} for {object} returned an invalid {field} {value:?}")]
    Invalid {
        call: &'static str,
        object: String,
        field: &'static str,
        value: String,
    },
    #[error("timed out after {waited:?} waiting for {what}; last seen: {last}")]
    Timeout {
        what: String,
        waited: Duration,
        last: String,
    },
    #[error("{action} {path}: {source}")]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Both CRI services over one connection.
#[derive(Debug, Clone)]
pub struct CriClient {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
    socket: PathBuf,
}

/// Connects to the CRI services on the unix socket `socket` (containerd's gRPC address).
pub async fn connect(socket: &Path) -> Result<CriClient, CriError> {
    let connect_error = |source| CriError::Connect {
        socket: socket.to_owned(),
        source,
    };
    let path = socket.to_owned();
    // The authority is a placeholder: the connector below ignores it and dials the socket.
    let channel = Endpoint::try_from("http://[::]:50051")
        .map_err(connect_error)?
        .timeout(CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .map_err(connect_error)?;
    Ok(CriClient {
        runtime: RuntimeServiceClient::new(channel.clone()),
        image: ImageServiceClient::new(channel),
        socket: socket.to_owned(),
    })
}

/// A pod sandbox config named `name` with a unique uid and namespace (tests run in parallel, and
/// containerd refuses two sandboxes with the same name/uid/namespace/attempt), hostname `name`
/// and container logs under `log_directory` (created by [`CriClient::run_pod_sandbox`]).
pub fn pod_sandbox_config(name: &str, log_directory: &Path) -> PodSandboxConfig {
    let unique = crate::unique_name("skiff");
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_owned(),
            uid: format!("{unique}-{name}"),
            namespace: unique,
            attempt: 0,
        }),
        hostname: name.to_owned(),
        log_directory: log_directory.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// A container config named `name` running `command` (replacing the image's entrypoint; empty
/// keeps it) from `image`, logging to `<name>_0.log` in the pod's log directory.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        command: command.iter().map(|part| (*part).to_owned()).collect(),
        log_path: format!("{name}_0.log"),
        ..Default::default()
    }
}

/// Where CRI writes the log of `container` in `pod`: `log_directory/log_path`.
pub fn container_log_path(pod: &PodSandboxConfig, container: &ContainerConfig) -> PathBuf {
    Path::new(&pod.log_directory).join(&container.log_path)
}

impl CriClient {
    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The runtime's name and versions; fails while the CRI plugin is still initialising.
    pub async fn version(&mut self) -> Result<VersionResponse, CriError> {
        let response = self
            .runtime
            .version(VersionRequest::default())
            .await
            .map_err(|status| self.call_error("Version", "the runtime", status))?;
        Ok(response.into_inner())
    }

    /// Whether the runtime reports `NetworkReady` (a CNI config is loaded), and its message.
    pub async fn network_ready(&mut self) -> Result<(bool, String), CriError> {
        let response = self
            .runtime
            .status(StatusRequest { verbose: false })
            .await
            .map_err(|status| self.call_error("Status", "the runtime", status))?
            .into_inner();
        let condition = response
            .status
            .into_iter()
            .flat_map(|status| status.conditions)
            .find(|condition| condition.r#type == "NetworkReady");
        Ok(match condition {
            Some(condition) => (
                condition.status,
                format!("{}: {}", condition.reason, condition.message),
            ),
            None => (false, "no NetworkReady condition".to_owned()),
        })
    }

    /// Waits until the runtime reports `NetworkReady`.
    pub async fn wait_network_ready(&mut self, timeout: Duration) -> Result<(), CriError> {
        let start = Instant::now();
        loop {
            let (ready, message) = self.network_ready().await?;
            if ready {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(CriError::Timeout {
                    what: format!("NetworkReady from the runtime at {}", self.socket.display()),
                    waited: timeout,
                    last: message,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Whether CRI lists an image tagged `name` (e.g. `docker.io/skiff/busybox:latest`).
    pub async fn image_listed(&mut self, name: &str) -> Result<bool, CriError> {
        let images = self
            .image
            .list_images(ListImagesRequest::default())
            .await
            .map_err(|status| self.call_error("ListImages", name, status))?
            .into_inner()
            .images;
        Ok(images
            .iter()
            .any(|image| image.repo_tags.iter().any(|tag| tag == name)))
    }

    /// Creates the pod's log directory and runs the sandbox; returns its id.
    pub async fn run_pod_sandbox(&mut self, config: &PodSandboxConfig) -> Result<String, CriError> {
        let object = pod_name(config);
        if !config.log_directory.is_empty() {
            std::fs::create_dir_all(&config.log_directory).map_err(|source| CriError::File {
                action: "creating the pod log directory",
                path: PathBuf::from(&config.log_directory),
                source,
            })?;
        }
        let response = self
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|status| self.call_error("RunPodSandbox", &object, status))?;
        Ok(response.into_inner().pod_sandbox_id)
    }

    pub async fn pod_sandbox_status(&mut self, pod_id: &str) -> Result<PodSandboxStatus, CriError> {
        let response = self
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.to_owned(),
                verbose: false,
            })
            .await
            .map_err(|status| {
                self.call_error("PodSandboxStatus", &format!("pod sandbox {pod_id}"), status)
            })?;
        response
            .into_inner()
            .status
            .ok_or_else(|| CriError::Missing {
                call: "PodSandboxStatus",
                object: format!("pod sandbox {pod_id}"),
                field: "status",
            })
    }

    /// The pod's primary IP, as reported by `PodSandboxStatus`.
    pub async fn pod_ip(&mut self, pod_id: &str) -> Result<IpAddr, CriError> {
        let status = self.pod_sandbox_status(pod_id).await?;
        let object = format!("pod sandbox {pod_id}");
        let ip = status
            .network
            .map(|network| network.ip)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| CriError::Missing {
                call: "PodSandboxStatus",
                object: object.clone(),
                field: "network.ip",
            })?;
        ip.parse().map_err(|_| CriError::Invalid {
            call: "PodSandboxStatus",
            object,
            field: "network.ip",
            value: ip,
        })
    }

    /// Creates a container in the pod `pod_id` (which was run with `pod`); returns its id.
    pub async fn create_container(
        &mut self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        config: &ContainerConfig,
    ) -> Result<String, CriError> {
        let object = format!(
            "container {} in pod {}",
            container_name(config),
            pod_name(pod)
        );
        let response = self
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.to_owned(),
                config: Some(config.clone()),
                sandbox_config: Some(pod.clone()),
            })
            .await
            .map_err(|status| self.call_error("CreateContainer", &object, status))?;
        Ok(response.into_inner().container_id)
    }

    pub async fn start_container(&mut self, container_id: &str) -> Result<(), CriError> {
        self.runtime
            .start_container(StartContainerRequest {
                container_id: container_id.to_owned(),
            })
            .await
            .map_err(|status| {
                self.call_error(
                    "StartContainer",
                    &format!("container {container_id}"),
                    status,
                )
            })?;
        Ok(())
    }

    /// [`CriClient::create_container`] then [`CriClient::start_container`]; returns the id.
    pub async fn run_container(
        &mut self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        config: &ContainerConfig,
    ) -> Result<String, CriError> {
        let id = self.create_container(pod_id, pod, config).await?;
        self.start_container(&id).await?;
        Ok(id)
    }

    pub async fn container_status(
        &mut self,
        container_id: &str,
    ) -> Result<ContainerStatus, CriError> {
        let response = self
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: container_id.to_owned(),
                verbose: false,
            })
            .await
            .map_err(|status| {
                self.call_error(
                    "ContainerStatus",
                    &format!("container {container_id}"),
                    status,
                )
            })?;
        response
            .into_inner()
            .status
            .ok_or_else(|| CriError::Missing {
                call: "ContainerStatus",
                object: format!("container {container_id}"),
                field: "status",
            })
    }

    /// Waits until the container has exited and returns its final status (see `exit_code`).
    pub async fn wait_container_exited(
        &mut self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<ContainerStatus, CriError> {
        let start = Instant::now();
        loop {
            let status = self.container_status(container_id).await?;
            if status.state == ContainerState::ContainerExited as i32 {
                return Ok(status);
            }
            if start.elapsed() > timeout {
                let state = ContainerState::try_from(status.state).map_or_else(
                    |_| status.state.to_string(),
                    |state| state.as_str_name().to_owned(),
                );
                return Err(CriError::Timeout {
                    what: format!("container {container_id} to exit"),
                    waited: timeout,
                    last: format!(
                        "state {state}, reason {:?}, message {:?}",
                        status.reason, status.message
                    ),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Stops the container (SIGTERM, SIGKILL after `grace`) and removes it.
    pub async fn stop_and_remove_container(
        &mut self,
        container_id: &str,
        grace: Duration,
    ) -> Result<(), CriError> {
        let object = format!("container {container_id}");
        self.runtime
            .stop_container(StopContainerRequest {
                container_id: container_id.to_owned(),
                timeout: i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
            })
            .await
            .map_err(|status| self.call_error("StopContainer", &object, status))?;
        self.runtime
            .remove_container(RemoveContainerRequest {
                container_id: container_id.to_owned(),
            })
            .await
            .map_err(|status| self.call_error("RemoveContainer", &object, status))?;
        Ok(())
    }

    /// Stops the pod sandbox: its containers, then its network (CNI DEL).
    pub async fn stop_pod_sandbox(&mut self, pod_id: &str) -> Result<(), CriError> {
        let object = format!("pod sandbox {pod_id}");
        self.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_id.to_owned(),
            })
            .await
            .map_err(|status| self.call_error("StopPodSandbox", &object, status))?;
        Ok(())
    }

    /// Removes a stopped pod sandbox with its containers.
    pub async fn remove_pod_sandbox(&mut self, pod_id: &str) -> Result<(), CriError> {
        let object = format!("pod sandbox {pod_id}");
        self.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.to_owned(),
            })
            .await
            .map_err(|status| self.call_error("RemovePodSandbox", &object, status))?;
        Ok(())
    }

    /// Stops the pod sandbox (its containers, then its network) and removes it with its containers.
    pub async fn stop_and_remove_pod_sandbox(&mut self, pod_id: &str) -> Result<(), CriError> {
        self.stop_pod_sandbox(pod_id).await?;
        self.remove_pod_sandbox(pod_id).await
    }

    /// Stops and removes every pod sandbox the runtime still has; returns their ids. Goes on after
    /// a failure and returns the first error once all were tried.
    pub async fn remove_all_pod_sandboxes(&mut self) -> Result<Vec<String>, CriError> {
        let pods = self
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .map_err(|status| self.call_error("ListPodSandbox", "all pod sandboxes", status))?
            .into_inner()
            .items;
        let mut first_error = None;
        let mut removed = Vec::new();
        for pod in pods {
            match self.stop_and_remove_pod_sandbox(&pod.id).await {
                Ok(()) => removed.push(pod.id),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(removed),
        }
    }

    fn call_error(&self, call: &'static str, object: &str, status: tonic::Status) -> CriError {
        CriError::Call {
            call,
            object: format!("{object} (runtime at {})", self.socket.display()),
            status: Box::new(status),
        }
    }
}

/// One line of a CRI container log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// RFC 3339 timestamp with nanoseconds, as written by the runtime.
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// `true` for `P` (the line continues in the next entry), `false` for `F`.
    pub partial: bool,
    pub text: String,
}

/// Parses a CRI log file's content; lines that do not have the four fields are skipped.
pub fn parse_log(content: &str) -> Vec<LogLine> {
    content
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(4, ' ');
            let time = fields.next()?;
            let stream = fields.next()?;
            let tag = fields.next()?;
            let text = fields.next().unwrap_or("");
            Some(LogLine {
                time: time.to_owned(),
                stream: stream.to_owned(),
                partial: tag.split(':').any(|flag| flag == "P"),
                text: text.to_owned(),
            })
        })
        .collect()
}

/// Reads and parses the container log file at `path`.
pub fn read_container_log(path: &Path) -> Result<Vec<LogLine>, CriError> {
    let content = std::fs::read_to_string(path).map_err(|source| CriError::File {
        action: "reading the container log",
        path: path.to_owned(),
        source,
    })?;
    Ok(parse_log(&content))
}

/// Waits until the container log at `path` has a complete line with exactly `text`; returns all
/// lines. (The runtime may still be copying output when it reports the container exited.)
pub async fn wait_log_line(
    path: &Path,
    text: &str,
    timeout: Duration,
) -> Result<Vec<LogLine>, CriError> {
    let start = Instant::now();
    loop {
        let lines = match read_container_log(path) {
            Ok(lines) => lines,
            Err(CriError::File { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Vec::new()
            }
            Err(error) => return Err(error),
        };
        if lines.iter().any(|line| !line.partial && line.text == text) {
            return Ok(lines);
        }
        if start.elapsed() > timeout {
            return Err(CriError::Timeout {
                what: format!("the line {text:?} in the container log {}", path.display()),
                waited: timeout,
                last: format!("{lines:?}"),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn pod_name(config: &PodSandboxConfig) -> String {
    config.metadata.as_ref().map_or_else(
        || "(unnamed pod)".to_owned(),
        |metadata| format!("{}/{}", metadata.namespace, metadata.name),
    )
}

fn container_name(config: &ContainerConfig) -> String {
    config.metadata.as_ref().map_or_else(
        || "(unnamed container)".to_owned(),
        |metadata| metadata.name.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_split_into_time_stream_tag_and_text() {
        let content = "2026-05-07T10:00:00.123456789Z stdout F hello from skiff\n\
                       2026-05-07T10:00:00.2Z stderr P part \n\
                       2026-05-07T10:00:00.3Z stdout F \n";
        let lines = parse_log(content);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].time, "2026-05-07T10:00:00.123456789Z");
        assert_eq!(lines[0].stream, "stdout");
        assert!(!lines[0].partial);
        assert_eq!(lines[0].text, "hello from skiff");
        assert!(lines[1].partial);
        assert_eq!(lines[1].text, "part ");
        assert_eq!(lines[2].text, "");
    }

    #[test]
    fn pod_configs_get_unique_uids_and_namespaces() {
        let a = pod_sandbox_config("web", Path::new("/tmp/logs/a"));
        let b = pod_sandbox_config("web", Path::new("/tmp/logs/b"));
        let (a, b) = (a.metadata.unwrap(), b.metadata.unwrap());
        assert_eq!(a.name, b.name);
        assert_ne!(a.uid, b.uid);
        assert_ne!(a.namespace, b.namespace);
    }

    #[test]
    fn container_logs_live_in_the_pod_log_directory() {
        let pod = pod_sandbox_config("web", Path::new("/tmp/logs/web"));
        let container = container_config("echo", "docker.io/skiff/busybox:latest", &["echo", "hi"]);
        assert_eq!(
            container_log_path(&pod, &container),
            Path::new("/tmp/logs/web/echo_0.log")
        );
    }
}
