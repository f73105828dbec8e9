//! The pod's API status, computed from the spec and what the runtime holds.
//!
//! Owns upstream's `generateAPIPodStatus` (phase with `getPhase`, reason/message preservation,
//! `activeDeadlineSeconds`), `convertToAPIContainerStatuses` (waiting / running / terminated
//! states, `lastState`, restart counts, waiting reasons from the last start failure), the
//! prober's ready/started marking, the kubelet-owned conditions (`PodReadyToStartContainers`,
//! `Initialized`, `Ready`, `ContainersReady`, `PodScheduled`) with their reasons and messages,
//! the status manager's `lastTransitionTime`/`startTime` rules, `TerminatePod`'s final status
//! and `isPodStatusByKubeletEqual` (as [`status_changed`]). Never talks to the API server.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiContainerState, ContainerStateRunning,
    ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition,
    PodIP, PodStatus, VolumeMountStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::backoff::go_duration;
use super::container::{CREATE_CONTAINER_CONFIG_ERROR, ContainerConfigError};
use super::image::ImageError;
use super::observed::{ContainerState, ObservedContainer, ObservedPod, ProbeResult};
use super::plan::{pod_sandbox_changed, should_container_be_restarted};
use super::resources::pod_qos;
use super::{
    NodeContext, PodPhase, RestartPolicy, add_seconds, format_pod, is_deleted,
    is_restartable_init_container, is_static_pod, pod_containers, pod_init_containers,
    truncate_to_seconds,
};

/// Waiting reason before a container's first start.
pub const CONTAINER_CREATING: &str = "ContainerCreating";
/// Waiting reason of every container while init containers run.
pub const POD_INITIALIZING: &str = "PodInitializing";
/// Waiting reason while a restart is held back.
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
/// Waiting reason when `CreateContainer` failed.
pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
/// Waiting reason when `StartContainer` failed.
pub const RUN_CONTAINER_ERROR: &str = "RunContainerError";
/// Waiting reason when the pre-start hook failed.
pub const PRE_START_HOOK_ERROR: &str = "PreStartHookError";
/// Waiting reason when the postStart hook failed.
pub const POST_START_HOOK_ERROR: &str = "PostStartHookError";
/// Terminated reason when a container vanished from the runtime.
pub const CONTAINER_STATUS_UNKNOWN: &str = "ContainerStatusUnknown";

/// Condition reason: init containers have not all succeeded.
pub const CONTAINERS_NOT_INITIALIZED: &str = "ContainersNotInitialized";
/// Condition reason: some container is not ready.
pub const CONTAINERS_NOT_READY: &str = "ContainersNotReady";
/// Condition reason: no container statuses at all.
pub const UNKNOWN_CONTAINER_STATUSES: &str = "UnknownContainerStatuses";
/// Condition reason: the pod succeeded.
pub const POD_COMPLETED: &str = "PodCompleted";
/// Condition reason: the pod failed.
pub const POD_FAILED: &str = "PodFailed";
/// Condition reason: a readiness gate is not satisfied.
pub const READINESS_GATES_NOT_READY: &str = "ReadinessGatesNotReady";

/// Pod reason when `activeDeadlineSeconds` passed.
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
/// Pod message when `activeDeadlineSeconds` passed.
pub const DEADLINE_EXCEEDED_MESSAGE: &str =
    "Pod was active on the node longer than the specified deadline";

/// The kubelet-owned condition types (upstream `PodConditionsByKubelet` plus
/// `PodReadyToStartContainers`).
const KUBELET_CONDITIONS: [&str; 7] = [
    "PodScheduled",
    "Ready",
    "Initialized",
    "ContainersReady",
    "PodReadyToStartContainers",
    "PodResizeInProgress",
    "PodResizePending",
];
/// Upstream `PodConditionSharedByKubelet`.
const DISRUPTION_TARGET: &str = "DisruptionTarget";

