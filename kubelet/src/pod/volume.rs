//! What each pod volume holds: the files of `configMap`, `secret`, `projected` and `downwardAPI`
//! volumes, the directory of an `emptyDir`, and the checks of a `hostPath`.
//!
//! Owns upstream's payload rules (`MakePayload` of the configMap and secret plugins, projected
//! `collectData`, downward API `CollectData`): every key or only `items`, `defaultMode` 0644,
//! per-item `mode`, `optional`, `binaryData`, the atomic writer's path validation, the `hostPath`
//! `type` checks, the `fsGroup` mode bits, the plugin directory names and upstream's error messages
//! (`configmap "x" not found`, `MountVolume.SetUp failed for volume "x" : ...`).
//!
//! Must not do I/O: objects come in through [`ObjectResolver`], the state of a `hostPath` comes
//! in as a [`FileKind`]. Writing payloads, creating directories and files is the executor's
//! (`worker::volumes`).
//!
//! Service account tokens: there is no TokenRequest API yet, so a `serviceAccountToken`
//! projection holds a static token the executor passes in ([`VolumeInputs::service_account_token`],
//! possibly empty); `audience` and `expirationSeconds` are ignored.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, Volume, VolumeProjection,
};

use super::env::{
    EnvError, LookupError, ObjectResolver, container_resource_value, pod_field_value,
};
use super::{NodeContext, pod_containers, pod_init_containers, pod_namespace};

/// Plugin directory of `emptyDir` volumes under `<root-dir>/pods/<uid>/volumes`.
pub const EMPTY_DIR_PLUGIN: &str = "kubernetes.io~empty-dir";
/// Plugin directory of `configMap` volumes.
pub const CONFIG_MAP_PLUGIN: &str = "kubernetes.io~configmap";
/// Plugin directory of `secret` volumes.
pub const SECRET_PLUGIN: &str = "kubernetes.io~secret";
/// Plugin directory of `projected` volumes.
pub const PROJECTED_PLUGIN: &str = "kubernetes.io~projected";
/// Plugin directory of `downwardAPI` volumes.
pub const DOWNWARD_API_PLUGIN: &str = "kubernetes.io~downward-api";

/// Upstream's `defaultMode` of configMap, secret, projected and downwardAPI volumes.
pub const DEFAULT_MODE: i32 = 0o644;
/// The atomic writer's longest path.
const MAX_PATH_LENGTH: usize = 4096;
/// The atomic writer's longest file name.
const MAX_FILE_NAME_LENGTH: usize = 255;

/// One file of a volume's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// Content.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// A volume's files by relative path.
pub type Payload = BTreeMap<String, FileProjection>;

/// `hostPath.type` (upstream `v1.HostPathType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathType {
    /// `""`: no checks.
    Unset,
    /// Create an empty directory (0755) if nothing exists.
    DirectoryOrCreate,
    /// A directory must exist.
    Directory,
    /// Create an empty file (0644) if nothing exists.
    FileOrCreate,
    /// A file must exist.
    File,
    /// A UNIX socket must exist.
    Socket,
    /// A character device must exist.
    CharDevice,
    /// A block device must exist.
    BlockDevice,
}

impl HostPathType {
    /// Parses the API spelling.
    ///
    /// # Errors
    /// [`VolumeError::UnsupportedHostPathType`] for anything else.
    pub fn parse(value: Option<&str>) -> Result<Self, VolumeError> {
        Ok(match value.unwrap_or_default() {
            "" => Self::Unset,
            "DirectoryOrCreate" => Self::DirectoryOrCreate,
            "Directory" => Self::Directory,
            "FileOrCreate" => Self::FileOrCreate,
            "File" => Self::File,
            "Socket" => Self::Socket,
            "CharDevice" => Self::CharDevice,
            "BlockDevice" => Self::BlockDevice,
            other => {
                return Err(VolumeError::UnsupportedHostPathType {
                    type_: other.to_owned(),
                });
            }
        })
    }
}

/// What exists at a `hostPath`, as the executor found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Nothing.
    Missing,
    /// A directory.
    Directory,
    /// A regular file.
    File,
    /// A UNIX socket.
    Socket,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// Anything else (a FIFO, ...).
    Other,
}

/// What the executor must do to a `hostPath` before mounting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathAction {
    /// Mount it as it is.
    Mount,
    /// Create a directory (0755, with parents), then mount it.
    CreateDirectory,
    /// Create an empty file (0644; the parent must exist), then mount it.
    CreateFile,
}

