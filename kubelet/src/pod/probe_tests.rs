//! Unit tests of `probe`: defaults, thresholds, startup gating, reset on restart.

use k8s_openapi::api::core::v1::{ContainerPort, HTTPHeader};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::pod::observed::ObservedContainer;
use crate::pod::testing::{at, container, pod};

const POD_IP: Option<&str> = Some("10.0.0.7");

fn exec_probe(period: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["true".to_owned()]),
        }),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

fn instance(id: &str, state: ContainerState, started: i64) -> ObservedContainer {
    ObservedContainer {
        id: id.to_owned(),
        sandbox_id: "s1".to_owned(),
        name: "app".to_owned(),
        state,
        created_at: started,
        started_at: Some(at(started)),
        finished_at: None,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        image: String::new(),
        image_ref: String::new(),
        restart_count: 0,
        hash: None,
        termination_message_path: String::new(),
        termination_message_policy: String::new(),
    }
}

fn running(id: &str, started: i64) -> ObservedPod {
    ObservedPod {
        containers: vec![instance(id, ContainerState::Running, started)],
        ..ObservedPod::default()
    }
}

/// A pod with one container `app` carrying the given probes.
fn probed_pod(liveness: Option<Probe>, readiness: Option<Probe>, startup: Option<Probe>) -> Pod {
    let mut app = container("app");
    app.liveness_probe = liveness;
    app.readiness_probe = readiness;
    app.startup_probe = startup;
    pod(vec![app])
}

fn key(probe_type: ProbeType) -> ProbeKey {
    ProbeKey {
        container: "app".to_owned(),
        probe_type,
    }
}

fn due_types(
    probes: &mut PodProbes,
    pod: &Pod,
    observed: &ObservedPod,
    now: i64,
) -> Vec<ProbeType> {
    probes
        .due(pod, observed, POD_IP, PodPhase::Running, at(now))
        .runs
        .into_iter()
        .map(|run| run.key.probe_type)
        .collect()
}

fn results(probes: &PodProbes, id: &str) -> ContainerProbeResults {
    probes.results().get(id).copied().unwrap_or_default()
}

#[test]
fn settings_default_as_upstream() {
    let settings = ProbeSettings::of(&Probe::default());
    assert_eq!(
        settings,
        ProbeSettings {
            initial_delay_seconds: 0,
            period_seconds: 10,
            timeout_seconds: 1,
            success_threshold: 1,
            failure_threshold: 3,
        }
    );
    assert_eq!(settings.timeout(), Duration::from_secs(1));
}

#[test]
fn initial_results_are_readiness_failure_liveness_success_startup_unknown() {
    let pod = probed_pod(Some(exec_probe(10)), Some(exec_probe(10)), None);
    let mut probes = PodProbes::default();
    probes.due(
        &pod,
        &running("c1", 100),
        POD_IP,
        PodPhase::Running,
        at(100),
    );
    let got = results(&probes, "c1");
    assert_eq!(got.liveness, Some(ProbeResult::Success));
    assert_eq!(got.readiness, Some(ProbeResult::Failure));

    let pod = probed_pod(None, None, Some(exec_probe(10)));
    let mut probes = PodProbes::default();
    probes.due(
        &pod,
        &running("c1", 100),
        POD_IP,
        PodPhase::Running,
        at(100),
    );
    assert_eq!(results(&probes, "c1").startup, None);
}

#[test]
fn liveness_fails_only_after_failure_threshold_consecutive_failures() {
    let pod = probed_pod(Some(exec_probe(1)), None, None);
    let observed = running("c1", 100);
    let mut probes = PodProbes::default();
    let liveness = key(ProbeType::Liveness);
    for (second, outcome) in [(100, ProbeResult::Failure), (101, ProbeResult::Failure)] {
        assert_eq!(
            due_types(&mut probes, &pod, &observed, second),
            [ProbeType::Liveness]
        );
        assert_eq!(probes.record(&liveness, "c1", Some(outcome)), None);
    }
    // A success in between starts the count over.
    assert_eq!(
        due_types(&mut probes, &pod, &observed, 102),
        [ProbeType::Liveness]
    );
    assert_eq!(
        probes.record(&liveness, "c1", Some(ProbeResult::Success)),
        None
    );
    for second in [103, 104] {
        due_types(&mut probes, &pod, &observed, second);
        assert_eq!(
            probes.record(&liveness, "c1", Some(ProbeResult::Failure)),
            None
        );
    }
    due_types(&mut probes, &pod, &observed, 105);
    assert_eq!(
        probes.record(&liveness, "c1", Some(ProbeResult::Failure)),
        Some(ProbeTransition {
            key: liveness.clone(),
            result: ProbeResult::Failure
        })
    );
    assert_eq!(results(&probes, "c1").liveness, Some(ProbeResult::Failure));
    // On hold until the container is replaced.
    assert!(due_types(&mut probes, &pod, &observed, 110).is_empty());
}

