//! One tamper test per class: each is detected, named, and pinned to the right record.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]
#![allow(clippy::cloned_ref_to_slice_refs, reason = "clearer in tests")]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use airlock_audit::keys::checkpoint_message;
use airlock_audit::record::{hex, parse_hash};
use airlock_audit::{AuditConfig, AuditLog, Hooks, SigningKey, TailCheck, TamperClass};
use base64::Engine as _;
use common::*;
use serde_json::Value;

/// Index of the `nth` line of `kind`.
fn idx(lines: &[String], kind: &str, nth: usize) -> usize {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| obj(l)["kind"] == kind)
        .nth(nth)
        .unwrap()
        .0
}

fn seq_of(line: &str) -> u64 {
    obj(line)["seq"].as_u64().unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    file: PathBuf,
    key: airlock_audit::PublicKey,
    lines: Vec<String>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = write_log(dir.path(), 10);
    let file = only_file(dir.path());
    let lines = read_lines(&file);
    Fixture {
        _dir: dir,
        file,
        key,
        lines,
    }
}

impl Fixture {
    fn check(&self, lines: &[String], tail: TailCheck) -> airlock_audit::Finding {
        write_lines(&self.file, lines);
        let r = verify_with(&[self.file.clone()], &self.key, tail);
        let shown = format!("{r:?}");
        r.finding
            .unwrap_or_else(|| panic!("tampering not detected: {shown}"))
    }
}

#[test]
fn untouched_log_verifies_closed_and_live() {
    let f = fixture();
    let r = verify_with(&[f.file.clone()], &f.key, TailCheck::Closed);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.records, f.lines.len() as u64);
    assert!(
        r.checkpoints >= 12,
        "a checkpoint after every decision: {}",
        r.checkpoints
    );
    assert_eq!(r.last_signed_seq, Some(r.last_seq.unwrap() - 1));
    let last_time = obj(f.lines.last().unwrap())["time"].as_u64().unwrap();
    let live = verify_with(
        &[f.file.clone()],
        &f.key,
        TailCheck::Live {
            now_ms: last_time + 500,
        },
    );
    assert!(live.ok(), "{live:?}");
    // Another key is not trusted.
    let other = SigningKey::generate().unwrap();
    let r = verify_with(&[f.file.clone()], other.public(), TailCheck::Closed);
    assert_eq!(r.finding.unwrap().class, TamperClass::BadSignature);
}

#[test]
fn modified_byte_is_named() {
    let f = fixture();
    let mut lines = f.lines.clone();
    let i = idx(&lines, "outcome", 3);
    lines[i] = lines[i].replacen("completed", "c0mpleted", 1);
    let found = f.check(&lines, TailCheck::Unchecked);
    assert_eq!(found.class, TamperClass::Modified);
    assert_eq!(found.line, i as u64 + 1);
    assert_eq!(found.seq, Some(seq_of(&f.lines[i])));
}

#[test]
fn modified_and_rehashed_record_is_named() {
    let f = fixture();
    let mut lines = f.lines.clone();
    let i = idx(&lines, "attempt", 4);
    let mut v = obj(&lines[i]);
    v.insert("message".into(), Value::String("nothing to see".into()));
    let prev = hash_of(&lines[i - 1]);
    lines[i] = rechain(v, &prev).0;
    let found = f.check(&lines, TailCheck::Unchecked);
    assert_eq!(found.class, TamperClass::Modified);
    assert_eq!(found.line, i as u64 + 1, "{found:?}");
}

#[test]
fn deleted_record_is_named() {
    let f = fixture();
    let mut lines = f.lines.clone();
    let i = idx(&lines, "outcome", 2);
    let removed = seq_of(&lines.remove(i));
    let found = f.check(&lines, TailCheck::Unchecked);
    assert_eq!(found.class, TamperClass::Deleted);
    assert_eq!(found.seq, Some(removed + 1));
    assert_eq!(found.line, i as u64 + 1);
}