/// Why a container is waiting (upstream `reasonCache` entry): a reason and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingReason {
    /// CamelCase reason (`CrashLoopBackOff`, `ErrImagePull`, ...).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl WaitingReason {
    /// Any reason and message.
    #[must_use]
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// `CrashLoopBackOff`: `back-off 20s restarting failed container=NAME pod=NAME_NS(UID)`.
    #[must_use]
    pub fn crash_loop_back_off(pod: &Pod, container: &str, delay: Duration) -> Self {
        Self::new(
            CRASH_LOOP_BACK_OFF,
            format!(
                "back-off {} restarting failed container={container} pod={}",
                go_duration(delay),
                format_pod(pod)
            ),
        )
    }

    /// `CreateContainerConfigError` with the error's text.
    #[must_use]
    pub fn from_config_error(error: &ContainerConfigError) -> Self {
        Self::new(CREATE_CONTAINER_CONFIG_ERROR, error.to_string())
    }

    /// The image error's reason (`ErrImagePull`, `ImagePullBackOff`, ...) and text.
    #[must_use]
    pub fn from_image_error(error: &ImageError) -> Self {
        Self::new(error.reason(), error.to_string())
    }

    /// `CreateContainerError` with the runtime's message.
    #[must_use]
    pub fn create_container_error(message: impl Into<String>) -> Self {
        Self::new(CREATE_CONTAINER_ERROR, message)
    }

    /// `RunContainerError` with the runtime's message.
    #[must_use]
    pub fn run_container_error(message: impl Into<String>) -> Self {
        Self::new(RUN_CONTAINER_ERROR, message)
    }

    /// `PostStartHookError` with the hook's failure message.
    #[must_use]
    pub fn post_start_hook_error(message: impl Into<String>) -> Self {
        Self::new(POST_START_HOOK_ERROR, message)
    }
}

/// The last start failure per container name (upstream `reasonCache`). Record a failure or
/// back-off, clear it when a start succeeds; the status shows it while the container waits to
/// be restarted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitingReasons {
    reasons: BTreeMap<String, WaitingReason>,
}

impl WaitingReasons {
    /// Records why `container` could not start.
    pub fn record(&mut self, container: &str, reason: WaitingReason) {
        self.reasons.insert(container.to_owned(), reason);
    }

    /// Forgets `container`'s failure (it started).
    pub fn clear(&mut self, container: &str) {
        self.reasons.remove(container);
    }

    /// The recorded reason for `container`.
    #[must_use]
    pub fn get(&self, container: &str) -> Option<&WaitingReason> {
        self.reasons.get(container)
    }
}

/// Inputs of [`generate_pod_status`] besides the pod and the node.
#[derive(Debug, Clone, Copy)]
pub struct StatusInputs<'a> {
    /// Now (transition times, start time, active deadline).
    pub now: Timestamp,
    /// What the runtime and the prober report.
    pub observed: &'a ObservedPod,
    /// Last start failures.
    pub waiting_reasons: &'a WaitingReasons,
    /// The status this kubelet last generated for the pod (upstream status manager cache);
    /// `None` falls back to the API's `pod.status`.
    pub previous: Option<&'a PodStatus>,
}

