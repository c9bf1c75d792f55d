//! Which tasks are watched: members of a scoped cgroup, and every task forked from a
//! watched one (so double-forks, `setsid` and moving to another cgroup do not escape).

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid},
    programs::TracePointContext,
};

use crate::maps::{EXEC_APPROVED, SCOPE_CGROUPS, SCOPE_TASKS, offsets};

/// True when the current task is watched.
///
/// A process found in scope through its cgroup is also marked by tgid, so moving it to
/// another cgroup later does not unwatch it (it must open `cgroup.procs`, or exec, or
/// connect, to move itself — each of which passes through here first).
#[inline(always)]
pub fn current_in_scope(tgid: u32) -> bool {
    // SAFETY: map values are plain u32s; we only test presence.
    if unsafe { SCOPE_TASKS.get(&tgid).is_some() } {
        return true;
    }
    // SAFETY: as above.
    if unsafe { SCOPE_CGROUPS.get(&bpf_get_current_cgroup_id()).is_some() } {
        let _ = SCOPE_TASKS.insert(&tgid, &1, 0);
        return true;
    }
    false
}

pub fn on_fork(ctx: &TracePointContext) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !current_in_scope(tgid) {
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
