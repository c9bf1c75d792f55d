//! `airlock reveal`: an auditor unseals the raw context of one request, and the reveal is
//! itself audited.
//!
//! The command finds the request's ATTEMPT record in the audit directory, unseals its
//! `sealed_context` with the auditor's private key (bound to the request id), then appends
//! a REVEAL record — and prints the raw context only once that record is durable. While
//! the agent runs it owns the log's writer lock, so the append goes through the agent's
//! reveal socket (`<audit dir>/reveal.sock`, mode 0600: root only), which records the
//! caller's uid from the socket's peer credentials. When no agent runs, the command opens
//! the log itself with the agent's signing key.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use airlock_audit::{AuditConfig, AuditEvent, AuditHandle, AuditLog, Reveal, SigningKey};
use airlock_mask::{AuditorPrivateKey, SealedBlob};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

use crate::redact::aad;

/// Name of the agent's reveal socket inside the audit directory.
pub const SOCKET_NAME: &str = "reveal.sock";

/// Longest request line the reveal socket reads.
const MAX_LINE: u64 = 4096;

/// Errors of `airlock reveal`.
#[derive(Debug, thiserror::Error)]
pub enum RevealError {
    /// The audit directory could not be read.
    #[error("reading audit log {dir}: {source}")]
    Read {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No attempt record has this id.
    #[error("no attempt record for request {0} in the audit log")]
    NotFound(String),
    /// The attempt was recorded without sealed context.
    #[error(
        "request {0} has no sealed context (the agent ran with masking.seal_raw_context = false)"
    )]
    NotSealed(String),
    /// The sealed context is not a sealed blob.
    #[error("sealed context of request {0} is malformed")]
    Malformed(String),
    /// The auditor key could not be loaded.
    #[error("auditor key {path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: airlock_mask::SealError,
    },
    /// Unsealing failed: wrong key or tampered record.
    #[error("cannot unseal request {id}: {source}")]
    Unseal {
        /// The request id.
        id: String,
        /// The cause.
        #[source]
        source: airlock_mask::SealError,
    },
    /// The reveal could not be recorded, so nothing is shown.
    #[error("the reveal could not be audited, so nothing is shown: {0}")]
    Audit(String),
}

/// `<path>.pub`: where `airlock auditor-keygen` puts the public half.
pub fn public_path(private: &Path) -> PathBuf {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Path of the reveal socket for an audit directory.
pub fn socket_path(audit_dir: &Path) -> PathBuf {
    audit_dir.join(SOCKET_NAME)
}

/// The ATTEMPT record with correlation id `id` (the newest, should there be several).
///
/// # Errors
/// [`RevealError::Read`], [`RevealError::NotFound`].
pub fn find_attempt(dir: &Path, id: &str) -> Result<Map<String, Value>, RevealError> {
    let read_err = |source| RevealError::Read {
        dir: dir.to_owned(),
        source,
    };
    let mut found = None;
    for file in airlock_audit::writer::log_files(dir).map_err(read_err)? {
        let text = std::fs::read_to_string(&file).map_err(read_err)?;
        for line in text.lines().filter(|l| l.contains(id)) {
            let Ok(Value::Object(v)) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let is_attempt = v.get("kind").and_then(Value::as_str) == Some("attempt");
            let uid = v
                .get("metadata")
                .and_then(|m| m.get("uid"))
                .and_then(Value::as_str);
            if is_attempt && uid == Some(id) {
                found = Some(v);
            }
        }
    }
    found.ok_or_else(|| RevealError::NotFound(id.to_owned()))
}

/// Unseals the raw context carried by an attempt record.
///
/// # Errors
/// [`RevealError::NotSealed`], [`RevealError::Malformed`], [`RevealError::Unseal`].
pub fn unseal_attempt(
    record: &Map<String, Value>,
    id: &str,
    key: &AuditorPrivateKey,
) -> Result<Value, RevealError> {
    let b64 = airlock_audit::record::airlock_of(record)
        .and_then(|a| a.get("sealed_context"))
        .and_then(Value::as_str)
        .ok_or_else(|| RevealError::NotSealed(id.to_owned()))?;
    let malformed = || RevealError::Malformed(id.to_owned());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| malformed())?;
    let blob: SealedBlob = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    let plain =
        airlock_mask::unseal(&blob, key, &aad(id)).map_err(|source| RevealError::Unseal {
            id: id.to_owned(),
            source,
        })?;
    serde_json::from_slice(&plain).map_err(|_| malformed())
}

/// What `airlock reveal` needs.
#[derive(Debug, Clone)]
pub struct RevealRequest {
    /// Request (correlation) id.
    pub id: String,
    /// Auditor private key file.
    pub auditor_key: PathBuf,
    /// Audit directory.
    pub audit_dir: PathBuf,
    /// The agent's signing key, used when no agent is running.
    pub signing_key: PathBuf,
    /// Who is revealing (recorded with the caller's uid).
    pub who: String,
    /// Why.
    pub reason: String,
}