/// Upstream `generateAPIPodStatus` followed by the status manager's `updateStatusInternal`
/// (transition times, start time, second-precision times).
#[must_use]
pub fn generate_pod_status(pod: &Pod, node: &NodeContext, inputs: &StatusInputs<'_>) -> PodStatus {
    let api = pod.status.clone().unwrap_or_default();
    let old = inputs.previous.cloned().unwrap_or_else(|| api.clone());
    let observed = inputs.observed;
    let has_init = !pod_init_containers(pod).is_empty();
    let convert = |containers: &[Container], previous: Option<&Vec<ContainerStatus>>, init| {
        convert_container_statuses(
            pod,
            observed,
            previous.map(Vec::as_slice).unwrap_or_default(),
            containers,
            has_init,
            init,
            inputs.waiting_reasons,
            node,
        )
    };
    let mut container_statuses =
        convert(pod_containers(pod), old.container_statuses.as_ref(), false);
    let mut init_statuses = convert(
        pod_init_containers(pod),
        old.init_container_statuses.as_ref(),
        true,
    );

    let all: Vec<ContainerStatus> = container_statuses
        .iter()
        .chain(&init_statuses)
        .cloned()
        .collect();
    let old_phase = old.phase.as_deref().and_then(PodPhase::parse);
    let api_phase = api.phase.as_deref().and_then(PodPhase::parse);
    let mut phase = pod_phase(
        pod,
        &all,
        is_deleted(pod),
        observed.has_any_active_regular_container(pod),
    );
    if !phase.is_terminal() {
        if let Some(terminal) = old_phase.filter(|p| p.is_terminal()) {
            phase = terminal;
        } else if let Some(terminal) = api_phase.filter(|p| p.is_terminal()) {
            phase = terminal;
        }
    }
    let (mut reason, mut message) = (None, None);
    if Some(phase) == old_phase {
        reason = old
            .reason
            .clone()
            .filter(|r| !r.is_empty())
            .or(api.reason.clone());
        message = old
            .message
            .clone()
            .filter(|m| !m.is_empty())
            .or(api.message.clone());
    }
    if past_active_deadline(pod, &old, inputs.now) {
        phase = PodPhase::Failed;
        reason = Some(DEADLINE_EXCEEDED.to_owned());
        message = Some(DEADLINE_EXCEEDED_MESSAGE.to_owned());
    }
    if let Some(terminal) = api_phase.filter(|p| p.is_terminal()) {
        phase = terminal;
    }

    apply_probe_results(
        pod_containers(pod),
        &mut container_statuses,
        observed,
        false,
    );
    apply_probe_results(pod_init_containers(pod), &mut init_statuses, observed, true);

    let all: Vec<ContainerStatus> = init_statuses
        .iter()
        .chain(&container_statuses)
        .cloned()
        .collect();
    let generation = pod.metadata.generation;
    let mut conditions: Vec<PodCondition> = api
        .conditions
        .iter()
        .flatten()
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    if let Some(disruption) = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == DISRUPTION_TARGET)
    {
        conditions.retain(|c| c.type_ != DISRUPTION_TARGET);
        conditions.push(disruption.clone());
    }
    let ready_to_start = !pod_sandbox_changed(pod, observed).create;
    conditions.push(condition(
        "PodReadyToStartContainers",
        ready_to_start,
        None,
        None,
        generation,
    ));
    conditions.push(initialized_condition(pod, &all, phase, generation));
    let containers_ready = containers_ready_condition(pod, &all, phase, generation);
    conditions.push(ready_condition(
        pod,
        &conditions,
        &containers_ready,
        generation,
    ));
    conditions.push(containers_ready);
    conditions.push(condition("PodScheduled", true, None, None, generation));
    set_transition_times(
        &mut conditions,
        old.conditions.as_deref().unwrap_or_default(),
        inputs.now,
    );

    let pod_ips = observed.pod_ips(pod, &node.host_ips);
    let start_time = old
        .start_time
        .clone()
        .unwrap_or_else(|| Time(truncate_to_seconds(inputs.now)));
    PodStatus {
        phase: Some(phase.as_str().to_owned()),
        reason,
        message,
        conditions: Some(conditions),
        host_ip: node.host_ips.first().cloned(),
        host_ips: (!node.host_ips.is_empty()).then(|| {
            node.host_ips
                .iter()
                .take(2)
                .map(|ip| HostIP { ip: ip.clone() })
                .collect()
        }),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty())
            .then(|| pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        start_time: Some(start_time),
        qos_class: Some(pod_qos(pod).as_str().to_owned()),
        container_statuses: Some(container_statuses),
        // Like Go's `omitempty`: no list rather than an empty one, so a status read back
        // from the API compares equal.
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        observed_generation: generation,
        nominated_node_name: api.nominated_node_name,
        ..PodStatus::default()
    }
}

