//! The reconciliation decision: what to do to the runtime so it holds the pod the spec asks for.
//!
//! Owns upstream's `computePodActions` (sandbox (re)creation, init containers one at a time
//! including native sidecars, restarts per `restartPolicy`, liveness/startup probe kills, spec
//! hash changes, "kill the pod when nothing is left to run"), the CrashLoopBackOff gate of
//! `doBackOff`, `pruneInitContainersBeforeStart`/`purgeInitContainers`, and the termination of
//! deleted or finished pods (`syncTerminatingPod`: preStop, grace periods, sidecars last,
//! sandbox stop). Returns ordered [`Action`]s; never executes them, never builds CRI configs
//! (that is `sandbox`/`container`) and never mutates the back-off (start actions say which
//! entry to advance).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;

use super::backoff::{self, Backoff};
use super::labels::container_hash;
use super::observed::{
    ContainerState, NetworkMode, ObservedContainer, ObservedPod, ProbeResult, SandboxState,
};
use super::status::WaitingReason;
use super::{
    PodPhase, RestartPolicy, add_seconds, is_deleted, is_host_network,
    is_restartable_init_container, pod_containers, pod_init_containers,
};

/// Upstream `minimumGracePeriodInSeconds`: a container always gets this long after SIGTERM.
pub const MINIMUM_GRACE_PERIOD_SECONDS: i64 = 2;

/// Upstream `OOMKilled` reason, which always counts as an init container failure.
const OOM_KILLED: &str = "OOMKilled";

/// Why a container is killed (upstream `containerKillReason`), for events and for the
/// probe-specific grace periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// Pod termination, sandbox change or spec change.
    Unspecified,
    /// The liveness probe failed.
    LivenessProbe,
    /// The startup probe failed.
    StartupProbe,
    /// The runtime reports the container's state as unknown.
    Unknown,
}

impl KillReason {
    /// Upstream spelling (`LivenessProbe`, `StartupProbe`, `Unknown`, or empty).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "",
            Self::LivenessProbe => "LivenessProbe",
            Self::StartupProbe => "StartupProbe",
            Self::Unknown => "Unknown",
        }
    }
}

/// Stop one container gracefully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillContainer {
    /// CRI container id.
    pub container_id: String,
    /// Container name.
    pub name: String,
    /// Seconds for the whole stop: the preStop hook (if run) and then SIGTERM until SIGKILL.
    /// Pass what the hook leaves over to [`stop_timeout`].
    pub grace_period_seconds: i64,
    /// Run the container's preStop hook first (it has one and the grace period is positive).
    pub run_pre_stop: bool,
    /// Why.
    pub reason: KillReason,
    /// The `Killing` event message (upstream wording).
    pub message: String,
}

/// Which list of the pod spec a container belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    /// A regular init container: runs to completion, in order.
    Init,
    /// An init container with `restartPolicy: Always` (native sidecar).
    Sidecar,
    /// An entry of `spec.containers`.
    Regular,
}

/// The back-off entry a start advances (upstream `backOff.Next(key, finishedAt)` right before
/// starting): call [`Backoff::next`] with it and the current time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackoffRestart {
    /// [`backoff::container_key`] of the container.
    pub key: String,
    /// `finishedAt` of the instance that exited.
    pub finished_at: Timestamp,
}

/// Start one container: ensure its image, build its config, create and start it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartContainer {
    /// Init (or sidecar) container or regular container.
    pub kind: ContainerKind,
    /// Index into `spec.initContainers` (init, sidecar) or `spec.containers` (regular).
    pub index: usize,
    /// Container name.
    pub name: String,
    /// Restart count of the new instance: one more than the newest instance's. `None` when
    /// the runtime has no instance: use the container log directory
    /// ([`super::container::restart_count_from_log_files`]), else 0.
    pub restart_count: Option<u32>,
    /// The back-off entry to advance before starting, when this is a restart.
    pub back_off: Option<BackoffRestart>,
}

