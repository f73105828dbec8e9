//! `skiff-proxy status`: the dataplane's maps as readable tables, like `cilium bpf lb list`.
//!
//! Owns the formatting of services (frontend → backends with their conditions; a Maglev table as
//! its share of slots per backend), conntrack entries and SNAT port use. Reads the pinned maps
//! only.

use std::{fmt::Write as _, net::Ipv4Addr};

use std::collections::BTreeMap;

use proxy_common::{
    BACKEND_FLAG_LOCAL, BACKEND_FLAG_READY, BACKEND_FLAG_SERVING, BACKEND_FLAG_TERMINATING,
    CONNTRACK_DIRECTION_FORWARD, ProxyConfig, SERVICE_FLAG_AFFINITY, SERVICE_FLAG_DROP_WHEN_EMPTY,
    SERVICE_FLAG_DSR, SERVICE_FLAG_EXTERNAL, SERVICE_FLAG_EXTERNAL_LOCAL, SERVICE_FLAG_MAGLEV,
    SERVICE_FLAG_SOURCE_RANGES, ServiceValue, TcpState,
};

use crate::{maps::DataplaneMaps, sync::DataplaneState};

fn address(network_order: u32) -> Ipv4Addr {
    Ipv4Addr::from(network_order.to_ne_bytes())
}

fn protocol_name(protocol: u8) -> &'static str {
    match protocol {
        6 => "TCP",
        17 => "UDP",
        _ => "?",
    }
}

fn backend_conditions(flags: u8) -> String {
    let mut words = Vec::new();
    for (bit, word) in [
        (BACKEND_FLAG_READY, "ready"),
        (BACKEND_FLAG_SERVING, "serving"),
        (BACKEND_FLAG_TERMINATING, "terminating"),
        (BACKEND_FLAG_LOCAL, "local"),
    ] {
        if flags & bit != 0 {
            words.push(word);
        }
    }
    words.join(",")
}

/// The services table: every frontend with its live backend slots.
pub fn services_table(state: &DataplaneState) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<24} {:>6} {:<28} {:<28}",
        "SERVICE ADDRESS", "ID", "BACKEND ADDRESS (SLOT)", "FLAGS"
    );
    for (key, value) in &state.services {
        // A NodePort answers on every NodePort address: `*:port`.
        let shown_address = if key.address == 0 {
            "*".to_owned()
        } else {
            address(key.address).to_string()
        };
        let frontend = format!(
            "{shown_address}:{}/{}",
            u16::from_be(key.port),
            protocol_name(key.protocol)
        );
        let flags = service_flags(value, state);
        let slots = state.live_slots(value).unwrap_or_default();
        if value.flags & SERVICE_FLAG_MAGLEV != 0 && !slots.is_empty() {
            maglev_rows(&mut text, state, &frontend, value, &slots, &flags);
            continue;
        }
        if slots.is_empty() {
            let _ = writeln!(
                text,
                "{frontend:<24} {:>6} {:<28} {}",
                value.service_id,
                "(no endpoints: reject)",
                flags.join(" ")
            );
        }
        for (slot, backend_id) in slots.iter().enumerate() {
            let backend = state
                .backends
                .get(backend_id)
                .map(|backend| {
                    format!(
                        "{}:{} ({slot}) [{}]",
                        address(backend.address),
                        u16::from_be(backend.port),
                        backend_conditions(backend.flags)
                    )
                })
                .unwrap_or_else(|| format!("missing backend {backend_id} ({slot})"));
            let shown = if slot == 0 { frontend.as_str() } else { "" };
            let _ = writeln!(
                text,
                "{shown:<24} {:>6} {backend:<28} {}",
                value.service_id,
                if slot == 0 {
                    flags.join(" ")
                } else {
                    String::new()
                }
            );
        }
    }
    text
}

