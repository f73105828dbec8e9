//! The harness end to end: a private containerd in a test network namespace runs a busybox pod
//! on the stand-in CNI network, and leaves nothing behind.

use std::{net::Ipv4Addr, time::Duration};

use skiff_tests::{
    containerd::{self, Containerd, StandInNetwork},
    cri,
    netns::NetNs,
    oci_image,
};

#[tokio::test(flavor = "multi_thread")]
async fn busybox_pod_runs_on_a_private_containerd_and_gets_an_ip() {
    skiff_tests::require_privileges!(
        "containerd",
        "ctr",
        "runc",
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/loopback"
    );
    // Topology: a namespace with containerd in it, pods on a bridge in 10.77.0.0/24 (the bridge
    // and its subnet exist only inside this test's namespace).
    let netns = NetNs::new("cri").unwrap();
    let containerd = Containerd::start(&netns).unwrap();
    let dir = containerd.dir().to_owned();
    let network = StandInNetwork::new(
        Ipv4Addr::new(10, 77, (std::process::id() % 250) as u8, 0),
        24,
    );
    containerd.use_stand_in_network(&network).unwrap();
    let busybox = oci_image::busybox().import_into(&containerd).unwrap();
    let mut client = containerd.cri().await.unwrap();
    assert!(client.image_listed(&busybox.name).await.unwrap());

    // Action: a pod with one container that prints a line and exits.
    let pod = cri::pod_sandbox_config("smoke", &containerd.pod_logs_dir().join("smoke"));
    let pod_id = client.run_pod_sandbox(&pod).await.unwrap();
    let container = cri::container_config("hello", &busybox.name, &["echo", "hello-from-skiff"]);
    let container_id = client
        .run_container(&pod_id, &pod, &container)
        .await
        .unwrap();
    let status = client
        .wait_container_exited(&container_id, Duration::from_secs(20))
        .await
        .unwrap();

    // Assertions: clean exit, an address from the stand-in subnet, the line in the CRI log.
    assert_eq!(status.exit_code, 0, "container status: {status:?}");
    let ip = client.pod_ip(&pod_id).await.unwrap();
    assert!(
        network.contains(ip),
        "pod IP {ip} is outside {}",
        network.cidr()
    );
    let log = cri::container_log_path(&pod, &container);
    let lines = cri::wait_log_line(&log, "hello-from-skiff", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        lines.iter().all(|line| line.stream == "stdout"),
        "{lines:?}"
    );

    client
        .stop_and_remove_container(&container_id, Duration::from_secs(1))
        .await
        .unwrap();
    client.stop_and_remove_pod_sandbox(&pod_id).await.unwrap();
    drop(client);
    containerd.stop().unwrap();
    assert_eq!(containerd::leftovers(&dir), Vec::<String>::new());
}
