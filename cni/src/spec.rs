//! The CNI protocol as skiff-cni speaks it: spec versions 1.0.0 and 1.1.0.
//!
//! Owns the plugin's inputs and outputs and nothing else: the `CNI_*` environment, the network
//! configuration on stdin (with the keys runtimes inject: `prevResult`, `runtimeConfig`, `args`,
//! `cni.dev/valid-attachments`), the ADD result, the VERSION answer and the error object with the
//! spec's codes. It does no I/O: the binary reads stdin and the environment and prints what these
//! types serialise to. IPAM and netlink know nothing of this module.
//!
//! Error codes (the spec reserves 1–99; 100 and up are the plugin's own):
//!
//! | code | meaning |
//! |---:|---|
//! | 1 | incompatible CNI version (also STATUS/GC asked of a 1.0.0 configuration) |
//! | 2 | unsupported field in the network configuration (the message names key and value) |
//! | 3 | container unknown or gone (CHECK without an allocation, ADD with a missing netns) |
//! | 4 | invalid or missing `CNI_*` environment variables (the message names them) |
//! | 5 | I/O failure (IPAM state, pod CIDR file) |
//! | 6 | stdin is not a JSON network configuration |
//! | 7 | invalid network configuration |
//! | 11 | try again later (no pod CIDR yet, pool exhausted) |
//! | 50 | STATUS: the plugin cannot serve ADD now |
//! | 100 | ADD: the container already has an interface named `CNI_IFNAME` |
//! | 101 | a netlink operation failed |
//! | 102 | CHECK: the network is not as ADD left it |

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::ipam::{Attachment, Ipv4Network};

/// The spec versions this plugin implements, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];

/// The newest supported version, answered to a VERSION request without a readable version.
pub const LATEST_VERSION: &str = "1.1.0";

/// Where the IPAM state lives when the configuration has no `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/skiff";

/// Where the node agent writes the node's pod CIDR when the configuration has neither `podCIDR`
/// nor `podCIDRFile`.
pub const DEFAULT_POD_CIDR_FILE: &str = "/run/skiff/podcidr";

/// The pod interface's MTU when the configuration has no `mtu`.
pub const DEFAULT_MTU: u32 = 1500;

/// The CNI error codes skiff-cni returns (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    IoFailure = 5,
    DecodingFailure = 6,
    InvalidNetworkConfig = 7,
    TryAgainLater = 11,
    NotAvailable = 50,
    InterfaceExists = 100,
    NetlinkFailure = 101,
    CheckFailed = 102,
}

/// A CNI error: what the plugin prints on stdout (and exits non-zero with) when an operation
/// fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The spec's error object for `cni_version` (the configuration's version, or the newest when
    /// the configuration could not be read).
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut object = Map::new();
        object.insert("cniVersion".into(), cni_version.into());
        object.insert("code".into(), (self.code as u32).into());
        object.insert("msg".into(), self.msg.clone().into());
        if !self.details.is_empty() {
            object.insert("details".into(), self.details.clone().into());
        }
        Value::Object(object)
    }
}

