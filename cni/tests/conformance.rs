//! CNI spec conformance of the real `skiff-cni` binary, for spec versions 1.0.0 and 1.1.0: the
//! ADD/CHECK/DEL life cycle, DEL's idempotency (twice, without a netns, unknown container), the
//! error codes for bad input (each leaving nothing behind), VERSION, STATUS and GC.
//! Privileged: each test builds its own node and pod namespaces.

mod common;

use common::{Node, VERSIONS, attachment_env, invoke_in, netns_path, pings, result_address};
use serde_json::{Value, json};
use skiff_tests::netns::NetNs;

const POD_CIDR: &str = "10.244.1.0/24";

#[test]
fn add_check_del_round_trip() {
    if !common::privileged("add_check_del_round_trip") {
        return;
    }
    for version in VERSIONS {
        let node = Node::new("cni-node");
        let pod = NetNs::new("cni-pod").expect("pod namespace");
        let config = node.config(version, POD_CIDR);

        let result = node.add(&config, "round-trip", pod.path()).ok();
        assert_eq!(result["cniVersion"], version, "{result}");
        let address = result_address(&result);
        assert!(
            address.to_string().starts_with("10.244.1."),
            "{version}: {address} is not in {POD_CIDR}"
        );
        let interfaces = result["interfaces"].as_array().expect("interfaces");
        assert_eq!(interfaces.len(), 2, "{result}");
        assert_eq!(interfaces[1]["name"], "eth0");
        assert_eq!(interfaces[1]["sandbox"], pod.path().to_str().unwrap());
        assert_eq!(result["ips"][0]["interface"], 1);
        assert_eq!(result["ips"][0]["gateway"], "169.254.1.1");
        assert_eq!(interfaces[0].get("mtu").is_some(), version == "1.1.0");

        // The pod really has the address, the gateway route and the default route.
        let addresses = pod
            .ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
            .unwrap();
        assert!(addresses.contains(&format!("{address}/32")), "{addresses}");
        let routes = pod.ip(&["-4", "route", "show"]).unwrap();
        assert!(
            routes.contains("default via 169.254.1.1 dev eth0"),
            "{routes}"
        );
        assert!(routes.contains("169.254.1.1 dev eth0"), "{routes}");
        let host = interfaces[0]["name"].as_str().unwrap();
        assert_eq!(node.host_veths(), [host]);
        assert_eq!(node.pod_routes(), [address.to_string()]);
        assert_eq!(node.allocations(), [(address, "round-trip".to_owned())]);
        // Traffic both ways, answered by proxy ARP for 169.254.1.1.
        assert!(
            pings(&pod, node.address),
            "{version}: the pod cannot reach its node"
        );
        assert!(
            pings(&node.netns, address),
            "{version}: the node cannot reach its pod"
        );

        let mut checked = config.clone();
        checked["prevResult"] = result.clone();
        node.check(&checked, "round-trip", pod.path()).ok();

        let mut deleted = config.clone();
        deleted["prevResult"] = result;
        node.del(&deleted, "round-trip", Some(pod.path())).ok();
        node.assert_clean(version);
        assert!(
            pod.ip(&["link", "show", "eth0"]).is_err(),
            "eth0 is left in the pod"
        );
    }
}

#[test]
fn check_reports_what_add_left_changed() {
    if !common::privileged("check_reports_what_add_left_changed") {
        return;
    }
    for version in VERSIONS {
        let node = Node::new("cni-node");
        let pod = NetNs::new("cni-pod").expect("pod namespace");
        let config = node.config(version, POD_CIDR);
        let result = node.add(&config, "checked", pod.path()).ok();
        let mut checked = config.clone();
        checked["prevResult"] = result.clone();

        pod.ip(&["route", "del", "default"]).unwrap();
        node.check(&checked, "checked", pod.path())
            .error(102, "default");

        let mut wrong = checked.clone();
        wrong["prevResult"]["ips"][0]["address"] = json!("10.244.1.200/32");
        node.check(&wrong, "checked", pod.path())
            .error(102, "prevResult");

        let other = NetNs::new("cni-pod").expect("pod namespace");
        node.check(&checked, "unknown", other.path())
            .error(3, "unknown");
        node.del(&config, "checked", Some(pod.path())).ok();
        node.assert_clean(version);
    }
}