fn service_flags(value: &ServiceValue, state: &DataplaneState) -> Vec<String> {
    let mut flags = Vec::new();
    if value.flags & SERVICE_FLAG_EXTERNAL != 0 {
        flags.push("external".to_owned());
    }
    if value.flags & SERVICE_FLAG_AFFINITY != 0 {
        flags.push(format!("affinity={}s", value.affinity_timeout_seconds));
    }
    if value.flags & SERVICE_FLAG_DROP_WHEN_EMPTY != 0 {
        flags.push("local-only".to_owned());
    }
    if value.flags & SERVICE_FLAG_EXTERNAL_LOCAL != 0 {
        flags.push("client-ip-kept".to_owned());
    }
    if value.flags & SERVICE_FLAG_DSR != 0 {
        flags.push("dsr".to_owned());
    }
    if value.flags & SERVICE_FLAG_SOURCE_RANGES != 0 {
        let ranges: Vec<String> = state
            .source_ranges
            .iter()
            .filter(|(id, _)| *id == value.service_id)
            .map(|(_, range)| range.to_string())
            .collect();
        flags.push(format!("source-ranges={}", ranges.join(",")));
    }
    flags
}

/// A Maglev frontend: its table size, then each backend with its share of the table.
fn maglev_rows(
    text: &mut String,
    state: &DataplaneState,
    frontend: &str,
    value: &ServiceValue,
    slots: &[u32],
    flags: &[String],
) {
    let mut shares: BTreeMap<u32, usize> = BTreeMap::new();
    for backend_id in slots {
        *shares.entry(*backend_id).or_default() += 1;
    }
    let mut flags = flags.to_vec();
    flags.push(format!("maglev M={}", slots.len()));
    for (row, (backend_id, share)) in shares.iter().enumerate() {
        let backend = state
            .backends
            .get(backend_id)
            .map(|backend| {
                format!(
                    "{}:{} ({share} slots) [{}]",
                    address(backend.address),
                    u16::from_be(backend.port),
                    backend_conditions(backend.flags)
                )
            })
            .unwrap_or_else(|| format!("missing backend {backend_id} ({share} slots)"));
        let shown = if row == 0 { frontend } else { "" };
        let _ = writeln!(
            text,
            "{shown:<24} {:>6} {backend:<28} {}",
            value.service_id,
            if row == 0 {
                flags.join(" ")
            } else {
                String::new()
            }
        );
    }
}

/// SNAT port use: reply entries of source-NATed flows, by (backend, port), against the range.
pub fn snat_summary(maps: &DataplaneMaps) -> String {
    let usage = maps.snat_usage();
    let config = maps
        .config
        .get(&0, 0)
        .unwrap_or_else(|_| ProxyConfig::default());
    let (min, max) = if config.snat_port_max >= config.snat_port_min && config.snat_port_min != 0 {
        (config.snat_port_min, config.snat_port_max)
    } else {
        let defaults = ProxyConfig::default();
        (defaults.snat_port_min, defaults.snat_port_max)
    };
    let range = u32::from(max - min) + 1;
    let busiest = usage.per_backend.values().max().copied().unwrap_or(0);
    format!(
        "SNAT: {} ports in use towards {} backend ports (range {min}-{max}: {range} per backend port; busiest {busiest})\n",
        usage.ports_in_use,
        usage.per_backend.len()
    )
}

/// The conntrack table (forward entries: one line per flow), at most `limit` lines.
pub fn conntrack_table(maps: &DataplaneMaps, limit: usize) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<5} {:<22} {:<22} {:<22} {:<12} {:>8}",
        "PROTO", "CLIENT", "SERVICE", "BACKEND", "STATE", "IDLE(s)"
    );
    let now = now_ns();
    let mut shown = 0;
    let mut total = 0;
    for entry in maps.conntrack.iter().filter_map(Result::ok) {
        let (key, value) = entry;
        if key.direction != CONNTRACK_DIRECTION_FORWARD {
            continue;
        }
        total += 1;
        if shown >= limit {
            continue;
        }
        shown += 1;
        let idle = now.saturating_sub(value.last_seen_ns) / 1_000_000_000;
        let _ = writeln!(
            text,
            "{:<5} {:<22} {:<22} {:<22} {:<12} {:>8}",
            protocol_name(key.protocol),
            format!(
                "{}:{}",
                address(key.source_address),
                u16::from_be(key.source_port)
            ),
            format!(
                "{}:{}",
                address(key.destination_address),
                u16::from_be(key.destination_port)
            ),
            format!(
                "{}:{}",
                address(value.nat_address),
                u16::from_be(value.nat_port)
            ),
            TcpState::from_byte(value.state).name(),
            idle
        );
    }
    let _ = writeln!(text, "{total} flows ({shown} shown)");
    text
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock `bpf_ktime_get_ns` reads.
fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|time| time.tv_sec() as u64 * 1_000_000_000 + time.tv_nsec() as u64)
        .unwrap_or(0)
}
