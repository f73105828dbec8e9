//! The pod side of the kubelet: the executor that makes the runtime hold the pods bound to this
//! node and reports their status.
//!
//! Owns the Pod watch (`fieldSelector=spec.nodeName=<node>`), one tokio task per pod UID (the
//! pod worker, [`pod_worker`]), and every I/O step of a sync round: observing CRI state by the
//! `io.kubernetes.pod.uid` label ([`observe`]), executing [`crate::pod::plan::Action`]s with the
//! CRI client, creating the pod's host directories (log directory, volumes through
//! `volumes`, the managed hosts file), patching `pods/<name>/status` and deleting a terminated pod with
//! `gracePeriodSeconds=0` ([`api`]).
//!
//! Must not decide anything about pods itself: configs, plans, phases, reasons and grace periods
//! come from [`crate::pod`]. Never touches the Node object or its Lease (that is
//! [`crate::node`]) and never talks to containerd outside CRI.
//!
//! `main.rs` composes it as `worker::run_pod_workers(config, runtime, shutdown).await` next to
//! the node side, once the CRI runtime answered `Version`.
//!
//! Probes and the `postStart`/`preStop` hooks run from the pod worker ([`prober`] does the
//! exec/HTTP/TCP I/O, [`crate::pod::probe`] decides); HTTPS and gRPC probes are reported as
//! unsupported failures.
//!
//! Not built yet: PVC/CSI volumes, tmpfs-backed secret and `medium: Memory` volumes, RuntimeClass
//! handlers, termination message files, pod cgroups.
//!
//! Static pods are a second pod source ([`static_pods`]): manifest files run without the API,
//! shown there as mirror pods; the watch never runs a mirror pod as an ordinary pod.

mod api;
pub mod cgroups;
pub mod events;
mod observe;
mod pod_worker;
mod prober;
mod static_pods;
mod volumes;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures_util::StreamExt as _;
use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use kube::runtime::{WatchStreamExt as _, watcher};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, info, warn};

use crate::{
    cri::Runtime,
    pod::{
        NodeContext,
        labels::{POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL},
        pod_uid,
        sandbox::parse_resolv_conf,
    },
};

/// How often a pod worker re-observes the runtime without any event (a minimal PLEG relist).
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);

/// Everything the pod side needs, decided by the caller (flags, host facts).
#[derive(Debug, Clone)]
pub struct PodWorkersConfig {
    /// The kubeconfig to talk to the API with (`--kubeconfig`).
    pub kubeconfig: PathBuf,
    /// The Node's name: only pods with this `spec.nodeName` are run.
    pub node_name: String,
    /// Node-wide inputs of every pod's configuration.
    pub node: NodeContext,
    /// `--pod-manifest-path`: the static pod manifests (none: no static pods).
    pub pod_manifest_path: Option<PathBuf>,
    /// Filled with the pods this node runs, for readers outside the pod side (the `:10250`
    /// server's `/pods` and `/containerLogs`).
    pub pods: PodRegistry,
}

/// The pods bound to this node as the API last showed them, by UID. The pod side writes it
/// (one entry per pod worker, removed when the pod leaves the API); everyone else only reads.
pub type PodRegistry = Arc<std::sync::RwLock<std::collections::BTreeMap<String, Arc<Pod>>>>;

/// The pod side could not start or keep watching.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// No API client could be built from the kubeconfig.
    #[error(transparent)]
    ApiClient(#[from] crate::api_client::ApiClientError),
}

/// The node-wide pod inputs for a node with `node_ip`, from the host: memory capacity and
/// allocatable (`/proc/meminfo`, the filesystem of `root_dir`), the resolver configuration
/// (`/etc/resolv.conf`), with pod logs under `pod_logs_dir` and `runtime_name` as the scheme of
/// container IDs. Host files that cannot be read degrade to zero capacities (only Burstable
/// `oom_score_adj` and downward-API defaults depend on them) with a warning.
#[must_use]
pub fn node_context(
    node_ip: IpAddr,
    root_dir: &Path,
    pod_logs_dir: &Path,
    runtime_name: &str,
) -> NodeContext {
    let mut node = NodeContext {
        host_ips: vec![node_ip.to_string()],
        pod_logs_root: pod_logs_dir.display().to_string(),
        root_directory: root_dir.display().to_string(),
        runtime_name: runtime_name.to_owned(),
        ..NodeContext::default()
    };
    match crate::host::read_host_facts(root_dir) {
        Ok(facts) => {
            let allocatable = facts.capacity.allocatable();
            let bytes = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
            node.memory_capacity_bytes = bytes(facts.capacity.memory_bytes);
            node.allocatable_memory_bytes = bytes(allocatable.memory_bytes);
            node.allocatable_cpu_millis = bytes(allocatable.cpu_cores.saturating_mul(1000));
            node.allocatable_ephemeral_storage_bytes = bytes(allocatable.ephemeral_storage_bytes);
        }
        Err(error) => warn!("reading host facts for pod configs: {error}"),
    }
    match std::fs::read_to_string("/etc/resolv.conf") {
        Ok(content) => node.host_dns = Some(parse_resolv_conf(&content)),
        Err(error) => warn!("reading /etc/resolv.conf for pod DNS: {error}"),
    }
    node
}

