//! The node's uplink: attaching the north-south programs to it, and the addresses they serve.
//!
//! Owns the uplink's link pins (`<bpffs>/links/<uplink>-xdp`, `<uplink>-tc`) with the same
//! attach-or-adopt rule as the pod interfaces (a restarted skiff-proxy swaps its programs into
//! the live links with `BPF_LINK_UPDATE`, so north-south traffic never sees the uplink without a
//! program), the `--xdp-mode` choice, and reading the node's IPv4 addresses (the SNAT address
//! and the NodePort addresses under `--nodeport-addresses`). Never writes map contents.

use std::{collections::BTreeSet, fmt, io, net::Ipv4Addr, path::Path, str::FromStr};

use aya::programs::{
    TcAttachType, Xdp,
    links::FdLink,
    xdp::{XdpLink, XdpLinkId, XdpMode},
};

use crate::{
    links::{Attachment, LinkPinError, adopt, adopt_pinned, links_directory, pin_link, pin_path},
    programs::{LoadedObject, ProgramName},
};

/// How the uplink's programs are attached (`--xdp-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpAttachMode {
    /// XDP in the driver (native; veth supports it).
    #[default]
    Native,
    /// XDP on the skb (generic mode, for drivers without native XDP).
    Generic,
    /// No XDP: the same pipeline as a TC ingress program (`tc_uplink_fallback`).
    Tc,
}

impl XdpAttachMode {
    pub const fn name(self) -> &'static str {
        match self {
            XdpAttachMode::Native => "native",
            XdpAttachMode::Generic => "generic",
            XdpAttachMode::Tc => "tc",
        }
    }
}

impl fmt::Display for XdpAttachMode {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for XdpAttachMode {
    type Err = String;

    fn from_str(value: &str) -> Result<XdpAttachMode, String> {
        match value {
            "native" => Ok(XdpAttachMode::Native),
            "generic" => Ok(XdpAttachMode::Generic),
            "tc" => Ok(XdpAttachMode::Tc),
            other => Err(format!(
                "{other:?} is not an XDP mode (native, generic or tc)"
            )),
        }
    }
}

const XDP_PIN_SUFFIX: &str = "xdp";
const TC_PIN_SUFFIX: &str = "tc";

/// Attaches (or adopts) the uplink programs on `interface` in `mode` and pins their links.
pub fn attach_uplink(
    object: &mut LoadedObject,
    pin_directory: &Path,
    interface: &str,
    mode: XdpAttachMode,
) -> Result<Attachment, LinkPinError> {
    let directory = links_directory(pin_directory);
    std::fs::create_dir_all(&directory).map_err(|source| LinkPinError::Directory {
        path: directory.clone(),
        source,
    })?;
    let xdp_pin = pin_path(&directory, interface, XDP_PIN_SUFFIX);
    let mut attachment = Attachment::Adopted;
    let tc_program = match mode {
        XdpAttachMode::Native | XdpAttachMode::Generic => {
            let xdp_mode = if mode == XdpAttachMode::Native {
                XdpMode::Driver
            } else {
                XdpMode::Skb
            };
            if attach_xdp(object, &xdp_pin, interface, xdp_mode)? == Attachment::Attached {
                attachment = Attachment::Attached;
            }
            ProgramName::TcUplink
        }
        XdpAttachMode::Tc => {
            // Leaving XDP mode: the fallback takes over below before XDP goes away, so no packet
            // meets neither; dropping the pin releases the XDP link.
            ProgramName::TcUplinkFallback
        }
    };
    let name = tc_program.as_str();
    let classifier = object
        .classifier_mut(tc_program)
        .ok_or(LinkPinError::MissingProgram { program: name })?;
    let tc_pin = pin_path(&directory, interface, TC_PIN_SUFFIX);
    let attach_error = |source| LinkPinError::Attach {
        program: name,
        interface: interface.to_owned(),
        direction: "ingress",
        source: Box::new(source),
    };
    let link_id = match adopt(classifier, &tc_pin) {
        Some(link_id) => link_id,
        None => {
            attachment = Attachment::Attached;
            classifier
                .attach(interface, TcAttachType::Ingress)
                .map_err(attach_error)?
        }
    };
    let link = classifier.take_link(link_id).map_err(attach_error)?;
    let pin_error = |reason: String| LinkPinError::Pin {
        program: name,
        interface: interface.to_owned(),
        path: tc_pin.clone(),
        reason,
    };
    let link = FdLink::try_from(link).map_err(|error| pin_error(error.to_string()))?;
    pin_link(link, &tc_pin).map_err(pin_error)?;
    if mode == XdpAttachMode::Tc {
        match std::fs::remove_file(&xdp_pin) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(LinkPinError::Pin {
                    program: ProgramName::XdpUplink.as_str(),
                    interface: interface.to_owned(),
                    path: xdp_pin,
                    reason: error.to_string(),
                });
            }
        }
    }
    Ok(attachment)
}

