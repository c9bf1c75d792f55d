//! The kernel sets a policy compiles into besides the exec watch list: the egress allow
//! trie (destinations that pass without leaving the kernel) and the credential files (opens
//! that go to user space).
//!
//! A policy reload rewrites both live, in two steps around the switch so the kernel is never
//! more permissive than either policy: [`KernelSets::narrow`] first removes the prefixes the
//! new policy no longer allows and adds the files it newly watches (the kernel then answers
//! for the intersection of what both allow); the coordinator switches policies; then
//! [`KernelSets::widen`] adds the new prefixes and drops the files only the old policy
//! watched. Anything held in between is judged in user space by the policy in force.

use std::collections::{BTreeSet, HashSet};

use agent_common::InodeKey;
use airlock_policy::KernelPlan;
use aya::maps::{HashMap, LpmTrie, MapData, MapError, lpm_trie::Key};
use ipnet::IpNet;

use crate::{
    egress,
    files::{self, CredentialSet, FilesError, ResolvedFile},
};

#[derive(Debug, thiserror::Error)]
pub enum KernelSetsError {
    #[error("cannot remove {net} from the kernel's egress allow list: {source}")]
    Narrow {
        net: IpNet,
        #[source]
        source: MapError,
    },
    #[error("cannot watch credential file {path}: {source}")]
    Watch {
        path: std::path::PathBuf,
        #[source]
        source: MapError,
    },
    #[error(transparent)]
    Files(#[from] FilesError),
}

/// One kernel map seen as a set of keys.
pub trait KernelSet<K> {
    /// Puts `key` in the set.
    ///
    /// # Errors
    /// The map update failed (full, or the map is gone).
    fn add(&mut self, key: &K) -> Result<(), MapError>;
    /// Takes `key` out of the set; a key that is not there is not an error.
    ///
    /// # Errors
    /// The map update failed.
    fn remove(&mut self, key: &K) -> Result<(), MapError>;
}

impl KernelSet<IpNet> for LpmTrie<MapData, [u8; 16], u32> {
    fn add(&mut self, net: &IpNet) -> Result<(), MapError> {
        let key = egress::key(net);
        self.insert(&Key::new(key.prefix_len, key.addr), 1, 0)
    }

    fn remove(&mut self, net: &IpNet) -> Result<(), MapError> {
        let key = egress::key(net);
        match LpmTrie::remove(self, &Key::new(key.prefix_len, key.addr)) {
            Err(MapError::KeyNotFound) => Ok(()),
            other => other,
        }
    }
}

impl KernelSet<InodeKey> for HashMap<MapData, InodeKey, u32> {
    fn add(&mut self, key: &InodeKey) -> Result<(), MapError> {
        self.insert(*key, 0, 0)
    }

    fn remove(&mut self, key: &InodeKey) -> Result<(), MapError> {
        match HashMap::remove(self, key) {
            Err(MapError::KeyNotFound) => Ok(()),
            other => other,
        }
    }
}

/// What the agent's own configuration puts in the kernel whatever the policy says.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    /// Defaults (loopback, the hub) and `[egress] allow`.
    pub allow: Vec<IpNet>,
    /// `[files] credentials`.
    pub credential_globs: Vec<String>,
}

/// The kernel sets one policy wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Normalised prefixes (host bits cleared), so equal trie keys compare equal.
    pub allow: BTreeSet<IpNet>,
    pub credential_globs: Vec<String>,
}

impl Baseline {
    /// The baseline widened by a policy's kernel plan (`None`: no policy).
    pub fn wanted(&self, plan: Option<&KernelPlan>) -> Wanted {
        let mut allow: BTreeSet<IpNet> = self.allow.iter().map(IpNet::trunc).collect();
        let mut credential_globs = self.credential_globs.clone();
        if let Some(plan) = plan {
            allow.extend(plan.allowed_cidrs.iter().map(IpNet::trunc));
            for glob in &plan.credential_globs {
                if glob.starts_with('/') || glob.starts_with("~/") {
                    if !credential_globs.contains(glob) {
                        credential_globs.push(glob.clone());
                    }
                } else {
                    // Inodes are resolved from anchored globs; a relative one would mean
                    // scanning every file system.
                    tracing::warn!(%glob, "policy credential glob is not anchored; the kernel cannot watch it");
                }
            }
        }
        Wanted {
            allow,
            credential_globs,
        }
    }
}