/// Upstream's `checkType`: what to do with `path` of `type_` when `found` is there.
///
/// # Errors
/// [`VolumeError::HostPathTypeCheck`] when the path is not what the type asks for.
pub fn host_path_action(
    path: &str,
    type_: HostPathType,
    found: FileKind,
) -> Result<HostPathAction, VolumeError> {
    let fail = |what: &'static str| VolumeError::HostPathTypeCheck {
        path: path.to_owned(),
        what,
    };
    match (type_, found) {
        (HostPathType::Unset, _) => Ok(HostPathAction::Mount),
        (HostPathType::DirectoryOrCreate, FileKind::Missing) => Ok(HostPathAction::CreateDirectory),
        (HostPathType::FileOrCreate, FileKind::Missing) => Ok(HostPathAction::CreateFile),
        (HostPathType::DirectoryOrCreate | HostPathType::Directory, FileKind::Directory)
        | (HostPathType::FileOrCreate | HostPathType::File, FileKind::File)
        | (HostPathType::Socket, FileKind::Socket)
        | (HostPathType::CharDevice, FileKind::CharDevice)
        | (HostPathType::BlockDevice, FileKind::BlockDevice) => Ok(HostPathAction::Mount),
        (HostPathType::DirectoryOrCreate | HostPathType::Directory, _) => Err(fail("a directory")),
        (HostPathType::FileOrCreate | HostPathType::File, _) => Err(fail("a file")),
        (HostPathType::Socket, _) => Err(fail("a socket file")),
        (HostPathType::CharDevice, _) => Err(fail("a character device")),
        (HostPathType::BlockDevice, _) => Err(fail("a block device")),
    }
}

/// What one pod volume holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeContent {
    /// An empty directory (`emptyDir`; `medium: Memory` is a plain directory too, not tmpfs).
    EmptyDir,
    /// Files written by the atomic writer into the plugin's directory; mounted read-only.
    Files {
        /// The plugin directory name ([`CONFIG_MAP_PLUGIN`], ...).
        plugin: &'static str,
        /// The files.
        payload: Payload,
    },
    /// A path of the host.
    HostPath {
        /// The host path.
        path: String,
        /// Its `type`.
        type_: HostPathType,
    },
}

impl VolumeContent {
    /// The plugin directory under `<root-dir>/pods/<uid>/volumes` (none for `hostPath`).
    #[must_use]
    pub fn plugin(&self) -> Option<&'static str> {
        match self {
            Self::EmptyDir => Some(EMPTY_DIR_PLUGIN),
            Self::Files { plugin, .. } => Some(plugin),
            Self::HostPath { .. } => None,
        }
    }

    /// The volume itself is read-only (upstream `GetAttributes().ReadOnly`): the kubelet-written
    /// kinds are.
    #[must_use]
    pub fn read_only(&self) -> bool {
        matches!(self, Self::Files { .. })
    }

    /// The runtime may relabel it for SELinux (upstream: every kubelet-managed kind, never a
    /// `hostPath`).
    #[must_use]
    pub fn selinux_relabel(&self) -> bool {
        !matches!(self, Self::HostPath { .. })
    }
}

/// Why a volume's content cannot be made, worded as upstream words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    /// A required ConfigMap does not exist.
    #[error("configmap {name:?} not found")]
    ConfigMapNotFound {
        /// ConfigMap name.
        name: String,
    },
    /// A required Secret does not exist.
    #[error("secret {name:?} not found")]
    SecretNotFound {
        /// Secret name.
        name: String,
    },
    /// An item names a key the ConfigMap does not have.
    #[error("configmap references non-existent config key: {key}")]
    ConfigMapKeyNotFound {
        /// The key.
        key: String,
    },
    /// An item names a key the Secret does not have.
    #[error("references non-existent secret key: {key}")]
    SecretKeyNotFound {
        /// The key.
        key: String,
    },
    /// A payload path is empty.
    #[error("invalid path: must not be empty: {path:?}")]
    EmptyPath {
        /// The path.
        path: String,
    },
    /// A payload path is absolute.
    #[error("invalid path: must be relative path: {path}")]
    AbsolutePath {
        /// The path.
        path: String,
    },
    /// A payload path is too long.
    #[error("invalid path: must be less than or equal to {MAX_PATH_LENGTH} characters")]
    PathTooLong,
    /// A file name in a payload path is too long.
    #[error(
        "invalid path: filenames must be less than or equal to {MAX_FILE_NAME_LENGTH} characters"
    )]
    FileNameTooLong,
    /// A payload path backs up with `..`.
    #[error("invalid path: must not contain '..': {path}")]
    PathBacksteps {
        /// The path.
        path: String,
    },
    /// A payload path starts with `..` (reserved for the writer's own entries).
    #[error("invalid path: must not start with '..': {path}")]
    ReservedPath {
        /// The path.
        path: String,
    },
    /// `hostPath.type` is not a known type.
    #[error("hostPath type {type_:?} is not supported")]
    UnsupportedHostPathType {
        /// The type.
        type_: String,
    },
    /// A `hostPath` is not of its `type`.
    #[error("hostPath type check failed: {path} is not {what}")]
    HostPathTypeCheck {
        /// The path.
        path: String,
        /// What it should have been (`a directory`, ...).
        what: &'static str,
    },
    /// A downward API `resourceFieldRef` without `containerName`.
    #[error("resourceFieldRef of {path} must name a container")]
    ResourceFieldWithoutContainer {
        /// The item's path.
        path: String,
    },
    /// A downward API item cannot be resolved.
    #[error(transparent)]
    DownwardApi(#[from] EnvError),
    /// The object lookup itself failed.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// Several sources of a projected volume failed (upstream's aggregate: `[a, b]`).
    #[error("[{}]", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Aggregate(Vec<VolumeError>),
}

