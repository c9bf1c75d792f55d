//! Lints for `policy check`: rules that can never decide, overlapping rules with
//! different outcomes, and policies the kernel cannot filter.
//!
//! The subset test is conservative: it says "covers" only when it is sure (same
//! patterns, a universal pattern, a literal matched by a glob, CIDR/port containment),
//! so an `Unreachable` lint is never a false alarm; overlaps are reported when they
//! cannot be ruled out, as warnings.

use serde::Serialize;

use crate::decision::Mode;
use crate::error::Location;
use crate::matcher::{BinaryGlobs, GlobList, Matcher};
use crate::policy::Policy;

/// How bad a lint is. `policy check` exits 1 on any error-level lint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LintLevel {
    /// The policy does not do what it says.
    Error,
    /// Worth a look.
    Warning,
}

/// What a lint found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LintKind {
    /// An earlier enforcing rule matches everything this rule matches.
    Unreachable {
        /// The earlier rule.
        by: String,
    },
    /// An earlier enforcing rule with a different outcome, conditions on the same fields,
    /// and patterns that partly overlap (neither is simply an exception to the other).
    /// Rules on different fields (a CIDR rule and a bucket rule) are not compared: they
    /// overlap incidentally in almost every policy.
    Overlap {
        /// The earlier rule.
        with: String,
    },
    /// The rule's conditions need facts none of its classes carry (a `path` on an
    /// exec-only rule, a `host` on an open rule): it can never match.
    NeverMatches,
    /// Every exec in scope goes to user space.
    WatchAllExecs,
    /// Every open in scope goes to user space.
    WatchAllOpens,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lint {
    /// Severity.
    pub level: LintLevel,
    /// The rule concerned (`None` for policy-wide lints).
    pub rule_id: Option<String>,
    /// Where.
    #[serde(serialize_with = "ser_loc")]
    pub location: Location,
    /// What.
    pub kind: LintKind,
    /// Human explanation.
    pub message: String,
}

fn ser_loc<S: serde::Serializer>(l: &Location, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(l)
}

impl std::fmt::Display for Lint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            LintLevel::Error => "error",
            LintLevel::Warning => "warning",
        };
        write!(f, "{}: {level}: {}", self.location, self.message)
    }
}

impl Policy {
    /// Lint the policy (see the module docs).
    pub fn lint(&self) -> Vec<Lint> {
        let mut out = Vec::new();
        for (i, b) in self.rules.iter().enumerate() {
            if b.mode == Mode::Off {
                continue;
            }
            if !b.matcher.satisfiable_by(b.classes) {
                out.push(Lint {
                    level: LintLevel::Error,
                    rule_id: Some(b.id.to_string()),
                    location: b.location.clone(),
                    kind: LintKind::NeverMatches,
                    message: format!(
                        "rule `{}` can never match: its conditions need facts (argv: exec; path: open; cidr/host/port/protocol/scheme/url/s3_*: connect, send) that none of its classes carry",
                        b.id
                    ),
                });
                continue;
            }
            let earlier = self.rules[..i].iter().filter(|a| a.mode == Mode::Enforce);
            let mut unreachable = false;
            for a in earlier.clone() {
                if a.classes.covers(b.classes) && covers(&a.matcher, &b.matcher) {
                    out.push(Lint {
                        level: LintLevel::Error,
                        rule_id: Some(b.id.to_string()),
                        location: b.location.clone(),
                        kind: LintKind::Unreachable { by: a.id.to_string() },
                        message: format!(
                            "rule `{}` is unreachable: rule `{}` ({}) comes first and matches everything it matches",
                            b.id, a.id, a.location
                        ),
                    });
                    unreachable = true;
                    break;
                }
            }
            if unreachable {
                continue;
            }
            for a in earlier {
                if a.outcome.kind() != b.outcome.kind()
                    && a.classes.intersects(b.classes)
                    && a.matcher.fields() == b.matcher.fields()
                    && may_overlap(&a.matcher, &b.matcher)
                    && !(b.classes.covers(a.classes) && covers(&b.matcher, &a.matcher))
                {
                    out.push(Lint {
                        level: LintLevel::Warning,
                        rule_id: Some(b.id.to_string()),
                        location: b.location.clone(),
                        kind: LintKind::Overlap { with: a.id.to_string() },
                        message: format!(
                            "rule `{}` ({}) overlaps rule `{}` ({}) with a different outcome; the earlier rule wins where both match",
                            b.id,
                            b.outcome.kind(),
                            a.id,
                            a.outcome.kind()
                        ),
                    });
                }
            }
        }
        let plan = self.kernel_plan();
        let top = Location {
            file: self.source.clone(),
            line: 1,
            column: 1,
        };
        if plan.watch_all_execs {
            out.push(Lint {
                level: LintLevel::Warning,
                rule_id: None,
                location: top.clone(),
                kind: LintKind::WatchAllExecs,
                message: "every exec goes to user space: the exec default is not allow, or a non-allow exec rule has no `binary` condition".to_owned(),
            });
        }
        if plan.watch_all_opens {
            out.push(Lint {
                level: LintLevel::Warning,
                rule_id: None,
                location: top,
                kind: LintKind::WatchAllOpens,
                message: "every open goes to user space: the open default is not allow, or a non-allow open rule has no `path` condition".to_owned(),
            });
        }
        out
    }
}

/// Has no glob metacharacters.
fn is_literal(p: &str) -> bool {
    !p.contains(['*', '?', '[', '{', '\\'])
}

fn is_universal(p: &str, path_kind: bool) -> bool {
    p == "**" || (!path_kind && p == "*")
}

