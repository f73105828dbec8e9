//! One pod worker: the loop that syncs one pod UID until it is deleted and gone from the runtime.
//!
//! Owns the per-pod state upstream keeps across rounds (CrashLoopBackOff and image pull
//! back-offs, waiting reasons, the last status it generated), the sync round (observe →
//! generate status → patch when changed → plan → execute) and its wake-ups (a pod event, the
//! plan's `requeue_at`, the next due probe, a changed probe result, the
//! [`super::RELIST_PERIOD`] relist). Hands due probes to tasks of their own (one per run,
//! [`super::prober`]) and folds their outcomes into [`PodProbes`]; runs `postStart` hooks right
//! after `StartContainer` and `preStop` hooks before `StopContainer`. Executes each
//! [`Action`] with one or a few CRI calls, creating host directories first where the runtime
//! expects them.
//!
//! Never decides what to do: every decision is [`crate::pod`]'s. Never touches another pod's
//! runtime objects (everything is selected by this pod's UID).

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::{Container, LifecycleHandler, Pod, PodStatus},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::{
    PodUpdate, RELIST_PERIOD, WorkerContext, api, events::EventType, observe::observe_pod, prober,
    volumes,
};
use crate::{
    cri::api::{Image, PodSandboxConfig},
    pod::{
        PodPhase,
        backoff::Backoff,
        container::{
            ContainerInputs, ImageUser, ResolvedVolume, generate_container_config,
            restart_count_from_log_files,
        },
        env::ObjectStore,
        format_pod,
        image::{EnsureImage, ImageError, apply_default_image_tag, ensure_image},
        is_deleted, is_host_network, is_static_pod,
        observed::{ObservedPod, ObservedSandbox, ProbeResult, sort_pod_ips},
        plan::{
            Action, KillContainer, KillReason, PlanInputs, PlanMode, StartContainer,
            container_grace_period, plan_pod, stop_timeout,
        },
        pod_uid,
        probe::{PodProbes, ProbeKey},
        resources::{pod_cgroup_parent, pod_qos},
        sandbox::{container_logs_directory, generate_pod_sandbox_config, hosts_file_content},
        status::{
            POST_START_HOOK_ERROR, StatusInputs, WaitingReason, WaitingReasons,
            generate_pod_status, status_changed, terminated_pod_status,
        },
    },
};

/// A pod's mounted volumes by name, as container configs take them.
type PodVolumeMap = BTreeMap<String, ResolvedVolume>;

/// Rounds run back to back (each one changed the runtime) before the worker waits anyway: a
/// guard against a plan that keeps "succeeding" without converging.
const MAX_ROUNDS_WITHOUT_WAITING: u32 = 10;

/// What the round asks the loop to do next.
enum Next {
    /// Sync again at once: the runtime changed.
    Again,
    /// Wait for an event, the relist, or this time.
    Wait(Option<Timestamp>),
    /// The pod is terminated, deleted from the API and gone from the runtime.
    Done,
}

/// The sandbox the round's containers go into.
struct SandboxInUse {
    id: String,
    config: PodSandboxConfig,
    pod_ips: Vec<String>,
}

/// Per-pod state kept across rounds.
struct PodWorker {
    context: Arc<WorkerContext>,
    crash_loop: Backoff,
    image_pull: Backoff,
    waiting: WaitingReasons,
    last_status: Option<PodStatus>,
    /// The UID of the API object `last_status` was patched to (a static pod's mirror pod may be
    /// re-created: a new one gets the status again).
    reported_to: Option<String>,
    /// A finished (not deleted) pod was stopped: nothing is left to do until it is deleted.
    stopped_after_finishing: bool,
    /// The containers' probe states.
    probes: PodProbes,
    /// Where probe tasks send their outcomes.
    probe_done: mpsc::UnboundedSender<ProbeDone>,
    /// When the next probe is due.
    probe_wake: Option<Timestamp>,
    /// When the pod's volumes were last set up; file volumes of a running pod are refreshed
    /// every [`volumes::REFRESH_PERIOD`].
    volumes_set_up_at: Option<std::time::Instant>,
}

/// A probe run's outcome, sent by its task to the pod worker.
struct ProbeDone {
    key: ProbeKey,
    container_id: String,
    outcome: prober::ProbeOutcome,
}

