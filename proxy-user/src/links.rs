//! Pinned TC links on pod interfaces: what keeps the dataplane attached while skiff-proxy is
//! down, and how a restarted skiff-proxy takes it over without a gap.
//!
//! Owns the link pins under `<bpffs>/links/<interface>-{ingress,egress}` and the attach-or-adopt
//! rule: when a pin exists and its link is alive, the freshly loaded program replaces the old one
//! inside the link atomically (`BPF_LINK_UPDATE`), so packets never see an interface without a
//! program; otherwise the program is attached anew and the link pinned. Interfaces are named in
//! the calling thread's network namespace. Never loads programs or touches map contents.

use std::{
    collections::BTreeSet,
    io,
    path::{Path, PathBuf},
};

use aya::{
    pin::PinError,
    programs::{
        ProgramError, SchedClassifier, TcAttachType,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
    },
};

use crate::programs::{LoadedObject, ProgramName};

#[derive(Debug, thiserror::Error)]
pub enum LinkPinError {
    #[error("creating the link pin directory {path}: {source}")]
    Directory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the tc_pod object has no program {program}")]
    MissingProgram { program: &'static str },
    #[error("attaching {program} to {interface} ({direction}): {source}")]
    Attach {
        program: &'static str,
        interface: String,
        direction: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("pinning the link of {program} on {interface} at {path}: {reason}")]
    Pin {
        program: &'static str,
        interface: String,
        path: PathBuf,
        reason: String,
    },
    #[error("listing the interfaces of this network namespace: {source}")]
    Interfaces {
        #[source]
        source: nix::Error,
    },
}

/// The TC programs every pod interface gets: (program, attach point, pin suffix).
const POD_PROGRAMS: [(ProgramName, TcAttachType, &str); 2] = [
    (ProgramName::TcFromPod, TcAttachType::Ingress, "ingress"),
    (ProgramName::TcToPod, TcAttachType::Egress, "egress"),
];

/// `<pin directory>/links`.
pub fn links_directory(pin_directory: &Path) -> PathBuf {
    pin_directory.join("links")
}

pub(crate) fn pin_path(directory: &Path, interface: &str, suffix: &str) -> PathBuf {
    directory.join(format!("{interface}-{suffix}"))
}

/// How an interface got its programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// Programs attached now (no live pinned link existed).
    Attached,
    /// Programs swapped into links a previous skiff-proxy pinned.
    Adopted,
}

/// Attaches (or adopts) both pod programs on `interface` and pins their links.
pub fn attach_pod_interface(
    object: &mut LoadedObject,
    pin_directory: &Path,
    interface: &str,
) -> Result<Attachment, LinkPinError> {
    let directory = links_directory(pin_directory);
    std::fs::create_dir_all(&directory).map_err(|source| LinkPinError::Directory {
        path: directory.clone(),
        source,
    })?;
    let mut attachment = Attachment::Adopted;
    for (program, attach_type, suffix) in POD_PROGRAMS {
        let name = program.as_str();
        let classifier = object
            .classifier_mut(program)
            .ok_or(LinkPinError::MissingProgram { program: name })?;
        let path = pin_path(&directory, interface, suffix);
        let attach_error = |source| LinkPinError::Attach {
            program: name,
            interface: interface.to_owned(),
            direction: suffix,
            source: Box::new(source),
        };
        let link_id = match adopt(classifier, &path) {
            Some(link_id) => link_id,
            None => {
                attachment = Attachment::Attached;
                classifier
                    .attach(interface, attach_type)
                    .map_err(attach_error)?
            }
        };
        let pin_error = |reason: String| LinkPinError::Pin {
            program: name,
            interface: interface.to_owned(),
            path: path.clone(),
            reason,
        };
        let link = classifier.take_link(link_id).map_err(attach_error)?;
        let link = FdLink::try_from(link).map_err(|error| pin_error(error.to_string()))?;
        pin_link(link, &path).map_err(pin_error)?;
    }
    Ok(attachment)
}

/// Pins `link` at `path`, replacing whatever pin is there.
pub(crate) fn pin_link(link: FdLink, path: &Path) -> Result<(), String> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error.to_string()),
    }
    link.pin(path)
        .map(|_| ())
        .map_err(|error: PinError| error.to_string())
}

/// Swaps `classifier` into the live link pinned at `path`, if there is one. A pin whose link is
/// dead (its interface was deleted) is removed.
pub(crate) fn adopt(
    classifier: &mut SchedClassifier,
    path: &Path,
) -> Option<aya::programs::tc::SchedClassifierLinkId> {
    adopt_pinned(path, |link| {
        SchedClassifierLink::try_from(link)
            .ok()
            .and_then(|link| classifier.attach_to_link(link).ok())
    })
}

