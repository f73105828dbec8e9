//! A private containerd per test, running inside the test's network namespace.
//!
//! Owns one `/usr/bin/containerd` process started inside a [`NetNs`] (through
//! [`NetNs::command`]'s `setns`, never `ip netns exec`, which would remount `/sys` and hide the
//! cgroup mounts from runc), everything it writes (root, state, sockets, runc root, CNI config and
//! IPAM state, pod netns files, container logs, image tarballs: all under one short temporary
//! directory `/tmp/skc-<pid>-<n>/`), the locally built pause image it uses as `sandbox_image`, the
//! CNI config it loads, and the teardown of all of it on drop — also after a panic, and for
//! instances left behind by test processes that were killed. Because containerd runs in the test
//! namespace, every bridge and veth a CNI plugin creates lives there too.
//!
//! Never touches the system containerd or its paths (`/var/lib/containerd`,
//! `/run/containerd/containerd.sock`, `/etc/cni`, `/var/lib/cni`), never kills a process or
//! unmounts anything that does not belong to its own directory, and never loads AppArmor profiles.
//! Unavoidable traces of containerd 1.6 outside the directory, all removed again per pod:
//! `containerd-shim-runc-v2` puts its socket in `/run/containerd/s/<sha256>` (hard-coded), libcni
//! caches each CNI result in `/var/lib/cni/results/<network>-<sandbox id>-<interface>`
//! (hard-coded, no config key in 1.6), and runc creates the container cgroups under `k8s.io/<id>`
//! in each cgroup hierarchy. The owners delete these when a pod is removed through CRI; when the
//! cleanup had to kill a shim instead, it removes them itself. The empty parent directories
//! (`/run/containerd/s`, `/var/lib/cni/results`, `<hierarchy>/k8s.io`) stay: other instances
//! running in parallel use them.

use std::{
    ffi::OsStr,
    fs::File,
    future::Future,
    net::{IpAddr, Ipv4Addr},
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::Once,
    time::{Duration, Instant},
};

use nix::{
    mount::{MntFlags, umount2},
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::{
    cri::{self, CriClient, CriError},
    netns::NetNs,
    oci_image::{self, OciImageError, PAUSE_IMAGE},
};

/// The containerd binary (Debian's containerd 1.6).
pub const CONTAINERD_BINARY: &str = "/usr/bin/containerd";
/// Where Debian's `containernetworking-plugins` installs the reference plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The containerd namespace the CRI plugin uses.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// Parent of every instance directory. Unix socket paths must stay below 108 bytes.
const BASE_DIR: &str = "/tmp";
/// Prefix of every instance directory: `/tmp/skc-<pid>-<n>`.
const DIR_PREFIX: &str = "skc";
/// Where containerd-shim-runc-v2 (containerd 1.6) puts its sockets, whatever the config says.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

const START_TIMEOUT: Duration = Duration::from_secs(20);
const NETWORK_READY_TIMEOUT: Duration = Duration::from_secs(10);
const CRI_CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
const TERM_TIMEOUT: Duration = Duration::from_secs(10);
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Lines of containerd's log quoted in start errors.
const LOG_TAIL_LINES: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("{action} {path}: {source}")]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {CONTAINERD_BINARY} in network namespace {netns}: {source}")]
    Spawn {
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "containerd in network namespace {netns} exited during start ({status}); \
         last lines of its log (removed with its directory):\n{tail}"
    )]
    Exited {
        netns: String,
        status: String,
        tail: String,
    },
    #[error(
        "containerd in network namespace {netns} did not answer CRI Version on {socket} within \
         {waited:?} (last error: {last_error}); last lines of its log (removed with its directory):\n{tail}"
    )]
    NotReady {
        netns: String,
        socket: PathBuf,
        waited: Duration,
        last_error: String,
        tail: String,
    },
    #[error("containerd at {socket}: building or importing the pause image: {source}")]
    PauseImage {
        socket: PathBuf,
        #[source]
        source: Box<OciImageError>,
    },
    #[error("containerd at {socket}: {source}")]
    Cri {
        socket: PathBuf,
        #[source]
        source: Box<CriError>,
    },
    #[error(
        "containerd at {socket}: could not start a helper thread with a tokio runtime: {source}"
    )]
    Runtime {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cleaning up containerd in {dir} left problems:\n  {}", problems.join("\n  "))]
    Cleanup { dir: PathBuf, problems: Vec<String> },
}

