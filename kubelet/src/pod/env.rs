//! A container's environment: literal values with `$(VAR)` expansion, the downward API,
//! ConfigMap and Secret references, `envFrom` and the service link variables.
//!
//! Owns upstream's `makeEnvironmentVariables` (order of precedence, `optional` handling, error
//! messages), `podFieldSelectorRuntimeValue`, `containerResourceRuntimeValue` and
//! `envvars.FromServices`. Objects are read through [`ObjectResolver`], which the executor backs
//! with its informer caches; this module never fetches anything itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ObjectFieldSelector, Pod, ResourceFieldSelector, Secret, Service,
};

use super::expansion;
use super::quantity::{ParsedQuantity, QuantityError};
use super::{NodeContext, pod_containers, pod_init_containers, pod_name, pod_namespace, pod_uid};

/// The API objects a container's environment may reference, looked up by namespace and name.
pub trait ObjectResolver {
    /// A ConfigMap; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// When the lookup itself failed (cache not synced, API error); the message becomes the
    /// container's `CreateContainerConfigError` message.
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, LookupError>;

    /// A Secret; `Ok(None)` when it does not exist.
    ///
    /// # Errors
    /// As [`ObjectResolver::config_map`].
    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, LookupError>;

    /// Every Service the node knows (all namespaces; the kubelet filters them).
    ///
    /// # Errors
    /// As [`ObjectResolver::config_map`].
    fn services(&self) -> Result<Vec<Service>, LookupError>;
}

/// A failed lookup, with the text to show the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// An in-memory [`ObjectResolver`]: for tests, static pods and executors that prefetch.
#[derive(Debug, Clone, Default)]
pub struct ObjectStore {
    /// ConfigMaps of any namespace.
    pub config_maps: Vec<ConfigMap>,
    /// Secrets of any namespace.
    pub secrets: Vec<Secret>,
    /// Services of any namespace.
    pub services: Vec<Service>,
}

impl ObjectResolver for ObjectStore {
    fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, LookupError> {
        Ok(self
            .config_maps
            .iter()
            .find(|cm| {
                cm.metadata.namespace.as_deref() == Some(namespace)
                    && cm.metadata.name.as_deref() == Some(name)
            })
            .cloned())
    }

    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, LookupError> {
        Ok(self
            .secrets
            .iter()
            .find(|secret| {
                secret.metadata.namespace.as_deref() == Some(namespace)
                    && secret.metadata.name.as_deref() == Some(name)
            })
            .cloned())
    }

    fn services(&self) -> Result<Vec<Service>, LookupError> {
        Ok(self.services.clone())
    }
}

/// Why a container's environment cannot be built; shown as the `CreateContainerConfigError`
/// message, worded as upstream words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A required ConfigMap does not exist.
    #[error("configmap {name:?} not found")]
    ConfigMapNotFound {
        /// ConfigMap name.
        name: String,
    },
    /// A required Secret does not exist.
    #[error("secret {name:?} not found")]
    SecretNotFound {
        /// Secret name.
        name: String,
    },
    /// A required key is missing from a ConfigMap.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        /// The missing key.
        key: String,
        /// The pod's namespace.
        namespace: String,
        /// ConfigMap name.
        name: String,
    },
    /// A required key is missing from a Secret.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        /// The missing key.
        key: String,
        /// The pod's namespace.
        namespace: String,
        /// Secret name.
        name: String,
    },
    /// The resolver failed.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// `fieldRef.apiVersion` is not `v1`.
    #[error("unsupported pod version: {version}")]
    UnsupportedPodVersion {
        /// The given apiVersion.
        version: String,
    },
    /// `fieldRef.fieldPath` names a field the downward API does not offer.
    #[error("field label not supported: {path}")]
    FieldLabelNotSupported {
        /// The field path.
        path: String,
    },
    /// A subscript (`['key']`) on a field that is not a map.
    #[error("field label does not support subscript: {path}")]
    FieldLabelSubscript {
        /// The field path.
        path: String,
    },
    /// A downward API field this kubelet cannot resolve for env vars.
    #[error("unsupported fieldPath: {path}")]
    UnsupportedFieldPath {
        /// The field path.
        path: String,
    },
    /// `status.hostIP(s)` requested but the node has no known address.
    #[error("host IP unknown; known addresses: []")]
    HostIpUnknown,
    /// `resourceFieldRef.resource` is not a supported resource.
    #[error("unsupported container resource : {resource}")]
    UnsupportedResource {
        /// The resource name.
        resource: String,
    },
    /// `resourceFieldRef.containerName` names no container of the pod.
    #[error("container {name} not found")]
    ResourceContainerNotFound {
        /// The container name.
        name: String,
    },
    /// `resourceFieldRef.divisor` is zero.
    #[error("invalid divisor for resource {resource}: must be greater than zero")]
    ZeroDivisor {
        /// The resource name.
        resource: String,
    },
    /// A quantity in the spec is malformed.
    #[error(transparent)]
    Quantity(#[from] QuantityError),
}

