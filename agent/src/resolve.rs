//! Turns the names and paths in the config into the identities the kernel compares.
//!
//! The kernel sees `inode->i_sb->s_dev` and `inode->i_ino`. `stat()`'s `st_dev` is not always
//! the superblock's device (btrfs subvolumes, overlayfs report others), so the device comes
//! from the mount the file lives on: `statx(STATX_MNT_ID)` names the mount, and
//! `/proc/self/mountinfo` gives that mount's superblock `major:minor`.

use std::{
    collections::HashMap,
    ffi::CString,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
};

use agent_common::InodeKey;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("watched binary `{name}` was not found in {search_path}")]
    NotFound { name: String, search_path: String },
    #[error("watched binary {path} does not exist: {source}")]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("watched binary {0} is not an executable regular file")]
    NotExecutable(PathBuf),
    #[error("cannot identify the file system of {path}: {reason}")]
    Mount { path: PathBuf, reason: String },
}

/// A watched binary, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBinary {
    /// As written in the config.
    pub name: String,
    /// After PATH lookup and symlink resolution: the file the kernel will execute.
    pub path: PathBuf,
    pub key: InodeKey,
}

/// Resolves every entry, failing on the first one that does not name an executable file.
///
/// # Errors
/// The first [`ResolveError`], which names the entry.
pub fn resolve_all(
    names: &[String],
    search_path: &str,
) -> Result<Vec<ResolvedBinary>, ResolveError> {
    let mounts = MountTable::read()?;
    names
        .iter()
        .map(|name| resolve_one(name, search_path, &mounts))
        .collect()
}

fn resolve_one(
    name: &str,
    search_path: &str,
    mounts: &MountTable,
) -> Result<ResolvedBinary, ResolveError> {
    let found = if name.contains('/') {
        PathBuf::from(name)
    } else {
        search(name, search_path).ok_or_else(|| ResolveError::NotFound {
            name: name.to_owned(),
            search_path: search_path.to_owned(),
        })?
    };
    let path = std::fs::canonicalize(&found).map_err(|source| ResolveError::Missing {
        path: found.clone(),
        source,
    })?;
    let meta = std::fs::metadata(&path).map_err(|source| ResolveError::Missing {
        path: path.clone(),
        source,
    })?;
    if !is_executable(&meta) {
        return Err(ResolveError::NotExecutable(path));
    }
    let key = inode_key(&path, mounts)?;
    Ok(ResolvedBinary {
        name: name.to_owned(),
        path,
        key,
    })
}

fn search(name: &str, search_path: &str) -> Option<PathBuf> {
    std::env::split_paths(search_path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
}

/// True when `path` (following symlinks) is a regular file someone may execute.
pub fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| is_executable(&m))
}

fn is_executable(meta: &std::fs::Metadata) -> bool {
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

/// The kernel's identity of the file at `path`.
///
/// # Errors
/// [`ResolveError::Mount`] when the file or its mount cannot be identified.
pub fn inode_key(path: &Path, mounts: &MountTable) -> Result<InodeKey, ResolveError> {
    let mount_err = |reason: String| ResolveError::Mount {
        path: path.to_owned(),
        reason,
    };
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|e| mount_err(e.to_string()))?;
    // SAFETY: statx writes into the zeroed buffer we own; the path is NUL-terminated.
    let stx = unsafe {
        let mut stx: libc::statx = std::mem::zeroed();
        let rc = libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            0,
            libc::STATX_INO | libc::STATX_MNT_ID,
            &mut stx,
        );
        if rc != 0 {
            return Err(mount_err(std::io::Error::last_os_error().to_string()));
        }
        stx
    };
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(mount_err(
            "the kernel did not report a mount id (needs Linux 5.8+)".into(),
        ));
    }
    let dev = mounts.sb_dev(stx.stx_mnt_id).ok_or_else(|| {
        mount_err(format!(
            "mount {} is not in /proc/self/mountinfo",
            stx.stx_mnt_id
        ))
    })?;
    Ok(InodeKey::new(dev, stx.stx_ino))
}

/// Mount id → superblock device in the kernel's encoding (`major << 20 | minor`).
pub struct MountTable {
    devs: HashMap<u64, u32>,
}

impl MountTable {
    /// Reads `/proc/self/mountinfo`.
    ///
    /// # Errors
    /// [`ResolveError::Mount`] when the table cannot be read.
    pub fn read() -> Result<Self, ResolveError> {
        let text =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| ResolveError::Mount {
                path: PathBuf::from("/proc/self/mountinfo"),
                reason: e.to_string(),
            })?;
        Ok(Self::parse(&text))
    }

    fn parse(text: &str) -> Self {
        let devs = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_ascii_whitespace();
                let id = fields.next()?.parse::<u64>().ok()?;
                let (major, minor) = fields.nth(1)?.split_once(':')?;
                let (major, minor) = (major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?);
                Some((id, (major << 20) | minor))
            })
            .collect();
        Self { devs }
    }

    pub fn sb_dev(&self, mount_id: u64) -> Option<u32> {
        self.devs.get(&mount_id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_into_kernel_dev_encoding() {
        let table = MountTable::parse(
            "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
             28 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n\
             garbage line\n",
        );
        assert_eq!(table.sb_dev(22), Some(21));
        assert_eq!(table.sb_dev(28), Some((254 << 20) | 1));
        assert_eq!(table.sb_dev(99), None);
    }

    #[test]
    fn resolves_names_through_the_search_path_and_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real-tool");
        std::fs::write(&real, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink(&real, dir.path().join("tool")).expect("symlink");
        let search = dir.path().to_str().expect("utf8");

        let resolved = resolve_all(&["tool".into()], search).expect("resolves");
        assert_eq!(
            resolved[0].path,
            std::fs::canonicalize(&real).expect("canon")
        );
        // A hard link shares the inode, so it gets the same key.
        std::fs::hard_link(&real, dir.path().join("renamed")).expect("link");
        let linked = resolve_all(&["renamed".into()], search).expect("resolves");
        assert_eq!(linked[0].key, resolved[0].key);
        let meta = std::fs::metadata(&real).expect("meta");
        assert_eq!(
            resolved[0].key.ino,
            std::os::unix::fs::MetadataExt::ino(&meta)
        );
    }

    #[test]
    fn unknown_and_non_executable_binaries_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let search = dir.path().to_str().expect("utf8");
        let err = resolve_all(&["no-such-tool".into()], search)
            .expect_err("must fail")
            .to_string();
        assert_eq!(
            err,
            format!("watched binary `no-such-tool` was not found in {search}")
        );

        let plain = dir.path().join("data.txt");
        std::fs::write(&plain, "x").expect("write");
        let err = resolve_all(&[plain.display().to_string()], search)
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("is not an executable regular file"), "{err}");

        let err = resolve_all(&["/nonexistent/bin/tool".into()], search)
            .expect_err("must fail")
            .to_string();
        assert!(
            err.starts_with("watched binary /nonexistent/bin/tool does not exist"),
            "{err}"
        );
    }
}
