//! The agent's audit trail: the hash-chained, signed log of `airlock-audit` (issue #7),
//! fed only with masked context and the sealed raw context (issue #5).
//!
//! [`AuditTrail`] is what the hold coordinator talks to. Every method returns once the
//! record is durable (group-committed and fdatasync'ed); an error means the record is not
//! on disk and the caller fails closed (denies the held action). The log itself writes the
//! lifecycle start record when it is opened and the stop record when it is closed.

use std::{path::PathBuf, sync::Arc};

use airlock_audit::{
    AppendError, Appended, AuditEvent, AuditHandle, AuditLog, Lifecycle, LifecyclePhase,
    OutcomeKind, RecoveryReport, SigningKey,
};
use airlock_proto::v1::{ActionContext, Requirements};

use crate::{
    config::AuditSettings,
    record::{self, Origin, Settlement},
    redact::{RedactError, Redacted, Redactor},
};

/// Errors opening the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The signing key could not be loaded or created.
    #[error("audit signing key {path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: airlock_audit::KeyError,
    },
    /// The log could not be opened (I/O, locked by another writer, damaged tail).
    #[error("cannot open audit log {dir}: {source}")]
    Open {
        /// The log directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: airlock_audit::WriterError,
    },
}

/// Why a held action could not be recorded (the action is then denied).
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// Masking or sealing failed.
    #[error(transparent)]
    Redact(#[from] RedactError),
    /// The attempt record could not be made durable.
    #[error("audit append failed: {0}")]
    Append(#[from] AppendError),
}

/// Opens the log in `[audit] dir` with `[audit] signing_key` (created 0600, with its public
/// key published at `<key>.pub`, if missing), recovering a torn tail.
///
/// # Errors
/// [`AuditError`] naming the key or the directory.
pub fn open(settings: &AuditSettings) -> Result<(AuditLog, RecoveryReport), AuditError> {
    let key =
        SigningKey::load_or_create(&settings.signing_key).map_err(|source| AuditError::Key {
            path: settings.signing_key.clone(),
            source,
        })?;
    let open_err = |source| AuditError::Open {
        dir: settings.dir.clone(),
        source,
    };
    std::fs::create_dir_all(&settings.dir).map_err(|e| {
        open_err(airlock_audit::WriterError::Io {
            op: "create",
            path: settings.dir.clone(),
            source: e,
        })
    })?;
    AuditLog::open(&settings.dir, settings.log.clone(), key).map_err(open_err)
}

/// Masks, seals and records held actions.
#[derive(Clone, Debug)]
pub struct AuditTrail {
    handle: AuditHandle,
    redactor: Arc<Redactor>,
    agent_id: String,
    host: String,
}

impl AuditTrail {
    /// Wraps a log handle and the redactor.
    pub fn new(
        handle: AuditHandle,
        redactor: Arc<Redactor>,
        agent_id: String,
        host: String,
    ) -> Self {
        Self {
            handle,
            redactor,
            agent_id,
            host,
        }
    }

    /// `text` with every secret the masker finds replaced by its placeholder.
    pub fn mask_text(&self, text: &str) -> String {
        self.redactor.masker().mask_text(text).text
    }

    /// The raw log handle (reveal server, tests).
    pub fn handle(&self) -> &AuditHandle {
        &self.handle
    }

    /// Masks and seals `raw`, then records the ATTEMPT durably. Returns the masked context
    /// (with `sealed_context` set) — the only form that may be submitted, logged or kept.
    ///
    /// # Errors
    /// [`HoldError`]: the caller must deny the action without asking anyone.
    pub fn hold(
        &self,
        id: &str,
        raw: &ActionContext,
        requester: &str,
        tid: u32,
        policy_version: &str,
    ) -> Result<ActionContext, HoldError> {
        let redacted: Redacted = self.redactor.redact(id, raw)?;
        let origin = Origin {
            agent_id: &self.agent_id,
            host: &self.host,
            requester,
            tid,
            policy_version,
        };
        self.handle
            .append(&record::attempt(id, &redacted, origin))?;
        Ok(redacted.context)
    }

    /// Records the DECISION for a held action.
    ///
    /// # Errors
    /// [`AppendError`]: the caller must deny.
    pub fn decision(
        &self,
        id: &str,
        masked: &ActionContext,
        requirements: &Requirements,
        allow: bool,
        how: &Settlement,
        policy_version: &str,
    ) -> Result<Appended, AppendError> {
        self.handle.append(&record::decision(
            id,
            masked,
            requirements,
            allow,
            how,
            policy_version,
        ))
    }

    /// Records a self-protection denial: a watched process tried to kill, trace or rewrite
    /// the agent, or to call bpf(). `what` is [`crate::context::denied`]'s description.
    ///
    /// # Errors
    /// [`AppendError`].
    pub fn self_protection(
        &self,
        denied: &crate::events::DeniedAction,
        what: &serde_json::Value,
    ) -> Result<Appended, AppendError> {
        let text = |k: &str| what[k].as_str().unwrap_or_default().to_owned();
        let exe = self.redactor.masker().mask_text(&text("binary")).text;
        let actor = airlock_audit::Actor {
            pid: denied.tgid,
            tid: denied.tid,
            uid: denied.uid,
            exe: exe.clone(),
            cmd_line: self.redactor.masker().mask_text(&denied.comm).text,
            cgroup: None,
        };
        let action = match denied.hook {
            // Every file rule is a change to the file system; `path` is the full path
            // (`context::denied` joins a name with its protected directory).
            agent_common::Hook::WriteProtected
            | agent_common::Hook::UnlinkProtected
            | agent_common::Hook::RenameProtected
            | agent_common::Hook::LinkProtected
            | agent_common::Hook::CreateProtected
            | agent_common::Hook::AttrProtected => airlock_audit::Action::FileOpen {
                path: self.redactor.masker().mask_text(&text("path")).text,
                write: true,
            },
            _ => airlock_audit::Action::Exec {
                path: exe,
                argv: vec![self.redactor.masker().mask_text(&text("what")).text],
            },
        };
        self.handle
            .append(&AuditEvent::SelfProtection(airlock_audit::SelfProtection {
                actor,
                action,
                hook: text("rule"),
            }))
    }

    /// Records a policy reload: the version now in force, or why a new file was refused.
    ///
    /// # Errors
    /// [`AppendError`].
    pub fn policy_reload(
        &self,
        version: &str,
        rules: usize,
        error: Option<String>,
    ) -> Result<Appended, AppendError> {
        self.handle
            .append(&AuditEvent::PolicyReload(airlock_audit::PolicyReload {
                version: version.to_owned(),
                rules: u32::try_from(rules).unwrap_or(u32::MAX),
                ok: error.is_none(),
                error,
            }))
    }

    /// Records the OUTCOME of a held action.
    ///
    /// # Errors
    /// [`AppendError`].
    pub fn outcome(
        &self,
        id: &str,
        masked: &ActionContext,
        tid: u32,
        kind: OutcomeKind,
        detail: &str,
    ) -> Result<Appended, AppendError> {
        self.handle
            .append(&record::outcome(id, masked, tid, kind, detail))
    }

    /// Records an agent lifecycle event (gates attached, shutting down).
    ///
    /// # Errors
    /// [`AppendError`].
    pub fn lifecycle(
        &self,
        phase: LifecyclePhase,
        detail: String,
    ) -> Result<Appended, AppendError> {
        self.handle.append(&AuditEvent::Lifecycle(Lifecycle {
            phase,
            version: env!("CARGO_PKG_VERSION").into(),
            detail,
        }))
    }
}

#[cfg(test)]
mod tests {
    use airlock_audit::{TailCheck, VerifyOptions, verify};
    use airlock_mask::{HostKey, MaskConfig, Masker};
    use airlock_proto::v1::ActionClass;

    use super::*;

    fn settings(dir: &std::path::Path) -> AuditSettings {
        AuditSettings {
            dir: dir.join("audit"),
            signing_key: dir.join("keys/audit.key"),
            log: Default::default(),
        }
    }

    #[test]
    fn hold_records_a_masked_attempt_in_a_log_that_verifies() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = settings(tmp.path());
        let (log, report) = open(&s).expect("open");
        assert!(report.created);
        let key = std::fs::metadata(&s.signing_key).expect("key");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
            0o600
        );
        let masker = Masker::new(
            &MaskConfig::default(),
            &HostKey::from_bytes(vec![1; 32]).expect("k"),
        )
        .expect("m");
        let trail = AuditTrail::new(
            log.handle(),
            Arc::new(Redactor::new(masker, None, &[])),
            "a".into(),
            "h".into(),
        );
        let raw = ActionContext {
            class: ActionClass::Exec as i32,
            binary: "/usr/bin/mysql".into(),
            argv: vec!["mysql".into(), "--password=hunter2Secret".into()],
            ..Default::default()
        };
        let masked = trail
            .hold("r1", &raw, "dev", 1, crate::record::NO_POLICY)
            .expect("hold");
        assert!(
            !masked.argv[1].contains("hunter2Secret"),
            "{:?}",
            masked.argv
        );
        trail
            .outcome("r1", &masked, 1, OutcomeKind::Denied, "")
            .expect("outcome");
        log.close().expect("close");
        let text: String = airlock_audit::writer::log_files(&s.dir)
            .expect("files")
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("read"))
            .collect();
        assert!(!text.contains("hunter2Secret"));
        assert!(text.contains("\"kind\":\"attempt\""));
        let public = airlock_audit::PublicKey::load(&airlock_audit::keys::pub_path(&s.signing_key))
            .expect("pub");
        let mut opts = VerifyOptions::new(vec![public]);
        opts.tail = TailCheck::Closed;
        let report = verify(std::slice::from_ref(&s.dir), &opts).expect("verify");
        assert!(report.ok(), "{:?}", report.finding);
    }

    #[test]
    fn a_second_writer_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = settings(tmp.path());
        let (_log, _) = open(&s).expect("open");
        let err = open(&s).expect_err("locked").to_string();
        assert!(err.contains("locked"), "{err}");
    }
}
