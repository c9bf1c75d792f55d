//! Who is calling: the one place the hub learns a caller's principal, role and groups.
//!
//! The server side is an interceptor ([`Authenticator`]) that puts a [`Caller`] into the
//! request extensions; handlers read it back with [`Caller::of`] and never look at
//! transport details. Two modes:
//!
//! - mTLS (the default, [`CertIdentity`]): rustls has verified the client certificate
//!   against the hub's client CA; the principal and role come from its SAN URI
//!   `airlock:<role>/<principal>` and the groups from `airlock-group:<group>` URIs (layout
//!   in [`crate::ca`]). Headers are ignored.
//! - dev ([`DevHeaderIdentity`]): *trusts* the `x-airlock-principal` / `x-airlock-role` /
//!   `x-airlock-groups` metadata and is therefore only allowed on loopback.
//!
//! The client side ([`ClientIdentity`], [`with_principal`]) attaches that metadata in dev
//! mode and nothing under mTLS.

use std::fmt;
use std::str::FromStr;

use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::ApiError;

/// Metadata key naming the caller's principal (dev mode).
pub const PRINCIPAL_HEADER: &str = "x-airlock-principal";
/// Metadata key naming the caller's role: `agent`, `approver` or `admin` (dev mode).
pub const ROLE_HEADER: &str = "x-airlock-role";
/// Metadata key listing the caller's approver groups, comma-separated (dev mode).
pub const GROUPS_HEADER: &str = "x-airlock-groups";

/// SAN URI prefix naming a certificate's role and principal: `airlock:<role>/<principal>`.
pub const PRINCIPAL_URI_PREFIX: &str = "airlock:";
/// SAN URI prefix naming one approver group: `airlock-group:<group>`.
pub const GROUP_URI_PREFIX: &str = "airlock-group:";

/// Longest principal or group name accepted.
const MAX_NAME_LEN: usize = 256;

/// Errors building or reading an identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The principal is empty, too long or holds characters metadata cannot carry.
    #[error("invalid principal {0:?}: use 1-256 printable ASCII characters")]
    InvalidPrincipal(String),
    /// A group name is empty, too long, or holds a comma or non-printable character.
    #[error("invalid group {0:?}: use 1-256 printable ASCII characters, no commas")]
    InvalidGroup(String),
    /// The role is not one of `agent`, `approver`, `admin`.
    #[error("unknown role {0:?}: expected agent, approver or admin")]
    UnknownRole(String),
}

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A host agent: submits requests and receives decisions; never decides.
    Agent,
    /// A human approver: watches and decides.
    Approver,
    /// An administrator: everything an approver may do (still no self-approval).
    Admin,
}

impl Role {
    /// The wire name (`agent`, `approver`, `admin`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Approver => "approver",
            Self::Admin => "admin",
        }
    }

    /// Whether this role may watch, list and decide requests.
    #[must_use]
    pub fn may_approve(self) -> bool {
        match self {
            Self::Agent => false,
            Self::Approver | Self::Admin => true,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "agent" => Ok(Self::Agent),
            "approver" => Ok(Self::Approver),
            "admin" => Ok(Self::Admin),
            _ => Err(IdentityError::UnknownRole(s.to_owned())),
        }
    }
}

/// An authenticated caller, as handlers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Principal name (agent id or human user).
    pub principal: String,
    /// What the caller may do.
    pub role: Role,
    /// Approver groups the caller belongs to (for quorum rules).
    pub groups: Vec<String>,
}

impl Caller {
    /// The caller the identity interceptor attached to `request`.
    ///
    /// # Errors
    ///
    /// [`ApiError::Unauthenticated`] when no identity layer ran for this service.
    pub fn of<T>(request: &Request<T>) -> Result<Self, ApiError> {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .ok_or(ApiError::Unauthenticated("no caller identity"))
    }