/// Upstream `getPhase`. `statuses` are the regular and init container statuses;
/// `pod_is_terminal` lets a pod whose containers all stopped become Succeeded/Failed whatever
/// its restart policy (the kubelet passes it for pods it is terminating);
/// `pod_has_initialized` is [`ObservedPod::has_any_active_regular_container`].
#[must_use]
pub fn pod_phase(
    pod: &Pod,
    statuses: &[ContainerStatus],
    pod_is_terminal: bool,
    pod_has_initialized: bool,
) -> PodPhase {
    let find = |name: &str| statuses.iter().find(|s| s.name == name);
    let state = |s: &ContainerStatus| s.state.clone().unwrap_or_default();
    let last_terminated = |s: &ContainerStatus| {
        s.last_state
            .as_ref()
            .and_then(|last| last.terminated.as_ref())
            .map(|t| t.exit_code)
    };
    let mut pending_initialization = 0;
    let mut failed_initialization = 0;
    for container in pod_init_containers(pod) {
        if is_restartable_init_container(container) {
            continue;
        }
        let Some(status) = find(&container.name) else {
            pending_initialization += 1;
            continue;
        };
        let current = state(status);
        if current.running.is_some() {
            pending_initialization += 1;
        } else if let Some(terminated) = &current.terminated {
            if terminated.exit_code != 0 {
                failed_initialization += 1;
            }
        } else if current.waiting.is_some() {
            match last_terminated(status) {
                Some(code) if code != 0 => failed_initialization += 1,
                Some(_) => {}
                None => pending_initialization += 1,
            }
        } else {
            pending_initialization += 1;
        }
    }

    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for container in pod_init_containers(pod) {
        if !is_restartable_init_container(container) {
            continue;
        }
        let Some(status) = find(&container.name) else {
            unknown += 1;
            continue;
        };
        let current = state(status);
        if current.running.is_some() {
            if status.started != Some(true) {
                pending_initialization += 1;
            }
            running += 1;
        } else if current.terminated.is_some() {
            // Stopped sidecars do not count towards the phase.
        } else if current.waiting.is_some() {
            if last_terminated(status).is_none() {
                pending_initialization += 1;
                waiting += 1;
            }
        } else {
            pending_initialization += 1;
            unknown += 1;
        }
    }
    for container in pod_containers(pod) {
        let Some(status) = find(&container.name) else {
            unknown += 1;
            continue;
        };
        let current = state(status);
        if current.running.is_some() {
            running += 1;
        } else if let Some(terminated) = &current.terminated {
            stopped += 1;
            if terminated.exit_code == 0 {
                succeeded += 1;
            }
        } else if current.waiting.is_some() {
            if last_terminated(status).is_some() {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }

    let restart_policy = RestartPolicy::of(pod);
    if failed_initialization > 0 && restart_policy == RestartPolicy::Never {
        return PodPhase::Failed;
    }
    if (pending_initialization > 0 && !pod_has_initialized) || waiting > 0 {
        return PodPhase::Pending;
    }
    if running > 0 && unknown == 0 {
        return PodPhase::Running;
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if pod_is_terminal && !is_static_pod(pod) {
            return if stopped == succeeded {
                PodPhase::Succeeded
            } else {
                PodPhase::Failed
            };
        }
        if restart_policy == RestartPolicy::Always {
            return PodPhase::Running;
        }
        if stopped == succeeded {
            return PodPhase::Succeeded;
        }
        if restart_policy == RestartPolicy::Never {
            return PodPhase::Failed;
        }
        return PodPhase::Running;
    }
    PodPhase::Pending
}

/// Upstream `isPodStatusByKubeletEqual`, negated: did anything the kubelet owns change?
/// Kubelet-owned conditions compare by type, status, reason and message (never by their
/// timestamps); conditions owned by others are ignored; all other fields compare at the
/// API's second precision.
#[must_use]
pub fn status_changed(old: &PodStatus, new: &PodStatus) -> bool {
    let owned = |status: &PodStatus| -> BTreeMap<String, (String, Option<String>, Option<String>)> {
        status
            .conditions
            .iter()
            .flatten()
            .filter(|c| {
                KUBELET_CONDITIONS.contains(&c.type_.as_str()) || c.type_ == DISRUPTION_TARGET
            })
            .map(|c| {
                (
                    c.type_.clone(),
                    (c.status.clone(), c.reason.clone(), c.message.clone()),
                )
            })
            .collect()
    };
    if owned(old) != owned(new) {
        return true;
    }
    let mut old = normalized(old);
    let new = normalized(new);
    old.conditions.clone_from(&new.conditions);
    old != new
}

/// Upstream `TerminatePod`: the final status of a pod whose containers all stopped. Once the
/// pod has initialized, any container without a terminated state is reported as
/// `ContainerStatusUnknown` (exit 137), so an unknown outcome never reads as success; init
/// containers that tried to start likewise; and a non-static pod's phase becomes terminal
/// (Pending/Running → Failed).
#[must_use]
pub fn terminated_pod_status(pod: &Pod, status: &PodStatus) -> PodStatus {
    let mut status = status.clone();
    let unknown = || ApiContainerState {
        terminated: Some(ContainerStateTerminated {
            reason: Some(CONTAINER_STATUS_UNKNOWN.to_owned()),
            message: Some(
                "The container could not be located when the pod was terminated".to_owned(),
            ),
            exit_code: 137,
            ..ContainerStateTerminated::default()
        }),
        ..ApiContainerState::default()
    };
    let is_terminated =
        |s: &ContainerStatus| s.state.as_ref().is_some_and(|st| st.terminated.is_some());
    if has_pod_initialized(pod) {
        for container in status.container_statuses.iter_mut().flatten() {
            if !is_terminated(container) {
                container.state = Some(unknown());
            }
        }
    }
    if let Some(init_statuses) = status.init_container_statuses.as_mut() {
        let attempted = initialized_prefix(init_statuses);
        for container in init_statuses.iter_mut().take(attempted) {
            if !is_terminated(container) {
                container.state = Some(unknown());
            }
        }
    }
    if !is_static_pod(pod) {
        let phase = status.phase.as_deref().and_then(PodPhase::parse);
        if !phase.is_some_and(PodPhase::is_terminal) {
            status.phase = Some(PodPhase::Failed.as_str().to_owned());
        }
    }
    status
}

/// Upstream `hasPodInitialized` (reads the API status).
fn has_pod_initialized(pod: &Pod) -> bool {
    let init_containers = pod_init_containers(pod);
    if init_containers.is_empty() {
        return true;
    }
    let Some(statuses) = pod
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
    else {
        return false;
    };
    let Some(last) = statuses.last() else {
        return false;
    };
    let Some(container) = init_containers.iter().find(|c| c.name == last.name) else {
        return false;
    };
    let state = last.state.clone().unwrap_or_default();
    if is_restartable_init_container(container) {
        return state.running.is_some() && last.started == Some(true);
    }
    let succeeded = |s: Option<&ApiContainerState>| {
        s.and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    };
    succeeded(last.last_state.as_ref()) || succeeded(Some(&state))
}

/// Upstream `initializedContainers`: how many leading init statuses tried to start (all but
/// the trailing run of never-started waiting ones; at least one).
fn initialized_prefix(statuses: &[ContainerStatus]) -> usize {
    for (i, status) in statuses.iter().enumerate().rev() {
        let waiting = status.state.as_ref().is_some_and(|s| s.waiting.is_some());
        let ever_terminated = status
            .last_state
            .as_ref()
            .is_some_and(|s| s.terminated.is_some());
        if !waiting || ever_terminated {
            return i + 1;
        }
    }
    statuses.len().min(1)
}

fn past_active_deadline(pod: &Pod, old: &PodStatus, now: Timestamp) -> bool {
    let Some(deadline) = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.active_deadline_seconds)
    else {
        return false;
    };
    let Some(start) = old.start_time.as_ref() else {
        return false;
    };
    now >= add_seconds(start.0, deadline)
}

/// Upstream `convertToAPIContainerStatuses`.
#[allow(clippy::too_many_arguments)]
fn convert_container_statuses(
    pod: &Pod,
    observed: &ObservedPod,
    previous: &[ContainerStatus],
    containers: &[Container],
    has_init_containers: bool,
    is_init: bool,
    waiting_reasons: &WaitingReasons,
    node: &NodeContext,
) -> Vec<ContainerStatus> {
    let old: HashMap<&str, &ContainerStatus> =
        previous.iter().map(|s| (s.name.as_str(), s)).collect();
    let default_reason = if has_init_containers {
        POD_INITIALIZING
    } else {
        CONTAINER_CREATING
    };
    let mut statuses: HashMap<&str, ContainerStatus> = HashMap::new();
    for container in containers {
        let mut status = ContainerStatus {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            state: Some(waiting(default_reason, None)),
            ..ContainerStatus::default()
        };
        if let Some(previous) = old.get(container.name.as_str()) {
            if previous
                .state
                .as_ref()
                .is_some_and(|s| s.terminated.is_some())
            {
                status = (*previous).clone();
            } else {
                status.restart_count = previous.restart_count;
                status.last_state.clone_from(&previous.last_state);
            }
        }
        statuses.insert(&container.name, status);
    }

    // A container that was running and vanished from the runtime terminated with an unknown
    // outcome; without this it would read as "never started" and send the pod to Pending.
    for container in containers {
        if observed.containers.iter().any(|c| c.name == container.name) {
            continue;
        }
        let Some(previous) = old.get(container.name.as_str()) else {
            continue;
        };
        let previous_state = previous.state.clone().unwrap_or_default();
        if previous_state.terminated.is_some() || previous_state.running.is_none() {
            continue;
        }
        let Some(status) = statuses.get_mut(container.name.as_str()) else {
            continue;
        };
        let is_default_waiting = status
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .is_some_and(|w| w.reason.as_deref() == Some(default_reason));
        let has_last_terminated = status
            .last_state
            .as_ref()
            .is_some_and(|s| s.terminated.is_some());
        if !is_default_waiting || has_last_terminated {
            continue;
        }
        status.last_state = Some(ApiContainerState {
            terminated: Some(ContainerStateTerminated {
                reason: Some(CONTAINER_STATUS_UNKNOWN.to_owned()),
                message: Some(
                    "The container could not be located when the pod was deleted.  The container used to be Running"
                        .to_owned(),
                ),
                exit_code: 137,
                ..ContainerStateTerminated::default()
            }),
            ..ApiContainerState::default()
        });
        if !is_deleted(pod) {
            status.restart_count += 1;
        }
    }

    // The newest instance gives the state, the one before it the last state.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for instance in observed.containers_newest_first() {
        let Some(name) = containers
            .iter()
            .map(|c| c.name.as_str())
            .find(|name| *name == instance.name)
        else {
            continue;
        };
        let count = seen.entry(name).or_insert(0);
        if *count >= 2 {
            continue;
        }
        let converted = convert_instance(instance, old.get(name).copied(), node);
        if *count == 0 {
            statuses.insert(name, converted);
        } else if let Some(status) = statuses.get_mut(name) {
            status.last_state = converted.state;
        }
        *count += 1;
    }

    // Containers that will be restarted wait, with their last start failure as the reason.
    for container in containers {
        if is_init
            && observed
                .latest_container(&container.name)
                .is_some_and(|c| c.state == ContainerState::Exited && c.exit_code == 0)
        {
            continue;
        }
        if !should_container_be_restarted(container, pod, observed) {
            continue;
        }
        let Some(reason) = waiting_reasons.get(&container.name) else {
            continue;
        };
        let Some(status) = statuses.get_mut(container.name.as_str()) else {
            continue;
        };
        if status
            .state
            .as_ref()
            .is_some_and(|s| s.terminated.is_some())
        {
            status.last_state = status.state.take();
        }
        status.state = Some(waiting(&reason.reason, Some(&reason.message)));
    }

    let mut out: Vec<ContainerStatus> = containers
        .iter()
        .filter_map(|container| {
            let mut status = statuses.remove(container.name.as_str())?;
            status.volume_mounts = volume_mount_statuses(container);
            Some(status)
        })
        .collect();
    if !is_init {
        out.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

/// Upstream `convertContainerStatus` for one runtime instance.
fn convert_instance(
    instance: &ObservedContainer,
    old: Option<&ContainerStatus>,
    node: &NodeContext,
) -> ContainerStatus {
    let container_id = format!("{}://{}", node.runtime_name, instance.id);
    let time = |ts: Option<Timestamp>| ts.map(|ts| Time(truncate_to_seconds(ts)));
    let mut status = ContainerStatus {
        name: instance.name.clone(),
        restart_count: instance.restart_count,
        image: instance.image.clone(),
        image_id: instance.image_ref.clone(),
        container_id: Some(container_id.clone()),
        ..ContainerStatus::default()
    };
    let previously_running = old
        .and_then(|o| o.state.as_ref())
        .is_some_and(|s| s.running.is_some());
    status.state = Some(match instance.state {
        ContainerState::Running => ApiContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(instance.started_at),
            }),
            ..ApiContainerState::default()
        },
        ContainerState::Exited => ApiContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: instance.exit_code,
                reason: Some(terminated_reason(instance)),
                message: Some(instance.message.clone()).filter(|m| !m.is_empty()),
                started_at: time(instance.started_at),
                finished_at: time(instance.finished_at),
                container_id: Some(container_id),
                signal: None,
            }),
            ..ApiContainerState::default()
        },
        ContainerState::Unknown if previously_running => {
            status.restart_count = old.map_or(0, |o| o.restart_count) + 1;
            ApiContainerState {
                terminated: Some(ContainerStateTerminated {
                    reason: Some(CONTAINER_STATUS_UNKNOWN.to_owned()),
                    message: Some(
                        "The container could not be located when the pod was terminated".to_owned(),
                    ),
                    exit_code: 137,
                    ..ContainerStateTerminated::default()
                }),
                ..ApiContainerState::default()
            }
        }
        ContainerState::Created | ContainerState::Unknown => ApiContainerState {
            waiting: Some(ContainerStateWaiting::default()),
            ..ApiContainerState::default()
        },
    });
    status
}

