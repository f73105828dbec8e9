//! The BPF objects built from `proxy-ebpf`, embedded at compile time, and their loading.
//!
//! Owns which object holds which programs, where shared maps are pinned, how big they are, and
//! the load step (verifier included). Never attaches a program anywhere ([`crate::attach`]) and
//! never writes map contents ([`crate::maps`]).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    programs::{CgroupSockAddr, ProgramError, SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};
use proxy_common::{
    AFFINITY_MAP, BACKEND_SLOTS_MAP, BACKEND_STATS_MAP, BACKENDS_MAP, CONNTRACK_MAP,
    SERVICE_STATS_MAP, SERVICES_MAP, SOCKET_NAT_MAP,
};

/// Where skiff-proxy pins its maps and links by default.
pub const DEFAULT_PIN_DIRECTORY: &str = "/sys/fs/bpf/skiff";

/// One BPF object (one binary of `proxy-ebpf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramObject {
    /// TC programs for a pod's host-side veth (`proxy-ebpf/src/tc_pod.rs`).
    TcPod,
    /// cgroup socket-address programs for the node's own sockets (`proxy-ebpf/src/sock.rs`).
    Sock,
    /// Programs for the node's uplink, XDP and its TC companion (`proxy-ebpf/src/xdp_uplink.rs`).
    XdpUplink,
}

/// A program inside an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramName {
    /// TC, ingress of a pod's host-side veth: packets leaving the pod (service DNAT).
    TcFromPod,
    /// TC, egress of a pod's host-side veth: packets entering the pod (reverse NAT).
    TcToPod,
    /// cgroup connect4: a node socket connecting to a ClusterIP gets a backend.
    SockConnect4,
    /// cgroup sendmsg4: a node datagram sent to a ClusterIP goes to a backend.
    SockSendmsg4,
    /// cgroup recvmsg4: a datagram from a backend shows the VIP as its source.
    SockRecvmsg4,
    /// cgroup getpeername4: a connected socket shows the VIP as its peer.
    SockGetpeername4,
    /// XDP on the uplink: NodePort, external and load-balancer IPs, replies of remote backends.
    XdpUplink,
    /// TC, ingress of the uplink: sends frames `xdp_uplink` handed off for neighbour resolution.
    TcUplink,
    /// TC, ingress of the uplink, in place of both above (`--xdp-mode tc`).
    TcUplinkFallback,
}

impl ProgramName {
    /// The program's function name in `proxy-ebpf` (as `bpftool prog` shows it).
    pub const fn as_str(self) -> &'static str {
        match self {
            ProgramName::TcFromPod => "tc_from_pod",
            ProgramName::TcToPod => "tc_to_pod",
            ProgramName::SockConnect4 => "sock_connect4",
            ProgramName::SockSendmsg4 => "sock_sendmsg4",
            ProgramName::SockRecvmsg4 => "sock_recvmsg4",
            ProgramName::SockGetpeername4 => "sock_getpeername4",
            ProgramName::XdpUplink => "xdp_uplink",
            ProgramName::TcUplink => "tc_uplink",
            ProgramName::TcUplinkFallback => "tc_uplink_fallback",
        }
    }

    pub const fn object(self) -> ProgramObject {
        match self {
            ProgramName::TcFromPod | ProgramName::TcToPod => ProgramObject::TcPod,
            ProgramName::SockConnect4
            | ProgramName::SockSendmsg4
            | ProgramName::SockRecvmsg4
            | ProgramName::SockGetpeername4 => ProgramObject::Sock,
            ProgramName::XdpUplink | ProgramName::TcUplink | ProgramName::TcUplinkFallback => {
                ProgramObject::XdpUplink
            }
        }
    }
}

