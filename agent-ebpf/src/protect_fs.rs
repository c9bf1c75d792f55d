//! Self-protection of the agent's files against removal and replacement: from scope, no
//! unlink, rmdir, rename, hard link or new name touching a protected file or a name inside a
//! protected directory (`PROTECTED_FILES` value `PROTECTED_DIR`). Directories are protected
//! by inode, so files the daemon creates later (rotated audit files) are covered without
//! user space adding them. Writes are denied on `file_open` (see `files.rs`), truncation by
//! path on `path_truncate`. Changes of mode, owner, extended attributes and inode flags
//! (`chattr +i` would stop the daemon appending to its audit log) are denied too.
//!
//! The `inode_*` hooks run for every path into the VFS (unlinkat, renameat2, io_uring), and,
//! unlike `path_*`, do not depend on `CONFIG_SECURITY_PATH`. Their signatures are the same
//! on 6.1 and 6.12. Denials are EPERM and announced like the other self-protection rules.

use agent_common::{
    HoldKey, Hook, InodeKey,
    names::{PROTECTED_DIR, PROTECTED_FILE},
};
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::lsm, programs::LsmContext};

use crate::{
    maps::{PROTECTED_FILES, offsets},
    protect::{self, Named},
    scope::current_in_scope,
};

/// match-proto: int security_inode_unlink(struct inode *dir, struct dentry *dentry)
#[lsm(hook = "inode_unlink")]
pub fn unlink_check(ctx: LsmContext) -> i32 {
    remove(&ctx, DETAIL_UNLINK)
}

/// match-proto: int security_inode_rmdir(struct inode *dir, struct dentry *dentry)
#[lsm(hook = "inode_rmdir")]
pub fn rmdir_check(ctx: LsmContext) -> i32 {
    remove(&ctx, DETAIL_RMDIR)
}

/// match-proto: int security_inode_rename(struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir, struct dentry *new_dentry, unsigned int flags)
/// (the LSM hook itself takes the first four; RENAME_EXCHANGE calls it twice)
#[lsm(hook = "inode_rename")]
pub fn rename_check(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let Some(tgid) = watched() else { return 0 };
    let (old_dir, old_dentry): (*const u8, *const u8) = (ctx.arg(0), ctx.arg(1));
    let (new_dir, new_dentry): (*const u8, *const u8) = (ctx.arg(2), ctx.arg(3));
    // SAFETY: BTF pointers from the hook; `dentry_inode` tolerates a negative dentry.
    let (moved, old_parent, new_parent, replaced) = unsafe {
        (
            dentry_inode(old_dentry),
            inode_key(old_dir),
            inode_key(new_dir),
            dentry_inode(new_dentry),
        )
    };
    let replaced_protected = protection(&replaced) != 0;
    // Moving a protected file or directory away, moving anything into or out of a protected
    // directory, or renaming over a protected file.
    if replaced_protected
        || protection(&moved) != 0
        || protection(&old_parent) == PROTECTED_DIR
        || protection(&new_parent) == PROTECTED_DIR
    {
        if replaced_protected {
            return deny(
                tgid,
                Hook::RenameProtected,
                replaced,
                new_parent,
                new_dentry,
                0,
            );
        }
        return deny(
            tgid,
            Hook::RenameProtected,
            moved,
            old_parent,
            old_dentry,
            0,
        );
    }
    0
}

