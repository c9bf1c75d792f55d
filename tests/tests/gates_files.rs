//! Issue #3, credential files: opens of files matching the credential globs are held, by
//! (dev, inode), whatever path reaches them — symlink, hard link, relative path,
//! `/proc/self/root/...`, openat2, io_uring — and files that appear or are replaced after
//! the agent started, in directories that did not exist yet too, are picked up (through
//! inotify: the tests' safety-net rescan is an hour).

use std::{os::unix::fs::MetadataExt, path::Path, process::Command};

use airlock_proto::v1::ActionClass;
use airlock_tests::{
    gates::{GateSetup, assert_eperm, eventually, finish, settle, stdout, wait_stopped},
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

    // The same dodges with the real tools: coreutils `cat` approved reads the secret, a Python
    // `open()` denied fails with EPERM and reads nothing.
    let python = airlock_tests::tools::tool("python3");
    let read_py = "import sys; sys.stdout.write(open(sys.argv[1]).read())";
    let dodges = [
        (d("innocent-link"), None),
        (d("innocent-hardlink"), None),
        ("creds/aws.key".to_owned(), Some(dir)),
        (format!("/proc/self/root{}", secret.display()), None),
    ];
    for (path, cwd) in dodges {
        for approve in [true, false] {
            let mut cmd = if approve {
                let mut cat = Command::new("/bin/cat");
                cat.arg(&path);
                cat
            } else {
                let mut py = Command::new(&python);
                py.args(["-c", read_py, &path]);
                py
            };
            if let Some(cwd) = cwd {
                cmd.current_dir(cwd);
            }
            let child = process::spawn_in(&s.cgroup.path, &mut cmd);
            let (request, _) = opened_file(&s, child.id());
            if approve {
                s.approve(&request);
                let out = finish(child);
                assert!(out.status.success(), "cat {path}: {out:?}");
                assert_eq!(stdout(&out), SECRET, "cat {path}");
            } else {
                s.deny(&request);
                let out = finish(child);
                assert!(!out.status.success(), "python {path}: {out:?}");
                assert_eq!(stdout(&out), "", "python {path}: nothing read");
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("PermissionError") && err.contains("Operation not permitted"),
                    "python {path}: {err}"
                );
            }
        }
    }

    // io_uring: refused until approved, then the retry reads the file.
    let child = s.spawn(probe(), &["uring-open", &secret.display().to_string()]);
    let (request, file) = opened_file(&s, child.id());
    assert_eq!(file, secret.display().to_string());
    s.approve(&request);
    let out = finish(child);
    assert_eq!(stdout(&out), SECRET, "{out:?}");
}

/// Waits until the agent's log says `path` (as its inode is now) is a credential file: the
/// line is written after the kernel map has the key. The gate config's safety-net rescan
/// is an hour, so within `SLOW` only an inotify event can have led there.
fn wait_picked_up(s: &GateSetup, path: &Path) {
    let canon = path.canonicalize().expect("canonicalize");
    let ino = std::fs::metadata(&canon).expect("stat").ino();
    let want_path = format!("path={}", canon.display());
    let want_ino = format!("ino={ino}");
    eventually(
        &format!("the agent to pick up {} (inode {ino})", canon.display()),
        || {
            s.agent.log_text().lines().any(|l| {
                l.contains("credential file appeared")
                    && l.contains(&want_path)
                    && l.contains(&want_ino)
            })
        },
    );
}

/// A read from scope of `path` is held; approved, it reads `content`.
fn assert_held(s: &GateSetup, path: &Path, content: &str) {
    let child = s.spawn(probe(), &["cat", &path.display().to_string()]);
    let (request, file) = opened_file(s, child.id());
    assert_eq!(file, path.display().to_string());
    s.approve(&request);
    assert_eq!(stdout(&finish(child)), content);
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn files_that_appear_or_are_replaced_later_are_held() {
    let s = setup("files-later");
    let dir = s.dir.path();

    // (1) Appears after the agent started.
    let fresh = dir.join("creds/new.key");
    std::fs::write(&fresh, "NEW\n").expect("write");
    wait_picked_up(&s, &fresh);
    assert_held(&s, &fresh, "NEW\n");

    // (2) Replaced by rename over it (new inode), as credential helpers and editors do.
    let secret = dir.join("creds/aws.key");
    let old_ino = std::fs::metadata(&secret).expect("stat").ino();
    let tmp = dir.join("creds/.aws.tmp");
    std::fs::write(&tmp, "ROTATED\n").expect("write");
    std::fs::rename(&tmp, &secret).expect("rename");
    assert_ne!(std::fs::metadata(&secret).expect("stat").ino(), old_ino);
    wait_picked_up(&s, &secret);
    assert_held(&s, &secret, "ROTATED\n");

    // (3) A directory tree that did not exist, made in one go, with the file written at
    // once (before the agent can have watched the new directories).
    let deep = dir.join("nested/project-a/deep");
    std::fs::create_dir_all(&deep).expect("mkdir -p");
    let nested = deep.join("id.key");
    std::fs::write(&nested, "DEEP\n").expect("write");
    wait_picked_up(&s, &nested);
    assert_held(&s, &nested, "DEEP\n");

    // Out of the glob: a file in the same new tree that does not match is never asked about.
    let plain = deep.join("notes.txt");
    std::fs::write(&plain, "plain\n").expect("write");
    assert_eq!(
        stdout(&finish(
            s.spawn(probe(), &["cat", &plain.display().to_string()])
        )),
        "plain\n"
    );
}