impl ProgramObject {
    pub const fn name(self) -> &'static str {
        match self {
            ProgramObject::TcPod => "tc_pod",
            ProgramObject::Sock => "sock",
            ProgramObject::XdpUplink => "xdp_uplink",
        }
    }

    /// The programs of this object.
    pub const fn programs(self) -> &'static [ProgramName] {
        match self {
            ProgramObject::TcPod => &[ProgramName::TcFromPod, ProgramName::TcToPod],
            ProgramObject::Sock => &[
                ProgramName::SockConnect4,
                ProgramName::SockSendmsg4,
                ProgramName::SockRecvmsg4,
                ProgramName::SockGetpeername4,
            ],
            ProgramObject::XdpUplink => &[
                ProgramName::XdpUplink,
                ProgramName::TcUplink,
                ProgramName::TcUplinkFallback,
            ],
        }
    }

    /// The ELF bytes of the object, as built by `build.rs`.
    pub fn elf(self) -> &'static [u8] {
        match self {
            ProgramObject::TcPod => {
                aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_pod"))
            }
            ProgramObject::Sock => aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sock")),
            ProgramObject::XdpUplink => {
                aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_uplink"))
            }
        }
    }
}

/// Sizes of the shared maps (`--max-services` and friends). They apply when a map is created;
/// a map already pinned keeps the size it was created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSizes {
    /// Service frontends (VIP, port, protocol).
    pub services: u32,
    /// Backends, and also service slots per backend on average × services.
    pub backends: u32,
    /// Backend slots over all services: the ready backends of each ClusterIP frontend, and the
    /// Maglev table size of each north-south frontend (twice while a table is replaced).
    pub backend_slots: u32,
    /// Conntrack entries (two per flow).
    pub conntrack: u32,
    /// ClientIP affinity entries; also the size of the node sockets' translation map.
    pub affinity: u32,
}

impl Default for MapSizes {
    fn default() -> MapSizes {
        MapSizes {
            services: 65_536,
            backends: 65_536,
            backend_slots: 1_048_576,
            conntrack: 262_144,
            affinity: 65_536,
        }
    }
}

/// How to load an object.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// bpffs directory where shared maps are pinned (and found again after a restart).
    pub pin_directory: PathBuf,
    pub map_sizes: MapSizes,
}

