//! The egress gates: `socket_connect` and `socket_sendmsg` with an explicit destination
//! (unconnected UDP, and TCP Fast Open's `sendto`, which connects without `connect()`).
//!
//! Destinations in `EGRESS_ALLOW` (an LPM trie of v4-mapped 128-bit prefixes: loopback
//! and the hub by default) pass in the kernel; everything else from a watched task is held.

use agent_common::{
    EventKind, HoldKey, HoldMode, Hook, NET_FLAG_TLS_PLAINTEXT, NetEvent, NetKey, PAYLOAD_LEN,
    SslPlain,
    hold::{AF_INET, AF_INET6, PROTO_TCP, PROTO_UDP},
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    maps::lpm_trie::Key,
    programs::LsmContext,
};

use crate::{
    hold::{self, EPERM},
    maps::{DEFERRED, Deferred, EGRESS_ALLOW, EVENTS, SSL_PLAIN, TLS_PASSED, offsets, settings},
    scope::current_in_scope,
    ssl,
    task::{self, NR_CONNECT, NR_SENDMMSG, NR_SENDMSG, NR_SENDTO, fill_header},
};

/// x86_64 syscall numbers and `pt_regs` offsets (user ABI) for reading the first payload.
const NR_WRITE: u64 = 1;
const NR_WRITEV: u64 = 20;
const PT_REGS_DX: usize = 96;
const PT_REGS_SI: usize = 104;
const _: () = assert!(PAYLOAD_LEN.is_power_of_two());

const SOCK_STREAM: i16 = 1;
const SOCKADDR_IN_LEN: i32 = 16;
const SOCKADDR_IN6_LEN: i32 = 24;

/// TLS record content types (RFC 8446 §5.1) and the ClientHello handshake type.
const TLS_CHANGE_CIPHER_SPEC: u8 = 20;
const TLS_HANDSHAKE: u8 = 22;
const TLS_APPLICATION_DATA: u8 = 23;
const TLS_CLIENT_HELLO: u8 = 1;
/// Bytes a deferred socket may send from inside an OpenSSL handshake before its first
/// application data is held: a ClientHello (with a retry) and client certificates fit; a
/// process abusing the handshake window to send data gets no further than this.
const HANDSHAKE_BUDGET: u32 = 16384;

/// Where a held action's payload comes from.
#[derive(Clone, Copy)]
enum Payload {
    /// Held at connect or at a datagram send: no payload.
    None,
    /// The buffer of the send syscall itself.
    Syscall,
    /// The plaintext the thread passed to OpenSSL (an `SSL_PLAIN` value).
    Plain(*const SslPlain),
}

/// match-proto: int security_socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)
pub fn check_connect(ctx: &LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !current_in_scope(tgid) {
        return 0;
    }
    let sock: *const u8 = ctx.arg(0);
    let addr: *const u8 = ctx.arg(1);
    let addrlen: i32 = ctx.arg(2);
    let Some(dest) = destination(sock, addr, addrlen) else {
        return 0;
    };
    // A socket struct can be reused after free: forget what an earlier one left.
    let _ = DEFERRED.remove(&(sock as u64));
    let _ = TLS_PASSED.remove(&(sock as u64));
    if dest.protocol == PROTO_TCP
        && settings().defer_tcp_to_first_send != 0
        && EGRESS_ALLOW.get(Key::new(128, dest.addr)).is_none()
        // Let the handshake happen; the first byte of data waits for a human (see
        // `check_sendmsg`). A full map fails closed: hold at connect instead.
        && DEFERRED
            .insert(
                &(sock as u64),
                &Deferred {
                    dest,
                    ino: socket_ino(sock),
                    severed: 0,
                },
                0,
            )
            .is_ok()
    {
        return 0;
    }
    gate(Hook::Connect, tgid, &dest)
}

/// match-proto: int security_socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)
pub fn check_sendmsg(ctx: &LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !current_in_scope(tgid) {
        return 0;
    }
    let sock: *const u8 = ctx.arg(0);
    let msg: *const u8 = ctx.arg(1);
    let off = offsets();
    // SAFETY: direct BTF loads of `msghdr` members at offsets from this kernel's BTF.
    let (name, namelen) = unsafe {
        (
            *(msg.add(off.msghdr_msg_name as usize) as *const *const u8),
            *(msg.add(off.msghdr_msg_namelen as usize) as *const i32),
        )
    };
    // No explicit destination: a connected socket, gated at connect — or let through
    // there and held now, at its first send.
    if name.is_null() {
        return match deferred(sock) {
            Some(d) => first_send(tgid, sock as u64, d, ctx.arg(2)),
            None => 0,
        };
    }
    let Some(dest) = destination(sock, name, namelen) else {
        return 0;
    };
    gate(Hook::Send, tgid, &dest)
}

