//! The cluster's certificates: a self-generated CA, the API server's serving certificate and the
//! admin client certificate, created on first start in `<data-dir>/pki/` and reused afterwards.
//!
//! Owns generating and loading the PEM files and building the rustls server configuration that
//! serves TLS and verifies client certificates against the CA (requests without one are let
//! through TLS and authenticated by bearer token or refused later). Never decides who may do what.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{action} {path}: {source}")]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generating {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{path} is not a valid PEM certificate or key")]
    Pem { path: PathBuf },
    #[error("building the TLS configuration: {0}")]
    Tls(String),
}

/// The PEM files of the cluster PKI.
pub struct Pki {
    pub ca_certificate_pem: String,
    server_certificate_pem: String,
    server_key_pem: String,
}

/// A client certificate and key (PEM) for a user and its groups.
pub struct ClientCredentials {
    pub certificate_pem: String,
    pub key_pem: String,
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::File {
        action: "reading",
        path: path.to_owned(),
        source,
    })
}

/// Writes a file readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file_error = |source| PkiError::File {
        action: "writing",
        path: path.to_owned(),
        source,
    };
    let staging = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staging)
            .map_err(file_error)?;
        file.write_all(contents.as_bytes()).map_err(file_error)?;
        file.sync_all().map_err(file_error)?;
    }
    std::fs::rename(&staging, path).map_err(file_error)
}

fn generate(what: &'static str) -> impl Fn(rcgen::Error) -> PkiError {
    move |source| PkiError::Generate { what, source }
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(generate("the CA"))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "skiff-ca");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl Pki {
    /// Loads the PKI from `<data_dir>/pki`, creating it on first start. `server_names` and
    /// `server_addresses` go into the serving certificate's subject alternative names.
    pub fn load_or_create(
        data_dir: &Path,
        server_names: &[String],
        server_addresses: &[IpAddr],
    ) -> Result<(Pki, Option<ClientCredentials>), PkiError> {
        let directory = data_dir.join("pki");
        let paths =
            ["ca.crt", "ca.key", "apiserver.crt", "apiserver.key"].map(|name| directory.join(name));
        if paths.iter().all(|path| path.exists()) {
            let pki = Pki {
                ca_certificate_pem: read(&paths[0])?,
                server_certificate_pem: read(&paths[2])?,
                server_key_pem: read(&paths[3])?,
            };
            return Ok((pki, None));
        }
        std::fs::create_dir_all(&directory).map_err(|source| PkiError::File {
            action: "creating",
            path: directory.clone(),
            source,
        })?;
        let ca_key = KeyPair::generate().map_err(generate("the CA key"))?;
        let ca = ca_params()?;
        let ca_certificate = ca
            .self_signed(&ca_key)
            .map_err(generate("the CA certificate"))?;
        let issuer = Issuer::from_params(&ca, &ca_key);

        let mut sans: Vec<SanType> = Vec::new();
        for name in server_names {
            sans.push(SanType::DnsName(
                name.clone().try_into().map_err(generate("a server name"))?,
            ));
        }
        sans.extend(
            server_addresses
                .iter()
                .map(|address| SanType::IpAddress(*address)),
        );
        let mut server = CertificateParams::new(Vec::<String>::new())
            .map_err(generate("the server certificate"))?;
        server.subject_alt_names = sans;
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().map_err(generate("the server key"))?;
        let server_certificate = server
            .signed_by(&server_key, &issuer)
            .map_err(generate("the server certificate"))?;

        // The admin user, as kubeadm makes it: CN = user, O = group system:masters.
        let mut admin = CertificateParams::new(Vec::<String>::new())
            .map_err(generate("the admin certificate"))?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "skiff-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_key = KeyPair::generate().map_err(generate("the admin key"))?;
        let admin_certificate = admin
            .signed_by(&admin_key, &issuer)
            .map_err(generate("the admin certificate"))?;

        let pki = Pki {
            ca_certificate_pem: ca_certificate.pem(),
            server_certificate_pem: server_certificate.pem(),
            server_key_pem: server_key.serialize_pem(),
        };
        write_private(&paths[1], &ca_key.serialize_pem())?;
        write_private(&paths[2], &pki.server_certificate_pem)?;
        write_private(&paths[3], &pki.server_key_pem)?;
        // The CA certificate last: its presence marks a complete PKI.
        write_private(&paths[0], &pki.ca_certificate_pem)?;
        let admin = ClientCredentials {
            certificate_pem: admin_certificate.pem(),
            key_pem: admin_key.serialize_pem(),
        };
        Ok((pki, Some(admin)))
    }

    /// TLS for the API server: its certificate, and client certificates verified against the CA
    /// when presented (optional, so bearer tokens work too).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, PkiError> {
        let pem_error = |path: &str| PkiError::Pem {
            path: PathBuf::from(path),
        };
        let certificates: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.server_certificate_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| pem_error("pki/apiserver.crt"))?;
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes())
            .map_err(|_| pem_error("pki/apiserver.key"))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.ca_certificate_pem.as_bytes()) {
            let ca = ca.map_err(|_| pem_error("pki/ca.crt"))?;
            roots
                .add(ca)
                .map_err(|error| PkiError::Tls(error.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .allow_unauthenticated()
                .build()
                .map_err(|error| PkiError::Tls(error.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| PkiError::Tls(error.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certificates, key)
            .map_err(|error| PkiError::Tls(error.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
