//! PostgreSQL [`Store`]: several hub replicas sharing one database.
//!
//! Every write transaction starts by locking the single `hub_counter` row, which holds the
//! revision and the audit chain head. That serialises writers across replicas, so
//! revisions commit in order and the audit chain stays linear. Each write ends with
//! `pg_notify('airlock_changes', revision)`, delivered at commit; every replica keeps one
//! `LISTEN` connection and feeds the revisions it hears into [`Store::subscribe`], so a
//! watcher on replica B sees a decision made on replica A. A slow poll of the counter
//! covers a listener that reconnects.

use std::str::FromStr;
use std::time::Duration;

use airlock_proto::v1::{ApprovalRequest, RequestState};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::StreamExt as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row, Transaction};

use super::audit::{self, AuditRecord, GENESIS};
use super::{
    GrantRecord, IdempotencyKey, Inserted, ListFilter, Mutation, Note, Store, StoreError, decode,
    encode, to_i64, to_u64,
};
use crate::error::ApiError;
use crate::rules;

/// Channel the replicas notify each other on.
const CHANNEL: &str = "airlock_changes";
/// Poll of the counter in case a notification was missed while the listener reconnected.
const POLL: Duration = Duration::from_secs(2);
/// Connections per replica.
const POOL_SIZE: usize = 16;
/// Advisory lock key serialising schema creation between replicas starting together.
const SCHEMA_LOCK: i64 = 0x0061_6972_6c6f_636b;