/// The ConfigMaps and Secrets a pod's containers reference (env and envFrom of init and
/// regular containers), so an executor can fetch them before building configs.
#[must_use]
pub fn referenced_objects(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut config_maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for container in pod_init_containers(pod).iter().chain(pod_containers(pod)) {
        for env in container.env.iter().flatten() {
            if let Some(source) = &env.value_from {
                if let Some(selector) = &source.config_map_key_ref {
                    config_maps.insert(selector.name.clone());
                }
                if let Some(selector) = &source.secret_key_ref {
                    secrets.insert(selector.name.clone());
                }
            }
        }
        for env_from in container.env_from.iter().flatten() {
            if let Some(source) = &env_from.config_map_ref {
                config_maps.insert(source.name.clone());
            }
            if let Some(source) = &env_from.secret_ref {
                secrets.insert(source.name.clone());
            }
        }
    }
    (config_maps, secrets)
}

/// Upstream `makeEnvironmentVariables`: `envFrom` first, then `env` in declaration order (a later
/// value overrides an earlier one and may reference it with `$(VAR)`), then the service link
/// variables not already set. `pod_ips` are the pod's IPs as reported in `status.podIPs` (node
/// IPs for host-network pods).
///
/// Upstream returns the variables in Go map order; here the order is stable: variables in the
/// order they were first set, then service variables sorted by name.
///
/// # Errors
/// [`EnvError`] when a required ConfigMap, Secret or key is missing, a lookup fails, or a
/// downward API reference cannot be resolved.
pub fn make_environment_variables(
    pod: &Pod,
    container: &Container,
    pod_ips: &[String],
    node: &NodeContext,
    resolver: &dyn ObjectResolver,
) -> Result<Vec<cri::KeyValue>, EnvError> {
    let namespace = pod_namespace(pod);
    let service_env = service_env_vars(pod, &resolver.services()?);
    let mut config_maps: HashMap<String, ConfigMap> = HashMap::new();
    let mut secrets: HashMap<String, Secret> = HashMap::new();
    let mut env = OrderedEnv::default();

    for env_from in container.env_from.iter().flatten() {
        let prefix = env_from.prefix.as_deref().unwrap_or_default();
        if let Some(source) = &env_from.config_map_ref {
            let optional = source.optional.unwrap_or(false);
            let Some(config_map) = cached_config_map(
                &mut config_maps,
                resolver,
                namespace,
                &source.name,
                optional,
            )?
            else {
                continue;
            };
            for (key, value) in config_map.data.iter().flatten() {
                env.set_from_source(prefix, key, value.clone());
            }
        } else if let Some(source) = &env_from.secret_ref {
            let optional = source.optional.unwrap_or(false);
            let Some(secret) =
                cached_secret(&mut secrets, resolver, namespace, &source.name, optional)?
            else {
                continue;
            };
            for (key, value) in secret.data.iter().flatten() {
                env.set_from_source(prefix, key, String::from_utf8_lossy(&value.0).into_owned());
            }
        }
    }

    for var in container.env.iter().flatten() {
        let literal = var.value.as_deref().unwrap_or_default();
        let value = if !literal.is_empty() {
            expansion::expand(literal, |name| {
                env.get(name)
                    .or_else(|| service_env.get(name).map(String::as_str))
                    .map(str::to_owned)
            })
        } else if let Some(source) = &var.value_from {
            if let Some(selector) = &source.field_ref {
                pod_field_value(pod, selector, pod_ips, node)?
            } else if let Some(selector) = &source.resource_field_ref {
                container_resource_value(pod, container, selector, node)?
            } else if let Some(selector) = &source.config_map_key_ref {
                let optional = selector.optional.unwrap_or(false);
                let Some(config_map) = cached_config_map(
                    &mut config_maps,
                    resolver,
                    namespace,
                    &selector.name,
                    optional,
                )?
                else {
                    continue;
                };
                match config_map
                    .data
                    .as_ref()
                    .and_then(|data| data.get(&selector.key))
                {
                    Some(value) => value.clone(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::ConfigMapKeyNotFound {
                            key: selector.key.clone(),
                            namespace: namespace.to_owned(),
                            name: selector.name.clone(),
                        });
                    }
                }
            } else if let Some(selector) = &source.secret_key_ref {
                let optional = selector.optional.unwrap_or(false);
                let Some(secret) =
                    cached_secret(&mut secrets, resolver, namespace, &selector.name, optional)?
                else {
                    continue;
                };
                match secret
                    .data
                    .as_ref()
                    .and_then(|data| data.get(&selector.key))
                {
                    Some(value) => String::from_utf8_lossy(&value.0).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::SecretKeyNotFound {
                            key: selector.key.clone(),
                            namespace: namespace.to_owned(),
                            name: selector.name.clone(),
                        });
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(&var.name, value);
    }

    let mut result: Vec<cri::KeyValue> = env
        .vars
        .into_iter()
        .map(|(key, value)| cri::KeyValue { key, value })
        .collect();
    let declared: BTreeSet<&str> = result.iter().map(|kv| kv.key.as_str()).collect();
    let services: Vec<cri::KeyValue> = service_env
        .iter()
        .filter(|(key, _)| !declared.contains(key.as_str()))
        .map(|(key, value)| cri::KeyValue {
            key: key.clone(),
            value: value.clone(),
        })
        .collect();
    result.extend(services);
    Ok(result)
}

/// Variables in first-set order; setting again replaces the value in place.
#[derive(Default)]
struct OrderedEnv {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl OrderedEnv {
    fn set(&mut self, name: &str, value: String) {
        match self.index.get(name) {
            Some(&at) => {
                if let Some(slot) = self.vars.get_mut(at) {
                    slot.1 = value;
                }
            }
            None => {
                self.index.insert(name.to_owned(), self.vars.len());
                self.vars.push((name.to_owned(), value));
            }
        }
    }

    /// An `envFrom` entry: keys that cannot be variable names (empty or containing `=`) are
    /// skipped.
    fn set_from_source(&mut self, prefix: &str, key: &str, value: String) {
        let name = format!("{prefix}{key}");
        if name.is_empty() || name.contains('=') {
            return;
        }
        self.set(&name, value);
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.index
            .get(name)
            .and_then(|&at| self.vars.get(at))
            .map(|(_, value)| value.as_str())
    }
}

fn cached_config_map<'a>(
    cache: &'a mut HashMap<String, ConfigMap>,
    resolver: &dyn ObjectResolver,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<Option<&'a ConfigMap>, EnvError> {
    if !cache.contains_key(name) {
        match resolver.config_map(namespace, name)? {
            Some(config_map) => {
                cache.insert(name.to_owned(), config_map);
            }
            None if optional => return Ok(None),
            None => {
                return Err(EnvError::ConfigMapNotFound {
                    name: name.to_owned(),
                });
            }
        }
    }
    Ok(cache.get(name))
}

fn cached_secret<'a>(
    cache: &'a mut HashMap<String, Secret>,
    resolver: &dyn ObjectResolver,
    namespace: &str,
    name: &str,
    optional: bool,
) -> Result<Option<&'a Secret>, EnvError> {
    if !cache.contains_key(name) {
        match resolver.secret(namespace, name)? {
            Some(secret) => {
                cache.insert(name.to_owned(), secret);
            }
            None if optional => return Ok(None),
            None => {
                return Err(EnvError::SecretNotFound {
                    name: name.to_owned(),
                });
            }
        }
    }
    Ok(cache.get(name))
}

