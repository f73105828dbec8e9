//! Local OCI images for tests: no registry is reachable, so images are built here.
//!
//! Owns turning a list of host files, symlinks and directories plus an entrypoint into an OCI
//! image-layout tarball (`oci-layout`, `index.json`, `blobs/sha256/…`: one uncompressed layer, an
//! image config and a manifest), byte for byte the same on every run (mtime 0, uid/gid 0, sorted
//! entries), and importing such a tarball into a private containerd's `k8s.io` namespace with `ctr`
//! (unpacked for the overlayfs snapshotter, so CRI can run it at once). Ready-made images:
//! [`busybox`] (Debian's static busybox and its applets) and [`pause`] (the same busybox sleeping,
//! used as containerd's `sandbox_image`); tests add their own static binaries with
//! [`OciImage::file`]. Never pulls, never talks to a registry and never imports into a containerd
//! it was not handed (in particular not the system one).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::containerd::{Containerd, K8S_NAMESPACE};

/// Debian's `busybox-static`.
pub const HOST_BUSYBOX: &str = "/bin/busybox";
/// Name of the image built by [`busybox`].
pub const BUSYBOX_IMAGE: &str = "docker.io/skiff/busybox:latest";
/// Name of the image built by [`pause`], containerd's `sandbox_image` in [`Containerd`].
pub const PAUSE_IMAGE: &str = "docker.io/skiff/pause:latest";
/// Applets linked to `/bin/busybox` in [`busybox`] and [`pause`].
pub const BUSYBOX_APPLETS: &[&str] = &[
    "cat", "cp", "date", "echo", "env", "false", "grep", "head", "hostname", "id", "ip", "kill",
    "ls", "mkdir", "mv", "nc", "ping", "printf", "ps", "rm", "sh", "sleep", "tail", "test",
    "touch", "true", "uname", "wc", "wget",
];

const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum OciImageError {
    #[error("image {image}: reading {source_path} for {path}: {source}")]
    ReadFile {
        image: String,
        source_path: PathBuf,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image {image}: path {path} must be absolute and must not contain `..`")]
    BadPath { image: String, path: String },
    #[error("image {image}: {path} is added twice")]
    Duplicate { image: String, path: String },
    #[error("image {image}: building the tar entry {path}: {source}")]
    Tar {
        image: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image {image}: writing {archive}: {source}")]
    Write {
        image: String,
        archive: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("importing image {image}: could not run `{command}`: {source}")]
    Spawn {
        image: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("importing image {image}: `{command}` failed: {stderr}")]
    Command {
        image: String,
        command: String,
        stderr: String,
    },
    #[error(
        "importing image {image}: `ctr images import` succeeded but the image is not listed in \
         namespace {namespace}; listed: {listed}"
    )]
    NotListed {
        image: String,
        namespace: String,
        listed: String,
    },
}

/// One regular file of an image, copied from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFile {
    /// File on the host whose content is copied.
    pub source: PathBuf,
    /// Absolute path inside the image.
    pub path: String,
    /// Permission bits, e.g. `0o755`.
    pub mode: u32,
}

/// An image to build: its name, content and process defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciImage {
    name: String,
    files: Vec<ImageFile>,
    /// (path in image, link target)
    symlinks: Vec<(String, String)>,
    /// (path in image, mode)
    directories: Vec<(String, u32)>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    working_dir: String,
}

/// A built image-layout tarball.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArchive {
    /// The tarball.
    pub path: PathBuf,
    /// Full image name, e.g. `docker.io/skiff/busybox:latest`.
    pub name: String,
    /// `sha256:…` of the manifest (the image's id in containerd and CRI's `image_ref`).
    pub manifest_digest: String,
}

