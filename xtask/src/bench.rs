//! `cargo xtask bench <what>`: measurements printed side by side, never asserted in tests.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::{
    paths,
    test::{build_airlock, host_has_bpf_lsm},
    vm::{self, GuestSpec, Kernel},
};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Hold latency over N holds: exec → request visible at the hub, approve → running.
    /// Runs natively on a BPF LSM host, otherwise in QEMU (TCG slows everything ~25x).
    Hold {
        #[arg(long, default_value_t = 100)]
        count: u32,
        #[arg(long, default_value = "6.12")]
        kernel: Kernel,
    },
    /// Gate overhead: agent-on/agent-off ratios of open/close, connect and exec loops, out
    /// of scope and in scope doing non-sensitive work (in the test VM here).
    Gates {
        #[arg(long, default_value = "6.12")]
        kernel: Kernel,
        /// Iterations of the open loop (connect runs a twentieth, exec a five-hundredth).
        #[arg(long, default_value_t = 100_000)]
        iterations: u32,
        /// Time every loop with the host's wall clock. By default open/close and connect
        /// run on QEMU's instruction counter (icount: immune to host load, no cache misses)
        /// and exec, which icount cannot time, in a second wall-clock pass.
        #[arg(long)]
        wall_clock: bool,
    },
    /// airlock-audit: durable appends/s under group commit, verify MB/s.
    Audit,
    /// airlock-mask: throughput per input shape and latency of a 2 KB request.
    Mask,
}

pub fn run(cmd: &Command) -> Result<()> {
    match cmd {
        Command::Hold { count, kernel } => hold(*count, *kernel),
        Command::Gates {
            kernel,
            iterations,
            wall_clock,
        } => gates(*kernel, *iterations, *wall_clock),
        Command::Audit => library_bench("airlock-audit", "audit"),
        Command::Mask => library_bench("airlock-mask", "mask"),
    }
}

/// Runs a library's own `harness = false` bench target, output passed through.
fn library_bench(package: &str, bench: &str) -> Result<()> {
    let mut cmd = crate::test::cargo();
    cmd.args(["bench", "-p", package, "--bench", bench]);
    crate::util::run_status(&mut cmd)
}

fn hold(count: u32, kernel: Kernel) -> Result<()> {
    build_airlock()?;
    let mut build = crate::test::cargo();
    build.args(["build", "-p", "airlock-tests", "--bin", "hold-latency"]);
    crate::util::run_status(&mut build).context("building hold-latency")?;
    let bench = paths::target_dir().join("debug/hold-latency");
    let args = [bench.display().to_string(), count.to_string()];
    if host_has_bpf_lsm() {
        let status = std::process::Command::new(&args[0])
            .arg(&args[1])
            .status()
            .context("running hold-latency")?;
        if !status.success() {
            bail!("hold-latency failed ({status})");
        }
        return Ok(());
    }
    println!(
        "bench hold: no BPF LSM on this host; measuring inside QEMU on Linux {}",
        kernel.label()
    );
    let mut spec = GuestSpec::new(kernel, args);
    spec.cwd = paths::workspace_root();
    spec.timeout = Duration::from_secs(3000);
    let outcome = vm::run_in_guest(&spec)?;
    if outcome.exit_code != 0 {
        bail!(
            "hold-latency exited with {} in the guest",
            outcome.exit_code
        );
    }
    Ok(())
}

/// Runs the gate bench driver (tests/src/bin/gate_bench.rs) in the test VM: the gates only
/// load under BPF LSM, which this machine kind refuses (DESIGN.md §10).
fn gates(kernel: Kernel, iterations: u32, wall_clock: bool) -> Result<()> {
    build_airlock()?;
    let mut build = crate::test::cargo();
    build.args(["build", "-p", "airlock-tests", "--bins"]);
    crate::util::run_status(&mut build).context("building the gate bench driver")?;
    if wall_clock {
        return gate_bench_guest(kernel, iterations, false, None);
    }
    // Instruction counting: other VMs and builds on the host cannot skew the ratios (with
    // the wall clock, a busy 2-core host gave on/off ratios anywhere from 0.3 to 2.5). But
    // fork+exec reads /bin/true over the guest's 9p root: the vCPU idles on host I/O and the
    // instruction clock jumps over the wait by timer deadlines, which makes exec timings
    // meaningless (measured: 0.005 to 18). So exec gets its own wall-clock pass.
    println!("bench gates: open/close and connect on the instruction-count clock");
    gate_bench_guest(kernel, iterations, true, Some("open,connect"))?;
    println!("bench gates: fork+exec on the wall clock (meaningful on a quiet host only)");
    gate_bench_guest(kernel, iterations, false, Some("exec"))
}

/// One boot of the gate bench driver; `loops` limits it to some loops.
fn gate_bench_guest(
    kernel: Kernel,
    iterations: u32,
    icount: bool,
    loops: Option<&str>,
) -> Result<()> {
    let driver = paths::target_dir().join("debug/gate_bench");
    let mut spec = GuestSpec::new(
        kernel,
        [driver.display().to_string(), iterations.to_string()],
    );
    spec.cwd = paths::workspace_root();
    spec.timeout = Duration::from_secs(1800);
    // One vCPU: under TCG, cross-CPU wakeups (fork/exec, a connect's accept) cost more when
    // the other vCPU is idle than when a daemon keeps it busy, which makes "agent on" look
    // faster than "agent off". On one CPU both pay the same.
    spec.cpus = 1;
    spec.icount = icount;
    if let Some(loops) = loops {
        spec.env.push(("AIRLOCK_BENCH_LOOPS".into(), loops.into()));
    }
    spec.env
        .push(("AIRLOCK_VM_KERNEL".into(), kernel.label().into()));
    let outcome = vm::run_in_guest(&spec)?;
    if outcome.exit_code != 0 {
        bail!(
            "the gate bench driver exited with {} on Linux {}",
            outcome.exit_code,
            kernel.label()
        );
    }
    Ok(())
}
