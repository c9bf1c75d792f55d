//! The policy inside the agent: which binaries the kernel watches, and what happens to each
//! action the kernel holds (allow or deny at once, or ask the hub with the rule's
//! requirements).
//!
//! Reloads are validated completely before anything changes; the kernel's watch set goes
//! through the union of old and new while the policy is swapped, so no exec slips through
//! unwatched during the switch, and every action is judged by exactly one policy version
//! (the coordinator evaluates and reloads on the same task).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use airlock_policy::{
    AskSpec, BinarySelector, Decision, GrantScope, KernelPlan, Policy, PolicyError, Verdict,
};
use airlock_proto::v1 as proto;

use crate::resolve::{self, ResolveError, ResolvedBinary};

#[derive(Debug, thiserror::Error)]
pub enum PolicyGateError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(
        "policy {path} would hold every exec (rule `{rule}` has no `binary` condition, or the exec default is not allow); the exec gate needs the binaries named"
    )]
    WatchAllExecs { path: PathBuf, rule: String },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("bad binary glob `{glob}` in policy {path}: {reason}")]
    Glob {
        path: PathBuf,
        glob: String,
        reason: String,
    },
}

/// A loaded, validated policy and where it came from.
pub struct PolicyGate {
    pub path: PathBuf,
    pub policy: Policy,
    /// Binaries the kernel must watch for this policy, resolved to inodes.
    pub watched: Vec<ResolvedBinary>,
}

impl PolicyGate {
    /// Loads `path`, checks the kernel can enforce it, and resolves its binaries.
    ///
    /// # Errors
    /// [`PolicyGateError`] naming the file (with line and column for syntax errors).
    pub fn load(path: &Path, search_path: &str) -> Result<Self, PolicyGateError> {
        let policy = Policy::load(path)?;
        let plan = policy.kernel_plan();
        if plan.watch_all_execs {
            let rule = first_unscoped_exec_rule(&policy).unwrap_or_else(|| "(default)".to_owned());
            return Err(PolicyGateError::WatchAllExecs {
                path: path.to_owned(),
                rule,
            });
        }
        let watched = resolve_plan(path, &plan, search_path)?;
        Ok(Self {
            path: path.to_owned(),
            policy,
            watched,
        })
    }

    pub fn evaluate(&self, action: &airlock_policy::Action) -> Decision {
        self.policy.evaluate(action)
    }

    pub fn hash(&self) -> &str {
        self.policy.hash()
    }
}

fn first_unscoped_exec_rule(policy: &Policy) -> Option<String> {
    // The lint names the exact rule; reuse it rather than re-deriving the condition.
    policy
        .lint()
        .into_iter()
        .find(|l| format!("{l:?}").contains("WatchAllExecs"))
        .map(|l| l.to_string())
}

/// Resolves the plan's binary selectors to the files on this host. Selectors that match
/// nothing are not an error (a policy names tools a host may not have); they are logged.
///
/// # Errors
/// [`PolicyGateError::Glob`] for a selector that is not a valid filesystem glob.
pub fn resolve_plan(
    policy_path: &Path,
    plan: &KernelPlan,
    search_path: &str,
) -> Result<Vec<ResolvedBinary>, PolicyGateError> {
    let mut paths = BTreeSet::new();
    for selector in &plan.watched_binaries {
        let patterns: Vec<String> = match selector {
            BinarySelector::Name(name) => std::env::split_paths(search_path)
                .map(|dir| {
                    format!(
                        "{}/{name}",
                        glob::Pattern::escape(&dir.display().to_string())
                    )
                })
                .collect(),
            BinarySelector::Path(path) => vec![path.clone()],
        };
        let mut found = false;
        for pattern in patterns {
            let matches = glob::glob(&pattern).map_err(|e| PolicyGateError::Glob {
                path: policy_path.to_owned(),
                glob: pattern.clone(),
                reason: e.to_string(),
            })?;
            for candidate in matches.flatten() {
                if resolve::is_executable_file(&candidate) {
                    found = true;
                    paths.insert(std::fs::canonicalize(&candidate).unwrap_or(candidate));
                }
            }
        }
        if !found {
            tracing::debug!(?selector, "policy names a binary this host does not have");
        }
    }
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let mut resolved = resolve::resolve_all(&names, search_path)?;
    // Hard links and symlinks resolve to the same file; watch each inode once.
    resolved.sort_by_key(|r| r.key);
    resolved.dedup_by_key(|r| r.key);
    Ok(resolved)
}

