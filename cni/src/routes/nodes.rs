//! The node list the routes are computed from: what `kubectl get nodes -o json` prints.
//!
//! Owns reading a `NodeList` (or a `List` of `Node`s) into the two facts per node the routes need:
//! its IPv4 podCIDR (`spec.podCIDR`, else the first IPv4 entry of `spec.podCIDRs`) and its IPv4
//! `InternalIP` (`status.addresses`). Pure: it reads no file and touches no kernel state. A node
//! that lacks either fact is skipped and reported (it may not be set up yet); a document that is not
//! such a list, or that holds a value that is not an address, is an error, so that a corrupted file
//! never changes a route.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

use crate::ipam::network::Ipv4Network;

/// A node with everything a route to its pods needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    /// The node's IPv4 pod CIDR.
    pub pod_cidr: Ipv4Network,
    /// The node's IPv4 `InternalIP`.
    pub internal_ip: Ipv4Addr,
}

/// A node that gets no route, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedNode {
    /// `metadata.name`.
    pub name: String,
    /// Human-readable reason, e.g. `it has no spec.podCIDR yet`.
    pub reason: String,
}

impl fmt::Display for SkippedNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} is skipped: {}", self.name, self.reason)
    }
}

/// The parsed node list: usable nodes and skipped ones, both in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeList {
    /// Nodes with an IPv4 podCIDR and an IPv4 InternalIP.
    pub nodes: Vec<Node>,
    /// Nodes without one of them.
    pub skipped: Vec<SkippedNode>,
}

impl NodeList {
    /// Whether a node of this name is in the list, usable or skipped.
    pub fn contains(&self, name: &str) -> bool {
        self.nodes.iter().any(|node| node.name == name)
            || self.skipped.iter().any(|node| node.name == name)
    }

    /// The usable node of this name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|node| node.name == name)
    }
}

/// Why a document is not a usable node list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeListError {
    /// Not JSON, or not shaped like a list of nodes (serde's message has line and column).
    #[error("{0}")]
    Json(String),
    /// The top-level `kind` is neither `NodeList` nor `List`.
    #[error(
        "kind is {kind:?}, expected \"NodeList\" or \"List\" (the output of `kubectl get nodes -o json`)"
    )]
    WrongKind {
        /// The `kind` found.
        kind: String,
    },
    /// An item of a `List` is not a `Node`.
    #[error("items[{index}] is a {kind:?}, expected \"Node\"")]
    NotANode {
        /// Position in `items`.
        index: usize,
        /// The item's `kind`.
        kind: String,
    },
    /// Two items share a name.
    #[error("items[{index}]: node {name:?} appears more than once")]
    DuplicateName {
        /// Position of the second occurrence in `items`.
        index: usize,
        /// The name.
        name: String,
    },
    /// A field holds something that is not what Kubernetes would put there.
    #[error("items[{index}] (node {name:?}): {field}: {problem}")]
    InvalidValue {
        /// Position in `items`.
        index: usize,
        /// The node's name.
        name: String,
        /// The field, e.g. `spec.podCIDR`.
        field: String,
        /// What is wrong with its value.
        problem: String,
    },
}

#[derive(Deserialize)]
struct RawList {
    kind: String,
    items: Vec<RawNode>,
}

#[derive(Deserialize)]
struct RawNode {
    kind: Option<String>,
    metadata: RawMetadata,
    #[serde(default)]
    spec: RawSpec,
    #[serde(default)]
    status: RawStatus,
}

#[derive(Deserialize)]
struct RawMetadata {
    name: String,
}

