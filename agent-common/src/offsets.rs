//! Kernel structure member offsets, read from BTF at load time (DESIGN.md §5).
//!
//! Rust BPF has no CO-RE relocations, and these offsets differ between kernels
//! (`file.f_path` is 16 on 6.1 and 64 on 6.12). The agent reads them from
//! `/sys/kernel/btf/vmlinux` and writes them into a frozen `.rodata` global, so the verifier
//! sees them as constants.

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `linux_binprm.file`
    pub bprm_file: u32,
    /// `linux_binprm.filename`
    pub bprm_filename: u32,
    /// `file.f_path`
    pub file_f_path: u32,
    /// `file.f_inode`
    pub file_f_inode: u32,
    /// `inode.i_ino`
    pub inode_i_ino: u32,
    /// `inode.i_sb`
    pub inode_i_sb: u32,
    /// `super_block.s_dev`
    pub sb_s_dev: u32,
    /// `child_pid` in the `sched_process_fork` tracepoint record.
    pub tp_fork_child_pid: u32,
    /// `socket.type` (SOCK_STREAM, SOCK_DGRAM...).
    pub socket_type: u32,
    /// `file.f_flags`
    pub file_f_flags: u32,
    /// `file.f_mode`
    pub file_f_mode: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.flags` (PF_IO_WORKER tells an io_uring worker).
    pub task_flags: u32,
    /// `msghdr.msg_name`
    pub msghdr_msg_name: u32,
    /// `msghdr.msg_namelen`
    pub msghdr_msg_namelen: u32,
    /// `inode.i_nlink` (0: memfd, O_TMPFILE or unlinked file).
    pub inode_i_nlink: u32,
    /// `dentry.d_inode`
    pub dentry_d_inode: u32,
    /// `dentry.d_parent`
    pub dentry_d_parent: u32,
    /// `dentry.d_name` (a `struct qstr`; its `name` pointer is 8 bytes in).
    pub dentry_d_name: u32,
    /// `socket.file` (its inode number names a socket for as long as it lives).
    pub socket_file: u32,
}
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 80);

/// Behaviour fixed at load time (`.rodata`, frozen like [`KernelOffsets`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Non-zero: a TCP connect outside the allow list is let through and the connection is
    /// held at its first send instead, so the request can name the host, URL and bucket
    /// from the payload (HTTP request line + Host, TLS SNI). No payload byte leaves first.
    pub defer_tcp_to_first_send: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 8);
