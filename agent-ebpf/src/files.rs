//! The credential-file gate and the agent's own files, both on `file_open`; it also
//! records which files watched processes open for writing (the exec content rule).
//!
//! Files are matched by (dev, inode), so symlinks, hard links, relative paths,
//! `/proc/self/root/...`, `openat2` and io_uring opens all reach the same key.

use agent_common::{EventKind, FileEvent, HoldKey, HoldMode, Hook, PATH_LEN, names::PROTECTED_DIR};
use aya_ebpf::{
    bindings::path,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_d_path},
    programs::LsmContext,
};

use crate::{
    hold,
    maps::{CRED_FILES, EVENTS, PROTECTED_FILES, WRITTEN_FILES, offsets},
    protect, protect_fs,
    scope::current_in_scope,
    task::{
        self, NR_CREAT, NR_EXECVE, NR_EXECVEAT, NR_OPEN, NR_OPEN_BY_HANDLE_AT, NR_OPENAT,
        NR_OPENAT2, fill_header,
    },
};

const FMODE_WRITE: u32 = 0x2;
const O_TRUNC: u32 = 0o1000;

/// match-proto: int security_file_open(struct file *file)
pub fn check(ctx: &LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !current_in_scope(tgid) {
        return 0;
    }
    let file: *const u8 = ctx.arg(0);
    let off = offsets();
    // SAFETY: direct BTF loads along file->f_inode->{i_ino, i_sb->s_dev} and f_mode/f_flags.
    let (key, mode, flags) = unsafe {
        let inode = *(file.add(off.file_f_inode as usize) as *const *const u8);
        let mode = *(file.add(off.file_f_mode as usize) as *const u32);
        let flags = *(file.add(off.file_f_flags as usize) as *const u32);
        (protect_fs::inode_key(inode), mode, flags)
    };
    if mode & FMODE_WRITE != 0 || flags & O_TRUNC != 0 {
        // SAFETY: `f_path.dentry` (8 bytes into `struct path`) is a BTF load.
        let parent = unsafe {
            let dentry = *(file.add(off.file_f_path as usize + 8) as *const *const u8);
            protect_fs::parent_key(dentry)
        };
        // SAFETY: presence test only.
        if unsafe { PROTECTED_FILES.get(&key).is_some() }
            || protect_fs::protection(&parent) == PROTECTED_DIR
        {
            return protect::deny_write(tgid, file, key);
        }
        // The exec content rule: an exec of this file later is held (a copy of a tool).
        let _ = WRITTEN_FILES.insert(&key, &1, 0);
    }
    // SAFETY: as above.
    if unsafe { CRED_FILES.get(&key).is_none() } {
        return 0;
    }
    let hold_key = HoldKey::file(tgid, Hook::Open, key);
    let nr = task::syscall_nr();
    let restartable = !task::is_io_worker()
        && matches!(
            nr,
            NR_OPEN
                | NR_OPENAT
                | NR_OPENAT2
                | NR_CREAT
                | NR_OPEN_BY_HANDLE_AT
                | NR_EXECVE
                | NR_EXECVEAT
        );
    hold::gate(&hold_key, restartable, || {
        let Some(mut entry) = EVENTS.reserve::<FileEvent>(0) else {
            return hold::ring_full();
        };
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        let event = entry.as_mut_ptr();
        // SAFETY: `event` is a live reservation of size_of::<FileEvent>(); `file` is the
        // hook's BTF pointer, so `&file->f_path` is what bpf_d_path accepts.
        unsafe {
            fill_header(&mut (*event).header, EventKind::OpenHeld, hold_key, now);
            (*event).file = key;
            (*event).mode = if restartable {
                HoldMode::Stopped
            } else {
                HoldMode::DeniedUntilApproved
            } as u32;
            (*event).flags = flags;
            let buf = (*event).path.as_mut_ptr();
            let f_path = file.add(off.file_f_path as usize) as *mut path;
            if bpf_d_path(f_path, buf as *mut _, PATH_LEN as u32) < 0 {
                *buf = 0;
            }
        }
        if restartable {
            hold::hold(&hold_key, entry, now)
        } else {
            hold::deny_until_approved(&hold_key, entry, now)
        }
    })
}