impl StartContainer {
    /// The container's spec in `pod`.
    #[must_use]
    pub fn spec<'p>(&self, pod: &'p Pod) -> Option<&'p Container> {
        match self.kind {
            ContainerKind::Init | ContainerKind::Sidecar => {
                pod_init_containers(pod).get(self.index)
            }
            ContainerKind::Regular => pod_containers(pod).get(self.index),
        }
    }
}

/// One step of a plan. Run them in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop these containers concurrently and wait for all of them.
    KillContainers(Vec<KillContainer>),
    /// `StopPodSandbox` (idempotent; also tears the pod network down).
    StopSandbox {
        /// CRI sandbox id.
        sandbox_id: String,
    },
    /// `RemoveContainer` of an old init container instance; failures are only logged.
    RemoveContainer {
        /// CRI container id.
        container_id: String,
        /// Container name.
        name: String,
    },
    /// Build the sandbox config ([`super::sandbox::generate_pod_sandbox_config`] with this
    /// attempt) and `RunPodSandbox`.
    CreateSandbox {
        /// `metadata.attempt` of the new sandbox.
        attempt: u32,
    },
    /// Start a container.
    StartContainer(StartContainer),
}

impl Action {
    /// Whether a failure of this action must stop the rest of the plan (upstream `SyncPod`
    /// returns after failed kills, a failed sandbox creation and a failed regular init
    /// container start; other failures are recorded and the round goes on).
    #[must_use]
    pub fn aborts_plan_on_failure(&self) -> bool {
        match self {
            Self::KillContainers(_) | Self::StopSandbox { .. } | Self::CreateSandbox { .. } => true,
            Self::RemoveContainer { .. } => false,
            Self::StartContainer(start) => start.kind == ContainerKind::Init,
        }
    }
}

/// A container that should restart but is held by CrashLoopBackOff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackOff {
    /// Container name.
    pub name: String,
    /// When the back-off ends.
    pub until: Timestamp,
    /// The waiting reason to record (`CrashLoopBackOff`, upstream message).
    pub reason: WaitingReason,
}

/// Where the pod is in its life, as this plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanMode {
    /// Keep the pod running as its spec says (upstream `SyncPod`).
    Sync,
    /// Deleted or finished: stopping what still runs (upstream `syncTerminatingPod`).
    Terminating,
    /// Deleted or finished and nothing runs; after these actions the worker is done: report
    /// [`super::status::terminated_pod_status`] and stop syncing (upstream
    /// `syncTerminatedPod`).
    Terminated,
}

/// The result of [`plan_pod`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    /// Sync, terminating or terminated.
    pub mode: PlanMode,
    /// What to do, in order.
    pub actions: Vec<Action>,
    /// Containers held back by CrashLoopBackOff (record their reason; no action is planned).
    pub back_offs: Vec<BackOff>,
    /// Sync again at this time at the latest (the earliest back-off end), even without an
    /// event.
    pub requeue_at: Option<Timestamp>,
}

/// Inputs of [`plan_pod`] besides the pod and what the runtime holds.
#[derive(Debug, Clone, Copy)]
pub struct PlanInputs<'a> {
    /// Now.
    pub now: Timestamp,
    /// The phase [`super::status::generate_pod_status`] computed this round; a terminal
    /// phase terminates the pod.
    pub phase: PodPhase,
    /// The CrashLoopBackOff state.
    pub backoff: &'a Backoff,
}

/// Plans one sync round: terminate the pod when it is deleted or its phase is terminal, else
/// reconcile the runtime with the spec.
#[must_use]
pub fn plan_pod(pod: &Pod, observed: &ObservedPod, inputs: &PlanInputs<'_>) -> PodPlan {
    if is_deleted(pod) || inputs.phase.is_terminal() {
        plan_termination(pod, observed)
    } else {
        plan_sync(pod, observed, inputs)
    }
}

/// Upstream `PodSandboxChanged`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxChange {
    /// A new sandbox is needed.
    pub create: bool,
    /// The attempt for the new sandbox (or the current one's).
    pub attempt: u32,
    /// The newest sandbox, if any.
    pub sandbox_id: Option<String>,
}