impl OciImage {
    /// An empty image named `name` (a full reference such as `docker.io/skiff/busybox:latest`)
    /// with `/etc` and `/tmp` (mode 1777), `PATH` set and working directory `/`.
    pub fn new(name: impl Into<String>) -> OciImage {
        OciImage {
            name: name.into(),
            files: Vec::new(),
            symlinks: Vec::new(),
            directories: vec![("/etc".to_owned(), 0o755), ("/tmp".to_owned(), 0o1777)],
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            ],
            working_dir: "/".to_owned(),
        }
    }

    /// The same content under another name (e.g. busybox plus a test binary).
    pub fn renamed(mut self, name: impl Into<String>) -> OciImage {
        self.name = name.into();
        self
    }

    /// Adds the host file `source` as `path` (absolute) with permission bits `mode`.
    pub fn file(
        mut self,
        source: impl Into<PathBuf>,
        path: impl Into<String>,
        mode: u32,
    ) -> OciImage {
        self.files.push(ImageFile {
            source: source.into(),
            path: path.into(),
            mode,
        });
        self
    }

    /// Adds a symlink `path` (absolute) pointing at `target`.
    pub fn symlink(mut self, path: impl Into<String>, target: impl Into<String>) -> OciImage {
        self.symlinks.push((path.into(), target.into()));
        self
    }

    /// Adds an (empty) directory `path` (absolute) with permission bits `mode`. Parents of files
    /// and symlinks are added with mode 0755 without being listed.
    pub fn directory(mut self, path: impl Into<String>, mode: u32) -> OciImage {
        self.directories.push((path.into(), mode));
        self
    }

    /// Sets the config's `Entrypoint`.
    pub fn entrypoint<S: Into<String>>(
        mut self,
        entrypoint: impl IntoIterator<Item = S>,
    ) -> OciImage {
        self.entrypoint = entrypoint.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the config's `Cmd`.
    pub fn cmd<S: Into<String>>(mut self, cmd: impl IntoIterator<Item = S>) -> OciImage {
        self.cmd = cmd.into_iter().map(Into::into).collect();
        self
    }

    /// Adds `NAME=value` to the config's `Env`.
    pub fn env(mut self, name: &str, value: &str) -> OciImage {
        self.env.push(format!("{name}={value}"));
        self
    }

    /// Full image name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The uncompressed layer: a deterministic tar of every directory, file and symlink.
    pub fn layer(&self) -> Result<Vec<u8>, OciImageError> {
        enum Entry<'a> {
            Directory(u32),
            File(&'a ImageFile),
            Symlink(&'a str),
        }
        let mut entries: BTreeMap<String, Entry<'_>> = BTreeMap::new();
        let mut parents = Vec::new();
        let mut add = |path: &str, entry| -> Result<(), OciImageError> {
            let relative = self.relative(path)?;
            let mut parent = Path::new(&relative).parent();
            while let Some(directory) = parent.filter(|directory| !directory.as_os_str().is_empty())
            {
                parents.push(directory.to_string_lossy().into_owned());
                parent = directory.parent();
            }
            if entries.insert(relative.clone(), entry).is_some() {
                return Err(OciImageError::Duplicate {
                    image: self.name.clone(),
                    path: path.to_owned(),
                });
            }
            Ok(())
        };
        for (path, mode) in &self.directories {
            add(path, Entry::Directory(*mode))?;
        }
        for file in &self.files {
            add(&file.path, Entry::File(file))?;
        }
        for (path, target) in &self.symlinks {
            add(path, Entry::Symlink(target))?;
        }
        for parent in parents {
            entries.entry(parent).or_insert(Entry::Directory(0o755));
        }

        let mut builder = tar::Builder::new(Vec::new());
        for (path, entry) in &entries {
            let tar_error = |source| OciImageError::Tar {
                image: self.name.clone(),
                path: path.clone(),
                source,
            };
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            match entry {
                Entry::Directory(mode) => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, format!("{path}/"), std::io::empty())
                        .map_err(tar_error)?;
                }
                Entry::File(file) => {
                    let content =
                        std::fs::read(&file.source).map_err(|source| OciImageError::ReadFile {
                            image: self.name.clone(),
                            source_path: file.source.clone(),
                            path: file.path.clone(),
                            source,
                        })?;
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(file.mode);
                    header.set_size(content.len() as u64);
                    builder
                        .append_data(&mut header, path, content.as_slice())
                        .map_err(tar_error)?;
                }
                Entry::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, path, target)
                        .map_err(tar_error)?;
                }
            }
        }
        builder.into_inner().map_err(|source| OciImageError::Tar {
            image: self.name.clone(),
            path: "(end of layer)".to_owned(),
            source,
        })
    }

    /// Builds the image and writes its OCI image-layout tarball to `archive`.
    pub fn write_layout_tar(&self, archive: &Path) -> Result<ImageArchive, OciImageError> {
        let (tarball, manifest_digest) = self.layout_tar()?;
        std::fs::write(archive, tarball).map_err(|source| OciImageError::Write {
            image: self.name.clone(),
            archive: archive.to_owned(),
            source,
        })?;
        Ok(ImageArchive {
            path: archive.to_owned(),
            name: self.name.clone(),
            manifest_digest,
        })
    }

    /// Builds the image into `containerd`'s directory and imports it (see [`import`]).
    pub fn import_into(&self, containerd: &Containerd) -> Result<ImageArchive, OciImageError> {
        let file_name: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let archive =
            self.write_layout_tar(&containerd.images_dir().join(format!("{file_name}.tar")))?;
        import(&archive, containerd)?;
        Ok(archive)
    }

    /// The image-layout tarball and the manifest's digest.
    pub fn layout_tar(&self) -> Result<(Vec<u8>, String), OciImageError> {
        let layer = self.layer()?;
        let layer_digest = sha256_digest(&layer);
        let mut config_section = serde_json::Map::new();
        config_section.insert("Env".to_owned(), json!(self.env));
        config_section.insert("WorkingDir".to_owned(), json!(self.working_dir));
        if !self.entrypoint.is_empty() {
            config_section.insert("Entrypoint".to_owned(), json!(self.entrypoint));
        }
        if !self.cmd.is_empty() {
            config_section.insert("Cmd".to_owned(), json!(self.cmd));
        }
        let platform = json!({ "architecture": oci_architecture(), "os": "linux" });
        let config = json!({
            "architecture": oci_architecture(),
            "os": "linux",
            "config": config_section,
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
            "history": [{ "created_by": "skiff-tests oci_image" }],
        });
        let config = json_bytes(&config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": { "mediaType": MEDIA_TYPE_CONFIG, "digest": sha256_digest(&config), "size": config.len() },
            "layers": [{ "mediaType": MEDIA_TYPE_LAYER, "digest": layer_digest, "size": layer.len() }],
        });
        let manifest = json_bytes(&manifest);
        let manifest_digest = sha256_digest(&manifest);
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [{
                "mediaType": MEDIA_TYPE_MANIFEST,
                "digest": manifest_digest,
                "size": manifest.len(),
                "platform": platform,
                "annotations": {
                    ANNOTATION_IMAGE_NAME: self.name,
                    ANNOTATION_REF_NAME: tag(&self.name),
                },
            }],
        });
        let index = json_bytes(&index);

        let mut builder = tar::Builder::new(Vec::new());
        let mut append = |path: &str, content: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            if path.ends_with('/') {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
            } else {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
            }
            header.set_size(content.len() as u64);
            builder
                .append_data(&mut header, path, content)
                .map_err(|source| OciImageError::Tar {
                    image: self.name.clone(),
                    path: path.to_owned(),
                    source,
                })
        };
        append("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append("index.json", &index)?;
        append("blobs/", &[])?;
        append("blobs/sha256/", &[])?;
        let mut blobs = [layer, config, manifest];
        blobs.sort_by_cached_key(|blob| sha256_digest(blob));
        for blob in &blobs {
            let hex = sha256_hex(blob);
            append(&format!("blobs/sha256/{hex}"), blob)?;
        }
        let tarball = builder.into_inner().map_err(|source| OciImageError::Tar {
            image: self.name.clone(),
            path: "(end of image layout)".to_owned(),
            source,
        })?;
        Ok((tarball, manifest_digest))
    }

    /// `path` without its leading `/`, checked to be absolute and free of `..`.
    fn relative(&self, path: &str) -> Result<String, OciImageError> {
        let bad = || OciImageError::BadPath {
            image: self.name.clone(),
            path: path.to_owned(),
        };
        let relative = path
            .strip_prefix('/')
            .ok_or_else(bad)?
            .trim_end_matches('/');
        if relative.is_empty()
            || relative
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(bad());
        }
        Ok(relative.to_owned())
    }
}

