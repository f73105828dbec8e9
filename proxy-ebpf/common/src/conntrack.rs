//! Connection tracking: one LRU map holding both directions of every balanced flow, and the
//! datapath configuration (timeouts, the owning network namespace).
//!
//! A flow client → VIP:port balanced to backend B has two entries:
//! - forward, keyed by the original tuple (client, VIP): value names the backend (and its
//!   address/port as `nat_*`) so later packets are DNATed the same way;
//! - reply, keyed by the tuple of B's replies (B, client): value names the VIP/port as `nat_*`
//!   so replies get their source rewritten back to the VIP.
//!
//! Timeouts follow the kernel's nf_conntrack defaults, as kube-proxy leaves them.

/// LRU hash map [`ConntrackKey`] → [`ConntrackValue`].
pub const CONNTRACK_MAP: &str = "CONNTRACK";
/// Array map with one [`ProxyConfig`] at index 0.
pub const CONFIG_MAP: &str = "CONFIG";

/// The key is the tuple of a packet going client → service (forward).
pub const CONNTRACK_DIRECTION_FORWARD: u8 = 0;
/// The key is the tuple of a reply going backend → client.
pub const CONNTRACK_DIRECTION_REPLY: u8 = 1;

/// A packet's 5-tuple (addresses and ports in network byte order) plus the direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConntrackKey {
    pub source_address: u32,
    pub destination_address: u32,
    pub source_port: u16,
    pub destination_port: u16,
    pub protocol: u8,
    /// `CONNTRACK_DIRECTION_*`.
    pub direction: u8,
    pub padding: u16,
}

/// TCP state as far as timeouts need it; UDP flows stay in [`TcpState::None`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpState {
    /// Not TCP.
    None = 0,
    /// SYN seen, no reply yet.
    SynSent = 1,
    /// The backend answered.
    Established = 2,
    /// One side sent FIN.
    Closing = 3,
    /// Both sides sent FIN.
    TimeWait = 4,
    /// RST seen.
    Close = 5,
}

impl TcpState {
    pub const ALL: [TcpState; 6] = [
        TcpState::None,
        TcpState::SynSent,
        TcpState::Established,
        TcpState::Closing,
        TcpState::TimeWait,
        TcpState::Close,
    ];

    pub const fn from_byte(byte: u8) -> TcpState {
        match byte {
            1 => TcpState::SynSent,
            2 => TcpState::Established,
            3 => TcpState::Closing,
            4 => TcpState::TimeWait,
            5 => TcpState::Close,
            _ => TcpState::None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            TcpState::None => "-",
            TcpState::SynSent => "SYN_SENT",
            TcpState::Established => "ESTABLISHED",
            TcpState::Closing => "FIN_WAIT",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
        }
    }
}

/// The entry has seen a packet in the reply direction (UDP: a stream, longer timeout).
pub const CONNTRACK_FLAG_SEEN_REPLY: u8 = 1;
/// Hairpin flow: a pod reached itself through a service. Its packets are also source-NATed to
/// the VIP (a pod would drop a packet from its own address as a martian), and its replies leave
/// and re-enter the same pod, so the reply entry is keyed by (backend, VIP).
pub const CONNTRACK_FLAG_HAIRPIN: u8 = 2;
/// A north-south flow balanced by `xdp_uplink`: replies are reverse-translated there (remote
/// backend) or at the backend pod's veth (local backend), and sent out of the uplink.
pub const CONNTRACK_FLAG_EXTERNAL: u8 = 4;
/// The flow's source was rewritten to `snat_address`:`snat_port` (a remote backend in SNAT
/// mode); the reply entry restores the client from its `snat_*`.
pub const CONNTRACK_FLAG_SNAT: u8 = 8;
/// Direct server return: the ingress node tunnels the flow's packets to the backend's node
/// (forward entry only; replies never come back through it).
pub const CONNTRACK_FLAG_DSR: u8 = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConntrackValue {
    /// `bpf_ktime_get_ns()` of the last packet of the flow, either direction.
    pub last_seen_ns: u64,
    /// `bpf_ktime_get_ns()` when the flow was balanced.
    pub created_ns: u64,
    pub backend_id: u32,
    pub service_id: u32,
    /// Forward: the backend's address; reply: the service VIP (network byte order).
    pub nat_address: u32,
    /// Forward: the backend's port; reply: the service port (network byte order).
    pub nat_port: u16,
    /// [`TcpState`] as a byte.
    pub state: u8,
    /// `CONNTRACK_FLAG_*` bits.
    pub flags: u8,
    /// With [`CONNTRACK_FLAG_SNAT`] — forward: the node address and port the source becomes;
    /// reply: the client's address and port, restored as the destination. Else 0.
    pub snat_address: u32,
    pub snat_port: u16,
    pub padding: u16,
}

/// Set in every [`ProxyConfig`] skiff-proxy writes; an all-zero entry (the state of a fresh array
/// map) lacks it, and the datapath then uses [`ProxyConfig::default`].
pub const PROXY_CONFIG_FLAG_WRITTEN: u32 = 1;

