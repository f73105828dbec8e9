"""The official Python `kubernetes` client against skiff-control: create, list, watch, patch
(strategic merge and JSON patch) and delete of pods and services. Run by tests/python_client.rs
with the admin kubeconfig as the only argument; prints "python client ok" on success."""

import sys
import threading
import time

from kubernetes import client, config, watch

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
namespace = "py"

v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
pod = client.V1Pod(
    metadata=client.V1ObjectMeta(name="p1", labels={"app": "py"}),
    spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36")]),
)
created = v1.create_namespaced_pod(namespace, pod)
assert created.metadata.uid, created
assert created.status.phase == "Pending", created.status
assert created.spec.restart_policy == "Always", created.spec

service = client.V1Service(
    metadata=client.V1ObjectMeta(name="s1"),
    spec=client.V1ServiceSpec(
        selector={"app": "py"}, ports=[client.V1ServicePort(port=80, target_port=8080)]
    ),
)
created_service = v1.create_namespaced_service(namespace, service)
assert created_service.spec.cluster_ip.startswith("10."), created_service.spec
assert created_service.spec.ports[0].protocol == "TCP", created_service.spec

pods = v1.list_namespaced_pod(namespace, label_selector="app=py")
assert [item.metadata.name for item in pods.items] == ["p1"], pods
resource_version = pods.metadata.resource_version

events = []


def watch_pods():
    stream = watch.Watch()
    for event in stream.stream(
        v1.list_namespaced_pod, namespace, resource_version=resource_version, timeout_seconds=20
    ):
        events.append((event["type"], event["object"].metadata.name, event["object"].metadata.labels))
        if event["type"] == "DELETED":
            stream.stop()


watcher = threading.Thread(target=watch_pods)
watcher.start()
time.sleep(1)
v1.patch_namespaced_pod("p1", namespace, {"metadata": {"labels": {"tier": "web"}}})
v1.patch_namespaced_service(
    "s1", namespace, [{"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}]
)
v1.delete_namespaced_pod("p1", namespace)
watcher.join(30)
assert [event[0] for event in events] == ["MODIFIED", "DELETED"], events
assert events[0][2] == {"app": "py", "tier": "web"}, events

services = v1.list_namespaced_service(namespace)
assert services.items[0].metadata.labels == {"x": "y"}, services
v1.delete_namespaced_service("s1", namespace)
assert v1.list_namespaced_service(namespace).items == []
try:
    v1.read_namespaced_pod("p1", namespace)
    raise AssertionError("the pod should be gone")
except client.exceptions.ApiException as error:
    assert error.status == 404, error
print("python client ok")
