//! Container spec → CRI `ContainerConfig`.
//!
//! Owns upstream's `generateContainerConfig` and the pieces it gathers: metadata and attempt,
//! image, command/args with `$(VAR)` expansion, environment (through `env`), working dir,
//! labels/annotations, log path `<name>/<restartCount>.log`, mounts (volumes with `subPath` /
//! `subPathExpr`, the kubelet-managed `/etc/hosts`, the termination message file), Linux
//! resources (through `resources`) and the effective security context
//! (`determineEffectiveSecurityContext`, `verifyRunAsNonRoot`). Every error is a
//! `CreateContainerConfigError` with upstream's message. Never pulls images, creates files or
//! directories, or calls the runtime; host paths come in resolved.

use std::collections::BTreeMap;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, Pod, SELinuxOptions, SeccompProfile, SecurityContext,
};

use super::env::{EnvError, ObjectResolver, make_environment_variables};
use super::expansion;
use super::labels::{container_annotations, container_labels};
use super::quantity::QuantityError;
use super::resources::linux_container_resources;
use super::sandbox::namespace_options;
use super::{NodeContext, format_pod};

/// Upstream `defaultMaskedPaths` (kept in sync with moby).
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Upstream `defaultReadonlyPaths`.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
/// Where the kubelet-managed hosts file is mounted.
pub const ETC_HOSTS_PATH: &str = "/etc/hosts";

/// A pod volume as the volume manager mounted it on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedVolume {
    /// Host path of the mounted volume.
    pub host_path: String,
    /// The volume itself is read-only (upstream `Mounter.GetAttributes().ReadOnly`), whatever
    /// the volume mount says.
    pub read_only: bool,
    /// The runtime should relabel it for SELinux.
    pub selinux_relabel: bool,
}

/// The image's configured user, from the runtime's image status (upstream `getImageUser`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUser {
    /// Numeric uid, when the image's user is numeric.
    pub uid: Option<i64>,
    /// User name, when the image's user is not numeric.
    pub username: String,
}

/// Everything a container config needs besides the pod spec and the node.
#[derive(Debug, Clone, Copy)]
pub struct ContainerInputs<'a> {
    /// Restart count for this instance: the attempt, the annotation and the log file number.
    pub restart_count: u32,
    /// The image to run as the runtime names it (the pulled or inspected image reference).
    pub image_ref: &'a str,
    /// The image's user.
    pub image_user: &'a ImageUser,
    /// The pod's IPs (node IPs for host-network pods); downward API and `/etc/hosts`.
    pub pod_ips: &'a [String],
    /// Mounted volumes by volume name.
    pub volumes: &'a BTreeMap<String, ResolvedVolume>,
    /// Host path of the kubelet-managed hosts file, when the executor wrote one
    /// ([`super::sandbox::hosts_file_content`]); mounted at `/etc/hosts` when the pod has IPs.
    pub etc_hosts_host_path: Option<&'a str>,
    /// Host path of the empty file the executor created for this instance's termination
    /// message (upstream `<podDir>/containers/<name>/<random>`).
    pub termination_message_host_path: Option<&'a str>,
}

/// A generated container config, plus the host directories the executor must make sure
/// exist (and resolve safely) before creating the container.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedContainer {
    /// The CRI config.
    pub config: cri::ContainerConfig,
    /// Host paths of `subPath` mounts (upstream creates them and bind-mounts them safely).
    pub sub_paths: Vec<String>,
}

