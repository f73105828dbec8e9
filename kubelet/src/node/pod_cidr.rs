//! The node's pod CIDR: which one applies, and the file skiff-cni reads it from.
//!
//! Owns the choice between the Node's `spec.podCIDR` (the API's word wins) and `--pod-cidr`
//! (used, and offered to the Node, only while the Node has none), the merge patch that offers it,
//! and the atomic write of `--pod-cidr-file` (temporary file + fsync + rename, skipped when the
//! file already says the same). Never allocates CIDRs and never touches routes or interfaces.

use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};

/// Where the pod CIDR comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodCidr {
    /// The Node already has it (`spec.podCIDR`, or the first of `spec.podCIDRs`).
    FromNode(String),
    /// The Node has none; `--pod-cidr` applies and is to be set on the Node.
    FromFlag(String),
}

impl PodCidr {
    /// The CIDR, wherever it came from.
    pub fn cidr(&self) -> &str {
        match self {
            PodCidr::FromNode(cidr) | PodCidr::FromFlag(cidr) => cidr,
        }
    }
}

/// The Node's pod CIDR: `spec.podCIDR`, else the first of `spec.podCIDRs`.
pub fn node_pod_cidr(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidr
        .clone()
        .filter(|cidr| !cidr.is_empty())
        .or_else(|| spec.pod_cidrs.as_ref()?.first().cloned())
        .filter(|cidr| !cidr.is_empty())
}

/// The pod CIDR that applies: the Node's when it has one, else `--pod-cidr`, else none yet.
pub fn choose(node: &Node, flag: Option<&str>) -> Option<PodCidr> {
    match node_pod_cidr(node) {
        Some(cidr) => Some(PodCidr::FromNode(cidr)),
        None => flag.map(|cidr| PodCidr::FromFlag(cidr.to_owned())),
    }
}

/// The JSON merge patch that sets a Node's pod CIDR (both the singular field and the list, as
/// kube-apiserver keeps them in step).
pub fn set_on_node_patch(cidr: &str) -> Value {
    json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})
}

/// Checks `--pod-cidr`: an IPv4 network in CIDR notation with no host bits set (what skiff-cni
/// accepts), e.g. `10.244.7.0/24`.
pub fn parse_ipv4_cidr(text: &str) -> Result<String, String> {
    let (address, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not in CIDR notation (e.g. 10.244.1.0/24)"))?;
    let address: Ipv4Addr = address
        .parse()
        .map_err(|_| format!("{text:?}: {address:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|prefix| *prefix <= 32)
        .ok_or_else(|| format!("{text:?}: prefix length {prefix:?} is not 0-32"))?;
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    let network = Ipv4Addr::from(u32::from(address) & mask);
    if network != address {
        return Err(format!(
            "{text:?} has host bits set; the network is {network}/{prefix}"
        ));
    }
    Ok(format!("{network}/{prefix}"))
}

/// Writes `cidr` (one line) to `path` unless the file already holds it; returns whether it
/// wrote. The write is atomic: a temporary file in the same directory, fsynced, then renamed
/// over `path`, so skiff-cni never reads half a CIDR. The directory is created when missing.
pub fn write_file(path: &Path, cidr: &str) -> std::io::Result<bool> {
    if let Ok(current) = std::fs::read_to_string(path)
        && current.trim() == cidr
    {
        return Ok(false);
    }
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(directory)?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "podcidr".to_owned());
    let temporary: PathBuf = directory.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(format!("{cidr}\n").as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // Make the rename itself durable.
        std::fs::File::open(directory)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map(|()| true)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::NodeSpec;

    use super::*;

    fn node(pod_cidr: Option<&str>, pod_cidrs: Option<Vec<&str>>) -> Node {
        Node {
            spec: Some(NodeSpec {
                pod_cidr: pod_cidr.map(str::to_owned),
                pod_cidrs: pod_cidrs.map(|cidrs| cidrs.into_iter().map(str::to_owned).collect()),
                ..NodeSpec::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn the_nodes_pod_cidr_wins_over_the_flag() {
        let chosen = choose(&node(Some("10.244.1.0/24"), None), Some("10.244.7.0/24"));
        assert_eq!(chosen, Some(PodCidr::FromNode("10.244.1.0/24".into())));
    }

    #[test]
    fn pod_cidrs_list_is_read_when_the_singular_field_is_empty() {
        let chosen = choose(&node(Some(""), Some(vec!["10.244.2.0/24"])), None);
        assert_eq!(chosen, Some(PodCidr::FromNode("10.244.2.0/24".into())));
    }

    #[test]
    fn the_flag_applies_only_to_a_node_without_one() {
        assert_eq!(
            choose(&Node::default(), Some("10.244.7.0/24")),
            Some(PodCidr::FromFlag("10.244.7.0/24".into()))
        );
        assert_eq!(choose(&node(None, Some(vec![])), None), None);
    }

    #[test]
    fn the_node_patch_sets_both_fields() {
        assert_eq!(
            set_on_node_patch("10.244.7.0/24"),
            json!({"spec": {"podCIDR": "10.244.7.0/24", "podCIDRs": ["10.244.7.0/24"]}})
        );
    }

    #[test]
    fn ipv4_cidrs_are_accepted_and_host_bits_refused() {
        assert_eq!(parse_ipv4_cidr("10.244.7.0/24").unwrap(), "10.244.7.0/24");
        assert_eq!(parse_ipv4_cidr("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        assert_eq!(parse_ipv4_cidr("10.0.0.1/32").unwrap(), "10.0.0.1/32");
        assert!(
            parse_ipv4_cidr("10.244.7.1/24")
                .unwrap_err()
                .contains("10.244.7.0/24")
        );
        assert!(parse_ipv4_cidr("10.244.7.0").is_err());
        assert!(parse_ipv4_cidr("10.244.7.0/33").is_err());
        assert!(parse_ipv4_cidr("fd00::/64").is_err());
    }

    #[test]
    fn the_file_is_written_once_per_change() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("run/skiff/podcidr");
        assert!(write_file(&path, "10.244.7.0/24").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "10.244.7.0/24\n");
        assert!(!write_file(&path, "10.244.7.0/24").unwrap());
        assert!(write_file(&path, "10.244.8.0/24").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "10.244.8.0/24\n");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("podcidr")]);
    }
}
