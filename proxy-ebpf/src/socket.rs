//! Service translation at the socket layer for the node's own traffic (cgroup `connect4`,
//! `sendmsg4`, `recvmsg4`, `getpeername4` hooks).
//!
//! Owns choosing a backend when a socket of the node's network namespace connects (or sends a
//! datagram) to a ClusterIP, rewriting the destination before any packet exists, and showing the
//! VIP again to `recvmsg`/`getpeername`. The hooks are attached to a cgroup and so see sockets of
//! every network namespace: they act only on sockets whose namespace cookie is the one skiff-proxy
//! wrote into `CONFIG`, so several nodes (namespaces) on one machine stay independent. Packet-level
//! NAT for pods lives in the TC programs; this module never touches packets.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use proxy_common::{
    DropReason, SOCKET_NAT_FORWARD, SOCKET_NAT_REVERSE, ServiceKey, SocketNatKey, SocketNatValue,
};

use crate::{conntrack, lb, maps::SOCKET_NAT, stats};

/// Verdicts of cgroup socket-address programs.
const ALLOW: i32 = 1;
const REJECT: i32 = 0;

/// Whether the socket belongs to the network namespace this skiff-proxy manages.
#[inline(always)]
fn ours(ctx: &SockAddrContext) -> bool {
    let config = conntrack::config();
    // SAFETY: a helper taking the program's own context.
    config.netns_cookie != 0 && unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == config.netns_cookie
}

#[inline(always)]
fn socket_cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: a helper taking the program's own context.
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}

/// `connect4` and `sendmsg4`: a socket of the node addressing a ClusterIP gets a backend.
#[inline(always)]
pub fn translate_destination(ctx: &SockAddrContext) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    let address = ctx.sock_addr;
    // SAFETY: the kernel passes a valid bpf_sock_addr; these fields are readable in these hooks.
    let (destination, port, protocol) = unsafe {
        (
            (*address).user_ip4,
            (*address).user_port as u16,
            (*address).protocol as u8,
        )
    };
    let key = ServiceKey {
        address: destination,
        port,
        protocol,
        padding: 0,
    };
    let Some(service) = lb::service(&key) else {
        return ALLOW;
    };
    let cookie = socket_cookie(ctx);
    let forward_key = SocketNatKey {
        socket_cookie: cookie,
        address: destination,
        port,
        direction: SOCKET_NAT_FORWARD,
        padding: 0,
    };
    // A socket keeps its backend (UDP sendmsg on an unconnected socket, reconnects) while the
    // backend exists.
    if let Some(previous) = SOCKET_NAT.get_ptr(forward_key) {
        // SAFETY: the pointer comes from a successful lookup; the value is copied at once.
        let previous = unsafe { *previous };
        if let Some(backend) = lb::backend(previous.backend_id)
            && backend.address == previous.address
            && backend.port == previous.port
        {
            set_destination(ctx, previous.address, previous.port);
            return ALLOW;
        }
    }
    let now = conntrack::now_ns();
    // A socket has no flow hash yet: a Maglev frontend's slot is picked at random, which is
    // uniform over its backends as the table is.
    // SAFETY: a helper without arguments.
    let random = unsafe { bpf_get_prandom_u32() };
    let Some((backend_id, backend)) = lb::select(&service, 0, now, random) else {
        stats::count_drop(DropReason::NoEndpoints, 0);
        return REJECT;
    };
    let forward = SocketNatValue {
        address: backend.address,
        port: backend.port,
        padding: 0,
        backend_id,
        service_id: service.service_id,
    };
    let reverse_key = SocketNatKey {
        socket_cookie: cookie,
        address: backend.address,
        port: backend.port,
        direction: SOCKET_NAT_REVERSE,
        padding: 0,
    };
    let reverse = SocketNatValue {
        address: destination,
        port,
        ..forward
    };
    if SOCKET_NAT.insert(forward_key, forward, 0).is_err()
        || SOCKET_NAT.insert(reverse_key, reverse, 0).is_err()
    {
        stats::count_drop(DropReason::ConntrackFull, 0);
        return REJECT;
    }
    stats::count_flow(service.service_id, backend_id, 0, true);
    set_destination(ctx, backend.address, backend.port);
    ALLOW
}

/// `recvmsg4` and `getpeername4`: show the VIP instead of the backend it was translated to.
#[inline(always)]
pub fn restore_service_address(ctx: &SockAddrContext) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    let address = ctx.sock_addr;
    // SAFETY: as in `translate_destination`.
    let (source, port) = unsafe { ((*address).user_ip4, (*address).user_port as u16) };
    let key = SocketNatKey {
        socket_cookie: socket_cookie(ctx),
        address: source,
        port,
        direction: SOCKET_NAT_REVERSE,
        padding: 0,
    };
    if let Some(service) = SOCKET_NAT.get_ptr(key) {
        // SAFETY: as above.
        let service = unsafe { *service };
        set_destination(ctx, service.address, service.port);
    }
    ALLOW
}

#[inline(always)]
fn set_destination(ctx: &SockAddrContext, address: u32, port: u16) {
    // SAFETY: `user_ip4` and `user_port` are writable in these hooks.
    unsafe {
        (*ctx.sock_addr).user_ip4 = address;
        (*ctx.sock_addr).user_port = u32::from(port);
    }
}
