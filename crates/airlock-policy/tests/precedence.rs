//! Table-driven tests of precedence (first match wins), defaults, and modes.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

mod common;

use airlock_policy::{GrantScope, Mode, Outcome, OutcomeKind, Policy, Severity, Verdict};
use common::{HEADER, action, policy};

const EXEC_AWS: &str = r#"class = "exec"
binary = "/usr/bin/aws"
argv = ["aws", "s3", "cp"]
uid = 1000"#;

/// (rules, expected outcome, expected rule id or None for the default, expected shadow hits)
const TABLE: &[(&str, OutcomeKind, Option<&str>, &[&str])] = &[
    // no rule: the class default
    ("", OutcomeKind::Allow, None, &[]),
    // first match wins, in file order, whatever the outcomes
    (
        r#"
[[rule]]
id = "a"
binary = ["aws"]
outcome = "allow"
[[rule]]
id = "b"
binary = ["aws"]
outcome = "deny"
"#,
        OutcomeKind::Allow,
        Some("a"),
        &[],
    ),
    (
        r#"
[[rule]]
id = "b"
binary = ["aws"]
outcome = "deny"
[[rule]]
id = "a"
binary = ["aws"]
outcome = "allow"
"#,
        OutcomeKind::Deny,
        Some("b"),
        &[],
    ),
    // a non-matching earlier rule is skipped
    (
        r#"
[[rule]]
id = "root-only"
binary = ["aws"]
uid = [0]
outcome = "allow"
[[rule]]
id = "ask-aws"
binary = ["aws"]
outcome = "ask"
"#,
        OutcomeKind::Ask,
        Some("ask-aws"),
        &[],
    ),
    // a rule for another class is skipped
    (
        r#"
[[rule]]
id = "open-only"
on = ["open"]
outcome = "deny"
[[rule]]
id = "exec"
on = ["exec"]
outcome = "ask"
"#,
        OutcomeKind::Ask,
        Some("exec"),
        &[],
    ),
    // off rules are ignored
    (
        r#"
[[rule]]
id = "off"
mode = "off"
binary = ["aws"]
outcome = "deny"
"#,
        OutcomeKind::Allow,
        None,
        &[],
    ),
    // shadow rules are reported and evaluation continues
    (
        r#"
[[rule]]
id = "shadow-deny"
mode = "shadow"
binary = ["aws"]
outcome = "deny"
[[rule]]
id = "ask"
binary = ["aws"]
outcome = "ask"
"#,
        OutcomeKind::Ask,
        Some("ask"),
        &["shadow-deny"],
    ),
    (
        r#"
[[rule]]
id = "s1"
mode = "shadow"
outcome = "deny"
[[rule]]
id = "s2"
mode = "shadow"
binary = ["aws"]
outcome = "ask"
"#,
        OutcomeKind::Allow,
        None,
        &["s1", "s2"],
    ),
    // shadow rules after the deciding rule are not reached
    (
        r#"
[[rule]]
id = "allow"
outcome = "allow"
[[rule]]
id = "late-shadow"
mode = "shadow"
outcome = "deny"
"#,
        OutcomeKind::Allow,
        Some("allow"),
        &[],
    ),
];

#[test]
fn precedence_table() {
    for (i, (rules, outcome, rule, shadow)) in TABLE.iter().enumerate() {
        let d = policy(rules).evaluate(&action(EXEC_AWS));
        assert_eq!(d.outcome.kind(), *outcome, "row {i}: {d:?}");
        assert_eq!(d.rule_id.as_deref(), *rule, "row {i}");
        let hits: Vec<&str> = d.shadow.iter().map(|h| &*h.rule_id).collect();
        assert_eq!(hits, *shadow, "row {i}");
        assert_eq!(d.mode, Mode::Enforce);
        assert_eq!(
            d.effective, d.outcome,
            "row {i}: enforce mode applies the outcome"
        );
    }
}

#[test]
fn priority_field_is_rejected() {
    let text = format!("{HEADER}\n[[rule]]\nid = \"a\"\noutcome = \"deny\"\npriority = 10\n");
    let e = Policy::from_str("p.toml", &text).unwrap_err().to_string();
    assert!(e.contains("unknown field `priority`"), "{e}");
}

