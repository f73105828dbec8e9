//! Pod → CRI `PodSandboxConfig`, and the per-pod files the sandbox implies (`/etc/hosts`,
//! log directory).
//!
//! Owns upstream's `generatePodSandboxConfig` and `generatePodSandboxLinuxConfig`, the DNS
//! configurer (`GetPodDNS`: ClusterFirst / Default / None, `ndots:5`, search path and nameserver
//! limits), `GeneratePodHostNameAndDomain`, `MakePortMappings`, the namespace modes of
//! `NamespacesForPod` and the kubelet-managed hosts file content. Never creates the sandbox,
//! writes a file or reads the host's `resolv.conf` (its parsed content comes in through
//! [`NodeContext::host_dns`]).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod, PodDNSConfig};

use super::labels::{sandbox_annotations, sandbox_labels};
use super::{
    NodeContext, is_host_network, pod_containers, pod_init_containers, pod_name, pod_namespace,
    pod_uid,
};

/// Upstream `validation.MaxDNSNameservers`.
pub const MAX_DNS_NAMESERVERS: usize = 3;
/// Upstream `validation.MaxDNSSearchPaths`.
pub const MAX_DNS_SEARCH_PATHS: usize = 32;
/// Upstream `validation.MaxDNSSearchListChars`.
pub const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;
/// Upstream `defaultDNSOptions` for ClusterFirst pods.
pub const DEFAULT_DNS_OPTIONS: [&str; 1] = ["ndots:5"];
/// Upstream: hostnames are cut to 63 characters.
const HOSTNAME_MAX_LEN: usize = 63;
/// Upstream: an FQDN used as the kernel hostname must fit 64 characters.
const FQDN_MAX_LEN: usize = 64;
/// Upstream `utilvalidation.DNS1123SubdomainMaxLength`: longer search domains are dropped.
const SEARCH_DOMAIN_MAX_LEN: usize = 253;

/// Why a pod's sandbox configuration cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxConfigError {
    /// `spec.hostname` is not a DNS-1123 label.
    #[error("pod Hostname {hostname:?} is not a valid DNS label: {reason}")]
    InvalidHostname {
        /// The hostname.
        hostname: String,
        /// The validation message.
        reason: String,
    },
    /// `spec.subdomain` is not a DNS-1123 label.
    #[error("pod Subdomain {subdomain:?} is not a valid DNS label: {reason}")]
    InvalidSubdomain {
        /// The subdomain.
        subdomain: String,
        /// The validation message.
        reason: String,
    },
    /// The hostname is empty after truncation.
    #[error("hostname for pod {pod:?} was invalid: {hostname:?}")]
    InvalidTruncatedHostname {
        /// The pod name.
        pod: String,
        /// The hostname before truncation.
        hostname: String,
    },
    /// `setHostnameAsFQDN` with an FQDN longer than 64 characters.
    #[error(
        "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} is too long (64 characters is the max, {length} characters requested)"
    )]
    FqdnTooLong {
        /// The FQDN.
        fqdn: String,
        /// Its length.
        length: usize,
    },
    /// `hostUsers: false` asks for a user namespace, which this kubelet cannot set up.
    #[error("pod {pod} sets hostUsers: false, but this kubelet does not support user namespaces")]
    UserNamespacesUnsupported {
        /// The pod (`name_namespace(uid)`).
        pod: String,
    },
}

/// The host's resolver configuration (parsed `resolv.conf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDnsConfig {
    /// `nameserver` lines, in order.
    pub servers: Vec<String>,
    /// The last `search` line's domains, trailing dots removed.
    pub searches: Vec<String>,
    /// The `options` lines merged (a later option replaces one of the same name).
    pub options: Vec<String>,
}

/// Upstream `parseResolvConf`.
#[must_use]
pub fn parse_resolv_conf(content: &str) -> HostDnsConfig {
    let mut config = HostDnsConfig::default();
    for line in content.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["nameserver", server, ..] => config.servers.push((*server).to_owned()),
            ["search", domains @ ..] => {
                config.searches = domains
                    .iter()
                    .filter(|domain| **domain != ".")
                    .map(|domain| domain.trim_end_matches('.').to_owned())
                    .collect();
            }
            ["options", options @ ..] => {
                for option in options {
                    set_option(&mut config.options, option);
                }
            }
            _ => {}
        }
    }
    config
}

