//! The IPAM state of one network on disk, shared by every skiff-cni process and thread of the node.
//!
//! Owns the network's directory, its lock and the atomic replacement of its state file: every
//! operation locks, reads, runs one pure [`IpamState`] operation and, only if the state changed,
//! writes it back. It never decides which address an attachment gets (that is
//! [`super::allocator`]) and never defines the file format (that is [`super::state_file`]). It
//! never replaces a state file it cannot decode. The protocol (files, lock, crash safety) is
//! described in the parent module's documentation.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::allocator::{AllocationError, Attachment, IpamState};
use super::network::Ipv4Network;
use super::state_file;

/// The state file in a network's directory.
const STATE_FILE: &str = "state.json";
/// The lock file in a network's directory; created when missing, never deleted.
const LOCK_FILE: &str = "lock";
/// The prefix of a state file being written: `state.json.tmp.<pid>`.
const TEMPORARY_PREFIX: &str = "state.json.tmp.";

/// Why an IPAM store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The network name cannot be used as the name of the network's directory.
    #[error(
        "CNI network name {name:?} cannot name an IPAM directory: a network name must match [A-Za-z0-9][A-Za-z0-9_.-]* (letters, digits, '_', '.' and '-', starting with a letter or digit); fix \"name\" in the network configuration"
    )]
    InvalidNetworkName { name: String },
    /// A file system call failed; `operation` says what was being done to `path`.
    #[error("{operation} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: io::Error,
    },
    /// The state file exists but is not a state this code understands. It is left untouched.
    #[error(
        "the IPAM state file {} is unreadable: {reason}. It was left untouched and no address is allocated or released until it is repaired: replacing it would forget which pod holds which address and could give one address to two pods. Fix the file by hand (it is JSON: {{\"version\": 1, \"lastAllocated\": ..., \"allocations\": [{{\"ip\", \"containerID\", \"ifname\"}}]}}) or restore a backup, holding the lock while you do (flock {} ...); delete it only if no pod on this node still uses an address of this network (for example right after a reboot)",
        path.display(),
        path.with_file_name(LOCK_FILE).display()
    )]
    Corrupt { path: PathBuf, reason: String },
    /// The pure allocation rules refused the request; nothing was written.
    #[error(transparent)]
    Allocation(#[from] AllocationError),
}

/// The allocations of one CNI network on this node, kept in `<data_dir>/<network_name>/`.
///
/// Cheap to share between threads (`&IpamStore` is enough): it holds only the directory's path,
/// and every operation opens and locks the lock file on its own, so operations from any thread or
/// process on the same directory never interleave.
#[derive(Debug, Clone)]
pub struct IpamStore {
    directory: PathBuf,
}

/// How an operation holds the directory's lock.
#[derive(Debug, Clone, Copy)]
enum LockMode {
    /// Readers: any number at once, but never together with a writer.
    Shared,
    /// Writers: alone.
    Exclusive,
}

/// A held `flock` on the lock file. Dropping it closes this operation's own descriptor of the lock
/// file, which releases the lock (and the kernel releases it too if the process dies).
#[derive(Debug)]
struct HeldLock {
    _file: File,
}