#[test]
fn readiness_needs_success_threshold_and_flips_both_ways() {
    let mut readiness_probe = exec_probe(1);
    readiness_probe.success_threshold = Some(2);
    readiness_probe.failure_threshold = Some(1);
    let pod = probed_pod(None, Some(readiness_probe), None);
    let observed = running("c1", 100);
    let mut probes = PodProbes::default();
    let readiness = key(ProbeType::Readiness);

    due_types(&mut probes, &pod, &observed, 100);
    assert_eq!(
        probes.record(&readiness, "c1", Some(ProbeResult::Success)),
        None
    );
    due_types(&mut probes, &pod, &observed, 101);
    assert!(
        probes
            .record(&readiness, "c1", Some(ProbeResult::Success))
            .is_some()
    );
    assert_eq!(results(&probes, "c1").readiness, Some(ProbeResult::Success));

    due_types(&mut probes, &pod, &observed, 102);
    assert!(
        probes
            .record(&readiness, "c1", Some(ProbeResult::Failure))
            .is_some()
    );
    assert_eq!(results(&probes, "c1").readiness, Some(ProbeResult::Failure));
    // Readiness keeps probing after a failure.
    assert_eq!(
        due_types(&mut probes, &pod, &observed, 103),
        [ProbeType::Readiness]
    );
}

#[test]
fn probes_wait_for_initial_delay_and_period() {
    let mut probe = exec_probe(5);
    probe.initial_delay_seconds = Some(3);
    let pod = probed_pod(None, Some(probe), None);
    let observed = running("c1", 100);
    let mut probes = PodProbes::default();

    let due = probes.due(&pod, &observed, POD_IP, PodPhase::Running, at(101));
    assert!(due.runs.is_empty());
    assert_eq!(due.next_at, Some(at(103)));
    assert_eq!(
        due_types(&mut probes, &pod, &observed, 103),
        [ProbeType::Readiness]
    );
    // Not again while the run is out, nor before the period passed.
    assert!(due_types(&mut probes, &pod, &observed, 104).is_empty());
    probes.record(&key(ProbeType::Readiness), "c1", Some(ProbeResult::Success));
    let due = probes.due(&pod, &observed, POD_IP, PodPhase::Running, at(104));
    assert!(due.runs.is_empty());
    assert_eq!(due.next_at, Some(at(108)));
    assert_eq!(
        due_types(&mut probes, &pod, &observed, 108),
        [ProbeType::Readiness]
    );
}

#[test]
fn startup_probe_gates_liveness_and_readiness_until_it_succeeds() {
    let pod = probed_pod(
        Some(exec_probe(1)),
        Some(exec_probe(1)),
        Some(exec_probe(1)),
    );
    let observed = running("c1", 100);
    let mut probes = PodProbes::default();
    let startup = key(ProbeType::Startup);

    assert_eq!(
        due_types(&mut probes, &pod, &observed, 100),
        [ProbeType::Startup]
    );
    assert_eq!(
        probes.record(&startup, "c1", Some(ProbeResult::Failure)),
        None
    );
    assert_eq!(
        due_types(&mut probes, &pod, &observed, 101),
        [ProbeType::Startup]
    );
    assert!(
        probes
            .record(&startup, "c1", Some(ProbeResult::Success))
            .is_some()
    );
    assert_eq!(results(&probes, "c1").startup, Some(ProbeResult::Success));

    // Started: the startup probe stops, the others run at once.
    assert_eq!(
        due_types(&mut probes, &pod, &observed, 101),
        [ProbeType::Liveness, ProbeType::Readiness]
    );
}

#[test]
fn startup_failure_after_threshold_is_reported_and_holds() {
    let pod = probed_pod(Some(exec_probe(1)), None, Some(exec_probe(1)));
    let observed = running("c1", 100);
    let mut probes = PodProbes::default();
    let startup = key(ProbeType::Startup);
    for second in 100..102 {
        due_types(&mut probes, &pod, &observed, second);
        assert_eq!(
            probes.record(&startup, "c1", Some(ProbeResult::Failure)),
            None
        );
    }
    due_types(&mut probes, &pod, &observed, 102);
    assert!(
        probes
            .record(&startup, "c1", Some(ProbeResult::Failure))
            .is_some()
    );
    assert_eq!(results(&probes, "c1").startup, Some(ProbeResult::Failure));
    assert!(due_types(&mut probes, &pod, &observed, 103).is_empty());
}