/// What a pod worker is told about its pod: the newest object, and whether it is gone from the
/// API (deleted without the kubelet, or the watch lost it).
#[derive(Debug, Clone)]
pub(crate) struct PodUpdate {
    /// The newest Pod object seen.
    pub pod: Arc<Pod>,
    /// The API no longer has the pod: stop everything and forget it.
    pub gone: bool,
    /// A static pod's current mirror pod in the API (its status is patched there); `None` for
    /// ordinary pods and while the API has none.
    pub mirror: Option<Arc<Pod>>,
}

/// A running pod worker as the dispatcher holds it.
struct WorkerHandle {
    updates: watch::Sender<PodUpdate>,
    task: JoinHandle<()>,
}

/// Shared by every pod worker.
pub(crate) struct WorkerContext {
    pub runtime: Runtime,
    pub client: kube::Client,
    pub node: NodeContext,
    /// Events about the pods (`Pulled`, `Started`, `BackOff`, `Unhealthy`, ...).
    pub events: events::EventRecorder,
    /// The registry the server reads; workers publish the status they generate into it.
    pub pods: PodRegistry,
}

/// Runs the pod side until `shutdown` completes: watches the pods bound to `config.node_name`
/// and keeps one worker per pod UID. Pod workers are aborted on shutdown; the containers they
/// started keep running (as upstream's kubelet leaves them on restart).
///
/// # Errors
/// [`WorkerError`] when no API client can be built; watch failures are retried with back-off.
pub async fn run_pod_workers(
    config: PodWorkersConfig,
    runtime: Runtime,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let client = crate::api_client::from_kubeconfig(&config.kubeconfig).await?;
    let context = Arc::new(WorkerContext {
        runtime,
        client: client.clone(),
        node: config.node,
        events: events::EventRecorder::new(client.clone(), &config.node_name),
        pods: Arc::clone(&config.pods),
    });
    let pods: kube::Api<Pod> = kube::Api::all(client.clone());
    let selector = format!("spec.nodeName={}", config.node_name);
    let mut events = std::pin::pin!(
        watcher(pods, watcher::Config::default().fields(&selector)).default_backoff()
    );
    let (mut static_source, statics, initial_static_pods) =
        static_pods::start(config.pod_manifest_path, &config.node_name, client.clone()).await;
    let mut dispatcher = Dispatcher {
        context,
        workers: HashMap::new(),
        listed: None,
        pods: config.pods,
        statics,
    };
    dispatcher.sync_static_pods(initial_static_pods);
    info!(node = %config.node_name, "pod workers watching pods bound to this node");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            event = events.next() => match event {
                Some(Ok(event)) => dispatcher.handle(event).await,
                Some(Err(error)) => warn!("watching pods with {selector}: {error}"),
                None => break,
            },
            event = static_source.next() => dispatcher.handle_static(event),
        }
    }
    dispatcher.abort_all();
    Ok(())
}

/// Routes watch events to pod workers, starting and ending them.
struct Dispatcher {
    context: Arc<WorkerContext>,
    workers: HashMap<String, WorkerHandle>,
    /// UIDs seen during a (re)list in progress.
    listed: Option<HashSet<String>>,
    /// The pods of the workers, for readers outside the pod side.
    pods: PodRegistry,
    /// Static pods from the manifest files and the API's mirror pods.
    statics: static_pods::StaticPods,
}

