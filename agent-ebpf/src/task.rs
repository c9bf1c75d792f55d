//! Facts about the current task shared by every gate: the event header, which syscall it
//! is in, and whether the kernel can restart it (DESIGN.md §3).

use agent_common::{EventHeader, EventKind, HoldKey};
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_uid_gid,
    generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
};

use crate::maps::offsets;

/// x86_64 `struct pt_regs` offset of `orig_ax` (user ABI, fixed).
pub const PT_REGS_ORIG_AX: usize = 120;
/// `PF_IO_WORKER` in `task_struct.flags`: an io_uring worker thread.
const PF_IO_WORKER: u32 = 0x10;

/// x86_64 syscall numbers the gates can hold by stopping and restarting.
pub const NR_OPEN: u64 = 2;
pub const NR_CONNECT: u64 = 42;
pub const NR_SENDTO: u64 = 44;
pub const NR_SENDMSG: u64 = 46;
pub const NR_EXECVE: u64 = 59;
pub const NR_CREAT: u64 = 85;
pub const NR_OPENAT: u64 = 257;
pub const NR_OPEN_BY_HANDLE_AT: u64 = 304;
pub const NR_SENDMMSG: u64 = 307;
pub const NR_EXECVEAT: u64 = 322;
pub const NR_OPENAT2: u64 = 437;

/// The syscall the current task entered from user space (`orig_ax`).
#[inline(always)]
pub fn syscall_nr() -> u64 {
    // SAFETY: bpf_task_pt_regs of the current BTF task is a valid pt_regs pointer; the load
    // is checked by the verifier against `struct pt_regs`.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        *(regs.add(PT_REGS_ORIG_AX) as *const u64)
    }
}

/// True when the current task is an io_uring worker (its "syscall" cannot be restarted).
#[inline(always)]
pub fn is_io_worker() -> bool {
    // SAFETY: direct BTF load of `task_struct.flags` at the offset from this kernel's BTF.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        *(task.add(offsets().task_flags as usize) as *const u32) & PF_IO_WORKER != 0
    }
}

/// Fills the fields every event carries.
///
/// # Safety
/// `header` must point to a writable `EventHeader` (inside a ring buffer reservation).
#[inline(always)]
pub unsafe fn fill_header(header: *mut EventHeader, kind: EventKind, key: HoldKey, now: u64) {
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: the caller guarantees `header` is writable.
    unsafe {
        (*header).kind = kind as u32;
        (*header).tid = bpf_get_current_pid_tgid() as u32;
        (*header).ktime_ns = now;
        (*header).cgroup_id = bpf_get_current_cgroup_id();
        (*header).uid = uid_gid as u32;
        (*header).gid = (uid_gid >> 32) as u32;
        (*header).hold = key;
        (*header).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
}
