//! Masking and sealing of everything the agent says about a held action (issue #5).
//!
//! [`Redactor::redact`] turns the raw [`ActionContext`] the coordinator built into the one
//! that leaves the coordinator: every free-text field masked with `airlock-mask`
//! (placeholders such as `[AWS_SECRET_KEY#9f2c]`), and the raw context sealed to the
//! auditors' public key in `sealed_context`. The hub, the approvers, the logs and the audit
//! trail only ever see the masked context; `airlock reveal` unseals the raw one.
//!
//! Masking runs in two passes. The first masks each field with the detector that fits it
//! (`mask_argv` for argument vectors, `mask_url` for URLs, `mask_text` for the rest). The
//! second replaces every secret found anywhere in the first pass wherever else it still
//! appears verbatim, so a password caught by flag semantics in `argv` cannot survive in a
//! free-text field such as `impact`, or in a parent's command line.
//!
//! Fields named in `[masking] show_unmasked` (by their last path segment: `bucket`, `url`,
//! `hostname`, `file`, ...) are passed through untouched, as are the policy's own fields
//! (`rule_id`, `rule_reason`, `severity`) and the numeric ones.

use std::{
    collections::HashSet,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use airlock_mask::{AuditorPublicKey, HostKey, Masker, SealError};
use airlock_proto::v1::{ActionClass, ActionContext, Destination, Process};
use serde_json::{Value, json};

use crate::config::MaskingSettings;

/// Version of the sealed plaintext layout ([`raw_context_json`]).
pub const RAW_CONTEXT_VERSION: u32 = 1;

/// Secrets shorter than this are not scrubbed in the second pass: replacing every `ab`
/// in every field would mangle the context more than it protects.
const MIN_SCRUB_LEN: usize = 4;

/// Errors building the redactor or redacting a context.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// The fingerprint key could not be read or created.
    #[error("fingerprint key {path}: {reason}")]
    FingerprintKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The masking configuration is invalid.
    #[error("invalid [masking] configuration: {0}")]
    Mask(#[from] airlock_mask::ConfigError),
    /// The auditors' public key could not be loaded.
    #[error("auditor public key {path}: {source}")]
    AuditorKey {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: SealError,
    },
    /// Sealing failed (the action is then denied: the raw context would be lost).
    #[error("cannot seal the raw context of request {id}: {source}")]
    Seal {
        /// The request id.
        id: String,
        /// The cause.
        #[source]
        source: SealError,
    },
}

/// One masked span, named by the field it was found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldFinding {
    /// Field path, e.g. `argv[3]`, `parents[0].argv[1]`, `destination.url`.
    pub field: String,
    /// The placeholder that replaced the secret, e.g. `[PASSWORD#1a2b]`.
    pub placeholder: String,
}

/// A context ready to leave the coordinator.
#[derive(Debug, Clone)]
pub struct Redacted {
    /// Masked context; `sealed_context` holds [`Redacted::sealed`] (empty when not sealing).
    pub context: ActionContext,
    /// What was masked, in field order.
    pub findings: Vec<FieldFinding>,
    /// The JSON-encoded [`airlock_mask::SealedBlob`], when an auditor key is configured.
    pub sealed: Option<Vec<u8>>,
}

/// Masks and seals action contexts. Build once, share (it is `Send + Sync`).
pub struct Redactor {
    masker: Masker,
    auditor: Option<AuditorPublicKey>,
    show_unmasked: HashSet<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("auditor", &self.auditor)
            .field("show_unmasked", &self.show_unmasked)
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// Builds the redactor from `[masking]`: loads (or creates, 0600) the fingerprint key and
    /// loads the auditors' public key.
    ///
    /// # Errors
    /// [`RedactError::FingerprintKey`], [`RedactError::AuditorKey`], [`RedactError::Mask`].
    pub fn from_settings(settings: &MaskingSettings) -> Result<Self, RedactError> {
        let key = load_or_create_fingerprint_key(&settings.fingerprint_key)?;
        let masker = Masker::new(&settings.mask, &key)?;
        let auditor =
            match &settings.auditor_public_key {
                Some(path) => Some(AuditorPublicKey::load(path).map_err(|source| {
                    RedactError::AuditorKey {
                        path: path.clone(),
                        source,
                    }
                })?),
                None => None,
            };
        Ok(Self::new(masker, auditor, &settings.mask.unmasked_fields))
    }

