//! `cargo bench -p airlock-audit --bench audit` (wired as `cargo xtask bench audit`).
//!
//! Prints durable appends/s of ~1 KB records with group commit (several concurrent
//! appenders, each append waits for its fdatasync) and verify throughput in MB/s.
//! `AUDIT_BENCH_SECS` (default 3) sets the duration of each append run; `AUDIT_BENCH_DIR`
//! the directory (default: a temp dir under /var/tmp, i.e. a real disk, not tmpfs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use airlock_audit::{
    Action, Actor, Attempt, AuditConfig, AuditEvent, AuditLog, PolicyRef, SigningKey, TailCheck,
    VerifyOptions, verify,
};

fn event(id: u64) -> AuditEvent {
    AuditEvent::Attempt(Attempt {
        correlation_id: format!("bench-{id:016x}"),
        actor: Actor {
            pid: 4242,
            tid: 4243,
            uid: 1000,
            exe: "/usr/bin/aws".into(),
            cmd_line: "aws s3 cp /srv/data/export.tar.gz s3://bucket/key --profile ****".into(),
            cgroup: Some("/system.slice/agent.service".into()),
        },
        action: Action::Exec {
            path: "/usr/bin/aws".into(),
            argv: vec!["aws".into(), "s3".into(), "cp".into()],
        },
        policy: Some(PolicyRef {
            rule: "export-tools".into(),
            version: "7".into(),
        }),
        masked_context: BTreeMap::from([("AWS_SECRET_ACCESS_KEY".into(), "****".into())]),
        sealed_context: Some(vec![7; 32]),
    })
}

fn append_run(
    dir: &std::path::Path,
    threads: usize,
    in_flight: usize,
    secs: f64,
) -> (u64, u64, f64) {
    let key = SigningKey::generate().expect("key");
    let cfg = AuditConfig {
        rotate_bytes: 1 << 30,
        ..AuditConfig::default()
    };
    let (log, _) = AuditLog::open(dir, cfg, key).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let h = log.handle();
            let stop = stop.clone();
            let count = count.clone();
            s.spawn(move || {
                let mut i = (t as u64) << 40;
                let mut q = std::collections::VecDeque::with_capacity(in_flight);
                while !stop.load(Ordering::Relaxed) {
                    while q.len() < in_flight {
                        q.push_back(h.submit(&event(i)).expect("submit"));
                        i += 1;
                    }
                    if let Some(p) = q.pop_front() {
                        p.wait().expect("durable append");
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                for p in q {
                    p.wait().expect("durable append");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    log.close().expect("close");
    let bytes: u64 = airlock_audit::writer::log_files(dir)
        .expect("list")
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    (count.load(Ordering::Relaxed), bytes, elapsed)
}

fn main() {
    let secs: f64 = std::env::var("AUDIT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let base =
        std::env::var("AUDIT_BENCH_DIR").map_or_else(|_| PathBuf::from("/var/tmp"), PathBuf::from);
    let tmp = tempfile::Builder::new()
        .prefix("audit-bench")
        .tempdir_in(&base)
        .expect("temp dir");
    println!(
        "audit bench: {} cores, dir {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        base.display()
    );

    let mut biggest = None;
    for (threads, in_flight) in [(8, 1), (64, 1), (4, 256)] {
        let dir = tmp.path().join(format!("append-{threads}x{in_flight}"));
        let (n, bytes, elapsed) = append_run(&dir, threads, in_flight, secs);
        let per_sec = n as f64 / elapsed;
        let avg = bytes as f64 / n.max(1) as f64;
        println!(
            "append: {threads:>3} appenders x {in_flight:>3} in flight: {n} durable records in {elapsed:.2}s = {per_sec:.0} records/s, {:.1} MB/s (avg line {avg:.0} B incl. checkpoints)",
            bytes as f64 / elapsed / 1e6
        );
        if biggest.as_ref().is_none_or(|(b, _)| bytes > *b) {
            biggest = Some((bytes, dir));
        }
    }

    let Some((_, dir)) = biggest else { return };
    let mut opts = VerifyOptions::new(vec![]);
    opts.tail = TailCheck::Unchecked;
    // Trust whatever key signed the bench log: read it from the genesis record.
    let first = &airlock_audit::writer::log_files(&dir).expect("list")[0];
    let data = std::fs::read_to_string(first).expect("read");
    let genesis: serde_json::Value =
        serde_json::from_str(data.lines().next().unwrap_or("{}")).expect("genesis");
    let pk = genesis["unmapped"]["airlock"]["public_key"]
        .as_str()
        .unwrap_or_default();
    opts.trusted_keys
        .push(airlock_audit::PublicKey::from_base64(pk).expect("public key"));
    let _ = verify(std::slice::from_ref(&dir), &opts); // warm the page cache
    // Floors: reading the files and hashing them single-threaded.
    let files = airlock_audit::writer::log_files(&dir).expect("list");
    let t = Instant::now();
    let blobs: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("read"))
        .collect();
    let read_s = t.elapsed().as_secs_f64();
    let total: usize = blobs.iter().map(Vec::len).sum();
    let t = Instant::now();
    let mut n = 0u64;
    for b in &blobs {
        for l in b.split(|&c| c == b'\n') {
            n += u64::from(airlock_audit::record::sha256(l)[0]);
        }
    }
    let hash_s = t.elapsed().as_secs_f64();
    println!(
        "floor: read {:.0} MB/s, SHA-256 per line (1 thread) {:.0} MB/s [{n}]",
        total as f64 / read_s / 1e6,
        total as f64 / hash_s / 1e6
    );
    drop(blobs);
    for _ in 0..3 {
        let t = Instant::now();
        let r = verify(std::slice::from_ref(&dir), &opts).expect("verify");
        let e = t.elapsed().as_secs_f64();
        assert!(r.ok(), "bench log must verify: {:?}", r.finding);
        println!(
            "verify: {} records, {:.1} MB in {:.3}s = {:.0} MB/s ({} checkpoints)",
            r.records,
            r.bytes as f64 / 1e6,
            e,
            r.bytes as f64 / e / 1e6,
            r.checkpoints
        );
    }
}
