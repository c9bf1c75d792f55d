//! The agent's configuration file (TOML), validated once into [`AgentConfig`].
//!
//! Precedence is file < environment < flags: the binary applies `AIRLOCK_*` variables and
//! flags on top of what this module parses.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// Upper bound on a config file; anything larger is a mistake, not a config.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is {size} bytes; the limit is 1 MiB")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The file as written by the user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    agent: RawAgent,
    hub: RawHub,
    scope: RawScope,
    exec: RawExec,
    #[serde(default)]
    policy: Option<RawPolicy>,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    masking: RawMasking,
    #[serde(default)]
    egress: RawEgress,
    #[serde(default)]
    files: RawFiles,
    #[serde(default)]
    pinning: RawPinning,
    #[serde(default)]
    rescan: RawRescan,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRescan {
    /// Safety-net re-resolution of credential globs and scope cgroups, e.g. "30s". inotify
    /// reports changes at once; this catches what it cannot see (network file systems,
    /// symlink targets elsewhere, directories beyond the watch limit).
    #[serde(default)]
    interval: Option<String>,
}

/// `[rescan] interval` unless configured.
pub const DEFAULT_RESCAN: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// The policy file (TOML, `version = 1`); reloaded on SIGHUP and when it changes.
    file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPinning {
    /// bpffs directory where the gates' maps and links are pinned; default
    /// [`DEFAULT_PIN_DIR`].
    #[serde(default)]
    dir: Option<PathBuf>,
}

/// Where the gates are pinned unless `[pinning] dir` says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/airlock";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    /// Extra allowed destinations (CIDRs or addresses); loopback and the hub always pass.
    #[serde(default)]
    allow: Vec<String>,
    /// Where a TCP connection outside the allow list waits: "connect" (default: no packet
    /// leaves) or "first-send" (the handshake happens, the first byte of data waits, and
    /// the request names host, URL and S3 bucket from it).
    #[serde(default)]
    hold_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    /// Credential file globs; `~/` expands to every user's home. Default:
    /// [`DEFAULT_CREDENTIALS`].
    #[serde(default)]
    credentials: Option<Vec<String>>,
    /// More of the agent's own files that watched processes may not write, remove, rename
    /// or replace (the config file and the audit log are always protected). A directory
    /// is protected by inode with everything in it, files created later included.
    #[serde(default)]
    protect: Vec<PathBuf>,
}

/// Credential files held by default.
pub const DEFAULT_CREDENTIALS: &[&str] = &[
    "~/.aws/credentials",
    "~/.aws/config",
    "~/.ssh/id_*",
    "~/.kube/config",
    "~/.docker/config.json",
    "~/.netrc",
    "~/.pgpass",
    "~/.config/gcloud/credentials.db",
    "~/.config/gcloud/application_default_credentials.json",
    "/etc/shadow",
    "/etc/gshadow",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    /// Principal the agent presents to the hub.
    id: String,
    /// Replaced by `[audit] dir`; still parsed so the error can say so.
    #[serde(default)]
    audit_log: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHub {
    url: String,
    /// How long a held action waits for a human before it is denied, e.g. "2m".
    #[serde(default = "default_ttl")]
    decision_ttl: String,
    /// CA that signed the hub's certificate (PEM); with https:// URLs.
    #[serde(default)]
    ca_cert: Option<PathBuf>,
    /// The agent's client certificate (PEM), naming `airlock:agent/<id>`.
    #[serde(default)]
    client_cert: Option<PathBuf>,
    /// The agent's client key (PEM).
    #[serde(default)]
    client_key: Option<PathBuf>,
    /// What a held action gets when the hub stays unreachable for its whole TTL at submit
    /// time: "deny" (default) or "allow".
    #[serde(default)]
    fail_mode: FailMode,
}

/// Outcome for a held action when the hub cannot be reached at submit time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Deny (the safe default).
    #[default]
    Deny,
    /// Allow, loudly: for hosts where availability beats control.
    Allow,
}

/// mTLS material for the hub connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubTls {
    /// CA certificate the hub's certificate must chain to.
    pub ca_cert: PathBuf,
    /// Client certificate.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
}

