//! Starting the hub: flags, listener checks, service wiring, graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use airlock_proto::v1::agent_service_server::AgentServiceServer;
use airlock_proto::v1::approver_service_server::ApproverServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::identity::DevHeaderIdentity;
use crate::service::{AgentApi, ApproverApi, Hub, HubConfig};
use crate::store::MemoryStore;
use crate::{expiry, rules};

/// Flags of `airlock hub`.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound one is logged).
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub listen: SocketAddr,
    /// How long a request stays pending when its rule sets no TTL (e.g. 300s, 5m).
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub default_ttl: Duration,
    /// Interval between heartbeats on approver watch streams.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, hide = true)]
    pub heartbeat: Duration,
    /// Dev identity mode: trust the x-airlock-principal / x-airlock-role headers.
    ///
    /// Anyone who can connect can claim any identity, so this mode only runs on a
    /// loopback address. It is required until mTLS identities (the future default) exist.
    #[arg(long, required = true)]
    pub dev_tokens: bool,
}

/// Why the hub could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// Dev identity mode was asked for on an address other hosts can reach.
    #[error("refusing dev identity mode on non-loopback address {0}: it trusts client headers")]
    DevModeNotLoopback(SocketAddr),
    /// No identity mode was chosen (mTLS is not implemented yet).
    #[error("no identity mode: pass --dev-tokens (loopback only); mTLS is not available yet")]
    NoIdentityMode,
    /// The default TTL is zero or longer than the hub allows.
    #[error("default TTL {0:?} must be between 1 second and 7 days")]
    InvalidTtl(Duration),
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
    /// [`HubError::NoIdentityMode`] without `--dev-tokens`, [`HubError::InvalidTtl`].
    pub fn config(&self) -> Result<HubConfig, HubError> {
        if !self.dev_tokens {
            return Err(HubError::NoIdentityMode);
        }
        if self.default_ttl < Duration::from_secs(1) || self.default_ttl > rules::MAX_TTL {
            return Err(HubError::InvalidTtl(self.default_ttl));
        }
        Ok(HubConfig {
            default_ttl: self.default_ttl,
            heartbeat: self.heartbeat.max(Duration::from_millis(100)),
        })
    }
}

/// Runs the hub on `args.listen` until `shutdown` completes.
///
/// # Errors
///
/// [`HubError::DevModeNotLoopback`] before binding a non-loopback address in dev mode,
/// the errors of [`ServeArgs::config`], [`HubError::Bind`], and those of
/// [`serve_with_listener`].
pub async fn serve(args: ServeArgs, shutdown: impl Future<Output = ()>) -> Result<(), HubError> {
    let config = args.config()?;
    if !args.listen.ip().is_loopback() {
        return Err(HubError::DevModeNotLoopback(args.listen));
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| HubError::Bind {
            addr: args.listen,
            source,
        })?;
    serve_with_listener(listener, config, shutdown).await
}

/// Runs the hub (dev identity mode, in-memory store) on an already-bound listener.
///
/// Tests bind `127.0.0.1:0`, read the port, and pass the listener here.
///
/// # Errors
///
/// [`HubError::DevModeNotLoopback`] when the listener is not on loopback,
/// [`HubError::LocalAddr`], [`HubError::Reflection`], [`HubError::Transport`].
pub async fn serve_with_listener(
    listener: TcpListener,
    config: HubConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), HubError> {
    let addr = listener.local_addr().map_err(HubError::LocalAddr)?;
    if !addr.ip().is_loopback() {
        return Err(HubError::DevModeNotLoopback(addr));
    }
    tracing::warn!(
        %addr,
        "DEV IDENTITY MODE: the hub trusts x-airlock-principal/x-airlock-role headers from \
         any local client; do not use this where untrusted local users exist"
    );

    let hub = Hub::new(MemoryStore::new(), config);
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
    let result = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(AgentServiceServer::with_interceptor(
            AgentApi::new(Arc::clone(&hub)),
            DevHeaderIdentity,
        ))
        .add_service(ApproverServiceServer::with_interceptor(
            ApproverApi::new(Arc::clone(&hub)),
            DevHeaderIdentity,
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