/// The runtime's reason; containerd always sets `Completed`/`Error`/`OOMKilled`, others may
/// not, so the same rule fills it in.
fn terminated_reason(instance: &ObservedContainer) -> String {
    if !instance.reason.is_empty() {
        return instance.reason.clone();
    }
    if instance.exit_code == 0 {
        "Completed".to_owned()
    } else {
        "Error".to_owned()
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ApiContainerState {
    ApiContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: message.filter(|m| !m.is_empty()).map(str::to_owned),
        }),
        ..ApiContainerState::default()
    }
}

/// `status.volumeMounts` (RecursiveReadOnlyMounts): each mount, with `recursiveReadOnly:
/// Disabled` on read-only ones (this kubelet never asks the runtime for recursive read-only).
fn volume_mount_statuses(container: &Container) -> Option<Vec<VolumeMountStatus>> {
    let mounts = container.volume_mounts.as_ref()?;
    Some(
        mounts
            .iter()
            .map(|mount| {
                let read_only = mount.read_only.unwrap_or(false);
                VolumeMountStatus {
                    name: mount.name.clone(),
                    mount_path: mount.mount_path.clone(),
                    read_only: read_only.then_some(true),
                    recursive_read_only: read_only.then(|| "Disabled".to_owned()),
                }
            })
            .collect(),
    )
}