/// Runs the worker of the pod in `updates` until the pod is terminated and deleted.
pub(super) async fn run(context: Arc<WorkerContext>, mut updates: watch::Receiver<PodUpdate>) {
    let (probe_done, mut probe_outcomes) = mpsc::unbounded_channel();
    let mut worker = PodWorker {
        context,
        crash_loop: Backoff::crash_loop(),
        image_pull: Backoff::image_pull(),
        waiting: WaitingReasons::default(),
        last_status: None,
        reported_to: None,
        stopped_after_finishing: false,
        probes: PodProbes::default(),
        probe_done,
        probe_wake: None,
        volumes_set_up_at: None,
    };
    let mut senders_alive = true;
    let mut rounds_without_waiting = 0;
    loop {
        let update = updates.borrow_and_update().clone();
        let next = match worker.sync(&update).await {
            Ok(next) => next,
            Err(problem) => {
                warn!(pod = %format_pod(&update.pod), "sync failed: {problem}");
                Next::Wait(None)
            }
        };
        let requeue_at = match next {
            Next::Done => {
                info!(pod = %format_pod(&update.pod), "pod terminated and removed");
                return;
            }
            Next::Again if rounds_without_waiting < MAX_ROUNDS_WITHOUT_WAITING => {
                rounds_without_waiting += 1;
                continue;
            }
            Next::Again => {
                warn!(pod = %format_pod(&update.pod), "the runtime changed every round; waiting");
                None
            }
            Next::Wait(requeue_at) => requeue_at,
        };
        rounds_without_waiting = 0;
        let mut wait = RELIST_PERIOD;
        let requeue_at = match (requeue_at, worker.probe_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = requeue_at {
            let until = at.duration_since(Timestamp::now());
            wait = wait.min(Duration::try_from(until).unwrap_or(Duration::ZERO));
        }
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                changed = updates.changed(), if senders_alive => {
                    senders_alive = changed.is_ok();
                    break;
                }
                Some(done) = probe_outcomes.recv() => {
                    let pod = Arc::clone(&updates.borrow().pod);
                    // Only a changed result needs a sync round.
                    if worker.probe_finished(&pod, done) {
                        break;
                    }
                }
                () = &mut sleep => break,
            }
        }
    }
}

impl PodWorker {
    /// Puts the generated status into the pod registry entry of this pod (the `:10250`
    /// server's `/pods` and `/containerLogs` read it; static pods have no API status at all).
    fn publish_status(&self, pod: &Pod, status: &PodStatus) {
        let Ok(mut pods) = self.context.pods.write() else {
            return;
        };
        let Some(entry) = pods.get_mut(pod_uid(pod)) else {
            return;
        };
        let stale = entry
            .status
            .as_ref()
            .is_none_or(|current| status_changed(current, status));
        if stale {
            let mut published = (**entry).clone();
            published.status = Some(status.clone());
            *entry = Arc::new(published);
        }
    }

    /// The events upstream records when a container cannot start: image problems get their own
    /// reason with the full message and a short `Failed` "Error: <reason>"; config, create and
    /// run errors a `Failed` with the message. postStart failures have their hook's event.
    fn record_start_failure(&self, pod: &Pod, container: &str, reason: &WaitingReason) {
        let events = &self.context.events;
        let record = |event_reason: &str, message: &str| {
            events.record_for_container(pod, container, EventType::Warning, event_reason, message);
        };
        let image_event = match reason.reason.as_str() {
            "InvalidImageName" => Some("InspectFailed"),
            "ErrImageNeverPull" => Some("ErrImageNeverPull"),
            "ErrImagePull" => Some("Failed"),
            POST_START_HOOK_ERROR => return,
            _ => None,
        };
        match image_event {
            Some(event_reason) => {
                record(event_reason, &reason.message);
                record("Failed", &format!("Error: {}", reason.reason));
            }
            None if reason.message.is_empty() => {
                record("Failed", &format!("Error: {}", reason.reason));
            }
            None => record("Failed", &format!("Error: {}", reason.message)),
        }
    }

