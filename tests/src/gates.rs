//! Helpers for the gate tests (issue #3): test addresses on `lo`, a TCP/UDP echo server,
//! and the "spawn, find its request, decide, collect" loop every gate test runs.

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use airlock_proto::v1::{ActionClass, ApprovalRequest};

use crate::{
    SLOW,
    agent::{Agent, AgentSpec},
    cgroup::TestCgroup,
    hub::Hub,
    process,
};

/// Non-loopback test addresses (TEST-NET / documentation prefixes) put on `lo`, so
/// traffic to them stays on this host but is not "loopback" to the egress gate.
pub const HELD_V4: &str = "192.0.2.10";
pub const HELD_V6: &str = "2001:db8::10";
/// On the allow list in the tests' config.
pub const ALLOWED_V4: &str = "198.51.100.10";

/// Adds the test addresses to `lo` (idempotent).
pub fn add_test_addresses() {
    for (family, addr) in [
        ("-4", "192.0.2.10/32"),
        ("-4", "198.51.100.10/32"),
        ("-6", "2001:db8::10/128"),
    ] {
        let mut cmd = Command::new("ip");
        cmd.args([family, "addr", "add", addr, "dev", "lo"]);
        if family == "-6" {
            cmd.arg("nodad");
        }
        let out = cmd.output().expect("run ip");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("File exists") || err.contains("already assigned"),
            "ip addr add {addr}: {err}"
        );
    }
}

/// A dual-stack TCP server answering each line with "pong <line>", and a UDP socket on the
/// same port recording datagrams.
pub struct EchoServer {
    pub port: u16,
    pub accepted: Arc<AtomicUsize>,
    /// First lines received on TCP connections.
    pub lines: Arc<Mutex<Vec<String>>>,
    pub datagrams: Arc<Mutex<Vec<String>>>,
}