fn default_ttl() -> String {
    "5m".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScope {
    /// cgroup v2 directories whose processes (and their descendants) are watched.
    cgroups: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    /// Binaries whose exec is held: names looked up in `search_path`, or absolute paths.
    /// Optional when a policy names the binaries.
    #[serde(default)]
    watch: Vec<String>,
    /// Where names are looked up; default: a standard system PATH.
    #[serde(default)]
    search_path: Option<String>,
}

/// `[audit]`: where the hash-chained log lives and the key that signs it, plus the
/// library's knobs (checkpoint cadence, rotation, retention, disk-space ladder).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    #[serde(default = "default_audit_dir")]
    dir: PathBuf,
    #[serde(default = "default_signing_key")]
    signing_key: PathBuf,
    #[serde(flatten)]
    log: airlock_audit::AuditConfig,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            dir: default_audit_dir(),
            signing_key: default_signing_key(),
            log: airlock_audit::AuditConfig::default(),
        }
    }
}

fn default_audit_dir() -> PathBuf {
    PathBuf::from(airlock_audit::cli::DEFAULT_DIR)
}

fn default_signing_key() -> PathBuf {
    PathBuf::from(airlock_audit::cli::DEFAULT_KEY)
}

/// `[masking]`: what approvers, logs and the audit trail may see.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMasking {
    /// Auditors' HPKE public key (armoured or bare base64) the raw context is sealed to.
    #[serde(default)]
    auditor_public_key: Option<PathBuf>,
    /// Set to false to run without an auditor key: raw context is then discarded.
    #[serde(default = "yes")]
    seal_raw_context: bool,
    /// Host key for placeholder fingerprints; created (0600) when missing.
    #[serde(default = "default_fingerprint_key")]
    fingerprint_key: PathBuf,
    /// Field names whose values approvers must see (e.g. `bucket`).
    #[serde(default)]
    show_unmasked: Vec<String>,
    /// Extra field names whose values are secrets.
    #[serde(default)]
    secret_fields: Vec<String>,
    #[serde(default)]
    extra_detectors: Vec<airlock_mask::ExtraDetector>,
    #[serde(default)]
    allow_literals: Vec<String>,
    #[serde(default)]
    allow_regexes: Vec<String>,
    #[serde(default)]
    disabled_kinds: Vec<String>,
    #[serde(default)]
    mask_ip_addresses: bool,
}

impl Default for RawMasking {
    fn default() -> Self {
        Self {
            auditor_public_key: None,
            seal_raw_context: true,
            fingerprint_key: default_fingerprint_key(),
            show_unmasked: Vec::new(),
            secret_fields: Vec::new(),
            extra_detectors: Vec::new(),
            allow_literals: Vec::new(),
            allow_regexes: Vec::new(),
            disabled_kinds: Vec::new(),
            mask_ip_addresses: false,
        }
    }
}

fn yes() -> bool {
    true
}

/// Default path of the masking fingerprint key.
pub const DEFAULT_FINGERPRINT_KEY: &str = "/etc/airlock/fingerprint.key";

fn default_fingerprint_key() -> PathBuf {
    PathBuf::from(DEFAULT_FINGERPRINT_KEY)
}

/// Validated `[audit]` section.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// Log directory.
    pub dir: PathBuf,
    /// ed25519 signing key (created 0600 if missing, public key at `<path>.pub`).
    pub signing_key: PathBuf,
    /// The library's knobs.
    pub log: airlock_audit::AuditConfig,
}

/// Validated `[masking]` section.
#[derive(Debug, Clone)]
pub struct MaskingSettings {
    /// Auditors' public key; `None` only when `seal_raw_context = false`.
    pub auditor_public_key: Option<PathBuf>,
    /// Host fingerprint key (created 0600 if missing).
    pub fingerprint_key: PathBuf,
    /// The masking library's configuration (`show_unmasked` becomes `unmasked_fields`).
    pub mask: airlock_mask::MaskConfig,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub agent_id: String,
    pub audit: AuditSettings,
    pub masking: MaskingSettings,
    pub hub_url: String,
    pub decision_ttl: Duration,
    /// mTLS files; `None` only with an `http://` (dev-mode) hub URL.
    pub hub_tls: Option<HubTls>,
    pub hub_fail_mode: FailMode,
    pub scope_cgroups: Vec<PathBuf>,
    pub watch: Vec<String>,
    pub search_path: String,
    /// Without a policy every watched action asks the hub with `decision_ttl`.
    pub policy_file: Option<PathBuf>,
    /// `[egress] allow`: extra allowed CIDRs, validated.
    pub egress_allow: Vec<ipnet::IpNet>,
    /// `[egress] hold_at = "first-send"`.
    pub hold_at_first_send: bool,
    /// `[files] credentials`: globs of credential files.
    pub credentials: Vec<String>,
    /// Files watched processes may not write: `[files] protect`, the config file and the
    /// audit log.
    pub protect: Vec<PathBuf>,
    /// `[pinning] dir`.
    pub pin_dir: PathBuf,
    /// `[rescan] interval`: the safety-net re-resolution period.
    pub rescan_interval: Duration,
}

