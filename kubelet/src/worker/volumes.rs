//! Setting up a pod's volumes on the host: the directories, files and `hostPath` checks that
//! [`crate::pod::volume`] decided, under `<root-dir>/pods/<uid>/volumes/<plugin>/<name>`.
//!
//! Owns the atomic writer of file volumes (configMap, secret, projected, downwardAPI): the files
//! go into a fresh timestamped directory `..<time>.<n>`, the `..data` symlink is swapped to it
//! with one `rename`, and each top-level entry is a symlink through `..data`, so a container
//! never sees half an update; unchanged content is not rewritten, so the pod worker may set
//! volumes up again every [`REFRESH_PERIOD`] to follow changed ConfigMaps and Secrets. Creates `emptyDir`
//! directories and `hostPath`s of the `*OrCreate` types, and removes a pod's directory.
//!
//! Must not decide content, modes or messages (that is [`crate::pod::volume`]) and never
//! touches anything outside the pod's directory except the `hostPath`s the spec names.
//! Gives `fsGroup` volumes their group (upstream `SetVolumeOwnership`, applied when an
//! `emptyDir` is created or a file volume is written). Not done (upstream does): tmpfs for
//! secret and `medium: Memory` volumes, `sizeLimit`, `fsGroupChangePolicy`, the token file's
//! owner for `runAsUser`.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::api::core::v1::Pod;

use crate::pod::{
    NodeContext,
    container::ResolvedVolume,
    env::ObjectResolver,
    pod_uid,
    volume::{
        FS_GROUP_DIRECTORY_MASK, FS_GROUP_READ_ONLY_MASK, FileKind, HostPathAction, MountFailure,
        Payload, VolumeContent, VolumeInputs, desired_volumes, file_plugin, host_path_action,
    },
};

/// The symlink to the current data directory of a file volume.
const DATA_LINK: &str = "..data";
/// The symlink made next to [`DATA_LINK`] and renamed over it.
const NEW_DATA_LINK: &str = "..data_tmp";
/// Where a static service account token may be put for `serviceAccountToken` projections,
/// relative to the kubelet's root directory (there is no TokenRequest API yet; when the file
/// is missing the token file is empty).
pub(super) const STATIC_TOKEN_FILE: &str = "service-account/token";

/// How often the file volumes of a running pod are rewritten from the newest objects (upstream
/// resyncs pods every `syncFrequency`, one minute).
pub(super) const REFRESH_PERIOD: Duration = Duration::from_secs(60);

/// Distinguishes data directories made within one clock tick.
static DATA_DIRECTORY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A volume that could not be set up, with upstream's `FailedMount` message.
#[derive(Debug, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
pub(super) struct SetUpError {
    /// The volume's name.
    pub volume: String,
    /// Why.
    pub message: String,
}

impl From<MountFailure> for SetUpError {
    fn from(failure: MountFailure) -> Self {
        Self {
            volume: failure.volume,
            message: failure.error.to_string(),
        }
    }
}

/// The result of setting up a pod's volumes.
#[derive(Debug, Default)]
pub(super) struct PodVolumes {
    /// The mountable volumes by name, for [`crate::pod::container::ContainerInputs::volumes`].
    pub volumes: BTreeMap<String, ResolvedVolume>,
    /// Volumes whose set-up failed this time. A file volume set up before stays in
    /// `volumes` with its old content (as upstream keeps a mounted volume when a refresh
    /// fails).
    pub failures: Vec<SetUpError>,
}

impl PodVolumes {
    /// The failures of volumes that cannot be mounted at all: containers must wait.
    pub fn blocking(&self) -> impl Iterator<Item = &SetUpError> {
        self.failures
            .iter()
            .filter(|failure| !self.volumes.contains_key(&failure.volume))
    }
}

/// The pod has volumes the kubelet writes from objects or pod fields (configMap, secret,
/// projected, downwardAPI): they are refreshed while it runs.
pub(super) fn has_file_volumes(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .any(|volume| file_plugin(volume).is_some())
}

