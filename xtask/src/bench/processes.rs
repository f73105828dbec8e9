//! The processes and directories one benchmark run owns, each stopped or removed on drop.
//!
//! Owns starting skiff-control and a private etcd-server on free 127.0.0.1 ports, each in its own
//! process group and under `setpriv --pdeathsig KILL` (the kernel kills it if xtask dies without
//! unwinding, e.g. on SIGKILL), waiting for them to come up, reading their RSS, and stopping
//! them: SIGTERM to the process group, SIGKILL after a timeout. Never signals a process it did
//! not start; never listens outside loopback.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Debian's etcd-server.
pub const ETCD_BINARY: &str = "/usr/bin/etcd";
/// Runs a program with a parent-death signal (util-linux).
const SETPRIV: &str = "/usr/bin/setpriv";
/// Runs a program with other resource limits (util-linux).
const PRLIMIT: &str = "/usr/bin/prlimit";
/// Open files skiff-control and the client need for 1000 watch connections and then some.
const OPEN_FILES_NEEDED: u64 = 4096;
const START_TIMEOUT: Duration = Duration::from_secs(30);
const TERM_TIMEOUT: Duration = Duration::from_secs(5);
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Lines of a daemon's log quoted when it fails.
const LOG_TAIL_LINES: usize = 20;

/// A directory removed (with everything in it) on drop.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `path` afresh (removing what an earlier run left there).
    pub fn create(path: PathBuf) -> anyhow::Result<ScratchDir> {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_dir_all(&self.path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("bench: could not remove {}: {error}", self.path.display());
        }
    }
}

/// Removes the scratch directories (`<name>-<pid>`) below `base` whose xtask process is gone.
pub fn remove_stale_scratch_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let owner = name
            .to_str()
            .and_then(|name| name.rsplit('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = owner
            && pid != std::process::id()
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `(soft, hard)` limits on open files of this process, from `/proc/self/limits`.
fn open_file_limits() -> Option<(u64, u64)> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let mut values = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .map(|value| {
            if value == "unlimited" {
                Some(u64::MAX)
            } else {
                value.parse().ok()
            }
        });
    Some((values.next()??, values.next()??))
}

/// `program` run with a parent-death signal and, when the soft limit is low, more open files.
/// Both wrappers exec, so the child's pid is the program's.
pub fn supervised(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(SETPRIV);
    command.args(["--pdeathsig", "KILL", "--"]);
    if let Some((soft, hard)) = open_file_limits()
        && soft < OPEN_FILES_NEEDED
        && hard > soft
    {
        let hard = if hard == u64::MAX {
            "unlimited".to_owned()
        } else {
            hard.to_string()
        };
        command.arg(PRLIMIT).arg(format!("--nofile={hard}:{hard}"));
        command.arg("--");
    }
    command.arg(program);
    command
}

/// A free port on 127.0.0.1 (free a moment ago), with its listener held until dropped.
fn reserve_port() -> anyhow::Result<(u16, TcpListener)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port on 127.0.0.1")?;
    let port = listener
        .local_addr()
        .context("reading a bound port")?
        .port();
    Ok((port, listener))
}

/// A free port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    reserve_port().map(|(port, _)| port)
}

