//! Loading, validating and evaluating a policy.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use globset::GlobSetBuilder;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::action::{Action, ActionClass};
use crate::decision::{
    ApproverRequirement, AskSpec, Decision, GrantScope, Mode, Outcome, OutcomeKind, Severity,
    ShadowHit, Verdict,
};
use crate::error::{Location, PolicyError};
use crate::matcher::{
    ArgPattern, ArgvMatcher, BinaryGlobs, ClassSet, GlobKind, GlobList, Matcher, build_glob,
    build_regex,
};
use crate::raw::{RawApprover, RawAsk, RawPolicy, RawPort, RawRule};

/// Largest policy file accepted (1 MiB: about 5,000 rules).
pub const MAX_POLICY_BYTES: u64 = 1 << 20;

/// Longest ask TTL accepted (a held process waits this long at most).
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// TTL when neither the rule nor `[defaults.ask]` sets one.
const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) id: Arc<str>,
    pub(crate) location: Location,
    pub(crate) mode: Mode,
    pub(crate) classes: ClassSet,
    pub(crate) matcher: Matcher,
    pub(crate) outcome: Outcome,
    pub(crate) reason: Option<Arc<str>>,
    pub(crate) severity: Severity,
}

impl Rule {
    /// The rule's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Where the rule starts in its file.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The rule's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The rule's outcome.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// Does the rule apply to `class`?
    pub fn applies_to(&self, class: ActionClass) -> bool {
        self.classes.contains(class)
    }
}

/// The outcome of a class when no rule matches.
#[derive(Debug, Clone)]
pub(crate) struct ClassDefault {
    pub outcome: Outcome,
    pub reason: Option<Arc<str>>,
    pub severity: Severity,
}

/// A validated, compiled policy. Immutable; share it behind an `Arc`
/// ([`PolicyHandle`](crate::PolicyHandle) does).
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) source: String,
    pub(crate) hash: Arc<str>,
    pub(crate) revision: Option<Arc<str>>,
    pub(crate) mode: Mode,
    /// Indexed by `class_index`.
    pub(crate) defaults: [ClassDefault; 4],
    pub(crate) rules: Vec<Rule>,
}

pub(crate) fn class_index(class: ActionClass) -> usize {
    match class {
        ActionClass::Exec => 0,
        ActionClass::Connect => 1,
        ActionClass::Send => 2,
        ActionClass::Open => 3,
    }
}

impl Policy {
    /// Read, validate and compile the policy file at `path`.
    ///
    /// # Errors
    /// [`PolicyError::Io`] when the file cannot be read, [`PolicyError::TooLarge`] above
    /// [`MAX_POLICY_BYTES`], and every validation error of [`Policy::from_str`].
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = read_limited(path, MAX_POLICY_BYTES)?;
        Self::from_str(&path.display().to_string(), &text)
    }

    /// Validate and compile policy `text`; `file` names it in errors.
    ///
    /// # Errors
    /// [`PolicyError::TooLarge`], [`PolicyError::Parse`] (syntax, unknown field, wrong
    /// type), [`PolicyError::UnsupportedVersion`], [`PolicyError::BadGlob`],
    /// [`PolicyError::BadRegex`], [`PolicyError::BadCidr`], [`PolicyError::UnknownGroup`],
    /// [`PolicyError::DuplicateRuleId`] and [`PolicyError::Invalid`], each with its
    /// `file:line:column`.
    pub fn from_str(file: &str, text: &str) -> Result<Self, PolicyError> {
        let size = text.len() as u64;
        if size > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                file: file.to_owned(),
                size,
                limit: MAX_POLICY_BYTES,
            });
        }
        let cx = Cx { file, text };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError::Parse {
            location: cx.loc(e.span().map_or(0, |s| s.start)),
            message: e.message().to_owned(),
        })?;
        compile(&cx, raw)
    }

    /// SHA-256 (hex) of the policy text.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The `revision` label of the file, if any.
    pub fn revision(&self) -> Option<&str> {
        self.revision.as_deref()
    }

    /// The file name the policy was read from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The global mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The rules in evaluation order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The outcome for `class` when no rule matches.
    pub fn default_outcome(&self, class: ActionClass) -> &Outcome {
        &self.defaults[class_index(class)].outcome
    }

    /// Decide `action`: the first enforcing rule (file order) that matches decides;
    /// shadow rules matched on the way are reported in [`Decision::shadow`]; no match
    /// falls back to the class default. Never fails and never allocates more than the
    /// decision itself.
    pub fn evaluate(&self, action: &Action) -> Decision {
        let mut shadow = Vec::new();
        if self.mode == Mode::Off {
            return self.decision(None, Outcome::Allow, None, Severity::Low, shadow);
        }
        for rule in &self.rules {
            if rule.mode == Mode::Off
                || !rule.classes.contains(action.class)
                || !rule.matcher.is_match(action)
            {
                continue;
            }
            if rule.mode == Mode::Shadow {
                shadow.push(ShadowHit {
                    rule_id: rule.id.clone(),
                    outcome: rule.outcome.kind(),
                });
                continue;
            }
            return self.decision(
                Some(rule.id.clone()),
                rule.outcome.clone(),
                rule.reason.clone(),
                rule.severity,
                shadow,
            );
        }
        let d = &self.defaults[class_index(action.class)];
        self.decision(
            None,
            d.outcome.clone(),
            d.reason.clone(),
            d.severity,
            shadow,
        )
    }

    fn decision(
        &self,
        rule_id: Option<Arc<str>>,
        outcome: Outcome,
        reason: Option<Arc<str>>,
        severity: Severity,
        shadow: Vec<ShadowHit>,
    ) -> Decision {
        let effective = match self.mode {
            Mode::Enforce => outcome.clone(),
            Mode::Shadow | Mode::Off => Outcome::Allow,
        };
        Decision {
            rule_id,
            outcome,
            mode: self.mode,
            effective,
            reason,
            severity,
            shadow,
            policy_hash: self.hash.clone(),
            policy_revision: self.revision.clone(),
        }
    }
}

