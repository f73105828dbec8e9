//! Tests of the status generation: runtime state → phase, conditions, container statuses.

use k8s_openapi::api::core::v1::{PodReadinessGate, Probe, VolumeMount};

use super::*;
use crate::pod::observed::{ContainerProbeResults, NetworkMode, ObservedSandbox, SandboxState};
use crate::pod::testing::{at, container, pod};

const NOW: i64 = 1_700_000_000;

fn node() -> NodeContext {
    NodeContext {
        host_ips: vec!["192.168.1.10".to_owned()],
        ..NodeContext::default()
    }
}

fn sandbox(ready: bool) -> ObservedSandbox {
    ObservedSandbox {
        id: "s1".to_owned(),
        attempt: 0,
        state: if ready {
            SandboxState::Ready
        } else {
            SandboxState::NotReady
        },
        created_at: 1,
        ips: vec!["10.1.0.7".to_owned()],
        has_network_status: true,
        network: NetworkMode::Pod,
    }
}

fn instance(name: &str, id: &str, state: ContainerState, created_at: i64) -> ObservedContainer {
    ObservedContainer {
        id: id.to_owned(),
        sandbox_id: "s1".to_owned(),
        name: name.to_owned(),
        state,
        created_at,
        started_at: Some(at(NOW - 100 + created_at)),
        finished_at: None,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        image: "docker.io/library/busybox:1.36".to_owned(),
        image_ref: "docker.io/library/busybox@sha256:feed".to_owned(),
        restart_count: 0,
        hash: None,
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
        finished_at: Some(at(NOW - 50 + created_at)),
        ..instance(name, id, ContainerState::Exited, created_at)
    }
}

fn observed(containers: Vec<ObservedContainer>) -> ObservedPod {
    ObservedPod {
        sandboxes: vec![sandbox(true)],
        containers,
        probes: BTreeMap::new(),
    }
}

fn generate(p: &Pod, o: &ObservedPod) -> PodStatus {
    generate_with(p, o, &WaitingReasons::default(), None)
}

fn generate_with(
    p: &Pod,
    o: &ObservedPod,
    reasons: &WaitingReasons,
    previous: Option<&PodStatus>,
) -> PodStatus {
    generate_pod_status(
        p,
        &node(),
        &StatusInputs {
            now: at(NOW),
            observed: o,
            waiting_reasons: reasons,
            previous,
        },
    )
}

fn with_spec(mut p: Pod, edit: impl FnOnce(&mut k8s_openapi::api::core::v1::PodSpec)) -> Pod {
    if let Some(spec) = p.spec.as_mut() {
        edit(spec);
    }
    p
}

fn condition_of<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .unwrap()
}

/// (status, reason, message) of a condition.
fn cond(status: &PodStatus, type_: &str) -> (String, Option<String>, Option<String>) {
    let c = condition_of(status, type_);
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn state_of<'a>(statuses: &'a Option<Vec<ContainerStatus>>, name: &str) -> &'a ContainerStatus {
    statuses.iter().flatten().find(|s| s.name == name).unwrap()
}

fn waiting_reason(status: &ContainerStatus) -> Option<&str> {
    status.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}

/// An API container status in a given state, for `pod_phase` tables.
fn api_status(name: &str, state: &str, exit_code: i32, last_exit: Option<i32>) -> ContainerStatus {
    let state = match state {
        "running" => ApiContainerState {
            running: Some(ContainerStateRunning::default()),
            ..ApiContainerState::default()
        },
        "terminated" => ApiContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                ..ContainerStateTerminated::default()
            }),
            ..ApiContainerState::default()
        },
        _ => ApiContainerState {
            waiting: Some(ContainerStateWaiting::default()),
            ..ApiContainerState::default()
        },
    };
    ContainerStatus {
        name: name.to_owned(),
        state: Some(state),
        last_state: last_exit.map(|code| ApiContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                ..ContainerStateTerminated::default()
            }),
            ..ApiContainerState::default()
        }),
        ..ContainerStatus::default()
    }
}

