//! Host facts a Node reports about the machine it runs on: capacity, allocatable and nodeInfo.
//!
//! Owns reading `/proc`, `/sys`, `/etc` and `statvfs(--root-dir)`, and the upstream kubelet rules
//! that turn those readings into `status.capacity`, `status.allocatable` (capacity minus the
//! default hard-eviction reserve) and `status.nodeInfo`. Every rule is a pure function over text
//! or numbers, unit-tested without the machine; [`read_host_facts`] is the only reader.
//!
//! Never writes anything, never talks to the API server and knows nothing of conditions, leases
//! or pods (those are `node`'s and `pod`'s).

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::core::v1::{NodeSwapStatus, NodeSystemInfo},
    apimachinery::pkg::api::resource::Quantity,
};

/// Upstream's default `--max-pods` (`maxPods` in the KubeletConfiguration).
pub const MAX_PODS: u64 = 110;

/// The version this kubelet reports in `nodeInfo.kubeletVersion`.
pub const KUBELET_VERSION: &str = "v1.35.0-skiff";

/// `nodeInfo.containerRuntimeVersion` while the CRI runtime has not answered `Version`.
pub const UNKNOWN_CONTAINER_RUNTIME_VERSION: &str = "containerd://unknown";

/// Upstream's default hard eviction threshold `memory.available<100Mi`, in bytes.
pub const EVICTION_HARD_MEMORY_AVAILABLE: u64 = 100 * 1024 * 1024;

/// Upstream's default hard eviction threshold `nodefs.available<10%`. Upstream keeps the
/// percentage as a `float32`; the reserve is `int64(float64(capacity) * float64(float32(0.1)))`,
/// so the widening is kept to produce the same byte counts.
pub const EVICTION_HARD_NODEFS_AVAILABLE: f32 = 0.1;

const TWO_MI: u64 = 2 * 1024 * 1024;
const ONE_GI: u64 = 1024 * 1024 * 1024;

/// The resources a node has, in the units upstream counts them in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// Whole CPUs (online logical CPUs).
    pub cpu_cores: u64,
    /// Bytes of memory.
    pub memory_bytes: u64,
    /// Bytes of the filesystem holding `--root-dir`.
    pub ephemeral_storage_bytes: u64,
    /// Pods this node accepts.
    pub pods: u64,
    /// Bytes of pre-allocated 2 MiB huge pages.
    pub hugepages_2mi_bytes: u64,
    /// Bytes of pre-allocated 1 GiB huge pages.
    pub hugepages_1gi_bytes: u64,
}

impl Resources {
    /// Allocatable as upstream computes it without `--kube-reserved`/`--system-reserved`:
    /// capacity minus the default hard-eviction reserve (`memory.available<100Mi`,
    /// `nodefs.available<10%`) and, for memory, minus the huge pages; never below zero.
    pub fn allocatable(&self) -> Resources {
        let nodefs_reserve = (self.ephemeral_storage_bytes as f64
            * f64::from(EVICTION_HARD_NODEFS_AVAILABLE)) as u64;
        Resources {
            memory_bytes: self
                .memory_bytes
                .saturating_sub(EVICTION_HARD_MEMORY_AVAILABLE)
                .saturating_sub(self.hugepages_2mi_bytes)
                .saturating_sub(self.hugepages_1gi_bytes),
            ephemeral_storage_bytes: self.ephemeral_storage_bytes.saturating_sub(nodefs_reserve),
            ..self.clone()
        }
    }

    /// The resource list as the API carries it (`cpu`, `memory`, `ephemeral-storage`, `pods`,
    /// `hugepages-2Mi`, `hugepages-1Gi`), quantities in upstream's canonical form.
    pub fn to_resource_list(&self) -> BTreeMap<String, Quantity> {
        [
            ("cpu", decimal_si(self.cpu_cores)),
            ("memory", binary_si(self.memory_bytes)),
            ("ephemeral-storage", binary_si(self.ephemeral_storage_bytes)),
            ("pods", decimal_si(self.pods)),
            ("hugepages-2Mi", binary_si(self.hugepages_2mi_bytes)),
            ("hugepages-1Gi", binary_si(self.hugepages_1gi_bytes)),
        ]
        .into_iter()
        .map(|(name, quantity)| (name.to_owned(), Quantity(quantity)))
        .collect()
    }
}

