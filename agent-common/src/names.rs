//! Names of maps, programs and globals, shared so neither side spells them by hand.

/// cgroup v2 ids whose member tasks are in scope. `HashMap<u64, u32>`.
pub const MAP_SCOPE_CGROUPS: &str = "SCOPE_CGROUPS";
/// Task ids (tid) that inherited scope through fork. `HashMap<u32, u32>`.
pub const MAP_SCOPE_TASKS: &str = "SCOPE_TASKS";
/// Bumped by user space after it adds to [`MAP_SCOPE_CGROUPS`] or [`MAP_SCOPE_TASKS`]:
/// invalidates the per-task "out of scope" answers the gates cached. `Array<u64>`, 1 slot.
pub const MAP_SCOPE_GEN: &str = "SCOPE_GEN";
/// Binaries whose exec is held. `HashMap<InodeKey, u32>` (value: rule index, for events).
pub const MAP_WATCHED_EXEC: &str = "WATCHED_EXEC";
/// Verdicts waiting to be consumed by a restarted syscall. `HashMap<HoldKey, u32>`.
pub const MAP_VERDICTS: &str = "VERDICTS";
/// Actions announced to user space and not yet answered. `HashMap<HoldKey, u64>` (ktime).
pub const MAP_PENDING: &str = "PENDING";
/// Processes whose current execve was approved, so the interpreter pass of a script exec is
/// not asked again. `HashMap<u32, u32>`; cleared when the exec completes.
pub const MAP_EXEC_APPROVED: &str = "EXEC_APPROVED";
/// Allowed egress destinations. `LpmTrie<[u8; 16], u32>` keyed by [`crate::AllowKey`].
pub const MAP_EGRESS_ALLOW: &str = "EGRESS_ALLOW";
/// Credential files whose open is held. `HashMap<InodeKey, u32>` (value: rule index).
pub const MAP_CRED_FILES: &str = "CRED_FILES";
/// The agent's own files (config, policy, state, audit): writes from scope are denied.
/// `HashMap<InodeKey, u32>`.
pub const MAP_PROTECTED_FILES: &str = "PROTECTED_FILES";
/// Thread-group ids of the daemon: signals and ptrace from scope are denied.
/// `HashMap<u32, u32>`.
pub const MAP_PROTECTED_TASKS: &str = "PROTECTED_TASKS";
/// Names the watched processes resolved: `LruHashMap<DnsKey, HostName>`.
pub const MAP_DNS_NAMES: &str = "DNS_NAMES";
/// `getaddrinfo` calls in flight, by thread: `HashMap<u64, DnsCall>`.
pub const MAP_DNS_CALLS: &str = "DNS_CALLS";
/// Events for user space. `RingBuf`.
pub const MAP_EVENTS: &str = "EVENTS";
/// Counters of fast-path outcomes and failures. `PerCpuArray<u64>` indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "COUNTERS";

/// LSM program on `bprm_check_security`.
pub const PROG_EXEC_CHECK: &str = "exec_check";
pub const LSM_HOOK_EXEC: &str = "bprm_check_security";
/// LSM program on `socket_connect`.
pub const PROG_CONNECT_CHECK: &str = "connect_check";
pub const LSM_HOOK_CONNECT: &str = "socket_connect";
/// LSM program on `socket_sendmsg`.
pub const PROG_SENDMSG_CHECK: &str = "sendmsg_check";
pub const LSM_HOOK_SENDMSG: &str = "socket_sendmsg";
/// LSM program on `file_open`: credential files and the agent's own files.
pub const PROG_OPEN_CHECK: &str = "open_check";
pub const LSM_HOOK_OPEN: &str = "file_open";
/// LSM program on `task_kill`: signals to the daemon.
pub const PROG_KILL_CHECK: &str = "kill_check";
pub const LSM_HOOK_KILL: &str = "task_kill";
/// LSM program on `ptrace_access_check`: ptrace of the daemon.
pub const PROG_PTRACE_CHECK: &str = "ptrace_check";
pub const LSM_HOOK_PTRACE: &str = "ptrace_access_check";
/// LSM program on `bpf`: the `bpf()` syscall from scope.
pub const PROG_BPF_CHECK: &str = "bpf_check";
pub const LSM_HOOK_BPF: &str = "bpf";
/// uprobe / uretprobe on libc `getaddrinfo`: host names for held destinations.
pub const PROG_DNS_ENTER: &str = "dns_enter";
pub const PROG_DNS_EXIT: &str = "dns_exit";
pub const SYM_GETADDRINFO: &str = "getaddrinfo";
/// Tracepoint `sched/sched_process_fork`: scope inheritance.
pub const PROG_FORK: &str = "scope_fork";
/// Tracepoint `sched/sched_process_exit`: scope and hold cleanup.
pub const PROG_EXIT: &str = "scope_exit";
/// Tracepoint `sched/sched_process_exec`: ends an approved exec's interpreter window.
pub const PROG_EXEC_DONE: &str = "exec_done";

/// Global (`.rodata`) holding [`crate::Settings`].
pub const GLOBAL_SETTINGS: &str = "SETTINGS";
/// TCP sockets let through at connect and held at their first send: `HashMap<u64, NetKey>`
/// keyed by the `struct socket` address.
pub const MAP_DEFERRED: &str = "DEFERRED";
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
    /// A self-protection rule denied an action.
    ProtectDenied = 5,
    /// An io_uring (non-restartable) action was denied pending approval.
    AsyncDenied = 6,
}
pub const COUNTER_SLOTS: u32 = 8;
