//! kill -9 during heavy appends, restart, verify: nothing acknowledged is missing.
//!
//! The test re-executes its own binary as the child (`child_appender`, a no-op unless the
//! env var is set). The child prints `ACK <seq> <hash>` only after `append` returned, i.e.
//! after the record was fdatasync'ed.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use airlock_audit::record::hex;
use airlock_audit::{AuditConfig, AuditLog, SigningKey, TailCheck};
use common::*;

const CHILD_ENV: &str = "AIRLOCK_AUDIT_CRASH_CHILD";

#[test]
fn child_appender() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let key = SigningKey::load_or_create(&dir.join("audit.key")).unwrap();
    let cfg = AuditConfig {
        rotate_bytes: 4 << 20,
        ..AuditConfig::default()
    };
    let (log, report) = AuditLog::open(&dir.join("log"), cfg, key).unwrap();
    println!("READY {}", report.quarantined.len());
    std::io::stdout().flush().unwrap();
    std::thread::scope(|s| {
        for t in 0..16 {
            let h = log.handle();
            s.spawn(move || {
                for i in 0u64.. {
                    let ev = if i % 50 == 0 {
                        decision(&format!("{t}-{i}"))
                    } else {
                        kb_attempt(&format!("{t}-{i}"))
                    };
                    let a = h.append(&ev).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {} {}", a.seq, hex(&a.hash)).unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}

#[test]
fn kill_9_during_heavy_appends_loses_nothing_acknowledged() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut quarantines = 0;
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_appender",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut ready = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut first_ack = None;
        // Let it append for a while, killing it at a different moment each round.
        let run_for = Duration::from_millis(600 + 350 * round);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => {
                    if let Some(q) = l.split_once("READY ").map(|x| x.1) {
                        ready = Some(q.parse::<usize>().unwrap());
                    } else if let Some(rest) = l.split_once("ACK ").map(|x| x.1) {
                        let (seq, hash) = rest.split_once(' ').unwrap();
                        acked.insert(seq.parse().unwrap(), hash.to_owned());
                        first_ack.get_or_insert_with(Instant::now);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if first_ack.is_some_and(|t| t.elapsed() >= run_for) {
                break;
            }
        }
        assert!(ready.is_some(), "child never became ready");
        quarantines += ready.unwrap_or(0);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for l in rx.iter() {
            if let Some(rest) = l.split_once("ACK ").map(|x| x.1) {
                let (seq, hash) = rest.split_once(' ').unwrap();
                acked.insert(seq.parse().unwrap(), hash.to_owned());
            }
        }
        reader.join().unwrap();
    }
    assert!(
        acked.len() > 1000,
        "only {} acknowledged appends",
        acked.len()
    );

    let key = SigningKey::load_or_create(&dir.path().join("audit.key")).unwrap();
    let public = key.public().clone();
    let (log, report) =
        AuditLog::open(&dir.path().join("log"), AuditConfig::default(), key).unwrap();
    assert!(!report.clean_shutdown);
    log.close().unwrap();
    let r = verify_with(&[dir.path().join("log")], &public, TailCheck::Closed);
    assert!(r.ok(), "{r:?}");

    let mut on_disk = BTreeMap::new();
    for f in airlock_audit::writer::log_files(&dir.path().join("log")).unwrap() {
        for l in read_lines(&f) {
            let v = obj(&l);
            on_disk.insert(
                v["seq"].as_u64().unwrap(),
                v["hash"].as_str().unwrap().to_owned(),
            );
        }
    }
    for (seq, hash) in &acked {
        assert_eq!(
            on_disk.get(seq),
            Some(hash),
            "acknowledged seq {seq} missing or different"
        );
    }
    eprintln!(
        "{} acknowledged appends over 3 kills, {} records on disk, {} torn tails quarantined",
        acked.len(),
        on_disk.len(),
        quarantines + report.quarantined.len()
    );
}
