//! The pure allocator: which address an attachment gets, given the pod CIDR and who holds what.
//!
//! Owns the rules of allocation over an in-memory [`IpamState`]: the reserved addresses, the
//! round-robin order, idempotency per attachment, release and GC. It does no I/O and takes no
//! locks; the store (`super::store`) loads the state, runs one of these functions under its lock
//! and persists the result.
//!
//! Reserved addresses of a pod CIDR, never handed to a pod:
//! - the network address (`10.244.1.0` in `10.244.1.0/24`),
//! - the first host address (`10.244.1.1`), kept for the node side of the pod network (the address
//!   a node gives itself inside its own pod CIDR, e.g. for a host interface or as a source for
//!   traffic from the node to its pods); pods themselves use the link-local gateway 169.254.1.1,
//! - the broadcast address (`10.244.1.255`).
//!
//! So a /24 has 253 pod addresses, a /29 five, a /30 one, and a /31 or /32 none.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;

use super::network::Ipv4Network;

/// The owner of an allocation: one interface of one container, as CNI names it
/// (`CNI_CONTAINERID`, `CNI_IFNAME`; `containerID`/`ifname` in `cni.dev/valid-attachments`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Attachment {
    /// The container's ID (`CNI_CONTAINERID`).
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name inside the container (`CNI_IFNAME`, usually `eth0`).
    pub ifname: String,
}

impl Attachment {
    /// The attachment of interface `ifname` of container `container_id`.
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Self {
        Attachment {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }
}

impl fmt::Display for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "container {} interface {}",
            self.container_id, self.ifname
        )
    }
}

/// Why an address could not be allocated. None of these changes the state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    /// Every usable address of the pod CIDR is held. Not transient by itself: addresses come back
    /// only through DEL or GC.
    #[error(
        "no free address in pod CIDR {pod_cidr}: all {usable} usable addresses are allocated (the network, first host and broadcast addresses are reserved); free addresses with DEL or GC, or give the node a larger podCIDR"
    )]
    Exhausted { pod_cidr: Ipv4Network, usable: u64 },
    /// The pod CIDR has no address left once the reserved ones are taken out.
    #[error(
        "pod CIDR {pod_cidr} has no usable pod address: the network, first host and broadcast addresses are reserved, so a pod CIDR needs a prefix length of /30 or shorter"
    )]
    CidrTooSmall { pod_cidr: Ipv4Network },
    /// The attachment already holds an address, but not in the pod CIDR asked for (the node's pod
    /// CIDR changed between its ADD and this one). The old address is kept, not silently moved:
    /// the pod may still be using it, and freeing it here could hand it to a second pod.
    #[error(
        "{attachment} already holds {ip}, which is outside the current pod CIDR {pod_cidr}; DEL it first to release the old address"
    )]
    HeldOutsideCidr {
        attachment: Attachment,
        ip: Ipv4Addr,
        pod_cidr: Ipv4Network,
    },
}

/// Why a set of allocations read from disk cannot be a valid [`IpamState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InconsistentState {
    /// Two attachments hold the same address.
    #[error("{ip} is allocated twice: to {first} and to {second}")]
    DuplicateAddress {
        ip: Ipv4Addr,
        first: Attachment,
        second: Attachment,
    },
    /// One attachment holds two addresses.
    #[error("{attachment} holds two addresses: {first} and {second}")]
    DuplicateAttachment {
        attachment: Attachment,
        first: Ipv4Addr,
        second: Ipv4Addr,
    },
}

/// Who holds which address, plus the round-robin cursor.
///
/// Invariants (kept by every method and checked by [`IpamState::from_allocations`]): an address
/// has at most one owner, and an attachment owns at most one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpamState {
    allocations: BTreeMap<Ipv4Addr, Attachment>,
    last_allocated: Option<Ipv4Addr>,
}

impl IpamState {
    /// No allocations, no round-robin history.
    pub fn new() -> Self {
        IpamState::default()
    }

    /// A state from persisted parts, refusing anything that breaks the invariants.
    pub fn from_allocations(
        allocations: impl IntoIterator<Item = (Ipv4Addr, Attachment)>,
        last_allocated: Option<Ipv4Addr>,
    ) -> Result<Self, InconsistentState> {
        let mut by_ip: BTreeMap<Ipv4Addr, Attachment> = BTreeMap::new();
        let mut by_attachment: BTreeMap<Attachment, Ipv4Addr> = BTreeMap::new();
        for (ip, attachment) in allocations {
            if let Some(first) = by_ip.get(&ip) {
                return Err(InconsistentState::DuplicateAddress {
                    ip,
                    first: first.clone(),
                    second: attachment,
                });
            }
            if let Some(first) = by_attachment.get(&attachment) {
                return Err(InconsistentState::DuplicateAttachment {
                    first: *first,
                    second: ip,
                    attachment,
                });
            }
            by_attachment.insert(attachment.clone(), ip);
            by_ip.insert(ip, attachment);
        }
        Ok(IpamState {
            allocations: by_ip,
            last_allocated,
        })
    }

