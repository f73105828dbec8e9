//! Reading and checking an image tarball, without containerd.
//!
//! Owns the two archive formats `import-image` accepts: an OCI image layout (`index.json` whose
//! manifests are found under `blobs/<algorithm>/<hex>`, a nested image index resolved to this
//! host's platform) and a `docker save` archive (`manifest.json` naming the config and layer
//! files; the image manifest is synthesised). Every blob is checked against its descriptor's
//! digest and size, media types are checked against what containerd can unpack, and the chainIDs
//! are computed from the config's `rootfs.diff_ids` as the OCI image spec says. Image names are
//! normalised as docker references (`busybox` → `docker.io/library/busybox:latest`), the form CRI
//! looks names up in.

use std::{
    collections::{BTreeMap, HashMap},
    io::Read,
    path::Path,
};

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_TYPE_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Layer media types containerd's differ can apply.
const LAYER_MEDIA_TYPES: &[&str] = &[
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
];

/// Annotation containerd's own export puts the full image name in.
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI's annotation: a full reference, or only a tag.
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Why an image could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a tar archive: {reason}")]
    NotATar { path: String, reason: String },
    #[error(
        "{path} is neither an OCI image layout (no index.json) nor a docker archive \
         (no manifest.json)"
    )]
    NotAnImage { path: String },
    #[error("{what} is not valid: {reason}")]
    BadJson { what: String, reason: String },
    #[error("blob {digest} ({what}) is missing from the archive")]
    MissingBlob { digest: String, what: String },
    #[error("blob {what} has digest {actual}, but its descriptor says {expected}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("blob {digest} ({what}) is {actual} bytes, but its descriptor says {expected}")]
    SizeMismatch {
        digest: String,
        what: String,
        expected: i64,
        actual: usize,
    },
    #[error("{what} has unsupported media type {media_type:?}")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("{what}: unsupported digest {digest:?} (only sha256:<64 hex> is supported)")]
    BadDigest { what: String, digest: String },
    #[error("image {manifest} has {layers} layers, but its config lists {diff_ids} diff_ids")]
    LayerCount {
        manifest: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("the archive holds no image")]
    Empty,
    #[error("image {digest} has no name in the archive; pass --name")]
    NoName { digest: String },
    #[error("invalid image name {name:?}: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("--name names one image, but the archive holds {count}")]
    NameAmbiguous { count: usize },
    #[error("image index {digest} has no manifest for {os}/{architecture}")]
    NoPlatform {
        digest: String,
        os: String,
        architecture: String,
    },
    #[error("connecting to containerd at {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("containerd {call} {object}: {code:?}: {message}")]
    Call {
        call: &'static str,
        object: String,
        code: tonic::Code,
        message: String,
    },
    #[error("layer {digest} unpacked to {actual}, but the config's diff_id is {expected}")]
    DiffIdMismatch {
        digest: String,
        expected: String,
        actual: String,
    },
}

/// One blob of the archive and the descriptor it was checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    pub data: Vec<u8>,
}

impl Blob {
    /// A blob made here (the manifest of a docker archive): its digest and size are computed.
    fn computed(media_type: &str, data: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_owned(),
            digest: sha256_digest(&data),
            size: i64::try_from(data.len()).unwrap_or(i64::MAX),
            data,
        }
    }
}

/// One image of the archive, checked and ready to be written to containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedImage {
    /// Normalised names the image is created under (at least one).
    pub names: Vec<String>,
    /// The image index the target is, when the archive names a multi-platform image.
    pub index: Option<Blob>,
    pub manifest: Blob,
    pub config: Blob,
    /// In order, bottom layer first.
    pub layers: Vec<Blob>,
    /// From the config's `rootfs.diff_ids`, one per layer.
    pub diff_ids: Vec<String>,
    /// chainID of each layer's snapshot, one per layer.
    pub chain_ids: Vec<String>,
}

impl ParsedImage {
    /// The blob the image record points at: the index when there is one, else the manifest.
    pub fn target(&self) -> &Blob {
        self.index.as_ref().unwrap_or(&self.manifest)
    }
}

/// A checked archive: every image it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArchive {
    pub images: Vec<ParsedImage>,
}

