//! Audit records: the typed event model, its OCSF-shaped JSON form, canonical bytes and the
//! per-line hash.
//!
//! # Line format
//!
//! Every record is one line of UTF-8 JSON terminated by `\n`. The writer emits the line as
//! the record's *canonical bytes* (below) with the closing `}` replaced by
//! `,"hash":"<64 lowercase hex>"}`, so a shipper can tail the file as it is and a SIEM can
//! re-verify each line on its own.
//!
//! # Canonical bytes (what the hash covers)
//!
//! The canonical bytes of a record are a function of its JSON *value*, not of how a writer
//! happened to serialize it:
//!
//! 1. Take the top-level object and drop the member `hash`.
//! 2. Emit `{`, then the members `seq`, `prev_hash`, `kind` in that order, then every other
//!    top-level member in ascending byte order of its key, then `}`.
//! 3. Members of nested objects are emitted in ascending byte order of their keys; array
//!    order is kept.
//! 4. No whitespace. Integers in plain decimal (records never contain fractions).
//!    Strings are emitted as RFC 8785 (JCS) does: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`,
//!    `\t`, other control characters as `\u00xx` (lowercase hex), everything else as raw
//!    UTF-8 (no `\/`, no escaping of non-ASCII).
//!
//! Apart from the fixed position of the three chain members this is RFC 8785 for our
//! records. `hash` = lowercase hex of SHA-256(canonical bytes). Because `prev_hash` (the
//! previous record's `hash`; 64 zeros for the genesis record) is itself the second member,
//! each hash covers the whole history before it — it equals the DESIGN's
//! `SHA-256(prev_hash ‖ record)`, with the link inside the hashed bytes.
//!
//! A verifier first tries the fast path (the line as written, minus its hash suffix, *is*
//! the canonical form — true for every line this crate writes) and only on a mismatch
//! re-parses and re-canonicalises, so a line re-serialised by some other tool in another
//! key order still verifies.
//!
//! # OCSF mapping
//!
//! | kind | class_uid | notes |
//! |---|---|---|
//! | attempt | 1007 Process Activity (exec), 4001 Network Activity (connect), 1001 File System Activity (open) | disposition Delayed (14): the syscall is held |
//! | decision | 6003 API Activity | disposition Allowed (1) / Blocked (2); approvers in `actor`, quorum/channel/scope/rule in `unmapped.airlock` |
//! | outcome | class of the action | Allowed/Blocked; `unmapped.airlock.outcome` = completed/denied/expired/process_died |
//! | self_protection | class of the action | Blocked, severity High |
//! | lifecycle, policy_reload, chain records | 6002 Application Lifecycle | |
//! | reveal | 6003 API Activity (Read) | |
//!
//! `metadata.uid` is the correlation id shared by an attempt, its decision and its outcome.
//! Masked context and the sealed blob (base64) sit in `unmapped.airlock`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::digest;
use serde_json::{Map, Value, json};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// `prev_hash` of the very first (genesis) record.
pub const GENESIS_PREV_HASH: Hash = [0; 32];

/// OCSF schema version the records follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// Length of the `,"hash":"<64 hex>"}` suffix that ends every written line.
const HASH_SUFFIX_LEN: usize = 9 + 64 + 2;

/// Errors from parsing or canonicalising a record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The line is not a JSON object.
    #[error("not a JSON object: {0}")]
    Json(#[from] serde_json::Error),
    /// A chain member is missing or has the wrong type.
    #[error("chain member `{0}` missing or malformed")]
    ChainField(&'static str),
    /// The record contains a floating-point number, which has no canonical form here.
    #[error("record contains a non-integer number")]
    Float,
}

/// The kind of a record, written as the top-level `kind` member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// First record of a log: log id and signing key.
    Genesis,
    /// A held action, written before the hub is asked.
    Attempt,
    /// A human (or expiry) decision.
    Decision,
    /// What became of the held syscall.
    Outcome,
    /// Agent start / stop.
    Lifecycle,
    /// Policy reloaded.
    PolicyReload,
    /// Sealed context revealed to an auditor.
    Reveal,
    /// A self-protection hook denied something.
    SelfProtection,
    /// Signed checkpoint over the previous record.
    Checkpoint,
    /// The signing key changed.
    KeyRotation,
    /// A torn tail was moved aside on recovery.
    Quarantine,
    /// First record of a rotated file, linking to the previous file.
    FileStart,
    /// Old files were deleted by retention.
    Retention,
}

