//! Image pull decisions: which pull policy applies, whether to pull, and the upstream waiting
//! reasons when the image cannot be had.
//!
//! Owns upstream's image defaulting (`:latest` or no tag → `Always`, else `IfNotPresent`;
//! `applyDefaultImageTag`), `shouldPullImage`, the pull back-off check of
//! `imageManager.EnsureImageExists` and its reasons/messages (`ErrImagePull`,
//! `ImagePullBackOff`, `ErrImageNeverPull`, `InvalidImageName`). Never pulls or inspects an image.

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;

use super::backoff::Backoff;
use super::pod_uid;

/// `imagePullPolicy` (upstream `v1.PullPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull on every container start.
    Always,
    /// Pull only when the image is missing.
    IfNotPresent,
    /// Never pull; fail when the image is missing.
    Never,
}

impl PullPolicy {
    /// The container's policy: the explicit `imagePullPolicy`, or the API server's default for
    /// its image ([`PullPolicy::default_for_image`]).
    #[must_use]
    pub fn for_container(container: &Container) -> Self {
        match container.image_pull_policy.as_deref() {
            Some("Always") => Self::Always,
            Some("IfNotPresent") => Self::IfNotPresent,
            Some("Never") => Self::Never,
            _ => Self::default_for_image(container.image.as_deref().unwrap_or_default()),
        }
    }

    /// Upstream `SetDefaults_Container`: `Always` when the image's tag is `latest` or it has
    /// neither tag nor digest, else `IfNotPresent`.
    #[must_use]
    pub fn default_for_image(image: &str) -> Self {
        let reference = split_reference(image);
        match reference.tag {
            Some("latest") => Self::Always,
            None if reference.digest.is_none() => Self::Always,
            _ => Self::IfNotPresent,
        }
    }
}

/// Upstream `shouldPullImage`.
#[must_use]
pub fn should_pull(policy: PullPolicy, image_present: bool) -> bool {
    match policy {
        PullPolicy::Always => true,
        PullPolicy::IfNotPresent => !image_present,
        PullPolicy::Never => false,
    }
}

/// Why a container cannot get its image; each maps to an upstream waiting reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The image reference cannot be parsed (`InvalidImageName`).
    #[error(
        "Failed to apply default image tag {image:?}: couldn't parse image name {image:?}: invalid reference format"
    )]
    InvalidImageName {
        /// The image as written in the spec.
        image: String,
    },
    /// `imagePullPolicy: Never` and the image is missing (`ErrImageNeverPull`).
    #[error("Container image {image:?} is not present with pull policy of Never")]
    NeverPull {
        /// The image as written in the spec.
        image: String,
    },
    /// An earlier pull failed and the back-off has not passed (`ImagePullBackOff`).
    #[error("Back-off pulling image {image:?}")]
    PullBackOff {
        /// The image as written in the spec.
        image: String,
    },
    /// The runtime's pull failed (`ErrImagePull`); the message is the runtime's error.
    #[error("{message}")]
    Pull {
        /// The image as written in the spec.
        image: String,
        /// The runtime's error text.
        message: String,
    },
}

impl ImageError {
    /// The container's waiting reason for this error.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidImageName { .. } => "InvalidImageName",
            Self::NeverPull { .. } => "ErrImageNeverPull",
            Self::PullBackOff { .. } => "ImagePullBackOff",
            Self::Pull { .. } => "ErrImagePull",
        }
    }
}

/// What to do about a container's image before creating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnsureImage {
    /// The image is present and need not be pulled; use it.
    UsePresent {
        /// The image with the default tag applied (what to inspect).
        image: String,
    },
    /// Pull `image`. On failure record [`Backoff::next`] under `backoff_key` and report
    /// [`ImageError::Pull`].
    Pull {
        /// The image with the default tag applied (what to pull).
        image: String,
        /// The pull back-off key (upstream `<podUID>_<image>`).
        backoff_key: String,
    },
    /// The container cannot start; report the error as its waiting reason.
    Fail(ImageError),
}

/// Upstream `EnsureImageExists` without the I/O: given whether the runtime has the image,
/// decide between using it, pulling it and failing.
#[must_use]
pub fn ensure_image(
    pod: &Pod,
    container: &Container,
    image_present: bool,
    pull_backoff: &Backoff,
    now: Timestamp,
) -> EnsureImage {
    let requested = container.image.as_deref().unwrap_or_default();
    let image = match apply_default_image_tag(requested) {
        Ok(image) => image,
        Err(error) => return EnsureImage::Fail(error),
    };
    if !should_pull(PullPolicy::for_container(container), image_present) {
        if image_present {
            return EnsureImage::UsePresent { image };
        }
        return EnsureImage::Fail(ImageError::NeverPull {
            image: requested.to_owned(),
        });
    }
    let backoff_key = image_backoff_key(pod, requested);
    if pull_backoff.is_in_backoff_since_update(&backoff_key, now) {
        return EnsureImage::Fail(ImageError::PullBackOff {
            image: requested.to_owned(),
        });
    }
    EnsureImage::Pull { image, backoff_key }
}

/// Upstream's pull back-off key: `<podUID>_<image>`.
#[must_use]
pub fn image_backoff_key(pod: &Pod, image: &str) -> String {
    format!("{}_{image}", pod_uid(pod))
}