/// Upstream `PodSandboxChanged`: create a sandbox when there is none, more than one is ready,
/// the newest is not ready, its network namespace mode does not match `hostNetwork`, or it
/// has no IP (pod network only).
#[must_use]
pub fn pod_sandbox_changed(pod: &Pod, observed: &ObservedPod) -> SandboxChange {
    let sandboxes = observed.sandboxes_newest_first();
    let Some(latest) = sandboxes.first() else {
        return SandboxChange {
            create: true,
            attempt: 0,
            sandbox_id: None,
        };
    };
    let ready = sandboxes
        .iter()
        .filter(|sandbox| sandbox.state == SandboxState::Ready)
        .count();
    let wanted_network = if is_host_network(pod) {
        NetworkMode::Node
    } else {
        NetworkMode::Pod
    };
    let create = ready > 1
        || latest.state != SandboxState::Ready
        || latest.network != wanted_network
        || (!is_host_network(pod) && latest.has_network_status && latest.ips.is_empty());
    SandboxChange {
        create,
        attempt: if create {
            latest.attempt.saturating_add(1)
        } else {
            latest.attempt
        },
        sandbox_id: Some(latest.id.clone()),
    }
}

/// Upstream `ShouldContainerBeRestarted`: never for a deleted pod; always when the container
/// never ran or is created/unknown; never while running; for exited containers per
/// `restartPolicy` (OnFailure: only after a non-zero exit).
#[must_use]
pub fn should_container_be_restarted(
    container: &Container,
    pod: &Pod,
    observed: &ObservedPod,
) -> bool {
    if is_deleted(pod) {
        return false;
    }
    let Some(status) = observed.latest_container(&container.name) else {
        return true;
    };
    match status.state {
        ContainerState::Running => false,
        ContainerState::Created | ContainerState::Unknown => true,
        ContainerState::Exited => match RestartPolicy::of(pod) {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => status.exit_code != 0,
            RestartPolicy::Always => true,
        },
    }
}

/// Upstream `isInitContainerFailed`.
fn is_init_container_failed(status: &ObservedContainer) -> bool {
    status.reason == OOM_KILLED
        || (status.state == ContainerState::Exited && status.exit_code != 0)
        || status.state == ContainerState::Unknown
}

/// Upstream `setTerminationGracePeriod`: the pod's `deletionGracePeriodSeconds`, else the
/// failing probe's `terminationGracePeriodSeconds`, else the pod's
/// `terminationGracePeriodSeconds`, else 2.
#[must_use]
pub fn container_grace_period(pod: &Pod, container: Option<&Container>, reason: KillReason) -> i64 {
    if let Some(grace) = pod.metadata.deletion_grace_period_seconds {
        return grace;
    }
    let Some(pod_grace) = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.termination_grace_period_seconds)
    else {
        return MINIMUM_GRACE_PERIOD_SECONDS;
    };
    let probe = container.and_then(|c| match reason {
        KillReason::LivenessProbe => c.liveness_probe.as_ref(),
        KillReason::StartupProbe => c.startup_probe.as_ref(),
        KillReason::Unspecified | KillReason::Unknown => None,
    });
    probe
        .and_then(|probe| probe.termination_grace_period_seconds)
        .unwrap_or(pod_grace)
}

/// Upstream `calculateEffectiveGracePeriod` for a terminating pod: `deletionGracePeriodSeconds`,
/// else (or when zero) `terminationGracePeriodSeconds`, at least 1.
#[must_use]
pub fn termination_grace_period(pod: &Pod) -> i64 {
    let mut grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
    if grace == 0
        && let Some(spec_grace) = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.termination_grace_period_seconds)
    {
        grace = spec_grace;
    }
    grace.max(1)
}

/// The `StopContainer` timeout once the preStop hook took `pre_stop_elapsed_seconds` of
/// `grace_period_seconds`: what is left, but never less than
/// [`MINIMUM_GRACE_PERIOD_SECONDS`] (upstream `killContainer`).
#[must_use]
pub fn stop_timeout(grace_period_seconds: i64, pre_stop_elapsed_seconds: i64) -> i64 {
    grace_period_seconds
        .saturating_sub(pre_stop_elapsed_seconds)
        .max(MINIMUM_GRACE_PERIOD_SECONDS)
}