/// Finds, unseals, records the reveal durably, and only then returns the raw context.
///
/// # Errors
/// Any [`RevealError`]; on [`RevealError::Audit`] nothing may be shown.
pub fn reveal(req: &RevealRequest) -> Result<(Value, u64), RevealError> {
    let key = AuditorPrivateKey::load(&req.auditor_key).map_err(|source| RevealError::Key {
        path: req.auditor_key.clone(),
        source,
    })?;
    let record = find_attempt(&req.audit_dir, &req.id)?;
    let raw = unseal_attempt(&record, &req.id, &key)?;
    let seq = record_reveal(req)?;
    Ok((raw, seq))
}

/// Appends the REVEAL record: through the running agent's socket, else directly.
fn record_reveal(req: &RevealRequest) -> Result<u64, RevealError> {
    let socket = socket_path(&req.audit_dir);
    match UnixStream::connect(&socket) {
        Ok(stream) => via_agent(stream, req),
        Err(_) => {
            if !req.signing_key.exists() {
                return Err(RevealError::Audit(format!(
                    "no agent answers on {} and the signing key {} does not exist",
                    socket.display(),
                    req.signing_key.display()
                )));
            }
            let key = SigningKey::load_or_create(&req.signing_key)
                .map_err(|e| RevealError::Audit(e.to_string()))?;
            let (log, _) = AuditLog::open(&req.audit_dir, AuditConfig::default(), key)
                .map_err(|e| RevealError::Audit(e.to_string()))?;
            let uid = nix::unistd::getuid().as_raw();
            let appended = log
                .append(&reveal_event(&req.id, &req.who, uid, &req.reason))
                .map_err(|e| RevealError::Audit(e.to_string()))?;
            log.close().map_err(|e| RevealError::Audit(e.to_string()))?;
            Ok(appended.seq)
        }
    }
}

fn via_agent(mut stream: UnixStream, req: &RevealRequest) -> Result<u64, RevealError> {
    let fail = |e: std::io::Error| RevealError::Audit(format!("agent reveal socket: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(fail)?;
    let line = json!({ "id": req.id, "who": req.who, "reason": req.reason }).to_string();
    stream
        .write_all(format!("{line}\n").as_bytes())
        .map_err(fail)?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(fail)?;
    let answer: Value = serde_json::from_str(&answer)
        .map_err(|_| RevealError::Audit(format!("agent answered {answer:?}")))?;
    match answer.get("seq").and_then(Value::as_u64) {
        Some(seq) if answer["ok"] == true => Ok(seq),
        _ => Err(RevealError::Audit(
            answer["error"]
                .as_str()
                .unwrap_or("agent refused")
                .to_owned(),
        )),
    }
}

fn reveal_event(id: &str, who: &str, uid: u32, reason: &str) -> AuditEvent {
    AuditEvent::Reveal(Reveal {
        correlation_id: id.to_owned(),
        revealed_by: format!("{who} (uid {uid})"),
        reason: reason.to_owned(),
    })
}

/// Serves the reveal socket for the running agent: each connection sends one JSON line
/// `{"id", "who", "reason"}` and gets `{"ok": true, "seq": N}` once the REVEAL record is
/// durable. The uid recorded is the peer's, from the kernel, not the claim.
///
/// # Errors
/// The socket cannot be bound.
pub fn serve(
    audit_dir: &Path,
    handle: AuditHandle,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(audit_dir);
    // A stale socket from a crashed run; the audit lock guarantees no other agent owns it.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                if let Err(error) = answer(stream, handle).await {
                    tracing::warn!(%error, "reveal request failed");
                }
            });
        }
    }))
}