/// Why a container's config cannot be built. The waiting reason is
/// [`CREATE_CONTAINER_CONFIG_ERROR`] and the message this error's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerConfigError {
    /// The environment cannot be built.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// A resource quantity is malformed.
    #[error(transparent)]
    Quantity(#[from] QuantityError),
    /// A volume mount names a volume that is not mounted.
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    VolumeNotFound {
        /// Volume name.
        volume: String,
        /// Container name.
        container: String,
    },
    /// `subPath` is absolute.
    #[error("error SubPath `{sub_path}` must not be an absolute path")]
    AbsoluteSubPath {
        /// The sub path.
        sub_path: String,
    },
    /// `subPath` contains `..`.
    #[error("unable to provision SubPath `{sub_path}`: must not contain '..'")]
    SubPathBacksteps {
        /// The sub path.
        sub_path: String,
    },
    /// `subPathExpr` references variables that are not set.
    #[error("missing value for {names}")]
    SubPathExprMissing {
        /// The missing names, comma separated.
        names: String,
    },
    /// Unknown `mountPropagation`.
    #[error("invalid MountPropagation mode: {mode:?}")]
    MountPropagation {
        /// The mode.
        mode: String,
    },
    /// `seccompProfile.type: Localhost` without `localhostProfile`.
    #[error("localhostProfile must be set if seccompProfile type is Localhost.")]
    SeccompLocalhostProfile,
    /// `runAsNonRoot` with an explicit `runAsUser: 0`.
    #[error("container's runAsUser breaks non-root policy (pod: {pod:?}, container: {container})")]
    RunAsUserRoot {
        /// The pod (`name_namespace(uid)`).
        pod: String,
        /// Container name.
        container: String,
    },
    /// `runAsNonRoot` and the image runs as uid 0.
    #[error(
        "container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {container})"
    )]
    ImageRunsAsRoot {
        /// The pod.
        pod: String,
        /// Container name.
        container: String,
    },
    /// `runAsNonRoot` and the image names a non-numeric user.
    #[error(
        "container has runAsNonRoot and image has non-numeric user ({username}), cannot verify user is non-root (pod: {pod:?}, container: {container})"
    )]
    ImageNonNumericUser {
        /// The image's user name.
        username: String,
        /// The pod.
        pod: String,
        /// Container name.
        container: String,
    },
}

/// Upstream `kubecontainer.ErrCreateContainerConfig`: the waiting reason for every
/// [`ContainerConfigError`].
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";

/// Upstream `generateContainerConfig` (with `GenerateRunContainerOptions`,
/// `generateLinuxContainerConfig` and the kuberuntime `makeMounts`).
///
/// # Errors
/// [`ContainerConfigError`], reported as `CreateContainerConfigError` with its text.
pub fn generate_container_config(
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
    inputs: &ContainerInputs<'_>,
    resolver: &dyn ObjectResolver,
) -> Result<GeneratedContainer, ContainerConfigError> {
    verify_run_as_non_root(pod, container, inputs.image_user)?;
    let envs = make_environment_variables(pod, container, inputs.pod_ips, node, resolver)?;
    let lookup = |name: &str| {
        envs.iter()
            .rev()
            .find(|kv| kv.key == name)
            .map(|kv| kv.value.clone())
    };
    let expand_all = |values: Option<&Vec<String>>| -> Vec<String> {
        values
            .into_iter()
            .flatten()
            .map(|value| expansion::expand(value, lookup))
            .collect()
    };
    let command = expand_all(container.command.as_ref());
    let args = expand_all(container.args.as_ref());
    let (mounts, sub_paths) = make_mounts(container, node, inputs, &envs)?;
    let restart_count = inputs.restart_count;
    let config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: container.name.clone(),
            attempt: restart_count,
        }),
        image: Some(cri::ImageSpec {
            image: inputs.image_ref.to_owned(),
            user_specified_image: container.image.clone().unwrap_or_default(),
            ..cri::ImageSpec::default()
        }),
        command,
        args,
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs,
        mounts,
        labels: container_labels(pod, container),
        annotations: container_annotations(pod, container, restart_count),
        log_path: container_log_path(&container.name, restart_count),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(linux_container_resources(pod, container, node)?),
            security_context: Some(linux_security_context(
                pod,
                container,
                node,
                inputs.image_user,
            )?),
        }),
        ..cri::ContainerConfig::default()
    };
    Ok(GeneratedContainer { config, sub_paths })
}

/// Upstream `buildContainerLogsPath`: `<container>/<restartCount>.log`, relative to the
/// sandbox's log directory.
#[must_use]
pub fn container_log_path(container_name: &str, restart_count: u32) -> String {
    format!("{container_name}/{restart_count}.log")
}

/// Upstream `calcRestartCountByLogDir` over a container log directory's file names: one more
/// than the highest `<n>.log` (or rotated `<n>.log.*`), 0 when there is none. Used when the
/// runtime lost the container's history (after a reboot) so logs are not overwritten.
#[must_use]
pub fn restart_count_from_log_files<'a>(file_names: impl IntoIterator<Item = &'a str>) -> u32 {
    file_names
        .into_iter()
        .filter_map(|name| {
            let digits_end = name
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(name.len());
            let (digits, rest) = name.split_at(digits_end);
            let is_log = rest == ".log" || rest.starts_with(".log.");
            (is_log && !digits.is_empty())
                .then(|| digits.parse::<u32>().ok())
                .flatten()
        })
        .map(|count| count.saturating_add(1))
        .max()
        .unwrap_or(0)
}