/// A running private containerd; stopped and removed with everything it created on drop.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    netns: String,
    child: Child,
    cleaned_up: bool,
}

impl Containerd {
    /// Starts containerd inside `netns` with a private config, waits until its CRI plugin answers
    /// and imports the pause image ([`PAUSE_IMAGE`]) so that CRI can run pod sandboxes. Pods get
    /// no network until a CNI config is written ([`Containerd::use_stand_in_network`],
    /// [`Containerd::write_cni_conflist`]). Blocks for a few hundred milliseconds; from async code
    /// call it on a multi-threaded runtime or in `spawn_blocking`.
    pub fn start(netns: &NetNs) -> Result<Containerd, ContainerdError> {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(remove_stale_instances);

        let dir = Path::new(BASE_DIR).join(crate::unique_name(DIR_PREFIX));
        std::fs::create_dir(&dir).map_err(|source| ContainerdError::File {
            action: "creating the containerd directory",
            path: dir.clone(),
            source,
        })?;
        // Until containerd runs, the directory is all there is to remove on failure.
        let child = spawn(&dir, netns).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })?;
        // From here on, dropping `containerd` (on any error below) tears everything down.
        let mut containerd = Containerd {
            dir,
            netns: netns.name().to_owned(),
            child,
            cleaned_up: false,
        };
        containerd.wait_ready()?;
        oci_image::pause()
            .import_into(&containerd)
            .map_err(|source| ContainerdError::PauseImage {
                socket: containerd.socket(),
                source: Box::new(source),
            })?;
        Ok(containerd)
    }

    /// The instance directory `/tmp/skc-<pid>-<n>`; everything containerd writes is below it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's gRPC (and CRI) unix socket.
    pub fn socket(&self) -> PathBuf {
        Paths(&self.dir).socket()
    }

    /// Name of the network namespace containerd (and every CNI plugin it runs) lives in.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// containerd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// containerd's combined stdout and stderr.
    pub fn log_file(&self) -> PathBuf {
        Paths(&self.dir).log()
    }

    /// The CNI `conf_dir` containerd watches.
    pub fn cni_conf_dir(&self) -> PathBuf {
        Paths(&self.dir).cni_conf_dir()
    }

    /// A directory for IPAM plugins' state (host-local's `dataDir`).
    pub fn cni_ipam_dir(&self) -> PathBuf {
        Paths(&self.dir).cni_ipam_dir()
    }

    /// The CNI `bin_dir` containerd runs plugins from: links to Debian's reference plugins
    /// ([`CNI_BIN_DIR`]) plus whatever [`Containerd::install_cni_plugin`] added.
    pub fn cni_bin_dir(&self) -> PathBuf {
        Paths(&self.dir).cni_bin_dir()
    }

    /// Copies the plugin executable `binary` into this instance's CNI `bin_dir` under `name` (the
    /// `type` a conflist names it by), atomically. Returns the installed path.
    pub fn install_cni_plugin(
        &self,
        binary: &Path,
        name: &str,
    ) -> Result<PathBuf, ContainerdError> {
        let bin_dir = self.cni_bin_dir();
        let destination = bin_dir.join(name);
        let temporary = bin_dir.join(format!(".{name}.tmp"));
        let file_error = |action, path: &Path| {
            let path = path.to_owned();
            move |source| ContainerdError::File {
                action,
                path,
                source,
            }
        };
        std::fs::copy(binary, &temporary)
            .map_err(file_error("copying the CNI plugin", &temporary))?;
        std::fs::rename(&temporary, &destination).map_err(file_error(
            "renaming the CNI plugin into place",
            &destination,
        ))?;
        Ok(destination)
    }

    /// Where image tarballs for this instance are written.
    pub fn images_dir(&self) -> PathBuf {
        Paths(&self.dir).images_dir()
    }

    /// A directory for pod log directories (`pod_logs_dir().join(pod name)`), removed with the instance.
    pub fn pod_logs_dir(&self) -> PathBuf {
        self.dir.join("pods")
    }

    /// The sandbox image, built and imported by [`Containerd::start`].
    pub fn pause_image(&self) -> &'static str {
        PAUSE_IMAGE
    }

    /// A CRI client connected to this containerd.
    pub async fn cri(&self) -> Result<CriClient, CriError> {
        cri::connect(&self.socket()).await
    }

    /// Writes `conflist` (a CNI network config list; its `name` names the file) into the CNI
    /// `conf_dir` atomically, and waits until CRI reports `NetworkReady`. Returns the file.
    pub fn write_cni_conflist(
        &self,
        conflist: &serde_json::Value,
    ) -> Result<PathBuf, ContainerdError> {
        let name = conflist["name"].as_str().unwrap_or("network");
        let conf_dir = self.cni_conf_dir();
        let path = conf_dir.join(format!("10-{name}.conflist"));
        // containerd loads only *.conf, *.conflist and *.json: the temporary name is ignored, and
        // the rename makes the complete file appear at once.
        let temporary = conf_dir.join(format!(".10-{name}.tmp"));
        std::fs::write(&temporary, format!("{conflist:#}\n")).map_err(|source| {
            ContainerdError::File {
                action: "writing the CNI config",
                path: temporary.clone(),
                source,
            }
        })?;
        std::fs::rename(&temporary, &path).map_err(|source| ContainerdError::File {
            action: "renaming the CNI config into place",
            path: path.clone(),
            source,
        })?;
        let socket = self.socket();
        let cri_error = |source| ContainerdError::Cri {
            socket: socket.clone(),
            source: Box::new(source),
        };
        block_on(async {
            let mut client = cri::connect(&socket).await?;
            client.wait_network_ready(NETWORK_READY_TIMEOUT).await
        })
        .map_err(|source| ContainerdError::Runtime {
            socket: socket.clone(),
            source,
        })?
        .map_err(cri_error)?;
        Ok(path)
    }

    /// Makes `network` containerd's only pod network (see [`StandInNetwork`]).
    pub fn use_stand_in_network(
        &self,
        network: &StandInNetwork,
    ) -> Result<PathBuf, ContainerdError> {
        self.write_cni_conflist(&network.conflist(&self.cni_ipam_dir()))
    }

    /// Stops containerd and removes everything it created, like drop, but reports what could
    /// not be cleaned up.
    pub fn stop(mut self) -> Result<(), ContainerdError> {
        let problems = self.clean_up();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ContainerdError::Cleanup {
                dir: self.dir.clone(),
                problems,
            })
        }
    }

    /// Polls CRI Version until it answers, containerd exits or [`START_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<(), ContainerdError> {
        enum Outcome {
            Ready,
            Exited(String),
            TimedOut(String),
        }
        let socket = self.socket();
        let child = &mut self.child;
        let outcome = block_on(async {
            let start = Instant::now();
            let mut last_error = String::from("the socket never appeared");
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => return Outcome::Exited(status.to_string()),
                    Ok(None) => {}
                    Err(error) => {
                        return Outcome::Exited(format!("waiting for it failed: {error}"));
                    }
                }
                if socket.exists() {
                    match cri::connect(&socket).await {
                        Ok(mut client) => match client.version().await {
                            Ok(_) => return Outcome::Ready,
                            Err(error) => last_error = error.to_string(),
                        },
                        Err(error) => last_error = error.to_string(),
                    }
                }
                if start.elapsed() > START_TIMEOUT {
                    return Outcome::TimedOut(last_error);
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        })
        .map_err(|source| ContainerdError::Runtime {
            socket: socket.clone(),
            source,
        })?;
        let log = self.log_file();
        match outcome {
            Outcome::Ready => Ok(()),
            Outcome::Exited(status) => Err(ContainerdError::Exited {
                netns: self.netns.clone(),
                status,
                tail: log_tail(&log),
            }),
            Outcome::TimedOut(last_error) => Err(ContainerdError::NotReady {
                netns: self.netns.clone(),
                socket,
                waited: START_TIMEOUT,
                last_error,
                tail: log_tail(&log),
            }),
        }
    }

    /// Tears the instance down; returns what could not be cleaned up. Runs once.
    fn clean_up(&mut self) -> Vec<String> {
        if self.cleaned_up {
            return Vec::new();
        }
        self.cleaned_up = true;
        let mut problems = Vec::new();
        // 1. Let CRI stop and remove its pods: that runs CNI DEL (bridge ports, IPAM leases),
        //    removes the pod netns and makes the shims exit on their own.
        if matches!(self.child.try_wait(), Ok(None)) {
            let socket = self.socket();
            let removed = block_on(async {
                tokio::time::timeout(CRI_CLEANUP_TIMEOUT, async {
                    let mut client = cri::connect(&socket).await?;
                    client.remove_all_pod_sandboxes().await
                })
                .await
            });
            match removed {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(error))) => {
                    problems.push(format!("removing pod sandboxes through CRI: {error}"))
                }
                Ok(Err(_)) => problems.push(format!(
                    "removing pod sandboxes through CRI took longer than {CRI_CLEANUP_TIMEOUT:?}"
                )),
                Err(error) => problems.push(format!("removing pod sandboxes through CRI: {error}")),
            }
        }
        // 2. containerd itself: SIGTERM, then SIGKILL.
        problems.extend(stop_child(&mut self.child));
        // 3. Whatever is left (shims whose pods CRI could not remove, their containers), then
        //    mounts and the directory.
        problems.extend(clean_up_dir(&self.dir));
        problems
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for problem in self.clean_up() {
            eprintln!("harness: containerd in {}: {problem}", self.dir.display());
        }
    }
}

