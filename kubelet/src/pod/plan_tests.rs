//! Tests of the reconciliation plan: pod spec + runtime state → ordered actions.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ExecAction, Lifecycle, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::pod::observed::{ContainerProbeResults, ObservedSandbox};
use crate::pod::testing::{at, container, pod};

const NOW: i64 = 10_000;

fn sandbox(id: &str, attempt: u32, ready: bool, created_at: i64) -> ObservedSandbox {
    ObservedSandbox {
        id: id.to_owned(),
        attempt,
        state: if ready {
            SandboxState::Ready
        } else {
            SandboxState::NotReady
        },
        created_at,
        ips: vec!["10.1.0.7".to_owned()],
        has_network_status: true,
        network: NetworkMode::Pod,
    }
}

/// An instance of the test container `name` (spec image, so its hash matches).
fn instance(name: &str, id: &str, state: ContainerState, created_at: i64) -> ObservedContainer {
    ObservedContainer {
        id: id.to_owned(),
        sandbox_id: "s1".to_owned(),
        name: name.to_owned(),
        state,
        created_at,
        started_at: Some(at(created_at)),
        finished_at: None,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        image: "docker.io/library/busybox:1.36".to_owned(),
        image_ref: "sha256:feed".to_owned(),
        restart_count: 0,
        hash: Some(container_hash(&container(name))),
        termination_message_path: String::new(),
        termination_message_policy: String::new(),
    }
}

fn running(name: &str, id: &str, created_at: i64) -> ObservedContainer {
    instance(name, id, ContainerState::Running, created_at)
}

fn exited(name: &str, id: &str, created_at: i64, exit_code: i32) -> ObservedContainer {
    ObservedContainer {
        exit_code,
        finished_at: Some(at(created_at + 5)),
        reason: if exit_code == 0 { "Completed" } else { "Error" }.to_owned(),
        ..instance(name, id, ContainerState::Exited, created_at)
    }
}

fn observed(containers: Vec<ObservedContainer>) -> ObservedPod {
    ObservedPod {
        sandboxes: vec![sandbox("s1", 0, true, 1)],
        containers,
        probes: BTreeMap::new(),
    }
}

fn with_restart_policy(mut p: Pod, policy: &str) -> Pod {
    if let Some(spec) = p.spec.as_mut() {
        spec.restart_policy = Some(policy.to_owned());
    }
    p
}

fn with_init(mut p: Pod, init_containers: Vec<Container>) -> Pod {
    if let Some(spec) = p.spec.as_mut() {
        spec.init_containers = Some(init_containers);
    }
    p
}

fn sidecar(name: &str) -> Container {
    Container {
        restart_policy: Some("Always".to_owned()),
        ..container(name)
    }
}

fn plan(p: &Pod, o: &ObservedPod) -> PodPlan {
    plan_with(p, o, &Backoff::crash_loop(), PodPhase::Running)
}

fn plan_with(p: &Pod, o: &ObservedPod, backoff: &Backoff, phase: PodPhase) -> PodPlan {
    plan_pod(
        p,
        o,
        &PlanInputs {
            now: at(NOW),
            phase,
            backoff,
        },
    )
}

