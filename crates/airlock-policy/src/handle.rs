//! Live reload without gaps: [`PolicyHandle`].
//!
//! The handle holds the policy in force behind an [`ArcSwap`]. An evaluation loads one
//! snapshot and decides with it alone, so every decision comes from exactly one policy
//! (the one whose hash it reports), never a mix. A reload validates and compiles the
//! new file completely *before* the swap; an invalid file leaves the old policy in
//! force and is returned as an error for the caller to audit.
//!
//! The agent's wiring (SIGHUP, inotify, kernel map writes) calls
//! [`PolicyHandle::load_and_swap`]; to keep the kernel from passing anything neither
//! policy allowed during the switch it writes [`KernelPlan::strictest`] of the old and
//! new plans first, then swaps, then writes the new plan (see [`PolicyHandle::reload_with`]).

use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::action::Action;
use crate::decision::Decision;
use crate::error::PolicyError;
use crate::kernel::KernelPlan;
use crate::policy::Policy;

/// Identity of a policy generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    /// Counts swaps on this handle, from 0.
    pub generation: u64,
    /// SHA-256 (hex) of the policy text.
    pub hash: Arc<str>,
    /// The file's `revision` label.
    pub revision: Option<Arc<str>>,
}

/// What a successful reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// The policy that was in force.
    pub old_version: PolicyVersion,
    /// The policy now in force.
    pub new_version: PolicyVersion,
    /// The new file is byte-identical to the old one.
    pub unchanged: bool,
}

struct Current {
    generation: u64,
    policy: Arc<Policy>,
}

/// The policy in force, swappable while other threads evaluate.
pub struct PolicyHandle {
    current: ArcSwap<Current>,
    /// Serialises swaps so generations are installed in order; readers never take it.
    swap_lock: Mutex<u64>,
}

impl std::fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHandle")
            .field("version", &self.version())
            .finish()
    }
}

impl PolicyHandle {
    /// A handle holding `policy` as generation 0.
    pub fn new(policy: Policy) -> Self {
        Self {
            current: ArcSwap::from_pointee(Current {
                generation: 0,
                policy: Arc::new(policy),
            }),
            swap_lock: Mutex::new(0),
        }
    }

    /// Load the file at `path` into a new handle.
    ///
    /// # Errors
    /// Every error of [`Policy::load`].
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        Policy::load(path).map(Self::new)
    }

    /// The policy in force. Hold the `Arc` for as long as one logical decision needs a
    /// consistent view (for example, evaluate and then look up the rule).
    pub fn current(&self) -> Arc<Policy> {
        self.current.load().policy.clone()
    }

    /// The version in force.
    pub fn version(&self) -> PolicyVersion {
        let cur = self.current.load();
        version_of(&cur)
    }

    /// Decide `action` with exactly one policy snapshot.
    pub fn evaluate(&self, action: &Action) -> Decision {
        // `load` is a lock-free read; the guard keeps this snapshot alive even if a
        // reload swaps in the meantime.
        self.current.load().policy.evaluate(action)
    }

    /// Read, validate and compile `path`, then swap it in. On error the old policy
    /// stays in force.
    ///
    /// # Errors
    /// Every error of [`Policy::load`] (with `file:line:column`).
    pub fn load_and_swap(&self, path: &Path) -> Result<ReloadOutcome, PolicyError> {
        let policy = Policy::load(path)?;
        Ok(self.swap(policy))
    }

    /// Swap in an already-validated policy.
    pub fn swap(&self, policy: Policy) -> ReloadOutcome {
        // A poisoned lock only means another swap panicked; the counter is still valid.
        let mut last = self
            .swap_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *last += 1;
        let generation = *last;
        let new = Arc::new(Current {
            generation,
            policy: Arc::new(policy),
        });
        let old = self.current.swap(new.clone());
        ReloadOutcome {
            unchanged: old.policy.hash() == new.policy.hash(),
            old_version: version_of(&old),
            new_version: version_of(&new),
        }
    }

    /// Reload with kernel map updates in the safe order: `write_maps(strictest(old,
    /// new))`, swap, `write_maps(new)`. If the first write fails nothing is swapped; if
    /// the second fails the maps stay at the strict plan (safe: more is asked, nothing
    /// more is allowed) and the error is returned.
    ///
    /// # Errors
    /// The policy's load error ([`ReloadError::Policy`]) or the map writer's
    /// ([`ReloadError::Maps`]).
    pub fn reload_with<E>(
        &self,
        path: &Path,
        mut write_maps: impl FnMut(&KernelPlan) -> Result<(), E>,
    ) -> Result<ReloadOutcome, ReloadError<E>> {
        let policy = Policy::load(path).map_err(ReloadError::Policy)?;
        let old_plan = self.current().kernel_plan();
        let new_plan = policy.kernel_plan();
        write_maps(&old_plan.strictest(&new_plan)).map_err(ReloadError::Maps)?;
        let outcome = self.swap(policy);
        write_maps(&new_plan).map_err(ReloadError::Maps)?;
        Ok(outcome)
    }
}

/// Why [`PolicyHandle::reload_with`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError<E> {
    /// The new policy was rejected; the old one stays in force.
    #[error(transparent)]
    Policy(PolicyError),
    /// The kernel map writer failed.
    #[error("writing kernel maps: {0}")]
    Maps(E),
}

fn version_of(cur: &Current) -> PolicyVersion {
    PolicyVersion {
        generation: cur.generation,
        hash: cur.policy.hash.clone(),
        revision: cur.policy.revision.clone(),
    }
}