/// Read at most `limit` bytes of `path`; larger files are rejected, not truncated.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<String, PolicyError> {
    let io = |source| PolicyError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut buf = Vec::new();
    // Read one byte past the limit so "exactly at the limit" and "over it" differ
    // without trusting metadata (a file can grow between stat and read).
    file.take(limit + 1).read_to_end(&mut buf).map_err(io)?;
    if buf.len() as u64 > limit {
        let size = std::fs::metadata(path).map_or(buf.len() as u64, |m| m.len());
        return Err(PolicyError::TooLarge {
            file: path.display().to_string(),
            size,
            limit,
        });
    }
    String::from_utf8(buf).map_err(|e| PolicyError::Parse {
        location: Location {
            file: path.display().to_string(),
            line: 1,
            column: 1,
        },
        message: format!("not UTF-8: {e}"),
    })
}

/// Compile context: the file name and text for error locations.
pub(crate) struct Cx<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Cx<'_> {
    pub(crate) fn loc(&self, offset: usize) -> Location {
        Location::at(self.file, self.text, offset)
    }

    fn at<T>(&self, s: &Spanned<T>) -> Location {
        self.loc(s.span().start)
    }

    fn invalid<T>(&self, s: &Spanned<T>, reason: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            location: self.at(s),
            reason: reason.into(),
        }
    }
}

fn compile(cx: &Cx<'_>, raw: RawPolicy) -> Result<Policy, PolicyError> {
    if *raw.version.get_ref() != 1 {
        return Err(PolicyError::UnsupportedVersion {
            location: cx.at(&raw.version),
            found: *raw.version.get_ref(),
        });
    }
    let groups = &raw.groups;
    let default_ask = match &raw.defaults.ask {
        Some(a) => Some(AskBase::from_raw(cx, a, groups, None)?),
        None => None,
    };
    let default_severity = raw.defaults.severity.unwrap_or_default();
    let default_reason: Option<Arc<str>> = raw.defaults.reason.as_deref().map(Arc::from);

    let class_default = |kind: &Spanned<OutcomeKind>| -> Result<ClassDefault, PolicyError> {
        let outcome = match kind.get_ref() {
            OutcomeKind::Allow => Outcome::Allow,
            OutcomeKind::Deny => Outcome::Deny,
            OutcomeKind::Ask => {
                let base = default_ask.as_ref().ok_or_else(|| {
                    cx.invalid(
                        kind,
                        "a default of `ask` needs [defaults.ask] with approvers",
                    )
                })?;
                Outcome::Ask(Arc::new(base.spec(
                    cx,
                    kind,
                    default_severity,
                    default_reason.as_deref(),
                )?))
            }
        };
        Ok(ClassDefault {
            outcome,
            reason: default_reason.clone(),
            severity: default_severity,
        })
    };
    let d = &raw.defaults;
    let defaults = [
        class_default(&d.exec)?,
        class_default(&d.connect)?,
        class_default(&d.send)?,
        class_default(&d.open)?,
    ];

    let mut seen: HashMap<String, Location> = HashMap::new();
    let mut rules = Vec::with_capacity(raw.rules.len());
    for spanned in &raw.rules {
        let r = spanned.get_ref();
        let id_loc = cx.at(&r.id);
        if r.id.get_ref().is_empty() {
            return Err(cx.invalid(&r.id, "rule id must not be empty"));
        }
        if let Some(first) = seen.get(r.id.get_ref()) {
            return Err(PolicyError::DuplicateRuleId {
                location: id_loc,
                id: r.id.get_ref().clone(),
                first: first.clone(),
            });
        }
        seen.insert(r.id.get_ref().clone(), id_loc);
        rules.push(compile_rule(
            cx,
            spanned,
            groups,
            default_ask.as_ref(),
            default_severity,
        )?);
    }
    Ok(Policy {
        source: cx.file.to_owned(),
        hash: Arc::from(hex_sha256(cx.text.as_bytes())),
        revision: raw.revision.as_deref().map(Arc::from),
        mode: raw.mode.unwrap_or_default(),
        defaults,
        rules,
    })
}

