//! Shared helpers for the integration tests.
#![allow(dead_code, reason = "each test binary uses a subset")]
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use airlock_audit::record::{body_members, compose_line, hex, parse_hash};
use airlock_audit::{
    Action, Actor, Attempt, AuditConfig, AuditEvent, AuditLog, Decision, Outcome, OutcomeKind,
    PolicyRef, PublicKey, SigningKey, TailCheck, Verdict, VerifyOptions, VerifyReport, verify,
};
use serde_json::{Map, Value};

pub fn actor() -> Actor {
    Actor {
        pid: 4242,
        tid: 4242,
        uid: 1000,
        exe: "/usr/bin/aws".into(),
        cmd_line: "aws s3 cp /data s3://x".into(),
        cgroup: Some("/agent.slice".into()),
    }
}

pub fn action() -> Action {
    Action::Exec {
        path: "/usr/bin/aws".into(),
        argv: vec!["aws".into(), "s3".into(), "cp".into()],
    }
}

pub fn attempt(id: &str) -> AuditEvent {
    AuditEvent::Attempt(Attempt {
        correlation_id: id.into(),
        actor: actor(),
        action: action(),
        policy: Some(PolicyRef {
            rule: "export-tools".into(),
            version: "7".into(),
        }),
        masked_context: BTreeMap::from([("AWS_SECRET_ACCESS_KEY".into(), "****".into())]),
        sealed_context: Some(vec![9; 48]),
    })
}

pub fn decision(id: &str) -> AuditEvent {
    AuditEvent::Decision(Decision {
        correlation_id: id.into(),
        verdict: Verdict::Allow,
        decided_by: vec!["alice".into(), "bob".into()],
        channel: "slack".into(),
        quorum_required: 2,
        quorum_met: 2,
        reason: "ticket OPS-1".into(),
        grant_scope: "once".into(),
        policy: Some(PolicyRef {
            rule: "export-tools".into(),
            version: "7".into(),
        }),
    })
}

pub fn outcome(id: &str) -> AuditEvent {
    AuditEvent::Outcome(Outcome {
        correlation_id: id.into(),
        actor: actor(),
        action: action(),
        outcome: OutcomeKind::Completed,
        detail: None,
    })
}

/// A ~1 KB attempt (the benchmark's record size).
pub fn kb_attempt(id: &str) -> AuditEvent {
    let AuditEvent::Attempt(mut a) = attempt(id) else {
        unreachable!()
    };
    a.masked_context.insert("argv".into(), "x".repeat(420));
    AuditEvent::Attempt(a)
}

/// Opens a fresh log in `dir` with a new key; returns the log and the trusted key.
pub fn open_new(dir: &Path, cfg: AuditConfig) -> (AuditLog, PublicKey) {
    let key = SigningKey::generate().unwrap();
    let public = key.public().clone();
    let (log, report) = AuditLog::open(dir, cfg, key).unwrap();
    assert!(report.created);
    (log, public)
}

/// Writes `n` attempt/decision/outcome triples and closes cleanly.
pub fn write_log(dir: &Path, n: usize) -> PublicKey {
    let (log, public) = open_new(dir, AuditConfig::default());
    for i in 0..n {
        let id = format!("corr-{i}");
        log.append(&attempt(&id)).unwrap();
        log.append(&decision(&id)).unwrap();
        log.append(&outcome(&id)).unwrap();
    }
    log.close().unwrap();
    public
}

pub fn only_file(dir: &Path) -> PathBuf {
    let files = airlock_audit::writer::log_files(dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(path, s).unwrap();
}

pub fn verify_with(paths: &[PathBuf], key: &PublicKey, tail: TailCheck) -> VerifyReport {
    let mut o = VerifyOptions::new(vec![key.clone()]);
    o.tail = tail;
    verify(paths, &o).unwrap()
}

pub fn obj(line: &str) -> Map<String, Value> {
    serde_json::from_str(line).unwrap()
}

/// Re-serialises a record under a new `prev_hash` (as an attacker would), returning the line
/// and its hash.
pub fn rechain(mut v: Map<String, Value>, prev: &[u8; 32]) -> (String, [u8; 32]) {
    v.insert("prev_hash".into(), Value::String(hex(prev)));
    let seq = v["seq"].as_u64().unwrap();
    let kind = airlock_audit::Kind::parse(v["kind"].as_str().unwrap().as_bytes()).unwrap();
    let body = body_members(&v).unwrap();
    let mut out = Vec::new();
    let h = compose_line(&mut out, seq, prev, kind, &body);
    out.pop();
    (String::from_utf8(out).unwrap(), h)
}

pub fn hash_of(line: &str) -> [u8; 32] {
    parse_hash(obj(line)["hash"].as_str().unwrap().as_bytes()).unwrap()
}
