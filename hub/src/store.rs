//! Storage boundary of the hub.
//!
//! Every state change goes through [`Store::insert`] or [`Store::update`], which apply a
//! pure rule closure (from [`crate::rules`]) to one request atomically, stamp it with the
//! next hub-wide revision, record a DURATION grant when the change approved one, and append
//! one entry to the hub's hash-chained audit trail — all in the same transaction, so a
//! crash can never leave a decision without its audit entry or the other way round.
//! Streams never keep their own copies of state: they wait on [`Store::subscribe`] and pull
//! [`Store::changed_since`] their last revision.
//!
//! Backends: [`MemoryStore`] (tests, throwaway dev hubs), [`SqliteStore`] (default: one
//! file, WAL) and [`PgStore`] (several hub replicas on one PostgreSQL; `LISTEN/NOTIFY`
//! carries revisions between them). One behaviour suite (`tests/store_suite.rs`) runs
//! against all three.
//!
//! Revisions: each write takes the next value of one counter *while holding the writer
//! lock until commit* (SQLite's single writer; a locked counter row in PostgreSQL), so a
//! reader that has seen revision N can never later find a commit with a smaller one. A
//! plain SQL sequence would not give that: two transactions may commit out of order.

mod audit;
mod memory;
mod postgres;
mod sqlite;

use std::future::Future;

use airlock_proto::v1::{ApprovalRequest, GrantScope, RequestState};
use tokio::sync::watch;

use crate::error::ApiError;

pub use audit::{AuditRecord, ChainError, GENESIS, verify_chain};
pub use memory::MemoryStore;
pub use postgres::{PgError, PgStore};
pub use sqlite::{SqliteError, SqliteStore, Sync as SqliteSync};

/// A storage backend failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A writer panicked while holding the in-memory state; it can no longer be trusted.
    #[error("in-memory store poisoned by a panicked writer")]
    Poisoned,
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] SqliteError),
    /// PostgreSQL failed.
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// A stored row could not be decoded (corruption or a newer schema).
    #[error("stored request {id:?} cannot be decoded")]
    Decode {
        /// The request id.
        id: String,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
}

/// What a rule closure did to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// The request changed: store it under a new revision and notify watchers.
    Changed,
    /// Nothing changed (a repeated vote, an already-final request).
    Unchanged,
}

/// Outcome of [`Store::insert`].
#[derive(Clone, Debug, PartialEq)]
pub enum Inserted {
    /// The request was new; this is it as stored (with its revision).
    New(ApprovalRequest),
    /// A request with this id already existed; this is the stored one, untouched.
    Existing(ApprovalRequest),
}

/// Scopes an idempotency key to the principal that sent it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    /// Caller principal.
    pub principal: String,
    /// Client-chosen key.
    pub key: String,
}

/// Who made a change and what it was, for the audit trail.
#[derive(Clone, Copy, Debug)]
pub struct Note<'a> {
    /// Principal of the caller (`hub` for expiry).
    pub actor: &'a str,
    /// What happened: `submit`, `vote`, `cancel`, `expire`, `grant`.
    pub action: &'a str,
}

/// Filters of [`Store::list`]; empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Any of these states.
    pub states: Vec<RequestState>,
    /// Exactly this submitting agent.
    pub agent_id: String,
    /// Exactly this requester.
    pub requester: String,
    /// Exactly this host.
    pub host: String,
}

impl ListFilter {
    /// Whether `r` passes the filter.
    #[must_use]
    pub fn matches(&self, r: &ApprovalRequest) -> bool {
        (self.states.is_empty() || self.states.iter().any(|s| *s as i32 == r.state))
            && (self.agent_id.is_empty() || self.agent_id == r.agent_id)
            && (self.requester.is_empty() || self.requester == r.requester)
            && (self.host.is_empty() || self.host == r.host)
    }
}

/// A DURATION grant the hub remembers, bound to one exact action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRecord {
    /// `ActionContext.action_hash` of the approved action.
    pub action_hash: String,
    /// Agent principal the grant applies to.
    pub agent_id: String,
    /// Requester the grant applies to.
    pub requester: String,
    /// End of the grant, Unix ms.
    pub until_unix_ms: i64,
    /// The approved request that created it.
    pub request_id: String,
}

impl GrantRecord {
    /// The grant an approved request carries, when it is a DURATION grant on a known hash.
    #[must_use]
    pub fn of(request: &ApprovalRequest) -> Option<Self> {
        if request.state != RequestState::Approved as i32 {
            return None;
        }
        let grant = request.decision.as_ref()?.grant.as_ref()?;
        if grant.scope != GrantScope::Duration as i32 || grant.action_hash.is_empty() {
            return None;
        }
        Some(Self {
            action_hash: grant.action_hash.clone(),
            agent_id: request.agent_id.clone(),
            requester: request.requester.clone(),
            until_unix_ms: grant.until_unix_ms,
            request_id: request.id.clone(),
        })
    }
}