impl ImageArchive {
    /// Reads and checks the tarball at `path`; `name` (when given) names its only image.
    pub fn open(path: &Path, name: Option<&str>) -> Result<ImageArchive, ImportError> {
        let label = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| ImportError::Read {
            path: label.clone(),
            source,
        })?;
        ImageArchive::read(std::io::BufReader::new(file), &label, name)
    }

    /// Reads and checks a tarball from `reader`; `label` names it in errors.
    pub fn read(
        reader: impl Read,
        label: &str,
        name: Option<&str>,
    ) -> Result<ImageArchive, ImportError> {
        let files = read_tar(reader, label)?;
        let mut images = if files.contains_key("index.json") {
            oci_layout(&files)?
        } else if files.contains_key("manifest.json") {
            docker_archive(&files)?
        } else {
            return Err(ImportError::NotAnImage {
                path: label.to_owned(),
            });
        };
        if images.is_empty() {
            return Err(ImportError::Empty);
        }
        if let Some(name) = name {
            if images.len() != 1 {
                return Err(ImportError::NameAmbiguous {
                    count: images.len(),
                });
            }
            let name = normalize_name(name)?;
            for image in &mut images {
                image.names = vec![name.clone()];
            }
        }
        for image in &images {
            if image.names.is_empty() {
                return Err(ImportError::NoName {
                    digest: image.target().digest.clone(),
                });
            }
        }
        Ok(ImageArchive { images })
    }
}

/// chainIDs per the OCI image spec: chainID(L0) = diffID(L0), chainID(Ln) =
/// sha256(chainID(Ln-1) + " " + diffID(Ln)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

