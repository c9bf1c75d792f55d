//! `cargo xtask bench gates`: builds the agent and the bench driver, then runs the driver
//! (tests/src/bin/gate_bench.rs) in the test VM and prints its table of agent-on/agent-off
//! ratios. The gates only load under BPF LSM, which this host refuses (DESIGN.md §10).

use std::process::Command;

use anyhow::{Result, bail};

use crate::{
    paths,
    util::run_status,
    vm::{self, GuestSpec, Kernel},
};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Which benchmark: `gates`.
    pub which: String,
    /// Kernel to run on: 6.1 or 6.12.
    #[arg(long, default_value = "6.12")]
    pub kernel: String,
    /// Iterations of the open loop (connect runs a tenth, exec a two-hundredth).
    #[arg(long, default_value_t = 20_000)]
    pub iterations: u32,
}

/// Runs the named benchmark.
///
/// # Errors
/// Unknown benchmark, a failed build, or a failed VM run.
pub fn run(opts: &Options) -> Result<()> {
    if opts.which != "gates" {
        bail!("unknown benchmark `{}`; known: gates", opts.which);
    }
    let kernel = match opts.kernel.as_str() {
        "6.1" => Kernel::V6_1,
        "6.12" => Kernel::V6_12,
        other => bail!("unknown kernel `{other}`; use 6.1 or 6.12"),
    };
    let root = paths::workspace_root();
    run_status(
        Command::new("cargo")
            .current_dir(&root)
            .env("AIRLOCK_REQUIRE_EBPF", "1")
            .args(["build", "-p", "airlock-agent"]),
    )?;
    run_status(Command::new("cargo").current_dir(&root).args([
        "build",
        "-p",
        "airlock-tests",
        "--bins",
    ]))?;
    let driver = paths::target_dir().join("debug/gate_bench");
    let mut spec = GuestSpec::new(
        kernel,
        [driver.display().to_string(), opts.iterations.to_string()],
    );
    spec.timeout = std::time::Duration::from_secs(1800);
    // One vCPU: under TCG, cross-CPU wakeups (fork/exec, a connect's accept) cost more when
    // the other vCPU is idle than when a daemon keeps it busy, which makes "agent on" look
    // faster than "agent off". On one CPU both pay the same.
    spec.cpus = 1;
    let outcome = vm::run_in_guest(&spec)?;
    if outcome.exit_code != 0 {
        bail!(
            "the bench driver exited with {} on {}",
            outcome.exit_code,
            opts.kernel
        );
    }
    Ok(())
}