/// A PostgreSQL failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The connection URL could not be parsed.
    #[error("invalid PostgreSQL URL")]
    Url(#[source] tokio_postgres::Error),
    /// The connection pool could not be built.
    #[error("cannot build the PostgreSQL pool")]
    Build(#[from] deadpool_postgres::BuildError),
    /// No connection could be had from the pool.
    #[error("no PostgreSQL connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed.
    #[error("PostgreSQL statement failed")]
    Sql(#[from] tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(err: tokio_postgres::Error) -> Self {
        Self::Store(StoreError::Postgres(PgError::Sql(err)))
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Self::Store(StoreError::Postgres(PgError::Pool(err)))
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS hub_counter (
    id INT PRIMARY KEY,
    revision BIGINT NOT NULL,
    audit_seq BIGINT NOT NULL,
    audit_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    revision BIGINT NOT NULL UNIQUE,
    state INT NOT NULL,
    agent_id TEXT NOT NULL,
    requester TEXT NOT NULL,
    host TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    body BYTEA NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_state_expires ON requests (state, expires_ms);
CREATE INDEX IF NOT EXISTS requests_created ON requests (created_ms);
CREATE TABLE IF NOT EXISTS idempotency (
    principal TEXT NOT NULL,
    key TEXT NOT NULL,
    request_id TEXT NOT NULL,
    result BYTEA NOT NULL,
    PRIMARY KEY (principal, key)
);
CREATE TABLE IF NOT EXISTS grants (
    action_hash TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    requester TEXT NOT NULL,
    until_ms BIGINT NOT NULL,
    request_id TEXT NOT NULL PRIMARY KEY
);
CREATE INDEX IF NOT EXISTS grants_hash ON grants (action_hash, agent_id, requester);
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    state INT NOT NULL,
    request_digest TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
";

/// Keeps requests in a PostgreSQL database shared by hub replicas.
pub struct PgStore {
    pool: Pool,
    revision_tx: watch::Sender<u64>,
    listener: JoinHandle<()>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Counter row as read at the start of a write transaction.
struct Head {
    revision: u64,
    audit_seq: u64,
    audit_hash: String,
}

fn body_of(row: &Row) -> Result<ApprovalRequest, ApiError> {
    let id: &str = row.try_get(0)?;
    let body: &[u8] = row.try_get(1)?;
    Ok(decode(id, body)?)
}

fn bodies(rows: &[Row]) -> Result<Vec<ApprovalRequest>, ApiError> {
    rows.iter().map(body_of).collect()
}

impl PgStore {
    /// Connects to `url` (`postgresql://user@host:port/db` or key=value form), creates the
    /// schema when missing and starts listening for other replicas' changes.
    ///
    /// # Errors
    ///
    /// [`PgError`] when the URL is bad or the database cannot be reached or initialised.
    pub async fn connect(url: &str) -> Result<Self, PgError> {
        let config = tokio_postgres::Config::from_str(url).map_err(PgError::Url)?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager).max_size(POOL_SIZE).build()?;
        let client = pool.get().await?;
        client
            .batch_execute(&format!(
                "SELECT pg_advisory_lock({SCHEMA_LOCK}); {SCHEMA} \
                 INSERT INTO hub_counter (id, revision, audit_seq, audit_hash) \
                 VALUES (1, 0, 0, '{GENESIS}') ON CONFLICT (id) DO NOTHING; \
                 SELECT pg_advisory_unlock({SCHEMA_LOCK});"
            ))
            .await?;
        let revision: i64 = client
            .query_one("SELECT revision FROM hub_counter WHERE id = 1", &[])
            .await?
            .try_get(0)?;
        drop(client);
        let revision_tx = watch::Sender::new(to_u64(revision));
        let listener = tokio::spawn(listen(config, pool.clone(), revision_tx.clone()));
        Ok(Self {
            pool,
            revision_tx,
            listener,
        })
    }

    /// Locks the counter row; every writer goes through here first.
    async fn head(tx: &Transaction<'_>) -> Result<Head, ApiError> {
        let row = tx
            .query_one(
                "SELECT revision, audit_seq, audit_hash FROM hub_counter WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await?;
        Ok(Head {
            revision: to_u64(row.try_get(0)?),
            audit_seq: to_u64(row.try_get(1)?),
            audit_hash: row.try_get(2)?,
        })
    }

    /// Writes `request` under the next revision with its grant, audit entry and notify.
    async fn put(
        tx: &Transaction<'_>,
        head: &Head,
        mut request: ApprovalRequest,
        note: Note<'_>,
    ) -> Result<ApprovalRequest, ApiError> {
        let revision = head.revision + 1;
        request.revision = revision;
        let body = encode(&request);
        let rev = to_i64(revision);
        tx.execute(
            "INSERT INTO requests (id, revision, state, agent_id, requester, host, created_ms, \
             expires_ms, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (id) DO UPDATE SET revision = $2, state = $3, expires_ms = $8, body = $9",
            &[
                &request.id,
                &rev,
                &request.state,
                &request.agent_id,
                &request.requester,
                &request.host,
                &request.created_unix_ms,
                &request.expires_unix_ms,
                &body,
            ],
        )
        .await?;
        if let Some(g) = GrantRecord::of(&request) {
            tx.execute(
                "INSERT INTO grants (action_hash, agent_id, requester, until_ms, request_id) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (request_id) DO UPDATE SET until_ms = $4",
                &[
                    &g.action_hash,
                    &g.agent_id,
                    &g.requester,
                    &g.until_unix_ms,
                    &g.request_id,
                ],
            )
            .await?;
        }
        let record = audit::entry(
            head.audit_seq + 1,
            &head.audit_hash,
            rules::now_unix_ms(),
            &request,
            &body,
            note,
        );
        tx.execute(
            "INSERT INTO audit (seq, revision, at_ms, request_id, actor, action, state, \
             request_digest, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &to_i64(record.seq),
                &to_i64(record.revision),
                &record.at_unix_ms,
                &record.request_id,
                &record.actor,
                &record.action,
                &record.state,
                &record.request_digest,
                &record.prev_hash,
                &record.hash,
            ],
        )
        .await?;
        tx.execute(
            "UPDATE hub_counter SET revision = $1, audit_seq = $2, audit_hash = $3 WHERE id = 1",
            &[&rev, &to_i64(record.seq), &record.hash],
        )
        .await?;
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &revision.to_string()],
        )
        .await?;
        Ok(request)
    }

    fn announce(&self, revision: u64) {
        self.revision_tx.send_if_modified(|current| {
            let newer = revision > *current;
            if newer {
                *current = revision;
            }
            newer
        });
    }
}

/// Keeps a `LISTEN` connection open, feeding heard revisions into `revision_tx`.
async fn listen(config: tokio_postgres::Config, pool: Pool, revision_tx: watch::Sender<u64>) {
    let raise = |revision: u64| {
        revision_tx.send_if_modified(|current| {
            let newer = revision > *current;
            if newer {
                *current = revision;
            }
            newer
        });
    };
    let poll = async || -> Option<u64> {
        let client = pool.get().await.ok()?;
        let row = client
            .query_one("SELECT revision FROM hub_counter WHERE id = 1", &[])
            .await
            .ok()?;
        row.try_get::<_, i64>(0).ok().map(to_u64)
    };
    let mut ticks = tokio::time::interval(POLL);
    loop {
        let (client, mut connection) = match config.connect(NoTls).await {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "PostgreSQL listener cannot connect; retrying");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        let (note_tx, mut notes) = mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if note_tx.send(n.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "PostgreSQL listener connection lost");
                        return;
                    }
                }
            }
        });
        if let Err(err) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            tracing::warn!(error = %err, "PostgreSQL LISTEN failed; retrying");
            driver.abort();
            tokio::time::sleep(POLL).await;
            continue;
        }
        // Changes made while we were not listening.
        if let Some(rev) = poll().await {
            raise(rev);
        }
        loop {
            tokio::select! {
                note = notes.recv() => match note {
                    Some(payload) => {
                        if let Ok(rev) = payload.parse::<u64>() {
                            raise(rev);
                        }
                    }
                    None => break,
                },
                _ = ticks.tick() => {
                    if let Some(rev) = poll().await {
                        raise(rev);
                    }
                }
            }
        }
        drop(client);
        driver.abort();
    }
}

