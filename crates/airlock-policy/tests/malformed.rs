//! Malformed policies are rejected with `file:line:column` and the reason.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

mod common;

use airlock_policy::{MAX_POLICY_BYTES, Policy, PolicyError};
use common::HEADER;

/// Load `HEADER` + `body`; return the error, its line (relative to the body), column and text.
fn reject(body: &str) -> (PolicyError, usize, usize, String) {
    let text = format!("{HEADER}{body}");
    let offset = HEADER.matches('\n').count();
    match Policy::from_str("bad.toml", &text) {
        Ok(_) => panic!("accepted:\n{body}"),
        Err(e) => {
            let loc = e
                .location()
                .cloned()
                .unwrap_or_else(|| panic!("no location: {e}"));
            assert_eq!(loc.file, "bad.toml");
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("bad.toml:{}:{}: ", loc.line, loc.column)),
                "{msg}"
            );
            (e, loc.line - offset, loc.column, msg)
        }
    }
}

#[test]
fn syntax_error() {
    let (e, line, _, msg) = reject("[[rule]]\nid = \"a\"\noutcome = \"deny\nbinary = [\"x\"]\n");
    assert!(matches!(e, PolicyError::Parse { .. }), "{msg}");
    assert_eq!(line, 3, "{msg}");
}

#[test]
fn unknown_fields() {
    let (e, line, col, msg) =
        reject("[[rule]]\nid = \"a\"\noutcome = \"deny\"\n  binaries = [\"aws\"]\n");
    assert!(matches!(e, PolicyError::Parse { .. }), "{msg}");
    assert!(msg.contains("unknown field `binaries`"), "{msg}");
    assert_eq!((line, col), (4, 3), "{msg}");
    let (_, _, _, msg) =
        reject("[[rule]]\nid = \"a\"\noutcome = \"deny\"\nargv = [{ pos = 1, glob = \"x\" }]\n");
    assert!(msg.contains("unknown field `pos`"), "{msg}");
    let (_, _, _, msg) = reject("[surprise]\nx = 1\n");
    assert!(msg.contains("unknown field `surprise`"), "{msg}");
}

#[test]
fn wrong_values() {
    let (_, line, _, msg) = reject("[[rule]]\nid = \"a\"\noutcome = \"maybe\"\n");
    assert_eq!(line, 3, "{msg}");
    let (_, line, _, msg) = reject("[[rule]]\nid = \"a\"\noutcome = \"deny\"\non = [\"fork\"]\n");
    assert_eq!(line, 4, "{msg}");
    let (_, line, _, msg) = reject("[[rule]]\nid = \"a\"\noutcome = \"deny\"\nport = [70000]\n");
    assert_eq!(line, 4, "{msg}");
    let (_, line, _, msg) = reject("[[rule]]\nid = \"a\"\noutcome = \"deny\"\nport = [\"9-1\"]\n");
    assert_eq!(line, 4, "{msg}");
    assert!(msg.contains("bad port range"), "{msg}");
    let (_, line, _, msg) = reject("[[rule]]\nid = \"a\"\noutcome = \"deny\"\nbinary = \"aws\"\n");
    assert_eq!(line, 4, "{msg}");
}

#[test]
fn bad_globs() {
    let (e, line, col, msg) =
        reject("[[rule]]\nid = \"a\"\noutcome = \"deny\"\npath = [\"/ok\", \"/etc/[shadow\"]\n");
    assert!(matches!(e, PolicyError::BadGlob { .. }), "{msg}");
    assert!(msg.contains("/etc/[shadow"), "{msg}");
    assert_eq!((line, col), (4, 16), "{msg}");
    let (e, line, _, msg) = reject("[[rule]]\nid = \"a\"\noutcome = \"deny\"\nhost = [\"{a,b\"]\n");
    assert!(matches!(e, PolicyError::BadGlob { .. }), "{msg}");
    assert_eq!(line, 4);
    let (e, _, _, msg) = reject("[[rule]]\nid = \"a\"\noutcome = \"deny\"\nbinary = [\"\"]\n");
    assert!(matches!(e, PolicyError::BadGlob { .. }), "{msg}");
    let long = "a".repeat(5000);
    let (e, _, _, msg) = reject(&format!(
        "[[rule]]\nid = \"a\"\noutcome = \"deny\"\nuser = [\"{long}\"]\n"
    ));
    assert!(
        matches!(e, PolicyError::BadGlob { .. }) && msg.contains("longer than"),
        "{msg}"
    );
}

#[test]
fn bad_regexes() {
    let (e, line, col, msg) =
        reject("[[rule]]\nid = \"a\"\noutcome = \"deny\"\nargv = [{ regex = \"(unclosed\" }]\n");
    assert!(matches!(e, PolicyError::BadRegex { .. }), "{msg}");
    assert_eq!((line, col), (4, 19), "{msg}");
    // Compiles to far more than the size limit.
    let (e, _, _, msg) = reject(
        "[[rule]]\nid = \"a\"\noutcome = \"deny\"\nargv = [{ regex = '\\w{1000}\\w{1000}\\w{1000}' }]\n",
    );
    assert!(matches!(e, PolicyError::BadRegex { .. }), "{msg}");
    let (e, _, _, msg) = reject(
        "[[rule]]\nid = \"a\"\noutcome = \"deny\"\nargv = [{ glob = \"x\", regex = \"y\" }]\n",
    );
    assert!(
        matches!(e, PolicyError::Invalid { .. }) && msg.contains("exactly one"),
        "{msg}"
    );
}

