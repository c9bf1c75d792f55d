//! Checkpoint signing keys: ed25519 (ring), PKCS#8 key file readable only by the agent,
//! public key published beside it for verifiers.
//!
//! The public key file (`<key>.pub`) holds one line: the base64 of the 32-byte ed25519
//! public key. A key's id is the first 8 bytes of SHA-256(public key), in hex.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};

use crate::record::{Hash, hex, sha256};

/// Errors from loading, creating or using keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The private key file can be read by group or others.
    #[error("key file {path} has mode {mode:o}; it must be readable only by its owner")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// The key file is not an ed25519 PKCS#8 document.
    #[error("key file {0} is not an ed25519 PKCS#8 key")]
    BadKey(PathBuf),
    /// The public key file is not base64 of 32 bytes.
    #[error("public key file {0} is not base64 of a 32-byte ed25519 key")]
    BadPublicKey(PathBuf),
    /// Key generation failed (no randomness).
    #[error("could not generate a key")]
    Generate,
}

/// An ed25519 signing key with its id.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.public.key_id)
            .finish_non_exhaustive()
    }
}

/// An ed25519 public key with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// 16 hex digits: first 8 bytes of SHA-256(public key).
    pub key_id: String,
    /// The 32 raw bytes.
    pub bytes: Vec<u8>,
}

impl PublicKey {
    /// Wraps raw public key bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> PublicKey {
        let key_id = hex(&sha256(&bytes)[..8]);
        PublicKey { key_id, bytes }
    }

    /// Parses the base64 form.
    pub fn from_base64(s: &str) -> Option<PublicKey> {
        let bytes = B64.decode(s.trim()).ok()?;
        (bytes.len() == 32).then(|| PublicKey::from_bytes(bytes))
    }

    /// The base64 form.
    pub fn to_base64(&self) -> String {
        B64.encode(&self.bytes)
    }

    /// Loads a published public key file.
    ///
    /// # Errors
    /// [`KeyError::Io`] or [`KeyError::BadPublicKey`].
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let s = fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.into(),
            source,
        })?;
        PublicKey::from_base64(&s).ok_or_else(|| KeyError::BadPublicKey(path.into()))
    }

    /// Checks a signature by this key.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.bytes)
            .verify(msg, sig)
            .is_ok()
    }
}

impl SigningKey {
    /// Generates a fresh key in memory (tests, rotation).
    ///
    /// # Errors
    /// [`KeyError::Generate`].
    pub fn generate() -> Result<SigningKey, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(doc.as_ref()).ok_or(KeyError::Generate)
    }

    fn from_pkcs8(der: &[u8]) -> Option<SigningKey> {
        let pair = Ed25519KeyPair::from_pkcs8(der).ok()?;
        let public = PublicKey::from_bytes(pair.public_key().as_ref().to_vec());
        Some(SigningKey { pair, public })
    }

    /// Loads the key at `path`, creating it (mode 0600) and its `<path>.pub` (mode 0644) if
    /// absent. An existing key readable by group/others is refused.
    ///
    /// # Errors
    /// [`KeyError::Io`], [`KeyError::Permissions`], [`KeyError::BadKey`], [`KeyError::Generate`].
    pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
        let io = |source| KeyError::Io {
            path: path.into(),
            source,
        };
        match fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::Permissions {
                        path: path.into(),
                        mode,
                    });
                }
                let der = fs::read(path).map_err(io)?;
                let key = Self::from_pkcs8(&der).ok_or_else(|| KeyError::BadKey(path.into()))?;
                key.publish(&pub_path(path))?;
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| KeyError::Generate)?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir).map_err(io)?;
                }
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                f.write_all(doc.as_ref()).map_err(io)?;
                f.sync_all().map_err(io)?;
                let key = Self::from_pkcs8(doc.as_ref()).ok_or(KeyError::Generate)?;
                key.publish(&pub_path(path))?;
                Ok(key)
            }
            Err(source) => Err(io(source)),
        }
    }

    /// Writes the public key file (world-readable) if it is missing or differs.
    fn publish(&self, path: &Path) -> Result<(), KeyError> {
        let want = format!("{}\n", self.public.to_base64());
        if fs::read_to_string(path).is_ok_and(|s| s == want) {
            return Ok(());
        }
        let io = |source| KeyError::Io {
            path: path.into(),
            source,
        };
        let tmp = path.with_extension("pub.tmp");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(want.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::rename(&tmp, path).map_err(io)
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Signs bytes.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }
}

/// `<key path>.pub`.
pub fn pub_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// The exact bytes a checkpoint signature covers:
/// `"airlock-audit-checkpoint-v1\0" ‖ log_id ‖ "\0" ‖ seq (u64 BE) ‖ hash (32 bytes) ‖
/// time_ms (u64 BE) ‖ key_id`. `seq`/`hash` are those of the record just before the
/// checkpoint.
pub fn checkpoint_message(
    log_id: &str,
    seq: u64,
    hash: &Hash,
    time_ms: u64,
    key_id: &str,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(b"airlock-audit-checkpoint-v1\0");
    m.extend_from_slice(log_id.as_bytes());
    m.push(0);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(&time_ms.to_be_bytes());
    m.extend_from_slice(key_id.as_bytes());
    m
}

/// The bytes the old key signs to endorse a new one:
/// `"airlock-audit-rotate-v1\0" ‖ log_id ‖ "\0" ‖ seq (u64 BE) ‖ hash ‖ new public key`.
pub fn rotation_message(log_id: &str, seq: u64, hash: &Hash, new_key: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(128);
    m.extend_from_slice(b"airlock-audit-rotate-v1\0");
    m.extend_from_slice(log_id.as_bytes());
    m.push(0);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(new_key);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_private_and_public_key_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k/audit.key");
        let k1 = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let published = PublicKey::load(&pub_path(&path)).unwrap();
        assert_eq!(&published, k1.public());
        let k2 = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(k1.public(), k2.public());
        let sig = k2.sign(b"m");
        assert!(published.verify(b"m", &sig));
        assert!(!published.verify(b"n", &sig));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            SigningKey::load_or_create(&path),
            Err(KeyError::Permissions { .. })
        ));
    }
}
