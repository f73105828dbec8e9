//! Map keys and values shared by the BPF programs (`proxy-ebpf`) and skiff-proxy (`proxy-user`).
//!
//! Owns the memory layout of everything that crosses the kernel/user boundary: every type here is
//! `#[repr(C)]` with explicit padding so both sides agree byte for byte. Holds no logic beyond
//! index conversions; never depends on `std` (the kernel side is `no_std`).
#![no_std]

pub mod conntrack;
pub mod service;
pub mod stats;

pub use conntrack::*;
pub use service::*;
pub use stats::*;

#[cfg(feature = "user")]
mod pod {
    //! `aya::Pod` for every map key and value: all are `#[repr(C)]`, made of integers and byte
    //! arrays with explicit padding fields, so every bit pattern is valid and there are no holes.
    use super::*;

    macro_rules! plain_old_data {
        ($($type:ty),* $(,)?) => {
            $(
                // SAFETY: see the module comment; the layout tests pin sizes and alignments.
                unsafe impl aya::Pod for $type {}
            )*
        };
    }

    plain_old_data!(
        PacketCounter,
        FlowCounter,
        ServiceKey,
        ServiceValue,
        BackendSlotKey,
        Backend,
        ConntrackKey,
        ConntrackValue,
        AffinityKey,
        AffinityValue,
        ProxyConfig,
        SocketNatKey,
        SocketNatValue,
    );
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, size_of};

    use super::*;

    #[test]
    fn map_types_have_the_layout_the_kernel_side_expects() {
        assert_eq!(
            (size_of::<PacketCounter>(), align_of::<PacketCounter>()),
            (16, 8)
        );
        assert_eq!(
            (size_of::<FlowCounter>(), align_of::<FlowCounter>()),
            (24, 8)
        );
        assert_eq!((size_of::<ServiceKey>(), align_of::<ServiceKey>()), (8, 4));
        assert_eq!(
            (size_of::<ServiceValue>(), align_of::<ServiceValue>()),
            (16, 4)
        );
        assert_eq!(
            (size_of::<BackendSlotKey>(), align_of::<BackendSlotKey>()),
            (8, 4)
        );
        assert_eq!((size_of::<Backend>(), align_of::<Backend>()), (8, 4));
        assert_eq!(
            (size_of::<ConntrackKey>(), align_of::<ConntrackKey>()),
            (16, 4)
        );
        assert_eq!(
            (size_of::<ConntrackValue>(), align_of::<ConntrackValue>()),
            (32, 8)
        );
        assert_eq!(
            (size_of::<AffinityKey>(), align_of::<AffinityKey>()),
            (8, 4)
        );
        assert_eq!(
            (size_of::<AffinityValue>(), align_of::<AffinityValue>()),
            (16, 8)
        );
        assert_eq!(
            (size_of::<ProxyConfig>(), align_of::<ProxyConfig>()),
            (64, 8)
        );
    }

    #[test]
    fn protocol_class_indices_are_dense_and_in_order() {
        for (position, class) in ProtocolClass::ALL.iter().enumerate() {
            assert_eq!(class.index() as usize, position, "{}", class.name());
        }
        assert_eq!(ProtocolClass::ALL.len() as u32, PROTOCOL_CLASS_COUNT);
    }

    #[test]
    fn drop_reason_indices_are_dense_and_in_order() {
        for (position, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index() as usize, position, "{}", reason.name());
        }
    }

    #[test]
    fn tcp_handshake_moves_syn_sent_to_established_on_the_backend_syn_ack() {
        let state = tcp_next_state(TcpState::None, TCP_FLAG_SYN, false);
        assert_eq!(state, TcpState::SynSent);
        assert_eq!(
            tcp_next_state(state, TCP_FLAG_SYN | TCP_FLAG_ACK, false),
            TcpState::SynSent
        );
        assert_eq!(
            tcp_next_state(state, TCP_FLAG_SYN | TCP_FLAG_ACK, true),
            TcpState::Established
        );
    }

    #[test]
    fn tcp_fins_from_both_sides_lead_to_time_wait_and_rst_closes_at_once() {
        let closing = tcp_next_state(TcpState::Established, TCP_FLAG_FIN | TCP_FLAG_ACK, false);
        assert_eq!(closing, TcpState::Closing);
        assert_eq!(
            tcp_next_state(closing, TCP_FLAG_ACK, true),
            TcpState::Closing
        );
        assert_eq!(
            tcp_next_state(closing, TCP_FLAG_FIN | TCP_FLAG_ACK, true),
            TcpState::TimeWait
        );
        assert_eq!(
            tcp_next_state(TcpState::Established, TCP_FLAG_RST, true),
            TcpState::Close
        );
    }

    #[test]
    fn a_bare_syn_on_a_finished_tuple_reopens_but_not_on_a_live_one() {
        assert!(tcp_reopens(TcpState::TimeWait, TCP_FLAG_SYN));
        assert!(tcp_reopens(TcpState::Close, TCP_FLAG_SYN));
        assert!(!tcp_reopens(TcpState::Established, TCP_FLAG_SYN));
        assert!(!tcp_reopens(
            TcpState::TimeWait,
            TCP_FLAG_SYN | TCP_FLAG_ACK
        ));
    }

    #[test]
    fn timeouts_follow_state_and_udp_stream_flag() {
        let config = ProxyConfig::default();
        assert_eq!(config.timeout_seconds(TcpState::None, 0), 30);
        assert_eq!(
            config.timeout_seconds(TcpState::None, CONNTRACK_FLAG_SEEN_REPLY),
            120
        );
        assert_eq!(config.timeout_seconds(TcpState::Established, 0), 86_400);
        assert_eq!(config.timeout_seconds(TcpState::Close, 0), 10);
    }

    #[test]
    fn tcp_states_round_trip_through_their_byte() {
        for state in TcpState::ALL {
            assert_eq!(TcpState::from_byte(state as u8), state);
        }
    }
}
