//! Static pods as the pod side's second source: manifest files in `--pod-manifest-path`, next
//! to the API watch, and the mirror pods that show them in the API.
//!
//! Owns reading the manifest directory every [`FILE_CHECK_PERIOD`] (hidden files and anything
//! but regular files are skipped; a manifest that cannot be used is logged once per content and
//! its pod dropped, as upstream's file source does), the dispatcher's static pod bookkeeping
//! (one pod worker per static pod UID, started without the API; a removed or changed file
//! terminates the old UID's worker before a pod of the same full name starts again), routing
//! mirror pods from the API watch away from the ordinary workers, and the mirror pod task (create
//! missing mirror pods, replace deleted or stale ones, delete those whose static pod is gone).
//!
//! Must not decide anything about the pods: identity, defaults, annotations and which mirror
//! pods to create or delete come from [`crate::pod::static_pod`]. Never writes anything to the
//! API but mirror pods (their status is patched by the pod worker), and never deletes a static
//! pod's runtime objects itself (its worker does, once told the pod is gone).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{Node, Pod},
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{DeleteParams, PostParams, Preconditions},
    runtime::watcher,
};
use tokio::{sync::watch, time::Interval};
use tracing::{debug, error, info, warn};

use super::{Dispatcher, PodUpdate, WorkerHandle, pod_worker};
use crate::pod::{
    format_pod, is_deleted, pod_name, pod_namespace, pod_uid,
    static_pod::{
        MirrorAction, decode_manifest, is_mirror_pod, is_mirror_pod_of, mirror_pod,
        plan_mirror_pods, pod_full_name, record_first_seen, static_pod,
    },
};

/// How often the manifest directory is read again (upstream's `fileCheckFrequency` is 20 s).
pub const FILE_CHECK_PERIOD: Duration = Duration::from_secs(2);
/// How often the dispatcher looks after static pods without any event (terminated workers,
/// deferred starts) and the mirror pod task retries failed calls.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(2);

/// The static pods the manifest files define, by UID.
type StaticPodSet = BTreeMap<String, Arc<Pod>>;

/// A manifest file as last read.
struct ReadManifest {
    content: Vec<u8>,
    /// The static pod it defines, `None` when the manifest cannot be used (already logged).
    pod: Option<Pod>,
}

/// The manifest directory and what was read from it.
struct ManifestDirectory {
    path: PathBuf,
    node_name: String,
    files: BTreeMap<PathBuf, ReadManifest>,
    /// When each static pod UID was first seen (`kubernetes.io/config.seen`).
    first_seen: HashMap<String, Timestamp>,
    /// The last problem with the directory itself, logged once.
    directory_problem: Option<String>,
    /// Full names defined by more than one file, logged once each.
    duplicates_logged: BTreeSet<(PathBuf, String)>,
}

impl ManifestDirectory {
    fn new(path: PathBuf, node_name: String) -> Self {
        Self {
            path,
            node_name,
            files: BTreeMap::new(),
            first_seen: HashMap::new(),
            directory_problem: None,
            duplicates_logged: BTreeSet::new(),
        }
    }

    /// Reads every manifest (blocking file I/O) and returns the static pods they define.
    fn scan(&mut self) -> StaticPodSet {
        let paths = match self.manifest_paths() {
            Ok(paths) => {
                self.directory_problem = None;
                paths
            }
            Err(problem) => {
                if self.directory_problem.as_ref() != Some(&problem) {
                    info!("{problem}");
                    self.directory_problem = Some(problem);
                }
                Vec::new()
            }
        };
        self.files.retain(|path, _| paths.contains(path));
        let files = &self.files;
        self.duplicates_logged
            .retain(|(path, _)| files.contains_key(path));
        for path in &paths {
            let content = match std::fs::read(path) {
                Ok(content) => content,
                Err(error) => {
                    debug!("reading static pod manifest {}: {error}", path.display());
                    self.files.remove(path);
                    continue;
                }
            };
            if self
                .files
                .get(path)
                .is_some_and(|read| read.content == content)
            {
                continue;
            }
            let pod = match decode_manifest(path, &content) {
                Ok(manifest) => Some(static_pod(manifest, path, &self.node_name)),
                Err(problem) => {
                    error!("{problem}; the manifest's pod is not run");
                    None
                }
            };
            self.files
                .insert(path.clone(), ReadManifest { content, pod });
        }

        let now = Timestamp::now();
        let mut pods = StaticPodSet::new();
        let mut full_names = BTreeSet::new();
        for (path, read) in &self.files {
            let Some(pod) = read.pod.as_ref() else {
                continue;
            };
            let full_name = pod_full_name(pod);
            if !full_names.insert(full_name.clone()) {
                if self.duplicates_logged.insert((path.clone(), full_name)) {
                    error!(
                        "static pod manifest {}: another manifest already defines pod {}; this one is not run",
                        path.display(),
                        format_pod(pod)
                    );
                }
                continue;
            }
            let uid = pod_uid(pod).to_owned();
            let seen = *self.first_seen.entry(uid.clone()).or_insert(now);
            let mut pod = pod.clone();
            record_first_seen(&mut pod, seen);
            pods.insert(uid, Arc::new(pod));
        }
        self.first_seen.retain(|uid, _| pods.contains_key(uid));
        pods
    }