/// A volume whose content cannot be made: upstream's `FailedMount` event message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume {volume:?} : {error}")]
pub struct MountFailure {
    /// The volume's name.
    pub volume: String,
    /// Why.
    pub error: VolumeError,
}

/// Inputs of [`desired_volumes`] besides the pod and the objects.
#[derive(Debug, Clone, Copy)]
pub struct VolumeInputs<'a> {
    /// Node-wide facts (downward API resource defaults).
    pub node: &'a NodeContext,
    /// The content of every `serviceAccountToken` projection (static for now; may be empty).
    pub service_account_token: &'a [u8],
}

/// A pod volume and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVolume {
    /// The volume's name.
    pub name: String,
    /// Its content.
    pub content: VolumeContent,
    /// The pod's `fsGroup`: the group the executor gives the volume's files and directories
    /// (upstream `SetVolumeOwnership`); never set for a `hostPath`.
    pub fs_group: Option<u32>,
}

/// Group permission bits upstream's `SetVolumeOwnership` adds to files of a read-only volume.
pub const FS_GROUP_READ_ONLY_MASK: u32 = 0o440;
/// ... and of a writable one.
pub const FS_GROUP_READ_WRITE_MASK: u32 = 0o660;
/// ... and to directories besides those: setgid and search.
pub const FS_GROUP_DIRECTORY_MASK: u32 = 0o2110;

/// The content of every pod volume this kubelet supports, in spec order. Volumes of other
/// kinds (PVCs, CSI, ...) are left out: a container mounting one fails with upstream's
/// "cannot find volume" message.
#[must_use]
pub fn desired_volumes(
    pod: &Pod,
    objects: &impl ObjectResolver,
    inputs: &VolumeInputs<'_>,
) -> Vec<Result<DesiredVolume, MountFailure>> {
    pod.spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter_map(|volume| {
            let content = volume_content(pod, volume, objects, inputs)?;
            Some(
                content
                    .map(|content| with_fs_group(volume, content, fs_group(pod)))
                    .map_err(|error| MountFailure {
                        volume: volume.name.clone(),
                        error,
                    }),
            )
        })
        .collect()
}

/// `spec.securityContext.fsGroup`, when it is a valid gid.
fn fs_group(pod: &Pod) -> Option<u32> {
    let group = pod.spec.as_ref()?.security_context.as_ref()?.fs_group?;
    u32::try_from(group).ok()
}

/// The volume with its `fsGroup`; files of a file volume get the read-only group mask (their
/// final modes, so an unchanged payload is recognised as unchanged).
fn with_fs_group(volume: &Volume, mut content: VolumeContent, group: Option<u32>) -> DesiredVolume {
    let group = group.filter(|_| !matches!(content, VolumeContent::HostPath { .. }));
    if let (Some(_), VolumeContent::Files { payload, .. }) = (group, &mut content) {
        for file in payload.values_mut() {
            file.mode |= FS_GROUP_READ_ONLY_MASK;
        }
    }
    DesiredVolume {
        name: volume.name.clone(),
        content,
        fs_group: group,
    }
}

/// The ConfigMaps and Secrets the pod's volumes reference (directly or projected), so an
/// executor can fetch them.
#[must_use]
pub fn referenced_objects(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut config_maps = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for volume in pod
        .spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
    {
        if let Some(source) = &volume.config_map {
            config_maps.insert(source.name.clone());
        }
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(name);
        }
        let projections = volume
            .projected
            .iter()
            .flat_map(|projected| projected.sources.iter().flatten());
        for projection in projections {
            if let Some(source) = &projection.config_map {
                config_maps.insert(source.name.clone());
            }
            if let Some(source) = &projection.secret {
                secrets.insert(source.name.clone());
            }
        }
    }
    (config_maps, secrets)
}

/// The plugin directory of a volume the kubelet writes files into (configMap, secret,
/// projected, downwardAPI); `None` for other kinds.
#[must_use]
pub fn file_plugin(volume: &Volume) -> Option<&'static str> {
    if volume.config_map.is_some() {
        Some(CONFIG_MAP_PLUGIN)
    } else if volume.secret.is_some() {
        Some(SECRET_PLUGIN)
    } else if volume.projected.is_some() {
        Some(PROJECTED_PLUGIN)
    } else if volume.downward_api.is_some() {
        Some(DOWNWARD_API_PLUGIN)
    } else {
        None
    }
}

