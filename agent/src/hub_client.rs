//! The agent's side of the hub: submit, cancel, and the stream of decisions.
//!
//! Outages: `submit` retries with backoff while the hub is unreachable, for at most the
//! request's TTL; if the hub never answers, the result follows the configured fail mode
//! ([`Submitted::FailOpen`] for `allow`, [`HubError::Unreachable`] for `deny`, the
//! default). The decision stream reconnects with backoff and asks for a replay of every
//! held id, so held requests survive hub restarts and still end by TTL, never silently
//! allowed.

use std::{collections::HashSet, path::Path, sync::Arc, time::Duration};

use crate::config::{FailMode, HubTls};

use airlock_hub::identity::{ClientIdentity, Role};
use airlock_proto::v1::{
    CancelRequest, DecisionEvent, DecisionsRequest, SubmitRequest,
    agent_service_client::AgentServiceClient,
};
use tokio::sync::mpsc;
use tonic::{
    Code, Request, Status,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("invalid hub url `{url}`: {source}")]
    Url {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("agent id `{0}` cannot be sent as a gRPC header")]
    BadPrincipal(String),
    #[error("the hub refused the request: {0}")]
    Rpc(#[from] Status),
    #[error("cannot read {path}: {source}")]
    ReadTls {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad TLS configuration for the hub connection: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The hub stayed unreachable for the whole retry window (fail mode deny).
    #[error("the hub stayed unreachable for {waited:?}: {last}")]
    Unreachable { waited: Duration, last: Status },
}

/// What became of a submit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// The hub stored the request; its decision will come on the decision stream.
    Accepted,
    /// The hub stayed unreachable and the fail mode is `allow`: the caller should release
    /// the action as allowed (and audit that it did so without a human).
    FailOpen,
}

/// Connection settings beyond the URL and agent id.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// mTLS files (required for https:// URLs).
    pub tls: Option<HubTls>,
    /// What to do when the hub stays unreachable at submit time.
    pub fail_mode: FailMode,
}

/// Errors worth retrying: the hub (or the path to it) is down, not refusing.
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}

fn read(path: &Path) -> Result<Vec<u8>, HubError> {
    std::fs::read(path).map_err(|source| HubError::ReadTls {
        path: path.to_owned(),
        source,
    })
}

type Client = AgentServiceClient<InterceptedService<Channel, ClientIdentity>>;

#[derive(Clone)]
pub struct HubClient {
    client: Client,
    fail_mode: FailMode,
}

