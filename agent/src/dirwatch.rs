//! inotify watches on the directories where credential files and scope sub-cgroups can
//! appear, so the kernel maps follow the file system as it changes instead of every few
//! seconds.
//!
//! The model is "event → full re-resolve": an event only says *that* something relevant
//! may have changed; the daemon then re-resolves (globs, cgroup tree) and re-plans the
//! watches. That keeps the watcher simple and correct under races (a file created in a new
//! directory before its watch exists is found by the re-resolve that follows the
//! directory's own event), at the price of one glob walk per burst of events.
//!
//! Which directories: for each (home-expanded) glob, every existing directory along the
//! way to where a match could appear, each with the names that matter in it (the next
//! glob component). So `~/.aws/credentials` with no `~/.aws` yet watches the home for a
//! `.aws` entry, and `mkdir ~/.aws` moves the watch down. A `**` component watches every
//! directory below it (up to [`MAX_WATCHES`]; beyond that the safety-net rescan covers).

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsStr,
    path::{Component, Path, PathBuf},
};

use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask};
use tokio_stream::StreamExt as _;

/// Upper bound on watches per watcher: a `**` glob over a large home could otherwise use
/// up the user's inotify watches (`fs.inotify.max_user_watches`).
pub const MAX_WATCHES: usize = 8192;

/// What happens in a directory that makes a re-resolve worthwhile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    /// Entry names (glob components) that matter.
    pub names: Vec<glob::Pattern>,
    /// Any new or removed directory matters (below a `**`, or in the cgroup tree).
    pub any_dir: bool,
}

impl Interest {
    fn merge(&mut self, other: &Interest) {
        self.any_dir |= other.any_dir;
        for name in &other.names {
            if !self.names.contains(name) {
                self.names.push(name.clone());
            }
        }
    }

    fn wants(&self, name: &OsStr, is_dir: bool) -> bool {
        (is_dir && self.any_dir)
            || name
                .to_str()
                .is_some_and(|n| self.names.iter().any(|p| p.matches(n)))
    }
}

/// The directories to watch and what matters in each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchPlan {
    pub dirs: BTreeMap<PathBuf, Interest>,
    /// True when [`MAX_WATCHES`] cut the plan short.
    pub truncated: bool,
}

impl WatchPlan {
    fn add(&mut self, dir: &Path, interest: Interest) {
        if !self.dirs.contains_key(dir) && self.dirs.len() >= MAX_WATCHES {
            self.truncated = true;
            return;
        }
        self.dirs
            .entry(dir.to_owned())
            .or_default()
            .merge(&interest);
    }

    /// Watches `name` in `dir`, taken literally (the parent of a resolved file, or of a
    /// configured cgroup that may be removed and re-created).
    pub fn add_entry(&mut self, dir: &Path, name: &OsStr) {
        let Some(name) = name.to_str() else { return };
        if let Ok(pattern) = glob::Pattern::new(&glob::Pattern::escape(name)) {
            self.add(
                dir,
                Interest {
                    names: vec![pattern],
                    any_dir: false,
                },
            );
        }
    }