    /// Builds a redactor from its parts (tests, tools).
    pub fn new(
        masker: Masker,
        auditor: Option<AuditorPublicKey>,
        show_unmasked: &[String],
    ) -> Self {
        Self {
            masker,
            auditor,
            show_unmasked: show_unmasked
                .iter()
                .map(|s| s.trim_start_matches('-').to_ascii_lowercase())
                .collect(),
        }
    }

    /// The masker, for callers that mask something that is not an action context.
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// Whether raw context is sealed (an auditor key is configured).
    pub fn seals(&self) -> bool {
        self.auditor.is_some()
    }

    /// Masks every text field of `raw` and seals `raw` itself for the auditors, bound to the
    /// request `id`.
    ///
    /// # Errors
    /// [`RedactError::Seal`] if sealing fails; the caller denies the action.
    pub fn redact(&self, id: &str, raw: &ActionContext) -> Result<Redacted, RedactError> {
        let mut context = raw.clone();
        context.sealed_context.clear();
        let mut findings = Vec::new();
        let mut secrets: Vec<(String, String)> = Vec::new();
        for slot in slots(&mut context) {
            if self.show_unmasked.contains(slot.name()) {
                continue;
            }
            match slot {
                Slot::Text {
                    label, value, url, ..
                } => {
                    let masked = if url {
                        self.masker.mask_url(value)
                    } else {
                        self.masker.mask_text(value)
                    };
                    for f in &masked.findings {
                        if let Some(secret) = value.get(f.start..f.end) {
                            secrets.push((secret.to_owned(), f.placeholder()));
                        }
                        findings.push(FieldFinding {
                            field: label.clone(),
                            placeholder: f.placeholder(),
                        });
                    }
                    *value = masked.text;
                }
                Slot::Argv { label, value, .. } => {
                    let masked = self.masker.mask_argv(value);
                    for f in &masked.findings {
                        let arg = f.arg.unwrap_or(0);
                        if let Some(secret) = value.get(arg).and_then(|a| a.get(f.start..f.end)) {
                            secrets.push((secret.to_owned(), f.placeholder()));
                        }
                        findings.push(FieldFinding {
                            field: format!("{label}[{arg}]"),
                            placeholder: f.placeholder(),
                        });
                    }
                    *value = masked.argv;
                }
            }
        }
        // Longest first, so a secret that contains another is replaced whole.
        secrets.retain(|(s, _)| s.len() >= MIN_SCRUB_LEN);
        secrets.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        secrets.dedup_by(|a, b| a.0 == b.0);
        if !secrets.is_empty() {
            for slot in slots(&mut context) {
                if self.show_unmasked.contains(slot.name()) {
                    continue;
                }
                match slot {
                    Slot::Text { value, .. } => scrub(value, &secrets),
                    Slot::Argv { value, .. } => value.iter_mut().for_each(|v| scrub(v, &secrets)),
                }
            }
        }
        let sealed = match &self.auditor {
            Some(key) => {
                let plaintext = raw_context_json(id, raw).to_string();
                let blob =
                    airlock_mask::seal(plaintext.as_bytes(), key, &aad(id)).map_err(|source| {
                        RedactError::Seal {
                            id: id.to_owned(),
                            source,
                        }
                    })?;
                // Serialising a struct of strings and byte vectors cannot fail.
                let bytes = serde_json::to_vec(&blob).unwrap_or_default();
                context.sealed_context = bytes.clone();
                Some(bytes)
            }
            None => None,
        };
        Ok(Redacted {
            context,
            findings,
            sealed,
        })
    }
}

/// The additional authenticated data a request's sealed context is bound to, so a blob
/// cannot be moved to another record unnoticed.
pub fn aad(id: &str) -> Vec<u8> {
    format!("airlock.v1 request {id}").into_bytes()
}