/// Replaces the option with the same name (the part before `:`) or appends it.
fn set_option(options: &mut Vec<String>, option: &str) {
    let name = option.split(':').next().unwrap_or_default();
    match options
        .iter_mut()
        .find(|existing| existing.split(':').next() == Some(name))
    {
        Some(existing) => *existing = option.to_owned(),
        None => options.push(option.to_owned()),
    }
}

/// How a pod's DNS is configured (upstream `podDNSType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodDnsType {
    /// Cluster DNS (`ClusterFirst`, `ClusterFirstWithHostNet`).
    Cluster,
    /// The host's resolver (`Default`, or `ClusterFirst` with `hostNetwork`).
    Host,
    /// Only `spec.dnsConfig` (`None`).
    None,
}

/// Upstream `getPodDNSType`; unknown policies fall back to cluster DNS as upstream does.
#[must_use]
pub fn pod_dns_type(pod: &Pod) -> PodDnsType {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    match policy {
        "None" => PodDnsType::None,
        "ClusterFirstWithHostNet" => PodDnsType::Cluster,
        "ClusterFirst" if is_host_network(pod) => PodDnsType::Host,
        "Default" => PodDnsType::Host,
        _ => PodDnsType::Cluster,
    }
}

/// Upstream `Configurer.GetPodDNS`: the sandbox's DNS servers, search path and options.
#[must_use]
pub fn pod_dns_config(pod: &Pod, node: &NodeContext) -> cri::DnsConfig {
    let host = node.host_dns.clone().unwrap_or_default();
    let mut config = cri::DnsConfig {
        servers: host.servers,
        searches: host.searches,
        options: host.options,
    };
    let mut dns_type = pod_dns_type(pod);
    if dns_type == PodDnsType::Cluster && node.cluster_dns.is_empty() {
        // Upstream records a MissingClusterDNS event and falls back to Default.
        dns_type = PodDnsType::Host;
    }
    match dns_type {
        PodDnsType::None => config = cri::DnsConfig::default(),
        PodDnsType::Cluster => {
            config.servers = node.cluster_dns.clone();
            config.searches = cluster_first_searches(config.searches, pod, &node.cluster_domain);
            config.options = DEFAULT_DNS_OPTIONS.map(str::to_owned).to_vec();
        }
        PodDnsType::Host => {
            if node.host_dns.is_none() {
                config.servers = node
                    .host_ips
                    .iter()
                    .map(|ip| {
                        if ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) {
                            "::1".to_owned()
                        } else {
                            "127.0.0.1".to_owned()
                        }
                    })
                    .collect();
                if config.servers.is_empty() {
                    config.servers.push("127.0.0.1".to_owned());
                }
                config.searches = vec![".".to_owned()];
            }
        }
    }
    if let Some(dns_config) = pod.spec.as_ref().and_then(|spec| spec.dns_config.as_ref()) {
        append_dns_config(&mut config, dns_config);
    }
    config.servers.truncate(MAX_DNS_NAMESERVERS);
    config.searches = fit_search_limits(config.searches);
    config
}

/// Upstream `generateSearchesForDNSClusterFirst`: `<ns>.svc.<domain> svc.<domain> <domain>`
/// before the host's search path.
fn cluster_first_searches(host_searches: Vec<String>, pod: &Pod, domain: &str) -> Vec<String> {
    if domain.is_empty() {
        return host_searches;
    }
    let cluster = [
        format!("{}.svc.{domain}", pod_namespace(pod)),
        format!("svc.{domain}"),
        domain.to_owned(),
    ];
    omit_duplicates(cluster.into_iter().chain(host_searches))
}

/// Upstream `appendDNSConfig`.
fn append_dns_config(config: &mut cri::DnsConfig, dns_config: &PodDNSConfig) {
    config.servers = omit_duplicates(
        config
            .servers
            .drain(..)
            .chain(dns_config.nameservers.iter().flatten().cloned()),
    );
    config.searches = omit_duplicates(
        config
            .searches
            .drain(..)
            .chain(dns_config.searches.iter().flatten().cloned()),
    );
    for option in dns_config.options.iter().flatten() {
        let name = option.name.as_deref().unwrap_or_default();
        let merged = match option.value.as_deref().filter(|v| !v.is_empty()) {
            Some(value) => format!("{name}:{value}"),
            None => name.to_owned(),
        };
        set_option(&mut config.options, &merged);
    }
}