/// `<root-dir>/pods/<uid>`.
pub(super) fn pod_directory(node: &NodeContext, pod: &Pod) -> PathBuf {
    Path::new(&node.root_directory)
        .join("pods")
        .join(pod_uid(pod))
}

/// Sets up every volume of `pod` this kubelet supports; file volumes are (re)written only when
/// their content changed.
pub(super) fn set_up_pod_volumes(
    pod: &Pod,
    node: &NodeContext,
    objects: &impl ObjectResolver,
) -> PodVolumes {
    let token =
        std::fs::read(Path::new(&node.root_directory).join(STATIC_TOKEN_FILE)).unwrap_or_default();
    let inputs = VolumeInputs {
        node,
        service_account_token: &token,
    };
    let volumes_directory = pod_directory(node, pod).join("volumes");
    let mut result = PodVolumes::default();
    for desired in desired_volumes(pod, objects, &inputs) {
        let desired = match desired {
            Ok(desired) => desired,
            Err(failure) => {
                // A file volume written before keeps its content.
                let name = failure.volume.clone();
                if let Some(path) = previously_written(&volumes_directory, pod, &name) {
                    result.volumes.insert(name, file_volume(&path));
                }
                result.failures.push(failure.into());
                continue;
            }
        };
        let content = &desired.content;
        let host_path = match content {
            VolumeContent::HostPath { path, type_ } => {
                set_up_host_path(path, *type_).map(|()| PathBuf::from(path))
            }
            VolumeContent::EmptyDir => {
                let path = plugin_path(&volumes_directory, content, &desired.name);
                set_up_empty_dir(&path, desired.fs_group).map(|()| path)
            }
            VolumeContent::Files { payload, .. } => {
                let path = plugin_path(&volumes_directory, content, &desired.name);
                write_payload(&path, payload)
                    .and_then(|changed| match desired.fs_group {
                        Some(group) if changed => set_group(&path, group),
                        _ => Ok(()),
                    })
                    .map(|()| path)
            }
        };
        match host_path {
            Ok(path) => {
                result.volumes.insert(
                    desired.name,
                    ResolvedVolume {
                        host_path: path.display().to_string(),
                        read_only: content.read_only(),
                        selinux_relabel: content.selinux_relabel(),
                    },
                );
            }
            Err(message) => result.failures.push(SetUpError {
                volume: desired.name,
                message,
            }),
        }
    }
    result
}

/// Removes `<root-dir>/pods/<uid>` (volumes, hosts file) of a pod that is gone.
pub(super) fn remove_pod_directory(node: &NodeContext, pod: &Pod) -> io::Result<()> {
    if pod_uid(pod).is_empty() {
        return Ok(());
    }
    match std::fs::remove_dir_all(pod_directory(node, pod)) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

fn plugin_path(volumes_directory: &Path, content: &VolumeContent, name: &str) -> PathBuf {
    volumes_directory
        .join(content.plugin().unwrap_or_default())
        .join(name)
}

/// The directory of a file volume named `name` that has a `..data` link already.
fn previously_written(volumes_directory: &Path, pod: &Pod, name: &str) -> Option<PathBuf> {
    let volume = pod
        .spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find(|volume| volume.name == name)?;
    let plugin = file_plugin(volume)?;
    let path = volumes_directory.join(plugin).join(name);
    path.join(DATA_LINK).symlink_metadata().ok().map(|_| path)
}

fn file_volume(path: &Path) -> ResolvedVolume {
    ResolvedVolume {
        host_path: path.display().to_string(),
        read_only: true,
        selinux_relabel: true,
    }
}

/// A new `emptyDir` is mode 0777 as upstream's (any container user may write), with `fsGroup`
/// as its group and the setgid bit; an existing one is left as its containers made it.
fn set_up_empty_dir(path: &Path, fs_group: Option<u32>) -> Result<(), String> {
    if path.is_dir() {
        return Ok(());
    }
    create_directory(path)?;
    let failed = |error: io::Error| format!("setting up {}: {error}", path.display());
    let mut mode = 0o777;
    if let Some(group) = fs_group {
        std::os::unix::fs::chown(path, None, Some(group)).map_err(failed)?;
        mode |= FS_GROUP_DIRECTORY_MASK;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(failed)
}

/// Upstream `SetVolumeOwnership` for a read-only volume: everything under `path` (symlinks
/// not followed) gets `group`; directories get setgid, group read and search.
fn set_group(path: &Path, group: u32) -> Result<(), String> {
    let failed =
        |path: &Path, error: io::Error| format!("setting the group of {}: {error}", path.display());
    let metadata = path.symlink_metadata().map_err(|e| failed(path, e))?;
    std::os::unix::fs::lchown(path, None, Some(group)).map_err(|e| failed(path, e))?;
    if !metadata.is_dir() {
        return Ok(());
    }
    let mode = metadata.permissions().mode() | FS_GROUP_READ_ONLY_MASK | FS_GROUP_DIRECTORY_MASK;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| failed(path, e))?;
    for entry in std::fs::read_dir(path).map_err(|e| failed(path, e))? {
        set_group(&entry.map_err(|e| failed(path, e))?.path(), group)?;
    }
    Ok(())
}

fn create_directory(path: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|error| format!("creating {}: {error}", path.display()))
}

