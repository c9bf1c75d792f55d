//! In-memory [`Store`]: everything behind one mutex; lost on restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use airlock_proto::v1::{ApprovalRequest, RequestState};
use tokio::sync::watch;

use super::{IdempotencyKey, Inserted, Mutation, Store, StoreError};
use crate::error::ApiError;

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
    /// Stamps `request` with the next revision and indexes it.
    fn put(&mut self, mut request: ApprovalRequest) -> ApprovalRequest {
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
        request
    }
}

impl Store for MemoryStore {
    async fn insert(&self, request: ApprovalRequest) -> Result<Inserted, ApiError> {
        let stored = {
            let mut inner = self.lock()?;
            if let Some(existing) = inner.requests.get(&request.id) {
                return Ok(Inserted::Existing(existing.clone()));
            }
            inner.put(request)
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
        states: &[RequestState],
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, ApiError> {
        let inner = self.lock()?;
        let mut found: Vec<ApprovalRequest> = inner
            .requests
            .values()
            .filter(|r| states.is_empty() || states.iter().any(|s| *s as i32 == r.state))
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
                Mutation::Changed => (inner.put(request), true),
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

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, created: i64, expires: i64) -> ApprovalRequest {
        ApprovalRequest {
            id: id.to_owned(),
            state: RequestState::Pending as i32,
            created_unix_ms: created,
            expires_unix_ms: expires,
            ..ApprovalRequest::default()
        }
    }

    #[tokio::test]
    async fn revisions_increase_and_index_latest_state() {
        let store = MemoryStore::new();
        let mut rx = store.subscribe();
        let Inserted::New(a) = store.insert(request("a", 1, 100)).await.unwrap() else {
            panic!("a is new");
        };
        let Inserted::New(b) = store.insert(request("b", 2, 50)).await.unwrap() else {
            panic!("b is new");
        };
        assert!(b.revision > a.revision);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), b.revision);
        assert!(matches!(
            store.insert(request("a", 9, 9)).await.unwrap(),
            Inserted::Existing(r) if r.created_unix_ms == 1
        ));

        let a2 = store
            .update("a", None, |r| {
                r.state = RequestState::Denied as i32;
                Ok(Mutation::Changed)
            })
            .await
            .unwrap();
        assert!(a2.revision > b.revision);
        let changed: Vec<String> = store
            .changed_since(a.revision, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(changed, ["b", "a"], "each id once, in revision order");
        let (due, next) = store.due(60).await.unwrap();
        assert_eq!(due, ["b"], "a is final, so it has no deadline any more");
        assert_eq!(next, None);
        let (pending, rev) = store.pending_snapshot().await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(rev, a2.revision);
    }

    #[tokio::test]
    async fn idempotent_update_runs_once() {
        let store = MemoryStore::new();
        store.insert(request("a", 1, 100)).await.unwrap();
        store.insert(request("b", 1, 100)).await.unwrap();
        let key = IdempotencyKey {
            principal: "p".to_owned(),
            key: "k".to_owned(),
        };
        let first = store
            .update("a", Some(key.clone()), |r| {
                r.host = "first".to_owned();
                Ok(Mutation::Changed)
            })
            .await
            .unwrap();
        let again = store
            .update("a", Some(key.clone()), |_| panic!("must not run twice"))
            .await
            .unwrap();
        assert_eq!(first, again);
        assert!(matches!(
            store
                .update("b", Some(key), |_| Ok(Mutation::Unchanged))
                .await,
            Err(ApiError::InvalidArgument(_))
        ));
        assert!(matches!(
            store.update("zzz", None, |_| Ok(Mutation::Unchanged)).await,
            Err(ApiError::NotFound(_))
        ));
    }
}
