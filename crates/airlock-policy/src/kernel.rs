//! Compiling a policy into what the kernel gates need (DESIGN.md §4).
//!
//! # The invariant
//! Anything the kernel lets through without asking user space must be something
//! [`Policy::evaluate`] would `Allow`, with no shadow hit, for *every* value of the
//! facts the kernel does not see (actor, argv, host name, port, URL, ...). The plan is
//! therefore computed as if every non-`off` rule were enforced (so shadow rules still
//! reach user space and can log "would have ..."), and:
//!
//! * **exec** — a binary is watched when some non-allow rule that applies to `exec`
//!   names it in `binary`. A non-allow exec rule *without* a `binary` condition (it
//!   matches on argv, user, parent, ...) or a non-allow exec default can match any
//!   binary, so it sets [`KernelPlan::watch_all_execs`].
//! * **open** — the same with `path` globs ([`KernelPlan::credential_globs`]) and
//!   [`KernelPlan::watch_all_opens`].
//! * **connect / send** — the kernel only sees the peer IP, and a socket whose connect
//!   it passed is not inspected on send, so an IP is allowed only if every connect *and*
//!   send to it is allowed. Walking the rules in order with two IP sets, *decided* `G`
//!   and *tainted* `T`: a non-allow rule taints its IP footprint minus `G` (its `cidr`
//!   list, or every address if it has none — a host-name rule can match any IP, since
//!   the kernel cannot know the name); an allow rule whose only condition is `cidr` and
//!   that applies to both connect and send adds its footprint minus `T` to `G`; other
//!   allow rules add nothing. At the end the allowed set is `G`, or everything outside
//!   `T` when both the connect and send defaults are allow. Shadow-mode allow rules add
//!   nothing (evaluation goes on past them).
//!
//! The agent adds loopback and the hub to the LPM trie itself (DESIGN.md §4); those are
//! outside this invariant. The agent must pass resolved executable paths as
//! [`Action::binary`] (the file the inode belongs to) and canonical IPs.

use std::net::{Ipv4Addr, Ipv6Addr};

use globset::{GlobSet, GlobSetBuilder};
use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use serde::{Deserialize, Serialize};

use crate::action::{Action, ActionClass};
use crate::decision::{Mode, OutcomeKind};
use crate::matcher::{GlobKind, basename, build_glob, canonical};
use crate::policy::Policy;

/// A binary to watch, for the agent to resolve to (dev, inode).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "by", content = "glob")]
pub enum BinarySelector {
    /// A glob on the file name (`aws`, `pg_dump*`): resolve over `$PATH` and known
    /// install dirs, and re-resolve when they change.
    Name(String),
    /// A glob on the full path (`/usr/bin/rclone`, `/opt/*/bin/aws`).
    Path(String),
}

/// What the kernel maps must hold for a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelPlan {
    /// Every exec in scope must go to user space (a non-allow exec rule has no
    /// `binary` condition, or the exec default is not allow).
    pub watch_all_execs: bool,
    /// Binaries whose exec goes to user space.
    pub watched_binaries: Vec<BinarySelector>,
    /// Every open in scope must go to user space (not practical; `policy check` warns).
    pub watch_all_opens: bool,
    /// Path globs of files whose open goes to user space.
    pub credential_globs: Vec<String>,
    /// Destinations the kernel may let through (LPM trie), minimal and sorted.
    pub allowed_cidrs: Vec<IpNet>,
}