    /// The manifest files: the path itself when it is a file, else the regular, non-hidden
    /// files directly in it (symbolic links followed), in name order.
    fn manifest_paths(&self) -> Result<Vec<PathBuf>, String> {
        let directory = &self.path;
        let metadata = std::fs::metadata(directory).map_err(|error| {
            format!(
                "static pod manifest path {}: {error}; no static pods until it exists",
                directory.display()
            )
        })?;
        if metadata.is_file() {
            return Ok(vec![directory.clone()]);
        }
        let entries = std::fs::read_dir(directory).map_err(|error| {
            format!(
                "reading static pod manifest directory {}: {error}",
                directory.display()
            )
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
            .map(|entry| entry.path())
            .filter(|path| std::fs::metadata(path).is_ok_and(|metadata| metadata.is_file()))
            .collect();
        paths.sort();
        Ok(paths)
    }
}

/// Reads the manifests every [`FILE_CHECK_PERIOD`] and publishes the set when it changes.
async fn watch_manifests(mut directory: ManifestDirectory, files: watch::Sender<StaticPodSet>) {
    let mut interval = tokio::time::interval(FILE_CHECK_PERIOD);
    interval.tick().await;
    loop {
        interval.tick().await;
        let scanned = tokio::task::spawn_blocking(move || {
            let pods = directory.scan();
            (directory, pods)
        })
        .await;
        let pods;
        (directory, pods) = match scanned {
            Ok(scanned) => scanned,
            Err(problem) => {
                error!("reading static pod manifests stopped: {problem}");
                return;
            }
        };
        files.send_if_modified(|current| {
            let changed = *current != pods;
            if changed {
                *current = pods;
            }
            changed
        });
        if files.is_closed() {
            return;
        }
    }
}

/// What the dispatcher's loop waits on for static pods.
pub(super) struct StaticPodSource {
    files: watch::Receiver<StaticPodSet>,
    /// The file watch is running (false without a manifest path).
    watching: bool,
    housekeeping: Interval,
}

/// One wake-up of [`StaticPodSource::next`].
pub(super) enum StaticEvent {
    /// The manifest files now define these static pods.
    Files(StaticPodSet),
    /// Time to look after terminated workers and deferred starts.
    Housekeeping,
}

impl StaticPodSource {
    /// The next change of the manifest files or housekeeping tick (cancel safe).
    pub(super) async fn next(&mut self) -> StaticEvent {
        loop {
            tokio::select! {
                changed = self.files.changed(), if self.watching => match changed {
                    Ok(()) => return StaticEvent::Files(self.files.borrow_and_update().clone()),
                    Err(_) => self.watching = false,
                },
                _ = self.housekeeping.tick() => return StaticEvent::Housekeeping,
            }
        }
    }
}

/// The dispatcher's view of static pods and mirror pods.
pub(super) struct StaticPods {
    /// The static pods the manifests define, by UID. Each has a pod worker, unless a terminating
    /// static pod of the same full name is still stopping (started by housekeeping then).
    current: StaticPodSet,
    /// Static pods whose worker was told they are gone and has not finished: UID → full name.
    terminating: BTreeMap<String, String>,
    /// Mirror pods in the API by full name, as the watch last showed them.
    mirrors: BTreeMap<String, Arc<Pod>>,
    /// Mirror pods seen during a (re)list in progress.
    relisted: Option<BTreeMap<String, Arc<Pod>>>,
    /// Input of the mirror pod task.
    mirror_state: watch::Sender<MirrorState>,
}

impl StaticPods {
    /// Whether `uid` is a static pod's (current or still terminating): not in the API's pod
    /// list, yet not an orphan.
    pub(super) fn is_static(&self, uid: &str) -> bool {
        self.current.contains_key(uid) || self.terminating.contains_key(uid)
    }
}

/// Starts the static pod source for `manifest_path` (none: no static pods): reads the manifests
/// once now, so the first (re)list of the API already knows them, and spawns the file watch and
/// the mirror pod task. Returns the source, the dispatcher's state and the first set (for
/// [`Dispatcher::sync_static_pods`]).
pub(super) async fn start(
    manifest_path: Option<PathBuf>,
    node_name: &str,
    client: kube::Client,
) -> (StaticPodSource, StaticPods, StaticPodSet) {
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_PERIOD);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mirror_state, mirror_receiver) = watch::channel(MirrorState::default());
    let statics = StaticPods {
        current: StaticPodSet::new(),
        terminating: BTreeMap::new(),
        mirrors: BTreeMap::new(),
        relisted: None,
        mirror_state,
    };
    // Always running: without static pods, leftover mirror pods of this node are deleted.
    tokio::spawn(run_mirror_pods(
        client,
        node_name.to_owned(),
        mirror_receiver,
    ));
    let (sender, files) = watch::channel(StaticPodSet::new());
    let mut source = StaticPodSource {
        files,
        watching: false,
        housekeeping,
    };
    let Some(path) = manifest_path else {
        return (source, statics, StaticPodSet::new());
    };
    info!(path = %path.display(), "reading static pod manifests every {FILE_CHECK_PERIOD:?}");
    let directory = ManifestDirectory::new(path, node_name.to_owned());
    let scanned = tokio::task::spawn_blocking(move || {
        let mut directory = directory;
        let pods = directory.scan();
        (directory, pods)
    })
    .await;
    let (directory, initial) = match scanned {
        Ok(scanned) => scanned,
        Err(problem) => {
            error!("reading static pod manifests failed: {problem}; no static pods");
            return (source, statics, StaticPodSet::new());
        }
    };
    sender.send_replace(initial.clone());
    source.files.borrow_and_update();
    source.watching = true;
    tokio::spawn(watch_manifests(directory, sender));
    (source, statics, initial)
}

