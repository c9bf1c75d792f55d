//! The exec gate: `bprm_check_security` for binaries in `WATCHED_EXEC`, and the content
//! rule: from scope, exec of a file with no name (`i_nlink == 0`: memfd, `O_TMPFILE`,
//! unlinked) or of a file a watched process opened for writing (`WRITTEN_FILES`) is held
//! too, so user space can compare its content with the watched tools (a copy of `pg_dump`
//! has its own inode).
//!
//! A script exec runs this hook twice (the script, then its interpreter). One human decision
//! covers both: an approved exec marks the process in `EXEC_APPROVED` until the execve
//! syscall returns (`sys_exit_execve*` clears it, success or failure).

use agent_common::{
    EventKind, ExecEvent, ExecOrigin, HoldKey, PATH_LEN,
    event::{ARGV_BUF_LEN, ARGV_MAX_ARGS, ARGV_READ_LIMIT},
};
use aya_ebpf::{
    bindings::path,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{
            bpf_d_path, bpf_get_current_task_btf, bpf_probe_read_kernel_str,
            bpf_probe_read_user_str, bpf_task_pt_regs,
        },
    },
    programs::LsmContext,
};

use crate::{
    hold::{self, Answer, EPERM},
    maps::{EVENTS, EXEC_APPROVED, WATCHED_EXEC, WRITTEN_FILES, offsets},
    scope::current_in_scope,
    task::{NR_EXECVE, NR_EXECVEAT, PT_REGS_ORIG_AX, fill_header},
};

const _: () = assert!(ARGV_READ_LIMIT * 2 == ARGV_BUF_LEN && ARGV_READ_LIMIT.is_power_of_two());

/// x86_64 `struct pt_regs` offsets (user ABI, fixed) and syscall numbers.
const PT_REGS_DX: usize = 96;
const PT_REGS_SI: usize = 104;

pub fn check(ctx: &LsmContext) -> i32 {
    // A previous LSM already refused: keep its answer.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !current_in_scope(tgid) {
        return 0;
    }
    let bprm: *const u8 = ctx.arg(0);
    let off = offsets();
    // SAFETY: direct BTF-typed loads; the verifier checks each access against the kernel's
    // own layout, and the offsets come from the same kernel's BTF.
    let (file, binary, nlink) = unsafe {
        let file = *(bprm.add(off.bprm_file as usize) as *const *const u8);
        let inode = *(file.add(off.file_f_inode as usize) as *const *const u8);
        let nlink = *(inode.add(off.inode_i_nlink as usize) as *const u32);
        (file, crate::protect_fs::inode_key(inode), nlink)
    };
    // SAFETY: presence tests only.
    if unsafe { EXEC_APPROVED.get(&tgid).is_some() } {
        return 0;
    }
    // SAFETY: as above.
    let origin = if unsafe { WATCHED_EXEC.get(&binary).is_some() } {
        ExecOrigin::Watched
    } else if nlink == 0 {
        ExecOrigin::Anonymous
    } else if unsafe { WRITTEN_FILES.get(&binary).is_some() } {
        ExecOrigin::WrittenByScope
    } else {
        return 0;
    };
    let key = HoldKey::exec(tgid, binary);
    match hold::check_verdict(&key) {
        Answer::Allow => {
            let _ = EXEC_APPROVED.insert(&tgid, &1, 0);
            return 0;
        }
        Answer::Deny => return -EPERM,
        Answer::None => {}
    }
    if hold::is_pending(&key) {
        return hold::rehold();
    }
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        return hold::ring_full();
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: `entry` is a live ring buffer reservation of size_of::<ExecEvent>(); every
    // field is written through raw pointers so nothing large lands on the 512-byte stack.
    unsafe {
        let event = entry.as_mut_ptr();
        fill_header(&mut (*event).header, EventKind::ExecHeld, key, now);
        (*event).binary = binary;
        (*event).origin = origin as u32;
        fill_paths(event, bprm, file);
        fill_argv(event);
    }
    hold::hold(&key, entry, now)
}

/// # Safety
/// `event` must point to a writable `ExecEvent`; `bprm` and `file` are the hook's BTF
/// pointers.
#[inline(always)]
unsafe fn fill_paths(event: *mut ExecEvent, bprm: *const u8, file: *const u8) {
    let off = offsets();
    unsafe {
        let path_buf = (*event).path.as_mut_ptr();
        let f_path = file.add(off.file_f_path as usize) as *mut path;
        if bpf_d_path(f_path, path_buf as *mut _, PATH_LEN as u32) < 0 {
            *path_buf = 0;
        }
        let name_buf = (*event).filename.as_mut_ptr();
        let filename = *(bprm.add(off.bprm_filename as usize) as *const *const u8);
        if bpf_probe_read_kernel_str(name_buf as *mut _, PATH_LEN as u32, filename as *const _) < 0
        {
            *name_buf = 0;
        }
    }
}

/// Copies the caller's argv from its (still current) user memory: the hook runs before the
/// point of no return, so the execve arguments are where the registers say.
///
/// # Safety
/// `event` must point to a writable `ExecEvent`.
#[inline(always)]
unsafe fn fill_argv(event: *mut ExecEvent) {
    unsafe {
        (*event).argc = 0;
        (*event).argv_len = 0;
        (*event).argv_truncated = 0;
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        let argv = match *(regs.add(PT_REGS_ORIG_AX) as *const u64) {
            NR_EXECVE => *(regs.add(PT_REGS_SI) as *const u64),
            NR_EXECVEAT => *(regs.add(PT_REGS_DX) as *const u64),
            // Not an execve from user space (kernel_execve, compat): no argv to read.
            _ => {
                (*event).argv_truncated = 1;
                return;
            }
        };
        let buf = (*event).argv.as_mut_ptr();
        let mut written: usize = 0;
        let mut argc: u32 = 0;
        for i in 0..ARGV_MAX_ARGS {
            let Ok(arg) = bpf_probe_read_user((argv as *const u64).add(i)) else {
                break;
            };
            if arg == 0 {
                break;
            }
            if written >= ARGV_READ_LIMIT {
                (*event).argv_truncated = 1;
                break;
            }
            // The mask is a no-op (written < limit) that lets the verifier bound the write.
            let dst = buf.add(written & (ARGV_READ_LIMIT - 1));
            let n = bpf_probe_read_user_str(dst as *mut _, ARGV_READ_LIMIT as u32, arg as *const _);
            if n <= 0 {
                (*event).argv_truncated = 1;
                break;
            }
            written += n as usize;
            argc += 1;
            if i == ARGV_MAX_ARGS - 1 {
                (*event).argv_truncated = 1;
            }
        }
        (*event).argc = argc;
        (*event).argv_len = written as u32;
    }
}

pub fn on_exec_return() {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let _ = EXEC_APPROVED.remove(&tgid);
}