#[test]
fn bad_cidrs() {
    for (cidr, needle) in [
        ("10.0.0.0/33", "bad CIDR"),
        ("10.0.0.1/8", "host bits set (did you mean 10.0.0.0/8?)"),
        ("example.com", "bad CIDR"),
        ("fe80::/129", "bad CIDR"),
    ] {
        let (e, line, col, msg) = reject(&format!(
            "[[rule]]\nid = \"a\"\noutcome = \"deny\"\ncidr = [\"{cidr}\"]\n"
        ));
        assert!(matches!(e, PolicyError::BadCidr { .. }), "{msg}");
        assert!(msg.contains(needle), "{msg}");
        assert_eq!((line, col), (4, 9), "{msg}");
    }
}

#[test]
fn unknown_group() {
    let (e, line, col, msg) = reject(
        "[[rule]]\nid = \"a\"\noutcome = \"ask\"\nask = { approvers = [\"oncall\", \"legal\"] }\n",
    );
    assert!(
        matches!(e, PolicyError::UnknownGroup { ref group, .. } if group == "legal"),
        "{msg}"
    );
    assert_eq!((line, col), (4, 32), "{msg}");
}

#[test]
fn duplicate_rule_ids() {
    let (e, line, _, msg) = reject(
        "[[rule]]\nid = \"a\"\noutcome = \"deny\"\n\n[[rule]]\nid = \"a\"\noutcome = \"allow\"\n",
    );
    let PolicyError::DuplicateRuleId { first, .. } = &e else {
        panic!("{msg}")
    };
    assert_eq!(line, 6, "{msg}");
    assert_eq!(first.line - HEADER.matches('\n').count(), 2);
}

#[test]
fn semantic_errors() {
    for (body, needle) in [
        (
            "[[rule]]\nid = \"a\"\noutcome = \"deny\"\nask = { ttl = \"1m\" }\n",
            "only applies to outcome = \"ask\"",
        ),
        (
            "[[rule]]\nid = \"a\"\noutcome = \"ask\"\nask = { ttl = \"soon\" }\n",
            "bad duration",
        ),
        (
            "[[rule]]\nid = \"a\"\noutcome = \"ask\"\nask = { ttl = \"3d\" }\n",
            "ttl longer than",
        ),
        (
            "[[rule]]\nid = \"a\"\noutcome = \"ask\"\nask = { grant = \"forever\" }\n",
            "grant must be",
        ),
        (
            "[[rule]]\nid = \"a\"\noutcome = \"ask\"\nask = { quorum = 0 }\n",
            "quorum must be at least 1",
        ),
        (
            "[[rule]]\nid = \"a\"\noutcome = \"deny\"\non = []\n",
            "at least one class",
        ),
        (
            "[[rule]]\nid = \"a\"\noutcome = \"deny\"\npath = []\n",
            "empty pattern list",
        ),
        (
            "[[rule]]\nid = \"\"\noutcome = \"deny\"\n",
            "must not be empty",
        ),
    ] {
        let (_, _, _, msg) = reject(body);
        assert!(msg.contains(needle), "{body}: {msg}");
    }
}

#[test]
fn ask_without_approvers() {
    let text = "version = 1\n[defaults]\nexec = \"allow\"\nconnect = \"ask\"\nsend = \"allow\"\nopen = \"allow\"\n";
    let e = Policy::from_str("p.toml", text).unwrap_err();
    let loc = e.location().unwrap();
    assert_eq!((loc.line, loc.column), (4, 11), "{e}");
    assert!(e.to_string().contains("[defaults.ask]"), "{e}");
}

#[test]
fn wrong_version() {
    let text = HEADER.replace("version = 1", "version = 2");
    let e = Policy::from_str("p.toml", &text).unwrap_err();
    assert!(
        matches!(e, PolicyError::UnsupportedVersion { found: 2, .. }),
        "{e}"
    );
    assert_eq!(e.location().unwrap().line, 2);
    let e = Policy::from_str("p.toml", &HEADER.replace("version = 1\n", "")).unwrap_err();
    assert!(e.to_string().contains("missing field `version`"), "{e}");
}

#[test]
fn huge_files() {
    // In memory.
    let mut text = HEADER.to_owned();
    while text.len() as u64 <= MAX_POLICY_BYTES {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let e = Policy::from_str("big.toml", &text).unwrap_err();
    assert!(matches!(e, PolicyError::TooLarge { .. }), "{e}");
    assert!(
        e.to_string().contains("larger than the 1048576-byte limit"),
        "{e}"
    );
    // On disk: rejected without reading it all.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(64 << 20).unwrap();
    let e = Policy::load(&path).unwrap_err();
    let PolicyError::TooLarge { size, .. } = e else {
        panic!("{e}")
    };
    assert_eq!(size, 64 << 20);
    // Exactly at the limit is fine size-wise (then fails as TOML: NUL bytes).
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(MAX_POLICY_BYTES).unwrap();
    assert!(!matches!(
        Policy::load(&path),
        Err(PolicyError::TooLarge { .. })
    ));
}

#[test]
fn missing_file() {
    let e = Policy::load(std::path::Path::new("/nonexistent/policy.toml")).unwrap_err();
    assert!(matches!(e, PolicyError::Io { .. }), "{e}");
}