fn hex_sha256(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            // Writing into a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Ask settings after merging a rule's `ask` table over `[defaults.ask]`.
#[derive(Debug, Clone)]
struct AskBase {
    approvers: Vec<ApproverRequirement>,
    ttl: Duration,
    on_timeout: Verdict,
    grant: GrantScope,
    reason_required: bool,
}

impl AskBase {
    fn from_raw(
        cx: &Cx<'_>,
        s: &Spanned<RawAsk>,
        groups: &BTreeMap<String, crate::raw::RawGroup>,
        base: Option<&AskBase>,
    ) -> Result<Self, PolicyError> {
        let a = s.get_ref();
        let quorum = match &a.quorum {
            Some(q) if *q.get_ref() == 0 => return Err(cx.invalid(q, "quorum must be at least 1")),
            Some(q) => Some(*q.get_ref()),
            None => None,
        };
        let approvers = match &a.approvers {
            Some(list) => {
                if list.is_empty() {
                    return Err(cx.invalid(s, "approvers must name at least one group"));
                }
                let mut out = Vec::with_capacity(list.len());
                for item in list {
                    let (group, q) = match item.get_ref() {
                        RawApprover::Name(g) => (g.clone(), quorum.unwrap_or(1)),
                        RawApprover::Table { group, quorum: q } => {
                            (group.clone(), q.or(quorum).unwrap_or(1))
                        }
                    };
                    if q == 0 {
                        return Err(cx.invalid(item, "quorum must be at least 1"));
                    }
                    if !groups.contains_key(&group) {
                        return Err(PolicyError::UnknownGroup {
                            location: cx.at(item),
                            group,
                        });
                    }
                    out.push(ApproverRequirement { group, quorum: q });
                }
                out
            }
            None => match base {
                Some(b) => {
                    let mut v = b.approvers.clone();
                    if let Some(q) = quorum {
                        v.iter_mut().for_each(|r| r.quorum = q);
                    }
                    v
                }
                None => Vec::new(),
            },
        };
        let ttl = match &a.ttl {
            Some(t) => {
                let d = parse_duration(cx, t)?;
                if d > MAX_TTL {
                    return Err(cx.invalid(
                        t,
                        format!("ttl longer than {}", humantime::format_duration(MAX_TTL)),
                    ));
                }
                d
            }
            None => base.map_or(DEFAULT_TTL, |b| b.ttl),
        };
        let grant = match &a.grant {
            Some(g) if g.get_ref() == "once" => GrantScope::Once,
            Some(g) => GrantScope::Duration {
                max: parse_duration(cx, g).map_err(|_| {
                    cx.invalid(
                        g,
                        format!(
                            "grant must be \"once\" or a duration like \"1h\", not `{}`",
                            g.get_ref()
                        ),
                    )
                })?,
            },
            None => base.map_or(GrantScope::Once, |b| b.grant),
        };
        Ok(Self {
            approvers,
            ttl,
            on_timeout: a
                .on_timeout
                .or(base.map(|b| b.on_timeout))
                .unwrap_or(Verdict::Deny),
            grant,
            reason_required: a
                .reason_required
                .or(base.map(|b| b.reason_required))
                .unwrap_or(false),
        })
    }

    fn spec<T>(
        &self,
        cx: &Cx<'_>,
        at: &Spanned<T>,
        severity: Severity,
        reason: Option<&str>,
    ) -> Result<AskSpec, PolicyError> {
        if self.approvers.is_empty() {
            return Err(cx.invalid(
                at,
                "`ask` needs approvers (in the rule's ask table or [defaults.ask])",
            ));
        }
        Ok(AskSpec {
            approvers: self.approvers.clone(),
            ttl: self.ttl,
            on_timeout: self.on_timeout,
            grant: self.grant,
            severity,
            reason: reason.map(str::to_owned),
            reason_required_for_approve: self.reason_required,
        })
    }
}

fn parse_duration(cx: &Cx<'_>, s: &Spanned<String>) -> Result<Duration, PolicyError> {
    let d = humantime::parse_duration(s.get_ref())
        .map_err(|e| cx.invalid(s, format!("bad duration `{}`: {e}", s.get_ref())))?;
    if d.is_zero() {
        return Err(cx.invalid(s, "duration must be positive"));
    }
    Ok(d)
}

fn compile_rule(
    cx: &Cx<'_>,
    spanned: &Spanned<RawRule>,
    groups: &BTreeMap<String, crate::raw::RawGroup>,
    default_ask: Option<&AskBase>,
    default_severity: Severity,
) -> Result<Rule, PolicyError> {
    let r = spanned.get_ref();
    let classes = match &r.on {
        Some(on) if on.get_ref().is_empty() => {
            return Err(cx.invalid(on, "`on` must name at least one class"));
        }
        Some(on) => ClassSet::of(on.get_ref()),
        None => ClassSet::ALL,
    };
    let severity = r.severity.unwrap_or(default_severity);
    let outcome = match (r.outcome.get_ref(), &r.ask) {
        (OutcomeKind::Ask, ask) => {
            let base = match ask {
                Some(a) => AskBase::from_raw(cx, a, groups, default_ask)?,
                None => default_ask.cloned().ok_or_else(|| {
                    cx.invalid(
                        &r.outcome,
                        "`ask` needs approvers (in the rule's ask table or [defaults.ask])",
                    )
                })?,
            };
            Outcome::Ask(Arc::new(base.spec(
                cx,
                &r.outcome,
                severity,
                r.reason.as_deref(),
            )?))
        }
        (kind, Some(a)) => {
            return Err(cx.invalid(
                a,
                format!("an `ask` table only applies to outcome = \"ask\", not \"{kind}\""),
            ));
        }
        (OutcomeKind::Allow, None) => Outcome::Allow,
        (OutcomeKind::Deny, None) => Outcome::Deny,
    };
    let matcher = compile_matcher(cx, spanned.span().start, r)?;
    Ok(Rule {
        id: Arc::from(r.id.get_ref().as_str()),
        location: cx.at(spanned),
        mode: r.mode.unwrap_or_default(),
        classes,
        matcher,
        outcome,
        reason: r.reason.as_deref().map(Arc::from),
        severity,
    })
}

fn globs(
    cx: &Cx<'_>,
    rule_at: usize,
    list: &Option<Vec<Spanned<String>>>,
    kind: GlobKind,
) -> Result<Option<GlobList>, PolicyError> {
    let Some(list) = list else { return Ok(None) };
    if list.is_empty() {
        return Err(PolicyError::Invalid {
            location: cx.loc(rule_at),
            reason: "empty pattern list (remove the field to match anything)".to_owned(),
        });
    }
    let mut b = GlobSetBuilder::new();
    let mut patterns = Vec::with_capacity(list.len());
    for p in list {
        let g = build_glob(p.get_ref(), kind).map_err(|reason| bad_glob(cx, p, reason))?;
        b.add(g);
        patterns.push(p.get_ref().clone());
    }
    let set = b
        .build()
        .map_err(|e| bad_glob(cx, &list[0], e.to_string()))?;
    Ok(Some(GlobList { patterns, set }))
}

fn bad_glob(cx: &Cx<'_>, p: &Spanned<String>, reason: String) -> PolicyError {
    PolicyError::BadGlob {
        location: cx.at(p),
        glob: p.get_ref().clone(),
        reason,
    }
}

fn binary_globs(
    cx: &Cx<'_>,
    rule_at: usize,
    list: &Option<Vec<Spanned<String>>>,
) -> Result<Option<BinaryGlobs>, PolicyError> {
    let Some(list) = list else { return Ok(None) };
    let mut compiled = Vec::with_capacity(list.len());
    for p in list {
        let kind = if p.get_ref().contains('/') {
            GlobKind::Path
        } else {
            GlobKind::Text
        };
        let g = build_glob(p.get_ref(), kind).map_err(|reason| bad_glob(cx, p, reason))?;
        compiled.push((p.get_ref().clone(), g));
    }
    match list.first() {
        None => Err(PolicyError::Invalid {
            location: cx.loc(rule_at),
            reason: "empty binary/parent list (remove the field to match anything)".to_owned(),
        }),
        Some(first) => BinaryGlobs::new(compiled)
            .map(Some)
            .map_err(|e| bad_glob(cx, first, e.to_string())),
    }
}

fn compile_matcher(cx: &Cx<'_>, rule_at: usize, r: &RawRule) -> Result<Matcher, PolicyError> {
    let mut argv = Vec::new();
    for a in r.argv.iter().flatten() {
        let raw = a.get_ref();
        let pattern = match (&raw.glob, &raw.regex) {
            (Some(g), None) => {
                let glob = build_glob(g.get_ref(), GlobKind::Text)
                    .map_err(|reason| bad_glob(cx, g, reason))?;
                ArgPattern::Glob(g.get_ref().clone(), glob.compile_matcher())
            }
            (None, Some(re)) => ArgPattern::Regex(build_regex(re.get_ref()).map_err(|reason| {
                PolicyError::BadRegex {
                    location: cx.at(re),
                    regex: re.get_ref().clone(),
                    reason,
                }
            })?),
            _ => {
                return Err(cx.invalid(
                    a,
                    "an argv condition needs exactly one of `glob` or `regex`",
                ));
            }
        };
        argv.push(ArgvMatcher {
            position: raw.position,
            pattern,
        });
    }
    let cidr = match &r.cidr {
        None => None,
        Some(list) => {
            let mut nets = Vec::with_capacity(list.len());
            for c in list {
                nets.push(
                    parse_cidr(c.get_ref()).map_err(|reason| PolicyError::BadCidr {
                        location: cx.at(c),
                        cidr: c.get_ref().clone(),
                        reason,
                    })?,
                );
            }
            Some(nets)
        }
    };
    let port = match &r.port {
        None => None,
        Some(list) => {
            let mut ranges = Vec::with_capacity(list.len());
            for p in list {
                ranges.push(match p.get_ref() {
                    RawPort::One(n) => (*n, *n),
                    RawPort::Range(s) => parse_port_range(s).ok_or_else(|| {
                        cx.invalid(p, format!("bad port range `{s}` (expected \"LOW-HIGH\")"))
                    })?,
                });
            }
            Some(ranges)
        }
    };
    Ok(Matcher {
        binary: binary_globs(cx, rule_at, &r.binary)?,
        argv,
        path: globs(cx, rule_at, &r.path, GlobKind::Path)?,
        cidr,
        host: globs(cx, rule_at, &r.host, GlobKind::Host)?,
        port,
        protocol: r.protocol.clone(),
        scheme: r
            .scheme
            .as_ref()
            .map(|v| v.iter().map(|s| s.to_ascii_lowercase()).collect()),
        url: globs(cx, rule_at, &r.url, GlobKind::Text)?,
        s3_bucket: globs(cx, rule_at, &r.s3_bucket, GlobKind::Text)?,
        s3_key: globs(cx, rule_at, &r.s3_key, GlobKind::Path)?,
        uid: r.uid.clone(),
        user: globs(cx, rule_at, &r.user, GlobKind::Text)?,
        cgroup: globs(cx, rule_at, &r.cgroup, GlobKind::Path)?,
        unit: globs(cx, rule_at, &r.unit, GlobKind::Text)?,
        parent: binary_globs(cx, rule_at, &r.parent)?,
    })
}

/// A CIDR (`10.0.0.0/8`) or a bare address (a /32 or /128). Host bits must be zero, so a
/// typo like `10.0.0.1/8` is caught instead of silently meaning `10.0.0.0/8`.
fn parse_cidr(s: &str) -> Result<IpNet, String> {
    if !s.contains('/') {
        return s
            .parse::<std::net::IpAddr>()
            .map(|ip| IpNet::from(ip.to_canonical()))
            .map_err(|e| e.to_string());
    }
    let net: IpNet = s
        .parse()
        .map_err(|e: ipnet::AddrParseError| e.to_string())?;
    if net.trunc() != net {
        return Err(format!("host bits set (did you mean {}?)", net.trunc()));
    }
    Ok(net)
}

fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = s.split_once('-')?;
    let (lo, hi) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    (lo <= hi).then_some((lo, hi))
}