/// Upstream `podFieldSelectorRuntimeValue` (with `ConvertDownwardAPIFieldLabel` and
/// `ExtractFieldPathAsString`): the downward API value of `fieldRef` for env vars.
///
/// # Errors
/// [`EnvError`] for unsupported API versions and paths, or unknown host IPs.
pub fn pod_field_value(
    pod: &Pod,
    selector: &ObjectFieldSelector,
    pod_ips: &[String],
    node: &NodeContext,
) -> Result<String, EnvError> {
    let version = selector.api_version.as_deref().unwrap_or("v1");
    if version != "v1" && !version.is_empty() {
        return Err(EnvError::UnsupportedPodVersion {
            version: version.to_owned(),
        });
    }
    let path = selector.field_path.as_str();
    if let Some((field, key)) = split_subscript(path) {
        return match field {
            "metadata.annotations" => Ok(map_value(pod.metadata.annotations.as_ref(), key)),
            "metadata.labels" => Ok(map_value(pod.metadata.labels.as_ref(), key)),
            _ => Err(EnvError::FieldLabelSubscript {
                path: path.to_owned(),
            }),
        };
    }
    let spec = pod.spec.as_ref();
    match path {
        "metadata.name" => Ok(pod_name(pod).to_owned()),
        "metadata.namespace" => Ok(pod_namespace(pod).to_owned()),
        "metadata.uid" => Ok(pod_uid(pod).to_owned()),
        "metadata.labels" => Ok(format_map(pod.metadata.labels.as_ref())),
        "metadata.annotations" => Ok(format_map(pod.metadata.annotations.as_ref())),
        "spec.nodeName" | "spec.host" => Ok(spec
            .and_then(|spec| spec.node_name.clone())
            .unwrap_or_default()),
        "spec.serviceAccountName" => Ok(spec
            .and_then(|spec| spec.service_account_name.clone())
            .unwrap_or_default()),
        "status.podIP" => Ok(pod_ips.first().cloned().unwrap_or_default()),
        "status.podIPs" => Ok(pod_ips.join(",")),
        "status.hostIP" => node
            .host_ips
            .first()
            .cloned()
            .ok_or(EnvError::HostIpUnknown),
        "status.hostIPs" => {
            if node.host_ips.is_empty() {
                return Err(EnvError::HostIpUnknown);
            }
            Ok(node.host_ips.join(","))
        }
        "spec.restartPolicy" | "spec.schedulerName" | "status.phase" => {
            Err(EnvError::UnsupportedFieldPath {
                path: path.to_owned(),
            })
        }
        _ => Err(EnvError::FieldLabelNotSupported {
            path: path.to_owned(),
        }),
    }
}