/// The prober's `UpdatePodStatus`: `started` (running, and the startup probe passed or there is
/// none) and `ready` (started, running, and the readiness probe passed or there is none;
/// regular init containers: exited with 0).
fn apply_probe_results(
    containers: &[Container],
    statuses: &mut [ContainerStatus],
    observed: &ObservedPod,
    is_init: bool,
) {
    for status in statuses.iter_mut() {
        let Some(container) = containers.iter().find(|c| c.name == status.name) else {
            continue;
        };
        let running = status.state.as_ref().is_some_and(|s| s.running.is_some());
        let probes = observed
            .latest_container(&container.name)
            .map(|instance| observed.probe_results(&instance.id))
            .unwrap_or_default();
        let started = running
            && match probes.startup {
                Some(result) => result == ProbeResult::Success,
                None => container.startup_probe.is_none(),
            };
        status.started = Some(started);
        if is_init && !is_restartable_init_container(container) {
            status.ready = status
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0);
            continue;
        }
        status.ready = started
            && match probes.readiness {
                Some(result) => result == ProbeResult::Success,
                None => container.readiness_probe.is_none(),
            };
    }
}

fn condition(
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
    generation: Option<i64>,
) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        observed_generation: generation,
        ..PodCondition::default()
    }
}

/// Go's `fmt.Sprintf("%s", []string{...})`: `[a b]`.
/// A condition that is True unless some containers have an unknown status or are `problem.1`
/// (described as "containers with <problem.0> status: [...]", upstream's wording); then False with
/// `reason` and both lists in the message.
fn containers_condition(
    type_: &str,
    unknown: &[&str],
    problem: (&str, &[&str]),
    reason: &'static str,
    generation: Option<i64>,
) -> PodCondition {
    let (adjective, names) = problem;
    let mut messages = Vec::new();
    if !unknown.is_empty() {
        messages.push(format!(
            "containers with unknown status: {}",
            go_list(unknown)
        ));
    }
    if !names.is_empty() {
        messages.push(format!(
            "containers with {adjective} status: {}",
            go_list(names)
        ));
    }
    if messages.is_empty() {
        return condition(type_, true, None, None, generation);
    }
    condition(
        type_,
        false,
        Some(reason),
        Some(messages.join(", ")),
        generation,
    )
}

