//! Compiled matchers: one declarative struct per rule, every field optional, all
//! present fields must match (AND), any entry of a list field may match (OR).

use std::net::IpAddr;

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};
use ipnet::IpNet;
use regex::{Regex, RegexBuilder};

use crate::action::{Action, ActionClass, Protocol};

/// Longest glob or regex pattern accepted.
pub(crate) const MAX_PATTERN_LEN: usize = 1024;
/// Compiled-size limit for one regex (bytes of the NFA / lazy DFA cache).
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A set of action classes as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClassSet(pub u8);

impl ClassSet {
    pub(crate) const ALL: ClassSet = ClassSet(0b1111);

    pub(crate) fn of(classes: &[ActionClass]) -> Self {
        Self(classes.iter().fold(0, |m, c| m | c.bit()))
    }

    pub(crate) fn contains(self, class: ActionClass) -> bool {
        self.0 & class.bit() != 0
    }

    pub(crate) fn covers(self, other: ClassSet) -> bool {
        self.0 & other.0 == other.0
    }

    pub(crate) fn intersects(self, other: ClassSet) -> bool {
        self.0 & other.0 != 0
    }
}

/// How a glob family treats `/` and case.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GlobKind {
    /// File paths, cgroup paths, S3 keys: `*` stops at `/`, `**` crosses it.
    Path,
    /// Host names: case-insensitive, `*` crosses `.`.
    Host,
    /// Free text (argv, user, unit, bucket, URL): `*` matches anything.
    Text,
}

/// Build one glob with the options of `kind`.
pub(crate) fn build_glob(pattern: &str, kind: GlobKind) -> Result<globset::Glob, String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!("pattern longer than {MAX_PATTERN_LEN} bytes"));
    }
    if pattern.is_empty() {
        return Err("empty pattern".to_owned());
    }
    GlobBuilder::new(pattern)
        .literal_separator(matches!(kind, GlobKind::Path))
        .case_insensitive(matches!(kind, GlobKind::Host))
        .backslash_escape(true)
        .build()
        .map_err(|e| e.kind().to_string())
}

/// Build a regex with size limits, so a hostile policy cannot make the agent allocate
/// without bound.
pub(crate) fn build_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(format!("pattern longer than {MAX_PATTERN_LEN} bytes"));
    }
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

/// A list of globs of one kind.
#[derive(Debug, Clone)]
pub(crate) struct GlobList {
    pub patterns: Vec<String>,
    pub set: GlobSet,
}

impl GlobList {
    pub(crate) fn is_match(&self, text: &str) -> bool {
        self.set.is_match(text)
    }

    fn is_match_candidate(&self, c: &Candidate<'_>) -> bool {
        self.set.is_match_candidate(c)
    }
}

/// Binary (or parent) selectors: a pattern with a `/` matches the full path, one without
/// matches the file name (and, for parents, the `comm`).
#[derive(Debug, Clone)]
pub(crate) struct BinaryGlobs {
    pub patterns: Vec<String>,
    pub full: GlobSet,
    pub base: GlobSet,
}

impl BinaryGlobs {
    pub(crate) fn new(patterns: Vec<(String, globset::Glob)>) -> Result<Self, globset::Error> {
        let mut full = GlobSetBuilder::new();
        let mut base = GlobSetBuilder::new();
        for (p, g) in &patterns {
            if p.contains('/') {
                full.add(g.clone());
            } else {
                base.add(g.clone());
            }
        }
        Ok(Self {
            patterns: patterns.into_iter().map(|(p, _)| p).collect(),
            full: full.build()?,
            base: base.build()?,
        })
    }

    pub(crate) fn is_match_path(&self, path: &str) -> bool {
        self.full.is_match(path) || self.base.is_match(basename(path))
    }
}

/// The file name part of a path.
pub(crate) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One argv condition.
#[derive(Debug, Clone)]
pub(crate) struct ArgvMatcher {
    /// `Some(i)`: `argv[i]` must match; `None`: any argument must match.
    pub position: Option<usize>,
    pub pattern: ArgPattern,
}