#[test]
fn phase_follows_upstream_get_phase() {
    // (name, restart policy, init statuses, app statuses, pod_is_terminal, expected)
    type Case = (
        &'static str,
        &'static str,
        Vec<ContainerStatus>,
        Vec<ContainerStatus>,
        bool,
        PodPhase,
    );
    let cases: Vec<Case> = vec![
        (
            "nothing known",
            "Always",
            vec![],
            vec![],
            false,
            PodPhase::Pending,
        ),
        (
            "waiting",
            "Always",
            vec![],
            vec![
                api_status("a", "waiting", 0, None),
                api_status("b", "running", 0, None),
            ],
            false,
            PodPhase::Pending,
        ),
        (
            "all running",
            "Always",
            vec![],
            vec![
                api_status("a", "running", 0, None),
                api_status("b", "running", 0, None),
            ],
            false,
            PodPhase::Running,
        ),
        (
            "one running one done",
            "Never",
            vec![],
            vec![
                api_status("a", "running", 0, None),
                api_status("b", "terminated", 0, None),
            ],
            false,
            PodPhase::Running,
        ),
        (
            "always: all exited",
            "Always",
            vec![],
            vec![
                api_status("a", "terminated", 0, None),
                api_status("b", "terminated", 1, None),
            ],
            false,
            PodPhase::Running,
        ),
        (
            "on failure: all succeeded",
            "OnFailure",
            vec![],
            vec![
                api_status("a", "terminated", 0, None),
                api_status("b", "terminated", 0, None),
            ],
            false,
            PodPhase::Succeeded,
        ),
        (
            "on failure: one failed",
            "OnFailure",
            vec![],
            vec![
                api_status("a", "terminated", 0, None),
                api_status("b", "terminated", 1, None),
            ],
            false,
            PodPhase::Running,
        ),
        (
            "never: one failed",
            "Never",
            vec![],
            vec![
                api_status("a", "terminated", 0, None),
                api_status("b", "terminated", 1, None),
            ],
            false,
            PodPhase::Failed,
        ),
        (
            "never: all succeeded",
            "Never",
            vec![],
            vec![
                api_status("a", "terminated", 0, None),
                api_status("b", "terminated", 0, None),
            ],
            false,
            PodPhase::Succeeded,
        ),
        (
            "crash loop counts as stopped",
            "Always",
            vec![],
            vec![
                api_status("a", "waiting", 0, Some(1)),
                api_status("b", "running", 0, None),
            ],
            false,
            PodPhase::Running,
        ),
        (
            "terminal pod: exit codes decide",
            "Always",
            vec![],
            vec![
                api_status("a", "terminated", 0, None),
                api_status("b", "terminated", 143, None),
            ],
            true,
            PodPhase::Failed,
        ),
        (
            "terminal pod: all zero",
            "Always",
            vec![],
            vec![
                api_status("a", "terminated", 0, None),
                api_status("b", "terminated", 0, None),
            ],
            true,
            PodPhase::Succeeded,
        ),
        (
            "init running",
            "Always",
            vec![api_status("init", "running", 0, None)],
            vec![
                api_status("a", "waiting", 0, None),
                api_status("b", "waiting", 0, None),
            ],
            false,
            PodPhase::Pending,
        ),
        (
            "init failed under never",
            "Never",
            vec![api_status("init", "terminated", 1, None)],
            vec![
                api_status("a", "waiting", 0, None),
                api_status("b", "waiting", 0, None),
            ],
            false,
            PodPhase::Failed,
        ),
        (
            "init crash looping under never",
            "Never",
            vec![api_status("init", "waiting", 0, Some(2))],
            vec![],
            false,
            PodPhase::Failed,
        ),
        (
            "init failed under on failure",
            "OnFailure",
            vec![api_status("init", "terminated", 1, None)],
            vec![
                api_status("a", "waiting", 0, None),
                api_status("b", "waiting", 0, None),
            ],
            false,
            PodPhase::Pending,
        ),
    ];
    for (name, policy, init, apps, terminal, expected) in cases {
        let mut p = with_spec(pod(vec![container("a"), container("b")]), |s| {
            s.restart_policy = Some(policy.to_owned());
        });
        if !init.is_empty() {
            p = with_spec(p, |s| s.init_containers = Some(vec![container("init")]));
        }
        let statuses: Vec<ContainerStatus> = apps.into_iter().chain(init).collect();
        assert_eq!(
            pod_phase(&p, &statuses, terminal, false),
            expected,
            "{name}"
        );
    }
}

#[test]
fn static_pods_are_not_forced_terminal() {
    let mut p = pod(vec![container("a")]);
    p.metadata.annotations =
        Some([("kubernetes.io/config.source".to_owned(), "file".to_owned())].into());
    let statuses = [api_status("a", "terminated", 1, None)];
    assert_eq!(pod_phase(&p, &statuses, true, false), PodPhase::Running);
}