/// The sealed plaintext: the raw context as JSON (what `airlock reveal` prints).
pub fn raw_context_json(id: &str, c: &ActionContext) -> Value {
    let mut action = serde_json::Map::new();
    action.insert("class".into(), json!(class_name(c.class)));
    if let Some(actor) = &c.actor {
        action.insert("actor".into(), process_json(actor));
    }
    action.insert(
        "parents".into(),
        c.parents.iter().map(process_json).collect(),
    );
    action.insert("cgroup".into(), json!(c.cgroup));
    if !c.binary.is_empty() || !c.argv.is_empty() {
        action.insert("binary".into(), json!(c.binary));
        action.insert("argv".into(), json!(c.argv));
    }
    if let Some(d) = &c.destination {
        action.insert(
            "destination".into(),
            json!({
                "address": d.address, "port": d.port, "hostname": d.hostname,
                "scheme": d.scheme, "url": d.url, "bucket": d.bucket, "key": d.key,
                "protocol": d.protocol,
            }),
        );
    }
    if !c.file.is_empty() {
        action.insert("file".into(), json!(c.file));
    }
    action.insert("rule_id".into(), json!(c.rule_id));
    action.insert("rule_reason".into(), json!(c.rule_reason));
    action.insert("severity".into(), json!(c.severity));
    action.insert("impact".into(), json!(c.impact));
    if !c.action_hash.is_empty() {
        action.insert("action_hash".into(), json!(c.action_hash));
    }
    json!({ "version": RAW_CONTEXT_VERSION, "request_id": id, "action": action })
}

/// `exec`, `connect`, `send`, `open` (or `unspecified`).
pub fn class_name(class: i32) -> &'static str {
    match ActionClass::try_from(class) {
        Ok(ActionClass::Exec) => "exec",
        Ok(ActionClass::Connect) => "connect",
        Ok(ActionClass::Send) => "send",
        Ok(ActionClass::Open) => "open",
        Ok(ActionClass::Unspecified) | Err(_) => "unspecified",
    }
}

fn process_json(p: &Process) -> Value {
    json!({ "pid": p.pid, "uid": p.uid, "user": p.user, "binary": p.binary, "argv": p.argv, "comm": p.comm })
}

/// Loads the host's fingerprint key, creating a random one (mode 0600) if the file is
/// missing. A key readable by group or others is refused: with it, anyone could confirm a
/// guessed secret against a placeholder's fingerprint.
///
/// # Errors
/// [`RedactError::FingerprintKey`] naming the file.
pub fn load_or_create_fingerprint_key(path: &Path) -> Result<HostKey, RedactError> {
    let err = |reason: String| RedactError::FingerprintKey {
        path: path.to_owned(),
        reason,
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(err(format!("mode {mode:o} lets others read it; chmod 600")));
            }
            HostKey::load(path).map_err(|e| err(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            HostKey::generate(path).map_err(|e| err(e.to_string()))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

fn scrub(value: &mut String, secrets: &[(String, String)]) {
    for (secret, placeholder) in secrets {
        if value.contains(secret.as_str()) {
            *value = value.replace(secret.as_str(), placeholder);
        }
    }
}

/// A maskable field of an action context.
enum Slot<'a> {
    Text {
        label: String,
        name: &'static str,
        value: &'a mut String,
        url: bool,
    },
    Argv {
        label: String,
        name: &'static str,
        value: &'a mut Vec<String>,
    },
}

impl Slot<'_> {
    fn name(&self) -> &'static str {
        match self {
            Slot::Text { name, .. } | Slot::Argv { name, .. } => name,
        }
    }
}

fn text<'a>(label: String, name: &'static str, value: &'a mut String) -> Slot<'a> {
    Slot::Text {
        label,
        name,
        value,
        url: false,
    }
}

