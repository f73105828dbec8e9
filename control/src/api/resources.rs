//! The resource types skiff-control serves: names, scope, verbs and subresources, as discovery
//! reports them and as routing and storage look them up.
//!
//! Owns the static table only. Knows nothing about HTTP or the store; handlers, discovery,
//! OpenAPI and the per-kind logic (defaulting, validation, tables, selectors) key on
//! [`ResourceType::kind`].

/// One served resource (a group/version/kind with its REST names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; `""` for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The REST name (`pods`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Has a `/status` subresource (the main resource then ignores status changes).
    pub status: bool,
    /// Has a `/scale` subresource (`autoscaling/v1` Scale over `spec.replicas`).
    pub scale: bool,
    /// Has a `/binding` subresource (pods).
    pub binding: bool,
}

impl ResourceType {
    /// `apiVersion` of the objects: `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name errors use: `pods`, `deployments.apps` (upstream's `GroupResource.String()`).
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The store key prefix of every object of this type: `/registry/pods/`.
    pub fn key_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        }
    }

    /// The store key prefix of the objects in `namespace` (all of them when `None` or for
    /// cluster-scoped types).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(namespace) if self.namespaced => format!("{}{namespace}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.namespace_prefix(namespace))
    }
}

const CORE_ALL: &[&str] = &["all"];

/// Every served resource type.
pub const RESOURCE_TYPES: &[ResourceType] = &[
    ResourceType {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        status: true,
        scale: false,
        binding: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        status: true,
        scale: false,
        binding: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: CORE_ALL,
        status: true,
        scale: false,
        binding: true,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: CORE_ALL,
        status: true,
        scale: false,
        binding: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        status: false,
        scale: false,
        binding: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        status: false,
        scale: false,
        binding: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
        scale: false,
        binding: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        status: false,
        scale: false,
        binding: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        status: false,
        scale: false,
        binding: false,
    },
    ResourceType {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
        scale: false,
        binding: false,
    },
    ResourceType {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: CORE_ALL,
        status: true,
        scale: true,
        binding: false,
    },
    ResourceType {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: CORE_ALL,
        status: true,
        scale: true,
        binding: false,
    },
    ResourceType {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        singular: "daemonset",
        namespaced: true,
        short_names: &["ds"],
        categories: CORE_ALL,
        status: true,
        scale: false,
        binding: false,
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        status: false,
        scale: false,
        binding: false,
    },
];

/// The groups served under `/apis`, in discovery order (the core group is served under `/api`).
pub const NAMED_GROUPS: &[&str] = &["apps", "coordination.k8s.io", "discovery.k8s.io"];

/// The resource type served at `group`/`version`/`plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCE_TYPES.iter().find(|resource| {
        resource.group == group && resource.version == version && resource.plural == plural
    })
}

/// The resource type of objects of `kind`.
pub fn by_kind(kind: &str) -> Option<&'static ResourceType> {
    RESOURCE_TYPES.iter().find(|resource| resource.kind == kind)
}

/// The resource types of one group/version.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceType> + 'a {
    RESOURCE_TYPES
        .iter()
        .filter(move |resource| resource.group == group && resource.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_namespaced_and_cluster_scoped_objects() {
        let pods = lookup("", "v1", "pods").expect("pods are served");
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/pods/default/web"
        );
        assert_eq!(pods.namespace_prefix(None), "/registry/pods/");
        let nodes = by_kind("Node").expect("nodes are served");
        assert_eq!(nodes.key(Some("ignored"), "n1"), "/registry/nodes/n1");
        let deployments = by_kind("Deployment").expect("deployments are served");
        assert_eq!(deployments.group_resource(), "deployments.apps");
        assert_eq!(deployments.api_version(), "apps/v1");
        assert_eq!(
            deployments.key(Some("a"), "b"),
            "/registry/apps/deployments/a/b"
        );
    }

    #[test]
    fn every_named_group_serves_something_and_kinds_are_unique() {
        for group in NAMED_GROUPS {
            assert!(
                RESOURCE_TYPES
                    .iter()
                    .any(|resource| resource.group == *group)
            );
        }
        for resource in RESOURCE_TYPES {
            assert_eq!(by_kind(resource.kind), Some(resource));
        }
    }
}
