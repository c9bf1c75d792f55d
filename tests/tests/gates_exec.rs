//! Issue #3, exec of export tools through wrappers: `sh -c`, `env`, a Python
//! `subprocess.run`, a hard-linked or renamed copy — each is held with the real tool's argv.

use std::{
    os::unix::process::CommandExt,
    process::{Command, Stdio},
};

use airlock_proto::v1::{ActionClass, RequestState};
use airlock_tests::{
    SLOW,
    gates::{finish, runtime, stdout},
    process::tool_copy,
};

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn wrappers_and_links_do_not_dodge_the_exec_gate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = tool_copy(dir.path(), "export-tool", "/bin/echo");
    let linked = dir.path().join("renamed-copy");
    std::fs::hard_link(&tool, &linked).expect("hard link");
    let (cgroup, hub, _agent) = airlock_tests::start_watching("exec-wrappers", &tool);
    let t = tool.display().to_string();
    let l = linked.display().to_string();
    let python = format!("import subprocess; subprocess.run([{t:?}, 'from', 'python'])");
    let cases: Vec<(Vec<String>, Vec<String>, bool)> = vec![
        (
            vec!["/bin/sh".into(), "-c".into(), format!("{t} from sh")],
            vec![t.clone(), "from".into(), "sh".into()],
            true,
        ),
        (
            vec![
                "/usr/bin/env".into(),
                t.clone(),
                "from".into(),
                "env".into(),
            ],
            vec![t.clone(), "from".into(), "env".into()],
            false,
        ),
        (
            vec!["python3".into(), "-c".into(), python],
            vec![t.clone(), "from".into(), "python".into()],
            true,
        ),
        (
            vec![l.clone(), "from".into(), "link".into()],
            vec![l.clone(), "from".into(), "link".into()],
            false,
        ),
    ];
    for (cmd, argv, approve) in cases {
        // From a thread: std's spawn waits for the exec, and a held exec waits for a human.
        let procs = cgroup.path.join("cgroup.procs");
        let spawn_cmd = cmd.clone();
        let spawned = std::thread::spawn(move || {
            let mut c = Command::new(&spawn_cmd[0]);
            c.args(&spawn_cmd[1..])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .stdin(Stdio::null());
            // SAFETY: open/write/close only, which are async-signal-safe.
            unsafe { c.pre_exec(move || std::fs::write(&procs, std::process::id().to_string())) };
            c.spawn()
        });
        let request = runtime().block_on(async {
            hub.approver("alice")
                .await
                .watch_for(SLOW, |r| {
                    r.state == RequestState::Pending as i32
                        && r.action
                            .as_ref()
                            .is_some_and(|a| a.class == ActionClass::Exec as i32 && a.argv == argv)
                })
                .await
        });
        let binary = request
            .action
            .as_ref()
            .map(|a| a.binary.clone())
            .unwrap_or_default();
        assert!(
            binary.ends_with("export-tool") || binary.ends_with("renamed-copy"),
            "{binary}"
        );
        if approve {
            hub.cli_ok("alice", &["approve", &request.id]);
            let out = finish(spawned.join().expect("thread").expect("spawn"));
            assert_eq!(
                stdout(&out),
                format!("{}\n", argv[1..].join(" ")),
                "{cmd:?}"
            );
        } else {
            hub.cli_ok("alice", &["deny", &request.id, "--reason", "test"]);
            match spawned.join().expect("thread") {
                // A direct exec fails in spawn with EPERM.
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{cmd:?}"),
                // env reports the failed exec itself and exits non-zero.
                Ok(child) => {
                    let out = finish(child);
                    assert!(!out.status.success(), "{cmd:?} must fail: {out:?}");
                    assert_eq!(stdout(&out), "");
                }
            }
        }
    }
}
