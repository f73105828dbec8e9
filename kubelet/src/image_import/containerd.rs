//! Writing a checked image archive into containerd over its own gRPC API.
//!
//! Owns the containerd 1.6 import sequence (there is no Transfer service there): under a lease
//! (so nothing half-written is collected meanwhile), each blob is streamed to the content store
//! with its expected digest and size and the garbage-collection labels that keep it alive once
//! the lease is gone (`containerd.io/gc.ref.content.*` on index and manifest, the top snapshot on
//! the config, `containerd.io/uncompressed` on layers); the layers are unpacked into the
//! `overlayfs` snapshotter as CRI does (`Prepare` on the parent chainID, `Diff.Apply`, `Commit`
//! under the layer's chainID, skipping snapshots that already exist); then the image records are
//! created (or updated) with the label `io.cri-containerd.image=managed`. Every request carries
//! `containerd-namespace: k8s.io`.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use containerd_client::{
    services::v1::{
        ApplyRequest, CreateImageRequest, CreateRequest, DeleteRequest, Image, InfoRequest,
        UpdateImageRequest, UpdateRequest, WriteAction, WriteContentRequest,
        content_client::ContentClient,
        diff_client::DiffClient,
        images_client::ImagesClient,
        leases_client::LeasesClient,
        snapshots::{
            CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
            StatSnapshotRequest, snapshots_client::SnapshotsClient,
        },
    },
    types::Descriptor,
};
use tonic::{
    Code, Request, Status,
    metadata::AsciiMetadataValue,
    transport::{Channel, Endpoint},
};

use super::archive::{Blob, ImageArchive, ImportError, ParsedImage};

/// The containerd namespace CRI works in.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The snapshotter CRI uses by default.
pub const SNAPSHOTTER: &str = "overlayfs";
/// Label CRI puts on the images it manages.
const CRI_IMAGE_LABEL: (&str, &str) = ("io.cri-containerd.image", "managed");
/// How long the import's lease keeps its content if the importer dies before deleting it.
const LEASE_EXPIRY: Duration = Duration::from_secs(3600);
/// Size of one content `Write` message.
const CHUNK: usize = 1 << 20;

/// One image record created in containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    pub name: String,
    /// Digest of the record's target (manifest or index).
    pub digest: String,
}

/// A connection to containerd's services, in the `k8s.io` namespace.
pub struct ContainerdImporter {
    channel: Channel,
}

