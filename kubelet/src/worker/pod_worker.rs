//! One pod worker: the loop that syncs one pod UID until it is deleted and gone from the runtime.
//!
//! Owns the per-pod state upstream keeps across rounds (CrashLoopBackOff and image pull
//! back-offs, waiting reasons, the last status it generated), the sync round (observe →
//! generate status → patch when changed → plan → execute) and its wake-ups (a pod event, the
//! plan's `requeue_at`, the [`super::RELIST_PERIOD`] relist). Executes each
//! [`Action`] with one or a few CRI calls, creating host directories first where the runtime
//! expects them.
//!
//! Never decides what to do: every decision is [`crate::pod`]'s. Never touches another pod's
//! runtime objects (everything is selected by this pod's UID).

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::{Pod, PodStatus},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{PodUpdate, RELIST_PERIOD, WorkerContext, api, observe::observe_pod};
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
        is_deleted, is_host_network,
        observed::{ObservedPod, ObservedSandbox, sort_pod_ips},
        plan::{
            Action, KillContainer, PlanInputs, PlanMode, StartContainer, plan_pod, stop_timeout,
        },
        pod_uid,
        sandbox::{container_logs_directory, generate_pod_sandbox_config, hosts_file_content},
        status::{
            StatusInputs, WaitingReason, WaitingReasons, generate_pod_status, status_changed,
            terminated_pod_status,
        },
    },
};

/// The `emptyDir` plugin's directory name under `<root-dir>/pods/<uid>/volumes`.
const EMPTY_DIR_PLUGIN: &str = "kubernetes.io~empty-dir";

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
    /// A finished (not deleted) pod was stopped: nothing is left to do until it is deleted.
    stopped_after_finishing: bool,
}

