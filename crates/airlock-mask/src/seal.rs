//! Sealing: the raw (unmasked) context is encrypted to the auditors' public key so that
//! nothing raw leaves the host except sealed.
//!
//! The construction is HPKE (RFC 9180) in base mode with the suite
//! DHKEM(X25519, HKDF-SHA256) + HKDF-SHA256 + ChaCha20-Poly1305, from the RustCrypto-family
//! `hpke` crate. Every [`seal`] call encapsulates a fresh ephemeral key, so each record gets
//! its own content key; only the holder of the auditor private key can derive it. The
//! caller's `aad` (for example the audit record id) is bound into the AEAD tag, so a sealed
//! blob cannot be moved to another record unnoticed.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

type Kem = X25519HkdfSha256;

/// Version of the [`SealedBlob`] format written by this crate.
pub const SEALED_BLOB_VERSION: u8 = 1;
/// Name of the HPKE suite used by [`SEALED_BLOB_VERSION`] 1.
pub const SUITE: &str = "HPKE-Base/X25519-HKDF-SHA256/HKDF-SHA256/ChaCha20Poly1305";
/// HPKE `info` string: separates airlock's use of the key from any other.
const INFO: &[u8] = b"airlock.v1 sealed raw context";

const PRIVATE_LABEL: &str = "AIRLOCK AUDITOR PRIVATE KEY";
const PUBLIC_LABEL: &str = "AIRLOCK AUDITOR PUBLIC KEY";

/// Errors of the sealing module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The operating system's random number generator failed.
    #[error("OS random number generator failed: {0}")]
    Random(getrandom::Error),
    /// HPKE encryption failed.
    #[error("sealing failed: {0}")]
    Seal(hpke::HpkeError),
    /// Decryption failed: wrong key, tampered blob or different `aad`.
    #[error("unsealing failed (wrong key, tampered blob or mismatched aad)")]
    Open,
    /// The blob's version or suite is not one this crate understands.
    #[error("unsupported sealed blob version {version} / suite {suite:?}")]
    Unsupported {
        /// Version found in the blob.
        version: u8,
        /// Suite found in the blob.
        suite: String,
    },
    /// A key or blob field is not valid base64 or has the wrong length.
    #[error("malformed {what}")]
    Malformed {
        /// Which field was malformed.
        what: &'static str,
    },
    /// Reading or writing a key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The auditors' public key: anyone on the host may seal to it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditorPublicKey(<Kem as hpke::Kem>::PublicKey);

/// The auditors' private key: needed to [`unseal`]; never stored on agent hosts.
#[derive(Clone)]
pub struct AuditorPrivateKey(<Kem as hpke::Kem>::PrivateKey);

/// An auditor key pair.
#[derive(Clone)]
pub struct AuditorKeyPair {
    /// The private half.
    pub private: AuditorPrivateKey,
    /// The public half.
    pub public: AuditorPublicKey,
}

impl std::fmt::Debug for AuditorPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditorPublicKey({})", self.key_id())
    }
}

impl std::fmt::Debug for AuditorPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditorPrivateKey(..)")
    }
}

impl std::fmt::Debug for AuditorKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditorKeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl AuditorKeyPair {
    /// Generates a fresh key pair from the OS random number generator.
    ///
    /// # Errors
    /// [`SealError::Random`] if the OS RNG fails.
    pub fn generate() -> Result<Self, SealError> {
        let mut ikm = [0u8; 32];
        getrandom::fill(&mut ikm).map_err(SealError::Random)?;
        // DeriveKeyPair(random ikm) is exactly what RFC 9180 GenerateKeyPair does for DHKEM;
        // doing it here keeps RNG failure an error instead of a panic inside `hpke`.
        let (sk, pk) = Kem::derive_keypair(&ikm);
        ikm.fill(0);
        Ok(Self {
            private: AuditorPrivateKey(sk),
            public: AuditorPublicKey(pk),
        })
    }

    /// Writes the private key to `private_path` (mode 0600, must not exist yet) and the
    /// public key to `public_path`.
    ///
    /// # Errors
    /// [`SealError::Io`] if a file exists already or cannot be written.
    pub fn save(&self, private_path: &Path, public_path: &Path) -> Result<(), SealError> {
        self.private.save(private_path)?;
        self.public.save(public_path)
    }
}

impl AuditorPrivateKey {
    /// The matching public key.
    #[must_use]
    pub fn public_key(&self) -> AuditorPublicKey {
        AuditorPublicKey(Kem::sk_to_pk(&self.0))
    }

    /// Encodes the key as a PEM-like armoured text.
    #[must_use]
    pub fn to_armored(&self) -> String {
        armor(PRIVATE_LABEL, &self.0.to_bytes())
    }

