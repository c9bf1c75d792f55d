//! `cargo xtask` entry point: parse, dispatch, map errors to exit code 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::{bench, setup, vm};

/// airlock development tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what builds and tests need: rust-src, bpf-linker, apt packages, test kernels,
    /// Python tools. Safe to re-run.
    Setup(setup::Options),
    /// Benchmarks that need the gates loaded (run in the test VM): `bench gates`.
    Bench(bench::Options),
    /// Boot Debian kernels under QEMU and run commands inside them.
    #[command(subcommand)]
    Vm(vm::cli::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(opts) => setup::run(&opts).map(|()| ExitCode::SUCCESS),
        Command::Vm(cmd) => vm::cli::run(cmd),
        Command::Bench(opts) => bench::run(&opts).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
