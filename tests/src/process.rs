//! Processes under test: spawned into a cgroup, inspected through /proc.

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

/// Spawns `cmd` with its child moved into `cgroup` before exec, so the exec itself is in
/// scope. Output is piped. Panics if the exec fails; see [`try_spawn_in`].
pub fn spawn_in(cgroup: &Path, cmd: &mut Command) -> Child {
    try_spawn_in(cgroup, cmd).unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"))
}

/// Like [`spawn_in`], returning the exec's error (EPERM when airlock denied it).
pub fn try_spawn_in(cgroup: &Path, cmd: &mut Command) -> std::io::Result<Child> {
    let procs = cgroup.join("cgroup.procs");
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    // SAFETY: the closure only makes async-signal-safe syscalls (open/write/close).
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
    }
    cmd.spawn()
}

/// The one-letter state of `pid` (R, S, T, Z…), or None when it is gone.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may contain spaces; the state follows its closing parenthesis.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
}

/// A private copy of a real binary (its own inode, so tests never share a watch).
pub fn tool_copy(dir: &Path, name: &str, source: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(source, &path).unwrap_or_else(|e| panic!("cannot copy {source}: {e}"));
    path
}

/// Children of `pid` (from /proc/PID/task/*/children).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

/// Spawns `tool args` into `cgroup` from a thread: std's `spawn` waits until the child's
/// exec succeeded or failed, and a held exec does neither until someone decides.
pub fn spawn_held(
    tool: &Path,
    args: &[&str],
    cgroup: &Path,
) -> std::thread::JoinHandle<std::io::Result<Child>> {
    let mut cmd = Command::new(tool);
    cmd.args(args);
    let procs = cgroup.join("cgroup.procs");
    std::thread::spawn(move || {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        // SAFETY: open/write/close only, which are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
        }
        cmd.spawn()
    })
}
