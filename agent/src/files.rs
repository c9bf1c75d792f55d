//! Credential files and the agent's own files, resolved to the (dev, inode) keys the
//! `file_open` gate compares.
//!
//! Globs are expanded for every user's home (`~/` → each home directory in /etc/passwd
//! that exists, and /root), then each match is followed through symlinks to the file the
//! kernel will open. Files that appear or are replaced later are picked up by
//! [`CredentialSet::refresh`], which the daemon calls when inotify reports a change in one
//! of the directories [`watch_plan`] names, and on a slow safety-net timer.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
};

use agent_common::InodeKey;

use crate::resolve::{MountTable, ResolveError, inode_key};

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("credential glob `{pattern}` is invalid: {source}")]
    Pattern {
        pattern: String,
        #[source]
        source: glob::PatternError,
    },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
}

/// One credential file, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFile {
    /// The glob as configured.
    pub pattern: String,
    /// The file the kernel opens (symlinks followed).
    pub path: PathBuf,
    pub key: InodeKey,
}

/// Home directories of the host's users that exist (deduplicated), /root included.
pub fn homes() -> Vec<PathBuf> {
    all_homes().into_iter().filter(|h| h.is_dir()).collect()
}

/// Every home directory /etc/passwd names (existing or not), /root included: a home
/// created later is watched for from its first existing parent.
pub fn all_homes() -> Vec<PathBuf> {
    let mut set = BTreeSet::new();
    set.insert(PathBuf::from("/root"));
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            if let Some(home) = line
                .split(':')
                .nth(5)
                .filter(|h| h.starts_with('/') && *h != "/")
            {
                set.insert(PathBuf::from(home));
            }
        }
    }
    set.into_iter().collect()
}

/// The directories to watch so that files matching `patterns` are seen when they appear,
/// are replaced or vanish: the globs' own directories (from the first existing parent
/// down), the directories of the files already resolved (a symlink's target may live
/// elsewhere), and /etc for `passwd` when a pattern expands `~/` (new users, new homes).
pub fn watch_plan(
    patterns: &[String],
    homes: &[PathBuf],
    resolved: &[ResolvedFile],
) -> crate::dirwatch::WatchPlan {
    let mut plan = crate::dirwatch::WatchPlan::default();
    for pattern in patterns {
        for expanded in expand(pattern, homes) {
            plan.add_glob(&expanded);
        }
    }
    for file in resolved {
        if let (Some(dir), Some(name)) = (file.path.parent(), file.path.file_name()) {
            plan.add_entry(dir, name);
        }
    }
    if patterns.iter().any(|p| p.starts_with("~/")) {
        plan.add_entry(Path::new("/etc"), std::ffi::OsStr::new("passwd"));
    }
    plan
}

/// Expands a leading `~/` to every home; other patterns are returned as they are.
pub fn expand(pattern: &str, homes: &[PathBuf]) -> Vec<String> {
    match pattern.strip_prefix("~/") {
        Some(rest) => homes
            .iter()
            .map(|h| format!("{}/{rest}", glob::Pattern::escape(&h.display().to_string())))
            .collect(),
        None => vec![pattern.to_owned()],
    }
}

