//! airlock's host agent: loads the BPF gates, turns held actions into approval requests,
//! and answers the kernel when the hub decides.
//!
//! The binary (`src/main.rs`) only parses flags and dispatches here.

pub mod audit;
pub mod btf;
pub mod config;
pub mod content;
pub mod context;
pub mod daemon;
pub mod dirwatch;
pub mod egress;
pub mod events;
pub mod files;
pub mod holds;
pub mod hub_client;
pub mod intent;
pub mod kernel_sets;
pub mod loader;
pub mod naming;
pub mod policy_gate;
pub mod preflight;
pub mod procinfo;
pub mod record;
pub mod redact;
pub mod resolve;
pub mod reveal;
pub mod scope;

/// Milliseconds since the Unix epoch (the unit of every time in airlock's records).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