/// Storage of approval requests, revisions, grants, idempotency results and the audit trail.
///
/// Implementations must make [`insert`](Store::insert) and [`update`](Store::update)
/// atomic and durable when they return, and give every change a revision greater than all
/// earlier ones (across replicas sharing the backend).
pub trait Store: Send + Sync + 'static {
    /// Stores `request` (assigning its revision) unless its id already exists.
    ///
    /// # Errors
    ///
    /// [`ApiError::Store`] when the backend fails.
    fn insert(
        &self,
        request: ApprovalRequest,
        note: Note<'_>,
    ) -> impl Future<Output = Result<Inserted, ApiError>> + Send;

    /// The request with exactly this id.
    ///
    /// # Errors
    ///
    /// [`ApiError::Store`] when the backend fails.
    fn get(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ApprovalRequest>, ApiError>> + Send;

    /// Up to `max` requests whose id starts with `prefix`.
    ///
    /// # Errors
    ///
    /// [`ApiError::Store`] when the backend fails.
    fn find_prefix(
        &self,
        prefix: &str,
        max: usize,
    ) -> impl Future<Output = Result<Vec<ApprovalRequest>, ApiError>> + Send;

    /// Up to `limit` requests passing `filter`, newest first.
    ///
    /// # Errors
    ///
    /// [`ApiError::Store`] when the backend fails.
    fn list(
        &self,
        filter: &ListFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ApprovalRequest>, ApiError>> + Send;

    /// Every pending request and the revision they were read at, in one consistent read.
    ///
    /// # Errors
    ///
    /// [`ApiError::Store`] when the backend fails.
    fn pending_snapshot(
        &self,
    ) -> impl Future<Output = Result<(Vec<ApprovalRequest>, u64), ApiError>> + Send;

    /// Up to `limit` requests whose last change has a revision above `revision`, in
    /// increasing revision order (each request once, in its latest state).
    ///
    /// # Errors
    ///
    /// [`ApiError::Store`] when the backend fails.
    fn changed_since(
        &self,
        revision: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ApprovalRequest>, ApiError>> + Send;

    /// The latest revision.
    ///
    /// # Errors
    ///
    /// [`ApiError::Store`] when the backend fails.
    fn revision(&self) -> impl Future<Output = Result<u64, ApiError>> + Send;

    /// Applies `rule` to the request `id` atomically; stores, audits and announces it when
    /// the rule reports [`Mutation::Changed`]. With an idempotency key already used for
    /// this request, returns the result recorded the first time without running `rule`.
    ///
    /// # Errors
    ///
    /// [`ApiError::NotFound`] for an unknown id, [`ApiError::InvalidArgument`] when the key
    /// was used for another request, whatever `rule` returns, and [`ApiError::Store`].
    fn update<F>(
        &self,
        id: &str,
        idempotency: Option<IdempotencyKey>,
        note: Note<'_>,
        rule: F,
    ) -> impl Future<Output = Result<ApprovalRequest, ApiError>> + Send
    where
        F: FnOnce(&mut ApprovalRequest) -> Result<Mutation, ApiError> + Send;

    /// Ids of pending requests whose deadline is at or before `now_unix_ms`, and the
    /// earliest deadline after it.
    ///
    /// # Errors
    ///
    /// [`ApiError::Store`] when the backend fails.
    fn due(
        &self,
        now_unix_ms: i64,
    ) -> impl Future<Output = Result<(Vec<String>, Option<i64>), ApiError>> + Send;

    /// The active DURATION grant (longest-lasting) for this exact action, agent and
    /// requester at `now_unix_ms`, if any.
    ///
    /// # Errors
    ///
    /// [`ApiError::Store`] when the backend fails.
    fn active_grant(
        &self,
        action_hash: &str,
        agent_id: &str,
        requester: &str,
        now_unix_ms: i64,
    ) -> impl Future<Output = Result<Option<GrantRecord>, ApiError>> + Send;

    /// Up to `limit` audit entries with a sequence number above `after`, in order.
    ///
    /// # Errors
    ///
    /// [`ApiError::Store`] when the backend fails.
    fn audit_since(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<AuditRecord>, ApiError>> + Send;

    /// A receiver that sees the latest revision after every change (on any replica).
    fn subscribe(&self) -> watch::Receiver<u64>;
}

/// Encodes a request for storage.
pub(crate) fn encode(request: &ApprovalRequest) -> Vec<u8> {
    prost::Message::encode_to_vec(request)
}

/// Decodes a stored request.
pub(crate) fn decode(id: &str, bytes: &[u8]) -> Result<ApprovalRequest, StoreError> {
    <ApprovalRequest as prost::Message>::decode(bytes).map_err(|source| StoreError::Decode {
        id: id.to_owned(),
        source,
    })
}

/// Converts a revision or count to the signed 64-bit integers SQL stores.
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Converts a stored signed integer back (negative values cannot occur; they read as 0).
pub(crate) fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
