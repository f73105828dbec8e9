//! cgroup socket-address programs: ClusterIP translation for the node's own sockets.
//!
//! - `sock_connect4`, `sock_sendmsg4`: a socket of the managed network namespace that connects or
//!   sends to a ClusterIP is pointed at a backend instead.
//! - `sock_recvmsg4`, `sock_getpeername4`: the backend's address is shown as the VIP again.
//!
//! Sockets of other network namespaces are left alone (see `socket.rs`).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod program {
    use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
    use proxy_ebpf::socket;

    #[cgroup_sock_addr(connect4)]
    pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
        socket::translate_destination(&ctx)
    }

    #[cgroup_sock_addr(sendmsg4)]
    pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
        socket::translate_destination(&ctx)
    }

    #[cgroup_sock_addr(recvmsg4)]
    pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
        socket::restore_service_address(&ctx)
    }

    #[cgroup_sock_addr(getpeername4)]
    pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
        socket::restore_service_address(&ctx)
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "sock holds BPF programs: it is built for bpfel-unknown-none and embedded in skiff-proxy"
    );
    std::process::exit(2);
}