#[derive(Debug, Clone)]
pub(crate) enum ArgPattern {
    Glob(String, globset::GlobMatcher),
    Regex(Regex),
}

impl ArgPattern {
    fn is_match(&self, arg: &str) -> bool {
        match self {
            Self::Glob(_, g) => g.is_match(arg),
            Self::Regex(r) => r.is_match(arg),
        }
    }

    /// Text of the pattern, for lints.
    pub(crate) fn source(&self) -> (&'static str, &str) {
        match self {
            Self::Glob(p, _) => ("glob", p),
            Self::Regex(r) => ("regex", r.as_str()),
        }
    }
}

impl ArgvMatcher {
    fn is_match(&self, argv: &[String]) -> bool {
        match self.position {
            Some(i) => argv.get(i).is_some_and(|a| self.pattern.is_match(a)),
            None => argv.iter().any(|a| self.pattern.is_match(a)),
        }
    }
}

/// Every condition of one rule.
#[derive(Debug, Clone, Default)]
pub(crate) struct Matcher {
    pub binary: Option<BinaryGlobs>,
    pub argv: Vec<ArgvMatcher>,
    pub path: Option<GlobList>,
    pub cidr: Option<Vec<IpNet>>,
    pub host: Option<GlobList>,
    /// Inclusive port ranges.
    pub port: Option<Vec<(u16, u16)>>,
    pub protocol: Option<Vec<Protocol>>,
    /// Lower-cased schemes.
    pub scheme: Option<Vec<String>>,
    pub url: Option<GlobList>,
    pub s3_bucket: Option<GlobList>,
    pub s3_key: Option<GlobList>,
    pub uid: Option<Vec<u32>>,
    pub user: Option<GlobList>,
    pub cgroup: Option<GlobList>,
    pub unit: Option<GlobList>,
    pub parent: Option<BinaryGlobs>,
}

/// `Some(list)` must match `value`; a missing value never matches a present condition.
fn check<T: ?Sized>(
    cond: Option<&GlobList>,
    value: Option<&T>,
    f: impl Fn(&GlobList, &T) -> bool,
) -> bool {
    match cond {
        None => true,
        Some(c) => value.is_some_and(|v| f(c, v)),
    }
}

impl Matcher {
    /// True when no condition restricts the destination IP beyond `cidr` and nothing
    /// else at all: the rule's verdict depends only on class and IP.
    pub(crate) fn only_cidr(&self) -> bool {
        let Self {
            binary,
            argv,
            path,
            cidr: _,
            host,
            port,
            protocol,
            scheme,
            url,
            s3_bucket,
            s3_key,
            uid,
            user,
            cgroup,
            unit,
            parent,
        } = self;
        binary.is_none()
            && argv.is_empty()
            && path.is_none()
            && host.is_none()
            && port.is_none()
            && protocol.is_none()
            && scheme.is_none()
            && url.is_none()
            && s3_bucket.is_none()
            && s3_key.is_none()
            && uid.is_none()
            && user.is_none()
            && cgroup.is_none()
            && unit.is_none()
            && parent.is_none()
    }

    /// Can an action of one of `classes` carry every fact these conditions need? argv
    /// is only known for exec, a file path only for open, a destination only for
    /// connect/send.
    pub(crate) fn satisfiable_by(&self, classes: ClassSet) -> bool {
        let needs_dest = self.cidr.is_some()
            || self.host.is_some()
            || self.port.is_some()
            || self.protocol.is_some()
            || self.scheme.is_some()
            || self.url.is_some()
            || self.s3_bucket.is_some()
            || self.s3_key.is_some();
        ActionClass::ALL.iter().any(|&c| {
            classes.contains(c)
                && (self.argv.is_empty() || c == ActionClass::Exec)
                && (self.path.is_none() || c == ActionClass::Open)
                && (!needs_dest || matches!(c, ActionClass::Connect | ActionClass::Send))
        })
    }