/// The operation asked for in `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(value: &str) -> Option<Command> {
        Some(match value {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    /// Whether the operation exists in a configuration of `cni_version` (STATUS and GC arrived
    /// in 1.1.0).
    pub fn available_in(self, cni_version: &str) -> bool {
        !matches!(self, Command::Status | Command::Gc) || cni_version != "1.0.0"
    }

    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// The `CNI_*` parameters of one invocation, checked against what the command needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub command: Command,
    /// `CNI_CONTAINERID`: present for ADD, DEL and CHECK.
    pub container_id: Option<String>,
    /// `CNI_NETNS`: present for ADD and CHECK; optional for DEL (the netns may be gone).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`: present for ADD, DEL and CHECK.
    pub ifname: Option<String>,
    /// `CNI_ARGS` as key/value pairs (accepted, unused: Kubernetes passes pod names this way).
    pub args: Vec<(String, String)>,
}

impl Environment {
    /// Reads and checks the environment through `variable` (`std::env::var` in the binary).
    /// Every missing or invalid variable is named in one error (code 4).
    pub fn from_variables(variable: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let command_value = variable("CNI_COMMAND").unwrap_or_default();
        let command = Command::parse(&command_value).ok_or_else(|| {
            let msg = if command_value.is_empty() {
                "CNI_COMMAND is not set: expected one of ADD, DEL, CHECK, VERSION, STATUS, GC"
                    .to_owned()
            } else {
                format!(
                    "CNI_COMMAND {command_value:?} is not a CNI operation: expected one of ADD, DEL, CHECK, VERSION, STATUS, GC"
                )
            };
            CniError::new(ErrorCode::InvalidEnvironment, msg)
        })?;
        let non_empty = |name: &str| variable(name).filter(|value| !value.is_empty());
        let container_id = non_empty("CNI_CONTAINERID");
        let netns = non_empty("CNI_NETNS").map(PathBuf::from);
        let ifname = non_empty("CNI_IFNAME");

        let mut problems = Vec::new();
        let needs_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        if needs_attachment {
            match &container_id {
                None => problems.push("CNI_CONTAINERID is not set".to_owned()),
                Some(id) => {
                    if let Err(reason) = check_container_id(id) {
                        problems.push(format!("CNI_CONTAINERID {id:?} {reason}"));
                    }
                }
            }
            match &ifname {
                None => problems.push("CNI_IFNAME is not set".to_owned()),
                Some(name) => {
                    if let Err(reason) = check_interface_name(name) {
                        problems.push(format!("CNI_IFNAME {name:?} {reason}"));
                    }
                }
            }
        }
        if matches!(command, Command::Add | Command::Check) && netns.is_none() {
            problems.push("CNI_NETNS is not set".to_owned());
        }
        let args = match variable("CNI_ARGS") {
            Some(text) => parse_args(&text).unwrap_or_else(|reason| {
                problems.push(format!("CNI_ARGS {text:?} {reason}"));
                Vec::new()
            }),
            None => Vec::new(),
        };
        if !problems.is_empty() {
            return Err(CniError::new(
                ErrorCode::InvalidEnvironment,
                format!(
                    "invalid environment for {}: {}",
                    command.name(),
                    problems.join("; ")
                ),
            ));
        }
        Ok(Environment {
            command,
            container_id,
            netns,
            ifname,
            args,
        })
    }

    /// The attachment (`CNI_CONTAINERID`, `CNI_IFNAME`) of an ADD, DEL or CHECK.
    pub fn attachment(&self) -> Option<Attachment> {
        Some(Attachment::new(
            self.container_id.clone()?,
            self.ifname.clone()?,
        ))
    }
}

/// The spec's rule for container ids: non-empty, alphanumerics plus `_`, `.` and `-`, starting
/// with an alphanumeric.
fn check_container_id(id: &str) -> Result<(), &'static str> {
    let mut characters = id.chars();
    let first_ok = characters.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = characters.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(
            "is not a valid container id: it must start with a letter or digit and hold only letters, digits, '_', '.' and '-'",
        )
    }
}

/// The spec's rule for interface names (the kernel's): at most 15 bytes, not `.` or `..`, no
/// `/`, `:` or whitespace.
fn check_interface_name(name: &str) -> Result<(), &'static str> {
    if name.len() > 15 {
        return Err("is longer than 15 bytes, the kernel's limit for interface names");
    }
    if name == "." || name == ".." {
        return Err("is not a valid interface name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("is not a valid interface name: it holds '/', ':' or whitespace");
    }
    Ok(())
}

/// `K1=V1;K2=V2` as pairs.
fn parse_args(text: &str) -> Result<Vec<(String, String)>, &'static str> {
    text.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .ok_or("is not a list of KEY=VALUE pairs separated by ';'")
        })
        .collect()
}

/// Keys of the plugin configuration skiff-cni reads itself.
const OWN_KEYS: [&str; 5] = ["podCIDR", "podCIDRFile", "dataDir", "mtu", "ipMasq"];

