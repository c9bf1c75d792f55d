//! Resolves the configured scope cgroups to the ids the kernel reports.
//!
//! A cgroup v2 id is the inode number of its directory in the cgroup2 file system, which is
//! what `bpf_get_current_cgroup_id()` returns for a task inside it.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Where cgroup v2 is mounted on unified-hierarchy hosts (systemd's default).
pub const CGROUP2_DEFAULT_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("scope cgroup {path} does not exist ({source}); create it or fix scope.cgroups")]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scope cgroup {0} is not a directory on a cgroup v2 file system")]
    NotCgroup2(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeCgroup {
    pub path: PathBuf,
    pub id: u64,
}

/// Where cgroup v2 is mounted here: the first `cgroup2` mount (hybrid hosts put it at
/// `/sys/fs/cgroup/unified`), else [`CGROUP2_DEFAULT_ROOT`].
pub fn cgroup2_root() -> PathBuf {
    std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|mounts| {
            mounts.lines().find_map(|line| {
                let mut fields = line.split_ascii_whitespace();
                let (_, dir, fstype) = (fields.next()?, fields.next()?, fields.next()?);
                (fstype == "cgroup2").then(|| PathBuf::from(dir))
            })
        })
        .unwrap_or_else(|| PathBuf::from(CGROUP2_DEFAULT_ROOT))
}

/// Resolves one configured cgroup (absolute, or relative to [`cgroup2_root`]).
///
/// # Errors
/// [`ScopeError`] naming the path.
pub fn resolve(configured: &Path) -> Result<ScopeCgroup, ScopeError> {
    let path = if configured.is_absolute() {
        configured.to_owned()
    } else {
        cgroup2_root().join(configured)
    };
    let meta = std::fs::metadata(&path).map_err(|source| ScopeError::Missing {
        path: path.clone(),
        source,
    })?;
    let fs = nix::sys::statfs::statfs(&path).map_err(|_| ScopeError::NotCgroup2(path.clone()))?;
    if !meta.is_dir() || fs.filesystem_type().0 as i64 != CGROUP2_SUPER_MAGIC {
        return Err(ScopeError::NotCgroup2(path));
    }
    Ok(ScopeCgroup {
        id: meta.ino(),
        path,
    })
}

/// Every cgroup below `scope` (recursively), so processes in a unit's sub-cgroups are in
/// scope too. Unreadable directories are skipped.
pub fn descendant_cgroups(scope: &[ScopeCgroup]) -> Vec<ScopeCgroup> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = scope.iter().map(|s| s.path.clone()).collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if let Ok(meta) = entry.metadata()
                && meta.is_dir()
            {
                out.push(ScopeCgroup {
                    id: meta.ino(),
                    path: path.clone(),
                });
                stack.push(path);
            }
        }
    }
    out
}

/// Processes already running that are in scope: members of the scoped cgroups and every
/// process descended from one (by parent pid), wherever they live now. Found by walking
/// /proc once; the fork tracepoint covers everything after it is attached. (A process
/// whose ancestor in scope already exited was re-parented and cannot be traced back; it
/// is in scope only if it is still in a scoped cgroup.)
pub fn existing_tasks(scope: &[ScopeCgroup]) -> Vec<u32> {
    let root = cgroup2_root();
    let scoped: Vec<PathBuf> = scope.iter().map(|s| s.path.clone()).collect();
    let mut parent: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    let mut seeds = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = ppid(pid) {
            parent.insert(pid, ppid);
        }
        let cgroup = crate::procinfo::cgroup(pid);
        let path = root.join(cgroup.trim_start_matches('/'));
        if scoped.iter().any(|s| path.starts_with(s)) {
            seeds.push(pid);
        }
    }
    let mut out: Vec<u32> = parent
        .keys()
        .copied()
        .filter(|pid| {
            let mut cur = *pid;
            for _ in 0..64 {
                if seeds.contains(&cur) {
                    return true;
                }
                match parent.get(&cur) {
                    Some(&p) if p > 1 && p != cur => cur = p,
                    _ => return false,
                }
            }
            false
        })
        .collect();
    out.sort_unstable();
    out
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_tasks_of_the_root_cgroup_include_this_process() {
        let root = cgroup2_root();
        let scope = resolve(&root).expect("root");
        let tasks = existing_tasks(&[scope]);
        assert!(tasks.contains(&std::process::id()));
    }

    #[test]
    fn missing_and_non_cgroup_paths_are_refused() {
        let err = resolve(Path::new("/nonexistent/cg"))
            .expect_err("missing")
            .to_string();
        assert!(
            err.starts_with("scope cgroup /nonexistent/cg does not exist"),
            "{err}"
        );
        let err = resolve(Path::new("/tmp"))
            .expect_err("not a cgroup")
            .to_string();
        assert_eq!(
            err,
            "scope cgroup /tmp is not a directory on a cgroup v2 file system"
        );
    }

    #[test]
    fn the_cgroup2_root_resolves_to_its_inode() {
        let root = cgroup2_root();
        let meta = std::fs::metadata(&root).expect("the test host needs cgroup v2");
        let scope = resolve(&root).expect("cgroup2 root");
        assert_eq!(scope.id, meta.ino());
    }
}