fn spec_container<'p>(pod: &'p Pod, name: &str) -> Option<&'p Container> {
    pod_containers(pod)
        .iter()
        .chain(pod_init_containers(pod))
        .find(|c| c.name == name)
}

fn kill(
    pod: &Pod,
    status: &ObservedContainer,
    grace_period_seconds: i64,
    reason: KillReason,
    message: String,
) -> KillContainer {
    let has_pre_stop = spec_container(pod, &status.name)
        .and_then(|c| c.lifecycle.as_ref())
        .is_some_and(|lifecycle| lifecycle.pre_stop.is_some());
    KillContainer {
        container_id: status.id.clone(),
        name: status.name.clone(),
        grace_period_seconds,
        run_pre_stop: has_pre_stop && grace_period_seconds > 0,
        reason,
        message,
    }
}

/// Kill batches in upstream's termination order: regular (and regular init) containers
/// together, then native sidecars one by one in reverse spec order.
fn termination_batches(pod: &Pod, kills: Vec<KillContainer>) -> Vec<Action> {
    let sidecars: Vec<&str> = pod_init_containers(pod)
        .iter()
        .filter(|c| is_restartable_init_container(c))
        .map(|c| c.name.as_str())
        .collect();
    let (sidecar_kills, first): (Vec<_>, Vec<_>) = kills
        .into_iter()
        .partition(|k| sidecars.contains(&k.name.as_str()));
    let mut actions = Vec::new();
    if !first.is_empty() {
        actions.push(Action::KillContainers(first));
    }
    for name in sidecars.iter().rev() {
        let batch: Vec<KillContainer> = sidecar_kills
            .iter()
            .filter(|k| k.name == *name)
            .cloned()
            .collect();
        if !batch.is_empty() {
            actions.push(Action::KillContainers(batch));
        }
    }
    actions
}

/// Upstream `killPodWithSyncResult`: every running container, then every sandbox.
/// `grace_override` is the terminating pod's effective grace period; without it each container
/// gets [`container_grace_period`].
fn kill_pod(pod: &Pod, observed: &ObservedPod, grace_override: Option<i64>) -> Vec<Action> {
    let kills = observed
        .containers_newest_first()
        .into_iter()
        .filter(|c| c.state == ContainerState::Running)
        .map(|status| {
            let grace = grace_override.unwrap_or_else(|| {
                container_grace_period(
                    pod,
                    spec_container(pod, &status.name),
                    KillReason::Unspecified,
                )
            });
            kill(
                pod,
                status,
                grace,
                KillReason::Unspecified,
                format!("Stopping container {}", status.name),
            )
        })
        .collect();
    let mut actions = termination_batches(pod, kills);
    actions.extend(
        observed
            .sandboxes_newest_first()
            .into_iter()
            .map(|sandbox| Action::StopSandbox {
                sandbox_id: sandbox.id.clone(),
            }),
    );
    actions
}

fn plan_termination(pod: &Pod, observed: &ObservedPod) -> PodPlan {
    let running = observed
        .containers
        .iter()
        .any(|c| c.state == ContainerState::Running);
    PodPlan {
        mode: if running {
            PlanMode::Terminating
        } else {
            PlanMode::Terminated
        },
        actions: kill_pod(pod, observed, Some(termination_grace_period(pod))),
        back_offs: Vec::new(),
        requeue_at: None,
    }
}

/// What [`compute_init_container_actions`] decided.
#[derive(Default)]
struct InitActions {
    initialized: bool,
    kill_pod: bool,
    /// Indexes into `spec.initContainers`, in spec order.
    to_start: Vec<usize>,
    to_kill: Vec<KillContainer>,
}