/// Volume mounts, then `/etc/hosts`, then the termination message file (upstream order).
fn make_mounts(
    container: &Container,
    node: &NodeContext,
    inputs: &ContainerInputs<'_>,
    envs: &[cri::KeyValue],
) -> Result<(Vec<cri::Mount>, Vec<String>), ContainerConfigError> {
    let mut mounts = Vec::new();
    let mut sub_paths = Vec::new();
    let mut mount_hosts_file = inputs.etc_hosts_host_path.is_some() && !inputs.pod_ips.is_empty();
    for mount in container.volume_mounts.iter().flatten() {
        if mount.mount_path == ETC_HOSTS_PATH {
            mount_hosts_file = false;
        }
        let volume = inputs.volumes.get(&mount.name).ok_or_else(|| {
            ContainerConfigError::VolumeNotFound {
                volume: mount.name.clone(),
                container: container.name.clone(),
            }
        })?;
        let mut sub_path = mount.sub_path.clone().unwrap_or_default();
        if let Some(expression) = mount.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
            sub_path = expand_sub_path_expr(expression, envs)?;
        }
        let mut host_path = volume.host_path.clone();
        if !sub_path.is_empty() {
            if sub_path.starts_with('/') {
                return Err(ContainerConfigError::AbsoluteSubPath { sub_path });
            }
            if sub_path.split('/').any(|part| part == "..") {
                return Err(ContainerConfigError::SubPathBacksteps { sub_path });
            }
            host_path = format!(
                "{}/{}",
                host_path.trim_end_matches('/'),
                sub_path.trim_end_matches('/')
            );
            sub_paths.push(host_path.clone());
        }
        let container_path = if mount.mount_path.starts_with('/') {
            mount.mount_path.clone()
        } else {
            format!("/{}", mount.mount_path)
        };
        mounts.push(cri::Mount {
            container_path,
            host_path,
            readonly: mount.read_only.unwrap_or(false) || volume.read_only,
            selinux_relabel: volume.selinux_relabel && node.selinux_enabled,
            propagation: mount_propagation(mount.mount_propagation.as_deref())? as i32,
            ..cri::Mount::default()
        });
    }
    if mount_hosts_file && let Some(hosts) = inputs.etc_hosts_host_path {
        mounts.push(cri::Mount {
            container_path: ETC_HOSTS_PATH.to_owned(),
            host_path: hosts.to_owned(),
            selinux_relabel: node.selinux_enabled,
            ..cri::Mount::default()
        });
    }
    if let Some(path) = container
        .termination_message_path
        .as_deref()
        .filter(|p| !p.is_empty())
        && let Some(host_path) = inputs.termination_message_host_path
    {
        mounts.push(cri::Mount {
            container_path: path.to_owned(),
            host_path: host_path.to_owned(),
            selinux_relabel: node.selinux_enabled,
            ..cri::Mount::default()
        });
    }
    Ok((mounts, sub_paths))
}

