//! Issue #3, the exec content rule: a copy of a watched tool (`cp` then exec) and a
//! memfd-executed copy have their own inodes, yet are held and named as the tool, so the
//! policy's rules for that tool apply; an anonymous executable or a written script that is
//! no tool's copy is held too (asks); binaries the watched processes did not write are not
//! held.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
};

use airlock_proto::v1::{ActionClass, ApprovalRequest, RequestState};
use airlock_tests::{
    SLOW,
    agent::Agent,
    airlock_of,
    cgroup::TestCgroup,
    gates::{finish, runtime, settle, stdout},
    hub::Hub,
    process::{spawn_in, tool_copy},
};

const HEADER: &str = "version = 1\n[defaults]\nexec = \"allow\"\nconnect = \"allow\"\nsend = \"allow\"\nopen = \"allow\"\n[defaults.ask]\napprovers = [\"oncall\"]\nttl = \"2m\"\n[groups.oncall]\n";

/// Writes `argv[1]`'s content into a memfd and executes it through /proc/self/fd with the
/// remaining arguments; prints the errno if the exec fails.
const MEMFD_EXEC: &str = "import os, sys\n\
data = open(sys.argv[1], 'rb').read()\n\
fd = os.memfd_create('payload')\n\
os.write(fd, data)\n\
try:\n    os.execv(f'/proc/self/fd/{fd}', ['payload'] + sys.argv[2:])\n\
except OSError as e:\n    print('errno', e.errno, flush=True)\n    sys.exit(3)\n";

struct Setup {
    hub: Hub,
    agent: Agent,
    cgroup: TestCgroup,
}

impl Setup {
    /// Spawns `cmd` in scope from a thread (a held exec blocks std's spawn until decided).
    fn spawn(&self, cmd: Vec<String>) -> std::thread::JoinHandle<Child> {
        let cgroup = self.cgroup.path.clone();
        std::thread::spawn(move || spawn_in(&cgroup, Command::new(&cmd[0]).args(&cmd[1..])))
    }

    fn pending(
        &self,
        what: &str,
        pred: impl Fn(&airlock_proto::v1::ActionContext) -> bool,
    ) -> ApprovalRequest {
        let request = runtime().block_on(async {
            self.hub
                .approver("alice")
                .await
                .watch_for(SLOW, |r| {
                    r.state == RequestState::Pending as i32
                        && r.action
                            .as_ref()
                            .is_some_and(|a| a.class == ActionClass::Exec as i32 && pred(a))
                })
                .await
        });
        eprintln!("{what}: request {} {:?}", request.id, request.action);
        request
    }

    fn pending_count(&self) -> usize {
        runtime().block_on(async { self.hub.approver("alice").await.list(&[]).await.len() })
    }
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn copies_and_memfd_execs_are_held_and_named_after_the_tool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exporter = tool_copy(dir.path(), "exporter", "/bin/echo");
    let dumper = tool_copy(dir.path(), "dumper", "/bin/cat");
    // Written by this (unwatched) test process: not the content rule's business.
    let plain = tool_copy(dir.path(), "plain", "/bin/true");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let policy = dir.path().join("policy.toml");
    let rule = |id: &str, binary: &Path, outcome: &str| {
        format!(
            "[[rule]]\nid = \"{id}\"\non = [\"exec\"]\nbinary = [\"{}\"]\noutcome = \"{outcome}\"\n",
            binary.display()
        )
    };
    std::fs::write(
        &policy,
        format!(
            "{HEADER}{}{}",
            rule("exports-ask", &exporter, "ask"),
            rule("no-dumps", &dumper, "deny")
        ),
    )
    .expect("policy");
    let (cgroup, hub, agent) = airlock_tests::start_with_policy("exec-content", &policy);
    let s = Setup { hub, agent, cgroup };
    let text = |p: &PathBuf| p.display().to_string();

    // Binaries no watched process wrote run without a request.
    for bin in ["/bin/true".to_owned(), text(&plain)] {
        let out = finish(spawn_in(&s.cgroup.path, &mut Command::new(&bin)));
        assert!(out.status.success(), "{bin}: {out:?}");
    }
    settle();
    assert_eq!(s.pending_count(), 0, "nothing was held");