impl Dispatcher {
    /// Handles a wake-up of the static pod source.
    pub(super) fn handle_static(&mut self, event: StaticEvent) {
        match event {
            StaticEvent::Files(pods) => self.sync_static_pods(pods),
            StaticEvent::Housekeeping => self.static_housekeeping(),
        }
    }

    /// Makes the workers follow the manifests: static pods that went away (or changed, which
    /// changes their UID) are terminated, new ones started.
    pub(super) fn sync_static_pods(&mut self, pods: StaticPodSet) {
        let removed: Vec<String> = self
            .statics
            .current
            .keys()
            .filter(|uid| !pods.contains_key(*uid))
            .cloned()
            .collect();
        for uid in removed {
            if let Some(pod) = self.statics.current.remove(&uid) {
                self.terminate_static_pod(&uid, &pod);
            }
        }
        for (uid, pod) in pods {
            let unchanged = self
                .statics
                .current
                .get(&uid)
                .is_some_and(|current| *current == pod);
            self.statics.current.insert(uid.clone(), pod);
            if !unchanged {
                self.update_static_worker(&uid, true);
            }
        }
        self.publish_mirror_state();
    }

    /// Forgets finished workers of terminated static pods and starts static pods that waited
    /// for them.
    fn static_housekeeping(&mut self) {
        let finished: Vec<String> = self
            .statics
            .terminating
            .keys()
            .filter(|uid| {
                self.workers
                    .get(*uid)
                    .is_none_or(|worker| worker.task.is_finished())
            })
            .cloned()
            .collect();
        for uid in finished {
            self.statics.terminating.remove(&uid);
            self.workers.remove(&uid);
        }
        let waiting: Vec<String> = self
            .statics
            .current
            .keys()
            .filter(|uid| !self.workers.contains_key(*uid))
            .cloned()
            .collect();
        for uid in waiting {
            self.update_static_worker(&uid, false);
        }
        self.publish_mirror_state();
    }

