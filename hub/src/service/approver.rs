//! `airlock.v1.ApproverService`: Watch, List, Get, Decide.

use std::pin::Pin;
use std::sync::Arc;

use airlock_proto::v1::approver_service_server::ApproverService;
use airlock_proto::v1::{
    ApprovalRequest, DecideRequest, DecideResponse, GetRequest, GetResponse, GrantScope, Heartbeat,
    ListRequest, ListResponse, RequestState, Snapshot, Verdict, WatchEvent, WatchRequest,
    watch_event,
};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Hub, STREAM_BATCH, STREAM_BUFFER};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::rules::{self, Ballot};
use crate::store::{IdempotencyKey, ListFilter, Note, Store};

/// `List` limit when the client gives none.
const DEFAULT_LIST_LIMIT: usize = 100;
/// Largest `List` limit honoured.
const MAX_LIST_LIMIT: usize = 1000;
/// Shortest id prefix `Get` resolves.
const MIN_PREFIX: usize = 4;
/// Longest idempotency key or channel name.
const MAX_KEY_LEN: usize = 256;
/// Longest reason.
const MAX_REASON_LEN: usize = 8192;

/// Handlers of the approver-facing service.
#[derive(Debug)]
pub struct ApproverApi<S> {
    hub: Arc<Hub<S>>,
}

impl<S> ApproverApi<S> {
    /// Handlers over `hub`.
    #[must_use]
    pub fn new(hub: Arc<Hub<S>>) -> Self {
        Self { hub }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, Status>> + Send>>;

fn event(event: watch_event::Event) -> Result<WatchEvent, Status> {
    Ok(WatchEvent { event: Some(event) })
}

/// `request` without its sealed raw context: only auditors can open it, so approvers
/// (and every watcher fan-out) need not carry the ciphertext.
fn for_approver(mut request: ApprovalRequest) -> ApprovalRequest {
    if let Some(action) = request.action.as_mut() {
        action.sealed_context = Vec::new();
    }
    request
}

impl<S: Store> ApproverApi<S> {
    /// The request `id`, or the only one whose id starts with `id`.
    async fn resolve(&self, id: &str) -> Result<ApprovalRequest, ApiError> {
        if let Some(found) = self.hub.store.get(id).await? {
            return Ok(found);
        }
        if id.len() < MIN_PREFIX {
            return Err(ApiError::NotFound(id.to_owned()));
        }
        let mut matches = self.hub.store.find_prefix(id, 2).await?;
        match (matches.pop(), matches.is_empty()) {
            (Some(only), true) => Ok(only),
            (Some(_), false) => Err(ApiError::InvalidArgument(format!(
                "id prefix {id:?} matches several requests"
            ))),
            (None, _) => Err(ApiError::NotFound(id.to_owned())),
        }
    }
}

#[tonic::async_trait]
impl<S: Store> ApproverService for ApproverApi<S> {
    type WatchStream = WatchStream;

    #[tracing::instrument(skip_all, fields(since = request.get_ref().since_revision))]
    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_approver()?;
        let since = request.into_inner().since_revision;
        let hub = Arc::clone(&self.hub);
        let mut changes = hub.store.subscribe();
        changes.borrow_and_update();
        let current = hub.store.revision().await?;
        // A revision from the future means the hub lost its state (in-memory restart):
        // start the client over with a snapshot rather than silently skipping changes.
        let (first, mut seen) = if since == 0 || since > current {
            let (requests, revision) = hub.store.pending_snapshot().await?;
            let requests = requests.into_iter().map(for_approver).collect();
            (
                Some(watch_event::Event::Snapshot(Snapshot {
                    requests,
                    revision,
                })),
                revision,
            )
        } else {
            (None, since)
        };

        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let heartbeat = hub.config.heartbeat;
        let stopped = hub.stopped();
        tokio::spawn(async move {
            tokio::pin!(stopped);
            if let Some(first) = first
                && tx.send(event(first)).await.is_err()
            {
                return;
            }
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
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
                    if tx
                        .send(event(watch_event::Event::Changed(for_approver(changed))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    _ = ticks.tick() => {
                        let beat = Heartbeat { revision: seen, at_unix_ms: rules::now_unix_ms() };
                        if tx.send(event(watch_event::Event::Heartbeat(beat))).await.is_err() {
                            return;
                        }
                    }
                    () = tx.closed() => return,
                    () = &mut stopped => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all)]
    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_approver()?;
        let ListRequest {
            states,
            limit,
            agent_id,
            requester,
            host,
        } = request.into_inner();
        let states = states
            .into_iter()
            .map(|s| {
                RequestState::try_from(s)
                    .map_err(|_| ApiError::InvalidArgument(format!("unknown state {s}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let limit = match usize::try_from(limit).unwrap_or(MAX_LIST_LIMIT) {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        let requests = self
            .hub
            .store
            .list(
                &ListFilter {
                    states,
                    agent_id,
                    requester,
                    host,
                },
                limit,
            )
            .await?
            .into_iter()
            .map(for_approver)
            .collect();
        Ok(Response::new(ListResponse { requests }))
    }

    #[tracing::instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_approver()?;
        let found = self.resolve(&request.get_ref().id).await?;
        Ok(Response::new(GetResponse {
            request: Some(for_approver(found)),
        }))
    }

    #[tracing::instrument(skip_all, fields(id = %request.get_ref().id, verdict = request.get_ref().verdict))]
    async fn decide(
        &self,
        request: Request<DecideRequest>,
    ) -> Result<Response<DecideResponse>, Status> {
        let caller = Caller::of(&request)?;
        caller.require_approver()?;
        let decide = request.into_inner();
        let unknown =
            |field: &str, v: i32| ApiError::InvalidArgument(format!("{field}: unknown value {v}"));
        if decide.idempotency_key.len() > MAX_KEY_LEN || decide.channel.len() > MAX_KEY_LEN {
            return Err(ApiError::InvalidArgument(format!(
                "idempotency_key and channel are limited to {MAX_KEY_LEN} bytes"
            ))
            .into());
        }
        if decide.reason.len() > MAX_REASON_LEN {
            return Err(ApiError::InvalidArgument(format!(
                "reason is limited to {MAX_REASON_LEN} bytes"
            ))
            .into());
        }
        let ballot = Ballot {
            verdict: Verdict::try_from(decide.verdict)
                .map_err(|_| unknown("verdict", decide.verdict))?,
            reason: decide.reason,
            scope: GrantScope::try_from(decide.scope)
                .map_err(|_| unknown("scope", decide.scope))?,
            duration_seconds: decide.duration_seconds,
            channel: decide.channel,
        };
        let key = (!decide.idempotency_key.is_empty()).then(|| IdempotencyKey {
            principal: caller.principal.to_lowercase(),
            key: decide.idempotency_key,
        });
        let now = rules::now_unix_ms();
        let stored = self
            .hub
            .store
            .update(
                &decide.id,
                key,
                Note {
                    actor: &caller.principal,
                    action: "vote",
                },
                |r| rules::vote(r, &caller, ballot, now),
            )
            .await?;
        tracing::info!(approver = %caller.principal, state = stored.state, "vote cast");
        Ok(Response::new(DecideResponse {
            request: Some(for_approver(stored)),
        }))
    }
}
