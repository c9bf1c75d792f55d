//! Masking and sealing: approvers see the action, never the secrets; auditors can unseal
//! the raw context.
//!
//! Every request the agent submits, logs or audits goes through a [`Masker`] first. Secrets
//! and personal data become typed placeholders with a keyed fingerprint, `[AWS_SECRET_KEY#9f2c]`,
//! so an approver can tell "the same key as yesterday" without seeing it. The raw context
//! is [`seal::seal`]ed to the auditors' public key and stored beside the masked one.
//!
//! ```
//! use airlock_mask::{HostKey, MaskConfig, Masker};
//! let key = HostKey::from_bytes(vec![7; 32]).unwrap();
//! let masker = Masker::new(&MaskConfig::default(), &key).unwrap();
//! let argv: Vec<String> = ["mysql", "-uroot", "-phunter2", "shop"].map(String::from).into();
//! let m = masker.mask_argv(&argv);
//! assert!(m.argv[2].starts_with("-p[PASSWORD#"));
//! assert_eq!(m.findings.len(), 1);
//! ```

pub mod config;
pub mod eval;
pub mod kind;
pub mod masker;
pub mod seal;
pub mod validate;

pub use config::{ConfigError, ExtraDetector, HostKey, MaskConfig};
pub use kind::Kind;
pub use masker::{Finding, Masked, MaskedArgv, Masker};
pub use seal::{
    AuditorKeyPair, AuditorPrivateKey, AuditorPublicKey, SealError, SealedBlob, seal, unseal,
};