impl Dispatcher {
    async fn handle(&mut self, event: watcher::Event<Pod>) {
        // Mirror pods show static pods in the API; they are never run as ordinary pods.
        let Some(event) = self.route_mirror_pods(event) else {
            return;
        };
        match event {
            watcher::Event::Init => self.listed = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let Some(listed) = self.listed.as_mut() {
                    listed.insert(pod_uid(&pod).to_owned());
                }
                self.apply(pod);
            }
            watcher::Event::InitDone => {
                let listed = self.listed.take().unwrap_or_default();
                let vanished: Vec<String> = self
                    .workers
                    .keys()
                    .filter(|uid| !listed.contains(*uid) && !self.statics.is_static(uid))
                    .cloned()
                    .collect();
                for uid in vanished {
                    self.gone(&uid, None);
                }
                self.terminate_orphans(&listed).await;
            }
            watcher::Event::Apply(pod) => self.apply(pod),
            watcher::Event::Delete(pod) => {
                let uid = pod_uid(&pod).to_owned();
                self.gone(&uid, Some(pod));
            }
        }
    }

    /// Hands the newest object to the pod's worker, starting one for a new UID.
    fn apply(&mut self, pod: Pod) {
        let uid = pod_uid(&pod).to_owned();
        if uid.is_empty() {
            return;
        }
        let update = PodUpdate {
            pod: Arc::new(pod),
            gone: false,
            mirror: None,
        };
        if let Ok(mut pods) = self.pods.write() {
            pods.insert(uid.clone(), Arc::clone(&update.pod));
        }
        if let Some(worker) = self.workers.get(&uid) {
            // A finished worker terminated its pod; later events of that UID change nothing.
            if !worker.task.is_finished() {
                worker.updates.send_replace(update);
            }
            return;
        }
        debug!(pod = %crate::pod::format_pod(&update.pod), "starting a pod worker");
        let (updates, receiver) = watch::channel(update);
        let task = tokio::spawn(pod_worker::run(Arc::clone(&self.context), receiver));
        self.workers.insert(uid, WorkerHandle { updates, task });
    }

    /// Tells the worker its pod left the API; the worker cleans up the runtime and ends.
    fn gone(&mut self, uid: &str, pod: Option<Pod>) {
        if let Ok(mut pods) = self.pods.write() {
            pods.remove(uid);
        }
        let Some(worker) = self.workers.remove(uid) else {
            return;
        };
        if worker.task.is_finished() {
            return;
        }
        let pod = pod.map_or_else(|| Arc::clone(&worker.updates.borrow().pod), Arc::new);
        worker.updates.send_replace(PodUpdate {
            pod,
            gone: true,
            mirror: None,
        });
        // Dropping the sender is fine: the worker keeps the last update and finishes alone.
    }

    /// Starts a terminating worker for every pod the runtime holds that the API does not list
    /// (deleted while the kubelet was down): upstream's housekeeping of orphaned pods. The
    /// worker only knows the pod's identity from the sandbox labels; it stops and removes the
    /// pod's containers and sandboxes and makes no API call.
    async fn terminate_orphans(&mut self, listed: &HashSet<String>) {
        let sandboxes = match self
            .context
            .runtime
            .list_pod_sandboxes(HashMap::new())
            .await
        {
            Ok(sandboxes) => sandboxes,
            Err(error) => {
                warn!("listing pod sandboxes to find orphaned pods: {error}");
                return;
            }
        };
        for sandbox in sandboxes {
            let Some(uid) = sandbox.labels.get(POD_UID_LABEL) else {
                continue;
            };
            // Static pods are not in the API's list, yet are no orphans.
            if listed.contains(uid) || self.workers.contains_key(uid) || self.statics.is_static(uid)
            {
                continue;
            }
            let label = |key: &str| sandbox.labels.get(key).cloned();
            let pod = Pod {
                metadata: ObjectMeta {
                    name: label(POD_NAME_LABEL),
                    namespace: label(POD_NAMESPACE_LABEL),
                    uid: Some(uid.clone()),
                    ..ObjectMeta::default()
                },
                ..Pod::default()
            };
            info!(pod = %crate::pod::format_pod(&pod), "terminating a pod the API no longer has");
            let update = PodUpdate {
                pod: Arc::new(pod),
                gone: true,
                mirror: None,
            };
            let (updates, receiver) = watch::channel(update);
            let task = tokio::spawn(pod_worker::run(Arc::clone(&self.context), receiver));
            self.workers
                .insert(uid.clone(), WorkerHandle { updates, task });
        }
    }

    fn abort_all(&mut self) {
        for (_, worker) in self.workers.drain() {
            worker.task.abort();
        }
    }
}
