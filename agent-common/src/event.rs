//! Events sent from the BPF programs to the daemon through the ring buffer.

use crate::hold::{HoldKey, InodeKey, NetKey};

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
    /// A connect or send outside the allow list was held (or, from io_uring, denied
    /// pending approval): [`NetEvent`].
    NetHeld = 2,
    /// A credential file open was held: [`FileEvent`].
    OpenHeld = 3,
    /// A self-protection rule denied an action at once: [`DeniedEvent`].
    Denied = 4,
}

impl EventKind {
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::ExecHeld),
            2 => Some(Self::NetHeld),
            3 => Some(Self::OpenHeld),
            4 => Some(Self::Denied),
            _ => None,
        }
    }
}

/// Why an exec was held: the binary's identity, or the content rule (a file that is not a
/// watched inode but may be a copy of one).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecOrigin {
    /// The binary is in the watch list by (dev, inode).
    Watched = 0,
    /// The file has no name (`i_nlink == 0`): a memfd, an `O_TMPFILE` or an unlinked file.
    Anonymous = 1,
    /// A watched process opened this file for writing earlier (a copy it made).
    WrittenByScope = 2,
}

impl ExecOrigin {
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Watched),
            1 => Some(Self::Anonymous),
            2 => Some(Self::WrittenByScope),
            _ => None,
        }
    }
}

/// How the gate answered the caller when it announced the action.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldMode {
    /// The task is stopped and its syscall restarts once a verdict is written.
    Stopped = 0,
    /// The action came through io_uring (or another context that cannot be restarted):
    /// it failed with EPERM now; an approval leaves a one-shot verdict that lets the
    /// caller's retry through.
    DeniedUntilApproved = 1,
}

/// Bytes of the first payload captured when a TCP connection is held at its first send.
pub const PAYLOAD_LEN: usize = 512;

/// [`NetEvent::flags`]: `payload` is the plaintext the thread passed to OpenSSL's
/// `SSL_write` (the bytes on the wire are its TLS encryption).
pub const NET_FLAG_TLS_PLAINTEXT: u32 = 1;

/// A held connect or datagram send.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NetEvent {
    pub header: EventHeader,
    pub dest: NetKey,
    /// [`HoldMode`] as `u32`.
    pub mode: u32,
    /// Syscall number the task was in (connect, sendto, io_uring_enter...).
    pub syscall: u32,
    /// Bytes of `payload` in use (0: held at connect, nothing sent yet).
    pub payload_len: u32,
    /// [`NET_FLAG_TLS_PLAINTEXT`] or 0.
    pub flags: u32,
    /// The start of the first payload (HTTP request line and headers, TLS ClientHello), or
    /// with [`NET_FLAG_TLS_PLAINTEXT`] the plaintext OpenSSL was asked to encrypt.
    pub payload: [u8; PAYLOAD_LEN],
}
const _: () = assert!(core::mem::size_of::<NetEvent>() == 80 + 24 + 16 + PAYLOAD_LEN);

/// A held credential-file open.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileEvent {
    pub header: EventHeader,
    pub file: InodeKey,
    /// [`HoldMode`] as `u32`.
    pub mode: u32,
    /// `file->f_flags` (O_RDONLY, O_WRONLY...).
    pub flags: u32,
    /// `bpf_d_path` of the opened file (NUL-terminated).
    pub path: [u8; PATH_LEN],
}
const _: () = assert!(core::mem::size_of::<FileEvent>() == 80 + 16 + 8 + PATH_LEN);

/// An action a self-protection rule refused (EPERM) without asking anyone.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DeniedEvent {
    /// `header.hold.hook` names the rule ([`crate::Hook`]); `header.hold.object[0]` the
    /// target (signal: target tgid; ptrace: target tgid; bpf: command; write, unlink,
    /// rename, link, create: inode, with `object[1]` its device and `object[2]` the inode of
    /// the directory the name is in, 0 for write).
    pub header: EventHeader,
    /// Signal number for kills, ptrace mode for ptrace, 0 otherwise.
    pub detail: u32,
    pub _pad: u32,
    /// Path of the protected file for writes; for unlink, rename, link and create the
    /// last component of the name touched (NUL-terminated); else empty.
    pub path: [u8; PATH_LEN],
}
const _: () = assert!(core::mem::size_of::<DeniedEvent>() == 80 + 8 + PATH_LEN);

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
const _: () = assert!(core::mem::size_of::<EventHeader>() == 80);

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
    /// Why the exec was caught: [`ExecOrigin`] as `u32`.
    pub origin: u32,
    /// `bpf_d_path` of the file being executed (NUL-terminated).
    pub path: [u8; PATH_LEN],
    /// `bprm->filename`: the name the caller passed to execve (NUL-terminated).
    pub filename: [u8; PATH_LEN],
    /// NUL-separated arguments.
    pub argv: [u8; ARGV_BUF_LEN],
}
const _: () =
    assert!(core::mem::size_of::<ExecEvent>() == 80 + 16 + 16 + 2 * PATH_LEN + ARGV_BUF_LEN);
