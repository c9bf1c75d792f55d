//! SQLite [`Store`]: the default backend, one file in WAL mode.
//!
//! One writer connection (SQLite has a single writer anyway) and one reader connection, so
//! reads never wait for a commit's fsync. Calls run inline on the async worker: each is a
//! short indexed statement, and keeping them inline avoids a thread hop per call (measured
//! in `benches/hub.rs`). Every change also lands in a small in-memory feed of recent
//! changes, so fifty watchers catching up after a decision read memory instead of issuing
//! fifty queries; older revisions fall back to SQL.
//!
//! Only one hub process may use a file at a time (several replicas need [`super::PgStore`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use airlock_proto::v1::{ApprovalRequest, RequestState};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::watch;

use super::audit::{self, AuditRecord, GENESIS};
use super::{
    GrantRecord, IdempotencyKey, Inserted, ListFilter, Mutation, Note, Store, StoreError, decode,
    encode, to_i64, to_u64,
};
use crate::error::ApiError;
use crate::rules;

/// Changes kept in memory for `changed_since`.
const RECENT: usize = 8192;

/// How hard SQLite pushes each commit to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Sync {
    /// fsync the WAL on every commit: nothing committed is lost even on power failure.
    #[default]
    Full,
    /// fsync at checkpoints only: survives a hub crash (kill -9) but an OS crash or power
    /// loss may lose the last commits.
    Normal,
}

/// A SQLite failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqliteError {
    /// The database file could not be opened or initialised.
    #[error("cannot open SQLite database {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("SQLite statement failed")]
    Sql(#[from] rusqlite::Error),
}

impl From<rusqlite::Error> for ApiError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Store(StoreError::Sqlite(SqliteError::Sql(err)))
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    revision INTEGER NOT NULL UNIQUE,
    state INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    requester TEXT NOT NULL,
    host TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_state_expires ON requests (state, expires_ms);
CREATE INDEX IF NOT EXISTS requests_created ON requests (created_ms);
CREATE TABLE IF NOT EXISTS idempotency (
    principal TEXT NOT NULL,
    key TEXT NOT NULL,
    request_id TEXT NOT NULL,
    result BLOB NOT NULL,
    PRIMARY KEY (principal, key)
);
CREATE TABLE IF NOT EXISTS grants (
    action_hash TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    requester TEXT NOT NULL,
    until_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL PRIMARY KEY
);
CREATE INDEX IF NOT EXISTS grants_hash ON grants (action_hash, agent_id, requester);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    revision INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    state INTEGER NOT NULL,
    request_digest TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
";

struct Writer {
    conn: Connection,
    revision: u64,
    audit_seq: u64,
    audit_hash: String,
}

/// The latest changes, each request once: lets `changed_since` skip SQL for recent
/// revisions. Everything with a revision above `floor` is here.
#[derive(Default)]
struct Recent {
    floor: u64,
    by_revision: BTreeMap<u64, ApprovalRequest>,
    revision_of: HashMap<String, u64>,
}

impl Recent {
    fn push(&mut self, request: &ApprovalRequest) {
        if let Some(old) = self
            .revision_of
            .insert(request.id.clone(), request.revision)
        {
            self.by_revision.remove(&old);
        }
        self.by_revision.insert(request.revision, request.clone());
        while self.by_revision.len() > RECENT {
            if let Some((rev, gone)) = self.by_revision.pop_first() {
                self.revision_of.remove(&gone.id);
                self.floor = rev;
            }
        }
    }
}

