//! OpenSSL plaintext for naming HTTPS requests held at their first send (`net.rs`).
//!
//! - `SSL_write`/`SSL_write_ex` entry: a watched thread's plaintext (up to `PAYLOAD_LEN`
//!   bytes) is kept in `SSL_PLAIN` under its `pid_tgid` while the call runs; the return
//!   probe drops it. The record OpenSSL writes to the socket inside that call is what the
//!   first-send gate holds, so the request can carry the plaintext rather than ciphertext.
//! - `SSL_do_handshake`/`SSL_connect` entry/return: `SSL_HANDSHAKE` marks the thread as
//!   inside an OpenSSL handshake, so the gate can let its ClientHello out and wait for the
//!   first application data (see `net::first_send`).

use agent_common::PAYLOAD_LEN;
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::ProbeContext,
};

use crate::{
    maps::{SSL_HANDSHAKE, SSL_PLAIN, SSL_SCRATCH},
    scope::current_in_scope,
};

/// An `SSL_HANDSHAKE` mark older than this is ignored: a lost return probe (daemon
/// restart, thread killed mid-call) must not leave a thread trusted for long.
pub const HANDSHAKE_MAX_NS: u64 = 30_000_000_000;

/// match-proto: int SSL_write(SSL *ssl, const void *buf, int num) / int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)
///
/// `len` is the length argument already narrowed to its C type by the caller.
pub fn on_write(ctx: &ProbeContext, len: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !current_in_scope((pid_tgid >> 32) as u32) {
        return;
    }
    let Some(buf) = ctx.arg::<u64>(1) else {
        return;
    };
    if buf == 0 || len == 0 {
        return;
    }
    let Some(scratch) = SSL_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let n = if len >= PAYLOAD_LEN as u64 {
        PAYLOAD_LEN as u32
    } else {
        len as u32
    };
    // The mask keeps the size provably within the buffer for the verifier.
    let n = n & (2 * PAYLOAD_LEN as u32 - 1);
    if n == 0 || n > PAYLOAD_LEN as u32 {
        return;
    }
    // SAFETY: `scratch` is this CPU's map value (no other writer while we run); the user
    // read fails cleanly on a bad pointer, and `n` is within `data`.
    unsafe {
        if aya_ebpf::helpers::generated::bpf_probe_read_user(
            (*scratch).data.as_mut_ptr() as *mut _,
            n,
            buf as *const _,
        ) < 0
        {
            return;
        }
        (*scratch).len = n;
        (*scratch)._pad = 0;
        let _ = SSL_PLAIN.insert(&pid_tgid, &*scratch, 0);
    }
}

pub fn on_write_return() {
    let _ = SSL_PLAIN.remove(&bpf_get_current_pid_tgid());
}

/// match-proto: int SSL_do_handshake(SSL *s) / int SSL_connect(SSL *s)
pub fn on_handshake() {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !current_in_scope((pid_tgid >> 32) as u32) {
        return;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = SSL_HANDSHAKE.insert(&pid_tgid, &now, 0);
}

/// `SSL_connect` calls `SSL_do_handshake`: the inner return ends the mark, which is
/// right, as nothing is sent after it.
pub fn on_handshake_return() {
    let _ = SSL_HANDSHAKE.remove(&bpf_get_current_pid_tgid());
}

/// True when the current thread is inside an OpenSSL handshake (recently entered).
#[inline(always)]
pub fn in_handshake(pid_tgid: u64) -> bool {
    // SAFETY: the value is a plain u64 copied out.
    let Some(since) = (unsafe { SSL_HANDSHAKE.get(&pid_tgid) }).copied() else {
        return false;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    now.wrapping_sub(since) < HANDSHAKE_MAX_NS
}

/// Forgets a thread's state when it exits (a kill mid-call skips the return probes).
#[inline(always)]
pub fn on_thread_exit(pid_tgid: u64) {
    let _ = SSL_PLAIN.remove(&pid_tgid);
    let _ = SSL_HANDSHAKE.remove(&pid_tgid);
}