/// Upstream `formDNSSearchFitsLimits`: at most 32 domains, none longer than 253 characters,
/// at most 2048 characters in total (dropping from the end).
fn fit_search_limits(mut searches: Vec<String>) -> Vec<String> {
    searches.truncate(MAX_DNS_SEARCH_PATHS);
    searches.retain(|search| search.len() <= SEARCH_DOMAIN_MAX_LEN);
    while searches.iter().map(String::len).sum::<usize>() + searches.len().saturating_sub(1)
        > MAX_DNS_SEARCH_LIST_CHARS
    {
        searches.pop();
    }
    searches
}

fn omit_duplicates(values: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    values
        .into_iter()
        .filter(|value| seen.insert(value.clone()))
        .collect()
}

/// Upstream `GeneratePodHostNameAndDomain`: `spec.hostname` or the pod name (cut to 63
/// characters), and `<subdomain>.<namespace>.svc.<cluster domain>` when `spec.subdomain` is
/// set.
///
/// # Errors
/// When the hostname or subdomain is not a DNS label.
pub fn pod_hostname_and_domain(
    pod: &Pod,
    cluster_domain: &str,
) -> Result<(String, String), SandboxConfigError> {
    let spec = pod.spec.as_ref();
    let mut hostname = pod_name(pod).to_owned();
    if let Some(explicit) = spec
        .and_then(|spec| spec.hostname.as_deref())
        .filter(|h| !h.is_empty())
    {
        if let Some(reason) = dns_label_error(explicit) {
            return Err(SandboxConfigError::InvalidHostname {
                hostname: explicit.to_owned(),
                reason,
            });
        }
        explicit.clone_into(&mut hostname);
    }
    if hostname.len() > HOSTNAME_MAX_LEN {
        let truncated = hostname
            .get(..HOSTNAME_MAX_LEN)
            .unwrap_or_default()
            .trim_end_matches(['-', '.']);
        if truncated.is_empty() {
            return Err(SandboxConfigError::InvalidTruncatedHostname {
                pod: pod_name(pod).to_owned(),
                hostname,
            });
        }
        hostname = truncated.to_owned();
    }
    let mut domain = String::new();
    if let Some(subdomain) = spec
        .and_then(|spec| spec.subdomain.as_deref())
        .filter(|s| !s.is_empty())
    {
        if let Some(reason) = dns_label_error(subdomain) {
            return Err(SandboxConfigError::InvalidSubdomain {
                subdomain: subdomain.to_owned(),
                reason,
            });
        }
        domain = format!("{subdomain}.{}.svc.{cluster_domain}", pod_namespace(pod));
    }
    Ok((hostname, domain))
}

/// Upstream `GetNodenameForKernel`: the FQDN when `setHostnameAsFQDN` and a domain is set,
/// else the hostname.
///
/// # Errors
/// When the FQDN is longer than 64 characters.
pub fn kernel_hostname(
    hostname: &str,
    domain: &str,
    set_hostname_as_fqdn: bool,
) -> Result<String, SandboxConfigError> {
    if domain.is_empty() || !set_hostname_as_fqdn {
        return Ok(hostname.to_owned());
    }
    let fqdn = format!("{hostname}.{domain}");
    if fqdn.len() > FQDN_MAX_LEN {
        let length = fqdn.len();
        return Err(SandboxConfigError::FqdnTooLong { fqdn, length });
    }
    Ok(fqdn)
}

/// Upstream `IsDNS1123Label`'s message, or `None` when `value` is a valid label.
fn dns_label_error(value: &str) -> Option<String> {
    let mut errors = Vec::new();
    if value.len() > HOSTNAME_MAX_LEN {
        errors.push("must be no more than 63 characters".to_owned());
    }
    let bytes = value.as_bytes();
    let valid_chars = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !valid_chars || !alnum(bytes.first()) || !alnum(bytes.last()) {
        errors.push(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \
             '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or \
             '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
                .to_owned(),
        );
    }
    (!errors.is_empty()).then(|| errors.join(";"))
}

/// Upstream `BuildPodLogsDirectory`: `<root>/<namespace>_<name>_<uid>`.
#[must_use]
pub fn pod_logs_directory(root: &str, pod: &Pod) -> String {
    format!(
        "{}/{}_{}_{}",
        root.trim_end_matches('/'),
        pod_namespace(pod),
        pod_name(pod),
        pod_uid(pod)
    )
}

