//! veth pairs between two test network namespaces.
//!
//! Owns creating a pair directly inside its namespaces (it never exists in the host namespace,
//! not even briefly) and giving each end an address. The pair disappears with its namespaces.

use crate::netns::{NetNs, NetNsError};

/// One end of a veth pair.
#[derive(Debug, Clone)]
pub struct VethEnd {
    /// Interface name inside its namespace.
    pub interface: String,
    /// IPv4 address (without prefix length), if one was configured.
    pub address: Option<String>,
}

/// A veth pair whose ends live in two namespaces.
#[derive(Debug, Clone)]
pub struct VethPair {
    pub a: VethEnd,
    pub b: VethEnd,
}

/// Creates `interface_a` in `a` paired with `interface_b` in `b`, both up, without addresses.
pub fn create(
    a: &NetNs,
    interface_a: &str,
    b: &NetNs,
    interface_b: &str,
) -> Result<VethPair, NetNsError> {
    a.ip(&[
        "link",
        "add",
        interface_a,
        "type",
        "veth",
        "peer",
        "name",
        interface_b,
        "netns",
        b.name(),
    ])?;
    a.ip(&["link", "set", interface_a, "up"])?;
    b.ip(&["link", "set", interface_b, "up"])?;
    Ok(VethPair {
        a: VethEnd {
            interface: interface_a.to_owned(),
            address: None,
        },
        b: VethEnd {
            interface: interface_b.to_owned(),
            address: None,
        },
    })
}

/// Creates a pair and gives the ends `address_a` and `address_b` in `prefix_len`-bit subnet.
pub fn create_addressed(
    (a, interface_a, address_a): (&NetNs, &str, &str),
    (b, interface_b, address_b): (&NetNs, &str, &str),
    prefix_len: u8,
) -> Result<VethPair, NetNsError> {
    let mut pair = create(a, interface_a, b, interface_b)?;
    a.ip(&[
        "addr",
        "add",
        &format!("{address_a}/{prefix_len}"),
        "dev",
        interface_a,
    ])?;
    b.ip(&[
        "addr",
        "add",
        &format!("{address_b}/{prefix_len}"),
        "dev",
        interface_b,
    ])?;
    pair.a.address = Some(address_a.to_owned());
    pair.b.address = Some(address_b.to_owned());
    Ok(pair)
}

/// A device feature set through the legacy ethtool ioctls (include/uapi/linux/ethtool.h).
#[derive(Clone, Copy, Debug)]
pub enum Offload {
    /// `ETHTOOL_STXCSUM`: transmit checksum offload. Off, the kernel completes every TCP/UDP
    /// checksum before the frame leaves, as a physical NIC does on the wire; a veth left on
    /// passes partial checksums that only the local stack understands.
    TransmitChecksum,
    /// `ETHTOOL_SGRO`: generic receive offload.
    GenericReceive,
}

impl Offload {
    const fn set_command(self) -> u32 {
        match self {
            Offload::TransmitChecksum => 0x0000_0017,
            Offload::GenericReceive => 0x0000_002c,
        }
    }

    const fn flag(self) -> &'static str {
        match self {
            Offload::TransmitChecksum => "tx",
            Offload::GenericReceive => "gro",
        }
    }
}

/// `SIOCETHTOOL` (include/uapi/linux/sockios.h).
const SIOCETHTOOL: libc::c_ulong = 0x8946;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Turns `offload` on or off for `interface` in `netns` (what `ethtool -K <interface> <flag>
/// on|off` does).
pub fn set_offload(
    netns: &NetNs,
    interface: &str,
    offload: Offload,
    enabled: bool,
) -> Result<(), NetNsError> {
    let name = interface.to_owned();
    netns
        .run(move || -> std::io::Result<()> {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
            let mut value = EthtoolValue {
                cmd: offload.set_command(),
                data: u32::from(enabled),
            };
            // SAFETY: an all-zero `ifreq` is valid; the name is copied in bounds below.
            let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
            for (slot, byte) in request
                .ifr_name
                .iter_mut()
                .zip(name.bytes().take(libc::IFNAMSIZ - 1))
            {
                *slot = byte as libc::c_char;
            }
            request.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
            // SAFETY: SIOCETHTOOL reads the request and the value it points to, both alive for
            // the call.
            let result = unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(&socket),
                    SIOCETHTOOL,
                    &mut request,
                )
            };
            if result != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })?
        .map_err(|error| NetNsError::Command {
            command: format!(
                "ethtool -K {interface} {} {} (in {})",
                offload.flag(),
                if enabled { "on" } else { "off" },
                netns.name()
            ),
            stderr: error.to_string(),
        })
}
