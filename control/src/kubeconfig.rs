//! Kubeconfig files skiff-control writes for its clients (the admin kubeconfig at first start).
//!
//! Owns the file format (the `v1` `Config` kind kubectl reads). Never creates credentials.

use base64::{Engine as _, engine::general_purpose::STANDARD};

/// A user's client certificate and key (PEM).
pub struct ClientCertificate<'a> {
    pub certificate_pem: &'a str,
    pub key_pem: &'a str,
}

/// A kubeconfig with one cluster (`skiff`), one user authenticating with a client certificate,
/// and one current context (`skiff`).
pub fn render(
    server: &str,
    ca_certificate_pem: &str,
    user: &str,
    credentials: &ClientCertificate<'_>,
) -> String {
    let user_fields = format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        STANDARD.encode(credentials.certificate_pem),
        STANDARD.encode(credentials.key_pem)
    );
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
{user_fields}contexts:
- name: skiff
  context:
    cluster: skiff
    user: {user}
current-context: skiff
preferences: {{}}
",
        ca = STANDARD.encode(ca_certificate_pem)
    )
}