impl Kind {
    /// The `kind` string in the JSON line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Genesis => "genesis",
            Kind::Attempt => "attempt",
            Kind::Decision => "decision",
            Kind::Outcome => "outcome",
            Kind::Lifecycle => "lifecycle",
            Kind::PolicyReload => "policy_reload",
            Kind::Reveal => "reveal",
            Kind::SelfProtection => "self_protection",
            Kind::Checkpoint => "checkpoint",
            Kind::KeyRotation => "key_rotation",
            Kind::Quarantine => "quarantine",
            Kind::FileStart => "file_start",
            Kind::Retention => "retention",
        }
    }

    /// Parses a `kind` string.
    pub fn parse(s: &[u8]) -> Option<Kind> {
        Some(match s {
            b"genesis" => Kind::Genesis,
            b"attempt" => Kind::Attempt,
            b"decision" => Kind::Decision,
            b"outcome" => Kind::Outcome,
            b"lifecycle" => Kind::Lifecycle,
            b"policy_reload" => Kind::PolicyReload,
            b"reveal" => Kind::Reveal,
            b"self_protection" => Kind::SelfProtection,
            b"checkpoint" => Kind::Checkpoint,
            b"key_rotation" => Kind::KeyRotation,
            b"quarantine" => Kind::Quarantine,
            b"file_start" => Kind::FileStart,
            b"retention" => Kind::Retention,
            _ => return None,
        })
    }

    /// Records the verifier must parse fully (everything the chain logic looks inside).
    pub fn is_structural(self) -> bool {
        matches!(
            self,
            Kind::Genesis
                | Kind::Checkpoint
                | Kind::KeyRotation
                | Kind::Lifecycle
                | Kind::FileStart
                | Kind::Retention
                | Kind::Quarantine
        )
    }
}

/// The process that performed (or tried) an action. Command lines are masked by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    /// Thread-group id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Real uid.
    pub uid: u32,
    /// Executable path.
    pub exe: String,
    /// Masked command line.
    pub cmd_line: String,
    /// cgroup path, when known.
    pub cgroup: Option<String>,
}

/// The privileged action that was caught.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `execve` of `path` with masked `argv`.
    Exec {
        /// Executable path.
        path: String,
        /// Masked argument vector.
        argv: Vec<String>,
    },
    /// `connect`/`sendmsg` to a destination.
    Connect {
        /// Destination address.
        ip: String,
        /// Destination port.
        port: u16,
        /// `tcp` / `udp`.
        protocol: String,
        /// Host name the address was resolved from, when known.
        hostname: Option<String>,
    },
    /// `open` of a sensitive file.
    FileOpen {
        /// File path.
        path: String,
        /// Opened for writing.
        write: bool,
    },
}

/// The policy rule that produced `ask` (or a verdict), with the policy version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// Rule id.
    pub rule: String,
    /// Policy version (digest or counter).
    pub version: String,
}

/// ATTEMPT: written, durably, before the approval request leaves the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Correlation id shared with the decision and outcome.
    pub correlation_id: String,
    /// Who tried.
    pub actor: Actor,
    /// What was tried.
    pub action: Action,
    /// Rule that asked.
    pub policy: Option<PolicyRef>,
    /// Masked context, as the approver sees it.
    pub masked_context: BTreeMap<String, String>,
    /// Sealed (encrypted) raw context for auditors; stored base64.
    pub sealed_context: Option<Vec<u8>>,
}

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the syscall proceed.
    Allow,
    /// Fail the syscall with EPERM.
    Deny,
}