#[test]
fn new_pod_waits_in_container_creating_with_upstream_conditions() {
    let p = pod(vec![container("b"), container("a")]);
    let status = generate(&p, &ObservedPod::default());
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
    assert_eq!(status.start_time, Some(Time(at(NOW))));
    assert_eq!(status.host_ip.as_deref(), Some("192.168.1.10"));
    assert_eq!(status.pod_ip, None);
    let names: Vec<&str> = status
        .container_statuses
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["a", "b"], "container statuses are sorted by name");
    for s in status.container_statuses.iter().flatten() {
        assert_eq!(waiting_reason(s), Some("ContainerCreating"));
        assert_eq!(
            (s.ready, s.started, s.restart_count),
            (false, Some(false), 0)
        );
        assert_eq!(s.image, "busybox:1.36");
    }
    assert_eq!(cond(&status, "PodReadyToStartContainers").0, "False");
    assert_eq!(
        cond(&status, "Initialized"),
        ("True".to_owned(), None, None)
    );
    let not_ready = (
        "False".to_owned(),
        Some("ContainersNotReady".to_owned()),
        Some("containers with unready status: [b a]".to_owned()),
    );
    assert_eq!(cond(&status, "Ready"), not_ready);
    assert_eq!(cond(&status, "ContainersReady"), not_ready);
    assert_eq!(
        cond(&status, "PodScheduled"),
        ("True".to_owned(), None, None)
    );
    let order: Vec<&str> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(
        order,
        [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled"
        ]
    );
    assert!(
        status
            .conditions
            .iter()
            .flatten()
            .all(|c| c.last_transition_time == Some(Time(at(NOW))))
    );
}

#[test]
fn init_containers_make_everything_wait_in_pod_initializing() {
    let p = with_spec(pod(vec![container("app")]), |s| {
        s.init_containers = Some(vec![container("init-b"), container("init-a")]);
    });
    let status = generate(
        &p,
        &observed(vec![
            exited("init-b", "i1", 2, 0),
            running("init-a", "i2", 3),
        ]),
    );
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(
        waiting_reason(state_of(&status.container_statuses, "app")),
        Some("PodInitializing")
    );
    let inits: Vec<&str> = status
        .init_container_statuses
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(inits, ["init-b", "init-a"], "init statuses keep spec order");
    let done = state_of(&status.init_container_statuses, "init-b");
    assert!(
        done.ready,
        "a regular init container is ready once it exited with 0"
    );
    let terminated = done
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .unwrap();
    assert_eq!(terminated.reason.as_deref(), Some("Completed"));
    assert_eq!(
        cond(&status, "Initialized"),
        (
            "False".to_owned(),
            Some("ContainersNotInitialized".to_owned()),
            Some("containers with incomplete status: [init-a]".to_owned())
        )
    );
}

#[test]
fn running_pod_is_ready_when_probes_pass_or_are_absent() {
    let mut probed = container("probed");
    probed.readiness_probe = Some(Probe::default());
    let p = pod(vec![container("plain"), probed]);
    let mut o = observed(vec![running("plain", "c1", 2), running("probed", "c2", 3)]);

    let status = generate(&p, &o);
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let plain = state_of(&status.container_statuses, "plain");
    assert_eq!((plain.ready, plain.started), (true, Some(true)));
    assert_eq!(plain.container_id.as_deref(), Some("containerd://c1"));
    assert_eq!(plain.image, "docker.io/library/busybox:1.36");
    assert_eq!(plain.image_id, "docker.io/library/busybox@sha256:feed");
    let started_at = plain
        .state
        .as_ref()
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.clone());
    assert_eq!(started_at, Some(Time(at(NOW - 98))));
    assert!(
        !state_of(&status.container_statuses, "probed").ready,
        "probe has not run yet"
    );
    assert_eq!(
        cond(&status, "Ready"),
        (
            "False".to_owned(),
            Some("ContainersNotReady".to_owned()),
            Some("containers with unready status: [probed]".to_owned())
        )
    );
    assert_eq!(cond(&status, "PodReadyToStartContainers").0, "True");
    assert_eq!(status.pod_ip.as_deref(), Some("10.1.0.7"));

    o.probes.insert(
        "c2".to_owned(),
        ContainerProbeResults {
            readiness: Some(ProbeResult::Success),
            ..ContainerProbeResults::default()
        },
    );
    let status = generate(&p, &o);
    assert_eq!(cond(&status, "Ready"), ("True".to_owned(), None, None));
    assert_eq!(
        cond(&status, "ContainersReady"),
        ("True".to_owned(), None, None)
    );
}

