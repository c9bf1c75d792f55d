//! Verification: framing, chain, signatures and checkpoint coverage, naming the first bad
//! record and the tamper class.
//!
//! Each file is read once; its lines are hashed in parallel (one chunk per core) on the fast
//! path of [`crate::record::check_line`]; the chain logic then runs sequentially over the
//! extracted `(seq, prev_hash, hash, kind)` tuples, parsing only chain records
//! (checkpoints, rotations, lifecycle...) in full.
//!
//! Classification at the first anomaly (record `cur`, previous accepted record `prev`):
//!
//! * unparseable line or hash mismatch → **Modified** (a torn last line of the last file →
//!   **TruncatedTail**);
//! * `cur.prev_hash` is the hash of a record that comes *later* → **Reordered**;
//! * the record after `cur` links to `prev` (so `cur` sits in a chain that does not need
//!   it), or `cur` re-uses a seq whose predecessor is an earlier record → **Inserted**;
//! * the chain continues under another log id, or breaks at a file boundary with continuous
//!   seqs → **Forked** (two histories spliced);
//! * seq jumps at a file boundary → **TruncatedTail** (of the earlier file); elsewhere →
//!   **Deleted**;
//! * seq continuous but the link is broken → **Modified** (the previous record was changed
//!   and re-hashed);
//! * a checkpoint signed by an unknown key or with an invalid signature → **BadSignature**;
//!   a valid signature over a hash the chain no longer has → **Modified** (history rewritten);
//! * two consecutive checkpoints further apart than `max_gap_ms` without an agent restart
//!   in between → **HeartbeatGap**;
//! * the end: with [`TailCheck::Closed`] the log must end with a stop record and checkpoint;
//!   with [`TailCheck::Live`] its newest checkpoint must be younger than `max_gap_ms` —
//!   otherwise **TruncatedTail**.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::keys::{PublicKey, checkpoint_message, rotation_message};
use crate::record::{GENESIS_PREV_HASH, Hash, Kind, LineInfo, airlock_of, check_line, parse_hash};
use crate::writer::{b64_field, log_files};

/// Errors that stop verification before a verdict (not tamper findings).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file or directory could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No log files were found.
    #[error("no audit files found")]
    NoFiles,
}

/// The kind of damage found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TamperClass {
    /// A record's bytes were changed (or it no longer parses).
    Modified,
    /// Records are missing.
    Deleted,
    /// A record was added.
    Inserted,
    /// Records are out of order.
    Reordered,
    /// The end of the log (or of a file) is missing.
    TruncatedTail,
    /// Two histories were spliced together.
    Forked,
    /// A checkpoint signature is invalid or by an untrusted key.
    BadSignature,
    /// Checkpoints stopped for longer than the heartbeat allows.
    HeartbeatGap,
}

/// The first bad record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Tamper class.
    pub class: TamperClass,
    /// File holding the record.
    pub file: PathBuf,
    /// 1-based line number in that file.
    pub line: u64,
    /// The record's seq, when readable.
    pub seq: Option<u64>,
    /// Human explanation.
    pub detail: String,
}

/// How to judge the end of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailCheck {
    /// No writer is running: the log must end with a stop record and a checkpoint.
    Closed,
    /// A writer is running: the newest checkpoint must be younger than `max_gap_ms`.
    Live {
        /// Current time, ms since the epoch.
        now_ms: u64,
    },
    /// Do not judge the end (exports, copies).
    Unchecked,
}

/// Verification settings.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Keys trusted to sign checkpoints (further keys are trusted when a trusted key
    /// endorses them in a `key_rotation` record).
    pub trusted_keys: Vec<PublicKey>,
    /// Largest allowed distance between consecutive checkpoints (ms).
    pub max_gap_ms: u64,
    /// End-of-log rule.
    pub tail: TailCheck,
    /// Accept a chain that starts anywhere (an exported range).
    pub partial: bool,
}

impl VerifyOptions {
    /// Defaults: heartbeat 1 s + 1.5 s tolerance, tail unchecked, full chain required.
    pub fn new(trusted_keys: Vec<PublicKey>) -> VerifyOptions {
        VerifyOptions {
            trusted_keys,
            max_gap_ms: 2500,
            tail: TailCheck::Unchecked,
            partial: false,
        }
    }
}