    /// Which conditions are present, as a bit mask (for lints).
    pub(crate) fn fields(&self) -> u32 {
        [
            self.binary.is_some(),
            !self.argv.is_empty(),
            self.path.is_some(),
            self.cidr.is_some(),
            self.host.is_some(),
            self.port.is_some(),
            self.protocol.is_some(),
            self.scheme.is_some(),
            self.url.is_some(),
            self.s3_bucket.is_some(),
            self.s3_key.is_some(),
            self.uid.is_some(),
            self.user.is_some(),
            self.cgroup.is_some(),
            self.unit.is_some(),
            self.parent.is_some(),
        ]
        .iter()
        .enumerate()
        .fold(0, |m, (i, &set)| m | (u32::from(set) << i))
    }

    /// Does `action` meet every condition? Cheap checks first.
    pub(crate) fn is_match(&self, action: &Action) -> bool {
        // Integer checks first: they reject most actions for a few nanoseconds.
        if let Some(uids) = &self.uid
            && !action.uid.is_some_and(|u| uids.contains(&u))
        {
            return false;
        }
        let dest = action.destination.as_ref();
        if let Some(nets) = &self.cidr {
            let Some(ip) = dest.and_then(|d| d.ip) else {
                return false;
            };
            let ip = canonical(ip);
            if !nets.iter().any(|n| n.contains(&ip)) {
                return false;
            }
        }
        if let Some(ports) = &self.port {
            let Some(p) = dest.and_then(|d| d.port) else {
                return false;
            };
            if !ports.iter().any(|&(lo, hi)| lo <= p && p <= hi) {
                return false;
            }
        }
        if let Some(protos) = &self.protocol
            && !dest
                .and_then(|d| d.protocol)
                .is_some_and(|p| protos.contains(&p))
        {
            return false;
        }
        if let Some(schemes) = &self.scheme
            && !dest
                .and_then(|d| d.scheme.as_deref())
                .is_some_and(|s| schemes.iter().any(|x| x.eq_ignore_ascii_case(s)))
        {
            return false;
        }
        if let Some(b) = &self.binary
            && !action.binary.as_deref().is_some_and(|p| b.is_match_path(p))
        {
            return false;
        }
        if !self.argv.iter().all(|m| m.is_match(&action.argv)) {
            return false;
        }
        if let Some(paths) = &self.path {
            let Some(p) = action.path.as_deref() else {
                return false;
            };
            if !paths.is_match_candidate(&Candidate::new(p)) {
                return false;
            }
        }
        if !check(
            self.host.as_ref(),
            dest.and_then(|d| d.hostname.as_deref()),
            |g, h| g.is_match(h.strip_suffix('.').unwrap_or(h)),
        ) {
            return false;
        }
        let text = |cond: Option<&GlobList>, v: Option<&str>| check(cond, v, |g, s| g.is_match(s));
        text(self.url.as_ref(), dest.and_then(|d| d.url.as_deref()))
            && text(
                self.s3_bucket.as_ref(),
                dest.and_then(|d| d.s3_bucket.as_deref()),
            )
            && text(self.s3_key.as_ref(), dest.and_then(|d| d.s3_key.as_deref()))
            && text(self.user.as_ref(), action.user.as_deref())
            && text(self.cgroup.as_ref(), action.cgroup.as_deref())
            && text(self.unit.as_ref(), action.unit.as_deref())
            && self.parent.as_ref().is_none_or(|sel| {
                action.parents.iter().any(|p| {
                    p.binary.as_deref().is_some_and(|b| sel.is_match_path(b))
                        || p.comm.as_deref().is_some_and(|c| sel.base.is_match(c))
                })
            })
    }
}

/// IPv4-mapped IPv6 addresses are matched as IPv4, so `::ffff:10.0.0.1` cannot dodge a
/// `10.0.0.0/8` rule.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}
