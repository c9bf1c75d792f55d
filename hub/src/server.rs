//! Starting the hub: flags, listener checks, service wiring, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use airlock_proto::v1::agent_service_server::AgentServiceServer;
use airlock_proto::v1::approver_service_server::ApproverServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::identity::Authenticator;
use crate::service::{AgentApi, ApproverApi, Hub, HubConfig};
use crate::store::{MemoryStore, PgStore, SqliteStore, SqliteSync, Store, StoreError};
use crate::{expiry, rules};

/// Where the hub keeps its SQLite file unless told otherwise.
pub const DEFAULT_SQLITE: &str = "/var/lib/airlock/hub.db";

/// Largest message a client may send (a submit with a sealed context fits easily).
const MAX_MESSAGE: usize = 1024 * 1024;

/// Where the hub keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSpec {
    /// `memory`: lost on restart (tests, demos).
    Memory,
    /// `sqlite:PATH` (or a bare path): one file, WAL.
    Sqlite(PathBuf),
    /// `postgres://...` or `postgresql://...`: shared by replicas.
    Postgres(String),
}

impl FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" {
            Ok(Self::Memory)
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(Self::Postgres(s.to_owned()))
        } else if let Some(path) = s.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err("sqlite: needs a path".to_owned());
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else if s.is_empty() {
            Err("empty store".to_owned())
        } else {
            Ok(Self::Sqlite(PathBuf::from(s)))
        }
    }
}

/// Flags of `airlock hub serve`.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound one is logged).
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    /// State: `sqlite:PATH`, `postgres://user@host/db` (replicas), or `memory`
    /// [default: sqlite:/var/lib/airlock/hub.db; memory with --dev-tokens].
    #[arg(long, env = "AIRLOCK_HUB_STORE")]
    pub store: Option<StoreSpec>,
    /// SQLite durability: `full` fsyncs every commit; `normal` survives a hub crash but
    /// may lose the last commits on power loss.
    #[arg(long, value_enum, default_value = "full")]
    pub sqlite_sync: SqliteSync,
    /// How long a request stays pending when its rule sets no TTL (e.g. 300s, 5m).
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub default_ttl: Duration,
    /// Interval between heartbeats on approver watch streams.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, hide = true)]
    pub heartbeat: Duration,
    /// The hub's TLS certificate (PEM), e.g. from `airlock hub ca issue --role server`.
    #[arg(long, env = "AIRLOCK_HUB_CERT", required_unless_present = "dev_tokens")]
    pub tls_cert: Option<PathBuf>,
    /// The hub's TLS private key (PEM).
    #[arg(long, env = "AIRLOCK_HUB_KEY", required_unless_present = "dev_tokens")]
    pub tls_key: Option<PathBuf>,
    /// CA that signs client certificates (PEM); clients without one are refused.
    #[arg(
        long,
        env = "AIRLOCK_HUB_CLIENT_CA",
        required_unless_present = "dev_tokens"
    )]
    pub client_ca: Option<PathBuf>,
    /// Dev identity mode instead of mTLS: trust x-airlock-principal/x-airlock-role headers.
    ///
    /// Anyone who can connect can claim any identity, so this mode only runs on a
    /// loopback address and logs a warning.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "client_ca"])]
    pub dev_tokens: bool,
}

/// How callers prove who they are.
#[derive(Clone, Debug)]
pub enum IdentityMode {
    /// mTLS: server certificate and key, and the CA client certificates must chain to.
    Tls {
        /// Server certificate chain (PEM).
        cert_pem: Vec<u8>,
        /// Server key (PEM).
        key_pem: Vec<u8>,
        /// Client CA (PEM).
        client_ca_pem: Vec<u8>,
    },
    /// Trusted headers, loopback only.
    DevHeaders,
}

impl IdentityMode {
    /// Reads the three PEM files of the mTLS mode.
    ///
    /// # Errors
    ///
    /// [`HubError::ReadTls`] when a file cannot be read.
    pub fn tls_files(cert: &Path, key: &Path, client_ca: &Path) -> Result<Self, HubError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| HubError::ReadTls {
                path: p.to_owned(),
                source,
            })
        };
        Ok(Self::Tls {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: read(client_ca)?,
        })
    }
}

