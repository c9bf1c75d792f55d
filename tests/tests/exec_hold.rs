//! Issue #2's slice, end to end against a real kernel: a watched exec in the scope cgroup
//! waits, frozen, until a human decides through the real hub and CLI.
//!
//! Needs root and BPF LSM: `cargo xtask test` runs these inside QEMU on Debian 6.1 and 6.12
//! kernels (`--ignored`), and natively on hosts that have BPF LSM.

use std::{
    io,
    path::{Path, PathBuf},
    process::{Child, Command},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use airlock_proto::v1::{ActionClass, ApprovalRequest, RequestState};
use airlock_tests::{
    SLOW,
    agent::{Agent, AgentSpec},
    airlock_of,
    cgroup::TestCgroup,
    gates::{actor, runtime},
    hub::Hub,
    process::{self, tool_copy},
    wait_for,
};

struct Setup {
    hub: Hub,
    agent: Agent,
    cgroup: TestCgroup,
    tool: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup(name: &str, ttl: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = tool_copy(dir.path(), "export-tool", "/bin/echo");
    let cgroup = TestCgroup::new(name);
    let hub = Hub::start("300s");
    let agent = Agent::start(&AgentSpec {
        hub_url: &hub.url,
        cgroup: &cgroup.path,
        watch: vec![tool.clone()],
        ttl,
        policy: None,
    });
    Setup {
        hub,
        agent,
        cgroup,
        tool,
        _dir: dir,
    }
}

/// Spawns in a thread: std's `spawn` waits until the child's exec succeeded or failed, and
/// a held exec does neither until someone decides.
fn spawn_held(setup: &Setup, args: &[&str]) -> JoinHandle<io::Result<Child>> {
    let mut cmd = Command::new(&setup.tool);
    cmd.args(args);
    let cgroup = setup.cgroup.path.clone();
    std::thread::spawn(move || {
        let procs = cgroup.join("cgroup.procs");
        cmd.stdout(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null());
        // SAFETY: open/write/close only, which are async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                std::fs::write(&procs, std::process::id().to_string())
            });
        }
        cmd.spawn()
    })
}