    /// One sync round.
    async fn sync(&mut self, update: &PodUpdate) -> Result<Next, String> {
        let now = Timestamp::now();
        let mut pod = (*update.pod).clone();
        if update.gone && !is_deleted(&pod) {
            // Removed from the API without a graceful deletion: terminate it all the same.
            pod.metadata.deletion_timestamp = Some(Time(now));
        }
        let runtime = &self.context.runtime;
        let mut observed = observe_pod(runtime, pod_uid(&pod))
            .await
            .map_err(|error| format!("observing the runtime: {error}"))?;
        if update.gone {
            self.probe_wake = None;
        } else {
            self.start_probes(&pod, &observed, now);
        }
        observed.probes = self.probes.results();

        let status = generate_pod_status(
            &pod,
            &self.context.node,
            &StatusInputs {
                now,
                observed: &observed,
                waiting_reasons: &self.waiting,
                previous: self.last_status.as_ref(),
            },
        );
        if !update.gone {
            self.publish_status(&pod, &status);
            self.report(&pod, update.mirror.as_deref(), status.clone())
                .await;
        }
        let phase = status
            .phase
            .as_deref()
            .and_then(PodPhase::parse)
            .unwrap_or(PodPhase::Pending);

        let plan = plan_pod(
            &pod,
            &observed,
            &PlanInputs {
                now,
                phase,
                backoff: &self.crash_loop,
            },
        );
        for back_off in &plan.back_offs {
            let already = self
                .waiting
                .get(&back_off.name)
                .is_some_and(|waiting| waiting.reason == back_off.reason.reason);
            if !already {
                self.context.events.record_for_container(
                    &pod,
                    &back_off.name,
                    EventType::Warning,
                    "BackOff",
                    &format!("Back-off restarting failed container {}", back_off.name),
                );
            }
            self.waiting.record(&back_off.name, back_off.reason.clone());
        }
        let finished = plan.mode == PlanMode::Terminated && !is_deleted(&pod);
        if finished && self.stopped_after_finishing {
            return Ok(Next::Wait(None));
        }
        let all_succeeded = self.execute(&pod, &observed, &plan.actions, now).await;
        self.stopped_after_finishing = finished && all_succeeded;
        let refresh_due = self
            .volumes_set_up_at
            .is_none_or(|at| at.elapsed() >= volumes::REFRESH_PERIOD);
        if plan.mode == PlanMode::Sync && refresh_due && volumes::has_file_volumes(&pod) {
            // Failures are reported as events; the volumes keep their content.
            let _ = self.mount_volumes(&pod).await;
        }

        if plan.mode == PlanMode::Terminated && is_deleted(&pod) {
            if !all_succeeded {
                return Ok(Next::Wait(None));
            }
            return self.finish_deleted(&pod, update.gone, &status).await;
        }
        if plan.mode == PlanMode::Terminating && all_succeeded {
            return Ok(Next::Again);
        }
        if plan.mode == PlanMode::Sync && all_succeeded && !plan.actions.is_empty() {
            return Ok(Next::Again);
        }
        Ok(Next::Wait(plan.requeue_at))
    }

    /// Patches the status when it differs from what the API (or this worker) last had. A static
    /// pod's status goes to its `mirror` pod; without one (not created yet, API down) it is only
    /// kept.
    async fn report(&mut self, pod: &Pod, mirror: Option<&Pod>, status: PodStatus) {
        let target = match mirror {
            _ if !is_static_pod(pod) => pod,
            Some(mirror) => mirror,
            None => {
                self.last_status = Some(status);
                return;
            }
        };
        let api_status = target.status.clone().unwrap_or_default();
        let old = match &self.last_status {
            Some(last) if self.reported_to.as_deref() == Some(pod_uid(target)) => last,
            _ => &api_status,
        };
        if !status_changed(old, &status) {
            return;
        }
        match api::patch_status(&self.context.client, target, &status).await {
            Ok(()) => {
                debug!(pod = %format_pod(target), phase = ?status.phase, "patched status");
                self.last_status = Some(status);
                self.reported_to = Some(pod_uid(target).to_owned());
            }
            Err(error) => warn!(pod = %format_pod(pod), "patching status: {error}"),
        }
    }