impl LoadOptions {
    pub fn new(pin_directory: impl Into<PathBuf>) -> LoadOptions {
        LoadOptions {
            pin_directory: pin_directory.into(),
            map_sizes: MapSizes::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("creating the pin directory {path}: {source}")]
    PinDirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the BPF object {object} (maps pinned in {pin_directory}): {source}")]
    Object {
        object: &'static str,
        pin_directory: PathBuf,
        #[source]
        source: Box<EbpfError>,
    },
    #[error("the BPF object {object} has no program {program} of the expected type")]
    MissingProgram {
        object: &'static str,
        program: &'static str,
    },
    #[error("loading {program} into the kernel (the verifier log follows the cause): {source}")]
    Load {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The program's return value (`XDP_PASS`, `TC_ACT_OK`, ...).
    pub verdict: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Mean run time per repetition, as the kernel measured it.
    pub duration: Duration,
}

/// A loaded object: its maps (created or adopted from the pin directory) and its programs, all
/// verified and loaded. Dropping it unloads the programs and detaches the links it still owns;
/// pinned maps stay.
pub struct LoadedObject {
    object: ProgramObject,
    ebpf: Ebpf,
}

impl LoadedObject {
    /// Parses the embedded object, creates or adopts its maps and loads its programs.
    pub fn load(object: ProgramObject, options: &LoadOptions) -> Result<LoadedObject, LoadError> {
        std::fs::create_dir_all(&options.pin_directory).map_err(|source| {
            LoadError::PinDirectory {
                path: options.pin_directory.clone(),
                source,
            }
        })?;
        let sizes = options.map_sizes;
        let mut loader = EbpfLoader::new();
        loader
            .default_map_pin_directory(&options.pin_directory)
            .map_max_entries(SERVICES_MAP, sizes.services)
            .map_max_entries(SERVICE_STATS_MAP, sizes.services)
            .map_max_entries(BACKENDS_MAP, sizes.backends)
            .map_max_entries(BACKEND_STATS_MAP, sizes.backends)
            .map_max_entries(BACKEND_SLOTS_MAP, sizes.backend_slots)
            .map_max_entries(CONNTRACK_MAP, sizes.conntrack)
            .map_max_entries(AFFINITY_MAP, sizes.affinity)
            .map_max_entries(SOCKET_NAT_MAP, sizes.affinity);
        let mut ebpf = loader
            .load(object.elf())
            .map_err(|source| LoadError::Object {
                object: object.name(),
                pin_directory: options.pin_directory.clone(),
                source: Box::new(source),
            })?;
        for program in object.programs() {
            let name = program.as_str();
            let missing = || LoadError::MissingProgram {
                object: object.name(),
                program: name,
            };
            let handle = ebpf.program_mut(name).ok_or_else(missing)?;
            let result = match program {
                ProgramName::TcFromPod
                | ProgramName::TcToPod
                | ProgramName::TcUplink
                | ProgramName::TcUplinkFallback => {
                    let classifier: &mut SchedClassifier =
                        handle.try_into().map_err(|_| missing())?;
                    classifier.load()
                }
                ProgramName::SockConnect4
                | ProgramName::SockSendmsg4
                | ProgramName::SockRecvmsg4
                | ProgramName::SockGetpeername4 => {
                    let hook: &mut CgroupSockAddr = handle.try_into().map_err(|_| missing())?;
                    hook.load()
                }
                ProgramName::XdpUplink => {
                    let xdp: &mut Xdp = handle.try_into().map_err(|_| missing())?;
                    xdp.load()
                }
            };
            result.map_err(|source| LoadError::Load {
                program: name,
                source: Box::new(source),
            })?;
        }
        Ok(LoadedObject { object, ebpf })
    }

    pub fn object(&self) -> ProgramObject {
        self.object
    }

    /// The underlying aya object, for map access.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// A TC program of this object.
    pub fn classifier_mut(&mut self, program: ProgramName) -> Option<&mut SchedClassifier> {
        self.ebpf
            .program_mut(program.as_str())
            .and_then(|handle| handle.try_into().ok())
    }

    /// A cgroup socket-address program of this object.
    pub fn cgroup_sock_addr_mut(&mut self, program: ProgramName) -> Option<&mut CgroupSockAddr> {
        self.ebpf
            .program_mut(program.as_str())
            .and_then(|handle| handle.try_into().ok())
    }

    /// An XDP program of this object.
    pub fn xdp_mut(&mut self, program: ProgramName) -> Option<&mut Xdp> {
        self.ebpf
            .program_mut(program.as_str())
            .and_then(|handle| handle.try_into().ok())
    }

    /// Runs `program` on `frame` through `BPF_PROG_TEST_RUN` (`repeat` times), without attaching
    /// it anywhere. Maps are read and updated as for a real packet.
    pub fn test_run(
        &self,
        program: ProgramName,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, ProgramError> {
        // Room for programs that grow the frame (ICMP errors, encapsulation).
        let mut output = vec![0u8; frame.len() + 512];
        let options = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut output),
            repeat,
            ..TestRunOptions::default()
        };
        let handle = self
            .ebpf
            .program(program.as_str())
            .ok_or(ProgramError::UnexpectedProgramType)?;
        let result = match program {
            ProgramName::TcFromPod
            | ProgramName::TcToPod
            | ProgramName::TcUplink
            | ProgramName::TcUplinkFallback => {
                let classifier: &SchedClassifier = handle.try_into()?;
                classifier.test_run(options)?
            }
            ProgramName::XdpUplink => {
                let xdp: &Xdp = handle.try_into()?;
                xdp.test_run(options)?
            }
            ProgramName::SockConnect4
            | ProgramName::SockSendmsg4
            | ProgramName::SockRecvmsg4
            | ProgramName::SockGetpeername4 => return Err(ProgramError::UnexpectedProgramType),
        };
        output.truncate(result.data_size_out as usize);
        Ok(TestRunOutcome {
            verdict: result.return_value,
            frame: output,
            duration: result.duration,
        })
    }

    /// The kernel's id of a loaded program (as `bpftool prog` shows it).
    pub fn program_id(&self, program: ProgramName) -> Option<u32> {
        let handle = self.ebpf.program(program.as_str())?;
        handle.info().ok().map(|info| info.id())
    }
}

/// Whether `path` is on a bpffs mount (pins only work there).
pub fn is_on_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|stats| stats.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}
