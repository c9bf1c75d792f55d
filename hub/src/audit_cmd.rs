//! `airlock hub audit`: print and verify the hub's own audit chain.
//!
//! Reads the store directly (the chain lives next to the requests), checks every link from
//! the first entry, and prints one JSON object per entry with `--json`.

use std::io::Write;

use crate::server::{DEFAULT_SQLITE, StoreSpec};
use crate::store::{
    AuditRecord, ChainError, GENESIS, PgStore, SqliteStore, SqliteSync, Store, StoreError,
    verify_chain,
};

/// Entries read per query.
const PAGE: usize = 1000;

/// Flags of `airlock hub audit`.
#[derive(Clone, Debug, clap::Args)]
pub struct AuditArgs {
    /// The hub's store: `sqlite:PATH` or `postgres://...` [default: sqlite:/var/lib/airlock/hub.db].
    #[arg(long, env = "AIRLOCK_HUB_STORE")]
    pub store: Option<StoreSpec>,
    /// Print every entry as a JSON object per line (otherwise only the verdict).
    #[arg(long)]
    pub json: bool,
}

/// Why `hub audit` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The store could not be opened or read.
    #[error("cannot read the hub store")]
    Store(#[from] StoreError),
    /// Reading failed inside the store.
    #[error("cannot read the audit chain: {0}")]
    Read(#[from] crate::error::ApiError),
    /// A memory store has no chain to read from outside.
    #[error("a memory store has no audit chain to read")]
    Memory,
    /// The chain is broken or altered.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// Output failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
    /// JSON encoding failed.
    #[error("cannot encode JSON")]
    Json(#[from] serde_json::Error),
}

async fn walk<S: Store>(store: &S, json: bool, out: &mut impl Write) -> Result<u64, AuditError> {
    let mut prev = GENESIS.to_owned();
    let mut after = 0;
    loop {
        let page: Vec<AuditRecord> = store.audit_since(after, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(after);
        };
        verify_chain(&prev, &page)?;
        if json {
            for entry in &page {
                writeln!(out, "{}", serde_json::to_string(entry)?).map_err(AuditError::Output)?;
            }
        }
        prev.clone_from(&last.hash);
        after = last.seq;
    }
}

/// Verifies the chain (and prints it with `--json`); returns the number of entries.
///
/// # Errors
///
/// [`AuditError::Chain`] for a broken or altered chain, the others for unreadable stores.
pub async fn run(args: &AuditArgs, out: &mut impl Write) -> Result<u64, AuditError> {
    let spec = args
        .store
        .clone()
        .unwrap_or_else(|| StoreSpec::Sqlite(DEFAULT_SQLITE.into()));
    let count = match spec {
        StoreSpec::Memory => return Err(AuditError::Memory),
        StoreSpec::Sqlite(path) => {
            let store = SqliteStore::open(&path, SqliteSync::Full).map_err(StoreError::from)?;
            walk(&store, args.json, out).await?
        }
        StoreSpec::Postgres(url) => {
            let store = PgStore::connect(&url).await.map_err(StoreError::from)?;
            walk(&store, args.json, out).await?
        }
    };
    if !args.json {
        writeln!(out, "audit chain intact: {count} entries").map_err(AuditError::Output)?;
    }
    Ok(count)
}
