//! The node's heartbeat Lease, `kube-node-lease/<node>`.
//!
//! Owns upstream's lease controller for a kubelet: the Lease object ([`renewed_lease`]: holder,
//! duration, renewTime, an ownerReference to the Node so the Lease goes when the Node goes) and
//! the renewal loop ([`renew_forever`]: update the last Lease seen, or get/create it when that
//! fails). Never touches the Node object or its status (that heartbeat is `agent`'s).

use std::time::Duration;

use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::Node},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};
use tracing::{debug, warn};

use super::{NODE_LEASE_NAMESPACE, NodeConfig, NodeError};

/// Upstream's `maxUpdateRetries`: attempts to update the last Lease seen before re-reading it.
const MAX_UPDATE_RETRIES: usize = 5;

/// `base` (the Lease last read or written, if any) renewed at `now`: holder and duration set to
/// this node's, `renewTime` now, and an ownerReference to the Node when its uid is known and the
/// Lease has no owner yet (upstream's `setNodeOwnerFunc`).
pub fn renewed_lease(
    base: Option<&Lease>,
    node_name: &str,
    node_uid: Option<&str>,
    lease_duration_seconds: i32,
    now: Timestamp,
) -> Lease {
    let mut lease = base.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(node_name.to_owned()),
            namespace: Some(NODE_LEASE_NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        ..Lease::default()
    });
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = Some(node_name.to_owned());
    spec.lease_duration_seconds = Some(lease_duration_seconds);
    spec.renew_time = Some(MicroTime(now));
    let has_owner = lease
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|owners| !owners.is_empty());
    if let (false, Some(uid)) = (has_owner, node_uid) {
        lease.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".to_owned(),
            kind: "Node".to_owned(),
            name: node_name.to_owned(),
            uid: uid.to_owned(),
            ..OwnerReference::default()
        }]);
    }
    lease
}

/// Renews the Lease every [`NodeConfig::lease_renew_interval`] until the future is dropped.
/// Failures are logged and retried at the next tick; they never end the loop.
pub(super) async fn renew_forever(client: kube::Client, config: &NodeConfig) {
    let mut renewer = Renewer {
        leases: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
        nodes: Api::all(client),
        config,
        latest: None,
    };
    let mut ticks = tokio::time::interval(config.lease_renew_interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match renewer.sync().await {
            Ok(()) => debug!("renewed Lease {NODE_LEASE_NAMESPACE}/{}", config.node_name),
            Err(error) => warn!("{error}"),
        }
    }
}

struct Renewer<'a> {
    leases: Api<Lease>,
    nodes: Api<Node>,
    config: &'a NodeConfig,
    /// The Lease as last written, so a renewal is one update.
    latest: Option<Lease>,
}

impl Renewer<'_> {
    /// Upstream's `controller.sync`: update the cached Lease; when that fails, get (or create)
    /// the Lease and update what was read.
    async fn sync(&mut self) -> Result<(), NodeError> {
        if let Some(latest) = self.latest.take()
            && self.retry_update(&latest).await.is_ok()
        {
            return Ok(());
        }
        let (lease, created) = self.ensure().await?;
        if created {
            self.latest = Some(lease);
            return Ok(());
        }
        self.retry_update(&lease).await
    }

    async fn ensure(&self) -> Result<(Lease, bool), NodeError> {
        let name = &self.config.node_name;
        let existing = self
            .leases
            .get_opt(name)
            .await
            .map_err(|source| self.error("reading Lease", source))?;
        if let Some(lease) = existing {
            return Ok((lease, false));
        }
        let uid = self.node_uid().await;
        let lease = renewed_lease(
            None,
            name,
            uid.as_deref(),
            self.config.node_lease_duration_seconds,
            Timestamp::now(),
        );
        let created = self
            .leases
            .create(&PostParams::default(), &lease)
            .await
            .map_err(|source| self.error("creating Lease", source))?;
        Ok((created, true))
    }

    async fn retry_update(&mut self, base: &Lease) -> Result<(), NodeError> {
        let missing_owner = base
            .metadata
            .owner_references
            .as_ref()
            .is_none_or(Vec::is_empty);
        let uid = if missing_owner {
            self.node_uid().await
        } else {
            None
        };
        let mut last_error = None;
        for _ in 0..MAX_UPDATE_RETRIES {
            let lease = renewed_lease(
                Some(base),
                &self.config.node_name,
                uid.as_deref(),
                self.config.node_lease_duration_seconds,
                Timestamp::now(),
            );
            match self
                .leases
                .replace(&self.config.node_name, &PostParams::default(), &lease)
                .await
            {
                Ok(updated) => {
                    self.latest = Some(updated);
                    return Ok(());
                }
                // A stale resourceVersion or a deleted Lease: re-read before trying again.
                Err(kube::Error::Api(status)) if status.is_conflict() || status.is_not_found() => {
                    return Err(self.error("renewing Lease", kube::Error::Api(status)));
                }
                Err(error) => last_error = Some(error),
            }
        }
        match last_error {
            Some(source) => Err(self.error("renewing Lease", source)),
            None => Ok(()),
        }
    }

    /// The Node's uid, when the Node exists and can be read.
    async fn node_uid(&self) -> Option<String> {
        self.nodes
            .get_opt(&self.config.node_name)
            .await
            .ok()
            .flatten()
            .and_then(|node| node.metadata.uid)
    }

    fn error(&self, action: &str, source: kube::Error) -> NodeError {
        NodeError::Api {
            action: format!("{action} {NODE_LEASE_NAMESPACE}/{}", self.config.node_name),
            node: self.config.node_name.clone(),
            source,
        }
    }
}