#[test]
fn del_is_idempotent_and_needs_no_netns() {
    if !common::privileged("del_is_idempotent_and_needs_no_netns") {
        return;
    }
    for version in VERSIONS {
        let node = Node::new("cni-node");
        let config = node.config(version, POD_CIDR);

        // DEL twice.
        let pod = NetNs::new("cni-pod").expect("pod namespace");
        node.add(&config, "twice", pod.path()).ok();
        node.del(&config, "twice", Some(pod.path())).ok();
        node.del(&config, "twice", Some(pod.path())).ok();
        node.assert_clean(&format!("{version} DEL twice"));

        // DEL after the pod's netns is gone, with and without CNI_NETNS.
        for with_netns in [true, false] {
            let pod = NetNs::new("cni-pod").expect("pod namespace");
            let path = netns_path(&pod);
            node.add(&config, "gone", &path).ok();
            drop(pod);
            assert!(!path.exists());
            let netns = with_netns.then_some(path.as_path());
            node.del(&config, "gone", netns).ok();
            node.assert_clean(&format!("{version} DEL without netns ({with_netns})"));
        }

        // DEL of a container skiff-cni never saw.
        node.del(&config, "never-added", None).ok();
        node.assert_clean(&format!("{version} DEL unknown"));
    }
}

#[test]
fn add_refuses_an_existing_interface_name_and_leaves_nothing() {
    if !common::privileged("add_refuses_an_existing_interface_name_and_leaves_nothing") {
        return;
    }
    for version in VERSIONS {
        let node = Node::new("cni-node");
        let pod = NetNs::new("cni-pod").expect("pod namespace");
        pod.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
        ])
        .unwrap();
        let config = node.config(version, POD_CIDR);
        node.add(&config, "taken", pod.path()).error(100, "eth0");
        node.assert_clean(version);
        // The existing interface is untouched.
        assert!(
            pod.ip(&["link", "show", "eth0"])
                .unwrap()
                .contains("eth0@other0")
        );
    }
}

#[test]
fn bad_input_gets_the_spec_codes_and_changes_nothing() {
    if !common::privileged("bad_input_gets_the_spec_codes_and_changes_nothing") {
        return;
    }
    for version in VERSIONS {
        let node = Node::new("cni-node");
        let pod = NetNs::new("cni-pod").expect("pod namespace");
        let path = pod.path();
        let good = node.config(version, POD_CIDR);
        let add = |config: &Value| node.add(config, "bad", path);

        let invocation = node.invoke(&attachment_env("ADD", "bad", Some(path)), &json!("x"));
        invocation.error(6, "not a JSON object");
        let raw = invoke_in(
            Some(&node.netns),
            &attachment_env("ADD", "bad", Some(path)),
            b"{not json",
        );
        raw.error(6, "not JSON");

        let mut config = good.clone();
        config["cniVersion"] = json!("0.3.1");
        add(&config).error(1, "0.3.1");
        let mut config = good.clone();
        config["podCIDR"] = json!("10.244.1.7/24");
        add(&config).error(7, "podCIDR");
        let mut config = good.clone();
        config["mtu"] = json!("big");
        add(&config).error(7, "mtu");
        let mut config = good.clone();
        config["podCidr"] = json!("10.0.0.0/8");
        add(&config).error(2, "podCidr");
        let mut config = good.clone();
        config["name"] = json!("../../etc");
        add(&config).error(7, "network name");

        // Missing environment variables are named.
        let env = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "bad")];
        node.invoke(&env, &good).error(4, "CNI_IFNAME");
        let env = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "bad"),
            ("CNI_IFNAME", "eth0"),
        ];
        node.invoke(&env, &good).error(4, "CNI_NETNS");
        node.invoke(&[], &good).error(4, "CNI_COMMAND");
        // A netns that does not exist.
        node.add(
            &good,
            "bad",
            std::path::Path::new("/run/netns/does-not-exist"),
        )
        .error(3, "does-not-exist");

        // Pod CIDR from a file that the node agent has not written yet, then has.
        let pod_cidr_file = node.data_dir.path().join("podcidr");
        let mut from_file = good.clone();
        from_file.as_object_mut().unwrap().remove("podCIDR");
        from_file["podCIDRFile"] = json!(pod_cidr_file);
        add(&from_file).error(11, "podcidr");
        node.assert_clean(&format!("{version} after bad input"));
        std::fs::write(&pod_cidr_file, "10.244.3.0/24\n").unwrap();
        let result = add(&from_file).ok();
        assert!(result_address(&result).to_string().starts_with("10.244.3."));
        node.del(&from_file, "bad", Some(path)).ok();
        node.assert_clean(version);
    }
}

