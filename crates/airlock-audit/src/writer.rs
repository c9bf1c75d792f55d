//! The writer: one dedicated thread owns the file and group-commits concurrent appends.
//!
//! Callers serialise their event on their own thread, hand the bytes to the writer through
//! a channel and wait on a completion slot. The writer drains everything queued, assigns
//! `seq`/`prev_hash`, adds checkpoints where due, issues **one** `write` and **one**
//! `fdatasync` for the whole batch, and only then completes the slots — so an `Ok` from
//! [`AuditHandle::append`] means the record is on disk. While one `fdatasync` runs the next
//! batch queues up, which is what makes the throughput independent of the sync latency.
//!
//! # Checkpoints and heartbeat
//!
//! A signed checkpoint is appended after every Decision (in the same batch, so an
//! acknowledged decision is always signed), after every `checkpoint_every_records`
//! records, once a second while records arrive, and — as an idle heartbeat — every
//! `heartbeat_interval_ms` (default 1 s) when nothing arrives. One second is chosen because
//! the verifier flags a live log whose newest checkpoint is older than the heartbeat plus a
//! small tolerance as a truncated tail: the heartbeat *is* the detection window, and one
//! second matches the target. The cost is one ~0.9 KB record and one fdatasync per
//! idle second (≈ 80 MB/day, bounded by rotation and retention).
//!
//! # Crash safety
//!
//! On open the last file is scanned. The longest prefix of lines that parse, hash and link
//! is kept; the rest (a torn or garbage tail from a crash) is copied byte-exact into
//! `quarantine-<seq>-<offset>.bin`, the file is truncated to the good prefix, and a
//! `quarantine` record naming the byte range and the SHA-256 of the removed bytes is
//! appended. Nothing is silently dropped. If the tail contains a complete line with a valid
//! hash after a broken one (not what a crash leaves), open refuses with
//! [`WriterError::DamagedTail`] so a human looks at it.
//!
//! A failed `write` or `fdatasync` seals the log: the batch and every later append fail
//! with [`AppendError::Sealed`], so the agent fails closed (a failed fsync may have dropped
//! dirty pages; retrying would acknowledge records that are not on disk).
//!
//! # Disk space ladder
//!
//! Before each batch the free space of the log's file system is read (statvfs). Below
//! `warn_free_bytes` a warning is logged; below `hold_free_bytes` only Decision/Outcome
//! (and chain) records are accepted — Attempts are refused, so the agent holds new actions
//! instead of approving them unaudited; below `min_free_bytes` everything is refused.
//! The band between `hold` and `min` is the space reserved for decisions.
//!
//! # Rotation and retention
//!
//! Files are named `audit-<first seq, 20 digits>.jsonl`. When the current file reaches
//! `rotate_bytes` or `rotate_age_secs`, a checkpoint closes it and the next file starts with
//! a `file_start` record whose `prev_hash` is the last hash of the previous file (the chain
//! simply continues) and which repeats the log id and signing key. Retention
//! (`retain_files`, `retain_age_secs`) then deletes the oldest files and appends a
//! `retention` record naming them and the first retained seq. A verifier given only the
//! retained files accepts a chain that starts at a `file_start` record: that record's
//! `prev_hash` is covered by the next signed checkpoint (so it cannot be forged), and a
//! later `retention` record must account for the missing prefix (else: Deleted).

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::keys::{SigningKey, checkpoint_message, rotation_message};
use crate::record::{
    AuditEvent, GENESIS_PREV_HASH, Hash, Kind, Lifecycle, LifecyclePhase, Priority, RecordError,
    airlock_of, body_members, chain_body, check_line, compose_line, hex, sha256,
};

/// Audit log settings; deserialisable from the agent's TOML (`[audit]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Checkpoint after this many records.
    pub checkpoint_every_records: u64,
    /// Checkpoint at least this often while records arrive (ms).
    pub checkpoint_interval_ms: u64,
    /// Idle heartbeat checkpoint interval (ms).
    pub heartbeat_interval_ms: u64,
    /// Most records in one group commit.
    pub max_batch_records: usize,
    /// Rotate when the current file reaches this size (0 = never).
    pub rotate_bytes: u64,
    /// Rotate when the current file is this old (0 = never).
    pub rotate_age_secs: u64,
    /// Keep at most this many files (0 = all).
    pub retain_files: usize,
    /// Delete files older than this (0 = never).
    pub retain_age_secs: u64,
    /// Warn below this much free space.
    pub warn_free_bytes: u64,
    /// Below this, refuse everything except decisions/outcomes.
    pub hold_free_bytes: u64,
    /// Below this, refuse everything.
    pub min_free_bytes: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_every_records: 1000,
            checkpoint_interval_ms: 1000,
            heartbeat_interval_ms: 1000,
            max_batch_records: 4096,
            rotate_bytes: 256 << 20,
            rotate_age_secs: 86_400,
            retain_files: 0,
            retain_age_secs: 0,
            warn_free_bytes: 1 << 30,
            hold_free_bytes: 256 << 20,
            min_free_bytes: 16 << 20,
        }
    }
}