fn covers_opt<T>(a: &Option<T>, b: &Option<T>, f: impl Fn(&T, &T) -> bool) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => f(a, b),
    }
}

fn overlap_opt<T>(a: &Option<T>, b: &Option<T>, f: impl Fn(&T, &T) -> bool) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => f(a, b),
        _ => true,
    }
}

fn globs_cover(path_kind: bool) -> impl Fn(&GlobList, &GlobList) -> bool {
    move |a, b| {
        a.patterns.iter().any(|p| is_universal(p, path_kind))
            || b.patterns
                .iter()
                .all(|p| a.patterns.contains(p) || (is_literal(p) && a.is_match(p)))
    }
}

fn globs_overlap(a: &GlobList, b: &GlobList) -> bool {
    let lit_hit =
        |x: &GlobList, y: &GlobList| y.patterns.iter().any(|p| is_literal(p) && x.is_match(p));
    let all_literal = |x: &GlobList| x.patterns.iter().all(|p| is_literal(p));
    if all_literal(a) || all_literal(b) {
        // A literal side decides exactly.
        let (lit, other) = if all_literal(b) { (b, a) } else { (a, b) };
        return lit_hit(other, lit);
    }
    true
}

fn binaries_cover(a: &BinaryGlobs, b: &BinaryGlobs) -> bool {
    a.patterns.iter().any(|p| p == "*")
        || b.patterns
            .iter()
            .all(|p| a.patterns.contains(p) || (is_literal(p) && a.is_match_path(p)))
}

fn binaries_overlap(a: &BinaryGlobs, b: &BinaryGlobs) -> bool {
    let all_literal = |x: &BinaryGlobs| x.patterns.iter().all(|p| is_literal(p));
    if all_literal(b) {
        return b
            .patterns
            .iter()
            .any(|p| a.is_match_path(p) || sole_names_overlap(a, p));
    }
    if all_literal(a) {
        return a
            .patterns
            .iter()
            .any(|p| b.is_match_path(p) || sole_names_overlap(b, p));
    }
    true
}

/// A literal path `/x/aws` and a literal name `aws` can both match.
fn sole_names_overlap(x: &BinaryGlobs, p: &str) -> bool {
    !p.contains('/') && x.patterns.iter().any(|q| q.contains('/'))
}

fn subset<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    b.iter().all(|x| a.contains(x))
}

fn intersects<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    b.iter().any(|x| a.contains(x))
}

/// `a` matches every action `b` matches (conservative: `false` when unsure).
pub(crate) fn covers(a: &Matcher, b: &Matcher) -> bool {
    covers_opt(&a.binary, &b.binary, binaries_cover)
        && a.argv.iter().all(|x| {
            b.argv
                .iter()
                .any(|y| x.position == y.position && x.pattern.source() == y.pattern.source())
        })
        && covers_opt(&a.path, &b.path, globs_cover(true))
        && covers_opt(&a.cidr, &b.cidr, |a, b| {
            b.iter().all(|n| a.iter().any(|m| m.contains(n)))
        })
        && covers_opt(&a.host, &b.host, globs_cover(false))
        && covers_opt(&a.port, &b.port, |a, b| {
            b.iter()
                .all(|&(lo, hi)| a.iter().any(|&(l, h)| l <= lo && hi <= h))
        })
        && covers_opt(&a.protocol, &b.protocol, |a, b| subset(a, b))
        && covers_opt(&a.scheme, &b.scheme, |a, b| subset(a, b))
        && covers_opt(&a.url, &b.url, globs_cover(false))
        && covers_opt(&a.s3_bucket, &b.s3_bucket, globs_cover(false))
        && covers_opt(&a.s3_key, &b.s3_key, globs_cover(true))
        && covers_opt(&a.uid, &b.uid, |a, b| subset(a, b))
        && covers_opt(&a.user, &b.user, globs_cover(false))
        && covers_opt(&a.cgroup, &b.cgroup, globs_cover(true))
        && covers_opt(&a.unit, &b.unit, globs_cover(false))
        && covers_opt(&a.parent, &b.parent, binaries_cover)
}

/// Some action might match both (conservative: `true` when unsure).
pub(crate) fn may_overlap(a: &Matcher, b: &Matcher) -> bool {
    overlap_opt(&a.binary, &b.binary, binaries_overlap)
        && overlap_opt(&a.path, &b.path, globs_overlap)
        && overlap_opt(&a.cidr, &b.cidr, |a, b| {
            a.iter()
                .any(|m| b.iter().any(|n| m.contains(n) || n.contains(m)))
        })
        && overlap_opt(&a.host, &b.host, globs_overlap)
        && overlap_opt(&a.port, &b.port, |a, b| {
            a.iter()
                .any(|&(l, h)| b.iter().any(|&(lo, hi)| l <= hi && lo <= h))
        })
        && overlap_opt(&a.protocol, &b.protocol, |a, b| intersects(a, b))
        && overlap_opt(&a.scheme, &b.scheme, |a, b| intersects(a, b))
        && overlap_opt(&a.url, &b.url, globs_overlap)
        && overlap_opt(&a.s3_bucket, &b.s3_bucket, globs_overlap)
        && overlap_opt(&a.s3_key, &b.s3_key, globs_overlap)
        && overlap_opt(&a.uid, &b.uid, |a, b| intersects(a, b))
        && overlap_opt(&a.user, &b.user, globs_overlap)
        && overlap_opt(&a.cgroup, &b.cgroup, globs_overlap)
        && overlap_opt(&a.unit, &b.unit, globs_overlap)
}
