//! Where netlink work runs, and in which network namespace.
//!
//! Owns the worker thread with its current-thread tokio runtime that every public call of
//! [`super`] runs on, the opening of a pod's network namespace, and the rtnetlink connections in
//! the node's and the pod's namespaces. Never calls `setns()` on a thread it did not create: the
//! worker starts in the calling thread's namespace (a new thread inherits it), and the pod's
//! connection is opened by a short-lived thread that enters the pod's namespace, creates the
//! socket (a netlink socket stays bound to the namespace it was created in) and exits.

use std::{
    fmt,
    fs::File,
    future::Future,
    io,
    path::{Path, PathBuf},
    thread,
};

use nix::sched::{CloneFlags, setns};
use tracing::{Instrument as _, Span};

use super::NetlinkError;

/// Runs `work` on a new thread with its own current-thread runtime, inside `span`, and returns
/// its result. The thread is in the calling thread's network namespace, so the caller decides
/// what "the node" is. Works whether or not the caller is itself inside a tokio runtime. A panic
/// in `work` is re-raised on the calling thread.
pub(super) fn run_on_worker<T, Work, Fut>(span: Span, work: Work) -> Result<T, NetlinkError>
where
    T: Send,
    Work: FnOnce() -> Fut + Send,
    Fut: Future<Output = Result<T, NetlinkError>>,
{
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("skiff-netlink".to_owned())
            .spawn_scoped(scope, move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .build()
                    .map_err(|source| NetlinkError::Io {
                        operation: "start the netlink runtime".to_owned(),
                        source,
                    })?;
                runtime.block_on(work().instrument(span))
            })
            .map_err(|source| NetlinkError::Io {
                operation: "start the netlink worker thread".to_owned(),
                source,
            })?;
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The network namespace a netlink connection talks to, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Place {
    /// The namespace the plugin was called in.
    Node,
    /// A pod's namespace, by the path it was opened from.
    Pod(PathBuf),
}

impl fmt::Display for Place {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Node => formatter.write_str("the node's network namespace"),
            Place::Pod(path) => write!(formatter, "network namespace {}", path.display()),
        }
    }
}

/// An open pod network namespace (`CNI_NETNS`). The descriptor is what the veth's peer is created
/// in and what the pod connection's thread enters.
#[derive(Debug)]
pub(super) struct PodNetns {
    pub(super) path: PathBuf,
    pub(super) file: File,
}

impl PodNetns {
    /// Opens `path`; a path that does not exist (including an empty one) is
    /// [`NetlinkError::NetnsNotFound`].
    pub(super) fn open(path: &Path) -> Result<PodNetns, NetlinkError> {
        match File::open(path) {
            Ok(file) => Ok(PodNetns {
                path: path.to_owned(),
                file,
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                Err(NetlinkError::NetnsNotFound {
                    path: path.to_owned(),
                })
            }
            Err(source) => Err(NetlinkError::Io {
                operation: format!("open network namespace {}", path.display()),
                source,
            }),
        }
    }

    pub(super) fn place(&self) -> Place {
        Place::Pod(self.path.clone())
    }
}

/// A netlink connection into one network namespace, driven by the worker's runtime.
pub(super) struct Connection {
    pub(super) handle: rtnetlink::Handle,
    pub(super) place: Place,
}

impl Connection {
    /// A connection in the worker thread's own namespace, the node's. Must be called inside the
    /// worker's runtime.
    pub(super) fn open_in_node() -> Result<Connection, NetlinkError> {
        let place = Place::Node;
        let handle = open_and_spawn(&place)?;
        Ok(Connection { handle, place })
    }

    /// A connection in `netns`, opened by a short-lived thread that enters it. Must be called
    /// inside the worker's runtime.
    pub(super) fn open_in_pod(netns: &PodNetns) -> Result<Connection, NetlinkError> {
        let place = netns.place();
        let runtime = tokio::runtime::Handle::current();
        let opened = thread::scope(|scope| {
            let opener = thread::Builder::new()
                .name("skiff-netlink-pod".to_owned())
                .spawn_scoped(scope, || {
                    setns(&netns.file, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                        NetlinkError::Io {
                            operation: format!("enter {place}"),
                            source: io::Error::from(errno),
                        }
                    })?;
                    // The socket registers with the worker's reactor; it belongs to this
                    // thread's (the pod's) namespace for its whole life.
                    let _runtime = runtime.enter();
                    rtnetlink::new_connection().map_err(|source| NetlinkError::Io {
                        operation: format!("open a netlink socket in {place}"),
                        source,
                    })
                })
                .map_err(|source| NetlinkError::Io {
                    operation: "start the thread that enters the pod's network namespace"
                        .to_owned(),
                    source,
                })?;
            match opener.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        });
        let (connection, handle, _unsolicited) = opened?;
        tokio::spawn(connection);
        Ok(Connection { handle, place })
    }
}

impl Connection {
    /// Turns an rtnetlink error into [`NetlinkError::Netlink`] naming `operation` and this
    /// connection's namespace.
    pub(super) fn failed(
        &self,
        operation: impl fmt::Display,
    ) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
        let operation = format!("{operation} in {}", self.place);
        move |source| NetlinkError::Netlink { operation, source }
    }
}

/// Whether `error` is the kernel's refusal with `expected` (an errno such as `libc::EEXIST`).
pub(super) fn is_errno(error: &rtnetlink::Error, expected: i32) -> bool {
    match error {
        rtnetlink::Error::NetlinkError(message) => {
            message.raw_code().checked_neg() == Some(expected)
        }
        _ => false,
    }
}

fn open_and_spawn(place: &Place) -> Result<rtnetlink::Handle, NetlinkError> {
    let (connection, handle, _unsolicited) =
        rtnetlink::new_connection().map_err(|source| NetlinkError::Io {
            operation: format!("open a netlink socket in {place}"),
            source,
        })?;
    tokio::spawn(connection);
    Ok(handle)
}