/// The stand-in pod network until skiff-cni exists: Debian's reference `bridge` plugin (a bridge
/// inside the test namespace acting as the pods' gateway, no masquerading) with `host-local` IPAM
/// in `subnet`. containerd adds `loopback` itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandInNetwork {
    /// CNI network name (also names the config file).
    pub name: String,
    /// Bridge interface name (at most 15 bytes); it lives in the test namespace, so the same
    /// name in several tests does not collide.
    pub bridge: String,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
}

impl StandInNetwork {
    /// The network `skiff-standin` on bridge `skiff0` with pod addresses from `subnet/prefix_len`.
    pub fn new(subnet: Ipv4Addr, prefix_len: u8) -> StandInNetwork {
        StandInNetwork {
            name: "skiff-standin".to_owned(),
            bridge: "skiff0".to_owned(),
            subnet,
            prefix_len,
        }
    }

    /// `subnet/prefix_len`, e.g. `10.88.0.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.subnet, self.prefix_len)
    }

    /// Whether `ip` is inside the subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let IpAddr::V4(ip) = ip else {
            return false;
        };
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len.min(32)))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.subnet) & mask
    }

    /// The CNI config list, with host-local's leases in `ipam_data_dir`.
    pub fn conflist(&self, ipam_data_dir: &Path) -> serde_json::Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": self.cidr() }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": ipam_data_dir.to_string_lossy(),
                },
            }],
        })
    }
}

