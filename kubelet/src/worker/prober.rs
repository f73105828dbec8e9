//! Running probes and lifecycle hook handlers: the I/O half of [`crate::pod::probe`].
//!
//! Owns the three probe mechanisms — a command through CRI `ExecSync` (exit code 0 succeeds,
//! the probe timeout is the exec timeout and running over it fails), an HTTP/1.1 GET over a
//! plain TCP connection (status 200..400 succeeds) and a TCP connect — and the `exec` and
//! `httpGet` handlers of `postStart`/`preStop` hooks, with upstream's failure messages. Every
//! network step is bounded by the given timeout.
//!
//! Must not decide anything: when to probe, thresholds and what a result means for the
//! container are [`crate::pod::probe`]'s and the pod worker's. Never changes runtime state
//! besides the commands it is told to run.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::{
    cri::Runtime,
    pod::{
        format_pod,
        observed::ProbeResult,
        probe::{HttpGetTarget, ProbeAction, ProbeRun, http_status_result, join_host_port},
    },
};

/// The most of an HTTP response head read before giving up on finding the status line.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// How one probe run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProbeOutcome {
    /// `Some` result, or `None` for a probe error (upstream throws the result away).
    pub result: Option<ProbeResult>,
    /// The probe's output on failure (command output, HTTP status, connect error) or the
    /// error's text.
    pub output: String,
}

impl ProbeOutcome {
    fn success() -> Self {
        Self {
            result: Some(ProbeResult::Success),
            output: String::new(),
        }
    }

    fn failure(output: impl Into<String>) -> Self {
        Self {
            result: Some(ProbeResult::Failure),
            output: output.into(),
        }
    }

    fn error(output: impl Into<String>) -> Self {
        Self {
            result: None,
            output: output.into(),
        }
    }
}

/// Runs one probe.
pub(super) async fn run_probe(runtime: &Runtime, run: &ProbeRun) -> ProbeOutcome {
    let action = match &run.action {
        Ok(action) => action,
        Err(error) => return ProbeOutcome::error(error.to_string()),
    };
    match action {
        ProbeAction::Exec { command } => {
            exec_probe(runtime, &run.container_id, command, run.timeout).await
        }
        ProbeAction::HttpGet(target) => match http_get(target, run.timeout).await {
            Ok(status) => match http_status_result(status) {
                (ProbeResult::Success, _) => ProbeOutcome::success(),
                (ProbeResult::Failure, message) => ProbeOutcome::failure(message),
            },
            Err(message) => ProbeOutcome::failure(message),
        },
        ProbeAction::TcpSocket { host, port } => {
            match tcp_connect(&join_host_port(host, *port), run.timeout).await {
                Ok(_) => ProbeOutcome::success(),
                Err(message) => ProbeOutcome::failure(message),
            }
        }
        ProbeAction::Unsupported(message) => ProbeOutcome::failure(message.clone()),
    }
}

async fn exec_probe(
    runtime: &Runtime,
    container_id: &str,
    command: &[String],
    timeout: Duration,
) -> ProbeOutcome {
    match runtime
        .exec_sync(container_id, command.to_vec(), timeout)
        .await
    {
        Ok(result) if result.exit_code == 0 => ProbeOutcome::success(),
        Ok(result) => ProbeOutcome::failure(combined_output(&result.stdout, &result.stderr)),
        Err(error) if error.is_timeout() => {
            ProbeOutcome::failure(format!("command {:?} timed out", command.join(" ")))
        }
        Err(error) => ProbeOutcome::error(error.to_string()),
    }
}

fn combined_output(stdout: &[u8], stderr: &[u8]) -> String {
    let mut output = String::from_utf8_lossy(stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(stderr));
    output
}

/// `GET` `target` within `timeout`; the response's status code, or upstream-like error text
/// (`Get "http://…": dial tcp …: connect: connection refused`).
async fn http_get(target: &HttpGetTarget, timeout: Duration) -> Result<u16, String> {
    let url = target.url();
    let attempt = async {
        let mut stream = tcp_connect(&target.address(), timeout).await?;
        let io_error = |error: std::io::Error| format!("{}", error.kind());
        stream
            .write_all(target.request().as_bytes())
            .await
            .map_err(io_error)?;
        let mut head = Vec::new();
        let mut buffer = [0_u8; 2048];
        loop {
            if let Some(end) = head.windows(2).position(|w| w == b"\r\n") {
                return parse_status_line(&head[..end]);
            }
            if head.len() > MAX_RESPONSE_HEAD {
                return Err("malformed HTTP response: no status line".to_owned());
            }
            let read = stream.read(&mut buffer).await.map_err(io_error)?;
            if read == 0 {
                return Err("EOF".to_owned());
            }
            head.extend_from_slice(&buffer[..read]);
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(message)) => Err(format!("Get {url:?}: {message}")),
        Err(_elapsed) => Err(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
    }
}

/// `HTTP/1.1 404 Not Found` → 404.
fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(version), Some(Ok(status))) if version.starts_with("HTTP/") => Ok(status),
        _ => Err(format!("malformed HTTP status line {line:?}")),
    }
}