/// Opens the link pinned at `path` and lets `swap` put the new program into it
/// (`BPF_LINK_UPDATE`). A pin that cannot be opened or swapped (its link died with its
/// interface) is removed; `None` then says nothing was adopted.
pub(crate) fn adopt_pinned<T>(path: &Path, swap: impl FnOnce(FdLink) -> Option<T>) -> Option<T> {
    let pinned = match PinnedLink::from_pin(path) {
        Ok(pinned) => pinned,
        Err(LinkError::SyscallError(error)) if error.io_error.kind() == io::ErrorKind::NotFound => {
            return None;
        }
        Err(_) => {
            let _ = std::fs::remove_file(path);
            return None;
        }
    };
    let adopted = swap(FdLink::from(pinned));
    if adopted.is_none() {
        let _ = std::fs::remove_file(path);
    }
    adopted
}

/// Interface names of the calling thread's network namespace.
pub fn interfaces() -> Result<BTreeSet<String>, LinkPinError> {
    let names =
        nix::net::if_::if_nameindex().map_err(|source| LinkPinError::Interfaces { source })?;
    Ok(names
        .iter()
        .map(|interface| interface.name().to_string_lossy().into_owned())
        .collect())
}

/// Removes link pins of interfaces that no longer exist (their links died with them).
pub fn remove_stale_pins(pin_directory: &Path, existing: &BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(links_directory(pin_directory)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let interface = POD_PROGRAMS
            .iter()
            .find_map(|(_, _, suffix)| name.strip_suffix(&format!("-{suffix}")));
        if let Some(interface) = interface
            && !existing.contains(interface)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The cgroup socket-address programs and their pin names.
const SOCKET_PROGRAMS: [ProgramName; 4] = [
    ProgramName::SockConnect4,
    ProgramName::SockSendmsg4,
    ProgramName::SockRecvmsg4,
    ProgramName::SockGetpeername4,
];

/// The cgroup v2 hierarchy to attach socket programs to: `/sys/fs/cgroup` on a unified system,
/// `/sys/fs/cgroup/unified` on a hybrid one.
pub fn default_cgroup_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| {
            nix::sys::statfs::statfs(path)
                .is_ok_and(|stats| stats.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        })
}

/// Attaches the socket programs of `object` to the cgroup at `cgroup_root` (as BPF links, which
/// run beside other programs there) and pins their links. A link a previous skiff-proxy pinned is replaced:
/// the new program is attached first, then the old link released, so node sockets are never
/// without translation (for an instant both run; the second finds a backend address, not a
/// service, and leaves it).
pub fn attach_socket_programs(
    object: &mut LoadedObject,
    pin_directory: &Path,
    cgroup_root: &Path,
) -> Result<(), LinkPinError> {
    let directory = links_directory(pin_directory);
    std::fs::create_dir_all(&directory).map_err(|source| LinkPinError::Directory {
        path: directory.clone(),
        source,
    })?;
    let cgroup = std::fs::File::open(cgroup_root).map_err(|source| LinkPinError::Directory {
        path: cgroup_root.to_owned(),
        source,
    })?;
    for program in SOCKET_PROGRAMS {
        let name = program.as_str();
        let hook = object
            .cgroup_sock_addr_mut(program)
            .ok_or(LinkPinError::MissingProgram { program: name })?;
        let path = directory.join(format!("cgroup-{name}"));
        let attach_error = |source| LinkPinError::Attach {
            program: name,
            interface: cgroup_root.display().to_string(),
            direction: "cgroup",
            source: Box::new(source),
        };
        let pin_error = |reason: String| LinkPinError::Pin {
            program: name,
            interface: cgroup_root.display().to_string(),
            path: path.clone(),
            reason,
        };
        // Through a BPF link (kernel >= 5.7) a cgroup attachment always coexists with others;
        // `bpf_link_create` refuses the legacy multi flag, so the mode is the default.
        let link_id = hook
            .attach(&cgroup, aya::programs::links::CgroupAttachMode::Single)
            .map_err(attach_error)?;
        let link = hook.take_link(link_id).map_err(attach_error)?;
        let link = FdLink::try_from(link).map_err(|error| pin_error(error.to_string()))?;
        // Releasing the old pin drops the previous skiff-proxy's link (if nothing else holds it).
        let previous = PinnedLink::from_pin(&path).ok();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(pin_error(error.to_string())),
        }
        drop(previous);
        link.pin(&path)
            .map_err(|error: PinError| pin_error(error.to_string()))?;
    }
    Ok(())
}
