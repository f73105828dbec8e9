//! Node-local IPAM: which pod attachment holds which address of the node's podCIDR, kept on disk so
//! that every skiff-cni invocation on the node agrees.
//!
//! Owns allocation, release, lookup and garbage collection of pod addresses, per CNI network, and
//! their persistence. It creates no interfaces or routes (`netlink`, `routes`) and reads no CNI
//! configuration (`spec`): callers pass the data directory, the network name and the pod CIDR.
//!
//! - [`network`]: the [`Ipv4Network`] value type of a pod CIDR.
//! - [`allocator`]: the pure rules over an in-memory [`IpamState`] (reserved addresses, round
//!   robin, idempotent ADD, release, GC). No I/O.
//! - [`state_file`]: the JSON encoding of an [`IpamState`]. No I/O.
//! - [`store`]: [`IpamStore`], the directory, its lock and the atomic replacement of the state.
//!
//! # On disk
//!
//! `<dataDir>/<network name>/`, created with mode 0700, holds:
//! - `state.json`: the allocations and the round-robin cursor, in the format documented in
//!   [`state_file`] (`{"version": 1, "lastAllocated": "10.244.1.3", "allocations": [{"ip",
//!   "containerID", "ifname"}, ...]}`). A missing file means no allocations.
//! - `lock`: an empty file that is only ever `flock`ed. Created when missing and never deleted:
//!   deleting it would let one process lock a new `lock` while another still holds the old one.
//! - `state.json.tmp.<pid>`: a new state while process `<pid>` writes it, or after it was killed
//!   mid-write.
//!
//! # Lock
//!
//! Every operation opens `lock` anew and holds `flock(2)` on it across its whole
//! read-modify-write: exclusive for [`IpamStore::allocate`], [`IpamStore::release`] and
//! [`IpamStore::gc`]; shared for the read-only [`IpamStore::lookup`], [`IpamStore::allocations`]
//! and [`IpamStore::free_addresses`]. A `flock` lock belongs to an open file description, not to
//! a process, so opening the file per operation makes threads of one process exclude each other
//! exactly as separate plugin processes do. The kernel drops the lock when its descriptor is
//! closed, including when the process is killed, so there are no stale locks to break. The lock is
//! a separate file because `state.json` is replaced by `rename`: a lock taken on it would stay on
//! the replaced inode. Anyone editing `state.json` by hand should hold the same lock, e.g.
//! `flock <dir>/lock vi <dir>/state.json`.
//!
//! # Crash safety
//!
//! `state.json` is never modified in place. A writer, holding the exclusive lock, writes the whole
//! new state to `state.json.tmp.<pid>` (`O_CREAT|O_TRUNC`, mode 0600), `fsync`s it, `rename`s it
//! over `state.json` and `fsync`s the directory. `rename(2)` swaps the name atomically, so at every
//! moment `state.json` is either the complete old state or the complete new one: for readers
//! (which take the lock anyway), after the writer is killed at any point, and after a power loss,
//! because the new contents are on disk before the name can point at them. The directory `fsync`
//! makes the rename itself durable before the operation returns, so an address reported to the
//! runtime is on disk. A writer killed before its rename leaves only a temporary file: readers
//! never open one, and the next writer removes all of them under the exclusive lock (when no live
//! writer can own one).
//!
//! An operation that fails (an exhausted pool, say) or changes nothing (a retried ADD, a repeated
//! DEL, a GC with nothing to collect) writes nothing. A `state.json` that cannot be decoded is
//! reported as [`IpamError::Corrupt`] and left as it is, never replaced by an empty state: the
//! write protocol does not produce one, so it means outside damage or a bad hand edit, and starting
//! over could give an address that a running pod still uses to a second pod.
//!
//! # dataDir: tmpfs or persistent storage
//!
//! Pods never survive a reboot; their allocations survive it only if `dataDir` does.
//! - On persistent storage (host-local's default `/var/lib/cni/networks`), every allocation made
//!   before a reboot is still there after it, held for a container that no longer exists.
//!   host-local leaks such addresses until someone deletes its files by hand; here the runtime's
//!   CNI GC, which lists the attachments it still knows, releases them through [`IpamStore::gc`].
//!   Until that GC runs, a small podCIDR can run short after a reboot. The `fsync`s cost a disk
//!   flush on every ADD and DEL that changes the state.
//! - On tmpfs (under `/run`), a reboot empties the directory, which is exactly right since every
//!   pod is gone: nothing leaks, and the `fsync`s are almost free. The state then lives only as
//!   long as the boot, so nothing but a reboot may clear it while pods run.
//!
//! The protocol is the same on both, and so is the guarantee against killed processes; the power
//! loss argument above only matters on persistent storage.

pub mod allocator;
pub mod network;
pub mod state_file;
pub mod store;

pub use allocator::{AllocationError, Attachment, IpamState};
pub use network::{Ipv4Network, Ipv4NetworkError};
pub use store::{IpamError, IpamStore};