/// DECISION: who decided what, through which channel, with which quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Correlation id of the attempt.
    pub correlation_id: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Approver identities whose votes made the decision (empty for expiry).
    pub decided_by: Vec<String>,
    /// `cli`, `slack`, `web`, `expiry`, `policy`.
    pub channel: String,
    /// Votes required.
    pub quorum_required: u32,
    /// Votes received in favour of the verdict.
    pub quorum_met: u32,
    /// Free-text reason given by the approver(s).
    pub reason: String,
    /// Scope of the grant (`once`, `process`, `10m`, ...).
    pub grant_scope: String,
    /// Rule and policy version in force.
    pub policy: Option<PolicyRef>,
}

/// What became of a held syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// The allowed syscall completed.
    Completed,
    /// The syscall was failed with EPERM.
    Denied,
    /// No decision in time; default deny.
    Expired,
    /// The held process died before a verdict.
    ProcessDied,
}

impl OutcomeKind {
    fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Completed => "completed",
            OutcomeKind::Denied => "denied",
            OutcomeKind::Expired => "expired",
            OutcomeKind::ProcessDied => "process_died",
        }
    }
}

/// OUTCOME of a held action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Correlation id of the attempt.
    pub correlation_id: String,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: Action,
    /// What happened.
    pub outcome: OutcomeKind,
    /// Extra detail (errno, exit signal).
    pub detail: Option<String>,
}

/// Agent lifecycle phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecyclePhase {
    /// The log was opened (agent start). `unclean` tells whether the previous run crashed.
    Start,
    /// Clean shutdown; the last records of a cleanly closed log.
    Stop,
}

/// Agent (audit writer) lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    /// Start or stop.
    pub phase: LifecyclePhase,
    /// Software version.
    pub version: String,
    /// Free text.
    pub detail: String,
}

/// Policy reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReload {
    /// New policy version.
    pub version: String,
    /// Number of rules loaded.
    pub rules: u32,
    /// Whether the reload was accepted.
    pub ok: bool,
    /// Error, if refused.
    pub error: Option<String>,
}

/// Sealed context revealed to someone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reveal {
    /// Correlation id of the attempt whose sealed context was opened.
    pub correlation_id: String,
    /// Who opened it.
    pub revealed_by: String,
    /// Why.
    pub reason: String,
}

/// A self-protection hook denied something aimed at the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfProtection {
    /// Who tried.
    pub actor: Actor,
    /// What was tried.
    pub action: Action,
    /// The hook that fired.
    pub hook: String,
}

/// An event the agent appends. Chain records (checkpoints, key rotation, quarantine, file
/// links, retention) are written by the log itself and are not part of this enum's public
/// constructors' use; [`crate::AuditHandle::append`] accepts only the variants below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditEvent {
    /// ATTEMPT.
    Attempt(Attempt),
    /// DECISION (forces a checkpoint).
    Decision(Decision),
    /// OUTCOME.
    Outcome(Outcome),
    /// Lifecycle.
    Lifecycle(Lifecycle),
    /// Policy reload.
    PolicyReload(PolicyReload),
    /// Reveal of sealed context.
    Reveal(Reveal),
    /// Self-protection denial.
    SelfProtection(SelfProtection),
}

/// Whether a record may use the space reserved for decision records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Everything else: refused first when the disk fills.
    Normal,
    /// Decisions and outcomes (and chain records): may use the reserve.
    Reserved,
}

impl AuditEvent {
    /// The record kind.
    pub fn kind(&self) -> Kind {
        match self {
            AuditEvent::Attempt(_) => Kind::Attempt,
            AuditEvent::Decision(_) => Kind::Decision,
            AuditEvent::Outcome(_) => Kind::Outcome,
            AuditEvent::Lifecycle(_) => Kind::Lifecycle,
            AuditEvent::PolicyReload(_) => Kind::PolicyReload,
            AuditEvent::Reveal(_) => Kind::Reveal,
            AuditEvent::SelfProtection(_) => Kind::SelfProtection,
        }
    }