/// Upstream `computeInitContainerActions` (the SidecarContainers path, GA since 1.33).
fn compute_init_container_actions(pod: &Pod, observed: &ObservedPod) -> InitActions {
    let init_containers = pod_init_containers(pod);
    let mut actions = InitActions::default();
    if init_containers.is_empty() {
        actions.initialized = true;
        return actions;
    }
    let restart_on_failure = RestartPolicy::of(pod).restarts_on_failure();
    let mut initialized = pod_containers(pod).iter().any(|c| {
        observed
            .latest_container(&c.name)
            .is_some_and(|s| matches!(s.state, ContainerState::Created | ContainerState::Running))
    });
    let mut previously_initialized = initialized;
    let last = init_containers.len() - 1;
    let kill_message = |name: &str, what: &str| format!("Init container {name} {what}");
    for (i, container) in init_containers.iter().enumerate().rev() {
        let restartable = is_restartable_init_container(container);
        let Some(status) = observed.latest_container(&container.name) else {
            if previously_initialized && restartable {
                actions.to_start.push(i);
            }
            continue;
        };
        if previously_initialized && !restartable {
            continue;
        }
        let grace = |reason| container_grace_period(pod, Some(container), reason);
        match status.state {
            ContainerState::Created => actions.to_start.push(i),
            ContainerState::Running if restartable => 'sidecar: {
                let probes = observed.probe_results(&status.id);
                if container.startup_probe.is_some() {
                    match probes.startup {
                        None => break 'sidecar,
                        Some(ProbeResult::Failure) => {
                            actions.to_kill.push(kill(
                                pod,
                                status,
                                grace(KillReason::StartupProbe),
                                KillReason::StartupProbe,
                                kill_message(&container.name, "failed startup probe"),
                            ));
                            actions.to_start.push(i);
                            break 'sidecar;
                        }
                        Some(ProbeResult::Success) => {}
                    }
                }
                if i == last {
                    initialized = true;
                } else if !previously_initialized {
                    actions.to_start.push(i + 1);
                }
                if status
                    .hash
                    .as_ref()
                    .is_some_and(|hash| *hash != container_hash(container))
                {
                    actions.to_kill.push(kill(
                        pod,
                        status,
                        grace(KillReason::Unspecified),
                        KillReason::Unspecified,
                        kill_message(&container.name, "definition changed"),
                    ));
                    actions.to_start.push(i);
                    break 'sidecar;
                }
                if container.liveness_probe.is_some()
                    && probes.liveness == Some(ProbeResult::Failure)
                {
                    actions.to_kill.push(kill(
                        pod,
                        status,
                        grace(KillReason::LivenessProbe),
                        KillReason::LivenessProbe,
                        kill_message(&container.name, "failed liveness probe"),
                    ));
                    actions.to_start.push(i);
                }
            }
            // A regular init container is running: wait for it to finish.
            ContainerState::Running => {}
            ContainerState::Exited => {
                if restartable {
                    actions.to_start.push(i);
                } else if is_init_container_failed(status) {
                    if !restart_on_failure {
                        actions.kill_pod = true;
                        actions.to_start.clear();
                        return actions;
                    }
                    actions.to_start.push(i);
                } else if i == last {
                    initialized = true;
                } else {
                    actions.to_start.push(i + 1);
                }
            }
            ContainerState::Unknown => {
                if !restartable && !restart_on_failure {
                    actions.kill_pod = true;
                    actions.to_start.clear();
                    return actions;
                }
                actions.to_kill.push(kill(
                    pod,
                    status,
                    grace(KillReason::Unknown),
                    KillReason::Unknown,
                    "Init container is in \"unknown\" state, try killing it before restart"
                        .to_owned(),
                ));
                actions.to_start.push(i);
            }
        }
        previously_initialized = true;
    }
    if !previously_initialized {
        actions.to_start.push(0);
    }
    actions.to_start.reverse();
    actions.initialized = initialized;
    actions
}

/// Upstream `pruneInitContainersBeforeStart`: keep only the newest exited instance of each
/// init container; remove older and unknown ones.
fn prune_init_containers(pod: &Pod, observed: &ObservedPod) -> Vec<Action> {
    let mut actions = Vec::new();
    for container in pod_init_containers(pod) {
        let mut count = 0;
        for status in observed.containers_newest_first() {
            if status.name != container.name
                || !matches!(
                    status.state,
                    ContainerState::Exited | ContainerState::Unknown
                )
            {
                continue;
            }
            count += 1;
            if count == 1 && status.state == ContainerState::Exited {
                continue;
            }
            actions.push(Action::RemoveContainer {
                container_id: status.id.clone(),
                name: status.name.clone(),
            });
        }
    }
    actions
}

