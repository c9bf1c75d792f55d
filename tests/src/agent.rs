//! A real agent process with a generated config, started and awaited like systemd would
//! (Type=notify: READY=1 on NOTIFY_SOCKET once the gates are attached).

use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::airlock_bin;

pub struct AgentSpec<'a> {
    pub hub_url: &'a str,
    pub cgroup: &'a Path,
    pub watch: Vec<PathBuf>,
    pub ttl: &'a str,
    /// `[policy] file`, when the test drives decisions through a policy.
    pub policy: Option<&'a Path>,
}

pub struct Agent {
    child: Child,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    /// The signed audit log's directory (`[audit] dir`).
    pub audit: PathBuf,
    /// Its signing key's public half (for `airlock audit verify --key`).
    pub audit_pub: PathBuf,
    /// The auditors' private key (for `airlock reveal --auditor-key`).
    pub auditor_key: PathBuf,
    stopped: Option<std::process::ExitStatus>,
}

impl Agent {
    /// The config for `spec`, keeping the agent's state (audit log, keys) under `state`.
    pub fn config_text(spec: &AgentSpec<'_>, state: &Path) -> String {
        let audit = state.join("audit");
        let watch: Vec<String> = spec
            .watch
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect();
        format!(
            "[agent]\nid = \"test-agent\"\n\
             [hub]\nurl = {hub:?}\ndecision_ttl = {ttl:?}\n\
             [scope]\ncgroups = [{cg:?}]\n\
             [exec]\nwatch = [{watch}]\n\
             [audit]\ndir = {audit:?}\nsigning_key = {key:?}\n\
             [masking]\nauditor_public_key = {auditor:?}\nfingerprint_key = {fp:?}\n{policy}",
            audit = audit.display().to_string(),
            key = state.join("audit.key").display().to_string(),
            auditor = state.join("auditor.key.pub").display().to_string(),
            fp = state.join("fingerprint.key").display().to_string(),
            hub = spec.hub_url,
            ttl = spec.ttl,
            cg = spec.cgroup.display().to_string(),
            watch = watch.join(", "),
            policy = spec
                .policy
                .map(|p| format!("[policy]\nfile = {:?}\n", p.display().to_string()))
                .unwrap_or_default(),
        )
    }

    /// Starts `airlock run` and waits for READY=1 (panics with the agent's log otherwise).
    pub fn start(spec: &AgentSpec<'_>) -> Self {
        Self::start_with(spec, "")
    }

    /// As [`Agent::start`], with `extra` TOML (more sections) appended to the config.
    pub fn start_with(spec: &AgentSpec<'_>, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let auditor_key = dir.path().join("auditor.key");
        let keygen = Command::new(airlock_bin())
            .arg("auditor-keygen")
            .arg(&auditor_key)
            .output()
            .expect("run keygen");
        assert!(
            keygen.status.success(),
            "auditor-keygen: {}",
            String::from_utf8_lossy(&keygen.stderr)
        );
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!("{}{extra}", Self::config_text(spec, dir.path())),
        )
        .expect("write config");
        let audit = dir.path().join("audit");
        let audit_pub = dir.path().join("audit.key.pub");
        let notify = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&notify).expect("notify socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let log = dir.path().join("agent.log");
        let child = Command::new(airlock_bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify)
            .env("AIRLOCK_LOG", "info,airlock_agent=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn agent");
        let mut agent = Self {
            child,
            dir,
            log,
            audit,
            audit_pub,
            auditor_key,
            stopped: None,
        };
        let mut buf = [0u8; 256];
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(n) = socket.recv(&mut buf)
                && String::from_utf8_lossy(&buf[..n]).contains("READY=1")
            {
                break;
            }
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!(
                    "agent exited before it was ready ({status}); log:\n{}",
                    agent.log_text()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agent not ready after 120 s; log:\n{}",
                agent.log_text()
            );
        }
        agent
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Parsed audit records, oldest first, from every `audit-*.jsonl` file.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        self.audit_log_files()
            .iter()
            .flat_map(|f| complete_lines(&std::fs::read_to_string(f).unwrap_or_default()))
            .map(|l| serde_json::from_str(&l).expect("audit line is JSON"))
            .collect()
    }

    /// The audit log file being written now (the newest `audit-*.jsonl`).
    pub fn audit_file(&self) -> PathBuf {
        self.audit_log_files()
            .pop()
            .expect("the agent has an audit log file")
    }

    /// The `audit-*.jsonl` files of the agent's log, oldest first.
    fn audit_log_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.audit)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        });
        files.sort();
        files
    }

    /// The records whose correlation id is `id`, oldest first.
    pub fn records_for(&self, id: &str) -> Vec<serde_json::Value> {
        self.audit_records()
            .into_iter()
            .filter(|r| r["metadata"]["uid"] == id)
            .collect()
    }

    /// Waits until the record of `kind` for request `id` is on disk and returns it.
    pub fn wait_record(&self, id: &str, kind: &str) -> serde_json::Value {
        crate::wait_for(crate::SLOW, &format!("the {kind} record of {id}"), || {
            self.records_for(id).into_iter().find(|r| r["kind"] == kind)
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGHUP (policy reload).
    pub fn hangup(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    }

    /// Crash (SIGKILL) and wait: nothing of the graceful stop runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Graceful stop (SIGTERM) and wait.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    /// Graceful stop (SIGTERM) and wait, keeping the agent's state directory (audit log,
    /// keys) until `self` is dropped.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        if let Some(status) = self.stopped {
            return status;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = self.child.wait().expect("wait agent");
        self.stopped = Some(status);
        status
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.stopped.is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// The newline-terminated lines of `text`: a line the agent is still writing is not a record
/// yet.
fn complete_lines(text: &str) -> Vec<String> {
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(str::to_owned).collect()
}