    // cp + exec: held, named as the tool, judged by the tool's rule; approve → it runs.
    let copy = work.join("x");
    let spawned = s.spawn(vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "cp {} {} && {} from copy",
            text(&exporter),
            text(&copy),
            text(&copy)
        ),
    ]);
    let request = s.pending("copy", |a| a.file == text(&copy));
    let action = request.action.clone().expect("action");
    assert_eq!(action.binary, text(&exporter), "named as the tool");
    assert_eq!(
        action.rule_id, "exports-ask",
        "the tool's policy rule applies"
    );
    assert!(
        action
            .impact
            .contains(&format!("copy of {}", text(&exporter))),
        "{}",
        action.impact
    );
    assert_eq!(action.argv, [text(&copy), "from".into(), "copy".into()]);
    s.hub
        .cli_ok("alice", &["--groups", "oncall", "approve", &request.id]);
    let out = finish(spawned.join().expect("thread"));
    assert_eq!(stdout(&out), "from copy\n");
    let attempt = s.agent.wait_record(&request.id, "attempt");
    eprintln!("attempt: {attempt}");

    // A copy of a denied tool is denied by that tool's rule at once (EPERM), no request.
    let dump_copy = work.join("d");
    let out = finish(
        s.spawn(vec![
            "/bin/sh".into(),
            "-c".into(),
            format!(
                "cp {} {} && {} /etc/hostname",
                text(&dumper),
                text(&dump_copy),
                text(&dump_copy)
            ),
        ])
        .join()
        .expect("thread"),
    );
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );
    let records = s.agent.audit_records();
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "decision" && airlock_of(r)["policy"]["rule"] == "no-dumps"),
        "the dumper's rule denied its copy"
    );

    // A script the scope wrote is no tool's copy: held as written (asks although the
    // policy's exec default is allow); deny → the shell reports EPERM.
    let script = work.join("s.sh");
    let spawned = s.spawn(vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "printf '#!/bin/sh\\necho script ran\\n' > {0} && chmod +x {0} && {0}",
            text(&script)
        ),
    ]);
    let request = s.pending("written", |a| a.rule_id == "exec.written");
    let action = request.action.clone().expect("action");
    assert_eq!(action.file, text(&script));
    assert!(
        action.rule_reason.contains("sha256 "),
        "{}",
        action.rule_reason
    );
    s.hub
        .cli_ok("alice", &["deny", &request.id, "--reason", "test"]);
    let out = finish(spawned.join().expect("thread"));
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied")
            || String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );

    // memfd holding the exporter: held as the exporter; deny → execve fails with EPERM.
    let python = |src: &Path, args: &[&str]| {
        let mut cmd = vec![
            "python3".to_owned(),
            "-c".into(),
            MEMFD_EXEC.into(),
            text(&src.to_owned()),
        ];
        cmd.extend(args.iter().map(|a| (*a).to_owned()));
        cmd
    };
    let spawned = s.spawn(python(&exporter, &["from", "memfd"]));
    let request = s.pending("memfd copy", |a| a.file.starts_with("/memfd:payload"));
    let action = request.action.clone().expect("action");
    assert_eq!(action.binary, text(&exporter));
    assert_eq!(action.rule_id, "exports-ask");
    assert_eq!(action.argv, ["payload", "from", "memfd"]);
    s.hub.decide("alice", "oncall", &request.id, false);
    let out = finish(spawned.join().expect("thread"));
    assert_eq!(stdout(&out), format!("errno {}\n", libc::EPERM), "{out:?}");

    // memfd holding something else: an anonymous executable, held (asks) though the
    // policy's exec default is allow; approve → it runs.
    let spawned = s.spawn(python(Path::new("/usr/bin/basename"), &["/x/anonymous"]));
    let request = s.pending("anonymous", |a| a.rule_id == "exec.anonymous");
    let action = request.action.clone().expect("action");
    assert!(
        action.binary.starts_with("/memfd:payload"),
        "{}",
        action.binary
    );
    assert_eq!(action.argv, ["payload", "/x/anonymous"]);
    s.hub.cli_ok("alice", &["approve", &request.id]);
    let out = finish(spawned.join().expect("thread"));
    assert_eq!(stdout(&out), "anonymous\n");
}