/// Errors opening the log.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// File-system error.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another writer holds the log's lock.
    #[error("audit log {0} is locked by another writer")]
    Locked(PathBuf),
    /// The last file has a complete, valid-looking line after a broken one.
    #[error(
        "{file}: line {line} is broken but valid records follow it; refusing to repair (run `audit verify`)"
    )]
    DamagedTail {
        /// The file.
        file: PathBuf,
        /// 1-based line number of the first broken line.
        line: u64,
    },
    /// A structural record could not be read.
    #[error("{file}: {source}")]
    Record {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: RecordError,
    },
    /// The first record of the last file does not name the log.
    #[error("{0}: first record carries no log id")]
    NoLogId(PathBuf),
    /// Randomness unavailable.
    #[error("no randomness for the log id")]
    Random,
    /// The writer thread could not be started.
    #[error("spawning the writer thread: {0}")]
    Spawn(#[source] io::Error),
    /// Writing the first records failed.
    #[error("writing the opening records: {0}")]
    Append(#[from] AppendError),
}

/// Why an append failed. Cloneable because one failure completes a whole batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// A write or fdatasync failed earlier; the log accepts nothing more. Fail closed.
    #[error("audit log sealed after an I/O failure: {0}")]
    Sealed(String),
    /// The disk-space ladder refused the record. Fail closed (hold the action).
    #[error("only {free} bytes free on the audit file system; refusing {kind} records")]
    DiskLow {
        /// Free bytes seen.
        free: u64,
        /// Which records are refused (`normal` or `all`).
        kind: &'static str,
    },
    /// The log was closed.
    #[error("audit log closed")]
    Closed,
    /// The event could not be serialised.
    #[error("event cannot be serialised: {0}")]
    Encode(String),
}

/// Where and under which hash a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record's `seq`.
    pub seq: u64,
    /// The record's hash.
    pub hash: Hash,
}

/// A byte range moved to quarantine on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedRange {
    /// The log file it was cut from.
    pub file: PathBuf,
    /// Start offset (inclusive).
    pub start: u64,
    /// End offset (exclusive).
    pub end: u64,
    /// Where the bytes were kept.
    pub quarantine_file: PathBuf,
}

/// What [`AuditLog::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// A new log was created.
    pub created: bool,
    /// The previous run ended with a stop record and checkpoint.
    pub clean_shutdown: bool,
    /// Last seq found on disk (before this run's records).
    pub last_seq: Option<u64>,
    /// Torn tail moved aside.
    pub quarantined: Vec<QuarantinedRange>,
    /// The log id.
    pub log_id: String,
}

