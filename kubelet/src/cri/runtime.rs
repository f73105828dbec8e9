//! The CRI client: one method per `runtime.v1` call the kubelet makes.
//!
//! Owns [`Runtime`] (both CRI services over one channel), the deadline of each call (upstream's
//! `--runtime-request-timeout`, doubled for RunPodSandbox and PullImage, extended by the grace
//! period or exec timeout for StopContainer and ExecSync), a debug span per call, and the
//! idempotent reading of stop/remove (the object being gone already is success). Makes exactly one
//! CRI call per method: no retries, no pod logic, no file system access.

use std::{
    collections::HashMap,
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use k8s_cri::v1::{
    Container, ContainerConfig, ContainerFilter, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, Image, ImageSpec, ImageStatusRequest,
    ListContainersRequest, ListImagesRequest, ListPodSandboxRequest, PodSandbox, PodSandboxConfig,
    PodSandboxFilter, PodSandboxStatus, PodSandboxStatusRequest, PullImageRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, ReopenContainerLogRequest,
    RunPodSandboxRequest, StartContainerRequest, StatusRequest, StopContainerRequest,
    StopPodSandboxRequest, VersionRequest, image_service_client::ImageServiceClient,
    runtime_service_client::RuntimeServiceClient,
};
use tonic::transport::Channel;
use tracing::Instrument as _;

use super::{endpoint, error::CriError};

/// Upstream's `--runtime-request-timeout` default: the deadline of an ordinary CRI call.
pub const DEFAULT_RUNTIME_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The CRI API version the kubelet asks for in `Version` (upstream's `kubeRuntimeAPIVersion`).
pub const KUBE_RUNTIME_API_VERSION: &str = "0.1.0";

/// Largest message the kubelet accepts from the runtime (upstream's `maxMsgSize`, 16 MiB): big
/// ExecSync outputs and long container lists exceed gRPC's 4 MiB default.
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// The object of calls about the runtime itself.
const THE_RUNTIME: &str = "the runtime";

/// A connection to the container runtime's CRI services. Cheap to clone: clones share the channel.
#[derive(Debug, Clone)]
pub struct Runtime {
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
    endpoint: Arc<str>,
    socket: Arc<PathBuf>,
    call_timeout: Duration,
}

/// The runtime's name and versions, as CRI `Version` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    /// Version of the kubelet runtime API the runtime answered for (`0.1.0`).
    pub version: String,
    /// Name of the runtime, e.g. `containerd`.
    pub runtime_name: String,
    /// Version of the runtime, e.g. `1.6.20~ds1`.
    pub runtime_version: String,
    /// CRI API version the runtime implements, e.g. `v1`.
    pub runtime_api_version: String,
}

/// One runtime condition as the runtime reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeCondition {
    /// Whether the condition holds.
    pub status: bool,
    /// Machine-readable reason, when it does not hold.
    pub reason: String,
    /// Human-readable detail, when it does not hold.
    pub message: String,
}

/// The conditions of CRI `Status` the kubelet acts on. A condition the runtime did not report is
/// `None` (upstream treats a missing `RuntimeReady` as not ready).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimeConditions {
    /// `RuntimeReady`: the runtime can run containers.
    pub runtime_ready: Option<RuntimeCondition>,
    /// `NetworkReady`: the runtime's pod network (CNI) is configured.
    pub network_ready: Option<RuntimeCondition>,
}

impl RuntimeConditions {
    /// Whether `RuntimeReady` was reported and holds.
    pub fn runtime_is_ready(&self) -> bool {
        self.runtime_ready
            .as_ref()
            .is_some_and(|condition| condition.status)
    }

    /// Whether `NetworkReady` was reported and holds.
    pub fn network_is_ready(&self) -> bool {
        self.network_ready
            .as_ref()
            .is_some_and(|condition| condition.status)
    }
}

/// What a command run with [`Runtime::exec_sync`] left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// The command's exit code (non-zero is not an error of the call).
    pub exit_code: i32,
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to stderr.
    pub stderr: Vec<u8>,
}