/// How long the lease loop waits between renewals for a lease of `lease_duration_seconds`
/// (upstream: 0.25 × the duration).
pub fn renew_interval(lease_duration_seconds: i32) -> Duration {
    Duration::from_secs_f64(
        f64::from(lease_duration_seconds.max(1)) * super::NODE_LEASE_RENEW_INTERVAL_FRACTION,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).expect("a valid timestamp")
    }

    #[test]
    fn new_lease_names_the_node_as_holder_and_owner() {
        let lease = renewed_lease(None, "node-a", Some("uid-1"), 40, at(0));
        assert_eq!(lease.metadata.name.as_deref(), Some("node-a"));
        assert_eq!(lease.metadata.namespace.as_deref(), Some("kube-node-lease"));
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("node-a"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(at(0))));
        let owners = lease.metadata.owner_references.unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (
                owners[0].api_version.as_str(),
                owners[0].kind.as_str(),
                owners[0].name.as_str(),
                owners[0].uid.as_str()
            ),
            ("v1", "Node", "node-a", "uid-1")
        );
        assert_eq!(owners[0].controller, None);
    }

    #[test]
    fn lease_without_a_known_node_has_no_owner_until_one_is_known() {
        let orphan = renewed_lease(None, "node-a", None, 40, at(0));
        assert_eq!(orphan.metadata.owner_references, None);
        let adopted = renewed_lease(Some(&orphan), "node-a", Some("uid-1"), 40, at(10));
        assert_eq!(adopted.metadata.owner_references.map(|o| o.len()), Some(1));
    }

    #[test]
    fn renewal_keeps_metadata_and_moves_renew_time() {
        let mut base = renewed_lease(None, "node-a", Some("uid-1"), 40, at(0));
        base.metadata.resource_version = Some("17".into());
        let renewed = renewed_lease(Some(&base), "node-a", Some("uid-2"), 40, at(10));
        assert_eq!(renewed.metadata.resource_version.as_deref(), Some("17"));
        assert_eq!(
            renewed.metadata.owner_references.unwrap()[0].uid,
            "uid-1",
            "an existing owner is kept"
        );
        assert_eq!(renewed.spec.unwrap().renew_time, Some(MicroTime(at(10))));
    }

    #[test]
    fn renewal_takes_the_lease_back_from_another_holder() {
        let mut base = renewed_lease(None, "node-a", None, 40, at(0));
        if let Some(spec) = base.spec.as_mut() {
            spec.holder_identity = Some("someone-else".into());
            spec.lease_duration_seconds = Some(300);
        }
        let renewed = renewed_lease(Some(&base), "node-a", None, 40, at(10))
            .spec
            .unwrap();
        assert_eq!(renewed.holder_identity.as_deref(), Some("node-a"));
        assert_eq!(renewed.lease_duration_seconds, Some(40));
    }

    #[test]
    fn lease_is_renewed_every_quarter_of_its_duration() {
        assert_eq!(renew_interval(40), Duration::from_secs(10));
        assert_eq!(renew_interval(0), Duration::from_millis(250));
    }
}