/// What was checked and what (if anything) is wrong.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Files verified, in order.
    pub files: Vec<PathBuf>,
    /// Records read.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Valid checkpoints.
    pub checkpoints: u64,
    /// First seq.
    pub first_seq: Option<u64>,
    /// Last seq.
    pub last_seq: Option<u64>,
    /// Last seq covered by a valid checkpoint.
    pub last_signed_seq: Option<u64>,
    /// The log id.
    pub log_id: Option<String>,
    /// The first problem, if any.
    pub finding: Option<Finding>,
}

impl VerifyReport {
    /// No problem found.
    pub fn ok(&self) -> bool {
        self.finding.is_none()
    }
}

struct Entry {
    file: u32,
    line: u64,
    info: Option<LineInfo>,
    terminated: bool,
    obj: Option<Box<Map<String, Value>>>,
}

/// Expands directories into their `audit-*.jsonl` files (name order); files stay in the
/// order given.
///
/// # Errors
/// [`VerifyError::Io`] if a directory cannot be listed.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, VerifyError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(log_files(p).map_err(|source| VerifyError::Io {
                path: p.clone(),
                source,
            })?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn check_chunk(lines: &[(u64, &[u8], bool)], file: u32) -> Vec<Entry> {
    lines
        .iter()
        .map(|&(line, bytes, terminated)| {
            let info = if terminated {
                check_line(bytes).ok()
            } else {
                None
            };
            let obj = info
                .filter(|i| i.hash_ok && i.kind.is_structural())
                .and_then(|_| serde_json::from_slice::<Map<String, Value>>(bytes).ok())
                .map(Box::new);
            Entry {
                file,
                line,
                info,
                terminated,
                obj,
            }
        })
        .collect()
}

fn read_entries(path: &Path, file: u32, out: &mut Vec<Entry>) -> Result<u64, VerifyError> {
    let data = std::fs::read(path).map_err(|source| VerifyError::Io {
        path: path.into(),
        source,
    })?;
    let mut lines = Vec::with_capacity(data.len() / 256 + 1);
    let mut off = 0usize;
    let mut n = 0u64;
    while off < data.len() {
        n += 1;
        match memchr::memchr(b'\n', &data[off..]) {
            Some(i) => {
                lines.push((n, &data[off..off + i], true));
                off += i + 1;
            }
            None => {
                lines.push((n, &data[off..], false));
                off = data.len();
            }
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(16);
    if threads <= 1 || lines.len() < 4096 {
        out.extend(check_chunk(&lines, file));
    } else {
        let per = lines.len().div_ceil(threads);
        let parts: Vec<Vec<Entry>> = std::thread::scope(|s| {
            let hs: Vec<_> = lines
                .chunks(per)
                .map(|c| s.spawn(move || check_chunk(c, file)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_default())
                .collect()
        });
        for p in parts {
            out.extend(p);
        }
    }
    Ok(data.len() as u64)
}

/// Verifies log files (directories are expanded).
///
/// # Errors
/// [`VerifyError`] if files cannot be read; tamper findings are in the report.
pub fn verify(paths: &[PathBuf], opts: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
    let files = expand_paths(paths)?;
    if files.is_empty() {
        return Err(VerifyError::NoFiles);
    }
    let mut entries = Vec::new();
    let mut bytes = 0;
    for (i, f) in files.iter().enumerate() {
        bytes += read_entries(f, u32::try_from(i).unwrap_or(u32::MAX), &mut entries)?;
    }
    let mut report = VerifyReport {
        files: files.clone(),
        records: entries.len() as u64,
        bytes,
        checkpoints: 0,
        first_seq: None,
        last_seq: None,
        last_signed_seq: None,
        log_id: None,
        finding: None,
    };
    let mut v = Verifier {
        files: &files,
        entries: &entries,
        opts,
        report: &mut report,
        index: None,
    };
    let finding = v.run();
    report.finding = finding;
    Ok(report)
}

struct Verifier<'a> {
    files: &'a [PathBuf],
    entries: &'a [Entry],
    opts: &'a VerifyOptions,
    report: &'a mut VerifyReport,
    index: Option<HashMap<Hash, usize>>,
}

fn air(e: &Entry) -> Option<&Map<String, Value>> {
    e.obj.as_deref().and_then(airlock_of)
}

fn s<'m>(a: &'m Map<String, Value>, k: &str) -> Option<&'m str> {
    a.get(k).and_then(Value::as_str)
}

