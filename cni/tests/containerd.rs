//! skiff-cni used by the real containerd CRI plugin: the private containerd of the test harness,
//! with skiff-cni (chained with Debian's `portmap`) as its only network, gets pod IPs from
//! skiff-cni on RunPodSandbox and releases them on StopPodSandbox / RemovePodSandbox.

mod common;

use std::net::IpAddr;

use serde_json::json;
use skiff_tests::containerd::{self, Containerd};

#[tokio::test(flavor = "multi_thread")]
async fn containerd_runs_pods_on_skiff_cni_and_releases_their_addresses() {
    skiff_tests::require_privileges!(
        "containerd",
        "runc",
        "ip",
        "/usr/lib/cni/portmap",
        "/usr/lib/cni/loopback"
    );
    // The node: containerd runs in it, skiff-cni makes pod veths in it.
    let node = common::Node::new("cni-cri");
    let containerd = Containerd::start(&node.netns).expect("start containerd");
    let dir = containerd.dir().to_owned();
    containerd
        .install_cni_plugin(std::path::Path::new(common::PLUGIN), "skiff-cni")
        .expect("install skiff-cni");
    // The shipped conflist, with this test's pod CIDR and data directory.
    let mut conflist: serde_json::Value =
        serde_json::from_str(skiff_cni::install::DEFAULT_CONFLIST).expect("the shipped conflist");
    conflist["plugins"][0] = json!({
        "type": "skiff-cni",
        "podCIDR": "10.244.5.0/24",
        "dataDir": node.data_dir.path(),
        "mtu": 1500,
    });
    containerd
        .write_cni_conflist(&conflist)
        .expect("containerd takes skiff-cni as its network");

    let mut client = containerd.cri().await.expect("CRI client");
    let mut pods = Vec::new();
    for name in ["web", "db"] {
        let config =
            skiff_tests::cri::pod_sandbox_config(name, &containerd.pod_logs_dir().join(name));
        let pod_id = client
            .run_pod_sandbox(&config)
            .await
            .expect("RunPodSandbox");
        let ip = client.pod_ip(&pod_id).await.expect("the pod's IP");
        pods.push((pod_id, ip));
    }
    let allocated: Vec<IpAddr> = node
        .allocations()
        .into_iter()
        .map(|(ip, _)| IpAddr::V4(ip))
        .collect();
    for (pod_id, ip) in &pods {
        assert!(
            ip.to_string().starts_with("10.244.5."),
            "pod {pod_id} got {ip}, not an address of skiff-cni's pod CIDR"
        );
        assert!(
            allocated.contains(ip),
            "{ip} is not in the IPAM state {allocated:?}"
        );
        // The node reaches the pod through its veth.
        let IpAddr::V4(v4) = ip else { unreachable!() };
        assert!(
            common::pings(&node.netns, *v4),
            "the node cannot ping pod {ip}"
        );
    }
    assert_eq!(node.host_veths().len(), 2);

    // StopPodSandbox runs CNI DEL: the address and the veth go; RemovePodSandbox then finds
    // nothing to release and still succeeds.
    let (first_id, first_ip) = &pods[0];
    client
        .stop_pod_sandbox(first_id)
        .await
        .expect("StopPodSandbox");
    let left: Vec<IpAddr> = node
        .allocations()
        .into_iter()
        .map(|(ip, _)| IpAddr::V4(ip))
        .collect();
    assert!(
        !left.contains(first_ip),
        "{first_ip} is still allocated after StopPodSandbox"
    );
    assert_eq!(left.len(), 1);
    assert_eq!(node.host_veths().len(), 1);
    client
        .remove_pod_sandbox(first_id)
        .await
        .expect("RemovePodSandbox");

    let (second_id, _) = &pods[1];
    client
        .stop_and_remove_pod_sandbox(second_id)
        .await
        .expect("Stop and RemovePodSandbox");
    node.assert_clean("after every pod sandbox is removed");
    drop(client);
    containerd.stop().expect("stop containerd");
    assert_eq!(containerd::leftovers(&dir), Vec::<String>::new());
}
