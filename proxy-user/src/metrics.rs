//! Prometheus metrics on `--metrics-addr`: per-service and per-backend packet, byte and new-flow
//! counters and drop-reason counters, summed over the per-CPU statistics maps at scrape time.
//!
//! Owns the text exposition format and the tiny HTTP endpoint serving it (`GET /metrics`). Reads
//! maps only; never writes them.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::maps::{MapData, PerCpuArray};
use proxy_common::{DropReason, ExternalPath, FlowCounter};
use tracing::warn;

use crate::{
    maps::DataplaneMaps,
    stats::{PerCpuCounter, sum_per_cpu},
    sync::{DataplaneState, service_key},
    translate::Desired,
};

/// Labels of a service frontend, by service id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceLabels {
    pub namespace: String,
    pub name: String,
    pub port: String,
    /// `VIP:port/PROTOCOL`.
    pub frontend: String,
}

pub type ServiceNames = BTreeMap<u32, ServiceLabels>;

/// The labels of every frontend of `desired`, keyed by the service id `state` gave it.
pub fn service_names(desired: &Desired, state: &DataplaneState) -> ServiceNames {
    desired
        .frontends
        .iter()
        .filter_map(|(frontend, wanted)| {
            let value = state.services.get(&service_key(frontend))?;
            let labels = ServiceLabels {
                namespace: wanted.service.namespace.clone(),
                name: wanted.service.name.clone(),
                port: wanted.service.port.clone(),
                frontend: format!(
                    "{}:{}/{}",
                    frontend.address,
                    frontend.port,
                    frontend.protocol.name()
                ),
            };
            Some((value.service_id, labels))
        })
        .collect()
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A per-CPU counter's total; an unreadable entry counts as zero (the scrape still answers).
fn total<V: PerCpuCounter>(map: &PerCpuArray<MapData, V>, index: u32) -> V {
    sum_per_cpu(map, index).unwrap_or_default()
}

/// What the controller reports besides the maps.
#[derive(Debug, Default)]
pub struct ControllerCounters {
    /// Synchronisations that failed (a full map, exhausted ids): the dataplane kept its content.
    pub sync_errors: std::sync::atomic::AtomicU64,
    /// Source reloads rejected (unparsable file).
    pub source_errors: std::sync::atomic::AtomicU64,
}

/// The exposition text for the current map contents.
pub fn render(maps: &DataplaneMaps, names: &ServiceNames, counters: &ControllerCounters) -> String {
    let mut text = String::new();
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    let _ = writeln!(
        text,
        "# HELP skiff_proxy_sync_errors_total Synchronisations of the dataplane that failed (full map, ids exhausted); the dataplane kept its previous content.\n\
         # TYPE skiff_proxy_sync_errors_total counter\n\
         skiff_proxy_sync_errors_total {}\n\
         # HELP skiff_proxy_source_errors_total Source reloads rejected as invalid; the last good content stays.\n\
         # TYPE skiff_proxy_source_errors_total counter\n\
         skiff_proxy_source_errors_total {}",
        load(&counters.sync_errors),
        load(&counters.source_errors)
    );
    let families = [
        (
            "skiff_proxy_service_packets_total",
            "Packets of balanced flows of a service frontend, both directions.",
        ),
        (
            "skiff_proxy_service_bytes_total",
            "Bytes of balanced flows of a service frontend, both directions.",
        ),
        (
            "skiff_proxy_service_new_flows_total",
            "New connections (TCP) or flows (UDP) balanced for a service frontend.",
        ),
    ];
    let service_counters: Vec<(&ServiceLabels, FlowCounter)> = names
        .iter()
        .map(|(id, labels)| (labels, total(&maps.service_stats, *id)))
        .collect();
    for (index, (family, help)) in families.iter().enumerate() {
        let _ = writeln!(text, "# HELP {family} {help}\n# TYPE {family} counter");
        for (labels, counter) in &service_counters {
            let value = [counter.packets, counter.bytes, counter.new_flows][index];
            let _ = writeln!(
                text,
                "{family}{{namespace=\"{}\",service=\"{}\",port=\"{}\",frontend=\"{}\"}} {value}",
                escape(&labels.namespace),
                escape(&labels.name),
                escape(&labels.port),
                escape(&labels.frontend)
            );
        }
    }
    let backends: Vec<(u32, String)> = maps
        .backends
        .iter()
        .filter_map(Result::ok)
        .map(|(id, backend)| {
            let address = std::net::Ipv4Addr::from(backend.address.to_ne_bytes());
            (id, format!("{address}:{}", u16::from_be(backend.port)))
        })
        .collect();
    let families = [
        (
            "skiff_proxy_backend_packets_total",
            "Packets of balanced flows of a backend, both directions.",
        ),
        (
            "skiff_proxy_backend_bytes_total",
            "Bytes of balanced flows of a backend, both directions.",
        ),
        (
            "skiff_proxy_backend_new_flows_total",
            "New connections or flows balanced to a backend.",
        ),
    ];
    for (index, (family, help)) in families.iter().enumerate() {
        let _ = writeln!(text, "# HELP {family} {help}\n# TYPE {family} counter");
        for (id, backend) in &backends {
            let counter = total(&maps.backend_stats, *id);
            let value = [counter.packets, counter.bytes, counter.new_flows][index];
            let _ = writeln!(text, "{family}{{backend=\"{backend}\"}} {value}");
        }
    }
    let _ = writeln!(
        text,
        "# HELP skiff_proxy_drops_total Packets dropped or rejected by the dataplane, by reason.\n\
         # TYPE skiff_proxy_drops_total counter"
    );
    for reason in DropReason::ALL {
        let counter = total(&maps.drop_stats, reason.index());
        let _ = writeln!(
            text,
            "skiff_proxy_drops_total{{reason=\"{}\"}} {}",
            reason.name(),
            counter.packets
        );
    }
    let _ = writeln!(
        text,
        "# HELP skiff_proxy_external_packets_total North-south packets by the way they took (XDP transmit or redirect, TC neighbour hand-off, local backend, replies).\n\
         # TYPE skiff_proxy_external_packets_total counter"
    );
    for path in ExternalPath::ALL {
        let counter = total(&maps.external_path_stats, path.index());
        let _ = writeln!(
            text,
            "skiff_proxy_external_packets_total{{path=\"{}\"}} {}",
            path.name(),
            counter.packets
        );
    }
    let snat = maps.snat_usage();
    let _ = writeln!(
        text,
        "# HELP skiff_proxy_snat_ports_in_use Node ports held by source-NATed flows to remote backends.\n\
         # TYPE skiff_proxy_snat_ports_in_use gauge\n\
         skiff_proxy_snat_ports_in_use {}\n\
         # HELP skiff_proxy_snat_ports_in_use_max Node ports held towards the busiest backend port (the range is per backend port).\n\
         # TYPE skiff_proxy_snat_ports_in_use_max gauge\n\
         skiff_proxy_snat_ports_in_use_max {}",
        snat.ports_in_use,
        snat.per_backend.values().max().copied().unwrap_or(0)
    );
    let _ = writeln!(
        text,
        "# HELP skiff_proxy_services Service frontends in the dataplane.\n# TYPE skiff_proxy_services gauge\n\
         skiff_proxy_services {}\n\
         # HELP skiff_proxy_backends Backends in the dataplane.\n# TYPE skiff_proxy_backends gauge\n\
         skiff_proxy_backends {}",
        names.len(),
        backends.len()
    );
    text
}

/// Serves `GET /metrics` on `address` from a background thread.
pub fn serve(
    address: SocketAddr,
    pin_directory: PathBuf,
    names: Arc<Mutex<ServiceNames>>,
    counters: Arc<ControllerCounters>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(address)?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(error) = answer(stream, &pin_directory, &names, &counters) {
                warn!(%error, "metrics request failed");
            }
        }
    });
    Ok(())
}

fn answer(
    stream: TcpStream,
    pin_directory: &std::path::Path,
    names: &Mutex<ServiceNames>,
    counters: &ControllerCounters,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read the headers too (up to the blank line, at most 100), so closing after the answer
    // does not reset the connection of a client still sending them.
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut stream = stream;
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if path == "/metrics" || path.starts_with("/metrics?") {
        match DataplaneMaps::open(pin_directory) {
            Ok(maps) => {
                let names = names.lock().map(|names| names.clone()).unwrap_or_default();
                ("200 OK", render(&maps, &names, counters))
            }
            Err(error) => ("503 Service Unavailable", format!("{error}\n")),
        }
    } else {
        ("404 Not Found", "only /metrics is served here\n".to_owned())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