fn volume_content(
    pod: &Pod,
    volume: &Volume,
    objects: &impl ObjectResolver,
    inputs: &VolumeInputs<'_>,
) -> Option<Result<VolumeContent, VolumeError>> {
    let namespace = pod_namespace(pod);
    let files = |plugin, payload: Result<Payload, VolumeError>| {
        payload.and_then(|payload| {
            validate_payload(&payload)?;
            Ok(VolumeContent::Files { plugin, payload })
        })
    };
    if volume.empty_dir.is_some() {
        return Some(Ok(VolumeContent::EmptyDir));
    }
    if let Some(source) = &volume.host_path {
        return Some(HostPathType::parse(source.type_.as_deref()).map(|type_| {
            VolumeContent::HostPath {
                path: source.path.clone(),
                type_,
            }
        }));
    }
    if let Some(source) = &volume.config_map {
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        let optional = source.optional.unwrap_or(false);
        let payload = objects
            .config_map(namespace, &source.name)
            .map_err(VolumeError::from)
            .and_then(|found| match found {
                Some(config_map) => {
                    config_map_payload(&config_map, source.items.as_deref(), mode, optional)
                }
                None if optional => Ok(Payload::new()),
                None => Err(VolumeError::ConfigMapNotFound {
                    name: source.name.clone(),
                }),
            });
        return Some(files(CONFIG_MAP_PLUGIN, payload));
    }
    if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        let optional = source.optional.unwrap_or(false);
        let payload = objects
            .secret(namespace, &name)
            .map_err(VolumeError::from)
            .and_then(|found| match found {
                Some(secret) => secret_payload(&secret, source.items.as_deref(), mode, optional),
                None if optional => Ok(Payload::new()),
                None => Err(VolumeError::SecretNotFound { name }),
            });
        return Some(files(SECRET_PLUGIN, payload));
    }
    if let Some(source) = &volume.downward_api {
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        let payload = downward_api_payload(pod, source.items.as_deref(), mode, inputs.node);
        return Some(files(DOWNWARD_API_PLUGIN, payload));
    }
    if let Some(source) = &volume.projected {
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        let sources = source.sources.as_deref().unwrap_or_default();
        let payload = projected_payload(pod, sources, mode, objects, inputs);
        return Some(files(PROJECTED_PLUGIN, payload));
    }
    None
}

/// `mode` as permission bits (negative modes, which validation rejects, read as 0).
fn file_mode(mode: i32) -> u32 {
    u32::try_from(mode).unwrap_or(0) & 0o7777
}

/// Upstream configMap `MakePayload`: every key of `data` and `binaryData`, or only `items`.
fn config_map_payload(
    config_map: &ConfigMap,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let value = |key: &str| -> Option<Vec<u8>> {
        if let Some(text) = config_map.data.as_ref().and_then(|data| data.get(key)) {
            return Some(text.clone().into_bytes());
        }
        config_map
            .binary_data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|bytes| bytes.0.clone())
    };
    let keys: Vec<String> = config_map
        .data
        .iter()
        .flat_map(BTreeMap::keys)
        .chain(config_map.binary_data.iter().flat_map(BTreeMap::keys))
        .cloned()
        .collect();
    key_payload(&keys, value, items, default_mode, optional, |key| {
        VolumeError::ConfigMapKeyNotFound { key }
    })
}

/// Upstream secret `MakePayload` (the API already decoded `data`; `stringData` never reaches
/// the kubelet).
fn secret_payload(
    secret: &Secret,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, VolumeError> {
    let value = |key: &str| -> Option<Vec<u8>> {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|bytes| bytes.0.clone())
    };
    let keys: Vec<String> = secret
        .data
        .iter()
        .flat_map(BTreeMap::keys)
        .cloned()
        .collect();
    key_payload(&keys, value, items, default_mode, optional, |key| {
        VolumeError::SecretKeyNotFound { key }
    })
}

/// The shared part of the configMap and secret payloads.
fn key_payload(
    keys: &[String],
    value: impl Fn(&str) -> Option<Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
    missing: impl Fn(String) -> VolumeError,
) -> Result<Payload, VolumeError> {
    let mut payload = Payload::new();
    match items.filter(|items| !items.is_empty()) {
        None => {
            for key in keys {
                if let Some(data) = value(key) {
                    let mode = file_mode(default_mode);
                    payload.insert(key.clone(), FileProjection { data, mode });
                }
            }
        }
        Some(items) => {
            for item in items {
                let Some(data) = value(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing(item.key.clone()));
                };
                let mode = file_mode(item.mode.unwrap_or(default_mode));
                payload.insert(item.path.clone(), FileProjection { data, mode });
            }
        }
    }
    Ok(payload)
}

/// Upstream downward API `CollectData`: every item's field or resource value.
fn downward_api_payload(
    pod: &Pod,
    items: Option<&[DownwardAPIVolumeFile]>,
    default_mode: i32,
    node: &NodeContext,
) -> Result<Payload, VolumeError> {
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for item in items.unwrap_or_default() {
        let value = if let Some(field) = &item.field_ref {
            pod_field_value(pod, field, &[], node).map_err(VolumeError::from)
        } else if let Some(resource) = &item.resource_field_ref {
            let name = resource.container_name.as_deref().unwrap_or_default();
            match pod_containers(pod)
                .iter()
                .chain(pod_init_containers(pod))
                .find(|container| container.name == name)
            {
                Some(container) => container_resource_value(pod, container, resource, node)
                    .map_err(VolumeError::from),
                None if name.is_empty() => Err(VolumeError::ResourceFieldWithoutContainer {
                    path: item.path.clone(),
                }),
                None => Err(VolumeError::DownwardApi(
                    EnvError::ResourceContainerNotFound {
                        name: name.to_owned(),
                    },
                )),
            }
        } else {
            continue;
        };
        match value {
            Ok(text) => {
                let mode = file_mode(item.mode.unwrap_or(default_mode));
                let data = text.into_bytes();
                payload.insert(item.path.clone(), FileProjection { data, mode });
            }
            Err(error) => errors.push(error),
        }
    }
    aggregate(errors).map(|()| payload)
}