fn go_list(names: &[&str]) -> String {
    format!("[{}]", names.join(" "))
}

/// Upstream `GenerateContainersReadyCondition`.
fn containers_ready_condition(
    pod: &Pod,
    statuses: &[ContainerStatus],
    phase: PodPhase,
    generation: Option<i64>,
) -> PodCondition {
    let find = |name: &str| statuses.iter().find(|s| s.name == name);
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    let sidecars = pod_init_containers(pod)
        .iter()
        .filter(|c| is_restartable_init_container(c));
    for container in sidecars.chain(pod_containers(pod)) {
        match find(&container.name) {
            Some(status) if !status.ready => unready.push(container.name.as_str()),
            Some(_) => {}
            None => unknown.push(container.name.as_str()),
        }
    }
    if (phase == PodPhase::Succeeded && unknown.is_empty()) || phase == PodPhase::Failed {
        let reason = if phase == PodPhase::Failed {
            POD_FAILED
        } else {
            POD_COMPLETED
        };
        return condition("ContainersReady", false, Some(reason), None, generation);
    }
    containers_condition(
        "ContainersReady",
        &unknown,
        ("unready", &unready),
        CONTAINERS_NOT_READY,
        generation,
    )
}

/// Upstream `GeneratePodReadyCondition`: ContainersReady, then the readiness gates.
fn ready_condition(
    pod: &Pod,
    conditions: &[PodCondition],
    containers_ready: &PodCondition,
    generation: Option<i64>,
) -> PodCondition {
    if containers_ready.status != "True" {
        return PodCondition {
            type_: "Ready".to_owned(),
            ..containers_ready.clone()
        };
    }
    let mut messages = Vec::new();
    for gate in pod
        .spec
        .as_ref()
        .and_then(|spec| spec.readiness_gates.as_deref())
        .unwrap_or_default()
    {
        match conditions.iter().find(|c| c.type_ == gate.condition_type) {
            None => messages.push(format!(
                "corresponding condition of pod readiness gate {:?} does not exist.",
                gate.condition_type
            )),
            Some(c) if c.status != "True" => messages.push(format!(
                "the status of pod readiness gate {:?} is not \"True\", but {}",
                gate.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if messages.is_empty() {
        return condition("Ready", true, None, None, generation);
    }
    condition(
        "Ready",
        false,
        Some(READINESS_GATES_NOT_READY),
        Some(messages.join(", ")),
        generation,
    )
}

/// Upstream `GeneratePodInitializedCondition`.
fn initialized_condition(
    pod: &Pod,
    statuses: &[ContainerStatus],
    phase: PodPhase,
    generation: Option<i64>,
) -> PodCondition {
    let init_containers = pod_init_containers(pod);
    let find = |name: &str| statuses.iter().find(|s| s.name == name);
    let mut unknown = Vec::new();
    let mut incomplete = Vec::new();
    for container in init_containers {
        let Some(status) = find(&container.name) else {
            unknown.push(container.name.as_str());
            continue;
        };
        let done = if is_restartable_init_container(container) {
            status.started == Some(true)
        } else {
            status.ready
        };
        if !done {
            incomplete.push(container.name.as_str());
        }
    }
    if phase == PodPhase::Succeeded && unknown.is_empty() {
        return condition("Initialized", true, Some(POD_COMPLETED), None, generation);
    }
    let regular_started = statuses.iter().any(|s| {
        pod_containers(pod).iter().any(|c| c.name == s.name)
            && s.state
                .as_ref()
                .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
    });
    if regular_started {
        return condition("Initialized", true, None, None, generation);
    }
    containers_condition(
        "Initialized",
        &unknown,
        ("incomplete", &incomplete),
        CONTAINERS_NOT_INITIALIZED,
        generation,
    )
}

/// Status manager `updateLastTransitionTime`: keep the old time while a condition's status is
/// unchanged, else now. Conditions owned by others keep theirs.
fn set_transition_times(conditions: &mut [PodCondition], old: &[PodCondition], now: Timestamp) {
    for condition in conditions.iter_mut() {
        if !KUBELET_CONDITIONS.contains(&condition.type_.as_str()) {
            continue;
        }
        let previous = old.iter().find(|c| c.type_ == condition.type_);
        condition.last_transition_time = match previous {
            Some(previous) if previous.status == condition.status => {
                previous.last_transition_time.clone()
            }
            _ => Some(Time(truncate_to_seconds(now))),
        };
    }
}

/// Times at second precision, as the API stores them.
fn normalized(status: &PodStatus) -> PodStatus {
    let mut status = status.clone();
    let truncate = |time: &mut Option<Time>| {
        if let Some(t) = time.as_mut() {
            t.0 = truncate_to_seconds(t.0);
        }
    };
    truncate(&mut status.start_time);
    for condition in status.conditions.iter_mut().flatten() {
        truncate(&mut condition.last_probe_time);
        truncate(&mut condition.last_transition_time);
    }
    let states = status
        .container_statuses
        .iter_mut()
        .flatten()
        .chain(status.init_container_statuses.iter_mut().flatten())
        .chain(status.ephemeral_container_statuses.iter_mut().flatten())
        .flat_map(|s| s.state.iter_mut().chain(s.last_state.iter_mut()));
    for state in states {
        if let Some(running) = state.running.as_mut() {
            truncate(&mut running.started_at);
        }
        if let Some(terminated) = state.terminated.as_mut() {
            truncate(&mut terminated.started_at);
            truncate(&mut terminated.finished_at);
        }
    }
    status
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