#[test]
fn results_reset_when_the_container_is_restarted() {
    let pod = probed_pod(Some(exec_probe(1)), Some(exec_probe(1)), None);
    let mut probes = PodProbes::default();
    let liveness = key(ProbeType::Liveness);
    let readiness = key(ProbeType::Readiness);
    let mut liveness_probe_failed = exec_probe(1);
    liveness_probe_failed.failure_threshold = Some(1);
    let pod_fast = probed_pod(Some(liveness_probe_failed), Some(exec_probe(1)), None);

    let first = running("c1", 100);
    due_types(&mut probes, &pod_fast, &first, 100);
    probes.record(&liveness, "c1", Some(ProbeResult::Failure));
    probes.record(&readiness, "c1", Some(ProbeResult::Success));
    assert_eq!(results(&probes, "c1").liveness, Some(ProbeResult::Failure));

    let second = ObservedPod {
        containers: vec![
            instance("c1", ContainerState::Exited, 100),
            instance("c2", ContainerState::Running, 110),
        ],
        ..ObservedPod::default()
    };
    assert_eq!(
        due_types(&mut probes, &pod, &second, 110),
        [ProbeType::Liveness, ProbeType::Readiness]
    );
    let got = results(&probes, "c2");
    assert_eq!(got.liveness, Some(ProbeResult::Success));
    assert_eq!(got.readiness, Some(ProbeResult::Failure));
    assert!(!probes.results().contains_key("c1"));
    // A late outcome of the old instance does not count.
    assert_eq!(
        probes.record(&liveness, "c1", Some(ProbeResult::Failure)),
        None
    );
}

#[test]
fn probe_errors_are_thrown_away() {
    let pod = probed_pod(None, Some(exec_probe(1)), None);
    let observed = running("c1", 100);
    let mut probes = PodProbes::default();
    due_types(&mut probes, &pod, &observed, 100);
    assert_eq!(probes.record(&key(ProbeType::Readiness), "c1", None), None);
    assert_eq!(results(&probes, "c1").readiness, Some(ProbeResult::Failure));
    assert_eq!(
        due_types(&mut probes, &pod, &observed, 101),
        [ProbeType::Readiness]
    );
}

#[test]
fn deleted_pods_get_a_quiet_liveness_success_and_no_more_liveness_probes() {
    let mut pod = probed_pod(Some(exec_probe(1)), Some(exec_probe(1)), None);
    pod.metadata.deletion_timestamp = Some(Time(at(100)));
    let observed = running("c1", 100);
    let mut probes = PodProbes::default();
    assert_eq!(
        due_types(&mut probes, &pod, &observed, 100),
        [ProbeType::Readiness]
    );
    assert_eq!(results(&probes, "c1").liveness, Some(ProbeResult::Success));
}

#[test]
fn terminal_pods_and_stopped_containers_are_not_probed() {
    let pod = probed_pod(None, Some(exec_probe(1)), None);
    let mut probes = PodProbes::default();
    let due = probes.due(
        &pod,
        &running("c1", 100),
        POD_IP,
        PodPhase::Succeeded,
        at(100),
    );
    assert!(due.runs.is_empty());
    let exited = ObservedPod {
        containers: vec![instance("c1", ContainerState::Exited, 100)],
        ..ObservedPod::default()
    };
    assert!(due_types(&mut probes, &pod, &exited, 101).is_empty());
    assert_eq!(results(&probes, "c1").readiness, Some(ProbeResult::Failure));
}