/// Keys that the spec, libcni or runtimes put into a plugin's configuration and that skiff-cni
/// accepts (using some, ignoring the rest).
const RUNTIME_KEYS: [&str; 9] = [
    "cniVersion",
    "name",
    "type",
    "prevResult",
    "runtimeConfig",
    "args",
    "capabilities",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
];

/// The network configuration for one invocation: the plugin's entry of the conflist, with
/// `cniVersion` and `name` copied in by the runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    /// The node's pod CIDR given directly; wins over `pod_cidr_file`.
    pub pod_cidr: Option<Ipv4Network>,
    /// Where the node agent writes the pod CIDR (read on every ADD and STATUS).
    pub pod_cidr_file: PathBuf,
    /// The IPAM state directory; the network's state is in `<dataDir>/<name>/`.
    pub data_dir: PathBuf,
    pub mtu: u32,
    /// The result of the previous plugin in a chain (absent when skiff-cni is first).
    pub prev_result: Option<Value>,
    /// GC: the attachments still in use (`cni.dev/valid-attachments` and the older spelling
    /// `cni.dev/attachments`, merged). `None` when neither key is present.
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetworkConfig {
    /// Parses the configuration a runtime wrote to stdin.
    pub fn parse(bytes: &[u8]) -> Result<NetworkConfig, CniError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|error| {
            CniError::new(
                ErrorCode::DecodingFailure,
                "the network configuration on stdin is not JSON",
            )
            .with_details(error.to_string())
        })?;
        let Value::Object(object) = value else {
            return Err(CniError::new(
                ErrorCode::DecodingFailure,
                "the network configuration on stdin is not a JSON object",
            ));
        };
        let cni_version = required_string(&object, "cniVersion")?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "cniVersion {cni_version:?} is not supported: skiff-cni implements {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        for (key, value) in &object {
            if !OWN_KEYS.contains(&key.as_str()) && !RUNTIME_KEYS.contains(&key.as_str()) {
                let hint = if key == "ipam" {
                    " (skiff-cni allocates addresses itself from podCIDR or podCIDRFile)"
                } else {
                    ""
                };
                return Err(CniError::new(
                    ErrorCode::UnsupportedField,
                    format!(
                        "unsupported field {key:?} with value {value}{hint}; skiff-cni reads podCIDR, podCIDRFile, dataDir and mtu"
                    ),
                ));
            }
        }
        let name = required_string(&object, "name")?;
        check_network_name(&name)?;
        let plugin_type = required_string(&object, "type")?;
        let pod_cidr = optional_string(&object, "podCIDR")?
            .map(|text| {
                text.parse::<Ipv4Network>().map_err(|error| {
                    CniError::new(ErrorCode::InvalidNetworkConfig, format!("podCIDR: {error}"))
                })
            })
            .transpose()?;
        let pod_cidr_file = absolute_path(&object, "podCIDRFile", DEFAULT_POD_CIDR_FILE)?;
        let data_dir = absolute_path(&object, "dataDir", DEFAULT_DATA_DIR)?;
        let mtu = match object.get("mtu") {
            None | Some(Value::Null) => DEFAULT_MTU,
            Some(value) => value
                .as_u64()
                .filter(|mtu| (68..=65535).contains(mtu))
                .and_then(|mtu| u32::try_from(mtu).ok())
                .ok_or_else(|| {
                    CniError::new(
                        ErrorCode::InvalidNetworkConfig,
                        format!("mtu {value} is not an integer from 68 to 65535"),
                    )
                })?,
        };
        if let Some(value) = object.get("ipMasq")
            && value != &Value::Bool(false)
        {
            return Err(CniError::new(
                ErrorCode::UnsupportedField,
                format!(
                    "unsupported field \"ipMasq\" with value {value}: the pod network is routed without NAT"
                ),
            ));
        }
        let prev_result = match object.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(value @ Value::Object(_)) => Some(value.clone()),
            Some(other) => {
                return Err(CniError::new(
                    ErrorCode::InvalidNetworkConfig,
                    format!("prevResult {other} is not a JSON object"),
                ));
            }
        };
        let mut valid_attachments: Option<Vec<Attachment>> = None;
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let Some(value) = object.get(key) else {
                continue;
            };
            let attachments: Vec<Attachment> =
                serde_json::from_value(value.clone()).map_err(|error| {
                    CniError::new(
                        ErrorCode::InvalidNetworkConfig,
                        format!("{key} is not a list of {{\"containerID\", \"ifname\"}} objects: {error}"),
                    )
                })?;
            let merged = valid_attachments.get_or_insert_with(Vec::new);
            for attachment in attachments {
                if !merged.contains(&attachment) {
                    merged.push(attachment);
                }
            }
        }
        Ok(NetworkConfig {
            cni_version,
            name,
            plugin_type,
            pod_cidr,
            pod_cidr_file,
            data_dir,
            mtu,
            prev_result,
            valid_attachments,
        })
    }

    /// The pod CIDR: `podCIDR` if set, else the contents of `podCIDRFile` read by `read_file`.
    pub fn resolve_pod_cidr(
        &self,
        read_file: impl FnOnce(&std::path::Path) -> std::io::Result<String>,
    ) -> Result<Ipv4Network, CniError> {
        if let Some(pod_cidr) = self.pod_cidr {
            return Ok(pod_cidr);
        }
        let path = &self.pod_cidr_file;
        let text = read_file(path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                CniError::new(
                    ErrorCode::TryAgainLater,
                    format!(
                        "the node's pod CIDR is not known yet: {} does not exist (the node agent writes it once the Node has spec.podCIDR; or set podCIDR in the network configuration)",
                        path.display()
                    ),
                )
            } else {
                CniError::new(
                    ErrorCode::IoFailure,
                    format!("cannot read the pod CIDR file {}", path.display()),
                )
                .with_details(error.to_string())
            }
        })?;
        text.trim().parse().map_err(|error| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                format!("the pod CIDR file {}: {error}", path.display()),
            )
        })
    }
}

