//! airlock's BPF programs.
//!
//! Entry points stay thin; each family lives in its own module:
//! - [`exec`]: the `bprm_check_security` gate for watched binaries;
//! - [`scope`]: which tasks are watched (cgroups + inheritance on fork);
//! - [`hold`]: the stop-and-restart machinery shared by every gate (DESIGN.md §3).
#![no_std]
#![no_main]

mod exec;
mod hold;
mod maps;
mod scope;

use aya_ebpf::{
    macros::{lsm, tracepoint},
    programs::{LsmContext, TracePointContext},
};

/// match-proto: int security_bprm_check(struct linux_binprm *bprm)
#[lsm(hook = "bprm_check_security")]
pub fn exec_check(ctx: LsmContext) -> i32 {
    exec::check(&ctx)
}

/// match-proto: TRACE_EVENT(sched_process_fork, parent, child)
#[tracepoint]
pub fn scope_fork(ctx: TracePointContext) -> u32 {
    scope::on_fork(&ctx);
    0
}

/// match-proto: TRACE_EVENT(sched_process_exit, p)
#[tracepoint]
pub fn scope_exit(_ctx: TracePointContext) -> u32 {
    scope::on_exit();
    0
}

/// match-proto: syscalls/sys_exit_execve and sys_exit_execveat
#[tracepoint]
pub fn exec_done(_ctx: TracePointContext) -> u32 {
    exec::on_exec_return();
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; there is nothing to unwind.
    loop {}
}

/// GPL-compatible: bpf_probe_read_*, bpf_d_path and bpf_send_signal are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
