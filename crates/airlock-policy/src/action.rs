//! What the agent observed: the input to [`Policy::evaluate`](crate::Policy::evaluate).
//!
//! The same types are read by `policy explain --json` and by the `[[case]]` tables of
//! `policy test`, so every field except `class` is optional and unknown fields are
//! rejected (a typo in a test case must not silently widen it).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The kind of privileged action a gate caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionClass {
    /// `execve` of a watched binary (`bprm_check_security`).
    Exec,
    /// An outbound `connect` (`socket_connect`).
    Connect,
    /// A payload sent on a socket (`socket_sendmsg`, `SSL_write`).
    Send,
    /// An open of a watched (credential) file (`file_open`).
    Open,
}

impl ActionClass {
    /// Every class, in a fixed order.
    pub const ALL: [ActionClass; 4] = [Self::Exec, Self::Connect, Self::Send, Self::Open];

    /// The lower-case name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Connect => "connect",
            Self::Send => "send",
            Self::Open => "open",
        }
    }

    /// A bit for class sets (`ClassSet`).
    pub(crate) fn bit(self) -> u8 {
        match self {
            Self::Exec => 1,
            Self::Connect => 2,
            Self::Send => 4,
            Self::Open => 8,
        }
    }
}

impl std::fmt::Display for ActionClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Transport protocol of a connect/send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (stream sockets).
    Tcp,
    /// UDP (datagram sockets).
    Udp,
}

/// Where a connect/send goes. Fields the agent does not know stay `None`; a rule that
/// needs a missing field does not match (see the crate docs, "Missing facts").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Destination {
    /// Peer address.
    pub ip: Option<IpAddr>,
    /// Peer port.
    pub port: Option<u16>,
    /// Transport protocol.
    pub protocol: Option<Protocol>,
    /// Host name (resolver uprobe, TLS SNI or HTTP `Host`).
    pub hostname: Option<String>,
    /// URL scheme (`https`, `s3`, ...).
    pub scheme: Option<String>,
    /// Full URL of the request, when a request line was seen.
    pub url: Option<String>,
    /// S3 bucket, when the request is an S3 call.
    pub s3_bucket: Option<String>,
    /// S3 object key, when the request is an S3 call.
    pub s3_key: Option<String>,
}

/// One ancestor of the acting process, nearest first in [`Action::parents`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParentProcess {
    /// Process id.
    pub pid: u32,
    /// Executable path of the ancestor.
    pub binary: Option<String>,
    /// `comm` of the ancestor.
    pub comm: Option<String>,
}

/// One observed action, as the agent describes it to the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Which gate caught it.
    pub class: ActionClass,
    /// Executable path: the exec'd binary for `exec`, the acting process's for the others.
    #[serde(default)]
    pub binary: Option<String>,
    /// Arguments, `argv[0]` first (exec only).
    #[serde(default)]
    pub argv: Vec<String>,
    /// Destination (connect/send).
    #[serde(default)]
    pub destination: Option<Destination>,
    /// File path (open).
    #[serde(default)]
    pub path: Option<String>,
    /// Real uid of the actor.
    #[serde(default)]
    pub uid: Option<u32>,
    /// User name of the actor.
    #[serde(default)]
    pub user: Option<String>,
    /// cgroup v2 path of the actor (`/system.slice/agent.service`).
    #[serde(default)]
    pub cgroup: Option<String>,
    /// systemd unit of the actor (`agent.service`).
    #[serde(default)]
    pub unit: Option<String>,
    /// Ancestors, parent first.
    #[serde(default)]
    pub parents: Vec<ParentProcess>,
}

impl Action {
    /// An action of `class` with nothing else known.
    pub fn new(class: ActionClass) -> Self {
        Self {
            class,
            binary: None,
            argv: Vec::new(),
            destination: None,
            path: None,
            uid: None,
            user: None,
            cgroup: None,
            unit: None,
            parents: Vec::new(),
        }
    }

    /// An exec of `binary` with `argv` (`argv[0]` included).
    pub fn exec(
        binary: impl Into<String>,
        argv: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            binary: Some(binary.into()),
            argv: argv.into_iter().map(Into::into).collect(),
            ..Self::new(ActionClass::Exec)
        }
    }

    /// A connect to `destination`.
    pub fn connect(destination: Destination) -> Self {
        Self {
            destination: Some(destination),
            ..Self::new(ActionClass::Connect)
        }
    }

    /// SHA-256 (hex) of the action's canonical JSON: what a time-boxed grant is bound
    /// to ("the exact action"). Field order is fixed by the struct, so equal actions
    /// hash equally.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        use std::fmt::Write as _;
        // Serialising plain data with string keys cannot fail; an empty string would
        // still hash to a value no real action produces.
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&json)
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }

    /// An open of `path`.
    pub fn open(path: impl Into<String>) -> Self {
        Self {
            path: Some(path.into()),
            ..Self::new(ActionClass::Open)
        }
    }
}
