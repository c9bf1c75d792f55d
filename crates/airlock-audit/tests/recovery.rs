//! Crash recovery, sealing, disk-space ladder, rotation/retention, key rotation, CLI.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

mod common;

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use airlock_audit::cli::{AuditCommand, ExportArgs, ShowArgs, VerifyArgs, run};
use airlock_audit::keys::pub_path;
use airlock_audit::writer::log_files;
use airlock_audit::{
    AppendError, AuditConfig, AuditLog, Hooks, SigningKey, TailCheck, TamperClass, WriterError,
};
use common::*;

#[test]
fn torn_tail_is_quarantined_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("audit.key");
    let key = SigningKey::load_or_create(&key_path).unwrap();
    let public = key.public().clone();
    let (log, _) = AuditLog::open(&dir.path().join("log"), AuditConfig::default(), key).unwrap();
    log.append(&attempt("a")).unwrap();
    drop(log.handle());
    std::mem::forget(log); // simulate a crash: no stop record (writer thread keeps the lock)
    // The forgotten writer holds the lock; a crashed process would not. Copy the files.
    let crashed = dir.path().join("crashed");
    std::fs::create_dir(&crashed).unwrap();
    let src = only_file(&dir.path().join("log"));
    let dst = crashed.join(src.file_name().unwrap());
    std::fs::copy(&src, &dst).unwrap();
    let torn = b"{\"seq\":9,\"prev_hash\":\"00";
    std::fs::OpenOptions::new()
        .append(true)
        .open(&dst)
        .unwrap()
        .write_all(torn)
        .unwrap();
    let good_len = std::fs::metadata(&src).unwrap().len();

    let before = verify_with(std::slice::from_ref(&dst), &public, TailCheck::Unchecked);
    assert_eq!(before.finding.unwrap().class, TamperClass::TruncatedTail);

    let key = SigningKey::load_or_create(&key_path).unwrap();
    let (log, report) = AuditLog::open(&crashed, AuditConfig::default(), key).unwrap();
    assert!(!report.clean_shutdown);
    assert_eq!(report.quarantined.len(), 1);
    let q = &report.quarantined[0];
    assert_eq!((q.start, q.end), (good_len, good_len + torn.len() as u64));
    assert_eq!(std::fs::read(&q.quarantine_file).unwrap(), torn);
    log.close().unwrap();
    let lines = read_lines(&dst);
    let qrec = lines
        .iter()
        .map(|l| obj(l))
        .find(|v| v["kind"] == "quarantine")
        .unwrap();
    assert_eq!(qrec["unmapped"]["airlock"]["start"], good_len);
    assert_eq!(qrec["unmapped"]["airlock"]["length"], torn.len());
    let r = verify_with(std::slice::from_ref(&crashed), &public, TailCheck::Closed);
    assert!(r.ok(), "{r:?}");
}

#[test]
fn damaged_middle_is_refused_not_repaired() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 3);
    let file = only_file(dir.path());
    let mut lines = read_lines(&file);
    assert_eq!(obj(&lines[3])["kind"], "attempt");
    lines[3] = lines[3].replacen("held", "HELD", 1);
    write_lines(&file, &lines);
    let err = AuditLog::open(
        dir.path(),
        AuditConfig::default(),
        SigningKey::generate().unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(err, WriterError::DamagedTail { line: 4, .. }),
        "{err}"
    );
}

#[test]
fn fsync_failure_seals_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    let f = fail.clone();
    let hooks = Hooks {
        sync: Some(Box::new(move |file| {
            if f.load(Ordering::SeqCst) {
                Err(std::io::Error::from_raw_os_error(5))
            } else {
                file.sync_data()
            }
        })),
        ..Hooks::default()
    };
    let key = SigningKey::generate().unwrap();
    let (log, _) =
        AuditLog::open_with_hooks(dir.path(), AuditConfig::default(), key, hooks).unwrap();
    log.append(&attempt("ok")).unwrap();
    fail.store(true, Ordering::SeqCst);
    let err = log.append(&attempt("lost")).unwrap_err();
    assert!(
        matches!(&err, AppendError::Sealed(r) if r.contains("fdatasync")),
        "{err}"
    );
    // Even after the device recovers, the log stays sealed: fail closed.
    fail.store(false, Ordering::SeqCst);
    assert!(matches!(
        log.append(&decision("x")),
        Err(AppendError::Sealed(_))
    ));
    assert!(log.handle().sealed().is_some());
    assert!(matches!(log.close(), Err(AppendError::Sealed(_))));
}