/// Resolves every glob to the files that exist now.
///
/// # Errors
/// [`FilesError::Pattern`] for an invalid glob; unreadable matches are skipped.
pub fn resolve_credentials(
    patterns: &[String],
    homes: &[PathBuf],
) -> Result<Vec<ResolvedFile>, FilesError> {
    let mounts = MountTable::read()?;
    let mut out: Vec<ResolvedFile> = Vec::new();
    for pattern in patterns {
        for expanded in expand(pattern, homes) {
            let paths = glob::glob(&expanded).map_err(|source| FilesError::Pattern {
                pattern: pattern.clone(),
                source,
            })?;
            for found in paths.flatten() {
                let Ok(path) = std::fs::canonicalize(&found) else {
                    continue;
                };
                if !path.is_file() {
                    continue;
                }
                let Ok(key) = inode_key(&path, &mounts) else {
                    continue;
                };
                if !out.iter().any(|f| f.key == key) {
                    out.push(ResolvedFile {
                        pattern: pattern.clone(),
                        path,
                        key,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Keys of the files that exist among `paths` (missing ones are skipped: a file created
/// later is protected on the next refresh).
pub fn resolve_existing(paths: &[PathBuf]) -> Vec<(PathBuf, InodeKey)> {
    let Ok(mounts) = MountTable::read() else {
        return Vec::new();
    };
    paths
        .iter()
        .filter_map(|p| {
            let path = std::fs::canonicalize(p).ok()?;
            inode_key(&path, &mounts).ok().map(|k| (path, k))
        })
        .collect()
}

/// The credential keys currently in the kernel, and how to bring them up to date.
pub struct CredentialSet {
    pub patterns: Vec<String>,
    pub current: HashMap<InodeKey, ResolvedFile>,
}

/// What changed in a refresh.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<ResolvedFile>,
    pub removed: Vec<InodeKey>,
}

impl CredentialSet {
    pub fn new(patterns: Vec<String>, initial: &[ResolvedFile]) -> Self {
        Self {
            patterns,
            current: initial.iter().map(|f| (f.key, f.clone())).collect(),
        }
    }

    /// Re-resolves the globs and returns what to add to and remove from the kernel map.
    /// Keys that vanished are kept (a replaced file's old inode may still be open
    /// elsewhere and costs nothing to keep) — only files that no longer exist anywhere
    /// under their path are removed.
    ///
    /// # Errors
    /// As [`resolve_credentials`].
    pub fn refresh(&mut self) -> Result<Diff, FilesError> {
        let now = resolve_credentials(&self.patterns, &homes())?;
        let mut diff = Diff::default();
        for file in &now {
            if !self.current.contains_key(&file.key) {
                diff.added.push(file.clone());
            }
        }
        for key in self.current.keys() {
            if !now.iter().any(|f| f.key == *key) && !still_linked(&self.current[key].path, key) {
                diff.removed.push(*key);
            }
        }
        for key in &diff.removed {
            self.current.remove(key);
        }
        for file in &diff.added {
            self.current.insert(file.key, file.clone());
        }
        Ok(diff)
    }

    pub fn files(&self) -> Vec<ResolvedFile> {
        self.current.values().cloned().collect()
    }
}

/// True when `path` still names the inode `key` (then it is not really gone).
fn still_linked(path: &Path, key: &InodeKey) -> bool {
    std::fs::metadata(path).is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == key.ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_home_globs_and_follows_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".aws")).expect("mkdir");
        std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
        std::fs::write(home.join(".aws/credentials"), "[default]\n").expect("write");
        std::fs::write(home.join(".ssh/id_ed25519"), "key").expect("write");
        std::fs::write(home.join(".ssh/known_hosts"), "x").expect("write");
        let real = dir.path().join("real.env");
        std::fs::write(&real, "A=1").expect("write");
        std::fs::create_dir_all(home.join("proj/sub")).expect("mkdir");
        std::os::unix::fs::symlink(&real, home.join("proj/sub/.env")).expect("symlink");

        let homes = vec![home.clone()];
        let patterns = vec![
            "~/.aws/credentials".into(),
            "~/.ssh/id_*".into(),
            "~/**/.env".into(),
        ];
        let found = resolve_credentials(&patterns, &homes).expect("resolves");
        let paths: BTreeSet<PathBuf> = found.iter().map(|f| f.path.clone()).collect();
        let canon = |p: PathBuf| std::fs::canonicalize(p).expect("canon");
        assert!(paths.contains(&canon(home.join(".aws/credentials"))));
        assert!(paths.contains(&canon(home.join(".ssh/id_ed25519"))));
        assert!(
            paths.contains(&canon(real.clone())),
            "symlinked .env resolves to its target"
        );
        assert!(!paths.iter().any(|p| p.ends_with("known_hosts")));
        assert_eq!(found.len(), 3);
    }

    #[test]
    fn refresh_picks_up_new_and_replaced_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().to_owned();
        let pattern = format!("{}/*.key", home.display());
        let mut set = CredentialSet::new(vec![pattern], &[]);
        assert_eq!(set.refresh().expect("refresh"), Diff::default());
        std::fs::write(home.join("a.key"), "1").expect("write");
        let diff = set.refresh().expect("refresh");
        assert_eq!(diff.added.len(), 1);
        // Replace by rename (how editors and credential helpers write): new inode.
        let old = diff.added[0].key;
        std::fs::write(home.join("a.key.tmp"), "2").expect("write");
        std::fs::rename(home.join("a.key.tmp"), home.join("a.key")).expect("rename");
        let diff = set.refresh().expect("refresh");
        assert_eq!(diff.added.len(), 1);
        assert_ne!(diff.added[0].key, old);
        assert_eq!(diff.removed, [old]);
    }

    #[test]
    fn invalid_globs_are_named() {
        let err = resolve_credentials(&["/etc/[".into()], &[])
            .expect_err("must fail")
            .to_string();
        assert!(
            err.starts_with("credential glob `/etc/[` is invalid"),
            "{err}"
        );
    }
}