type SyncFn = Box<dyn FnMut(&File) -> io::Result<()> + Send>;
type FreeFn = Box<dyn FnMut(&Path) -> io::Result<u64> + Send>;
type ClockFn = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Fault-injection and clock hooks, for tests of the failure paths (a real EIO from
/// fdatasync or a full disk is hard to provoke). Production code uses `Hooks::default()`.
#[derive(Default)]
pub struct Hooks {
    /// Replaces `File::sync_data`.
    pub sync: Option<SyncFn>,
    /// Replaces statvfs free-space reading.
    pub free_bytes: Option<FreeFn>,
    /// Replaces the wall clock (ms since the epoch).
    pub clock: Option<ClockFn>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("sync", &self.sync.is_some())
            .field("free_bytes", &self.free_bytes.is_some())
            .field("clock", &self.clock.is_some())
            .finish()
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

type Outcome = Result<Appended, AppendError>;

#[derive(Default)]
struct SlotState {
    result: Option<Outcome>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
    cv: Condvar,
}

impl Slot {
    fn complete(&self, r: Outcome) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.result.is_none() {
            s.result = Some(r);
        }
        if let Some(w) = s.waker.take() {
            w.wake();
        }
        self.cv.notify_all();
    }
}

/// Completes its slot with `Closed` if the writer drops it unanswered (e.g. thread died).
struct Completer(Arc<Slot>);

impl Completer {
    fn complete(self, r: Outcome) {
        self.0.complete(r);
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        // No-op when already completed (complete() keeps the first result).
        self.0.complete(Err(AppendError::Closed));
    }
}

/// An append on its way to disk: `wait()` blocks, or `.await` it (any executor).
#[must_use = "the record is durable only once this resolves Ok"]
pub struct PendingAppend {
    slot: Arc<Slot>,
}

impl PendingAppend {
    /// Blocks until the record is durable (or failed).
    ///
    /// # Errors
    /// [`AppendError`] as produced by the writer.
    pub fn wait(self) -> Outcome {
        let mut s = self
            .slot
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(r) = s.result.take() {
                return r;
            }
            s = self.slot.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Future for PendingAppend {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        let mut s = self
            .slot
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match s.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

enum Msg {
    Append {
        kind: Kind,
        prio: Priority,
        body: Vec<u8>,
        done: Completer,
    },
    RotateKey {
        key: Box<SigningKey>,
        done: Completer,
    },
    Close {
        done: Completer,
    },
}

struct Shared {
    sealed: Mutex<Option<String>>,
    clock: ClockFn,
}

/// Cloneable, thread-safe handle for appending.
#[derive(Clone)]
pub struct AuditHandle {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AuditHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditHandle").finish_non_exhaustive()
    }
}

impl AuditHandle {
    /// Appends an event and returns once it is durable.
    ///
    /// # Errors
    /// [`AppendError::Sealed`] after an I/O failure, [`AppendError::DiskLow`],
    /// [`AppendError::Closed`], [`AppendError::Encode`]. On any error the caller must treat the
    /// action as unaudited and fail closed.
    pub fn append(&self, event: &AuditEvent) -> Outcome {
        self.submit(event)?.wait()
    }

    /// Queues an event; the returned [`PendingAppend`] resolves once it is durable. Lets one
    /// thread (or an async task, without tokio) keep many appends in flight.
    ///
    /// # Errors
    /// As [`AuditHandle::append`], for failures known before queueing.
    pub fn submit(&self, event: &AuditEvent) -> Result<PendingAppend, AppendError> {
        if let Some(reason) = self.sealed() {
            return Err(AppendError::Sealed(reason));
        }
        let body = body_members(&event.to_ocsf((self.shared.clock)()))
            .map_err(|e| AppendError::Encode(e.to_string()))?;
        let slot = Arc::new(Slot::default());
        let msg = Msg::Append {
            kind: event.kind(),
            prio: event.priority(),
            body,
            done: Completer(slot.clone()),
        };
        self.tx.send(msg).map_err(|_| AppendError::Closed)?;
        Ok(PendingAppend { slot })
    }

    /// Switches to a new signing key: a checkpoint under the old key, a `key_rotation`
    /// record carrying the new public key endorsed by the old key, then a checkpoint under
    /// the new key.
    ///
    /// # Errors
    /// As [`AuditHandle::append`].
    pub fn rotate_key(&self, key: SigningKey) -> Outcome {
        let slot = Arc::new(Slot::default());
        self.tx
            .send(Msg::RotateKey {
                key: Box::new(key),
                done: Completer(slot.clone()),
            })
            .map_err(|_| AppendError::Closed)?;
        PendingAppend { slot }.wait()
    }

    /// The seal reason, if an I/O failure sealed the log.
    pub fn sealed(&self) -> Option<String> {
        self.shared
            .sealed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// An open audit log: owns the writer thread.
pub struct AuditLog {
    handle: AuditHandle,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, recovering a torn tail, and starts the writer.
    ///
    /// # Errors
    /// [`WriterError`]: I/O, lock held by another writer, a damaged tail that is not a crash
    /// artefact, or failure to write the opening records.
    pub fn open(
        dir: &Path,
        config: AuditConfig,
        key: SigningKey,
    ) -> Result<(AuditLog, RecoveryReport), WriterError> {
        Self::open_with_hooks(dir, config, key, Hooks::default())
    }

    /// [`AuditLog::open`] with fault-injection/clock hooks.
    ///
    /// # Errors
    /// As [`AuditLog::open`].
    pub fn open_with_hooks(
        dir: &Path,
        config: AuditConfig,
        key: SigningKey,
        hooks: Hooks,
    ) -> Result<(AuditLog, RecoveryReport), WriterError> {
        let clock: ClockFn = hooks.clock.clone().unwrap_or_else(|| Arc::new(now_ms));
        let shared = Arc::new(Shared {
            sealed: Mutex::new(None),
            clock,
        });
        let (mut writer, report) = Writer::open(dir, config, key, hooks, shared.clone())?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(&rx))
            .map_err(WriterError::Spawn)?;
        Ok((
            AuditLog {
                handle: AuditHandle { tx, shared },
                thread: Some(thread),
            },
            report,
        ))
    }

    /// A cloneable handle for appending from other threads.
    pub fn handle(&self) -> AuditHandle {
        self.handle.clone()
    }

    /// Appends an event and returns once it is durable.
    ///
    /// # Errors
    /// As [`AuditHandle::append`].
    pub fn append(&self, event: &AuditEvent) -> Outcome {
        self.handle.append(event)
    }

    /// Writes a stop record and a final checkpoint, syncs, and stops the writer.
    ///
    /// # Errors
    /// As [`AuditHandle::append`] for the stop record.
    pub fn close(mut self) -> Result<(), AppendError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), AppendError> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let slot = Arc::new(Slot::default());
        let r = match self.handle.tx.send(Msg::Close {
            done: Completer(slot.clone()),
        }) {
            Ok(()) => PendingAppend { slot }.wait().map(|_| ()),
            Err(_) => Err(AppendError::Closed),
        };
        // A panicked writer has already failed every pending slot via Completer::drop.
        let _ = thread.join();
        r
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriterError {
    let path = path.to_path_buf();
    move |source| WriterError::Io { op, path, source }
}

/// `audit-<seq>.jsonl` files in `dir`, oldest first.
///
/// # Errors
/// The directory cannot be read.
pub fn log_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    v.sort();
    Ok(v)
}

fn file_name_for(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("audit-{first_seq:020}.jsonl"))
}

fn sync_dir(dir: &Path) -> Result<(), WriterError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// The name of the lock file in a log directory; a writer holds an exclusive lock on it.
pub const LOCK_FILE: &str = ".lock";

struct Writer {
    dir: PathBuf,
    cfg: AuditConfig,
    key: SigningKey,
    log_id: String,
    file: File,
    path: PathBuf,
    file_bytes: u64,
    file_started_ms: u64,
    next_seq: u64,
    last_hash: Hash,
    last_kind: Kind,
    last_cp_ms: u64,
    since_cp: u64,
    buf: Vec<u8>,
    hooks: Hooks,
    shared: Arc<Shared>,
    warned_low: bool,
    _lock: File,
}

struct Scan {
    good_len: u64,
    lines: u64,
    last: Option<(u64, Hash, Kind)>,
    last_line: Option<Vec<u8>>,
    prev_line: Option<Vec<u8>>,
    first_line: Option<Vec<u8>>,
    damaged_at: Option<u64>,
}

/// Longest prefix of lines that parse, hash and link.
fn scan(data: &[u8]) -> Scan {
    let mut s = Scan {
        good_len: 0,
        lines: 0,
        last: None,
        last_line: None,
        prev_line: None,
        first_line: None,
        damaged_at: None,
    };
    let mut off = 0usize;
    let mut broken = false;
    let mut lineno = 0u64;
    while off < data.len() {
        let Some(nl) = data[off..].iter().position(|&c| c == b'\n') else {
            break;
        };
        let line = &data[off..off + nl];
        lineno += 1;
        let info = check_line(line).ok().filter(|i| i.hash_ok);
        if broken {
            if info.is_some() {
                s.damaged_at = Some(s.lines + 1);
                return s;
            }
        } else {
            match info {
                Some(i)
                    if s.last
                        .is_none_or(|(seq, h, _)| i.seq == seq + 1 && i.prev_hash == h) =>
                {
                    s.last = Some((i.seq, i.hash, i.kind));
                    s.prev_line = s.last_line.take();
                    s.last_line = Some(line.to_vec());
                    if s.first_line.is_none() {
                        s.first_line = Some(line.to_vec());
                    }
                    s.lines = lineno;
                    s.good_len = (off + nl + 1) as u64;
                }
                Some(_) => {
                    // A valid line that does not link: not a torn write.
                    s.damaged_at = Some(lineno);
                    return s;
                }
                None => broken = true,
            }
        }
        off += nl + 1;
    }
    s
}

fn parse_obj(line: &[u8], file: &Path) -> Result<Map<String, Value>, WriterError> {
    serde_json::from_slice(line).map_err(|e| WriterError::Record {
        file: file.into(),
        source: e.into(),
    })
}

impl Writer {
    fn open(
        dir: &Path,
        cfg: AuditConfig,
        key: SigningKey,
        hooks: Hooks,
        shared: Arc<Shared>,
    ) -> Result<(Writer, RecoveryReport), WriterError> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        if lock.try_lock().is_err() {
            return Err(WriterError::Locked(dir.into()));
        }
        let now = (shared.clock)();
        let mut files = log_files(dir).map_err(io_err("list", dir))?;
        let mut quarantined = Vec::new();
        // Find the last file with at least one good record, quarantining torn tails.
        let found = loop {
            let Some(path) = files.pop() else { break None };
            let data = fs::read(&path).map_err(io_err("read", &path))?;
            let s = scan(&data);
            if let Some(line) = s.damaged_at {
                return Err(WriterError::DamagedTail { file: path, line });
            }
            if s.good_len < data.len() as u64 {
                let next = s.last.map_or(0, |(seq, _, _)| seq + 1);
                let q = dir.join(format!("quarantine-{next:020}-{}.bin", s.good_len));
                let mut f = File::create(&q).map_err(io_err("create", &q))?;
                f.write_all(&data[s.good_len as usize..])
                    .map_err(io_err("write", &q))?;
                f.sync_all().map_err(io_err("fsync", &q))?;
                sync_dir(dir)?;
                quarantined.push((
                    QuarantinedRange {
                        file: path.clone(),
                        start: s.good_len,
                        end: data.len() as u64,
                        quarantine_file: q,
                    },
                    sha256(&data[s.good_len as usize..]),
                ));
                if s.last.is_none() {
                    fs::remove_file(&path).map_err(io_err("remove", &path))?;
                    sync_dir(dir)?;
                    continue;
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err("open", &path))?;
                f.set_len(s.good_len).map_err(io_err("truncate", &path))?;
                f.sync_all().map_err(io_err("fsync", &path))?;
            }
            if s.last.is_none() {
                // Empty file (crash right after creating it).
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                continue;
            }
            break Some((path, s));
        };
        let mut buf = Vec::with_capacity(1 << 20);
        let (report, writer) = match found {
            None => {
                let mut id = [0u8; 16];
                SystemRandom::new()
                    .fill(&mut id)
                    .map_err(|_| WriterError::Random)?;
                let log_id = hex(&id);
                let path = file_name_for(dir, 0);
                let file = OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_err("create", &path))?;
                sync_dir(dir)?;
                let mut w = Writer {
                    dir: dir.into(),
                    cfg,
                    key,
                    log_id: log_id.clone(),
                    file,
                    path,
                    file_bytes: 0,
                    file_started_ms: now,
                    next_seq: 0,
                    last_hash: GENESIS_PREV_HASH,
                    last_kind: Kind::Genesis,
                    last_cp_ms: now,
                    since_cp: 0,
                    buf: std::mem::take(&mut buf),
                    hooks,
                    shared,
                    warned_low: false,
                    _lock: lock,
                };
                let body = chain_body(
                    now,
                    "audit log created",
                    json!({ "log_id": log_id, "key_id": w.key.public().key_id, "public_key": w.key.public().to_base64() }),
                );
                w.push_map(Kind::Genesis, &body);
                let report = RecoveryReport {
                    created: true,
                    clean_shutdown: true,
                    last_seq: None,
                    quarantined: vec![],
                    log_id,
                };
                (report, w)
            }
            Some((path, s)) => {
                let (last_seq, last_hash, last_kind) =
                    s.last.unwrap_or((0, GENESIS_PREV_HASH, Kind::Genesis));
                let first = parse_obj(s.first_line.as_deref().unwrap_or_default(), &path)?;
                let first_air = airlock_of(&first);
                let log_id = first_air
                    .and_then(|a| a.get("log_id"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| WriterError::NoLogId(path.clone()))?
                    .to_owned();
                let started = first.get("time").and_then(Value::as_u64).unwrap_or(now);
                let clean = last_kind == Kind::Checkpoint
                    && s.prev_line.as_deref().is_some_and(|l| {
                        parse_obj(l, &path).ok().is_some_and(|v| {
                            v.get("kind").and_then(Value::as_str) == Some("lifecycle")
                                && airlock_of(&v)
                                    .and_then(|a| a.get("phase"))
                                    .and_then(Value::as_str)
                                    == Some("stop")
                        })
                    });
                let last_key = s
                    .last_line
                    .as_deref()
                    .and_then(|l| parse_obj(l, &path).ok())
                    .and_then(|v| {
                        airlock_of(&v)
                            .and_then(|a| a.get("key_id"))
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    });
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io_err("open", &path))?;
                let file_bytes = s.good_len;
                let mut w = Writer {
                    dir: dir.into(),
                    cfg,
                    key,
                    log_id: log_id.clone(),
                    file,
                    path,
                    file_bytes,
                    file_started_ms: started,
                    next_seq: last_seq + 1,
                    last_hash,
                    last_kind,
                    last_cp_ms: now,
                    since_cp: 1,
                    buf: std::mem::take(&mut buf),
                    hooks,
                    shared,
                    warned_low: false,
                    _lock: lock,
                };
                for (q, digest) in &quarantined {
                    let body = chain_body(
                        now,
                        "torn tail quarantined on recovery",
                        json!({
                            "file": q.file.file_name().map(|n| n.to_string_lossy().into_owned()),
                            "start": q.start, "end": q.end, "length": q.end - q.start,
                            "sha256": hex(digest),
                            "quarantine_file": q.quarantine_file.file_name().map(|n| n.to_string_lossy().into_owned()),
                        }),
                    );
                    w.push_map(Kind::Quarantine, &body);
                }
                if last_key
                    .as_deref()
                    .is_some_and(|k| k != w.key.public().key_id)
                {
                    // Key changed while the agent was down: the old key is not here to
                    // endorse it, so verifiers must be given the new public key.
                    let body = chain_body(
                        now,
                        "signing key changed (not endorsed)",
                        json!({ "old_key_id": last_key, "new_key_id": w.key.public().key_id,
                                "new_public_key": w.key.public().to_base64(), "endorsement": null }),
                    );
                    w.push_map(Kind::KeyRotation, &body);
                }
                let report = RecoveryReport {
                    created: false,
                    clean_shutdown: clean,
                    last_seq: Some(last_seq),
                    quarantined: quarantined.into_iter().map(|(q, _)| q).collect(),
                    log_id,
                };
                (report, w)
            }
        };
        let mut w = writer;
        let detail = if report.created {
            "created".to_owned()
        } else if report.clean_shutdown {
            "resumed after clean shutdown".to_owned()
        } else {
            format!(
                "resumed after unclean shutdown; last seq {}",
                report.last_seq.unwrap_or(0)
            )
        };
        let start = AuditEvent::Lifecycle(Lifecycle {
            phase: LifecyclePhase::Start,
            version: env!("CARGO_PKG_VERSION").into(),
            detail,
        });
        let now = w.now();
        w.push_map(Kind::Lifecycle, &start.to_ocsf(now));
        w.push_checkpoint(now);
        w.flush().map_err(AppendError::Sealed)?;
        Ok((w, report))
    }

    fn now(&self) -> u64 {
        (self.shared.clock)()
    }

    fn push_map(&mut self, kind: Kind, body: &Map<String, Value>) {
        // Our own chain bodies never contain floats.
        let bytes = body_members(body).unwrap_or_default();
        self.push(kind, &bytes);
    }

    fn push(&mut self, kind: Kind, body: &[u8]) -> Appended {
        let seq = self.next_seq;
        let hash = compose_line(&mut self.buf, seq, &self.last_hash, kind, body);
        self.next_seq += 1;
        self.last_hash = hash;
        self.last_kind = kind;
        if kind == Kind::Checkpoint {
            self.since_cp = 0;
        } else {
            self.since_cp += 1;
        }
        Appended { seq, hash }
    }

    fn push_checkpoint(&mut self, now: u64) {
        let covered_seq = self.next_seq - 1;
        let key_id = self.key.public().key_id.clone();
        let msg = checkpoint_message(&self.log_id, covered_seq, &self.last_hash, now, &key_id);
        let sig = self.key.sign(&msg);
        let body = chain_body(
            now,
            "checkpoint",
            json!({ "log_id": self.log_id, "covered_seq": covered_seq, "covered_hash": hex(&self.last_hash),
                    "signed_time": now, "key_id": key_id, "signature": B64.encode(sig) }),
        );
        self.push_map(Kind::Checkpoint, &body);
        self.last_cp_ms = now;
    }

    /// One write and one fdatasync for everything buffered. Seals on failure.
    fn flush(&mut self) -> Result<(), String> {
        if let Some(r) = self
            .shared
            .sealed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            self.buf.clear();
            return Err(r);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut r = self
            .file
            .write_all(&self.buf)
            .map_err(|e| format!("write {}: {e}", self.path.display()));
        if r.is_ok() {
            let sync = match self.hooks.sync.as_mut() {
                Some(f) => f(&self.file),
                None => self.file.sync_data(),
            };
            r = sync.map_err(|e| format!("fdatasync {}: {e}", self.path.display()));
        }
        self.file_bytes += self.buf.len() as u64;
        self.buf.clear();
        if let Err(reason) = &r {
            tracing::error!(path = %self.path.display(), %reason, "audit log sealed");
            *self
                .shared
                .sealed
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
        }
        r
    }

    fn free_bytes(&mut self) -> io::Result<u64> {
        if let Some(f) = self.hooks.free_bytes.as_mut() {
            return f(&self.dir);
        }
        let st = nix::sys::statvfs::statvfs(&self.dir).map_err(io::Error::from)?;
        Ok(st.blocks_available().saturating_mul(st.fragment_size()))
    }

    fn run(&mut self, rx: &mpsc::Receiver<Msg>) {
        let max = self.cfg.max_batch_records.max(1);
        let mut batch: Vec<Msg> = Vec::with_capacity(max);
        let mut acks: Vec<(Completer, Appended)> = Vec::with_capacity(max);
        loop {
            let now = self.now();
            let due = self.last_cp_ms.saturating_add(
                self.cfg
                    .heartbeat_interval_ms
                    .min(self.cfg.checkpoint_interval_ms),
            );
            let wait = Duration::from_millis(due.saturating_sub(now).max(1));
            match rx.recv_timeout(wait) {
                Ok(m) => batch.push(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.close(None);
                    return;
                }
            }
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let free = if batch.is_empty() {
                None
            } else {
                self.free_bytes().ok()
            };
            if let Some(free) = free {
                if free < self.cfg.warn_free_bytes && !self.warned_low {
                    tracing::warn!(free, dir = %self.dir.display(), "audit file system low on space");
                    self.warned_low = true;
                } else if free >= self.cfg.warn_free_bytes {
                    self.warned_low = false;
                }
            }
            let sealed = self
                .shared
                .sealed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let mut close = None;
            for m in batch.drain(..) {
                match m {
                    Msg::Append {
                        kind,
                        prio,
                        body,
                        done,
                    } => {
                        if let Some(r) = &sealed {
                            done.complete(Err(AppendError::Sealed(r.clone())));
                            continue;
                        }
                        if let Some(free) = free {
                            if free < self.cfg.min_free_bytes {
                                done.complete(Err(AppendError::DiskLow { free, kind: "all" }));
                                continue;
                            }
                            if free < self.cfg.hold_free_bytes && prio == Priority::Normal {
                                done.complete(Err(AppendError::DiskLow {
                                    free,
                                    kind: "normal",
                                }));
                                continue;
                            }
                        }
                        let a = self.push(kind, &body);
                        acks.push((done, a));
                        if kind == Kind::Decision
                            || self.since_cp >= self.cfg.checkpoint_every_records
                        {
                            let now = self.now();
                            self.push_checkpoint(now);
                        }
                    }
                    Msg::RotateKey { key, done } => {
                        let now = self.now();
                        if self.last_kind != Kind::Checkpoint {
                            self.push_checkpoint(now);
                        }
                        let old = self.key.public().clone();
                        let endorsement = self.key.sign(&rotation_message(
                            &self.log_id,
                            self.next_seq - 1,
                            &self.last_hash,
                            &key.public().bytes,
                        ));
                        let body = chain_body(
                            now,
                            "signing key rotated",
                            json!({ "old_key_id": old.key_id, "new_key_id": key.public().key_id,
                                    "new_public_key": key.public().to_base64(), "endorsement": B64.encode(endorsement),
                                    "endorsed_seq": self.next_seq - 1, "endorsed_hash": hex(&self.last_hash) }),
                        );
                        self.push_map(Kind::KeyRotation, &body);
                        let a = Appended {
                            seq: self.next_seq - 1,
                            hash: self.last_hash,
                        };
                        self.key = *key;
                        self.push_checkpoint(now);
                        acks.push((done, a));
                    }
                    Msg::Close { done } => close = Some(done),
                }
            }
            let now = self.now();
            let since = now.saturating_sub(self.last_cp_ms);
            if (self.since_cp > 0 && since >= self.cfg.checkpoint_interval_ms)
                || since >= self.cfg.heartbeat_interval_ms
            {
                self.push_checkpoint(now);
            }
            match self.flush() {
                Ok(()) => {
                    for (done, a) in acks.drain(..) {
                        done.complete(Ok(a));
                    }
                }
                Err(reason) => {
                    for (done, _) in acks.drain(..) {
                        done.complete(Err(AppendError::Sealed(reason.clone())));
                    }
                }
            }
            if let Some(done) = close {
                self.close(Some(done));
                return;
            }
            if let Err(e) = self.maybe_rotate() {
                let reason = e.to_string();
                tracing::error!(%reason, "audit rotation failed; log sealed");
                *self
                    .shared
                    .sealed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(reason);
            }
        }
    }

    fn close(&mut self, done: Option<Completer>) {
        let stop = AuditEvent::Lifecycle(Lifecycle {
            phase: LifecyclePhase::Stop,
            version: env!("CARGO_PKG_VERSION").into(),
            detail: "clean shutdown".into(),
        });
        let now = self.now();
        self.push_map(Kind::Lifecycle, &stop.to_ocsf(now));
        let a = Appended {
            seq: self.next_seq - 1,
            hash: self.last_hash,
        };
        self.push_checkpoint(now);
        let r = self.flush().map(|()| a).map_err(AppendError::Sealed);
        if let Some(done) = done {
            done.complete(r);
        }
    }

    fn maybe_rotate(&mut self) -> Result<(), WriterError> {
        let now = self.now();
        let by_size = self.cfg.rotate_bytes > 0 && self.file_bytes >= self.cfg.rotate_bytes;
        let by_age = self.cfg.rotate_age_secs > 0
            && now.saturating_sub(self.file_started_ms) >= self.cfg.rotate_age_secs * 1000;
        if !(by_size || by_age)
            || self
                .shared
                .sealed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
        {
            return Ok(());
        }
        if self.last_kind != Kind::Checkpoint {
            self.push_checkpoint(now);
            self.flush().map_err(AppendError::Sealed)?;
        }
        let prev_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let path = file_name_for(&self.dir, self.next_seq);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.path = path;
        self.file_bytes = 0;
        self.file_started_ms = now;
        let body = chain_body(
            now,
            "audit file rotated",
            json!({ "log_id": self.log_id, "prev_file": prev_name, "prev_seq": self.next_seq - 1,
                    "key_id": self.key.public().key_id, "public_key": self.key.public().to_base64() }),
        );
        self.push_map(Kind::FileStart, &body);
        self.push_checkpoint(now);
        self.flush().map_err(AppendError::Sealed)?;
        self.retain(now)
    }

    fn retain(&mut self, now: u64) -> Result<(), WriterError> {
        if self.cfg.retain_files == 0 && self.cfg.retain_age_secs == 0 {
            return Ok(());
        }
        let files = log_files(&self.dir).map_err(io_err("list", &self.dir))?;
        let mut deleted = Vec::new();
        let n = files.len();
        for (i, f) in files.iter().enumerate() {
            if *f == self.path {
                break;
            }
            let remaining = n - i;
            let too_many = self.cfg.retain_files > 0 && remaining > self.cfg.retain_files;
            let too_old = self.cfg.retain_age_secs > 0
                && fs::metadata(f)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .is_some_and(|t| {
                        now.saturating_sub(u64::try_from(t.as_millis()).unwrap_or(0))
                            >= self.cfg.retain_age_secs * 1000
                    });
            if !(too_many || too_old) {
                break;
            }
            fs::remove_file(f).map_err(io_err("remove", f))?;
            deleted.push(f.clone());
        }
        if deleted.is_empty() {
            return Ok(());
        }
        sync_dir(&self.dir)?;
        let first_retained = log_files(&self.dir)
            .map_err(io_err("list", &self.dir))?
            .into_iter()
            .next();
        let first_seq = first_retained.as_ref().and_then(|p| {
            p.file_stem()?
                .to_str()?
                .strip_prefix("audit-")?
                .parse::<u64>()
                .ok()
        });
        let names: Vec<String> = deleted
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let body = chain_body(
            now,
            "retention deleted old audit files",
            json!({ "deleted": names, "first_retained_seq": first_seq }),
        );
        self.push_map(Kind::Retention, &body);
        self.push_checkpoint(now);
        self.flush().map_err(AppendError::Sealed)?;
        Ok(())
    }
}

/// Public key bytes recorded in a parsed `genesis`/`file_start`/`key_rotation` record.
pub(crate) fn b64_field(a: &Map<String, Value>, name: &str) -> Option<Vec<u8>> {
    a.get(name)
        .and_then(Value::as_str)
        .and_then(|s| B64.decode(s).ok())
}