#[test]
fn startup_probe_gates_started_and_ready() {
    let mut slow = container("slow");
    slow.startup_probe = Some(Probe::default());
    let p = pod(vec![slow]);
    let mut o = observed(vec![running("slow", "c1", 2)]);
    let s = generate(&p, &o);
    let slow = state_of(&s.container_statuses, "slow");
    assert_eq!((slow.started, slow.ready), (Some(false), false));
    o.probes.insert(
        "c1".to_owned(),
        ContainerProbeResults {
            startup: Some(ProbeResult::Success),
            ..ContainerProbeResults::default()
        },
    );
    let s = generate(&p, &o);
    let slow = state_of(&s.container_statuses, "slow");
    assert_eq!((slow.started, slow.ready), (Some(true), true));
}

#[test]
fn terminated_state_carries_exit_code_reason_and_times() {
    let p = with_spec(
        pod(vec![container("ok"), container("bad"), container("oom")]),
        |s| {
            s.restart_policy = Some("Never".to_owned());
        },
    );
    let mut oom = exited("oom", "c3", 4, 137);
    oom.reason = "OOMKilled".to_owned();
    let status = generate(
        &p,
        &observed(vec![
            exited("ok", "c1", 2, 0),
            exited("bad", "c2", 3, 2),
            oom,
        ]),
    );
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let terminated = |name: &str| {
        state_of(&status.container_statuses, name)
            .state
            .as_ref()
            .and_then(|s| s.terminated.clone())
            .unwrap()
    };
    let ok = terminated("ok");
    assert_eq!((ok.exit_code, ok.reason.as_deref()), (0, Some("Completed")));
    assert_eq!(ok.finished_at, Some(Time(at(NOW - 48))));
    assert_eq!(ok.container_id.as_deref(), Some("containerd://c1"));
    assert_eq!(terminated("bad").reason.as_deref(), Some("Error"));
    assert_eq!(terminated("oom").reason.as_deref(), Some("OOMKilled"));
    assert_eq!(
        cond(&status, "ContainersReady"),
        ("False".to_owned(), Some("PodFailed".to_owned()), None)
    );
    assert_eq!(cond(&status, "Ready").1.as_deref(), Some("PodFailed"));
}

#[test]
fn succeeded_pod_reports_pod_completed() {
    let p = with_spec(pod(vec![container("a")]), |s| {
        s.restart_policy = Some("OnFailure".to_owned())
    });
    let status = generate(&p, &observed(vec![exited("a", "c1", 2, 0)]));
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    assert_eq!(
        cond(&status, "ContainersReady"),
        ("False".to_owned(), Some("PodCompleted".to_owned()), None)
    );
    assert_eq!(
        cond(&status, "Initialized"),
        ("True".to_owned(), Some("PodCompleted".to_owned()), None)
    );
}

#[test]
fn crash_loop_back_off_shows_as_waiting_with_the_last_termination() {
    let p = pod(vec![container("a")]);
    let mut first = exited("a", "c1", 2, 1);
    first.restart_count = 0;
    let mut second = exited("a", "c2", 10, 1);
    second.restart_count = 1;
    let mut reasons = WaitingReasons::default();
    reasons.record(
        "a",
        WaitingReason::crash_loop_back_off(&p, "a", Duration::from_secs(20)),
    );
    let status = generate_with(&p, &observed(vec![first, second]), &reasons, None);
    let a = state_of(&status.container_statuses, "a");
    let waiting = a.state.as_ref().and_then(|s| s.waiting.clone()).unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
    assert_eq!(
        waiting.message.as_deref(),
        Some("back-off 20s restarting failed container=a pod=web_default(uid-1)")
    );
    let last = a
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .unwrap();
    assert_eq!(
        (last.exit_code, last.container_id.as_deref()),
        (1, Some("containerd://c2"))
    );
    assert_eq!(a.restart_count, 1);
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(
        cond(&status, "Ready").2.as_deref(),
        Some("containers with unready status: [a]")
    );

    reasons.clear("a");
    let status = generate_with(
        &p,
        &observed(vec![exited("a", "c2", 10, 1)]),
        &reasons,
        None,
    );
    assert!(
        state_of(&status.container_statuses, "a")
            .state
            .as_ref()
            .unwrap()
            .terminated
            .is_some()
    );
}

