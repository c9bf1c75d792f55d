//! Issue #3, credential files: opens of files matching the credential globs are held, by
//! (dev, inode), whatever path reaches them — symlink, hard link, relative path,
//! `/proc/self/root/...`, openat2, io_uring — and files that appear or are replaced after
//! the agent started are picked up.

use std::{path::Path, process::Command};

use airlock_proto::v1::ActionClass;
use airlock_tests::{
    gates::{GateSetup, assert_eperm, finish, settle, stdout, wait_stopped},
    process,
};

const SECRET: &str = "aws_secret_access_key = SECRET-1\n";

fn probe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_gate_probe"))
}

fn setup(name: &str) -> GateSetup {
    GateSetup::start(name, |_, dir| {
        std::fs::write(dir.join("creds/aws.key"), SECRET).expect("write secret");
        std::fs::write(dir.join("plain.txt"), "not a secret\n").expect("write plain");
    })
}

fn opened_file(s: &GateSetup, pid: u32) -> (airlock_proto::v1::ApprovalRequest, String) {
    let request = s.request_for(ActionClass::Open, pid);
    let file = request
        .action
        .as_ref()
        .map(|a| a.file.clone())
        .unwrap_or_default();
    (request, file)
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn credential_read_is_held_then_approved_or_denied() {
    let s = setup("files-basic");
    let secret = s.dir.path().join("creds/aws.key");
    let secret_str = secret.display().to_string();

    let child = s.spawn(probe(), &["cat", &secret_str]);
    let (request, file) = opened_file(&s, child.id());
    assert_eq!(file, secret_str, "the opened path comes from bpf_d_path");
    wait_stopped(child.id());
    s.approve(&request);
    let out = finish(child);
    assert_eq!(stdout(&out), SECRET);

    let child = s.spawn(probe(), &["cat", &secret_str]);
    let (request, _) = opened_file(&s, child.id());
    s.deny(&request);
    let out = finish(child);
    assert_eperm(&out);
    assert_eq!(stdout(&out), "", "nothing read");

    // Other files and out-of-scope readers are never asked about.
    let plain = s.dir.path().join("plain.txt").display().to_string();
    assert_eq!(
        stdout(&finish(s.spawn(probe(), &["cat", &plain]))),
        "not a secret\n"
    );
    let out = Command::new(probe())
        .args(["cat", &secret_str])
        .output()
        .expect("run");
    assert_eq!(stdout(&out), SECRET);
    settle();
    assert_eq!(s.count(ActionClass::Open), 2);
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn no_path_dodges_the_inode_match() {
    let s = setup("files-dodges");
    let dir = s.dir.path();
    let secret = dir.join("creds/aws.key");
    std::os::unix::fs::symlink(&secret, dir.join("innocent-link")).expect("symlink");
    std::fs::hard_link(&secret, dir.join("innocent-hardlink")).expect("hardlink");
    let d = |p: &str| dir.join(p).display().to_string();
    let proc_root = format!("/proc/self/root{}", secret.display());

    let cases: Vec<(&str, Vec<String>, Option<&Path>, String)> = vec![
        (
            "symlink",
            vec!["cat".into(), d("innocent-link")],
            None,
            secret.display().to_string(),
        ),
        (
            "hardlink",
            vec!["cat".into(), d("innocent-hardlink")],
            None,
            d("innocent-hardlink"),
        ),
        (
            "relative",
            vec!["cat".into(), "creds/aws.key".into()],
            Some(dir),
            secret.display().to_string(),
        ),
        (
            "proc-root",
            vec!["cat".into(), proc_root],
            None,
            secret.display().to_string(),
        ),
        (
            "openat2",
            vec!["openat2".into(), secret.display().to_string()],
            None,
            secret.display().to_string(),
        ),
    ];
    for (name, args, cwd, expected_path) in cases {
        let mut cmd = Command::new(probe());
        cmd.args(&args);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let child = process::spawn_in(&s.cgroup.path, &mut cmd);
        let (request, file) = opened_file(&s, child.id());
        assert_eq!(file, expected_path, "{name}: reported path");
        s.deny(&request);
        let out = finish(child);
        assert_eperm(&out);
        assert_eq!(stdout(&out), "", "{name}: nothing read");
    }

    // io_uring: refused until approved, then the retry reads the file.
    let child = s.spawn(probe(), &["uring-open", &secret.display().to_string()]);
    let (request, file) = opened_file(&s, child.id());
    assert_eq!(file, secret.display().to_string());
    s.approve(&request);
    let out = finish(child);
    assert_eq!(stdout(&out), SECRET, "{out:?}");
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn files_that_appear_or_are_replaced_later_are_held() {
    let s = setup("files-later");
    let dir = s.dir.path();
    // Appears after the agent started.
    let fresh = dir.join("creds/new.key");
    std::fs::write(&fresh, "NEW\n").expect("write");
    // Replaced by rename (new inode), as credential helpers do.
    let tmp = dir.join("creds/.aws.tmp");
    std::fs::write(&tmp, "ROTATED\n").expect("write");
    std::fs::rename(&tmp, dir.join("creds/aws.key")).expect("rename");
    // The agent re-resolves every 2 s.
    std::thread::sleep(std::time::Duration::from_secs(5));

    for (path, content) in [
        (fresh.clone(), "NEW\n"),
        (dir.join("creds/aws.key"), "ROTATED\n"),
    ] {
        let child = s.spawn(probe(), &["cat", &path.display().to_string()]);
        let (request, file) = opened_file(&s, child.id());
        assert_eq!(file, path.display().to_string());
        s.approve(&request);
        assert_eq!(stdout(&finish(child)), content);
    }
}