impl Runtime {
    /// Connects to the runtime at `endpoint` (the kubelet's `--container-runtime-endpoint`:
    /// `unix:///run/containerd/containerd.sock`, or a bare absolute socket path). Every later call
    /// gets `call_timeout` as its deadline (upstream's `--runtime-request-timeout`, default
    /// [`DEFAULT_RUNTIME_REQUEST_TIMEOUT`]); see each method for the exceptions. Fails naming the
    /// socket when nothing answers on it within `call_timeout`. Does not check that the socket
    /// serves CRI: call [`Runtime::version`] for that.
    pub async fn connect(endpoint: &str, call_timeout: Duration) -> Result<Runtime, CriError> {
        let socket = endpoint::socket_path(endpoint)?;
        let channel = endpoint::connect(endpoint, &socket, call_timeout)
            .instrument(tracing::debug_span!("cri_connect", endpoint))
            .await?;
        Ok(Runtime {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE),
            image: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_SIZE),
            endpoint: Arc::from(endpoint),
            socket: Arc::new(socket),
            call_timeout,
        })
    }

    /// The endpoint this runtime was connected with.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The unix socket the endpoint names.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The deadline of an ordinary call.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// Deadline of RunPodSandbox and PullImage: twice the ordinary one (upstream doubles it for
    /// sandbox creation; image pulls get the same so a wedged registry cannot hang a pod worker).
    fn long_call_timeout(&self) -> Duration {
        self.call_timeout.saturating_mul(2)
    }

    /// The runtime's name and versions. Fails with [`CriError::NotCri`] when the socket does not
    /// serve CRI `runtime.v1`.
    pub async fn version(&self) -> Result<RuntimeVersion, CriError> {
        let request = VersionRequest {
            version: KUBE_RUNTIME_API_VERSION.to_owned(),
        };
        let response = self
            .call(
                "Version",
                THE_RUNTIME,
                self.call_timeout,
                self.runtime.clone().version(request),
            )
            .await?;
        Ok(RuntimeVersion {
            version: response.version,
            runtime_name: response.runtime_name,
            runtime_version: response.runtime_version,
            runtime_api_version: response.runtime_api_version,
        })
    }

    /// The runtime's `RuntimeReady` and `NetworkReady` conditions.
    pub async fn status(&self) -> Result<RuntimeConditions, CriError> {
        let response = self
            .call(
                "Status",
                THE_RUNTIME,
                self.call_timeout,
                self.runtime
                    .clone()
                    .status(StatusRequest { verbose: false }),
            )
            .await?;
        let mut conditions = RuntimeConditions::default();
        for condition in response
            .status
            .into_iter()
            .flat_map(|status| status.conditions)
        {
            let slot = match condition.r#type.as_str() {
                "RuntimeReady" => &mut conditions.runtime_ready,
                "NetworkReady" => &mut conditions.network_ready,
                _ => continue,
            };
            *slot = Some(RuntimeCondition {
                status: condition.status,
                reason: condition.reason,
                message: condition.message,
            });
        }
        Ok(conditions)
    }

    /// Creates and starts the pod sandbox `config` (the runtime sets up its network through CNI)
    /// with the RuntimeClass handler `runtime_handler` (empty: the runtime's default); returns
    /// the sandbox id. The caller creates `config.log_directory` first, as upstream's kubelet
    /// does: the runtime does not. Deadline: twice the ordinary one.
    pub async fn run_pod_sandbox(
        &self,
        config: PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String, CriError> {
        let object = sandbox_config_object(&config);
        let request = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: runtime_handler.to_owned(),
        };
        let response = self
            .call(
                "RunPodSandbox",
                &object,
                self.long_call_timeout(),
                self.runtime.clone().run_pod_sandbox(request),
            )
            .await?;
        non_empty(
            response.pod_sandbox_id,
            "RunPodSandbox",
            &object,
            "pod_sandbox_id",
        )
    }

    /// Stops the sandbox: kills its containers and tears down its network. A sandbox that does
    /// not exist is stopped already (`Ok`).
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        let result = self
            .call(
                "StopPodSandbox",
                &sandbox_object(id),
                self.call_timeout,
                self.runtime.clone().stop_pod_sandbox(request),
            )
            .await;
        gone_is_done(result)
    }

    /// Removes a stopped sandbox with its containers. A sandbox that does not exist is removed
    /// already (`Ok`).
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        let result = self
            .call(
                "RemovePodSandbox",
                &sandbox_object(id),
                self.call_timeout,
                self.runtime.clone().remove_pod_sandbox(request),
            )
            .await;
        gone_is_done(result)
    }

    /// The sandbox's status (state, network IPs, …), or `None` when it does not exist.
    pub async fn pod_sandbox_status(&self, id: &str) -> Result<Option<PodSandboxStatus>, CriError> {
        let object = sandbox_object(id);
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        let result = self
            .call(
                "PodSandboxStatus",
                &object,
                self.call_timeout,
                self.runtime.clone().pod_sandbox_status(request),
            )
            .await;
        match gone_is_none(result)? {
            None => Ok(None),
            Some(response) => response
                .status
                .map(Some)
                .ok_or_else(|| missing("PodSandboxStatus", &object, "status")),
        }
    }

    /// The sandboxes whose labels include every pair of `label_selector` (all when empty).
    pub async fn list_pod_sandboxes(
        &self,
        label_selector: HashMap<String, String>,
    ) -> Result<Vec<PodSandbox>, CriError> {
        let object = selector_object("pod sandboxes", &label_selector);
        let filter = (!label_selector.is_empty()).then(|| PodSandboxFilter {
            label_selector,
            ..Default::default()
        });
        let response = self
            .call(
                "ListPodSandbox",
                &object,
                self.call_timeout,
                self.runtime
                    .clone()
                    .list_pod_sandbox(ListPodSandboxRequest { filter }),
            )
            .await?;
        Ok(response.items)
    }

    /// Creates the container `config` in the sandbox `sandbox_id`, which was run with
    /// `sandbox_config`; returns the container id. The image must be present.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> Result<String, CriError> {
        let name = config
            .metadata
            .as_ref()
            .map_or("(unnamed)", |metadata| metadata.name.as_str());
        let object = format!("container {name} in pod sandbox {sandbox_id}");
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let response = self
            .call(
                "CreateContainer",
                &object,
                self.call_timeout,
                self.runtime.clone().create_container(request),
            )
            .await?;
        non_empty(
            response.container_id,
            "CreateContainer",
            &object,
            "container_id",
        )
    }

    /// Starts a created container.
    pub async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let request = StartContainerRequest {
            container_id: id.to_owned(),
        };
        self.call(
            "StartContainer",
            &container_object(id),
            self.call_timeout,
            self.runtime.clone().start_container(request),
        )
        .await?;
        Ok(())
    }

    /// Stops the container: its stop signal (SIGTERM unless the image says otherwise), then
    /// SIGKILL once `timeout` (the grace period, rounded up to whole seconds; zero kills at once)
    /// has passed. Deadline: the ordinary one plus `timeout`. A container that does not exist is
    /// stopped already (`Ok`).
    pub async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), CriError> {
        let request = StopContainerRequest {
            container_id: id.to_owned(),
            timeout: whole_seconds(timeout),
        };
        let result = self
            .call(
                "StopContainer",
                &container_object(id),
                self.call_timeout.saturating_add(timeout),
                self.runtime.clone().stop_container(request),
            )
            .await;
        gone_is_done(result)
    }

    /// Removes the container (killing it if it still runs). A container that does not exist is
    /// removed already (`Ok`).
    pub async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let request = RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        let result = self
            .call(
                "RemoveContainer",
                &container_object(id),
                self.call_timeout,
                self.runtime.clone().remove_container(request),
            )
            .await;
        gone_is_done(result)
    }

    /// The containers `filter` selects (by id, sandbox, state and labels; the default selects all).
    pub async fn list_containers(
        &self,
        filter: ContainerFilter,
    ) -> Result<Vec<Container>, CriError> {
        let object = container_filter_object(&filter);
        let response = self
            .call(
                "ListContainers",
                &object,
                self.call_timeout,
                self.runtime.clone().list_containers(ListContainersRequest {
                    filter: Some(filter),
                }),
            )
            .await?;
        Ok(response.containers)
    }

    /// The container's status (state, exit code, reason, …), or `None` when it does not exist.
    pub async fn container_status(&self, id: &str) -> Result<Option<ContainerStatus>, CriError> {
        let object = container_object(id);
        let request = ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        let result = self
            .call(
                "ContainerStatus",
                &object,
                self.call_timeout,
                self.runtime.clone().container_status(request),
            )
            .await;
        match gone_is_none(result)? {
            None => Ok(None),
            Some(response) => response
                .status
                .map(Some)
                .ok_or_else(|| missing("ContainerStatus", &object, "status")),
        }
    }

    /// Runs `command` in the running container and waits for it (exec probes). The runtime kills
    /// it after `timeout` (rounded up to whole seconds; zero waits for ever) and the call then
    /// fails with [`CriError::Timeout`]. A non-zero exit code is a result, not an error. Deadline:
    /// the ordinary one plus `timeout`, as upstream's kubelet does, to leave the runtime time to
    /// clean up.
    pub async fn exec_sync(
        &self,
        id: &str,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecResult, CriError> {
        let object = format!("{command:?} in container {id}");
        let request = ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: command,
            timeout: whole_seconds(timeout),
        };
        let deadline = self.call_timeout.saturating_add(timeout);
        let response = self
            .call(
                "ExecSync",
                &object,
                deadline,
                self.runtime.clone().exec_sync(request),
            )
            .await
            .map_err(|error| match error {
                // The runtime's own exec timeout: report the timeout the caller asked for.
                CriError::Timeout { call, object, .. } if !timeout.is_zero() => CriError::Timeout {
                    call,
                    object,
                    after: timeout,
                },
                other => other,
            })?;
        Ok(ExecResult {
            exit_code: response.exit_code,
            stdout: response.stdout,
            stderr: response.stderr,
        })
    }

    /// The image `image` (a name, tag or digest reference, or an image id) as the runtime stores
    /// it, or `None` when it is not present.
    pub async fn image_status(&self, image: &str) -> Result<Option<Image>, CriError> {
        let request = ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        let result = self
            .call(
                "ImageStatus",
                &image_object(image),
                self.call_timeout,
                self.image.clone().image_status(request),
            )
            .await;
        Ok(gone_is_none(result)?.and_then(|response| response.image))
    }

    /// Pulls `image` (anonymously; registry credentials are not supported yet) for the sandbox
    /// `sandbox_config`, if any; returns the image reference the runtime resolved it to (a
    /// digest reference, for container configs). Deadline: twice the ordinary one.
    pub async fn pull_image(
        &self,
        image: &str,
        sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String, CriError> {
        let object = image_object(image);
        let request = PullImageRequest {
            image: Some(image_spec(image)),
            auth: None,
            sandbox_config,
        };
        let response = self
            .call(
                "PullImage",
                &object,
                self.long_call_timeout(),
                self.image.clone().pull_image(request),
            )
            .await?;
        non_empty(response.image_ref, "PullImage", &object, "image_ref")
    }

    /// Every image the runtime stores.
    pub async fn list_images(&self) -> Result<Vec<Image>, CriError> {
        let response = self
            .call(
                "ListImages",
                "all images",
                self.call_timeout,
                self.image
                    .clone()
                    .list_images(ListImagesRequest { filter: None }),
            )
            .await?;
        Ok(response.images)
    }

    /// Makes the runtime reopen the container's log file (after the kubelet rotated it).
    pub async fn reopen_container_log(&self, id: &str) -> Result<(), CriError> {
        let request = ReopenContainerLogRequest {
            container_id: id.to_owned(),
        };
        self.call(
            "ReopenContainerLog",
            &container_object(id),
            self.call_timeout,
            self.runtime.clone().reopen_container_log(request),
        )
        .await?;
        Ok(())
    }

    /// Runs one CRI call with `deadline`, in a debug span naming `call` and `object`, and maps a
    /// failure to a [`CriError`] naming them. Dropping the call at the deadline resets its HTTP/2
    /// stream, which cancels the runtime's work on it.
    async fn call<T>(
        &self,
        call: &'static str,
        object: &str,
        deadline: Duration,
        request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CriError> {
        let span = tracing::debug_span!("cri", call, object);
        async {
            let start = tokio::time::Instant::now();
            let result = match tokio::time::timeout(deadline, request).await {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) => Err(CriError::from_status(
                    &self.endpoint,
                    call,
                    object,
                    deadline,
                    &status,
                )),
                Err(_elapsed) => Err(CriError::Timeout {
                    call,
                    object: object.to_owned(),
                    after: deadline,
                }),
            };
            match &result {
                Ok(_) => tracing::debug!(elapsed = ?start.elapsed(), "done"),
                Err(error) => tracing::debug!(elapsed = ?start.elapsed(), %error, "failed"),
            }
            result
        }
        .instrument(span)
        .await
    }
}

