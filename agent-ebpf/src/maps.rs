//! Every map and global the programs share with user space. Names come from
//! `agent_common::names` (the `#[map]` name is the static's identifier).

use agent_common::{
    DnsCall, DnsKey, HoldKey, HostName, InodeKey, KernelOffsets, NetKey, Settings, SslPlain,
};
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};

#[map]
pub static SCOPE_CGROUPS: HashMap<u64, u32> = HashMap::pinned(1024, 0);

#[map]
pub static SCOPE_TASKS: HashMap<u32, u32> = HashMap::pinned(65536, 0);

#[map]
pub static SCOPE_GEN: Array<u64> = Array::pinned(1, 0);

/// Per-task cache of the scope answer (see `scope::current_in_scope`).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct ScopeCache {
    /// The cgroup the answer was computed in (an "out" answer holds only there).
    pub cgroup: u64,
    /// `SCOPE_GEN[0]` when the answer was computed (an "out" answer holds only then).
    pub generation: u64,
    /// 1: in scope (for good: scope is never taken back from a living task).
    pub inside: u64,
}

/// A BTF-defined `BPF_MAP_TYPE_TASK_STORAGE` map: aya-ebpf 0.2.1 has inode, sk and cgroup
/// storage but no task storage, so the definition is spelled out the way its
/// `btf_map_def!` does it (the loader reads the map's type, key and value from BTF).
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are placeholders the loader reads from BTF; they are never
// dereferenced, so sharing the static across CPUs shares nothing.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        Self {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    /// The map pointer helpers take (relocated by the loader).
    #[inline(always)]
    pub fn as_ptr(&self) -> *mut core::ffi::c_void {
        core::ptr::from_ref(self).cast_mut().cast()
    }
}

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "SCOPE_CACHE")]
pub static SCOPE_CACHE: TaskStorage<ScopeCache> = TaskStorage::new();

#[map]
pub static WATCHED_EXEC: HashMap<InodeKey, u32> = HashMap::pinned(4096, 0);

#[map]
pub static VERDICTS: HashMap<HoldKey, u32> = HashMap::pinned(4096, 0);

#[map]
pub static PENDING: HashMap<HoldKey, u64> = HashMap::pinned(4096, 0);

#[map]
pub static EXEC_APPROVED: HashMap<u32, u32> = HashMap::pinned(4096, 0);

#[map]
pub static EGRESS_ALLOW: LpmTrie<[u8; 16], u32> = LpmTrie::pinned(4096, 0);

#[map]
pub static CRED_FILES: HashMap<InodeKey, u32> = HashMap::pinned(16384, 0);

#[map]
pub static PROTECTED_FILES: HashMap<InodeKey, u32> = HashMap::pinned(1024, 0);

/// Files watched processes opened for writing (the exec content rule); LRU so a busy
/// process cannot fill it, the oldest writes are forgotten first.
#[map]
pub static WRITTEN_FILES: LruHashMap<InodeKey, u32> = LruHashMap::pinned(16384, 0);

#[map]
pub static PROTECTED_TASKS: HashMap<u32, u32> = HashMap::pinned(64, 0);

#[map]
pub static DNS_NAMES: LruHashMap<DnsKey, HostName> = LruHashMap::pinned(8192, 0);

#[map]
pub static DNS_CALLS: HashMap<u64, DnsCall> = HashMap::pinned(1024, 0);

/// A socket let through at connect, keyed by its `struct socket` address. That address is
/// reused once the socket is freed (a denied or never-used socket leaves its entry behind),
/// so the entry also carries the socket's inode number, which is not: a lookup from another
/// socket at the same address (a later socketpair, an accepted socket) sees a mismatch.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Deferred {
    pub dest: NetKey,
    pub ino: u64,
    /// Non-zero once the first send was denied: every later send and receive fails.
    pub severed: u64,
}

#[map]
pub static DEFERRED: HashMap<u64, Deferred> = HashMap::pinned(16384, 0);

/// Per-thread OpenSSL state (see `ssl.rs`). Not pinned: after a daemon restart the new
/// uprobes start from empty maps, and a thread mid-handshake at the restart fails closed.
#[map]
pub static SSL_PLAIN: LruHashMap<u64, SslPlain> = LruHashMap::with_max_entries(4096, 0);

#[map]
pub static SSL_HANDSHAKE: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// One CPU's scratch `SslPlain` (512 bytes do not fit on the BPF stack).
#[map]
pub static SSL_SCRATCH: PerCpuArray<SslPlain> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static TLS_PASSED: HashMap<u64, u32> = HashMap::pinned(16384, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(1 << 20, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(agent_common::names::COUNTER_SLOTS, 0);

/// Filled in by the loader from BTF (see `agent_common::offsets`); `.rodata`, frozen.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    bprm_file: 0,
    bprm_filename: 0,
    file_f_path: 0,
    file_f_inode: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    sb_s_dev: 0,
    tp_fork_child_pid: 0,
    socket_type: 0,
    file_f_flags: 0,
    file_f_mode: 0,
    task_tgid: 0,
    task_flags: 0,
    msghdr_msg_name: 0,
    msghdr_msg_namelen: 0,
    inode_i_nlink: 0,
    dentry_d_inode: 0,
    dentry_d_parent: 0,
    dentry_d_name: 0,
    socket_file: 0,
};

/// Filled in by the loader from the config; `.rodata`, frozen.
#[unsafe(no_mangle)]
static SETTINGS: Settings = Settings {
    defer_tcp_to_first_send: 0,
    _pad: 0,
};

#[inline(always)]
pub fn settings() -> Settings {
    // SAFETY: as for `offsets()`.
    unsafe { core::ptr::read_volatile(&SETTINGS) }
}

/// The offsets as the loader set them. The volatile read stops the compiler from folding
/// the zero placeholders; the verifier still sees constants because `.rodata` is frozen.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: OFFSETS is a plain static; reading it cannot fault.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

#[inline(always)]
pub fn count(counter: agent_common::names::Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *slot += 1 };
    }
}
