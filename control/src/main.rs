//! skiff-control: Skiff's control services — today the start of the Kubernetes API server: TLS
//! with a self-generated CA, client-certificate and bearer-token authentication, the admin
//! kubeconfig, `/version` and health endpoints, on the embedded store or etcd. Resources,
//! the scheduler and controllers are not served yet (issue #4).

mod auth;
mod kubeconfig;
mod pki;
mod server;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
};

use anyhow::Context as _;
use clap::Parser;
use skiff_store::{Store, embedded::EmbeddedStore, etcd::EtcdStore};

/// Skiff's control services: a Kubernetes API server on an embedded store (etcd optional).
#[derive(Parser, Debug)]
#[command(name = "skiff-control", version, about, long_about = None)]
struct Cli {
    /// Where the embedded store, the PKI and the admin kubeconfig live.
    #[arg(long)]
    data_dir: PathBuf,
    /// etcd v3 endpoints to use instead of the embedded store (comma separated).
    #[arg(long, value_delimiter = ',')]
    etcd_servers: Vec<String>,
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Port to serve HTTPS on.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
}

fn random_token() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.data_dir)
        .with_context(|| format!("creating --data-dir {}", cli.data_dir.display()))?;

    let store: Box<dyn Store> =
        if cli.etcd_servers.is_empty() {
            let directory = cli.data_dir.join("store");
            Box::new(EmbeddedStore::open(&directory).with_context(|| {
                format!("opening the embedded store in {}", directory.display())
            })?)
        } else {
            Box::new(
                EtcdStore::connect(&cli.etcd_servers, "/registry/")
                    .await
                    .context("connecting to --etcd-servers")?,
            )
        };

    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((cli.bind_address, cli.secure_port)))
            .await
            .with_context(|| format!("binding {}:{}", cli.bind_address, cli.secure_port))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    let mut addresses = vec![IpAddr::from([127, 0, 0, 1])];
    if !cli.bind_address.is_unspecified() && !addresses.contains(&cli.bind_address) {
        addresses.push(cli.bind_address);
    }
    let names = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .map(str::to_owned);
    let (pki, admin) = pki::Pki::load_or_create(&cli.data_dir, &names, &addresses)
        .context("setting up the cluster PKI")?;

    let token_path = cli.data_dir.join("admin.token");
    let admin_token = match std::fs::read_to_string(&token_path) {
        Ok(token) => token.trim().to_owned(),
        Err(_) => {
            let token = random_token()?;
            pki::write_private(&token_path, &token)?;
            token
        }
    };
    let server_url = format!("https://{}", server::client_address(bound));
    if let Some(admin) = admin {
        let config = kubeconfig::render(
            &server_url,
            &pki.ca_certificate_pem,
            "skiff-admin",
            &kubeconfig::ClientCertificate {
                certificate_pem: &admin.certificate_pem,
                key_pem: &admin.key_pem,
            },
        );
        pki::write_private(&cli.data_dir.join("admin.kubeconfig"), &config)?;
    }
    tracing::info!(%server_url, kubeconfig = %cli.data_dir.join("admin.kubeconfig").display(), "serving the Kubernetes API");
    let state = Arc::new(server::ApiState { store, admin_token });
    server::serve(listener, pki.server_config()?, state).await;
    Ok(())
}