    /// A deleted pod whose containers and sandboxes are stopped: remove them, report the final
    /// status and delete the pod with grace period 0.
    async fn finish_deleted(
        &mut self,
        pod: &Pod,
        gone: bool,
        status: &PodStatus,
    ) -> Result<Next, String> {
        let runtime = &self.context.runtime;
        let observed = observe_pod(runtime, pod_uid(pod))
            .await
            .map_err(|error| format!("observing the runtime before removal: {error}"))?;
        for container in &observed.containers {
            runtime
                .remove_container(&container.id)
                .await
                .map_err(|error| error.to_string())?;
        }
        for sandbox in &observed.sandboxes {
            runtime
                .stop_pod_sandbox(&sandbox.id)
                .await
                .map_err(|error| error.to_string())?;
            runtime
                .remove_pod_sandbox(&sandbox.id)
                .await
                .map_err(|error| error.to_string())?;
        }
        if let Err(error) = volumes::remove_pod_directory(&self.context.node, pod) {
            warn!(pod = %format_pod(pod), "removing the pod directory: {error}");
        }
        if let Some(root) = &self.context.node.cgroup_root {
            super::cgroups::remove_pod_cgroup(root, pod_uid(pod));
        }
        // A static pod has no API object of its own to finish (its mirror pod is not its).
        if gone || is_static_pod(pod) {
            return Ok(Next::Done);
        }
        let client = &self.context.client;
        let final_status = terminated_pod_status(pod, status);
        if let Err(error) = api::patch_status(client, pod, &final_status).await {
            // The pod may be gone already; the delete below settles it either way.
            debug!(pod = %format_pod(pod), "patching the final status: {error}");
        }
        api::delete_terminated_pod(client, pod)
            .await
            .map_err(|error| format!("deleting the terminated pod: {error}"))?;
        Ok(Next::Done)
    }

    /// Fetches the objects the pod references and sets up its volumes; a volume that cannot be
    /// set up gets upstream's `FailedMount` event, and when one was never set up the error
    /// says containers must wait (upstream `WaitForAttachAndMount`).
    async fn mount_volumes(&mut self, pod: &Pod) -> (ObjectStore, Result<PodVolumeMap, String>) {
        let objects = api::fetch_referenced_objects(&self.context.client, pod).await;
        let set_up = volumes::set_up_pod_volumes(pod, &self.context.node, &objects);
        self.volumes_set_up_at = Some(std::time::Instant::now());
        for failure in &set_up.failures {
            let message = failure.to_string();
            warn!(pod = %format_pod(pod), "{message}");
            let events = &self.context.events;
            events.record(pod, EventType::Warning, "FailedMount", &message);
        }
        let unmounted: Vec<&str> = set_up
            .blocking()
            .map(|failure| failure.volume.as_str())
            .collect();
        if unmounted.is_empty() {
            (objects, Ok(set_up.volumes))
        } else {
            let problem = format!("unmounted volumes=[{}]", unmounted.join(" "));
            (objects, Err(problem))
        }
    }

    /// Runs `actions` in order; returns whether all of them succeeded.
    async fn execute(
        &mut self,
        pod: &Pod,
        observed: &ObservedPod,
        actions: &[Action],
        now: Timestamp,
    ) -> bool {
        let mut sandbox: Option<SandboxInUse> = None;
        // The referenced objects and the mounted volumes, made once per round before the
        // first sandbox or container start (upstream waits for the volumes before both).
        let mut prepared: Option<(ObjectStore, Result<PodVolumeMap, String>)> = None;
        let mut all_succeeded = true;
        for action in actions {
            let result = match action {
                Action::KillContainers(kills) => self.kill_containers(pod, kills).await,
                Action::StopSandbox { sandbox_id } => self
                    .context
                    .runtime
                    .stop_pod_sandbox(sandbox_id)
                    .await
                    .map_err(|error| error.to_string()),
                Action::RemoveContainer { container_id, name } => {
                    if let Err(error) = self.context.runtime.remove_container(container_id).await {
                        warn!(pod = %format_pod(pod), "removing old container {name}: {error}");
                    }
                    Ok(())
                }
                Action::CreateSandbox { attempt } => {
                    if prepared.is_none() {
                        prepared = Some(self.mount_volumes(pod).await);
                    }
                    match &prepared {
                        Some((_, Err(problem))) => Err(problem.clone()),
                        _ => match self.create_sandbox(pod, *attempt).await {
                            Ok(created) => {
                                sandbox = Some(created);
                                Ok(())
                            }
                            Err(problem) => Err(problem),
                        },
                    }
                }
                Action::StartContainer(start) => {
                    if sandbox.is_none() {
                        sandbox = self.active_sandbox(pod, observed);
                    }
                    if prepared.is_none() {
                        prepared = Some(self.mount_volumes(pod).await);
                    }
                    match (&sandbox, &prepared) {
                        // No waiting reason: the container stays `ContainerCreating`.
                        (_, Some((_, Err(problem)))) => Err(problem.clone()),
                        (Some(sandbox), Some((objects, Ok(volumes)))) => {
                            self.start_container(pod, start, sandbox, objects, volumes, now)
                                .await
                        }
                        _ => Err("no ready pod sandbox to start containers in".to_owned()),
                    }
                }
            };
            if let Err(problem) = result {
                all_succeeded = false;
                warn!(pod = %format_pod(pod), ?action, "{problem}");
                if action.aborts_plan_on_failure() {
                    break;
                }
            }
        }
        all_succeeded
    }