/// Debian's static busybox as `/bin/busybox` with [`BUSYBOX_APPLETS`] linked to it; runs `sh`
/// unless the container says otherwise. Named [`BUSYBOX_IMAGE`].
pub fn busybox() -> OciImage {
    BUSYBOX_APPLETS
        .iter()
        .fold(
            OciImage::new(BUSYBOX_IMAGE).file(HOST_BUSYBOX, "/bin/busybox", 0o755),
            |image, applet| image.symlink(format!("/bin/{applet}"), "/bin/busybox"),
        )
        .cmd(["/bin/sh"])
}

/// The pod sandbox image: [`busybox`] sleeping for ever (`sleep` as PID 1 ignores SIGTERM;
/// containerd stops sandboxes with SIGKILL). Named [`PAUSE_IMAGE`].
pub fn pause() -> OciImage {
    busybox()
        .renamed(PAUSE_IMAGE)
        .entrypoint(["/bin/sleep", "2147483647"])
        .cmd(Vec::<String>::new())
}

/// Imports `archive` into `containerd`'s [`K8S_NAMESPACE`] namespace, unpacked for the overlayfs
/// snapshotter, with `ctr images import`, and checks that the image is listed under its name.
pub fn import(archive: &ImageArchive, containerd: &Containerd) -> Result<(), OciImageError> {
    let socket = containerd.socket().to_string_lossy().into_owned();
    let archive_path = archive.path.to_string_lossy().into_owned();
    let ctr = |args: &[&str]| -> Result<String, OciImageError> {
        let mut full = vec!["--address", socket.as_str(), "--namespace", K8S_NAMESPACE];
        full.extend_from_slice(args);
        let command = format!("ctr {}", full.join(" "));
        let output = Command::new("ctr")
            .args(&full)
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .env_remove("CONTAINERD_SNAPSHOTTER")
            .output()
            .map_err(|source| OciImageError::Spawn {
                image: archive.name.clone(),
                command: command.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(OciImageError::Command {
                image: archive.name.clone(),
                command,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    ctr(&[
        "images",
        "import",
        "--snapshotter",
        "overlayfs",
        &archive_path,
    ])?;
    let listed = ctr(&["images", "list", "--quiet"])?;
    if !listed.lines().any(|line| line.trim() == archive.name) {
        return Err(OciImageError::NotListed {
            image: archive.name.clone(),
            namespace: K8S_NAMESPACE.to_owned(),
            listed: listed.split_whitespace().collect::<Vec<_>>().join(", "),
        });
    }
    Ok(())
}

/// The tag of a full image name (`latest` when it has none).
fn tag(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => tag,
        None => "latest",
    }
}

/// The OCI spelling of the host's architecture (the layer carries host binaries).
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small host file that always exists, standing in for a test binary.
    fn tool() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
    }

    fn small_image() -> OciImage {
        OciImage::new("docker.io/skiff/unit:v1")
            .file(tool(), "/usr/bin/tool", 0o755)
            .symlink("/bin/tool", "/usr/bin/tool")
            .entrypoint(["/usr/bin/tool"])
    }

    #[test]
    fn the_tag_is_read_after_the_last_slash() {
        assert_eq!(tag("docker.io/skiff/busybox:latest"), "latest");
        assert_eq!(tag("localhost:5000/skiff/pause"), "latest");
        assert_eq!(tag("localhost:5000/skiff/pause:3.9"), "3.9");
    }

    #[test]
    fn building_twice_gives_the_same_bytes() {
        let image = small_image();
        assert_eq!(image.layout_tar().unwrap(), image.layout_tar().unwrap());
    }

    #[test]
    fn layer_lists_parents_before_children_with_mtime_zero() {
        let layer = small_image().layer().unwrap();
        let mut archive = tar::Archive::new(layer.as_slice());
        let entries: Vec<(String, u64)> = archive
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.path().unwrap().to_string_lossy().into_owned(),
                    entry.header().mtime().unwrap(),
                )
            })
            .collect();
        let paths: Vec<&str> = entries.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bin/",
                "bin/tool",
                "etc/",
                "tmp/",
                "usr/",
                "usr/bin/",
                "usr/bin/tool"
            ]
        );
        assert!(entries.iter().all(|(_, mtime)| *mtime == 0));
    }

    #[test]
    fn index_names_the_image_and_points_at_the_manifest() {
        let (tarball, manifest_digest) = small_image().layout_tar().unwrap();
        let mut archive = tar::Archive::new(tarball.as_slice());
        let mut files = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
            files.insert(path, content);
        }
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let descriptor = &index["manifests"][0];
        assert_eq!(descriptor["digest"], manifest_digest);
        assert_eq!(
            descriptor["annotations"][ANNOTATION_IMAGE_NAME],
            "docker.io/skiff/unit:v1"
        );
        assert_eq!(descriptor["annotations"][ANNOTATION_REF_NAME], "v1");
        assert_eq!(descriptor["platform"]["os"], "linux");
        let manifest_path = format!(
            "blobs/sha256/{}",
            manifest_digest.trim_start_matches("sha256:")
        );
        let manifest: serde_json::Value = serde_json::from_slice(&files[&manifest_path]).unwrap();
        let config_path = format!(
            "blobs/sha256/{}",
            manifest["config"]["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
        );
        let config: serde_json::Value = serde_json::from_slice(&files[&config_path]).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            manifest["layers"][0]["digest"]
        );
        assert_eq!(config["config"]["Entrypoint"][0], "/usr/bin/tool");
    }

    #[test]
    fn paths_must_be_absolute_and_unique() {
        let relative = OciImage::new("x").symlink("bin/sh", "/bin/busybox");
        assert!(matches!(
            relative.layer(),
            Err(OciImageError::BadPath { .. })
        ));
        let twice = OciImage::new("x")
            .symlink("/bin/sh", "/bin/busybox")
            .symlink("/bin/sh/", "/bin/busybox");
        assert!(matches!(
            twice.layer(),
            Err(OciImageError::Duplicate { .. })
        ));
    }
}
