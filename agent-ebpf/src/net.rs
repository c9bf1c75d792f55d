//! The egress gates: `socket_connect` and `socket_sendmsg` with an explicit destination
//! (unconnected UDP, and TCP Fast Open's `sendto`, which connects without `connect()`).
//!
//! Destinations in `EGRESS_ALLOW` (an LPM trie of v4-mapped 128-bit prefixes: loopback
//! and the hub by default) pass in the kernel; everything else from a watched task is held.

use agent_common::{
    hold::{AF_INET, AF_INET6, PROTO_TCP, PROTO_UDP},
    EventKind, HoldKey, HoldMode, Hook, NetEvent, NetKey,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    maps::lpm_trie::Key,
    programs::LsmContext,
};

use crate::{
    hold,
    maps::{offsets, EGRESS_ALLOW, EVENTS},
    scope::current_in_scope,
    task::{self, fill_header, NR_CONNECT, NR_SENDMMSG, NR_SENDMSG, NR_SENDTO},
};

const SOCK_STREAM: i16 = 1;
const SOCKADDR_IN_LEN: i32 = 16;
const SOCKADDR_IN6_LEN: i32 = 24;

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
    let Some(dest) = destination(sock, addr, addrlen) else { return 0 };
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
    // No explicit destination: a connected socket, already gated at connect.
    if name.is_null() {
        return 0;
    }
    let Some(dest) = destination(sock, name, namelen) else { return 0 };
    gate(Hook::Send, tgid, &dest)
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
    dest.protocol = if kind == SOCK_STREAM { PROTO_TCP } else { PROTO_UDP };
    Some(dest)
}

#[inline(always)]
fn gate(hook: Hook, tgid: u32, dest: &NetKey) -> i32 {
    if EGRESS_ALLOW.get(Key::new(128, dest.addr)).is_some() {
        return 0;
    }
    let key = HoldKey::net(tgid, hook, dest);
    let nr = task::syscall_nr();
    let restartable = !task::is_io_worker()
        && matches!(nr, NR_CONNECT | NR_SENDTO | NR_SENDMSG | NR_SENDMMSG);
    hold::gate(&key, restartable, || {
        let Some(mut entry) = EVENTS.reserve::<NetEvent>(0) else {
            return hold::ring_full();
        };
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        let event = entry.as_mut_ptr();
        // SAFETY: `event` is a live reservation of size_of::<NetEvent>().
        unsafe {
            fill_header(&mut (*event).header, EventKind::NetHeld, key, now);
            (*event).dest = *dest;
            (*event).mode =
                if restartable { HoldMode::Stopped } else { HoldMode::DeniedUntilApproved } as u32;
            (*event).syscall = nr as u32;
        }
        if restartable {
            hold::hold(&key, entry, now)
        } else {
            hold::deny_until_approved(&key, entry, now)
        }
    })
}