/// Keeps requests in one SQLite file.
pub struct SqliteStore {
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
    recent: Mutex<Recent>,
    revision_tx: watch::Sender<u64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, ApiError> {
    m.lock().map_err(|_| StoreError::Poisoned.into())
}

fn open_conn(path: &Path, sync: Sync) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let level = match sync {
        Sync::Full => "FULL",
        Sync::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn read_body(id: &str, body: &[u8]) -> Result<ApprovalRequest, ApiError> {
    Ok(decode(id, body)?)
}

fn audit_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: to_u64(row.get(0)?),
        revision: to_u64(row.get(1)?),
        at_unix_ms: row.get(2)?,
        request_id: row.get(3)?,
        actor: row.get(4)?,
        action: row.get(5)?,
        state: row.get(6)?,
        request_digest: row.get(7)?,
        prev_hash: row.get(8)?,
        hash: row.get(9)?,
    })
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `path`.
    ///
    /// # Errors
    ///
    /// [`SqliteError::Open`] when the file cannot be opened or its schema created.
    pub fn open(path: &Path, sync: Sync) -> Result<Self, SqliteError> {
        let err = |source| SqliteError::Open {
            path: path.to_owned(),
            source,
        };
        let conn = open_conn(path, sync).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let revision: i64 = conn
            .query_row("SELECT COALESCE(MAX(revision), 0) FROM requests", [], |r| {
                r.get(0)
            })
            .map_err(err)?;
        let (audit_seq, audit_hash): (i64, String) = conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err)?
            .unwrap_or((0, GENESIS.to_owned()));
        let reader = open_conn(path, sync).map_err(err)?;
        let revision = to_u64(revision);
        Ok(Self {
            writer: Mutex::new(Writer {
                conn,
                revision,
                audit_seq: to_u64(audit_seq),
                audit_hash,
            }),
            reader: Mutex::new(reader),
            recent: Mutex::new(Recent {
                floor: revision,
                ..Recent::default()
            }),
            revision_tx: watch::Sender::new(revision),
        })
    }

    /// Writes `request` under the next revision inside `tx`, with its grant and audit entry.
    fn put(
        tx: &rusqlite::Transaction<'_>,
        writer: &mut WriterState,
        mut request: ApprovalRequest,
        note: Note<'_>,
    ) -> Result<ApprovalRequest, ApiError> {
        let revision = writer.revision + 1;
        request.revision = revision;
        let body = encode(&request);
        tx.execute(
            "INSERT INTO requests (id, revision, state, agent_id, requester, host, created_ms, \
             expires_ms, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT (id) DO UPDATE SET revision = ?2, state = ?3, expires_ms = ?8, body = ?9",
            params![
                request.id,
                to_i64(revision),
                request.state,
                request.agent_id,
                request.requester,
                request.host,
                request.created_unix_ms,
                request.expires_unix_ms,
                body
            ],
        )?;
        if let Some(g) = GrantRecord::of(&request) {
            tx.execute(
                "INSERT OR REPLACE INTO grants (action_hash, agent_id, requester, until_ms, \
                 request_id) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    g.action_hash,
                    g.agent_id,
                    g.requester,
                    g.until_unix_ms,
                    g.request_id
                ],
            )?;
        }
        let record = audit::entry(
            writer.audit_seq + 1,
            &writer.audit_hash,
            rules::now_unix_ms(),
            &request,
            &body,
            note,
        );
        tx.execute(
            "INSERT INTO audit (seq, revision, at_ms, request_id, actor, action, state, \
             request_digest, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                to_i64(record.seq),
                to_i64(record.revision),
                record.at_unix_ms,
                record.request_id,
                record.actor,
                record.action,
                record.state,
                record.request_digest,
                record.prev_hash,
                record.hash
            ],
        )?;
        writer.revision = revision;
        writer.audit_seq = record.seq;
        writer.audit_hash = record.hash;
        Ok(request)
    }

    /// Publishes a committed change to the recent feed and to subscribers; called with the
    /// writer lock held, so a reader never sees revision N+1 in the feed before N.
    fn announce(&self, request: &ApprovalRequest) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.push(request);
        }
        self.revision_tx.send_replace(request.revision);
    }
}

/// The writer's counters, copied out so a failed transaction leaves them untouched.
struct WriterState {
    revision: u64,
    audit_seq: u64,
    audit_hash: String,
}

