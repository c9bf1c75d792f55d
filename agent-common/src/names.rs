//! Names of maps, programs and globals, shared so neither side spells them by hand.

/// cgroup v2 ids whose member tasks are in scope. `HashMap<u64, u32>`.
pub const MAP_SCOPE_CGROUPS: &str = "SCOPE_CGROUPS";
/// Task ids (tid) that inherited scope through fork. `HashMap<u32, u32>`.
pub const MAP_SCOPE_TASKS: &str = "SCOPE_TASKS";
/// Binaries whose exec is held. `HashMap<InodeKey, u32>` (value: rule index, for events).
pub const MAP_WATCHED_EXEC: &str = "WATCHED_EXEC";
/// Verdicts waiting to be consumed by a restarted syscall. `HashMap<HoldKey, u32>`.
pub const MAP_VERDICTS: &str = "VERDICTS";
/// Actions announced to user space and not yet answered. `HashMap<HoldKey, u64>` (ktime).
pub const MAP_PENDING: &str = "PENDING";
/// Processes whose current execve was approved, so the interpreter pass of a script exec is
/// not asked again. `HashMap<u32, u32>`; cleared when the exec completes.
pub const MAP_EXEC_APPROVED: &str = "EXEC_APPROVED";
/// Events for user space. `RingBuf`.
pub const MAP_EVENTS: &str = "EVENTS";
/// Counters of fast-path outcomes and failures. `PerCpuArray<u64>` indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "COUNTERS";

/// LSM program on `bprm_check_security`.
pub const PROG_EXEC_CHECK: &str = "exec_check";
pub const LSM_HOOK_EXEC: &str = "bprm_check_security";
/// Tracepoint `sched/sched_process_fork`: scope inheritance.
pub const PROG_FORK: &str = "scope_fork";
/// Tracepoint `sched/sched_process_exit`: scope and hold cleanup.
pub const PROG_EXIT: &str = "scope_exit";
/// Tracepoint `sched/sched_process_exec`: ends an approved exec's interpreter window.
pub const PROG_EXEC_DONE: &str = "exec_done";

/// Global (`.rodata`) holding [`crate::KernelOffsets`].
pub const GLOBAL_OFFSETS: &str = "OFFSETS";

/// Indexes of [`MAP_COUNTERS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A watched action was held and announced.
    Held = 0,
    /// A restarted syscall found no verdict yet and was held again without a new event.
    ReHeld = 1,
    /// The ring buffer was full: the action was denied (fail closed).
    RingFull = 2,
    /// SIGSTOP could not be sent: the action was denied (fail closed).
    SignalFailed = 3,
    /// A verdict was consumed.
    VerdictConsumed = 4,
}
pub const COUNTER_SLOTS: u32 = 8;