/// A reload half done: the kernel answers for what both policies allow.
#[must_use = "a narrowed kernel must be widened or restored"]
pub struct Narrowed {
    next: Wanted,
    removed_allow: Vec<IpNet>,
    added_files: Vec<InodeKey>,
    credentials: CredentialSet,
}

/// The egress allow trie and the credential-file map, with what they hold now.
pub struct KernelSets<A, C> {
    baseline: Baseline,
    allow_map: A,
    allowed: BTreeSet<IpNet>,
    cred_map: C,
    credentials: CredentialSet,
}

/// The sets as the daemon holds them.
pub type LiveKernelSets =
    KernelSets<LpmTrie<MapData, [u8; 16], u32>, HashMap<MapData, InodeKey, u32>>;

impl<A: KernelSet<IpNet>, C: KernelSet<InodeKey>> KernelSets<A, C> {
    /// Takes over maps that already hold `wanted.allow` and `files` (filled at load).
    pub fn new(
        baseline: Baseline,
        allow_map: A,
        cred_map: C,
        wanted: &Wanted,
        files: &[ResolvedFile],
    ) -> Self {
        Self {
            baseline,
            allow_map,
            allowed: wanted.allow.clone(),
            cred_map,
            credentials: CredentialSet::new(wanted.credential_globs.clone(), files),
        }
    }

    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    /// The prefixes the kernel lets through now.
    pub fn allowed(&self) -> &BTreeSet<IpNet> {
        &self.allowed
    }

    /// The credential globs in force (configuration and policy).
    pub fn credential_patterns(&self) -> &[String] {
        &self.credentials.patterns
    }

    /// The credential files the kernel watches now.
    pub fn credential_files(&self) -> Vec<ResolvedFile> {
        self.credentials.files()
    }

    /// First half of a switch to `next`: drops the prefixes `next` does not allow and
    /// watches the files it adds. On error the kernel is as it was.
    ///
    /// # Errors
    /// A map update failed, or a credential glob cannot be resolved.
    pub fn narrow(&mut self, next: &Wanted) -> Result<Narrowed, KernelSetsError> {
        let mut narrowed = Narrowed {
            next: next.clone(),
            removed_allow: Vec::new(),
            added_files: Vec::new(),
            credentials: CredentialSet::new(next.credential_globs.clone(), &[]),
        };
        let dropped: Vec<IpNet> = self.allowed.difference(&next.allow).copied().collect();
        for net in dropped {
            if let Err(source) = self.allow_map.remove(&net) {
                self.restore(narrowed);
                return Err(KernelSetsError::Narrow { net, source });
            }
            narrowed.removed_allow.push(net);
        }
        let files = match files::resolve_credentials(&next.credential_globs, &files::homes()) {
            Ok(files) => files,
            Err(error) => {
                self.restore(narrowed);
                return Err(error.into());
            }
        };
        for file in &files {
            if self.credentials.current.contains_key(&file.key) {
                continue;
            }
            if let Err(source) = self.cred_map.add(&file.key) {
                let path = file.path.clone();
                self.restore(narrowed);
                return Err(KernelSetsError::Watch { path, source });
            }
            narrowed.added_files.push(file.key);
        }
        narrowed.credentials = CredentialSet::new(next.credential_globs.clone(), &files);
        Ok(narrowed)
    }

    /// Undoes [`Self::narrow`] (the switch was abandoned).
    pub fn restore(&mut self, narrowed: Narrowed) {
        for net in &narrowed.removed_allow {
            if let Err(error) = self.allow_map.add(net) {
                // The kernel holds more than the policy in force wants; user space still
                // allows it by policy, so this costs a round trip, not safety.
                tracing::error!(%error, %net, "cannot restore an allowed prefix");
                self.allowed.remove(net);
            }
        }
        for key in &narrowed.added_files {
            let _ = self.cred_map.remove(key);
        }
    }