/// Upstream `containerResourceRuntimeValue`: a container's request or limit divided by the
/// divisor, rounded up. Limits that are not set read as the node's allocatable (upstream
/// `defaultPodLimitsForDownwardAPI`).
///
/// # Errors
/// [`EnvError`] for unknown resources or containers, a zero divisor or malformed quantities.
pub fn container_resource_value(
    pod: &Pod,
    container: &Container,
    selector: &ResourceFieldSelector,
    node: &NodeContext,
) -> Result<String, EnvError> {
    let target = match selector.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => container,
        Some(name) => pod_containers(pod)
            .iter()
            .chain(pod_init_containers(pod))
            .find(|c| c.name == name)
            .ok_or_else(|| EnvError::ResourceContainerNotFound {
                name: name.to_owned(),
            })?,
    };
    let resource = selector.resource.as_str();
    let (list, name) = resource
        .split_once('.')
        .ok_or_else(|| EnvError::UnsupportedResource {
            resource: resource.to_owned(),
        })?;
    let resources = target.resources.as_ref();
    let value = match list {
        "limits" => {
            let set = super::quantity::lookup(resources.and_then(|r| r.limits.as_ref()), name)?;
            set.or(match name {
                "cpu" => Some(ParsedQuantity::from_millis(node.allocatable_cpu_millis)),
                "memory" => Some(ParsedQuantity::from_units(node.allocatable_memory_bytes)),
                "ephemeral-storage" => Some(ParsedQuantity::from_units(
                    node.allocatable_ephemeral_storage_bytes,
                )),
                _ => None,
            })
        }
        "requests" => super::quantity::lookup(resources.and_then(|r| r.requests.as_ref()), name)?,
        _ => None,
    }
    .unwrap_or_default();
    if !matches!(name, "cpu" | "memory" | "ephemeral-storage")
        || !matches!(list, "limits" | "requests")
    {
        return Err(EnvError::UnsupportedResource {
            resource: resource.to_owned(),
        });
    }
    let divisor = match &selector.divisor {
        Some(divisor) => ParsedQuantity::from_quantity(divisor)?,
        None => ParsedQuantity::from_units(1),
    };
    let divisor = if divisor.is_zero() {
        ParsedQuantity::from_units(1)
    } else {
        divisor
    };
    let (numerator, denominator) = if name == "cpu" {
        (value.milli_value(), divisor.milli_value())
    } else {
        (value.value(), divisor.value())
    };
    if denominator <= 0 {
        return Err(EnvError::ZeroDivisor {
            resource: resource.to_owned(),
        });
    }
    Ok(numerator
        .div_euclid(denominator)
        .saturating_add(i64::from(numerator.rem_euclid(denominator) != 0))
        .to_string())
}

