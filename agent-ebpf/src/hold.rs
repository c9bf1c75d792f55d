//! The hold: stop the task in the kernel and restart its syscall once user space answered.
//!
//! 1. A verdict for this key exists → consume it: 0 (allow) or -EPERM (deny).
//! 2. Already announced (a stray SIGCONT restarted the syscall) → stop again, no new event.
//! 3. Otherwise announce it, send SIGSTOP, and only if that worked return -ERESTARTNOINTR so
//!    the task stops on its way out and the kernel restarts the syscall after SIGCONT.
//!    Anything that fails on the way fails closed with -EPERM.

use agent_common::{HoldKey, Verdict, names::Counter};
use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::generated::bpf_send_signal_thread, maps::ring_buf::RingBufEntry,
};

use crate::maps::{PENDING, VERDICTS, count};

pub const EPERM: i32 = 1;
/// The kernel restarts a syscall that returned this after the signal is handled; SIGSTOP
/// has no handler, so the task simply stops and restarts on SIGCONT.
const ERESTARTNOINTR: i32 = 513;
const SIGSTOP: u32 = 19;

/// What a gate learns from [`check_verdict`].
pub enum Answer {
    /// No verdict yet: the gate should hold.
    None,
    Allow,
    Deny,
}

/// Consumes the verdict for `key`, if user space left one.
#[inline(always)]
pub fn check_verdict(key: &HoldKey) -> Answer {
    check_verdict_keep(key, false)
}

/// As [`check_verdict`]; with `keep_allow` an allow stays in place, so it covers the same
/// action by the same process again (io_uring re-issues a connect that returned
/// EINPROGRESS from a worker, which runs the hook a second time).
#[inline(always)]
pub fn check_verdict_keep(key: &HoldKey, keep_allow: bool) -> Answer {
    // SAFETY: the value is a plain u32 copied out before the entry is removed.
    let Some(raw) = (unsafe { VERDICTS.get(key) }).copied() else {
        return Answer::None;
    };
    let verdict = Verdict::from_raw(raw);
    if !(keep_allow && verdict == Some(Verdict::Allow)) {
        let _ = VERDICTS.remove(key);
    }
    count(Counter::VerdictConsumed);
    match verdict {
        Some(Verdict::Allow) => Answer::Allow,
        // Unknown values deny: fail closed.
        Some(Verdict::Deny) | None => Answer::Deny,
    }
}

/// True when this action was announced and still waits for an answer.
#[inline(always)]
pub fn is_pending(key: &HoldKey) -> bool {
    // SAFETY: presence test only.
    unsafe { PENDING.get(key).is_some() }
}

/// Stops the current task again for an action already announced.
#[inline(always)]
pub fn rehold() -> i32 {
    count(Counter::ReHeld);
    stop_or_deny()
}

/// Announces a filled-in event and stops the task; see the module docs.
#[inline(always)]
pub fn hold<T>(key: &HoldKey, event: RingBufEntry<T>, now: u64) -> i32 {
    // SAFETY: helper call with a constant signal number.
    if unsafe { bpf_send_signal_thread(SIGSTOP) } != 0 {
        event.discard(0);
        count(Counter::SignalFailed);
        return -EPERM;
    }
    // NOEXIST: another thread of the process may have announced it a moment ago; then
    // this task is stopped by the same group stop and must not announce twice.
    if PENDING.insert(key, &now, BPF_NOEXIST as u64).is_err() {
        event.discard(0);
        return -ERESTARTNOINTR;
    }
    event.submit(0);
    count(Counter::Held);
    -ERESTARTNOINTR
}

/// Announces an action that cannot be restarted (io_uring): it fails with EPERM now, and an
/// approval leaves a verdict that lets the caller's retry through (see `HoldMode`).
#[inline(always)]
pub fn deny_until_approved<T>(key: &HoldKey, event: RingBufEntry<T>, now: u64) -> i32 {
    count(Counter::AsyncDenied);
    if PENDING.insert(key, &now, BPF_NOEXIST as u64).is_err() {
        event.discard(0);
        return -EPERM;
    }
    event.submit(0);
    -EPERM
}

/// The common tail of every gate once the action is known to be sensitive: consume a
/// verdict, re-hold an announced action, or announce it with `announce` (which reserves
/// and fills the event, then calls [`hold`] or [`deny_until_approved`]).
#[inline(always)]
pub fn gate(key: &HoldKey, restartable: bool, announce: impl FnOnce() -> i32) -> i32 {
    match check_verdict_keep(key, !restartable) {
        Answer::Allow => return 0,
        Answer::Deny => return -EPERM,
        Answer::None => {}
    }
    if is_pending(key) {
        return if restartable { rehold() } else { -EPERM };
    }
    announce()
}

#[inline(always)]
fn stop_or_deny() -> i32 {
    // SAFETY: helper call with a constant signal number.
    if unsafe { bpf_send_signal_thread(SIGSTOP) } == 0 {
        -ERESTARTNOINTR
    } else {
        count(Counter::SignalFailed);
        -EPERM
    }
}

/// The ring buffer is full: deny rather than let an unannounced action through.
#[inline(always)]
pub fn ring_full() -> i32 {
    count(Counter::RingFull);
    -EPERM
}
