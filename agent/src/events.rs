//! Decodes ring buffer records into owned, validated events.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::{
    ARGV_BUF_LEN, DeniedEvent, EventHeader, EventKind, ExecEvent, ExecOrigin, FileEvent, HoldKey,
    HoldMode, Hook, InodeKey, NET_FLAG_TLS_PLAINTEXT, NetEvent, NetKey,
    hold::{AF_INET, PROTO_TCP},
};

use crate::procinfo::split_nul;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("ring buffer record of {0} bytes is shorter than its kind needs")]
    Short(usize),
    #[error("ring buffer record has unknown kind {0}")]
    UnknownKind(u32),
    #[error("ring buffer record names unknown hook {0}")]
    UnknownHook(u32),
}

/// An action the kernel is holding (or, for io_uring, denied until approved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldAction {
    pub key: HoldKey,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub ktime_ns: u64,
    pub comm: String,
    /// How the caller was answered while it waits.
    pub mode: Mode,
    pub what: Action,
}

/// [`HoldMode`], owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stopped,
    DeniedUntilApproved,
}

/// The class-specific part of a held action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Exec {
        binary: InodeKey,
        /// The resolved path of the file being executed.
        path: String,
        /// The name the caller passed to execve.
        filename: String,
        argv: Vec<String>,
        argv_truncated: bool,
        /// Why the kernel held it: a watched inode, or the content rule.
        origin: ExecOrigin,
    },
    /// `connect()` (hook Connect) or a datagram with an explicit destination (hook Send).
    /// `payload`: the start of the first send when a TCP connection is held there.
    Net {
        hook: Hook,
        dest: Destination,
        syscall: u32,
        payload: Vec<u8>,
        /// `payload` is the plaintext the process handed OpenSSL (HTTPS), not wire bytes.
        tls_plaintext: bool,
    },
    Open {
        file: InodeKey,
        path: String,
        flags: u32,
    },
}

/// A network destination, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    pub addr: IpAddr,
    pub port: u16,
    /// "tcp" or "udp".
    pub protocol: &'static str,
}

impl Destination {
    /// Decodes the kernel's key (v4-mapped addresses back to IPv4 when the caller used
    /// AF_INET).
    pub fn from_key(key: &NetKey) -> Self {
        let v6 = Ipv6Addr::from(key.addr);
        let addr = match v6.to_ipv4_mapped() {
            Some(v4) if key.family == AF_INET => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        };
        let protocol = if key.protocol == PROTO_TCP {
            "tcp"
        } else {
            "udp"
        };
        Self {
            addr,
            port: key.port,
            protocol,
        }
    }

    pub fn unspecified() -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            protocol: "tcp",
        }
    }
}

/// An action a self-protection rule denied at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedAction {
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub comm: String,
    pub hook: Hook,
    /// Target tgid (kill, ptrace), bpf command, or inode (write).
    pub target: u64,
    /// Signal number (kill) or ptrace mode.
    pub detail: u32,
    /// The protected file's path (write), or the name touched (unlink, rename, link,
    /// create: the last component only).
    pub path: String,
    /// Device of `target` (unlink, rename, link).
    pub dev: u32,
    /// Inode of the directory holding the name (unlink, rename, link, create), else 0.
    pub dir: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Held(HeldAction),
    Denied(DeniedAction),
}

/// Decodes one ring buffer record.
///
/// # Errors
/// [`DecodeError`] for records that are too short or of an unknown kind or hook.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(bytes)?;
    match EventKind::from_raw(header.kind) {
        Some(EventKind::ExecHeld) => {
            let raw: ExecEvent = read(bytes)?;
            let argv_len = (raw.argv_len as usize).min(ARGV_BUF_LEN);
            let what = Action::Exec {
                binary: raw.binary,
                path: c_string(&raw.path),
                filename: c_string(&raw.filename),
                argv: split_nul(&raw.argv[..argv_len]),
                argv_truncated: raw.argv_truncated != 0,
                // Unknown values are treated as the content rule's strictest reading.
                origin: ExecOrigin::from_raw(raw.origin).unwrap_or(ExecOrigin::Anonymous),
            };
            Ok(Event::Held(held(&header, Mode::Stopped, what)))
        }
        Some(EventKind::NetHeld) => {
            let raw: NetEvent = read(bytes)?;
            let hook = hook(header.hold.hook)?;
            let len = (raw.payload_len as usize).min(raw.payload.len());
            let what = Action::Net {
                hook,
                dest: Destination::from_key(&raw.dest),
                syscall: raw.syscall,
                payload: raw.payload[..len].to_vec(),
                tls_plaintext: raw.flags & NET_FLAG_TLS_PLAINTEXT != 0,
            };
            Ok(Event::Held(held(&header, mode(raw.mode), what)))
        }
        Some(EventKind::OpenHeld) => {
            let raw: FileEvent = read(bytes)?;
            let what = Action::Open {
                file: raw.file,
                path: c_string(&raw.path),
                flags: raw.flags,
            };
            Ok(Event::Held(held(&header, mode(raw.mode), what)))
        }
        Some(EventKind::Denied) => {
            let raw: DeniedEvent = read(bytes)?;
            Ok(Event::Denied(DeniedAction {
                tgid: header.hold.tgid,
                tid: header.tid,
                uid: header.uid,
                comm: c_string(&header.comm),
                hook: hook(header.hold.hook)?,
                target: header.hold.object[0],
                detail: raw.detail,
                path: c_string(&raw.path),
                dev: header.hold.object[1] as u32,
                dir: header.hold.object[2],
            }))
        }
        None => Err(DecodeError::UnknownKind(header.kind)),
    }
}

