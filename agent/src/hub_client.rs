//! The agent's side of the hub: submit, cancel, and the stream of decisions.

use std::{collections::HashSet, sync::Arc, time::Duration};

use airlock_proto::v1::{
    agent_service_client::AgentServiceClient, CancelRequest, DecisionEvent, DecisionsRequest,
    SubmitRequest,
};
use airlock_hub::identity::{ClientIdentity, Role};
use tokio::sync::mpsc;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
    Request, Status,
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
}

type Client = AgentServiceClient<InterceptedService<Channel, ClientIdentity>>;

#[derive(Clone)]
pub struct HubClient {
    client: Client,
}

impl HubClient {
    /// Prepares a client; the connection is made on first use, so a hub that is down at
    /// start-up does not stop the agent (held actions then follow the submit fail mode).
    ///
    /// # Errors
    /// [`HubError::Url`] or [`HubError::BadPrincipal`] for bad configuration.
    pub fn new(url: &str, agent_id: &str) -> Result<Self, HubError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|source| HubError::Url { url: url.to_owned(), source })?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let identity = ClientIdentity::new(agent_id, Role::Agent)
            .map_err(|_| HubError::BadPrincipal(agent_id.to_owned()))?;
        let channel = endpoint.connect_lazy();
        Ok(Self { client: AgentServiceClient::with_interceptor(channel, identity) })
    }

    /// # Errors
    /// [`HubError::Rpc`] when the hub is unreachable or refuses.
    pub async fn submit(&self, request: SubmitRequest) -> Result<(), HubError> {
        self.client.clone().submit(request).await?;
        Ok(())
    }

    /// # Errors
    /// [`HubError::Rpc`] when the hub is unreachable or refuses.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<(), HubError> {
        let request = CancelRequest { id: id.to_owned(), reason: reason.to_owned() };
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