/// match-proto: int security_socket_recvmsg(struct socket *sock, struct msghdr *msg, int size, int flags)
pub fn check_recvmsg(ctx: &LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !current_in_scope(tgid) {
        return 0;
    }
    match deferred(ctx.arg(0)) {
        Some(d) if d.severed != 0 => -EPERM,
        _ => 0,
    }
}

/// This socket's first-send entry. One left by a freed socket at the same address (its
/// inode number differs) is dropped: this socket was never deferred.
#[inline(always)]
fn deferred(sock: *const u8) -> Option<Deferred> {
    // SAFETY: the value is a plain `Deferred` copied out.
    let entry = (unsafe { DEFERRED.get(&(sock as u64)) }).copied()?;
    if entry.ino != socket_ino(sock) {
        let _ = DEFERRED.remove(&(sock as u64));
        return None;
    }
    Some(entry)
}

/// The inode number of a `struct socket` (`/proc/PID/fd` shows it as `socket:[N]`); 0 for
/// a kernel socket without a file.
#[inline(always)]
fn socket_ino(sock: *const u8) -> u64 {
    let off = offsets();
    // SAFETY: direct BTF loads along socket->file->f_inode->i_ino.
    unsafe {
        let file = *(sock.add(off.socket_file as usize) as *const *const u8);
        if file.is_null() {
            return 0;
        }
        let inode = *(file.add(off.file_f_inode as usize) as *const *const u8);
        *(inode.add(off.inode_i_ino as usize) as *const u64)
    }
}

/// Reads an IPv4/IPv6 destination; `None` for other families (unix, netlink, AF_UNSPEC
/// disconnects), which are not egress.
#[inline(always)]
fn destination(sock: *const u8, addr: *const u8, addrlen: i32) -> Option<NetKey> {
    // SAFETY: `addr` is the kernel's copy of the caller's sockaddr (move_addr_to_kernel);
    // probe reads fail cleanly on a bad pointer. sockaddr layouts are user ABI.
    let family = unsafe { bpf_probe_read_kernel(addr as *const u16) }.ok()?;
    let mut dest = NetKey::default();
    dest.family = family;
    let port = unsafe { bpf_probe_read_kernel(addr.add(2) as *const u16) }.ok()?;
    dest.port = u16::from_be(port);
    if family == AF_INET && addrlen >= SOCKADDR_IN_LEN {
        let v4 = unsafe { bpf_probe_read_kernel(addr.add(4) as *const [u8; 4]) }.ok()?;
        dest.addr[10] = 0xff;
        dest.addr[11] = 0xff;
        dest.addr[12] = v4[0];
        dest.addr[13] = v4[1];
        dest.addr[14] = v4[2];
        dest.addr[15] = v4[3];
    } else if family == AF_INET6 && addrlen >= SOCKADDR_IN6_LEN {
        dest.addr = unsafe { bpf_probe_read_kernel(addr.add(8) as *const [u8; 16]) }.ok()?;
    } else {
        return None;
    }
    // SAFETY: direct BTF load of `socket.type` (a short) at the offset from BTF.
    let kind = unsafe { *(sock.add(offsets().socket_type as usize) as *const i16) };
    dest.protocol = if kind == SOCK_STREAM {
        PROTO_TCP
    } else {
        PROTO_UDP
    };
    Some(dest)
}

