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
}

pub struct Agent {
    child: Child,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    pub audit: PathBuf,
}

impl Agent {
    pub fn config_text(spec: &AgentSpec<'_>, audit: &Path) -> String {
        let watch: Vec<String> = spec
            .watch
            .iter()
            .map(|p| format!("{:?}", p.display().to_string()))
            .collect();
        format!(
            "[agent]\nid = \"test-agent\"\naudit_log = {audit:?}\n\
             [hub]\nurl = {hub:?}\ndecision_ttl = {ttl:?}\n\
             [scope]\ncgroups = [{cg:?}]\n\
             [exec]\nwatch = [{watch}]\n",
            audit = audit.display().to_string(),
            hub = spec.hub_url,
            ttl = spec.ttl,
            cg = spec.cgroup.display().to_string(),
            watch = watch.join(", "),
        )
    }

    /// Starts `airlock run` and waits for READY=1 (panics with the agent's log otherwise).
    pub fn start(spec: &AgentSpec<'_>) -> Self {
        Self::start_with(spec, "")
    }

    /// As [`Agent::start`], with `extra` TOML (more sections) appended to the config.
    pub fn start_with(spec: &AgentSpec<'_>, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let audit = dir.path().join("audit.jsonl");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!("{}{extra}", Self::config_text(spec, &audit)),
        )
        .expect("write config");
        let notify = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&notify).expect("notify socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(120)))
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
        };
        let mut buf = [0u8; 256];
        loop {
            match socket.recv(&mut buf) {
                Ok(n) if String::from_utf8_lossy(&buf[..n]).contains("READY=1") => break,
                Ok(_) => continue,
                Err(e) => panic!("agent never became ready ({e}); log:\n{}", agent.log_text()),
            }
        }
        if let Ok(Some(status)) = agent.child.try_wait() {
            panic!("agent exited early ({status}); log:\n{}", agent.log_text());
        }
        agent
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Parsed audit records.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Crash (SIGKILL) and wait: nothing of the graceful stop runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Graceful stop (SIGTERM) and wait.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.child.wait().expect("wait agent")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}