/// match-proto: int security_inode_link(struct dentry *old_dentry, struct inode *dir, struct dentry *new_dentry)
#[lsm(hook = "inode_link")]
pub fn link_check(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let Some(tgid) = watched() else { return 0 };
    let (old_dentry, dir, new_dentry): (*const u8, *const u8, *const u8) =
        (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    // SAFETY: BTF pointers from the hook.
    let (linked, parent) = unsafe { (dentry_inode(old_dentry), inode_key(dir)) };
    if protection(&linked) != 0 || protection(&parent) == PROTECTED_DIR {
        return deny(tgid, Hook::LinkProtected, linked, parent, new_dentry, 0);
    }
    0
}

/// match-proto: int security_inode_create(struct inode *dir, struct dentry *dentry, umode_t mode)
#[lsm(hook = "inode_create")]
pub fn create_check(ctx: LsmContext) -> i32 {
    create(&ctx, 3, DETAIL_CREATE)
}

/// match-proto: int security_inode_mkdir(struct inode *dir, struct dentry *dentry, umode_t mode)
#[lsm(hook = "inode_mkdir")]
pub fn mkdir_check(ctx: LsmContext) -> i32 {
    create(&ctx, 3, DETAIL_MKDIR)
}

/// match-proto: int security_inode_symlink(struct inode *dir, struct dentry *dentry, const char *old_name)
#[lsm(hook = "inode_symlink")]
pub fn symlink_check(ctx: LsmContext) -> i32 {
    create(&ctx, 3, DETAIL_SYMLINK)
}

/// match-proto: int security_inode_mknod(struct inode *dir, struct dentry *dentry, umode_t mode, dev_t dev)
#[lsm(hook = "inode_mknod")]
pub fn mknod_check(ctx: LsmContext) -> i32 {
    create(&ctx, 4, DETAIL_MKNOD)
}

/// match-proto: int security_path_truncate(const struct path *path)
/// (`truncate(2)` by path and `ftruncate` both pass here; needs `CONFIG_SECURITY_PATH`,
/// which Debian's kernels set for AppArmor and TOMOYO)
#[lsm(hook = "path_truncate")]
pub fn truncate_check(ctx: LsmContext) -> i32 {
    // The name, not bpf_d_path: 6.1 allows that helper only in its allowlisted hooks.
    by_path(&ctx, 1, Hook::WriteProtected, 0)
}

/// match-proto: int security_path_chmod(const struct path *path, umode_t mode)
#[lsm(hook = "path_chmod")]
pub fn chmod_check(ctx: LsmContext) -> i32 {
    by_path(&ctx, 2, Hook::AttrProtected, DETAIL_CHMOD)
}

/// match-proto: int security_path_chown(const struct path *path, kuid_t uid, kgid_t gid)
#[lsm(hook = "path_chown")]
pub fn chown_check(ctx: LsmContext) -> i32 {
    by_path(&ctx, 3, Hook::AttrProtected, DETAIL_CHOWN)
}

/// match-proto: int security_inode_setxattr(struct mnt_idmap *idmap, struct dentry *dentry, const char *name, const void *value, size_t size, int flags)
/// (6.1 passes a `struct user_namespace *` first: the dentry is the second argument on both)
#[lsm(hook = "inode_setxattr")]
pub fn setxattr_check(ctx: LsmContext) -> i32 {
    xattr(&ctx, 6, DETAIL_SETXATTR)
}

/// match-proto: int security_inode_removexattr(struct mnt_idmap *idmap, struct dentry *dentry, const char *name)
#[lsm(hook = "inode_removexattr")]
pub fn removexattr_check(ctx: LsmContext) -> i32 {
    xattr(&ctx, 3, DETAIL_REMOVEXATTR)
}

/// truncate, chmod and chown: `(const struct path *path, ...)`; the previous answer is
/// `nargs`.
#[inline(always)]
fn by_path(ctx: &LsmContext, nargs: usize, hook: Hook, detail: u32) -> i32 {
    let previous: i32 = ctx.arg(nargs);
    if previous != 0 {
        return previous;
    }
    let path: *const u8 = ctx.arg(0);
    // SAFETY: `path->dentry` is 8 bytes into the hook's BTF `struct path`.
    unsafe { change_of(*(path.add(8) as *const *const u8), hook, detail) }
}

/// set and remove xattr: `(idmap or user_namespace, struct dentry *dentry, ...)`.
#[inline(always)]
fn xattr(ctx: &LsmContext, nargs: usize, detail: u32) -> i32 {
    let previous: i32 = ctx.arg(nargs);
    if previous != 0 {
        return previous;
    }
    // SAFETY: a BTF dentry pointer from the hook.
    unsafe { change_of(ctx.arg(1), Hook::AttrProtected, detail) }
}

/// `FS_IOC_SETFLAGS` (`chattr`: +i would stop the daemon appending its audit log), its
/// 32-bit form, and `FS_IOC_FSSETXATTR` (the same flags through `xfs_io`).
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;

/// match-proto: int security_file_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
#[lsm(hook = "file_ioctl")]
pub fn ioctl_check(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let cmd: u32 = ctx.arg(1);
    if cmd != FS_IOC_SETFLAGS && cmd != FS_IOC32_SETFLAGS && cmd != FS_IOC_FSSETXATTR {
        return 0;
    }
    let file: *const u8 = ctx.arg(0);
    // SAFETY: `file->f_path.dentry` (8 bytes into `struct path`) is a BTF load.
    unsafe {
        let dentry = *(file.add(offsets().file_f_path as usize + 8) as *const *const u8);
        change_of(dentry, Hook::AttrProtected, DETAIL_SETFLAGS)
    }
}

/// A change (truncation, mode, owner, extended attributes, inode flags) of a protected
/// file, a protected directory, or a name inside one: denied as `hook`.
///
/// # Safety
/// `dentry` must be a BTF pointer to a dentry.
#[inline(always)]
unsafe fn change_of(dentry: *const u8, hook: Hook, detail: u32) -> i32 {
    let Some(tgid) = watched() else { return 0 };
    // SAFETY: a BTF dentry pointer (the caller's contract).
    let (target, parent) = unsafe { (dentry_inode(dentry), parent_key(dentry)) };
    if protection(&target) != 0 || protection(&parent) == PROTECTED_DIR {
        return deny(tgid, hook, target, parent, dentry, detail);
    }
    0
}

// Which operation a denial was (the event's `detail`). Each entry point passes its own, which
// also keeps their bodies distinct: LLVM would otherwise merge identical programs into calls
// between them, which the 6.1 verifier refuses (a global function with a ctx argument).
use agent_common::names::{
    DETAIL_CHMOD, DETAIL_CHOWN, DETAIL_CREATE, DETAIL_MKDIR, DETAIL_MKNOD, DETAIL_REMOVEXATTR,
    DETAIL_RMDIR, DETAIL_SETFLAGS, DETAIL_SETXATTR, DETAIL_SYMLINK, DETAIL_UNLINK,
};

/// unlink and rmdir: `(struct inode *dir, struct dentry *dentry)`.
#[inline(always)]
fn remove(ctx: &LsmContext, detail: u32) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let Some(tgid) = watched() else { return 0 };
    let (dir, dentry): (*const u8, *const u8) = (ctx.arg(0), ctx.arg(1));
    // SAFETY: BTF pointers from the hook.
    let (target, parent) = unsafe { (dentry_inode(dentry), inode_key(dir)) };
    if protection(&target) != 0 || protection(&parent) == PROTECTED_DIR {
        return deny(tgid, Hook::UnlinkProtected, target, parent, dentry, detail);
    }
    0
}

