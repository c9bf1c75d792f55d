//! `cargo xtask vm …`: the QEMU kernel matrix for humans.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand, ValueEnum};

use super::{Forward, GuestOutcome, GuestSpec, Kernel, run_matrix};

/// VM subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a kernel (or each) and run one command inside as root.
    Run(RunOptions),
    /// Fetch the kernels and build their initramfs without booting.
    Prepare,
}

/// Options of `cargo xtask vm run`.
#[derive(Debug, Args)]
pub struct RunOptions {
    /// Kernel to boot: 6.1, 6.12 or all (one after the other).
    #[arg(long, value_enum, default_value = "6.12")]
    pub kernel: KernelChoice,
    /// Forward a TCP port from the host's loopback into the guest: [127.0.0.1:]HOSTPORT:GUESTPORT.
    #[arg(long = "forward", value_name = "HOST:GUEST")]
    pub forwards: Vec<Forward>,
    /// Kill the guest after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Set an environment variable in the guest (CI, RUST_LOG, RUST_BACKTRACE pass by default).
    #[arg(short = 'e', long = "env", value_name = "KEY=VAL", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Deterministic guest clock (QEMU icount: 1 ns per instruction, idle time skipped).
    #[arg(long)]
    pub icount: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `--kernel` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KernelChoice {
    /// Debian 12's 6.1.
    #[value(name = "6.1")]
    V6_1,
    /// The bookworm backport 6.12.
    #[value(name = "6.12")]
    V6_12,
    /// Both, one after the other.
    All,
}

impl KernelChoice {
    /// The kernels this choice stands for.
    pub fn kernels(self) -> Vec<Kernel> {
        match self {
            KernelChoice::V6_1 => vec![Kernel::V6_1],
            KernelChoice::V6_12 => vec![Kernel::V6_12],
            KernelChoice::All => Kernel::ALL.to_vec(),
        }
    }
}

fn parse_env(s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("expected KEY=VAL, got {s:?}"))?;
    Ok((k.to_owned(), v.to_owned()))
}

/// Runs a VM subcommand; the exit code is the guest command's (the first non-zero one).
///
/// # Errors
///
/// Fails when a kernel cannot be prepared or a run fails (timeout, no exit code).
pub fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Prepare => {
            for kernel in Kernel::ALL {
                let (tree, initrd) = super::prepare(kernel)?;
                println!(
                    "vm: kernel {kernel}: {} ({}), initramfs {}",
                    tree.package,
                    tree.release,
                    initrd.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(opts) => {
            let kernels = opts.kernel.kernels();
            let mut spec = GuestSpec::new(kernels[0], opts.command);
            spec.forwards = opts.forwards;
            spec.timeout = Duration::from_secs(opts.timeout);
            spec.env = opts.env;
            spec.memory_mib = opts.memory;
            spec.cpus = opts.cpus;
            spec.icount = opts.icount;
            let outcomes = run_matrix(&spec, &kernels)?;
            for o in &outcomes {
                eprintln!("{}", summary(o));
            }
            let code = outcomes
                .iter()
                .map(|o| o.exit_code)
                .find(|&c| c != 0)
                .unwrap_or(0);
            Ok(ExitCode::from(
                u8::try_from(code.clamp(0, 255)).unwrap_or(1),
            ))
        }
    }
}

/// One line describing a finished run.
pub fn summary(o: &GuestOutcome) -> String {
    let secs = |d: Option<Duration>| {
        d.map_or_else(|| "?".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
    };
    format!(
        "vm: kernel {} ({}): exit {}, boot-to-command {}, command {}, total {:.2} s, results {}",
        o.kernel,
        o.release,
        o.exit_code,
        secs(o.boot_time),
        secs(o.command_time),
        o.total_time.as_secs_f64(),
        o.results_dir.display()
    )
}
