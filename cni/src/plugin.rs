//! The CNI operations: ADD, DEL, CHECK, VERSION, STATUS and GC over IPAM and netlink.
//!
//! Owns the order of the steps and the mapping of IPAM and netlink failures to CNI error codes.
//! It reads the pod CIDR file and calls [`crate::ipam`] and [`crate::netlink`]; it does not read
//! stdin or the process environment and does not print (the binary does), so tests can drive it
//! with any inputs.
//!
//! Order that keeps state consistent when a step fails or the process is killed:
//! - ADD allocates first, then builds the interfaces; if building fails it releases the address
//!   again (the netlink layer has already removed what it made). A kill between the two leaves an
//!   allocation owned by the container, which the runtime's DEL after the failed ADD (or GC)
//!   releases, and which a retried ADD for the same container reuses.
//! - DEL releases the address whatever happens to the interfaces (the two run side by side) and
//!   never needs the netns, so a pod whose netns is already gone never keeps its address.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use serde_json::Value;
use tracing::{info, info_span, warn};

use crate::ipam::{AllocationError, Attachment, IpamError, IpamStore};
use crate::netlink::{self, NetlinkError, PodInterface};
use crate::spec::{
    self, Attached, CniError, Command, Environment, ErrorCode, LATEST_VERSION, NetworkConfig,
};

/// What one invocation produced: the version to answer in, and the output (printed on stdout
/// with exit status 0) or the error (printed on stdout with exit status 1).
#[derive(Debug)]
pub struct Execution {
    pub cni_version: String,
    pub result: Result<Option<Value>, CniError>,
}

/// Runs one CNI invocation with the environment read through `variable` and the configuration
/// in `stdin`.
pub fn execute(variable: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Execution {
    // The version to answer errors in: the configuration's, when it has a readable one.
    let declared_version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|value| value.get("cniVersion")?.as_str().map(str::to_owned))
        .filter(|version| spec::SUPPORTED_VERSIONS.contains(&version.as_str()));
    let cni_version = declared_version
        .clone()
        .unwrap_or_else(|| LATEST_VERSION.to_owned());
    let environment = match Environment::from_variables(variable) {
        Ok(environment) => environment,
        Err(error) => {
            return Execution {
                cni_version,
                result: Err(error),
            };
        }
    };
    if environment.command == Command::Version {
        return Execution {
            result: Ok(Some(spec::version_result(&cni_version))),
            cni_version,
        };
    }
    let result = NetworkConfig::parse(stdin).and_then(|config| run(&environment, &config));
    Execution {
        cni_version,
        result,
    }
}

fn run(environment: &Environment, config: &NetworkConfig) -> Result<Option<Value>, CniError> {
    if !environment.command.available_in(&config.cni_version) {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "{} needs cniVersion 1.1.0; the network configuration says {}",
                environment.command.name(),
                config.cni_version
            ),
        ));
    }
    let container = environment.container_id.as_deref().unwrap_or("");
    let _span = info_span!(
        "cni",
        command = environment.command.name(),
        network = %config.name,
        container,
        ifname = environment.ifname.as_deref().unwrap_or(""),
    )
    .entered();
    match environment.command {
        Command::Add => add(environment, config).map(Some),
        Command::Del => del(environment, config).map(|()| None),
        Command::Check => check(environment, config).map(|()| None),
        Command::Status => status(config).map(|()| None),
        Command::Gc => gc(config).map(|()| None),
        Command::Version => Ok(Some(spec::version_result(&config.cni_version))),
    }
}

/// The attachment and the pod interface description of an ADD, DEL or CHECK.
fn pod_interface(
    environment: &Environment,
    config: &NetworkConfig,
    address: std::net::Ipv4Addr,
) -> Result<(Attachment, PodInterface), CniError> {
    let attachment = attachment(environment)?;
    let pod = PodInterface {
        netns: environment.netns.clone().unwrap_or_default(),
        ifname: attachment.ifname.clone(),
        host_ifname: netlink::host_interface_name(&attachment.container_id, &attachment.ifname),
        address,
        mtu: config.mtu,
    };
    Ok((attachment, pod))
}

fn attachment(environment: &Environment) -> Result<Attachment, CniError> {
    environment.attachment().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_CONTAINERID and CNI_IFNAME are required",
        )
    })
}

fn open_store(config: &NetworkConfig) -> Result<IpamStore, CniError> {
    IpamStore::open(&config.data_dir, &config.name).map_err(ipam_error)
}

fn add(environment: &Environment, config: &NetworkConfig) -> Result<Value, CniError> {
    let pod_cidr = config.resolve_pod_cidr(|path| std::fs::read_to_string(path))?;
    let netns = environment.netns.clone().unwrap_or_default();
    if !netns.exists() {
        return Err(netns_missing(&netns));
    }
    let store = open_store(config)?;
    let (attachment, _) = pod_interface(environment, config, pod_cidr.address())?;
    let address = store.allocate(pod_cidr, &attachment).map_err(ipam_error)?;
    let (_, pod) = pod_interface(environment, config, address)?;
    info!(%address, host_interface = %pod.host_ifname, "allocated");
    match netlink::add_pod_interface(&pod) {
        Ok(created) => Ok(spec::add_result(
            config,
            &Attached {
                host_interface: pod.host_ifname.clone(),
                host_mac: created.host_mac,
                pod_interface: pod.ifname.clone(),
                pod_mac: created.pod_mac,
                netns: netns.display().to_string(),
                address,
                gateway: netlink::GATEWAY,
                mtu: config.mtu,
            },
        )),
        Err(error) => {
            if let Err(release_error) = store.release(&attachment) {
                warn!(%release_error, %address, "could not release the address of a failed ADD; DEL or GC will");
            }
            Err(netlink_error(error))
        }
    }
}