/// What `nodeInfo` says about the machine (the runtime and kubelet versions come from elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// `/etc/machine-id` (or `/var/lib/dbus/machine-id`); empty when neither is readable.
    pub machine_id: String,
    /// `/sys/class/dmi/id/product_uuid`; empty when not readable (it is root-only, and absent in
    /// many VMs and containers).
    pub system_uuid: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `uname -r`, from `/proc/sys/kernel/osrelease`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of `/etc/os-release`, `Linux` when missing (as cadvisor does).
    pub os_image: String,
    /// Go's `GOARCH` spelling: `amd64`, `arm64`, ...
    pub architecture: String,
    /// `SwapTotal` of `/proc/meminfo`, in bytes.
    pub swap_bytes: u64,
}

impl SystemInfo {
    /// `status.nodeInfo`, with the runtime's `containerRuntimeVersion` (e.g. `containerd://1.6.20`
    /// or [`UNKNOWN_CONTAINER_RUNTIME_VERSION`]).
    pub fn node_info(&self, container_runtime_version: &str) -> NodeSystemInfo {
        NodeSystemInfo {
            architecture: self.architecture.clone(),
            boot_id: self.boot_id.clone(),
            container_runtime_version: container_runtime_version.to_owned(),
            kernel_version: self.kernel_version.clone(),
            // Deprecated; upstream kubelets no longer set it.
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_owned(),
            machine_id: self.machine_id.clone(),
            operating_system: std::env::consts::OS.to_owned(),
            os_image: self.os_image.clone(),
            swap: Some(NodeSwapStatus {
                capacity: Some(i64::try_from(self.swap_bytes).unwrap_or(i64::MAX)),
            }),
            system_uuid: self.system_uuid.clone(),
        }
    }
}

/// Everything read from the host for one status update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// `status.capacity`.
    pub capacity: Resources,
    /// The machine part of `status.nodeInfo`.
    pub system: SystemInfo,
}

/// Reading or understanding a host file failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A file every Linux host has could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file was read but did not contain what it should.
    #[error("{path}: {problem}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is missing or malformed.
        problem: String,
    },
    /// `statvfs` of the kubelet's root directory failed.
    #[error("statvfs {path} (the --root-dir, whose filesystem is ephemeral-storage): {source}")]
    Statvfs {
        /// The root directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// No address to report as the node's InternalIP.
    #[error("cannot choose a node IP: {problem}; pass --node-ip")]
    NoNodeIp {
        /// What was looked at.
        problem: String,
    },
}

