//! `skiff-kubelet import-image` against a real containerd: the harness's private containerd in its
//! own network namespace, the busybox OCI layout tarball written by the harness (not imported by
//! it), and the `skiff-kubelet` binary run as an operator would. The imported image must be seen
//! by CRI (`ImageStatus`) and run a container; a bad archive must fail clearly and create nothing.

use std::{net::Ipv4Addr, path::Path, process::Output, time::Duration};

use skiff_kubelet::{
    cri::{Runtime, api::ListImagesRequest},
    image_import::{ImageArchive, ParsedImage},
};
use skiff_tests::{
    containerd::{Containerd, StandInNetwork},
    cri as harness,
    netns::NetNs,
    oci_image,
};

const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const IMAGE: &str = "docker.io/skiff/imported-busybox:1";

fn import_image(containerd: &Containerd, file: &Path, extra: &[&str]) -> Output {
    let endpoint = format!("unix://{}", containerd.socket().display());
    std::process::Command::new(env!("CARGO_BIN_EXE_skiff-kubelet"))
        .arg("import-image")
        .args(["--container-runtime-endpoint", &endpoint])
        .args(extra)
        .arg(file)
        .output()
        .expect("skiff-kubelet runs")
}

/// Runs `ctr` on the private containerd in namespace `k8s.io`; panics when it fails.
fn ctr(containerd: &Containerd, args: &[&str]) {
    let output = std::process::Command::new("ctr")
        .arg("--address")
        .arg(containerd.socket())
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .expect("ctr runs");
    assert!(
        output.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs containerd's garbage collection now (`ctr leases rm --sync` of a fresh lease), then
/// checks that every blob and snapshot of `image` survived it.
fn collect_garbage_and_check(containerd: &Containerd, image: &ParsedImage) {
    ctr(containerd, &["leases", "create", "--id", "skiff-test-gc"]);
    ctr(containerd, &["leases", "rm", "--sync", "skiff-test-gc"]);
    let blobs = [&image.manifest, &image.config]
        .into_iter()
        .chain(&image.layers);
    for blob in blobs {
        ctr(containerd, &["content", "get", &blob.digest]);
    }
    for chain_id in &image.chain_ids {
        ctr(
            containerd,
            &["snapshots", "--snapshotter", "overlayfs", "info", chain_id],
        );
    }
}

/// Names of the images CRI lists.
async fn listed_images(containerd: &Containerd) -> Vec<String> {
    let mut cri = containerd.cri().await.expect("CRI client");
    let mut names: Vec<String> = cri
        .image
        .list_images(ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images
        .into_iter()
        .flat_map(|image| image.repo_tags)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn an_imported_layout_is_seen_by_cri_and_runs_a_container() {
    skiff_tests::require_privileges!("containerd", "runc", "ip", "ctr");
    let netns = NetNs::new("import-image").expect("a test network namespace");
    let containerd = Containerd::start(&netns).expect("a private containerd");
    containerd
        .use_stand_in_network(&StandInNetwork::new(Ipv4Addr::new(10, 93, 0, 0), 24))
        .expect("the stand-in pod network");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let archive = oci_image::busybox()
        .renamed(IMAGE)
        .write_layout_tar(&dir.path().join("busybox.tar"))
        .expect("the busybox layout tarball");

    let output = import_image(&containerd, &archive.path, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "import-image failed: {stderr}");
    assert_eq!(
        stdout.trim(),
        format!("{IMAGE} {}", archive.manifest_digest),
        "stderr: {stderr}"
    );

    let endpoint = format!("unix://{}", containerd.socket().display());
    let runtime = Runtime::connect(&endpoint, CALL_TIMEOUT)
        .await
        .expect("our CRI client connects");
    let image = runtime
        .image_status(IMAGE)
        .await
        .expect("ImageStatus")
        .expect("CRI knows the imported image");
    assert!(image.repo_tags.contains(&IMAGE.to_owned()), "{image:?}");

    // A second import of the same archive is a no-op that still succeeds.
    let again = import_image(&containerd, &archive.path, &[]);
    assert!(
        again.status.success(),
        "re-import failed: {}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Our lease is gone: a synchronous garbage collection must keep every blob and snapshot
    // (CRI would quietly re-unpack missing snapshots, so they are checked directly).
    let parsed = ImageArchive::open(&archive.path, None).expect("our own reading of the archive");
    collect_garbage_and_check(&containerd, &parsed.images[0]);
    let mut cri = containerd.cri().await.expect("CRI client");
    let pod = harness::pod_sandbox_config("imported", &containerd.pod_logs_dir().join("imported"));
    let pod_id = cri.run_pod_sandbox(&pod).await.expect("RunPodSandbox");
    let config = harness::container_config(
        "main",
        IMAGE,
        &["/bin/sh", "-c", "echo hello-from-imported-image"],
    );
    let container_id = cri
        .run_container(&pod_id, &pod, &config)
        .await
        .expect("a container from the imported image starts");
    let status = cri
        .wait_container_exited(&container_id, CALL_TIMEOUT)
        .await
        .expect("the container exits");
    assert_eq!(status.exit_code, 0, "{status:?}");
    let log = harness::read_container_log(&harness::container_log_path(&pod, &config))
        .expect("the container log");
    assert!(
        log.iter()
            .any(|line| line.text == "hello-from-imported-image"),
        "{log:?}"
    );
    cri.stop_and_remove_pod_sandbox(&pod_id)
        .await
        .expect("the pod is removed");
}

#[tokio::test]
async fn a_bad_archive_fails_clearly_and_creates_nothing() {
    skiff_tests::require_privileges!("containerd", "runc", "ip");
    let netns = NetNs::new("import-bad").expect("a test network namespace");
    let containerd = Containerd::start(&netns).expect("a private containerd");
    let before = listed_images(&containerd).await;
    let dir = tempfile::tempdir().expect("a temporary directory");

    let garbage = dir.path().join("garbage.tar");
    std::fs::write(&garbage, vec![0x5a_u8; 10_000]).expect("the garbage file");
    let output = import_image(&containerd, &garbage, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "garbage was imported");
    assert!(stderr.contains("is not a tar archive"), "{stderr}");

    let archive = oci_image::busybox()
        .renamed(IMAGE)
        .write_layout_tar(&dir.path().join("busybox.tar"))
        .expect("the busybox layout tarball");
    let bytes = std::fs::read(&archive.path).expect("the tarball");
    let truncated = dir.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("the truncated file");
    let output = import_image(&containerd, &truncated, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a truncated archive was imported");
    assert!(stderr.contains("truncated.tar"), "{stderr}");

    let output = import_image(&containerd, &dir.path().join("missing.tar"), &[]);
    assert!(!output.status.success(), "a missing file was imported");

    assert_eq!(listed_images(&containerd).await, before);
    let endpoint = format!("unix://{}", containerd.socket().display());
    let runtime = Runtime::connect(&endpoint, CALL_TIMEOUT)
        .await
        .expect("our CRI client connects");
    assert!(
        runtime
            .image_status(IMAGE)
            .await
            .expect("ImageStatus")
            .is_none()
    );
}
