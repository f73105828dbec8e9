//! Pod cgroups on the host: finding the cgroup hierarchies and removing a pod's cgroup once the
//! runtime removed everything in it.
//!
//! Owns the filesystem side only: the runtime (runc through containerd, cgroupfs driver) creates
//! the pod cgroup `<--cgroup-root>/kubepods[/<qos>]/pod<uid>` in every hierarchy when the first
//! sandbox lands in it ([`crate::pod::resources::pod_cgroup_parent`] names it); the kubelet
//! removes it after the pod's sandboxes are gone, as upstream's pod container manager does.
//! Never removes a cgroup that still has processes (the kernel refuses; that is logged) and
//! never touches cgroups outside `--cgroup-root`.

use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use crate::pod::resources::{QosClass, pod_cgroup_parent};

/// Mount points of the cgroup filesystems (v1 hierarchies and the v2 unified one) in
/// `/proc/self/mountinfo` content.
#[must_use]
pub fn cgroup_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, filesystem) = line.split_once(" - ")?;
            let filesystem_type = filesystem.split_whitespace().next()?;
            if filesystem_type != "cgroup" && filesystem_type != "cgroup2" {
                return None;
            }
            let mount_point = fields.split_whitespace().nth(4)?;
            Some(PathBuf::from(mount_point))
        })
        .collect()
}

/// Removes pod `uid`'s cgroup (under whichever QoS class it was created) from every hierarchy.
pub(super) fn remove_pod_cgroup(cgroup_root: &str, uid: &str) {
    let mountinfo = match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(content) => content,
        Err(error) => {
            warn!("reading /proc/self/mountinfo to remove the cgroup of pod {uid}: {error}");
            return;
        }
    };
    for mount_point in cgroup_mount_points(&mountinfo) {
        for qos in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            let parent = pod_cgroup_parent(cgroup_root, qos, uid);
            remove_cgroup(&mount_point.join(parent.trim_start_matches('/')));
        }
    }
}

/// `rmdir` of one cgroup directory and its (empty) children, deepest first.
fn remove_cgroup(path: &Path) {
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            remove_cgroup(&entry.path());
        }
    }
    match std::fs::remove_dir(path) {
        Ok(()) => debug!(cgroup = %path.display(), "removed the pod cgroup"),
        Err(error) => warn!(cgroup = %path.display(), "removing the pod cgroup: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_mounts_of_both_versions_are_found_and_others_ignored() {
        let mountinfo = "\
25 30 0:23 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
26 30 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
27 30 0:25 / /proc rw - proc proc rw
28 30 8:1 / / rw - ext4 /dev/sda1 rw";

        assert_eq!(
            cgroup_mount_points(mountinfo),
            [
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/unified")
            ]
        );
    }

    #[test]
    fn removal_goes_deepest_first_and_ignores_missing_cgroups() {
        let directory = tempfile::tempdir().unwrap();
        let pod = directory.path().join("podu1");
        std::fs::create_dir_all(pod.join("container")).unwrap();

        remove_cgroup(&pod);
        remove_cgroup(&directory.path().join("missing"));

        assert!(!pod.exists());
    }
}
