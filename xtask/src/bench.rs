//! `cargo xtask bench audit|mask`: runs a library's benchmark (release build, its own
//! `harness = false` bench target) and passes its measured numbers through.

use std::process::Command;

use anyhow::Result;

use crate::{paths::workspace_root, util::run_status};

/// Which benchmark.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Which {
    /// airlock-audit: durable appends/s under group commit, verify MB/s.
    Audit,
    /// airlock-mask: masking throughput per input shape.
    Mask,
}

impl Which {
    /// (package, bench target).
    pub fn target(self) -> (&'static str, &'static str) {
        match self {
            Which::Audit => ("airlock-audit", "audit"),
            Which::Mask => ("airlock-mask", "mask"),
        }
    }
}

/// Runs `cargo bench -p PACKAGE --bench BENCH` with output passed through.
///
/// # Errors
/// cargo cannot start or the bench fails.
pub fn run(which: Which) -> Result<()> {
    let (package, bench) = which.target();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_status(
        Command::new(cargo)
            .current_dir(workspace_root())
            .args(["bench", "-p", package, "--bench", bench]),
    )
}