/// The first send on a TCP connection let through at connect: hold it with its payload.
///
/// OpenSSL clients (see `ssl.rs`): a thread inside `SSL_do_handshake`/`SSL_connect` with
/// no plaintext pending sends its handshake records freely (ClientHello first, up to
/// [`HANDSHAKE_BUDGET`] bytes); the first send made while the thread is inside `SSL_write`
/// is held with the plaintext instead of the ciphertext, which names the HTTPS request.
/// A handshake run lazily by `SSL_write` is held at its ClientHello, with the plaintext.
/// A ClientHello from anywhere else (static TLS stacks, Go) is held as before (SNI).
#[inline(always)]
fn first_send(tgid: u32, sock: u64, deferred: Deferred, size: i32) -> i32 {
    if deferred.severed != 0 {
        // Denied once: the connection is dead, not asked about again.
        return -EPERM;
    }
    let dest = &deferred.dest;
    let nr = task::syscall_nr();
    let pid_tgid = bpf_get_current_pid_tgid();
    let plain = SSL_PLAIN.get_ptr(&pid_tgid);
    if plain.is_none() && ssl::in_handshake(pid_tgid) && handshake_may_pass(sock, nr, size) {
        return 0;
    }
    let key = HoldKey::net(tgid, Hook::Connect, dest);
    let restartable = !task::is_io_worker()
        && matches!(
            nr,
            NR_WRITE | NR_WRITEV | NR_SENDTO | NR_SENDMSG | NR_SENDMMSG
        );
    let payload = match plain {
        Some(p) => Payload::Plain(p),
        None => Payload::Syscall,
    };
    let answer = hold::gate(&key, restartable, || {
        announce(&key, dest, nr, restartable, payload)
    });
    if answer == 0 {
        // Approved: the rest of this connection flows freely.
        let _ = DEFERRED.remove(&sock);
        let _ = TLS_PASSED.remove(&sock);
    } else if answer == -EPERM && restartable {
        // Denied (or timed out, or failed closed): sever the connection. Not while held
        // (-ERESTARTNOINTR), and not for io_uring and other non-restartable sends, whose
        // retry an approval still lets through.
        let severed = Deferred {
            severed: 1,
            ..deferred
        };
        let _ = DEFERRED.insert(&sock, &severed, 0);
    }
    answer
}

/// A TLS record sent from inside an OpenSSL handshake on a deferred socket: the socket's
/// first one must be a ClientHello; the total stays within [`HANDSHAKE_BUDGET`].
#[inline(always)]
fn handshake_may_pass(sock: u64, nr: u64, size: i32) -> bool {
    // SAFETY: reads the caller's buffer through its syscall arguments; fails cleanly.
    let Some(head) = (unsafe { payload_head(nr) }) else {
        return false;
    };
    let record =
        head[0] >= TLS_CHANGE_CIPHER_SPEC && head[0] <= TLS_APPLICATION_DATA && head[1] == 3;
    let hello = head[0] == TLS_HANDSHAKE && head[5] == TLS_CLIENT_HELLO;
    // SAFETY: the value is a plain u32 copied out.
    let passed = unsafe { TLS_PASSED.get(&sock) }.copied();
    if !record || !(hello || passed.is_some()) || size <= 0 {
        return false;
    }
    let total = passed.unwrap_or(0).saturating_add(size as u32);
    total <= HANDSHAKE_BUDGET && TLS_PASSED.insert(&sock, &total, 0).is_ok()
}

#[inline(always)]
fn gate(hook: Hook, tgid: u32, dest: &NetKey) -> i32 {
    if EGRESS_ALLOW.get(Key::new(128, dest.addr)).is_some() {
        return 0;
    }
    let key = HoldKey::net(tgid, hook, dest);
    let nr = task::syscall_nr();
    let restartable =
        !task::is_io_worker() && matches!(nr, NR_CONNECT | NR_SENDTO | NR_SENDMSG | NR_SENDMMSG);
    hold::gate(&key, restartable, || {
        announce(&key, dest, nr, restartable, Payload::None)
    })
}

