//! Shared pieces of skiff-cni's privileged tests: a "node" network namespace the plugin runs in,
//! pod namespaces, and running the real `skiff-cni` binary the way a runtime does (`CNI_*`
//! variables, configuration on stdin, result or error on stdout).

#![allow(dead_code)]

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use skiff_tests::netns::NetNs;

/// The plugin binary cargo built for these tests.
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_skiff-cni");

/// The spec versions every conformance test runs for.
pub const VERSIONS: [&str; 2] = ["1.0.0", "1.1.0"];

/// Whether privileged tests may run (panics naming what is missing, unless opted out).
pub fn privileged(test: &str) -> bool {
    skiff_tests::privileged::check(test, &["ip", "ping"])
}

/// A node: its own network namespace (forwarding on, an address on an uplink that also
/// carries the default route, as a real node's uplink would) and a private IPAM data directory.
pub struct Node {
    pub netns: NetNs,
    pub data_dir: tempfile::TempDir,
    pub address: Ipv4Addr,
}

impl Node {
    pub fn new(label: &str) -> Node {
        let netns = NetNs::new(label).expect("create the node namespace");
        let address = Ipv4Addr::new(192, 0, 2, 10);
        // A veth pair with both ends in the node stands in for the uplink (this kernel has no
        // dummy interfaces).
        netns
            .ip(&[
                "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1",
            ])
            .expect("add the node's uplink");
        netns
            .ip(&["link", "set", "uplink1", "up"])
            .expect("uplink peer up");
        netns
            .ip(&["addr", "add", &format!("{address}/24"), "dev", "uplink0"])
            .expect("address the uplink");
        netns
            .ip(&["link", "set", "uplink0", "up"])
            .expect("uplink up");
        netns
            .ip(&["route", "add", "default", "dev", "uplink0"])
            .expect("default route");
        netns
            .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
            .expect("enter the node")
            .expect("enable forwarding");
        Node {
            netns,
            data_dir: tempfile::tempdir().expect("a data directory"),
            address,
        }
    }

    /// The plugin configuration for this node (one conflist entry, with `cniVersion` and `name`
    /// copied in as a runtime does).
    pub fn config(&self, version: &str, pod_cidr: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "skiff",
            "type": "skiff-cni",
            "podCIDR": pod_cidr,
            "dataDir": self.data_dir.path(),
            "mtu": 1500,
        })
    }

    /// Runs the plugin inside this node's namespace.
    pub fn invoke(&self, env: &[(&str, &str)], config: &Value) -> Invocation {
        invoke_in(Some(&self.netns), env, config.to_string().as_bytes())
    }

    /// Runs `ADD` for `container` with `netns` as the pod's namespace.
    pub fn add(&self, config: &Value, container: &str, netns: &Path) -> Invocation {
        self.invoke(&attachment_env("ADD", container, Some(netns)), config)
    }

    pub fn del(&self, config: &Value, container: &str, netns: Option<&Path>) -> Invocation {
        self.invoke(&attachment_env("DEL", container, netns), config)
    }

    pub fn check(&self, config: &Value, container: &str, netns: &Path) -> Invocation {
        self.invoke(&attachment_env("CHECK", container, Some(netns)), config)
    }

    /// The addresses the IPAM state holds, read through the library as the plugin would.
    pub fn allocations(&self) -> Vec<(Ipv4Addr, String)> {
        let store = skiff_cni::ipam::IpamStore::open(self.data_dir.path(), "skiff")
            .expect("open the IPAM state");
        store
            .allocations()
            .expect("read the IPAM state")
            .into_iter()
            .map(|(ip, owner)| (ip, owner.container_id))
            .collect()
    }

    /// Names of the interfaces in the node namespace that look like skiff-cni's host veths.
    pub fn host_veths(&self) -> Vec<String> {
        let links: Value =
            serde_json::from_str(&self.netns.ip(&["-j", "link", "show"]).expect("list links"))
                .expect("ip -j link prints JSON");
        links
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|link| link["ifname"].as_str())
            .filter(|name| name.starts_with("skf"))
            .map(str::to_owned)
            .collect()
    }

    /// The node's routes to pod addresses (`<ip>/32`-style destinations in the main table).
    pub fn pod_routes(&self) -> Vec<String> {
        let routes: Value = serde_json::from_str(
            &self
                .netns
                .ip(&["-j", "route", "show"])
                .expect("list routes"),
        )
        .expect("ip -j route prints JSON");
        routes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|route| {
                route["dev"]
                    .as_str()
                    .is_some_and(|dev| dev.starts_with("skf"))
            })
            .filter_map(|route| route["dst"].as_str().map(str::to_owned))
            .collect()
    }

    /// Asserts that nothing of any pod is left: no allocation, no host veth, no pod route.
    pub fn assert_clean(&self, context: &str) {
        assert_eq!(self.allocations(), [], "{context}: allocations left");
        assert_eq!(
            self.host_veths(),
            Vec::<String>::new(),
            "{context}: host veths left"
        );
        assert_eq!(
            self.pod_routes(),
            Vec::<String>::new(),
            "{context}: pod routes left"
        );
    }
}