    /// Tells the worker of a static pod whose manifest went away to stop and remove it.
    fn terminate_static_pod(&mut self, uid: &str, pod: &Arc<Pod>) {
        info!(pod = %format_pod(pod), "static pod's manifest removed or changed; terminating it");
        if let Ok(mut pods) = self.pods.write() {
            pods.remove(uid);
        }
        let Some(worker) = self.workers.get(uid) else {
            return;
        };
        if worker.task.is_finished() {
            self.workers.remove(uid);
            return;
        }
        worker.updates.send_replace(PodUpdate {
            pod: Arc::clone(pod),
            gone: true,
            mirror: None,
        });
        self.statics
            .terminating
            .insert(uid.to_owned(), pod_full_name(pod));
    }

    /// Hands the static pod `uid` and its current mirror pod to its worker (only when one of
    /// them changed, unless `always`), starting the worker when there is none and no terminating
    /// static pod of the same full name is still stopping.
    fn update_static_worker(&mut self, uid: &str, always: bool) {
        let Some(pod) = self.statics.current.get(uid).cloned() else {
            return;
        };
        let full_name = pod_full_name(&pod);
        let mirror = self
            .statics
            .mirrors
            .get(&full_name)
            .filter(|mirror| !is_deleted(mirror) && is_mirror_pod_of(mirror, &pod))
            .cloned();
        let update = PodUpdate {
            pod: Arc::clone(&pod),
            gone: false,
            mirror,
        };
        if let Some(worker) = self.workers.get(uid) {
            if worker.task.is_finished() {
                return;
            }
            worker.updates.send_if_modified(|current| {
                let changed = always
                    || !Arc::ptr_eq(&current.pod, &update.pod)
                    || object_version(current.mirror.as_deref())
                        != object_version(update.mirror.as_deref());
                if changed {
                    *current = update;
                }
                changed
            });
            return;
        }
        let stopping = self
            .statics
            .terminating
            .iter()
            .any(|(other, name)| other != uid && *name == full_name);
        if stopping {
            debug!(pod = %format_pod(&pod), "waiting for the previous static pod of this name to stop");
            return;
        }
        if let Ok(mut pods) = self.pods.write() {
            pods.insert(uid.to_owned(), Arc::clone(&pod));
        }
        info!(pod = %format_pod(&pod), "starting a static pod");
        let (updates, receiver) = watch::channel(update);
        let task = tokio::spawn(pod_worker::run(Arc::clone(&self.context), receiver));
        self.workers
            .insert(uid.to_owned(), WorkerHandle { updates, task });
    }

    /// Takes the mirror pods out of the API watch: they are never run as ordinary pods. Returns
    /// the event when the ordinary path must see it too (every event but a mirror pod's).
    pub(super) fn route_mirror_pods(
        &mut self,
        event: watcher::Event<Pod>,
    ) -> Option<watcher::Event<Pod>> {
        match event {
            watcher::Event::Init => {
                self.statics.relisted = Some(BTreeMap::new());
                Some(watcher::Event::Init)
            }
            watcher::Event::InitApply(pod) if is_mirror_pod(&pod) => {
                if let Some(relisted) = self.statics.relisted.as_mut() {
                    relisted.insert(pod_full_name(&pod), Arc::new(pod));
                }
                None
            }
            watcher::Event::InitDone => {
                self.statics.mirrors = self.statics.relisted.take().unwrap_or_default();
                self.refresh_static_workers();
                Some(watcher::Event::InitDone)
            }
            watcher::Event::Apply(pod) if is_mirror_pod(&pod) => {
                self.statics
                    .mirrors
                    .insert(pod_full_name(&pod), Arc::new(pod));
                self.refresh_static_workers();
                None
            }
            watcher::Event::Delete(pod) if is_mirror_pod(&pod) => {
                let full_name = pod_full_name(&pod);
                if self
                    .statics
                    .mirrors
                    .get(&full_name)
                    .is_some_and(|known| pod_uid(known) == pod_uid(&pod))
                {
                    self.statics.mirrors.remove(&full_name);
                }
                self.refresh_static_workers();
                None
            }
            other => Some(other),
        }
    }

