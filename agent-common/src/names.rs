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
/// `HashMap<InodeKey, u32>`; value [`PROTECTED_FILE`] or [`PROTECTED_DIR`].
pub const MAP_PROTECTED_FILES: &str = "PROTECTED_FILES";
/// Files a watched process opened for writing: exec of one of them is held (the exec
/// content rule). `LruHashMap<InodeKey, u32>`.
pub const MAP_WRITTEN_FILES: &str = "WRITTEN_FILES";
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
/// LSM programs keeping watched processes from removing, replacing or adding the agent's
/// files (unlink, rmdir, rename, link, create, mkdir, symlink, mknod).
pub const PROG_UNLINK_CHECK: &str = "unlink_check";
pub const LSM_HOOK_UNLINK: &str = "inode_unlink";
pub const PROG_RMDIR_CHECK: &str = "rmdir_check";
pub const LSM_HOOK_RMDIR: &str = "inode_rmdir";
pub const PROG_RENAME_CHECK: &str = "rename_check";
pub const LSM_HOOK_RENAME: &str = "inode_rename";
pub const PROG_LINK_CHECK: &str = "link_check";
pub const LSM_HOOK_LINK: &str = "inode_link";
pub const PROG_CREATE_CHECK: &str = "create_check";
pub const LSM_HOOK_CREATE: &str = "inode_create";
pub const PROG_MKDIR_CHECK: &str = "mkdir_check";
pub const LSM_HOOK_MKDIR: &str = "inode_mkdir";
pub const PROG_SYMLINK_CHECK: &str = "symlink_check";
pub const LSM_HOOK_SYMLINK: &str = "inode_symlink";
pub const PROG_MKNOD_CHECK: &str = "mknod_check";
pub const LSM_HOOK_MKNOD: &str = "inode_mknod";
/// LSM program on `path_truncate`: `truncate(2)` of the agent's files from scope.
pub const PROG_TRUNCATE_CHECK: &str = "truncate_check";
pub const LSM_HOOK_TRUNCATE: &str = "path_truncate";
/// LSM programs keeping watched processes from changing the mode, owner, extended
/// attributes or inode flags (`chattr`) of the agent's files.
pub const PROG_CHMOD_CHECK: &str = "chmod_check";
pub const LSM_HOOK_CHMOD: &str = "path_chmod";
pub const PROG_CHOWN_CHECK: &str = "chown_check";
pub const LSM_HOOK_CHOWN: &str = "path_chown";
pub const PROG_SETXATTR_CHECK: &str = "setxattr_check";
pub const LSM_HOOK_SETXATTR: &str = "inode_setxattr";
pub const PROG_REMOVEXATTR_CHECK: &str = "removexattr_check";
pub const LSM_HOOK_REMOVEXATTR: &str = "inode_removexattr";
pub const PROG_IOCTL_CHECK: &str = "ioctl_check";
pub const LSM_HOOK_IOCTL: &str = "file_ioctl";

/// `DeniedEvent.detail` of `Hook::UnlinkProtected` / `Hook::CreateProtected`: which call.
pub const DETAIL_UNLINK: u32 = 0;
pub const DETAIL_RMDIR: u32 = 1;
pub const DETAIL_CREATE: u32 = 0;
pub const DETAIL_MKDIR: u32 = 1;
pub const DETAIL_SYMLINK: u32 = 2;
pub const DETAIL_MKNOD: u32 = 3;
/// `DeniedEvent.detail` of `Hook::AttrProtected`: which change.
pub const DETAIL_CHMOD: u32 = 0;
pub const DETAIL_CHOWN: u32 = 1;
pub const DETAIL_SETXATTR: u32 = 2;
pub const DETAIL_REMOVEXATTR: u32 = 3;
pub const DETAIL_SETFLAGS: u32 = 4;

/// [`MAP_PROTECTED_FILES`] value of a protected file.
pub const PROTECTED_FILE: u32 = 1;
/// [`MAP_PROTECTED_FILES`] value of a protected directory: the directory itself and every
/// name in it (files created later included) are protected.
pub const PROTECTED_DIR: u32 = 2;

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
/// TCP sockets let through at connect and held at their first send: `HashMap<u64, Deferred>`
/// keyed by the `struct socket` address (the value: destination, socket inode number, and
/// whether the first send was denied, after which every send and receive fails with EPERM
/// so a client that ignores the failed write, like busybox `wget`, does not wait on a reply).
pub const MAP_DEFERRED: &str = "DEFERRED";
/// LSM program on `socket_recvmsg`: receives on severed sockets.
pub const PROG_RECV_CHECK: &str = "recv_check";
pub const LSM_HOOK_RECV: &str = "socket_recvmsg";
/// OpenSSL plaintext being written, by thread (`pid_tgid`): `LruHashMap<u64, SslPlain>`.
/// Not pinned: per-thread state lives with the uprobes that fill it.
pub const MAP_SSL_PLAIN: &str = "SSL_PLAIN";
/// Threads inside `SSL_do_handshake`/`SSL_connect`: `LruHashMap<u64, u64>` (ktime of
/// entry). Not pinned, as above.
pub const MAP_SSL_HANDSHAKE: &str = "SSL_HANDSHAKE";
/// Deferred sockets whose ClientHello came from inside an OpenSSL handshake and was let
/// through: `HashMap<u64, u32>` (handshake bytes let through so far).
pub const MAP_TLS_PASSED: &str = "TLS_PASSED";
/// uprobes / uretprobes on libssl: `SSL_write` (int length), `SSL_write_ex` (size_t
/// length), one return probe for both; `SSL_do_handshake` and `SSL_connect` entry/return.
pub const PROG_SSL_WRITE_ENTER: &str = "ssl_write_enter";
pub const PROG_SSL_WRITE_EX_ENTER: &str = "ssl_write_ex_enter";
pub const PROG_SSL_WRITE_EXIT: &str = "ssl_write_exit";
pub const PROG_SSL_HANDSHAKE_ENTER: &str = "ssl_handshake_enter";
pub const PROG_SSL_HANDSHAKE_EXIT: &str = "ssl_handshake_exit";
pub const SYM_SSL_WRITE: &str = "SSL_write";
pub const SYM_SSL_WRITE_EX: &str = "SSL_write_ex";
pub const SYM_SSL_DO_HANDSHAKE: &str = "SSL_do_handshake";
pub const SYM_SSL_CONNECT: &str = "SSL_connect";
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
