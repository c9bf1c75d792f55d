//! Storage boundary of the hub.
//!
//! Every state change goes through [`Store::update`], which applies a pure rule closure
//! (from [`crate::rules`]) to one request atomically and stamps it with the next hub-wide
//! revision. Streams never keep their own copies of state: they wait on
//! [`Store::subscribe`] and pull [`Store::changed_since`] their last revision, so a SQL
//! backend (an index on `revision`, PostgreSQL `LISTEN/NOTIFY` across replicas) fits the
//! same shape. This slice ships the in-memory backend only.

mod memory;

use std::future::Future;

use airlock_proto::v1::{ApprovalRequest, RequestState};
use tokio::sync::watch;

use crate::error::ApiError;

pub use memory::MemoryStore;

/// A storage backend failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A writer panicked while holding the in-memory state; it can no longer be trusted.
    #[error("in-memory store poisoned by a panicked writer")]
    Poisoned,
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

/// Storage of approval requests, revisions and idempotency results.
///
/// Implementations must make [`update`](Store::update) atomic per request and give every
/// change a revision greater than all earlier ones.
pub trait Store: Send + Sync + 'static {
    /// Stores `request` (assigning its revision) unless its id already exists.
    ///
    /// # Errors
    ///
    /// [`ApiError::Store`] when the backend fails.
    fn insert(
        &self,
        request: ApprovalRequest,
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

    /// Up to `limit` requests in one of `states` (all when empty), newest first.
    ///
    /// # Errors
    ///
    /// [`ApiError::Store`] when the backend fails.
    fn list(
        &self,
        states: &[RequestState],
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

    /// Applies `rule` to the request `id` atomically; stores and announces it when the
    /// rule reports [`Mutation::Changed`]. With an idempotency key already used for this
    /// request, returns the result recorded the first time without running `rule`.
    ///
    /// # Errors
    ///
    /// [`ApiError::NotFound`] for an unknown id, [`ApiError::InvalidArgument`] when the key
    /// was used for another request, whatever `rule` returns, and [`ApiError::Store`].
    fn update<F>(
        &self,
        id: &str,
        idempotency: Option<IdempotencyKey>,
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

    /// A receiver that sees the latest revision after every change.
    fn subscribe(&self) -> watch::Receiver<u64>;
}