    /// Disk-space class of the record.
    pub fn priority(&self) -> Priority {
        match self {
            AuditEvent::Decision(_) | AuditEvent::Outcome(_) => Priority::Reserved,
            AuditEvent::Attempt(_)
            | AuditEvent::Lifecycle(_)
            | AuditEvent::PolicyReload(_)
            | AuditEvent::Reveal(_)
            | AuditEvent::SelfProtection(_) => Priority::Normal,
        }
    }

    /// The OCSF-shaped body (every member except `seq`, `prev_hash`, `kind`, `hash`).
    pub fn to_ocsf(&self, time_ms: u64) -> Map<String, Value> {
        match self {
            AuditEvent::Attempt(a) => {
                let (class, activity, mut m) = action_members(&a.action);
                let mut airlock = Map::new();
                airlock.insert("masked_context".into(), json!(a.masked_context));
                if let Some(blob) = &a.sealed_context {
                    airlock.insert("sealed_context".into(), json!(B64.encode(blob)));
                }
                if let Some(p) = &a.policy {
                    airlock.insert("policy".into(), policy_json(p));
                }
                m.insert("actor".into(), actor_json(&a.actor));
                m.insert("unmapped".into(), json!({ "airlock": airlock }));
                let (d, did) = DISP_DELAYED;
                finish(
                    m,
                    class,
                    activity,
                    time_ms,
                    3,
                    Some((d, did)),
                    Some(&a.correlation_id),
                    "held for approval",
                )
            }
            AuditEvent::Decision(d) => {
                let (disp, action) = match d.verdict {
                    Verdict::Allow => (DISP_ALLOWED, ("Allowed", 1)),
                    Verdict::Deny => (DISP_BLOCKED, ("Denied", 2)),
                };
                let mut airlock = Map::new();
                airlock.insert("verdict".into(), json!(action.0.to_lowercase()));
                airlock.insert("decided_by".into(), json!(d.decided_by));
                airlock.insert("channel".into(), json!(d.channel));
                airlock.insert(
                    "quorum".into(),
                    json!({ "required": d.quorum_required, "met": d.quorum_met }),
                );
                airlock.insert("reason".into(), json!(d.reason));
                airlock.insert("grant_scope".into(), json!(d.grant_scope));
                if let Some(p) = &d.policy {
                    airlock.insert("policy".into(), policy_json(p));
                }
                let mut m = Map::new();
                m.insert(
                    "actor".into(),
                    json!({ "user": { "name": d.decided_by.join(",") } }),
                );
                m.insert(
                    "api".into(),
                    json!({ "operation": "airlock.v1.Decide", "service": { "name": "airlock-hub" } }),
                );
                m.insert("action".into(), json!(action.0));
                m.insert("action_id".into(), json!(action.1));
                m.insert("unmapped".into(), json!({ "airlock": airlock }));
                finish(
                    m,
                    6003,
                    1,
                    time_ms,
                    1,
                    Some(disp),
                    Some(&d.correlation_id),
                    "decision",
                )
            }
            AuditEvent::Outcome(o) => {
                let (class, activity, mut m) = action_members(&o.action);
                let disp = match o.outcome {
                    OutcomeKind::Completed => DISP_ALLOWED,
                    OutcomeKind::Denied | OutcomeKind::Expired | OutcomeKind::ProcessDied => {
                        DISP_BLOCKED
                    }
                };
                let mut airlock = Map::new();
                airlock.insert("outcome".into(), json!(o.outcome.as_str()));
                if let Some(d) = &o.detail {
                    airlock.insert("detail".into(), json!(d));
                }
                m.insert("actor".into(), actor_json(&o.actor));
                m.insert("unmapped".into(), json!({ "airlock": airlock }));
                finish(
                    m,
                    class,
                    activity,
                    time_ms,
                    1,
                    Some(disp),
                    Some(&o.correlation_id),
                    o.outcome.as_str(),
                )
            }
            AuditEvent::SelfProtection(s) => {
                let (class, activity, mut m) = action_members(&s.action);
                m.insert("actor".into(), actor_json(&s.actor));
                m.insert("unmapped".into(), json!({ "airlock": { "hook": s.hook } }));
                finish(
                    m,
                    class,
                    activity,
                    time_ms,
                    4,
                    Some(DISP_BLOCKED),
                    None,
                    "self-protection denial",
                )
            }
            AuditEvent::Lifecycle(l) => {
                let (activity, phase) = match l.phase {
                    LifecyclePhase::Start => (3, "start"),
                    LifecyclePhase::Stop => (4, "stop"),
                };
                let mut m = app_members();
                m.insert(
                    "unmapped".into(),
                    json!({ "airlock": { "phase": phase, "detail": l.detail, "version": l.version } }),
                );
                finish(m, 6002, activity, time_ms, 1, None, None, phase)
            }
            AuditEvent::PolicyReload(p) => {
                let mut airlock = Map::new();
                airlock.insert("policy_version".into(), json!(p.version));
                airlock.insert("rules".into(), json!(p.rules));
                airlock.insert("ok".into(), json!(p.ok));
                if let Some(e) = &p.error {
                    airlock.insert("error".into(), json!(e));
                }
                let mut m = app_members();
                m.insert("unmapped".into(), json!({ "airlock": airlock }));
                let sev = if p.ok { 1 } else { 3 };
                finish(m, 6002, 8, time_ms, sev, None, None, "policy reload")
            }
            AuditEvent::Reveal(r) => {
                let mut m = Map::new();
                m.insert("actor".into(), json!({ "user": { "name": r.revealed_by } }));
                m.insert(
                    "api".into(),
                    json!({ "operation": "airlock.v1.Reveal", "service": { "name": "airlock" } }),
                );
                m.insert(
                    "unmapped".into(),
                    json!({ "airlock": { "reason": r.reason } }),
                );
                finish(
                    m,
                    6003,
                    2,
                    time_ms,
                    3,
                    None,
                    Some(&r.correlation_id),
                    "sealed context revealed",
                )
            }
        }
    }
}

