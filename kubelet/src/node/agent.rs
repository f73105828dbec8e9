//! The node side's loops: register, keep status and Lease fresh, mark NotReady on the way out.
//!
//! Owns the order of things (registration with upstream's backoff, then the status loop and the
//! Lease loop side by side until shutdown, then one last `Ready=False` patch), the status
//! patch policy (only when `nodeStatusHasChanged`, or when `nodeStatusReportFrequency` has passed
//! since the last patch), and when the pod CIDR is offered to the Node and written for skiff-cni.
//! What the objects contain is decided in [`super::object`], [`super::lease`] and
//! [`super::pod_cidr`]; this module only reads the host through [`crate::host`] and talks to the
//! API. Never touches pods or the container runtime.

use std::{future::Future, time::Duration};

use k8s_openapi::{api::core::v1::Node, jiff::Timestamp};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::time::Instant;
use tracing::{Instrument as _, debug, error, info, info_span, warn};

use super::{
    NodeConfig, NodeError, lease,
    object::{self, MESSAGE_KUBELET_STOPPING, Readiness},
    pod_cidr::{self, PodCidr},
};
use crate::host::{self, HostFacts};

/// Upstream's `nodeStatusUpdateRetry`: attempts per status update before waiting for the next.
const NODE_STATUS_UPDATE_RETRY: usize = 5;
/// Upstream's first registration retry delay; doubled up to [`MAX_REGISTRATION_BACKOFF`].
const FIRST_REGISTRATION_BACKOFF: Duration = Duration::from_millis(100);
/// Upstream's longest registration retry delay.
const MAX_REGISTRATION_BACKOFF: Duration = Duration::from_secs(7);
/// Pause between attempts of the final NotReady patch.
const FINAL_PATCH_RETRY_DELAY: Duration = Duration::from_millis(200);
/// How long stopping may spend on the final NotReady patch (well inside systemd's 90 s stop
/// timeout), so an unreachable API server cannot hold the process.
const FINAL_PATCH_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the node side until `shutdown` completes: registers (or adopts) the Node, then keeps its
/// status and Lease fresh and its pod CIDR written, and finally patches `Ready=False` (reason
/// `KubeletNotReady`, message `kubelet is stopping`). Returns an error when the kubeconfig or the
/// host cannot be read, or when the final NotReady patch could not be made; API failures while
/// running are logged and retried.
pub async fn run_node_agent(
    config: &NodeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let span = info_span!("node", node = %config.node_name);
    run(config, shutdown).instrument(span).await
}

async fn run(config: &NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let client = crate::api_client::from_kubeconfig(&config.kubeconfig).await?;
    let facts = host::read_host_facts(&config.root_dir).map_err(|source| NodeError::Host {
        node: config.node_name.clone(),
        source,
    })?;
    let mut updater = StatusUpdater {
        nodes: Api::all(client.clone()),
        config,
        facts,
        last_report: None,
        pod_cidr_written: None,
        warned_flag_ignored: false,
    };
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        () = updater.register_until_registered() => {}
        () = &mut shutdown => {
            info!("stopping before the Node was registered");
            return Ok(());
        }
    }
    tokio::select! {
        () = updater.update_forever() => {}
        () = lease::renew_forever(client, config) => {}
        () = &mut shutdown => {}
    }
    info!("stopping: marking the Node NotReady");
    tokio::time::timeout(
        FINAL_PATCH_TIMEOUT,
        updater.mark_not_ready(MESSAGE_KUBELET_STOPPING),
    )
    .await
    .map_err(|_| NodeError::Timeout {
        action: "marking the Node NotReady".to_owned(),
        node: config.node_name.clone(),
        after: FINAL_PATCH_TIMEOUT,
    })?
}

/// The delay before the next registration attempt (upstream: 100 ms, doubling, at most 7 s).
pub fn next_registration_backoff(current: Duration) -> Duration {
    (current * 2).min(MAX_REGISTRATION_BACKOFF)
}