fn required_string(object: &Map<String, Value>, key: &str) -> Result<String, CniError> {
    match object.get(key) {
        Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
        Some(other) => Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("{key} {other} is not a non-empty string"),
        )),
        None => Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("the network configuration has no {key:?}"),
        )),
    }
}

fn optional_string(object: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if !text.is_empty() => Ok(Some(text.clone())),
        Some(other) => Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("{key} {other} is not a non-empty string"),
        )),
    }
}

fn absolute_path(
    object: &Map<String, Value>,
    key: &str,
    default: &str,
) -> Result<PathBuf, CniError> {
    let path = PathBuf::from(optional_string(object, key)?.unwrap_or_else(|| default.to_owned()));
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!(
                "{key} {:?} is not an absolute path",
                path.display().to_string()
            ),
        ))
    }
}

/// The spec's rule for network names: alphanumerics plus `_`, `.` and `-`, starting with an
/// alphanumeric (the name is also a directory under `dataDir`).
fn check_network_name(name: &str) -> Result<(), CniError> {
    check_container_id(name).map_err(|_| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("network name {name:?} is not valid: it must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"),
        )
    })
}

/// An interface in an ADD result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// Since 1.1.0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; absent for host interfaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address in an ADD result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct IpConfig {
    /// CIDR notation, e.g. `10.244.1.5/32`.
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route in an ADD result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// What ADD created, to add to the result (or to a `prevResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub host_interface: String,
    pub host_mac: String,
    pub pod_interface: String,
    pub pod_mac: String,
    pub netns: String,
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