const DISP_ALLOWED: (&str, u32) = ("Allowed", 1);
const DISP_BLOCKED: (&str, u32) = ("Blocked", 2);
const DISP_DELAYED: (&str, u32) = ("Delayed", 14);

fn policy_json(p: &PolicyRef) -> Value {
    json!({ "rule": p.rule, "version": p.version })
}

fn actor_json(a: &Actor) -> Value {
    let mut process = Map::new();
    process.insert("pid".into(), json!(a.pid));
    process.insert("tid".into(), json!(a.tid));
    process.insert("cmd_line".into(), json!(a.cmd_line));
    process.insert("file".into(), json!({ "path": a.exe }));
    if let Some(cg) = &a.cgroup {
        process.insert("container".into(), json!({ "cgroup": cg }));
    }
    json!({ "process": process, "user": { "uid": a.uid.to_string() } })
}

/// (class_uid, activity_id, object members) for an action.
fn action_members(action: &Action) -> (u32, u32, Map<String, Value>) {
    let mut m = Map::new();
    match action {
        Action::Exec { path, argv } => {
            m.insert(
                "process".into(),
                json!({ "file": { "path": path }, "cmd_line": argv.join(" ") }),
            );
            (1007, 1, m)
        }
        Action::Connect {
            ip,
            port,
            protocol,
            hostname,
        } => {
            let mut dst = Map::new();
            dst.insert("ip".into(), json!(ip));
            dst.insert("port".into(), json!(port));
            if let Some(h) = hostname {
                dst.insert("hostname".into(), json!(h));
            }
            m.insert("dst_endpoint".into(), Value::Object(dst));
            m.insert(
                "connection_info".into(),
                json!({ "protocol_name": protocol }),
            );
            (4001, 1, m)
        }
        Action::FileOpen { path, write } => {
            m.insert("file".into(), json!({ "path": path }));
            m.insert(
                "unmapped_access".into(),
                json!(if *write { "write" } else { "read" }),
            );
            (1001, 14, m)
        }
    }
}