#[test]
fn defaults_per_class() {
    let text = r#"
version = 1
[defaults]
exec = "allow"
connect = "ask"
send = "deny"
open = "allow"
severity = "high"
reason = "no rule"
[defaults.ask]
approvers = [{ group = "oncall", quorum = 2 }]
ttl = "90s"
on_timeout = "allow"
grant = "1h"
reason_required = true
[groups.oncall]
"#;
    let p = Policy::from_str("p.toml", text).unwrap();
    let cases = [
        ("class = \"exec\"", OutcomeKind::Allow),
        ("class = \"connect\"", OutcomeKind::Ask),
        ("class = \"send\"", OutcomeKind::Deny),
        ("class = \"open\"", OutcomeKind::Allow),
    ];
    for (a, want) in cases {
        let d = p.evaluate(&action(a));
        assert_eq!(d.outcome.kind(), want, "{a}");
        assert_eq!(d.rule_id, None);
        assert_eq!(d.severity, Severity::High);
        assert_eq!(d.reason.as_deref(), Some("no rule"));
    }
    let Outcome::Ask(ask) = p.evaluate(&action("class = \"connect\"")).outcome else {
        panic!("not ask")
    };
    assert_eq!(ask.approvers.len(), 1);
    assert_eq!(
        (ask.approvers[0].group.as_str(), ask.approvers[0].quorum),
        ("oncall", 2)
    );
    assert_eq!(ask.ttl.as_secs(), 90);
    assert_eq!(ask.on_timeout, Verdict::Allow);
    assert_eq!(
        ask.grant,
        GrantScope::Duration {
            max: std::time::Duration::from_secs(3600)
        }
    );
    assert!(ask.reason_required_for_approve);
}

#[test]
fn rule_ask_overrides_defaults_field_by_field() {
    let p = policy(
        r#"
[[rule]]
id = "creds"
outcome = "ask"
severity = "critical"
reason = "Credential file"
ask = { approvers = ["secops", { group = "oncall", quorum = 3 }], quorum = 2, ttl = "10m" }
"#,
    );
    let d = p.evaluate(&action("class = \"open\"\npath = \"/x\""));
    let Outcome::Ask(ask) = &d.outcome else {
        panic!("not ask: {d:?}")
    };
    let groups: Vec<(&str, u32)> = ask
        .approvers
        .iter()
        .map(|r| (r.group.as_str(), r.quorum))
        .collect();
    assert_eq!(groups, [("secops", 2), ("oncall", 3)]);
    assert_eq!(ask.ttl.as_secs(), 600);
    assert_eq!(ask.on_timeout, Verdict::Deny, "default on_timeout is deny");
    assert_eq!(ask.grant, GrantScope::Once, "default grant is once");
    assert_eq!(ask.severity, Severity::Critical);
    assert_eq!(ask.reason.as_deref(), Some("Credential file"));
    assert_eq!(d.severity, Severity::Critical);
}

#[test]
fn global_modes() {
    let rules = "[[rule]]\nid = \"deny-aws\"\nbinary = [\"aws\"]\noutcome = \"deny\"\n";
    let base = format!("{HEADER}\n{rules}");
    for (mode, want_mode, want_outcome, want_effective) in [
        (
            "enforce",
            Mode::Enforce,
            OutcomeKind::Deny,
            OutcomeKind::Deny,
        ),
        (
            "shadow",
            Mode::Shadow,
            OutcomeKind::Deny,
            OutcomeKind::Allow,
        ),
        ("off", Mode::Off, OutcomeKind::Allow, OutcomeKind::Allow),
    ] {
        let text = base.replacen("version = 1", &format!("version = 1\nmode = \"{mode}\""), 1);
        let p = Policy::from_str("p.toml", &text).unwrap();
        let d = p.evaluate(&action(EXEC_AWS));
        assert_eq!(d.mode, want_mode, "{mode}");
        assert_eq!(d.outcome.kind(), want_outcome, "{mode}");
        assert_eq!(d.effective.kind(), want_effective, "{mode}");
    }
}

#[test]
fn decisions_carry_the_policy_identity() {
    let a = policy("");
    let b = policy("# a comment changes the hash\n");
    let (da, db) = (a.evaluate(&action(EXEC_AWS)), b.evaluate(&action(EXEC_AWS)));
    assert_eq!(&*da.policy_hash, a.hash());
    assert_eq!(a.hash().len(), 64);
    assert_ne!(da.policy_hash, db.policy_hash);
}

#[test]
fn fingerprints_bind_the_exact_action() {
    let a = action(EXEC_AWS);
    let mut b = a.clone();
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.fingerprint().len(), 64);
    b.argv.push("--recursive".to_owned());
    assert_ne!(a.fingerprint(), b.fingerprint());
}
