//! Reload under load: evaluators loop over watched actions while another thread
//! reloads 100 times between two valid policies and an invalid one. Every decision must
//! equal what the policy whose hash it reports decides; none may be lost; the invalid
//! file must be rejected with file:line:column and leave the old policy in force.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};

use airlock_policy::{Action, Decision, Destination, Policy, PolicyError, PolicyHandle};

const A: &str = r#"
version = 1
revision = "A"
[defaults]
exec = "allow"
connect = "ask"
send = "ask"
open = "allow"
[defaults.ask]
approvers = ["oncall"]
[groups.oncall]
[[rule]]
id = "aws-asks"
binary = ["aws"]
outcome = "ask"
[[rule]]
id = "pypi"
host = ["pypi.org"]
outcome = "allow"
[[rule]]
id = "creds"
path = ["/home/*/.aws/**"]
outcome = "ask"
"#;

const B: &str = r#"
version = 1
revision = "B"
[defaults]
exec = "allow"
connect = "deny"
send = "deny"
open = "allow"
[groups.oncall]
[[rule]]
id = "aws-denied"
binary = ["aws"]
outcome = "deny"
[[rule]]
id = "creds-denied"
path = ["/home/*/.aws/**"]
outcome = "deny"
[[rule]]
id = "shadow-pypi"
mode = "shadow"
host = ["pypi.org"]
outcome = "deny"
"#;

/// Valid TOML, invalid policy: policy A plus a rule with a bad CIDR.
fn invalid() -> (String, usize) {
    let text = format!("{A}[[rule]]\nid = \"bad\"\ncidr = [\"10.0.0.0/99\"]\noutcome = \"deny\"\n");
    let line = A.matches('\n').count() + 3;
    (text, line)
}

fn actions() -> Vec<Action> {
    let connect = |host: &str| {
        Action::connect(Destination {
            ip: Some("203.0.113.7".parse().unwrap()),
            port: Some(443),
            hostname: Some(host.to_owned()),
            ..Destination::default()
        })
    };
    vec![
        Action::exec("/usr/bin/aws", ["aws", "s3", "cp", "f", "s3://x/"]),
        Action::exec("/usr/bin/git", ["git", "push"]),
        connect("pypi.org"),
        connect("evil.net"),
        Action::open("/home/dev/.aws/credentials"),
        Action::open("/etc/hosts"),
    ]
}

fn write_atomically(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).unwrap();
    path
}

#[test]
fn reload_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_atomically(dir.path(), "policy.toml", A);
    let handle = Arc::new(PolicyHandle::load(&path).unwrap());
    let reference: HashMap<String, Policy> = [A, B]
        .iter()
        .map(|t| {
            let p = Policy::from_str("ref", t).unwrap();
            (p.hash().to_owned(), p)
        })
        .collect();
    // The two policies must disagree on every action class we loop over, or a mixed-up
    // decision could not be told apart.
    let (pa, pb) = (
        Policy::from_str("a", A).unwrap(),
        Policy::from_str("b", B).unwrap(),
    );
    let disagree = actions()
        .iter()
        .filter(|a| pa.evaluate(a).outcome != pb.evaluate(a).outcome)
        .count();
    assert_eq!(disagree, 4);

    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<(usize, u64, usize, Decision)>();
    let evaluators: Vec<_> = (0..2)
        .map(|t| {
            let (handle, done, tx) = (handle.clone(), done.clone(), tx.clone());
            std::thread::spawn(move || {
                let acts = actions();
                let mut seq = 0u64;
                while !done.load(Ordering::Acquire) {
                    for (i, a) in acts.iter().enumerate() {
                        tx.send((t, seq, i, handle.evaluate(a))).unwrap();
                        seq += 1;
                    }
                }
                seq
            })
        })
        .collect();
    drop(tx);

    let (invalid, bad_line) = invalid();
    let (mut swapped, mut rejected) = (0u64, 0u64);
    for i in 0..100 {
        let (text, valid) = match i % 3 {
            0 => (B, true),
            1 => (invalid.as_str(), false),
            _ => (A, true),
        };
        let before = handle.version();
        let path = write_atomically(dir.path(), "policy.toml", text);
        match handle.load_and_swap(&path) {
            Ok(outcome) => {
                assert!(valid, "invalid policy accepted");
                assert_eq!(outcome.old_version, before);
                assert_eq!(outcome.new_version.generation, before.generation + 1);
                swapped += 1;
            }
            Err(e) => {
                assert!(!valid, "valid policy rejected: {e}");
                assert!(matches!(e, PolicyError::BadCidr { .. }), "{e}");
                let loc = e.location().unwrap();
                assert_eq!((loc.line, loc.column), (bad_line, 9), "{e}");
                let want = format!("{}:{bad_line}:9: bad CIDR `10.0.0.0/99`", path.display());
                assert!(e.to_string().starts_with(&want), "{e}");
                assert_eq!(handle.version(), before, "old policy stays in force");
                rejected += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    done.store(true, Ordering::Release);
    let produced: u64 = evaluators.into_iter().map(|h| h.join().unwrap()).sum();

    let acts = actions();
    let mut next_seq = [0u64; 2];
    let mut seen_hashes = HashMap::<String, u64>::new();
    let mut received = 0u64;
    for (t, seq, i, d) in rx {
        assert_eq!(seq, next_seq[t], "decision lost or reordered on thread {t}");
        next_seq[t] += 1;
        let policy = reference
            .get(&*d.policy_hash)
            .unwrap_or_else(|| panic!("decision from an unknown policy {}", d.policy_hash));
        assert_eq!(d, policy.evaluate(&acts[i]), "misjudged action {i}");
        *seen_hashes.entry(d.policy_hash.to_string()).or_default() += 1;
        received += 1;
    }
    assert_eq!(
        received, produced,
        "every evaluation produced exactly one decision"
    );
    assert_eq!((swapped, rejected), (67, 33));
    assert_eq!(handle.version().generation, 67);
    assert_eq!(
        seen_hashes.len(),
        2,
        "both policies decided during the run: {seen_hashes:?}"
    );
    eprintln!("{received} decisions across 100 reloads: {seen_hashes:?}");
}