/// Upstream `getServiceEnvVarMap` + `envvars.FromServices`: `{SVC}_SERVICE_HOST`,
/// `{SVC}_SERVICE_PORT[_{PORT}]` and the Docker link variables, for the pod's namespace's
/// services when `enableServiceLinks` (default true) and always for `kubernetes` in `default`.
#[must_use]
pub fn service_env_vars(pod: &Pod, services: &[Service]) -> BTreeMap<String, String> {
    let namespace = pod_namespace(pod);
    let enable_service_links = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.enable_service_links)
        .unwrap_or(true);
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    for service in services {
        let cluster_ip = service
            .spec
            .as_ref()
            .and_then(|spec| spec.cluster_ip.as_deref())
            .unwrap_or_default();
        if cluster_ip.is_empty() || cluster_ip == "None" {
            continue;
        }
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let service_namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        if service_namespace == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(service);
        } else if service_namespace == namespace && enable_service_links {
            chosen.insert(name, service);
        }
    }
    let mut vars = BTreeMap::new();
    for (name, service) in chosen {
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        let cluster_ip = spec.cluster_ip.clone().unwrap_or_default();
        let prefix = env_variable_name(name);
        let ports = spec.ports.as_deref().unwrap_or_default();
        vars.insert(format!("{prefix}_SERVICE_HOST"), cluster_ip.clone());
        if let Some(first) = ports.first() {
            vars.insert(format!("{prefix}_SERVICE_PORT"), first.port.to_string());
        }
        for port in ports {
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                vars.insert(
                    format!("{prefix}_SERVICE_PORT_{}", env_variable_name(port_name)),
                    port.port.to_string(),
                );
            }
        }
        for (i, port) in ports.iter().enumerate() {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let lower = protocol.to_lowercase();
            let host_port = join_host_port(&cluster_ip, port.port);
            if i == 0 {
                vars.insert(format!("{prefix}_PORT"), format!("{lower}://{host_port}"));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, protocol.to_uppercase());
            vars.insert(port_prefix.clone(), format!("{lower}://{host_port}"));
            vars.insert(format!("{port_prefix}_PROTO"), lower);
            vars.insert(format!("{port_prefix}_PORT"), port.port.to_string());
            vars.insert(format!("{port_prefix}_ADDR"), cluster_ip.clone());
        }
    }
    vars
}

/// Upstream `makeEnvVariableName`: upper case, `-` → `_`.
fn env_variable_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// Go `net.JoinHostPort`: IPv6 addresses in brackets.
fn join_host_port(host: &str, port: i32) -> String {
    if host.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) || host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream `SplitMaybeSubscriptedPath`: `metadata.labels['key']` → (`metadata.labels`, `key`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (field, key) = inner.split_once("['")?;
    (!field.is_empty()).then_some((field, key))
}

fn map_value(map: Option<&BTreeMap<String, String>>, key: &str) -> String {
    map.and_then(|map| map.get(key))
        .cloned()
        .unwrap_or_default()
}