impl WriterState {
    fn of(w: &Writer) -> Self {
        Self {
            revision: w.revision,
            audit_seq: w.audit_seq,
            audit_hash: w.audit_hash.clone(),
        }
    }

    fn commit_into(self, w: &mut Writer) {
        w.revision = self.revision;
        w.audit_seq = self.audit_seq;
        w.audit_hash = self.audit_hash;
    }
}

impl Store for SqliteStore {
    async fn insert(&self, request: ApprovalRequest, note: Note<'_>) -> Result<Inserted, ApiError> {
        let stored = {
            let mut guard = lock(&self.writer)?;
            let mut state = WriterState::of(&guard);
            let tx = guard
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT body FROM requests WHERE id = ?1",
                    [&request.id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(body) = existing {
                return Ok(Inserted::Existing(read_body(&request.id, &body)?));
            }
            let stored = Self::put(&tx, &mut state, request, note)?;
            tx.commit()?;
            state.commit_into(&mut guard);
            // Still under the writer lock: the feed gets changes in revision order.
            self.announce(&stored);
            stored
        };
        Ok(Inserted::New(stored))
    }

    async fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, ApiError> {
        let conn = lock(&self.reader)?;
        let body: Option<Vec<u8>> = conn
            .prepare_cached("SELECT body FROM requests WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        body.map(|b| read_body(id, &b)).transpose()
    }

    async fn find_prefix(
        &self,
        prefix: &str,
        max: usize,
    ) -> Result<Vec<ApprovalRequest>, ApiError> {
        let conn = lock(&self.reader)?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, body FROM requests WHERE substr(id, 1, length(?1)) = ?1 LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![prefix, to_i64(max as u64)], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row?;
            out.push(read_body(&id, &body)?);
        }
        Ok(out)
    }

    async fn list(
        &self,
        filter: &ListFilter,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, ApiError> {
        let mut sql = String::from("SELECT id, body FROM requests WHERE 1 = 1");
        let mut args: Vec<Value> = Vec::new();
        if !filter.states.is_empty() {
            let marks = vec!["?"; filter.states.len()].join(", ");
            sql.push_str(&format!(" AND state IN ({marks})"));
            args.extend(
                filter
                    .states
                    .iter()
                    .map(|s| Value::Integer(i64::from(*s as i32))),
            );
        }
        for (column, value) in [
            ("agent_id", &filter.agent_id),
            ("requester", &filter.requester),
            ("host", &filter.host),
        ] {
            if !value.is_empty() {
                sql.push_str(&format!(" AND {column} = ?"));
                args.push(Value::Text(value.clone()));
            }
        }
        sql.push_str(" ORDER BY created_ms DESC, id ASC LIMIT ?");
        args.push(Value::Integer(to_i64(limit as u64)));
        let conn = lock(&self.reader)?;
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row?;
            out.push(read_body(&id, &body)?);
        }
        Ok(out)
    }

    async fn pending_snapshot(&self) -> Result<(Vec<ApprovalRequest>, u64), ApiError> {
        let mut conn = lock(&self.reader)?;
        // One read transaction: the rows and the revision come from the same snapshot.
        let tx = conn.transaction()?;
        let revision: i64 =
            tx.query_row("SELECT COALESCE(MAX(revision), 0) FROM requests", [], |r| {
                r.get(0)
            })?;
        let mut out = Vec::new();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT id, body FROM requests WHERE state = ?1 ORDER BY revision",
            )?;
            let rows = stmt.query_map([RequestState::Pending as i32], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            for row in rows {
                let (id, body) = row?;
                out.push(read_body(&id, &body)?);
            }
        }
        tx.commit()?;
        Ok((out, to_u64(revision)))
    }