#[test]
fn last_state_comes_from_the_previous_instance() {
    let p = pod(vec![container("a")]);
    let mut now_running = running("a", "c2", 10);
    now_running.restart_count = 1;
    let status = generate(&p, &observed(vec![exited("a", "c1", 2, 137), now_running]));
    let a = state_of(&status.container_statuses, "a");
    assert!(a.state.as_ref().unwrap().running.is_some());
    assert_eq!(
        a.last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code),
        Some(137)
    );
    assert_eq!(a.restart_count, 1);
}

#[test]
fn start_failures_show_their_upstream_reasons() {
    let p = pod(vec![container("a")]);
    let cases = [
        WaitingReason::from_image_error(&crate::pod::image::ImageError::PullBackOff {
            image: "busybox:1.36".to_owned(),
        }),
        WaitingReason::from_config_error(&ContainerConfigError::Env(
            crate::pod::env::EnvError::ConfigMapNotFound {
                name: "x".to_owned(),
            },
        )),
        WaitingReason::create_container_error("rpc error"),
        WaitingReason::run_container_error("exec format error"),
    ];
    let expected = [
        (
            "ImagePullBackOff",
            "Back-off pulling image \"busybox:1.36\"",
        ),
        ("CreateContainerConfigError", "configmap \"x\" not found"),
        ("CreateContainerError", "rpc error"),
        ("RunContainerError", "exec format error"),
    ];
    for (reason, (name, message)) in cases.into_iter().zip(expected) {
        let mut reasons = WaitingReasons::default();
        reasons.record("a", reason);
        let status = generate_with(&p, &ObservedPod::default(), &reasons, None);
        let waiting = state_of(&status.container_statuses, "a")
            .state
            .as_ref()
            .and_then(|s| s.waiting.clone())
            .unwrap();
        assert_eq!(
            (waiting.reason.as_deref(), waiting.message.as_deref()),
            (Some(name), Some(message))
        );
    }
}

#[test]
fn vanished_running_container_counts_as_a_restart_with_unknown_status() {
    let p = pod(vec![container("a")]);
    let previous = generate(&p, &observed(vec![running("a", "c1", 2)]));
    let status = generate_with(
        &p,
        &observed(vec![]),
        &WaitingReasons::default(),
        Some(&previous),
    );
    let a = state_of(&status.container_statuses, "a");
    assert_eq!(waiting_reason(a), Some("ContainerCreating"));
    let last = a
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .unwrap();
    assert_eq!(
        (last.exit_code, last.reason.as_deref()),
        (137, Some("ContainerStatusUnknown"))
    );
    assert_eq!(a.restart_count, 1);
    assert_eq!(
        status.phase.as_deref(),
        Some("Running"),
        "not back to Pending"
    );
}

#[test]
fn transition_times_move_only_when_a_condition_flips() {
    let p = pod(vec![container("a")]);
    let o = observed(vec![running("a", "c1", 2)]);
    let first = generate(&p, &o);
    let later = generate_pod_status(
        &p,
        &node(),
        &StatusInputs {
            now: at(NOW + 60),
            observed: &o,
            waiting_reasons: &WaitingReasons::default(),
            previous: Some(&first),
        },
    );
    assert_eq!(
        condition_of(&later, "Ready").last_transition_time,
        Some(Time(at(NOW)))
    );
    assert_eq!(later.start_time, first.start_time);
    assert!(!status_changed(&first, &later));

    let stopped = observed(vec![exited("a", "c1", 2, 1)]);
    let flipped = generate_pod_status(
        &p,
        &node(),
        &StatusInputs {
            now: at(NOW + 60),
            observed: &stopped,
            waiting_reasons: &WaitingReasons::default(),
            previous: Some(&first),
        },
    );
    assert_eq!(
        condition_of(&flipped, "Ready").last_transition_time,
        Some(Time(at(NOW + 60)))
    );
    assert!(status_changed(&first, &flipped));
}