fn set_up_host_path(path: &str, type_: crate::pod::volume::HostPathType) -> Result<(), String> {
    let found = match std::fs::metadata(path) {
        Ok(metadata) => {
            let kind = metadata.file_type();
            if kind.is_dir() {
                FileKind::Directory
            } else if kind.is_file() {
                FileKind::File
            } else if kind.is_socket() {
                FileKind::Socket
            } else if kind.is_char_device() {
                FileKind::CharDevice
            } else if kind.is_block_device() {
                FileKind::BlockDevice
            } else {
                FileKind::Other
            }
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => FileKind::Missing,
        Err(error) => return Err(format!("checking hostPath {path}: {error}")),
    };
    match host_path_action(path, type_, found).map_err(|error| error.to_string())? {
        HostPathAction::Mount => Ok(()),
        HostPathAction::CreateDirectory => create_directory(Path::new(path)),
        HostPathAction::CreateFile => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|file| file.set_permissions(std::fs::Permissions::from_mode(0o644)))
            .map_err(|error| format!("creating hostPath file {path}: {error}")),
    }
}

/// Makes `directory` hold exactly `payload` through the `..data` link; returns whether
/// anything changed.
fn write_payload(directory: &Path, payload: &Payload) -> Result<bool, String> {
    let failed =
        |what: &str, path: &Path, error: io::Error| format!("{what} {}: {error}", path.display());
    create_directory(directory)?;
    let data_link = directory.join(DATA_LINK);
    let old_data = std::fs::read_link(&data_link).ok();
    if let Some(old) = &old_data
        && holds_payload(&directory.join(old), payload)
    {
        return Ok(false);
    }

    // The new data directory, complete before anyone can see it.
    let data_directory = new_data_directory(directory)?;
    for (path, file) in payload {
        let target = data_directory.join(path);
        if let Some(parent) = target.parent() {
            create_directory(parent)?;
        }
        std::fs::write(&target, &file.data).map_err(|e| failed("writing", &target, e))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(file.mode))
            .map_err(|e| failed("setting the mode of", &target, e))?;
    }
    let data_name = data_directory
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_default();

    // Swap `..data` in one rename.
    let new_link = directory.join(NEW_DATA_LINK);
    let _ = std::fs::remove_file(&new_link);
    symlink(&data_name, &new_link).map_err(|e| failed("linking", &new_link, e))?;
    std::fs::rename(&new_link, &data_link).map_err(|e| failed("renaming", &new_link, e))?;

    // Top-level entries: a link per first path element, stale ones removed.
    let visible: BTreeSet<&str> = payload
        .keys()
        .filter_map(|path| path.split('/').next())
        .collect();
    for name in &visible {
        let link = directory.join(name);
        let target = Path::new(DATA_LINK).join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let _ = std::fs::remove_file(&link);
            symlink(&target, &link).map_err(|e| failed("linking", &link, e))?;
        }
    }
    let entries = std::fs::read_dir(directory).map_err(|e| failed("listing", directory, e))?;
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") || visible.contains(name.as_str()) {
            continue;
        }
        if entry.file_type().is_ok_and(|kind| kind.is_symlink()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old_data
        && old != data_name
    {
        let _ = std::fs::remove_dir_all(directory.join(old));
    }
    Ok(true)
}