/// The ADD result for `config`: `prevResult` (if any) with the host and pod interfaces, the
/// pod's address and its default route appended, in the configuration's version.
pub fn add_result(config: &NetworkConfig, attached: &Attached) -> Value {
    let mut result = match &config.prev_result {
        Some(Value::Object(previous)) => previous.clone(),
        _ => Map::new(),
    };
    let with_mtu = config.cni_version != "1.0.0";
    let mut interfaces = array(&result, "interfaces");
    let host_index = interfaces.len();
    let interface = |name: &str, mac: &str, sandbox: Option<&str>| Interface {
        name: name.to_owned(),
        mac: mac.to_owned(),
        mtu: with_mtu.then_some(attached.mtu),
        sandbox: sandbox.map(str::to_owned),
    };
    interfaces.push(to_value(interface(
        &attached.host_interface,
        &attached.host_mac,
        None,
    )));
    interfaces.push(to_value(interface(
        &attached.pod_interface,
        &attached.pod_mac,
        Some(&attached.netns),
    )));
    let mut ips = array(&result, "ips");
    ips.push(to_value(IpConfig {
        address: format!("{}/32", attached.address),
        gateway: Some(attached.gateway.to_string()),
        interface: Some(host_index + 1),
    }));
    let mut routes = array(&result, "routes");
    routes.push(to_value(Route {
        dst: "0.0.0.0/0".to_owned(),
        gw: Some(attached.gateway.to_string()),
    }));
    result.insert("cniVersion".into(), config.cni_version.clone().into());
    result.insert("interfaces".into(), Value::Array(interfaces));
    result.insert("ips".into(), Value::Array(ips));
    result.insert("routes".into(), Value::Array(routes));
    result
        .entry("dns")
        .or_insert_with(|| Value::Object(Map::new()));
    Value::Object(result)
}