impl HubClient {
    /// Prepares a client; the connection is made on first use, so a hub that is down at
    /// start-up does not stop the agent (held actions then follow the submit fail mode).
    ///
    /// With `options.tls` the client certificate is the identity (it must name
    /// `airlock:agent/<agent_id>`); without it the dev-mode headers name `agent_id`.
    ///
    /// # Errors
    /// [`HubError::Url`] or [`HubError::BadPrincipal`] for bad configuration,
    /// [`HubError::ReadTls`] / [`HubError::Tls`] for unusable certificate files.
    pub fn new(url: &str, agent_id: &str, options: &HubOptions) -> Result<Self, HubError> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|source| HubError::Url {
                url: url.to_owned(),
                source,
            })?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let identity = match &options.tls {
            Some(tls) => {
                let config = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(read(&tls.ca_cert)?))
                    .identity(Identity::from_pem(
                        read(&tls.client_cert)?,
                        read(&tls.client_key)?,
                    ));
                endpoint = endpoint.tls_config(config).map_err(HubError::Tls)?;
                ClientIdentity::certificate()
            }
            None => ClientIdentity::new(agent_id, Role::Agent)
                .map_err(|_| HubError::BadPrincipal(agent_id.to_owned()))?,
        };
        let channel = endpoint.connect_lazy();
        if options.fail_mode == FailMode::Allow {
            tracing::warn!(
                "hub fail mode is ALLOW: held actions run unapproved when the hub is down"
            );
        }
        Ok(Self {
            client: AgentServiceClient::with_interceptor(channel, identity),
            fail_mode: options.fail_mode,
        })
    }

    /// The configured fail mode.
    pub fn fail_mode(&self) -> FailMode {
        self.fail_mode
    }

    /// Submits, retrying with backoff while the hub is unreachable, for at most the
    /// request's TTL (`requirements.ttl_seconds`, else 5 minutes).
    ///
    /// # Errors
    /// [`HubError::Rpc`] when the hub refuses; [`HubError::Unreachable`] when it stayed
    /// unreachable and the fail mode is deny.
    pub async fn submit(&self, request: SubmitRequest) -> Result<Submitted, HubError> {
        let ttl = request
            .requirements
            .as_ref()
            .map(|r| r.ttl_seconds)
            .filter(|s| *s > 0)
            .map_or(Duration::from_secs(300), |s| {
                Duration::from_secs(u64::from(s))
            });
        self.submit_within(request, ttl).await
    }

    /// [`submit`](Self::submit) with an explicit retry window.
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    pub async fn submit_within(
        &self,
        request: SubmitRequest,
        window: Duration,
    ) -> Result<Submitted, HubError> {
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        loop {
            // Submit is idempotent on the id, so a retry after a lost reply is harmless.
            let last = match self.client.clone().submit(request.clone()).await {
                Ok(_) => return Ok(Submitted::Accepted),
                Err(status) if transient(&status) => status,
                Err(status) => return Err(HubError::Rpc(status)),
            };
            let waited = started.elapsed();
            if waited + backoff >= window {
                return match self.fail_mode {
                    FailMode::Deny => Err(HubError::Unreachable { waited, last }),
                    FailMode::Allow => {
                        tracing::warn!(request = %request.id, ?waited, "hub unreachable; fail mode allow");
                        Ok(Submitted::FailOpen)
                    }
                };
            }
            tracing::warn!(request = %request.id, error = %last.message(), retry_in = ?backoff, "hub unreachable; retrying submit");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// # Errors
    /// [`HubError::Rpc`] when the hub is unreachable or refuses.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<(), HubError> {
        let request = CancelRequest {
            id: id.to_owned(),
            reason: reason.to_owned(),
        };
        self.client.clone().cancel(request).await?;
        Ok(())
    }

    /// Keeps a decision stream open for as long as `out` has a receiver, reconnecting with
    /// backoff. Each (re)connect asks the hub to replay decisions for `awaiting`, so nothing
    /// decided while the stream was down is lost.
    pub async fn stream_decisions(
        self,
        awaiting: Arc<std::sync::Mutex<HashSet<String>>>,
        out: mpsc::Sender<DecisionEvent>,
    ) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let ids: Vec<String> = awaiting
                .lock()
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            // Streams must not inherit the unary timeout.
            let mut request = Request::new(DecisionsRequest { awaiting: ids });
            request.set_timeout(Duration::from_secs(365 * 24 * 3600));
            match self.client.clone().decisions(request).await {
                Ok(response) => {
                    tracing::info!("decision stream connected");
                    backoff = Duration::from_millis(200);
                    let mut stream = response.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(event)) => {
                                if out.send(event).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(status) => {
                                tracing::warn!(error = %status.message(), "decision stream broke");
                                break;
                            }
                        }
                    }
                }
                Err(status) => {
                    tracing::warn!(error = %status.message(), retry_in = ?backoff, "cannot open decision stream");
                }
            }
            if out.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_proto::v1::{ActionContext, Requirements};

    fn closed_port_url() -> String {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("http://127.0.0.1:{port}")
    }

    fn request() -> SubmitRequest {
        SubmitRequest {
            id: "r1".into(),
            action: Some(ActionContext::default()),
            requirements: Some(Requirements {
                ttl_seconds: 1,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn unreachable_hub_follows_the_fail_mode_after_retrying() {
        let url = closed_port_url();
        let deny = HubClient::new(&url, "agent-1", &HubOptions::default()).unwrap();
        let started = std::time::Instant::now();
        let err = deny.submit(request()).await.unwrap_err();
        assert!(matches!(err, HubError::Unreachable { .. }), "{err}");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "it retried within the TTL"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "but not beyond it"
        );

        let options = HubOptions {
            tls: None,
            fail_mode: FailMode::Allow,
        };
        let allow = HubClient::new(&url, "agent-1", &options).unwrap();
        assert_eq!(allow.submit(request()).await.unwrap(), Submitted::FailOpen);
    }
}