/// A long-running program in its own process group, logging to a file; stopped on drop.
pub struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `command` (built by [`supervised`]) with stdout and stderr going to `log`.
    pub fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> anyhow::Result<Daemon> {
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating the handle of {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Daemon { name, child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, quoting the end of the log, if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited ({status}); the end of its log {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            ),
            Err(error) => bail!("waiting for {} failed: {error}", self.name),
        }
    }

    /// Polls `ready` until it holds, failing if the process exits or [`START_TIMEOUT`] passes.
    pub fn wait_until(
        &mut self,
        what: &str,
        mut ready: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            self.check_running()?;
            if ready() {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "{} did not {what} within {START_TIMEOUT:?}; the end of its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log)
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Resident memory (VmRSS) in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let kib = vm_rss_kib(&status).with_context(|| format!("{path} has no VmRSS line"))?;
        Ok(kib as f64 / 1024.0)
    }

    /// The process's command name (`/proc/PID/comm`).
    pub fn command_name(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/comm", self.pid()))
            .map(|name| name.trim().to_owned())
            .unwrap_or_default()
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args(["-s", signal, "--"])
            .arg(format!("-{}", self.pid()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn wait_with_timeout(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if start.elapsed() < timeout => std::thread::sleep(POLL_INTERVAL),
                Ok(None) | Err(_) => return false,
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A reaped leader's pid (and so its group id) may be reused: signal only a live one.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        self.signal_group("TERM");
        if self.wait_with_timeout(TERM_TIMEOUT) {
            return;
        }
        self.signal_group("KILL");
        if !self.wait_with_timeout(KILL_TIMEOUT) {
            eprintln!(
                "bench: {} (pid {}) did not exit within {KILL_TIMEOUT:?} of SIGKILL",
                self.name,
                self.pid()
            );
        }
    }
}

/// The `VmRSS` of a `/proc/PID/status` text, in KiB.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The last [`LOG_TAIL_LINES`] lines of `log`.
fn log_tail(log: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(log) else {
        return format!("({} could not be read)", log.display());
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// A private single-member etcd with its data below a scratch directory.
pub struct Etcd {
    pub daemon: Daemon,
    pub client_url: String,
}

impl Etcd {
    pub fn start(dir: &Path) -> anyhow::Result<Etcd> {
        // Both listeners are held until both ports are known, so the two differ.
        let (client_port, client_listener) = reserve_port()?;
        let (peer_port, peer_listener) = reserve_port()?;
        drop((client_listener, peer_listener));
        let client = SocketAddr::from(([127, 0, 0, 1], client_port));
        let client_url = format!("http://{client}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let name = "skiff-bench";
        let mut command = supervised(ETCD_BINARY);
        command
            .arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(dir.join("etcd-data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("{name}={peer_url}")])
            .args(["--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(["--log-level", "warn"])
            .env_clear();
        let mut daemon = Daemon::spawn("etcd", command, dir.join("etcd.log"))?;
        daemon.wait_until("report healthy", || {
            etcd_health(client).is_ok_and(|body| body.contains(r#""health":"true""#))
        })?;
        Ok(Etcd { daemon, client_url })
    }
}

/// `GET /health` on etcd's client port: the response body.
fn etcd_health(client: SocketAddr) -> std::io::Result<String> {
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&client, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /health HTTP/1.0\r\nHost: {client}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map_or(response.as_str(), |(_, body)| body)
        .to_owned())
}

/// skiff-control on a free loopback port with a fresh data directory.
pub struct Control {
    pub daemon: Daemon,
    pub server_url: String,
    pub data_dir: PathBuf,
}

impl Control {
    /// Starts skiff-control and waits until it has written its CA, token and kubeconfig.
    pub fn start(
        binary: &Path,
        data_dir: PathBuf,
        etcd_servers: Option<&str>,
        log: PathBuf,
    ) -> anyhow::Result<Control> {
        let port = free_port()?;
        let mut command = supervised(binary);
        command
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--bind-address", "127.0.0.1"])
            .args(["--secure-port", &port.to_string()])
            .env("RUST_LOG", "warn");
        if let Some(servers) = etcd_servers {
            command.args(["--etcd-servers", servers]);
        }
        let mut daemon = Daemon::spawn("skiff-control", command, log)?;
        let written =
            ["pki/ca.crt", "admin.token", "admin.kubeconfig"].map(|file| data_dir.join(file));
        daemon.wait_until("write its CA, token and kubeconfig", || {
            written.iter().all(|file| file.is_file())
        })?;
        Ok(Control {
            daemon,
            server_url: format!("https://127.0.0.1:{port}"),
            data_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status =
            "Name:\tskiff-control\nVmPeak:\t  200000 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(vm_rss_kib(status), Some(12345));
        assert_eq!(vm_rss_kib("Name:\tzombie\n"), None);
    }

    #[test]
    fn this_process_has_open_file_limits() {
        let (soft, hard) = open_file_limits().unwrap();
        assert!(soft <= hard);
    }

    #[test]
    fn scratch_dirs_are_removed_on_drop() {
        let base = std::env::temp_dir().join(format!("xtask-scratch-test-{}", std::process::id()));
        let path = {
            let scratch = ScratchDir::create(base.clone()).unwrap();
            std::fs::write(scratch.path().join("file"), "x").unwrap();
            scratch.path().to_owned()
        };
        assert!(!path.exists());
    }
}
