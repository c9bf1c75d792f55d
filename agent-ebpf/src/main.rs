//! airlock's BPF programs.
//!
//! Entry points stay thin; each family lives in its own module:
//! - [`exec`]: the `bprm_check_security` gate for watched binaries;
//! - [`scope`]: which tasks are watched (cgroups + inheritance on fork);
//! - [`hold`]: the stop-and-restart machinery shared by every gate (DESIGN.md §3).
#![no_std]
#![no_main]

mod dns;
mod exec;
mod files;
mod hold;
mod maps;
mod net;
mod protect;
mod protect_fs;
mod scope;
mod ssl;
mod task;

use aya_ebpf::{
    macros::{lsm, tracepoint, uprobe, uretprobe},
    programs::{LsmContext, ProbeContext, RetProbeContext, TracePointContext},
};

/// match-proto: int security_bprm_check(struct linux_binprm *bprm)
#[lsm(hook = "bprm_check_security")]
pub fn exec_check(ctx: LsmContext) -> i32 {
    exec::check(&ctx)
}

/// match-proto: int security_socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)
#[lsm(hook = "socket_connect")]
pub fn connect_check(ctx: LsmContext) -> i32 {
    net::check_connect(&ctx)
}

/// match-proto: int security_socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)
#[lsm(hook = "socket_sendmsg")]
pub fn sendmsg_check(ctx: LsmContext) -> i32 {
    net::check_sendmsg(&ctx)
}

/// match-proto: int security_socket_recvmsg(struct socket *sock, struct msghdr *msg, int size, int flags)
#[lsm(hook = "socket_recvmsg")]
pub fn recv_check(ctx: LsmContext) -> i32 {
    net::check_recvmsg(&ctx)
}

/// match-proto: int security_file_open(struct file *file)
#[lsm(hook = "file_open")]
pub fn open_check(ctx: LsmContext) -> i32 {
    files::check(&ctx)
}

/// match-proto: int security_task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig, const struct cred *cred)
#[lsm(hook = "task_kill")]
pub fn kill_check(ctx: LsmContext) -> i32 {
    protect::check_kill(&ctx)
}

/// match-proto: int security_ptrace_access_check(struct task_struct *child, unsigned int mode)
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_check(ctx: LsmContext) -> i32 {
    protect::check_ptrace(&ctx)
}

/// match-proto: int security_bpf(int cmd, union bpf_attr *attr, unsigned int size)
#[lsm(hook = "bpf")]
pub fn bpf_check(ctx: LsmContext) -> i32 {
    protect::check_bpf(&ctx)
}

/// match-proto: int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
#[uprobe]
pub fn dns_enter(ctx: ProbeContext) -> u32 {
    dns::on_enter(&ctx);
    0
}

/// match-proto: getaddrinfo's return value
#[uretprobe]
pub fn dns_exit(ctx: RetProbeContext) -> u32 {
    dns::on_exit(&ctx);
    0
}

/// match-proto: int SSL_write(SSL *ssl, const void *buf, int num)
#[uprobe]
pub fn ssl_write_enter(ctx: ProbeContext) -> u32 {
    // `num` is a C int: only the low 32 bits of the register are defined.
    let len = ctx.arg::<u64>(2).map_or(0, |n| n as u32 as i32);
    ssl::on_write(&ctx, if len > 0 { len as u64 } else { 0 });
    0
}

/// match-proto: int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)
#[uprobe]
pub fn ssl_write_ex_enter(ctx: ProbeContext) -> u32 {
    ssl::on_write(&ctx, ctx.arg::<u64>(2).unwrap_or(0));
    0
}

/// match-proto: SSL_write's and SSL_write_ex's return value
#[uretprobe]
pub fn ssl_write_exit(_ctx: RetProbeContext) -> u32 {
    ssl::on_write_return();
    0
}

/// match-proto: int SSL_do_handshake(SSL *s) / int SSL_connect(SSL *s)
#[uprobe]
pub fn ssl_handshake_enter(_ctx: ProbeContext) -> u32 {
    ssl::on_handshake();
    0
}

/// match-proto: SSL_do_handshake's and SSL_connect's return value
#[uretprobe]
pub fn ssl_handshake_exit(_ctx: RetProbeContext) -> u32 {
    ssl::on_handshake_return();
    0
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