#[test]
fn swapped_records_are_named() {
    let f = fixture();
    let mut lines = f.lines.clone();
    let i = idx(&lines, "outcome", 5);
    lines.swap(i, i + 1);
    let found = f.check(&lines, TailCheck::Unchecked);
    assert_eq!(found.class, TamperClass::Reordered);
    assert_eq!(found.line, i as u64 + 1);
}

#[test]
fn inserted_record_is_named() {
    let f = fixture();
    let mut lines = f.lines.clone();
    let i = idx(&lines, "outcome", 1);
    // A forged record that links correctly to its predecessor and has the next seq.
    let mut v = obj(&lines[i + 1]);
    v.insert("seq".into(), Value::from(seq_of(&lines[i]) + 1));
    v.insert("kind".into(), Value::String("reveal".into()));
    let (forged, _) = rechain(v, &hash_of(&lines[i]));
    lines.insert(i + 1, forged);
    let found = f.check(&lines, TailCheck::Unchecked);
    assert_eq!(found.class, TamperClass::Inserted);
    assert_eq!(found.line, i as u64 + 2);

    // And one with a made-up seq and link.
    let mut lines = f.lines.clone();
    let mut v = obj(&lines[i]);
    v.insert("seq".into(), Value::from(999));
    let (forged, _) = rechain(v, &[3; 32]);
    lines.insert(i + 1, forged);
    let found = f.check(&lines, TailCheck::Unchecked);
    assert_eq!(found.class, TamperClass::Inserted);
    assert_eq!(found.line, i as u64 + 2);
}

#[test]
fn cut_tail_is_named() {
    let f = fixture();
    // At a line boundary: only the end-of-log rule can see it.
    let lines = f.lines[..f.lines.len() - 3].to_vec();
    let found = f.check(&lines, TailCheck::Closed);
    assert_eq!(found.class, TamperClass::TruncatedTail);
    assert_eq!(found.line, lines.len() as u64);
    let last_cp = obj(&lines[idx(&lines, "checkpoint", 10)])["time"]
        .as_u64()
        .unwrap();
    let found = f.check(
        &lines,
        TailCheck::Live {
            now_ms: last_cp + 5_000,
        },
    );
    assert_eq!(found.class, TamperClass::TruncatedTail);
    // Mid-line: a torn last line, visible without any tail rule.
    let mut bytes = f.lines.join("\n").into_bytes();
    bytes.truncate(bytes.len() - 40);
    std::fs::write(&f.file, bytes).unwrap();
    let r = verify_with(&[f.file.clone()], &f.key, TailCheck::Unchecked);
    let found = r.finding.unwrap();
    assert_eq!(found.class, TamperClass::TruncatedTail);
    assert_eq!(found.line, f.lines.len() as u64);
}

#[test]
fn spliced_logs_are_forked() {
    let f = fixture();
    let other = tempfile::tempdir().unwrap();
    // Same key, another log (e.g. a copy that diverged, or another host's log).
    let key = SigningKey::generate().unwrap();
    let public = key.public().clone();
    let (log, _) = AuditLog::open(other.path(), AuditConfig::default(), key).unwrap();
    for i in 0..10 {
        log.append(&attempt(&format!("b-{i}"))).unwrap();
        log.append(&decision(&format!("b-{i}"))).unwrap();
    }
    log.close().unwrap();
    let b = read_lines(&only_file(other.path()));
    let cut = 12;
    let mut lines = f.lines[..cut].to_vec();
    lines.extend_from_slice(&b[cut..]);
    write_lines(&f.file, &lines);
    let mut o = airlock_audit::VerifyOptions::new(vec![f.key.clone(), public.clone()]);
    o.tail = TailCheck::Unchecked;
    let found = airlock_audit::verify(&[f.file.clone()], &o)
        .unwrap()
        .finding
        .unwrap();
    assert_eq!(found.class, TamperClass::Forked, "{found:?}");
    assert_eq!(found.line, cut as u64 + 1);

    // Two whole files given in sequence that are not one history.
    write_lines(&f.file, &f.lines);
    let found = airlock_audit::verify(&[f.file.clone(), only_file(other.path())], &o)
        .unwrap()
        .finding
        .unwrap();
    assert_eq!(found.class, TamperClass::Forked, "{found:?}");
    assert_eq!(found.file, only_file(other.path()));
    assert_eq!(found.line, 1);
}

