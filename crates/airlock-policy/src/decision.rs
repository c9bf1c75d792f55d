//! What the policy says about an action: [`Decision`] and the types it carries.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How much a rule (or the whole policy) is in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The outcome is applied.
    #[default]
    Enforce,
    /// The outcome is logged ("would have asked / denied") and the action goes through.
    Shadow,
    /// Ignored.
    Off,
}

/// The outcome a rule names, without its ask settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeKind {
    /// Let it through.
    Allow,
    /// Refuse it (`-EPERM`).
    Deny,
    /// Hold it and ask approvers.
    Ask,
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Ask => "ask",
        })
    }
}

/// A final yes/no (what happens when an ask times out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
}

/// How serious an action is, shown to approvers.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Routine.
    Low,
    /// Worth a look.
    #[default]
    Medium,
    /// Data can leave / secrets can be read.
    High,
    /// Page someone.
    Critical,
}

/// One approver group and how many of its members must approve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApproverRequirement {
    /// Group name, declared under `[groups]`; membership lives in the hub.
    pub group: String,
    /// Approvals needed from this group (N of M).
    pub quorum: u32,
}

/// What an approval grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GrantScope {
    /// This one action only.
    Once,
    /// The same exact action (same hash) for at most `max`.
    Duration {
        /// Longest grant an approver may give.
        #[serde(with = "secs")]
        max: Duration,
    },
}

/// How to ask: everything the hub needs to run the approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskSpec {
    /// All requirements must be met (one entry per group).
    pub approvers: Vec<ApproverRequirement>,
    /// How long the request waits for approvers.
    #[serde(with = "secs")]
    pub ttl: Duration,
    /// What happens when the TTL expires.
    pub on_timeout: Verdict,
    /// What an approval covers.
    pub grant: GrantScope,
    /// Severity shown to approvers.
    pub severity: Severity,
    /// Human reason shown to approvers.
    pub reason: Option<String>,
    /// Approvers must type a reason to approve.
    pub reason_required_for_approve: bool,
}

/// A rule's (or a default's) outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "outcome", content = "ask")]
pub enum Outcome {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
    /// Hold it and ask.
    Ask(Arc<AskSpec>),
}

impl Outcome {
    /// The outcome without its ask settings.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Self::Allow => OutcomeKind::Allow,
            Self::Deny => OutcomeKind::Deny,
            Self::Ask(_) => OutcomeKind::Ask,
        }
    }
}

/// A shadow-mode rule that matched before the deciding rule: "would have ...".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowHit {
    /// The shadowed rule.
    pub rule_id: Arc<str>,
    /// What it would have done.
    pub outcome: OutcomeKind,
}

/// The policy's answer for one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The deciding rule; `None` when the class default decided.
    pub rule_id: Option<Arc<str>>,
    /// What the deciding rule (or default) says.
    pub outcome: Outcome,
    /// The mode the outcome was reached in: the global mode (rule shadows are in `shadow`).
    pub mode: Mode,
    /// What actually happens after the mode applies (`Allow` unless `mode` is enforce).
    pub effective: Outcome,
    /// The deciding rule's reason.
    pub reason: Option<Arc<str>>,
    /// The deciding rule's severity.
    pub severity: Severity,
    /// Shadow-mode rules that matched on the way (log "would have ...").
    pub shadow: Vec<ShadowHit>,
    /// SHA-256 (hex) of the policy file that decided.
    pub policy_hash: Arc<str>,
    /// The policy's `revision` label, if it has one.
    pub policy_revision: Option<Arc<str>>,
}

/// Durations as whole seconds on the wire (JSON/TOML), which is how people write them.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}