#[derive(Deserialize, Default)]
struct RawSpec {
    #[serde(rename = "podCIDR")]
    pod_cidr: Option<String>,
    #[serde(rename = "podCIDRs", default)]
    pod_cidrs: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct RawStatus {
    #[serde(default)]
    addresses: Option<Vec<RawAddress>>,
}

#[derive(Deserialize)]
struct RawAddress {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

/// Parses `kubectl get nodes -o json` output (`{"kind":"List"|"NodeList","items":[...]}`).
pub fn parse_node_list(text: &str) -> Result<NodeList, NodeListError> {
    let raw: RawList =
        serde_json::from_str(text).map_err(|error| NodeListError::Json(error.to_string()))?;
    if raw.kind != "NodeList" && raw.kind != "List" {
        return Err(NodeListError::WrongKind { kind: raw.kind });
    }
    let mut list = NodeList::default();
    let mut names = BTreeSet::new();
    for (index, item) in raw.items.into_iter().enumerate() {
        if let Some(kind) = item.kind.filter(|kind| kind != "Node") {
            return Err(NodeListError::NotANode { index, kind });
        }
        let name = item.metadata.name;
        if !names.insert(name.clone()) {
            return Err(NodeListError::DuplicateName { index, name });
        }
        let invalid = |field: String, problem: String| NodeListError::InvalidValue {
            index,
            name: name.clone(),
            field,
            problem,
        };
        let pod_cidr = ipv4_pod_cidr(&item.spec, &invalid)?;
        let internal_ip = ipv4_internal_ip(&item.status, &invalid)?;
        match (pod_cidr, internal_ip) {
            (Ok(pod_cidr), Some(internal_ip)) => list.nodes.push(Node {
                name,
                pod_cidr,
                internal_ip,
            }),
            (Err(reason), _) => list.skipped.push(SkippedNode { name, reason }),
            (Ok(_), None) => list.skipped.push(SkippedNode {
                name,
                reason: "it has no IPv4 InternalIP in status.addresses".to_owned(),
            }),
        }
    }
    Ok(list)
}

/// The first IPv4 pod CIDR (`Ok`), or why there is none (`Err(reason)`); an invalid value is a
/// hard error (the outer `Err`).
fn ipv4_pod_cidr(
    spec: &RawSpec,
    invalid: &impl Fn(String, String) -> NodeListError,
) -> Result<Result<Ipv4Network, String>, NodeListError> {
    let candidates = spec
        .pod_cidr
        .iter()
        .map(|cidr| ("spec.podCIDR".to_owned(), cidr))
        .chain(
            spec.pod_cidrs
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, cidr)| (format!("spec.podCIDRs[{i}]"), cidr)),
        );
    let mut ipv6 = None;
    for (field, cidr) in candidates {
        if cidr.contains(':') {
            check_ipv6_network(cidr).map_err(|problem| invalid(field, problem))?;
            ipv6.get_or_insert_with(|| cidr.clone());
            continue;
        }
        let network = cidr
            .parse::<Ipv4Network>()
            .map_err(|error| invalid(field, error.to_string()))?;
        return Ok(Ok(network));
    }
    Ok(Err(match ipv6 {
        Some(cidr) => format!("its podCIDR {cidr} is IPv6; Skiff routes IPv4 pod CIDRs only"),
        None => "it has no spec.podCIDR yet".to_owned(),
    }))
}

fn check_ipv6_network(cidr: &str) -> Result<(), String> {
    let (address, prefix_length) = cidr
        .split_once('/')
        .ok_or_else(|| format!("{cidr:?} is not a network in CIDR notation"))?;
    address
        .parse::<Ipv6Addr>()
        .map_err(|_| format!("{cidr:?}: {address:?} is not an IPv6 address"))?;
    prefix_length
        .parse::<u8>()
        .ok()
        .filter(|length| *length <= 128)
        .map(|_| ())
        .ok_or_else(|| format!("{cidr:?}: {prefix_length:?} is not a prefix length from 0 to 128"))
}