/// Upstream `ExpandContainerVolumeMounts`: every referenced variable must be set and non-empty.
fn expand_sub_path_expr(
    expression: &str,
    envs: &[cri::KeyValue],
) -> Result<String, ContainerConfigError> {
    let mut missing = std::collections::BTreeSet::new();
    let expanded = expansion::expand_with(expression, |name| {
        let value = envs
            .iter()
            .rev()
            .find(|kv| kv.key == name)
            .map(|kv| kv.value.clone())
            .unwrap_or_default();
        if value.is_empty() {
            missing.insert(name.to_owned());
        }
        value
    });
    if !missing.is_empty() {
        return Err(ContainerConfigError::SubPathExprMissing {
            names: missing.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    Ok(expanded)
}

/// Upstream `translateMountPropagation`.
fn mount_propagation(mode: Option<&str>) -> Result<cri::MountPropagation, ContainerConfigError> {
    match mode {
        None | Some("None") => Ok(cri::MountPropagation::PropagationPrivate),
        Some("HostToContainer") => Ok(cri::MountPropagation::PropagationHostToContainer),
        Some("Bidirectional") => Ok(cri::MountPropagation::PropagationBidirectional),
        Some(other) => Err(ContainerConfigError::MountPropagation {
            mode: other.to_owned(),
        }),
    }
}

/// Upstream `DetermineEffectiveSecurityContext`: the pod's security context overlaid with the
/// container's.
#[must_use]
pub fn effective_security_context(pod: &Pod, container: &Container) -> SecurityContext {
    let pod_sc = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.security_context.as_ref());
    let mut effective = SecurityContext {
        se_linux_options: pod_sc.and_then(|sc| sc.se_linux_options.clone()),
        run_as_user: pod_sc.and_then(|sc| sc.run_as_user),
        run_as_group: pod_sc.and_then(|sc| sc.run_as_group),
        run_as_non_root: pod_sc.and_then(|sc| sc.run_as_non_root),
        seccomp_profile: pod_sc.and_then(|sc| sc.seccomp_profile.clone()),
        app_armor_profile: pod_sc.and_then(|sc| sc.app_armor_profile.clone()),
        windows_options: pod_sc.and_then(|sc| sc.windows_options.clone()),
        ..SecurityContext::default()
    };
    let Some(sc) = container.security_context.as_ref() else {
        return effective;
    };
    fn overlay<T: Clone>(target: &mut Option<T>, value: Option<&T>) {
        if let Some(value) = value {
            *target = Some(value.clone());
        }
    }
    overlay(
        &mut effective.se_linux_options,
        sc.se_linux_options.as_ref(),
    );
    overlay(&mut effective.windows_options, sc.windows_options.as_ref());
    overlay(&mut effective.capabilities, sc.capabilities.as_ref());
    overlay(&mut effective.privileged, sc.privileged.as_ref());
    overlay(&mut effective.run_as_user, sc.run_as_user.as_ref());
    overlay(&mut effective.run_as_group, sc.run_as_group.as_ref());
    overlay(&mut effective.run_as_non_root, sc.run_as_non_root.as_ref());
    overlay(
        &mut effective.read_only_root_filesystem,
        sc.read_only_root_filesystem.as_ref(),
    );
    overlay(
        &mut effective.allow_privilege_escalation,
        sc.allow_privilege_escalation.as_ref(),
    );
    overlay(&mut effective.proc_mount, sc.proc_mount.as_ref());
    overlay(&mut effective.seccomp_profile, sc.seccomp_profile.as_ref());
    overlay(
        &mut effective.app_armor_profile,
        sc.app_armor_profile.as_ref(),
    );
    effective
}

/// Upstream `verifyRunAsNonRoot`: with `runAsNonRoot: true` the container must not run as
/// uid 0, by its `runAsUser` or by its image's user.
///
/// # Errors
/// The upstream message when the policy is broken or cannot be verified.
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    image_user: &ImageUser,
) -> Result<(), ContainerConfigError> {
    let effective = effective_security_context(pod, container);
    if effective.run_as_non_root != Some(true) {
        return Ok(());
    }
    if let Some(uid) = effective.run_as_user {
        if uid == 0 {
            return Err(ContainerConfigError::RunAsUserRoot {
                pod: format_pod(pod),
                container: container.name.clone(),
            });
        }
        return Ok(());
    }
    match image_user.uid {
        Some(0) => Err(ContainerConfigError::ImageRunsAsRoot {
            pod: format_pod(pod),
            container: container.name.clone(),
        }),
        None if !image_user.username.is_empty() => Err(ContainerConfigError::ImageNonNumericUser {
            username: image_user.username.clone(),
            pod: format_pod(pod),
            container: container.name.clone(),
        }),
        _ => Ok(()),
    }
}

/// Upstream `determineEffectiveSecurityContext` + `convertToRuntimeSecurityContext`:
/// capabilities as written in the spec (CRI takes names without `CAP_`; the runtime adds the
/// prefix), privileged, read-only rootfs, user/group (the image's user when the spec sets
/// none), namespaces, supplemental groups, `no_new_privs` from `allowPrivilegeEscalation:
/// false`, masked/read-only `/proc` paths and the seccomp profile.
///
/// # Errors
/// [`ContainerConfigError::SeccompLocalhostProfile`].
pub fn linux_security_context(
    pod: &Pod,
    container: &Container,
    node: &NodeContext,
    image_user: &ImageUser,
) -> Result<cri::LinuxContainerSecurityContext, ContainerConfigError> {
    let effective = effective_security_context(pod, container);
    let pod_sc = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.security_context.as_ref());
    let unmasked = effective.proc_mount.as_deref() == Some("Unmasked");
    let paths = |defaults: &[&str]| -> Vec<String> {
        if unmasked {
            Vec::new()
        } else {
            defaults.iter().map(|p| (*p).to_owned()).collect()
        }
    };
    let mut context = cri::LinuxContainerSecurityContext {
        capabilities: effective.capabilities.as_ref().map(runtime_capabilities),
        privileged: effective.privileged.unwrap_or(false),
        namespace_options: Some(namespace_options(pod)),
        selinux_options: effective.se_linux_options.as_ref().map(runtime_selinux),
        run_as_user: effective.run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: effective
            .run_as_group
            .map(|value| cri::Int64Value { value }),
        readonly_rootfs: effective.read_only_root_filesystem.unwrap_or(false),
        no_new_privs: effective.allow_privilege_escalation == Some(false),
        masked_paths: paths(&DEFAULT_MASKED_PATHS),
        readonly_paths: paths(&DEFAULT_READONLY_PATHS),
        seccomp: Some(seccomp_profile(
            container
                .security_context
                .as_ref()
                .and_then(|sc| sc.seccomp_profile.as_ref())
                .or(pod_sc.and_then(|sc| sc.seccomp_profile.as_ref())),
            node,
        )?),
        ..cri::LinuxContainerSecurityContext::default()
    };
    if context.run_as_user.is_none() {
        context.run_as_user = image_user.uid.map(|value| cri::Int64Value { value });
        context.run_as_username = image_user.username.clone();
    }
    if let Some(sc) = pod_sc {
        context.supplemental_groups = sc
            .fs_group
            .into_iter()
            .chain(sc.supplemental_groups.iter().flatten().copied())
            .collect();
        if sc.supplemental_groups_policy.as_deref() == Some("Strict") {
            context.supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
        }
    }
    Ok(context)
}

