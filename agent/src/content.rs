//! The exec content rule, user side: is the file a held process is about to execute a copy
//! of a watched tool?
//!
//! The kernel holds, from scope, exec of anonymous files (memfd, `O_TMPFILE`, unlinked) and
//! of files a watched process opened for writing; their inodes are not the watched ones.
//! Here the file is opened — by the path `bpf_d_path` gave when it still names the same
//! inode, else through `/proc/<pid>/fd/N` of the held process (a memfd is only reachable
//! that way) — hashed with SHA-256 and compared with the watched binaries' hashes, computed
//! when the watch list is resolved. Sizes are compared first, so only a file as long as some
//! tool is ever read in full for the comparison.

use std::{
    collections::HashMap,
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use agent_common::InodeKey;
use sha2::{Digest, Sha256};

use crate::resolve::ResolvedBinary;

/// Files larger than this are not hashed (the hold must not wait on a huge read).
pub const MAX_HASHED_BYTES: u64 = 256 << 20;

/// SHA-256 of every watched binary, indexed by size.
#[derive(Debug, Default, Clone)]
pub struct ToolDigests {
    by_size: HashMap<u64, Vec<(String, ResolvedBinary)>>,
}

/// What the content rule found out about an exec'd file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identified {
    /// The watched tool whose content this file has.
    pub copy_of: Option<ResolvedBinary>,
    /// Hex SHA-256 of the file, when it could be read.
    pub sha256: Option<String>,
    /// How the file was opened (its path, or `/proc/<pid>/fd/N`).
    pub opened: Option<PathBuf>,
}

impl ToolDigests {
    /// Hashes each tool; unreadable ones are logged and skipped (their inode is still
    /// watched, only copies of them go unnamed).
    pub fn new(tools: &[ResolvedBinary]) -> Self {
        let mut by_size: HashMap<u64, Vec<(String, ResolvedBinary)>> = HashMap::new();
        for tool in tools {
            match std::fs::File::open(&tool.path).and_then(|f| hash_file(f, MAX_HASHED_BYTES)) {
                Ok(Some((size, digest))) => by_size
                    .entry(size)
                    .or_default()
                    .push((digest, tool.clone())),
                Ok(None) => {
                    tracing::warn!(path = %tool.path.display(), "watched binary too large to hash; copies of it are not named");
                }
                Err(error) => {
                    tracing::warn!(%error, path = %tool.path.display(), "cannot hash watched binary; copies of it are not named");
                }
            }
        }
        Self { by_size }
    }

    /// Number of tools hashed.
    pub fn len(&self) -> usize {
        self.by_size.values().map(Vec::len).sum()
    }

    /// True when no tool could be hashed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finds the file `tgid` is executing (identity `key`, `bpf_d_path` gave `path`) and
    /// compares its content with the tools.
    pub fn identify(&self, tgid: u32, key: InodeKey, path: &str) -> Identified {
        self.identify_in(Path::new("/proc"), tgid, key, path)
    }

    fn identify_in(&self, proc: &Path, tgid: u32, key: InodeKey, path: &str) -> Identified {
        let Some((opened, file)) = open_exec_file(proc, tgid, key, path) else {
            return Identified::default();
        };
        let Ok(Some((size, digest))) = hash_file(file, MAX_HASHED_BYTES) else {
            return Identified {
                opened: Some(opened),
                ..Default::default()
            };
        };
        let copy_of = self
            .by_size
            .get(&size)
            .and_then(|tools| tools.iter().find(|(d, _)| *d == digest))
            .map(|(_, tool)| tool.clone());
        Identified {
            copy_of,
            sha256: Some(digest),
            opened: Some(opened),
        }
    }
}

/// Opens the file with inode `key.ino`: `path` if it still names it, else the held
/// process's open descriptors (memfd, `O_TMPFILE`, unlinked files, `fexecve`).
fn open_exec_file(
    proc: &Path,
    tgid: u32,
    key: InodeKey,
    path: &str,
) -> Option<(PathBuf, std::fs::File)> {
    let is_it = |m: &std::fs::Metadata| m.is_file() && m.ino() == key.ino;
    if path.starts_with('/')
        && !path.ends_with(" (deleted)")
        && let Ok(file) = std::fs::File::open(path)
        && file.metadata().is_ok_and(|m| is_it(&m))
    {
        return Some((PathBuf::from(path), file));
    }
    let fds = proc.join(tgid.to_string()).join("fd");
    for entry in std::fs::read_dir(&fds).ok()?.flatten() {
        let fd_path = entry.path();
        // metadata() follows the magic link to the open file itself.
        if std::fs::metadata(&fd_path).is_ok_and(|m| is_it(&m))
            && let Ok(file) = std::fs::File::open(&fd_path)
        {
            return Some((fd_path, file));
        }
    }
    None
}

