//! Interface names derived from a pod's attachment.
//!
//! Owns the host-side veth name ([`host_interface_name`]) and the temporary name the pod side
//! carries between its creation and its rename to the CNI `ifname`. Pure: no I/O, no kernel calls.
//!
//! Both names are part of Skiff's on-node state: DEL, CHECK and GC find a pod's veth by
//! recomputing its name, so changing the derivation strands every pod created before the change.

/// Prefix of every host-side veth Skiff creates.
const HOST_PREFIX: &str = "skf";
/// Prefix of a pod-side veth while it still carries its temporary name.
const TEMPORARY_PREFIX: &str = "skp";
/// Hex characters after the prefix: 3 + 12 = 15, the kernel's `IFNAMSIZ - 1`.
const HASH_HEX_CHARS: usize = 12;

/// The name of the host-side veth of the attachment (`container_id`, `ifname`):
/// `"skf"` followed by the first 12 lowercase hex characters of the 64-bit FNV-1a hash of
/// `"<container_id>/<ifname>"` — 15 characters, the longest name the kernel accepts.
///
/// Stable: the same attachment gets the same name in every Skiff version, because DEL and GC
/// find the interface by recomputing it. Changing this function strands existing pods.
pub fn host_interface_name(container_id: &str, ifname: &str) -> String {
    let hash = fnv1a_64(format!("{container_id}/{ifname}").as_bytes());
    format!("{HOST_PREFIX}{}", hash_hex(hash))
}

/// Whether `name` has the shape of a [`host_interface_name`]: `skf` and 12 lowercase hex
/// characters.
pub fn is_host_interface_name(name: &str) -> bool {
    name.strip_prefix(HOST_PREFIX).is_some_and(|hash| {
        hash.len() == 12
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The name the pod side of `host_ifname`'s veth has while it waits, inside the pod's network
/// namespace, to be renamed to the CNI `ifname`: `"skp"` and 12 hex characters of the hash of
/// the host-side name. It never appears in the node's namespace.
pub(super) fn temporary_pod_name(host_ifname: &str) -> String {
    format!(
        "{TEMPORARY_PREFIX}{}",
        hash_hex(fnv1a_64(host_ifname.as_bytes()))
    )
}

fn hash_hex(hash: u64) -> String {
    let hex = format!("{hash:016x}");
    hex[..HASH_HEX_CHARS].to_owned()
}

/// 64-bit FNV-1a (Fowler–Noll–Vo), as specified in draft-eastlake-fnv: small, stable across
/// platforms and Rust versions (unlike `std`'s `DefaultHasher`), and good enough to keep names of
/// the pods on one node apart.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv, "FNV-1a 64").
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn host_interface_name_is_pinned_for_a_known_attachment() {
        // Pinned (computed independently with Python's FNV-1a): a different value here means
        // existing pods would no longer be found.
        assert_eq!(
            host_interface_name("0123456789abcdef", "eth0"),
            "skf789c7c12c218"
        );
    }

    #[test]
    fn host_interface_name_fits_the_kernel_limit_and_is_lowercase_hex() {
        for (container_id, ifname) in [
            ("", ""),
            ("c", "eth0"),
            (&"f".repeat(64) as &str, "net1"),
            ("ünïcode/with/slashes", "eth0"),
        ] {
            let name = host_interface_name(container_id, ifname);
            assert_eq!(name.len(), 15, "{name}");
            assert!(name.starts_with("skf"), "{name}");
            assert!(
                name[3..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                "{name}"
            );
        }
    }

    #[test]
    fn host_interface_name_separates_container_and_interface() {
        assert_ne!(
            host_interface_name("abc", "eth0"),
            host_interface_name("abc", "eth1")
        );
        assert_ne!(
            host_interface_name("abc", "eth0"),
            host_interface_name("abd", "eth0")
        );
    }

    #[test]
    fn temporary_pod_name_differs_from_the_host_name_and_fits_the_kernel_limit() {
        let host = host_interface_name("0123456789abcdef", "eth0");
        let temporary = temporary_pod_name(&host);
        assert_eq!(temporary.len(), 15);
        assert!(temporary.starts_with("skp"));
        assert_ne!(temporary[3..], host[3..]);
    }
}