fn is_for(tool: &Path) -> impl Fn(&ApprovalRequest) -> bool + '_ {
    move |r| {
        r.action
            .as_ref()
            .is_some_and(|a| a.binary == tool.display().to_string())
    }
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn approved_exec_runs_to_completion_with_its_real_output() {
    let s = setup("approve", "120s");
    let spawned = spawn_held(&s, &["hello", "from", "an", "agent"]);
    let request = runtime().block_on(async {
        let approver = s.hub.approver("alice").await;
        approver.watch_for(SLOW, is_for(&s.tool)).await
    });
    let action = request.action.clone().expect("action");
    assert_eq!(action.class, ActionClass::Exec as i32);
    assert_eq!(
        action.argv,
        [
            s.tool.display().to_string(),
            "hello".into(),
            "from".into(),
            "an".into(),
            "agent".into()
        ]
    );
    let pid = actor(&request).pid;
    assert_eq!(
        process::state(pid),
        Some('T'),
        "the held process must be stopped"
    );
    assert!(!spawned.is_finished(), "exec must not return while held");

    s.hub.cli_ok("alice", &["approve", &request.id]);
    let child = spawned
        .join()
        .expect("thread")
        .expect("approved exec succeeds");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from an agent\n"
    );

    s.agent.wait_record(&request.id, "outcome");
    let records = s.agent.records_for(&request.id);
    let kinds: Vec<_> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds, ["attempt", "decision", "outcome"], "{records:?}");
    assert_eq!(airlock_of(&records[1])["verdict"], "allowed");
    assert_eq!(airlock_of(&records[2])["outcome"], "completed");
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn denied_exec_fails_with_eperm_in_the_parent() {
    let s = setup("deny", "120s");
    let spawned = spawn_held(&s, &["secret-export"]);
    let request = runtime().block_on(async {
        s.hub
            .approver("bob")
            .await
            .watch_for(SLOW, is_for(&s.tool))
            .await
    });
    let out = s.hub.cli(
        "bob",
        &["deny", &request.id, "--reason", "not during the audit"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = spawned
        .join()
        .expect("thread")
        .expect_err("denied exec must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    let final_state = runtime().block_on(async {
        s.hub
            .approver("bob")
            .await
            .wait_final(&request.id, SLOW)
            .await
    });
    assert_eq!(final_state.state, RequestState::Denied as i32);
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn no_decision_within_the_ttl_means_eperm() {
    let s = setup("ttl", "3s");
    let started = Instant::now();
    let spawned = spawn_held(&s, &["waits-forever"]);
    let err = spawned
        .join()
        .expect("thread")
        .expect_err("expired exec must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "denied before the TTL: {:?}",
        started.elapsed()
    );
    // The outcome is written right after the release, so it may trail the EPERM slightly.
    wait_for(SLOW, "the expiry in the audit log", || {
        s.agent
            .audit_records()
            .into_iter()
            .find(|r| r["kind"] == "outcome" && airlock_of(r)["outcome"] == "expired")
    });
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn stray_sigcont_neither_releases_nor_asks_twice() {
    let s = setup("sigcont", "120s");
    let spawned = spawn_held(&s, &["still", "held"]);
    let rt = runtime();
    let request = rt.block_on(async {
        s.hub
            .approver("carol")
            .await
            .watch_for(SLOW, is_for(&s.tool))
            .await
    });
    let pid = actor(&request).pid;
    for _ in 0..3 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGCONT,
        )
        .expect("SIGCONT");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The restarted syscall finds no verdict and stops the task again.
    wait_for(SLOW, "the task to stop again", || {
        (process::state(pid) == Some('T')).then_some(())
    });
    assert!(
        !spawned.is_finished(),
        "a stray SIGCONT let the exec through"
    );
    let pending = rt.block_on(async {
        s.hub
            .approver("carol")
            .await
            .list(&[RequestState::Pending])
            .await
    });
    assert_eq!(
        pending.iter().filter(|r| is_for(&s.tool)(r)).count(),
        1,
        "one request, not one per SIGCONT"
    );

    s.hub.cli_ok("carol", &["approve", &request.id]);
    let out = spawned
        .join()
        .expect("thread")
        .expect("runs")
        .wait_with_output()
        .expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still held\n");
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn sigkill_of_the_held_process_cancels_its_request() {
    let s = setup("sigkill", "120s");
    let spawned = spawn_held(&s, &["doomed"]);
    let rt = runtime();
    let approver = rt.block_on(s.hub.approver("dave"));
    let request = rt.block_on(approver.watch_for(SLOW, is_for(&s.tool)));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(actor(&request).pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL");
    let _ = spawned.join();
    let final_state = rt.block_on(approver.wait_final(&request.id, SLOW));
    assert_eq!(final_state.state, RequestState::Cancelled as i32);
    let died = s.agent.wait_record(&request.id, "outcome");
    let died = airlock_of(&died)["outcome"] == "process_died";
    assert!(died, "the death is recorded");
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn out_of_scope_and_unwatched_execs_run_untouched_without_events() {
    let s = setup("untouched", "120s");
    // Same watched binary, but from a process outside the scope cgroup.
    let out = Command::new(&s.tool).arg("outside").output().expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "outside\n");
    // An unwatched binary inside the scope cgroup.
    let child = process::spawn_in(&s.cgroup.path, Command::new("/bin/echo").arg("inside"));
    let out = child.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "inside\n");
    // Give a (wrongly) emitted event time to reach the hub before checking none did.
    std::thread::sleep(Duration::from_secs(2));
    let all = runtime().block_on(async { s.hub.approver("erin").await.list(&[]).await });
    assert!(all.is_empty(), "no request expected, got {all:?}");
    assert!(
        !s.agent
            .audit_records()
            .iter()
            .any(|r| r["kind"] == "attempt"),
        "no attempt recorded"
    );
    assert!(!s.agent.log_text().contains("exec held"));
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn a_duration_grant_covers_the_same_command_and_nothing_else() {
    let s = setup("grant", "120s");
    let rt = runtime();
    let approver = rt.block_on(s.hub.approver("grace"));
    let first = spawn_held(&s, &["sync", "reports"]);
    let request = rt.block_on(approver.watch_for(SLOW, is_for(&s.tool)));
    s.hub
        .cli_ok("grace", &["approve", &request.id, "--for", "1h"]);
    let out = first
        .join()
        .expect("thread")
        .expect("approved")
        .wait_with_output()
        .expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sync reports\n");

    // The same binary with the same arguments: the grant answers, no human is asked.
    let again = spawn_held(&s, &["sync", "reports"]);
    let out = again
        .join()
        .expect("thread")
        .expect("granted")
        .wait_with_output()
        .expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "sync reports\n");
    let all = rt.block_on(approver.list(&[]));
    let granted: Vec<_> = all
        .iter()
        .filter(|r| r.id != request.id && r.state == RequestState::Approved as i32)
        .collect();
    assert_eq!(
        granted.len(),
        1,
        "the repeat was approved by the grant: {all:?}"
    );
    assert!(granted[0].votes.is_empty(), "nobody voted on the repeat");

    // Other arguments are a different action: held and asked again.
    let other = spawn_held(&s, &["sync", "customers"]);
    let asked = rt.block_on(approver.watch_for(SLOW, |r| {
        r.state == RequestState::Pending as i32
            && r.action
                .as_ref()
                .is_some_and(|a| a.argv.last().is_some_and(|x| x == "customers"))
    }));
    s.hub
        .cli_ok("grace", &["deny", &asked.id, "--reason", "customer data"]);
    let err = other.join().expect("thread").expect_err("denied");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
}