    /// Parses [`Self::to_armored`] output.
    ///
    /// # Errors
    /// [`SealError::Malformed`] if the text is not a private key.
    pub fn from_armored(text: &str) -> Result<Self, SealError> {
        let bytes = dearmor(PRIVATE_LABEL, text, "auditor private key")?;
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&bytes).map_err(|_| {
            SealError::Malformed {
                what: "auditor private key",
            }
        })?;
        Ok(Self(sk))
    }

    /// Writes the key to a new file with mode 0600.
    ///
    /// # Errors
    /// [`SealError::Io`] if the file exists already or cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), SealError> {
        write_new(path, &self.to_armored(), 0o600)
    }

    /// Reads a key written by [`Self::save`].
    ///
    /// # Errors
    /// [`SealError::Io`] if unreadable, [`SealError::Malformed`] if not a private key.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        Self::from_armored(&read(path)?)
    }
}

impl AuditorPublicKey {
    /// Short identifier of the key (first 16 hex digits of SHA-256 of its bytes), recorded
    /// in every [`SealedBlob`] so an auditor knows which key to use.
    #[must_use]
    pub fn key_id(&self) -> String {
        let digest = sha2::Sha256::digest(self.0.to_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Encodes the key as a PEM-like armoured text.
    #[must_use]
    pub fn to_armored(&self) -> String {
        armor(PUBLIC_LABEL, &self.0.to_bytes())
    }

    /// Parses [`Self::to_armored`] output, or a bare base64 line (handy in TOML configs).
    ///
    /// # Errors
    /// [`SealError::Malformed`] if the text is not a public key.
    pub fn from_armored(text: &str) -> Result<Self, SealError> {
        let bytes = if text.contains("-----BEGIN") {
            dearmor(PUBLIC_LABEL, text, "auditor public key")?
        } else {
            B64.decode(text.trim()).map_err(|_| SealError::Malformed {
                what: "auditor public key",
            })?
        };
        let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&bytes).map_err(|_| {
            SealError::Malformed {
                what: "auditor public key",
            }
        })?;
        Ok(Self(pk))
    }

    /// Writes the key to a new file with mode 0644.
    ///
    /// # Errors
    /// [`SealError::Io`] if the file exists already or cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), SealError> {
        write_new(path, &self.to_armored(), 0o644)
    }

    /// Reads a key written by [`Self::save`].
    ///
    /// # Errors
    /// [`SealError::Io`] if unreadable, [`SealError::Malformed`] if not a public key.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        Self::from_armored(&read(path)?)
    }
}

/// A sealed raw context: serializable, versioned, binary fields base64 in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBlob {
    /// Format version ([`SEALED_BLOB_VERSION`]).
    pub version: u8,
    /// Cipher suite name ([`SUITE`]).
    pub suite: String,
    /// [`AuditorPublicKey::key_id`] of the recipient key.
    pub key_id: String,
    /// HPKE encapsulated ephemeral key.
    #[serde(with = "b64")]
    pub enc: Vec<u8>,
    /// AEAD ciphertext including the tag.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
}

/// Encrypts `plaintext` for the holder of `recipient`'s private key, binding `aad`.
///
/// # Errors
/// [`SealError::Seal`] if HPKE fails (plaintext too long for the AEAD).
///
/// # Panics
/// Only inside `hpke` if the OS random number generator fails while making the ephemeral key.
pub fn seal(
    plaintext: &[u8],
    recipient: &AuditorPublicKey,
    aad: &[u8],
) -> Result<SealedBlob, SealError> {
    let (enc, ciphertext) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeS::Base,
        &recipient.0,
        INFO,
        plaintext,
        aad,
    )
    .map_err(SealError::Seal)?;
    Ok(SealedBlob {
        version: SEALED_BLOB_VERSION,
        suite: SUITE.to_owned(),
        key_id: recipient.key_id(),
        enc: enc.to_bytes().to_vec(),
        ciphertext,
    })
}

/// Decrypts a [`SealedBlob`] with the auditor private key; `aad` must equal the sealing one.
/// Callers must record an audit event for every reveal.
///
/// # Errors
/// [`SealError::Unsupported`] for an unknown version/suite, [`SealError::Malformed`] for a
/// bad encapsulated key, [`SealError::Open`] for a wrong key, tampering or mismatched `aad`.
pub fn unseal(
    blob: &SealedBlob,
    key: &AuditorPrivateKey,
    aad: &[u8],
) -> Result<Vec<u8>, SealError> {
    if blob.version != SEALED_BLOB_VERSION || blob.suite != SUITE {
        return Err(SealError::Unsupported {
            version: blob.version,
            suite: blob.suite.clone(),
        });
    }
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&blob.enc).map_err(|_| {
        SealError::Malformed {
            what: "encapsulated key",
        }
    })?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeR::Base,
        &key.0,
        &enc,
        INFO,
        &blob.ciphertext,
        aad,
    )
    .map_err(|_| SealError::Open)
}

