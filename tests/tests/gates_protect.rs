//! Issue #3, self-protection of the agent's files against removal and replacement: from
//! scope, `rm`, `mv` (away and over) and `ln -f` on the audit file, the policy file and a
//! file created later in the audit directory fail with EPERM and are audited; so do new
//! names in the audit directory, writes to and truncation of the later file, removing a
//! pinned link and moving the audit directory, and chmod, chown, `chattr +i` and setxattr on
//! them. Outside the scope the same operations are not affected.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use airlock_tests::{
    airlock_of,
    gates::{eventually, finish},
    process::spawn_in,
};

const POLICY: &str = "version = 1\n[defaults]\nexec = \"allow\"\nconnect = \"allow\"\nsend = \"allow\"\nopen = \"allow\"\n[defaults.ask]\napprovers = [\"oncall\"]\nttl = \"2m\"\n[groups.oncall]\n";

fn sh(cgroup: &Path, script: &str) -> Output {
    finish(spawn_in(
        cgroup,
        Command::new("/bin/sh").args(["-c", script]),
    ))
}

fn assert_refused(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Operation not permitted"),
        "{what} must fail with EPERM: {out:?}"
    );
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn the_agents_files_cannot_be_removed_or_replaced_from_scope() {
    let conf = tempfile::tempdir().expect("tempdir");
    let policy = conf.path().join("policy.toml");
    std::fs::write(&policy, POLICY).expect("policy");
    let (cgroup, hub, agent) = airlock_tests::start_with_policy("protect-fs", &policy);
    let audit = agent.audit_file();
    // Created after the agent started, as a rotated file would be: covered by its
    // directory's inode, never added by user space.
    let rotated = agent.audit.join("audit-0.jsonl.1");
    std::fs::write(&rotated, "{}\n").expect("rotated file");
    let evil = conf.path().join("evil");
    std::fs::write(&evil, "tampered\n").expect("evil");
    let away = conf.path().join("away");
    let t = |p: &PathBuf| p.display().to_string();
    let modes = |p: &PathBuf| {
        let m = std::fs::metadata(p).expect("exists");
        (m.mode(), m.uid())
    };
    let before: Vec<(u32, u32)> = [&audit, &rotated, &policy].map(modes).to_vec();

    for target in [&audit, &policy, &rotated] {
        let ino = std::fs::metadata(target).expect("exists").ino();
        let name = t(target);
        for (what, script) in [
            ("rm", format!("rm -f {name}")),
            ("mv away", format!("mv -f {name} {}", t(&away))),
            ("mv over", format!("mv -f {} {name}", t(&evil))),
            ("ln -f", format!("ln -f {} {name}", t(&evil))),
        ] {
            assert_refused(&sh(&cgroup.path, &script), &format!("{what} {name}"));
            assert_eq!(
                std::fs::metadata(target).map(|m| m.ino()).ok(),
                Some(ino),
                "{what}: {name} is still the agent's file"
            );
        }
    }
    assert!(!away.exists());
    assert!(evil.exists(), "the rename over did not happen");
    let pinned_link = PathBuf::from("/sys/fs/bpf/airlock/links/open_check");
    assert!(pinned_link.exists(), "the agent pins its links");
    for (what, script) in [
        (
            "write to a later file",
            format!("echo tampered >> {}", t(&rotated)),
        ),
        ("truncate", format!("truncate -s 0 {}", t(&audit))),
        (
            "truncate a later file",
            format!("truncate -s 0 {}", t(&rotated)),
        ),
        ("new file", format!("touch {}", t(&agent.audit.join("new")))),
        ("mkdir", format!("mkdir {}", t(&agent.audit.join("sub")))),
        (
            "symlink",
            format!(
                "ln -s /etc/passwd {}",
                t(&agent.audit.join("audit-z.jsonl"))
            ),
        ),
        (
            "mv the directory",
            format!("mv {} {}", t(&agent.audit), t(&away)),
        ),
        ("rm a pinned link", format!("rm -f {}", t(&pinned_link))),
        ("chmod", format!("chmod 000 {}", t(&audit))),
        ("chmod a later file", format!("chmod 777 {}", t(&rotated))),
        ("chown", format!("chown nobody {}", t(&policy))),
        // +i on the log or its directory would stop the daemon appending and rotating.
        ("chattr +i", format!("chattr +i {}", t(&audit))),
        (
            "chattr +i the directory",
            format!("chattr +i {}", t(&agent.audit)),
        ),
        (
            "setxattr",
            format!(
                "python3 -c 'import os; os.setxattr(\"{}\", \"trusted.airlock\", b\"1\")'",
                t(&policy)
            ),
        ),
    ] {
        assert_refused(&sh(&cgroup.path, &script), what);
    }
    assert_eq!(modes(&audit), before[0], "the audit file keeps its mode");
    assert_eq!(modes(&rotated), before[1]);
    assert_eq!(modes(&policy), before[2], "the policy keeps its owner");
    let attrs = Command::new("lsattr")
        .args(["-d", &t(&audit), &t(&agent.audit)])
        .output()
        .expect("lsattr");
    assert!(
        !String::from_utf8_lossy(&attrs.stdout)
            .split_whitespace()
            .any(|word| word.contains('i') && word.starts_with('-')),
        "no immutable flag was set: {attrs:?}"
    );
    let xattrs = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.listxattr(sys.argv[1]))",
            &t(&policy),
        ])
        .output()
        .expect("listxattr");
    assert_eq!(String::from_utf8_lossy(&xattrs.stdout).trim(), "[]");
    assert!(pinned_link.exists());
    assert!(!agent.audit.join("new").exists());
    assert_eq!(std::fs::read_to_string(&rotated).expect("rotated"), "{}\n");

    // The records name each rule and the full path of the later file.
    let wanted = [
        "protect.unlink",
        "protect.rename",
        "protect.link",
        "protect.create",
        "protect.write",
        "protect.attr",
    ];
    eventually("every denial to be audited", || {
        let records = agent.audit_records();
        let rules: Vec<&str> = records
            .iter()
            .filter(|r| r["kind"] == "self_protection")
            .filter_map(|r| airlock_of(r)["hook"].as_str())
            .collect();
        wanted.iter().all(|w| rules.contains(w))
    });
    let records = agent.audit_records();
    let text: Vec<String> = records
        .iter()
        .filter(|r| r["kind"] == "self_protection")
        .map(|r| r.to_string())
        .collect();
    assert!(
        text.iter()
            .any(|r| r.contains("protect.unlink") && r.contains(&t(&rotated))),
        "the unlink of the later file is recorded with its path: {text:#?}"
    );
    assert!(
        text.iter()
            .any(|r| r.contains("protect.rename") && r.contains(&t(&policy))),
        "the rename over the policy is recorded with its path"
    );
    assert!(
        text.iter().any(|r| r.contains("protect.attr")
            && r.contains(&format!("\"path\":\"{}\"", t(&agent.audit)))),
        "the chattr of the audit directory is recorded with its path: {text:#?}"
    );

    // Outside the scope the same operations are not the gate's business.
    let moved = agent.audit.join("audit-0.jsonl.2");
    std::fs::rename(&rotated, &moved).expect("mv out of scope");
    std::fs::remove_file(&moved).expect("rm out of scope");
    std::fs::write(agent.audit.join("scratch"), "").expect("create out of scope");
    std::fs::remove_file(agent.audit.join("scratch")).expect("rm out of scope");
    // And in scope, files that are not the agent's are not affected.
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(before[0].0))
        .expect("chmod out of scope");
    let out = sh(
        &cgroup.path,
        &format!(
            "chmod 600 {evil} && chattr +a {evil} && chattr -a {evil} && mv {evil} {away} && rm {away}",
            evil = t(&evil),
            away = t(&away)
        ),
    );
    assert!(out.status.success(), "{out:?}");
    drop(hub);
}