/// Upstream `BuildContainerLogsDirectory`: `<pod logs directory>/<container>`.
#[must_use]
pub fn container_logs_directory(root: &str, pod: &Pod, container_name: &str) -> String {
    format!("{}/{container_name}", pod_logs_directory(root, pod))
}

/// Upstream `NamespacesForPod`: network and IPC are the node's with `hostNetwork`/`hostIPC`,
/// else the pod's; PID is the node's with `hostPID`, the pod's with `shareProcessNamespace`,
/// else the container's own.
#[must_use]
pub fn namespace_options(pod: &Pod) -> cri::NamespaceOption {
    let spec = pod.spec.as_ref();
    let flag = |get: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| {
        spec.and_then(get).unwrap_or(false)
    };
    let node_or = |on: bool, otherwise: cri::NamespaceMode| {
        if on {
            cri::NamespaceMode::Node as i32
        } else {
            otherwise as i32
        }
    };
    cri::NamespaceOption {
        network: node_or(flag(|s| s.host_network), cri::NamespaceMode::Pod),
        ipc: node_or(flag(|s| s.host_ipc), cri::NamespaceMode::Pod),
        pid: node_or(
            flag(|s| s.host_pid),
            if flag(|s| s.share_process_namespace) {
                cri::NamespaceMode::Pod
            } else {
                cri::NamespaceMode::Container
            },
        ),
        target_id: String::new(),
        userns_options: None,
    }
}

/// Upstream `kubecontainer.MakePortMappings` over the pod's containers: every declared port
/// (the runtime maps the ones with a `hostPort`), a port name used twice in one container
/// only once.
#[must_use]
pub fn port_mappings(pod: &Pod) -> Vec<cri::PortMapping> {
    let mut mappings = Vec::new();
    for container in pod_containers(pod) {
        let mut names = HashSet::new();
        for port in container.ports.iter().flatten() {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let host_ip = port.host_ip.clone().unwrap_or_default();
            let host_port = port.host_port.unwrap_or(0);
            let name = match port.name.as_deref().filter(|n| !n.is_empty()) {
                Some(name) => name.to_owned(),
                None => {
                    let family = match host_ip.parse::<IpAddr>() {
                        _ if host_ip.is_empty() => "any",
                        Ok(ip) if ip.is_ipv6() => "v6",
                        _ => "v4",
                    };
                    format!(
                        "{family}-{protocol}-{host_ip}:{}:{host_port}",
                        port.container_port
                    )
                }
            };
            if !names.insert(name) {
                continue;
            }
            mappings.push(cri::PortMapping {
                protocol: runtime_protocol(protocol) as i32,
                container_port: port.container_port,
                host_port,
                host_ip,
            });
        }
    }
    mappings
}

/// Upstream `toRuntimeProtocol`: TCP for anything unknown.
fn runtime_protocol(protocol: &str) -> cri::Protocol {
    match protocol {
        "UDP" => cri::Protocol::Udp,
        "SCTP" => cri::Protocol::Sctp,
        _ => cri::Protocol::Tcp,
    }
}

/// Upstream `convertSysctlVariableToDotsSeparator`: `net/ipv4/ip_forward` →
/// `net.ipv4.ip_forward` (only when the first separator is a slash).
#[must_use]
pub fn sysctl_dots_separator(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(at) if name.as_bytes().get(at) == Some(&b'/') => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_owned(),
    }
}

/// Upstream `HasPrivilegedContainer`: any init or regular container is privileged.
#[must_use]
pub fn has_privileged_container(pod: &Pod) -> bool {
    pod_init_containers(pod)
        .iter()
        .chain(pod_containers(pod))
        .any(is_privileged)
}

fn is_privileged(container: &Container) -> bool {
    container
        .security_context
        .as_ref()
        .and_then(|sc| sc.privileged)
        .unwrap_or(false)
}