impl Policy {
    /// Compile the kernel plan of this policy (see the module docs for the invariant).
    pub fn kernel_plan(&self) -> KernelPlan {
        if self.mode == Mode::Off {
            // The policy is off: nothing is held, everything passes.
            return KernelPlan {
                allowed_cidrs: IpSet::full().to_cidrs(),
                ..KernelPlan::default()
            };
        }
        let mut plan = KernelPlan::default();
        let mut decided = IpSet::default();
        let mut tainted = IpSet::default();
        let net_classes = [ActionClass::Connect, ActionClass::Send];
        for rule in &self.rules {
            if rule.mode == Mode::Off {
                continue;
            }
            let allow = rule.outcome.kind() == OutcomeKind::Allow;
            let m = &rule.matcher;
            if !allow && rule.applies_to(ActionClass::Exec) {
                match &m.binary {
                    Some(b) => plan.watched_binaries.extend(b.patterns.iter().map(|p| {
                        if p.contains('/') {
                            BinarySelector::Path(p.clone())
                        } else {
                            BinarySelector::Name(p.clone())
                        }
                    })),
                    None => plan.watch_all_execs = true,
                }
            }
            if !allow && rule.applies_to(ActionClass::Open) {
                match &m.path {
                    Some(p) => plan.credential_globs.extend(p.patterns.iter().cloned()),
                    None => plan.watch_all_opens = true,
                }
            }
            let footprint = match &m.cidr {
                Some(nets) => IpSet::from_nets(nets),
                None => IpSet::full(),
            };
            if !allow && net_classes.iter().any(|&c| rule.applies_to(c)) {
                tainted = tainted.union(&footprint.difference(&decided));
            } else if allow
                && rule.mode == Mode::Enforce
                && net_classes.iter().all(|&c| rule.applies_to(c))
                && m.only_cidr()
            {
                decided = decided.union(&footprint.difference(&tainted));
            }
        }
        let is_allow = |c| self.default_outcome(c).kind() == OutcomeKind::Allow;
        if !is_allow(ActionClass::Exec) {
            plan.watch_all_execs = true;
        }
        if !is_allow(ActionClass::Open) {
            plan.watch_all_opens = true;
        }
        let allowed = if is_allow(ActionClass::Connect) && is_allow(ActionClass::Send) {
            IpSet::full().difference(&tainted)
        } else {
            decided
        };
        plan.allowed_cidrs = allowed.to_cidrs();
        plan.watched_binaries.sort();
        plan.watched_binaries.dedup();
        plan.credential_globs.sort();
        plan.credential_globs.dedup();
        plan
    }
}

impl KernelPlan {
    /// A model of the kernel gates: would they let `action` through without asking
    /// user space? Used by tests and by the agent's self-checks; compiles globs on each
    /// call, so it is not for the hot path. Unknown facts count as "held".
    pub fn passes(&self, action: &Action) -> bool {
        match action.class {
            ActionClass::Exec => {
                if self.watch_all_execs {
                    return false;
                }
                let Some(bin) = action.binary.as_deref() else {
                    return false;
                };
                !self.watched_binaries.iter().any(|sel| match sel {
                    BinarySelector::Name(g) => glob_matches(g, GlobKind::Text, basename(bin)),
                    BinarySelector::Path(g) => glob_matches(g, GlobKind::Path, bin),
                })
            }
            ActionClass::Open => {
                if self.watch_all_opens {
                    return false;
                }
                let Some(path) = action.path.as_deref() else {
                    return false;
                };
                !self
                    .credential_globs
                    .iter()
                    .any(|g| glob_matches(g, GlobKind::Path, path))
            }
            ActionClass::Connect | ActionClass::Send => {
                let Some(ip) = action.destination.as_ref().and_then(|d| d.ip) else {
                    return false;
                };
                let ip = canonical(ip);
                self.allowed_cidrs.iter().any(|n| n.contains(&ip))
            }
        }
    }

    /// The plan to hold *during* a switch from `self` to `next`: watch what either
    /// watches, allow only what both allow. Write it to the maps, swap the user-space
    /// policy, then write `next` — no action slips through the kernel under rules
    /// that never allowed it.
    pub fn strictest(&self, next: &KernelPlan) -> KernelPlan {
        let mut watched: Vec<_> = self
            .watched_binaries
            .iter()
            .chain(&next.watched_binaries)
            .cloned()
            .collect();
        watched.sort();
        watched.dedup();
        let mut creds: Vec<_> = self
            .credential_globs
            .iter()
            .chain(&next.credential_globs)
            .cloned()
            .collect();
        creds.sort();
        creds.dedup();
        KernelPlan {
            watch_all_execs: self.watch_all_execs || next.watch_all_execs,
            watched_binaries: watched,
            watch_all_opens: self.watch_all_opens || next.watch_all_opens,
            credential_globs: creds,
            allowed_cidrs: IpSet::from_nets(&self.allowed_cidrs)
                .intersection(&IpSet::from_nets(&next.allowed_cidrs))
                .to_cidrs(),
        }
    }

    /// Compile the binary selectors into (name set, path set), for the agent's resolver.
    ///
    /// # Errors
    /// A glob that does not compile (cannot happen for plans made by
    /// [`Policy::kernel_plan`]).
    pub fn binary_matchers(&self) -> Result<(GlobSet, GlobSet), globset::Error> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for sel in &self.watched_binaries {
            match sel {
                BinarySelector::Name(g) => names.add(globset::Glob::new(g)?),
                BinarySelector::Path(g) => paths.add(
                    globset::GlobBuilder::new(g)
                        .literal_separator(true)
                        .build()?,
                ),
            };
        }
        Ok((names.build()?, paths.build()?))
    }
}

/// A glob that fails to build counts as matching: the conservative answer for a gate.
fn glob_matches(glob: &str, kind: GlobKind, text: &str) -> bool {
    build_glob(glob, kind).map_or(true, |g| g.compile_matcher().is_match(text))
}

/// Sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RangeSet(Vec<(u128, u128)>);

impl RangeSet {
    fn normalize(mut v: Vec<(u128, u128)>) -> Self {
        v.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        Self(out)
    }

    fn union(&self, other: &Self) -> Self {
        Self::normalize(self.0.iter().chain(&other.0).copied().collect())
    }

    fn intersection(&self, other: &Self) -> Self {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            for &(c, d) in &other.0 {
                let (lo, hi) = (a.max(c), b.min(d));
                if lo <= hi {
                    out.push((lo, hi));
                }
            }
        }
        Self::normalize(out)
    }

    fn difference(&self, other: &Self) -> Self {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            let mut cur = a;
            let mut done = false;
            for &(c, d) in &other.0 {
                if d < cur || c > b {
                    continue;
                }
                if c > cur {
                    out.push((cur, c - 1));
                }
                if d >= b {
                    done = true;
                    break;
                }
                cur = d + 1;
            }
            if !done {
                out.push((cur, b));
            }
        }
        Self::normalize(out)
    }
}

/// A set of IPv4 and IPv6 addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IpSet {
    v4: RangeSet,
    v6: RangeSet,
}

impl IpSet {
    pub(crate) fn full() -> Self {
        Self {
            v4: RangeSet(vec![(0, u128::from(u32::MAX))]),
            v6: RangeSet(vec![(0, u128::MAX)]),
        }
    }

    pub(crate) fn from_nets(nets: &[IpNet]) -> Self {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for n in nets {
            match n {
                IpNet::V4(n) => v4.push((
                    u128::from(u32::from(n.network())),
                    u128::from(u32::from(n.broadcast())),
                )),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self {
            v4: RangeSet::normalize(v4),
            v6: RangeSet::normalize(v6),
        }
    }

    fn union(&self, o: &Self) -> Self {
        Self {
            v4: self.v4.union(&o.v4),
            v6: self.v6.union(&o.v6),
        }
    }

    fn intersection(&self, o: &Self) -> Self {
        Self {
            v4: self.v4.intersection(&o.v4),
            v6: self.v6.intersection(&o.v6),
        }
    }

    pub(crate) fn difference(&self, o: &Self) -> Self {
        Self {
            v4: self.v4.difference(&o.v4),
            v6: self.v6.difference(&o.v6),
        }
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, ip: std::net::IpAddr) -> bool {
        let (set, x) = match canonical(ip) {
            std::net::IpAddr::V4(a) => (&self.v4, u128::from(u32::from(a))),
            std::net::IpAddr::V6(a) => (&self.v6, u128::from(a)),
        };
        set.0.iter().any(|&(lo, hi)| lo <= x && x <= hi)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.v4.0.is_empty() && self.v6.0.is_empty()
    }

    fn to_cidrs(&self) -> Vec<IpNet> {
        let mut out = Vec::new();
        for &(lo, hi) in &self.v4.0 {
            // v4 ranges were built from u32 values, so they fit.
            let (lo, hi) = (
                u32::try_from(lo).unwrap_or(u32::MAX),
                u32::try_from(hi).unwrap_or(u32::MAX),
            );
            out.extend(Ipv4Subnets::new(Ipv4Addr::from(lo), Ipv4Addr::from(hi), 0).map(IpNet::V4));
        }
        for &(lo, hi) in &self.v6.0 {
            out.extend(Ipv6Subnets::new(Ipv6Addr::from(lo), Ipv6Addr::from(hi), 0).map(IpNet::V6));
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests panic on failure")]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> IpSet {
        IpSet::from_nets(&s.iter().map(|x| x.parse().unwrap()).collect::<Vec<_>>())
    }

    #[test]
    fn range_set_algebra() {
        let a = nets(&["10.0.0.0/8"]);
        let b = nets(&["10.1.0.0/16"]);
        let d = a.difference(&b);
        assert!(d.contains("10.0.255.255".parse().unwrap()));
        assert!(!d.contains("10.1.2.3".parse().unwrap()));
        assert!(d.contains("10.2.0.0".parse().unwrap()));
        assert_eq!(d.union(&b), a);
        assert_eq!(a.intersection(&b), b);
        assert!(b.difference(&a).is_empty());
        assert_eq!(IpSet::full().difference(&IpSet::full()), IpSet::default());
        let cidrs = d.to_cidrs();
        assert_eq!(IpSet::from_nets(&cidrs), d);
        assert_eq!(IpSet::full().to_cidrs().len(), 2, "0.0.0.0/0 and ::/0");
    }
}
