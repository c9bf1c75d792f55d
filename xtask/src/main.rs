//! `cargo xtask` entry point: parse, dispatch, map errors to exit code 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::{bench, demo, eval_masking, setup, test, vm};

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
    /// Run every test tier: unit, BPF LSM (natively or in QEMU on 6.1 and 6.12), and the
    /// demo. Runs `setup` first.
    Test(test::Options),
    /// Run the demo: hub + agent + a scripted AI agent whose `aws s3 cp` waits for approval.
    /// Runs `setup` first.
    Demo(demo::Options),
    /// Measure (latency, throughput, overhead ratios) and print the numbers.
    #[command(subcommand)]
    Bench(bench::Command),
    /// Per-detector recall/precision of the masking library on a labelled corpus.
    EvalMasking(eval_masking::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(opts) => setup::run(&opts).map(|()| ExitCode::SUCCESS),
        Command::Vm(cmd) => vm::cli::run(cmd),
        Command::Test(opts) => {
            setup::run(&setup::Options::default()).and_then(|()| test::run(&opts))
        }
        Command::Demo(opts) => demo::run(&opts).map(|()| ExitCode::SUCCESS),
        Command::Bench(cmd) => bench::run(&cmd).map(|()| ExitCode::SUCCESS),
        Command::EvalMasking(opts) => eval_masking::run(&opts),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
