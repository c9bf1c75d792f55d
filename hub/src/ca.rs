//! A small certificate authority for the hub's mTLS identities (`airlock hub ca ...`).
//!
//! Certificate layout (what [`crate::identity::CertIdentity`] reads):
//!
//! - The client's principal and role are one SAN URI `airlock:<role>/<principal>`, role
//!   one of `agent`, `approver`, `admin` (e.g. `airlock:approver/alice`). Exactly one such
//!   URI; the subject CN repeats the principal for humans but is not trusted.
//! - Each approver group is a SAN URI `airlock-group:<group>` (e.g. `airlock-group:sre`).
//! - The hub's server certificate carries DNS/IP SANs and the serverAuth usage.
//!
//! Files in the CA directory: `ca.pem` + `ca.key` (the CA), `<name>.pem` + `<name>.key`
//! per issued certificate. Keys are ECDSA P-256, written mode 0600. Equivalent openssl
//! commands are in the hub README section of this module's docs:
//!
//! ```text
//! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
//!   -subj "/CN=airlock hub CA" -keyout ca.key -out ca.pem \
//!   -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
//! openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=alice" \
//!   -keyout alice.key -out alice.csr
//! openssl x509 -req -in alice.csr -CA ca.pem -CAkey ca.key -days 365 -out alice.pem \
//!   -extfile <(printf "subjectAltName=URI:airlock:approver/alice,URI:airlock-group:sre\n\
//! extendedKeyUsage=clientAuth")
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::identity::{GROUP_URI_PREFIX, PRINCIPAL_URI_PREFIX, Role};

/// File name of the CA certificate.
pub const CA_CERT: &str = "ca.pem";
/// File name of the CA key.
pub const CA_KEY: &str = "ca.key";

/// Errors of `hub ca`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// A file could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed (or a stored CA could not be parsed).
    #[error("certificate generation failed")]
    Rcgen(#[from] rcgen::Error),
    /// A name cannot go into a certificate.
    #[error("invalid name {0:?}: use 1-128 characters of A-Z a-z 0-9 . _ @ -")]
    InvalidName(String),
}

/// What `hub ca issue` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IssueRole {
    /// A host agent (submits, never decides).
    Agent,
    /// A human approver.
    Approver,
    /// An administrator (approves too; still never their own requests).
    Admin,
    /// The hub's own server certificate.
    Server,
}

/// Flags of `airlock hub ca`.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Create a new CA (ca.pem, ca.key) in --dir.
    Init {
        /// Directory for the CA files.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a certificate signed by the CA in --dir: <name>.pem and <name>.key.
    Issue {
        /// Directory holding ca.pem and ca.key; the new files go there too.
        #[arg(long)]
        dir: PathBuf,
        /// What the certificate is for.
        #[arg(long, value_enum)]
        role: IssueRole,
        /// Principal (agent id or user name), or the server's file name.
        #[arg(long)]
        name: String,
        /// Approver groups (clients), comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// DNS names or IP addresses of the hub (server only) [default: localhost,127.0.0.1].
        #[arg(long, value_delimiter = ',')]
        san: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

fn valid_name(name: &str) -> Result<(), CaError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(CaError::InvalidName(name.to_owned()))
    }
}

/// Writes `text` to a new file (never overwriting), mode `mode`.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), CaError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    file.write_all(text.as_bytes()).map_err(io(path))
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // An hour of slack for clocks that lag the issuing host.
    let start = rcgen::date_time_ymd(1970, 1, 1) + now.saturating_sub(Duration::from_secs(3600));
    params.not_before = start;
    params.not_after = start + Duration::from_secs(u64::from(days.max(1)) * 86_400);
}

/// Creates `dir/ca.pem` and `dir/ca.key` (the directory is created when missing).
///
/// # Errors
///
/// [`CaError::Io`] (including when a CA already exists there), [`CaError::Rcgen`].
pub fn init(dir: &Path) -> Result<(), CaError> {
    fs::create_dir_all(dir).map_err(io(dir))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "airlock hub CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, 3650);
    let cert = params.self_signed(&key)?;
    write_new(&dir.join(CA_KEY), &key.serialize_pem(), 0o600)?;
    write_new(&dir.join(CA_CERT), &cert.pem(), 0o644)
}

/// Issues `dir/<name>.pem` and `dir/<name>.key`, signed by the CA in `dir`.
///
/// # Errors
///
/// [`CaError::InvalidName`] for a name or group outside the allowed characters,
/// [`CaError::Io`] (including when the files exist), [`CaError::Rcgen`].
pub fn issue(
    dir: &Path,
    role: IssueRole,
    name: &str,
    groups: &[String],
    san: &[String],
    days: u32,
) -> Result<(PathBuf, PathBuf), CaError> {
    valid_name(name)?;
    groups.iter().try_for_each(|g| valid_name(g))?;
    let ca_pem = fs::read_to_string(dir.join(CA_CERT)).map_err(io(&dir.join(CA_CERT)))?;
    let ca_key = fs::read_to_string(dir.join(CA_KEY)).map_err(io(&dir.join(CA_KEY)))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, KeyPair::from_pem(&ca_key)?)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let client_role = match role {
        IssueRole::Agent => Some(Role::Agent),
        IssueRole::Approver => Some(Role::Approver),
        IssueRole::Admin => Some(Role::Admin),
        IssueRole::Server => None,
    };
    match client_role {
        Some(role) => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let uri = format!("{PRINCIPAL_URI_PREFIX}{}/{name}", role.as_str());
            params.subject_alt_names.push(SanType::URI(uri.try_into()?));
            for group in groups {
                let uri = format!("{GROUP_URI_PREFIX}{group}");
                params.subject_alt_names.push(SanType::URI(uri.try_into()?));
            }
        }
        None => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let defaults = ["localhost".to_owned(), "127.0.0.1".to_owned()];
            let names = if san.is_empty() { &defaults[..] } else { san };
            for n in names {
                params.subject_alt_names.push(match n.parse::<IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(n.clone().try_into()?),
                });
            }
        }
    }
    validity(&mut params, days);
    let cert = params.signed_by(&key, &issuer)?;
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    write_new(&key_path, &key.serialize_pem(), 0o600)?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    Ok((cert_path, key_path))
}

/// Runs one `hub ca` command, printing what it wrote.
///
/// # Errors
///
/// As [`init`] and [`issue`].
pub fn run(cmd: &CaCommand) -> Result<(), CaError> {
    match cmd {
        CaCommand::Init { dir } => {
            init(dir)?;
            println!(
                "CA written: {} and {} (keep the key offline)",
                dir.join(CA_CERT).display(),
                dir.join(CA_KEY).display()
            );
        }
        CaCommand::Issue {
            dir,
            role,
            name,
            groups,
            san,
            days,
        } => {
            let (cert, key) = issue(dir, *role, name, groups, san, *days)?;
            println!("issued {} and {}", cert.display(), key.display());
        }
    }
    Ok(())
}