/// What is left of an instance directory: processes that mention it (containerd, shims) or run in a
/// root below it (containers), mounts below it, shim sockets of those shims, and the directory
/// itself. Empty when the instance is fully gone.
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = related_processes(dir)
        .iter()
        .map(|process| format!("process {} ({})", process.pid, process.description()))
        .collect();
    found.extend(
        mounts_under(dir)
            .iter()
            .map(|mount| format!("mount {}", mount.display())),
    );
    if dir.exists() {
        found.push(format!("directory {}", dir.display()));
    }
    found
}

/// The file layout of an instance directory.
struct Paths<'a>(&'a Path);

impl Paths<'_> {
    fn config(&self) -> PathBuf {
        self.0.join("config.toml")
    }
    fn log(&self) -> PathBuf {
        self.0.join("containerd.log")
    }
    fn socket(&self) -> PathBuf {
        self.0.join("containerd.sock")
    }
    fn cni_conf_dir(&self) -> PathBuf {
        self.0.join("cni/net.d")
    }
    fn cni_ipam_dir(&self) -> PathBuf {
        self.0.join("cni/ipam")
    }
    fn cni_bin_dir(&self) -> PathBuf {
        self.0.join("cni/bin")
    }
    fn images_dir(&self) -> PathBuf {
        self.0.join("images")
    }
    fn temp_dir(&self) -> PathBuf {
        self.0.join("tmp")
    }
}