    /// Second half of the switch, once the new policy is in force: lets the new prefixes
    /// through in the kernel and stops watching files only the old policy named. Failures
    /// leave the kernel stricter than the policy (logged; user space still decides).
    pub fn widen(&mut self, narrowed: Narrowed) {
        let Narrowed {
            next, credentials, ..
        } = narrowed;
        let mut allowed: BTreeSet<IpNet> =
            self.allowed.intersection(&next.allow).copied().collect();
        for net in next.allow.difference(&self.allowed) {
            match self.allow_map.add(net) {
                Ok(()) => {
                    allowed.insert(*net);
                }
                Err(error) => {
                    tracing::error!(%error, %net, "cannot allow prefix in the kernel; such connections are held and judged in user space")
                }
            }
        }
        self.allowed = allowed;
        let keep: HashSet<InodeKey> = credentials.current.keys().copied().collect();
        for key in self
            .credentials
            .current
            .keys()
            .filter(|k| !keep.contains(k))
        {
            if let Err(error) = self.cred_map.remove(key) {
                tracing::warn!(%error, ino = key.ino, "cannot stop watching a credential file");
            }
        }
        self.credentials = credentials;
    }

    /// Re-resolves the credential globs: files that appeared or were replaced are watched,
    /// files gone everywhere are dropped.
    pub fn refresh_credentials(&mut self) {
        match self.credentials.refresh() {
            Ok(diff) => {
                for file in &diff.added {
                    // Logged after the insert: from this line on, opens of the file are held.
                    match self.cred_map.add(&file.key) {
                        Ok(()) => {
                            tracing::info!(path = %file.path.display(), ino = file.key.ino, pattern = %file.pattern, "credential file appeared");
                        }
                        Err(error) => {
                            tracing::error!(%error, path = %file.path.display(), "cannot watch credential file");
                        }
                    }
                }
                for key in &diff.removed {
                    let _ = self.cred_map.remove(key);
                }
            }
            Err(error) => tracing::warn!(%error, "credential refresh failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, rc::Rc};

    use super::*;

    /// A map that records its contents after every update, shared with the test.
    #[derive(Clone, Default)]
    struct Recorded<K: Ord + Clone> {
        now: Rc<RefCell<BTreeSet<K>>>,
        history: Rc<RefCell<Vec<BTreeSet<K>>>>,
        fail_on: Option<K>,
    }

    impl<K: Ord + Clone> KernelSet<K> for Recorded<K> {
        fn add(&mut self, key: &K) -> Result<(), MapError> {
            if self.fail_on.as_ref() == Some(key) {
                return Err(MapError::KeyNotFound);
            }
            self.now.borrow_mut().insert(key.clone());
            self.history.borrow_mut().push(self.now.borrow().clone());
            Ok(())
        }

        fn remove(&mut self, key: &K) -> Result<(), MapError> {
            self.now.borrow_mut().remove(key);
            self.history.borrow_mut().push(self.now.borrow().clone());
            Ok(())
        }
    }

    fn nets(list: &[&str]) -> BTreeSet<IpNet> {
        list.iter().map(|s| s.parse().expect("net")).collect()
    }

    fn wanted(allow: &[&str], globs: &[String]) -> Wanted {
        Wanted {
            allow: nets(allow),
            credential_globs: globs.to_vec(),
        }
    }

    type TestSets = KernelSets<Recorded<IpNet>, Recorded<InodeKey>>;

    fn sets(
        old: &Wanted,
        files: &[ResolvedFile],
    ) -> (TestSets, Recorded<IpNet>, Recorded<InodeKey>) {
        let allow = Recorded::<IpNet>::default();
        allow.now.borrow_mut().extend(old.allow.iter().copied());
        let creds = Recorded::<InodeKey>::default();
        creds.now.borrow_mut().extend(files.iter().map(|f| f.key));
        let sets = KernelSets::new(
            Baseline::default(),
            allow.clone(),
            creds.clone(),
            old,
            files,
        );
        (sets, allow, creds)
    }

    #[test]
    fn a_switch_never_allows_more_or_watches_less_than_both_policies() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("old.key"), "1").expect("write");
        std::fs::write(dir.path().join("new.key"), "2").expect("write");
        let old_glob = vec![format!("{}/old.*", dir.path().display())];
        let new_glob = vec![format!("{}/new.*", dir.path().display())];
        let old = wanted(&["127.0.0.0/8", "10.0.0.0/8", "192.0.2.0/24"], &old_glob);
        let new = wanted(&["127.0.0.0/8", "10.0.0.0/8", "198.51.100.0/24"], &new_glob);
        let old_files = files::resolve_credentials(&old_glob, &[]).expect("resolve");
        let new_files = files::resolve_credentials(&new_glob, &[]).expect("resolve");
        let (mut sets, allow, creds) = sets(&old, &old_files);

        let narrowed = sets.narrow(&new).expect("narrow");
        let both_allow: BTreeSet<IpNet> = old.allow.intersection(&new.allow).copied().collect();
        let both_watch: BTreeSet<InodeKey> =
            old_files.iter().chain(&new_files).map(|f| f.key).collect();
        for step in allow.history.borrow().iter() {
            assert!(step.is_subset(&old.allow), "narrowing allowed {step:?}");
        }
        assert_eq!(*allow.now.borrow(), both_allow);
        assert_eq!(
            *creds.now.borrow(),
            both_watch,
            "both policies' files watched"
        );

        sets.widen(narrowed);
        for step in allow.history.borrow().iter() {
            assert!(
                step.is_subset(&old.allow) || step.is_subset(&new.allow),
                "a step allowed more than either policy: {step:?}"
            );
        }
        assert_eq!(*allow.now.borrow(), new.allow);
        assert_eq!(sets.allowed(), &new.allow);
        let new_keys: BTreeSet<InodeKey> = new_files.iter().map(|f| f.key).collect();
        assert_eq!(*creds.now.borrow(), new_keys);
        let old_keys: BTreeSet<InodeKey> = old_files.iter().map(|f| f.key).collect();
        for step in creds.history.borrow().iter() {
            assert!(
                step.is_superset(&old_keys) || step.is_superset(&new_keys),
                "a step watched less than either policy: {step:?}"
            );
        }
    }

    #[test]
    fn a_failed_narrowing_leaves_the_kernel_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a.key"), "1").expect("write");
        let glob = vec![format!("{}/*.key", dir.path().display())];
        let old = wanted(&["127.0.0.0/8", "10.0.0.0/8"], &[]);
        let new = wanted(&["127.0.0.0/8"], &glob);
        let allow = Recorded::<IpNet>::default();
        allow.now.borrow_mut().extend(old.allow.iter().copied());
        let mut creds = Recorded::<InodeKey>::default();
        let file = files::resolve_credentials(&glob, &[]).expect("resolve");
        creds.fail_on = Some(file[0].key);
        let mut sets =
            KernelSets::new(Baseline::default(), allow.clone(), creds.clone(), &old, &[]);
        let error = sets.narrow(&new).err().expect("map failure reported");
        assert!(
            error
                .to_string()
                .starts_with("cannot watch credential file"),
            "{error}"
        );
        assert_eq!(*allow.now.borrow(), old.allow, "removed prefixes restored");
        assert!(creds.now.borrow().is_empty());
        assert_eq!(sets.allowed(), &old.allow);
    }

    #[test]
    fn the_policy_widens_the_baseline_with_normalised_prefixes_and_anchored_globs() {
        let baseline = Baseline {
            allow: vec!["127.0.0.1/8".parse().expect("net")],
            credential_globs: vec!["~/.aws/credentials".into()],
        };
        let plan = KernelPlan {
            allowed_cidrs: vec!["10.1.2.3/8".parse().expect("net")],
            credential_globs: vec![
                "~/.ssh/id_*".into(),
                "**/.env".into(),
                "~/.aws/credentials".into(),
            ],
            ..KernelPlan::default()
        };
        let wanted = baseline.wanted(Some(&plan));
        assert_eq!(wanted.allow, nets(&["127.0.0.0/8", "10.0.0.0/8"]));
        assert_eq!(
            wanted.credential_globs,
            ["~/.aws/credentials", "~/.ssh/id_*"],
            "unanchored globs cannot be resolved to inodes; duplicates once"
        );
        assert_eq!(baseline.wanted(None).allow, nets(&["127.0.0.0/8"]));
    }
}
