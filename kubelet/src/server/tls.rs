//! TLS of the `:10250` server: its serving certificate and the CAs client certificates are
//! verified against.
//!
//! Owns loading `--tls-cert-file`/`--tls-private-key-file`, or, without them, generating a
//! self-signed certificate into `<root-dir>/pki/kubelet.crt|key` once and reusing it (as upstream's
//! kubelet does); loading the client CA bundle (`--client-ca-file`, else the kubeconfig's cluster
//! CA); and building the rustls server configuration, which asks for a client certificate but lets
//! connections without one through (the router refuses them on everything but `/healthz`).
//! Never decides who may call what.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

/// The serving certificate could not be loaded or made, or TLS could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file could not be read or written.
    #[error("{action} {path}: {source}")]
    File {
        /// What was done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{path} holds no valid PEM {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating the self-signed serving certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Only one of `--tls-cert-file` and `--tls-private-key-file` was given.
    #[error("--tls-cert-file and --tls-private-key-file must be given together")]
    HalfPair,
    /// No CA to verify client certificates against.
    #[error(
        "no client CA: pass --client-ca-file, or a kubeconfig whose cluster has a certificate authority"
    )]
    NoClientCa,
    /// rustls refused the configuration.
    #[error("configuring TLS: {0}")]
    Rustls(String),
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub struct ServingCertificate {
    /// `--tls-cert-file` and `--tls-private-key-file`, when given.
    pub files: Option<(PathBuf, PathBuf)>,
    /// `--root-dir`: the self-signed pair lives in its `pki/` directory.
    pub root_dir: PathBuf,
    /// The node's name, a DNS subject alternative name of a generated certificate.
    pub node_name: String,
    /// The node's IP, an IP subject alternative name of a generated certificate.
    pub node_ip: IpAddr,
}

impl ServingCertificate {
    /// The certificate chain and key PEM: the given files, else the self-signed pair under
    /// `<root-dir>/pki/`, generated when either file is missing.
    pub fn load_or_generate(&self) -> Result<(String, String), TlsError> {
        if let Some((certificate, key)) = &self.files {
            return Ok((read(certificate)?, read(key)?));
        }
        let directory = self.root_dir.join("pki");
        let certificate_path = directory.join("kubelet.crt");
        let key_path = directory.join("kubelet.key");
        if certificate_path.exists() && key_path.exists() {
            return Ok((read(&certificate_path)?, read(&key_path)?));
        }
        std::fs::create_dir_all(&directory).map_err(|source| TlsError::File {
            action: "creating",
            path: directory.clone(),
            source,
        })?;
        let (certificate, key) = self_signed(&self.node_name, self.node_ip)?;
        write_private(&key_path, &key)?;
        write_private(&certificate_path, &certificate)?;
        Ok((certificate, key))
    }
}

/// A self-signed serving certificate for `node_name` (as upstream: CN `<host>@<unix time>`,
/// SANs the host name, `localhost`, the node IP and 127.0.0.1); certificate and key PEM. rcgen's
/// default validity is kept (upstream's is one year; nothing renews it here either).
pub fn self_signed(node_name: &str, node_ip: IpAddr) -> Result<(String, String), TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{node_name}@{now}"));
    let mut names = vec![
        SanType::DnsName(node_name.to_owned().try_into()?),
        SanType::DnsName("localhost".to_owned().try_into()?),
        SanType::IpAddress(node_ip),
    ];
    let loopback = IpAddr::from([127, 0, 0, 1]);
    if node_ip != loopback {
        names.push(SanType::IpAddress(loopback));
    }
    params.subject_alt_names = names;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    Ok((certificate.pem(), key.serialize_pem()))
}

/// The CA certificates of `--client-ca-file` (PEM).
pub fn client_cas_from_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let content = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(content.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certificates)
}

/// CA certificates as a kubeconfig loader hands them over (DER, or PEM when left as text).
#[must_use]
pub fn client_cas_from_kubeconfig(root_certificates: &[Vec<u8>]) -> Vec<CertificateDer<'static>> {
    let mut certificates = Vec::new();
    for bytes in root_certificates {
        if bytes.starts_with(b"-----BEGIN") {
            certificates.extend(CertificateDer::pem_slice_iter(bytes).filter_map(Result::ok));
        } else {
            certificates.push(CertificateDer::from(bytes.clone()));
        }
    }
    certificates
}

/// The rustls configuration: serve `certificate_pem`/`key_pem`, ask for a client certificate and
/// verify it against `client_cas` when one is presented.
pub fn server_config(
    certificate_pem: &str,
    key_pem: &str,
    client_cas: Vec<CertificateDer<'static>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(certificate_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|_| TlsError::Pem {
                path: PathBuf::from("the serving certificate"),
                what: "certificate",
            })?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| TlsError::Pem {
        path: PathBuf::from("the serving key"),
        what: "private key",
    })?;
    if client_cas.is_empty() {
        return Err(TlsError::NoClientCa);
    }
    let mut roots = RootCertStore::empty();
    for ca in client_cas {
        roots
            .add(ca)
            .map_err(|error| TlsError::Rustls(format!("a client CA certificate: {error}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|error| TlsError::Rustls(error.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Rustls(error.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificates, key)
        .map_err(|error| TlsError::Rustls(error.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::File {
        action: "reading",
        path: path.to_owned(),
        source,
    })
}

/// Writes a file only its owner can read, atomically.
fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let error = |source| TlsError::File {
        action: "writing",
        path: path.to_owned(),
        source,
    };
    let staging = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&staging)
        .map_err(error)?;
    file.write_all(contents.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&staging, path).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_pair_is_generated_once_and_reused() {
        let root = tempfile::tempdir().expect("a temporary directory");
        let serving = ServingCertificate {
            files: None,
            root_dir: root.path().to_owned(),
            node_name: "node-a".to_owned(),
            node_ip: IpAddr::from([10, 0, 0, 7]),
        };
        let (certificate, key) = serving.load_or_generate().expect("generated");
        assert!(root.path().join("pki/kubelet.crt").exists());
        assert!(root.path().join("pki/kubelet.key").exists());
        let again = serving.load_or_generate().expect("reloaded");
        assert_eq!(again, (certificate.clone(), key.clone()));
        let (ca, _) = self_signed("ca", IpAddr::from([127, 0, 0, 1])).expect("a CA");
        let cas = client_cas_from_kubeconfig(&[ca.into_bytes()]);
        assert_eq!(cas.len(), 1);
        server_config(&certificate, &key, cas).expect("a TLS configuration");
    }

    #[test]
    fn a_client_ca_is_required() {
        let (certificate, key) =
            self_signed("node-a", IpAddr::from([127, 0, 0, 1])).expect("a pair");
        assert!(matches!(
            server_config(&certificate, &key, Vec::new()),
            Err(TlsError::NoClientCa)
        ));
    }
}