/// Reads the host: capacity (CPUs, memory, the filesystem of `root_dir`, huge pages, max pods)
/// and the machine's identity. Files that identify a machine but may be missing (`product_uuid`,
/// `machine-id`, `os-release`) degrade to upstream's fallbacks; the others are errors.
pub fn read_host_facts(root_dir: &Path) -> Result<HostFacts, HostError> {
    let meminfo = parse_meminfo(&read("/proc/meminfo")?).map_err(|problem| HostError::Parse {
        path: "/proc/meminfo".into(),
        problem,
    })?;
    let cpu_cores = match std::fs::read_to_string("/sys/devices/system/cpu/online") {
        Ok(text) => count_cpu_list(&text).ok_or_else(|| HostError::Parse {
            path: "/sys/devices/system/cpu/online".into(),
            problem: format!("not a CPU list: {:?}", text.trim()),
        })?,
        Err(_) => std::thread::available_parallelism().map_or(1, |cores| cores.get() as u64),
    };
    let statvfs = nix::sys::statvfs::statvfs(root_dir).map_err(|source| HostError::Statvfs {
        path: root_dir.to_owned(),
        source,
    })?;
    // fsblkcnt_t and c_ulong are u64 on the 64-bit targets Skiff supports.
    let ephemeral_storage_bytes = statvfs.blocks().saturating_mul(statvfs.fragment_size());
    let capacity = Resources {
        cpu_cores,
        memory_bytes: meminfo.mem_total_bytes,
        ephemeral_storage_bytes,
        pods: MAX_PODS,
        hugepages_2mi_bytes: hugepages_bytes(TWO_MI),
        hugepages_1gi_bytes: hugepages_bytes(ONE_GI),
    };
    let os_release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let system = SystemInfo {
        machine_id: read_first_line(&["/etc/machine-id", "/var/lib/dbus/machine-id"]),
        system_uuid: read_first_line(&["/sys/class/dmi/id/product_uuid"]),
        boot_id: read("/proc/sys/kernel/random/boot_id")?.trim().to_owned(),
        kernel_version: read("/proc/sys/kernel/osrelease")?.trim().to_owned(),
        os_image: os_image(&os_release),
        architecture: go_architecture(std::env::consts::ARCH).to_owned(),
        swap_bytes: meminfo.swap_total_bytes,
    };
    Ok(HostFacts { capacity, system })
}

/// The first non-loopback IPv4 address of the interface holding the default IPv4 route
/// (`/proc/net/route`), for `--node-ip`'s default.
pub fn default_node_ip() -> Result<Ipv4Addr, HostError> {
    let routes = read("/proc/net/route")?;
    let interface = default_route_interface(&routes).ok_or_else(|| HostError::NoNodeIp {
        problem: "/proc/net/route has no default IPv4 route".to_owned(),
    })?;
    let addresses = nix::ifaddrs::getifaddrs().map_err(|error| HostError::NoNodeIp {
        problem: format!("listing interface addresses: {error}"),
    })?;
    let candidates: Vec<(String, Ipv4Addr)> = addresses
        .filter_map(|address| {
            let ipv4 = address.address?.as_sockaddr_in()?.ip();
            Some((address.interface_name, ipv4))
        })
        .collect();
    first_ipv4_of(&interface, &candidates).ok_or_else(|| HostError::NoNodeIp {
        problem: format!(
            "the default-route interface {interface} has no non-loopback IPv4 address"
        ),
    })
}

/// The interface of the first default route (`Destination` and `Mask` 0) in `/proc/net/route`.
pub fn default_route_interface(proc_net_route: &str) -> Option<String> {
    proc_net_route.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [
                interface,
                "00000000",
                _gateway,
                _flags,
                _refcnt,
                _use,
                _metric,
                "00000000",
                ..,
            ] => Some((*interface).to_owned()),
            _ => None,
        }
    })
}

/// The first non-loopback, non-link-local IPv4 of `interface` among `(interface, address)` pairs.
pub fn first_ipv4_of(interface: &str, addresses: &[(String, Ipv4Addr)]) -> Option<Ipv4Addr> {
    addresses
        .iter()
        .filter(|(name, _)| name == interface)
        .map(|(_, address)| *address)
        .find(|address| !address.is_loopback() && !address.is_link_local())
}

/// The parts of `/proc/meminfo` a Node reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`, in bytes.
    pub mem_total_bytes: u64,
    /// `SwapTotal`, in bytes (0 when the line is missing).
    pub swap_total_bytes: u64,
}