    /// Adds the directories where matches of the absolute glob `pattern` can appear.
    /// Invalid patterns add nothing (resolution reports them).
    pub fn add_glob(&mut self, pattern: &str) {
        let components: Vec<&str> = Path::new(pattern)
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => s.to_str(),
                _ => None,
            })
            .collect();
        if !pattern.starts_with('/') || components.is_empty() {
            return;
        }
        let mut candidates = vec![PathBuf::from("/")];
        for (i, component) in components.iter().enumerate() {
            if *component == "**" {
                // Zero or more directories: every directory below each candidate.
                let mut below = Vec::new();
                for dir in &candidates {
                    self.subdirs(dir, &mut below);
                }
                candidates = below;
                continue;
            }
            let Ok(matcher) = glob::Pattern::new(component) else {
                return;
            };
            let after_globstar = i > 0 && components[i - 1] == "**";
            for dir in &candidates {
                self.add(
                    dir,
                    Interest {
                        names: vec![matcher.clone()],
                        any_dir: after_globstar,
                    },
                );
            }
            if i + 1 == components.len() || self.truncated {
                return;
            }
            let literal = !component.contains(['*', '?', '[']);
            let mut next = Vec::new();
            for dir in &candidates {
                if literal {
                    let path = dir.join(component);
                    if path.is_dir() {
                        next.push(path);
                    }
                } else if let Ok(entries) = std::fs::read_dir(dir) {
                    next.extend(
                        entries
                            .flatten()
                            .filter(|e| e.file_name().to_str().is_some_and(|n| matcher.matches(n)))
                            .map(|e| e.path())
                            .filter(|p| p.is_dir()),
                    );
                }
            }
            candidates = next;
        }
    }

    /// `dir` and every directory below it (symlinks not followed), up to the watch limit.
    fn subdirs(&mut self, dir: &Path, out: &mut Vec<PathBuf>) {
        let mut stack = vec![dir.to_owned()];
        while let Some(dir) = stack.pop() {
            if out.len() >= MAX_WATCHES {
                self.truncated = true;
                return;
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            out.push(dir);
        }
    }

    /// Watches each of `dirs` for new and removed subdirectories (the cgroup tree).
    pub fn add_trees(&mut self, dirs: impl IntoIterator<Item = PathBuf>) {
        for dir in dirs {
            self.add(
                &dir,
                Interest {
                    names: Vec::new(),
                    any_dir: true,
                },
            );
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirWatchError {
    #[error("cannot start inotify: {0}")]
    Init(#[source] std::io::Error),
}

/// What a watched directory reports.
const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::DELETE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

/// One inotify instance following a [`WatchPlan`].
pub struct DirWatcher {
    stream: EventStream<Vec<u8>>,
    /// What matters per watch (two planned paths naming one directory share a watch).
    interests: HashMap<WatchDescriptor, Interest>,
    /// Path per watch, so re-planning can drop watches no longer wanted.
    paths: HashMap<PathBuf, WatchDescriptor>,
    warned: bool,
}

impl DirWatcher {
    /// A watcher with no watches yet.
    ///
    /// # Errors
    /// [`DirWatchError::Init`] when inotify is unavailable (the limit of instances per
    /// user, `fs.inotify.max_user_instances`, is the usual cause).
    pub fn new() -> Result<Self, DirWatchError> {
        let stream = Inotify::init()
            .and_then(|i| i.into_event_stream(vec![0u8; 16384]))
            .map_err(DirWatchError::Init)?;
        Ok(Self {
            stream,
            interests: HashMap::new(),
            paths: HashMap::new(),
            warned: false,
        })
    }

    /// Watches what `plan` names and stops watching what it no longer names. Directories
    /// that cannot be watched (gone meanwhile, permission, the user's watch limit) are
    /// skipped: the safety-net rescan covers them.
    pub fn apply(&mut self, plan: &WatchPlan) {
        let mut watches = self.stream.watches();
        if plan.truncated && !self.warned {
            self.warned = true;
            tracing::warn!(
                limit = MAX_WATCHES,
                "too many directories to watch; changes beyond them are found by the periodic rescan"
            );
        }
        let mut interests: HashMap<WatchDescriptor, Interest> = HashMap::new();
        let mut paths = HashMap::new();
        for (dir, interest) in &plan.dirs {
            match watches.add(dir, MASK) {
                Ok(wd) => {
                    interests.entry(wd.clone()).or_default().merge(interest);
                    paths.insert(dir.clone(), wd);
                }
                Err(error) if error.raw_os_error() == Some(libc::ENOSPC) && !self.warned => {
                    self.warned = true;
                    tracing::warn!(%error, dir = %dir.display(), "inotify watch limit reached; the periodic rescan covers the rest");
                }
                Err(_) => {}
            }
        }
        for wd in self.paths.values() {
            if !interests.contains_key(wd) {
                let _ = watches.remove(wd.clone());
            }
        }
        self.interests = interests;
        self.paths = paths;
    }

    /// Number of directories watched.
    pub fn len(&self) -> usize {
        self.interests.len()
    }

    /// True when nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.interests.is_empty()
    }

    /// Waits for the next event that may change the resolved set (a name that matters, a
    /// watched directory gone, or lost events); other events are read and skipped.
    /// Cancel-safe: events not yet read stay queued.
    pub async fn changed(&mut self) {
        loop {
            match self.stream.next().await {
                Some(Ok(event)) => {
                    if self.relevant(&event.wd, event.mask, event.name.as_deref()) {
                        return;
                    }
                }
                // A read error: re-resolve, to be safe.
                Some(Err(_)) => return,
                // The fd closed: nothing more will come.
                None => std::future::pending().await,
            }
        }
    }

    fn relevant(&self, wd: &WatchDescriptor, mask: EventMask, name: Option<&OsStr>) -> bool {
        if mask.contains(EventMask::Q_OVERFLOW) {
            return true;
        }
        // Unknown descriptors are watches this watcher dropped itself.
        let Some(interest) = self.interests.get(wd) else {
            return false;
        };
        if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED) {
            return true;
        }
        name.is_some_and(|n| interest.wants(n, mask.contains(EventMask::ISDIR)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interest_in<'a>(plan: &'a WatchPlan, dir: &Path) -> &'a Interest {
        plan.dirs
            .get(dir)
            .unwrap_or_else(|| panic!("{} not watched: {:?}", dir.display(), plan.dirs.keys()))
    }

    #[test]
    fn a_missing_directory_is_watched_from_its_first_existing_parent() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().canonicalize().expect("canon");
        let mut plan = WatchPlan::default();
        plan.add_glob(&format!("{}/.aws/credentials", home.display()));
        assert!(interest_in(&plan, &home).wants(OsStr::new(".aws"), true));
        assert!(!interest_in(&plan, &home).wants(OsStr::new("other"), true));
        assert!(!plan.dirs.contains_key(&home.join(".aws")));

        std::fs::create_dir(home.join(".aws")).expect("mkdir");
        let mut plan = WatchPlan::default();
        plan.add_glob(&format!("{}/.aws/credentials", home.display()));
        let aws = interest_in(&plan, &home.join(".aws"));
        assert!(aws.wants(OsStr::new("credentials"), false));
        assert!(!aws.wants(OsStr::new("credentials.tmp"), false));
    }

    #[test]
    fn wildcards_and_globstars_watch_every_matching_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canon");
        for dir in ["a/x", "b/y/z", "c"] {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        let mut plan = WatchPlan::default();
        plan.add_glob(&format!("{}/*/keys/*.pem", root.display()));
        for dir in ["a", "b", "c"] {
            assert!(interest_in(&plan, &root.join(dir)).wants(OsStr::new("keys"), true));
        }
        assert!(!plan.dirs.contains_key(&root.join("a/x")));

        let mut plan = WatchPlan::default();
        plan.add_glob(&format!("{}/**/.env", root.display()));
        for dir in ["", "a", "a/x", "b", "b/y", "b/y/z", "c"] {
            let interest = interest_in(&plan, &root.join(dir));
            assert!(interest.any_dir, "{dir}: new directories matter below **");
            assert!(interest.wants(OsStr::new(".env"), false));
            assert!(!interest.wants(OsStr::new("env"), false));
        }
    }

    /// Waits for the first relevant event.
    async fn relevant(watcher: &mut DirWatcher, within: std::time::Duration) -> bool {
        tokio::time::timeout(within, watcher.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn events_that_matter_are_reported_and_others_are_not() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().canonicalize().expect("canon");
        let mut plan = WatchPlan::default();
        plan.add_glob(&format!("{}/*.key", dir.display()));
        assert!(interest_in(&plan, &dir).wants(OsStr::new("a.key"), false));
        let mut watcher = DirWatcher::new().expect("inotify");
        watcher.apply(&plan);
        assert_eq!(watcher.len(), plan.dirs.len());
        let secs = std::time::Duration::from_secs;
        std::fs::write(dir.join("notes.txt"), "x").expect("write");
        assert!(
            !relevant(&mut watcher, secs(1)).await,
            "notes.txt is not *.key"
        );
        std::fs::write(dir.join("a.key"), "x").expect("write");
        assert!(relevant(&mut watcher, secs(5)).await, "a.key is created");
        // Replacing by rename (new inode) is reported by the new name.
        std::fs::write(dir.join("tmp"), "y").expect("write");
        std::fs::rename(dir.join("tmp"), dir.join("a.key")).expect("rename");
        assert!(relevant(&mut watcher, secs(5)).await, "a.key is replaced");
        // Watches follow the plan: an empty plan drops them.
        watcher.apply(&WatchPlan::default());
        assert!(watcher.is_empty());
        std::fs::write(dir.join("b.key"), "x").expect("write");
        assert!(!relevant(&mut watcher, secs(1)).await, "no longer watched");
    }
}
