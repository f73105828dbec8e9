//! A daemon under test run as a child process whose stderr is appended to a log file, killed
//! (SIGKILL) on demand and on drop, and started again with the same log.
//!
//! Owns the child handle and the log file only; what to run and where (the command, its
//! namespace) is the caller's.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
};

pub struct LoggedProcess {
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl LoggedProcess {
    /// A process slot logging to `log` (nothing runs yet).
    pub fn new(log: PathBuf) -> LoggedProcess {
        LoggedProcess {
            log,
            child: Mutex::new(None),
        }
    }

    /// Spawns `command` with stdout discarded and stderr appended to the log; a previous child
    /// is killed first.
    pub fn start(&self, mut command: Command) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|error| panic!("opening {}: {error}", self.log.display()));
        let mut child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {command:?}: {error}"));
        match self.child.lock() {
            Ok(mut slot) => *slot = Some(child),
            // A test panicked while holding the slot: do not leave the child behind.
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// SIGKILLs the child, if one runs (no cleanup of its own can run), and reaps it.
    pub fn kill(&self) {
        let taken = self
            .child
            .lock()
            .map(|mut slot| slot.take())
            .unwrap_or(None);
        if let Some(mut child) = taken {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Everything the process (and its earlier runs) wrote to stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LoggedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