#[test]
fn disk_space_ladder_keeps_room_for_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let free = Arc::new(AtomicU64::new(10 << 30));
    let f = free.clone();
    let hooks = Hooks {
        free_bytes: Some(Box::new(move |_| Ok(f.load(Ordering::SeqCst)))),
        ..Hooks::default()
    };
    let cfg = AuditConfig::default();
    let (log, _) = AuditLog::open_with_hooks(
        dir.path(),
        cfg.clone(),
        SigningKey::generate().unwrap(),
        hooks,
    )
    .unwrap();
    log.append(&attempt("a")).unwrap();
    free.store(cfg.warn_free_bytes - 1, Ordering::SeqCst);
    log.append(&attempt("warned")).unwrap();
    free.store(cfg.hold_free_bytes - 1, Ordering::SeqCst);
    assert!(matches!(
        log.append(&attempt("held")),
        Err(AppendError::DiskLow { kind: "normal", .. })
    ));
    log.append(&decision("held")).unwrap();
    log.append(&outcome("held")).unwrap();
    free.store(cfg.min_free_bytes - 1, Ordering::SeqCst);
    assert!(matches!(
        log.append(&decision("none")),
        Err(AppendError::DiskLow { kind: "all", .. })
    ));
    free.store(10 << 30, Ordering::SeqCst);
    log.append(&attempt("again")).unwrap();
    log.close().unwrap();
}

#[test]
fn concurrent_appenders_get_unique_durable_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let (log, public) = open_new(dir.path(), AuditConfig::default());
    let seen = Arc::new(Mutex::new(HashSet::new()));
    std::thread::scope(|s| {
        for t in 0..8 {
            let h = log.handle();
            let seen = seen.clone();
            s.spawn(move || {
                for i in 0..200 {
                    let a = h.append(&attempt(&format!("{t}-{i}"))).unwrap();
                    assert!(seen.lock().unwrap().insert(a.seq));
                }
            });
        }
    });
    log.close().unwrap();
    let r = verify_with(&[dir.path().to_path_buf()], &public, TailCheck::Closed);
    assert!(r.ok(), "{r:?}");
    assert_eq!(seen.lock().unwrap().len(), 1600);
}

struct ThreadWaker(std::thread::Thread);
impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn async_submit_pipelines_without_tokio() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open_new(dir.path(), AuditConfig::default());
    let h = log.handle();
    let pending: Vec<_> = (0..100)
        .map(|i| h.submit(&attempt(&i.to_string())).unwrap())
        .collect();
    let seqs: Vec<u64> = pending
        .into_iter()
        .map(|p| block_on(p).unwrap().seq)
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    log.close().unwrap();
}

#[test]
fn rotation_and_retention_keep_the_chain_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AuditConfig {
        rotate_bytes: 8 << 10,
        ..AuditConfig::default()
    };
    let (log, public) = open_new(dir.path(), cfg);
    for i in 0..60 {
        log.append(&attempt(&i.to_string())).unwrap();
    }
    log.close().unwrap();
    let files = log_files(dir.path()).unwrap();
    assert!(files.len() >= 4, "{files:?}");
    assert!(verify_with(&[dir.path().into()], &public, TailCheck::Closed).ok());
    assert_eq!(obj(&read_lines(&files[1])[0])["kind"], "file_start");

    // Cutting the tail of a middle file is caught at the boundary.
    let mut mid = read_lines(&files[1]);
    mid.truncate(mid.len() - 2);
    let saved = std::fs::read(&files[1]).unwrap();
    write_lines(&files[1], &mid);
    let found = verify_with(&[dir.path().into()], &public, TailCheck::Closed)
        .finding
        .unwrap();
    assert_eq!(found.class, TamperClass::TruncatedTail);
    assert_eq!(found.file, files[1]);
    std::fs::write(&files[1], saved).unwrap();

    // Retention deletes old files and says so; the rest still verifies on its own.
    let cfg = AuditConfig {
        rotate_bytes: 8 << 10,
        retain_files: 2,
        ..AuditConfig::default()
    };
    let key = SigningKey::generate().unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let public2 = key.public().clone();
    let (log, _) = AuditLog::open(dir2.path(), cfg, key).unwrap();
    for i in 0..60 {
        log.append(&attempt(&i.to_string())).unwrap();
    }
    log.close().unwrap();
    let files = log_files(dir2.path()).unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    let r = verify_with(&[dir2.path().into()], &public2, TailCheck::Closed);
    assert!(r.ok(), "{r:?}");
    assert!(r.first_seq.unwrap() > 0);
    // Deleting a retained file is not retention.
    std::fs::remove_file(&files[0]).unwrap();
    let found = verify_with(&[dir2.path().into()], &public2, TailCheck::Closed)
        .finding
        .unwrap();
    assert_eq!(found.class, TamperClass::Deleted);
}

