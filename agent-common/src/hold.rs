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
    /// `socket_connect`: connect to a destination outside the allow list.
    Connect = 2,
    /// `socket_sendmsg`: datagram to an explicit destination outside the allow list.
    Send = 3,
    /// `file_open`: open of a credential file.
    Open = 4,
    /// Self-protection (never held, denied at once): signal to the daemon.
    Kill = 5,
    /// Self-protection: ptrace of the daemon.
    Ptrace = 6,
    /// Self-protection: a `bpf()` call.
    Bpf = 7,
    /// Self-protection: open of one of the agent's own files for writing.
    WriteProtected = 8,
    /// Self-protection: unlink (or rmdir) of a protected file or of a name in a protected
    /// directory.
    UnlinkProtected = 9,
    /// Self-protection: rename of, over, into or out of a protected file or directory.
    RenameProtected = 10,
    /// Self-protection: a hard link to a protected file, or into a protected directory.
    LinkProtected = 11,
    /// Self-protection: a new file, directory, symlink or node in a protected directory.
    CreateProtected = 12,
    /// Self-protection: chmod, chown, an extended attribute or inode flags (`chattr`) of a
    /// protected file or directory, or of a name in a protected directory.
    AttrProtected = 13,
}

impl Hook {
    /// Parses the raw value carried in keys and events.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Exec),
            2 => Some(Self::Connect),
            3 => Some(Self::Send),
            4 => Some(Self::Open),
            5 => Some(Self::Kill),
            6 => Some(Self::Ptrace),
            7 => Some(Self::Bpf),
            8 => Some(Self::WriteProtected),
            9 => Some(Self::UnlinkProtected),
            10 => Some(Self::RenameProtected),
            11 => Some(Self::LinkProtected),
            12 => Some(Self::CreateProtected),
            13 => Some(Self::AttrProtected),
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
    /// Hook-specific identity of the object: for exec and open the file's [`InodeKey`]
    /// words; for connect and send the destination ([`NetKey`] words).
    pub object: [u64; 3],
}
const _: () = assert!(core::mem::size_of::<HoldKey>() == 32);

impl HoldKey {
    pub const fn exec(tgid: u32, binary: InodeKey) -> Self {
        Self::file(tgid, Hook::Exec, binary)
    }

    /// A hold on a file identity (exec or open).
    pub const fn file(tgid: u32, hook: Hook, file: InodeKey) -> Self {
        Self {
            tgid,
            hook: hook as u32,
            object: [file.ino, file.dev as u64, 0],
        }
    }

    /// A hold on a network destination (connect or send).
    pub const fn net(tgid: u32, hook: Hook, dest: &NetKey) -> Self {
        Self {
            tgid,
            hook: hook as u32,
            object: [
                u64::from_ne_bytes(first_half(&dest.addr)),
                u64::from_ne_bytes(second_half(&dest.addr)),
                (dest.port as u64) | ((dest.protocol as u64) << 16) | ((dest.family as u64) << 32),
            ],
        }
    }
}

const fn first_half(a: &[u8; 16]) -> [u8; 8] {
    [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]
}

const fn second_half(a: &[u8; 16]) -> [u8; 8] {
    [a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]
}

/// Address family values (`AF_INET`, `AF_INET6`), user ABI.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP` / `IPPROTO_UDP`.
pub const PROTO_TCP: u16 = 6;
pub const PROTO_UDP: u16 = 17;

/// A network destination as the gates see it. IPv4 addresses are stored v4-mapped
/// (`::ffff:a.b.c.d`), so one LPM trie of 128-bit keys covers both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NetKey {
    /// Address in network byte order (v4-mapped for IPv4).
    pub addr: [u8; 16],
    /// Port in host byte order.
    pub port: u16,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub protocol: u16,
    /// [`AF_INET`] or [`AF_INET6`]: what the caller used.
    pub family: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<NetKey>() == 24);

/// Key of the allowed-destinations LPM trie: the prefix length (in bits of the 128-bit
/// v4-mapped address) followed by the address; the layout of the kernel's
/// `struct bpf_lpm_trie_key` with 16 data bytes.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowKey {
    pub prefix_len: u32,
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<AllowKey>() == 20);

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

/// Bytes kept of a resolved host name.
pub const HOSTNAME_LEN: usize = 128;

/// Key of the resolver cache: which process resolved a name to which address (v4-mapped).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DnsKey {
    pub tgid: u32,
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<DnsKey>() == 20);

/// A host name as the process asked its resolver (NUL-padded).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostName {
    pub name: [u8; HOSTNAME_LEN],
}
const _: () = assert!(core::mem::size_of::<HostName>() == HOSTNAME_LEN);

/// A `getaddrinfo` call in flight: the name asked for and where the answer goes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsCall {
    /// User pointer `struct addrinfo **res`.
    pub res: u64,
    pub name: HostName,
}

/// The plaintext a thread passed to OpenSSL's `SSL_write`/`SSL_write_ex`, kept while the
/// call runs so the first-send gate can name an HTTPS request (`SSL_PLAIN`, by thread).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslPlain {
    /// Bytes of `data` in use.
    pub len: u32,
    pub _pad: u32,
    pub data: [u8; crate::PAYLOAD_LEN],
}
const _: () = assert!(core::mem::size_of::<SslPlain>() == 8 + crate::PAYLOAD_LEN);