fn app_members() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "app".into(),
        json!({ "name": "airlock-audit", "vendor_name": "airlock", "version": env!("CARGO_PKG_VERSION") }),
    );
    m
}

#[expect(
    clippy::too_many_arguments,
    reason = "one place that fills the OCSF base members"
)]
fn finish(
    mut m: Map<String, Value>,
    class_uid: u32,
    activity_id: u32,
    time_ms: u64,
    severity_id: u32,
    disposition: Option<(&str, u32)>,
    correlation: Option<&str>,
    message: &str,
) -> Map<String, Value> {
    m.insert("class_uid".into(), json!(class_uid));
    m.insert("category_uid".into(), json!(class_uid / 1000));
    m.insert("activity_id".into(), json!(activity_id));
    m.insert(
        "type_uid".into(),
        json!(u64::from(class_uid) * 100 + u64::from(activity_id)),
    );
    m.insert("time".into(), json!(time_ms));
    m.insert("severity_id".into(), json!(severity_id));
    m.insert("status_id".into(), json!(1));
    m.insert("message".into(), json!(message));
    if let Some((name, id)) = disposition {
        m.insert("disposition".into(), json!(name));
        m.insert("disposition_id".into(), json!(id));
    }
    let mut meta = Map::new();
    meta.insert(
        "product".into(),
        json!({ "name": "airlock", "vendor_name": "airlock" }),
    );
    meta.insert("version".into(), json!(OCSF_VERSION));
    meta.insert("log_name".into(), json!("airlock-audit"));
    if let Some(c) = correlation {
        meta.insert("uid".into(), json!(c));
        meta.insert("correlation_uid".into(), json!(c));
    }
    m.insert("metadata".into(), Value::Object(meta));
    m
}

/// Body of a chain record (checkpoint, rotation, ...): Application Lifecycle, details in
/// `unmapped.airlock`.
pub(crate) fn chain_body(time_ms: u64, message: &str, airlock: Value) -> Map<String, Value> {
    let mut m = app_members();
    m.insert("unmapped".into(), json!({ "airlock": airlock }));
    finish(m, 6002, 99, time_ms, 1, None, None, message)
}

/// Canonical bytes of the body members (`"k":v,...` sorted, no braces). Chain members
/// (`seq`, `prev_hash`, `kind`, `hash`) are skipped.
///
/// # Errors
/// [`RecordError::Float`] if the body contains a non-integer number.
pub fn body_members(body: &Map<String, Value>) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::with_capacity(512);
    let mut first = true;
    for (k, v) in sorted(body) {
        if matches!(k.as_str(), "seq" | "prev_hash" | "kind" | "hash") {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_string(&mut out, k);
        out.push(b':');
        write_canonical(&mut out, v)?;
    }
    Ok(out)
}

fn sorted(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    // serde_json's Map is ordered only without the `preserve_order` feature, which another
    // crate in the build may switch on, so sort explicitly.
    let mut v: Vec<_> = m.iter().collect();
    v.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    v
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    // serde_json's string escaping is exactly the JCS one (see module docs).
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_canonical(out: &mut Vec<u8>, v: &Value) -> Result<(), RecordError> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if n.is_f64() {
                return Err(RecordError::Float);
            }
            out.extend_from_slice(n.to_string().as_bytes());
        }
        Value::String(s) => write_string(out, s),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, x)?;
            }
            out.push(b']');
        }
        Value::Object(m) => {
            out.push(b'{');
            for (i, (k, x)) in sorted(m).into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, k);
                out.push(b':');
                write_canonical(out, x)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// Appends one complete line (with `\n`) for a record to `out` and returns its hash.