#[test]
fn exhausted_pool_gets_code_11_and_status_50() {
    if !common::privileged("exhausted_pool_gets_code_11_and_status_50") {
        return;
    }
    for version in VERSIONS {
        let node = Node::new("cni-node");
        // A /30 has exactly one pod address (network, node and broadcast are reserved).
        let config = node.config(version, "10.244.9.0/30");
        let first = NetNs::new("cni-pod").expect("pod namespace");
        let second = NetNs::new("cni-pod").expect("pod namespace");
        let status = [("CNI_COMMAND", "STATUS")];
        if version == "1.1.0" {
            node.invoke(&status, &config).ok();
        }
        let result = node.add(&config, "first", first.path()).ok();
        assert_eq!(result_address(&result).to_string(), "10.244.9.2");
        let veths = node.host_veths();
        node.add(&config, "second", second.path())
            .error(11, "10.244.9.0/30");
        assert_eq!(node.host_veths(), veths, "the failed ADD left a veth");
        assert_eq!(node.allocations().len(), 1);
        if version == "1.1.0" {
            node.invoke(&status, &config).error(50, "10.244.9.0/30");
        } else {
            node.invoke(&status, &config).error(1, "1.1.0");
        }
        node.del(&config, "first", Some(first.path())).ok();
        node.assert_clean(version);
    }
}

#[test]
fn status_needs_a_pod_cidr() {
    if !common::privileged("status_needs_a_pod_cidr") {
        return;
    }
    let node = Node::new("cni-node");
    let mut config = node.config("1.1.0", POD_CIDR);
    config.as_object_mut().unwrap().remove("podCIDR");
    config["podCIDRFile"] = json!(node.data_dir.path().join("missing"));
    node.invoke(&[("CNI_COMMAND", "STATUS")], &config)
        .error(50, "missing");
}

#[test]
fn version_lists_both_spec_versions() {
    for (stdin, answered) in [
        (&br#"{"cniVersion":"1.0.0"}"#[..], "1.0.0"),
        (&br#"{"cniVersion":"1.1.0"}"#[..], "1.1.0"),
        (&b""[..], "1.1.0"),
    ] {
        let invocation = invoke_in(None, &[("CNI_COMMAND", "VERSION")], stdin);
        assert_eq!(
            invocation.ok(),
            json!({"cniVersion": answered, "supportedVersions": ["1.0.0", "1.1.0"]})
        );
    }
}

#[test]
fn gc_releases_exactly_the_stale_attachments() {
    if !common::privileged("gc_releases_exactly_the_stale_attachments") {
        return;
    }
    for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
        let node = Node::new("cni-node");
        let config = node.config("1.1.0", POD_CIDR);
        let pods: Vec<NetNs> = (0..4)
            .map(|_| NetNs::new("cni-pod").expect("pod namespace"))
            .collect();
        let mut addresses = Vec::new();
        for (n, pod) in pods.iter().enumerate() {
            let result = node.add(&config, &format!("gc-{n}"), pod.path()).ok();
            addresses.push(result_address(&result));
        }
        let keep = [0, 2];
        let mut gc = config.clone();
        gc[key] = Value::Array(
            keep.iter()
                .map(|n| json!({"containerID": format!("gc-{n}"), "ifname": "eth0"}))
                .collect(),
        );
        node.invoke(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/usr/lib/cni")], &gc)
            .ok();
        let left: Vec<String> = node.allocations().into_iter().map(|(_, id)| id).collect();
        assert_eq!(left, ["gc-0", "gc-2"], "{key}");
        assert_eq!(node.host_veths().len(), 2, "{key}: stale veths must go");
        assert_eq!(node.pod_routes().len(), 2, "{key}: stale routes must go");
        // The kept pods still work.
        assert!(pings(&pods[0], node.address));
        assert!(pings(&pods[2], node.address));
        // GC without the list is refused rather than releasing everything.
        node.invoke(&[("CNI_COMMAND", "GC")], &config)
            .error(7, "valid-attachments");
        assert_eq!(node.allocations().len(), 2);
        // GC is 1.1.0-only.
        let old = node.config("1.0.0", POD_CIDR);
        node.invoke(&[("CNI_COMMAND", "GC")], &old)
            .error(1, "1.1.0");
        for n in keep {
            node.del(&config, &format!("gc-{n}"), None).ok();
        }
        node.assert_clean(key);
    }
}

#[test]
fn gc_removes_veths_left_without_an_allocation_and_nothing_else() {
    if !common::privileged("gc_removes_veths_left_without_an_allocation_and_nothing_else") {
        return;
    }
    let node = Node::new("cni-node");
    let config = node.config("1.1.0", POD_CIDR);
    let kept = NetNs::new("cni-pod").expect("pod namespace");
    let orphan = NetNs::new("cni-pod").expect("pod namespace");
    node.add(&config, "kept", kept.path()).ok();
    node.add(&config, "orphan", orphan.path()).ok();
    // A DEL killed after releasing the address leaves the veth without an allocation.
    let store = skiff_cni::ipam::IpamStore::open(node.data_dir.path(), "skiff").unwrap();
    store
        .release(&skiff_cni::ipam::Attachment::new("orphan", "eth0"))
        .unwrap();
    // Interfaces that are not skiff-cni's host veths stay, whatever their names.
    node.netns
        .ip(&[
            "link",
            "add",
            "skfnotours",
            "type",
            "veth",
            "peer",
            "name",
            "other0",
        ])
        .unwrap();
    let mut gc = config.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "kept", "ifname": "eth0"}]);
    node.invoke(&[("CNI_COMMAND", "GC")], &gc).ok();
    let kept_veth = skiff_cni::netlink::host_interface_name("kept", "eth0");
    let mut left = node.host_veths();
    left.sort();
    let mut expected = vec!["skfnotours".to_owned(), kept_veth];
    expected.sort();
    assert_eq!(left, expected);
    assert!(
        orphan.ip(&["link", "show", "eth0"]).is_err(),
        "the orphan's eth0 is left"
    );
    assert!(pings(&kept, node.address));
}