/// Parses `/proc/meminfo` (`MemTotal:  24684084 kB`; the kernel's "kB" are KiB).
pub fn parse_meminfo(text: &str) -> Result<MemInfo, String> {
    let field = |name: &str| -> Result<Option<u64>, String> {
        let Some(line) = text
            .lines()
            .find(|line| line.split(':').next() == Some(name))
        else {
            return Ok(None);
        };
        let value = line.split(':').nth(1).unwrap_or_default().trim();
        let (number, unit) = match value.split_once(char::is_whitespace) {
            Some((number, unit)) => (number, unit.trim()),
            None => (value, ""),
        };
        let number: u64 = number
            .parse()
            .map_err(|_| format!("{name}: not a number: {value:?}"))?;
        match unit {
            "kB" => Ok(Some(number.saturating_mul(1024))),
            "" => Ok(Some(number)),
            other => Err(format!("{name}: unknown unit {other:?}")),
        }
    };
    Ok(MemInfo {
        mem_total_bytes: field("MemTotal")?.ok_or("no MemTotal line")?,
        swap_total_bytes: field("SwapTotal")?.unwrap_or(0),
    })
}

/// The number of CPUs in a kernel CPU list such as `/sys/devices/system/cpu/online` (`0-3,6,8-9`).
pub fn count_cpu_list(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    text.split(',').try_fold(0u64, |count, range| {
        let (first, last) = match range.split_once('-') {
            Some((first, last)) => (first.parse::<u64>().ok()?, last.parse::<u64>().ok()?),
            None => {
                let cpu = range.parse::<u64>().ok()?;
                (cpu, cpu)
            }
        };
        (last >= first).then(|| count + last - first + 1)
    })
}

/// `PRETTY_NAME` of an os-release file, unquoted; `Linux` when missing (cadvisor's fallback).
pub fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|line| line.trim().strip_prefix("PRETTY_NAME="))
        .map(unquote_os_release)
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "Linux".to_owned())
}

/// An os-release value: shell-style double or single quotes, backslash escapes in double quotes.
fn unquote_os_release(value: &str) -> String {
    let value = value.trim();
    if let Some(inner) = value
        .strip_prefix('\'')
        .and_then(|rest| rest.strip_suffix('\''))
    {
        return inner.to_owned();
    }
    let Some(inner) = value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return value.to_owned();
    };
    let mut unquoted = String::with_capacity(inner.len());
    let mut characters = inner.chars();
    while let Some(character) = characters.next() {
        match character {
            '\\' => unquoted.extend(characters.next()),
            other => unquoted.push(other),
        }
    }
    unquoted
}

