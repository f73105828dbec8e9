//! The on-disk format of the IPAM state: one JSON document per network.
//!
//! Owns encoding and decoding only; where the file lives, locking and atomic replacement are the
//! store's. The format is meant to be read by people and `jq` during an incident:
//!
//! ```json
//! {
//!   "version": 1,
//!   "lastAllocated": "10.244.1.3",
//!   "allocations": [
//!     { "ip": "10.244.1.2", "containerID": "4f0c…", "ifname": "eth0" },
//!     { "ip": "10.244.1.3", "containerID": "9a71…", "ifname": "eth0" }
//!   ]
//! }
//! ```
//!
//! Decoding refuses anything it does not fully understand (another `version`, an address owned
//! twice, an attachment holding two addresses): guessing would risk handing out an address twice.

use std::net::Ipv4Addr;

use super::allocator::{Attachment, IpamState};

/// The format version written by this code.
pub const VERSION: u32 = 1;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StateDocument {
    version: u32,
    #[serde(default)]
    last_allocated: Option<Ipv4Addr>,
    allocations: Vec<AllocationRecord>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocationRecord {
    ip: Ipv4Addr,
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

/// The state as the bytes of a state file (pretty JSON, trailing newline).
pub fn encode(state: &IpamState) -> Result<Vec<u8>, serde_json::Error> {
    let document = StateDocument {
        version: VERSION,
        last_allocated: state.last_allocated(),
        allocations: state
            .allocations()
            .iter()
            .map(|(ip, owner)| AllocationRecord {
                ip: *ip,
                container_id: owner.container_id.clone(),
                ifname: owner.ifname.clone(),
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&document)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The state in the bytes of a state file, or why they are not one (for the caller to report
/// together with the file's path).
pub fn decode(bytes: &[u8]) -> Result<IpamState, String> {
    let document: StateDocument =
        serde_json::from_slice(bytes).map_err(|error| format!("not valid state JSON: {error}"))?;
    if document.version != VERSION {
        return Err(format!(
            "format version {} is not the supported version {VERSION}",
            document.version
        ));
    }
    IpamState::from_allocations(
        document.allocations.into_iter().map(|record| {
            (
                record.ip,
                Attachment::new(record.container_id, record.ifname),
            )
        }),
        document.last_allocated,
    )
    .map_err(|inconsistency| inconsistency.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_state_decodes_to_the_same_state() {
        let mut state = IpamState::new();
        let pod_cidr = "10.244.1.0/24".parse().unwrap();
        state
            .allocate(pod_cidr, &Attachment::new("a", "eth0"))
            .unwrap();
        state
            .allocate(pod_cidr, &Attachment::new("b", "eth0"))
            .unwrap();
        let bytes = encode(&state).unwrap();
        assert_eq!(decode(&bytes).unwrap(), state);
    }

    #[test]
    fn written_format_uses_cni_spelling() {
        let mut state = IpamState::new();
        state
            .allocate(
                "10.244.1.0/24".parse().unwrap(),
                &Attachment::new("abc", "eth0"),
            )
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&encode(&state).unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "version": 1,
                "lastAllocated": "10.244.1.2",
                "allocations": [{"ip": "10.244.1.2", "containerID": "abc", "ifname": "eth0"}],
            })
        );
    }

    #[test]
    fn refuses_other_versions_truncation_and_duplicates() {
        let cases: [(&[u8], &str); 5] = [
            (
                br#"{"version":1,"allocations":[],"extra":true}"#,
                "unknown field",
            ),
            (br#"{"version":2,"allocations":[]}"#, "version 2"),
            (
                br#"{"version":1,"allocations":[{"ip":"10.0.0.2","#,
                "not valid state JSON",
            ),
            (b"", "not valid state JSON"),
            (
                br#"{"version":1,"allocations":[
                    {"ip":"10.0.0.2","containerID":"a","ifname":"eth0"},
                    {"ip":"10.0.0.2","containerID":"b","ifname":"eth0"}]}"#,
                "allocated twice",
            ),
        ];
        for (bytes, expected) in cases {
            let reason = decode(bytes).unwrap_err();
            assert!(reason.contains(expected), "{reason}");
        }
    }
}