#[test]
fn status_changed_ignores_condition_times_and_foreign_conditions_only() {
    let p = pod(vec![container("a")]);
    let base = generate(&p, &observed(vec![running("a", "c1", 2)]));

    let mut retimed = base.clone();
    for c in retimed.conditions.iter_mut().flatten() {
        c.last_transition_time = Some(Time(at(NOW + 999)));
        c.last_probe_time = Some(Time(at(NOW + 999)));
    }
    retimed
        .conditions
        .get_or_insert_with(Vec::new)
        .push(PodCondition {
            type_: "example.com/Custom".to_owned(),
            status: "True".to_owned(),
            ..PodCondition::default()
        });
    assert!(!status_changed(&base, &retimed));

    let mut sub_second = base.clone();
    if let Some(t) = sub_second.start_time.as_mut() {
        t.0 = Timestamp::from_nanosecond(t.0.as_nanosecond() + 500_000_000).unwrap();
    }
    assert!(
        !status_changed(&base, &sub_second),
        "the API keeps seconds only"
    );

    let mut new_message = base.clone();
    for c in new_message.conditions.iter_mut().flatten() {
        if c.type_ == "Ready" {
            c.message = Some("different".to_owned());
        }
    }
    assert!(status_changed(&base, &new_message));

    let mut new_phase = base.clone();
    new_phase.phase = Some("Failed".to_owned());
    assert!(status_changed(&base, &new_phase));

    let mut restarted = base.clone();
    if let Some(s) = restarted
        .container_statuses
        .as_mut()
        .and_then(|s| s.first_mut())
    {
        s.restart_count += 1;
    }
    assert!(status_changed(&base, &restarted));
}

#[test]
fn terminal_phase_is_sticky() {
    let p = with_spec(pod(vec![container("a")]), |s| {
        s.restart_policy = Some("OnFailure".to_owned())
    });
    let previous = generate(&p, &observed(vec![exited("a", "c1", 2, 0)]));
    assert_eq!(previous.phase.as_deref(), Some("Succeeded"));
    // Even if the runtime forgot the container, the pod stays Succeeded.
    let status = generate_with(
        &p,
        &ObservedPod::default(),
        &WaitingReasons::default(),
        Some(&previous),
    );
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
}