    async fn changed_since(
        &self,
        revision: u64,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, ApiError> {
        {
            let recent = lock(&self.recent)?;
            if revision >= recent.floor {
                return Ok(recent
                    .by_revision
                    .range(revision.saturating_add(1)..)
                    .take(limit)
                    .map(|(_, r)| r.clone())
                    .collect());
            }
        }
        let conn = lock(&self.reader)?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, body FROM requests WHERE revision > ?1 ORDER BY revision LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![to_i64(revision), to_i64(limit as u64)], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row?;
            out.push(read_body(&id, &body)?);
        }
        Ok(out)
    }

    async fn revision(&self) -> Result<u64, ApiError> {
        Ok(lock(&self.writer)?.revision)
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
        let result = {
            let mut guard = lock(&self.writer)?;
            let mut state = WriterState::of(&guard);
            let tx = guard
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(key) = &idempotency {
                let first: Option<(String, Vec<u8>)> = tx
                    .prepare_cached(
                        "SELECT request_id, result FROM idempotency WHERE principal = ?1 AND key = ?2",
                    )?
                    .query_row([&key.principal, &key.key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                if let Some((first_id, body)) = first {
                    if first_id != id {
                        return Err(ApiError::InvalidArgument(
                            "idempotency key already used for another request".to_owned(),
                        ));
                    }
                    return read_body(id, &body);
                }
            }
            let body: Vec<u8> = tx
                .prepare_cached("SELECT body FROM requests WHERE id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()?
                .ok_or_else(|| ApiError::NotFound(id.to_owned()))?;
            let mut request = read_body(id, &body)?;
            let (result, changed) = match rule(&mut request)? {
                Mutation::Changed => (Self::put(&tx, &mut state, request, note)?, true),
                Mutation::Unchanged => (request, false),
            };
            if let Some(key) = idempotency {
                tx.execute(
                    "INSERT INTO idempotency (principal, key, request_id, result) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![key.principal, key.key, id, encode(&result)],
                )?;
            }
            tx.commit()?;
            state.commit_into(&mut guard);
            if changed {
                // Still under the writer lock: the feed gets changes in revision order.
                self.announce(&result);
            }
            result
        };
        Ok(result)
    }

    async fn due(&self, now_unix_ms: i64) -> Result<(Vec<String>, Option<i64>), ApiError> {
        let conn = lock(&self.reader)?;
        let pending = RequestState::Pending as i32;
        let due = conn
            .prepare_cached("SELECT id FROM requests WHERE state = ?1 AND expires_ms <= ?2")?
            .query_map(params![pending, now_unix_ms], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        let next: Option<i64> = conn
            .prepare_cached(
                "SELECT MIN(expires_ms) FROM requests WHERE state = ?1 AND expires_ms > ?2",
            )?
            .query_row(params![pending, now_unix_ms], |r| r.get(0))?;
        Ok((due, next))
    }

    async fn active_grant(
        &self,
        action_hash: &str,
        agent_id: &str,
        requester: &str,
        now_unix_ms: i64,
    ) -> Result<Option<GrantRecord>, ApiError> {
        let conn = lock(&self.reader)?;
        Ok(conn
            .prepare_cached(
                "SELECT until_ms, request_id FROM grants WHERE action_hash = ?1 AND \
                 agent_id = ?2 AND requester = ?3 AND until_ms > ?4 ORDER BY until_ms DESC LIMIT 1",
            )?
            .query_row(
                params![action_hash, agent_id, requester, now_unix_ms],
                |r| {
                    Ok(GrantRecord {
                        action_hash: action_hash.to_owned(),
                        agent_id: agent_id.to_owned(),
                        requester: requester.to_owned(),
                        until_unix_ms: r.get(0)?,
                        request_id: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    async fn audit_since(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, ApiError> {
        let conn = lock(&self.reader)?;
        Ok(conn
            .prepare_cached(
                "SELECT seq, revision, at_ms, request_id, actor, action, state, request_digest, \
                 prev_hash, hash FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![to_i64(after), to_i64(limit as u64)], audit_row)?
            .collect::<Result<Vec<_>, _>>()?)
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }
}