/// Upstream `FormatMap`: `key="value"` lines sorted by key, values quoted like Go's `%q`.
#[must_use]
pub fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.iter()
        .flat_map(|map| map.iter())
        .map(|(key, value)| format!("{key}={}", go_quote(value)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `strconv.Quote`.
fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ResourceRequirements, SecretEnvSource, SecretKeySelector, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::pod::testing::{container, pod};

    fn meta(namespace: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        }
    }

    fn store() -> ObjectStore {
        ObjectStore {
            config_maps: vec![ConfigMap {
                metadata: meta("default", "settings"),
                data: Some(
                    [
                        ("mode".to_owned(), "fast".to_owned()),
                        ("level".to_owned(), "3".to_owned()),
                    ]
                    .into(),
                ),
                ..ConfigMap::default()
            }],
            secrets: vec![Secret {
                metadata: meta("default", "creds"),
                data: Some([("password".to_owned(), ByteString(b"hunter2".to_vec()))].into()),
                ..Secret::default()
            }],
            services: Vec::new(),
        }
    }

    fn literal(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            value_from: None,
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.to_owned(),
            value: None,
            value_from: Some(source),
        }
    }

    fn config_map_key(name: &str, key: &str, optional: Option<bool>) -> EnvVarSource {
        EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: name.to_owned(),
                key: key.to_owned(),
                optional,
            }),
            ..EnvVarSource::default()
        }
    }

    fn field(path: &str) -> EnvVarSource {
        EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_owned()),
                field_path: path.to_owned(),
            }),
            ..EnvVarSource::default()
        }
    }

    fn env_of(c: &Container) -> Result<Vec<(String, String)>, EnvError> {
        let p = pod(vec![c.clone()]);
        let node = NodeContext {
            host_ips: vec!["192.168.1.10".to_owned()],
            ..NodeContext::default()
        };
        make_environment_variables(&p, c, &["10.1.0.7".to_owned()], &node, &store())
            .map(|vars| vars.into_iter().map(|kv| (kv.key, kv.value)).collect())
    }

    fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn literal_values_expand_earlier_variables() {
        let mut c = container("app");
        c.env = Some(vec![
            literal("HOST", "db"),
            literal("URL", "postgres://$(HOST):5432/$(DB)"),
            literal("ESCAPED", "$$(HOST)"),
            literal("HOST", "db2"),
        ]);
        assert_eq!(
            env_of(&c),
            Ok(pairs(&[
                ("HOST", "db2"),
                ("URL", "postgres://db:5432/$(DB)"),
                ("ESCAPED", "$(HOST)")
            ]))
        );
    }

    #[test]
    fn config_map_and_secret_keys_resolve() {
        let mut c = container("app");
        c.env = Some(vec![
            from("MODE", config_map_key("settings", "mode", None)),
            from(
                "PASSWORD",
                EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "creds".to_owned(),
                        key: "password".to_owned(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                },
            ),
        ]);
        assert_eq!(
            env_of(&c),
            Ok(pairs(&[("MODE", "fast"), ("PASSWORD", "hunter2")]))
        );
    }

    #[test]
    fn missing_optional_references_are_skipped() {
        let mut c = container("app");
        c.env = Some(vec![
            from("A", config_map_key("settings", "absent", Some(true))),
            from("B", config_map_key("nowhere", "mode", Some(true))),
            literal("C", "kept"),
        ]);
        c.env_from = Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: "nowhere".to_owned(),
                optional: Some(true),
            }),
            ..EnvFromSource::default()
        }]);
        assert_eq!(env_of(&c), Ok(pairs(&[("C", "kept")])));
    }

    #[test]
    fn missing_required_references_fail_with_upstream_messages() {
        let cases = [
            (
                config_map_key("nowhere", "mode", None),
                "configmap \"nowhere\" not found",
            ),
            (
                config_map_key("settings", "absent", Some(false)),
                "couldn't find key absent in ConfigMap default/settings",
            ),
            (
                EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "creds".to_owned(),
                        key: "token".to_owned(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                },
                "couldn't find key token in Secret default/creds",
            ),
            (
                EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "gone".to_owned(),
                        key: "token".to_owned(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                },
                "secret \"gone\" not found",
            ),
        ];
        for (source, message) in cases {
            let mut c = container("app");
            c.env = Some(vec![from("X", source)]);
            assert_eq!(
                env_of(&c).map_err(|e| e.to_string()),
                Err(message.to_owned())
            );
        }
    }

    #[test]
    fn env_from_applies_prefix_and_env_overrides_it() {
        let mut c = container("app");
        c.env_from = Some(vec![
            EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "settings".to_owned(),
                    optional: None,
                }),
                prefix: Some("CFG_".to_owned()),
                secret_ref: None,
            },
            EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "creds".to_owned(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            },
        ]);
        c.env = Some(vec![
            literal("CFG_mode", "slow"),
            literal("ALL", "$(CFG_level)"),
        ]);
        assert_eq!(
            env_of(&c),
            Ok(pairs(&[
                ("CFG_level", "3"),
                ("CFG_mode", "slow"),
                ("password", "hunter2"),
                ("ALL", "3"),
            ]))
        );
    }

    #[test]
    fn downward_api_fields_resolve() {
        let mut c = container("app");
        c.env = Some(vec![
            from("NAME", field("metadata.name")),
            from("NS", field("metadata.namespace")),
            from("UID", field("metadata.uid")),
            from("TEAM", field("metadata.labels['team']")),
            from("NOTE", field("metadata.annotations['note']")),
            from("MISSING", field("metadata.labels['absent']")),
            from("LABELS", field("metadata.labels")),
            from("NODE", field("spec.nodeName")),
            from("SA", field("spec.serviceAccountName")),
            from("POD_IP", field("status.podIP")),
            from("POD_IPS", field("status.podIPs")),
            from("HOST_IP", field("status.hostIP")),
            from("HOST_IPS", field("status.hostIPs")),
        ]);
        let mut p = pod(vec![c.clone()]);
        p.metadata.labels = Some(
            [
                ("team".to_owned(), "core".to_owned()),
                ("app".to_owned(), "web \"x\"".to_owned()),
            ]
            .into(),
        );
        p.metadata.annotations = Some([("note".to_owned(), "hi".to_owned())].into());
        if let Some(spec) = p.spec.as_mut() {
            spec.node_name = Some("node-1".to_owned());
            spec.service_account_name = Some("default".to_owned());
        }
        let node = NodeContext {
            host_ips: vec!["192.168.1.10".to_owned(), "fd00::10".to_owned()],
            ..NodeContext::default()
        };
        let ips = ["10.1.0.7".to_owned(), "fd01::7".to_owned()];
        let vars: Vec<(String, String)> = make_environment_variables(&p, &c, &ips, &node, &store())
            .unwrap()
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect();
        assert_eq!(
            vars,
            pairs(&[
                ("NAME", "web"),
                ("NS", "default"),
                ("UID", "uid-1"),
                ("TEAM", "core"),
                ("NOTE", "hi"),
                ("MISSING", ""),
                ("LABELS", "app=\"web \\\"x\\\"\"\nteam=\"core\""),
                ("NODE", "node-1"),
                ("SA", "default"),
                ("POD_IP", "10.1.0.7"),
                ("POD_IPS", "10.1.0.7,fd01::7"),
                ("HOST_IP", "192.168.1.10"),
                ("HOST_IPS", "192.168.1.10,fd00::10"),
            ])
        );
    }

    #[test]
    fn unsupported_downward_api_fields_fail() {
        let p = pod(vec![container("app")]);
        let node = NodeContext::default();
        let value = |path: &str| {
            pod_field_value(
                &p,
                &ObjectFieldSelector {
                    api_version: Some("v1".to_owned()),
                    field_path: path.to_owned(),
                },
                &[],
                &node,
            )
            .map_err(|e| e.to_string())
        };
        assert_eq!(
            value("spec.bogus"),
            Err("field label not supported: spec.bogus".to_owned())
        );
        assert_eq!(
            value("spec.nodeName['x']"),
            Err("field label does not support subscript: spec.nodeName['x']".to_owned())
        );
        assert_eq!(
            value("status.hostIP"),
            Err("host IP unknown; known addresses: []".to_owned())
        );
        assert_eq!(value("status.podIP"), Ok(String::new()));
    }

    #[test]
    fn resource_field_refs_divide_and_round_up() {
        let mut c = container("app");
        c.resources = Some(ResourceRequirements {
            requests: Some([("cpu".to_owned(), Quantity("250m".to_owned()))].into()),
            limits: Some([("memory".to_owned(), Quantity("64Mi".to_owned()))].into()),
            ..ResourceRequirements::default()
        });
        let p = pod(vec![c.clone()]);
        let node = NodeContext {
            allocatable_cpu_millis: 4000,
            ..NodeContext::default()
        };
        let value = |resource: &str, divisor: Option<&str>| {
            container_resource_value(
                &p,
                &c,
                &ResourceFieldSelector {
                    container_name: None,
                    divisor: divisor.map(|d| Quantity(d.to_owned())),
                    resource: resource.to_owned(),
                },
                &node,
            )
            .map_err(|e| e.to_string())
        };
        assert_eq!(value("requests.cpu", None), Ok("1".to_owned()));
        assert_eq!(value("requests.cpu", Some("1m")), Ok("250".to_owned()));
        assert_eq!(
            value("limits.cpu", None),
            Ok("4".to_owned()),
            "node allocatable"
        );
        assert_eq!(value("limits.memory", Some("1Mi")), Ok("64".to_owned()));
        assert_eq!(value("requests.memory", None), Ok("0".to_owned()));
        assert_eq!(
            value("limits.gpu", None),
            Err("unsupported container resource : limits.gpu".to_owned())
        );
    }

    #[test]
    fn service_links_follow_upstream_names() {
        let service = |namespace: &str, name: &str, ip: &str, ports: Vec<ServicePort>| Service {
            metadata: meta(namespace, name),
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.to_owned()),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            status: None,
        };
        let port = |name: Option<&str>, port: i32, protocol: Option<&str>| ServicePort {
            name: name.map(str::to_owned),
            port,
            protocol: protocol.map(str::to_owned),
            ..ServicePort::default()
        };
        let services = vec![
            service(
                "default",
                "kubernetes",
                "10.96.0.1",
                vec![port(Some("https"), 443, Some("TCP"))],
            ),
            service(
                "default",
                "redis-primary",
                "10.96.0.20",
                vec![
                    port(None, 6379, None),
                    port(Some("metrics"), 9121, Some("UDP")),
                ],
            ),
            service("default", "headless", "None", vec![port(None, 80, None)]),
            service(
                "other",
                "elsewhere",
                "10.96.0.30",
                vec![port(None, 80, None)],
            ),
        ];
        let mut p = pod(vec![container("app")]);
        let vars = service_env_vars(&p, &services);
        let get = |key: &str| vars.get(key).map(String::as_str);
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP"), Some("tcp://10.96.0.1:443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_PROTO"), Some("tcp"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT_443_TCP_ADDR"), Some("10.96.0.1"));
        assert_eq!(get("REDIS_PRIMARY_SERVICE_PORT"), Some("6379"));
        assert_eq!(get("REDIS_PRIMARY_SERVICE_PORT_METRICS"), Some("9121"));
        assert_eq!(
            get("REDIS_PRIMARY_PORT_9121_UDP"),
            Some("udp://10.96.0.20:9121")
        );
        assert_eq!(get("HEADLESS_SERVICE_HOST"), None);
        assert_eq!(get("ELSEWHERE_SERVICE_HOST"), None);

        // enableServiceLinks: false keeps only the master service.
        if let Some(spec) = p.spec.as_mut() {
            spec.enable_service_links = Some(false);
        }
        let vars = service_env_vars(&p, &services);
        assert!(vars.contains_key("KUBERNETES_SERVICE_HOST"));
        assert!(!vars.contains_key("REDIS_PRIMARY_SERVICE_HOST"));
    }

    #[test]
    fn declared_variables_win_over_service_links() {
        let mut c = container("app");
        c.env = Some(vec![
            literal("KUBERNETES_SERVICE_HOST", "override"),
            literal("X", "$(KUBERNETES_SERVICE_PORT)"),
        ]);
        let p = pod(vec![c.clone()]);
        let store = ObjectStore {
            services: vec![Service {
                metadata: meta("default", "kubernetes"),
                spec: Some(ServiceSpec {
                    cluster_ip: Some("10.96.0.1".to_owned()),
                    ports: Some(vec![ServicePort {
                        port: 443,
                        ..ServicePort::default()
                    }]),
                    ..ServiceSpec::default()
                }),
                status: None,
            }],
            ..ObjectStore::default()
        };
        let vars =
            make_environment_variables(&p, &c, &[], &NodeContext::default(), &store).unwrap();
        let hosts: Vec<&str> = vars
            .iter()
            .filter(|kv| kv.key == "KUBERNETES_SERVICE_HOST")
            .map(|kv| kv.value.as_str())
            .collect();
        assert_eq!(hosts, ["override"]);
        assert!(vars.iter().any(|kv| kv.key == "X" && kv.value == "443"));
    }

    #[test]
    fn referenced_objects_cover_env_and_env_from() {
        let mut c = container("app");
        c.env = Some(vec![from("A", config_map_key("one", "k", None))]);
        c.env_from = Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: "two".to_owned(),
                optional: None,
            }),
            ..EnvFromSource::default()
        }]);
        let (config_maps, secrets) = referenced_objects(&pod(vec![c]));
        assert_eq!(config_maps.into_iter().collect::<Vec<_>>(), ["one"]);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), ["two"]);
    }
}
