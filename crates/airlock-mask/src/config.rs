//! Masking configuration (serde, lives in the agent's TOML config) and the host key that
//! keys placeholder fingerprints.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors of the configuration module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A detector or allow-list regex does not compile.
    #[error("invalid regex {pattern:?}: {source}")]
    Regex {
        /// The offending pattern.
        pattern: String,
        /// The regex error.
        #[source]
        source: Box<regex::Error>,
    },
    /// A custom detector name is not usable in a placeholder.
    #[error("detector name {0:?} must be 1-40 of A-Z, 0-9, _ and start with a letter")]
    DetectorName(String),
    /// The host key file is unreadable or too short.
    #[error("host key {path}: {reason}")]
    HostKey {
        /// The key file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The keyword automaton could not be built.
    #[error("building the keyword prefilter: {0}")]
    Prefilter(#[from] aho_corasick::BuildError),
}

/// A detector added in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraDetector {
    /// Placeholder name, e.g. `ACME_TOKEN` (`A-Z`, `0-9`, `_`).
    pub name: String,
    /// Regex (Rust `regex` syntax). If it has a capture group 1, only that group is masked.
    pub regex: String,
    /// Optional literal keywords (ASCII, case-insensitive): the regex only runs on inputs
    /// that contain one of them. Empty means "always run".
    #[serde(default)]
    pub keywords: Vec<String>,
}

/// Masking configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskConfig {
    /// File holding the fingerprint key (at least 16 bytes; see [`HostKey`]).
    pub host_key_file: Option<PathBuf>,
    /// Extra detectors.
    pub extra_detectors: Vec<ExtraDetector>,
    /// Values never masked, compared exactly (e.g. a well-known example key in docs).
    pub allow_literals: Vec<String>,
    /// Values never masked if a regex matches the whole value candidate (use `^…$`).
    pub allow_regexes: Vec<String>,
    /// Field names (flags without dashes, env vars, headers, JSON keys; case-insensitive)
    /// whose values approvers must see, so structured masking skips them.
    pub unmasked_fields: Vec<String>,
    /// Extra field names (case-insensitive, exact) whose values are secrets.
    pub secret_fields: Vec<String>,
    /// Kinds switched off by placeholder name (e.g. `"PHONE"`).
    pub disabled_kinds: Vec<String>,
    /// Also mask IPv4 addresses (off by default: approvers need to see destinations).
    pub mask_ip_addresses: bool,
}

/// The host key that keys placeholder fingerprints (HMAC-SHA256), so the same secret gets
/// the same fingerprint on this host while the fingerprint reveals nothing without the key.
#[derive(Clone)]
pub struct HostKey(Vec<u8>);

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostKey(..)")
    }
}

impl HostKey {
    /// Minimum key length in bytes.
    pub const MIN_LEN: usize = 16;

    /// Wraps key bytes.
    ///
    /// # Errors
    /// [`ConfigError::HostKey`] if shorter than [`Self::MIN_LEN`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ConfigError> {
        if bytes.len() < Self::MIN_LEN {
            return Err(ConfigError::HostKey {
                path: "<bytes>".into(),
                reason: format!("{} bytes, need at least {}", bytes.len(), Self::MIN_LEN),
            });
        }
        Ok(Self(bytes))
    }

    /// Reads the key file (raw bytes).
    ///
    /// # Errors
    /// [`ConfigError::HostKey`] if unreadable or too short.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let err = |reason: String| ConfigError::HostKey {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        if bytes.len() < Self::MIN_LEN {
            return Err(err(format!(
                "{} bytes, need at least {}",
                bytes.len(),
                Self::MIN_LEN
            )));
        }
        Ok(Self(bytes))
    }

    /// Creates a new random 32-byte key file with mode 0600 (fails if it exists).
    ///
    /// # Errors
    /// [`ConfigError::HostKey`] if the RNG fails or the file cannot be created.
    pub fn generate(path: &Path) -> Result<Self, ConfigError> {
        let err = |reason: String| ConfigError::HostKey {
            path: path.display().to_string(),
            reason,
        };
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key).map_err(|e| err(e.to_string()))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        file.write_all(&key)
            .and_then(|()| file.sync_all())
            .map_err(|e| err(e.to_string()))?;
        Ok(Self(key))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may unwrap")]
mod tests {
    use super::*;

    #[test]
    fn config_parses_from_toml_shape() {
        let json = r#"{
            "extra_detectors": [{"name": "ACME_TOKEN", "regex": "acme_[a-z0-9]{20}", "keywords": ["acme_"]}],
            "allow_literals": ["AKIAIOSFODNN7EXAMPLE"],
            "unmasked_fields": ["bucket"],
            "mask_ip_addresses": true
        }"#;
        let c: MaskConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.extra_detectors[0].keywords, vec!["acme_"]);
        assert!(c.mask_ip_addresses);
        assert!(serde_json::from_str::<MaskConfig>(r#"{"nope": 1}"#).is_err());
    }

    #[test]
    fn host_key_generate_and_load() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("host.key");
        let k = HostKey::generate(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(HostKey::load(&p).unwrap().bytes(), k.bytes());
        assert!(HostKey::generate(&p).is_err());
        assert!(HostKey::from_bytes(vec![1; 8]).is_err());
    }
}
