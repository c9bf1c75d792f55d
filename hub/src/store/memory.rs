//! In-memory [`Store`]: everything behind one mutex; lost on restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use airlock_proto::v1::{ApprovalRequest, RequestState};
use tokio::sync::watch;

use super::audit::{self, AuditRecord, GENESIS};
use super::{GrantRecord, IdempotencyKey, Inserted, ListFilter, Mutation, Note, Store, StoreError};
use crate::error::ApiError;
use crate::rules;

/// Keeps requests in memory. Suited to tests and single-process dev hubs.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    revision_tx: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    revision: u64,
    requests: HashMap<String, ApprovalRequest>,
    /// revision of each request's last change -> id (each id appears once).
    by_revision: BTreeMap<u64, String>,
    /// (deadline, id) of pending requests.
    deadlines: BTreeSet<(i64, String)>,
    /// First result of each idempotent update: key -> (request id, request after it).
    idempotent: HashMap<IdempotencyKey, (String, ApprovalRequest)>,
    /// DURATION grants, oldest first.
    grants: Vec<GrantRecord>,
    /// The audit chain.
    audit: Vec<AuditRecord>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 0.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            revision_tx: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, ApiError> {
        self.inner.lock().map_err(|_| StoreError::Poisoned.into())
    }

    fn announce(&self, revision: u64) {
        // send_replace: no receivers is fine, there may simply be no stream open.
        self.revision_tx.send_replace(revision);
    }
}

impl Inner {
    /// Stamps `request` with the next revision, indexes, audits it and keeps its grant.
    fn put(&mut self, mut request: ApprovalRequest, note: Note<'_>) -> ApprovalRequest {
        self.revision += 1;
        if let Some(old) = self.requests.get(&request.id) {
            self.by_revision.remove(&old.revision);
            self.deadlines
                .remove(&(old.expires_unix_ms, old.id.clone()));
        }
        request.revision = self.revision;
        self.by_revision
            .insert(request.revision, request.id.clone());
        if request.state == RequestState::Pending as i32 {
            self.deadlines
                .insert((request.expires_unix_ms, request.id.clone()));
        }
        self.requests.insert(request.id.clone(), request.clone());
        if let Some(grant) = GrantRecord::of(&request) {
            self.grants.push(grant);
        }
        let prev = self.audit.last().map_or(GENESIS, |r| r.hash.as_str());
        let seq = self.audit.len() as u64 + 1;
        let record = audit::entry(
            seq,
            prev,
            rules::now_unix_ms(),
            &request,
            &super::encode(&request),
            note,
        );
        self.audit.push(record);
        request
    }
}

impl Store for MemoryStore {
    async fn insert(&self, request: ApprovalRequest, note: Note<'_>) -> Result<Inserted, ApiError> {
        let stored = {
            let mut inner = self.lock()?;
            if let Some(existing) = inner.requests.get(&request.id) {
                return Ok(Inserted::Existing(existing.clone()));
            }
            inner.put(request, note)
        };
        self.announce(stored.revision);
        Ok(Inserted::New(stored))
    }

    async fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, ApiError> {
        Ok(self.lock()?.requests.get(id).cloned())
    }

    async fn find_prefix(
        &self,
        prefix: &str,
        max: usize,
    ) -> Result<Vec<ApprovalRequest>, ApiError> {
        Ok(self
            .lock()?
            .requests
            .values()
            .filter(|r| r.id.starts_with(prefix))
            .take(max)
            .cloned()
            .collect())
    }