    /// Hands every running static pod's worker its current mirror pod.
    fn refresh_static_workers(&mut self) {
        let uids: Vec<String> = self
            .statics
            .current
            .keys()
            .filter(|uid| self.workers.contains_key(*uid))
            .cloned()
            .collect();
        for uid in uids {
            self.update_static_worker(&uid, false);
        }
        self.publish_mirror_state();
    }

    /// Gives the mirror pod task the static pods and mirror pods as they are now.
    fn publish_mirror_state(&self) {
        let state = MirrorState {
            static_pods: self.statics.current.values().cloned().collect(),
            terminating: self.statics.terminating.values().cloned().collect(),
            mirrors: self.statics.mirrors.values().cloned().collect(),
        };
        self.statics.mirror_state.send_if_modified(|current| {
            let changed = *current != state;
            if changed {
                *current = state;
            }
            changed
        });
    }
}

/// A mirror pod's identity and version, to tell whether a worker's copy is current.
fn object_version(pod: Option<&Pod>) -> Option<(&str, Option<&str>)> {
    pod.map(|pod| (pod_uid(pod), pod.metadata.resource_version.as_deref()))
}

/// What the mirror pod task reconciles: the static pods that should have a mirror pod, the full
/// names of static pods still terminating, and the mirror pods the API has.
#[derive(Debug, Clone, Default, PartialEq)]
struct MirrorState {
    static_pods: Vec<Arc<Pod>>,
    terminating: BTreeSet<String>,
    mirrors: Vec<Arc<Pod>>,
}

/// Keeps the API's mirror pods in line with the static pods (see
/// [`crate::pod::static_pod::plan_mirror_pods`]) on every change and every
/// [`HOUSEKEEPING_PERIOD`] (failed calls are retried then; the API may be down).
async fn run_mirror_pods(
    client: kube::Client,
    node_name: String,
    mut state: watch::Receiver<MirrorState>,
) {
    let mut mirrors = MirrorClient {
        client,
        node_name,
        problems: BTreeMap::new(),
    };
    loop {
        let current = state.borrow_and_update().clone();
        mirrors.reconcile(&current).await;
        tokio::select! {
            changed = state.changed() => if changed.is_err() {
                return;
            },
            () = tokio::time::sleep(HOUSEKEEPING_PERIOD) => {}
        }
    }
}

/// The mirror pod task's API side.
struct MirrorClient {
    client: kube::Client,
    node_name: String,
    /// The last failure per mirror pod full name, logged once until it changes.
    problems: BTreeMap<String, String>,
}

impl MirrorClient {
    async fn reconcile(&mut self, state: &MirrorState) {
        let static_pods: Vec<&Pod> = state.static_pods.iter().map(AsRef::as_ref).collect();
        let mirrors: Vec<&Pod> = state.mirrors.iter().map(AsRef::as_ref).collect();
        for action in plan_mirror_pods(&static_pods, &state.terminating, &mirrors) {
            let (pod, result) = match action {
                MirrorAction::Delete(mirror) => (mirror, self.delete(mirror).await),
                MirrorAction::Create(pod) => (pod, self.create(pod).await),
            };
            let full_name = pod_full_name(pod);
            match result {
                Ok(()) => {
                    self.problems.remove(&full_name);
                }
                Err(problem) => {
                    if self.problems.get(&full_name) != Some(&problem) {
                        warn!("{problem}");
                        self.problems.insert(full_name, problem);
                    }
                }
            }
        }
    }

