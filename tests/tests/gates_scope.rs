//! Issue #3, scope and self-protection: double-forked `setsid` daemons, processes that move
//! to another cgroup and processes that were already running when the agent started stay
//! watched; from scope, killing or ptracing the daemon, `bpf()` and writes to the agent's
//! files are denied (EPERM) and audited.

use std::{path::Path, process::Command};

use airlock_proto::v1::ActionClass;
use airlock_tests::{
    cgroup::TestCgroup,
    gates::{
        ALLOWED_V4, EchoServer, GateSetup, HELD_V4, HELD_V6, assert_eperm, eventually, finish,
        gate_config, stdout, wait_stopped,
    },
    process,
};

fn probe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_gate_probe"))
}

/// The cgroup the request says its actor ran in.
fn cgroup_of(request: &airlock_proto::v1::ApprovalRequest) -> String {
    request
        .action
        .as_ref()
        .map(|a| a.cgroup.clone())
        .unwrap_or_default()
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn a_double_forked_setsid_daemon_is_still_held() {
    let s = GateSetup::start("scope-daemon", |_, _| {});
    let server = EchoServer::start();
    let out_file = s.dir.path().join("daemon.out");
    let out_str = out_file.display().to_string();
    let port = server.port.to_string();
    let parent = finish(s.spawn(probe(), &["daemonize", &out_str, "connect", HELD_V4, &port]));
    assert_eq!(
        stdout(&parent),
        "parent exits\n",
        "the launcher returns at once"
    );
    let request = s.request_for(ActionClass::Connect, 0);
    let actor = request
        .action
        .as_ref()
        .and_then(|a| a.actor.clone())
        .expect("actor");
    assert_eq!(process::state(actor.pid), Some('T'));
    s.approve(&request);
    let done = format!("{out_str}.done");
    eventually("the daemon to finish", || Path::new(&done).exists());
    assert_eq!(
        std::fs::read_to_string(&out_file).expect("out"),
        "connected\npong ping\n"
    );
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn moving_to_another_cgroup_does_not_unwatch() {
    let s = GateSetup::start("scope-move", |_, _| {});
    let elsewhere = TestCgroup::new("scope-move-elsewhere");
    let server = EchoServer::start();
    let port = server.port.to_string();
    let child = s.spawn(
        probe(),
        &[
            "move-cgroup",
            &elsewhere.path.display().to_string(),
            "connect",
            HELD_V4,
            &port,
        ],
    );
    let request = s.request_for(ActionClass::Connect, child.id());
    let cgroup = cgroup_of(&request);
    assert!(
        cgroup.contains("scope-move-elsewhere"),
        "it did move: {cgroup}"
    );
    s.deny(&request);
    assert_eperm(&finish(child));
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn processes_running_before_the_agent_started_are_in_scope() {
    let elsewhere = TestCgroup::new("scope-pre-elsewhere");
    let server = EchoServer::start();
    let port = server.port.to_string();
    let trigger_dir = tempfile::tempdir().expect("tempdir");
    let trigger = trigger_dir.path().join("go");
    let trigger_str = trigger.display().to_string();
    let elsewhere_str = elsewhere.path.display().to_string();
    let mut early = None;
    // Parent stays in the scope cgroup; its child moves elsewhere before the agent starts
    // and only connects once told to.
    let s = GateSetup::start("scope-pre", |cgroup, _| {
        let child = process::spawn_in(
            &cgroup.path,
            Command::new(probe()).args([
                "fork-child",
                "move-cgroup",
                &elsewhere_str,
                "wait-file",
                &trigger_str,
                "connect",
                HELD_V4,
                &port,
            ]),
        );
        eventually("the child to move", || {
            std::fs::read_to_string(elsewhere.path.join("cgroup.procs"))
                .is_ok_and(|p| !p.trim().is_empty())
        });
        early = Some(child);
    });
    let parent = early.expect("spawned");
    std::fs::write(&trigger, "").expect("trigger");
    let request = s.request_for(ActionClass::Connect, 0);
    let actor = request
        .action
        .as_ref()
        .and_then(|a| a.actor.clone())
        .expect("actor");
    assert_ne!(actor.pid, parent.id(), "the moved child is the one held");
    s.approve(&request);
    let out = finish(parent);
    assert_eq!(stdout(&out), "connected\npong ping\nchild exit 0\n");
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn the_daemon_cannot_be_killed_traced_or_tampered_with_from_scope() {
    let s = GateSetup::start("protect", |_, _| {});
    let agent_pid = s.agent.pid().to_string();
    let audit = s.agent.audit_file().display().to_string();
    let config = s.agent.config_path().display().to_string();
    for args in [
        vec!["kill", agent_pid.as_str(), "9"],
        vec!["kill", agent_pid.as_str(), "15"],
        vec!["ptrace", agent_pid.as_str()],
        vec!["bpf"],
        vec!["write", audit.as_str()],
        vec!["write", config.as_str()],
    ] {
        let out = finish(s.spawn(probe(), &args));
        assert_eperm(&out);
    }
    assert!(
        process::state(s.agent.pid()).is_some_and(|st| st != 'Z'),
        "the agent is alive"
    );
    // The same calls from outside the scope are not the gate's business.
    let out = Command::new(probe()).arg("bpf").output().expect("run");
    assert_eq!(stdout(&out), "bpf allowed\n");
    let records = s.agent.audit_records();
    let rules: Vec<String> = records
        .iter()
        .filter(|r| r["kind"] == "self_protection")
        .map(|r| {
            airlock_tests::airlock_of(r)["hook"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for rule in [
        "protect.kill",
        "protect.ptrace",
        "protect.bpf",
        "protect.write",
    ] {
        assert!(rules.iter().any(|r| r == rule), "{rule} audited: {rules:?}");
    }
    assert!(
        !std::fs::read_to_string(&audit)
            .expect("audit")
            .contains("tampered")
    );
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn a_crashed_daemon_leaves_the_gates_up_and_a_restart_readopts_held_tasks() {
    let mut s = GateSetup::start("pinned", |_, _| {});
    let server = EchoServer::start();
    let port = server.port.to_string();
    let first = s.spawn(probe(), &["connect", HELD_V4, &port]);
    let old = s.request_for(ActionClass::Connect, first.id());
    wait_stopped(first.id());
    s.agent.kill();
    // No daemon: the pinned gates still hold a new attempt.
    let second = s.spawn(probe(), &["connect", HELD_V6, &port]);
    wait_stopped(second.id());
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(process::state(first.id()), Some('T'), "still held");
    assert_eq!(
        server.accepted(),
        0,
        "nothing got through while the daemon was down"
    );

    s.restart_agent_after_crash();
    let again = s.request_for_except(ActionClass::Connect, first.id(), &[&old.id]);
    let new = s.request_for(ActionClass::Connect, second.id());
    s.approve(&again);
    s.deny(&new);
    assert_eq!(stdout(&finish(first)), "connected\npong ping\n");
    assert_eperm(&finish(second));
    assert_eq!(server.accepted(), 1);
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn a_restarted_agent_drops_what_its_configuration_no_longer_allows() {
    let mut s = GateSetup::start("pin-narrower", |_, _| {});
    let server = EchoServer::start();
    let port = server.port.to_string();
    let out = finish(s.spawn(probe(), &["connect", ALLOWED_V4, &port]));
    assert_eq!(
        stdout(&out),
        "connected\npong ping\n",
        "allowed by the first config"
    );

    // Same pinned maps, but the new configuration allows nothing beyond the defaults.
    let narrower = gate_config(s.dir.path()).replace("allow = [\"198.51.100.0/24\"]", "allow = []");
    assert_ne!(narrower, gate_config(s.dir.path()));
    s.restart_agent_after_crash_with(&narrower);
    let child = s.spawn(probe(), &["connect", ALLOWED_V4, &port]);
    let request = s.request_for(ActionClass::Connect, child.id());
    s.deny(&request);
    assert_eperm(&finish(child));
    assert_eq!(
        server.accepted(),
        1,
        "the stale allowed prefix let nothing through"
    );
}

/// A cgroup made inside the scope cgroup by the test, emptied and removed first on drop.
struct SubCgroup(std::path::PathBuf);

impl Drop for SubCgroup {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.0.join("cgroup.procs")) {
            for pid in pids.lines().filter_map(|p| p.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn a_sub_cgroup_made_after_start_is_in_scope() {
    use std::os::unix::fs::MetadataExt;
    let s = GateSetup::start("scope-subcgroup", |_, dir| {
        std::fs::write(dir.join("creds/sub.key"), "SUB\n").expect("write secret");
    });
    // After READY: the gate config's rescan is an hour, so only inotify can report it.
    let sub = SubCgroup(s.cgroup.path.join("later-unit"));
    std::fs::create_dir(&sub.0).expect("mkdir sub-cgroup");
    let id = std::fs::metadata(&sub.0).expect("stat").ino();
    let want = format!("id={id}");
    eventually("the agent to add the new sub-cgroup", || {
        s.agent
            .log_text()
            .lines()
            .any(|l| l.contains("new scope cgroup") && l.contains(&want))
    });
    let secret = s.dir.path().join("creds/sub.key").display().to_string();
    let child = process::spawn_in(&sub.0, Command::new(probe()).args(["cat", &secret]));
    let request = s.request_for(ActionClass::Open, child.id());
    let cgroup = cgroup_of(&request);
    assert!(
        cgroup.ends_with("later-unit"),
        "in the new sub-cgroup: {cgroup}"
    );
    s.deny(&request);
    let out = finish(child);
    assert_eperm(&out);
    assert_eq!(stdout(&out), "");
}