impl IpamStore {
    /// Opens (creating with mode 0700 if needed) `<data_dir>/<network_name>/`; the network name
    /// must be one safe path component (CNI network names: `[A-Za-z0-9][A-Za-z0-9_.-]*`), else
    /// [`IpamError::InvalidNetworkName`]. The lock file is created here too, so a directory the
    /// plugin cannot write is reported at once.
    pub fn open(data_dir: &Path, network_name: &str) -> Result<IpamStore, IpamError> {
        if !is_valid_network_name(network_name) {
            return Err(IpamError::InvalidNetworkName {
                name: network_name.to_owned(),
            });
        }
        let directory = data_dir.join(network_name);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&directory)
            .map_err(|source| IpamError::Io {
                path: directory.clone(),
                operation: "creating the IPAM directory",
                source,
            })?;
        let store = IpamStore { directory };
        store.open_lock_file()?;
        Ok(store)
    }

    /// The address of `attachment` in `pod_cidr`: the one it already holds (a retried ADD), else a
    /// free one, which is recorded durably before this returns. See [`IpamState::allocate`] for
    /// the rules. A failed allocation changes nothing on disk.
    pub fn allocate(
        &self,
        pod_cidr: Ipv4Network,
        attachment: &Attachment,
    ) -> Result<Ipv4Addr, IpamError> {
        self.update(|state| state.allocate(pod_cidr, attachment))
    }

    /// Releases the address `attachment` holds and returns it; `Ok(None)` if it held none (a
    /// repeated DEL).
    pub fn release(&self, attachment: &Attachment) -> Result<Option<Ipv4Addr>, IpamError> {
        self.update(|state| Ok(state.release(attachment)))
    }

    /// The address `attachment` holds, if any (for CNI CHECK).
    pub fn lookup(&self, attachment: &Attachment) -> Result<Option<Ipv4Addr>, IpamError> {
        self.query(|state| state.lookup(attachment))
    }

    /// Releases every allocation whose attachment is not in `valid` (CNI GC's
    /// `cni.dev/valid-attachments`) and returns the released addresses in ascending order.
    pub fn gc(&self, valid: &[Attachment]) -> Result<Vec<Ipv4Addr>, IpamError> {
        self.update(|state| Ok(state.gc(valid)))
    }

    /// Every allocation, ordered by address.
    pub fn allocations(&self) -> Result<BTreeMap<Ipv4Addr, Attachment>, IpamError> {
        self.query(|state| state.allocations().clone())
    }

    /// Free usable addresses in `pod_cidr` (for the CNI STATUS command: 0 means ADD cannot
    /// succeed).
    pub fn free_addresses(&self, pod_cidr: Ipv4Network) -> Result<u64, IpamError> {
        self.query(|state| state.free_addresses(pod_cidr))
    }

    /// The network's directory, `<data_dir>/<network_name>`.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    fn state_path(&self) -> PathBuf {
        self.directory.join(STATE_FILE)
    }

    fn lock_path(&self) -> PathBuf {
        self.directory.join(LOCK_FILE)
    }

    /// Runs `operation` on the current state under the exclusive lock and writes the state back
    /// only if it changed. When `operation` fails nothing is written.
    fn update<T>(
        &self,
        operation: impl FnOnce(&mut IpamState) -> Result<T, AllocationError>,
    ) -> Result<T, IpamError> {
        let _lock = self.lock(LockMode::Exclusive)?;
        let before = self.read_state()?;
        let mut after = before.clone();
        let output = operation(&mut after)?;
        if after != before {
            self.write_state(&after)?;
        }
        Ok(output)
    }

    /// Runs `query` on the current state under the shared lock.
    fn query<T>(&self, query: impl FnOnce(&IpamState) -> T) -> Result<T, IpamError> {
        let _lock = self.lock(LockMode::Shared)?;
        Ok(query(&self.read_state()?))
    }

    fn open_lock_file(&self) -> Result<File, IpamError> {
        let path = self.lock_path();
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            // Never truncate: the lock file's contents do not matter, only its inode does.
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| IpamError::Io {
                path,
                operation: "opening the IPAM lock file",
                source,
            })
    }

    /// Takes the directory's lock, waiting for it as long as it takes.
    ///
    /// The lock file is opened anew for every operation: `flock` locks belong to an open file
    /// description, so two operations sharing one descriptor (two threads of one process) would
    /// not exclude each other.
    fn lock(&self, mode: LockMode) -> Result<HeldLock, IpamError> {
        let file = self.open_lock_file()?;
        let operation = match mode {
            LockMode::Shared => libc::LOCK_SH,
            LockMode::Exclusive => libc::LOCK_EX,
        };
        loop {
            // SAFETY: `flock` only reads the descriptor number, which `file` keeps open for the
            // whole call.
            let result = unsafe { libc::flock(file.as_raw_fd(), operation) };
            if result == 0 {
                return Ok(HeldLock { _file: file });
            }
            let source = io::Error::last_os_error();
            if source.kind() != io::ErrorKind::Interrupted {
                return Err(IpamError::Io {
                    path: self.lock_path(),
                    operation: "locking the IPAM lock file",
                    source,
                });
            }
        }
    }

    /// The state in `state.json`; a missing file is the empty state. Call with the lock held.
    fn read_state(&self) -> Result<IpamState, IpamError> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(bytes) => {
                state_file::decode(&bytes).map_err(|reason| IpamError::Corrupt { path, reason })
            }
            Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(IpamState::new()),
            Err(source) => Err(IpamError::Io {
                path,
                operation: "reading the IPAM state file",
                source,
            }),
        }
    }

    /// Replaces `state.json` with `state` atomically and durably. Call with the exclusive lock
    /// held.
    fn write_state(&self, state: &IpamState) -> Result<(), IpamError> {
        let state_path = self.state_path();
        let bytes = state_file::encode(state).map_err(|error| IpamError::Io {
            path: state_path.clone(),
            operation: "encoding the new IPAM state for",
            source: io::Error::other(error),
        })?;
        self.remove_leftover_temporary_files();
        let temporary = self
            .directory
            .join(format!("{TEMPORARY_PREFIX}{}", std::process::id()));
        if let Err(error) = write_synced(&temporary, &bytes) {
            remove_temporary_file(&temporary);
            return Err(error);
        }
        if let Err(source) = fs::rename(&temporary, &state_path) {
            remove_temporary_file(&temporary);
            return Err(IpamError::Io {
                path: state_path,
                operation: "renaming the new IPAM state over",
                source,
            });
        }
        // The rename is durable only once the directory itself is on disk. If this sync fails the
        // new state is already in place but might not survive a power loss; reporting the failure
        // makes the runtime retry (ADD and DEL are idempotent) or clean up with DEL.
        File::open(&self.directory)
            .and_then(|directory| directory.sync_all())
            .map_err(|source| IpamError::Io {
                path: self.directory.clone(),
                operation: "syncing the IPAM directory",
                source,
            })
    }

    /// Removes `state.json.tmp.*` files left by writers killed before their rename. Call with the
    /// exclusive lock held: then no live writer owns one. Failures are only logged; readers ignore
    /// these files anyway.
    fn remove_leftover_temporary_files(&self) {
        let entries = match fs::read_dir(&self.directory) {
            Ok(entries) => entries,
            Err(error) => {
                tracing::warn!(
                    directory = %self.directory.display(),
                    %error,
                    "cannot list the IPAM directory to remove leftover temporary state files"
                );
                return;
            }
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(TEMPORARY_PREFIX)
            {
                remove_temporary_file(&entry.path());
            }
        }
    }
}

