//! skiff-cni under concurrency and crashes, with the real binary: 50 parallel ADDs get 50
//! distinct addresses, 50 parallel DELs leave nothing; plugins killed with SIGKILL in the middle
//! of ADD leave state that DEL, a retried ADD and GC repair with no leaked and no duplicate
//! address.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use common::{Node, attachment_env, result_address};
use serde_json::{Value, json};
use skiff_tests::netns::NetNs;

const POD_CIDR: &str = "10.244.2.0/24";

#[test]
fn fifty_parallel_adds_get_distinct_addresses_and_fifty_dels_leave_nothing() {
    if !common::privileged(
        "fifty_parallel_adds_get_distinct_addresses_and_fifty_dels_leave_nothing",
    ) {
        return;
    }
    let node = Node::new("cni-par");
    let config = node.config("1.1.0", POD_CIDR);
    let pods: Vec<NetNs> = (0..50)
        .map(|_| NetNs::new("cni-par-pod").expect("pod namespace"))
        .collect();
    let addresses: Vec<Ipv4Addr> = std::thread::scope(|scope| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(n, pod)| {
                let node = &node;
                let config = &config;
                scope.spawn(move || {
                    result_address(&node.add(config, &format!("par-{n}"), pod.path()).ok())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("an ADD thread panicked"))
            .collect()
    });
    let distinct: BTreeSet<Ipv4Addr> = addresses.iter().copied().collect();
    assert_eq!(distinct.len(), 50, "duplicate addresses: {addresses:?}");
    assert_eq!(node.allocations().len(), 50);
    assert_eq!(node.host_veths().len(), 50);
    // Each pod holds exactly the address its result named.
    for (pod, address) in pods.iter().zip(&addresses) {
        let shown = pod
            .ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
            .unwrap();
        assert!(shown.contains(&format!("{address}/32")), "{shown}");
    }

    std::thread::scope(|scope| {
        for (n, pod) in pods.iter().enumerate() {
            let node = &node;
            let config = &config;
            scope.spawn(move || node.del(config, &format!("par-{n}"), Some(pod.path())).ok());
        }
    });
    node.assert_clean("after 50 parallel DELs");
}

/// Starts ADD for `container` and kills it with SIGKILL after `delay`; returns whether it had
/// already finished (successfully) by then.
fn add_killed_after(
    node: &Node,
    config: &Value,
    container: &str,
    pod: &NetNs,
    delay: Duration,
) -> bool {
    let mut child = node
        .netns
        .command(common::PLUGIN)
        .env_clear()
        .envs(attachment_env("ADD", container, Some(pod.path())))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start skiff-cni");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(config.to_string().as_bytes())
        .expect("write the configuration");
    std::thread::sleep(delay);
    let _ = child.kill();
    child.wait().expect("reap skiff-cni").success()
}

#[test]
fn plugins_killed_mid_add_leave_state_that_del_add_and_gc_repair() {
    if !common::privileged("plugins_killed_mid_add_leave_state_that_del_add_and_gc_repair") {
        return;
    }
    let node = Node::new("cni-kill");
    let config = node.config("1.1.0", POD_CIDR);
    let pods: Vec<NetNs> = (0..30)
        .map(|_| NetNs::new("cni-kill-pod").expect("pod namespace"))
        .collect();
    // How long one whole ADD takes here (process start, IPAM, veth, addresses, routes)...
    let warm_up = NetNs::new("cni-kill-pod").expect("pod namespace");
    let started = std::time::Instant::now();
    node.add(&config, "warm-up", warm_up.path()).ok();
    let add_duration = started.elapsed();
    node.del(&config, "warm-up", None).ok();
    // ...and kill points spread evenly over it.
    let mut finished = 0;
    for (n, pod) in pods.iter().enumerate() {
        let delay = add_duration * u32::try_from(n).expect("30 pods") / 30;
        if add_killed_after(&node, &config, &format!("kill-{n}"), pod, delay) {
            finished += 1;
        }
    }
    eprintln!("{finished} of 30 ADDs finished before SIGKILL (one ADD takes {add_duration:?})");
    // Whatever was left, the state is consistent: readable, no address twice.
    let held = node.allocations();
    let distinct: BTreeSet<Ipv4Addr> = held.iter().map(|(ip, _)| *ip).collect();
    assert_eq!(distinct.len(), held.len());

    // Repair as a runtime would: the first third gets DEL (after a failed ADD), the second third
    // is retried with ADD, the last third is collected by GC.
    for (n, pod) in pods.iter().enumerate().take(10) {
        node.del(&config, &format!("kill-{n}"), Some(pod.path()))
            .ok();
    }
    let mut retried = Vec::new();
    for (n, pod) in pods.iter().enumerate().take(20).skip(10) {
        let result = node.add(&config, &format!("kill-{n}"), pod.path()).ok();
        let address = result_address(&result);
        let shown = pod
            .ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
            .unwrap();
        assert!(shown.contains(&format!("{address}/32")), "{shown}");
        assert!(
            common::pings(pod, node.address),
            "retried pod kill-{n} has no network"
        );
        retried.push(address);
    }
    let mut gc = config.clone();
    gc["cni.dev/valid-attachments"] = Value::Array(
        (10..20)
            .map(|n| json!({"containerID": format!("kill-{n}"), "ifname": "eth0"}))
            .collect(),
    );
    node.invoke(&[("CNI_COMMAND", "GC")], &gc).ok();
    let left = node.allocations();
    let left_addresses: BTreeSet<Ipv4Addr> = left.iter().map(|(ip, _)| *ip).collect();
    assert_eq!(left.len(), 10, "after repair: {left:?}");
    assert_eq!(
        left_addresses,
        retried.iter().copied().collect(),
        "no duplicate, no leak"
    );
    assert_eq!(
        node.host_veths().len(),
        10,
        "leaked veths: {:?}",
        node.host_veths()
    );
    for n in 10..20 {
        node.del(&config, &format!("kill-{n}"), None).ok();
    }
    node.assert_clean("after the repair");
}