fn armor(label: &str, bytes: &[u8]) -> String {
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        B64.encode(bytes)
    )
}

fn dearmor(label: &str, text: &str, what: &'static str) -> Result<Vec<u8>, SealError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = text
        .trim()
        .strip_prefix(begin.as_str())
        .and_then(|rest| rest.strip_suffix(end.as_str()))
        .ok_or(SealError::Malformed { what })?;
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    B64.decode(compact)
        .map_err(|_| SealError::Malformed { what })
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), SealError> {
    let io = |source| SealError::Io {
        path: path.display().to_string(),
        source,
    };
    // create_new: never overwrite an existing key; mode is applied at creation so the
    // private key is never world-readable, not even briefly.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn read(path: &Path) -> Result<String, SealError> {
    std::fs::read_to_string(path).map_err(|source| SealError::Io {
        path: path.display().to_string(),
        source,
    })
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may unwrap")]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let kp = AuditorKeyPair::generate().unwrap();
        let blob = seal(b"PGPASSWORD=hunter2 pg_dump", &kp.public, b"record-1").unwrap();
        assert_eq!(blob.key_id, kp.public.key_id());
        assert!(!blob.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            unseal(&blob, &kp.private, b"record-1").unwrap(),
            b"PGPASSWORD=hunter2 pg_dump"
        );
    }

    #[test]
    fn each_seal_uses_a_fresh_key() {
        let kp = AuditorKeyPair::generate().unwrap();
        let a = seal(b"same", &kp.public, b"").unwrap();
        let b = seal(b"same", &kp.public, b"").unwrap();
        assert_ne!(a.enc, b.enc);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn wrong_key_fails() {
        let kp = AuditorKeyPair::generate().unwrap();
        let other = AuditorKeyPair::generate().unwrap();
        let blob = seal(b"secret", &kp.public, b"a").unwrap();
        assert!(matches!(
            unseal(&blob, &other.private, b"a"),
            Err(SealError::Open)
        ));
    }

    #[test]
    fn tampered_blob_fails() {
        let kp = AuditorKeyPair::generate().unwrap();
        let blob = seal(b"secret", &kp.public, b"a").unwrap();
        for i in 0..blob.ciphertext.len() {
            let mut t = blob.clone();
            t.ciphertext[i] ^= 0x01;
            assert!(
                unseal(&t, &kp.private, b"a").is_err(),
                "flip at {i} went unnoticed"
            );
        }
        let mut t = blob.clone();
        t.enc[0] ^= 0x80;
        assert!(unseal(&t, &kp.private, b"a").is_err());
        let mut t = blob.clone();
        t.ciphertext.pop();
        assert!(unseal(&t, &kp.private, b"a").is_err());
        let mut t = blob;
        t.version = 2;
        assert!(matches!(
            unseal(&t, &kp.private, b"a"),
            Err(SealError::Unsupported { .. })
        ));
    }

    #[test]
    fn aad_mismatch_fails() {
        let kp = AuditorKeyPair::generate().unwrap();
        let blob = seal(b"secret", &kp.public, b"record-1").unwrap();
        assert!(matches!(
            unseal(&blob, &kp.private, b"record-2"),
            Err(SealError::Open)
        ));
    }

    #[test]
    fn json_roundtrip_is_base64() {
        let kp = AuditorKeyPair::generate().unwrap();
        let blob = seal(b"x", &kp.public, b"").unwrap();
        let json = serde_json::to_string(&blob).unwrap();
        assert!(json.contains(&B64.encode(&blob.ciphertext)));
        let back: SealedBlob = serde_json::from_str(&json).unwrap();
        assert_eq!(back, blob);
        assert_eq!(unseal(&back, &kp.private, b"").unwrap(), b"x");
    }

    #[test]
    fn key_files_roundtrip_with_private_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (sk_path, pk_path) = (
            dir.path().join("auditor.key"),
            dir.path().join("auditor.pub"),
        );
        let kp = AuditorKeyPair::generate().unwrap();
        kp.save(&sk_path, &pk_path).unwrap();
        let mode = std::fs::metadata(&sk_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            kp.save(&sk_path, &pk_path).is_err(),
            "must not overwrite a key"
        );
        let sk = AuditorPrivateKey::load(&sk_path).unwrap();
        let pk = AuditorPublicKey::load(&pk_path).unwrap();
        assert_eq!(pk, kp.public);
        assert_eq!(sk.public_key(), kp.public);
        let blob = seal(b"roundtrip", &pk, b"").unwrap();
        assert_eq!(unseal(&blob, &sk, b"").unwrap(), b"roundtrip");
        assert!(AuditorPrivateKey::from_armored(&kp.public.to_armored()).is_err());
    }
}