/// Upstream `purgeInitContainers`: remove every instance of every init container (the pod
/// starts over in a new sandbox).
fn purge_init_containers(pod: &Pod, observed: &ObservedPod) -> Vec<Action> {
    let mut actions = Vec::new();
    for container in pod_init_containers(pod) {
        for status in observed.containers_newest_first() {
            if status.name == container.name {
                actions.push(Action::RemoveContainer {
                    container_id: status.id.clone(),
                    name: status.name.clone(),
                });
            }
        }
    }
    actions
}

/// Collects start actions and CrashLoopBackOff holds (upstream `doBackOff` per start).
struct Starts<'a> {
    pod: &'a Pod,
    observed: &'a ObservedPod,
    inputs: &'a PlanInputs<'a>,
    actions: Vec<Action>,
    back_offs: Vec<BackOff>,
}

impl Starts<'_> {
    /// Plans a start; false when the container is held by its back-off.
    fn start(&mut self, kind: ContainerKind, index: usize, container: &Container) -> bool {
        let latest = self.observed.latest_container(&container.name);
        let restart_count =
            latest.map(|c| u32::try_from(c.restart_count.saturating_add(1)).unwrap_or(0));
        let mut back_off = None;
        if let Some(exited) = self.observed.latest_exited_container(&container.name) {
            let key = backoff::container_key(self.pod, container);
            let finished_at = exited.finished_at.unwrap_or(Timestamp::UNIX_EPOCH);
            let backoff = self.inputs.backoff;
            if backoff.is_in_backoff_since(&key, finished_at, self.inputs.now) {
                let delay = backoff.get(&key);
                self.back_offs.push(BackOff {
                    name: container.name.clone(),
                    until: add_seconds(finished_at, seconds(delay)),
                    reason: WaitingReason::crash_loop_back_off(self.pod, &container.name, delay),
                });
                return false;
            }
            back_off = Some(BackoffRestart { key, finished_at });
        }
        self.actions.push(Action::StartContainer(StartContainer {
            kind,
            index,
            name: container.name.clone(),
            restart_count,
            back_off,
        }));
        true
    }

    /// Starts init containers in order; stops at the first regular init container that is
    /// held back (upstream returns from `SyncPod` when such a start fails).
    fn start_init_containers(&mut self, indexes: &[usize]) -> bool {
        let init_containers = pod_init_containers(self.pod);
        for &index in indexes {
            let Some(container) = init_containers.get(index) else {
                continue;
            };
            let kind = if is_restartable_init_container(container) {
                ContainerKind::Sidecar
            } else {
                ContainerKind::Init
            };
            if !self.start(kind, index, container) && kind == ContainerKind::Init {
                return false;
            }
        }
        true
    }
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