/// Every free-text field of `c`, in a fixed order. `rule_id`, `rule_reason`, `severity`
/// and `action_hash` come from the policy and are not masked.
fn slots(c: &mut ActionContext) -> Vec<Slot<'_>> {
    let ActionContext {
        actor,
        parents,
        cgroup,
        binary,
        argv,
        destination,
        file,
        impact,
        ..
    } = c;
    let mut out = Vec::new();
    out.push(text("binary".into(), "binary", binary));
    out.push(Slot::Argv {
        label: "argv".into(),
        name: "argv",
        value: argv,
    });
    if let Some(p) = actor.as_mut() {
        process_slots(&mut out, "actor".into(), p);
    }
    for (i, p) in parents.iter_mut().enumerate() {
        process_slots(&mut out, format!("parents[{i}]"), p);
    }
    out.push(text("cgroup".into(), "cgroup", cgroup));
    out.push(text("file".into(), "file", file));
    if let Some(d) = destination.as_mut() {
        destination_slots(&mut out, d);
    }
    out.push(text("impact".into(), "impact", impact));
    out
}

fn process_slots<'a>(out: &mut Vec<Slot<'a>>, label: String, p: &'a mut Process) {
    let Process {
        binary, argv, comm, ..
    } = p;
    out.push(text(format!("{label}.binary"), "binary", binary));
    out.push(Slot::Argv {
        label: format!("{label}.argv"),
        name: "argv",
        value: argv,
    });
    out.push(text(format!("{label}.comm"), "comm", comm));
}

fn destination_slots<'a>(out: &mut Vec<Slot<'a>>, d: &'a mut Destination) {
    let Destination {
        hostname,
        url,
        bucket,
        key,
        ..
    } = d;
    out.push(text("destination.hostname".into(), "hostname", hostname));
    out.push(Slot::Text {
        label: "destination.url".into(),
        name: "url",
        value: url,
        url: true,
    });
    out.push(text("destination.bucket".into(), "bucket", bucket));
    out.push(text("destination.key".into(), "key", key));
}

#[cfg(test)]
mod tests {
    use airlock_mask::{AuditorKeyPair, MaskConfig, SealedBlob};

    use super::*;

    const AWS_ID: &str = "AKIAZ7QPLM3XK4RT2WNB";
    const AWS_SECRET: &str = "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";
    const PASSWORD: &str = "hunter2Secret";
    const DB_PASSWORD: &str = "pa55word";

    fn raw_context() -> ActionContext {
        let argv: Vec<String> = [
            "/usr/bin/export-tool",
            "--password",
            PASSWORD,
            "postgres://user:pa55word@db/x",
            &format!("AWS_ACCESS_KEY_ID={AWS_ID}"),
            &format!("AWS_SECRET_ACCESS_KEY={AWS_SECRET}"),
            "--bucket",
            "reports-q3",
        ]
        .map(String::from)
        .into();
        ActionContext {
            class: ActionClass::Exec as i32,
            actor: Some(Process {
                pid: 42,
                uid: 1000,
                user: "dev".into(),
                binary: "/usr/bin/bash".into(),
                argv: vec![
                    "bash".into(),
                    "-c".into(),
                    format!("export-tool --password {PASSWORD}"),
                ],
                comm: "bash".into(),
            }),
            parents: vec![Process {
                pid: 7,
                binary: "/usr/bin/python3".into(),
                argv: vec![
                    "python3".into(),
                    "agent.py".into(),
                    format!("--token={PASSWORD}"),
                ],
                ..Default::default()
            }],
            cgroup: "/ai.slice".into(),
            binary: "/usr/bin/export-tool".into(),
            impact: format!("runs {}", argv.join(" ")),
            argv,
            rule_id: "exec.watch:export-tool".into(),
            rule_reason: "exec of a watched export tool".into(),
            severity: "high".into(),
            ..Default::default()
        }
    }

    fn redactor(auditor: Option<AuditorPublicKey>, show: &[&str]) -> Redactor {
        let config = MaskConfig {
            unmasked_fields: show.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        };
        let key = HostKey::from_bytes(vec![9; 32]).expect("key");
        let show: Vec<String> = show.iter().map(|s| (*s).to_owned()).collect();
        Redactor::new(Masker::new(&config, &key).expect("masker"), auditor, &show)
    }