    /// Creates the mirror pod of `pod`; one that exists already is left to the next round.
    async fn create(&self, pod: &Pod) -> Result<(), String> {
        let node_uid = self.node_uid().await?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), pod_namespace(pod));
        match pods
            .create(&PostParams::default(), &mirror_pod(pod, &node_uid))
            .await
        {
            Ok(created) => {
                info!(pod = %format_pod(pod), mirror_uid = %pod_uid(&created), "created the mirror pod");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(pod = %format_pod(pod), "a pod of the mirror pod's name exists already");
                Ok(())
            }
            Err(error) => Err(format!(
                "creating the mirror pod of static pod {}: {error}",
                format_pod(pod)
            )),
        }
    }

    /// Deletes `mirror` with grace period 0 if it still has its UID.
    async fn delete(&self, mirror: &Pod) -> Result<(), String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), pod_namespace(mirror));
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(pod_uid(mirror).to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(pod_name(mirror), &params).await {
            Ok(_) => {
                info!(pod = %format_pod(mirror), "deleted the mirror pod");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(error) => Err(format!(
                "deleting mirror pod {}: {error}",
                format_pod(mirror)
            )),
        }
    }

    /// The Node's UID: mirror pods are owned by their Node. Read for every create (creates are
    /// rare), so a re-registered Node never gets stale owner references.
    async fn node_uid(&self) -> Result<String, String> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = nodes
            .get_opt(&self.node_name)
            .await
            .map_err(|error| format!("getting Node {} for mirror pods: {error}", self.node_name))?
            .ok_or_else(|| {
                format!(
                    "Node {} is not registered yet; mirror pods wait for it",
                    self.node_name
                )
            })?;
        Ok(node.metadata.uid.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers: [{name: main, image: busybox:1.36}]
";

    fn directory_with(files: &[(&str, &str)]) -> (tempfile::TempDir, ManifestDirectory) {
        let temporary = tempfile::tempdir().expect("a temporary directory");
        for (name, content) in files {
            std::fs::write(temporary.path().join(name), content).expect("write a manifest");
        }
        let directory = ManifestDirectory::new(temporary.path().to_owned(), "node-a".to_owned());
        (temporary, directory)
    }

    fn names(pods: &StaticPodSet) -> Vec<&str> {
        pods.values().map(|pod| pod_name(pod)).collect()
    }

    #[test]
    fn hidden_files_directories_and_broken_manifests_are_skipped() {
        let (temporary, mut directory) = directory_with(&[
            ("web.yaml", MANIFEST),
            (".web.yaml.swp", &MANIFEST.replace("web", "hidden")),
            ("broken.yaml", "kind: Service\n"),
        ]);
        std::fs::create_dir(temporary.path().join("sub")).expect("a directory");

        let pods = directory.scan();

        assert_eq!(names(&pods), ["web-node-a"]);
    }

    #[test]
    fn unchanged_files_keep_their_uid_and_first_seen_time() {
        let (temporary, mut directory) = directory_with(&[("web.yaml", MANIFEST)]);

        let first = directory.scan();
        let second = directory.scan();
        assert_eq!(first, second);

        std::fs::write(
            temporary.path().join("web.yaml"),
            MANIFEST.replace("1.36", "1.37"),
        )
        .expect("rewrite the manifest");
        let third = directory.scan();
        assert_eq!(names(&third), ["web-node-a"]);
        assert_ne!(
            third.keys().collect::<Vec<_>>(),
            first.keys().collect::<Vec<_>>()
        );

        std::fs::remove_file(temporary.path().join("web.yaml")).expect("remove the manifest");
        assert!(directory.scan().is_empty());
        assert!(directory.first_seen.is_empty());
    }

    #[test]
    fn a_second_manifest_of_the_same_pod_is_not_run() {
        let (_temporary, mut directory) = directory_with(&[
            ("a.yaml", MANIFEST),
            ("b.json", &MANIFEST.replace("1.36", "1.37")),
        ]);

        let pods = directory.scan();

        assert_eq!(names(&pods), ["web-node-a"]);
        let image = pods
            .values()
            .next()
            .and_then(|pod| pod.spec.as_ref()?.containers[0].image.clone());
        assert_eq!(
            image.as_deref(),
            Some("busybox:1.36"),
            "the first file in name order wins"
        );
    }

    #[test]
    fn a_missing_directory_means_no_static_pods() {
        let mut directory =
            ManifestDirectory::new(PathBuf::from("/nonexistent/manifests"), "n".to_owned());

        assert!(directory.scan().is_empty());
        assert!(directory.directory_problem.is_some());
    }
}