/// The addresses a `prevResult` (of an earlier ADD) lists, for CHECK.
pub fn result_addresses(result: &Value) -> Vec<String> {
    result
        .get("ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip.get("address").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The VERSION answer.
pub fn version_result(cni_version: &str) -> Value {
    serde_json::json!({
        "cniVersion": cni_version,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

fn array(object: &Map<String, Value>, key: &str) -> Vec<Value> {
    object
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn to_value(value: impl Serialize) -> Value {
    // These types hold only strings, integers and options: serialising cannot fail.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn environment(pairs: &[(&str, &str)]) -> Result<Environment, CniError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Environment::from_variables(|name| map.get(name).cloned())
    }

    const ADD: [(&str, &str); 4] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/run/netns/pod"),
        ("CNI_IFNAME", "eth0"),
    ];

    #[test]
    fn add_environment_is_read() {
        let env = environment(&ADD).unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.attachment(), Some(Attachment::new("abc123", "eth0")));
        assert_eq!(env.netns, Some(PathBuf::from("/run/netns/pod")));
    }

    #[test]
    fn missing_variables_are_all_named_with_code_4() {
        let error = environment(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidEnvironment);
        for name in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
            assert!(error.msg.contains(name), "{}", error.msg);
        }
        let error = environment(&[]).unwrap_err();
        assert!(
            error.msg.contains("CNI_COMMAND is not set"),
            "{}",
            error.msg
        );
        let error = environment(&[("CNI_COMMAND", "ADDD")]).unwrap_err();
        assert!(error.msg.contains("\"ADDD\""), "{}", error.msg);
    }

    #[test]
    fn del_does_not_need_a_netns_and_version_needs_nothing() {
        let env = environment(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(env.netns, None);
        assert_eq!(
            environment(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
        assert_eq!(
            environment(&[("CNI_COMMAND", "GC")]).unwrap().command,
            Command::Gc
        );
    }

    #[test]
    fn invalid_container_ids_and_interface_names_are_refused() {
        let mut pairs = ADD.to_vec();
        pairs[1] = ("CNI_CONTAINERID", "-abc");
        assert!(environment(&pairs).unwrap_err().msg.contains("\"-abc\""));
        let mut pairs = ADD.to_vec();
        pairs[3] = ("CNI_IFNAME", "a-very-long-interface");
        assert!(environment(&pairs).unwrap_err().msg.contains("15 bytes"));
        let mut pairs = ADD.to_vec();
        pairs[3] = ("CNI_IFNAME", "eth/0");
        assert!(environment(&pairs).unwrap_err().msg.contains("CNI_IFNAME"));
    }

    #[test]
    fn cni_args_are_parsed_and_malformed_ones_refused() {
        let mut pairs = ADD.to_vec();
        pairs.push(("CNI_ARGS", "K8S_POD_NAME=web;K8S_POD_NAMESPACE=default"));
        let env = environment(&pairs).unwrap();
        assert_eq!(env.args[0], ("K8S_POD_NAME".into(), "web".into()));
        let mut pairs = ADD.to_vec();
        pairs.push(("CNI_ARGS", "garbage"));
        assert_eq!(
            environment(&pairs).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
    }

    fn config(json: &str) -> Result<NetworkConfig, CniError> {
        NetworkConfig::parse(json.as_bytes())
    }

    #[test]
    fn full_configuration_is_read_and_defaults_apply() {
        let parsed = config(
            r#"{"cniVersion":"1.1.0","name":"skiff","type":"skiff-cni","podCIDR":"10.244.1.0/24","mtu":1400,"runtimeConfig":{}}"#,
        )
        .unwrap();
        assert_eq!(parsed.pod_cidr, Some("10.244.1.0/24".parse().unwrap()));
        assert_eq!(parsed.mtu, 1400);
        assert_eq!(parsed.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(parsed.pod_cidr_file, PathBuf::from(DEFAULT_POD_CIDR_FILE));
        let minimal = config(r#"{"cniVersion":"1.0.0","name":"n","type":"skiff-cni"}"#).unwrap();
        assert_eq!(minimal.mtu, DEFAULT_MTU);
        assert_eq!(minimal.pod_cidr, None);
    }

    #[test]
    fn malformed_configurations_get_the_spec_codes() {
        let cases = [
            ("not json", ErrorCode::DecodingFailure, "not JSON"),
            ("[1]", ErrorCode::DecodingFailure, "not a JSON object"),
            (
                r#"{"name":"n","type":"t"}"#,
                ErrorCode::InvalidNetworkConfig,
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"0.4.0","name":"n","type":"t"}"#,
                ErrorCode::IncompatibleVersion,
                "0.4.0",
            ),
            (
                r#"{"cniVersion":"1.1.0","type":"t"}"#,
                ErrorCode::InvalidNetworkConfig,
                "\"name\"",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"../x","type":"t"}"#,
                ErrorCode::InvalidNetworkConfig,
                "../x",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","podCIDR":"10.244.1.1/24"}"#,
                ErrorCode::InvalidNetworkConfig,
                "10.244.1.0/24",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","mtu":20}"#,
                ErrorCode::InvalidNetworkConfig,
                "mtu 20",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","dataDir":"rel"}"#,
                ErrorCode::InvalidNetworkConfig,
                "absolute",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","podCidr":"x"}"#,
                ErrorCode::UnsupportedField,
                "\"podCidr\" with value \"x\"",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","ipam":{"type":"host-local"}}"#,
                ErrorCode::UnsupportedField,
                "ipam",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","ipMasq":true}"#,
                ErrorCode::UnsupportedField,
                "ipMasq",
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"t","prevResult":3}"#,
                ErrorCode::InvalidNetworkConfig,
                "prevResult",
            ),
        ];
        for (json, code, needle) in cases {
            let error = config(json).unwrap_err();
            assert_eq!(error.code, code, "{json}: {error}");
            assert!(error.to_string().contains(needle), "{json}: {error}");
        }
    }

    #[test]
    fn gc_reads_both_attachment_keys() {
        let parsed = config(
            r#"{"cniVersion":"1.1.0","name":"n","type":"t",
                "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],
                "cni.dev/attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            parsed.valid_attachments,
            Some(vec![
                Attachment::new("a", "eth0"),
                Attachment::new("b", "eth0")
            ])
        );
        let none = config(r#"{"cniVersion":"1.1.0","name":"n","type":"t"}"#).unwrap();
        assert_eq!(none.valid_attachments, None);
    }

    #[test]
    fn pod_cidr_comes_from_the_config_before_the_file() {
        let direct = config(
            r#"{"cniVersion":"1.1.0","name":"n","type":"t","podCIDR":"10.244.1.0/24","podCIDRFile":"/x"}"#,
        )
        .unwrap();
        let cidr = direct
            .resolve_pod_cidr(|_| panic!("the file must not be read"))
            .unwrap();
        assert_eq!(cidr.to_string(), "10.244.1.0/24");
        let from_file = config(r#"{"cniVersion":"1.1.0","name":"n","type":"t"}"#).unwrap();
        let cidr = from_file
            .resolve_pod_cidr(|_| Ok("10.244.9.0/24\n".to_owned()))
            .unwrap();
        assert_eq!(cidr.to_string(), "10.244.9.0/24");
        let missing = from_file
            .resolve_pod_cidr(|_| Err(std::io::ErrorKind::NotFound.into()))
            .unwrap_err();
        assert_eq!(missing.code, ErrorCode::TryAgainLater);
        assert!(missing.msg.contains(DEFAULT_POD_CIDR_FILE));
        let garbage = from_file
            .resolve_pod_cidr(|_| Ok("banana".to_owned()))
            .unwrap_err();
        assert_eq!(garbage.code, ErrorCode::InvalidNetworkConfig);
    }

    fn attached() -> Attached {
        Attached {
            host_interface: "skf0123456789ab".into(),
            host_mac: "aa:bb:cc:dd:ee:01".into(),
            pod_interface: "eth0".into(),
            pod_mac: "aa:bb:cc:dd:ee:02".into(),
            netns: "/run/netns/pod".into(),
            address: Ipv4Addr::new(10, 244, 1, 5),
            gateway: Ipv4Addr::new(169, 254, 1, 1),
            mtu: 1500,
        }
    }

    #[test]
    fn add_result_follows_the_configuration_version() {
        let v11 = config(r#"{"cniVersion":"1.1.0","name":"n","type":"t"}"#).unwrap();
        let result = add_result(&v11, &attached());
        assert_eq!(
            result,
            serde_json::json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "skf0123456789ab", "mac": "aa:bb:cc:dd:ee:01", "mtu": 1500},
                    {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "mtu": 1500, "sandbox": "/run/netns/pod"},
                ],
                "ips": [{"address": "10.244.1.5/32", "gateway": "169.254.1.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
                "dns": {},
            })
        );
        let v10 = config(r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#).unwrap();
        let result = add_result(&v10, &attached());
        assert!(result["interfaces"][0].get("mtu").is_none());
        assert_eq!(result["cniVersion"], "1.0.0");
    }

    #[test]
    fn add_result_appends_to_a_previous_result() {
        let chained = config(
            r#"{"cniVersion":"1.1.0","name":"n","type":"t","prevResult":{
                "cniVersion":"1.1.0","interfaces":[{"name":"x","mac":"00:00:00:00:00:01"}],
                "ips":[{"address":"192.0.2.1/24","interface":0}],"dns":{"nameservers":["10.96.0.10"]}}}"#,
        )
        .unwrap();
        let result = add_result(&chained, &attached());
        assert_eq!(result["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(result["ips"][1]["interface"], 2);
        assert_eq!(result["dns"]["nameservers"][0], "10.96.0.10");
        assert_eq!(result_addresses(&result), ["192.0.2.1/24", "10.244.1.5/32"]);
    }

    #[test]
    fn errors_and_versions_serialise_as_the_spec_says() {
        let error = CniError::new(ErrorCode::TryAgainLater, "later").with_details("why");
        assert_eq!(
            error.to_json("1.1.0"),
            serde_json::json!({"cniVersion": "1.1.0", "code": 11, "msg": "later", "details": "why"})
        );
        assert_eq!(
            version_result("1.0.0"),
            serde_json::json!({"cniVersion": "1.0.0", "supportedVersions": ["1.0.0", "1.1.0"]})
        );
        assert!(Command::Status.available_in("1.1.0"));
        assert!(!Command::Gc.available_in("1.0.0"));
        assert!(Command::Add.available_in("1.0.0"));
    }
}