/// The PATH used to resolve watched binary names when the config names none.
pub const DEFAULT_SEARCH_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl AgentConfig {
    /// Reads and validates `path`.
    ///
    /// # Errors
    /// One [`ConfigError`] naming the file and the first problem found.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
                size: meta.len(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(path, &text)?;
        config.protect.push(path.to_owned());
        Ok(config)
    }

    /// Parses config text; `path` is only used in messages.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for TOML errors (with line and column), [`ConfigError::Invalid`]
    /// for values that parse but make no sense.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line(&e.to_string()),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        if let Some(old) = &raw.agent.audit_log {
            return Err(invalid(format!(
                "agent.audit_log ({}) is gone: the signed audit log lives in a directory, set [audit] dir",
                old.display()
            )));
        }
        if raw.agent.id.trim().is_empty() {
            return Err(invalid("agent.id must not be empty".into()));
        }
        if !(raw.hub.url.starts_with("http://") || raw.hub.url.starts_with("https://")) {
            return Err(invalid(format!(
                "hub.url `{}` must start with http:// or https://",
                raw.hub.url
            )));
        }
        let decision_ttl = humantime::parse_duration(&raw.hub.decision_ttl)
            .map_err(|e| invalid(format!("hub.decision_ttl `{}`: {e}", raw.hub.decision_ttl)))?;
        if decision_ttl.is_zero() || decision_ttl > Duration::from_secs(24 * 3600) {
            return Err(invalid(
                "hub.decision_ttl must be between 1s and 24h".into(),
            ));
        }
        let hub_tls = match (raw.hub.ca_cert, raw.hub.client_cert, raw.hub.client_key) {
            (Some(ca_cert), Some(client_cert), Some(client_key)) => Some(HubTls {
                ca_cert,
                client_cert,
                client_key,
            }),
            (None, None, None) => None,
            _ => {
                return Err(invalid(
                    "hub.ca_cert, hub.client_cert and hub.client_key go together".into(),
                ));
            }
        };
        match (raw.hub.url.starts_with("https://"), hub_tls.is_some()) {
            (true, false) => {
                return Err(invalid(
                    "an https:// hub.url needs hub.ca_cert, hub.client_cert and hub.client_key"
                        .into(),
                ));
            }
            (false, true) => {
                return Err(invalid(
                    "hub.ca_cert and client certificates need an https:// hub.url".into(),
                ));
            }
            _ => {}
        }
        if raw.scope.cgroups.is_empty() {
            return Err(invalid(
                "scope.cgroups must name at least one cgroup".into(),
            ));
        }
        if raw.exec.watch.is_empty() && raw.policy.is_none() {
            return Err(invalid(
                "exec.watch must name at least one binary (or set policy.file)".into(),
            ));
        }
        if let Some(empty) = raw.exec.watch.iter().find(|w| w.trim().is_empty()) {
            return Err(invalid(format!(
                "exec.watch contains an empty entry `{empty}`"
            )));
        }
        let egress_allow = raw
            .egress
            .allow
            .iter()
            .map(|entry| {
                parse_cidr(entry).ok_or_else(|| {
                    invalid(format!(
                        "egress.allow entry `{entry}` is not an address or CIDR"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hold_at_first_send = match raw.egress.hold_at.as_deref() {
            None | Some("connect") => false,
            Some("first-send") => true,
            Some(other) => {
                return Err(invalid(format!(
                    "egress.hold_at `{other}` must be \"connect\" or \"first-send\""
                )));
            }
        };
        let credentials = raw.files.credentials.unwrap_or_else(|| {
            DEFAULT_CREDENTIALS
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        });
        if let Some(bad) = credentials
            .iter()
            .find(|c| !(c.starts_with('/') || c.starts_with("~/")))
        {
            return Err(invalid(format!(
                "files.credentials entry `{bad}` must be absolute or start with ~/"
            )));
        }
        let mut protect = raw.files.protect;
        // The audit signing key and the policy are the agent's own; the audit log files
        // are added by the daemon once the log is open.
        protect.push(raw.audit.signing_key.clone());
        if let Some(policy) = &raw.policy {
            protect.push(policy.file.clone());
        }
        let pin_dir = raw
            .pinning
            .dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_DIR));
        if !pin_dir.is_absolute() {
            return Err(invalid(format!(
                "pinning.dir `{}` must be absolute",
                pin_dir.display()
            )));
        }
        let rescan_interval = match &raw.rescan.interval {
            None => DEFAULT_RESCAN,
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| invalid(format!("rescan.interval `{text}`: {e}")))?,
        };
        if rescan_interval < Duration::from_secs(1)
            || rescan_interval > Duration::from_secs(24 * 3600)
        {
            return Err(invalid("rescan.interval must be between 1s and 24h".into()));
        }
        let masking = raw.masking;
        let auditor_public_key = match (masking.auditor_public_key, masking.seal_raw_context) {
            (Some(path), true) => Some(path),
            (None, true) => {
                return Err(invalid(
                    "masking.auditor_public_key is required to seal raw context for auditors \
                     (or set masking.seal_raw_context = false to keep only masked context)"
                        .into(),
                ));
            }
            (Some(_), false) => {
                return Err(invalid(
                    "masking.auditor_public_key is set but masking.seal_raw_context = false".into(),
                ));
            }
            (None, false) => None,
        };
        let mask = airlock_mask::MaskConfig {
            host_key_file: None,
            extra_detectors: masking.extra_detectors,
            allow_literals: masking.allow_literals,
            allow_regexes: masking.allow_regexes,
            unmasked_fields: masking.show_unmasked,
            secret_fields: masking.secret_fields,
            disabled_kinds: masking.disabled_kinds,
            mask_ip_addresses: masking.mask_ip_addresses,
        };
        if raw.audit.dir.as_os_str().is_empty() || raw.audit.signing_key.as_os_str().is_empty() {
            return Err(invalid(
                "audit.dir and audit.signing_key must not be empty".into(),
            ));
        }
        Ok(Self {
            rescan_interval,
            hold_at_first_send,
            pin_dir,
            egress_allow,
            credentials,
            protect,
            agent_id: raw.agent.id,
            audit: AuditSettings {
                dir: raw.audit.dir,
                signing_key: raw.audit.signing_key,
                log: raw.audit.log,
            },
            masking: MaskingSettings {
                auditor_public_key,
                fingerprint_key: masking.fingerprint_key,
                mask,
            },
            hub_url: raw.hub.url,
            decision_ttl,
            hub_tls,
            hub_fail_mode: raw.hub.fail_mode,
            scope_cgroups: raw.scope.cgroups,
            watch: raw.exec.watch,
            search_path: raw
                .exec
                .search_path
                .unwrap_or_else(|| DEFAULT_SEARCH_PATH.to_owned()),
            policy_file: raw.policy.map(|p| p.file),
        })
    }
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a host prefix).
fn parse_cidr(entry: &str) -> Option<ipnet::IpNet> {
    let entry = entry.trim();
    entry.parse::<ipnet::IpNet>().ok().or_else(|| {
        entry
            .parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

/// toml's messages span several lines with a source excerpt; keep the first one, which
/// carries the line and column.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().unwrap_or_default().trim().to_owned();
    match lines.next_back() {
        Some(last) if last.trim() != first => format!("{first} ({})", last.trim()),
        _ => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[agent]
id = "host-1"
[hub]
url = "http://127.0.0.1:7443"
decision_ttl = "90s"
[scope]
cgroups = ["/sys/fs/cgroup/ai.slice"]
[exec]
watch = ["aws", "/usr/bin/scp"]
[masking]
auditor_public_key = "/etc/airlock/auditor.pub"
"#;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(Path::new("agent.toml"), text)
    }

    #[test]
    fn parses_a_complete_file() {
        let c = parse(GOOD).expect("valid");
        assert_eq!(c.agent_id, "host-1");
        assert_eq!(c.decision_ttl, Duration::from_secs(90));
        assert_eq!(c.watch, ["aws", "/usr/bin/scp"]);
        assert_eq!(c.search_path, DEFAULT_SEARCH_PATH);
        assert_eq!(c.audit.dir, Path::new("/var/lib/airlock/audit"));
        assert_eq!(c.audit.signing_key, Path::new("/etc/airlock/audit.key"));
        assert_eq!(c.audit.log, airlock_audit::AuditConfig::default());
        assert_eq!(
            c.masking.auditor_public_key.as_deref(),
            Some(Path::new("/etc/airlock/auditor.pub"))
        );
        assert_eq!(
            c.masking.fingerprint_key,
            Path::new(DEFAULT_FINGERPRINT_KEY)
        );
        assert_eq!(c.hub_fail_mode, FailMode::Deny, "deny unless configured");
        assert_eq!(c.hub_tls, None);
        assert!(c.egress_allow.is_empty());
        assert_eq!(c.credentials.len(), DEFAULT_CREDENTIALS.len());
        assert_eq!(c.protect, [PathBuf::from("/etc/airlock/audit.key")]);
    }

    #[test]
    fn parses_audit_and_masking_sections() {
        let text = format!(
            "{GOOD}{}",
            r#"
[audit]
dir = "/srv/audit"
signing_key = "/srv/keys/audit.key"
heartbeat_interval_ms = 500
retain_files = 30
"#
        )
        .replace(
            "[masking]\n",
            r#"[masking]
fingerprint_key = "/srv/keys/fp.key"
show_unmasked = ["bucket"]
allow_literals = ["AKIAIOSFODNN7EXAMPLE"]
extra_detectors = [{ name = "ACME_TOKEN", regex = "acme_[a-z0-9]{20}", keywords = ["acme_"] }]
"#,
        );
        let c = parse(&text).expect("valid");
        assert_eq!(c.audit.dir, Path::new("/srv/audit"));
        assert_eq!(c.audit.log.heartbeat_interval_ms, 500);
        assert_eq!(c.audit.log.retain_files, 30);
        assert_eq!(
            c.audit.log.checkpoint_every_records,
            airlock_audit::AuditConfig::default().checkpoint_every_records
        );
        assert_eq!(c.masking.fingerprint_key, Path::new("/srv/keys/fp.key"));
        assert_eq!(c.masking.mask.unmasked_fields, ["bucket"]);
        assert_eq!(c.masking.mask.extra_detectors[0].name, "ACME_TOKEN");
        assert_eq!(c.masking.mask.allow_literals, ["AKIAIOSFODNN7EXAMPLE"]);
    }

    #[test]
    fn sealing_needs_an_auditor_key_or_an_explicit_opt_out() {
        let without = GOOD.replace("auditor_public_key = \"/etc/airlock/auditor.pub\"\n", "");
        let err = parse(&without).expect_err("no auditor key").to_string();
        assert!(
            err.contains("masking.auditor_public_key is required"),
            "{err}"
        );
        let opted_out = without.replace("[masking]\n", "[masking]\nseal_raw_context = false\n");
        let c = parse(&opted_out).expect("explicit opt-out");
        assert_eq!(c.masking.auditor_public_key, None);
        let both = GOOD.replace("[masking]\n", "[masking]\nseal_raw_context = false\n");
        assert!(parse(&both).is_err(), "a key plus opt-out is contradictory");
    }

    #[test]
    fn parses_mtls_and_fail_mode() {
        let text = GOOD
            .replace("http://127.0.0.1:7443", "https://hub:7443")
            .replace(
                "decision_ttl = \"90s\"",
                "decision_ttl = \"90s\"\nca_cert = \"/etc/airlock/ca.pem\"\n\
             client_cert = \"/etc/airlock/host-1.pem\"\nclient_key = \"/etc/airlock/host-1.key\"\n\
             fail_mode = \"allow\"",
            );
        let c = parse(&text).expect("valid");
        assert_eq!(c.hub_fail_mode, FailMode::Allow);
        assert_eq!(
            c.hub_tls.unwrap().client_key,
            PathBuf::from("/etc/airlock/host-1.key")
        );
        let https_without_certs = GOOD.replace("http://127", "https://127");
        assert!(
            parse(&https_without_certs)
                .unwrap_err()
                .to_string()
                .contains("needs hub.ca_cert")
        );
        let bad_mode = GOOD.replace(
            "decision_ttl = \"90s\"",
            "decision_ttl = \"90s\"\nfail_mode = \"maybe\"",
        );
        let err = parse(&bad_mode).unwrap_err().to_string();
        assert!(err.contains("maybe") && err.contains("deny"), "{err}");
    }

    #[test]
    fn parses_egress_and_files_sections() {
        let text = format!(
            "{GOOD}[egress]\nallow = [\"10.0.0.0/8\", \"2001:db8::1\"]\n\
             [files]\ncredentials = [\"~/.aws/credentials\", \"/srv/**/.env\"]\nprotect = [\"/etc/airlock/policy.toml\"]\n"
        );
        let c = parse(&text).expect("valid");
        let allow: Vec<String> = c.egress_allow.iter().map(|n| n.to_string()).collect();
        assert_eq!(allow, ["10.0.0.0/8", "2001:db8::1/128"]);
        assert_eq!(c.credentials, ["~/.aws/credentials", "/srv/**/.env"]);
        assert_eq!(c.protect.len(), 2);
        assert_eq!(c.rescan_interval, DEFAULT_RESCAN);
    }

    #[test]
    fn the_rescan_interval_is_configurable_and_bounded() {
        let c = parse(&format!("{GOOD}[rescan]\ninterval = \"1h\"\n")).expect("valid");
        assert_eq!(c.rescan_interval, Duration::from_secs(3600));
        for bad in ["\"0s\"", "\"2d\"", "\"often\""] {
            let err = parse(&format!("{GOOD}[rescan]\ninterval = {bad}\n"))
                .expect_err(bad)
                .to_string();
            assert!(err.contains("rescan.interval"), "{err}");
        }
    }

    #[test]
    fn rejects_each_kind_of_bad_input_with_one_sentence() {
        let cases = [
            (
                GOOD.replace("[exec]", "[exec]\nbogus = 1"),
                "unknown field `bogus`",
            ),
            (
                GOOD.replace("\"90s\"", "\"soon\""),
                "hub.decision_ttl `soon`",
            ),
            (GOOD.replace("\"90s\"", "\"0s\""), "between 1s and 24h"),
            (
                GOOD.replace("http://127", "ftp://127"),
                "must start with http://",
            ),
            (
                GOOD.replace("[\"aws\", \"/usr/bin/scp\"]", "[]"),
                "at least one binary",
            ),
            (
                GOOD.replace("\"host-1\"", "\"\""),
                "agent.id must not be empty",
            ),
            (
                GOOD.replace("[scope]", "[scope\n"),
                "invalid config file agent.toml",
            ),
            (
                GOOD.replace("id = \"host-1\"", "id = \"host-1\"\naudit_log = \"/x\""),
                "set [audit] dir",
            ),
            (format!("{GOOD}[audit]\nbogus_knob = 1\n"), "unknown field"),
            (
                GOOD.replace("[masking]\n", "[masking]\nnope = 1\n"),
                "unknown field `nope`",
            ),
            (
                format!("{GOOD}[egress]\nallow = [\"10.0.0.0/33\"]\n"),
                "egress.allow entry `10.0.0.0/33`",
            ),
            (
                format!("{GOOD}[files]\ncredentials = [\"rel/path\"]\n"),
                "must be absolute or start with ~/",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&text).expect_err(expected).to_string();
            assert!(
                err.contains(expected),
                "`{err}` should mention `{expected}`"
            );
            assert!(!err.contains('\n'), "error must be one line: {err:?}");
        }
    }

    #[test]
    fn a_policy_file_makes_the_watch_list_optional() {
        let text = GOOD.replace("watch = [\"aws\", \"/usr/bin/scp\"]", "")
            + "[policy]\nfile = \"/etc/airlock/policy.toml\"\n";
        let c = parse(&text).expect("valid");
        assert!(c.watch.is_empty());
        assert_eq!(
            c.policy_file.as_deref(),
            Some(Path::new("/etc/airlock/policy.toml"))
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = AgentConfig::load(Path::new("/nonexistent/agent.toml")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("cannot read config file /nonexistent/agent.toml")
        );
    }
}