#[test]
fn http_get_resolves_named_port_pod_ip_and_default_headers() {
    let mut app = container("app");
    app.ports = Some(vec![ContainerPort {
        name: Some("http".to_owned()),
        container_port: 8080,
        ..ContainerPort::default()
    }]);
    let action = HTTPGetAction {
        path: Some("healthz".to_owned()),
        port: IntOrString::String("http".to_owned()),
        http_headers: Some(vec![HTTPHeader {
            name: "X-Probe".to_owned(),
            value: "1".to_owned(),
        }]),
        ..HTTPGetAction::default()
    };
    let target = HttpGetTarget::resolve(&action, &app, POD_IP, "kube-probe/1.35").unwrap();
    assert_eq!(target.url(), "http://10.0.0.7:8080/healthz");
    assert_eq!(
        target.request(),
        "GET /healthz HTTP/1.1\r\nHost: 10.0.0.7:8080\r\nX-Probe: 1\r\n\
         User-Agent: kube-probe/1.35\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn ports_resolve_by_number_name_or_numeric_string() {
    let app = container("app");
    assert_eq!(resolve_port(&IntOrString::Int(80), &app), Ok(80));
    assert_eq!(
        resolve_port(&IntOrString::String("81".to_owned()), &app),
        Ok(81)
    );
    assert_eq!(
        resolve_port(&IntOrString::String("web".to_owned()), &app),
        Err(ProbeActionError::PortNotFound("web".to_owned()))
    );
    assert_eq!(
        resolve_port(&IntOrString::Int(70000), &app),
        Err(ProbeActionError::InvalidPort(70000))
    );
}

#[test]
fn user_agent_is_kube_probe_major_minor() {
    assert_eq!(user_agent("probe"), "kube-probe/1.35");
    assert_eq!(user_agent("lifecycle"), "kube-lifecycle/1.35");
}

#[test]
fn http_status_200_to_399_succeeds() {
    assert_eq!(http_status_result(200).0, ProbeResult::Success);
    assert_eq!(http_status_result(302).0, ProbeResult::Success);
    assert_eq!(
        http_status_result(404),
        (
            ProbeResult::Failure,
            "HTTP probe failed with statuscode: 404".to_owned()
        )
    );
}

#[test]
fn https_and_grpc_probes_are_unsupported_failures_and_missing_handlers_errors() {
    let app = container("app");
    let https = Probe {
        http_get: Some(HTTPGetAction {
            port: IntOrString::Int(8443),
            scheme: Some("HTTPS".to_owned()),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    };
    assert!(matches!(
        ProbeAction::for_probe(&https, &app, POD_IP),
        Ok(ProbeAction::Unsupported(message)) if message.contains("https://10.0.0.7:8443/")
    ));
    assert_eq!(
        ProbeAction::for_probe(&Probe::default(), &app, POD_IP),
        Err(ProbeActionError::MissingHandler {
            container: "app".to_owned()
        })
    );
}

#[test]
fn hooks_use_the_lifecycle_user_agent_and_reject_tcp_socket() {
    let app = container("app");
    let http = LifecycleHandler {
        http_get: Some(HTTPGetAction {
            path: Some("/stop".to_owned()),
            port: IntOrString::Int(8080),
            ..HTTPGetAction::default()
        }),
        ..LifecycleHandler::default()
    };
    let Ok(ProbeAction::HttpGet(target)) = ProbeAction::for_hook(&http, &app, POD_IP) else {
        panic!("an HTTP GET");
    };
    assert!(
        target
            .headers
            .contains(&("User-Agent".to_owned(), "kube-lifecycle/1.35".to_owned()))
    );
    let tcp = LifecycleHandler {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(8080),
            ..TCPSocketAction::default()
        }),
        ..LifecycleHandler::default()
    };
    assert!(matches!(
        ProbeAction::for_hook(&tcp, &app, POD_IP),
        Ok(ProbeAction::Unsupported(_))
    ));
}

#[test]
fn native_sidecars_are_probed_and_regular_init_containers_are_not() {
    let mut sidecar = container("sidecar");
    sidecar.restart_policy = Some("Always".to_owned());
    sidecar.readiness_probe = Some(exec_probe(1));
    let mut init = container("init");
    init.readiness_probe = Some(exec_probe(1));
    let mut p = pod(vec![container("app")]);
    if let Some(spec) = p.spec.as_mut() {
        spec.init_containers = Some(vec![init, sidecar]);
    }
    let observed = ObservedPod {
        containers: vec![
            ObservedContainer {
                name: "init".to_owned(),
                ..instance("i1", ContainerState::Running, 100)
            },
            ObservedContainer {
                name: "sidecar".to_owned(),
                ..instance("s1", ContainerState::Running, 100)
            },
        ],
        ..ObservedPod::default()
    };
    let mut probes = PodProbes::default();
    let runs = probes
        .due(&p, &observed, POD_IP, PodPhase::Pending, at(100))
        .runs;
    let probed: Vec<&str> = runs.iter().map(|run| run.key.container.as_str()).collect();
    assert_eq!(probed, ["sidecar"]);
}