    /// Stops the containers concurrently, each within its grace period: its preStop hook first
    /// (when the plan says so), then `StopContainer` with what the hook left of the grace period.
    async fn kill_containers(&self, pod: &Pod, kills: &[KillContainer]) -> Result<(), String> {
        let stops = kills.iter().map(|kill| async move {
            let started = std::time::Instant::now();
            if kill.run_pre_stop {
                self.run_pre_stop(pod, kill).await;
            }
            let elapsed = i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
            let seconds = stop_timeout(kill.grace_period_seconds, elapsed);
            self.context.events.record_for_container(
                pod,
                &kill.name,
                EventType::Normal,
                "Killing",
                &match kill.reason {
                    // Upstream's probe kill message: "Container X failed liveness probe, will
                    // be restarted".
                    KillReason::LivenessProbe | KillReason::StartupProbe => kill.message.clone(),
                    KillReason::Unspecified | KillReason::Unknown => {
                        format!("Stopping container {}", kill.name)
                    }
                },
            );
            let timeout = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
            debug!(container = %kill.name, ?timeout, "{}", kill.message);
            self.context
                .runtime
                .stop_container(&kill.container_id, timeout)
                .await
        });
        let failures: Vec<String> = futures_util::future::join_all(stops)
            .await
            .into_iter()
            .filter_map(Result::err)
            .map(|error| error.to_string())
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// Runs the container's preStop hook (`exec` through CRI ExecSync, `httpGet` to the pod
    /// IP, `sleep`), bounded by the grace period; a failing hook is reported as upstream's
    /// `FailedPreStopHook` event and the stop goes on.
    async fn run_pre_stop(&self, pod: &Pod, kill: &KillContainer) {
        let Some(container) = pod
            .spec
            .as_ref()
            .into_iter()
            .flat_map(|spec| {
                spec.containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
            })
            .find(|container| container.name == kill.name)
        else {
            return;
        };
        let Some(handler) = container
            .lifecycle
            .as_ref()
            .and_then(|lifecycle| lifecycle.pre_stop.as_ref())
        else {
            return;
        };
        let grace = Duration::from_secs(u64::try_from(kill.grace_period_seconds).unwrap_or(0));
        let pod_ip = self
            .last_status
            .as_ref()
            .or(pod.status.as_ref())
            .and_then(|status| status.pod_ip.clone());
        let hook = prober::run_hook(
            &self.context.runtime,
            pod,
            container,
            &kill.container_id,
            handler,
            pod_ip.as_deref(),
            grace,
        );
        match tokio::time::timeout(grace, hook).await {
            Ok(Ok(())) => debug!(container = %kill.name, "preStop hook ran"),
            Ok(Err(message)) => {
                warn!(pod = %format_pod(pod), container = %kill.name, "FailedPreStopHook: {message}");
                self.context.events.record_for_container(
                    pod,
                    &kill.name,
                    EventType::Warning,
                    "FailedPreStopHook",
                    &message,
                );
            }
            Err(_elapsed) => {
                debug!(container = %kill.name, ?grace, "preStop hook not completed in grace period")
            }
        }
    }

    /// Builds the sandbox config, creates the pod log directory and runs the sandbox.
    async fn create_sandbox(&self, pod: &Pod, attempt: u32) -> Result<SandboxInUse, String> {
        let node = &self.context.node;
        let config = generate_pod_sandbox_config(pod, node, attempt, &pod_cgroup(pod, node))
            .map_err(|error| format!("generating the pod sandbox config: {error}"))?;
        std::fs::create_dir_all(&config.log_directory).map_err(|error| {
            format!(
                "creating the pod log directory {}: {error}",
                config.log_directory
            )
        })?;
        let runtime = &self.context.runtime;
        let id = runtime
            .run_pod_sandbox(config.clone(), "")
            .await
            .map_err(|error| error.to_string())?;
        info!(pod = %format_pod(pod), sandbox = %id, attempt, "pod sandbox running");
        let ips = match runtime.pod_sandbox_status(&id).await {
            Ok(Some(status)) => ObservedSandbox::from_cri(&status).ips,
            Ok(None) => Vec::new(),
            Err(error) => return Err(format!("reading the new sandbox's status: {error}")),
        };
        let pod_ips = if is_host_network(pod) {
            sort_pod_ips(&node.host_ips, &node.host_ips)
        } else {
            sort_pod_ips(&ips, &node.host_ips)
        };
        Ok(SandboxInUse {
            id,
            config,
            pod_ips,
        })
    }

    /// The observed ready sandbox, with the config it was run with (regenerated: it is a pure
    /// function of the pod and the attempt).
    fn active_sandbox(&self, pod: &Pod, observed: &ObservedPod) -> Option<SandboxInUse> {
        let active = observed.active_sandbox()?;
        let node = &self.context.node;
        let config =
            generate_pod_sandbox_config(pod, node, active.attempt, &pod_cgroup(pod, node)).ok()?;
        Some(SandboxInUse {
            id: active.id.clone(),
            config,
            pod_ips: observed.pod_ips(pod, &node.host_ips),
        })
    }

    /// Ensures the image, builds the config, creates and starts the container. Failures are
    /// recorded as the container's waiting reason and returned.
    async fn start_container(
        &mut self,
        pod: &Pod,
        start: &StartContainer,
        sandbox: &SandboxInUse,
        objects: &ObjectStore,
        volumes: &PodVolumeMap,
        now: Timestamp,
    ) -> Result<(), String> {
        let result = self
            .try_start_container(pod, start, sandbox, objects, volumes, now)
            .await;
        match result {
            Ok(()) => {
                self.waiting.clear(&start.name);
                info!(pod = %format_pod(pod), container = %start.name, "container started");
                Ok(())
            }
            Err(reason) => {
                let problem = format!(
                    "starting container {}: {}: {}",
                    start.name, reason.reason, reason.message
                );
                let repeated = self
                    .waiting
                    .get(&start.name)
                    .is_some_and(|waiting| *waiting == reason);
                if !repeated {
                    self.record_start_failure(pod, &start.name, &reason);
                }
                self.waiting.record(&start.name, reason);
                Err(problem)
            }
        }
    }

    async fn try_start_container(
        &mut self,
        pod: &Pod,
        start: &StartContainer,
        sandbox: &SandboxInUse,
        objects: &ObjectStore,
        volumes: &PodVolumeMap,
        now: Timestamp,
    ) -> Result<(), WaitingReason> {
        let runtime = &self.context.runtime;
        let node = &self.context.node;
        let container = start.spec(pod).ok_or_else(|| {
            WaitingReason::create_container_error(format!(
                "container {} is not in the pod spec",
                start.name
            ))
        })?;
        if let Some(back_off) = &start.back_off {
            self.crash_loop
                .next(&back_off.key, back_off.finished_at, now);
        }

        // The image, per pull policy.
        let requested = container.image.as_deref().unwrap_or_default();
        let tagged = apply_default_image_tag(requested)
            .map_err(|error| WaitingReason::from_image_error(&error))?;
        let present = runtime
            .image_status(&tagged)
            .await
            .map_err(|error| WaitingReason::create_container_error(error.to_string()))?;
        let image = match ensure_image(pod, container, present.is_some(), &self.image_pull, now) {
            EnsureImage::UsePresent { .. } => {
                self.context.events.record_for_container(
                    pod,
                    &container.name,
                    EventType::Normal,
                    "Pulled",
                    &format!("Container image \"{requested}\" already present on machine"),
                );
                present
            }
            EnsureImage::Fail(error) => return Err(WaitingReason::from_image_error(&error)),
            EnsureImage::Pull { image, backoff_key } => {
                match runtime
                    .pull_image(&image, Some(sandbox.config.clone()))
                    .await
                {
                    Ok(image_ref) => runtime.image_status(&image_ref).await.ok().flatten(),
                    Err(error) => {
                        self.image_pull.next(&backoff_key, now, now);
                        return Err(WaitingReason::from_image_error(&ImageError::Pull {
                            image: requested.to_owned(),
                            message: error.to_string(),
                        }));
                    }
                }
            }
        };
        let image = image.ok_or_else(|| {
            WaitingReason::create_container_error(format!("image {tagged} vanished"))
        })?;
        let image_user = image_user(&image);

        // Host directories the config refers to.
        let logs_directory = container_logs_directory(&node.pod_logs_root, pod, &container.name);
        let restart_count = match start.restart_count {
            Some(count) => count,
            None => restart_count_in(Path::new(&logs_directory)),
        };
        std::fs::create_dir_all(&logs_directory).map_err(|error| {
            WaitingReason::create_container_error(format!("creating {logs_directory}: {error}"))
        })?;
        let pod_directory = volumes::pod_directory(node, pod);
        std::fs::create_dir_all(&pod_directory).map_err(|error| {
            WaitingReason::create_container_error(format!(
                "creating {}: {error}",
                pod_directory.display()
            ))
        })?;
        let hosts_file = pod_directory.join("etc-hosts");
        let host_etc_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let hosts_content =
            hosts_file_content(pod, &sandbox.pod_ips, &node.cluster_domain, &host_etc_hosts)
                .map_err(|error| WaitingReason::create_container_error(error.to_string()))?;
        std::fs::write(&hosts_file, hosts_content).map_err(|error| {
            WaitingReason::create_container_error(format!(
                "writing {}: {error}",
                hosts_file.display()
            ))
        })?;
        let hosts_file = hosts_file.display().to_string();

        let generated = generate_container_config(
            pod,
            container,
            node,
            &ContainerInputs {
                restart_count,
                image_ref: &image.id,
                image_user: &image_user,
                pod_ips: &sandbox.pod_ips,
                volumes,
                etc_hosts_host_path: Some(&hosts_file),
                termination_message_host_path: None,
            },
            objects,
        )
        .map_err(|error| WaitingReason::from_config_error(&error))?;
        // Only missing subPaths are made: an existing one may be a file (a configMap key).
        for sub_path in generated
            .sub_paths
            .iter()
            .filter(|p| !Path::new(p).exists())
        {
            std::fs::create_dir_all(sub_path).map_err(|error| {
                WaitingReason::create_container_error(format!("creating {sub_path}: {error}"))
            })?;
        }
        let events = &self.context.events;
        let id = runtime
            .create_container(&sandbox.id, generated.config, sandbox.config.clone())
            .await
            .map_err(|error| WaitingReason::create_container_error(error.to_string()))?;
        events.record_for_container(
            pod,
            &container.name,
            EventType::Normal,
            "Created",
            &format!("Created container: {}", container.name),
        );
        runtime
            .start_container(&id)
            .await
            .map_err(|error| WaitingReason::run_container_error(error.to_string()))?;
        events.record_for_container(
            pod,
            &container.name,
            EventType::Normal,
            "Started",
            &format!("Started container {}", container.name),
        );
        if let Some(handler) = container
            .lifecycle
            .as_ref()
            .and_then(|lifecycle| lifecycle.post_start.as_ref())
        {
            self.run_post_start(pod, container, &id, handler, sandbox)
                .await?;
        }
        Ok(())
    }
}

/// Probes and lifecycle hooks ([`prober`] runs them, [`crate::pod::probe`] decides).
impl PodWorker {
    /// Runs the postStart hook right after `StartContainer` (upstream: no timeout of its
    /// own). A failure is upstream's `FailedPostStartHook`: the container is killed and the
    /// start fails with `PostStartHookError`, so the restart policy decides what comes next.
    async fn run_post_start(
        &self,
        pod: &Pod,
        container: &Container,
        container_id: &str,
        handler: &LifecycleHandler,
        sandbox: &SandboxInUse,
    ) -> Result<(), WaitingReason> {
        let runtime = &self.context.runtime;
        let pod_ip = sandbox.pod_ips.first().map(String::as_str);
        let hook = prober::run_hook(
            runtime,
            pod,
            container,
            container_id,
            handler,
            pod_ip,
            Duration::ZERO,
        );
        let Err(message) = hook.await else {
            return Ok(());
        };
        warn!(pod = %format_pod(pod), container = %container.name, "FailedPostStartHook: {message}");
        let events = &self.context.events;
        events.record_for_container(
            pod,
            &container.name,
            EventType::Warning,
            "FailedPostStartHook",
            &message,
        );
        events.record_for_container(
            pod,
            &container.name,
            EventType::Normal,
            "Killing",
            "FailedPostStartHook",
        );
        let grace = container_grace_period(pod, Some(container), KillReason::Unspecified);
        let timeout = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
        if let Err(error) = runtime.stop_container(container_id, timeout).await {
            warn!(pod = %format_pod(pod), container = %container.name, "killing the container after its postStart hook failed: {error}");
        }
        Err(WaitingReason::post_start_hook_error(message))
    }