/// The first IPv4 `InternalIP`, if any.
fn ipv4_internal_ip(
    status: &RawStatus,
    invalid: &impl Fn(String, String) -> NodeListError,
) -> Result<Option<Ipv4Addr>, NodeListError> {
    let mut first = None;
    for (i, address) in status.addresses.iter().flatten().enumerate() {
        if address.kind != "InternalIP" {
            continue;
        }
        let ip = address.address.parse::<IpAddr>().map_err(|_| {
            invalid(
                format!("status.addresses[{i}].address"),
                format!("{:?} is not an IP address", address.address),
            )
        })?;
        if let (None, IpAddr::V4(ip)) = (first, ip) {
            first = Some(ip);
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trimmed `kubectl get nodes -o json` of a three-node cluster.
    const KUBECTL_OUTPUT: &str = r#"{
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": "node-a", "labels": {"kubernetes.io/os": "linux"}},
                "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
                "status": {"addresses": [
                    {"type": "InternalIP", "address": "192.168.50.1"},
                    {"type": "Hostname", "address": "node-a"}
                ]}
            },
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": "node-b"},
                "spec": {"podCIDR": "10.244.1.0/24"},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.2"}]}
            },
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": "node-c"},
                "spec": {"podCIDR": "10.244.2.0/24"},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.50.3"}]}
            }
        ],
        "metadata": {"resourceVersion": ""}
    }"#;

    fn net(text: &str) -> Ipv4Network {
        text.parse().expect("a valid network")
    }

    fn node_json(name: &str, spec: &str, addresses: &str) -> String {
        format!(
            r#"{{"kind":"NodeList","items":[{{"metadata":{{"name":"{name}"}},"spec":{spec},"status":{{"addresses":{addresses}}}}}]}}"#
        )
    }

    #[test]
    fn kubectl_output_yields_every_node_with_pod_cidr_and_internal_ip() {
        let list = parse_node_list(KUBECTL_OUTPUT).unwrap();
        assert_eq!(list.skipped, []);
        assert_eq!(
            list.nodes,
            [
                Node {
                    name: "node-a".into(),
                    pod_cidr: net("10.244.0.0/24"),
                    internal_ip: Ipv4Addr::new(192, 168, 50, 1),
                },
                Node {
                    name: "node-b".into(),
                    pod_cidr: net("10.244.1.0/24"),
                    internal_ip: Ipv4Addr::new(192, 168, 50, 2),
                },
                Node {
                    name: "node-c".into(),
                    pod_cidr: net("10.244.2.0/24"),
                    internal_ip: Ipv4Addr::new(192, 168, 50, 3),
                },
            ]
        );
    }

    #[test]
    fn api_node_list_and_empty_list_are_accepted() {
        let list = parse_node_list(&node_json(
            "n",
            r#"{"podCIDR":"10.0.0.0/24"}"#,
            r#"[{"type":"InternalIP","address":"10.1.0.1"}]"#,
        ))
        .unwrap();
        assert_eq!(list.nodes.len(), 1);
        let empty = parse_node_list(r#"{"kind":"List","items":[]}"#).unwrap();
        assert_eq!(empty, NodeList::default());
    }

    #[test]
    fn node_without_pod_cidr_or_internal_ip_is_skipped_with_the_reason() {
        let no_cidr = parse_node_list(&node_json(
            "new",
            "{}",
            r#"[{"type":"InternalIP","address":"10.1.0.1"}]"#,
        ))
        .unwrap();
        assert_eq!(no_cidr.nodes, []);
        assert_eq!(no_cidr.skipped[0].name, "new");
        assert!(no_cidr.skipped[0].reason.contains("no spec.podCIDR"));
        assert!(no_cidr.contains("new"));
        assert!(no_cidr.node("new").is_none());

        let no_ip = parse_node_list(&node_json(
            "lonely",
            r#"{"podCIDR":"10.0.0.0/24"}"#,
            r#"[{"type":"ExternalIP","address":"203.0.113.1"}]"#,
        ))
        .unwrap();
        assert!(no_ip.skipped[0].reason.contains("InternalIP"));

        let no_status =
            parse_node_list(r#"{"kind":"List","items":[{"metadata":{"name":"bare"}}]}"#).unwrap();
        assert_eq!(no_status.skipped.len(), 1);
    }

    #[test]
    fn dual_stack_node_uses_its_ipv4_pod_cidr_and_internal_ip() {
        let list = parse_node_list(&node_json(
            "dual",
            r#"{"podCIDR":"fd00:10:244:1::/64","podCIDRs":["fd00:10:244:1::/64","10.244.1.0/24"]}"#,
            r#"[{"type":"InternalIP","address":"fd00::1"},{"type":"InternalIP","address":"192.168.50.9"}]"#,
        ))
        .unwrap();
        assert_eq!(list.nodes[0].pod_cidr, net("10.244.1.0/24"));
        assert_eq!(list.nodes[0].internal_ip, Ipv4Addr::new(192, 168, 50, 9));
    }

    #[test]
    fn ipv6_only_node_is_skipped_as_ipv6() {
        let list = parse_node_list(&node_json(
            "v6",
            r#"{"podCIDR":"fd00:10:244:1::/64"}"#,
            r#"[{"type":"InternalIP","address":"fd00::1"}]"#,
        ))
        .unwrap();
        assert!(
            list.skipped[0].reason.contains("IPv6"),
            "{:?}",
            list.skipped
        );
    }

    #[test]
    fn malformed_documents_are_errors_naming_the_problem() {
        let cases: [(&str, &str); 6] = [
            ("{\"kind\":\"List\",\"items\":[", "EOF"),
            ("{\"kind\":\"PodList\",\"items\":[]}", "\"PodList\""),
            ("{\"items\":[]}", "missing field `kind`"),
            ("{\"kind\":\"List\"}", "missing field `items`"),
            (
                r#"{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"p"}}]}"#,
                "items[0] is a \"Pod\"",
            ),
            (
                r#"{"kind":"List","items":[{"metadata":{}}]}"#,
                "missing field `name`",
            ),
        ];
        for (text, expected) in cases {
            let message = parse_node_list(text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn invalid_addresses_are_errors_naming_node_and_field() {
        let bad_cidr = parse_node_list(&node_json(
            "node-x",
            r#"{"podCIDR":"10.244.1.7/24"}"#,
            r#"[{"type":"InternalIP","address":"10.1.0.1"}]"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(bad_cidr.contains("node-x"), "{bad_cidr}");
        assert!(bad_cidr.contains("spec.podCIDR"), "{bad_cidr}");
        assert!(bad_cidr.contains("host bits"), "{bad_cidr}");

        let bad_ip = parse_node_list(&node_json(
            "node-y",
            r#"{"podCIDR":"10.244.1.0/24"}"#,
            r#"[{"type":"InternalIP","address":"10.1.0"}]"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(bad_ip.contains("status.addresses[0].address"), "{bad_ip}");

        let bad_v6 = parse_node_list(&node_json(
            "node-z",
            r#"{"podCIDR":"fd00::zz/64"}"#,
            r#"[{"type":"InternalIP","address":"10.1.0.1"}]"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(bad_v6.contains("not an IPv6 address"), "{bad_v6}");

        let wrong_type = parse_node_list(&node_json(
            "node-w",
            r#"{"podCIDR":5}"#,
            r#"[{"type":"InternalIP","address":"10.1.0.1"}]"#,
        ))
        .unwrap_err()
        .to_string();
        assert!(wrong_type.contains("invalid type"), "{wrong_type}");
    }

    #[test]
    fn duplicate_node_names_are_an_error() {
        let text =
            r#"{"kind":"List","items":[{"metadata":{"name":"a"}},{"metadata":{"name":"a"}}]}"#;
        assert_eq!(
            parse_node_list(text).unwrap_err(),
            NodeListError::DuplicateName {
                index: 1,
                name: "a".into()
            }
        );
    }
}