    #[test]
    fn no_raw_secret_survives_anywhere_in_the_masked_context() {
        let r = redactor(None, &[]);
        let out = r.redact("req-1", &raw_context()).expect("redact");
        let shown = format!("{:?}", out.context);
        for secret in [PASSWORD, DB_PASSWORD, AWS_SECRET, AWS_ID] {
            assert!(!shown.contains(secret), "`{secret}` leaked: {shown}");
        }
        let argv = &out.context.argv;
        assert!(argv[2].starts_with("[PASSWORD#"), "{argv:?}");
        assert!(argv[5].contains("[AWS_SECRET_KEY#"), "{argv:?}");
        assert!(
            argv[3].starts_with("postgres://user:[PASSWORD#"),
            "{argv:?}"
        );
        // Masking keeps what the approver needs.
        assert_eq!(argv[0], "/usr/bin/export-tool");
        assert_eq!(argv[7], "reports-q3");
        assert_eq!(out.context.rule_id, "exec.watch:export-tool");
        // The same secret gets the same fingerprint wherever it appeared (the kind may
        // differ with the flag that carried it: `--password` vs `--token=`).
        let ph = argv[2].clone();
        let fingerprint = &ph[ph.find('#').expect("#")..];
        assert!(out.context.impact.contains(&ph), "{}", out.context.impact);
        assert!(
            out.context.parents[0].argv[2].ends_with(fingerprint),
            "{:?}",
            out.context.parents
        );
        assert!(
            out.findings
                .iter()
                .any(|f| f.field == "argv[2]" && f.placeholder == ph),
            "{:?}",
            out.findings
        );
        assert!(
            out.findings
                .iter()
                .any(|f| f.field.starts_with("actor.argv")),
            "{:?}",
            out.findings
        );
        assert!(out.sealed.is_none() && out.context.sealed_context.is_empty());
    }

    #[test]
    fn sealed_context_unseals_to_the_raw_context_only_for_its_request() {
        let pair = AuditorKeyPair::generate().expect("keys");
        let r = redactor(Some(pair.public.clone()), &[]);
        let raw = raw_context();
        let out = r.redact("req-2", &raw).expect("redact");
        let bytes = out.sealed.expect("sealed");
        assert_eq!(out.context.sealed_context, bytes);
        let blob: SealedBlob = serde_json::from_slice(&bytes).expect("blob json");
        assert!(!String::from_utf8_lossy(&bytes).contains(PASSWORD));
        let plain = airlock_mask::unseal(&blob, &pair.private, &aad("req-2")).expect("unseal");
        let value: Value = serde_json::from_slice(&plain).expect("json");
        assert_eq!(value, raw_context_json("req-2", &raw));
        assert_eq!(value["action"]["argv"][2], PASSWORD);
        assert!(
            airlock_mask::unseal(&blob, &pair.private, &aad("req-3")).is_err(),
            "bound to its id"
        );
    }

    #[test]
    fn show_unmasked_fields_pass_through() {
        let mut raw = raw_context();
        raw.destination = Some(Destination {
            bucket: "tok_live_abcdefghijklmnopqrstuvwx".into(),
            url: "https://user:s3cretPw@example.com/x".into(),
            ..Default::default()
        });
        let masked = redactor(None, &[]).redact("a", &raw).expect("redact");
        let shown = redactor(None, &["bucket"])
            .redact("a", &raw)
            .expect("redact");
        let d = shown.context.destination.expect("dest");
        assert_eq!(d.bucket, "tok_live_abcdefghijklmnopqrstuvwx");
        assert!(!d.url.contains("s3cretPw"), "{}", d.url);
        assert!(
            !masked
                .context
                .destination
                .expect("dest")
                .url
                .contains("s3cretPw")
        );
    }

    #[test]
    fn fingerprint_key_is_created_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/fp.key");
        let a = load_or_create_fingerprint_key(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create_fingerprint_key(&path).expect("load");
        let config = MaskConfig::default();
        let (ma, mb) = (
            Masker::new(&config, &a).expect("m"),
            Masker::new(&config, &b).expect("m"),
        );
        assert_eq!(ma.fingerprint(b"x"), mb.fingerprint(b"x"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load_or_create_fingerprint_key(&path)
            .expect_err("world-readable")
            .to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