pub fn compose_line(
    out: &mut Vec<u8>,
    seq: u64,
    prev_hash: &Hash,
    kind: Kind,
    body: &[u8],
) -> Hash {
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    let _ = write!(Fmt(out), "{seq}");
    out.extend_from_slice(b",\"prev_hash\":\"");
    push_hex(out, prev_hash);
    out.extend_from_slice(b"\",\"kind\":\"");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.push(b'"');
    if !body.is_empty() {
        out.push(b',');
        out.extend_from_slice(body);
    }
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&out[start..]);
    ctx.update(b"}");
    let hash = to_hash(ctx.finish().as_ref());
    out.extend_from_slice(b",\"hash\":\"");
    push_hex(out, &hash);
    out.extend_from_slice(b"\"}\n");
    hash
}

struct Fmt<'a>(&'a mut Vec<u8>);
impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn to_hash(d: &[u8]) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(d);
    h
}

/// SHA-256 of some bytes.
pub fn sha256(data: &[u8]) -> Hash {
    to_hash(digest::digest(&digest::SHA256, data).as_ref())
}

/// Lowercase hex of a hash.
pub fn hex(h: &[u8]) -> String {
    let mut s = Vec::with_capacity(h.len() * 2);
    push_hex(&mut s, h);
    String::from_utf8(s).unwrap_or_default()
}

fn push_hex(out: &mut Vec<u8>, h: &[u8]) {
    const D: &[u8; 16] = b"0123456789abcdef";
    for b in h {
        out.push(D[usize::from(b >> 4)]);
        out.push(D[usize::from(b & 15)]);
    }
}

/// Parses 64 lowercase/uppercase hex digits.
pub fn parse_hash(s: &[u8]) -> Option<Hash> {
    if s.len() != 64 {
        return None;
    }
    let mut h = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = hex_val(pair[0])?;
        let lo = hex_val(pair[1])?;
        h[i] = (hi << 4) | lo;
    }
    Some(h)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The chain members of one line, and whether its hash checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineInfo {
    /// `seq`.
    pub seq: u64,
    /// `prev_hash`.
    pub prev_hash: Hash,
    /// `hash` as stored in the line.
    pub hash: Hash,
    /// `kind`.
    pub kind: Kind,
    /// SHA-256 of the canonical bytes equals the stored hash.
    pub hash_ok: bool,
}

/// Checks one line (without its `\n`): fast path on the written form, otherwise a full
/// parse and re-canonicalisation.
///
/// # Errors
/// [`RecordError`] if the line is not a JSON object with well-formed chain members.
pub fn check_line(line: &[u8]) -> Result<LineInfo, RecordError> {
    if let Some(info) = fast_check(line).filter(|i| i.hash_ok) {
        return Ok(info);
    }
    slow_check(line)
}

/// Fast path: the line is in written (canonical) form. Returns `None` if it is not in that
/// shape; `hash_ok` false if it is but the hash does not match.
fn fast_check(line: &[u8]) -> Option<LineInfo> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 20 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let seq: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(b",\"prev_hash\":\"")?;
    let prev_hash = parse_hash(rest.get(..64)?)?;
    let rest = rest[64..].strip_prefix(b"\",\"kind\":\"")?;
    let kend = rest.iter().position(|&c| c == b'"')?;
    let kind = Kind::parse(&rest[..kend])?;
    if line.len() < HASH_SUFFIX_LEN + 20 {
        return None;
    }
    let (body, suffix) = line.split_at(line.len() - HASH_SUFFIX_LEN);
    let hex_part = suffix.strip_prefix(b",\"hash\":\"")?.strip_suffix(b"\"}")?;
    let hash = parse_hash(hex_part)?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(body);
    ctx.update(b"}");
    let hash_ok = ctx.finish().as_ref() == hash;
    Some(LineInfo {
        seq,
        prev_hash,
        hash,
        kind,
        hash_ok,
    })
}

/// Slow path: parse, canonicalise, hash.
fn slow_check(line: &[u8]) -> Result<LineInfo, RecordError> {
    let v: Map<String, Value> = serde_json::from_slice(line)?;
    let (canon, info) = canonical_of(&v)?;
    let hash_ok = sha256(&canon) == info.hash;
    Ok(LineInfo { hash_ok, ..info })
}