fn runtime_capabilities(capabilities: &Capabilities) -> cri::Capability {
    cri::Capability {
        add_capabilities: capabilities.add.clone().unwrap_or_default(),
        drop_capabilities: capabilities.drop.clone().unwrap_or_default(),
        add_ambient_capabilities: Vec::new(),
    }
}

fn runtime_selinux(options: &SELinuxOptions) -> cri::SeLinuxOption {
    cri::SeLinuxOption {
        user: options.user.clone().unwrap_or_default(),
        role: options.role.clone().unwrap_or_default(),
        r#type: options.type_.clone().unwrap_or_default(),
        level: options.level.clone().unwrap_or_default(),
    }
}

/// Upstream `getSeccompProfile`/`fieldSeccompProfile`: the container's profile, else the
/// pod's, else `RuntimeDefault` with `--seccomp-default` and `Unconfined` without.
fn seccomp_profile(
    profile: Option<&SeccompProfile>,
    node: &NodeContext,
) -> Result<cri::SecurityProfile, ContainerConfigError> {
    use cri::security_profile::ProfileType;
    let of = |profile_type: ProfileType| cri::SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: String::new(),
    };
    let Some(profile) = profile else {
        return Ok(of(if node.seccomp_default {
            ProfileType::RuntimeDefault
        } else {
            ProfileType::Unconfined
        }));
    };
    match profile.type_.as_str() {
        "RuntimeDefault" => Ok(of(ProfileType::RuntimeDefault)),
        "Localhost" => {
            let name = profile
                .localhost_profile
                .as_deref()
                .filter(|name| !name.is_empty())
                .ok_or(ContainerConfigError::SeccompLocalhostProfile)?;
            Ok(cri::SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: format!(
                    "{}/seccomp/{name}",
                    node.root_directory.trim_end_matches('/')
                ),
            })
        }
        _ => Ok(of(ProfileType::Unconfined)),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        EnvVar, ObjectFieldSelector, PodSecurityContext, ResourceRequirements, VolumeMount,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;
    use crate::pod::env::ObjectStore;
    use crate::pod::testing::{container, pod};

    struct Fixture {
        volumes: BTreeMap<String, ResolvedVolume>,
        image_user: ImageUser,
        pod_ips: Vec<String>,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                volumes: BTreeMap::from([
                    (
                        "data".to_owned(),
                        ResolvedVolume {
                            host_path:
                                "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~empty-dir/data"
                                    .to_owned(),
                            ..ResolvedVolume::default()
                        },
                    ),
                    (
                        "config".to_owned(),
                        ResolvedVolume {
                            host_path:
                                "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~configmap/config"
                                    .to_owned(),
                            read_only: true,
                            ..ResolvedVolume::default()
                        },
                    ),
                ]),
                image_user: ImageUser::default(),
                pod_ips: vec!["10.1.0.7".to_owned()],
            }
        }

        fn inputs(&self, restart_count: u32) -> ContainerInputs<'_> {
            ContainerInputs {
                restart_count,
                image_ref: "sha256:feed",
                image_user: &self.image_user,
                pod_ips: &self.pod_ips,
                volumes: &self.volumes,
                etc_hosts_host_path: Some("/var/lib/kubelet/pods/uid-1/etc-hosts"),
                termination_message_host_path: Some(
                    "/var/lib/kubelet/pods/uid-1/containers/app/abcd",
                ),
            }
        }

        fn generate(
            &self,
            p: &Pod,
            c: &Container,
            restart_count: u32,
        ) -> Result<GeneratedContainer, ContainerConfigError> {
            let node = NodeContext {
                memory_capacity_bytes: 4 << 30,
                ..NodeContext::default()
            };
            generate_container_config(
                p,
                c,
                &node,
                &self.inputs(restart_count),
                &ObjectStore::default(),
            )
        }
    }

    fn env(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            value_from: None,
        }
    }

    #[test]
    fn config_carries_identity_image_command_and_log_path() {
        let mut c = container("app");
        c.command = Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]);
        c.args = Some(vec!["echo $(GREETING) $$(GREETING) $(NAME)".to_owned()]);
        c.working_dir = Some("/work".to_owned());
        c.termination_message_path = Some("/dev/termination-log".to_owned());
        c.env = Some(vec![
            env("GREETING", "hello"),
            EnvVar {
                name: "NAME".to_owned(),
                value: None,
                value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: "metadata.name".to_owned(),
                    }),
                    ..Default::default()
                }),
            },
        ]);
        let p = pod(vec![c.clone()]);
        let config = Fixture::new().generate(&p, &c, 3).unwrap().config;
        let metadata = config.metadata.unwrap();
        assert_eq!((metadata.name.as_str(), metadata.attempt), ("app", 3));
        let image = config.image.unwrap();
        assert_eq!(
            (image.image.as_str(), image.user_specified_image.as_str()),
            ("sha256:feed", "busybox:1.36")
        );
        assert_eq!(config.command, ["/bin/sh", "-c"]);
        assert_eq!(config.args, ["echo hello $(GREETING) web"]);
        assert_eq!(config.working_dir, "/work");
        assert_eq!(config.log_path, "app/3.log");
        assert_eq!(
            config
                .labels
                .get("io.kubernetes.container.name")
                .map(String::as_str),
            Some("app")
        );
        assert_eq!(
            config
                .annotations
                .get("io.kubernetes.container.restartCount")
                .map(String::as_str),
            Some("3")
        );
        let keys: Vec<&str> = config.envs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["GREETING", "NAME"]);
    }

    #[test]
    fn mounts_cover_volumes_subpaths_hosts_file_and_termination_log() {
        let mut c = container("app");
        c.termination_message_path = Some("/dev/termination-log".to_owned());
        c.env = Some(vec![env("POD", "web-0")]);
        c.volume_mounts = Some(vec![
            VolumeMount {
                name: "data".to_owned(),
                mount_path: "/data".to_owned(),
                sub_path_expr: Some("logs/$(POD)".to_owned()),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "config".to_owned(),
                mount_path: "/etc/app".to_owned(),
                mount_propagation: Some("HostToContainer".to_owned()),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "data".to_owned(),
                mount_path: "/cache".to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]);
        let p = pod(vec![c.clone()]);
        let generated = Fixture::new().generate(&p, &c, 0).unwrap();
        let mounts: Vec<(&str, &str, bool, i32)> = generated
            .config
            .mounts
            .iter()
            .map(|m| {
                (
                    m.container_path.as_str(),
                    m.host_path.as_str(),
                    m.readonly,
                    m.propagation,
                )
            })
            .collect();
        let private = cri::MountPropagation::PropagationPrivate as i32;
        assert_eq!(
            mounts,
            [
                (
                    "/data",
                    "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~empty-dir/data/logs/web-0",
                    false,
                    private
                ),
                (
                    "/etc/app",
                    "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~configmap/config",
                    true,
                    cri::MountPropagation::PropagationHostToContainer as i32
                ),
                (
                    "/cache",
                    "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~empty-dir/data",
                    true,
                    private
                ),
                (
                    "/etc/hosts",
                    "/var/lib/kubelet/pods/uid-1/etc-hosts",
                    false,
                    private
                ),
                (
                    "/dev/termination-log",
                    "/var/lib/kubelet/pods/uid-1/containers/app/abcd",
                    false,
                    private
                ),
            ]
        );
        assert_eq!(
            generated.sub_paths,
            ["/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~empty-dir/data/logs/web-0"]
        );
    }

    #[test]
    fn hosts_file_is_not_mounted_over_a_user_mount_or_without_pod_ips() {
        let mut c = container("app");
        c.volume_mounts = Some(vec![VolumeMount {
            name: "data".to_owned(),
            mount_path: "/etc/hosts".to_owned(),
            ..VolumeMount::default()
        }]);
        let p = pod(vec![c.clone()]);
        let config = Fixture::new().generate(&p, &c, 0).unwrap().config;
        assert_eq!(
            config
                .mounts
                .iter()
                .filter(|m| m.container_path == "/etc/hosts")
                .count(),
            1
        );
        assert!(config.mounts[0].host_path.ends_with("/data"));

        let c = container("app");
        let fixture = Fixture {
            pod_ips: Vec::new(),
            ..Fixture::new()
        };
        let config = fixture
            .generate(&pod(vec![c.clone()]), &c, 0)
            .unwrap()
            .config;
        assert!(
            config
                .mounts
                .iter()
                .all(|m| m.container_path != "/etc/hosts")
        );
    }

    #[test]
    fn mount_errors_use_upstream_messages() {
        let cases = [
            (
                VolumeMount {
                    name: "missing".to_owned(),
                    mount_path: "/x".to_owned(),
                    ..VolumeMount::default()
                },
                "cannot find volume \"missing\" to mount into container \"app\"",
            ),
            (
                VolumeMount {
                    name: "data".to_owned(),
                    mount_path: "/x".to_owned(),
                    sub_path: Some("/abs".to_owned()),
                    ..VolumeMount::default()
                },
                "error SubPath `/abs` must not be an absolute path",
            ),
            (
                VolumeMount {
                    name: "data".to_owned(),
                    mount_path: "/x".to_owned(),
                    sub_path: Some("a/../../b".to_owned()),
                    ..VolumeMount::default()
                },
                "unable to provision SubPath `a/../../b`: must not contain '..'",
            ),
            (
                VolumeMount {
                    name: "data".to_owned(),
                    mount_path: "/x".to_owned(),
                    sub_path_expr: Some("$(NOPE)/$(ALSO)".to_owned()),
                    ..VolumeMount::default()
                },
                "missing value for ALSO, NOPE",
            ),
            (
                VolumeMount {
                    name: "data".to_owned(),
                    mount_path: "/x".to_owned(),
                    mount_propagation: Some("Sideways".to_owned()),
                    ..VolumeMount::default()
                },
                "invalid MountPropagation mode: \"Sideways\"",
            ),
        ];
        for (mount, message) in cases {
            let mut c = container("app");
            c.volume_mounts = Some(vec![mount]);
            let p = pod(vec![c.clone()]);
            assert_eq!(
                Fixture::new()
                    .generate(&p, &c, 0)
                    .map_err(|e| e.to_string()),
                Err(message.to_owned())
            );
        }
    }

    #[test]
    fn resources_reach_the_linux_config() {
        let mut c = container("app");
        c.resources = Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_owned(), Quantity("100m".to_owned())),
                    ("memory".to_owned(), Quantity("64Mi".to_owned())),
                ]
                .into(),
            ),
            limits: Some(
                [
                    ("cpu".to_owned(), Quantity("200m".to_owned())),
                    ("memory".to_owned(), Quantity("128Mi".to_owned())),
                ]
                .into(),
            ),
            ..ResourceRequirements::default()
        });
        let p = pod(vec![c.clone()]);
        let resources = Fixture::new()
            .generate(&p, &c, 0)
            .unwrap()
            .config
            .linux
            .unwrap()
            .resources
            .unwrap();
        assert_eq!(
            (
                resources.cpu_shares,
                resources.cpu_quota,
                resources.cpu_period
            ),
            (102, 20_000, 100_000)
        );
        assert_eq!(resources.memory_limit_in_bytes, 128 << 20);
        // Burstable: 1000 - 1000 * 64Mi / 4Gi = 985.
        assert_eq!(resources.oom_score_adj, 985);
    }

    #[test]
    fn security_context_merges_pod_and_container_settings() {
        let mut c = container("app");
        c.security_context = Some(SecurityContext {
            run_as_user: Some(1001),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_owned()]),
                drop: Some(vec!["ALL".to_owned()]),
            }),
            ..SecurityContext::default()
        });
        let mut p = pod(vec![c.clone()]);
        if let Some(spec) = p.spec.as_mut() {
            spec.security_context = Some(PodSecurityContext {
                run_as_user: Some(1000),
                run_as_group: Some(3000),
                fs_group: Some(2000),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            });
        }
        let sc =
            linux_security_context(&p, &c, &NodeContext::default(), &ImageUser::default()).unwrap();
        assert_eq!(sc.run_as_user, Some(cri::Int64Value { value: 1001 }));
        assert_eq!(sc.run_as_group, Some(cri::Int64Value { value: 3000 }));
        assert!(sc.readonly_rootfs);
        assert!(sc.no_new_privs);
        assert!(!sc.privileged);
        let capabilities = sc.capabilities.unwrap();
        assert_eq!(
            capabilities.add_capabilities,
            ["NET_ADMIN"],
            "CRI takes capability names without CAP_"
        );
        assert_eq!(capabilities.drop_capabilities, ["ALL"]);
        assert_eq!(sc.supplemental_groups, [2000]);
        assert_eq!(sc.masked_paths.len(), DEFAULT_MASKED_PATHS.len());
        assert_eq!(sc.readonly_paths.len(), DEFAULT_READONLY_PATHS.len());
        assert_eq!(
            sc.seccomp.map(|s| s.profile_type),
            Some(cri::security_profile::ProfileType::RuntimeDefault as i32)
        );
    }

    #[test]
    fn security_context_defaults_and_image_user() {
        let c = container("app");
        let p = pod(vec![c.clone()]);
        let user = ImageUser {
            uid: Some(65534),
            username: String::new(),
        };
        let sc = linux_security_context(&p, &c, &NodeContext::default(), &user).unwrap();
        assert_eq!(sc.run_as_user, Some(cri::Int64Value { value: 65534 }));
        assert!(
            !sc.no_new_privs,
            "allowPrivilegeEscalation unset leaves no_new_privs off"
        );
        assert_eq!(
            sc.seccomp.map(|s| s.profile_type),
            Some(cri::security_profile::ProfileType::Unconfined as i32)
        );
        let node = NodeContext {
            seccomp_default: true,
            ..NodeContext::default()
        };
        let sc = linux_security_context(&p, &c, &node, &ImageUser::default()).unwrap();
        assert_eq!(
            sc.seccomp.map(|s| s.profile_type),
            Some(cri::security_profile::ProfileType::RuntimeDefault as i32)
        );

        let mut localhost = container("app");
        localhost.security_context = Some(SecurityContext {
            seccomp_profile: Some(SeccompProfile {
                type_: "Localhost".to_owned(),
                localhost_profile: Some("profiles/audit.json".to_owned()),
            }),
            proc_mount: Some("Unmasked".to_owned()),
            ..SecurityContext::default()
        });
        let sc = linux_security_context(
            &p,
            &localhost,
            &NodeContext::default(),
            &ImageUser::default(),
        )
        .unwrap();
        let seccomp = sc.seccomp.unwrap();
        assert_eq!(
            seccomp.localhost_ref,
            "/var/lib/kubelet/seccomp/profiles/audit.json"
        );
        assert!(sc.masked_paths.is_empty() && sc.readonly_paths.is_empty());
    }

    #[test]
    fn run_as_non_root_is_verified_against_spec_and_image() {
        let mut c = container("app");
        c.security_context = Some(SecurityContext {
            run_as_non_root: Some(true),
            ..SecurityContext::default()
        });
        let p = pod(vec![c.clone()]);
        let check = |uid: Option<i64>, username: &str| {
            verify_run_as_non_root(
                &p,
                &c,
                &ImageUser {
                    uid,
                    username: username.to_owned(),
                },
            )
            .map_err(|e| e.to_string())
        };
        assert_eq!(check(Some(1000), ""), Ok(()));
        assert_eq!(check(None, ""), Ok(()));
        assert_eq!(check(Some(0), ""), Err("container has runAsNonRoot and image will run as root (pod: \"web_default(uid-1)\", container: app)".to_owned()));
        assert_eq!(
            check(None, "nginx"),
            Err("container has runAsNonRoot and image has non-numeric user (nginx), cannot verify user is non-root (pod: \"web_default(uid-1)\", container: app)".to_owned())
        );
        let mut root = c.clone();
        root.security_context = Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(0),
            ..SecurityContext::default()
        });
        assert!(matches!(
            verify_run_as_non_root(&p, &root, &ImageUser::default()),
            Err(ContainerConfigError::RunAsUserRoot { .. })
        ));
    }

    #[test]
    fn restart_count_from_log_files_takes_the_highest_plus_one() {
        assert_eq!(restart_count_from_log_files([]), 0);
        assert_eq!(restart_count_from_log_files(["0.log"]), 1);
        assert_eq!(
            restart_count_from_log_files([
                "0.log",
                "3.log",
                "2.log.20240101-120000",
                "x.log",
                "7.txt"
            ]),
            4
        );
        assert_eq!(restart_count_from_log_files(["12.log.gz"]), 13);
    }
}
