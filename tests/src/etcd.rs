//! A private etcd server per test, for the etcd store backend.
//!
//! Owns one `/usr/bin/etcd` process (Debian's etcd-server 3.4) listening on 127.0.0.1 only, on
//! free ports, with everything it writes (data directory and log) in one temporary directory
//! `/tmp/sketcd-<pid>-<n>/`, and its teardown on drop: SIGTERM, SIGKILL after a timeout, then the
//! directory is removed — also after a panic. Servers left behind by killed test processes (whose
//! pid no longer exists) are killed and their directories removed by the next test process.
//!
//! Never touches a system etcd (`/var/lib/etcd`, port 2379), never listens outside loopback, and
//! never kills a process that does not name its own directory on the command line.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Once,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// The etcd binary (Debian's etcd-server 3.4).
pub const ETCD_BINARY: &str = "/usr/bin/etcd";
/// Parent of every instance directory.
const BASE_DIR: &str = "/tmp";
/// Prefix of every instance directory: `/tmp/sketcd-<pid>-<n>`.
const DIR_PREFIX: &str = "sketcd";

const START_TIMEOUT: Duration = Duration::from_secs(15);
const TERM_TIMEOUT: Duration = Duration::from_secs(5);
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How long one `/health` probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Starts retried when etcd could not bind the ports it was given (another process took one
/// between the harness finding it free and etcd binding it).
const START_ATTEMPTS: usize = 3;
/// Lines of etcd's log quoted in start errors.
const LOG_TAIL_LINES: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("{action} {path}: {source}")]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("finding a free port on 127.0.0.1: {source}")]
    FreePort {
        #[source]
        source: std::io::Error,
    },
    #[error("starting {ETCD_BINARY} in {dir}: {source}")]
    Spawn {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "etcd in {dir} (client URL {client_url}) exited during start ({status}); \
         last lines of its log (removed with its directory):\n{tail}"
    )]
    Exited {
        dir: PathBuf,
        client_url: String,
        status: String,
        tail: String,
    },
    #[error(
        "etcd in {dir} did not report healthy on {client_url}/health within {waited:?} \
         (last answer: {last_answer}); last lines of its log (removed with its directory):\n{tail}"
    )]
    NotReady {
        dir: PathBuf,
        client_url: String,
        waited: Duration,
        last_answer: String,
        tail: String,
    },
}

/// A running private etcd; stopped and removed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    dir: PathBuf,
    client: SocketAddr,
    child: Child,
}

impl EtcdServer {
    /// Starts a single-member etcd on free 127.0.0.1 ports with a fresh data directory and waits
    /// until `/health` reports it healthy (it has elected itself leader). Takes about 100-200 ms;
    /// blocks, so from async code call it in `spawn_blocking` or on a multi-threaded runtime.
    pub fn start() -> Result<EtcdServer, EtcdError> {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(remove_stale_instances);

        let mut attempt = 1;
        loop {
            match EtcdServer::start_once() {
                Err(EtcdError::Exited { ref tail, .. })
                    if attempt < START_ATTEMPTS && tail.contains("address already in use") =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn start_once() -> Result<EtcdServer, EtcdError> {
        let dir = Path::new(BASE_DIR).join(crate::unique_name(DIR_PREFIX));
        std::fs::create_dir(&dir).map_err(|source| EtcdError::File {
            action: "creating the etcd directory",
            path: dir.clone(),
            source,
        })?;
        // Until etcd runs, the directory is all there is to remove on failure.
        let spawned = free_ports().and_then(|(client, peer)| {
            spawn(&dir, client, peer).map(|child| EtcdServer {
                dir: dir.clone(),
                client,
                child,
            })
        });
        let mut server = spawned.inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&dir);
        })?;
        // From here on, dropping `server` (on an error below) stops etcd and removes everything.
        server.wait_ready()?;
        Ok(server)
    }