/// Canonical bytes of a parsed record plus its chain members (`hash_ok` not yet set).
///
/// # Errors
/// [`RecordError`] if chain members are missing or the record has floats.
pub fn canonical_of(v: &Map<String, Value>) -> Result<(Vec<u8>, LineInfo), RecordError> {
    let seq = v
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or(RecordError::ChainField("seq"))?;
    let prev_hash = v
        .get("prev_hash")
        .and_then(Value::as_str)
        .and_then(|s| parse_hash(s.as_bytes()))
        .ok_or(RecordError::ChainField("prev_hash"))?;
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .and_then(|s| Kind::parse(s.as_bytes()))
        .ok_or(RecordError::ChainField("kind"))?;
    let hash = v
        .get("hash")
        .and_then(Value::as_str)
        .and_then(|s| parse_hash(s.as_bytes()))
        .ok_or(RecordError::ChainField("hash"))?;
    let body = body_members(v)?;
    let mut line = Vec::with_capacity(body.len() + 200);
    compose_line(&mut line, seq, &prev_hash, kind, &body);
    line.truncate(line.len() - HASH_SUFFIX_LEN - 1);
    line.push(b'}');
    Ok((
        line,
        LineInfo {
            seq,
            prev_hash,
            hash,
            kind,
            hash_ok: false,
        },
    ))
}

/// Reads `unmapped.airlock` of a parsed record.
pub fn airlock_of(v: &Map<String, Value>) -> Option<&Map<String, Value>> {
    v.get("unmapped")?.get("airlock")?.as_object()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt() -> AuditEvent {
        AuditEvent::Attempt(Attempt {
            correlation_id: "c-1".into(),
            actor: Actor {
                pid: 7,
                tid: 7,
                uid: 1000,
                exe: "/usr/bin/aws".into(),
                cmd_line: "aws s3 cp ****".into(),
                cgroup: None,
            },
            action: Action::Exec {
                path: "/usr/bin/aws".into(),
                argv: vec!["aws".into(), "s3".into()],
            },
            policy: Some(PolicyRef {
                rule: "r1".into(),
                version: "v3".into(),
            }),
            masked_context: BTreeMap::from([("env".into(), "AWS_SECRET=****\n\"x\"\u{1}é".into())]),
            sealed_context: Some(vec![1, 2, 3]),
        })
    }

    #[test]
    fn written_line_verifies_and_is_ocsf_shaped() {
        let ev = attempt();
        let body = body_members(&ev.to_ocsf(1_700_000_000_000)).unwrap();
        let mut line = Vec::new();
        let h = compose_line(&mut line, 5, &[7; 32], ev.kind(), &body);
        let info = check_line(&line[..line.len() - 1]).unwrap();
        assert!(info.hash_ok);
        assert_eq!(info.hash, h);
        assert_eq!(info.seq, 5);
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["class_uid"], 1007);
        assert_eq!(v["type_uid"], 100701);
        assert_eq!(v["disposition_id"], 14);
        assert_eq!(v["metadata"]["uid"], "c-1");
        assert_eq!(v["unmapped"]["airlock"]["sealed_context"], "AQID");
    }

    #[test]
    fn reserialised_line_still_verifies_but_edits_do_not() {
        let ev = attempt();
        let body = body_members(&ev.to_ocsf(1)).unwrap();
        let mut line = Vec::new();
        compose_line(&mut line, 1, &[0; 32], ev.kind(), &body);
        line.pop();
        // Pretty-print with another key order: still the same record.
        let v: Value = serde_json::from_slice(&line).unwrap();
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        assert_ne!(pretty, line);
        assert!(check_line(&pretty).unwrap().hash_ok);
        // Change one value.
        let edited = String::from_utf8(line.clone())
            .unwrap()
            .replace("aws s3 cp", "aws s3 rm");
        assert!(!check_line(edited.as_bytes()).unwrap().hash_ok);
    }

    #[test]
    fn floats_have_no_canonical_form() {
        let mut m = Map::new();
        m.insert("x".into(), json!(1.5));
        assert!(matches!(body_members(&m), Err(RecordError::Float)));
    }
}