    /// Fails unless the caller is an agent.
    ///
    /// # Errors
    ///
    /// [`ApiError::PermissionDenied`] for approvers and admins.
    pub fn require_agent(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Agent => Ok(()),
            Role::Approver | Role::Admin => {
                Err(ApiError::PermissionDenied("only agents may do this"))
            }
        }
    }

    /// Fails unless the caller is an approver or admin.
    ///
    /// # Errors
    ///
    /// [`ApiError::PermissionDenied`] for agents.
    pub fn require_approver(&self) -> Result<(), ApiError> {
        if self.role.may_approve() {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied("only approvers may do this"))
        }
    }

    /// Reads a caller from dev-mode metadata.
    fn from_metadata(metadata: &MetadataMap) -> Result<Self, Status> {
        let text = |key: &str| -> Result<Option<&str>, Status> {
            metadata
                .get(key)
                .map(|v| {
                    v.to_str()
                        .map_err(|_| Status::unauthenticated("malformed identity"))
                })
                .transpose()
        };
        let principal = text(PRINCIPAL_HEADER)?
            .ok_or_else(|| Status::unauthenticated("missing x-airlock-principal"))?;
        let principal =
            valid_principal(principal).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let role = text(ROLE_HEADER)?
            .ok_or_else(|| Status::unauthenticated("missing x-airlock-role"))?
            .parse::<Role>()
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let groups = match text(GROUPS_HEADER)? {
            Some(list) => parse_groups(list).map_err(|e| Status::unauthenticated(e.to_string()))?,
            None => Vec::new(),
        };
        Ok(Self {
            principal,
            role,
            groups,
        })
    }
}

/// Server interceptor for dev mode: trusts the identity metadata the client sends.
///
/// Only safe on a loopback listener, where every client already runs on this host; the
/// server refuses to start it anywhere else.
#[derive(Clone, Copy, Debug, Default)]
pub struct DevHeaderIdentity;

impl Interceptor for DevHeaderIdentity {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = Caller::from_metadata(request.metadata())?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// Server interceptor for mTLS: the caller is whoever the verified client certificate names.
#[derive(Clone, Copy, Debug, Default)]
pub struct CertIdentity;

impl Interceptor for CertIdentity {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let certs = request
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let caller =
            caller_from_cert(leaf.as_ref()).map_err(|e| Status::unauthenticated(e.to_string()))?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// Why a (chain-verified) client certificate names no usable identity.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The DER could not be parsed.
    #[error("unreadable client certificate")]
    Unreadable,
    /// No `airlock:<role>/<principal>` SAN URI.
    #[error("client certificate names no airlock principal (SAN URI airlock:<role>/<name>)")]
    NoPrincipal,
    /// More than one principal URI: ambiguous, refused.
    #[error("client certificate names several airlock principals")]
    SeveralPrincipals,
    /// The principal URI is malformed or names an unknown role.
    #[error("client certificate principal {0:?} is malformed")]
    Malformed(String),
}

/// Reads the caller a client certificate (DER) names.
///
/// # Errors
///
/// [`CertError`] when the certificate cannot be parsed or names no single valid identity.
pub fn caller_from_cert(der: &[u8]) -> Result<Caller, CertError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| CertError::Unreadable)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|_| CertError::Unreadable)?
        .ok_or(CertError::NoPrincipal)?;
    let mut principal = None;
    let mut groups = Vec::new();
    for name in &san.value.general_names {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        if let Some(group) = uri.strip_prefix(GROUP_URI_PREFIX) {
            if !is_valid_name(group) || group.contains(',') {
                return Err(CertError::Malformed((*uri).to_owned()));
            }
            groups.push(group.to_owned());
        } else if let Some(rest) = uri.strip_prefix(PRINCIPAL_URI_PREFIX) {
            let malformed = || CertError::Malformed((*uri).to_owned());
            let (role, name) = rest.split_once('/').ok_or_else(malformed)?;
            let role = role.parse::<Role>().map_err(|_| malformed())?;
            let name = valid_principal(name).map_err(|_| malformed())?;
            if principal.replace((role, name)).is_some() {
                return Err(CertError::SeveralPrincipals);
            }
        }
    }
    let (role, principal) = principal.ok_or(CertError::NoPrincipal)?;
    Ok(Caller {
        principal,
        role,
        groups,
    })
}

/// The server's identity layer: mTLS certificates or (loopback only) dev headers.
#[derive(Clone, Copy, Debug)]
pub enum Authenticator {
    /// [`CertIdentity`].
    Cert,
    /// [`DevHeaderIdentity`].
    DevHeaders,
}

impl Interceptor for Authenticator {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match self {
            Self::Cert => CertIdentity.call(request),
            Self::DevHeaders => DevHeaderIdentity.call(request),
        }
    }
}

/// Client interceptor attaching dev-mode identity metadata to every call.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use airlock_hub::identity::{ClientIdentity, Role};
/// use airlock_proto::v1::agent_service_client::AgentServiceClient;
///
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:7443")
///     .connect()
///     .await?;
/// let identity = ClientIdentity::new("agent-host-1", Role::Agent)?;
/// let client = AgentServiceClient::with_interceptor(channel, identity);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    principal: Option<AsciiMetadataValue>,
    role: AsciiMetadataValue,
    groups: Option<AsciiMetadataValue>,
}

