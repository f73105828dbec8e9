//! TCP and UDP servers that answer with their own name, for load-balancing tests.
//!
//! Owns listening sockets created inside a test namespace and the threads serving them. TCP: every
//! line a client sends is answered with `<name>\n` on the same connection (a connection can stay
//! open for long-lived tests), except `peer?`, answered with the client's address as the server
//! sees it (`ip:port`). UDP: every datagram is answered with `<name>`, and `peer?` with the
//! sender's address. Stops and joins its threads on drop.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::{NetNs, NetNsError};

#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error(transparent)]
    NetNs(#[from] NetNsError),
    #[error("binding {address} in network namespace {netns}: {source}")]
    Bind {
        address: SocketAddr,
        netns: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running TCP+UDP name server.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

const POLL: Duration = Duration::from_millis(20);

impl EchoServer {
    /// Listens on `address:port` (TCP and UDP) inside `netns`, answering with `name`.
    pub fn start(
        netns: &NetNs,
        name: &str,
        address: Ipv4Addr,
        port: u16,
    ) -> Result<EchoServer, EchoError> {
        let socket_address = SocketAddr::from((address, port));
        let bind_error = |source| EchoError::Bind {
            address: socket_address,
            netns: netns.name().to_owned(),
            source,
        };
        let (tcp, udp) = netns
            .run(|| -> std::io::Result<(TcpListener, UdpSocket)> {
                Ok((
                    TcpListener::bind(socket_address)?,
                    UdpSocket::bind(socket_address)?,
                ))
            })?
            .map_err(bind_error)?;
        tcp.set_nonblocking(true).map_err(bind_error)?;
        udp.set_read_timeout(Some(POLL)).map_err(bind_error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (stop, name) = (Arc::clone(&stop), name.to_owned());
            threads.push(std::thread::spawn(move || serve_tcp(&tcp, &name, &stop)));
        }
        {
            let (stop, name) = (Arc::clone(&stop), name.to_owned());
            threads.push(std::thread::spawn(move || serve_udp(&udp, &name, &stop)));
        }
        Ok(EchoServer { stop, threads })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The question that is answered with the client's address instead of the name.
pub const PEER_QUESTION: &str = "peer?";

fn serve_tcp(listener: &TcpListener, name: &str, stop: &Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let (name, stop) = (name.to_owned(), Arc::clone(stop));
                std::thread::spawn(move || answer_lines(stream, peer, &name, &stop));
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => wait_readable(listener),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Waits until the listener has a connection to accept, or [`POLL`] passed.
fn wait_readable(listener: &TcpListener) {
    let mut descriptor = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(listener),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe {
        libc::poll(&mut descriptor, 1, POLL.as_millis() as libc::c_int);
    }
}

fn answer_lines(stream: TcpStream, peer: SocketAddr, name: &str, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                let answer = if line.trim() == PEER_QUESTION {
                    peer.to_string()
                } else {
                    name.to_owned()
                };
                if writer.write_all(format!("{answer}\n").as_bytes()).is_err() {
                    return;
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn serve_udp(socket: &UdpSocket, name: &str, stop: &AtomicBool) {
    let mut buffer = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((length, peer)) = socket.recv_from(&mut buffer) {
            let answer = if &buffer[..length] == PEER_QUESTION.as_bytes() {
                peer.to_string()
            } else {
                name.to_owned()
            };
            let _ = socket.send_to(answer.as_bytes(), peer);
        }
    }
}
