//! The policy file as serde reads it, before validation. Spans are kept on every value
//! a later check can reject, so errors point at the exact place.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::action::{ActionClass, Protocol};
use crate::decision::{Mode, OutcomeKind, Severity, Verdict};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub version: Spanned<i64>,
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default)]
    pub mode: Option<Mode>,
    pub defaults: RawDefaults,
    #[serde(default)]
    pub groups: BTreeMap<String, RawGroup>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    pub exec: Spanned<OutcomeKind>,
    pub connect: Spanned<OutcomeKind>,
    pub send: Spanned<OutcomeKind>,
    pub open: Spanned<OutcomeKind>,
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub ask: Option<Spanned<RawAsk>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "documentation for humans; membership lives in the hub"
    )]
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAsk {
    #[serde(default)]
    pub approvers: Option<Vec<Spanned<RawApprover>>>,
    #[serde(default)]
    pub quorum: Option<Spanned<u32>>,
    #[serde(default)]
    pub ttl: Option<Spanned<String>>,
    #[serde(default)]
    pub on_timeout: Option<Verdict>,
    #[serde(default)]
    pub grant: Option<Spanned<String>>,
    #[serde(default)]
    pub reason_required: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawApprover {
    Name(String),
    Table { group: String, quorum: Option<u32> },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub id: Spanned<String>,
    #[serde(default)]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub on: Option<Spanned<Vec<ActionClass>>>,
    pub outcome: Spanned<OutcomeKind>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub ask: Option<Spanned<RawAsk>>,

    #[serde(default)]
    pub binary: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub argv: Option<Vec<Spanned<RawArgv>>>,
    #[serde(default)]
    pub path: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub cidr: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub host: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub port: Option<Vec<Spanned<RawPort>>>,
    #[serde(default)]
    pub protocol: Option<Vec<Protocol>>,
    #[serde(default)]
    pub scheme: Option<Vec<String>>,
    #[serde(default)]
    pub url: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub s3_bucket: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub s3_key: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub uid: Option<Vec<u32>>,
    #[serde(default)]
    pub user: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub cgroup: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub unit: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub parent: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawArgv {
    #[serde(default)]
    pub position: Option<usize>,
    #[serde(default)]
    pub glob: Option<Spanned<String>>,
    #[serde(default)]
    pub regex: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawPort {
    One(u16),
    Range(String),
}