impl Verifier<'_> {
    fn finding(&self, i: usize, class: TamperClass, detail: String) -> Finding {
        let e = &self.entries[i];
        Finding {
            class,
            file: self.files.get(e.file as usize).cloned().unwrap_or_default(),
            line: e.line,
            seq: e.info.map(|x| x.seq),
            detail,
        }
    }

    fn info(&self, i: usize) -> LineInfo {
        // Only called on entries already known to be valid.
        self.entries[i].info.unwrap_or(LineInfo {
            seq: 0,
            prev_hash: GENESIS_PREV_HASH,
            hash: GENESIS_PREV_HASH,
            kind: Kind::Genesis,
            hash_ok: false,
        })
    }

    fn index(&mut self) -> &HashMap<Hash, usize> {
        let entries = self.entries;
        self.index.get_or_insert_with(|| {
            let mut m = HashMap::with_capacity(entries.len());
            for (i, e) in entries.iter().enumerate() {
                if let Some(info) = e.info.filter(|x| x.hash_ok) {
                    m.entry(info.hash).or_insert(i);
                }
            }
            m
        })
    }

    /// The log id carried by the first chain record at or after `i`.
    fn log_id_from(&self, i: usize) -> Option<String> {
        self.entries[i..]
            .iter()
            .find_map(|e| air(e).and_then(|a| s(a, "log_id")).map(str::to_owned))
    }

    fn run(&mut self) -> Option<Finding> {
        let n = self.entries.len();
        let mut trusted: HashMap<String, PublicKey> = self
            .opts
            .trusted_keys
            .iter()
            .map(|k| (k.key_id.clone(), k.clone()))
            .collect();
        let mut log_id: Option<String> = None;
        let mut prev: Option<usize> = None;
        let mut last_cp_time: Option<u64> = None;
        let mut restarted = false;
        let mut retention_first: Option<u64> = None;
        let mut starts_mid_chain = false;
        let mut last_stop = false;
        for i in 0..n {
            let e = &self.entries[i];
            let last = i + 1 == n;
            let Some(info) = e.info else {
                let (class, what) =
                    if last && (!e.terminated || e.file as usize + 1 == self.files.len()) {
                        (TamperClass::TruncatedTail, "torn last line")
                    } else {
                        (TamperClass::Modified, "line is not a valid audit record")
                    };
                return Some(self.finding(i, class, what.into()));
            };
            if !info.hash_ok {
                return Some(self.finding(
                    i,
                    TamperClass::Modified,
                    "hash does not match the record's contents".into(),
                ));
            }
            match prev {
                None => {
                    self.report.first_seq = Some(info.seq);
                    let genesis = info.seq == 0
                        && info.kind == Kind::Genesis
                        && info.prev_hash == GENESIS_PREV_HASH;
                    if !genesis {
                        if info.kind == Kind::FileStart {
                            starts_mid_chain = true;
                        } else if !self.opts.partial {
                            return Some(self.finding(
                                i,
                                TamperClass::Deleted,
                                "chain does not start with a genesis or file_start record".into(),
                            ));
                        }
                    }
                }
                Some(p) => {
                    let pi = self.info(p);
                    if !(info.seq == pi.seq + 1 && info.prev_hash == pi.hash) {
                        return Some(self.classify(i, p, log_id.as_deref()));
                    }
                    // File boundaries: the writer ends every file with a checkpoint.
                    if self.entries[p].file != e.file && pi.kind != Kind::Checkpoint {
                        return Some(self.finding(
                            p,
                            TamperClass::TruncatedTail,
                            "file does not end with a checkpoint (its tail is missing)".into(),
                        ));
                    }
                }
            }
            prev = Some(i);
            self.report.last_seq = Some(info.seq);
            let a = air(e);
            match info.kind {
                Kind::Genesis | Kind::FileStart => {
                    let id = a.and_then(|a| s(a, "log_id")).map(str::to_owned);
                    match (&log_id, id) {
                        (Some(known), Some(id)) if *known != id => {
                            return Some(self.finding(
                                i,
                                TamperClass::Forked,
                                format!("log id {id} differs from {known}"),
                            ));
                        }
                        (None, id) => log_id = id,
                        _ => {}
                    }
                }
                Kind::Checkpoint => {
                    let Some(a) = a else {
                        return Some(self.finding(
                            i,
                            TamperClass::Modified,
                            "checkpoint has no body".into(),
                        ));
                    };
                    let p = i.checked_sub(1).filter(|_| prev.is_some() && i > 0);
                    let cov_seq = a.get("covered_seq").and_then(Value::as_u64);
                    let cov_hash = s(a, "covered_hash").and_then(|h| parse_hash(h.as_bytes()));
                    let time = a.get("signed_time").and_then(Value::as_u64);
                    let key_id = s(a, "key_id").unwrap_or_default();
                    let cp_log = s(a, "log_id").unwrap_or_default();
                    let sig = s(a, "signature").and_then(|x| B64.decode(x).ok());
                    let (Some(cov_seq), Some(cov_hash), Some(time), Some(sig)) =
                        (cov_seq, cov_hash, time, sig)
                    else {
                        return Some(self.finding(
                            i,
                            TamperClass::Modified,
                            "checkpoint is malformed".into(),
                        ));
                    };
                    if let Some(known) = &log_id {
                        if known != cp_log {
                            return Some(self.finding(
                                i,
                                TamperClass::Forked,
                                format!("checkpoint for log {cp_log}, expected {known}"),
                            ));
                        }
                    } else {
                        log_id = Some(cp_log.to_owned());
                    }
                    let Some(key) = trusted.get(key_id) else {
                        return Some(self.finding(
                            i,
                            TamperClass::BadSignature,
                            format!("signed by untrusted key {key_id}"),
                        ));
                    };
                    if !key.verify(
                        &checkpoint_message(cp_log, cov_seq, &cov_hash, time, key_id),
                        &sig,
                    ) {
                        return Some(self.finding(
                            i,
                            TamperClass::BadSignature,
                            format!("invalid signature by key {key_id}"),
                        ));
                    }
                    if let Some(p) = p {
                        let pi = self.info(p);
                        if pi.seq != cov_seq || pi.hash != cov_hash {
                            return Some(self.finding(
                                i,
                                TamperClass::Modified,
                                format!("checkpoint signs seq {cov_seq} with another hash: history before it was rewritten"),
                            ));
                        }
                    }
                    let gap = last_cp_time.map_or(0, |t| time.saturating_sub(t));
                    if gap > self.opts.max_gap_ms && !restarted {
                        return Some(self.finding(
                            i,
                            TamperClass::HeartbeatGap,
                            format!(
                                "{gap} ms since the previous checkpoint (max {})",
                                self.opts.max_gap_ms
                            ),
                        ));
                    }
                    last_cp_time = Some(time);
                    restarted = false;
                    self.report.checkpoints += 1;
                    self.report.last_signed_seq = Some(cov_seq);
                }
                Kind::Lifecycle => {
                    let phase = a.and_then(|a| s(a, "phase"));
                    restarted |= phase == Some("start");
                    last_stop = phase == Some("stop");
                    continue;
                }
                Kind::KeyRotation => {
                    if let Some(a) = a {
                        let new = b64_field(a, "new_public_key")
                            .filter(|b| b.len() == 32)
                            .map(PublicKey::from_bytes);
                        let old = s(a, "old_key_id").and_then(|k| trusted.get(k));
                        let endorsement = b64_field(a, "endorsement");
                        let eseq = a.get("endorsed_seq").and_then(Value::as_u64);
                        let ehash = s(a, "endorsed_hash").and_then(|h| parse_hash(h.as_bytes()));
                        if let (
                            Some(new),
                            Some(old),
                            Some(sig),
                            Some(eseq),
                            Some(ehash),
                            Some(id),
                        ) = (new, old, endorsement, eseq, ehash, &log_id)
                        {
                            let pi = self.info(i.saturating_sub(1));
                            if pi.seq == eseq
                                && pi.hash == ehash
                                && old.verify(&rotation_message(id, eseq, &ehash, &new.bytes), &sig)
                            {
                                trusted.insert(new.key_id.clone(), new);
                            }
                        }
                    }
                }
                Kind::Retention => {
                    if let Some(r) = a
                        .and_then(|a| a.get("first_retained_seq"))
                        .and_then(Value::as_u64)
                    {
                        retention_first = Some(retention_first.map_or(r, |x: u64| x.max(r)));
                    }
                }
                Kind::Attempt
                | Kind::Decision
                | Kind::Outcome
                | Kind::PolicyReload
                | Kind::Reveal
                | Kind::SelfProtection
                | Kind::Quarantine => {}
            }
            last_stop = false;
        }
        self.report.log_id = log_id;
        let last = n.checked_sub(1)?;
        if starts_mid_chain && !self.opts.partial {
            let first = self.report.first_seq.unwrap_or(0);
            if retention_first.is_none_or(|r| first > r) {
                return Some(self.finding(
                    0,
                    TamperClass::Deleted,
                    format!("chain starts at seq {first} but no retention record accounts for the earlier files"),
                ));
            }
        }
        match self.opts.tail {
            TailCheck::Unchecked => None,
            TailCheck::Closed => {
                let li = self.info(last);
                let clean = li.kind == Kind::Checkpoint && last > 0 && {
                    let pe = &self.entries[last - 1];
                    pe.info.is_some_and(|x| x.kind == Kind::Lifecycle)
                        && air(pe).and_then(|a| s(a, "phase")) == Some("stop")
                };
                let _ = last_stop;
                (!clean).then(|| {
                    self.finding(
                        last,
                        TamperClass::TruncatedTail,
                        "log does not end with a stop record and checkpoint (tail cut, or the writer crashed and has not restarted)".into(),
                    )
                })
            }
            TailCheck::Live { now_ms } => {
                let age = last_cp_time.map_or(u64::MAX, |t| now_ms.saturating_sub(t));
                (age > self.opts.max_gap_ms).then(|| {
                    self.finding(
                        last,
                        TamperClass::TruncatedTail,
                        format!("newest checkpoint is {age} ms old but the writer heartbeats every second"),
                    )
                })
            }
        }
    }

    fn classify(&mut self, i: usize, p: usize, log_id: Option<&str>) -> Finding {
        let cur = self.info(i);
        let pv = self.info(p);
        let at_boundary = self.entries[i].file != self.entries[p].file;
        let next_links_prev = self
            .entries
            .get(i + 1)
            .and_then(|e| e.info)
            .is_some_and(|x| x.hash_ok && x.seq == pv.seq + 1 && x.prev_hash == pv.hash);
        let other_log = match (log_id, self.log_id_from(i)) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        };
        let pred = self.index().get(&cur.prev_hash).copied();
        if other_log {
            return self.finding(
                i,
                TamperClass::Forked,
                "the chain continues with records of another log".into(),
            );
        }
        if let Some(j) = pred.filter(|&j| j > i) {
            let js = self.info(j).seq;
            return self.finding(
                i,
                TamperClass::Reordered,
                format!("its predecessor (seq {js}) appears later in the log"),
            );
        }
        if next_links_prev {
            return self.finding(
                i,
                TamperClass::Inserted,
                format!("the next record links to seq {}, skipping this one", pv.seq),
            );
        }
        if cur.seq <= pv.seq {
            if let Some(j) = pred.filter(|&j| j < p && self.info(j).seq + 1 == cur.seq) {
                return self.finding(
                    j + 1,
                    TamperClass::Inserted,
                    format!(
                        "seq {} follows seq {} directly; the records between were inserted",
                        cur.seq,
                        self.info(j).seq
                    ),
                );
            }
            if at_boundary {
                return self.finding(
                    i,
                    TamperClass::Forked,
                    "file starts a second history (seq goes back)".into(),
                );
            }
            return self.finding(
                i,
                TamperClass::Reordered,
                format!("seq {} after seq {}", cur.seq, pv.seq),
            );
        }
        if cur.seq > pv.seq + 1 {
            let later_successor = self.entries[i + 1..].iter().any(|e| {
                e.info
                    .is_some_and(|x| x.seq == pv.seq + 1 && x.prev_hash == pv.hash)
            });
            if later_successor {
                return self.finding(
                    i,
                    TamperClass::Reordered,
                    format!("seq {} appears later in the log", pv.seq + 1),
                );
            }
            if at_boundary {
                return self.finding(
                    p,
                    TamperClass::TruncatedTail,
                    format!(
                        "file ends at seq {} but the next file starts at seq {}",
                        pv.seq, cur.seq
                    ),
                );
            }
            return self.finding(
                i,
                TamperClass::Deleted,
                format!("seqs {}..={} are missing", pv.seq + 1, cur.seq - 1),
            );
        }
        if at_boundary {
            return self.finding(
                i,
                TamperClass::Forked,
                "file continues a different history than the previous file".into(),
            );
        }
        self.finding(
            p,
            TamperClass::Modified,
            "record was changed and re-hashed: the next record links to a different hash".into(),
        )
    }
}