/// (size, hex SHA-256) of everything `file` holds, or `None` when it is over `limit`.
fn hash_file(file: std::fs::File, limit: u64) -> std::io::Result<Option<(u64, String)>> {
    let mut hasher = Sha256::new();
    let mut reader = file.take(limit + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut size: u64 = 0;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    if size > limit {
        return Ok(None);
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Some((size, hex)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn tool(dir: &Path, name: &str, body: &[u8]) -> ResolvedBinary {
        let path = dir.join(name);
        std::fs::write(&path, body).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let meta = std::fs::metadata(&path).expect("meta");
        ResolvedBinary {
            name: name.to_owned(),
            path,
            key: InodeKey::new(1, meta.ino()),
        }
    }

    #[test]
    fn a_copy_is_named_after_its_tool_and_other_files_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dump = tool(dir.path(), "pg_dump", b"\x7fELF pg_dump body");
        let other = tool(dir.path(), "rclone", b"\x7fELF rclone body!");
        let digests = ToolDigests::new(&[dump.clone(), other]);
        assert_eq!(digests.len(), 2);

        let copy = dir.path().join("x");
        std::fs::copy(&dump.path, &copy).expect("copy");
        let ino = std::fs::metadata(&copy).expect("meta").ino();
        let found = digests.identify(0, InodeKey::new(1, ino), &copy.display().to_string());
        assert_eq!(
            found.copy_of.as_ref().map(|t| t.path.clone()),
            Some(dump.path)
        );
        assert_eq!(found.opened, Some(copy.clone()));
        assert_eq!(found.sha256.as_deref().map(str::len), Some(64));

        // Same size, different content: not a copy, still hashed.
        let same_size = dir.path().join("y");
        std::fs::write(&same_size, b"\x7fELF pg_dumX body").expect("write");
        let ino = std::fs::metadata(&same_size).expect("meta").ino();
        let found = digests.identify(0, InodeKey::new(1, ino), &same_size.display().to_string());
        assert_eq!(found.copy_of, None);
        assert!(found.sha256.is_some());
    }

    #[test]
    fn an_unlinked_file_is_found_through_the_processes_descriptors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dump = tool(dir.path(), "pg_dump", b"#!/bin/sh\necho dump\n");
        let digests = ToolDigests::new(std::slice::from_ref(&dump));
        let copy = dir.path().join("gone");
        std::fs::copy(&dump.path, &copy).expect("copy");
        // This process keeps it open, then it loses its name: the kernel says nlink == 0
        // and bpf_d_path says "... (deleted)".
        let held = std::fs::File::open(&copy).expect("open");
        let ino = held.metadata().expect("meta").ino();
        std::fs::remove_file(&copy).expect("unlink");
        let deleted = format!("{} (deleted)", copy.display());
        let found = digests.identify(std::process::id(), InodeKey::new(1, ino), &deleted);
        assert_eq!(found.copy_of.map(|t| t.name), Some("pg_dump".to_owned()));
        let opened = found.opened.expect("opened").display().to_string();
        assert!(
            opened.starts_with(&format!("/proc/{}/fd/", std::process::id())),
            "{opened}"
        );
        drop(held);
    }

    #[test]
    fn files_over_the_limit_are_not_hashed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        std::fs::write(&path, vec![0u8; 10]).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        assert_eq!(hash_file(file, 9).expect("read"), None);
        let file = std::fs::File::open(&path).expect("open");
        let (size, hex) = hash_file(file, 10).expect("read").expect("hashed");
        assert_eq!(size, 10);
        // sha256 of ten zero bytes
        assert_eq!(
            hex,
            "01d448afd928065458cf670b60f5a594d735af0172c8d67f22a81680132681ca"
        );
    }
}