/// create, mkdir, symlink, mknod: `(struct inode *dir, struct dentry *dentry, ...)`; the
/// previous LSM's answer is argument `nargs`.
#[inline(always)]
fn create(ctx: &LsmContext, nargs: usize, detail: u32) -> i32 {
    let previous: i32 = ctx.arg(nargs);
    if previous != 0 {
        return previous;
    }
    let Some(tgid) = watched() else { return 0 };
    let (dir, dentry): (*const u8, *const u8) = (ctx.arg(0), ctx.arg(1));
    // SAFETY: BTF pointer from the hook.
    let parent = unsafe { inode_key(dir) };
    if protection(&parent) == PROTECTED_DIR {
        return deny(
            tgid,
            Hook::CreateProtected,
            InodeKey::default(),
            parent,
            dentry,
            detail,
        );
    }
    0
}

/// The current tgid when it is watched. Checked before any map lookup of the files, so
/// out of scope the hooks cost the two scope lookups only.
#[inline(always)]
fn watched() -> Option<u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    current_in_scope(tgid).then_some(tgid)
}

#[inline(always)]
fn deny(
    tgid: u32,
    hook: Hook,
    target: InodeKey,
    dir: InodeKey,
    dentry: *const u8,
    detail: u32,
) -> i32 {
    protect::deny(
        HoldKey {
            tgid,
            hook: hook as u32,
            object: [target.ino, target.dev as u64, dir.ino],
        },
        detail,
        Named::Dentry(dentry),
    )
}

/// `PROTECTED_FILE`, `PROTECTED_DIR` or 0 (also for the "no inode" key, `ino == 0`).
#[inline(always)]
pub fn protection(key: &InodeKey) -> u32 {
    if key.ino == 0 {
        return 0;
    }
    // SAFETY: the value is a plain u32, copied out.
    match unsafe { PROTECTED_FILES.get(key) } {
        Some(&PROTECTED_DIR) => PROTECTED_DIR,
        Some(_) => PROTECTED_FILE,
        None => 0,
    }
}

/// The identity of a `struct inode *`.
///
/// # Safety
/// `inode` must be a BTF pointer to an inode (from a hook argument or a BTF load).
#[inline(always)]
pub unsafe fn inode_key(inode: *const u8) -> InodeKey {
    let off = offsets();
    // SAFETY: direct BTF loads checked by the verifier; offsets from this kernel's BTF.
    unsafe {
        let ino = *(inode.add(off.inode_i_ino as usize) as *const u64);
        let sb = *(inode.add(off.inode_i_sb as usize) as *const *const u8);
        let dev = *(sb.add(off.sb_s_dev as usize) as *const u32);
        InodeKey::new(dev, ino)
    }
}

/// The identity of a dentry's inode; all zero for a negative dentry (a name with no file).
/// A plain value rather than an `Option`: LLVM leaves the `None` payload undefined, and
/// the 6.1 verifier refuses the spill of an uninitialised register.
///
/// # Safety
/// `dentry` must be a BTF pointer to a dentry.
#[inline(always)]
pub unsafe fn dentry_inode(dentry: *const u8) -> InodeKey {
    // SAFETY: direct BTF load of `dentry.d_inode`.
    let inode = unsafe { *(dentry.add(offsets().dentry_d_inode as usize) as *const *const u8) };
    if inode.is_null() {
        return InodeKey::new(0, 0);
    }
    // SAFETY: a non-null `d_inode` is an inode.
    unsafe { inode_key(inode) }
}

/// The identity of the directory a dentry is in (`d_parent->d_inode`).
///
/// # Safety
/// `dentry` must be a BTF pointer to a dentry.
#[inline(always)]
pub unsafe fn parent_key(dentry: *const u8) -> InodeKey {
    // SAFETY: direct BTF load of `dentry.d_parent` (never null: the root is its own parent).
    unsafe {
        let parent = *(dentry.add(offsets().dentry_d_parent as usize) as *const *const u8);
        dentry_inode(parent)
    }
}