#[test]
fn chained_portmap_publishes_a_host_port_to_the_pod() {
    if !skiff_tests::privileged::check(
        "chained_portmap_publishes_a_host_port_to_the_pod",
        &["ip", "iptables", "/usr/lib/cni/portmap"],
    ) {
        return;
    }
    // Debian's portmap (containernetworking-plugins 1.1) speaks spec versions up to 1.0.0.
    let version = "1.0.0";
    let node = Node::new("cni-node");
    let pod = NetNs::new("cni-pod").expect("pod namespace");
    let config = node.config(version, POD_CIDR);
    let result = node.add(&config, "chained", pod.path()).ok();
    let address = result_address(&result);

    // portmap after skiff-cni, as in the shipped conflist: it gets skiff-cni's result as
    // prevResult and the runtime's port mappings.
    let portmap = |command: &str, prev: &Value| {
        let conf = json!({
            "cniVersion": version, "name": "skiff", "type": "portmap",
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}
            ]},
            "prevResult": prev,
        });
        let mut command_line = node.netns.command("/usr/lib/cni/portmap");
        command_line
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(attachment_env(command, "chained", Some(pod.path())))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command_line.spawn().expect("run portmap");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "portmap {command}: {} {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let chained: Value = serde_json::from_str(&portmap("ADD", &result)).unwrap();
    assert_eq!(
        result_address(&chained),
        address,
        "portmap kept skiff-cni's result"
    );

    // A server in the pod on port 80, reached from the node at its own address, port 8080.
    let listener = pod
        .run(|| std::net::TcpListener::bind(("0.0.0.0", 80)))
        .unwrap()
        .unwrap();
    let target = std::net::SocketAddr::from((node.address, 8080));
    let stream = node
        .netns
        .run(|| std::net::TcpStream::connect_timeout(&target, std::time::Duration::from_secs(3)))
        .unwrap();
    assert!(
        stream.is_ok(),
        "{version}: hostPort 8080 did not reach the pod: {stream:?}"
    );
    let (_, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V4(node.address));

    portmap("DEL", &chained);
    let mut deleted = config.clone();
    deleted["prevResult"] = chained;
    node.del(&deleted, "chained", Some(pod.path())).ok();
    node.assert_clean(version);
}