    /// Every allocation, ordered by address.
    pub fn allocations(&self) -> &BTreeMap<Ipv4Addr, Attachment> {
        &self.allocations
    }

    /// The address handed out most recently; the next search starts after it.
    pub fn last_allocated(&self) -> Option<Ipv4Addr> {
        self.last_allocated
    }

    /// The address `attachment` holds, if any.
    pub fn lookup(&self, attachment: &Attachment) -> Option<Ipv4Addr> {
        self.allocations
            .iter()
            .find_map(|(ip, owner)| (owner == attachment).then_some(*ip))
    }

    /// The address for `attachment` in `pod_cidr`.
    ///
    /// An attachment that already holds an address in `pod_cidr` gets it again (a retried ADD).
    /// Otherwise the search starts just after the last address handed out and wraps around, so a
    /// just-released address is reused as late as possible. Allocations outside `pod_cidr` (left
    /// from an earlier pod CIDR) stay until released or collected; they are never handed out.
    pub fn allocate(
        &mut self,
        pod_cidr: Ipv4Network,
        attachment: &Attachment,
    ) -> Result<Ipv4Addr, AllocationError> {
        if let Some(ip) = self.lookup(attachment) {
            if pod_cidr.contains(ip) {
                return Ok(ip);
            }
            return Err(AllocationError::HeldOutsideCidr {
                attachment: attachment.clone(),
                ip,
                pod_cidr,
            });
        }
        let (first, last) =
            usable_range(pod_cidr).ok_or(AllocationError::CidrTooSmall { pod_cidr })?;
        let start = match self.last_allocated.map(u32::from) {
            Some(previous) if (first..last).contains(&previous) => previous + 1,
            _ => first,
        };
        let free = self
            .first_free(start, last)
            .or_else(|| {
                start
                    .checked_sub(1)
                    .and_then(|end| self.first_free(first, end))
            })
            .ok_or(AllocationError::Exhausted {
                pod_cidr,
                usable: u64::from(last - first) + 1,
            })?;
        let ip = Ipv4Addr::from(free);
        self.allocations.insert(ip, attachment.clone());
        self.last_allocated = Some(ip);
        Ok(ip)
    }

    /// How many more attachments `pod_cidr` has room for: its usable addresses (the reserved ones
    /// taken out, see the module doc) that nobody holds. 0 means the ADD of a new attachment fails.
    pub fn free_addresses(&self, pod_cidr: Ipv4Network) -> u64 {
        let Some((first, last)) = usable_range(pod_cidr) else {
            return 0;
        };
        let usable = u64::from(last - first) + 1;
        let held = self
            .allocations
            .range(Ipv4Addr::from(first)..=Ipv4Addr::from(last))
            .count();
        usable.saturating_sub(u64::try_from(held).unwrap_or(u64::MAX))
    }

    /// Releases the address `attachment` holds and returns it; `None` if it held none.
    pub fn release(&mut self, attachment: &Attachment) -> Option<Ipv4Addr> {
        let ip = self.lookup(attachment)?;
        self.allocations.remove(&ip);
        Some(ip)
    }

    /// Releases every allocation whose owner is not in `valid` and returns the released addresses
    /// in ascending order. An empty `valid` means "nothing is attached" and releases everything.
    pub fn gc(&mut self, valid: &[Attachment]) -> Vec<Ipv4Addr> {
        let valid: HashSet<&Attachment> = valid.iter().collect();
        let mut released = Vec::new();
        self.allocations.retain(|ip, owner| {
            let keep = valid.contains(owner);
            if !keep {
                released.push(*ip);
            }
            keep
        });
        released
    }

    /// The lowest free address in `from..=to` (host order), if any.
    fn first_free(&self, from: u32, to: u32) -> Option<u32> {
        if from > to {
            return None;
        }
        let mut candidate = from;
        for taken in self
            .allocations
            .range(Ipv4Addr::from(from)..=Ipv4Addr::from(to))
            .map(|(ip, _)| u32::from(*ip))
        {
            if taken != candidate {
                return Some(candidate);
            }
            // `taken <= to < u32::MAX`: `to` is at most the broadcast address minus one.
            candidate = taken + 1;
        }
        (candidate <= to).then_some(candidate)
    }
}

