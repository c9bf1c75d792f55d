//! The hub's own audit trail: one hash-chained entry per state change.
//!
//! The chain lives in the same database as the requests (the `airlock-audit` crate writes
//! one signed file per process, which two replicas sharing PostgreSQL cannot share), and
//! each entry is written in the transaction that makes the change. Entry `n` carries the
//! SHA-256 of entry `n-1`, so deleting, reordering or editing an entry breaks
//! [`verify_chain`] from that point on.

use airlock_proto::v1::ApprovalRequest;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Note;

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Hub revision the change was stored under.
    pub revision: u64,
    /// When the hub wrote it, Unix ms.
    pub at_unix_ms: i64,
    /// The request changed.
    pub request_id: String,
    /// Principal that caused the change (`hub` for expiry).
    pub actor: String,
    /// `submit`, `vote`, `cancel`, `expire`, `grant`.
    pub action: String,
    /// The request's state after the change (proto enum number).
    pub state: i32,
    /// Hex SHA-256 of the request as stored after the change (protobuf encoding).
    pub request_digest: String,
    /// `hash` of the previous entry ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// Hex SHA-256 over this entry's fields and `prev_hash`.
    pub hash: String,
}

/// Why a chain does not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainError {
    /// An entry's `prev_hash` is not the previous entry's hash (removed or reordered).
    #[error("audit entry {seq} does not follow the previous entry")]
    Broken {
        /// The first entry that does not link.
        seq: u64,
    },
    /// An entry's hash does not match its content (edited).
    #[error("audit entry {seq} was altered")]
    Altered {
        /// The altered entry.
        seq: u64,
    },
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Hashes fields with a length prefix each, so no two field lists hash alike.
fn entry_hash(r: &AuditRecord) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    field(r.prev_hash.as_bytes());
    field(&r.seq.to_be_bytes());
    field(&r.revision.to_be_bytes());
    field(&r.at_unix_ms.to_be_bytes());
    field(r.request_id.as_bytes());
    field(r.actor.as_bytes());
    field(r.action.as_bytes());
    field(&r.state.to_be_bytes());
    field(r.request_digest.as_bytes());
    hex(&h.finalize())
}

/// The entry following `prev_hash` at position `seq` for `request` as stored.
pub(crate) fn entry(
    seq: u64,
    prev_hash: &str,
    at_unix_ms: i64,
    request: &ApprovalRequest,
    encoded: &[u8],
    note: Note<'_>,
) -> AuditRecord {
    let mut record = AuditRecord {
        seq,
        revision: request.revision,
        at_unix_ms,
        request_id: request.id.clone(),
        actor: note.actor.to_owned(),
        action: note.action.to_owned(),
        state: request.state,
        request_digest: hex(&Sha256::digest(encoded)),
        prev_hash: prev_hash.to_owned(),
        hash: String::new(),
    };
    record.hash = entry_hash(&record);
    record
}

/// Checks that `records` (consecutive entries) link up and are unaltered, starting after
/// an entry whose hash is `prev_hash` ([`GENESIS`] from the start).
///
/// # Errors
///
/// The first [`ChainError`] found.
pub fn verify_chain(prev_hash: &str, records: &[AuditRecord]) -> Result<(), ChainError> {
    let mut prev = prev_hash;
    for r in records {
        if r.prev_hash != prev {
            return Err(ChainError::Broken { seq: r.seq });
        }
        if entry_hash(r) != r.hash {
            return Err(ChainError::Altered { seq: r.seq });
        }
        prev = &r.hash;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_edits_and_removals() {
        let note = Note {
            actor: "alice",
            action: "vote",
        };
        let req = |id: &str| ApprovalRequest {
            id: id.to_owned(),
            revision: 1,
            ..ApprovalRequest::default()
        };
        let a = entry(1, GENESIS, 10, &req("a"), b"a", note);
        let b = entry(2, &a.hash, 11, &req("b"), b"b", note);
        let c = entry(3, &b.hash, 12, &req("c"), b"c", note);
        assert_eq!(
            verify_chain(GENESIS, &[a.clone(), b.clone(), c.clone()]),
            Ok(())
        );
        assert_eq!(
            verify_chain(GENESIS, &[a.clone(), c.clone()]),
            Err(ChainError::Broken { seq: 3 })
        );
        let mut edited = b.clone();
        edited.actor = "mallory".to_owned();
        assert_eq!(
            verify_chain(GENESIS, &[a, edited, c]),
            Err(ChainError::Altered { seq: 2 })
        );
    }
}