/// Upstream `generatePodSandboxConfig` + `generatePodSandboxLinuxConfig`.
///
/// `attempt` is the plan's sandbox attempt; `cgroup_parent` is the pod's cgroup as the node
/// side created it.
///
/// # Errors
/// [`SandboxConfigError`] for invalid hostnames/subdomains or unsupported features.
pub fn generate_pod_sandbox_config(
    pod: &Pod,
    node: &NodeContext,
    attempt: u32,
    cgroup_parent: &str,
) -> Result<cri::PodSandboxConfig, SandboxConfigError> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|spec| spec.host_users) == Some(false) {
        return Err(SandboxConfigError::UserNamespacesUnsupported {
            pod: super::format_pod(pod),
        });
    }
    let mut hostname = String::new();
    if !is_host_network(pod) {
        let (name, domain) = pod_hostname_and_domain(pod, &node.cluster_domain)?;
        let as_fqdn = spec
            .and_then(|spec| spec.set_hostname_as_fqdn)
            .unwrap_or(false);
        hostname = kernel_hostname(&name, &domain, as_fqdn)?;
    }
    let pod_sc = spec.and_then(|spec| spec.security_context.as_ref());
    let sysctls: HashMap<String, String> = pod_sc
        .and_then(|sc| sc.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|sysctl| (sysctl_dots_separator(&sysctl.name), sysctl.value.clone()))
        .collect();
    let mut security_context = cri::LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options(pod)),
        privileged: has_privileged_container(pod),
        seccomp: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..cri::LinuxSandboxSecurityContext::default()
    };
    if let Some(sc) = pod_sc {
        security_context.run_as_user = sc.run_as_user.map(|value| cri::Int64Value { value });
        security_context.run_as_group = sc.run_as_group.map(|value| cri::Int64Value { value });
        security_context.supplemental_groups = sc
            .fs_group
            .into_iter()
            .chain(sc.supplemental_groups.iter().flatten().copied())
            .collect();
        if sc.supplemental_groups_policy.as_deref() == Some("Strict") {
            security_context.supplemental_groups_policy =
                cri::SupplementalGroupsPolicy::Strict as i32;
        }
        security_context.selinux_options =
            sc.se_linux_options
                .as_ref()
                .map(|options| cri::SeLinuxOption {
                    user: options.user.clone().unwrap_or_default(),
                    role: options.role.clone().unwrap_or_default(),
                    r#type: options.type_.clone().unwrap_or_default(),
                    level: options.level.clone().unwrap_or_default(),
                });
    }
    Ok(cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: pod_name(pod).to_owned(),
            uid: pod_uid(pod).to_owned(),
            namespace: pod_namespace(pod).to_owned(),
            attempt,
        }),
        hostname,
        log_directory: pod_logs_directory(&node.pod_logs_root, pod),
        dns_config: Some(pod_dns_config(pod, node)),
        port_mappings: port_mappings(pod),
        labels: sandbox_labels(pod),
        annotations: sandbox_annotations(pod),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_owned(),
            security_context: Some(security_context),
            sysctls,
            overhead: None,
            resources: None,
        }),
        windows: None,
    })
}