/// containerd's config: every path below `dir`, CRI with the local pause image, overlayfs, runc
/// v2 with a private root and cgroupfs, pod netns under the state dir (not `/run/netns`), no TCP,
/// debug or metrics listeners, no AppArmor. `restrict_oom_score_adj` is needed where the harness
/// lacks `CAP_SYS_RESOURCE` (these VMs drop it from the bounding set): CRI gives the sandbox
/// `oom_score_adj` -998, which runc could not set ("can't get final child's PID from pipe: EOF");
/// restricted, containerd clamps it to its own value.
fn config_toml(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
temp = "{dir}/tmp"
plugin_dir = ""
oom_score = 0
required_plugins = ["io.containerd.grpc.v1.cri"]
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{dir}/containerd.sock"
  tcp_address = ""

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{dir}/opt"

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    disable_tcp_service = true
    disable_apparmor = true
    enable_selinux = false
    netns_mounts_under_state_dir = true
    restrict_oom_score_adj = true

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = "{dir}/runc"
          SystemdCgroup = false

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{dir}/cni/bin"
      conf_dir = "{dir}/cni/net.d"
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ""
"#
    )
}

/// Lays out the instance directory `dir`, writes the config and starts containerd in `netns`
/// with its output going to the log file.
fn spawn(dir: &Path, netns: &NetNs) -> Result<Child, ContainerdError> {
    let paths = Paths(dir);
    for path in [
        paths.cni_conf_dir(),
        paths.cni_ipam_dir(),
        paths.cni_bin_dir(),
        paths.images_dir(),
        paths.temp_dir(),
    ] {
        std::fs::create_dir_all(&path).map_err(|source| ContainerdError::File {
            action: "creating the directory",
            path: path.clone(),
            source,
        })?;
    }
    link_reference_plugins(&paths.cni_bin_dir())?;
    let config = paths.config();
    std::fs::write(&config, config_toml(dir)).map_err(|source| ContainerdError::File {
        action: "writing the containerd config",
        path: config.clone(),
        source,
    })?;
    let log_error = |source| ContainerdError::File {
        action: "creating the containerd log",
        path: paths.log(),
        source,
    };
    let log = File::create(paths.log()).map_err(log_error)?;
    let log_for_stderr = log.try_clone().map_err(log_error)?;
    netns
        .command(CONTAINERD_BINARY)
        .arg("--config")
        .arg(&config)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env_remove("CONTAINERD_ADDRESS")
        .env_remove("CONTAINERD_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_for_stderr)
        .spawn()
        .map_err(|source| ContainerdError::Spawn {
            netns: netns.name().to_owned(),
            source,
        })
}

/// Fills the instance's CNI `bin_dir` with symbolic links to every reference plugin in
/// [`CNI_BIN_DIR`], so a test can add its own plugin beside them without touching the system's.
fn link_reference_plugins(bin_dir: &Path) -> Result<(), ContainerdError> {
    let entries = std::fs::read_dir(CNI_BIN_DIR).map_err(|source| ContainerdError::File {
        action: "listing the reference CNI plugins (run `cargo xtask setup`)",
        path: PathBuf::from(CNI_BIN_DIR),
        source,
    })?;
    for entry in entries.flatten() {
        let link = bin_dir.join(entry.file_name());
        std::os::unix::fs::symlink(entry.path(), &link).map_err(|source| {
            ContainerdError::File {
                action: "linking a reference CNI plugin",
                path: link.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Runs `future` to completion on a new thread with its own current-thread tokio runtime, so
/// it works from plain code, from inside another runtime and from `Drop`.
fn block_on<F>(future: F) -> Result<F::Output, std::io::Error>
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(runtime.block_on(future))
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The last [`LOG_TAIL_LINES`] lines of `log`.
fn log_tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(content) => {
            let lines: Vec<&str> = content.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(error) => format!("(could not read the log: {error})"),
    }
}

/// SIGTERM, wait up to [`TERM_TIMEOUT`], SIGKILL, reap.
fn stop_child(child: &mut Child) -> Vec<String> {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return Vec::new();
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let mut problems = Vec::new();
    if let Err(error) = kill(pid, Signal::SIGTERM) {
        problems.push(format!(
            "sending SIGTERM to containerd (pid {pid}): {error}"
        ));
    }
    let start = Instant::now();
    while start.elapsed() < TERM_TIMEOUT {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return problems;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    problems.push(format!(
        "containerd (pid {pid}) ignored SIGTERM for {TERM_TIMEOUT:?}; killed it"
    ));
    let _ = child.kill();
    if let Err(error) = child.wait() {
        problems.push(format!("reaping containerd (pid {pid}): {error}"));
    }
    problems
}

/// Kills every process of the instance in `dir`, removes the cgroups and shim sockets they
/// leave, unmounts everything below `dir` and deletes it. Returns what is still there.
fn clean_up_dir(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let processes = related_processes(dir);
    if !processes.is_empty() {
        let shims: Vec<String> = processes
            .iter()
            .map(|process| process.description())
            .collect();
        problems.push(format!("killed leftover processes: {}", shims.join("; ")));
        kill_all(&processes);
        for process in &processes {
            if let Some(socket) = process.shim_socket() {
                match std::fs::remove_file(&socket) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => problems.push(format!(
                        "removing shim socket {}: {error}",
                        socket.display()
                    )),
                }
            }
        }
    }
    problems.extend(remove_runc_cgroups(&dir.join("runc")));
    problems.extend(remove_cni_cache_entries(dir));
    for _round in 0..5 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            break;
        }
        for mount in mounts {
            if let Err(error) = umount2(&mount, MntFlags::MNT_DETACH) {
                problems.push(format!("unmounting {}: {error}", mount.display()));
            }
        }
    }
    if let Err(error) = std::fs::remove_dir_all(dir)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        problems.push(format!("removing {}: {error}", dir.display()));
    }
    problems.extend(
        leftovers(dir)
            .into_iter()
            .map(|leftover| format!("still there: {leftover}")),
    );
    problems
}

/// A process as seen in `/proc`.
#[derive(Debug, Clone)]
struct ProcessInfo {
    pid: i32,
    ppid: i32,
    arguments: Vec<String>,
    root: Option<PathBuf>,
}

impl ProcessInfo {
    fn description(&self) -> String {
        if self.arguments.is_empty() {
            format!("pid {}", self.pid)
        } else {
            format!("pid {}: {}", self.pid, self.arguments.join(" "))
        }
    }

    /// The socket a `containerd-shim-runc-v2` serves on: `/run/containerd/s/<sha256 of
    /// address/namespace/id>` (containerd 1.6's `shim.SocketAddress`).
    fn shim_socket(&self) -> Option<PathBuf> {
        let program = self.arguments.first()?;
        if !program.contains("containerd-shim") {
            return None;
        }
        let value = |flag: &str| {
            self.arguments
                .iter()
                .position(|argument| argument == flag)
                .and_then(|index| self.arguments.get(index + 1))
        };
        let (address, namespace, id) = (value("-address")?, value("-namespace")?, value("-id")?);
        Some(shim_socket_path(address, namespace, id))
    }
}

fn shim_socket_path(address: &str, namespace: &str, id: &str) -> PathBuf {
    let joined = Path::new(address).join(namespace).join(id);
    let digest: String = Sha256::digest(joined.as_os_str().as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Path::new(SHIM_SOCKET_DIR).join(digest)
}

/// Every live (non-zombie) process in `/proc`.
fn all_processes() -> Vec<ProcessInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
            let mut after_comm = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
            let state = after_comm.next()?;
            if state == "Z" || state == "X" {
                return None;
            }
            let ppid = after_comm.next()?.parse().ok()?;
            let arguments = std::fs::read(entry.path().join("cmdline"))
                .map(|cmdline| {
                    cmdline
                        .split(|byte| *byte == 0)
                        .filter(|argument| !argument.is_empty())
                        .map(|argument| String::from_utf8_lossy(argument).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let root = std::fs::read_link(entry.path().join("root")).ok();
            Some(ProcessInfo {
                pid,
                ppid,
                arguments,
                root,
            })
        })
        .collect()
}

/// Processes of the instance in `dir`: those whose command line names a path below it
/// (containerd, shims), those whose root is below it (containers), and all their descendants.
fn related_processes(dir: &Path) -> Vec<ProcessInfo> {
    let own_pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let processes = all_processes();
    let below = format!("{}/", dir.display());
    let mut related: Vec<i32> = processes
        .iter()
        .filter(|process| process.pid != own_pid)
        .filter(|process| {
            process
                .arguments
                .iter()
                .any(|argument| argument.contains(&below))
                || process
                    .root
                    .as_deref()
                    .is_some_and(|root| root.starts_with(dir))
        })
        .map(|process| process.pid)
        .collect();
    // Descendants (container processes below their shim).
    let mut index = 0;
    while index < related.len() {
        let parent = related[index];
        for process in &processes {
            if process.ppid == parent && process.pid != own_pid && !related.contains(&process.pid) {
                related.push(process.pid);
            }
        }
        index += 1;
    }
    processes
        .into_iter()
        .filter(|process| related.contains(&process.pid))
        .collect()
}

/// SIGKILLs `processes` and waits up to [`KILL_TIMEOUT`] for them to disappear.
fn kill_all(processes: &[ProcessInfo]) {
    for process in processes {
        let _ = kill(Pid::from_raw(process.pid), Signal::SIGKILL);
    }
    let start = Instant::now();
    while start.elapsed() < KILL_TIMEOUT {
        let alive = all_processes();
        if !processes
            .iter()
            .any(|process| alive.iter().any(|other| other.pid == process.pid))
        {
            return;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Removes the cgroups runc recorded in its state files below `runc_root` (left when a container
/// was killed instead of deleted through containerd). Returns failures other than "already gone".
fn remove_runc_cgroups(runc_root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(runc_root) else {
        return problems;
    };
    for container in namespaces
        .flatten()
        .filter_map(|namespace| std::fs::read_dir(namespace.path()).ok())
        .flatten()
        .flatten()
    {
        let state_file = container.path().join("state.json");
        let Ok(state) = std::fs::read(&state_file) else {
            continue;
        };
        let Ok(state) = serde_json::from_slice::<serde_json::Value>(&state) else {
            continue;
        };
        let Some(paths) = state["cgroup_paths"].as_object() else {
            continue;
        };
        for path in paths.values().filter_map(|path| path.as_str()) {
            let path = Path::new(path);
            if !path.starts_with("/sys/fs/cgroup") {
                continue;
            }
            match std::fs::remove_dir(path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => problems.push(format!("removing cgroup {}: {error}", path.display())),
            }
        }
    }
    problems
}

/// Where libcni (inside containerd 1.6) caches CNI results; not configurable.
const CNI_RESULT_CACHE: &str = "/var/lib/cni/results";

/// Removes libcni's cached results of the sandboxes of the instance in `dir` (left when a pod
/// was not removed through CRI). Returns failures other than "already gone".
fn remove_cni_cache_entries(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let sandbox_ids: Vec<String> = ["root", "state"]
        .iter()
        .filter_map(|base| {
            std::fs::read_dir(dir.join(base).join("io.containerd.grpc.v1.cri/sandboxes")).ok()
        })
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    if sandbox_ids.is_empty() {
        return problems;
    }
    let Ok(entries) = std::fs::read_dir(CNI_RESULT_CACHE) else {
        return problems;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if sandbox_ids
            .iter()
            .any(|id| name.contains(&format!("-{id}-")))
        {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => problems.push(format!(
                    "removing CNI cache entry {}: {error}",
                    entry.path().display()
                )),
            }
        }
    }
    problems
}

/// Mount points below `dir` in this mount namespace, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|mount| mount.starts_with(dir) && mount != dir)
        .collect();
    mounts.sort_by_key(|mount| std::cmp::Reverse(mount.components().count()));
    mounts.dedup();
    mounts
}

/// Undoes mountinfo's octal escapes (`\040` for a space, …).
fn unescape_mount_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\'
            && index + 3 < bytes.len()
            && bytes[index + 1..index + 4]
                .iter()
                .all(|digit| (b'0'..=b'7').contains(digit))
        {
            let value = bytes[index + 1..index + 4]
                .iter()
                .fold(0u32, |value, digit| value * 8 + u32::from(digit - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            index += 4;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// Tears down instance directories of harness processes that no longer exist.
fn remove_stale_instances() {
    for (_, path) in crate::abandoned_entries(BASE_DIR, DIR_PREFIX) {
        let problems = clean_up_dir(&path);
        eprintln!(
            "harness: removed stale containerd directory {}",
            path.display()
        );
        for problem in problems {
            eprintln!("harness:   {problem}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_in_subnet_membership() {
        let network = StandInNetwork::new(Ipv4Addr::new(10, 77, 3, 0), 24);
        assert!(network.contains("10.77.3.9".parse().unwrap()));
        assert!(!network.contains("10.77.4.9".parse().unwrap()));
        assert!(!network.contains("::1".parse().unwrap()));
        assert!(
            StandInNetwork::new(Ipv4Addr::UNSPECIFIED, 0).contains("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn stand_in_conflist_uses_the_private_ipam_dir() {
        let conflist = StandInNetwork::new(Ipv4Addr::new(10, 77, 3, 0), 24)
            .conflist(Path::new("/tmp/skc-1-0/cni/ipam"));
        let plugin = &conflist["plugins"][0];
        assert_eq!(plugin["type"], "bridge");
        assert_eq!(plugin["isGateway"], true);
        assert_eq!(plugin["ipMasq"], false);
        assert_eq!(plugin["ipam"]["dataDir"], "/tmp/skc-1-0/cni/ipam");
        assert_eq!(plugin["ipam"]["ranges"][0][0]["subnet"], "10.77.3.0/24");
    }

    #[test]
    fn config_keeps_every_path_in_the_instance_directory() {
        let config = config_toml(Path::new("/tmp/skc-1-0"));
        for forbidden in [
            "/var/lib/containerd",
            "/run/containerd",
            "/etc/cni",
            "/var/lib/cni",
            "/opt/",
        ] {
            assert!(!config.contains(forbidden), "config mentions {forbidden}");
        }
        assert!(config.contains(r#"address = "/tmp/skc-1-0/containerd.sock""#));
        assert!(config.contains("netns_mounts_under_state_dir = true"));
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mount_path(r"/tmp/a\040b"), Path::new("/tmp/a b"));
        assert_eq!(unescape_mount_path(r"/tmp/plain"), Path::new("/tmp/plain"));
    }

    #[test]
    fn shim_socket_is_the_hash_of_address_namespace_and_id() {
        let socket = shim_socket_path("/tmp/skc-1-0/containerd.sock", "k8s.io", "abc");
        let expected: String = Sha256::digest(b"/tmp/skc-1-0/containerd.sock/k8s.io/abc")
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(socket, Path::new(SHIM_SOCKET_DIR).join(expected));
    }
}