fn attach_xdp(
    object: &mut LoadedObject,
    pin: &Path,
    interface: &str,
    mode: XdpMode,
) -> Result<Attachment, LinkPinError> {
    let name = ProgramName::XdpUplink.as_str();
    let xdp = object
        .xdp_mut(ProgramName::XdpUplink)
        .ok_or(LinkPinError::MissingProgram { program: name })?;
    let attach_error = |source| LinkPinError::Attach {
        program: name,
        interface: interface.to_owned(),
        direction: "xdp",
        source: Box::new(source),
    };
    let (link_id, attachment) = match adopt_xdp(xdp, pin) {
        Some(link_id) => (link_id, Attachment::Adopted),
        None => (
            xdp.attach(interface, mode).map_err(attach_error)?,
            Attachment::Attached,
        ),
    };
    let link = xdp.take_link(link_id).map_err(attach_error)?;
    let pin_error = |reason: String| LinkPinError::Pin {
        program: name,
        interface: interface.to_owned(),
        path: pin.to_owned(),
        reason,
    };
    let link = FdLink::try_from(link).map_err(|error| pin_error(error.to_string()))?;
    pin_link(link, pin).map_err(pin_error)?;
    Ok(attachment)
}

/// Swaps `xdp` into the live XDP link pinned at `path`, if there is one; a dead pin is removed.
fn adopt_xdp(xdp: &mut Xdp, path: &Path) -> Option<XdpLinkId> {
    adopt_pinned(path, |link| {
        XdpLink::try_from(link)
            .ok()
            .and_then(|link| xdp.attach_to_link(link).ok())
    })
}

/// An IPv4 prefix of `--nodeport-addresses`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix_length: u8,
}

impl Ipv4Cidr {
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_length))
            .unwrap_or(0);
        u32::from(address) & mask == u32::from(self.address) & mask
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(value: &str) -> Result<Ipv4Cidr, String> {
        let invalid = || format!("{value:?} is not an IPv4 CIDR such as 10.0.0.0/8");
        let (address, prefix) = value.split_once('/').ok_or_else(invalid)?;
        let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
        let prefix_length: u8 = prefix.parse().map_err(|_| invalid())?;
        if prefix_length > 32 {
            return Err(invalid());
        }
        Ok(Ipv4Cidr {
            address,
            prefix_length,
        })
    }
}

/// The IPv4 addresses of `interface` in the calling thread's network namespace, in the order
/// the kernel lists them (the first is the primary).
pub fn interface_addresses(interface: &str) -> io::Result<Vec<Ipv4Addr>> {
    Ok(all_addresses()?
        .into_iter()
        .filter(|(name, _)| name == interface)
        .map(|(_, address)| address)
        .collect())
}

/// The addresses NodePorts answer on: every non-loopback IPv4 address of the node, or those
/// inside `cidrs` when any are given (`--nodeport-addresses`).
pub fn nodeport_addresses(cidrs: &[Ipv4Cidr]) -> io::Result<BTreeSet<Ipv4Addr>> {
    Ok(all_addresses()?
        .into_iter()
        .map(|(_, address)| address)
        .filter(|address| !address.is_loopback())
        .filter(|address| cidrs.is_empty() || cidrs.iter().any(|cidr| cidr.contains(*address)))
        .collect())
}

fn all_addresses() -> io::Result<Vec<(String, Ipv4Addr)>> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(addresses
        .filter_map(|entry| {
            let address = entry.address?.as_sockaddr_in()?.ip();
            Some((entry.interface_name, address))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_match() {
        let cidr: Ipv4Cidr = "192.0.2.0/24".parse().expect("cidr");
        assert!(cidr.contains(Ipv4Addr::new(192, 0, 2, 77)));
        assert!(!cidr.contains(Ipv4Addr::new(192, 0, 3, 1)));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
        for bad in ["192.0.2.0", "192.0.2.0/33", "x/8", "fd00::/8"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn xdp_modes_parse_by_their_flag_names() {
        for mode in [
            XdpAttachMode::Native,
            XdpAttachMode::Generic,
            XdpAttachMode::Tc,
        ] {
            assert_eq!(mode.name().parse::<XdpAttachMode>(), Ok(mode));
        }
        assert!("driver".parse::<XdpAttachMode>().is_err());
    }
}