impl Store for PgStore {
    async fn insert(&self, request: ApprovalRequest, note: Note<'_>) -> Result<Inserted, ApiError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let head = Self::head(&tx).await?;
        if let Some(row) = tx
            .query_opt(
                "SELECT id, body FROM requests WHERE id = $1",
                &[&request.id],
            )
            .await?
        {
            return Ok(Inserted::Existing(body_of(&row)?));
        }
        let stored = Self::put(&tx, &head, request, note).await?;
        tx.commit().await?;
        self.announce(stored.revision);
        Ok(Inserted::New(stored))
    }

    async fn get(&self, id: &str) -> Result<Option<ApprovalRequest>, ApiError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached("SELECT id, body FROM requests WHERE id = $1")
            .await?;
        client
            .query_opt(&stmt, &[&id])
            .await?
            .map(|row| body_of(&row))
            .transpose()
    }

    async fn find_prefix(
        &self,
        prefix: &str,
        max: usize,
    ) -> Result<Vec<ApprovalRequest>, ApiError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, body FROM requests WHERE left(id, length($1)) = $1 LIMIT $2",
                &[&prefix, &to_i64(max as u64)],
            )
            .await?;
        bodies(&rows)
    }

    async fn list(
        &self,
        filter: &ListFilter,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, ApiError> {
        let states: Vec<i32> = filter.states.iter().map(|s| *s as i32).collect();
        let limit = to_i64(limit as u64);
        let args: [&(dyn ToSql + Sync); 5] = [
            &states,
            &filter.agent_id,
            &filter.requester,
            &filter.host,
            &limit,
        ];
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, body FROM requests WHERE \
                 (cardinality($1::int[]) = 0 OR state = ANY($1)) \
                 AND ($2 = '' OR agent_id = $2) AND ($3 = '' OR requester = $3) \
                 AND ($4 = '' OR host = $4) ORDER BY created_ms DESC, id ASC LIMIT $5",
                &args,
            )
            .await?;
        bodies(&rows)
    }

    async fn pending_snapshot(&self) -> Result<(Vec<ApprovalRequest>, u64), ApiError> {
        let mut client = self.pool.get().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let revision: i64 = tx
            .query_one("SELECT revision FROM hub_counter WHERE id = 1", &[])
            .await?
            .try_get(0)?;
        let rows = tx
            .query(
                "SELECT id, body FROM requests WHERE state = $1 ORDER BY revision",
                &[&(RequestState::Pending as i32)],
            )
            .await?;
        tx.commit().await?;
        Ok((bodies(&rows)?, to_u64(revision)))
    }

    async fn changed_since(
        &self,
        revision: u64,
        limit: usize,
    ) -> Result<Vec<ApprovalRequest>, ApiError> {
        let client = self.pool.get().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, body FROM requests WHERE revision > $1 ORDER BY revision LIMIT $2",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&to_i64(revision), &to_i64(limit as u64)])
            .await?;
        bodies(&rows)
    }

    async fn revision(&self) -> Result<u64, ApiError> {
        let client = self.pool.get().await?;
        let rev: i64 = client
            .query_one("SELECT revision FROM hub_counter WHERE id = 1", &[])
            .await?
            .try_get(0)?;
        Ok(to_u64(rev))
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
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let head = Self::head(&tx).await?;
        if let Some(key) = &idempotency
            && let Some(row) = tx
                .query_opt(
                    "SELECT request_id, result FROM idempotency WHERE principal = $1 AND key = $2",
                    &[&key.principal, &key.key],
                )
                .await?
        {
            let first_id: &str = row.try_get(0)?;
            if first_id != id {
                return Err(ApiError::InvalidArgument(
                    "idempotency key already used for another request".to_owned(),
                ));
            }
            return body_of(&row);
        }
        let row = tx
            .query_opt("SELECT id, body FROM requests WHERE id = $1", &[&id])
            .await?
            .ok_or_else(|| ApiError::NotFound(id.to_owned()))?;
        let mut request = body_of(&row)?;
        let (result, changed) = match rule(&mut request)? {
            Mutation::Changed => (Self::put(&tx, &head, request, note).await?, true),
            Mutation::Unchanged => (request, false),
        };
        if let Some(key) = idempotency {
            tx.execute(
                "INSERT INTO idempotency (principal, key, request_id, result) \
                 VALUES ($1, $2, $3, $4)",
                &[&key.principal, &key.key, &id, &encode(&result)],
            )
            .await?;
        }
        tx.commit().await?;
        if changed {
            self.announce(result.revision);
        }
        Ok(result)
    }

    async fn due(&self, now_unix_ms: i64) -> Result<(Vec<String>, Option<i64>), ApiError> {
        let client = self.pool.get().await?;
        let pending = RequestState::Pending as i32;
        let due = client
            .query(
                "SELECT id FROM requests WHERE state = $1 AND expires_ms <= $2",
                &[&pending, &now_unix_ms],
            )
            .await?
            .iter()
            .map(|r| r.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()?;
        let next: Option<i64> = client
            .query_one(
                "SELECT MIN(expires_ms) FROM requests WHERE state = $1 AND expires_ms > $2",
                &[&pending, &now_unix_ms],
            )
            .await?
            .try_get(0)?;
        Ok((due, next))
    }

    async fn active_grant(
        &self,
        action_hash: &str,
        agent_id: &str,
        requester: &str,
        now_unix_ms: i64,
    ) -> Result<Option<GrantRecord>, ApiError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT until_ms, request_id FROM grants WHERE action_hash = $1 AND \
                 agent_id = $2 AND requester = $3 AND until_ms > $4 ORDER BY until_ms DESC LIMIT 1",
                &[&action_hash, &agent_id, &requester, &now_unix_ms],
            )
            .await?;
        row.map(|r| {
            Ok(GrantRecord {
                action_hash: action_hash.to_owned(),
                agent_id: agent_id.to_owned(),
                requester: requester.to_owned(),
                until_unix_ms: r.try_get(0)?,
                request_id: r.try_get(1)?,
            })
        })
        .transpose()
    }

    async fn audit_since(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, ApiError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT seq, revision, at_ms, request_id, actor, action, state, request_digest, \
                 prev_hash, hash FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&to_i64(after), &to_i64(limit as u64)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    seq: to_u64(r.try_get(0)?),
                    revision: to_u64(r.try_get(1)?),
                    at_unix_ms: r.try_get(2)?,
                    request_id: r.try_get(3)?,
                    actor: r.try_get(4)?,
                    action: r.try_get(5)?,
                    state: r.try_get(6)?,
                    request_digest: r.try_get(7)?,
                    prev_hash: r.try_get(8)?,
                    hash: r.try_get(9)?,
                })
            })
            .collect()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }
}