    async fn list(
        &self,
        filter: &ListFilter,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, ApiError> {
        let inner = self.lock()?;
        let mut found: Vec<ApprovalRequest> = inner
            .requests
            .values()
            .filter(|r| filter.matches(r))
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            b.created_unix_ms
                .cmp(&a.created_unix_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        found.truncate(limit);
        Ok(found)
    }

    async fn pending_snapshot(&self) -> Result<(Vec<ApprovalRequest>, u64), ApiError> {
        let inner = self.lock()?;
        let mut pending: Vec<ApprovalRequest> = inner
            .requests
            .values()
            .filter(|r| r.state == RequestState::Pending as i32)
            .cloned()
            .collect();
        pending.sort_by_key(|r| r.revision);
        Ok((pending, inner.revision))
    }

    async fn changed_since(
        &self,
        revision: u64,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, ApiError> {
        let inner = self.lock()?;
        Ok(inner
            .by_revision
            .range(revision.saturating_add(1)..)
            .take(limit)
            .filter_map(|(_, id)| inner.requests.get(id).cloned())
            .collect())
    }

    async fn revision(&self) -> Result<u64, ApiError> {
        Ok(self.lock()?.revision)
    }

    async fn update<F>(
        &self,
        id: &str,
        idempotency: Option<IdempotencyKey>,
        note: Note<'_>,
        rule: F,
    ) -> Result<ApprovalRequest, ApiError>
    where
        F: FnOnce(&mut ApprovalRequest) -> Result<Mutation, ApiError> + Send,
    {
        let (result, changed) = {
            let mut inner = self.lock()?;
            if let Some(key) = &idempotency
                && let Some((first_id, first_result)) = inner.idempotent.get(key)
            {
                if first_id != id {
                    return Err(ApiError::InvalidArgument(
                        "idempotency key already used for another request".to_owned(),
                    ));
                }
                return Ok(first_result.clone());
            }
            let mut request = inner
                .requests
                .get(id)
                .cloned()
                .ok_or_else(|| ApiError::NotFound(id.to_owned()))?;
            let (result, changed) = match rule(&mut request)? {
                Mutation::Changed => (inner.put(request, note), true),
                Mutation::Unchanged => (request, false),
            };
            if let Some(key) = idempotency {
                inner
                    .idempotent
                    .insert(key, (id.to_owned(), result.clone()));
            }
            (result, changed)
        };
        if changed {
            self.announce(result.revision);
        }
        Ok(result)
    }

    async fn due(&self, now_unix_ms: i64) -> Result<(Vec<String>, Option<i64>), ApiError> {
        let inner = self.lock()?;
        let mut due = Vec::new();
        let mut next = None;
        for (deadline, id) in &inner.deadlines {
            if *deadline <= now_unix_ms {
                due.push(id.clone());
            } else {
                next = Some(*deadline);
                break;
            }
        }
        Ok((due, next))
    }

    async fn active_grant(
        &self,
        action_hash: &str,
        agent_id: &str,
        requester: &str,
        now_unix_ms: i64,
    ) -> Result<Option<GrantRecord>, ApiError> {
        Ok(self
            .lock()?
            .grants
            .iter()
            .filter(|g| {
                g.action_hash == action_hash
                    && g.agent_id == agent_id
                    && g.requester == requester
                    && g.until_unix_ms > now_unix_ms
            })
            .max_by_key(|g| g.until_unix_ms)
            .cloned())
    }

    async fn audit_since(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, ApiError> {
        let inner = self.lock()?;
        let start = usize::try_from(after).unwrap_or(usize::MAX);
        Ok(inner
            .audit
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTE: Note<'static> = Note {
        actor: "test",
        action: "test",
    };

    #[tokio::test]
    async fn idempotent_update_runs_once() {
        let store = MemoryStore::new();
        for id in ["a", "b"] {
            let r = ApprovalRequest {
                id: id.to_owned(),
                state: RequestState::Pending as i32,
                ..ApprovalRequest::default()
            };
            store.insert(r, NOTE).await.unwrap();
        }
        let key = IdempotencyKey {
            principal: "p".to_owned(),
            key: "k".to_owned(),
        };
        let first = store
            .update("a", Some(key.clone()), NOTE, |r| {
                r.host = "first".to_owned();
                Ok(Mutation::Changed)
            })
            .await
            .unwrap();
        let again = store
            .update("a", Some(key.clone()), NOTE, |_| {
                panic!("must not run twice")
            })
            .await
            .unwrap();
        assert_eq!(first, again);
        assert!(matches!(
            store
                .update("b", Some(key), NOTE, |_| Ok(Mutation::Unchanged))
                .await,
            Err(ApiError::InvalidArgument(_))
        ));
    }
}
