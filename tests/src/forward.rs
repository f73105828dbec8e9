//! TCP forwarding across the boundary of a test's network namespace.
//!
//! Owns a listener on one side (the host namespace or a [`NetNs`]) and, per accepted
//! connection, a connection to a target on the other side with bytes copied both ways. Lets a
//! process inside a namespace reach a server on the host's loopback (a kubelet in its node
//! namespace talking to skiff-control) and the other way round, without any interface, address
//! or route in the host namespace. Never listens anywhere but 127.0.0.1.
//!
//! Sockets belong to the namespace of the thread that created them, so the namespace side is
//! always created on a thread that entered the namespace; the copying threads may run anywhere.

use std::{
    fs::File,
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use nix::sched::{CloneFlags, setns};

use crate::netns::NetNs;

/// How often the accept loop looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("opening network namespace {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listening on {address} ({side}): {source}")]
    Listen {
        address: SocketAddr,
        side: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("entering the network namespace: {0}")]
    Enter(#[from] crate::netns::NetNsError),
}

/// Where a socket is made.
#[derive(Clone, Copy)]
enum Side {
    Host,
    Namespace,
}

/// A running forwarder; stops accepting and closes every forwarded connection on drop.
pub struct Forward {
    /// The address it listens on (127.0.0.1).
    pub listen: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Forward {
    /// Listens on 127.0.0.1:`port` inside `netns` and forwards each connection to `target` in
    /// the host namespace (`port` 0 picks a free one).
    pub fn to_host(netns: &NetNs, port: u16, target: SocketAddr) -> Result<Forward, ForwardError> {
        Forward::start(netns, Side::Namespace, port, target)
    }

    /// Listens on 127.0.0.1:`port` of the host namespace and forwards each connection to
    /// `target` inside `netns` (`port` 0 picks a free one).
    pub fn into_namespace(
        netns: &NetNs,
        port: u16,
        target: SocketAddr,
    ) -> Result<Forward, ForwardError> {
        Forward::start(netns, Side::Host, port, target)
    }

    fn start(
        netns: &NetNs,
        listen_side: Side,
        port: u16,
        target: SocketAddr,
    ) -> Result<Forward, ForwardError> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let bind = || TcpListener::bind(address);
        let (listener, side_name) = match listen_side {
            Side::Host => (bind(), "host namespace"),
            Side::Namespace => (netns.run(bind)?, "test namespace"),
        };
        let listen_error = |source| ForwardError::Listen {
            address,
            side: side_name,
            source,
        };
        let listener = listener.map_err(listen_error)?;
        listener.set_nonblocking(true).map_err(listen_error)?;
        let listen = listener.local_addr().map_err(listen_error)?;
        let connector = match listen_side {
            // Connections go into the namespace: made by a thread living there.
            Side::Host => Connector::in_namespace(netns)?,
            Side::Namespace => Connector::Host,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let stop = Arc::clone(&stop);
            let connections = Arc::clone(&connections);
            std::thread::spawn(move || {
                accept_loop(&listener, &connector, target, &stop, &connections);
            })
        };
        Ok(Forward {
            listen,
            stop,
            connections,
            accept: Some(accept),
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.listen.port()
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        if let Ok(connections) = self.connections.lock() {
            for connection in connections.iter() {
                let _ = connection.shutdown(Shutdown::Both);
            }
        }
    }
}

/// Makes the outgoing connections.
enum Connector {
    Host,
    /// Requests to a thread that entered the namespace.
    Namespace(mpsc::Sender<(SocketAddr, mpsc::Sender<std::io::Result<TcpStream>>)>),
}

impl Connector {
    fn in_namespace(netns: &NetNs) -> Result<Connector, ForwardError> {
        let file = File::open(netns.path()).map_err(|source| ForwardError::Open {
            path: netns.path().to_owned(),
            source,
        })?;
        let (requests, receiver) =
            mpsc::channel::<(SocketAddr, mpsc::Sender<std::io::Result<TcpStream>>)>();
        std::thread::spawn(move || {
            let entered = setns(&file, CloneFlags::CLONE_NEWNET);
            for (target, reply) in receiver {
                let result = match entered {
                    Ok(()) => TcpStream::connect_timeout(&target, Duration::from_secs(5)),
                    Err(error) => Err(std::io::Error::from(error)),
                };
                let _ = reply.send(result);
            }
        });
        Ok(Connector::Namespace(requests))
    }

    fn connect(&self, target: SocketAddr) -> std::io::Result<TcpStream> {
        match self {
            Connector::Host => TcpStream::connect_timeout(&target, Duration::from_secs(5)),
            Connector::Namespace(requests) => {
                let (reply, answer) = mpsc::channel();
                let gone = || std::io::Error::other("the namespace connector thread is gone");
                requests.send((target, reply)).map_err(|_| gone())?;
                answer.recv().map_err(|_| gone())?
            }
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    connector: &Connector,
    target: SocketAddr,
    stop: &AtomicBool,
    connections: &Mutex<Vec<TcpStream>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let incoming = match listener.accept() {
            Ok((incoming, _)) => incoming,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(_) => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        let _ = incoming.set_nonblocking(false);
        let Ok(outgoing) = connector.connect(target) else {
            let _ = incoming.shutdown(Shutdown::Both);
            continue;
        };
        if let (Ok(mut registry), Ok(a), Ok(b)) = (
            connections.lock(),
            incoming.try_clone(),
            outgoing.try_clone(),
        ) {
            registry.retain(|stream| stream.peer_addr().is_ok());
            registry.push(a);
            registry.push(b);
        }
        pump(incoming, outgoing);
    }
}

/// Copies both ways on two threads; each direction half-closes the other side when it ends.
fn pump(incoming: TcpStream, outgoing: TcpStream) {
    let (Ok(incoming_reader), Ok(outgoing_reader)) = (incoming.try_clone(), outgoing.try_clone())
    else {
        return;
    };
    std::thread::spawn(move || copy(incoming_reader, outgoing));
    std::thread::spawn(move || copy(outgoing_reader, incoming));
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                if to.write_all(&buffer[..read]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