/// Upstream projected `collectData`: the sources in order, later paths replacing earlier ones;
/// every source's error is collected.
fn projected_payload(
    pod: &Pod,
    sources: &[VolumeProjection],
    default_mode: i32,
    objects: &impl ObjectResolver,
    inputs: &VolumeInputs<'_>,
) -> Result<Payload, VolumeError> {
    let namespace = pod_namespace(pod);
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for source in sources {
        let part = if let Some(projection) = &source.config_map {
            let optional = projection.optional.unwrap_or(false);
            match objects.config_map(namespace, &projection.name) {
                Ok(Some(config_map)) => config_map_payload(
                    &config_map,
                    projection.items.as_deref(),
                    default_mode,
                    optional,
                ),
                Ok(None) if optional => Ok(Payload::new()),
                Ok(None) => Err(VolumeError::ConfigMapNotFound {
                    name: projection.name.clone(),
                }),
                Err(error) => Err(error.into()),
            }
        } else if let Some(projection) = &source.secret {
            let optional = projection.optional.unwrap_or(false);
            match objects.secret(namespace, &projection.name) {
                Ok(Some(secret)) => {
                    secret_payload(&secret, projection.items.as_deref(), default_mode, optional)
                }
                Ok(None) if optional => Ok(Payload::new()),
                Ok(None) => Err(VolumeError::SecretNotFound {
                    name: projection.name.clone(),
                }),
                Err(error) => Err(error.into()),
            }
        } else if let Some(projection) = &source.downward_api {
            downward_api_payload(pod, projection.items.as_deref(), default_mode, inputs.node)
        } else if let Some(projection) = &source.service_account_token {
            let token = FileProjection {
                data: inputs.service_account_token.to_vec(),
                mode: file_mode(default_mode),
            };
            Ok(Payload::from([(projection.path.clone(), token)]))
        } else {
            continue;
        };
        match part {
            Ok(part) => payload.extend(part),
            Err(error) => errors.push(error),
        }
    }
    aggregate(errors).map(|()| payload)
}

/// Upstream's `NewAggregate`: nothing, the one error, or all of them.
fn aggregate(mut errors: Vec<VolumeError>) -> Result<(), VolumeError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(VolumeError::Aggregate(errors)),
    }
}

/// Every path of the payload passes [`validate_path`].
fn validate_payload(payload: &Payload) -> Result<(), VolumeError> {
    payload.keys().try_for_each(|path| validate_path(path))
}

