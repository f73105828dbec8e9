//! Network namespaces owned by a test.
//!
//! Owns creation (`ip netns add`, so `ip netns`, `nsenter --net=/run/netns/NAME` and containerd
//! see them), running code or programs inside, and removal on drop — also when the test panics.
//! Namespaces left behind by a killed test process are removed by the next test process (their
//! names carry the dead process's pid). Never enters a namespace on a thread it does not own:
//! `setns()` switches only the calling thread, so code runs inside on a dedicated thread
//! ([`NetNs::run`]) and programs through a `pre_exec` hook ([`NetNs::command`]).

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::PathBuf,
    process::Command,
    sync::Once,
};

use nix::sched::{CloneFlags, setns};

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Prefix of every namespace the harness creates.
const NAME_PREFIX: &str = "sk";

#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("opening network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {name}: {source}")]
    Enter {
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// A network namespace that exists as long as this value: `/run/netns/<name>`.
pub struct NetNs {
    name: String,
    path: PathBuf,
    file: File,
}

impl NetNs {
    /// Creates a namespace named `sk-<label>-<pid>-<n>` with `lo` up.
    pub fn new(label: &str) -> Result<NetNs, NetNsError> {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(remove_stale_namespaces);
        let name = crate::unique_name(&format!("{NAME_PREFIX}-{label}"));
        run_ip(&["netns", "add", &name])?;
        let path = PathBuf::from(NETNS_DIR).join(&name);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(source) => {
                let _ = run_ip(&["netns", "del", &name]);
                return Err(NetNsError::Open { path, source });
            }
        };
        let netns = NetNs { name, path, file };
        netns.ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, for `nsenter --net=<path>` and CNI's `CNI_NETNS`.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Runs `ip -n <name> <args>` and returns its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetNsError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ip(&full)
    }

    /// A command that runs `program` inside this namespace (and nothing else changed: mount
    /// namespace, /sys and cgroups stay the host's, unlike `ip netns exec`). The namespace must
    /// outlive the spawned process's start.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command_in(&self.file, program)
    }

    /// Runs `work` on a new thread that has entered this namespace, and returns its result.
    /// Sockets, netlink connections and interface lookups made by `work` belong to the namespace.
    /// A panic in `work` is re-raised on the calling thread.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> Result<T, NetNsError> {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|source| {
                    NetNsError::Enter {
                        name: self.name.clone(),
                        source,
                    }
                })?;
                Ok(work())
            });
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Turns IPv6 off for every current and future interface of the namespace, so tests that count
    /// packets see no router solicitations or neighbour discovery.
    pub fn disable_ipv6(&self) -> Result<(), NetNsError> {
        self.run(|| {
            for scope in ["all", "default", "lo"] {
                let path = format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6");
                std::fs::write(&path, "1").map_err(|source| NetNsError::Open {
                    path: path.into(),
                    source,
                })?;
            }
            Ok(())
        })?
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(error) = run_ip(&["netns", "del", &self.name]) {
            eprintln!(
                "harness: could not remove network namespace {}: {error}",
                self.name
            );
        }
    }
}

impl std::fmt::Debug for NetNs {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NetNs")
            .field("name", &self.name)
            .finish()
    }
}

fn run_ip(args: &[&str]) -> Result<String, NetNsError> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetNsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(NetNsError::Command {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Removes namespaces left by harness processes that no longer exist (killed by a timeout, say).
fn remove_stale_namespaces() {
    for (name, _) in crate::abandoned_entries(NETNS_DIR, NAME_PREFIX) {
        match run_ip(&["netns", "del", &name]) {
            Ok(_) => eprintln!("harness: removed stale network namespace {name}"),
            Err(error) => eprintln!("harness: could not remove stale namespace {name}: {error}"),
        }
    }
}

/// A command that runs `program` inside the network namespace open as `namespace` (a
/// `/run/netns/<name>` file the caller keeps open until the process started). For callers that
/// outlive or restart processes independently of the [`NetNs`] value.
pub fn command_in(namespace: &File, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    let fd = namespace.as_raw_fd();
    // SAFETY: the hook only calls setns(2), which is async-signal-safe, on a descriptor that
    // stays open in the child until exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}