    /// The URL clients connect to, e.g. `http://127.0.0.1:40123`.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// The instance directory; etcd's data directory and log are below it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// etcd's combined stdout and stderr.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// etcd's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `/health` until it reports healthy, etcd exits or [`START_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<(), EtcdError> {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => return Err(self.exited(status.to_string())),
                Err(error) => return Err(self.exited(format!("waiting for it failed: {error}"))),
            }
            let last_answer = match health(self.client) {
                Ok(body) if body.contains(r#""health":"true""#) => return Ok(()),
                Ok(body) => body,
                Err(error) => error.to_string(),
            };
            if start.elapsed() > START_TIMEOUT {
                return Err(EtcdError::NotReady {
                    dir: self.dir.clone(),
                    client_url: self.client_url(),
                    waited: START_TIMEOUT,
                    last_answer,
                    tail: log_tail(&self.log_file()),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn exited(&self, status: String) -> EtcdError {
        EtcdError::Exited {
            dir: self.dir.clone(),
            client_url: self.client_url(),
            status,
            tail: log_tail(&self.log_file()),
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some(problem) = stop_child(&mut self.child) {
            eprintln!("harness: etcd in {}: {problem}", self.dir.display());
        }
        if let Err(error) = std::fs::remove_dir_all(&self.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("harness: could not remove {}: {error}", self.dir.display());
        }
    }
}

/// Two ports on 127.0.0.1 that were free a moment ago (client, peer). Both listeners are held
/// until both ports are known, so the two differ.
fn free_ports() -> Result<(SocketAddr, SocketAddr), EtcdError> {
    let bind = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| Ok((listener.local_addr()?, listener)))
            .map_err(|source| EtcdError::FreePort { source })
    };
    let (client, _client_listener) = bind()?;
    let (peer, _peer_listener) = bind()?;
    Ok((client, peer))
}

/// Starts etcd with everything below `dir`, listening on `client` and `peer` only.
fn spawn(dir: &Path, client: SocketAddr, peer: SocketAddr) -> Result<Child, EtcdError> {
    let log_path = dir.join("etcd.log");
    let log = File::create(&log_path).map_err(|source| EtcdError::File {
        action: "creating the etcd log",
        path: log_path.clone(),
        source,
    })?;
    let log_err = log.try_clone().map_err(|source| EtcdError::File {
        action: "duplicating the handle of",
        path: log_path.clone(),
        source,
    })?;
    let client_url = format!("http://{client}");
    let peer_url = format!("http://{peer}");
    let name = "skiff-test";
    Command::new(ETCD_BINARY)
        .arg("--name")
        .arg(name)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("{name}={peer_url}")])
        .args(["--initial-cluster-state", "new"])
        .args(["--initial-cluster-token", &crate::unique_name(DIR_PREFIX)])
        // A single member elects itself after one election timeout: keep it short.
        .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
        .args([
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
            "--log-level",
            "warn",
        ])
        // No metrics or pprof listeners; no automatic compaction (tests compact explicitly).
        .args(["--auto-compaction-retention", "0"])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|source| EtcdError::Spawn {
            dir: dir.to_owned(),
            source,
        })
}

/// `GET /health` on etcd's client port; the response body.
fn health(client: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&client, PROBE_TIMEOUT)?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    write!(
        stream,
        "GET /health HTTP/1.0\r\nHost: {client}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map_or(response.as_str(), |(_, body)| body)
        .trim()
        .to_owned())
}

/// SIGTERM, then SIGKILL after [`TERM_TIMEOUT`]; waits for the process. Returns a problem if it
/// could not be reaped.
fn stop_child(child: &mut Child) -> Option<String> {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return None;
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let _ = kill(pid, Signal::SIGTERM);
    if wait_with_timeout(child, TERM_TIMEOUT) {
        return None;
    }
    let _ = child.kill();
    if wait_with_timeout(child, KILL_TIMEOUT) {
        return None;
    }
    Some(format!(
        "pid {pid} did not exit within {:?} of SIGKILL",
        KILL_TIMEOUT
    ))
}

/// Whether `child` exited (and was reaped) within `timeout`.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(POLL_INTERVAL),
            Ok(None) | Err(_) => return false,
        }
    }
}

/// The last [`LOG_TAIL_LINES`] lines of `log`.
fn log_tail(log: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(log) else {
        return format!("({} could not be read)", log.display());
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Pids of live processes whose command line names a path below `dir` (an abandoned etcd).
fn processes_using(dir: &Path) -> Vec<i32> {
    let below = format!("{}/", dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline
                .split(|byte| *byte == 0)
                .any(|argument| String::from_utf8_lossy(argument).contains(&below))
                .then_some(pid)
        })
        .collect()
}

/// Kills the etcd of every instance directory whose harness process no longer exists, then
/// removes the directory.
fn remove_stale_instances() {
    for (_, path) in crate::abandoned_entries(BASE_DIR, DIR_PREFIX) {
        let pids = processes_using(&path);
        for pid in &pids {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        let start = Instant::now();
        while !processes_using(&path).is_empty() && start.elapsed() < KILL_TIMEOUT {
            std::thread::sleep(POLL_INTERVAL);
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => eprintln!(
                "harness: removed stale etcd directory {} (killed {pids:?})",
                path.display()
            ),
            Err(error) => eprintln!("harness: could not remove {}: {error}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_loopback_ports() {
        let (client, peer) = free_ports().unwrap();
        assert_ne!(client.port(), peer.port());
        assert!(client.ip().is_loopback() && peer.ip().is_loopback());
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("etcd.log");
        let text: Vec<String> = (0..40).map(|n| format!("line {n}")).collect();
        std::fs::write(&log, text.join("\n")).unwrap();
        let tail = log_tail(&log);
        assert!(tail.starts_with("line 10\n"));
        assert!(tail.ends_with("line 39"));
    }
}