fn plan_sync(pod: &Pod, observed: &ObservedPod, inputs: &PlanInputs<'_>) -> PodPlan {
    let mut plan = PodPlan {
        mode: PlanMode::Sync,
        actions: Vec::new(),
        back_offs: Vec::new(),
        requeue_at: None,
    };
    let restart_policy = RestartPolicy::of(pod);
    let containers = pod_containers(pod);
    let mut starts = Starts {
        pod,
        observed,
        inputs,
        actions: Vec::new(),
        back_offs: Vec::new(),
    };

    let sandbox = pod_sandbox_changed(pod, observed);
    if sandbox.create {
        if !restart_policy.restarts_on_failure()
            && sandbox.attempt != 0
            && !observed.containers.is_empty()
        {
            // A Never pod whose sandbox died is not restarted: stop what is left.
            plan.actions = kill_pod(pod, observed, None);
            plan.actions.extend(prune_init_containers(pod, observed));
            return plan;
        }
        let to_start: Vec<usize> = containers
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                !(restart_policy == RestartPolicy::OnFailure && container_succeeded(c, observed))
            })
            .map(|(i, _)| i)
            .collect();
        let initialized = containers.iter().any(|c| {
            observed.latest_container(&c.name).is_some_and(|s| {
                matches!(
                    s.state,
                    ContainerState::Created | ContainerState::Running | ContainerState::Exited
                )
            })
        });
        plan.actions = kill_pod(pod, observed, None);
        if initialized && to_start.is_empty() {
            // Initialized and nothing left to start: stop, do not recreate.
            plan.actions.extend(prune_init_containers(pod, observed));
            return plan;
        }
        plan.actions.extend(purge_init_containers(pod, observed));
        plan.actions.push(Action::CreateSandbox {
            attempt: sandbox.attempt,
        });
        if pod_init_containers(pod).is_empty() {
            for index in to_start {
                starts.start(ContainerKind::Regular, index, &containers[index]);
            }
        } else {
            starts.start_init_containers(&[0]);
        }
        return finish(plan, starts);
    }

    let init = compute_init_container_actions(pod, observed);
    if init.kill_pod {
        plan.actions = kill_pod(pod, observed, None);
        plan.actions.extend(prune_init_containers(pod, observed));
        return plan;
    }
    let mut to_kill = init.to_kill;
    if !init.initialized {
        push_kills(&mut plan.actions, to_kill);
        plan.actions.extend(prune_init_containers(pod, observed));
        starts.start_init_containers(&init.to_start);
        return finish(plan, starts);
    }

    let mut keep = 0;
    let mut to_start = Vec::new();
    for (index, container) in containers.iter().enumerate() {
        let status = observed.latest_container(&container.name);
        let Some(status) = status.filter(|s| s.state == ContainerState::Running) else {
            if should_container_be_restarted(container, pod, observed) {
                to_start.push(index);
                if let Some(status) = status.filter(|s| s.state == ContainerState::Unknown) {
                    to_kill.push(kill(
                        pod,
                        status,
                        container_grace_period(pod, Some(container), KillReason::Unknown),
                        KillReason::Unknown,
                        "Container is in \"unknown\" state, try killing it before restart"
                            .to_owned(),
                    ));
                }
            }
            continue;
        };
        let probes = observed.probe_results(&status.id);
        let mut restart = restart_policy.restarts_on_failure();
        let (reason, mut message) = if status
            .hash
            .as_ref()
            .is_some_and(|hash| *hash != container_hash(container))
        {
            restart = true;
            (
                KillReason::Unspecified,
                format!("Container {} definition changed", container.name),
            )
        } else if probes.liveness == Some(ProbeResult::Failure) {
            (
                KillReason::LivenessProbe,
                format!("Container {} failed liveness probe", container.name),
            )
        } else if probes.startup == Some(ProbeResult::Failure) {
            (
                KillReason::StartupProbe,
                format!("Container {} failed startup probe", container.name),
            )
        } else {
            keep += 1;
            continue;
        };
        if restart {
            message.push_str(", will be restarted");
            to_start.push(index);
        }
        to_kill.push(kill(
            pod,
            status,
            container_grace_period(pod, Some(container), reason),
            reason,
            message,
        ));
    }

    if keep == 0 && to_start.is_empty() {
        // Nothing runs and nothing will: stop the pod (also its sidecars).
        plan.actions = kill_pod(pod, observed, None);
        plan.actions.extend(prune_init_containers(pod, observed));
        return plan;
    }
    push_kills(&mut plan.actions, to_kill);
    plan.actions.extend(prune_init_containers(pod, observed));
    if starts.start_init_containers(&init.to_start) {
        for index in to_start {
            starts.start(ContainerKind::Regular, index, &containers[index]);
        }
    }
    finish(plan, starts)
}

fn push_kills(actions: &mut Vec<Action>, kills: Vec<KillContainer>) {
    if !kills.is_empty() {
        actions.push(Action::KillContainers(kills));
    }
}

fn finish(mut plan: PodPlan, starts: Starts<'_>) -> PodPlan {
    plan.actions.extend(starts.actions);
    plan.requeue_at = starts.back_offs.iter().map(|b| b.until).min();
    plan.back_offs = starts.back_offs;
    plan
}

/// Upstream `containerSucceeded`: the newest instance is not running and its exit code is 0.
fn container_succeeded(container: &Container, observed: &ObservedPod) -> bool {
    observed
        .latest_container(&container.name)
        .is_some_and(|s| s.state != ContainerState::Running && s.exit_code == 0)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
