//! Attaching loaded programs to network interfaces of the calling thread's network namespace.
//!
//! Owns the choice of attach mechanism (TCX links on kernels ≥ 6.6, clsact + netlink filters
//! before; XDP links with the legacy netlink fallback) and errors that name the interface. Never
//! loads programs and never reads maps. Interface names are resolved in the network namespace of
//! the calling thread: to attach inside another namespace, call from a thread that entered it.

use aya::programs::{
    ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode, tc,
    tc::{SchedClassifierLinkId, TcError},
    xdp::XdpLinkId,
};

use crate::programs::{LoadedObject, ProgramName};

/// Where on an interface a TC program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcDirection {
    /// Packets the interface receives.
    Ingress,
    /// Packets the interface sends.
    Egress,
}

impl TcDirection {
    fn attach_type(self) -> TcAttachType {
        match self {
            TcDirection::Ingress => TcAttachType::Ingress,
            TcDirection::Egress => TcAttachType::Egress,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("interface name {interface:?} is not valid: {reason}")]
    InvalidInterfaceName {
        interface: String,
        reason: &'static str,
    },
    #[error(
        "{program} cannot be attached this way: the {object} object has no such program of that type"
    )]
    WrongProgramType {
        program: &'static str,
        object: &'static str,
    },
    #[error("adding the clsact qdisc to {interface}: {source}")]
    Clsact {
        interface: String,
        #[source]
        source: TcError,
    },
    #[error("attaching {program} to {interface} ({direction}): {source}")]
    Attach {
        program: &'static str,
        interface: String,
        direction: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("detaching {program}: {source}")]
    Detach {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
}

/// Linux limits interface names to IFNAMSIZ - 1 bytes.
const IFNAMSIZ: usize = 16;

fn check_interface_name(interface: &str) -> Result<(), AttachError> {
    let invalid = |reason| AttachError::InvalidInterfaceName {
        interface: interface.to_owned(),
        reason,
    };
    if interface.is_empty() {
        return Err(invalid("it is empty"));
    }
    if interface.len() >= IFNAMSIZ {
        return Err(invalid("it is longer than 15 bytes"));
    }
    if interface
        .bytes()
        .any(|byte| byte == 0 || byte == b'/' || byte.is_ascii_whitespace())
    {
        return Err(invalid("it contains a NUL, '/' or white space"));
    }
    Ok(())
}

/// Attaches the TC program of `program` to `interface` in `direction`.
pub fn attach_tc(
    object: &mut LoadedObject,
    program: ProgramName,
    interface: &str,
    direction: TcDirection,
) -> Result<SchedClassifierLinkId, AttachError> {
    check_interface_name(interface)?;
    let name = program.as_str();
    let direction_name = match direction {
        TcDirection::Ingress => "ingress",
        TcDirection::Egress => "egress",
    };
    let classifier = classifier(object, program)?;
    // TCX (kernel >= 6.6) needs no qdisc; older kernels attach through clsact.
    if !tcx_available() {
        match tc::qdisc_add_clsact(interface) {
            Ok(()) | Err(TcError::AlreadyAttached) => {}
            Err(TcError::NetlinkError(error)) if error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(AttachError::Clsact {
                    interface: interface.to_owned(),
                    source,
                });
            }
        }
    }
    classifier
        .attach(interface, direction.attach_type())
        .map_err(|source| AttachError::Attach {
            program: name,
            interface: interface.to_owned(),
            direction: direction_name,
            source: Box::new(source),
        })
}

/// Attaches the XDP program of `program` to `interface` (native mode where the driver has it).
pub fn attach_xdp(
    object: &mut LoadedObject,
    program: ProgramName,
    interface: &str,
) -> Result<XdpLinkId, AttachError> {
    check_interface_name(interface)?;
    let name = program.as_str();
    let xdp = xdp(object, program)?;
    xdp.attach(interface, XdpMode::Default)
        .map_err(|source| AttachError::Attach {
            program: name,
            interface: interface.to_owned(),
            direction: "xdp",
            source: Box::new(source),
        })
}

/// Detaches a TC program attached by [`attach_tc`]; the program stays loaded.
pub fn detach_tc(
    object: &mut LoadedObject,
    program: ProgramName,
    link: SchedClassifierLinkId,
) -> Result<(), AttachError> {
    let name = program.as_str();
    let classifier = classifier(object, program)?;
    classifier
        .detach(link)
        .map_err(|source| AttachError::Detach {
            program: name,
            source: Box::new(source),
        })
}

/// Detaches an XDP program attached by [`attach_xdp`]; the program stays loaded.
pub fn detach_xdp(
    object: &mut LoadedObject,
    program: ProgramName,
    link: XdpLinkId,
) -> Result<(), AttachError> {
    let name = program.as_str();
    let xdp = xdp(object, program)?;
    xdp.detach(link).map_err(|source| AttachError::Detach {
        program: name,
        source: Box::new(source),
    })
}

fn wrong_type(object: &LoadedObject, program: ProgramName) -> AttachError {
    AttachError::WrongProgramType {
        program: program.as_str(),
        object: object.object().name(),
    }
}

fn classifier(
    object: &mut LoadedObject,
    program: ProgramName,
) -> Result<&mut SchedClassifier, AttachError> {
    let error = wrong_type(object, program);
    object.classifier_mut(program).ok_or(error)
}

fn xdp(object: &mut LoadedObject, program: ProgramName) -> Result<&mut Xdp, AttachError> {
    let error = wrong_type(object, program);
    object.xdp_mut(program).ok_or(error)
}

/// Whether the kernel has TCX links (6.6+); aya then attaches through them instead of clsact.
fn tcx_available() -> bool {
    use aya::util::KernelVersion;
    KernelVersion::current()
        .is_ok_and(|current| current.code() >= KernelVersion::new(6, 6, 0).code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_the_kernel_would_reject_are_refused_before_any_syscall() {
        for bad in ["", "a-name-that-is-too-long", "veth\0x", "eth/0", "eth 0"] {
            assert!(
                matches!(
                    check_interface_name(bad),
                    Err(AttachError::InvalidInterfaceName { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        assert!(check_interface_name("veth-skiff0").is_ok());
        assert!(check_interface_name("123456789012345").is_ok());
    }
}
