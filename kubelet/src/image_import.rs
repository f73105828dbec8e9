//! `skiff-kubelet import-image`: bringing an image tarball into containerd without a registry.
//!
//! Owns reading an OCI image-layout tarball (`oci-layout`, `index.json`, `blobs/sha256/…`) or a
//! `docker save` archive (`manifest.json`), checking every blob against its digest and size, and
//! working out what containerd needs: the manifest, config and layer descriptors, the diffIDs
//! from the config's `rootfs.diff_ids` and the chainIDs the snapshots are committed under
//! ([`archive`], pure, no containerd). [`containerd`] then writes the blobs to containerd's content
//! store, unpacks the layers into the `overlayfs` snapshotter, and creates the image records in
//! the `k8s.io` namespace labelled as CRI-managed, so CRI's `ImageStatus` and `CreateContainer`
//! use them at once. Everything is checked before containerd is called: a bad archive creates
//! nothing.

pub mod archive;
pub mod containerd;

pub use archive::{ImageArchive, ImportError, ParsedImage, chain_ids};
pub use containerd::{ContainerdImporter, ImportedImage};