impl ClientIdentity {
    /// No metadata: under mTLS the client certificate is the identity.
    #[must_use]
    pub fn certificate() -> Self {
        Self {
            principal: None,
            role: AsciiMetadataValue::from_static(""),
            groups: None,
        }
    }

    /// An identity with no approver groups.
    ///
    /// # Errors
    ///
    /// [`IdentityError::InvalidPrincipal`] when `principal` cannot be sent as metadata.
    pub fn new(principal: &str, role: Role) -> Result<Self, IdentityError> {
        let principal = valid_principal(principal)?;
        Ok(Self {
            principal: Some(
                ascii(&principal)
                    .ok_or_else(|| IdentityError::InvalidPrincipal(principal.clone()))?,
            ),
            role: AsciiMetadataValue::from_static(role.as_str()),
            groups: None,
        })
    }

    /// The same identity, member of `groups` (for quorum rules).
    ///
    /// # Errors
    ///
    /// [`IdentityError::InvalidGroup`] for an empty, over-long or comma-holding name.
    pub fn with_groups<I, S>(mut self, groups: I) -> Result<Self, IdentityError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut names = Vec::new();
        for group in groups {
            let group = group.as_ref();
            if !is_valid_name(group) || group.contains(',') {
                return Err(IdentityError::InvalidGroup(group.to_owned()));
            }
            names.push(group.to_owned());
        }
        self.groups = if names.is_empty() {
            None
        } else {
            let joined = names.join(",");
            Some(ascii(&joined).ok_or(IdentityError::InvalidGroup(joined))?)
        };
        Ok(self)
    }

    /// Writes this identity into `metadata`.
    pub fn apply(&self, metadata: &mut MetadataMap) {
        let Some(principal) = &self.principal else {
            return;
        };
        metadata.insert(PRINCIPAL_HEADER, principal.clone());
        metadata.insert(ROLE_HEADER, self.role.clone());
        if let Some(groups) = &self.groups {
            metadata.insert(GROUPS_HEADER, groups.clone());
        }
    }
}

impl Interceptor for ClientIdentity {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        self.apply(request.metadata_mut());
        Ok(request)
    }
}

/// Attaches dev-mode identity metadata to one request.
///
/// # Errors
///
/// [`IdentityError::InvalidPrincipal`] when `principal` cannot be sent as metadata.
pub fn with_principal<T>(
    mut request: Request<T>,
    principal: &str,
    role: Role,
) -> Result<Request<T>, IdentityError> {
    ClientIdentity::new(principal, role)?.apply(request.metadata_mut());
    Ok(request)
}

fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

fn valid_principal(principal: &str) -> Result<String, IdentityError> {
    let trimmed = principal.trim();
    if is_valid_name(trimmed) {
        Ok(trimmed.to_owned())
    } else {
        Err(IdentityError::InvalidPrincipal(principal.to_owned()))
    }
}

fn parse_groups(list: &str) -> Result<Vec<String>, IdentityError> {
    list.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(|g| {
            if is_valid_name(g) {
                Ok(g.to_owned())
            } else {
                Err(IdentityError::InvalidGroup(g.to_owned()))
            }
        })
        .collect()
}

fn ascii(text: &str) -> Option<AsciiMetadataValue> {
    AsciiMetadataValue::try_from(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_metadata() {
        let id = ClientIdentity::new(" alice ", Role::Approver)
            .and_then(|i| i.with_groups(["sre", "sec"]))
            .expect("valid identity");
        let mut md = MetadataMap::new();
        id.apply(&mut md);
        let caller = Caller::from_metadata(&md).expect("caller");
        assert_eq!(caller.principal, "alice");
        assert_eq!(caller.role, Role::Approver);
        assert_eq!(caller.groups, vec!["sre".to_owned(), "sec".to_owned()]);
    }

    #[test]
    fn rejects_missing_or_bad_identity() {
        let mut md = MetadataMap::new();
        assert!(Caller::from_metadata(&md).is_err());
        md.insert(PRINCIPAL_HEADER, AsciiMetadataValue::from_static("bob"));
        md.insert(ROLE_HEADER, AsciiMetadataValue::from_static("root"));
        assert!(Caller::from_metadata(&md).is_err());
        assert!(ClientIdentity::new("", Role::Agent).is_err());
        assert!(ClientIdentity::new("bob\n", Role::Agent).is_ok(), "trimmed");
        assert!(ClientIdentity::new("b\u{7}ob", Role::Agent).is_err());
    }
}
