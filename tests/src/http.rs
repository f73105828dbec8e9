//! A minimal HTTP/1.1 `GET` for tests: metrics and health endpoints of the daemons under test,
//! over a plain TCP connection made in the calling thread's network namespace.
//!
//! Owns only the request and the split of the answer into status and body; no keep-alive,
//! no chunked decoding (the servers it talks to answer with `Content-Length` and close).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// `GET path` from `address`: the status code and the body.
pub fn get(address: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    // One write: a server that answers after the request line may close before later pieces.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    // A server that sends its whole answer and closes may reset the connection instead of
    // ending it when the request was not read to the end; keep what arrived before that.
    let mut bytes = Vec::new();
    if let Err(error) = stream.read_to_end(&mut bytes)
        && (bytes.is_empty() || error.kind() != std::io::ErrorKind::ConnectionReset)
    {
        return Err(error);
    }
    let response = String::from_utf8_lossy(&bytes).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no HTTP status line in {response:?}"),
            )
        })?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
