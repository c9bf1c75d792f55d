//! The contract between airlock's BPF programs (`agent-ebpf`) and its daemon (`agent`).
//!
//! Every type that crosses the kernel/user boundary is defined here exactly once, as
//! `#[repr(C)]` with explicit padding and a compile-time size check, so the two sides can
//! never disagree about a layout. Map and program names are shared constants for the same
//! reason: a typo would otherwise only show up as a load failure on a production host.
#![no_std]

pub mod event;
pub mod hold;
pub mod names;
pub mod offsets;
#[cfg(feature = "user")]
mod user;

pub use event::{
    ARGV_BUF_LEN, ARGV_MAX_ARGS, DeniedEvent, EventHeader, EventKind, ExecEvent, ExecOrigin,
    FileEvent, HoldMode, NET_FLAG_TLS_PLAINTEXT, NetEvent, PATH_LEN, PAYLOAD_LEN,
};
pub use hold::{
    AllowKey, DnsCall, DnsKey, HOSTNAME_LEN, HoldKey, Hook, HostName, InodeKey, NetKey, SslPlain,
    Verdict,
};
pub use offsets::{KernelOffsets, Settings};