#[test]
fn key_rotation_is_recorded_and_endorsed() {
    let dir = tempfile::tempdir().unwrap();
    let (log, public) = open_new(dir.path(), AuditConfig::default());
    log.append(&attempt("before")).unwrap();
    let new = SigningKey::generate().unwrap();
    let new_id = new.public().key_id.clone();
    log.handle().rotate_key(new).unwrap();
    log.append(&decision("after")).unwrap();
    log.close().unwrap();
    let lines = read_lines(&only_file(dir.path()));
    assert!(lines.iter().any(|l| obj(l)["kind"] == "key_rotation"));
    assert_eq!(
        obj(lines.last().unwrap())["unmapped"]["airlock"]["key_id"],
        new_id.as_str()
    );
    // Only the original key is given: the new one is trusted through the endorsement.
    let r = verify_with(&[dir.path().into()], &public, TailCheck::Closed);
    assert!(r.ok(), "{r:?}");
}

#[test]
fn held_action_records_share_a_correlation_id_and_cli_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("audit.key");
    let log_dir = dir.path().join("log");
    let (log, _) = AuditLog::open(
        &log_dir,
        AuditConfig::default(),
        SigningKey::load_or_create(&key_path).unwrap(),
    )
    .unwrap();
    let a = log.append(&attempt("corr-42")).unwrap();
    let d = log.append(&decision("corr-42")).unwrap();
    let o = log.append(&outcome("corr-42")).unwrap();
    assert!(a.seq < d.seq && d.seq < o.seq);
    log.close().unwrap();
    let recs: Vec<_> = read_lines(&only_file(&log_dir))
        .iter()
        .map(|l| obj(l))
        .filter(|v| v["metadata"]["uid"] == "corr-42")
        .collect();
    let classes: Vec<_> = recs
        .iter()
        .map(|v| {
            (
                v["kind"].clone(),
                v["class_uid"].clone(),
                v["disposition"].clone(),
            )
        })
        .collect();
    assert_eq!(
        classes,
        vec![
            ("attempt".into(), 1007.into(), "Delayed".into()),
            ("decision".into(), 6003.into(), "Allowed".into()),
            ("outcome".into(), 1007.into(), "Allowed".into())
        ]
    );
    assert_eq!(recs[1]["unmapped"]["airlock"]["quorum"]["met"], 2);

    let verify_args = |paths| VerifyArgs {
        paths,
        keys: vec![pub_path(&key_path)],
        json: true,
        live: false,
        closed: false,
        partial: false,
        max_gap_ms: 2500,
    };
    let code = run(AuditCommand::Verify(verify_args(vec![log_dir.clone()]))).unwrap();
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS)
    );
    let code = run(AuditCommand::Show(ShowArgs {
        id: "corr-42".into(),
        dir: log_dir.clone(),
    }))
    .unwrap();
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS)
    );
    let code = run(AuditCommand::Show(ShowArgs {
        id: "nope".into(),
        dir: log_dir.clone(),
    }))
    .unwrap();
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::from(1))
    );

    // Export the held action's range; it ends at a signed checkpoint and verifies alone.
    let out = dir.path().join("export.jsonl");
    run(AuditCommand::Export(ExportArgs {
        dir: log_dir.clone(),
        range: format!("{}..{}", a.seq, o.seq),
        out: Some(out.clone()),
    }))
    .unwrap();
    let exported = read_lines(&out);
    assert_eq!(obj(&exported[0])["seq"], a.seq);
    assert_eq!(obj(exported.last().unwrap())["kind"], "checkpoint");
    let mut args = verify_args(vec![out.clone()]);
    args.partial = true;
    let code = run(AuditCommand::Verify(args)).unwrap();
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS)
    );

    // Tampered log: exit code 1.
    let file = only_file(&log_dir);
    let s = std::fs::read_to_string(&file)
        .unwrap()
        .replacen("alice", "mallory", 1);
    std::fs::write(&file, s).unwrap();
    let code = run(AuditCommand::Verify(verify_args(vec![log_dir]))).unwrap();
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::from(1))
    );
}