/// The hub-side requirements for a rule's `ask`.
pub fn requirements(spec: &AskSpec) -> proto::Requirements {
    let (max_grant, max_grant_seconds) = match spec.grant {
        GrantScope::Once => (proto::GrantScope::Once, 0),
        GrantScope::Duration { max } => (proto::GrantScope::Duration, secs(max)),
    };
    proto::Requirements {
        ttl_seconds: secs(spec.ttl).max(1),
        on_timeout: match spec.on_timeout {
            Verdict::Allow => proto::Verdict::Allow,
            Verdict::Deny => proto::Verdict::Deny,
        } as i32,
        groups: spec
            .approvers
            .iter()
            .map(|a| proto::GroupQuorum {
                group: a.group.clone(),
                min_approvals: a.quorum,
            })
            .collect(),
        max_grant: max_grant as i32,
        max_grant_seconds,
        reason_required_for_approve: spec.reason_required_for_approve,
        // One deny ends the request (the hub's default; the policy has no knob for it yet).
        min_denials: 0,
    }
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// All-allow defaults; the rules under test follow.
    const HEADER: &str = "version = 1\n[defaults]\nexec = \"allow\"\nconnect = \"allow\"\nsend = \"allow\"\nopen = \"allow\"\n[defaults.ask]\napprovers = [\"oncall\"]\n[groups.oncall]\n";

    fn policy(dir: &Path, rules: &str) -> PathBuf {
        let path = dir.join("policy.toml");
        std::fs::write(&path, format!("{HEADER}{rules}")).expect("write policy");
        path
    }

    #[test]
    fn resolves_name_and_path_globs_and_skips_missing_tools() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let dump = executable(&bin, "pg_dump");
        let dumpall = executable(&bin, "pg_dumpall");
        std::fs::write(bin.join("pg_dump.txt"), "not executable").expect("write");
        let opt = executable(dir.path(), "rclone");
        let text = format!(
            "[[rule]]\nid = \"dumps\"\non = [\"exec\"]\nbinary = [\"pg_dump*\", \"{}\", \"not-installed\"]\noutcome = \"deny\"\n",
            opt.display()
        );
        let path = policy(dir.path(), &text);
        let gate = PolicyGate::load(&path, bin.to_str().expect("utf8")).expect("loads");
        let mut got: Vec<PathBuf> = gate.watched.iter().map(|w| w.path.clone()).collect();
        got.sort();
        let mut want = vec![dump, dumpall, opt];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn a_policy_that_would_hold_every_exec_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = policy(
            dir.path(),
            "[[rule]]\nid = \"root-execs\"\non = [\"exec\"]\nuser = [\"root\"]\noutcome = \"deny\"\n",
        );
        let err = PolicyGate::load(&path, "/usr/bin")
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("would hold every exec"), "{err}");
    }

    #[test]
    fn syntax_errors_carry_file_line_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = policy(
            dir.path(),
            "[[rule]]\nid = \"x\"\non = [\"connect\"]\ncidr = [\"10.0.0.0/33\"]\noutcome = \"deny\"\n",
        );
        let err = PolicyGate::load(&path, "/usr/bin")
            .err()
            .expect("refused")
            .to_string();
        let line = HEADER.lines().count() + 4;
        assert!(
            err.contains(&format!("{}:{line}:", path.display())),
            "{err}"
        );
    }

    #[test]
    fn ask_maps_onto_hub_requirements() {
        let spec = AskSpec {
            approvers: vec![airlock_policy::ApproverRequirement {
                group: "sec".into(),
                quorum: 2,
            }],
            ttl: Duration::from_secs(90),
            on_timeout: Verdict::Deny,
            grant: GrantScope::Duration {
                max: Duration::from_secs(3600),
            },
            severity: airlock_policy::Severity::High,
            reason: Some("export".into()),
            reason_required_for_approve: true,
        };
        let r = requirements(&spec);
        assert_eq!(r.ttl_seconds, 90);
        assert_eq!(r.on_timeout, proto::Verdict::Deny as i32);
        assert_eq!(
            r.groups,
            [proto::GroupQuorum {
                group: "sec".into(),
                min_approvals: 2
            }]
        );
        assert_eq!(
            (r.max_grant, r.max_grant_seconds),
            (proto::GrantScope::Duration as i32, 3600)
        );
        assert!(r.reason_required_for_approve);
    }
}