/// The first and last address a pod may get in `pod_cidr` (host order), or `None` if the reserved
/// addresses leave none.
fn usable_range(pod_cidr: Ipv4Network) -> Option<(u32, u32)> {
    let network = u64::from(u32::from(pod_cidr.address()));
    let broadcast = u64::from(u32::from(pod_cidr.broadcast()));
    let first = network + 2;
    let last = broadcast.checked_sub(1)?;
    if first > last {
        return None;
    }
    // Both fit: first <= last < broadcast <= u32::MAX.
    Some((u32::try_from(first).ok()?, u32::try_from(last).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Network {
        text.parse().expect("a valid network")
    }

    fn pod(n: usize) -> Attachment {
        Attachment::new(format!("container-{n}"), "eth0")
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().expect("a valid address")
    }

    #[test]
    fn first_allocation_skips_network_and_node_addresses() {
        let mut state = IpamState::new();
        let got = state.allocate(cidr("10.244.1.0/24"), &pod(0)).unwrap();
        assert_eq!(got, ip("10.244.1.2"));
    }

    #[test]
    fn never_hands_out_the_broadcast_address() {
        let mut state = IpamState::new();
        let pod_cidr = cidr("10.244.1.0/24");
        let all: Vec<Ipv4Addr> = (0..253)
            .map(|n| state.allocate(pod_cidr, &pod(n)).unwrap())
            .collect();
        assert_eq!(all.first(), Some(&ip("10.244.1.2")));
        assert_eq!(all.last(), Some(&ip("10.244.1.254")));
        assert!(!all.contains(&ip("10.244.1.255")));
        assert!(!all.contains(&ip("10.244.1.1")));
        assert!(!all.contains(&ip("10.244.1.0")));
    }

    #[test]
    fn round_robin_does_not_reuse_a_just_released_address() {
        let mut state = IpamState::new();
        let pod_cidr = cidr("10.244.1.0/24");
        for n in 0..3 {
            state.allocate(pod_cidr, &pod(n)).unwrap();
        }
        assert_eq!(state.release(&pod(1)), Some(ip("10.244.1.3")));
        assert_eq!(state.allocate(pod_cidr, &pod(3)).unwrap(), ip("10.244.1.5"));
        assert_eq!(state.last_allocated(), Some(ip("10.244.1.5")));
    }

    #[test]
    fn round_robin_wraps_around_to_the_start_of_the_pool() {
        let mut state = IpamState::new();
        let pod_cidr = cidr("10.0.0.0/29"); // pods: .2 .. .6
        for n in 0..5 {
            state.allocate(pod_cidr, &pod(n)).unwrap();
        }
        state.release(&pod(1)); // .3
        state.release(&pod(3)); // .5
        assert_eq!(state.allocate(pod_cidr, &pod(10)).unwrap(), ip("10.0.0.3"));
        assert_eq!(state.allocate(pod_cidr, &pod(11)).unwrap(), ip("10.0.0.5"));
    }

    #[test]
    fn retried_add_gets_the_same_address() {
        let mut state = IpamState::new();
        let pod_cidr = cidr("10.244.1.0/24");
        let first = state.allocate(pod_cidr, &pod(0)).unwrap();
        state.allocate(pod_cidr, &pod(1)).unwrap();
        let before = state.clone();
        assert_eq!(state.allocate(pod_cidr, &pod(0)).unwrap(), first);
        assert_eq!(state, before, "a retried ADD changes nothing");
    }

    #[test]
    fn interfaces_of_one_container_are_separate_attachments() {
        let mut state = IpamState::new();
        let pod_cidr = cidr("10.244.1.0/24");
        let eth0 = state
            .allocate(pod_cidr, &Attachment::new("c", "eth0"))
            .unwrap();
        let net1 = state
            .allocate(pod_cidr, &Attachment::new("c", "net1"))
            .unwrap();
        assert_ne!(eth0, net1);
    }

    #[test]
    fn slash_30_has_exactly_one_pod_address() {
        let mut state = IpamState::new();
        let pod_cidr = cidr("10.0.0.0/30");
        assert_eq!(state.allocate(pod_cidr, &pod(0)).unwrap(), ip("10.0.0.2"));
        let error = state.allocate(pod_cidr, &pod(1)).unwrap_err();
        assert_eq!(
            error,
            AllocationError::Exhausted {
                pod_cidr,
                usable: 1
            }
        );
        assert!(error.to_string().contains("10.0.0.0/30"), "{error}");
    }

    #[test]
    fn slash_29_has_five_pod_addresses_then_is_exhausted() {
        let mut state = IpamState::new();
        let pod_cidr = cidr("10.0.0.8/29");
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|n| state.allocate(pod_cidr, &pod(n)).unwrap())
            .collect();
        let expected: Vec<Ipv4Addr> = (10..=14)
            .map(|last| Ipv4Addr::new(10, 0, 0, last))
            .collect();
        assert_eq!(got, expected);
        let before = state.clone();
        assert_eq!(
            state.allocate(pod_cidr, &pod(5)),
            Err(AllocationError::Exhausted {
                pod_cidr,
                usable: 5
            })
        );
        assert_eq!(state, before, "a failed allocation changes nothing");
        // Still idempotent for an existing owner when the pool is full.
        assert_eq!(state.allocate(pod_cidr, &pod(4)).unwrap(), ip("10.0.0.14"));
        // And a release makes room again.
        state.release(&pod(2));
        assert_eq!(state.allocate(pod_cidr, &pod(5)).unwrap(), ip("10.0.0.12"));
    }

    #[test]
    fn slash_31_and_slash_32_have_no_pod_address() {
        for text in ["10.0.0.0/31", "10.0.0.0/32", "255.255.255.255/32"] {
            let pod_cidr = cidr(text);
            let mut state = IpamState::new();
            assert_eq!(
                state.allocate(pod_cidr, &pod(0)),
                Err(AllocationError::CidrTooSmall { pod_cidr })
            );
        }
    }

    #[test]
    fn pool_at_the_top_of_the_address_space_works() {
        let mut state = IpamState::new();
        let pod_cidr = cidr("255.255.255.252/30");
        assert_eq!(
            state.allocate(pod_cidr, &pod(0)).unwrap(),
            ip("255.255.255.254")
        );
        assert!(matches!(
            state.allocate(pod_cidr, &pod(1)),
            Err(AllocationError::Exhausted { .. })
        ));
    }

    #[test]
    fn pod_cidr_change_keeps_old_allocations_and_allocates_from_the_new_cidr() {
        let mut state = IpamState::new();
        let old = cidr("10.244.1.0/24");
        let new = cidr("10.244.7.0/24");
        state.allocate(old, &pod(0)).unwrap();
        state.allocate(old, &pod(1)).unwrap();

        assert_eq!(state.allocate(new, &pod(2)).unwrap(), ip("10.244.7.2"));
        assert_eq!(state.lookup(&pod(0)), Some(ip("10.244.1.2")));
        assert_eq!(state.allocations().len(), 3);
        // The old address is released normally and never handed out again from the new CIDR.
        assert_eq!(state.release(&pod(1)), Some(ip("10.244.1.3")));
        assert_eq!(state.allocate(new, &pod(3)).unwrap(), ip("10.244.7.3"));
    }

    #[test]
    fn attachment_holding_an_address_outside_a_changed_cidr_is_refused_not_moved() {
        let mut state = IpamState::new();
        let old = cidr("10.244.1.0/24");
        let new = cidr("10.244.7.0/24");
        state.allocate(old, &pod(0)).unwrap();
        let before = state.clone();
        let error = state.allocate(new, &pod(0)).unwrap_err();
        assert_eq!(
            error,
            AllocationError::HeldOutsideCidr {
                attachment: pod(0),
                ip: ip("10.244.1.2"),
                pod_cidr: new,
            }
        );
        assert_eq!(state, before);
        // After DEL the same attachment gets an address from the new CIDR.
        state.release(&pod(0));
        assert_eq!(state.allocate(new, &pod(0)).unwrap(), ip("10.244.7.2"));
    }

    #[test]
    fn overlapping_old_allocations_are_skipped_in_a_wider_new_cidr() {
        let mut state = IpamState::new();
        state.allocate(cidr("10.244.1.0/25"), &pod(0)).unwrap(); // .2
        // The node's pod CIDR grows to a /24 that contains the old allocation.
        let wider = cidr("10.244.1.0/24");
        assert_eq!(state.allocate(wider, &pod(1)).unwrap(), ip("10.244.1.3"));
        assert_eq!(state.allocate(wider, &pod(0)).unwrap(), ip("10.244.1.2"));
    }

    #[test]
    fn free_addresses_counts_usable_addresses_nobody_holds() {
        let mut state = IpamState::new();
        let pod_cidr = cidr("10.0.0.8/29"); // pods: .10 .. .14
        assert_eq!(state.free_addresses(pod_cidr), 5);
        state.allocate(pod_cidr, &pod(0)).unwrap();
        state.allocate(pod_cidr, &pod(1)).unwrap();
        assert_eq!(state.free_addresses(pod_cidr), 3);
        for n in 2..5 {
            state.allocate(pod_cidr, &pod(n)).unwrap();
        }
        assert_eq!(state.free_addresses(pod_cidr), 0);
    }

    #[test]
    fn free_addresses_ignores_allocations_outside_the_pod_cidr() {
        let mut state = IpamState::new();
        state.allocate(cidr("10.244.1.0/24"), &pod(0)).unwrap();
        state.allocate(cidr("10.244.7.0/24"), &pod(1)).unwrap();
        assert_eq!(state.free_addresses(cidr("10.244.7.0/24")), 252);
        // A narrower CIDR counts only what falls in its own usable range.
        assert_eq!(state.free_addresses(cidr("10.244.7.0/30")), 0);
        assert_eq!(state.free_addresses(cidr("10.244.7.4/30")), 1);
    }

    #[test]
    fn free_addresses_of_a_cidr_without_pod_addresses_is_zero() {
        let state = IpamState::new();
        assert_eq!(state.free_addresses(cidr("10.0.0.0/31")), 0);
        assert_eq!(state.free_addresses(cidr("10.0.0.0/32")), 0);
        assert_eq!(state.free_addresses(cidr("10.0.0.0/30")), 1);
        assert_eq!(
            state.free_addresses(cidr("0.0.0.0/0")),
            u64::from(u32::MAX) - 2
        );
    }

    #[test]
    fn release_of_an_unknown_attachment_is_none() {
        let mut state = IpamState::new();
        state.allocate(cidr("10.244.1.0/24"), &pod(0)).unwrap();
        assert_eq!(state.release(&pod(1)), None);
        assert_eq!(state.release(&Attachment::new("container-0", "net1")), None);
        assert_eq!(state.release(&pod(0)), Some(ip("10.244.1.2")));
        assert_eq!(state.release(&pod(0)), None);
        assert!(state.allocations().is_empty());
    }

    #[test]
    fn gc_keeps_exactly_the_valid_attachments() {
        let mut state = IpamState::new();
        let pod_cidr = cidr("10.244.1.0/24");
        for n in 0..6 {
            state.allocate(pod_cidr, &pod(n)).unwrap();
        }
        let valid = [pod(1), pod(4), Attachment::new("not-allocated", "eth0")];
        let released = state.gc(&valid);
        assert_eq!(
            released,
            ["10.244.1.2", "10.244.1.4", "10.244.1.5", "10.244.1.7"].map(ip)
        );
        let kept: Vec<&Attachment> = state.allocations().values().collect();
        assert_eq!(kept, [&pod(1), &pod(4)]);
    }

    #[test]
    fn gc_matches_container_and_interface_together() {
        let mut state = IpamState::new();
        let pod_cidr = cidr("10.244.1.0/24");
        state
            .allocate(pod_cidr, &Attachment::new("c", "eth0"))
            .unwrap();
        state
            .allocate(pod_cidr, &Attachment::new("c", "net1"))
            .unwrap();
        let released = state.gc(&[Attachment::new("c", "eth0")]);
        assert_eq!(released, [ip("10.244.1.3")]);
        assert_eq!(
            state.lookup(&Attachment::new("c", "eth0")),
            Some(ip("10.244.1.2"))
        );
    }

    #[test]
    fn gc_with_an_empty_valid_list_releases_everything() {
        let mut state = IpamState::new();
        let pod_cidr = cidr("10.244.1.0/24");
        for n in 0..3 {
            state.allocate(pod_cidr, &pod(n)).unwrap();
        }
        assert_eq!(state.gc(&[]).len(), 3);
        assert!(state.allocations().is_empty());
    }

    #[test]
    fn from_allocations_refuses_an_address_owned_twice() {
        let result =
            IpamState::from_allocations([(ip("10.0.0.2"), pod(0)), (ip("10.0.0.2"), pod(1))], None);
        assert!(matches!(
            result,
            Err(InconsistentState::DuplicateAddress { .. })
        ));
    }

    #[test]
    fn from_allocations_refuses_an_attachment_holding_two_addresses() {
        let result =
            IpamState::from_allocations([(ip("10.0.0.2"), pod(0)), (ip("10.0.0.3"), pod(0))], None);
        assert!(matches!(
            result,
            Err(InconsistentState::DuplicateAttachment { .. })
        ));
    }
}