/// `..<seconds>.<nanos>.<n>` in `directory`, created empty with mode 0755.
fn new_data_directory(directory: &Path) -> Result<PathBuf, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let counter = DATA_DIRECTORY_COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = directory.join(format!(
        "..{}.{:09}.{counter}",
        now.as_secs(),
        now.subsec_nanos()
    ));
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&path)
        .map_err(|error| format!("creating {}: {error}", path.display()))?;
    Ok(path)
}

/// `data_directory` holds exactly the files of `payload`, with their contents and modes.
fn holds_payload(data_directory: &Path, payload: &Payload) -> bool {
    let mut found = BTreeSet::new();
    if collect_files(data_directory, "", &mut found).is_err() {
        return false;
    }
    if found.len() != payload.len() {
        return false;
    }
    payload.iter().all(|(path, file)| {
        let target = data_directory.join(path);
        let same_mode = std::fs::metadata(&target)
            .is_ok_and(|metadata| metadata.permissions().mode() & 0o7777 == file.mode);
        same_mode && std::fs::read(&target).is_ok_and(|data| data == file.data)
    })
}

fn collect_files(directory: &Path, prefix: &str, found: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type()?.is_dir() {
            collect_files(&entry.path(), &format!("{name}/"), found)?;
        } else {
            found.insert(name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, PodSpec,
        Volume,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::pod::{env::ObjectStore, volume::FileProjection};

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(path, data, mode)| {
                (
                    (*path).to_owned(),
                    FileProjection {
                        data: data.as_bytes().to_vec(),
                        mode: *mode,
                    },
                )
            })
            .collect()
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn payload_is_written_through_the_data_link_and_updated_atomically() {
        let directory = tempfile::tempdir().unwrap();
        let volume = directory.path().join("cfg");

        assert!(
            write_payload(
                &volume,
                &payload(&[("a", "1", 0o644), ("dir/b", "2", 0o400)])
            )
            .unwrap()
        );
        assert_eq!(read(&volume.join("a")), "1");
        assert_eq!(read(&volume.join("dir/b")), "2");
        assert_eq!(
            std::fs::read_link(volume.join("a")).unwrap(),
            Path::new("..data/a")
        );
        let mode = std::fs::metadata(volume.join("dir/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o400);
        let first_data = std::fs::read_link(volume.join(DATA_LINK)).unwrap();

        assert!(
            !write_payload(
                &volume,
                &payload(&[("a", "1", 0o644), ("dir/b", "2", 0o400)])
            )
            .unwrap(),
            "unchanged content is not rewritten"
        );

        assert!(write_payload(&volume, &payload(&[("a", "changed", 0o644)])).unwrap());
        assert_eq!(read(&volume.join("a")), "changed");
        assert!(
            volume.join("dir").symlink_metadata().is_err(),
            "a key that went away is removed"
        );
        assert!(
            !volume.join(&first_data).exists(),
            "the old data directory is removed"
        );
    }

    fn pod_with(volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some("uid-1".to_owned()),
                namespace: Some("default".to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                volumes: Some(volumes),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn config_map_volume() -> Volume {
        Volume {
            name: "cfg".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: "cfg".to_owned(),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        }
    }

    #[test]
    fn pod_volumes_are_set_up_under_the_plugin_directories() {
        let root = tempfile::tempdir().unwrap();
        let node = NodeContext {
            root_directory: root.path().display().to_string(),
            ..NodeContext::default()
        };
        let host = root.path().join("host/made");
        let pod = pod_with(vec![
            Volume {
                name: "scratch".to_owned(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            config_map_volume(),
            Volume {
                name: "host".to_owned(),
                host_path: Some(HostPathVolumeSource {
                    path: host.display().to_string(),
                    type_: Some("DirectoryOrCreate".to_owned()),
                }),
                ..Volume::default()
            },
        ]);
        let objects = ObjectStore {
            config_maps: vec![ConfigMap {
                metadata: ObjectMeta {
                    name: Some("cfg".to_owned()),
                    namespace: Some("default".to_owned()),
                    ..ObjectMeta::default()
                },
                data: Some([("k".to_owned(), "v".to_owned())].into()),
                ..ConfigMap::default()
            }],
            ..ObjectStore::default()
        };

        let set_up = set_up_pod_volumes(&pod, &node, &objects);

        assert!(set_up.failures.is_empty(), "{:?}", set_up.failures);
        let volumes = root.path().join("pods/uid-1/volumes");
        let scratch = volumes.join("kubernetes.io~empty-dir/scratch");
        let mode = std::fs::metadata(&scratch).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o7777,
            0o777,
            "any container user may write an emptyDir"
        );
        assert_eq!(read(&volumes.join("kubernetes.io~configmap/cfg/k")), "v");
        assert!(host.is_dir());
        assert!(set_up.volumes["cfg"].read_only);
        assert!(!set_up.volumes["scratch"].read_only);
        assert_eq!(set_up.volumes["host"].host_path, host.display().to_string());

        // The ConfigMap is deleted: the volume keeps its content and reports the failure
        // without blocking.
        let again = set_up_pod_volumes(&pod, &node, &ObjectStore::default());
        assert_eq!(again.failures.len(), 1);
        assert_eq!(
            again.failures[0].to_string(),
            "MountVolume.SetUp failed for volume \"cfg\" : configmap \"cfg\" not found"
        );
        assert_eq!(again.blocking().count(), 0);
        assert_eq!(read(&volumes.join("kubernetes.io~configmap/cfg/k")), "v");

        remove_pod_directory(&node, &pod).unwrap();
        assert!(!root.path().join("pods/uid-1").exists());
    }

    #[test]
    fn service_account_token_comes_from_the_static_token_file() {
        use k8s_openapi::api::core::v1::{
            ProjectedVolumeSource, ServiceAccountTokenProjection, VolumeProjection,
        };
        let root = tempfile::tempdir().unwrap();
        let node = NodeContext {
            root_directory: root.path().display().to_string(),
            ..NodeContext::default()
        };
        let token_file = root.path().join(STATIC_TOKEN_FILE);
        std::fs::create_dir_all(token_file.parent().unwrap()).unwrap();
        std::fs::write(&token_file, "header.claims.signature").unwrap();
        let pod = pod_with(vec![Volume {
            name: "token".to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".to_owned(),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        }]);

        let set_up = set_up_pod_volumes(&pod, &node, &ObjectStore::default());

        let path = Path::new(&set_up.volumes["token"].host_path).join("token");
        assert_eq!(read(&path), "header.claims.signature");
    }

    #[test]
    fn missing_config_map_blocks_a_volume_never_set_up() {
        let root = tempfile::tempdir().unwrap();
        let node = NodeContext {
            root_directory: root.path().display().to_string(),
            ..NodeContext::default()
        };

        let set_up = set_up_pod_volumes(
            &pod_with(vec![config_map_volume()]),
            &node,
            &ObjectStore::default(),
        );

        assert!(set_up.volumes.is_empty());
        assert_eq!(set_up.blocking().count(), 1);
    }

    #[test]
    fn host_path_of_the_wrong_type_fails() {
        let root = tempfile::tempdir().unwrap();
        let node = NodeContext {
            root_directory: root.path().display().to_string(),
            ..NodeContext::default()
        };
        let pod = pod_with(vec![Volume {
            name: "host".to_owned(),
            host_path: Some(HostPathVolumeSource {
                path: root.path().display().to_string(),
                type_: Some("File".to_owned()),
            }),
            ..Volume::default()
        }]);

        let set_up = set_up_pod_volumes(&pod, &node, &ObjectStore::default());

        assert_eq!(
            set_up.failures[0].message,
            format!(
                "hostPath type check failed: {} is not a file",
                root.path().display()
            )
        );
    }
}
