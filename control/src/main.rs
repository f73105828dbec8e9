//! skiff-control: Skiff's control services — the Kubernetes API server (TLS with a
//! self-generated CA, client-certificate and bearer-token authentication, the admin kubeconfig,
//! the resource API with discovery, watch, patch, Tables and garbage collection) on the
//! embedded store or etcd. The scheduler and controllers come later.

use skiff_control::{
    api::{
        allocator::{Allocator, Ipv4Cidr, PortRange},
        bootstrap, collector, handlers,
        registry::Registry,
    },
    kubeconfig, pki, server,
};

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use skiff_store::{
    Store,
    embedded::{EmbeddedOptions, EmbeddedStore},
    etcd::EtcdStore,
};

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
    /// The address published in the `kubernetes` Service's endpoints (default: --bind-address,
    /// or 127.0.0.1 when that is a wildcard).
    #[arg(long)]
    advertise_address: Option<IpAddr>,
    /// The range Service ClusterIPs are allocated from (its first address is the `kubernetes`
    /// Service's).
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: Ipv4Cidr,
    /// The range NodePorts are allocated from.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: PortRange,
    /// How often the store's history is compacted (`0` turns automatic compaction off), as a
    /// duration like `5m`, `90s` or `1m30s`. Applies to both backends.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    etcd_compaction_interval: Duration,
    /// Revisions of history compaction keeps behind the newest one (watches may resume and
    /// paged lists continue inside this window).
    #[arg(long, default_value_t = 1000)]
    compaction_keep_revisions: i64,
}

/// Parses a Go-style duration (`5m`, `90s`, `1m30s`, `1h`, or plain seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for character in text.chars() {
        if character.is_ascii_digit() {
            number.push(character);
            continue;
        }
        let value: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration like 5m or 90s"))?;
        number.clear();
        total += value
            * match character {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                _ => return Err(format!("{text:?} is not a duration like 5m or 90s")),
            };
    }
    if !number.is_empty() {
        return Err(format!("{text:?} is missing a unit (s, m or h)"));
    }
    Ok(Duration::from_secs(total))
}

/// Compacts an etcd store's history every `interval`, keeping `keep` revisions (the embedded
/// store does this itself).
async fn compact_periodically(store: Arc<dyn Store>, interval: Duration, keep: i64) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let target = match store.revision().await {
            Ok(revision) => revision - keep,
            Err(error) => {
                tracing::warn!(%error, "reading the store revision for compaction failed");
                continue;
            }
        };
        let compacted = store.compacted_revision().await.unwrap_or(0);
        if target > compacted
            && let Err(error) = store.compact(target).await
        {
            tracing::warn!(%error, target, "compacting the store failed");
        }
    }
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

    let store: Arc<dyn Store> = if cli.etcd_servers.is_empty() {
        let directory = cli.data_dir.join("store");
        let options = EmbeddedOptions {
            keep_revisions: cli.compaction_keep_revisions,
            compact_interval: (!cli.etcd_compaction_interval.is_zero())
                .then_some(cli.etcd_compaction_interval),
            ..EmbeddedOptions::default()
        };
        Arc::new(
            EmbeddedStore::open_with(&directory, options).with_context(|| {
                format!("opening the embedded store in {}", directory.display())
            })?,
        )
    } else {
        Arc::new(
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
    let allocator = Allocator::new(
        Arc::clone(&store),
        cli.service_cidr,
        cli.service_node_port_range,
    );
    let (registry, collector_queue) = Registry::new(Arc::clone(&store), allocator);
    let registry = Arc::new(registry);
    let advertise = SocketAddr::from((
        cli.advertise_address
            .unwrap_or_else(|| server::client_address(bound).ip()),
        bound.port(),
    ));
    bootstrap::run(&registry, advertise)
        .await
        .map_err(|error| anyhow::anyhow!("{} ({}): {}", error.code, error.reason, error.message))
        .context("creating the system namespaces and the kubernetes Service")?;
    tokio::spawn(collector::run(Arc::clone(&registry), collector_queue));
    if !cli.etcd_servers.is_empty() && !cli.etcd_compaction_interval.is_zero() {
        tokio::spawn(compact_periodically(
            Arc::clone(&store),
            cli.etcd_compaction_interval,
            cli.compaction_keep_revisions,
        ));
    }
    let kubelet = skiff_control::kubelet_client::KubeletClient::load_or_create(&cli.data_dir)
        .context("setting up the kubelet client certificate (pods/log)")?;
    let resources = Arc::new(handlers::ResourceApi {
        registry,
        server_address: server::client_address(advertise).to_string(),
        kubelet: Arc::new(kubelet),
    });
    let state = Arc::new(server::ApiState {
        store,
        admin_token,
        resources,
        requests: Default::default(),
    });
    server::serve(listener, pki.server_config()?, state).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_ok());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("1m5").is_err());
    }
}
