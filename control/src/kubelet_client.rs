//! skiff-control's HTTPS client to kubelets (`pods/log` → the kubelet's `/containerLogs`).
//!
//! Owns the API server's kubelet-client credentials: `<data-dir>/pki/apiserver-kubelet-client.crt|key`
//! (CN `kube-apiserver-kubelet-client`, O `system:masters`, as kubeadm names them), signed by the
//! cluster CA on first use and reused afterwards, so a kubelet trusting the cluster CA
//! (`--client-ca-file`, or skiff-kubelet's default of its kubeconfig's CA) accepts them. Also owns
//! the TLS connection and one HTTP/1.1 GET per call.
//!
//! Kubelet serving certificates are not verified (upstream's kube-apiserver without
//! `--kubelet-certificate-authority` does the same: kubelets serve self-signed certificates); the
//! handshake signatures still are. Never decides which kubelet or path to call: the `pods/log`
//! handler does.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject as _};
use tokio_rustls::TlsConnector;

/// How long connecting to a kubelet (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a kubelet may take to answer a request's headers.
const RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// The client's credentials could not be made, or a kubelet could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum KubeletClientError {
    /// A PKI file could not be read or written.
    #[error("{action} {path}: {source}")]
    File {
        /// What was done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA or the client certificate could not be used or made.
    #[error("the kubelet-client certificate: {0}")]
    Certificate(String),
    /// The kubelet did not answer.
    #[error("error dialing backend: {0}")]
    Dial(String),
    /// The HTTP exchange failed.
    #[error("error reading from the kubelet: {0}")]
    Http(#[from] hyper::Error),
}

/// An HTTPS client to kubelets, authenticating with the API server's kubelet-client certificate.
pub struct KubeletClient {
    connector: TlsConnector,
}

impl KubeletClient {
    /// The client of the API server whose PKI is in `<data_dir>/pki` (`ca.crt` and `ca.key`,
    /// as [`crate::pki::Pki`] writes them); creates the kubelet-client pair when missing.
    ///
    /// # Errors
    /// [`KubeletClientError`] naming the file or step that failed.
    pub fn load_or_create(data_dir: &Path) -> Result<KubeletClient, KubeletClientError> {
        let directory = data_dir.join("pki");
        let certificate_path = directory.join("apiserver-kubelet-client.crt");
        let key_path = directory.join("apiserver-kubelet-client.key");
        let (certificate, key) = if certificate_path.exists() && key_path.exists() {
            (read(&certificate_path)?, read(&key_path)?)
        } else {
            let ca_certificate = read(&directory.join("ca.crt"))?;
            let ca_key = read(&directory.join("ca.key"))?;
            let (certificate, key) = sign_client_certificate(&ca_certificate, &ca_key)?;
            write_private(&key_path, &key)?;
            write_private(&certificate_path, &certificate)?;
            (certificate, key)
        };
        KubeletClient::new(&certificate, &key)
    }

    /// A client presenting `certificate_pem` (chain) and `key_pem`.
    ///
    /// # Errors
    /// [`KubeletClientError::Certificate`] when the PEM or rustls refuses them.
    pub fn new(certificate_pem: &str, key_pem: &str) -> Result<KubeletClient, KubeletClientError> {
        let invalid = |what: &str| KubeletClientError::Certificate(format!("invalid {what} PEM"));
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(certificate_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|_| invalid("certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| invalid("key"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|error| KubeletClientError::Certificate(error.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)))
            .with_client_auth_cert(chain, key)
            .map_err(|error| KubeletClientError::Certificate(error.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// `GET https://<host>:<port><path_and_query>`; the response with its body still streaming.
    ///
    /// # Errors
    /// [`KubeletClientError::Dial`] when the kubelet cannot be reached, `Http` when the exchange
    /// fails.
    pub async fn get(
        &self,
        host: IpAddr,
        port: u16,
        path_and_query: &str,
    ) -> Result<hyper::Response<Incoming>, KubeletClientError> {
        let address = std::net::SocketAddr::from((host, port));
        let dial = |error: &dyn std::fmt::Display| {
            KubeletClientError::Dial(format!("dial tcp {address}: {error}"))
        };
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let tcp = tokio::net::TcpStream::connect(address)
                .await
                .map_err(|error| dial(&error))?;
            self.connector
                .connect(ServerName::IpAddress(host.into()), tcp)
                .await
                .map_err(|error| dial(&error))
        })
        .await
        .map_err(|_| dial(&"i/o timeout"))??;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(KubeletClientError::Http)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "kubelet connection ended with an error");
            }
        });
        let request = hyper::Request::get(path_and_query)
            .header(hyper::header::HOST, address.to_string())
            .body(Body::empty())
            .map_err(|error| KubeletClientError::Dial(error.to_string()))?;
        // The kubelet answers headers at once (the body may then stream for ever with `follow`).
        tokio::time::timeout(RESPONSE_HEADER_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|_| {
                KubeletClientError::Dial(format!(
                    "no answer from {address} within {RESPONSE_HEADER_TIMEOUT:?}"
                ))
            })?
            .map_err(KubeletClientError::Http)
    }
}

/// A client certificate for the API server's calls to kubelets, signed by the CA; (cert, key) PEM.
///
/// # Errors
/// [`KubeletClientError::Certificate`] when the CA cannot be parsed or signing fails.
pub fn sign_client_certificate(
    ca_certificate_pem: &str,
    ca_key_pem: &str,
) -> Result<(String, String), KubeletClientError> {
    let failed = |error: rcgen::Error| KubeletClientError::Certificate(error.to_string());
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(failed)?;
    let issuer = Issuer::from_ca_cert_pem(ca_certificate_pem, ca_key).map_err(failed)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver-kubelet-client");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().map_err(failed)?;
    let certificate = params.signed_by(&key, &issuer).map_err(failed)?;
    Ok((certificate.pem(), key.serialize_pem()))
}

/// Accepts any kubelet serving certificate; checks handshake signatures with the provider.
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn read(path: &Path) -> Result<String, KubeletClientError> {
    std::fs::read_to_string(path).map_err(|source| KubeletClientError::File {
        action: "reading",
        path: path.to_owned(),
        source,
    })
}

fn write_private(path: &Path, contents: &str) -> Result<(), KubeletClientError> {
    crate::pki::write_private(path, contents).map_err(|error| KubeletClientError::File {
        action: "writing",
        path: path.to_owned(),
        source: std::io::Error::other(error.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_certificate_is_signed_by_the_stored_ca_and_reused() {
        let data_dir = tempfile::tempdir().expect("a temporary directory");
        let (pki, _) =
            crate::pki::Pki::load_or_create(data_dir.path(), &[], &[]).expect("the cluster PKI");
        KubeletClient::load_or_create(data_dir.path()).expect("a kubelet client");
        let certificate_path = data_dir.path().join("pki/apiserver-kubelet-client.crt");
        let first = std::fs::read_to_string(&certificate_path).expect("the certificate");
        KubeletClient::load_or_create(data_dir.path()).expect("a kubelet client again");
        assert_eq!(
            std::fs::read_to_string(&certificate_path).expect("the certificate"),
            first,
            "the pair is reused"
        );
        // The certificate verifies against the CA as a client certificate.
        let ca = CertificateDer::from_pem_slice(pki.ca_certificate_pem.as_bytes()).expect("CA");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("a root");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("a verifier");
        let leaf = CertificateDer::from_pem_slice(first.as_bytes()).expect("the leaf");
        verifier
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .expect("signed by the cluster CA");
    }
}