/// `Ok` for a stop/remove of an object that is gone already.
fn gone_is_done<T>(result: Result<T, CriError>) -> Result<(), CriError> {
    match result {
        Ok(_) => Ok(()),
        Err(error) if error.is_not_found() => Ok(()),
        Err(error) => Err(error),
    }
}

/// `None` for a status of an object that does not exist.
fn gone_is_none<T>(result: Result<T, CriError>) -> Result<Option<T>, CriError> {
    match result {
        Ok(response) => Ok(Some(response)),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error),
    }
}

fn missing(call: &'static str, object: &str, field: &'static str) -> CriError {
    CriError::MissingField {
        call,
        object: object.to_owned(),
        field,
    }
}

/// `value`, or [`CriError::MissingField`] when the runtime left it empty.
fn non_empty(
    value: String,
    call: &'static str,
    object: &str,
    field: &'static str,
) -> Result<String, CriError> {
    if value.is_empty() {
        Err(missing(call, object, field))
    } else {
        Ok(value)
    }
}

/// CRI counts timeouts in whole seconds; a started second counts (so 500 ms does not become the
/// "no timeout" of zero).
fn whole_seconds(duration: Duration) -> i64 {
    let seconds = duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0));
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

fn image_spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

fn sandbox_object(id: &str) -> String {
    format!("pod sandbox {id}")
}