#[test]
fn resigned_with_another_key_is_bad_signature() {
    let f = fixture();
    let attacker = SigningKey::generate().unwrap();
    let start = idx(&f.lines, "attempt", 6);
    let mut lines = f.lines[..start].to_vec();
    let mut prev = hash_of(&lines[start - 1]);
    let mut first_cp = None;
    for (n, l) in f.lines[start..].iter().enumerate() {
        let mut v = obj(l);
        if n == 0 {
            v.insert("message".into(), Value::String("rewritten".into()));
        }
        if v["kind"] == "checkpoint" {
            first_cp.get_or_insert(start + n);
            let seq = v["seq"].as_u64().unwrap() - 1;
            let a = v["unmapped"]["airlock"].as_object_mut().unwrap();
            let log_id = a["log_id"].as_str().unwrap().to_owned();
            let time = a["signed_time"].as_u64().unwrap();
            let kid = attacker.public().key_id.clone();
            let sig = attacker.sign(&checkpoint_message(&log_id, seq, &prev, time, &kid));
            a.insert("covered_hash".into(), Value::String(hex(&prev)));
            a.insert("key_id".into(), Value::String(kid));
            a.insert(
                "signature".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(sig)),
            );
        }
        let (line, h) = rechain(v, &prev);
        prev = h;
        lines.push(line);
    }
    let found = f.check(&lines, TailCheck::Closed);
    assert_eq!(found.class, TamperClass::BadSignature);
    assert_eq!(found.line, first_cp.unwrap() as u64 + 1);

    // Rewriting the chain but keeping the genuine signatures is caught too.
    let mut lines = f.lines[..start].to_vec();
    let mut prev = hash_of(&lines[start - 1]);
    for (n, l) in f.lines[start..].iter().enumerate() {
        let mut v = obj(l);
        if n == 0 {
            v.insert("message".into(), Value::String("rewritten".into()));
        }
        let (line, h) = rechain(v, &prev);
        prev = h;
        lines.push(line);
    }
    let found = f.check(&lines, TailCheck::Closed);
    assert_eq!(found.class, TamperClass::Modified);
    assert_eq!(found.line, first_cp.unwrap() as u64 + 1);
    assert!(parse_hash(&[b'0'; 64]).is_some());
}

#[test]
fn heartbeat_gap_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(AtomicU64::new(1_700_000_000_000));
    let c = clock.clone();
    let hooks = Hooks {
        clock: Some(Arc::new(move || c.load(Ordering::SeqCst))),
        ..Hooks::default()
    };
    let key = SigningKey::generate().unwrap();
    let public = key.public().clone();
    let (log, _) =
        AuditLog::open_with_hooks(dir.path(), AuditConfig::default(), key, hooks).unwrap();
    for i in 0..3 {
        log.append(&attempt(&format!("x{i}"))).unwrap();
        clock.fetch_add(400, Ordering::SeqCst);
        log.append(&decision(&format!("x{i}"))).unwrap();
    }
    let ok = verify_with(&[only_file(dir.path())], &public, TailCheck::Unchecked);
    assert!(ok.ok(), "{ok:?}");
    // The writer is stalled for 10 s (or its heartbeats were removed).
    clock.fetch_add(10_000, Ordering::SeqCst);
    log.append(&attempt("late")).unwrap();
    log.close().unwrap();
    let file = only_file(dir.path());
    let r = verify_with(&[file.clone()], &public, TailCheck::Closed);
    let found = r.finding.unwrap();
    assert_eq!(found.class, TamperClass::HeartbeatGap);
    let lines = read_lines(&file);
    assert_eq!(obj(&lines[found.line as usize - 1])["kind"], "checkpoint");
    assert!(found.line as usize > idx(&lines, "decision", 2));
}