/// Whether status must be patched even if unchanged: never patched yet, or the last patch is at
/// least `report_frequency` old.
pub fn report_due(last_report: Option<Instant>, now: Instant, report_frequency: Duration) -> bool {
    last_report.is_none_or(|last| now.saturating_duration_since(last) >= report_frequency)
}

struct StatusUpdater<'a> {
    nodes: Api<Node>,
    config: &'a NodeConfig,
    /// The last host facts read successfully.
    facts: HostFacts,
    /// When status was last patched.
    last_report: Option<Instant>,
    /// The pod CIDR the file is known to hold.
    pod_cidr_written: Option<String>,
    /// Whether the "--pod-cidr is ignored" warning was logged.
    warned_flag_ignored: bool,
}

impl StatusUpdater<'_> {
    async fn register_until_registered(&mut self) {
        let mut backoff = FIRST_REGISTRATION_BACKOFF;
        loop {
            match self.register().await {
                Ok(()) => return,
                Err(error) => warn!("unable to register node with API server: {error}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = next_registration_backoff(backoff);
        }
    }

    /// Creates the Node, or adopts an existing one of this name (its spec, podCIDR included, is
    /// kept; its default labels and attach/detach annotation are made current).
    async fn register(&mut self) -> Result<(), NodeError> {
        self.refresh_facts();
        let config = self.config;
        let name = &config.node_name;
        let desired = object::initial_node(
            self.config,
            &self.facts,
            &Readiness::Ready,
            self.config.pod_cidr.as_deref(),
            Timestamp::now(),
        );
        let node = match self.nodes.create(&PostParams::default(), &desired).await {
            Ok(created) => {
                info!("successfully registered node");
                created
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                let existing = self
                    .nodes
                    .get(name)
                    .await
                    .map_err(|source| self.error("reading the existing Node", source))?;
                let adopted = match object::reconcile_existing_node(&existing, &desired) {
                    Some(patch) => self
                        .nodes
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|source| {
                            self.error("updating the existing Node's labels", source)
                        })?,
                    None => existing,
                };
                info!("node was previously registered; adopted it");
                adopted
            }
            Err(source) => return Err(self.error("creating the Node", source)),
        };
        self.sync_pod_cidr(node).await.map(drop)
    }

    async fn update_forever(&mut self) {
        let period = self
            .config
            .node_status_update_frequency
            .max(Duration::from_millis(1));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.update_node_status().await;
        }
    }

    /// Upstream's `updateNodeStatus`: up to [`NODE_STATUS_UPDATE_RETRY`] attempts.
    async fn update_node_status(&mut self) {
        for attempt in 1..=NODE_STATUS_UPDATE_RETRY {
            match self.try_update_node_status(&Readiness::Ready, false).await {
                Ok(()) => return,
                Err(error) => warn!(attempt, "error updating node status, will retry: {error}"),
            }
        }
        error!("unable to update node status: update node status exceeds retry count");
    }

    /// Upstream's `tryUpdateNodeStatus`: read the Node, hand its pod CIDR on, compute the
    /// status, and patch it when it changed, when a report is due or when `force`.
    async fn try_update_node_status(
        &mut self,
        readiness: &Readiness,
        force: bool,
    ) -> Result<(), NodeError> {
        self.refresh_facts();
        let config = self.config;
        let name = &config.node_name;
        let Some(node) = self
            .nodes
            .get_opt(name)
            .await
            .map_err(|source| self.error("reading the Node", source))?
        else {
            warn!("the Node was deleted; registering it again");
            return self.register().await;
        };
        let node = self.sync_pod_cidr(node).await?;
        let old = node.status.unwrap_or_default();
        let new = object::node_status(
            Some(&old),
            self.config,
            &self.facts,
            readiness,
            Timestamp::now(),
        );
        let changed = object::status_has_changed(&old, &new);
        let due = report_due(
            self.last_report,
            Instant::now(),
            self.config.node_status_report_frequency,
        );
        if !(changed || due || force) {
            debug!("node status unchanged");
            return Ok(());
        }
        self.nodes
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Strategic(json!({ "status": new })),
            )
            .await
            .map_err(|source| self.error("patching the Node's status", source))?;
        self.last_report = Some(Instant::now());
        debug!(changed, "patched node status");
        Ok(())
    }

    /// Applies the pod CIDR rule to `node`: offers `--pod-cidr` to a Node without one, and
    /// writes the applicable CIDR to `--pod-cidr-file` when it differs from what was written.
    /// Returns the Node as it is now.
    async fn sync_pod_cidr(&mut self, node: Node) -> Result<Node, NodeError> {
        let Some(choice) = pod_cidr::choose(&node, self.config.pod_cidr.as_deref()) else {
            return Ok(node);
        };
        let node = match &choice {
            PodCidr::FromNode(cidr) => {
                if let Some(flag) = self.config.pod_cidr.as_deref()
                    && flag != cidr
                    && !self.warned_flag_ignored
                {
                    warn!("--pod-cidr {flag} is ignored: the Node already has spec.podCIDR {cidr}");
                    self.warned_flag_ignored = true;
                }
                node
            }
            PodCidr::FromFlag(cidr) => {
                let patch = pod_cidr::set_on_node_patch(cidr);
                let patched = self
                    .nodes
                    .patch(
                        &self.config.node_name,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(|source| self.error("setting spec.podCIDR on the Node", source))?;
                info!("set spec.podCIDR {cidr} on the Node from --pod-cidr");
                patched
            }
        };
        let cidr = choice.cidr();
        if self.pod_cidr_written.as_deref() != Some(cidr) {
            let path = &self.config.pod_cidr_file;
            let wrote =
                pod_cidr::write_file(path, cidr).map_err(|source| NodeError::PodCidrFile {
                    node: self.config.node_name.clone(),
                    pod_cidr: cidr.to_owned(),
                    path: path.clone(),
                    source,
                })?;
            if wrote {
                info!(
                    original_pod_cidr = self.pod_cidr_written.as_deref().unwrap_or(""),
                    new_pod_cidr = cidr,
                    "updating pod CIDR in {}",
                    path.display()
                );
            }
            self.pod_cidr_written = Some(cidr.to_owned());
        }
        Ok(node)
    }

    /// One unconditional status patch with `Ready=False`, retried a few times.
    async fn mark_not_ready(&mut self, message: &str) -> Result<(), NodeError> {
        let readiness = Readiness::NotReady {
            message: message.to_owned(),
        };
        let mut attempt = 1;
        loop {
            match self.try_update_node_status(&readiness, true).await {
                Ok(()) => {
                    info!("node marked NotReady: {message}");
                    return Ok(());
                }
                Err(error) if attempt >= NODE_STATUS_UPDATE_RETRY => return Err(error),
                Err(error) => warn!(attempt, "error marking the node NotReady: {error}"),
            }
            attempt += 1;
            tokio::time::sleep(FINAL_PATCH_RETRY_DELAY).await;
        }
    }

    /// Re-reads the host; keeps the last good facts (and says why) when that fails.
    fn refresh_facts(&mut self) {
        match host::read_host_facts(&self.config.root_dir) {
            Ok(facts) => self.facts = facts,
            Err(error) => warn!("keeping the last host facts: {error}"),
        }
    }

    fn error(&self, action: &str, source: kube::Error) -> NodeError {
        NodeError::Api {
            action: action.to_owned(),
            node: self.config.node_name.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_backoff_doubles_up_to_seven_seconds() {
        let mut delays = vec![FIRST_REGISTRATION_BACKOFF];
        for _ in 0..8 {
            let next = next_registration_backoff(*delays.last().unwrap());
            delays.push(next);
        }
        let millis: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(
            millis,
            vec![100, 200, 400, 800, 1600, 3200, 6400, 7000, 7000]
        );
    }

    #[test]
    fn a_report_is_due_first_and_after_the_report_frequency() {
        let start = Instant::now();
        let five_minutes = Duration::from_secs(300);
        assert!(report_due(None, start, five_minutes));
        assert!(!report_due(
            Some(start),
            start + Duration::from_secs(299),
            five_minutes
        ));
        assert!(report_due(Some(start), start + five_minutes, five_minutes));
    }
}
