//! `airlock.v1.AgentService`: Submit, Decisions, Cancel.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use airlock_proto::v1::agent_service_server::AgentService;
use airlock_proto::v1::{
    ApprovalRequest, CancelRequest, CancelResponse, DecisionEvent, DecisionsRequest, SubmitRequest,
    SubmitResponse,
};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Hub, STREAM_BATCH, STREAM_BUFFER};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::rules;
use crate::store::{Inserted, Note, Store};

/// Handlers of the agent-facing service.
#[derive(Debug)]
pub struct AgentApi<S> {
    hub: Arc<Hub<S>>,
}

impl<S> AgentApi<S> {
    /// Handlers over `hub`.
    #[must_use]
    pub fn new(hub: Arc<Hub<S>>) -> Self {
        Self { hub }
    }
}

fn decision_event(request: &ApprovalRequest) -> DecisionEvent {
    DecisionEvent {
        id: request.id.clone(),
        state: request.state,
        decision: request.decision.clone(),
    }
}

type DecisionStream = Pin<Box<dyn Stream<Item = Result<DecisionEvent, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> AgentService for AgentApi<S> {
    #[tracing::instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_agent()?;
        let now = rules::now_unix_ms();
        let candidate = rules::new_request(
            &caller,
            request.into_inner(),
            now,
            self.hub.config.default_ttl,
        )?;
        // A DURATION grant for this exact action (same hash, agent and requester) approves
        // the request as it is stored; the decision and the audit entry name the grant.
        let hash = candidate
            .action
            .as_ref()
            .map(|a| a.action_hash.as_str())
            .unwrap_or_default();
        let grant = if hash.is_empty() {
            None
        } else {
            self.hub
                .store
                .active_grant(hash, &candidate.agent_id, &candidate.requester, now)
                .await?
        };
        let mut to_store = candidate.clone();
        let action = match &grant {
            Some(grant) => {
                rules::apply_grant(&mut to_store, grant, now);
                "submit+grant"
            }
            None => "submit",
        };
        let note = Note {
            actor: &caller.principal,
            action,
        };
        let stored = match self.hub.store.insert(to_store, note).await? {
            Inserted::New(stored) => {
                tracing::info!(agent = %caller.principal, revision = stored.revision, "request submitted");
                stored
            }
            Inserted::Existing(stored) if rules::same_submission(&stored, &candidate) => stored,
            Inserted::Existing(stored) => return Err(ApiError::AlreadyExists(stored.id).into()),
        };
        Ok(Response::new(SubmitResponse {
            request: Some(stored),
        }))
    }

    type DecisionsStream = DecisionStream;

    #[tracing::instrument(skip_all, fields(awaiting = request.get_ref().awaiting.len()))]
    async fn decisions(
        &self,
        request: Request<DecisionsRequest>,
    ) -> Result<Response<Self::DecisionsStream>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_agent()?;
        let awaiting = request.into_inner().awaiting;
        let hub = Arc::clone(&self.hub);
        // Subscribe and read the revision before replaying, so nothing that becomes final
        // in between is missed; ids replayed are skipped later (final states never change).
        let mut changes = hub.store.subscribe();
        changes.borrow_and_update();
        let mut seen = hub.store.revision().await?;
        let mut replayed = HashSet::new();
        let mut replay = Vec::new();
        for id in awaiting {
            if let Some(stored) = hub.store.get(&id).await?
                && stored.agent_id == caller.principal
                && rules::is_final(stored.state)
                && replayed.insert(stored.id.clone())
            {
                replay.push(decision_event(&stored));
            }
        }

        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let stopped = hub.stopped();
        tokio::spawn(async move {
            tokio::pin!(stopped);
            for event in replay {
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                let batch = match hub.store.changed_since(seen, STREAM_BATCH).await {
                    Ok(batch) => batch,
                    Err(err) => {
                        let _closed = tx.send(Err(err.into())).await;
                        return;
                    }
                };
                let full = batch.len() == STREAM_BATCH;
                for changed in batch {
                    seen = changed.revision;
                    if changed.agent_id == caller.principal
                        && rules::is_final(changed.state)
                        && !replayed.contains(&changed.id)
                        && tx.send(Ok(decision_event(&changed))).await.is_err()
                    {
                        return;
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                    () = &mut stopped => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelResponse>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_agent()?;
        let CancelRequest { id, reason } = request.into_inner();
        let now = rules::now_unix_ms();
        let stored = self
            .hub
            .store
            .update(
                &id,
                None,
                Note {
                    actor: &caller.principal,
                    action: "cancel",
                },
                |r| rules::cancel(r, &caller, &reason, now),
            )
            .await?;
        Ok(Response::new(CancelResponse {
            request: Some(stored),
        }))
    }
}