impl EchoServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("[::]:0").expect("bind tcp");
        let port = listener.local_addr().expect("addr").port();
        let udp = UdpSocket::bind(("::", port)).expect("bind udp");
        let accepted = Arc::new(AtomicUsize::new(0));
        let datagrams = Arc::new(Mutex::new(Vec::new()));
        let count = accepted.clone();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen_lines = lines.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let seen_lines = seen_lines.clone();
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let mut reader = BufReader::new(&stream);
                    if reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if let Ok(mut v) = seen_lines.lock() {
                            v.push(String::from_utf8_lossy(line.as_bytes()).into_owned());
                        }
                        let _ = (&stream).write_all(format!("pong {line}").as_bytes());
                    }
                });
            }
        });
        let seen = datagrams.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, _)) = udp.recv_from(&mut buf) {
                if let Ok(mut v) = seen.lock() {
                    v.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        Self {
            port,
            accepted,
            lines,
            datagrams,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// What a gate test changes in the agent's config.
#[derive(Default)]
pub struct GateOptions<'a> {
    /// Lines added to the `[egress]` section (`hold_at = "first-send"`).
    pub extra_egress: &'a str,
    /// `[exec] watch`; None watches `/usr/bin/scp` only.
    pub watch: Option<Vec<PathBuf>>,
    /// `[policy] file`.
    pub policy: Option<&'a Path>,
}

/// Hub + agent + scope cgroup for one gate test.
pub struct GateSetup {
    pub hub: Hub,
    pub agent: Agent,
    pub cgroup: TestCgroup,
    pub dir: tempfile::TempDir,
}

/// The `[egress]`/`[files]` sections every gate test uses: `creds/*.key` and
/// `nested/*/deep/*.key` under `dir` are credential files, and [`ALLOWED_V4`] is allowed.
/// The safety-net rescan is an hour: changes after start are seen through inotify only.
pub fn gate_config(dir: &Path) -> String {
    format!(
        "[egress]\nallow = [\"198.51.100.0/24\"]\n[files]\ncredentials = [{:?}, {:?}]\n[rescan]\ninterval = \"1h\"\n",
        format!("{}/creds/*.key", dir.display()),
        format!("{}/nested/*/deep/*.key", dir.display())
    )
}

impl GateSetup {
    /// Starts everything; `prepare` runs after the cgroup exists and before the agent starts.
    pub fn start(name: &str, prepare: impl FnOnce(&TestCgroup, &Path)) -> Self {
        Self::start_with(name, "", prepare)
    }

    /// As [`GateSetup::start`], with `extra` lines added to the `[egress]` section.
    pub fn start_with(
        name: &str,
        extra_egress: &str,
        prepare: impl FnOnce(&TestCgroup, &Path),
    ) -> Self {
        Self::start_opts(
            name,
            &GateOptions {
                extra_egress,
                ..GateOptions::default()
            },
            prepare,
        )
    }

    /// As [`GateSetup::start`], with the watched binaries, policy and `[egress]` lines of
    /// `options`.
    pub fn start_opts(
        name: &str,
        options: &GateOptions<'_>,
        prepare: impl FnOnce(&TestCgroup, &Path),
    ) -> Self {
        add_test_addresses();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("creds")).expect("mkdir");
        let cgroup = TestCgroup::new(name);
        prepare(&cgroup, dir.path());
        let hub = Hub::start("300s");
        let agent = Agent::start_with(
            &AgentSpec {
                hub_url: &hub.url,
                cgroup: &cgroup.path,
                watch: options
                    .watch
                    .clone()
                    .unwrap_or_else(|| vec![PathBuf::from("/usr/bin/scp")]),
                ttl: "120s",
                policy: options.policy,
            },
            &gate_config(dir.path())
                .replace("[egress]\n", &format!("[egress]\n{}", options.extra_egress)),
        );
        Self {
            hub,
            agent,
            cgroup,
            dir,
        }
    }

    /// Crashes the agent (SIGKILL) and starts a new one with the same scope and rules.
    pub fn restart_agent_after_crash(&mut self) {
        let config = gate_config(self.dir.path());
        self.restart_agent_after_crash_with(&config);
    }

    /// As [`GateSetup::restart_agent_after_crash`], with `config` for the new agent's
    /// `[egress]`/`[files]` sections.
    pub fn restart_agent_after_crash_with(&mut self, config: &str) {
        self.agent.kill();
        self.agent = Agent::start_with(
            &AgentSpec {
                hub_url: &self.hub.url,
                cgroup: &self.cgroup.path,
                watch: vec![PathBuf::from("/usr/bin/scp")],
                ttl: "120s",
                policy: None,
            },
            config,
        );
    }

    /// Spawns `probe args…` inside the scope cgroup.
    pub fn spawn(&self, probe: &Path, args: &[&str]) -> Child {
        process::spawn_in(&self.cgroup.path, Command::new(probe).args(args))
    }

    /// Waits for a request of `class` whose actor is `pid` (or any actor when `pid` is 0).
    pub fn request_for(&self, class: ActionClass, pid: u32) -> ApprovalRequest {
        self.request_for_except(class, pid, &[])
    }

    /// As [`GateSetup::request_for`], skipping the requests in `except`.
    pub fn request_for_except(
        &self,
        class: ActionClass,
        pid: u32,
        except: &[&str],
    ) -> ApprovalRequest {
        self.request_within(class, pid, except, SLOW)
    }

    /// As [`GateSetup::request_for_except`], waiting up to `timeout` (a tool that takes
    /// long to start, like the aws CLI under TCG).
    pub fn request_within(
        &self,
        class: ActionClass,
        pid: u32,
        except: &[&str],
        timeout: Duration,
    ) -> ApprovalRequest {
        runtime().block_on(async {
            let approver = self.hub.approver("alice").await;
            approver
                .watch_for(timeout, |r| {
                    !except.contains(&r.id.as_str())
                        && r.action.as_ref().is_some_and(|a| {
                            a.class == class as i32
                                && (pid == 0 || a.actor.as_ref().is_some_and(|p| p.pid == pid))
                        })
                })
                .await
        })
    }

    pub fn approve(&self, request: &ApprovalRequest) {
        self.hub.cli_ok("alice", &["approve", &request.id]);
    }

    pub fn deny(&self, request: &ApprovalRequest) {
        self.hub
            .cli_ok("alice", &["deny", &request.id, "--reason", "test"]);
    }

    /// Every request the hub has, in any state.
    pub fn requests(&self) -> Vec<ApprovalRequest> {
        runtime().block_on(async { self.hub.approver("alice").await.list(&[]).await })
    }

    /// Waits for `child` while deciding (`allow`, as `alice` in `groups`) every request
    /// that appears meanwhile, and returns its output and the requests it caused, in
    /// order. A tool that retries after a refusal asks again; this is how many times.
    pub fn decide_until_exit(
        &self,
        child: Child,
        allow: bool,
        groups: &str,
    ) -> (Output, Vec<ApprovalRequest>) {
        let before: Vec<String> = self.requests().into_iter().map(|r| r.id).collect();
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let mut seen: Vec<ApprovalRequest> = Vec::new();
        let deadline = std::time::Instant::now() + SLOW * 5;
        loop {
            for r in self.requests() {
                if before.contains(&r.id) || seen.iter().any(|s| s.id == r.id) {
                    continue;
                }
                let mut args = vec![];
                if !groups.is_empty() {
                    args.extend(["--groups", groups]);
                }
                if allow {
                    args.extend(["approve", r.id.as_str()]);
                } else {
                    args.extend(["deny", r.id.as_str(), "--reason", "test"]);
                }
                self.hub.cli_ok("alice", &args);
                seen.push(r);
            }
            match rx.recv_timeout(Duration::from_millis(300)) {
                Ok(out) => {
                    // A request made just before the exit is still counted.
                    settle();
                    let late: Vec<ApprovalRequest> = self
                        .requests()
                        .into_iter()
                        .filter(|r| !before.contains(&r.id) && !seen.iter().any(|s| s.id == r.id))
                        .collect();
                    seen.extend(late);
                    return (out.expect("wait"), seen);
                }
                Err(_) if std::time::Instant::now() > deadline => {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    panic!("process {pid} did not finish within {:?}", SLOW * 5);
                }
                Err(_) => {}
            }
        }
    }

    /// Requests the hub has for `class`.
    pub fn count(&self, class: ActionClass) -> usize {
        runtime().block_on(async {
            let approver = self.hub.approver("alice").await;
            approver
                .list(&[])
                .await
                .iter()
                .filter(|r| r.action.as_ref().is_some_and(|a| a.class == class as i32))
                .count()
        })
    }
}

/// The destination a connect/send request names.
pub fn destination(request: &ApprovalRequest) -> airlock_proto::v1::Destination {
    request
        .action
        .as_ref()
        .and_then(|a| a.destination.clone())
        .expect("the request names a destination")
}

/// The process a request is about.
pub fn actor(request: &ApprovalRequest) -> airlock_proto::v1::Process {
    request
        .action
        .as_ref()
        .and_then(|a| a.actor.clone())
        .expect("the request names its process")
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Waits for `child` and returns its output, panicking after `SLOW`.
pub fn finish(child: Child) -> Output {
    finish_within(child, SLOW)
}

/// Waits for `child` and returns its output, panicking after `timeout`.
pub fn finish_within(child: Child, timeout: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("process {pid} did not finish within {timeout:?}")
        }
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the process failed with EPERM (gate_probe exits with the errno).
pub fn assert_eperm(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(libc::EPERM),
        "expected EPERM; stdout {:?} stderr {:?}",
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `pid` is stopped (the hold's SIGSTOP landed).
pub fn wait_stopped(pid: u32) {
    crate::wait_for(SLOW, "the held process to stop", || {
        (process::state(pid) == Some('T')).then_some(())
    });
}

/// Polls `f` for up to `SLOW`.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    crate::wait_for(SLOW, what, || f().then_some(()));
}

/// A short pause to let a wrongly emitted event reach the hub before asserting none did.
pub fn settle() {
    std::thread::sleep(Duration::from_secs(2));
}

impl Drop for GateSetup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.agent.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- agent log (last 40 lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
