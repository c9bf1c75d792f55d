//! A cgroup v2 directory per test, removed (after killing its members) on drop.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let root = cgroup2_root();
        let path = root.join(format!("airlock-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create test cgroup {}: {e}", path.display()));
        Self { path }
    }

    /// Moves `pid` into this cgroup.
    pub fn add(&self, pid: u32) {
        add_pid(&self.path, pid)
            .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", self.path.display()));
    }
}

/// Writes `pid` to `cgroup/cgroup.procs`; usable from `pre_exec` (no allocation on the
/// error path matters there, the child just fails).
pub fn add_pid(cgroup: &Path, pid: u32) -> std::io::Result<()> {
    let mut procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))?;
    procs.write_all(pid.to_string().as_bytes())
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(pids) = std::fs::read_to_string(self.path.join("cgroup.procs")) {
            for pid in pids.lines().filter_map(|p| p.parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

pub fn cgroup2_root() -> PathBuf {
    std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                let f: Vec<&str> = l.split_ascii_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
        })
        .expect("no cgroup2 mount on this host")
}