/// Upstream `applyDefaultImageTag`: append `:latest` when the image has neither tag nor digest.
///
/// # Errors
/// [`ImageError::InvalidImageName`] for references that cannot be parsed: empty, containing
/// whitespace, an upper-case repository path, an empty path component, or an empty tag/digest.
pub fn apply_default_image_tag(image: &str) -> Result<String, ImageError> {
    let invalid = || ImageError::InvalidImageName {
        image: image.to_owned(),
    };
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        return Err(invalid());
    }
    let reference = split_reference(image);
    let mut components = reference.name.split('/');
    // The first component may be a registry host (with a port or upper-case letters).
    let first = components.next().unwrap_or_default();
    let has_registry = reference.name.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    let repository: Vec<&str> = if has_registry {
        components.collect()
    } else {
        reference.name.split('/').collect()
    };
    let valid_component = |component: &&str| {
        !component.is_empty()
            && component
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
    };
    if first.is_empty() || repository.is_empty() || !repository.iter().all(valid_component) {
        return Err(invalid());
    }
    if reference.tag == Some("") || reference.digest == Some("") {
        return Err(invalid());
    }
    if reference.tag.is_none() && reference.digest.is_none() {
        return Ok(format!("{image}:latest"));
    }
    Ok(image.to_owned())
}

struct Reference<'a> {
    name: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// `name[:tag][@digest]`, where a `:` only starts a tag after the last `/` (a registry port is
/// not a tag).
fn split_reference(image: &str) -> Reference<'_> {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last_slash..].rfind(':') {
        Some(colon) => Reference {
            name: &rest[..last_slash + colon],
            tag: Some(&rest[last_slash + colon + 1..]),
            digest,
        },
        None => Reference {
            name: rest,
            tag: None,
            digest,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::testing::{at, container, pod};

    #[test]
    fn default_pull_policy_follows_the_tag() {
        for (image, policy) in [
            ("busybox", PullPolicy::Always),
            ("busybox:latest", PullPolicy::Always),
            ("busybox:1.36", PullPolicy::IfNotPresent),
            ("registry.local:5000/team/app", PullPolicy::Always),
            ("registry.local:5000/team/app:v1", PullPolicy::IfNotPresent),
            ("busybox@sha256:abcd", PullPolicy::IfNotPresent),
            ("busybox:latest@sha256:abcd", PullPolicy::Always),
        ] {
            assert_eq!(PullPolicy::default_for_image(image), policy, "{image}");
        }
        let mut c = container("a");
        c.image_pull_policy = Some("Never".to_owned());
        assert_eq!(PullPolicy::for_container(&c), PullPolicy::Never);
    }

    #[test]
    fn should_pull_table() {
        for (policy, present, pull) in [
            (PullPolicy::Always, true, true),
            (PullPolicy::Always, false, true),
            (PullPolicy::IfNotPresent, true, false),
            (PullPolicy::IfNotPresent, false, true),
            (PullPolicy::Never, true, false),
            (PullPolicy::Never, false, false),
        ] {
            assert_eq!(
                should_pull(policy, present),
                pull,
                "{policy:?} present={present}"
            );
        }
    }

    #[test]
    fn default_tag_is_applied_and_bad_names_rejected() {
        assert_eq!(
            apply_default_image_tag("busybox").as_deref(),
            Ok("busybox:latest")
        );
        assert_eq!(
            apply_default_image_tag("localhost:5000/app").as_deref(),
            Ok("localhost:5000/app:latest")
        );
        assert_eq!(
            apply_default_image_tag("busybox:1.36").as_deref(),
            Ok("busybox:1.36")
        );
        assert_eq!(
            apply_default_image_tag("busybox@sha256:abcd").as_deref(),
            Ok("busybox@sha256:abcd")
        );
        for bad in ["", "Busybox", "busy box", "busybox:", "team//app", "/app"] {
            assert!(
                matches!(
                    apply_default_image_tag(bad),
                    Err(ImageError::InvalidImageName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ensure_image_decides_pull_use_or_fail() {
        let mut c = container("a");
        let p = pod(vec![c.clone()]);
        let backoff = Backoff::image_pull();
        assert_eq!(
            ensure_image(&p, &c, true, &backoff, at(0)),
            EnsureImage::UsePresent {
                image: "busybox:1.36".to_owned()
            }
        );
        assert_eq!(
            ensure_image(&p, &c, false, &backoff, at(0)),
            EnsureImage::Pull {
                image: "busybox:1.36".to_owned(),
                backoff_key: "uid-1_busybox:1.36".to_owned()
            }
        );
        c.image_pull_policy = Some("Never".to_owned());
        let EnsureImage::Fail(error) = ensure_image(&p, &c, false, &backoff, at(0)) else {
            panic!("Never without the image must fail");
        };
        assert_eq!(error.reason(), "ErrImageNeverPull");
        assert_eq!(
            error.to_string(),
            "Container image \"busybox:1.36\" is not present with pull policy of Never"
        );
    }

    #[test]
    fn failed_pull_backs_off_with_image_pull_back_off() {
        let c = container("a");
        let p = pod(vec![c.clone()]);
        let mut backoff = Backoff::image_pull();
        backoff.next(&image_backoff_key(&p, "busybox:1.36"), at(100), at(100));
        let EnsureImage::Fail(error) = ensure_image(&p, &c, false, &backoff, at(105)) else {
            panic!("inside the back-off the pull must not be retried");
        };
        assert_eq!(error.reason(), "ImagePullBackOff");
        assert_eq!(error.to_string(), "Back-off pulling image \"busybox:1.36\"");
        assert!(matches!(
            ensure_image(&p, &c, false, &backoff, at(110)),
            EnsureImage::Pull { .. }
        ));
        let pull = ImageError::Pull {
            image: "busybox:1.36".to_owned(),
            message: "rpc error: code = NotFound".to_owned(),
        };
        assert_eq!(
            (pull.reason(), pull.to_string().as_str()),
            ("ErrImagePull", "rpc error: code = NotFound")
        );
    }
}
