//! `cargo xtask` entry point: parse, dispatch, map errors to exit code 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::{bench, eval_masking, setup, vm};

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
    /// Boot Debian kernels under QEMU and run commands inside them.
    #[command(subcommand)]
    Vm(vm::cli::Command),
    /// Per-detector recall/precision of the masking library on a labelled corpus.
    EvalMasking(eval_masking::Options),
    /// Run a library benchmark and print its numbers (`audit`, `mask`).
    Bench {
        /// Which benchmark.
        #[arg(value_enum)]
        which: bench::Which,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(opts) => setup::run(&opts).map(|()| ExitCode::SUCCESS),
        Command::Vm(cmd) => vm::cli::run(cmd),
        Command::EvalMasking(opts) => eval_masking::run(&opts),
        Command::Bench { which } => bench::run(which).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