/// Copies a `T` out of the record.
fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; every event type is `#[repr(C)]` plain integers and byte
    // arrays, so any bit pattern is valid.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

fn hook(raw: u32) -> Result<Hook, DecodeError> {
    Hook::from_raw(raw).ok_or(DecodeError::UnknownHook(raw))
}

fn mode(raw: u32) -> Mode {
    if raw == HoldMode::DeniedUntilApproved as u32 {
        Mode::DeniedUntilApproved
    } else {
        Mode::Stopped
    }
}

fn held(h: &EventHeader, mode: Mode, what: Action) -> HeldAction {
    HeldAction {
        key: h.hold,
        tgid: h.hold.tgid,
        tid: h.tid,
        uid: h.uid,
        gid: h.gid,
        cgroup_id: h.cgroup_id,
        ktime_ns: h.ktime_ns,
        comm: c_string(&h.comm),
        mode,
        what,
    }
}

fn c_string(raw: &[u8]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use agent_common::hold::{AF_INET6, PROTO_UDP};

    use super::*;

    fn bytes<T>(raw: &T) -> Vec<u8> {
        // SAFETY: viewing a plain-old-data struct as bytes.
        unsafe { std::slice::from_raw_parts((raw as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn record(argv: &[u8]) -> Vec<u8> {
        // SAFETY: all-zero is a valid ExecEvent (plain integers and byte arrays).
        let mut raw: ExecEvent = unsafe { std::mem::zeroed() };
        raw.header.kind = EventKind::ExecHeld as u32;
        raw.header.hold = HoldKey::exec(42, InodeKey::new(7, 99));
        raw.header.tid = 43;
        raw.header.comm[..4].copy_from_slice(b"bash");
        raw.binary = InodeKey::new(7, 99);
        raw.path[..12].copy_from_slice(b"/usr/bin/aws");
        raw.argv[..argv.len()].copy_from_slice(argv);
        raw.argv_len = argv.len() as u32;
        raw.argc = 3;
        raw.origin = ExecOrigin::WrittenByScope as u32;
        bytes(&raw)
    }

    #[test]
    fn decodes_an_exec_record() {
        let Ok(Event::Held(e)) = decode(&record(b"aws\0s3\0cp\0")) else {
            panic!("exec")
        };
        assert_eq!(e.tgid, 42);
        assert_eq!(e.tid, 43);
        assert_eq!(e.comm, "bash");
        let Action::Exec {
            path,
            argv,
            binary,
            origin,
            ..
        } = e.what
        else {
            panic!("exec")
        };
        assert_eq!(origin, ExecOrigin::WrittenByScope);
        assert_eq!(path, "/usr/bin/aws");
        assert_eq!(argv, ["aws", "s3", "cp"]);
        assert_eq!(binary, InodeKey::new(7, 99));
    }

    #[test]
    fn decodes_v4_and_v6_destinations() {
        let mut v4 = NetKey {
            port: 443,
            protocol: PROTO_TCP,
            family: AF_INET,
            ..Default::default()
        };
        v4.addr[10..].copy_from_slice(&[0xff, 0xff, 198, 51, 100, 7]);
        let d = Destination::from_key(&v4);
        assert_eq!(
            (d.addr.to_string(), d.port, d.protocol),
            ("198.51.100.7".into(), 443, "tcp")
        );
        let v6 = NetKey {
            addr: "2001:db8::7".parse::<Ipv6Addr>().expect("v6").octets(),
            port: 53,
            protocol: PROTO_UDP,
            family: AF_INET6,
            _pad: 0,
        };
        let d = Destination::from_key(&v6);
        assert_eq!(
            (d.addr.to_string(), d.port, d.protocol),
            ("2001:db8::7".into(), 53, "udp")
        );

        // SAFETY: all-zero is a valid NetEvent.
        let mut raw: NetEvent = unsafe { std::mem::zeroed() };
        raw.header.kind = EventKind::NetHeld as u32;
        raw.header.hold = HoldKey::net(5, Hook::Connect, &v4);
        raw.dest = v4;
        raw.mode = HoldMode::DeniedUntilApproved as u32;
        let Ok(Event::Held(e)) = decode(&bytes(&raw)) else {
            panic!("net")
        };
        assert_eq!(e.mode, Mode::DeniedUntilApproved);
        assert!(matches!(
            e.what,
            Action::Net {
                hook: Hook::Connect,
                tls_plaintext: false,
                ..
            }
        ));

        // OpenSSL plaintext held at the first send: flagged, payload cut at its length.
        raw.flags = NET_FLAG_TLS_PLAINTEXT;
        raw.payload[..5].copy_from_slice(b"GET /");
        raw.payload_len = 5;
        let Ok(Event::Held(e)) = decode(&bytes(&raw)) else {
            panic!("net")
        };
        let Action::Net {
            tls_plaintext,
            payload,
            ..
        } = e.what
        else {
            panic!("net")
        };
        assert!(tls_plaintext);
        assert_eq!(payload, b"GET /");
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(decode(&[0; 10]), Err(DecodeError::Short(10)));
        let mut bad = record(b"");
        bad[0] = 77;
        assert_eq!(decode(&bad), Err(DecodeError::UnknownKind(77)));
        let full = record(b"x\0");
        assert_eq!(decode(&full[..100]), Err(DecodeError::Short(100)));
    }
}