fn del(environment: &Environment, config: &NetworkConfig) -> Result<(), CniError> {
    let attachment = attachment(environment)?;
    let store = open_store(config)?;
    let host_ifname = netlink::host_interface_name(&attachment.container_id, &attachment.ifname);
    // The release (an fsynced write) and the veth's removal (the kernel's teardown, ~20 ms) run
    // side by side; neither depends on the other, and the release never waits for netlink, so a
    // netlink failure cannot keep the address. The veth's /32 route outliving the release by a few
    // milliseconds is harmless: an ADD that reuses the address replaces the route.
    let span = tracing::Span::current();
    let (released, deleted) = std::thread::scope(|scope| {
        let deleting = scope.spawn(|| {
            let _entered = span.enter();
            netlink::delete_pod_interface(&host_ifname)
        });
        let released = store.release(&attachment);
        let deleted = deleting
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (released, deleted)
    });
    if let Some(address) = released.map_err(ipam_error)? {
        info!(%address, "released");
    }
    if deleted.map_err(netlink_error)? {
        info!(host_interface = %host_ifname, "deleted the pod's veth");
    }
    Ok(())
}

fn check(environment: &Environment, config: &NetworkConfig) -> Result<(), CniError> {
    let attachment = attachment(environment)?;
    let store = open_store(config)?;
    let address = store
        .lookup(&attachment)
        .map_err(ipam_error)?
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::UnknownContainer,
                format!(
                    "no address is allocated to {attachment} in network {}",
                    config.name
                ),
            )
        })?;
    if let Some(previous) = &config.prev_result {
        let expected = format!("{address}/32");
        let listed = spec::result_addresses(previous);
        if !listed.contains(&expected) {
            return Err(CniError::new(
                ErrorCode::CheckFailed,
                format!(
                    "prevResult lists {listed:?}, but {attachment} holds {expected} in the IPAM state"
                ),
            ));
        }
    }
    let (_, pod) = pod_interface(environment, config, address)?;
    if !pod.netns.exists() {
        return Err(netns_missing(&pod.netns));
    }
    netlink::check_pod_interface(&pod).map_err(netlink_error)
}

fn status(config: &NetworkConfig) -> Result<(), CniError> {
    let not_available = |error: CniError| CniError {
        code: ErrorCode::NotAvailable,
        ..error
    };
    let pod_cidr = config
        .resolve_pod_cidr(|path| std::fs::read_to_string(path))
        .map_err(not_available)?;
    let store = open_store(config).map_err(not_available)?;
    let free = store
        .free_addresses(pod_cidr)
        .map_err(ipam_error)
        .map_err(not_available)?;
    if free == 0 {
        return Err(CniError::new(
            ErrorCode::NotAvailable,
            format!("no free address in pod CIDR {pod_cidr}: every usable address is allocated"),
        ));
    }
    Ok(())
}

fn gc(config: &NetworkConfig) -> Result<(), CniError> {
    let valid = config.valid_attachments.clone().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            "GC needs the list of attachments in use (cni.dev/valid-attachments); without it nothing is released",
        )
    })?;
    let store = open_store(config)?;
    let stale: Vec<Attachment> = store
        .allocations()
        .map_err(ipam_error)?
        .into_values()
        .filter(|owner| !valid.contains(owner))
        .collect();
    let released = store.gc(&valid).map_err(ipam_error)?;
    info!(released = released.len(), "released stale allocations");
    // The veths to remove: those of the released allocations, and any other host veth of ours
    // that no valid attachment owns (left by a DEL that was killed after releasing the address).
    let valid_names: HashSet<String> = valid
        .iter()
        .map(|owner| netlink::host_interface_name(&owner.container_id, &owner.ifname))
        .collect();
    let mut stale_names: BTreeSet<String> = stale
        .iter()
        .map(|owner| netlink::host_interface_name(&owner.container_id, &owner.ifname))
        .collect();
    // Keep going after a failure: remove what can be removed, report the first problem.
    let mut first_error = None;
    match netlink::host_interfaces() {
        Ok(names) => {
            stale_names.extend(names.into_iter().filter(|name| !valid_names.contains(name)))
        }
        Err(error) => {
            warn!(%error, "could not list the host veths");
            first_error = Some(netlink_error(error));
        }
    }
    for host_ifname in stale_names {
        match netlink::delete_pod_interface(&host_ifname) {
            Ok(true) => info!(host_interface = %host_ifname, "deleted a stale veth"),
            Ok(false) => {}
            Err(error) => {
                warn!(%error, host_interface = %host_ifname, "could not delete a stale veth");
                first_error.get_or_insert(netlink_error(error));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn netns_missing(netns: &Path) -> CniError {
    CniError::new(
        ErrorCode::UnknownContainer,
        format!(
            "the container's network namespace {} does not exist",
            netns.display()
        ),
    )
}

fn ipam_error(error: IpamError) -> CniError {
    let code = match &error {
        IpamError::Allocation(AllocationError::Exhausted { .. }) => ErrorCode::TryAgainLater,
        IpamError::Allocation(_) | IpamError::InvalidNetworkName { .. } => {
            ErrorCode::InvalidNetworkConfig
        }
        _ => ErrorCode::IoFailure,
    };
    CniError::new(code, error.to_string())
}

fn netlink_error(error: NetlinkError) -> CniError {
    let code = match &error {
        NetlinkError::NetnsNotFound { .. } => ErrorCode::UnknownContainer,
        NetlinkError::InterfaceExists { .. } => ErrorCode::InterfaceExists,
        NetlinkError::Mismatch { .. } => ErrorCode::CheckFailed,
        _ => ErrorCode::NetlinkFailure,
    };
    CniError::new(code, error.to_string())
}