/// Connects to `address` within `timeout`; errors read like Go's `dial tcp 10.0.0.5:80:
/// connect: connection refused`.
async fn tcp_connect(address: &str, timeout: Duration) -> Result<TcpStream, String> {
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(format!("dial tcp {address}: connect: {}", error.kind())),
        Err(_elapsed) => Err(format!("dial tcp {address}: i/o timeout")),
    }
}

/// Runs a `postStart`/`preStop` handler (`exec` or `httpGet`; `sleep` waits) of `container`
/// (instance `container_id`). `timeout` bounds an exec command (zero: no bound but the CRI
/// call's own) and an HTTP request (zero: the CRI call timeout). Any HTTP response counts as
/// success, as upstream. On failure returns upstream's message (`Exec lifecycle hook ([…])
/// for Container "…" in Pod "…" failed - error: …, message: "…"`).
pub(super) async fn run_hook(
    runtime: &Runtime,
    pod: &Pod,
    container: &Container,
    container_id: &str,
    handler: &LifecycleHandler,
    pod_ip: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(sleep) = &handler.sleep {
        let seconds = Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0));
        tokio::time::sleep(seconds).await;
        return Ok(());
    }
    let action = ProbeAction::for_hook(handler, container, pod_ip)
        .map_err(|error| format!("Cannot run handler: {error}"))?;
    match action {
        ProbeAction::Exec { command } => {
            let result = runtime
                .exec_sync(container_id, command.clone(), timeout)
                .await;
            let (error, output) = match result {
                Ok(result) if result.exit_code == 0 => return Ok(()),
                Ok(result) => (
                    format!(
                        "command '{}' exited with {}: {}",
                        command.join(" "),
                        result.exit_code,
                        String::from_utf8_lossy(&result.stderr)
                    ),
                    combined_output(&result.stdout, &result.stderr),
                ),
                Err(error) => (error.to_string(), String::new()),
            };
            Err(format!(
                "Exec lifecycle hook ([{}]) for Container {:?} in Pod {:?} failed - error: {error}, message: {output:?}",
                command.join(" "),
                container.name,
                format_pod(pod)
            ))
        }
        ProbeAction::HttpGet(target) => {
            let timeout = if timeout.is_zero() {
                runtime.call_timeout()
            } else {
                timeout
            };
            http_get(&target, timeout).await.map(|_| ()).map_err(|error| {
                format!(
                    "HTTP lifecycle hook ({}) for Container {:?} in Pod {:?} failed - error: {error}",
                    target.path,
                    container.name,
                    format_pod(pod)
                )
            })
        }
        ProbeAction::Unsupported(message) => Err(message),
        // `for_hook` never resolves to a TCP check (it reports tcpSocket as unsupported).
        ProbeAction::TcpSocket { .. } => Err(
            "Cannot run handler: invalid handler: tcpSocket is not supported in lifecycle hooks"
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    fn target(port: u16) -> HttpGetTarget {
        HttpGetTarget {
            scheme: "HTTP".to_owned(),
            host: "127.0.0.1".to_owned(),
            port,
            path: "/healthz".to_owned(),
            headers: vec![("User-Agent".to_owned(), "kube-probe/1.35".to_owned())],
        }
    }

    /// Serves one connection with `response`, returning the request it read.
    async fn serve_once(listener: TcpListener, response: &'static str) -> String {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut request = Vec::new();
        let mut buffer = [0_u8; 1024];
        while !request.ends_with(b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await.expect("read");
            if read == 0 {
                break;
            }
            request.extend_from_slice(&buffer[..read]);
        }
        stream.write_all(response.as_bytes()).await.expect("write");
        String::from_utf8(request).expect("utf-8 request")
    }

    #[tokio::test]
    async fn http_get_returns_the_status_code_and_sends_the_user_agent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(serve_once(listener, "HTTP/1.1 404 Not Found\r\n\r\n"));

        let status = http_get(&target(port), Duration::from_secs(1)).await;

        assert_eq!(status, Ok(404));
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /healthz HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("User-Agent: kube-probe/1.35\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn http_get_to_a_closed_port_fails_like_upstream() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);

        let error = http_get(&target(port), Duration::from_secs(1))
            .await
            .unwrap_err();

        assert_eq!(
            error,
            format!(
                "Get \"http://127.0.0.1:{port}/healthz\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            )
        );
    }

    #[tokio::test]
    async fn http_get_times_out_when_no_answer_comes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();

        let error = http_get(&target(port), Duration::from_millis(200))
            .await
            .unwrap_err();

        assert!(error.contains("context deadline exceeded"), "{error}");
        drop(listener);
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_line(b"HTTP/1.0 200 OK"), Ok(200));
        assert!(parse_status_line(b"SSH-2.0-OpenSSH").is_err());
    }
}
