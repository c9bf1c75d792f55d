//! Host names for held destinations: a uprobe on libc `getaddrinfo` remembers the name a
//! watched process asked for, and the uretprobe files every address of the answer under
//! (tgid, address) in `DNS_NAMES`, where the daemon looks it up when a connect is held.
//! Static binaries (Go) bypass libc; their requests carry the address only.

use agent_common::{DnsCall, DnsKey, HOSTNAME_LEN, HostName};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    maps::{DNS_CALLS, DNS_NAMES},
    scope::current_in_scope_uncached,
};

/// `struct addrinfo` (user ABI, x86_64): ai_family at 4, ai_addr at 24, ai_next at 40.
const AI_FAMILY: usize = 4;
const AI_ADDR: usize = 24;
const AI_NEXT: usize = 40;
const MAX_ANSWERS: usize = 8;
const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;

/// match-proto: int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
pub fn on_enter(ctx: &ProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !current_in_scope_uncached((pid_tgid >> 32) as u32) {
        return;
    }
    let (Some(node), Some(res)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(3)) else {
        return;
    };
    if node == 0 {
        return;
    }
    let mut call = DnsCall {
        res,
        name: HostName {
            name: [0; HOSTNAME_LEN],
        },
    };
    // SAFETY: reads from the caller's memory; a bad pointer only fails the read.
    if unsafe { bpf_probe_read_user_str_bytes(node as *const u8, &mut call.name.name) }.is_err() {
        return;
    }
    let _ = DNS_CALLS.insert(&pid_tgid, &call, 0);
}

pub fn on_exit(ctx: &RetProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: copied out before the entry is removed.
    let Some(call) = (unsafe { DNS_CALLS.get(&pid_tgid) }).copied() else {
        return;
    };
    let _ = DNS_CALLS.remove(&pid_tgid);
    let rc: i32 = ctx.ret();
    if rc != 0 {
        return;
    }
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: user-memory reads of the resolver's answer list; each may fail cleanly.
    let Ok(mut ai) = (unsafe { bpf_probe_read_user(call.res as *const u64) }) else {
        return;
    };
    for _ in 0..MAX_ANSWERS {
        if ai == 0 {
            break;
        }
        let family =
            unsafe { bpf_probe_read_user((ai as usize + AI_FAMILY) as *const i32) }.unwrap_or(0);
        let addr =
            unsafe { bpf_probe_read_user((ai as usize + AI_ADDR) as *const u64) }.unwrap_or(0);
        let mut key = DnsKey {
            tgid,
            addr: [0; 16],
        };
        let ok = if family == AF_INET && addr != 0 {
            match unsafe { bpf_probe_read_user((addr as usize + 4) as *const [u8; 4]) } {
                Ok(v4) => {
                    key.addr[10] = 0xff;
                    key.addr[11] = 0xff;
                    key.addr[12..16].copy_from_slice(&v4);
                    true
                }
                Err(_) => false,
            }
        } else if family == AF_INET6 && addr != 0 {
            match unsafe { bpf_probe_read_user((addr as usize + 8) as *const [u8; 16]) } {
                Ok(v6) => {
                    key.addr = v6;
                    true
                }
                Err(_) => false,
            }
        } else {
            false
        };
        if ok {
            let _ = DNS_NAMES.insert(&key, &call.name, 0);
        }
        ai = unsafe { bpf_probe_read_user((ai as usize + AI_NEXT) as *const u64) }.unwrap_or(0);
    }
}