/// Normalises a docker reference as containerd's CRI does: a missing domain becomes
/// `docker.io` (with `library/` for one-component names), a missing tag `:latest`.
pub fn normalize_name(name: &str) -> Result<String, ImportError> {
    let bad = |reason| ImportError::BadName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_ascii_uppercase())
    {
        return Err(bad("it must be lowercase and without spaces"));
    }
    let (domain, remainder) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    let remainder = if domain == "docker.io" && !remainder.contains('/') {
        format!("library/{remainder}")
    } else {
        remainder
    };
    let last = remainder.rsplit('/').next().unwrap_or_default();
    let tagged = last.contains(':') || last.contains('@');
    if remainder.is_empty() || last.is_empty() || last.starts_with(':') {
        return Err(bad("it names no repository"));
    }
    Ok(if tagged {
        format!("{domain}/{remainder}")
    } else {
        format!("{domain}/{remainder}:latest")
    })
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The regular files of the tar, by path without a leading `./`.
fn read_tar(reader: impl Read, label: &str) -> Result<BTreeMap<String, Vec<u8>>, ImportError> {
    // The tar crate quotes the bad header bytes: keep its message short and printable.
    let not_a_tar = |reason: String| ImportError::NotATar {
        path: label.to_owned(),
        reason: reason
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(160)
            .collect(),
    };
    let mut archive = tar::Archive::new(reader);
    let mut files = BTreeMap::new();
    let entries = archive
        .entries()
        .map_err(|error| not_a_tar(error.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|error| not_a_tar(error.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|error| not_a_tar(error.to_string()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|error| not_a_tar(format!("reading {path}: {error}")))?;
        files.insert(path, data);
    }
    Ok(files)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorJson {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<PlatformJson>,
}

#[derive(Debug, Deserialize)]
struct PlatformJson {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexJson {
    #[serde(default)]
    manifests: Vec<DescriptorJson>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestJson {
    #[serde(default)]
    media_type: Option<String>,
    config: DescriptorJson,
    #[serde(default)]
    layers: Vec<DescriptorJson>,
}

#[derive(Debug, Deserialize)]
struct ConfigJson {
    rootfs: RootFsJson,
}

#[derive(Debug, Deserialize)]
struct RootFsJson {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

fn parse_json<T: serde::de::DeserializeOwned>(data: &[u8], what: &str) -> Result<T, ImportError> {
    serde_json::from_slice(data).map_err(|error| ImportError::BadJson {
        what: what.to_owned(),
        reason: error.to_string(),
    })
}

fn check_digest(digest: &str, what: &str) -> Result<(), ImportError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() != 64
        || !hex
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(ImportError::BadDigest {
            what: what.to_owned(),
            digest: digest.to_owned(),
        });
    }
    Ok(())
}

/// The blob `descriptor` names in an OCI layout, checked against it.
fn layout_blob(
    files: &BTreeMap<String, Vec<u8>>,
    descriptor: &DescriptorJson,
    what: &str,
) -> Result<Blob, ImportError> {
    check_digest(&descriptor.digest, what)?;
    let path = format!("blobs/{}", descriptor.digest.replacen(':', "/", 1));
    let data = files
        .get(&path)
        .ok_or_else(|| ImportError::MissingBlob {
            digest: descriptor.digest.clone(),
            what: what.to_owned(),
        })?
        .clone();
    if i64::try_from(data.len()).ok() != Some(descriptor.size) {
        return Err(ImportError::SizeMismatch {
            digest: descriptor.digest.clone(),
            what: what.to_owned(),
            expected: descriptor.size,
            actual: data.len(),
        });
    }
    let actual = sha256_digest(&data);
    if actual != descriptor.digest {
        return Err(ImportError::DigestMismatch {
            what: format!("{what} ({path})"),
            expected: descriptor.digest.clone(),
            actual,
        });
    }
    Ok(Blob {
        media_type: descriptor.media_type.clone(),
        digest: actual,
        size: descriptor.size,
        data,
    })
}

fn unsupported(what: &str, media_type: &str) -> ImportError {
    ImportError::UnsupportedMediaType {
        what: what.to_owned(),
        media_type: media_type.to_owned(),
    }
}

/// This host's platform in OCI's words.
fn host_platform() -> (&'static str, &'static str) {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    ("linux", architecture)
}

fn oci_layout(files: &BTreeMap<String, Vec<u8>>) -> Result<Vec<ParsedImage>, ImportError> {
    let index: IndexJson = parse_json(
        files
            .get("index.json")
            .map(Vec::as_slice)
            .unwrap_or_default(),
        "index.json",
    )?;
    let mut images = Vec::new();
    for (position, entry) in index.manifests.iter().enumerate() {
        let what = format!("index.json manifests[{position}]");
        let names = entry_names(&entry.annotations)?;
        let (index_blob, manifest_descriptor_owned);
        let manifest_descriptor = match entry.media_type.as_str() {
            MEDIA_TYPE_OCI_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST => {
                index_blob = None;
                entry
            }
            MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_MANIFEST_LIST => {
                let blob = layout_blob(files, entry, &what)?;
                let nested: IndexJson = parse_json(&blob.data, &format!("image index {what}"))?;
                let (os, architecture) = host_platform();
                let single = nested.manifests.len() == 1;
                manifest_descriptor_owned = nested
                    .manifests
                    .into_iter()
                    .find(|child| match &child.platform {
                        Some(platform) => {
                            platform.os == os && platform.architecture == architecture
                        }
                        None => single,
                    })
                    .ok_or_else(|| ImportError::NoPlatform {
                        digest: entry.digest.clone(),
                        os: os.to_owned(),
                        architecture: architecture.to_owned(),
                    })?;
                index_blob = Some(blob);
                &manifest_descriptor_owned
            }
            other => return Err(unsupported(&what, other)),
        };
        let mut image = image_from_manifest(files, manifest_descriptor, &what)?;
        image.index = index_blob;
        image.names = names;
        images.push(image);
    }
    Ok(images)
}

/// The image names an `index.json` entry's annotations give (none when it has only a tag).
fn entry_names(annotations: &HashMap<String, String>) -> Result<Vec<String>, ImportError> {
    if let Some(name) = annotations.get(ANNOTATION_IMAGE_NAME) {
        return Ok(vec![normalize_name(name)?]);
    }
    match annotations.get(ANNOTATION_REF_NAME) {
        Some(reference) if reference.contains('/') || reference.contains(':') => {
            Ok(vec![normalize_name(reference)?])
        }
        _ => Ok(Vec::new()),
    }
}

fn image_from_manifest(
    files: &BTreeMap<String, Vec<u8>>,
    descriptor: &DescriptorJson,
    what: &str,
) -> Result<ParsedImage, ImportError> {
    let manifest_blob = layout_blob(files, descriptor, &format!("manifest of {what}"))?;
    let manifest: ManifestJson = parse_json(
        &manifest_blob.data,
        &format!("manifest {}", descriptor.digest),
    )?;
    if let Some(media_type) = &manifest.media_type
        && media_type != MEDIA_TYPE_OCI_MANIFEST
        && media_type != MEDIA_TYPE_DOCKER_MANIFEST
    {
        return Err(unsupported(
            &format!("manifest {}", descriptor.digest),
            media_type,
        ));
    }
    let config_what = format!("config of {}", descriptor.digest);
    if manifest.config.media_type != MEDIA_TYPE_OCI_CONFIG
        && manifest.config.media_type != MEDIA_TYPE_DOCKER_CONFIG
    {
        return Err(unsupported(&config_what, &manifest.config.media_type));
    }
    let config = layout_blob(files, &manifest.config, &config_what)?;
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (position, layer) in manifest.layers.iter().enumerate() {
        let layer_what = format!("layer {position} of {}", descriptor.digest);
        if !LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
            return Err(unsupported(&layer_what, &layer.media_type));
        }
        layers.push(layout_blob(files, layer, &layer_what)?);
    }
    image_with_config(manifest_blob, config, layers)
}

/// Completes an image from its checked blobs: diffIDs from the config, chainIDs from them.
fn image_with_config(
    manifest: Blob,
    config: Blob,
    layers: Vec<Blob>,
) -> Result<ParsedImage, ImportError> {
    let parsed: ConfigJson = parse_json(&config.data, &format!("image config {}", config.digest))?;
    let diff_ids = parsed.rootfs.diff_ids;
    for diff_id in &diff_ids {
        check_digest(diff_id, &format!("diff_id in config {}", config.digest))?;
    }
    if diff_ids.len() != layers.len() {
        return Err(ImportError::LayerCount {
            manifest: manifest.digest.clone(),
            layers: layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let chain_ids = chain_ids(&diff_ids);
    Ok(ParsedImage {
        names: Vec::new(),
        index: None,
        manifest,
        config,
        layers,
        diff_ids,
        chain_ids,
    })
}

/// A `docker save` archive: blobs are files named in `manifest.json`; the image manifest is made
/// here (OCI media types; layer compression detected from the content).
fn docker_archive(files: &BTreeMap<String, Vec<u8>>) -> Result<Vec<ParsedImage>, ImportError> {
    let entries: Vec<DockerManifestEntry> = parse_json(
        files
            .get("manifest.json")
            .map(Vec::as_slice)
            .unwrap_or_default(),
        "manifest.json",
    )?;
    let file = |path: &str, what: &str| {
        files
            .get(path.trim_start_matches("./"))
            .cloned()
            .ok_or_else(|| ImportError::MissingBlob {
                digest: path.to_owned(),
                what: what.to_owned(),
            })
    };
    let mut images = Vec::new();
    for (position, entry) in entries.iter().enumerate() {
        let what = format!("manifest.json [{position}]");
        let config = Blob::computed(
            MEDIA_TYPE_OCI_CONFIG,
            file(&entry.config, &format!("config of {what}"))?,
        );
        let mut layers = Vec::new();
        for (index, path) in entry.layers.iter().enumerate() {
            let data = file(path, &format!("layer {index} of {what}"))?;
            let media_type = match data.get(..4) {
                Some([0x1f, 0x8b, _, _]) => MEDIA_TYPE_OCI_LAYER_GZIP,
                Some([0x28, 0xb5, 0x2f, 0xfd]) => MEDIA_TYPE_OCI_LAYER_ZSTD,
                _ => MEDIA_TYPE_OCI_LAYER,
            };
            layers.push(Blob::computed(media_type, data));
        }
        let descriptor = |blob: &Blob| json!({ "mediaType": blob.media_type, "digest": blob.digest, "size": blob.size });
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": descriptor(&config),
            "layers": layers.iter().map(descriptor).collect::<Vec<_>>(),
        });
        let manifest = Blob::computed(
            MEDIA_TYPE_OCI_MANIFEST,
            serde_json::to_vec(&manifest).map_err(|error| ImportError::BadJson {
                what: format!("manifest made for {what}"),
                reason: error.to_string(),
            })?,
        );
        let mut image = image_with_config(manifest, config, layers)?;
        image.names = entry
            .repo_tags
            .iter()
            .flatten()
            .map(|name| normalize_name(name))
            .collect::<Result<_, _>>()?;
        images.push(image);
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths of a test layout's blobs.
    struct Paths {
        layer: String,
        config: String,
    }

    /// A one-layer OCI layout tar; `edit` may change the files before they are packed.
    fn layout(edit: impl FnOnce(&mut BTreeMap<String, Vec<u8>>, &Paths)) -> Vec<u8> {
        layout_with(MEDIA_TYPE_OCI_LAYER, edit)
    }

    fn layout_with(
        layer_media_type: &str,
        edit: impl FnOnce(&mut BTreeMap<String, Vec<u8>>, &Paths),
    ) -> Vec<u8> {
        let mut files = BTreeMap::new();
        let layer = tar_of(&[("hello", b"world".as_slice())]);
        let layer_digest = sha256_digest(&layer);
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": { "mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": sha256_digest(&config), "size": config.len() },
            "layers": [{ "mediaType": layer_media_type, "digest": layer_digest, "size": layer.len() }],
        }))
        .unwrap();
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                "digest": sha256_digest(&manifest),
                "size": manifest.len(),
                "annotations": { ANNOTATION_REF_NAME: "example.com/test/hello:1" },
            }],
        }))
        .unwrap();
        let path = |blob: &[u8]| format!("blobs/{}", sha256_digest(blob).replacen(':', "/", 1));
        let paths = Paths {
            layer: path(&layer),
            config: path(&config),
        };
        for blob in [&layer, &config, &manifest] {
            files.insert(path(blob), blob.clone());
        }
        files.insert("index.json".to_owned(), index);
        files.insert(
            "oci-layout".to_owned(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        );
        edit(&mut files, &paths);
        let entries: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(path, data)| (path.as_str(), data.as_slice()))
            .collect();
        tar_of(&entries)
    }

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn read(bytes: &[u8], name: Option<&str>) -> Result<ImageArchive, ImportError> {
        ImageArchive::read(bytes, "test.tar", name)
    }

    #[test]
    fn a_layout_is_read_with_names_diff_ids_and_chain_ids() {
        let archive = read(&layout(|_, _| {}), None).unwrap();
        assert_eq!(archive.images.len(), 1);
        let image = &archive.images[0];
        assert_eq!(image.names, ["example.com/test/hello:1"]);
        assert_eq!(image.layers.len(), 1);
        assert_eq!(image.diff_ids, [image.layers[0].digest.clone()]);
        assert_eq!(image.chain_ids, image.diff_ids);
        assert_eq!(image.target().digest, image.manifest.digest);
        assert_eq!(image.config.media_type, MEDIA_TYPE_OCI_CONFIG);
    }

    #[test]
    fn name_overrides_the_archive_and_is_normalised() {
        let archive = read(&layout(|_, _| {}), Some("busybox")).unwrap();
        assert_eq!(
            archive.images[0].names,
            ["docker.io/library/busybox:latest"]
        );
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = sha256_digest(b"a");
        let b = sha256_digest(b"b");
        let c = sha256_digest(b"c");
        let chain = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        let second = sha256_digest(format!("{a} {b}").as_bytes());
        let third = sha256_digest(format!("{second} {c}").as_bytes());
        assert_eq!(chain, [a, second, third]);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn names_are_normalised_like_docker_references() {
        for (name, normal) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("skiff/busybox:1", "docker.io/skiff/busybox:1"),
            (
                "docker.io/skiff/busybox:latest",
                "docker.io/skiff/busybox:latest",
            ),
            ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
            ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
        ] {
            assert_eq!(normalize_name(name).unwrap(), normal, "{name}");
        }
        for bad in ["", "Busybox", "a b", "example.com/"] {
            assert!(normalize_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn garbage_is_not_a_tar() {
        let garbage = vec![0x5a_u8; 4096];
        let error = read(&garbage, None).unwrap_err();
        assert!(matches!(error, ImportError::NotATar { .. }), "{error}");
    }

    #[test]
    fn a_truncated_archive_is_refused() {
        let bytes = layout(|_, _| {});
        let error = read(&bytes[..bytes.len() / 2 + 100], None).unwrap_err();
        assert!(
            matches!(
                error,
                ImportError::NotATar { .. } | ImportError::NotAnImage { .. }
            ),
            "{error}"
        );
    }

    #[test]
    fn a_tar_without_index_or_manifest_is_not_an_image() {
        let error = read(&tar_of(&[("hello", b"x")]), None).unwrap_err();
        assert!(matches!(error, ImportError::NotAnImage { .. }), "{error}");
        assert!(error.to_string().contains("index.json"));
    }

    #[test]
    fn a_missing_blob_is_named() {
        let bytes = layout(|files, paths| {
            files.remove(&paths.config);
        });
        let error = read(&bytes, None).unwrap_err();
        assert!(matches!(error, ImportError::MissingBlob { .. }), "{error}");
        assert!(error.to_string().contains("config"), "{error}");
    }

    #[test]
    fn a_changed_blob_is_a_digest_mismatch() {
        let bytes = layout(|files, paths| {
            let layer = files.get_mut(&paths.layer).unwrap();
            let last = layer.len() - 1;
            layer[last] ^= 1;
        });
        let error = read(&bytes, None).unwrap_err();
        assert!(
            matches!(error, ImportError::DigestMismatch { .. }),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_layer_media_type_is_refused() {
        let bytes = layout_with("application/x-custom", |_, _| {});
        let error = read(&bytes, None).unwrap_err();
        assert!(
            matches!(error, ImportError::UnsupportedMediaType { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("application/x-custom"),
            "{error}"
        );
    }

    #[test]
    fn an_unnamed_image_needs_name() {
        let bytes = layout(|files, _| {
            let index = String::from_utf8(files["index.json"].clone())
                .unwrap()
                .replace(ANNOTATION_REF_NAME, "x-other");
            files.insert("index.json".to_owned(), index.into_bytes());
        });
        let error = read(&bytes, None).unwrap_err();
        assert!(matches!(error, ImportError::NoName { .. }), "{error}");
        assert!(read(&bytes, Some("hello:1")).is_ok());
    }

    #[test]
    fn a_docker_archive_gets_a_made_manifest() {
        let layer = tar_of(&[("hello", b"world".as_slice())]);
        let config = serde_json::to_vec(&json!({
            "rootfs": { "type": "layers", "diff_ids": [sha256_digest(&layer)] },
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&json!([{
            "Config": "config.json", "RepoTags": ["hello:2"], "Layers": ["abc/layer.tar"],
        }]))
        .unwrap();
        let bytes = tar_of(&[
            ("manifest.json", &manifest),
            ("config.json", &config),
            ("abc/layer.tar", &layer),
        ]);
        let archive = read(&bytes, None).unwrap();
        let image = &archive.images[0];
        assert_eq!(image.names, ["docker.io/library/hello:2"]);
        assert_eq!(image.layers[0].digest, sha256_digest(&layer));
        assert_eq!(image.manifest.digest, sha256_digest(&image.manifest.data));
        let made: ManifestJson = serde_json::from_slice(&image.manifest.data).unwrap();
        assert_eq!(made.config.digest, image.config.digest);
    }

    #[test]
    fn a_layer_count_mismatch_is_refused() {
        let layer = tar_of(&[("hello", b"world".as_slice())]);
        let config = serde_json::to_vec(&json!({ "rootfs": { "diff_ids": [] } })).unwrap();
        let manifest = serde_json::to_vec(&json!([{
            "Config": "c.json", "RepoTags": ["hello:2"], "Layers": ["l.tar"],
        }]))
        .unwrap();
        let bytes = tar_of(&[
            ("manifest.json", &manifest),
            ("c.json", &config),
            ("l.tar", &layer),
        ]);
        let error = read(&bytes, None).unwrap_err();
        assert!(matches!(error, ImportError::LayerCount { .. }), "{error}");
    }
}