fn container_object(id: &str) -> String {
    format!("container {id}")
}

fn image_object(image: &str) -> String {
    format!("image {image}")
}

/// `pod sandbox <namespace>/<name> (uid <uid>, attempt <n>)`, from the sandbox config.
fn sandbox_config_object(config: &PodSandboxConfig) -> String {
    match &config.metadata {
        Some(metadata) => format!(
            "pod sandbox {}/{} (uid {}, attempt {})",
            metadata.namespace, metadata.name, metadata.uid, metadata.attempt
        ),
        None => "pod sandbox (no metadata)".to_owned(),
    }
}

/// `<what> with labels a=b,c=d` (sorted), or `all <what>`.
fn selector_object(what: &str, labels: &HashMap<String, String>) -> String {
    if labels.is_empty() {
        return format!("all {what}");
    }
    let mut pairs: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    pairs.sort();
    format!("{what} with labels {}", pairs.join(","))
}

fn container_filter_object(filter: &ContainerFilter) -> String {
    let mut object = selector_object("containers", &filter.label_selector);
    if !filter.id.is_empty() {
        object.push_str(&format!(" with id {}", filter.id));
    }
    if !filter.pod_sandbox_id.is_empty() {
        object.push_str(&format!(" in pod sandbox {}", filter.pod_sandbox_id));
    }
    if let Some(state) = &filter.state {
        let name = k8s_cri::v1::ContainerState::try_from(state.state).map_or_else(
            |_| state.state.to_string(),
            |state| state.as_str_name().to_owned(),
        );
        object.push_str(&format!(" in state {name}"));
    }
    object
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1::{ContainerState, ContainerStateValue, PodSandboxMetadata};

    use super::*;

    #[test]
    fn timeouts_count_started_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(30)), 30);
        assert_eq!(whole_seconds(Duration::from_millis(30_500)), 31);
        assert_eq!(whole_seconds(Duration::MAX), i64::MAX);
    }

    #[test]
    fn sandbox_configs_are_named_by_namespace_name_and_uid() {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web-0".to_owned(),
                uid: "1234".to_owned(),
                namespace: "default".to_owned(),
                attempt: 2,
            }),
            ..Default::default()
        };
        assert_eq!(
            sandbox_config_object(&config),
            "pod sandbox default/web-0 (uid 1234, attempt 2)"
        );
    }

    #[test]
    fn filters_are_described_with_sorted_labels() {
        let filter = ContainerFilter {
            pod_sandbox_id: "abc".to_owned(),
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning as i32,
            }),
            label_selector: HashMap::from([
                ("io.kubernetes.pod.name".to_owned(), "web-0".to_owned()),
                ("app".to_owned(), "web".to_owned()),
            ]),
            ..Default::default()
        };
        assert_eq!(
            container_filter_object(&filter),
            "containers with labels app=web,io.kubernetes.pod.name=web-0 \
             in pod sandbox abc in state CONTAINER_RUNNING"
        );
        assert_eq!(
            container_filter_object(&ContainerFilter::default()),
            "all containers"
        );
    }

    #[test]
    fn not_found_is_success_for_stop_and_none_for_status() {
        let not_found = || CriError::Call {
            call: "ContainerStatus",
            object: "container abc".to_owned(),
            code: tonic::Code::NotFound,
            message: "not found".to_owned(),
        };
        assert!(gone_is_done::<()>(Err(not_found())).is_ok());
        assert!(matches!(gone_is_none::<()>(Err(not_found())), Ok(None)));
        let unavailable = CriError::Call {
            call: "ContainerStatus",
            object: "container abc".to_owned(),
            code: tonic::Code::Unavailable,
            message: "connection refused".to_owned(),
        };
        assert!(gone_is_none::<()>(Err(unavailable)).is_err());
    }
}