/// Rust's `target_arch` in Go's `GOARCH` spelling, which Kubernetes uses everywhere.
pub fn go_architecture(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// A byte count as upstream's `resource.Quantity` prints a `BinarySI` value: the largest binary
/// suffix (`Ki` … `Ei`) that divides it exactly, or else the decimal form (`18556039957`).
pub fn binary_si(bytes: u64) -> String {
    const SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if bytes < 1024 || !bytes.is_multiple_of(1024) {
        return decimal_si(bytes);
    }
    let mut mantissa = bytes;
    let mut suffix = "";
    for candidate in SUFFIXES {
        if mantissa.is_multiple_of(1024) && mantissa >= 1024 {
            mantissa /= 1024;
            suffix = candidate;
        } else {
            break;
        }
    }
    format!("{mantissa}{suffix}")
}

/// A count as upstream's `resource.Quantity` prints a `DecimalSI` value: the largest decimal
/// suffix (`k` … `E`) that divides it exactly (`110`, `2`, `18556039k`).
pub fn decimal_si(value: u64) -> String {
    const SUFFIXES: [&str; 6] = ["k", "M", "G", "T", "P", "E"];
    let mut mantissa = value;
    let mut suffix = "";
    for candidate in SUFFIXES {
        if mantissa != 0 && mantissa.is_multiple_of(1000) {
            mantissa /= 1000;
            suffix = candidate;
        } else {
            break;
        }
    }
    format!("{mantissa}{suffix}")
}

/// Bytes of pre-allocated huge pages of `page_bytes` (0 when the size is not supported).
fn hugepages_bytes(page_bytes: u64) -> u64 {
    let path = format!(
        "/sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages",
        page_bytes / 1024
    );
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .map_or(0, |pages| pages.saturating_mul(page_bytes))
}

fn read(path: &str) -> Result<String, HostError> {
    std::fs::read_to_string(path).map_err(|source| HostError::Read {
        path: path.into(),
        source,
    })
}

/// The first readable, non-empty file among `paths`, trimmed; empty when none is.
fn read_first_line(paths: &[&str]) -> String {
    paths
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| text.trim().to_owned())
        .find(|text| !text.is_empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24684084 kB\nMemFree:         1000000 kB\n\
                           SwapCached:            0 kB\nSwapTotal:       2097148 kB\n\
                           HugePages_Total:       0\n";

    fn capacity() -> Resources {
        Resources {
            cpu_cores: 2,
            memory_bytes: 4_030_264 * 1024,
            ephemeral_storage_bytes: 20_134_592 * 1024,
            pods: MAX_PODS,
            hugepages_2mi_bytes: 0,
            hugepages_1gi_bytes: 0,
        }
    }

    #[test]
    fn meminfo_totals_are_read_in_bytes() {
        let info = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(info.mem_total_bytes, 24_684_084 * 1024);
        assert_eq!(info.swap_total_bytes, 2_097_148 * 1024);
    }

    #[test]
    fn meminfo_without_swap_line_reports_no_swap() {
        let info = parse_meminfo("MemTotal: 1024 kB\n").unwrap();
        assert_eq!(info.swap_total_bytes, 0);
    }

    #[test]
    fn meminfo_without_mem_total_is_an_error() {
        assert_eq!(
            parse_meminfo("MemFree: 1 kB\n").unwrap_err(),
            "no MemTotal line"
        );
        assert!(parse_meminfo("MemTotal: many kB\n").is_err());
    }

    #[test]
    fn cpu_lists_count_ranges_and_singles() {
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("a-b"), None);
    }

    #[test]
    fn os_image_is_the_unquoted_pretty_name() {
        let release = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(os_image(release), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(
            os_image("PRETTY_NAME='Alpine Linux v3.20'"),
            "Alpine Linux v3.20"
        );
        assert_eq!(os_image("PRETTY_NAME=Plain"), "Plain");
        assert_eq!(os_image("PRETTY_NAME=\"say \\\"hi\\\"\""), "say \"hi\"");
    }

    #[test]
    fn os_image_falls_back_to_linux() {
        assert_eq!(os_image("NAME=x\n"), "Linux");
        assert_eq!(os_image("PRETTY_NAME=\"\""), "Linux");
    }

    #[test]
    fn architectures_use_go_names() {
        assert_eq!(go_architecture("x86_64"), "amd64");
        assert_eq!(go_architecture("aarch64"), "arm64");
        assert_eq!(go_architecture("mips"), "mips");
    }

    #[test]
    fn binary_quantities_use_the_largest_exact_suffix() {
        assert_eq!(binary_si(0), "0");
        assert_eq!(binary_si(4_030_264 * 1024), "4030264Ki");
        assert_eq!(binary_si(100 * 1024 * 1024), "100Mi");
        assert_eq!(binary_si(1024 * 1024 * 1024), "1Gi");
        assert_eq!(binary_si(1536), "1536");
        assert_eq!(binary_si(18_556_039_957), "18556039957");
        assert_eq!(binary_si(18_556_039_000), "18556039k");
    }

    #[test]
    fn decimal_quantities_use_the_largest_exact_suffix() {
        assert_eq!(decimal_si(0), "0");
        assert_eq!(decimal_si(2), "2");
        assert_eq!(decimal_si(110), "110");
        assert_eq!(decimal_si(2000), "2k");
        assert_eq!(decimal_si(3_000_000), "3M");
    }

    #[test]
    fn allocatable_subtracts_the_default_hard_eviction_reserve() {
        let allocatable = capacity().allocatable();
        // memory.available<100Mi
        assert_eq!(allocatable.memory_bytes, (4_030_264 - 102_400) * 1024);
        // nodefs.available<10%, with upstream's float32 percentage: the same bytes a real
        // kubelet reports for a 20134592Ki filesystem.
        assert_eq!(allocatable.ephemeral_storage_bytes, 18_556_039_957);
        assert_eq!(allocatable.cpu_cores, 2);
        assert_eq!(allocatable.pods, 110);
    }

    #[test]
    fn allocatable_memory_excludes_huge_pages_and_never_goes_negative() {
        let with_hugepages = Resources {
            hugepages_2mi_bytes: 512 * TWO_MI,
            ..capacity()
        };
        assert_eq!(
            with_hugepages.allocatable().memory_bytes,
            (4_030_264 - 102_400 - 1024 * 1024) * 1024
        );
        let tiny = Resources {
            memory_bytes: 1024,
            ..capacity()
        };
        assert_eq!(tiny.allocatable().memory_bytes, 0);
    }

    #[test]
    fn resource_lists_carry_upstream_names_and_quantities() {
        let list = capacity().to_resource_list();
        let text = |name: &str| list[name].0.clone();
        assert_eq!(text("cpu"), "2");
        assert_eq!(text("memory"), "4030264Ki");
        assert_eq!(text("ephemeral-storage"), "20134592Ki");
        assert_eq!(text("pods"), "110");
        assert_eq!(text("hugepages-2Mi"), "0");
        assert_eq!(text("hugepages-1Gi"), "0");
        assert_eq!(list.len(), 6);
        let allocatable = capacity().allocatable().to_resource_list();
        assert_eq!(allocatable["memory"].0, "3927864Ki");
        assert_eq!(allocatable["ephemeral-storage"].0, "18556039957");
    }

    #[test]
    fn default_route_interface_is_the_zero_destination_and_mask() {
        let routes = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                      eth1\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                      eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_interface(routes).as_deref(), Some("eth0"));
        let no_default = "Iface\tDestination\tGateway\n\
                          eth1\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(default_route_interface(no_default), None);
    }

    #[test]
    fn node_ip_is_the_first_usable_ipv4_of_the_interface() {
        let addresses = vec![
            ("lo".to_owned(), Ipv4Addr::LOCALHOST),
            ("eth0".to_owned(), Ipv4Addr::new(169, 254, 1, 1)),
            ("eth0".to_owned(), Ipv4Addr::new(192, 0, 2, 10)),
            ("eth0".to_owned(), Ipv4Addr::new(192, 0, 2, 11)),
        ];
        assert_eq!(
            first_ipv4_of("eth0", &addresses),
            Some(Ipv4Addr::new(192, 0, 2, 10))
        );
        assert_eq!(first_ipv4_of("lo", &addresses), None);
        assert_eq!(first_ipv4_of("eth9", &addresses), None);
    }

    #[test]
    fn node_info_names_the_runtime_and_this_kubelet() {
        let system = SystemInfo {
            machine_id: "m".into(),
            system_uuid: String::new(),
            boot_id: "b".into(),
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            architecture: "amd64".into(),
            swap_bytes: 0,
        };
        let info = system.node_info(UNKNOWN_CONTAINER_RUNTIME_VERSION);
        assert_eq!(info.container_runtime_version, "containerd://unknown");
        assert_eq!(info.kubelet_version, "v1.35.0-skiff");
        assert_eq!(info.operating_system, "linux");
        assert_eq!(info.machine_id, "m");
        assert_eq!(info.kube_proxy_version, "");
        assert_eq!(info.swap.and_then(|swap| swap.capacity), Some(0));
    }

    #[test]
    fn this_host_can_be_read() {
        let root = tempfile::tempdir().unwrap();
        let facts = read_host_facts(root.path()).unwrap();
        assert!(facts.capacity.cpu_cores >= 1);
        assert!(facts.capacity.memory_bytes > 0);
        assert!(facts.capacity.ephemeral_storage_bytes > 0);
        assert!(!facts.system.boot_id.is_empty());
        assert!(!facts.system.kernel_version.is_empty());
    }
}
