//! The real kubectl v1.35 (from `cargo xtask setup`) against skiff-control, scripted the way an
//! operator uses it: apply a multi-document manifest, get in every common output format, watch,
//! describe, label, annotate, scale, re-apply a changed manifest, patch three ways, server-side
//! dry run, background cascading delete through ownerReferences, namespace deletion, and the
//! errors (invalid name, stale update, unknown kind) with upstream's wording.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{ControlPlane, kubectl_path, text};
use skiff_tests::require_privileges;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: demo
data:
  colour: blue
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels:
    app: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: app
        image: nginx:1.27
        ports:
        - containerPort: 8080
      - name: sidecar
        image: busybox:1.36
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  type: NodePort
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
"#;

fn ok(output: Output) -> String {
    let all = text(&output);
    assert!(output.status.success(), "kubectl failed: {all}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn failed(output: Output) -> String {
    let all = text(&output);
    assert!(
        !output.status.success(),
        "kubectl should have failed: {all}"
    );
    all
}

fn kubectl_stdin(control: &ControlPlane, arguments: &[&str], input: &str) -> Output {
    let mut child = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(control.kubeconfig())
        .args(arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write the manifest");
    child.wait_with_output().expect("kubectl output")
}

fn jsonpath(control: &ControlPlane, arguments: &[&str], path: &str) -> String {
    let template = format!("jsonpath={path}");
    let mut all: Vec<&str> = arguments.to_vec();
    all.extend(["-o", &template]);
    ok(control.kubectl(
        &["get"]
            .iter()
            .chain(all.iter())
            .copied()
            .collect::<Vec<_>>(),
    ))
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kubectl_drives_the_api_like_a_real_cluster() {
    require_privileges!(kubectl_path().to_str().expect("UTF-8 path"));
    let data = tempfile::tempdir().expect("temp dir");
    let control = ControlPlane::start(data.path());

    let version = ok(control.kubectl(&["version"]));
    assert!(
        version.contains("Server Version: v1.35.0+skiff"),
        "{version}"
    );
    let resources = ok(control.kubectl(&["api-resources"]));
    for expected in [
        "deployments",
        "apps/v1",
        "endpointslices",
        "leases",
        "configmaps",
    ] {
        assert!(
            resources.contains(expected),
            "{expected} missing: {resources}"
        );
    }

    // apply of a multi-document manifest
    let applied = ok(kubectl_stdin(&control, &["apply", "-f", "-"], MANIFEST));
    for line in [
        "namespace/demo created",
        "configmap/settings created",
        "deployment.apps/web created",
        "service/web created",
    ] {
        assert!(applied.contains(line), "{line} missing: {applied}");
    }
    let uid = jsonpath(
        &control,
        &["-n", "demo", "deployment", "web"],
        "{.metadata.uid}",
    );

    // get: default table, wide, yaml, jsonpath, label and field selectors, all namespaces
    let table = ok(control.kubectl(&["get", "-n", "demo", "deployments"]));
    assert!(
        table.contains("NAME") && table.contains("READY") && table.contains("UP-TO-DATE"),
        "{table}"
    );
    assert!(table.contains("web") && table.contains("0/2"), "{table}");
    let wide = ok(control.kubectl(&["get", "-n", "demo", "services", "-o", "wide"]));
    assert!(
        wide.contains("SELECTOR") && wide.contains("app=web") && wide.contains("NodePort"),
        "{wide}"
    );
    assert!(wide.contains("80:3"), "a node port is shown: {wide}");
    let yaml = ok(control.kubectl(&["get", "-n", "demo", "configmap", "settings", "-o", "yaml"]));
    assert!(
        yaml.contains("colour: blue") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );
    assert_eq!(
        jsonpath(
            &control,
            &["-n", "demo", "deployment", "web"],
            "{.spec.replicas}"
        ),
        "2"
    );
    let cluster_ip = jsonpath(
        &control,
        &["-n", "demo", "service", "web"],
        "{.spec.clusterIP}",
    );
    assert!(
        cluster_ip.starts_with("10."),
        "a ClusterIP from 10.96.0.0/12: {cluster_ip}"
    );
    let selected = ok(control.kubectl(&[
        "get",
        "-n",
        "demo",
        "services",
        "-l",
        "app!=web,app",
        "-o",
        "name",
    ]));
    assert!(selected.trim().is_empty(), "{selected}");
    let none = text(&control.kubectl(&["get", "-n", "demo", "deployments", "-l", "app=other"]));
    assert!(
        none.contains("No resources found in demo namespace."),
        "{none}"
    );
    let by_field = ok(control.kubectl(&[
        "get",
        "-n",
        "demo",
        "configmaps",
        "--field-selector",
        "metadata.name=settings",
        "-o",
        "name",
    ]));
    assert_eq!(by_field.trim(), "configmap/settings");
    let everywhere = ok(control.kubectl(&["get", "services", "-A"]));
    assert!(
        everywhere.contains("NAMESPACE")
            && everywhere.contains("kubernetes")
            && everywhere.contains("demo"),
        "{everywhere}"
    );
    let namespaces = ok(control.kubectl(&["get", "namespaces"]));
    for namespace in [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "demo",
    ] {
        assert!(
            namespaces.contains(namespace),
            "{namespace} missing: {namespaces}"
        );
    }
    assert!(namespaces.contains("Active"), "{namespaces}");

    // get -w sees a change made by another command
    let mut watcher = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(control.kubeconfig())
        .args([
            "get",
            "-n",
            "demo",
            "configmap",
            "settings",
            "-w",
            "-o",
            "jsonpath={.data.colour}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = watcher.stdout.take().expect("stdout");
    let (lines_sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_sender.send(line).is_err() {
                return;
            }
        }
    });
    assert_eq!(
        lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the current state"),
        "blue"
    );
    ok(control.kubectl(&[
        "patch",
        "-n",
        "demo",
        "configmap",
        "settings",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"colour":"red"}}"#,
    ]));
    assert_eq!(
        lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the update"),
        "red"
    );
    let _ = watcher.kill();
    let _ = watcher.wait();

    // describe
    let described = ok(control.kubectl(&["describe", "-n", "demo", "deployment", "web"]));
    assert!(
        described.contains("Name:") && described.contains("2 desired"),
        "{described}"
    );
    assert!(described.contains("nginx:1.27"), "{described}");
    let described = ok(control.kubectl(&["describe", "-n", "demo", "service", "web"]));
    assert!(
        described.contains("NodePort") && described.contains("Selector:"),
        "{described}"
    );

    // label, annotate, scale
    assert!(
        ok(control.kubectl(&["label", "-n", "demo", "deployment", "web", "tier=frontend"]))
            .contains("deployment.apps/web labeled")
    );
    let labelled = ok(control.kubectl(&[
        "get",
        "-n",
        "demo",
        "deployments",
        "-l",
        "tier=frontend",
        "-o",
        "name",
    ]));
    assert_eq!(labelled.trim(), "deployment.apps/web");
    assert!(
        ok(control.kubectl(&["annotate", "-n", "demo", "service", "web", "owner=team-a"]))
            .contains("service/web annotated")
    );
    assert_eq!(
        jsonpath(
            &control,
            &["-n", "demo", "service", "web"],
            "{.metadata.annotations.owner}"
        ),
        "team-a"
    );
    assert!(
        ok(control.kubectl(&["scale", "-n", "demo", "deployment", "web", "--replicas=3"]))
            .contains("deployment.apps/web scaled")
    );
    assert_eq!(
        jsonpath(
            &control,
            &["-n", "demo", "deployment", "web"],
            "{.spec.replicas}"
        ),
        "3"
    );

    // server-side dry run changes nothing; apply of a changed manifest updates in place
    let changed = MANIFEST
        .replace("colour: blue", "colour: green")
        .replace("nginx:1.27", "nginx:1.28");
    let dry = ok(kubectl_stdin(
        &control,
        &["apply", "--dry-run=server", "-f", "-"],
        &changed,
    ));
    assert!(
        dry.contains("configmap/settings configured (server dry run)"),
        "{dry}"
    );
    assert_eq!(
        jsonpath(
            &control,
            &["-n", "demo", "configmap", "settings"],
            "{.data.colour}"
        ),
        "red"
    );
    let generation: i64 = jsonpath(
        &control,
        &["-n", "demo", "deployment", "web"],
        "{.metadata.generation}",
    )
    .parse()
    .expect("a generation");
    let reapplied = ok(kubectl_stdin(&control, &["apply", "-f", "-"], &changed));
    assert!(
        reapplied.contains("configmap/settings configured"),
        "{reapplied}"
    );
    assert!(
        reapplied.contains("deployment.apps/web configured"),
        "{reapplied}"
    );
    assert!(
        reapplied.contains("namespace/demo unchanged"),
        "{reapplied}"
    );
    assert_eq!(
        jsonpath(
            &control,
            &["-n", "demo", "configmap", "settings"],
            "{.data.colour}"
        ),
        "green"
    );
    assert_eq!(
        jsonpath(
            &control,
            &["-n", "demo", "deployment", "web"],
            "{.metadata.uid}"
        ),
        uid
    );
    let images = jsonpath(
        &control,
        &["-n", "demo", "deployment", "web"],
        "{.spec.template.spec.containers[*].image}",
    );
    assert_eq!(images, "nginx:1.28 busybox:1.36");
    let new_generation: i64 = jsonpath(
        &control,
        &["-n", "demo", "deployment", "web"],
        "{.metadata.generation}",
    )
    .parse()
    .expect("a generation");
    assert!(
        new_generation > generation,
        "generation {generation} → {new_generation}"
    );

    // patch: merge, strategic (keeps the other container), json
    ok(control.kubectl(&[
        "patch",
        "-n",
        "demo",
        "deployment",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"minReadySeconds":5}}"#,
    ]));
    assert_eq!(
        jsonpath(
            &control,
            &["-n", "demo", "deployment", "web"],
            "{.spec.minReadySeconds}"
        ),
        "5"
    );
    ok(control.kubectl(&[
        "patch",
        "-n",
        "demo",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"app","image":"nginx:1.29"}]}}}}"#,
    ]));
    let images = jsonpath(
        &control,
        &["-n", "demo", "deployment", "web"],
        "{.spec.template.spec.containers[*].image}",
    );
    assert_eq!(images, "nginx:1.29 busybox:1.36");
    ok(control.kubectl(&[
        "patch",
        "-n",
        "demo",
        "service",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/ports/0/port","value":8081}]"#,
    ]));
    assert_eq!(
        jsonpath(
            &control,
            &["-n", "demo", "service", "web"],
            "{.spec.ports[0].port}"
        ),
        "8081"
    );

    // errors: invalid name, stale update, unknown kind
    let invalid = failed(kubectl_stdin(
        &control,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n  namespace: demo\n",
    ));
    assert!(
        invalid.contains("is invalid")
            && invalid.contains("metadata.name: Invalid value: \"Bad_Name\""),
        "{invalid}"
    );
    assert!(invalid.contains("RFC 1123 subdomain"), "{invalid}");
    let stale = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: demo\n  resourceVersion: \"1\"\ndata:\n  colour: purple\n";
    let conflict = failed(kubectl_stdin(&control, &["replace", "-f", "-"], stale));
    assert!(
        conflict.contains(
            "Operation cannot be fulfilled on configmaps \"settings\": the object has been modified"
        ),
        "{conflict}"
    );
    let unknown = failed(kubectl_stdin(
        &control,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Gadget\nmetadata:\n  name: g\n",
    ));
    assert!(
        unknown.contains("no matches for kind \"Gadget\" in version \"v1\""),
        "{unknown}"
    );

    // delete with background cascading: dependents go through their ownerReferences
    let owner = format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-1\n  namespace: demo\n  ownerReferences:\n  - apiVersion: apps/v1\n    kind: Deployment\n    name: web\n    uid: {uid}\n    controller: true\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: app\n        image: nginx:1.29\n"
    );
    ok(kubectl_stdin(&control, &["apply", "-f", "-"], &owner));
    let deleted = ok(control.kubectl(&[
        "delete",
        "-n",
        "demo",
        "deployment",
        "web",
        "--cascade=background",
    ]));
    assert!(
        deleted.contains("deployment.apps \"web\" deleted"),
        "{deleted}"
    );
    eventually("the owned ReplicaSet to be collected", || {
        ok(control.kubectl(&["get", "-n", "demo", "replicasets", "-o", "name"]))
            .trim()
            .is_empty()
    });

    // namespace deletion empties it and then removes it (kubectl waits for that)
    let deleted = ok(control.kubectl(&["delete", "namespace", "demo"]));
    assert!(deleted.contains("namespace \"demo\" deleted"), "{deleted}");
    let gone = text(&control.kubectl(&["get", "namespace", "demo"]));
    assert!(gone.contains("namespaces \"demo\" not found"), "{gone}");
    let leftovers =
        ok(control.kubectl(&["get", "configmaps,services", "-n", "demo", "-o", "name"]));
    assert!(leftovers.trim().is_empty(), "{leftovers}");
}
