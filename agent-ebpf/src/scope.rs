//! Which tasks are watched: members of a scoped cgroup, and every task forked from a
//! watched one (so double-forks, `setsid` and moving to another cgroup do not escape).

use aya_ebpf::{
    bindings::BPF_LOCAL_STORAGE_GET_F_CREATE,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
        generated::{bpf_get_current_task_btf, bpf_task_storage_get},
    },
    programs::TracePointContext,
};

use crate::maps::{
    EXEC_APPROVED, SCOPE_CACHE, SCOPE_CGROUPS, SCOPE_GEN, SCOPE_TASKS, ScopeCache, offsets,
};

/// True when the current task is watched — for LSM programs (task storage helpers).
///
/// Every hook of every task on the host asks this, and nearly all are out of scope, so
/// the answer is cached per task in BPF task local storage (`SCOPE_CACHE`): one storage
/// lookup instead of two hash lookups. "In scope" is cached for good (scope is never
/// taken back from a living task). "Out of scope" is cached together with the task's
/// cgroup id and `SCOPE_GEN`, and holds only while both are unchanged: a move into a
/// scoped cgroup changes the first, user space adding a cgroup or task bumps the second
/// (after adding, and the generation is read here before the lookups, so an answer
/// computed before an addition is never stored under the new generation).
#[inline(always)]
pub fn current_in_scope(tgid: u32) -> bool {
    // SAFETY: helper without arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let generation = SCOPE_GEN.get(0).copied().unwrap_or(0);
    // SAFETY: bpf_get_current_task_btf is the current task as a BTF pointer, which is what
    // bpf_task_storage_get takes; the map pointer is the relocated SCOPE_CACHE; a null
    // initial value with F_CREATE yields zeroed storage (or null when allocation fails).
    let cache = unsafe {
        bpf_task_storage_get(
            SCOPE_CACHE.as_ptr(),
            bpf_get_current_task_btf() as *mut _,
            core::ptr::null_mut(),
            u64::from(BPF_LOCAL_STORAGE_GET_F_CREATE),
        )
    } as *mut ScopeCache;
    if !cache.is_null() {
        // SAFETY: non-null storage of this task, sized ScopeCache; only this task's
        // programs write it (concurrent programs on the same task cannot run: one CPU).
        let hit = unsafe { *cache };
        if hit.inside != 0 {
            return true;
        }
        if hit.cgroup == cgroup && hit.generation == generation {
            return false;
        }
    }
    let inside = lookup_scope(tgid, cgroup);
    if !cache.is_null() {
        // SAFETY: as above.
        unsafe {
            *cache = ScopeCache {
                cgroup,
                generation,
                inside: u64::from(inside),
            };
        }
    }
    inside
}

/// True when the current task is watched, without the per-task cache (for tracepoint and
/// uprobe programs, where task storage helpers are not available on every kernel).
#[inline(always)]
pub fn current_in_scope_uncached(tgid: u32) -> bool {
    // SAFETY: helper without arguments.
    lookup_scope(tgid, unsafe { bpf_get_current_cgroup_id() })
}

/// The maps' answer. A process found in scope through its cgroup is also marked by tgid,
/// so moving it to another cgroup later does not unwatch it (it must open
/// `cgroup.procs`, or exec, or connect, to move itself — each of which passes through
/// here first).
#[inline(always)]
fn lookup_scope(tgid: u32, cgroup: u64) -> bool {
    // SAFETY: map values are plain u32s; we only test presence.
    if unsafe { SCOPE_TASKS.get(&tgid).is_some() } {
        return true;
    }
    // SAFETY: as above.
    if unsafe { SCOPE_CGROUPS.get(&cgroup).is_some() } {
        let _ = SCOPE_TASKS.insert(&tgid, &1, 0);
        return true;
    }
    false
}

pub fn on_fork(ctx: &TracePointContext) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !current_in_scope_uncached(tgid) {
        return;
    }
    // SAFETY: the offset comes from the tracepoint's BTF record layout.
    let Ok(child) = (unsafe { ctx.read_at::<u32>(offsets().tp_fork_child_pid as usize) }) else {
        return;
    };
    // A full map must not stop the fork; user space sees the miss through the scope audit.
    let _ = SCOPE_TASKS.insert(&child, &1, 0);
}

pub fn on_exit() {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let _ = SCOPE_TASKS.remove(&tid);
    crate::ssl::on_thread_exit(pid_tgid);
    if tid == (pid_tgid >> 32) as u32 {
        let _ = EXEC_APPROVED.remove(&tid);
    }
}