/// Why the hub could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// Dev identity mode was asked for on an address other hosts can reach.
    #[error("refusing dev identity mode on non-loopback address {0}: it trusts client headers")]
    DevModeNotLoopback(SocketAddr),
    /// Neither mTLS files nor --dev-tokens were given.
    #[error(
        "no identity mode: pass --tls-cert, --tls-key and --client-ca (or --dev-tokens on loopback)"
    )]
    NoIdentityMode,
    /// A TLS file could not be read.
    #[error("cannot read {path}")]
    ReadTls {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The default TTL is zero or longer than the hub allows.
    #[error("default TTL {0:?} must be between 1 second and 7 days")]
    InvalidTtl(Duration),
    /// The store could not be opened.
    #[error("cannot open the hub store")]
    Store(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The listener's address could not be read back.
    #[error("cannot read the listener address")]
    LocalAddr(#[source] std::io::Error),
    /// The reflection service could not load the descriptor set.
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
}

impl ServeArgs {
    /// Validates the flags into a hub configuration.
    ///
    /// # Errors
    ///
    /// [`HubError::InvalidTtl`].
    pub fn config(&self) -> Result<HubConfig, HubError> {
        if self.default_ttl < Duration::from_secs(1) || self.default_ttl > rules::MAX_TTL {
            return Err(HubError::InvalidTtl(self.default_ttl));
        }
        Ok(HubConfig {
            default_ttl: self.default_ttl,
            heartbeat: self.heartbeat.max(Duration::from_millis(100)),
        })
    }

    /// The identity mode the flags ask for.
    ///
    /// # Errors
    ///
    /// [`HubError::NoIdentityMode`], [`HubError::ReadTls`].
    pub fn identity(&self) -> Result<IdentityMode, HubError> {
        if self.dev_tokens {
            return Ok(IdentityMode::DevHeaders);
        }
        match (&self.tls_cert, &self.tls_key, &self.client_ca) {
            (Some(cert), Some(key), Some(ca)) => IdentityMode::tls_files(cert, key, ca),
            _ => Err(HubError::NoIdentityMode),
        }
    }
}

/// Runs the hub on `args.listen` until `shutdown` completes.
///
/// # Errors
///
/// [`HubError::DevModeNotLoopback`] before binding a non-loopback address in dev mode,
/// the errors of [`ServeArgs::config`] and [`ServeArgs::identity`], [`HubError::Store`],
/// [`HubError::Bind`], and those of [`serve_with_listener`].
pub async fn serve(args: ServeArgs, shutdown: impl Future<Output = ()>) -> Result<(), HubError> {
    let config = args.config()?;
    let identity = args.identity()?;
    if matches!(identity, IdentityMode::DevHeaders) && !args.listen.ip().is_loopback() {
        return Err(HubError::DevModeNotLoopback(args.listen));
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| HubError::Bind {
            addr: args.listen,
            source,
        })?;
    let store = args.store.clone().unwrap_or_else(|| {
        if args.dev_tokens {
            StoreSpec::Memory
        } else {
            StoreSpec::Sqlite(PathBuf::from(DEFAULT_SQLITE))
        }
    });
    match &store {
        StoreSpec::Memory => {
            tracing::warn!("memory store: every request is lost when the hub stops");
            serve_with_listener(listener, MemoryStore::new(), config, identity, shutdown).await
        }
        StoreSpec::Sqlite(path) => {
            let store = SqliteStore::open(path, args.sqlite_sync).map_err(StoreError::from)?;
            tracing::info!(path = %path.display(), "SQLite store open");
            serve_with_listener(listener, store, config, identity, shutdown).await
        }
        StoreSpec::Postgres(url) => {
            let store = PgStore::connect(url).await.map_err(StoreError::from)?;
            tracing::info!("PostgreSQL store connected");
            serve_with_listener(listener, store, config, identity, shutdown).await
        }
    }
}

/// Runs the hub over `store` on an already-bound listener.
///
/// Tests bind `127.0.0.1:0`, read the port, and pass the listener here.
///
/// # Errors
///
/// [`HubError::DevModeNotLoopback`] when dev mode is asked for on a non-loopback
/// listener, [`HubError::LocalAddr`], [`HubError::Reflection`], [`HubError::Transport`]
/// (including unusable TLS material).
pub async fn serve_with_listener<S: Store>(
    listener: TcpListener,
    store: S,
    config: HubConfig,
    identity: IdentityMode,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HubError> {
    let addr = listener.local_addr().map_err(HubError::LocalAddr)?;
    let mut builder = Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
    let auth = match identity {
        IdentityMode::DevHeaders => {
            if !addr.ip().is_loopback() {
                return Err(HubError::DevModeNotLoopback(addr));
            }
            tracing::warn!(
                %addr,
                "DEV IDENTITY MODE: the hub trusts x-airlock-principal/x-airlock-role headers \
                 from any local client; do not use this where untrusted local users exist"
            );
            Authenticator::DevHeaders
        }
        IdentityMode::Tls {
            cert_pem,
            key_pem,
            client_ca_pem,
        } => {
            let tls = ServerTlsConfig::new()
                .identity(Identity::from_pem(cert_pem, key_pem))
                .client_ca_root(Certificate::from_pem(client_ca_pem))
                .client_auth_optional(false);
            builder = builder.tls_config(tls)?;
            Authenticator::Cert
        }
    };

    let hub = Hub::new(store, config);
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in ["airlock.v1.AgentService", "airlock.v1.ApproverService", ""] {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(airlock_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let expiry = tokio::spawn(expiry::run(Arc::clone(&hub), hub.stopped()));
    let stop_streams = {
        let hub = Arc::clone(&hub);
        async move {
            shutdown.await;
            tracing::info!("hub shutting down");
            hub.stop();
        }
    };

    tracing::info!(%addr, "hub listening");
    let result = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(InterceptedService::new(
            AgentServiceServer::new(AgentApi::new(Arc::clone(&hub)))
                .max_decoding_message_size(MAX_MESSAGE),
            auth,
        ))
        .add_service(InterceptedService::new(
            ApproverServiceServer::new(ApproverApi::new(Arc::clone(&hub)))
                .max_decoding_message_size(MAX_MESSAGE),
            auth,
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop_streams)
        .await;
    hub.stop();
    if let Err(err) = expiry.await {
        tracing::error!(error = %err, "expiry task ended abnormally");
    }
    tracing::info!("hub stopped");
    result.map_err(HubError::from)
}