/// The atomic writer's `validatePath`: relative, no `..` element, not starting with `..`
/// (the writer's own entries), within the length limits.
///
/// # Errors
/// [`VolumeError`] naming what is wrong with `path`.
pub fn validate_path(path: &str) -> Result<(), VolumeError> {
    let owned = || path.to_owned();
    if path.is_empty() {
        return Err(VolumeError::EmptyPath { path: owned() });
    }
    if path.starts_with('/') {
        return Err(VolumeError::AbsolutePath { path: owned() });
    }
    if path.len() > MAX_PATH_LENGTH {
        return Err(VolumeError::PathTooLong);
    }
    for element in path.split('/') {
        if element == ".." {
            return Err(VolumeError::PathBacksteps { path: owned() });
        }
        if element.len() > MAX_FILE_NAME_LENGTH {
            return Err(VolumeError::FileNameTooLong);
        }
    }
    if path.starts_with("..") {
        return Err(VolumeError::ReservedPath { path: owned() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, ConfigMapVolumeSource, DownwardAPIProjection, DownwardAPIVolumeSource,
        EmptyDirVolumeSource, HostPathVolumeSource, ObjectFieldSelector,
        PersistentVolumeClaimVolumeSource, ProjectedVolumeSource, SecretVolumeSource,
        ServiceAccountTokenProjection,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::super::env::ObjectStore;
    use super::super::testing::{container, pod};
    use super::*;

    fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("default".to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ConfigMap::default()
        }
    }

    fn secret(name: &str, data: &[(&str, &[u8])]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("default".to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.to_owned(),
            path: path.to_owned(),
            mode,
        }
    }

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn with_volumes(volumes: Vec<Volume>) -> Pod {
        let mut p = pod(vec![container("app")]);
        if let Some(spec) = p.spec.as_mut() {
            spec.volumes = Some(volumes);
        }
        p
    }

    fn config_map_volume(name: &str, source: ConfigMapVolumeSource) -> Volume {
        Volume {
            name: name.to_owned(),
            config_map: Some(source),
            ..Volume::default()
        }
    }

    fn compute(pod: &Pod, objects: &ObjectStore) -> Vec<Result<DesiredVolume, MountFailure>> {
        let node = NodeContext::default();
        let inputs = VolumeInputs {
            node: &node,
            service_account_token: b"static-token",
        };
        desired_volumes(pod, objects, &inputs)
    }

    fn payload_of(result: &Result<DesiredVolume, MountFailure>) -> &Payload {
        match result {
            Ok(DesiredVolume {
                content: VolumeContent::Files { payload, .. },
                ..
            }) => payload,
            other => panic!("not a files volume: {other:?}"),
        }
    }

    #[test]
    fn config_map_volume_holds_every_key_and_binary_data_with_the_default_mode() {
        let mut cm = config_map("cfg", &[("a.conf", "alpha")]);
        cm.binary_data = Some([("blob".to_owned(), ByteString(vec![0, 1, 2]))].into());
        let objects = ObjectStore {
            config_maps: vec![cm],
            ..ObjectStore::default()
        };
        let p = with_volumes(vec![config_map_volume(
            "cfg",
            ConfigMapVolumeSource {
                name: "cfg".to_owned(),
                ..ConfigMapVolumeSource::default()
            },
        )]);

        let volumes = compute(&p, &objects);

        let payload = payload_of(&volumes[0]);
        assert_eq!(payload["a.conf"], file("alpha", 0o644));
        assert_eq!(payload["blob"].data, [0, 1, 2]);
        let volume = volumes[0].as_ref().unwrap();
        assert_eq!(volume.content.plugin(), Some(CONFIG_MAP_PLUGIN));
        assert!(volume.content.read_only());
    }

    #[test]
    fn items_select_keys_with_their_paths_and_modes() {
        let objects = ObjectStore {
            config_maps: vec![config_map("cfg", &[("a", "1"), ("b", "2")])],
            ..ObjectStore::default()
        };
        let p = with_volumes(vec![config_map_volume(
            "cfg",
            ConfigMapVolumeSource {
                name: "cfg".to_owned(),
                default_mode: Some(0o600),
                items: Some(vec![
                    item("a", "dir/first", Some(0o400)),
                    item("b", "second", None),
                ]),
                ..ConfigMapVolumeSource::default()
            },
        )]);

        let volumes = compute(&p, &objects);

        let payload = payload_of(&volumes[0]);
        assert_eq!(
            payload,
            &Payload::from([
                ("dir/first".to_owned(), file("1", 0o400)),
                ("second".to_owned(), file("2", 0o600)),
            ])
        );
    }

    #[test]
    fn missing_config_map_fails_with_upstreams_mount_message_unless_optional() {
        let source = |optional| ConfigMapVolumeSource {
            name: "missing".to_owned(),
            optional,
            ..ConfigMapVolumeSource::default()
        };
        let p = with_volumes(vec![
            config_map_volume("cfg", source(None)),
            config_map_volume("maybe", source(Some(true))),
        ]);

        let volumes = compute(&p, &ObjectStore::default());

        let failure = volumes[0].as_ref().unwrap_err();
        assert_eq!(
            failure.to_string(),
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"missing\" not found"
        );
        assert!(payload_of(&volumes[1]).is_empty());
    }

    #[test]
    fn missing_item_key_fails_unless_optional() {
        let objects = ObjectStore {
            config_maps: vec![config_map("cfg", &[("a", "1")])],
            ..ObjectStore::default()
        };
        let source = |optional| ConfigMapVolumeSource {
            name: "cfg".to_owned(),
            items: Some(vec![item("nope", "x", None), item("a", "a", None)]),
            optional,
            ..ConfigMapVolumeSource::default()
        };
        let p = with_volumes(vec![
            config_map_volume("strict", source(None)),
            config_map_volume("lenient", source(Some(true))),
        ]);

        let volumes = compute(&p, &objects);

        assert_eq!(
            volumes[0].as_ref().unwrap_err().error.to_string(),
            "configmap references non-existent config key: nope"
        );
        assert_eq!(payload_of(&volumes[1]).keys().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn secret_volume_holds_decoded_bytes_and_fails_when_missing() {
        let objects = ObjectStore {
            secrets: vec![secret("creds", &[("password", b"s3cret")])],
            ..ObjectStore::default()
        };
        let volume = |name: &str, secret_name: &str| Volume {
            name: name.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name.to_owned()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        };
        let p = with_volumes(vec![volume("creds", "creds"), volume("gone", "gone")]);

        let volumes = compute(&p, &objects);

        assert_eq!(payload_of(&volumes[0])["password"], file("s3cret", 0o644));
        assert_eq!(
            volumes[0].as_ref().unwrap().content.plugin(),
            Some(SECRET_PLUGIN)
        );
        assert_eq!(
            volumes[1].as_ref().unwrap_err().to_string(),
            "MountVolume.SetUp failed for volume \"gone\" : secret \"gone\" not found"
        );
    }

    #[test]
    fn item_paths_must_be_relative_without_backsteps() {
        assert_eq!(
            validate_path("/etc/passwd").unwrap_err().to_string(),
            "invalid path: must be relative path: /etc/passwd"
        );
        assert_eq!(
            validate_path("a/../../b").unwrap_err().to_string(),
            "invalid path: must not contain '..': a/../../b"
        );
        assert_eq!(
            validate_path("..data").unwrap_err().to_string(),
            "invalid path: must not start with '..': ..data"
        );
        assert!(validate_path("").is_err());
        assert!(validate_path(&"x".repeat(256)).is_err());
        assert!(validate_path("a/b..c/d").is_ok());

        let objects = ObjectStore {
            config_maps: vec![config_map("cfg", &[("a", "1")])],
            ..ObjectStore::default()
        };
        let p = with_volumes(vec![config_map_volume(
            "cfg",
            ConfigMapVolumeSource {
                name: "cfg".to_owned(),
                items: Some(vec![item("a", "../escape", None)]),
                ..ConfigMapVolumeSource::default()
            },
        )]);
        assert!(matches!(
            compute(&p, &objects)[0],
            Err(MountFailure {
                error: VolumeError::PathBacksteps { .. },
                ..
            })
        ));
    }

    #[test]
    fn downward_api_volume_writes_pod_metadata() {
        let mut p = with_volumes(vec![Volume {
            name: "info".to_owned(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(
                    [
                        ("name", "metadata.name"),
                        ("ns", "metadata.namespace"),
                        ("uid", "metadata.uid"),
                        ("labels", "metadata.labels"),
                        ("tier", "metadata.labels['tier']"),
                    ]
                    .into_iter()
                    .map(|(path, field)| DownwardAPIVolumeFile {
                        path: path.to_owned(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: field.to_owned(),
                            ..ObjectFieldSelector::default()
                        }),
                        ..DownwardAPIVolumeFile::default()
                    })
                    .collect(),
                ),
                ..DownwardAPIVolumeSource::default()
            }),
            ..Volume::default()
        }]);
        p.metadata.labels = Some(
            [("app", "web"), ("tier", "front")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
        );

        let volumes = compute(&p, &ObjectStore::default());

        let payload = payload_of(&volumes[0]);
        let text = |path: &str| String::from_utf8(payload[path].data.clone()).unwrap();
        assert_eq!(text("name"), "web");
        assert_eq!(text("ns"), "default");
        assert_eq!(text("uid"), "uid-1");
        assert_eq!(text("labels"), "app=\"web\"\ntier=\"front\"");
        assert_eq!(text("tier"), "front");
        assert_eq!(payload["name"].mode, 0o644);
    }

    #[test]
    fn downward_api_resource_items_name_their_container() {
        use k8s_openapi::api::core::v1::{ResourceFieldSelector, ResourceRequirements};
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let item = |path: &str, container: Option<&str>| DownwardAPIVolumeFile {
            path: path.to_owned(),
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: container.map(str::to_owned),
                resource: "limits.cpu".to_owned(),
                divisor: Some(Quantity("1m".to_owned())),
            }),
            ..DownwardAPIVolumeFile::default()
        };
        let volume = |items| Volume {
            name: "limits".to_owned(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(items),
                ..DownwardAPIVolumeSource::default()
            }),
            ..Volume::default()
        };
        let mut p = with_volumes(vec![volume(vec![item("cpu", Some("app"))])]);
        if let Some(spec) = p.spec.as_mut() {
            spec.containers[0].resources = Some(ResourceRequirements {
                limits: Some([("cpu".to_owned(), Quantity("500m".to_owned()))].into()),
                ..ResourceRequirements::default()
            });
        }

        let volumes = compute(&p, &ObjectStore::default());
        assert_eq!(payload_of(&volumes[0])["cpu"].data, b"500");

        if let Some(spec) = p.spec.as_mut() {
            spec.volumes = Some(vec![volume(vec![
                item("a", None),
                item("b", Some("nowhere")),
            ])]);
        }
        let failure = compute(&p, &ObjectStore::default()).remove(0).unwrap_err();
        assert!(
            matches!(&failure.error, VolumeError::Aggregate(errors) if errors.len() == 2),
            "{failure}"
        );
    }

    /// Upstream's `kube-api-access-*` volume: token, `ca.crt` from `kube-root-ca.crt`, namespace.
    fn kube_api_access(optional_ca: Option<bool>) -> Volume {
        Volume {
            name: "kube-api-access".to_owned(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o644),
                sources: Some(vec![
                    VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            path: "token".to_owned(),
                            expiration_seconds: Some(3607),
                            ..ServiceAccountTokenProjection::default()
                        }),
                        ..VolumeProjection::default()
                    },
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "kube-root-ca.crt".to_owned(),
                            items: Some(vec![item("ca.crt", "ca.crt", None)]),
                            optional: optional_ca,
                        }),
                        ..VolumeProjection::default()
                    },
                    VolumeProjection {
                        downward_api: Some(DownwardAPIProjection {
                            items: Some(vec![DownwardAPIVolumeFile {
                                path: "namespace".to_owned(),
                                field_ref: Some(ObjectFieldSelector {
                                    field_path: "metadata.namespace".to_owned(),
                                    ..ObjectFieldSelector::default()
                                }),
                                ..DownwardAPIVolumeFile::default()
                            }]),
                        }),
                        ..VolumeProjection::default()
                    },
                ]),
            }),
            ..Volume::default()
        }
    }

    #[test]
    fn projected_volume_combines_token_config_map_and_downward_api() {
        let objects = ObjectStore {
            config_maps: vec![config_map("kube-root-ca.crt", &[("ca.crt", "PEM")])],
            ..ObjectStore::default()
        };
        let p = with_volumes(vec![kube_api_access(None)]);

        let volumes = compute(&p, &objects);

        let payload = payload_of(&volumes[0]);
        assert_eq!(
            payload,
            &Payload::from([
                ("ca.crt".to_owned(), file("PEM", 0o644)),
                ("namespace".to_owned(), file("default", 0o644)),
                ("token".to_owned(), file("static-token", 0o644)),
            ])
        );
        assert_eq!(
            volumes[0].as_ref().unwrap().content.plugin(),
            Some(PROJECTED_PLUGIN)
        );
    }

    #[test]
    fn projected_volume_reports_a_missing_source_unless_optional() {
        let p = with_volumes(vec![kube_api_access(None)]);
        assert_eq!(
            compute(&p, &ObjectStore::default())[0]
                .as_ref()
                .unwrap_err()
                .error
                .to_string(),
            "configmap \"kube-root-ca.crt\" not found"
        );

        let p = with_volumes(vec![kube_api_access(Some(true))]);
        let volumes = compute(&p, &ObjectStore::default());
        assert_eq!(
            payload_of(&volumes[0]).keys().collect::<Vec<_>>(),
            ["namespace", "token"]
        );
    }

    #[test]
    fn empty_dir_and_host_path_are_kept_and_other_kinds_left_out() {
        let p = with_volumes(vec![
            Volume {
                name: "scratch".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            Volume {
                name: "host".to_owned(),
                host_path: Some(HostPathVolumeSource {
                    path: "/var/log".to_owned(),
                    type_: Some("Directory".to_owned()),
                }),
                ..Volume::default()
            },
            Volume {
                name: "claim".to_owned(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource::default()),
                ..Volume::default()
            },
        ]);

        let volumes: Vec<DesiredVolume> = compute(&p, &ObjectStore::default())
            .into_iter()
            .map(Result::unwrap)
            .collect();

        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[0].content, VolumeContent::EmptyDir);
        assert_eq!(volumes[0].content.plugin(), Some(EMPTY_DIR_PLUGIN));
        assert!(!volumes[0].content.read_only());
        assert_eq!(
            volumes[1].content,
            VolumeContent::HostPath {
                path: "/var/log".to_owned(),
                type_: HostPathType::Directory
            }
        );
        assert!(!volumes[1].content.selinux_relabel());
    }

    #[test]
    fn fs_group_reaches_kubelet_written_volumes_with_group_read_bits() {
        let objects = ObjectStore {
            secrets: vec![secret("creds", &[("key", b"k")])],
            ..ObjectStore::default()
        };
        let mut p = with_volumes(vec![
            Volume {
                name: "creds".to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some("creds".to_owned()),
                    default_mode: Some(0o400),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "host".to_owned(),
                host_path: Some(HostPathVolumeSource {
                    path: "/tmp".to_owned(),
                    type_: None,
                }),
                ..Volume::default()
            },
        ]);
        if let Some(spec) = p.spec.as_mut() {
            spec.security_context = Some(k8s_openapi::api::core::v1::PodSecurityContext {
                fs_group: Some(2000),
                ..Default::default()
            });
        }

        let volumes = compute(&p, &objects);

        assert_eq!(payload_of(&volumes[0])["key"].mode, 0o440);
        assert_eq!(volumes[0].as_ref().unwrap().fs_group, Some(2000));
        assert_eq!(volumes[1].as_ref().unwrap().fs_group, None);
    }

    #[test]
    fn host_path_types_are_checked_and_created_as_upstream() {
        use FileKind as K;
        use HostPathType as T;
        let action = |type_, found| host_path_action("/p", type_, found);
        assert_eq!(action(T::Unset, K::Missing), Ok(HostPathAction::Mount));
        assert_eq!(
            action(T::DirectoryOrCreate, K::Missing),
            Ok(HostPathAction::CreateDirectory)
        );
        assert_eq!(
            action(T::FileOrCreate, K::Missing),
            Ok(HostPathAction::CreateFile)
        );
        assert_eq!(
            action(T::Directory, K::Directory),
            Ok(HostPathAction::Mount)
        );
        assert_eq!(action(T::Socket, K::Socket), Ok(HostPathAction::Mount));
        assert_eq!(
            action(T::Directory, K::Missing).unwrap_err().to_string(),
            "hostPath type check failed: /p is not a directory"
        );
        assert_eq!(
            action(T::File, K::Directory).unwrap_err().to_string(),
            "hostPath type check failed: /p is not a file"
        );
        assert_eq!(
            action(T::Socket, K::File).unwrap_err().to_string(),
            "hostPath type check failed: /p is not a socket file"
        );
        assert!(HostPathType::parse(Some("Bogus")).is_err());
        assert_eq!(HostPathType::parse(None), Ok(HostPathType::Unset));
    }

    #[test]
    fn referenced_objects_cover_direct_and_projected_sources() {
        let p = with_volumes(vec![
            config_map_volume(
                "cfg",
                ConfigMapVolumeSource {
                    name: "cfg".to_owned(),
                    ..ConfigMapVolumeSource::default()
                },
            ),
            Volume {
                name: "s".to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some("creds".to_owned()),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            kube_api_access(None),
        ]);

        let (config_maps, secrets) = referenced_objects(&p);

        assert_eq!(
            config_maps.into_iter().collect::<Vec<_>>(),
            ["cfg", "kube-root-ca.crt"]
        );
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), ["creds"]);
    }
}