/// Upstream `managedHostsFileContent` (and `nodeHostsFileContent` for host-network pods): the
/// content of the kubelet-managed `/etc/hosts`. `host_etc_hosts` is the node's own
/// `/etc/hosts`, used only for host-network pods.
///
/// # Errors
/// As [`pod_hostname_and_domain`].
pub fn hosts_file_content(
    pod: &Pod,
    pod_ips: &[String],
    cluster_domain: &str,
    host_etc_hosts: &str,
) -> Result<String, SandboxConfigError> {
    let mut out = String::new();
    if is_host_network(pod) {
        out.push_str("# Kubernetes-managed hosts file (host network).\n");
        out.push_str(host_etc_hosts);
    } else {
        let (hostname, domain) = pod_hostname_and_domain(pod, cluster_domain)?;
        out.push_str("# Kubernetes-managed hosts file.\n");
        out.push_str("127.0.0.1\tlocalhost\n");
        out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
        out.push_str("fe00::0\tip6-localnet\n");
        out.push_str("fe00::0\tip6-mcastprefix\n");
        out.push_str("fe00::1\tip6-allnodes\n");
        out.push_str("fe00::2\tip6-allrouters\n");
        for ip in pod_ips {
            if domain.is_empty() {
                out.push_str(&format!("{ip}\t{hostname}\n"));
            } else {
                out.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n"));
            }
        }
    }
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.host_aliases.as_deref())
        .unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            let names = alias.hostnames.as_deref().unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", alias.ip));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerPort, HostAlias, PodDNSConfigOption, PodSecurityContext, SecurityContext, Sysctl,
    };

    use super::*;
    use crate::pod::testing::{container, pod};

    fn cluster_node() -> NodeContext {
        NodeContext {
            cluster_dns: vec!["10.96.0.10".to_owned()],
            cluster_domain: "cluster.local".to_owned(),
            host_dns: Some(parse_resolv_conf(
                "# host\nnameserver 1.1.1.1\nnameserver 8.8.8.8\nsearch corp.example. lab.example\noptions edns0 ndots:2\n",
            )),
            host_ips: vec!["192.168.1.10".to_owned()],
            ..NodeContext::default()
        }
    }

    fn with_spec(mut p: Pod, edit: impl FnOnce(&mut k8s_openapi::api::core::v1::PodSpec)) -> Pod {
        if let Some(spec) = p.spec.as_mut() {
            edit(spec);
        }
        p
    }

    #[test]
    fn resolv_conf_parsing_keeps_last_search_and_merges_options() {
        let config = parse_resolv_conf(
            "nameserver 10.0.0.1\nsearch a.example\n; not a comment marker upstream\nsearch b.example. .\noptions ndots:1 timeout:2\noptions ndots:3\nnameserver\n",
        );
        assert_eq!(config.servers, ["10.0.0.1"]);
        assert_eq!(config.searches, ["b.example"]);
        assert_eq!(config.options, ["ndots:3", "timeout:2"]);
    }

    #[test]
    fn cluster_first_uses_cluster_dns_and_namespace_search_path() {
        let config = pod_dns_config(&pod(vec![container("a")]), &cluster_node());
        assert_eq!(config.servers, ["10.96.0.10"]);
        assert_eq!(
            config.searches,
            [
                "default.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
                "lab.example"
            ]
        );
        assert_eq!(config.options, ["ndots:5"]);
    }

    #[test]
    fn default_policy_and_host_network_use_the_host_resolver() {
        let node = cluster_node();
        let default = with_spec(pod(vec![container("a")]), |s| {
            s.dns_policy = Some("Default".to_owned())
        });
        let host_network = with_spec(pod(vec![container("a")]), |s| s.host_network = Some(true));
        for p in [default, host_network] {
            let config = pod_dns_config(&p, &node);
            assert_eq!(config.servers, ["1.1.1.1", "8.8.8.8"]);
            assert_eq!(config.searches, ["corp.example", "lab.example"]);
            assert_eq!(config.options, ["edns0", "ndots:2"]);
        }
        let with_host_net = with_spec(pod(vec![container("a")]), |s| {
            s.host_network = Some(true);
            s.dns_policy = Some("ClusterFirstWithHostNet".to_owned());
        });
        assert_eq!(
            pod_dns_config(&with_host_net, &node).servers,
            ["10.96.0.10"]
        );
    }

    #[test]
    fn cluster_first_without_cluster_dns_falls_back_to_default() {
        let node = NodeContext {
            cluster_dns: Vec::new(),
            ..cluster_node()
        };
        assert_eq!(
            pod_dns_config(&pod(vec![container("a")]), &node).servers,
            ["1.1.1.1", "8.8.8.8"]
        );
    }

    #[test]
    fn empty_resolv_conf_flag_means_localhost_resolver() {
        let node = NodeContext {
            host_dns: None,
            host_ips: vec!["fd00::1".to_owned()],
            ..NodeContext::default()
        };
        let p = with_spec(pod(vec![container("a")]), |s| {
            s.dns_policy = Some("Default".to_owned())
        });
        let config = pod_dns_config(&p, &node);
        assert_eq!(config.servers, ["::1"]);
        assert_eq!(config.searches, ["."]);
    }

    #[test]
    fn dns_policy_none_uses_only_the_pod_dns_config() {
        let p = with_spec(pod(vec![container("a")]), |s| {
            s.dns_policy = Some("None".to_owned());
            s.dns_config = Some(PodDNSConfig {
                nameservers: Some(vec!["9.9.9.9".to_owned(), "9.9.9.9".to_owned()]),
                searches: Some(vec!["x.example".to_owned()]),
                options: Some(vec![
                    PodDNSConfigOption {
                        name: Some("ndots".to_owned()),
                        value: Some("2".to_owned()),
                    },
                    PodDNSConfigOption {
                        name: Some("edns0".to_owned()),
                        value: None,
                    },
                ]),
            });
        });
        let config = pod_dns_config(&p, &cluster_node());
        assert_eq!(config.servers, ["9.9.9.9"]);
        assert_eq!(config.searches, ["x.example"]);
        assert_eq!(config.options, ["ndots:2", "edns0"]);
    }

    #[test]
    fn dns_config_options_override_cluster_defaults_and_limits_apply() {
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let p = with_spec(pod(vec![container("a")]), |s| {
            s.dns_config = Some(PodDNSConfig {
                nameservers: Some(vec![
                    "1.0.0.1".to_owned(),
                    "1.0.0.2".to_owned(),
                    "1.0.0.3".to_owned(),
                ]),
                searches: Some(many),
                options: Some(vec![PodDNSConfigOption {
                    name: Some("ndots".to_owned()),
                    value: Some("1".to_owned()),
                }]),
            });
        });
        let config = pod_dns_config(&p, &cluster_node());
        assert_eq!(config.servers, ["10.96.0.10", "1.0.0.1", "1.0.0.2"]);
        assert_eq!(config.searches.len(), MAX_DNS_SEARCH_PATHS);
        assert_eq!(config.options, ["ndots:1"]);
    }

    #[test]
    fn hostname_comes_from_spec_or_pod_name_with_subdomain_fqdn() {
        let p = pod(vec![container("a")]);
        assert_eq!(
            pod_hostname_and_domain(&p, "cluster.local"),
            Ok(("web".to_owned(), String::new()))
        );
        let p = with_spec(pod(vec![container("a")]), |s| {
            s.hostname = Some("db-0".to_owned());
            s.subdomain = Some("db".to_owned());
        });
        assert_eq!(
            pod_hostname_and_domain(&p, "cluster.local"),
            Ok(("db-0".to_owned(), "db.default.svc.cluster.local".to_owned()))
        );
        assert_eq!(
            kernel_hostname("db-0", "db.default.svc.cluster.local", true).as_deref(),
            Ok("db-0.db.default.svc.cluster.local")
        );
        assert_eq!(
            kernel_hostname("db-0", "db.default.svc.cluster.local", false).as_deref(),
            Ok("db-0")
        );
        let bad = with_spec(pod(vec![container("a")]), |s| {
            s.hostname = Some("Bad_Name".to_owned())
        });
        assert!(matches!(
            pod_hostname_and_domain(&bad, "cluster.local"),
            Err(SandboxConfigError::InvalidHostname { .. })
        ));
    }

    #[test]
    fn long_pod_names_are_cut_to_63_characters_without_trailing_dash() {
        let mut p = pod(vec![container("a")]);
        let name = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        p.metadata.name = Some(name);
        let (hostname, _) = pod_hostname_and_domain(&p, "").unwrap();
        assert_eq!(hostname, "a".repeat(62));
    }

    #[test]
    fn sandbox_config_carries_metadata_logs_dns_ports_and_security() {
        let mut web = container("web");
        web.ports = Some(vec![
            ContainerPort {
                container_port: 80,
                host_port: Some(8080),
                ..ContainerPort::default()
            },
            ContainerPort {
                container_port: 53,
                protocol: Some("UDP".to_owned()),
                ..ContainerPort::default()
            },
            ContainerPort {
                container_port: 80,
                host_port: Some(8080),
                ..ContainerPort::default()
            },
        ]);
        let mut tool = container("tool");
        tool.security_context = Some(SecurityContext {
            privileged: Some(true),
            ..SecurityContext::default()
        });
        let mut p = with_spec(pod(vec![web, tool]), |s| {
            s.security_context = Some(PodSecurityContext {
                run_as_user: Some(1000),
                fs_group: Some(2000),
                supplemental_groups: Some(vec![3000]),
                sysctls: Some(vec![Sysctl {
                    name: "net/ipv4/ip_unprivileged_port_start".to_owned(),
                    value: "0".to_owned(),
                }]),
                ..PodSecurityContext::default()
            });
        });
        p.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
        p.metadata.annotations = Some([("note".to_owned(), "x".to_owned())].into());
        let node = NodeContext {
            pod_logs_root: "/var/log/pods".to_owned(),
            ..cluster_node()
        };
        let config =
            generate_pod_sandbox_config(&p, &node, 2, "/kubepods/besteffort/poduid-1").unwrap();

        let metadata = config.metadata.unwrap();
        assert_eq!(
            (
                metadata.name.as_str(),
                metadata.namespace.as_str(),
                metadata.uid.as_str(),
                metadata.attempt
            ),
            ("web", "default", "uid-1", 2)
        );
        assert_eq!(config.hostname, "web");
        assert_eq!(config.log_directory, "/var/log/pods/default_web_uid-1");
        assert_eq!(
            config
                .labels
                .get("io.kubernetes.pod.uid")
                .map(String::as_str),
            Some("uid-1")
        );
        assert_eq!(config.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            config.annotations.get("note").map(String::as_str),
            Some("x")
        );
        assert_eq!(
            config.port_mappings.len(),
            2,
            "duplicate unnamed port is dropped"
        );
        assert_eq!(
            (
                config.port_mappings[0].container_port,
                config.port_mappings[0].host_port
            ),
            (80, 8080)
        );
        assert_eq!(config.port_mappings[1].protocol, cri::Protocol::Udp as i32);

        let linux = config.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/kubepods/besteffort/poduid-1");
        assert_eq!(
            linux
                .sysctls
                .get("net.ipv4.ip_unprivileged_port_start")
                .map(String::as_str),
            Some("0")
        );
        let sc = linux.security_context.unwrap();
        assert!(sc.privileged);
        assert_eq!(sc.run_as_user, Some(cri::Int64Value { value: 1000 }));
        assert_eq!(sc.supplemental_groups, [2000, 3000]);
        let ns = sc.namespace_options.unwrap();
        assert_eq!(
            (ns.network, ns.pid, ns.ipc),
            (
                cri::NamespaceMode::Pod as i32,
                cri::NamespaceMode::Container as i32,
                cri::NamespaceMode::Pod as i32
            )
        );
        assert_eq!(
            sc.seccomp.map(|s| s.profile_type),
            Some(cri::security_profile::ProfileType::RuntimeDefault as i32)
        );
    }

    #[test]
    fn host_network_sandbox_uses_node_network_and_no_hostname() {
        let p = with_spec(pod(vec![container("a")]), |s| {
            s.host_network = Some(true);
            s.share_process_namespace = Some(true);
        });
        let config = generate_pod_sandbox_config(&p, &cluster_node(), 0, "").unwrap();
        assert_eq!(config.hostname, "");
        let ns = config
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
        assert_eq!(ns.pid, cri::NamespaceMode::Pod as i32);
    }

    #[test]
    fn user_namespaces_are_refused_not_ignored() {
        let p = with_spec(pod(vec![container("a")]), |s| s.host_users = Some(false));
        assert!(matches!(
            generate_pod_sandbox_config(&p, &cluster_node(), 0, ""),
            Err(SandboxConfigError::UserNamespacesUnsupported { .. })
        ));
    }

    #[test]
    fn sysctl_names_switch_to_dots_only_when_slash_separated() {
        assert_eq!(
            sysctl_dots_separator("net/ipv4/ip_forward"),
            "net.ipv4.ip_forward"
        );
        assert_eq!(
            sysctl_dots_separator("net.ipv4.ip_forward"),
            "net.ipv4.ip_forward"
        );
        assert_eq!(
            sysctl_dots_separator("net/ipv4/conf/eno2.100/rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
        assert_eq!(
            sysctl_dots_separator("kernel.shm_rmid_forced"),
            "kernel.shm_rmid_forced"
        );
    }

    #[test]
    fn hosts_file_lists_pod_ips_fqdn_and_aliases() {
        let p = with_spec(pod(vec![container("a")]), |s| {
            s.hostname = Some("db-0".to_owned());
            s.subdomain = Some("db".to_owned());
            s.host_aliases = Some(vec![HostAlias {
                ip: "10.0.0.9".to_owned(),
                hostnames: Some(vec!["foo.local".to_owned(), "bar.local".to_owned()]),
            }]);
        });
        let content =
            hosts_file_content(&p, &["10.1.0.7".to_owned()], "cluster.local", "").unwrap();
        assert_eq!(
            content,
            "# Kubernetes-managed hosts file.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\n\
             fe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n\
             10.1.0.7\tdb-0.db.default.svc.cluster.local\tdb-0\n\
             \n\
             # Entries added by HostAliases.\n\
             10.0.0.9\tfoo.local\tbar.local\n"
        );
        let host = with_spec(pod(vec![container("a")]), |s| s.host_network = Some(true));
        assert_eq!(
            hosts_file_content(&host, &[], "cluster.local", "127.0.0.1 localhost\n").unwrap(),
            "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n"
        );
    }

    #[test]
    fn log_directories_follow_the_var_log_pods_layout() {
        let p = pod(vec![container("a")]);
        assert_eq!(
            pod_logs_directory("/var/log/pods/", &p),
            "/var/log/pods/default_web_uid-1"
        );
        assert_eq!(
            container_logs_directory("/logs", &p, "a"),
            "/logs/default_web_uid-1/a"
        );
    }
}