/// Whether `name` is a CNI network name, which is also one safe path component (never empty,
/// never `.` or `..`, no `/`).
fn is_valid_network_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric())
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
}

/// Writes `bytes` to a new file at `path` (mode 0600, truncating a leftover of the same name) and
/// syncs it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), IpamError> {
    let io_error = |operation| {
        move |source| IpamError::Io {
            path: path.to_owned(),
            operation,
            source,
        }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("creating the temporary IPAM state file"))?;
    file.write_all(bytes)
        .map_err(io_error("writing the temporary IPAM state file"))?;
    file.sync_all()
        .map_err(io_error("syncing the temporary IPAM state file"))
}

/// Best-effort removal of a temporary state file; the next writer retries it.
fn remove_temporary_file(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(
            path = %path.display(),
            %error,
            "cannot remove a temporary IPAM state file; it is ignored and removed by a later write"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::process::{Command, Stdio};
    use std::sync::Barrier;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    const NETWORK: &str = "skiff";

    fn cidr(text: &str) -> Ipv4Network {
        text.parse().expect("a valid network")
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().expect("a valid address")
    }

    fn pod(n: usize) -> Attachment {
        Attachment::new(format!("container-{n}"), "eth0")
    }

    fn new_store() -> (tempfile::TempDir, IpamStore) {
        let data_dir = tempfile::tempdir().unwrap();
        let store = IpamStore::open(data_dir.path(), NETWORK).unwrap();
        (data_dir, store)
    }

    /// The state as written on disk, decoded independently of the store.
    fn state_on_disk(store: &IpamStore) -> IpamState {
        state_file::decode(&fs::read(store.state_path()).unwrap()).unwrap()
    }

    fn file_names(directory: &Path) -> BTreeSet<String> {
        fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn open_creates_a_private_directory_named_after_the_network() {
        let data_dir = tempfile::tempdir().unwrap();
        let nested = data_dir.path().join("var/lib/skiff/ipam");
        let store = IpamStore::open(&nested, "k8s-pod-network").unwrap();
        assert_eq!(store.directory(), nested.join("k8s-pod-network"));
        let metadata = fs::metadata(store.directory()).unwrap();
        assert!(metadata.is_dir());
        assert_eq!(metadata.permissions().mode() & 0o777, 0o700);
        assert!(store.directory().join(LOCK_FILE).is_file());
        // Opening again is fine and keeps what is there.
        IpamStore::open(&nested, "k8s-pod-network").unwrap();
    }

    #[test]
    fn open_refuses_network_names_that_are_not_one_safe_path_component() {
        let data_dir = tempfile::tempdir().unwrap();
        for name in [
            "", ".", "..", ".hidden", "-net", "_net", "a/b", "../up", "pod net", "né",
        ] {
            let error = IpamStore::open(data_dir.path(), name).unwrap_err();
            assert!(
                matches!(&error, IpamError::InvalidNetworkName { name: got } if got == name),
                "{name:?}: {error}"
            );
        }
        assert!(
            file_names(data_dir.path()).is_empty(),
            "nothing was created"
        );
        for name in ["skiff", "k8s-pod-network", "net1.v2_a-b", "0"] {
            IpamStore::open(data_dir.path(), name).unwrap();
        }
    }

    #[test]
    fn allocations_round_trip_through_the_state_file() {
        let (data_dir, store) = new_store();
        let pod_cidr = cidr("10.244.1.0/24");
        assert_eq!(store.lookup(&pod(0)).unwrap(), None);
        assert_eq!(store.allocate(pod_cidr, &pod(0)).unwrap(), ip("10.244.1.2"));
        assert_eq!(store.allocate(pod_cidr, &pod(1)).unwrap(), ip("10.244.1.3"));

        // Another store on the same directory (another plugin process) sees the same state.
        let reopened = IpamStore::open(data_dir.path(), NETWORK).unwrap();
        assert_eq!(reopened.lookup(&pod(0)).unwrap(), Some(ip("10.244.1.2")));
        assert_eq!(
            reopened.allocations().unwrap(),
            BTreeMap::from([(ip("10.244.1.2"), pod(0)), (ip("10.244.1.3"), pod(1))])
        );
        assert_eq!(
            state_on_disk(&store).allocations(),
            &reopened.allocations().unwrap()
        );

        assert_eq!(reopened.release(&pod(0)).unwrap(), Some(ip("10.244.1.2")));
        assert_eq!(store.release(&pod(0)).unwrap(), None, "a repeated DEL");
        assert_eq!(store.lookup(&pod(0)).unwrap(), None);
        // Round robin continues from the persisted cursor.
        assert_eq!(store.allocate(pod_cidr, &pod(2)).unwrap(), ip("10.244.1.4"));
        assert_eq!(
            file_names(store.directory()),
            BTreeSet::from([LOCK_FILE.to_owned(), STATE_FILE.to_owned()])
        );
    }

    #[test]
    fn retried_allocate_returns_the_same_address_without_rewriting_the_file() {
        let (_data_dir, store) = new_store();
        let pod_cidr = cidr("10.244.1.0/24");
        let first = store.allocate(pod_cidr, &pod(0)).unwrap();
        let before = fs::metadata(store.state_path()).unwrap();
        assert_eq!(store.allocate(pod_cidr, &pod(0)).unwrap(), first);
        let after = fs::metadata(store.state_path()).unwrap();
        assert_eq!(after.ino(), before.ino(), "state.json was not replaced");
        assert_eq!(store.allocations().unwrap().len(), 1);
    }

    #[test]
    fn exhausted_pool_error_leaves_the_file_byte_identical() {
        let (_data_dir, store) = new_store();
        let pod_cidr = cidr("10.0.0.0/30"); // one pod address: 10.0.0.2
        store.allocate(pod_cidr, &pod(0)).unwrap();
        let bytes = fs::read(store.state_path()).unwrap();
        let inode = fs::metadata(store.state_path()).unwrap().ino();

        let error = store.allocate(pod_cidr, &pod(1)).unwrap_err();
        assert!(
            matches!(
                error,
                IpamError::Allocation(AllocationError::Exhausted { usable: 1, .. })
            ),
            "{error}"
        );
        assert!(error.to_string().contains("10.0.0.0/30"), "{error}");
        assert_eq!(fs::read(store.state_path()).unwrap(), bytes);
        assert_eq!(fs::metadata(store.state_path()).unwrap().ino(), inode);
        assert_eq!(
            file_names(store.directory()),
            BTreeSet::from([LOCK_FILE.to_owned(), STATE_FILE.to_owned()])
        );
    }

    #[test]
    fn free_addresses_reports_room_left_in_the_pod_cidr() {
        let (_data_dir, store) = new_store();
        let pod_cidr = cidr("10.0.0.8/29"); // pods: .10 .. .14
        assert_eq!(store.free_addresses(pod_cidr).unwrap(), 5);
        for n in 0..5 {
            store.allocate(pod_cidr, &pod(n)).unwrap();
        }
        assert_eq!(store.free_addresses(pod_cidr).unwrap(), 0);
        store.release(&pod(3)).unwrap();
        assert_eq!(store.free_addresses(pod_cidr).unwrap(), 1);
        assert_eq!(store.free_addresses(cidr("10.0.0.0/31")).unwrap(), 0);
    }

    #[test]
    fn gc_releases_allocations_of_attachments_that_are_gone() {
        let (_data_dir, store) = new_store();
        let pod_cidr = cidr("10.244.1.0/24");
        for n in 0..5 {
            store.allocate(pod_cidr, &pod(n)).unwrap();
        }
        // After a reboot only pods 1 and 3 were started again.
        let released = store.gc(&[pod(1), pod(3)]).unwrap();
        assert_eq!(released, ["10.244.1.2", "10.244.1.4", "10.244.1.6"].map(ip));
        assert_eq!(
            state_on_disk(&store).allocations(),
            &BTreeMap::from([(ip("10.244.1.3"), pod(1)), (ip("10.244.1.5"), pod(3))])
        );

        let inode = fs::metadata(store.state_path()).unwrap().ino();
        assert!(store.gc(&[pod(1), pod(3)]).unwrap().is_empty());
        assert_eq!(
            fs::metadata(store.state_path()).unwrap().ino(),
            inode,
            "a GC that releases nothing does not rewrite the file"
        );
    }

    #[test]
    fn corrupt_state_file_is_reported_with_its_path_and_left_untouched() {
        let (_data_dir, store) = new_store();
        let state_path = store.state_path();
        let corrupt = br#"{"version":1,"allocations":[{"ip":"10.244.1.2","#;
        fs::write(&state_path, corrupt).unwrap();
        let pod_cidr = cidr("10.244.1.0/24");

        let errors = [
            store.allocate(pod_cidr, &pod(0)).map(drop),
            store.release(&pod(0)).map(drop),
            store.gc(&[]).map(drop),
            store.lookup(&pod(0)).map(drop),
            store.allocations().map(drop),
            store.free_addresses(pod_cidr).map(drop),
        ];
        for result in errors {
            let error = result.unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(&error, IpamError::Corrupt { path, .. } if *path == state_path),
                "{message}"
            );
            assert!(
                message.contains(&state_path.display().to_string()),
                "{message}"
            );
            assert!(message.contains("left untouched"), "{message}");
            let lock = store.directory().join(LOCK_FILE);
            assert!(
                message.contains(&format!("flock {}", lock.display())),
                "{message}"
            );
        }
        assert_eq!(fs::read(&state_path).unwrap(), corrupt);
        assert_eq!(
            file_names(store.directory()),
            BTreeSet::from([LOCK_FILE.to_owned(), STATE_FILE.to_owned()])
        );
    }

    #[test]
    fn leftover_and_truncated_temporary_files_do_not_affect_the_state() {
        let (_data_dir, store) = new_store();
        let pod_cidr = cidr("10.244.1.0/24");
        store.allocate(pod_cidr, &pod(0)).unwrap();
        let committed = fs::read(store.state_path()).unwrap();

        // Writers killed before their rename: one had written a complete other state, one was
        // killed halfway through writing. (PIDs above Linux's maximum, so no live process's.)
        let mut other = IpamState::new();
        other.allocate(pod_cidr, &pod(98)).unwrap();
        other.allocate(pod_cidr, &pod(99)).unwrap();
        let other_bytes = state_file::encode(&other).unwrap();
        let complete = store.directory().join("state.json.tmp.4194305");
        let truncated = store.directory().join("state.json.tmp.4194306");
        fs::write(&complete, &other_bytes).unwrap();
        fs::write(&truncated, &other_bytes[..other_bytes.len() / 2]).unwrap();

        assert_eq!(store.lookup(&pod(99)).unwrap(), None);
        assert_eq!(
            store.allocations().unwrap(),
            BTreeMap::from([(ip("10.244.1.2"), pod(0))])
        );
        assert_eq!(fs::read(store.state_path()).unwrap(), committed);

        // The next write removes them under the exclusive lock.
        assert_eq!(store.allocate(pod_cidr, &pod(1)).unwrap(), ip("10.244.1.3"));
        assert_eq!(
            file_names(store.directory()),
            BTreeSet::from([LOCK_FILE.to_owned(), STATE_FILE.to_owned()])
        );
        assert_eq!(state_on_disk(&store).allocations().len(), 2);
    }

    #[test]
    fn written_files_are_private_to_the_owner() {
        let (_data_dir, store) = new_store();
        store.allocate(cidr("10.244.1.0/24"), &pod(0)).unwrap();
        for name in [STATE_FILE, LOCK_FILE] {
            let mode = fs::metadata(store.directory().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{name} has mode {mode:o}");
        }
    }

    #[test]
    fn exclusive_lock_excludes_other_threads_of_the_same_process() {
        let (_data_dir, store) = new_store();
        let held = store.lock(LockMode::Exclusive).unwrap();
        let (done_sender, done) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let result = store.allocate(cidr("10.244.1.0/24"), &pod(0));
                done_sender
                    .send(result.map_err(|error| error.to_string()))
                    .unwrap();
            });
            assert!(
                done.recv_timeout(Duration::from_millis(300)).is_err(),
                "allocate ran while another thread held the exclusive lock"
            );
            drop(held);
            let allocated = done.recv_timeout(Duration::from_secs(30)).unwrap();
            assert_eq!(allocated, Ok(ip("10.244.1.2")));
        });
    }

    #[test]
    fn readers_share_the_lock_with_each_other() {
        let (_data_dir, store) = new_store();
        let _held = store.lock(LockMode::Shared).unwrap();
        let (done_sender, done) = mpsc::channel();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                done_sender.send(store.lookup(&pod(0)).is_ok()).unwrap();
            });
            assert_eq!(done.recv_timeout(Duration::from_secs(30)), Ok(true));
        });
    }

    #[test]
    fn fifty_threads_get_fifty_distinct_addresses_then_release_them_all() {
        const THREADS: usize = 50;
        let (_data_dir, store) = new_store();
        let pod_cidr = cidr("10.244.1.0/24");
        let start = Barrier::new(THREADS);

        // One store shared by all threads: each operation must still lock on its own.
        let allocated: Vec<(usize, Ipv4Addr)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|n| {
                    let (store, start) = (&store, &start);
                    scope.spawn(move || {
                        start.wait();
                        (n, store.allocate(pod_cidr, &pod(n)).unwrap())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .collect()
        });
        let distinct: HashSet<Ipv4Addr> = allocated.iter().map(|(_, ip)| *ip).collect();
        assert_eq!(distinct.len(), THREADS);
        let on_disk = state_on_disk(&store);
        assert_eq!(on_disk.allocations().len(), THREADS);
        for (n, ip) in &allocated {
            assert_eq!(on_disk.allocations().get(ip), Some(&pod(*n)));
        }

        let released: Vec<(Ipv4Addr, Option<Ipv4Addr>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = allocated
                .iter()
                .map(|&(n, ip)| {
                    let (store, start) = (&store, &start);
                    scope.spawn(move || {
                        start.wait();
                        (ip, store.release(&pod(n)).unwrap())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .collect()
        });
        for (ip, got) in released {
            assert_eq!(got, Some(ip));
        }
        assert!(state_on_disk(&store).allocations().is_empty());
        assert!(store.allocations().unwrap().is_empty());
    }

    /// Set for a re-executed copy of this test binary: the data directory to allocate in.
    const CHILD_DATA_DIR: &str = "SKIFF_IPAM_TEST_CHILD_DATA_DIR";
    /// Set for a re-executed copy of this test binary: which child it is.
    const CHILD_INDEX: &str = "SKIFF_IPAM_TEST_CHILD_INDEX";
    const CHILD_PROCESSES: usize = 8;
    const ALLOCATIONS_PER_CHILD: usize = 10;
    const MULTI_PROCESS_CIDR: &str = "10.244.1.0/24";

    fn child_attachment(child: usize, n: usize) -> Attachment {
        Attachment::new(format!("process-{child}-{n}"), "eth0")
    }

    /// The body of one child process of
    /// `processes_allocating_at_once_get_distinct_addresses`; does nothing in a normal test run.
    #[test]
    fn child_process_allocates_when_re_executed() {
        let Some(data_dir) = std::env::var_os(CHILD_DATA_DIR) else {
            return;
        };
        let child: usize = std::env::var(CHILD_INDEX).unwrap().parse().unwrap();
        let store = IpamStore::open(Path::new(&data_dir), NETWORK).unwrap();
        for n in 0..ALLOCATIONS_PER_CHILD {
            store
                .allocate(cidr(MULTI_PROCESS_CIDR), &child_attachment(child, n))
                .unwrap();
        }
    }

    #[test]
    fn processes_allocating_at_once_get_distinct_addresses() {
        let data_dir = tempfile::tempdir().unwrap();
        // The test's name as the harness knows it: the module path without the crate name.
        let module = module_path!()
            .split_once("::")
            .map(|(_crate_name, path)| path)
            .unwrap();
        let child_test = format!("{module}::child_process_allocates_when_re_executed");
        let executable = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..CHILD_PROCESSES)
            .map(|child| {
                Command::new(&executable)
                    .args([child_test.as_str(), "--exact", "--nocapture"])
                    .env(CHILD_DATA_DIR, data_dir.path())
                    .env(CHILD_INDEX, child.to_string())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let output = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{stdout}\n{stderr}");
            assert!(
                stdout.contains("1 passed"),
                "the child test did not run:\n{stdout}"
            );
        }

        let store = IpamStore::open(data_dir.path(), NETWORK).unwrap();
        let allocations = store.allocations().unwrap();
        assert_eq!(allocations.len(), CHILD_PROCESSES * ALLOCATIONS_PER_CHILD);
        let owners: HashSet<&Attachment> = allocations.values().collect();
        for child in 0..CHILD_PROCESSES {
            for n in 0..ALLOCATIONS_PER_CHILD {
                assert!(owners.contains(&child_attachment(child, n)));
            }
        }
    }
}
