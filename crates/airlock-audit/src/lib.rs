//! Hash-chained, signed, crash-safe audit log for airlock (DESIGN.md §7).
//!
//! Every record is one OCSF-shaped JSON object per line carrying `seq`, `prev_hash` and its
//! own `hash` (SHA-256 over canonical bytes, see [`record`]), so a shipper can tail the file
//! as it is and a SIEM can re-verify each line. ed25519 checkpoints ([`keys`]) sign the
//! chain every second, every N records, after every decision and as an idle heartbeat.
//! [`AuditLog`] ([`writer`]) group-commits appends with one `fdatasync` per batch and
//! returns only once a record is durable; [`verify()`] names the first bad record and the
//! tamper class; [`cli`] is mounted by the agent as `airlock audit ...`.
//!
//! ```no_run
//! use airlock_audit::{AuditConfig, AuditLog, SigningKey};
//! # fn main() -> Result<(), airlock_audit::AuditError> {
//! let key = SigningKey::load_or_create("/etc/airlock/audit.key".as_ref())?;
//! let (log, recovery) = AuditLog::open("/var/lib/airlock/audit".as_ref(), AuditConfig::default(), key)?;
//! let handle = log.handle(); // clone into threads; handle.append(&event) is durable on Ok
//! # let _ = (handle, recovery);
//! log.close()?;
//! # Ok(()) }
//! ```

pub mod cli;
pub mod keys;
pub mod record;
pub mod verify;
pub mod writer;

pub use keys::{KeyError, PublicKey, SigningKey};
pub use record::{
    Action, Actor, Attempt, AuditEvent, Decision, Kind, Lifecycle, LifecyclePhase, Outcome,
    OutcomeKind, PolicyRef, PolicyReload, Reveal, SelfProtection, Verdict,
};
pub use verify::{
    Finding, TailCheck, TamperClass, VerifyError, VerifyOptions, VerifyReport, verify,
};
pub use writer::{
    AppendError, Appended, AuditConfig, AuditHandle, AuditLog, Hooks, PendingAppend,
    QuarantinedRange, RecoveryReport, WriterError,
};

/// Any error of this crate (what [`cli::run`] returns).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Opening the log.
    #[error(transparent)]
    Writer(#[from] WriterError),
    /// Appending.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Keys.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Verification could not run.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The CLI.
    #[error(transparent)]
    Cli(#[from] cli::CliError),
}
