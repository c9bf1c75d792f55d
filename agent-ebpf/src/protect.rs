//! Self-protection: a watched task may not signal or ptrace the daemon, call `bpf()`, or
//! open the agent's own files for writing. These are denied at once (EPERM) and announced
//! so the daemon audits them; nobody is asked.

use agent_common::{DeniedEvent, EventKind, HoldKey, Hook, InodeKey, PATH_LEN, names::Counter};
use aya_ebpf::{
    bindings::path,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_d_path, bpf_probe_read_kernel_str},
    },
    programs::LsmContext,
};

use crate::{
    hold::EPERM,
    maps::{EVENTS, PROTECTED_TASKS, count, offsets},
    scope::current_in_scope,
    task::fill_header,
};

/// match-proto: int security_task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig, const struct cred *cred)
pub fn check_kill(ctx: &LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let sig: i32 = ctx.arg(2);
    // Signal 0 only probes for existence.
    if sig == 0 {
        return 0;
    }
    let target: *const u8 = ctx.arg(0);
    protect_task(target, Hook::Kill, sig as u32)
}

/// match-proto: int security_ptrace_access_check(struct task_struct *child, unsigned int mode)
pub fn check_ptrace(ctx: &LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let target: *const u8 = ctx.arg(0);
    let mode: u32 = ctx.arg(1);
    protect_task(target, Hook::Ptrace, mode)
}

/// match-proto: int security_bpf(int cmd, union bpf_attr *attr, unsigned int size)
pub fn check_bpf(ctx: &LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !current_in_scope(tgid) {
        return 0;
    }
    let cmd: i32 = ctx.arg(0);
    deny(
        HoldKey {
            tgid,
            hook: Hook::Bpf as u32,
            object: [cmd as u64, 0, 0],
        },
        0,
        Named::Nothing,
    )
}

#[inline(always)]
fn protect_task(target: *const u8, hook: Hook, detail: u32) -> i32 {
    // SAFETY: direct BTF load of `task_struct.tgid` at the offset from this kernel's BTF.
    let target_tgid = unsafe { *(target.add(offsets().task_tgid as usize) as *const i32) } as u32;
    // SAFETY: presence test only.
    if unsafe { PROTECTED_TASKS.get(&target_tgid).is_none() } {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !current_in_scope(tgid) {
        return 0;
    }
    deny(
        HoldKey {
            tgid,
            hook: hook as u32,
            object: [target_tgid as u64, 0, 0],
        },
        detail,
        Named::Nothing,
    )
}

/// Where a denial's path comes from.
pub enum Named {
    Nothing,
    /// `bpf_d_path` of this `struct file *` (a BTF pointer from the hook).
    File(*const u8),
    /// The last component of this `struct dentry *` (`d_name.name`).
    Dentry(*const u8),
}

/// Denies a write-open of one of the agent's files; `file` is the hook's BTF pointer.
#[inline(always)]
pub fn deny_write(tgid: u32, file: *const u8, key: InodeKey) -> i32 {
    let hold = HoldKey::file(tgid, Hook::WriteProtected, key);
    deny(hold, 0, Named::File(file))
}

/// Denies, records and counts one self-protection hit; returns -EPERM.
#[inline(always)]
pub fn deny(key: HoldKey, detail: u32, named: Named) -> i32 {
    count(Counter::ProtectDenied);
    // A full ring buffer still denies: the counter records the lost audit event.
    let Some(mut entry) = EVENTS.reserve::<DeniedEvent>(0) else {
        return -EPERM;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a live reservation of size_of::<DeniedEvent>(); `file` and
    // `dentry` are BTF pointers from the hook.
    unsafe {
        fill_header(&mut (*event).header, EventKind::Denied, key, now);
        (*event).detail = detail;
        (*event)._pad = 0;
        let buf = (*event).path.as_mut_ptr();
        *buf = 0;
        match named {
            Named::Nothing => {}
            Named::File(file) => {
                let f_path = file.add(offsets().file_f_path as usize) as *mut path;
                if bpf_d_path(f_path, buf as *mut _, PATH_LEN as u32) < 0 {
                    *buf = 0;
                }
            }
            Named::Dentry(dentry) => {
                // struct qstr { u64 hash_len; const unsigned char *name; }
                let name = *(dentry.add(offsets().dentry_d_name as usize + 8) as *const *const u8);
                if bpf_probe_read_kernel_str(buf as *mut _, PATH_LEN as u32, name as *const _) < 0 {
                    *buf = 0;
                }
            }
        }
    }
    entry.submit(0);
    -EPERM
}
