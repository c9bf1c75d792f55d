//! Events sent from the BPF programs to the daemon through the ring buffer.

use crate::hold::{HoldKey, InodeKey};

/// Bytes reserved for a path (`bpf_d_path` output, NUL-terminated).
pub const PATH_LEN: usize = 256;
/// Bytes for the packed argv: NUL-separated arguments. Twice [`ARGV_READ_LIMIT`] so an
/// argument starting below the limit always fits (a bound the verifier can check).
pub const ARGV_BUF_LEN: usize = 4096;
/// Arguments are appended only while the write offset is below this.
pub const ARGV_READ_LIMIT: usize = 2048;
/// At most this many arguments are captured.
pub const ARGV_MAX_ARGS: usize = 64;

/// Kind of event, first field of every event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A watched exec was held: [`ExecEvent`].
    ExecHeld = 1,
}

impl EventKind {
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::ExecHeld),
            _ => None,
        }
    }
}

/// Fields every event carries.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    /// [`EventKind`] as `u32`.
    pub kind: u32,
    /// Thread id of the task that made the syscall.
    pub tid: u32,
    /// `bpf_ktime_get_ns()` when the action was caught.
    pub ktime_ns: u64,
    /// cgroup v2 id of the task.
    pub cgroup_id: u64,
    pub uid: u32,
    pub gid: u32,
    /// The key user space answers under.
    pub hold: HoldKey,
    /// Task name (`comm`), NUL-padded.
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 72);

/// A held `execve`: which binary, and with which arguments.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub binary: InodeKey,
    /// Number of arguments captured into `argv`.
    pub argc: u32,
    /// Bytes of `argv` in use.
    pub argv_len: u32,
    /// Non-zero when arguments were cut off (too many, or too long).
    pub argv_truncated: u32,
    pub _pad: u32,
    /// `bpf_d_path` of the file being executed (NUL-terminated).
    pub path: [u8; PATH_LEN],
    /// `bprm->filename`: the name the caller passed to execve (NUL-terminated).
    pub filename: [u8; PATH_LEN],
    /// NUL-separated arguments.
    pub argv: [u8; ARGV_BUF_LEN],
}
const _: () = assert!(core::mem::size_of::<ExecEvent>() == 72 + 16 + 16 + 2 * PATH_LEN + ARGV_BUF_LEN);
