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
    egress: RawEgress,
    #[serde(default)]
    files: RawFiles,
    #[serde(default)]
    pinning: RawPinning,
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
    /// More of the agent's own files that watched processes may not write (the config
    /// file and the audit log are always protected).
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
    /// Where the audit log is appended.
    audit_log: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHub {
    url: String,
    /// How long a held action waits for a human before it is denied, e.g. "2m".
    #[serde(default = "default_ttl")]
    decision_ttl: String,
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
    watch: Vec<String>,
    /// Where names are looked up; default: a standard system PATH.
    #[serde(default)]
    search_path: Option<String>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub agent_id: String,
    pub audit_log: PathBuf,
    pub hub_url: String,
    pub decision_ttl: Duration,
    pub scope_cgroups: Vec<PathBuf>,
    pub watch: Vec<String>,
    pub search_path: String,
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
        if raw.scope.cgroups.is_empty() {
            return Err(invalid(
                "scope.cgroups must name at least one cgroup".into(),
            ));
        }
        if raw.exec.watch.is_empty() {
            return Err(invalid("exec.watch must name at least one binary".into()));
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
        protect.push(raw.agent.audit_log.clone());
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
        Ok(Self {
            hold_at_first_send,
            pin_dir,
            egress_allow,
            credentials,
            protect,
            agent_id: raw.agent.id,
            audit_log: raw.agent.audit_log,
            hub_url: raw.hub.url,
            decision_ttl,
            scope_cgroups: raw.scope.cgroups,
            watch: raw.exec.watch,
            search_path: raw
                .exec
                .search_path
                .unwrap_or_else(|| DEFAULT_SEARCH_PATH.to_owned()),
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
audit_log = "/var/log/airlock/audit.jsonl"
[hub]
url = "http://127.0.0.1:7443"
decision_ttl = "90s"
[scope]
cgroups = ["/sys/fs/cgroup/ai.slice"]
[exec]
watch = ["aws", "/usr/bin/scp"]
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
        assert!(c.egress_allow.is_empty());
        assert_eq!(c.credentials.len(), DEFAULT_CREDENTIALS.len());
        assert_eq!(c.protect, [PathBuf::from("/var/log/airlock/audit.jsonl")]);
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
    fn missing_file_names_the_path() {
        let err = AgentConfig::load(Path::new("/nonexistent/agent.toml")).expect_err("must fail");
        assert!(
            err.to_string()
                .starts_with("cannot read config file /nonexistent/agent.toml")
        );
    }
}