#[inline(always)]
fn announce(key: &HoldKey, dest: &NetKey, nr: u64, restartable: bool, payload: Payload) -> i32 {
    let Some(mut entry) = EVENTS.reserve::<NetEvent>(0) else {
        return hold::ring_full();
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` is a live reservation of size_of::<NetEvent>().
    unsafe {
        fill_header(&mut (*event).header, EventKind::NetHeld, *key, now);
        (*event).dest = *dest;
        (*event).mode = if restartable {
            HoldMode::Stopped
        } else {
            HoldMode::DeniedUntilApproved
        } as u32;
        (*event).syscall = nr as u32;
        (*event).flags = 0;
        (*event).payload_len = 0;
        match payload {
            Payload::None => {}
            Payload::Syscall => {
                (*event).payload_len = read_payload(nr, (*event).payload.as_mut_ptr());
            }
            Payload::Plain(plain) => {
                (*event).flags = NET_FLAG_TLS_PLAINTEXT;
                (*event).payload_len = copy_plain(plain, (*event).payload.as_mut_ptr());
            }
        }
    }
    if restartable {
        hold::hold(key, entry, now)
    } else {
        hold::deny_until_approved(key, entry, now)
    }
}

/// The buffer the task is sending, from its syscall arguments (write, sendto, sendmsg,
/// writev: the first iovec); `None` when it cannot tell.
///
/// # Safety
/// Must run in a task's syscall context (reads its `pt_regs`).
#[inline(always)]
unsafe fn syscall_buffer(nr: u64) -> Option<(u64, u64)> {
    // SAFETY: pt_regs of the current task, checked by the verifier; the user reads below
    // fail cleanly on bad pointers.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        let si = *(regs.add(PT_REGS_SI) as *const u64);
        let dx = *(regs.add(PT_REGS_DX) as *const u64);
        let (buf, len) = match nr {
            NR_WRITE | NR_SENDTO => (si, dx),
            NR_SENDMSG => {
                // struct user_msghdr: msg_iov at 16; struct iovec: base at 0, len at 8.
                let iov = bpf_probe_read_user((si + 16) as *const u64).ok()?;
                let base = bpf_probe_read_user(iov as *const u64).unwrap_or(0);
                let len = bpf_probe_read_user((iov + 8) as *const u64).unwrap_or(0);
                (base, len)
            }
            NR_WRITEV => {
                let base = bpf_probe_read_user(si as *const u64).unwrap_or(0);
                let len = bpf_probe_read_user((si + 8) as *const u64).unwrap_or(0);
                (base, len)
            }
            _ => return None,
        };
        (buf != 0 && len != 0).then_some((buf, len))
    }
}

/// The first 6 bytes being sent (a TLS record header and the handshake type).
///
/// # Safety
/// As [`syscall_buffer`].
#[inline(always)]
unsafe fn payload_head(nr: u64) -> Option<[u8; 6]> {
    // SAFETY: as `syscall_buffer`; the user read fails cleanly.
    unsafe {
        let (buf, len) = syscall_buffer(nr)?;
        if len < 6 {
            return None;
        }
        bpf_probe_read_user(buf as *const [u8; 6]).ok()
    }
}

/// Copies the start of the buffer the task is sending; returns the bytes copied, 0 when
/// it cannot tell.
///
/// # Safety
/// `dst` must point to `PAYLOAD_LEN` writable bytes.
#[inline(always)]
unsafe fn read_payload(nr: u64, dst: *mut u8) -> u32 {
    // SAFETY: as `syscall_buffer`; the user read fails cleanly on a bad pointer.
    unsafe {
        let Some((buf, len)) = syscall_buffer(nr) else {
            return 0;
        };
        let n = bounded(len);
        if n == 0 {
            return 0;
        }
        if aya_ebpf::helpers::generated::bpf_probe_read_user(dst as *mut _, n, buf as *const _) < 0
        {
            return 0;
        }
        n
    }
}

/// Copies the stashed OpenSSL plaintext; returns the bytes copied.
///
/// # Safety
/// `dst` must point to `PAYLOAD_LEN` writable bytes; `plain` to an `SSL_PLAIN` value.
#[inline(always)]
unsafe fn copy_plain(plain: *const SslPlain, dst: *mut u8) -> u32 {
    // SAFETY: `plain` is a live map value; the kernel read is bounded by `bounded`.
    unsafe {
        let n = bounded((*plain).len as u64);
        if n == 0 {
            return 0;
        }
        if aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            dst as *mut _,
            n,
            (*plain).data.as_ptr() as *const _,
        ) < 0
        {
            return 0;
        }
        n
    }
}

/// `len` capped at `PAYLOAD_LEN`, in a form the verifier can bound (0 for nothing).
#[inline(always)]
fn bounded(len: u64) -> u32 {
    let n = if len >= PAYLOAD_LEN as u64 {
        PAYLOAD_LEN as u32
    } else {
        len as u32
    };
    // The mask keeps the size provably within the buffer for the verifier.
    let n = n & (2 * PAYLOAD_LEN as u32 - 1);
    if n > PAYLOAD_LEN as u32 { 0 } else { n }
}