/// A compact rendering of the actions, for table assertions.
fn steps(plan: &PodPlan) -> Vec<String> {
    plan.actions
        .iter()
        .map(|action| match action {
            Action::KillContainers(kills) => format!(
                "kill {}",
                kills
                    .iter()
                    .map(|k| k.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Action::StopSandbox { sandbox_id } => format!("stop-sandbox {sandbox_id}"),
            Action::RemoveContainer { container_id, .. } => format!("remove {container_id}"),
            Action::CreateSandbox { attempt } => format!("create-sandbox {attempt}"),
            Action::StartContainer(start) => match start.kind {
                ContainerKind::Init => format!("start-init {}", start.name),
                ContainerKind::Sidecar => format!("start-sidecar {}", start.name),
                ContainerKind::Regular => format!("start {}", start.name),
            },
        })
        .collect()
}

fn kills(plan: &PodPlan) -> Vec<&KillContainer> {
    plan.actions
        .iter()
        .filter_map(|action| match action {
            Action::KillContainers(kills) => Some(kills.iter()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn starts(plan: &PodPlan) -> Vec<&StartContainer> {
    plan.actions
        .iter()
        .filter_map(|action| match action {
            Action::StartContainer(start) => Some(start),
            _ => None,
        })
        .collect()
}

#[test]
fn new_pod_gets_a_sandbox_then_all_containers() {
    let p = pod(vec![container("a"), container("b")]);
    let plan = plan(&p, &ObservedPod::default());
    assert_eq!(plan.mode, PlanMode::Sync);
    assert_eq!(steps(&plan), ["create-sandbox 0", "start a", "start b"]);
    assert!(
        starts(&plan)
            .iter()
            .all(|s| s.restart_count.is_none() && s.back_off.is_none())
    );
}

#[test]
fn new_pod_with_init_containers_starts_only_the_first_one() {
    let p = with_init(
        pod(vec![container("app")]),
        vec![container("init-a"), container("init-b")],
    );
    assert_eq!(
        steps(&plan(&p, &ObservedPod::default())),
        ["create-sandbox 0", "start-init init-a"]
    );
}

#[test]
fn init_containers_run_one_at_a_time_in_order() {
    let p = with_init(
        pod(vec![container("app")]),
        vec![container("init-a"), container("init-b")],
    );
    let cases: Vec<(&str, Vec<ObservedContainer>, Vec<&str>)> = vec![
        (
            "first still running",
            vec![running("init-a", "i1", 2)],
            vec![],
        ),
        (
            "first succeeded",
            vec![exited("init-a", "i1", 2, 0)],
            vec!["start-init init-b"],
        ),
        (
            "second running",
            vec![exited("init-a", "i1", 2, 0), running("init-b", "i2", 3)],
            vec![],
        ),
        (
            "all succeeded",
            vec![exited("init-a", "i1", 2, 0), exited("init-b", "i2", 3, 0)],
            vec!["start app"],
        ),
        (
            "first init removed by GC after the second ran",
            vec![exited("init-b", "i2", 3, 0)],
            vec!["start app"],
        ),
        ("app already running", vec![running("app", "c1", 4)], vec![]),
    ];
    for (name, containers, expected) in cases {
        assert_eq!(steps(&plan(&p, &observed(containers))), expected, "{name}");
    }
}

#[test]
fn failed_init_container_under_never_stops_the_pod() {
    let p = with_restart_policy(
        with_init(pod(vec![container("app")]), vec![container("init-a")]),
        "Never",
    );
    let plan = plan(&p, &observed(vec![exited("init-a", "i1", 2, 1)]));
    assert_eq!(steps(&plan), ["stop-sandbox s1"]);
    assert!(plan.back_offs.is_empty());
}

#[test]
fn oom_killed_init_container_counts_as_failed() {
    let p = with_restart_policy(
        with_init(pod(vec![container("app")]), vec![container("init-a")]),
        "Never",
    );
    let mut oom = exited("init-a", "i1", 2, 0);
    oom.reason = "OOMKilled".to_owned();
    assert_eq!(steps(&plan(&p, &observed(vec![oom]))), ["stop-sandbox s1"]);
}

#[test]
fn failed_init_container_is_retried_under_always_and_on_failure() {
    for policy in ["Always", "OnFailure"] {
        let p = with_restart_policy(
            with_init(
                pod(vec![container("app")]),
                vec![container("init-a"), container("init-b")],
            ),
            policy,
        );
        let plan = plan(
            &p,
            &observed(vec![
                exited("init-a", "i1", 2, 0),
                exited("init-b", "i2", 3, 1),
            ]),
        );
        assert_eq!(steps(&plan), ["start-init init-b"], "{policy}");
        let start = starts(&plan)[0];
        assert_eq!(start.restart_count, Some(1));
        assert_eq!(start.back_off.as_ref().map(|b| b.finished_at), Some(at(8)));
    }
}

#[test]
fn restarts_follow_the_restart_policy() {
    // (policy, exit code, restarted?)
    let cases = [
        ("Always", 0, true),
        ("Always", 1, true),
        ("OnFailure", 0, false),
        ("OnFailure", 1, true),
        ("Never", 0, false),
        ("Never", 1, false),
    ];
    for (policy, exit_code, restarted) in cases {
        let p = with_restart_policy(pod(vec![container("a"), container("b")]), policy);
        let o = observed(vec![running("a", "c1", 2), exited("b", "c2", 3, exit_code)]);
        let expected: Vec<&str> = if restarted { vec!["start b"] } else { vec![] };
        assert_eq!(steps(&plan(&p, &o)), expected, "{policy} exit {exit_code}");
    }
}

#[test]
fn pod_with_nothing_left_to_run_is_stopped() {
    for (policy, exit_code) in [("Never", 0), ("Never", 1), ("OnFailure", 0)] {
        let p = with_restart_policy(pod(vec![container("a")]), policy);
        let plan = plan(&p, &observed(vec![exited("a", "c1", 2, exit_code)]));
        assert_eq!(
            steps(&plan),
            ["stop-sandbox s1"],
            "{policy} exit {exit_code}"
        );
    }
}

#[test]
fn restart_count_grows_from_the_newest_instance() {
    let p = pod(vec![container("a")]);
    let mut older = exited("a", "c1", 2, 1);
    older.restart_count = 3;
    let mut newest = exited("a", "c2", 20, 1);
    newest.restart_count = 4;
    let plan = plan(&p, &observed(vec![older, newest]));
    let start = starts(&plan)[0];
    assert_eq!(start.restart_count, Some(5));
    assert_eq!(
        start.back_off,
        Some(BackoffRestart {
            key: backoff::container_key(&p, &container("a")),
            finished_at: at(25),
        })
    );
}

#[test]
fn crash_loop_back_off_holds_the_restart_and_says_until_when() {
    let p = pod(vec![container("a")]);
    let key = backoff::container_key(&p, &container("a"));
    let mut backoff = Backoff::crash_loop();
    // Two earlier restarts: the current delay is 20s.
    backoff.next(&key, at(NOW - 100), at(NOW - 100));
    backoff.next(&key, at(NOW - 50), at(NOW - 50));
    let mut crashed = exited("a", "c1", NOW - 10, 1);
    crashed.finished_at = Some(at(NOW - 5));
    let plan = plan_with(&p, &observed(vec![crashed]), &backoff, PodPhase::Running);
    assert!(steps(&plan).is_empty());
    assert_eq!(plan.back_offs.len(), 1);
    let hold = &plan.back_offs[0];
    assert_eq!(hold.until, at(NOW + 15));
    assert_eq!(plan.requeue_at, Some(at(NOW + 15)));
    assert_eq!(hold.reason.reason, "CrashLoopBackOff");
    assert_eq!(
        hold.reason.message,
        "back-off 20s restarting failed container=a pod=web_default(uid-1)"
    );

    // Once the delay has passed, the restart goes ahead and advances the back-off.
    let later = plan_pod(
        &p,
        &observed(vec![exited("a", "c1", NOW - 30, 1)]),
        &PlanInputs {
            now: at(NOW),
            phase: PodPhase::Running,
            backoff: &backoff,
        },
    );
    assert_eq!(steps(&later), ["start a"]);
}

#[test]
fn held_regular_init_container_blocks_everything_after_it() {
    let p = with_init(pod(vec![container("app")]), vec![container("init-a")]);
    let key = backoff::container_key(&p, &container("init-a"));
    let mut backoff = Backoff::crash_loop();
    backoff.next(&key, at(NOW - 2), at(NOW - 2));
    let mut failed = exited("init-a", "i1", NOW - 5, 1);
    failed.finished_at = Some(at(NOW - 1));
    let plan = plan_with(&p, &observed(vec![failed]), &backoff, PodPhase::Pending);
    assert!(steps(&plan).is_empty());
    assert_eq!(plan.back_offs[0].name, "init-a");
}

#[test]
fn liveness_failure_kills_and_restarts_with_the_probe_grace_period() {
    let mut c = container("a");
    c.liveness_probe = Some(Probe {
        termination_grace_period_seconds: Some(7),
        ..Probe::default()
    });
    let mut p = pod(vec![c]);
    if let Some(spec) = p.spec.as_mut() {
        spec.termination_grace_period_seconds = Some(30);
    }
    let mut o = observed(vec![running("a", "c1", 2)]);
    o.probes.insert(
        "c1".to_owned(),
        ContainerProbeResults {
            liveness: Some(ProbeResult::Failure),
            ..ContainerProbeResults::default()
        },
    );
    let plan = plan(&p, &o);
    assert_eq!(steps(&plan), ["kill a", "start a"]);
    let kill = kills(&plan)[0];
    assert_eq!(kill.reason, KillReason::LivenessProbe);
    assert_eq!(kill.grace_period_seconds, 7);
    assert_eq!(
        kill.message,
        "Container a failed liveness probe, will be restarted"
    );

    // Under Never the container is killed but not restarted, so the pod stops.
    let p = with_restart_policy(p, "Never");
    assert_eq!(
        steps(&plan_pod(
            &p,
            &o,
            &PlanInputs {
                now: at(NOW),
                phase: PodPhase::Running,
                backoff: &Backoff::crash_loop()
            }
        )),
        ["kill a", "stop-sandbox s1"]
    );
}

#[test]
fn startup_probe_failure_kills_and_restarts() {
    let p = pod(vec![container("a")]);
    let mut o = observed(vec![running("a", "c1", 2)]);
    o.probes.insert(
        "c1".to_owned(),
        ContainerProbeResults {
            startup: Some(ProbeResult::Failure),
            ..ContainerProbeResults::default()
        },
    );
    let plan = plan(&p, &o);
    assert_eq!(steps(&plan), ["kill a", "start a"]);
    assert_eq!(kills(&plan)[0].reason, KillReason::StartupProbe);
    assert_eq!(
        kills(&plan)[0].grace_period_seconds,
        MINIMUM_GRACE_PERIOD_SECONDS
    );
}

#[test]
fn changed_image_restarts_the_container_even_under_never() {
    let mut c = container("a");
    c.image = Some("busybox:1.37".to_owned());
    let p = with_restart_policy(pod(vec![c]), "Never");
    let plan = plan(&p, &observed(vec![running("a", "c1", 2)]));
    assert_eq!(steps(&plan), ["kill a", "start a"]);
    assert_eq!(
        kills(&plan)[0].message,
        "Container a definition changed, will be restarted"
    );
}

#[test]
fn created_and_unknown_containers_are_restarted() {
    let p = with_restart_policy(pod(vec![container("a"), container("b")]), "Never");
    let o = observed(vec![
        instance("a", "c1", ContainerState::Created, 2),
        instance("b", "c2", ContainerState::Unknown, 3),
    ]);
    let plan = plan(&p, &o);
    assert_eq!(steps(&plan), ["kill b", "start a", "start b"]);
    assert_eq!(kills(&plan)[0].reason, KillReason::Unknown);
    assert_eq!(
        kills(&plan)[0].message,
        "Container is in \"unknown\" state, try killing it before restart"
    );
}

#[test]
fn dead_sandbox_is_replaced_and_the_pod_starts_over() {
    let p = with_init(pod(vec![container("app")]), vec![container("init-a")]);
    let o = ObservedPod {
        sandboxes: vec![sandbox("s1", 0, false, 1)],
        containers: vec![exited("init-a", "i1", 2, 0), running("app", "c1", 3)],
        probes: BTreeMap::new(),
    };
    assert_eq!(
        steps(&plan(&p, &o)),
        [
            "kill app",
            "stop-sandbox s1",
            "remove i1",
            "create-sandbox 1",
            "start-init init-a"
        ]
    );
}

#[test]
fn dead_sandbox_of_a_never_pod_is_not_replaced() {
    let p = with_restart_policy(pod(vec![container("a")]), "Never");
    let o = ObservedPod {
        sandboxes: vec![sandbox("s1", 0, false, 1)],
        containers: vec![exited("a", "c1", 2, 0)],
        probes: BTreeMap::new(),
    };
    assert_eq!(steps(&plan(&p, &o)), ["stop-sandbox s1"]);
}

#[test]
fn sandbox_is_recreated_when_its_state_is_inconsistent() {
    let p = pod(vec![container("a")]);
    let two_ready = ObservedPod {
        sandboxes: vec![sandbox("old", 0, true, 1), sandbox("new", 1, true, 2)],
        ..ObservedPod::default()
    };
    let change = pod_sandbox_changed(&p, &two_ready);
    assert_eq!(
        (change.create, change.attempt, change.sandbox_id.as_deref()),
        (true, 2, Some("new"))
    );

    let mut no_ip = sandbox("s1", 0, true, 1);
    no_ip.ips.clear();
    let no_ip = ObservedPod {
        sandboxes: vec![no_ip],
        ..ObservedPod::default()
    };
    assert!(pod_sandbox_changed(&p, &no_ip).create);

    let mut p_host = p.clone();
    if let Some(spec) = p_host.spec.as_mut() {
        spec.host_network = Some(true);
    }
    let pod_network = ObservedPod {
        sandboxes: vec![sandbox("s1", 0, true, 1)],
        ..ObservedPod::default()
    };
    assert!(
        pod_sandbox_changed(&p_host, &pod_network).create,
        "network mode changed"
    );
    assert!(!pod_sandbox_changed(&p, &pod_network).create);
}

#[test]
fn deleted_pod_is_killed_with_pre_stop_and_its_grace_period() {
    let mut with_hook = container("a");
    with_hook.lifecycle = Some(Lifecycle {
        pre_stop: Some(LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["sleep".to_owned(), "3".to_owned()]),
            }),
            ..LifecycleHandler::default()
        }),
        ..Lifecycle::default()
    });
    let mut p = pod(vec![with_hook, container("b")]);
    p.metadata.deletion_timestamp = Some(Time(at(NOW)));
    p.metadata.deletion_grace_period_seconds = Some(45);
    let o = observed(vec![running("a", "c1", 2), running("b", "c2", 3)]);
    let plan = plan(&p, &o);
    assert_eq!(plan.mode, PlanMode::Terminating);
    assert_eq!(steps(&plan), ["kill b,a", "stop-sandbox s1"]);
    let by_name = |name: &str| kills(&plan).into_iter().find(|k| k.name == name).cloned();
    let a = by_name("a").unwrap();
    assert_eq!((a.grace_period_seconds, a.run_pre_stop), (45, true));
    assert_eq!(a.message, "Stopping container a");
    let b = by_name("b").unwrap();
    assert_eq!((b.grace_period_seconds, b.run_pre_stop), (45, false));

    // Once nothing runs, the pod is terminated; sandboxes are stopped once more (idempotent).
    let done = observed(vec![exited("a", "c1", 2, 0), exited("b", "c2", 3, 143)]);
    let plan = plan_pod(
        &p,
        &done,
        &PlanInputs {
            now: at(NOW),
            phase: PodPhase::Running,
            backoff: &Backoff::crash_loop(),
        },
    );
    assert_eq!(plan.mode, PlanMode::Terminated);
    assert_eq!(steps(&plan), ["stop-sandbox s1"]);
}

#[test]
fn finished_pod_is_terminated_without_restarts() {
    let p = with_restart_policy(pod(vec![container("a"), container("b")]), "OnFailure");
    let o = observed(vec![exited("a", "c1", 2, 0), running("b", "c2", 3)]);
    let plan = plan_with(&p, &o, &Backoff::crash_loop(), PodPhase::Failed);
    assert_eq!(plan.mode, PlanMode::Terminating);
    assert_eq!(steps(&plan), ["kill b", "stop-sandbox s1"]);
    assert_eq!(
        kills(&plan)[0].grace_period_seconds,
        1,
        "no grace period set: at least 1s"
    );
}

#[test]
fn sidecars_stop_after_the_main_containers_in_reverse_order() {
    let p = with_init(
        pod(vec![container("app")]),
        vec![sidecar("proxy"), container("setup"), sidecar("logs")],
    );
    let mut p = p;
    p.metadata.deletion_timestamp = Some(Time(at(NOW)));
    let o = observed(vec![
        running("proxy", "s-1", 2),
        exited("setup", "i-1", 3, 0),
        running("logs", "s-2", 4),
        running("app", "c1", 5),
    ]);
    assert_eq!(
        steps(&plan(&p, &o)),
        ["kill app", "kill logs", "kill proxy", "stop-sandbox s1"]
    );
}

#[test]
fn sidecar_start_lets_the_next_init_container_run_and_is_kept_running() {
    let mut proxy = sidecar("proxy");
    proxy.startup_probe = Some(Probe::default());
    let p = with_init(pod(vec![container("app")]), vec![proxy, container("setup")]);

    // Startup probe has no result yet: wait.
    let o = observed(vec![running("proxy", "s-1", 2)]);
    assert!(steps(&plan(&p, &o)).is_empty());

    // Started: the next init container runs.
    let mut o = observed(vec![running("proxy", "s-1", 2)]);
    o.probes.insert(
        "s-1".to_owned(),
        ContainerProbeResults {
            startup: Some(ProbeResult::Success),
            ..ContainerProbeResults::default()
        },
    );
    assert_eq!(steps(&plan(&p, &o)), ["start-init setup"]);

    // Initialized and running: a crashed sidecar is restarted, the app keeps running.
    let mut o = observed(vec![
        exited("proxy", "s-1", 2, 1),
        exited("setup", "i-1", 3, 0),
        running("app", "c1", 4),
    ]);
    o.probes.clear();
    assert_eq!(steps(&plan(&p, &o)), ["start-sidecar proxy"]);
}

#[test]
fn older_init_container_instances_are_pruned() {
    let p = with_init(pod(vec![container("app")]), vec![container("init-a")]);
    let o = observed(vec![
        exited("init-a", "old", 2, 1),
        exited("init-a", "new", 3, 0),
        running("app", "c1", 4),
    ]);
    assert_eq!(steps(&plan(&p, &o)), ["remove old"]);
}

#[test]
fn grace_periods_follow_upstream_precedence() {
    let mut c = container("a");
    c.startup_probe = Some(Probe {
        termination_grace_period_seconds: Some(3),
        ..Probe::default()
    });
    let mut p = pod(vec![c.clone()]);
    assert_eq!(
        container_grace_period(&p, Some(&c), KillReason::Unspecified),
        2,
        "nothing set"
    );
    if let Some(spec) = p.spec.as_mut() {
        spec.termination_grace_period_seconds = Some(30);
    }
    assert_eq!(
        container_grace_period(&p, Some(&c), KillReason::Unspecified),
        30
    );
    assert_eq!(
        container_grace_period(&p, Some(&c), KillReason::StartupProbe),
        3
    );
    assert_eq!(
        container_grace_period(&p, Some(&c), KillReason::LivenessProbe),
        30
    );
    p.metadata.deletion_grace_period_seconds = Some(10);
    assert_eq!(
        container_grace_period(&p, Some(&c), KillReason::StartupProbe),
        10
    );
    assert_eq!(termination_grace_period(&p), 10);
    p.metadata.deletion_grace_period_seconds = Some(0);
    assert_eq!(termination_grace_period(&p), 30);

    assert_eq!(stop_timeout(30, 10), 20);
    assert_eq!(stop_timeout(30, 29), 2);
    assert_eq!(stop_timeout(30, 0), 30);
}

#[test]
fn failing_starts_abort_only_where_upstream_aborts() {
    let start = |kind| {
        Action::StartContainer(StartContainer {
            kind,
            index: 0,
            name: "x".to_owned(),
            restart_count: None,
            back_off: None,
        })
    };
    assert!(start(ContainerKind::Init).aborts_plan_on_failure());
    assert!(!start(ContainerKind::Sidecar).aborts_plan_on_failure());
    assert!(!start(ContainerKind::Regular).aborts_plan_on_failure());
    assert!(Action::CreateSandbox { attempt: 0 }.aborts_plan_on_failure());
    assert!(
        !Action::RemoveContainer {
            container_id: "c".to_owned(),
            name: "x".to_owned()
        }
        .aborts_plan_on_failure()
    );
}

#[test]
fn should_container_be_restarted_table() {
    let p = pod(vec![container("a")]);
    assert!(
        should_container_be_restarted(&container("a"), &p, &ObservedPod::default()),
        "never ran"
    );
    assert!(!should_container_be_restarted(
        &container("a"),
        &p,
        &observed(vec![running("a", "c", 2)])
    ));
    let mut deleted = p.clone();
    deleted.metadata.deletion_timestamp = Some(Time(at(NOW)));
    assert!(!should_container_be_restarted(
        &container("a"),
        &deleted,
        &observed(vec![exited("a", "c", 2, 1)])
    ));
}

#[test]
fn a_finished_job_goes_from_status_to_termination() {
    use crate::pod::NodeContext;
    use crate::pod::status::{StatusInputs, WaitingReasons, generate_pod_status};

    let p = with_restart_policy(pod(vec![container("a")]), "OnFailure");
    let o = observed(vec![exited("a", "c1", 2, 0)]);
    let status = generate_pod_status(
        &p,
        &NodeContext::default(),
        &StatusInputs {
            now: at(NOW),
            observed: &o,
            waiting_reasons: &WaitingReasons::default(),
            previous: None,
        },
    );
    let phase = status.phase.as_deref().and_then(PodPhase::parse).unwrap();
    assert_eq!(phase, PodPhase::Succeeded);
    let plan = plan_with(&p, &o, &Backoff::crash_loop(), phase);
    assert_eq!(plan.mode, PlanMode::Terminated);
    assert_eq!(steps(&plan), ["stop-sandbox s1"]);
}
