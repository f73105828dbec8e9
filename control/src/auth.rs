//! Authentication of API requests: client certificates signed by the cluster CA (verified by TLS)
//! and bearer tokens. Anonymous requests get `401 Unauthorized` except on the health endpoints.
//!
//! Owns mapping a connection's certificate or a request's token to a [`User`]. Never authorises
//! (every authenticated user may do everything until RBAC exists).

use rustls_pki_types::CertificateDer;

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// The user of a verified client certificate: CN is the name, each O a group (as upstream).
pub fn user_of_certificate(certificate: &CertificateDer<'_>) -> Option<User> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|group| group.as_str().ok().map(str::to_owned))
        .collect();
    Some(User { name, groups })
}

/// Paths anyone may read, as upstream's `system:public-info-viewer` allows for health.
pub fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// Compares a presented bearer token with the expected one in constant time.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (presented, expected) = (presented.as_bytes(), expected.as_bytes());
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_health_endpoints_are_public() {
        for path in ["/healthz", "/livez", "/readyz", "/readyz/ping"] {
            assert!(is_public(path), "{path}");
        }
        for path in ["/version", "/api", "/apis", "/healthzz", "/metrics"] {
            assert!(!is_public(path), "{path}");
        }
    }

    #[test]
    fn tokens_match_only_exactly() {
        assert!(token_matches("abc123", "abc123"));
        assert!(!token_matches("abc124", "abc123"));
        assert!(!token_matches("abc12", "abc123"));
        assert!(!token_matches("", "abc123"));
    }
}
