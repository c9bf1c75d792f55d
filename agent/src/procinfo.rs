//! What the approver should know about a held process, read from /proc while it is stopped.
//!
//! The process cannot change under us: it is in a group stop until we answer. Only its
//! parents may move on, so the chain is best effort and stops at the first one gone.

use std::path::PathBuf;

/// How many ancestors are reported.
const MAX_PARENTS: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub user: String,
    /// The current executable (for a held exec: the image that is asking to exec).
    pub binary: String,
    pub argv: Vec<String>,
    pub comm: String,
}

/// Reads `pid`'s own details, or `None` when it is gone.
pub fn read(pid: u32) -> Option<ProcessInfo> {
    let base = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(base.join("status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.trim().to_owned())
    };
    let ppid = field("PPid:").and_then(|v| v.parse().ok()).unwrap_or(0);
    let uid = field("Uid:")
        .and_then(|v| v.split_whitespace().next().and_then(|u| u.parse().ok()))
        .unwrap_or(u32::MAX);
    let argv = std::fs::read(base.join("cmdline"))
        .map(|raw| split_nul(&raw))
        .unwrap_or_default();
    Some(ProcessInfo {
        pid,
        ppid,
        uid,
        user: user_name(uid),
        binary: std::fs::read_link(base.join("exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        argv,
        comm: field("Name:").unwrap_or_default(),
    })
}

/// The ancestors of `pid`, nearest first, up to init.
pub fn parents(pid: u32) -> Vec<ProcessInfo> {
    let mut chain = Vec::new();
    let mut next = read(pid).map(|p| p.ppid).unwrap_or(0);
    while next > 1 && chain.len() < MAX_PARENTS {
        let Some(parent) = read(next) else { break };
        next = parent.ppid;
        chain.push(parent);
    }
    chain
}

/// The cgroup v2 path of `pid` (`0::/path` in /proc/PID/cgroup).
pub fn cgroup(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        })
        .unwrap_or_default()
}

pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid:{uid}"))
}

/// Splits a NUL-separated argument block (lossy UTF-8: approvers need to read it).
pub fn split_nul(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_its_parents() {
        let me = std::process::id();
        let info = read(me).expect("self");
        assert_eq!(info.pid, me);
        assert_eq!(info.uid, nix::unistd::getuid().as_raw());
        assert!(!info.argv.is_empty());
        let chain = parents(me);
        assert_eq!(chain.first().map(|p| p.pid), Some(info.ppid));
    }

    #[test]
    fn a_dead_pid_reads_as_none() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        child.wait().expect("wait");
        assert_eq!(read(pid), None);
    }

    #[test]
    fn splits_argument_blocks() {
        assert_eq!(split_nul(b"aws\0s3\0cp\0"), ["aws", "s3", "cp"]);
        assert_eq!(split_nul(b""), Vec::<String>::new());
    }
}