/// The `CNI_*` variables for an ADD/DEL/CHECK of `container`'s `eth0`.
pub fn attachment_env<'a>(
    command: &'a str,
    container: &'a str,
    netns: Option<&'a Path>,
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", container),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ];
    if let Some(netns) = netns {
        env.push(("CNI_NETNS", netns.to_str().expect("a UTF-8 netns path")));
    }
    env
}

/// What one run of the plugin printed and how it exited.
#[derive(Debug)]
pub struct Invocation {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Invocation {
    /// The JSON on stdout (a result, or an error object).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| {
            panic!(
                "stdout is not JSON ({error}): {:?}; stderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts success and returns the result (Null when the command prints nothing).
    #[track_caller]
    pub fn ok(&self) -> Value {
        assert!(
            self.success,
            "the plugin failed: stdout {} stderr {}",
            self.stdout, self.stderr
        );
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts failure with `code` and a message containing `needle`; returns the message.
    #[track_caller]
    pub fn error(&self, code: u64, needle: &str) -> String {
        assert!(
            !self.success,
            "the plugin succeeded where it should fail with code {code}: {}",
            self.stdout
        );
        let error = self.json();
        assert_eq!(error["code"], code, "wrong code: {error}");
        let msg = format!(
            "{} {}",
            error["msg"].as_str().unwrap_or(""),
            error["details"].as_str().unwrap_or("")
        );
        assert!(
            msg.contains(needle),
            "message {msg:?} does not contain {needle:?}"
        );
        assert!(error["cniVersion"].is_string(), "{error}");
        msg
    }
}

/// Runs the plugin (in `netns` when given) with exactly `env` and `stdin`.
pub fn invoke_in(netns: Option<&NetNs>, env: &[(&str, &str)], stdin: &[u8]) -> Invocation {
    let mut command = match netns {
        Some(netns) => netns.command(PLUGIN),
        None => std::process::Command::new(PLUGIN),
    };
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start skiff-cni");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin)
        .expect("write the configuration");
    let output = child.wait_with_output().expect("wait for skiff-cni");
    Invocation {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The pod address in an ADD result.
pub fn result_address(result: &Value) -> Ipv4Addr {
    let address = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ips[0].address in {result}"));
    address
        .trim_end_matches("/32")
        .parse()
        .unwrap_or_else(|_| panic!("{address} is not an IPv4 /32"))
}

/// The path of a pod namespace, as `CNI_NETNS`.
pub fn netns_path(netns: &NetNs) -> PathBuf {
    netns.path().to_path_buf()
}

/// Runs `ping -c 1 -W 2 <target>` in `from`; true when it got an answer.
pub fn pings(from: &NetNs, target: Ipv4Addr) -> bool {
    from.command("ping")
        .args(["-c", "1", "-W", "2", &target.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