    /// Hands the probes due now to tasks of their own; their outcomes come back through
    /// `probe_done` to [`PodWorker::probe_finished`].
    fn start_probes(&mut self, pod: &Pod, observed: &ObservedPod, now: Timestamp) {
        let phase = self
            .last_status
            .as_ref()
            .or(pod.status.as_ref())
            .and_then(|status| status.phase.as_deref())
            .and_then(PodPhase::parse)
            .unwrap_or(PodPhase::Pending);
        let pod_ips = observed.pod_ips(pod, &self.context.node.host_ips);
        let due = self.probes.due(
            pod,
            observed,
            pod_ips.first().map(String::as_str),
            phase,
            now,
        );
        self.probe_wake = due.next_at;
        for run in due.runs {
            let context = Arc::clone(&self.context);
            let sender = self.probe_done.clone();
            tokio::spawn(async move {
                let outcome = prober::run_probe(&context.runtime, &run).await;
                // The worker may be gone (pod removed): the outcome no longer matters.
                let _ = sender.send(ProbeDone {
                    key: run.key,
                    container_id: run.container_id,
                    outcome,
                });
            });
        }
    }

    /// Takes a probe outcome (upstream records `Unhealthy` for every failed run); true when
    /// the container's reported result changed.
    fn probe_finished(&mut self, pod: &Pod, done: ProbeDone) -> bool {
        let probe = done.key.probe_type.as_str();
        let container = &done.key.container;
        let message = match done.outcome.result {
            Some(ProbeResult::Success) => None,
            Some(ProbeResult::Failure) => {
                Some(format!("{probe} probe failed: {}", done.outcome.output))
            }
            None => Some(format!(
                "{probe} probe errored and resulted in unknown state: {}",
                done.outcome.output
            )),
        };
        if let Some(message) = message {
            debug!(pod = %format_pod(pod), %container, "{message}");
            self.context.events.record_for_container(
                pod,
                container,
                EventType::Warning,
                "Unhealthy",
                &message,
            );
        }
        let transition = self
            .probes
            .record(&done.key, &done.container_id, done.outcome.result);
        if let Some(transition) = &transition {
            info!(pod = %format_pod(pod), %container, probe, result = ?transition.result, "probe result changed");
        }
        transition.is_some()
    }
}

/// The pod's cgroup parent for its sandbox: below `--cgroup-root` by QoS class, or empty (the
/// runtime's default) without one.
fn pod_cgroup(pod: &Pod, node: &crate::pod::NodeContext) -> String {
    node.cgroup_root
        .as_deref()
        .map(|root| pod_cgroup_parent(root, pod_qos(pod), pod_uid(pod)))
        .unwrap_or_default()
}

/// The image's configured user (upstream `getImageUser`).
fn image_user(image: &Image) -> ImageUser {
    ImageUser {
        uid: image.uid.as_ref().map(|uid| uid.value),
        username: image.username.clone(),
    }
}

/// Upstream `calcRestartCountByLogDir` over the container's log directory (0 when missing).
fn restart_count_in(directory: &Path) -> u32 {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return 0;
    };
    let names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    restart_count_from_log_files(names.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_count_continues_after_the_highest_log_file() {
        let directory = tempfile::tempdir().unwrap();
        assert_eq!(restart_count_in(&directory.path().join("missing")), 0);
        for name in ["0.log", "3.log", "2.log.20260101-000000"] {
            std::fs::write(directory.path().join(name), "").unwrap();
        }

        assert_eq!(restart_count_in(directory.path()), 4);
    }
}
