//! Keys and values of the hold machinery (DESIGN.md §3).
//!
//! A held syscall is identified by [`HoldKey`]: the process, the hook and the object it
//! touched. User space answers by writing a [`Verdict`] under that key and sending SIGCONT;
//! the restarted syscall finds it, consumes it and returns 0 or -EPERM.

/// Which LSM hook held the task. Stored as `u32` in keys and events.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `bprm_check_security`: exec of a watched binary.
    Exec = 1,
}

impl Hook {
    /// Parses the raw value carried in keys and events.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Exec),
            _ => None,
        }
    }
}

/// A file's identity as the kernel sees it: the superblock's `s_dev` (kernel encoding,
/// `major << 20 | minor`) and the inode number. Renames, hard links, symlinks and relative
/// paths all lead to the same key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    /// Explicit padding; always zero so keys hash identically on both sides.
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);

impl InodeKey {
    pub const fn new(dev: u32, ino: u64) -> Self {
        Self { ino, dev, _pad: 0 }
    }
}

/// Identifies one held action: which process, which hook, which object.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HoldKey {
    /// Thread-group id (the process) of the held task.
    pub tgid: u32,
    /// [`Hook`] as `u32`.
    pub hook: u32,
    /// Hook-specific identity of the object; for exec the binary's [`InodeKey`] words.
    pub object: [u64; 2],
}
const _: () = assert!(core::mem::size_of::<HoldKey>() == 24);

impl HoldKey {
    pub const fn exec(tgid: u32, binary: InodeKey) -> Self {
        Self {
            tgid,
            hook: Hook::Exec as u32,
            object: [binary.ino, binary.dev as u64],
        }
    }
}

/// The answer user space leaves for a held action. Stored as `u32` in the verdict map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let the restarted syscall proceed.
    Allow = 1,
    /// Fail the restarted syscall with EPERM.
    Deny = 2,
}

impl Verdict {
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Allow),
            2 => Some(Self::Deny),
            _ => None,
        }
    }
}
