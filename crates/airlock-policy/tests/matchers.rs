//! Table-driven tests: one rule with one condition, actions that must and must not match.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

mod common;

use airlock_policy::OutcomeKind;
use common::{action, policy};

/// (condition TOML, action TOML, matches?)
const TABLE: &[(&str, &str, bool)] = &[
    // on = classes
    (r#"on = ["exec"]"#, r#"class = "exec""#, true),
    (r#"on = ["exec"]"#, r#"class = "open""#, false),
    (r#"on = ["connect", "send"]"#, r#"class = "send""#, true),
    // binary: name vs path vs glob
    (
        r#"binary = ["aws"]"#,
        r#"class = "exec"
binary = "/usr/local/bin/aws""#,
        true,
    ),
    (
        r#"binary = ["aws"]"#,
        r#"class = "exec"
binary = "/usr/local/bin/aws2""#,
        false,
    ),
    (r#"binary = ["aws"]"#, r#"class = "exec""#, false),
    (
        r#"binary = ["/usr/bin/aws"]"#,
        r#"class = "exec"
binary = "/usr/local/bin/aws""#,
        false,
    ),
    (
        r#"binary = ["/usr/*/aws"]"#,
        r#"class = "exec"
binary = "/usr/local/bin/aws""#,
        false,
    ),
    (
        r#"binary = ["/usr/**/aws"]"#,
        r#"class = "exec"
binary = "/usr/local/bin/aws""#,
        true,
    ),
    (
        r#"binary = ["pg_dump*"]"#,
        r#"class = "exec"
binary = "/usr/lib/postgresql/16/bin/pg_dumpall""#,
        true,
    ),
    // argv at a position, anywhere, regex
    (
        r#"argv = [{ position = 1, glob = "s3" }]"#,
        r#"class = "exec"
argv = ["aws", "s3", "cp"]"#,
        true,
    ),
    (
        r#"argv = [{ position = 2, glob = "s3" }]"#,
        r#"class = "exec"
argv = ["aws", "s3", "cp"]"#,
        false,
    ),
    (
        r#"argv = [{ position = 9, glob = "*" }]"#,
        r#"class = "exec"
argv = ["aws"]"#,
        false,
    ),
    (
        r#"argv = [{ glob = "s3://acme-*" }]"#,
        r#"class = "exec"
argv = ["aws", "s3", "cp", "f", "s3://acme-x/key"]"#,
        true,
    ),
    (
        r#"argv = [{ glob = "s3://acme-*" }]"#,
        r#"class = "exec"
argv = ["aws", "s3", "cp", "f", "s3://evil/key"]"#,
        false,
    ),
    (
        r#"argv = [{ regex = "^--(upload|data)" }]"#,
        r#"class = "exec"
argv = ["curl", "--upload-file", "x"]"#,
        true,
    ),
    (
        r#"argv = [{ regex = "^--(upload|data)" }]"#,
        r#"class = "exec"
argv = ["curl", "-o", "--upload"]"#,
        true,
    ),
    (
        r#"argv = [{ regex = "^--(upload|data)$" }]"#,
        r#"class = "exec"
argv = ["curl", "--uploads"]"#,
        false,
    ),
    (
        r#"argv = [{ position = 1, glob = "s3" }, { glob = "cp" }]"#,
        r#"class = "exec"
argv = ["aws", "s3", "ls"]"#,
        false,
    ),
    // path globs: * stops at /, ** crosses
    (
        r#"path = ["/home/*/.aws/credentials"]"#,
        r#"class = "open"
path = "/home/dev/.aws/credentials""#,
        true,
    ),
    (
        r#"path = ["/home/*/.aws/credentials"]"#,
        r#"class = "open"
path = "/home/a/b/.aws/credentials""#,
        false,
    ),
    (
        r#"path = ["/home/**/.aws/credentials"]"#,
        r#"class = "open"
path = "/home/a/b/.aws/credentials""#,
        true,
    ),
    (
        r#"path = ["/etc/shadow"]"#,
        r#"class = "open"
path = "/etc/shadow-""#,
        false,
    ),
    (
        r#"path = ["/etc/{shadow,gshadow}"]"#,
        r#"class = "open"
path = "/etc/gshadow""#,
        true,
    ),
    // CIDR, v4 and v6, mapped addresses
    (
        r#"cidr = ["10.0.0.0/8"]"#,
        r#"class = "connect"
destination = { ip = "10.200.0.1" }"#,
        true,
    ),
    (
        r#"cidr = ["10.0.0.0/8"]"#,
        r#"class = "connect"
destination = { ip = "11.0.0.1" }"#,
        false,
    ),
    (
        r#"cidr = ["10.0.0.0/8"]"#,
        r#"class = "connect"
destination = { ip = "::ffff:10.1.2.3" }"#,
        true,
    ),
    (
        r#"cidr = ["10.0.0.0/8"]"#,
        r#"class = "connect"
destination = { hostname = "ten.example" }"#,
        false,
    ),
    (
        r#"cidr = ["2001:db8::/32"]"#,
        r#"class = "connect"
destination = { ip = "2001:db8::1" }"#,
        true,
    ),
    (
        r#"cidr = ["169.254.169.254"]"#,
        r#"class = "connect"
destination = { ip = "169.254.169.254" }"#,
        true,
    ),
    // host globs: case-insensitive, * crosses dots, trailing dot ignored
    (
        r#"host = ["*.example.com"]"#,
        r#"class = "connect"
destination = { hostname = "a.b.example.com" }"#,
        true,
    ),
    (
        r#"host = ["*.example.com"]"#,
        r#"class = "connect"
destination = { hostname = "example.com" }"#,
        false,
    ),
    (
        r#"host = ["pypi.org"]"#,
        r#"class = "connect"
destination = { hostname = "PyPI.org." }"#,
        true,
    ),
    (
        r#"host = ["pypi.org"]"#,
        r#"class = "connect"
destination = { hostname = "pypi.org.evil.net" }"#,
        false,
    ),
    (
        r#"host = ["pypi.org"]"#,
        r#"class = "connect"
destination = { ip = "151.101.0.223" }"#,
        false,
    ),
    // ports, ranges, protocol, scheme, url
    (
        r#"port = [443, "8000-8999"]"#,
        r#"class = "connect"
destination = { port = 8443 }"#,
        true,
    ),
    (
        r#"port = [443, "8000-8999"]"#,
        r#"class = "connect"
destination = { port = 9000 }"#,
        false,
    ),
    (r#"port = [443]"#, r#"class = "connect""#, false),
    (
        r#"protocol = ["udp"]"#,
        r#"class = "send"
destination = { protocol = "udp" }"#,
        true,
    ),
    (
        r#"protocol = ["udp"]"#,
        r#"class = "send"
destination = { protocol = "tcp" }"#,
        false,
    ),
    (
        r#"scheme = ["HTTPS"]"#,
        r#"class = "send"
destination = { scheme = "https" }"#,
        true,
    ),
    (
        r#"scheme = ["https"]"#,
        r#"class = "send"
destination = { scheme = "http" }"#,
        false,
    ),
    (
        r#"url = ["https://api.example.com/v1/*"]"#,
        r#"class = "send"
destination = { url = "https://api.example.com/v1/upload/x" }"#,
        true,
    ),
    (
        r#"url = ["https://api.example.com/v1/*"]"#,
        r#"class = "send"
destination = { url = "https://api.example.com/v2/upload" }"#,
        false,
    ),
    // S3 bucket and key globs
    (
        r#"s3_bucket = ["acme-reports-*"]"#,
        r#"class = "send"
destination = { s3_bucket = "acme-reports-q3" }"#,
        true,
    ),
    (
        r#"s3_bucket = ["acme-reports-*"]"#,
        r#"class = "send"
destination = { s3_bucket = "acme-report" }"#,
        false,
    ),
    (
        r#"s3_key = ["exports/*.csv"]"#,
        r#"class = "send"
destination = { s3_key = "exports/q3.csv" }"#,
        true,
    ),
    (
        r#"s3_key = ["exports/*.csv"]"#,
        r#"class = "send"
destination = { s3_key = "exports/2026/q3.csv" }"#,
        false,
    ),
    (
        r#"s3_key = ["exports/**"]"#,
        r#"class = "send"
destination = { s3_key = "exports/2026/q3.csv" }"#,
        true,
    ),
    // who: uid, user, cgroup, unit
    (
        r#"uid = [0, 1000]"#,
        r#"class = "exec"
uid = 1000"#,
        true,
    ),
    (
        r#"uid = [0]"#,
        r#"class = "exec"
uid = 1000"#,
        false,
    ),
    (r#"uid = [0]"#, r#"class = "exec""#, false),
    (
        r#"user = ["agent-*"]"#,
        r#"class = "exec"
user = "agent-7""#,
        true,
    ),
    (
        r#"user = ["agent-*"]"#,
        r#"class = "exec"
user = "root""#,
        false,
    ),
    (
        r#"cgroup = ["/system.slice/*.service"]"#,
        r#"class = "exec"
cgroup = "/system.slice/agent.service""#,
        true,
    ),
    (
        r#"cgroup = ["/system.slice/*.service"]"#,
        r#"class = "exec"
cgroup = "/user.slice/user-1000.slice/session-1.scope""#,
        false,
    ),
    (
        r#"unit = ["claude-*.service"]"#,
        r#"class = "exec"
unit = "claude-worker.service""#,
        true,
    ),
    (
        r#"unit = ["claude-*.service"]"#,
        r#"class = "exec"
unit = "sshd.service""#,
        false,
    ),
    // parent chain: any ancestor, by path, name or comm
    (
        r#"parent = ["python3*"]"#,
        r#"class = "exec"
parents = [{ pid = 10, binary = "/bin/sh" }, { pid = 9, binary = "/usr/bin/python3.11" }]"#,
        true,
    ),
    (
        r#"parent = ["/usr/bin/node"]"#,
        r#"class = "exec"
parents = [{ pid = 10, binary = "/usr/local/bin/node" }]"#,
        false,
    ),
    (
        r#"parent = ["claude"]"#,
        r#"class = "exec"
parents = [{ pid = 10, comm = "claude" }]"#,
        true,
    ),
    (r#"parent = ["claude"]"#, r#"class = "exec""#, false),
    // conditions AND together
    (
        r#"binary = ["aws"]
uid = [0]"#,
        r#"class = "exec"
binary = "/usr/bin/aws"
uid = 1000"#,
        false,
    ),
    (
        r#"binary = ["aws"]
uid = [0]"#,
        r#"class = "exec"
binary = "/usr/bin/aws"
uid = 0"#,
        true,
    ),
];

#[test]
fn every_matcher() {
    for (i, (cond, act, expected)) in TABLE.iter().enumerate() {
        let p = policy(&format!(
            "[[rule]]\nid = \"r\"\noutcome = \"deny\"\n{cond}\n"
        ));
        let d = p.evaluate(&action(act));
        let matched = d.outcome.kind() == OutcomeKind::Deny;
        assert_eq!(
            matched, *expected,
            "row {i}: condition `{cond}` on action `{act}`: matched={matched}, decision {d:?}"
        );
        assert_eq!(d.rule_id.is_some(), *expected, "row {i}: rule id");
    }
}
