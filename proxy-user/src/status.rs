//! `skiff-proxy status`: the dataplane's maps as readable tables, like `cilium bpf lb list`.
//!
//! Owns the formatting of services (frontend → backends with their conditions), and conntrack
//! entries. Reads the pinned maps only.

use std::{fmt::Write as _, net::Ipv4Addr};

use proxy_common::{
    BACKEND_FLAG_LOCAL, BACKEND_FLAG_READY, BACKEND_FLAG_SERVING, BACKEND_FLAG_TERMINATING,
    CONNTRACK_DIRECTION_FORWARD, SERVICE_FLAG_AFFINITY, SERVICE_FLAG_DROP_WHEN_EMPTY, TcpState,
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
        let frontend = format!(
            "{}:{}/{}",
            address(key.address),
            u16::from_be(key.port),
            protocol_name(key.protocol)
        );
        let mut flags = Vec::new();
        if value.flags & SERVICE_FLAG_AFFINITY != 0 {
            flags.push(format!("affinity={}s", value.affinity_timeout_seconds));
        }
        if value.flags & SERVICE_FLAG_DROP_WHEN_EMPTY != 0 {
            flags.push("local-only".to_owned());
        }
        let slots = state.live_slots(value).unwrap_or_default();
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
