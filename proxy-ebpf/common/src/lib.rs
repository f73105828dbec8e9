//! Map keys and values shared by the BPF programs (`proxy-ebpf`) and skiff-proxy (`proxy-user`).
//!
//! Owns the memory layout of everything that crosses the kernel/user boundary: every type here is
//! `#[repr(C)]` with explicit padding so both sides agree byte for byte. Holds no logic beyond
//! index conversions; never depends on `std` (the kernel side is `no_std`).
#![no_std]

pub mod checksum;
pub mod conntrack;
pub mod service;
pub mod stats;

pub use checksum::*;
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
        SourceRangeKey,
    );
}

#[cfg(test)]
mod tests {
    extern crate std;

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
            (40, 8)
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
    fn external_types_have_the_layout_the_kernel_side_expects() {
        assert_eq!(
            (size_of::<SourceRangeKey>(), align_of::<SourceRangeKey>()),
            (8, 4)
        );
        assert_eq!(source_range_prefix_length(24), 56);
    }

    #[test]
    fn maglev_flow_hash_depends_on_the_client_and_port_but_not_on_the_node() {
        let hash = maglev_flow_hash(0x0a00_0001, 40_000, 30_080, 6);
        assert_eq!(hash, maglev_flow_hash(0x0a00_0001, 40_000, 30_080, 6));
        assert_ne!(hash, maglev_flow_hash(0x0a00_0001, 40_001, 30_080, 6));
        assert_ne!(hash, maglev_flow_hash(0x0a00_0002, 40_000, 30_080, 6));
        assert_ne!(hash, maglev_flow_hash(0x0a00_0001, 40_000, 30_080, 17));
        // Pinned: every node must compute the same value, whichever build it runs.
        assert_eq!(hash, 0x6438_3e38, "{hash:#x}");
    }

    #[test]
    fn maglev_flow_hash_spreads_consecutive_ports_evenly() {
        let buckets = 16u32;
        let mut counts = [0u32; 16];
        for port in 0..16_000u16 {
            counts[(maglev_flow_hash(0x0a00_0001, port, 80, 6) % buckets) as usize] += 1;
        }
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(
            *max.expect("counts") - *min.expect("counts") < 150,
            "{counts:?}"
        );
    }

    #[test]
    fn snat_port_candidates_stay_in_range_and_spread_out() {
        for hash in [0, 1, 4535, 0x8000_0000, 0xffff_ffff] {
            let candidates: std::collections::BTreeSet<u16> = (0..SNAT_PORT_ATTEMPTS)
                .map(|attempt| snat_port_candidate(61_000, 65_535, hash, attempt))
                .collect();
            assert!(
                candidates
                    .iter()
                    .all(|port| (61_000..=65_535).contains(port))
            );
            assert_eq!(
                candidates.len(),
                SNAT_PORT_ATTEMPTS as usize,
                "distinct candidates"
            );
            let spread = candidates.last().expect("some") - candidates.first().expect("some");
            assert!(spread > 3000, "candidates cover the range: {candidates:?}");
        }
        assert_eq!(snat_port_candidate(61_000, 65_535, 4535, 0), 65_535);
        assert_eq!(snat_port_candidate(100, 100, 7, 3), 100);
        assert_eq!(snat_port_candidate(100, 90, 7, 3), 100);
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
        assert_eq!(DropReason::ALL.len() as u32, DROP_REASON_COUNT);
        for (position, path) in ExternalPath::ALL.iter().enumerate() {
            assert_eq!(path.index() as usize, position, "{}", path.name());
        }
        assert_eq!(ExternalPath::ALL.len() as u32, EXTERNAL_PATH_COUNT);
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