/// Datapath configuration written by skiff-proxy at start.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Cookie of the network namespace this skiff-proxy manages (cgroup socket hooks act only on
    /// sockets of this namespace).
    pub netns_cookie: u64,
    pub tcp_syn_sent_timeout_seconds: u32,
    pub tcp_established_timeout_seconds: u32,
    pub tcp_closing_timeout_seconds: u32,
    pub tcp_time_wait_timeout_seconds: u32,
    pub tcp_close_timeout_seconds: u32,
    pub udp_timeout_seconds: u32,
    pub udp_stream_timeout_seconds: u32,
    /// `PROXY_CONFIG_FLAG_*` bits.
    pub flags: u32,
    /// The uplink's address that remote-backend flows are source-NATed to (network byte order);
    /// 0 before skiff-proxy knows an uplink (then nothing is source-NATed: such flows pass).
    pub node_address: u32,
    /// The SNAT ports (host order, inclusive): outside the kernel's ephemeral range
    /// (`ip_local_port_range`, 32768-60999) and the NodePort range, so they never collide with
    /// the node's own sockets.
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    pub padding: [u32; 4],
}

impl Default for ProxyConfig {
    /// nf_conntrack's defaults (net.netfilter.nf_conntrack_*_timeout), with the established
    /// timeout kube-proxy sets (`conntrack.tcpEstablishedTimeout`: 24 h).
    fn default() -> ProxyConfig {
        ProxyConfig {
            netns_cookie: 0,
            tcp_syn_sent_timeout_seconds: 120,
            tcp_established_timeout_seconds: 86_400,
            tcp_closing_timeout_seconds: 120,
            tcp_time_wait_timeout_seconds: 120,
            tcp_close_timeout_seconds: 10,
            udp_timeout_seconds: 30,
            udp_stream_timeout_seconds: 120,
            flags: PROXY_CONFIG_FLAG_WRITTEN,
            node_address: 0,
            snat_port_min: SNAT_PORT_MIN,
            snat_port_max: SNAT_PORT_MAX,
            padding: [0; 4],
        }
    }
}

/// Default SNAT port range (above `ip_local_port_range`'s default end, 60999).
pub const SNAT_PORT_MIN: u16 = 61_000;
pub const SNAT_PORT_MAX: u16 = 65_535;
/// How many SNAT ports a new flow tries before it is dropped (`DropReason::SnatPortsExhausted`).
/// Candidates are spread over the range (not consecutive), so a run of held ports does not make
/// a flow fail while free ports remain: with half the range held, all 32 are taken with odds of
/// 2^-32.
pub const SNAT_PORT_ATTEMPTS: u32 = 32;

/// The SNAT port (host order) a flow tries at `attempt` (0-based): a start derived from the
/// flow's hash, then candidates spread across `[min, max]` by a golden-ratio step.
pub const fn snat_port_candidate(min: u16, max: u16, flow_hash: u32, attempt: u32) -> u16 {
    if max <= min {
        return min;
    }
    let span = (max - min) as u32 + 1;
    let spread = flow_hash.wrapping_add(attempt.wrapping_mul(0x9e37_79b9));
    min + (spread % span) as u16
}

impl ProxyConfig {
    /// How long an entry in `state` (with `flags`) may stay idle.
    pub const fn timeout_seconds(&self, state: TcpState, flags: u8) -> u32 {
        match state {
            TcpState::None => {
                if flags & CONNTRACK_FLAG_SEEN_REPLY != 0 {
                    self.udp_stream_timeout_seconds
                } else {
                    self.udp_timeout_seconds
                }
            }
            TcpState::SynSent => self.tcp_syn_sent_timeout_seconds,
            TcpState::Established => self.tcp_established_timeout_seconds,
            TcpState::Closing => self.tcp_closing_timeout_seconds,
            TcpState::TimeWait => self.tcp_time_wait_timeout_seconds,
            TcpState::Close => self.tcp_close_timeout_seconds,
        }
    }
}

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub const TCP_FLAG_FIN: u8 = 0x01;
pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_RST: u8 = 0x04;
pub const TCP_FLAG_ACK: u8 = 0x10;

/// The TCP state after a segment with `tcp_flags` passed in the given direction (`reply`: from the
/// backend). Pure, so the kernel side and the unit tests share it.
pub const fn tcp_next_state(current: TcpState, tcp_flags: u8, reply: bool) -> TcpState {
    if tcp_flags & TCP_FLAG_RST != 0 {
        return TcpState::Close;
    }
    if tcp_flags & TCP_FLAG_FIN != 0 {
        return match current {
            TcpState::Closing | TcpState::TimeWait => TcpState::TimeWait,
            _ => TcpState::Closing,
        };
    }
    match current {
        TcpState::None => {
            if tcp_flags & TCP_FLAG_SYN != 0 && !reply {
                TcpState::SynSent
            } else {
                TcpState::Established
            }
        }
        TcpState::SynSent
            if reply && tcp_flags & TCP_FLAG_SYN != 0 && tcp_flags & TCP_FLAG_ACK != 0 =>
        {
            TcpState::Established
        }
        state => state,
    }
}

/// Whether a segment opens a new connection on a tuple whose previous connection has finished
/// (a bare SYN while the entry is closing or closed): the flow must be balanced afresh.
pub const fn tcp_reopens(current: TcpState, tcp_flags: u8) -> bool {
    let bare_syn = tcp_flags & TCP_FLAG_SYN != 0 && tcp_flags & TCP_FLAG_ACK == 0;
    bare_syn
        && matches!(
            current,
            TcpState::Closing | TcpState::TimeWait | TcpState::Close
        )
}