impl ContainerdImporter {
    /// Connects to `endpoint` (`unix:///path` or an absolute socket path).
    pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Self, ImportError> {
        let connect_error = |reason: String| ImportError::Connect {
            endpoint: endpoint.to_owned(),
            reason,
        };
        let path = endpoint
            .strip_prefix("unix://")
            .or_else(|| endpoint.strip_prefix("unix:"))
            .unwrap_or(endpoint)
            .to_owned();
        if !path.starts_with('/') {
            return Err(connect_error(
                "expected unix:///path/to/socket or an absolute socket path".to_owned(),
            ));
        }
        // The URI is a placeholder: the connector dials the socket.
        let placeholder = Endpoint::from_static("http://localhost");
        let connecting = placeholder.connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }));
        match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(channel)) => Ok(ContainerdImporter { channel }),
            Ok(Err(error)) => Err(connect_error(error_chain(&error))),
            Err(_elapsed) => Err(connect_error(format!("no answer within {timeout:?}"))),
        }
    }

    /// Imports every image of `archive`; returns the records created, in archive order.
    pub async fn import(&self, archive: &ImageArchive) -> Result<Vec<ImportedImage>, ImportError> {
        let lease = self.create_lease().await?;
        let result = self.import_under(&lease, archive).await;
        // The records and labels now hold everything; a lease left behind expires by itself.
        let deleted = self.delete_lease(&lease).await;
        let imported = result?;
        deleted?;
        Ok(imported)
    }

    async fn import_under(
        &self,
        lease: &str,
        archive: &ImageArchive,
    ) -> Result<Vec<ImportedImage>, ImportError> {
        let mut imported = Vec::new();
        for image in &archive.images {
            self.write_blobs(lease, image).await?;
            self.unpack(lease, image).await?;
            for name in &image.names {
                self.put_image(name, image.target()).await?;
                imported.push(ImportedImage {
                    name: name.clone(),
                    digest: image.target().digest.clone(),
                });
            }
        }
        Ok(imported)
    }

    /// Writes layers, config, manifest and index, children first, each with its GC labels.
    async fn write_blobs(&self, lease: &str, image: &ParsedImage) -> Result<(), ImportError> {
        for (layer, diff_id) in image.layers.iter().zip(&image.diff_ids) {
            let labels = labels([("containerd.io/uncompressed".to_owned(), diff_id.clone())]);
            self.write_blob(lease, layer, labels).await?;
        }
        let config_labels = image
            .chain_ids
            .last()
            .map(|top| {
                (
                    format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                    top.clone(),
                )
            })
            .into_iter();
        self.write_blob(lease, &image.config, labels(config_labels))
            .await?;
        let manifest_labels = std::iter::once((
            "containerd.io/gc.ref.content.config".to_owned(),
            image.config.digest.clone(),
        ))
        .chain(image.layers.iter().enumerate().map(|(position, layer)| {
            (
                format!("containerd.io/gc.ref.content.l.{position}"),
                layer.digest.clone(),
            )
        }));
        self.write_blob(lease, &image.manifest, labels(manifest_labels))
            .await?;
        if let Some(index) = &image.index {
            // Only the host's manifest is written; references to the others are harmless.
            let children: Vec<String> = serde_json::from_slice::<serde_json::Value>(&index.data)
                .ok()
                .and_then(|value| {
                    value.get("manifests")?.as_array().map(|manifests| {
                        manifests
                            .iter()
                            .filter_map(|m| m.get("digest")?.as_str().map(str::to_owned))
                            .collect()
                    })
                })
                .unwrap_or_default();
            let index_labels = children.into_iter().enumerate().map(|(position, digest)| {
                (format!("containerd.io/gc.ref.content.m.{position}"), digest)
            });
            self.write_blob(lease, index, labels(index_labels)).await?;
        }
        Ok(())
    }

    /// Streams `blob` to the content store (expected digest and size checked by containerd); when
    /// containerd already has it, only adds `labels` to it.
    async fn write_blob(
        &self,
        lease: &str,
        blob: &Blob,
        labels: HashMap<String, String>,
    ) -> Result<(), ImportError> {
        let reference = format!("skiff-import-{}", blob.digest);
        let mut requests = Vec::new();
        let mut offset = 0_i64;
        for chunk in blob.data.chunks(CHUNK) {
            requests.push(WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                total: blob.size,
                expected: blob.digest.clone(),
                offset,
                data: chunk.to_vec(),
                labels: HashMap::new(),
            });
            offset += i64::try_from(chunk.len()).unwrap_or(i64::MAX);
        }
        requests.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference,
            total: blob.size,
            expected: blob.digest.clone(),
            offset,
            data: Vec::new(),
            labels: labels.clone(),
        });
        let request = self.request(futures_util::stream::iter(requests), Some(lease))?;
        let outcome = async {
            let mut responses = ContentClient::new(self.channel.clone())
                .write(request)
                .await?
                .into_inner();
            while responses.message().await?.is_some() {}
            Ok::<_, Status>(())
        }
        .await;
        match outcome {
            Ok(()) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                self.label_content(&blob.digest, labels).await
            }
            Err(status) => Err(call_error("content Write", &blob.digest, status)),
        }
    }

    /// Adds `labels` to content containerd already has, keeping its other labels.
    async fn label_content(
        &self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), ImportError> {
        let mut client = ContentClient::new(self.channel.clone());
        let info = client
            .info(self.request(
                InfoRequest {
                    digest: digest.to_owned(),
                },
                None,
            )?)
            .await
            .map_err(|status| call_error("content Info", digest, status))?
            .into_inner()
            .info;
        let Some(mut info) = info else {
            return Ok(());
        };
        if labels.iter().all(|(k, v)| info.labels.get(k) == Some(v)) {
            return Ok(());
        }
        info.labels.extend(labels);
        client
            .update(self.request(
                UpdateRequest {
                    info: Some(info),
                    update_mask: None,
                },
                None,
            )?)
            .await
            .map_err(|status| call_error("content Update", digest, status))?;
        Ok(())
    }

    /// Unpacks the layers into the snapshotter, one committed snapshot per chainID.
    async fn unpack(&self, lease: &str, image: &ParsedImage) -> Result<(), ImportError> {
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let mut diff = DiffClient::new(self.channel.clone());
        for (position, layer) in image.layers.iter().enumerate() {
            let chain_id = &image.chain_ids[position];
            let parent = match position {
                0 => String::new(),
                _ => image.chain_ids[position - 1].clone(),
            };
            let stat = snapshots
                .stat(self.request(
                    StatSnapshotRequest {
                        snapshotter: SNAPSHOTTER.to_owned(),
                        key: chain_id.clone(),
                    },
                    None,
                )?)
                .await;
            match stat {
                Ok(_) => continue,
                Err(status) if status.code() == Code::NotFound => {}
                Err(status) => return Err(call_error("snapshot Stat", chain_id, status)),
            }
            let key = format!("skiff-import-{}-{chain_id}", unix_nanos());
            let mounts = snapshots
                .prepare(self.request(
                    PrepareSnapshotRequest {
                        snapshotter: SNAPSHOTTER.to_owned(),
                        key: key.clone(),
                        parent,
                        labels: HashMap::new(),
                    },
                    Some(lease),
                )?)
                .await
                .map_err(|status| call_error("snapshot Prepare", &key, status))?
                .into_inner()
                .mounts;
            let applied = self
                .apply_and_commit(
                    &mut snapshots,
                    &mut diff,
                    lease,
                    layer,
                    mounts,
                    &key,
                    chain_id,
                )
                .await;
            match applied {
                Ok(applied) if applied == image.diff_ids[position] => {}
                Ok(actual) => {
                    self.remove_snapshot(&mut snapshots, chain_id).await;
                    return Err(ImportError::DiffIdMismatch {
                        digest: layer.digest.clone(),
                        expected: image.diff_ids[position].clone(),
                        actual,
                    });
                }
                Err(error) => {
                    self.remove_snapshot(&mut snapshots, &key).await;
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Applies `layer` onto the prepared snapshot `key` and commits it as `chain_id`; returns the
    /// digest of what was applied (the layer's diffID).
    #[allow(clippy::too_many_arguments)]
    async fn apply_and_commit(
        &self,
        snapshots: &mut SnapshotsClient<Channel>,
        diff: &mut DiffClient<Channel>,
        lease: &str,
        layer: &Blob,
        mounts: Vec<containerd_client::types::Mount>,
        key: &str,
        chain_id: &str,
    ) -> Result<String, ImportError> {
        let applied = diff
            .apply(self.request(
                ApplyRequest {
                    diff: Some(descriptor(layer)),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                Some(lease),
            )?)
            .await
            .map_err(|status| call_error("diff Apply", &layer.digest, status))?
            .into_inner()
            .applied
            .map(|applied| applied.digest)
            .unwrap_or_default();
        let committed = snapshots
            .commit(self.request(
                CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_owned(),
                    name: chain_id.to_owned(),
                    key: key.to_owned(),
                    labels: HashMap::new(),
                },
                Some(lease),
            )?)
            .await;
        match committed {
            Ok(_) => Ok(applied),
            // Someone else unpacked the same layer meanwhile: theirs is as good.
            Err(status) if status.code() == Code::AlreadyExists => {
                self.remove_snapshot(snapshots, key).await;
                Ok(applied)
            }
            Err(status) => Err(call_error("snapshot Commit", chain_id, status)),
        }
    }

    /// Best-effort removal of a snapshot this import made.
    async fn remove_snapshot(&self, snapshots: &mut SnapshotsClient<Channel>, key: &str) {
        let Ok(request) = self.request(
            RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_owned(),
                key: key.to_owned(),
            },
            None,
        ) else {
            return;
        };
        if let Err(status) = snapshots.remove(request).await {
            tracing::warn!(key, %status, "removing a snapshot of a failed import");
        }
    }

    /// Creates the image record `name` → `target`, or points an existing one at it.
    async fn put_image(&self, name: &str, target: &Blob) -> Result<(), ImportError> {
        let image = Image {
            name: name.to_owned(),
            labels: labels([(CRI_IMAGE_LABEL.0.to_owned(), CRI_IMAGE_LABEL.1.to_owned())]),
            target: Some(descriptor(target)),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.channel.clone());
        let created = images
            .create(self.request(
                CreateImageRequest {
                    image: Some(image.clone()),
                    source_date_epoch: None,
                },
                None,
            )?)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                images
                    .update(self.request(
                        UpdateImageRequest {
                            image: Some(image),
                            update_mask: None,
                            source_date_epoch: None,
                        },
                        None,
                    )?)
                    .await
                    .map_err(|status| call_error("images Update", name, status))?;
                Ok(())
            }
            Err(status) => Err(call_error("images Create", name, status)),
        }
    }

    async fn create_lease(&self) -> Result<String, ImportError> {
        let id = format!("skiff-import-{}-{}", std::process::id(), unix_nanos());
        let expiry = SystemTime::now() + LEASE_EXPIRY;
        LeasesClient::new(self.channel.clone())
            .create(self.request(
                CreateRequest {
                    id: id.clone(),
                    labels: labels([("containerd.io/gc.expire".to_owned(), rfc3339(expiry))]),
                },
                None,
            )?)
            .await
            .map_err(|status| call_error("leases Create", &id, status))?;
        Ok(id)
    }

    async fn delete_lease(&self, id: &str) -> Result<(), ImportError> {
        LeasesClient::new(self.channel.clone())
            .delete(self.request(
                DeleteRequest {
                    id: id.to_owned(),
                    sync: false,
                },
                None,
            )?)
            .await
            .map_err(|status| call_error("leases Delete", id, status))?;
        Ok(())
    }

    /// `message` with the namespace (and the lease, when given) in its metadata.
    fn request<T>(&self, message: T, lease: Option<&str>) -> Result<Request<T>, ImportError> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert(
            "containerd-namespace",
            AsciiMetadataValue::from_static(K8S_NAMESPACE),
        );
        if let Some(lease) = lease {
            let value = AsciiMetadataValue::try_from(lease).map_err(|_| ImportError::Call {
                call: "lease",
                object: lease.to_owned(),
                code: Code::InvalidArgument,
                message: "the lease id is not valid gRPC metadata".to_owned(),
            })?;
            metadata.insert("containerd-lease", value);
        }
        Ok(request)
    }
}

fn descriptor(blob: &Blob) -> Descriptor {
    Descriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest.clone(),
        size: blob.size,
        annotations: HashMap::new(),
    }
}

fn labels(pairs: impl IntoIterator<Item = (String, String)>) -> HashMap<String, String> {
    pairs.into_iter().collect()
}

fn call_error(call: &'static str, object: &str, status: Status) -> ImportError {
    ImportError::Call {
        call,
        object: object.to_owned(),
        code: status.code(),
        message: status.message().to_owned(),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default()
}

/// `time` as RFC 3339 in UTC, whole seconds (what containerd's `gc.expire` label takes).
fn rfc3339(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let days = i64::try_from(seconds / 86_400).unwrap_or_default();
    let rest = seconds % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3_723);
        assert_eq!(rfc3339(leap_day), "2000-02-29T01:02:03Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_798_761_599);
        assert_eq!(rfc3339(later), "2026-12-31T23:59:59Z");
    }
}