async fn answer(stream: tokio::net::UnixStream, handle: AuditHandle) -> std::io::Result<()> {
    let uid = stream.peer_cred()?.uid();
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::io::AsyncReadExt::take(tokio::io::BufReader::new(read), MAX_LINE)
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Value>(&line) {
        Ok(v) if v["id"].as_str().is_some_and(|s| !s.is_empty()) => {
            let id = v["id"].as_str().unwrap_or_default();
            let event = reveal_event(
                id,
                v["who"].as_str().unwrap_or("unknown"),
                uid,
                v["reason"].as_str().unwrap_or(""),
            );
            let result = match handle.submit(&event) {
                Ok(pending) => pending.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(appended) => {
                    tracing::info!(request = %id, uid, seq = appended.seq, "sealed context revealed");
                    json!({ "ok": true, "seq": appended.seq })
                }
                Err(e) => json!({ "ok": false, "error": e.to_string() }),
            }
        }
        _ => json!({ "ok": false, "error": "expected one JSON line with an id" }),
    };
    write.write_all(format!("{reply}\n").as_bytes()).await?;
    write.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use airlock_audit::{AuditConfig, AuditLog};
    use airlock_mask::{AuditorKeyPair, HostKey, MaskConfig, Masker};
    use airlock_proto::v1::{ActionClass, ActionContext};

    use super::*;
    use crate::{audit::AuditTrail, redact::Redactor};

    struct Fixture {
        dir: tempfile::TempDir,
        pair: AuditorKeyPair,
    }

    impl Fixture {
        fn audit_dir(&self) -> PathBuf {
            self.dir.path().join("audit")
        }
        fn request(&self, id: &str) -> RevealRequest {
            RevealRequest {
                id: id.into(),
                auditor_key: self.dir.path().join("auditor.key"),
                audit_dir: self.audit_dir(),
                signing_key: self.dir.path().join("audit.key"),
                who: "auditor-ann".into(),
                reason: "incident 7".into(),
            }
        }
    }

    /// A log holding one sealed attempt `r1`, closed (no agent running).
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let pair = AuditorKeyPair::generate().expect("pair");
        pair.save(
            &dir.path().join("auditor.key"),
            &dir.path().join("auditor.pub"),
        )
        .expect("save");
        let key = SigningKey::load_or_create(&dir.path().join("audit.key")).expect("key");
        let (log, _) =
            AuditLog::open(&dir.path().join("audit"), AuditConfig::default(), key).expect("open");
        let masker = Masker::new(
            &MaskConfig::default(),
            &HostKey::from_bytes(vec![3; 32]).expect("k"),
        )
        .expect("m");
        let redactor = Redactor::new(masker, Some(pair.public.clone()), &[]);
        let trail = AuditTrail::new(log.handle(), Arc::new(redactor), "a".into(), "h".into());
        let raw = ActionContext {
            class: ActionClass::Exec as i32,
            binary: "/usr/bin/psql".into(),
            argv: vec!["psql".into(), "postgres://user:pa55word@db/x".into()],
            ..Default::default()
        };
        trail
            .hold("r1", &raw, "dev", 1, crate::record::NO_POLICY)
            .expect("hold");
        log.close().expect("close");
        Fixture { dir, pair }
    }

    fn reveal_records(dir: &Path) -> Vec<Value> {
        airlock_audit::writer::log_files(dir)
            .expect("files")
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .expect("read")
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .map(|l| serde_json::from_str::<Value>(&l).expect("json"))
            .filter(|v| v["kind"] == "reveal")
            .collect()
    }

    #[test]
    fn reveal_without_an_agent_unseals_and_records() {
        let f = fixture();
        let (raw, seq) = reveal(&f.request("r1")).expect("reveal");
        assert_eq!(raw["action"]["argv"][1], "postgres://user:pa55word@db/x");
        let reveals = reveal_records(&f.audit_dir());
        assert_eq!(reveals.len(), 1);
        assert_eq!(reveals[0]["seq"], seq);
        assert_eq!(reveals[0]["metadata"]["uid"], "r1");
        assert!(
            reveals[0]["actor"]["user"]["name"]
                .as_str()
                .expect("name")
                .starts_with("auditor-ann (uid ")
        );
        assert_eq!(reveals[0]["unmapped"]["airlock"]["reason"], "incident 7");
        let _ = &f.pair;
    }

    #[test]
    fn wrong_key_unknown_id_and_unauditable_reveals_show_nothing() {
        let f = fixture();
        let other = AuditorKeyPair::generate().expect("pair");
        let other_path = f.dir.path().join("other.key");
        other.private.save(&other_path).expect("save");
        let mut req = f.request("r1");
        req.auditor_key = other_path;
        assert!(matches!(reveal(&req), Err(RevealError::Unseal { .. })));
        assert!(matches!(
            reveal(&f.request("nope")),
            Err(RevealError::NotFound(_))
        ));
        // The log is locked by another writer and no agent answers: refuse to show.
        let key = SigningKey::load_or_create(&f.dir.path().join("audit.key")).expect("key");
        let (_log, _) = AuditLog::open(&f.audit_dir(), AuditConfig::default(), key).expect("open");
        assert!(matches!(
            reveal(&f.request("r1")),
            Err(RevealError::Audit(_))
        ));
        assert!(reveal_records(&f.audit_dir()).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reveal_through_the_running_agent_socket() {
        let f = fixture();
        let key = SigningKey::load_or_create(&f.dir.path().join("audit.key")).expect("key");
        let (log, _) = AuditLog::open(&f.audit_dir(), AuditConfig::default(), key).expect("open");
        let server = serve(&f.audit_dir(), log.handle()).expect("serve");
        let mode = std::fs::metadata(socket_path(&f.audit_dir()))
            .expect("socket")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let req = f.request("r1");
        let (raw, seq) = tokio::task::spawn_blocking(move || reveal(&req))
            .await
            .expect("join")
            .expect("reveal");
        assert_eq!(raw["request_id"], "r1");
        server.abort();
        log.close().expect("close");
        let reveals = reveal_records(&f.audit_dir());
        assert_eq!(reveals.len(), 1);
        assert_eq!(reveals[0]["seq"], seq);
    }
}