#[test]
fn active_deadline_fails_the_pod() {
    let p = with_spec(pod(vec![container("a")]), |s| {
        s.active_deadline_seconds = Some(30)
    });
    let o = observed(vec![running("a", "c1", 2)]);
    let first = generate(&p, &o);
    let later = |now: i64| {
        generate_pod_status(
            &p,
            &node(),
            &StatusInputs {
                now: at(now),
                observed: &o,
                waiting_reasons: &WaitingReasons::default(),
                previous: Some(&first),
            },
        )
    };
    assert_eq!(later(NOW + 29).phase.as_deref(), Some("Running"));
    let expired = later(NOW + 30);
    assert_eq!(expired.phase.as_deref(), Some("Failed"));
    assert_eq!(expired.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(
        expired.message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
}

#[test]
fn deleted_pod_ends_with_the_exit_codes_of_its_containers() {
    let mut p = pod(vec![container("a"), container("b")]);
    p.metadata.deletion_timestamp = Some(Time(at(NOW)));
    let status = generate(
        &p,
        &observed(vec![exited("a", "c1", 2, 0), exited("b", "c2", 3, 143)]),
    );
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let status = generate(
        &p,
        &observed(vec![exited("a", "c1", 2, 0), exited("b", "c2", 3, 0)]),
    );
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
}

#[test]
fn terminated_pod_status_never_reads_as_success_without_evidence() {
    let p = pod(vec![container("a"), container("b")]);
    let status = generate(
        &p,
        &observed(vec![exited("a", "c1", 2, 0), running("b", "c2", 3)]),
    );
    let last = terminated_pod_status(&p, &status);
    assert_eq!(last.phase.as_deref(), Some("Failed"));
    let b = state_of(&last.container_statuses, "b")
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .unwrap();
    assert_eq!(
        (b.exit_code, b.reason.as_deref()),
        (137, Some("ContainerStatusUnknown"))
    );
    let a = state_of(&last.container_statuses, "a")
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .unwrap();
    assert_eq!(a.exit_code, 0, "known outcomes are kept");

    let mut succeeded = status.clone();
    succeeded.phase = Some("Succeeded".to_owned());
    assert_eq!(
        terminated_pod_status(&p, &succeeded).phase.as_deref(),
        Some("Succeeded")
    );
}

#[test]
fn readiness_gates_hold_ready_until_their_condition_is_true() {
    let mut p = with_spec(pod(vec![container("a")]), |s| {
        s.readiness_gates = Some(vec![PodReadinessGate {
            condition_type: "example.com/lb".to_owned(),
        }]);
    });
    let o = observed(vec![running("a", "c1", 2)]);
    assert_eq!(
        cond(&generate(&p, &o), "Ready"),
        (
            "False".to_owned(),
            Some("ReadinessGatesNotReady".to_owned()),
            Some(
                "corresponding condition of pod readiness gate \"example.com/lb\" does not exist."
                    .to_owned()
            )
        )
    );
    p.status = Some(PodStatus {
        conditions: Some(vec![PodCondition {
            type_: "example.com/lb".to_owned(),
            status: "True".to_owned(),
            ..PodCondition::default()
        }]),
        ..PodStatus::default()
    });
    let status = generate(&p, &o);
    assert_eq!(cond(&status, "Ready").0, "True");
    assert_eq!(
        cond(&status, "example.com/lb").0,
        "True",
        "foreign conditions are kept"
    );
}

#[test]
fn host_network_pod_reports_node_ips_as_pod_ips() {
    let p = with_spec(pod(vec![container("a")]), |s| s.host_network = Some(true));
    let mut host_sandbox = sandbox(true);
    host_sandbox.ips.clear();
    host_sandbox.network = NetworkMode::Node;
    let o = ObservedPod {
        sandboxes: vec![host_sandbox],
        containers: vec![running("a", "c1", 2)],
        probes: BTreeMap::new(),
    };
    let status = generate(&p, &o);
    assert_eq!(status.pod_ip.as_deref(), Some("192.168.1.10"));
    assert_eq!(
        status.host_ips,
        Some(vec![HostIP {
            ip: "192.168.1.10".to_owned()
        }])
    );
}

#[test]
fn volume_mount_statuses_mirror_the_spec() {
    let mut c = container("a");
    c.volume_mounts = Some(vec![
        VolumeMount {
            name: "data".to_owned(),
            mount_path: "/data".to_owned(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "cfg".to_owned(),
            mount_path: "/cfg".to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ]);
    let status = generate(&pod(vec![c]), &observed(vec![running("a", "c1", 2)]));
    let mounts = state_of(&status.container_statuses, "a")
        .volume_mounts
        .clone()
        .unwrap();
    assert_eq!(
        mounts[0],
        VolumeMountStatus {
            name: "data".to_owned(),
            mount_path: "/data".to_owned(),
            read_only: None,
            recursive_read_only: None
        }
    );
    assert_eq!(mounts[1].recursive_read_only.as_deref(), Some("Disabled"));
}

#[test]
fn generation_is_observed_on_status_and_conditions() {
    let mut p = pod(vec![container("a")]);
    p.metadata.generation = Some(3);
    let status = generate(&p, &ObservedPod::default());
    assert_eq!(status.observed_generation, Some(3));
    assert!(
        status
            .conditions
            .iter()
            .flatten()
            .all(|c| c.observed_generation == Some(3))
    );
}

#[test]
fn failed_init_container_under_never_fails_the_pod() {
    let p = with_spec(pod(vec![container("app")]), |s| {
        s.restart_policy = Some("Never".to_owned());
        s.init_containers = Some(vec![container("init")]);
    });
    let status = generate(&p, &observed(vec![exited("init", "i1", 2, 1)]));
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(
        waiting_reason(state_of(&status.container_statuses, "app")),
        Some("PodInitializing")
    );
    assert_eq!(
        cond(&status, "Initialized"),
        (
            "False".to_owned(),
            Some("ContainersNotInitialized".to_owned()),
            Some("containers with incomplete status: [init]".to_owned())
        )
    );
    assert_eq!(cond(&status, "Ready").1.as_deref(), Some("PodFailed"));
}

#[test]
fn a_status_read_back_from_the_api_compares_unchanged() {
    let p = pod(vec![container("a")]);
    let status = generate(&p, &observed(vec![running("a", "c1", 2)]));
    assert_eq!(
        status.init_container_statuses, None,
        "empty lists are omitted"
    );
    let json = serde_json::to_string(&status).unwrap();
    let read_back: PodStatus = serde_json::from_str(&json).unwrap();
    assert!(!status_changed(&read_back, &status));
}