/// Runs the worker of the pod in `updates` until the pod is terminated and deleted.
pub(super) async fn run(context: Arc<WorkerContext>, mut updates: watch::Receiver<PodUpdate>) {
    let mut worker = PodWorker {
        context,
        crash_loop: Backoff::crash_loop(),
        image_pull: Backoff::image_pull(),
        waiting: WaitingReasons::default(),
        last_status: None,
        stopped_after_finishing: false,
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
        if let Some(at) = requeue_at {
            let until = at.duration_since(Timestamp::now());
            wait = wait.min(Duration::try_from(until).unwrap_or(Duration::ZERO));
        }
        tokio::select! {
            changed = updates.changed(), if senders_alive => senders_alive = changed.is_ok(),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

impl PodWorker {
    /// One sync round.
    async fn sync(&mut self, update: &PodUpdate) -> Result<Next, String> {
        let now = Timestamp::now();
        let mut pod = (*update.pod).clone();
        if update.gone && !is_deleted(&pod) {
            // Removed from the API without a graceful deletion: terminate it all the same.
            pod.metadata.deletion_timestamp = Some(Time(now));
        }
        let runtime = &self.context.runtime;
        let observed = observe_pod(runtime, pod_uid(&pod))
            .await
            .map_err(|error| format!("observing the runtime: {error}"))?;

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
            self.report(&pod, status.clone()).await;
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
            self.waiting.record(&back_off.name, back_off.reason.clone());
        }
        let finished = plan.mode == PlanMode::Terminated && !is_deleted(&pod);
        if finished && self.stopped_after_finishing {
            return Ok(Next::Wait(None));
        }
        let all_succeeded = self.execute(&pod, &observed, &plan.actions, now).await;
        self.stopped_after_finishing = finished && all_succeeded;

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

    /// Patches the status when it differs from what the API (or this worker) last had.
    async fn report(&mut self, pod: &Pod, status: PodStatus) {
        let api_status = pod.status.clone().unwrap_or_default();
        let old = self.last_status.as_ref().unwrap_or(&api_status);
        if !status_changed(old, &status) {
            return;
        }
        match api::patch_status(&self.context.client, pod, &status).await {
            Ok(()) => {
                debug!(pod = %format_pod(pod), phase = ?status.phase, "patched status");
                self.last_status = Some(status);
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
        if gone {
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

    /// Runs `actions` in order; returns whether all of them succeeded.
    async fn execute(
        &mut self,
        pod: &Pod,
        observed: &ObservedPod,
        actions: &[Action],
        now: Timestamp,
    ) -> bool {
        let mut sandbox: Option<SandboxInUse> = None;
        let mut objects: Option<ObjectStore> = None;
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
                Action::CreateSandbox { attempt } => match self.create_sandbox(pod, *attempt).await
                {
                    Ok(created) => {
                        sandbox = Some(created);
                        Ok(())
                    }
                    Err(problem) => Err(problem),
                },
                Action::StartContainer(start) => {
                    if sandbox.is_none() {
                        sandbox = self.active_sandbox(pod, observed);
                    }
                    if objects.is_none() {
                        objects =
                            Some(api::fetch_referenced_objects(&self.context.client, pod).await);
                    }
                    match (&sandbox, &objects) {
                        (Some(sandbox), Some(objects)) => {
                            self.start_container(pod, start, sandbox, objects, now)
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

    /// Runs the container's preStop hook, bounded by the grace period. `exec` runs through CRI
    /// ExecSync, `sleep` waits; a failing hook is logged and the stop goes on (upstream's
    /// `FailedPreStopHook`). `httpGet` hooks are not run yet (logged).
    async fn run_pre_stop(&self, pod: &Pod, kill: &KillContainer) {
        let Some(handler) = pod
            .spec
            .as_ref()
            .into_iter()
            .flat_map(|spec| {
                spec.containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
            })
            .find(|container| container.name == kill.name)
            .and_then(|container| container.lifecycle.as_ref()?.pre_stop.as_ref())
        else {
            return;
        };
        let grace = Duration::from_secs(u64::try_from(kill.grace_period_seconds).unwrap_or(0));
        if let Some(exec) = &handler.exec {
            let command = exec.command.clone().unwrap_or_default();
            let ran = self
                .context
                .runtime
                .exec_sync(&kill.container_id, command, grace)
                .await;
            match ran {
                Ok(result) if result.exit_code == 0 => {
                    debug!(container = %kill.name, "preStop hook ran")
                }
                Ok(result) => {
                    warn!(container = %kill.name, exit_code = result.exit_code, "FailedPreStopHook: the preStop hook exited non-zero")
                }
                Err(error) => warn!(container = %kill.name, %error, "FailedPreStopHook"),
            }
        } else if let Some(sleep) = &handler.sleep {
            let seconds = Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0));
            tokio::time::sleep(seconds.min(grace)).await;
        } else if handler.http_get.is_some() {
            warn!(container = %kill.name, "preStop httpGet hooks are not run yet; stopping without it");
        }
    }

    /// Builds the sandbox config, creates the pod log directory and runs the sandbox.
    async fn create_sandbox(&self, pod: &Pod, attempt: u32) -> Result<SandboxInUse, String> {
        let node = &self.context.node;
        let config = generate_pod_sandbox_config(pod, node, attempt, "")
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
        let config = generate_pod_sandbox_config(pod, node, active.attempt, "").ok()?;
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
        now: Timestamp,
    ) -> Result<(), String> {
        let result = self
            .try_start_container(pod, start, sandbox, objects, now)
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
            EnsureImage::UsePresent { .. } => present,
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
        let pod_directory = Path::new(&node.root_directory)
            .join("pods")
            .join(pod_uid(pod));
        let volumes = empty_dir_volumes(pod, &pod_directory)
            .map_err(WaitingReason::create_container_error)?;
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
                volumes: &volumes,
                etc_hosts_host_path: Some(&hosts_file),
                termination_message_host_path: None,
            },
            objects,
        )
        .map_err(|error| WaitingReason::from_config_error(&error))?;
        for sub_path in &generated.sub_paths {
            std::fs::create_dir_all(sub_path).map_err(|error| {
                WaitingReason::create_container_error(format!("creating {sub_path}: {error}"))
            })?;
        }
        let id = runtime
            .create_container(&sandbox.id, generated.config, sandbox.config.clone())
            .await
            .map_err(|error| WaitingReason::create_container_error(error.to_string()))?;
        runtime
            .start_container(&id)
            .await
            .map_err(|error| WaitingReason::run_container_error(error.to_string()))?;
        Ok(())
    }
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

/// Creates the pod's `emptyDir` volumes (plain directories, also for `medium: Memory`) under
/// `<pod directory>/volumes/kubernetes.io~empty-dir/<name>`; other volume types are not
/// mounted, so a container mounting one fails with upstream's "cannot find volume" message.
fn empty_dir_volumes(
    pod: &Pod,
    pod_directory: &Path,
) -> Result<BTreeMap<String, ResolvedVolume>, String> {
    let mut volumes = BTreeMap::new();
    std::fs::create_dir_all(pod_directory)
        .map_err(|error| format!("creating {}: {error}", pod_directory.display()))?;
    let spec_volumes = pod.spec.as_ref().and_then(|spec| spec.volumes.as_ref());
    for volume in spec_volumes.into_iter().flatten() {
        if volume.empty_dir.is_none() {
            continue;
        }
        let path = pod_directory
            .join("volumes")
            .join(EMPTY_DIR_PLUGIN)
            .join(&volume.name);
        std::fs::create_dir_all(&path)
            .map_err(|error| format!("creating {}: {error}", path.display()))?;
        volumes.insert(
            volume.name.clone(),
            ResolvedVolume {
                host_path: path.display().to_string(),
                read_only: false,
                selinux_relabel: false,
            },
        );
    }
    Ok(volumes)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PodSpec, Volume};

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

    #[test]
    fn empty_dir_volumes_are_created_under_the_pod_directory_and_others_skipped() {
        let directory = tempfile::tempdir().unwrap();
        let pod = Pod {
            spec: Some(PodSpec {
                volumes: Some(vec![
                    Volume {
                        name: "scratch".to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Volume::default()
                    },
                    Volume {
                        name: "config".to_owned(),
                        ..Volume::default()
                    },
                ]),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };

        let volumes = empty_dir_volumes(&pod, directory.path()).unwrap();

        let expected = directory
            .path()
            .join("volumes/kubernetes.io~empty-dir/scratch");
        assert!(expected.is_dir());
        assert_eq!(
            volumes.keys().collect::<Vec<_>>(),
            ["scratch"],
            "only emptyDir volumes are mounted"
        );
        assert_eq!(volumes["scratch"].host_path, expected.display().to_string());
    }
}
