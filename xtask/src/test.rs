//! `cargo xtask test`: the whole suite, as CI runs it.
//!
//! 1. unit and in-process tests of every crate (`cargo test --workspace`);
//! 2. the BPF LSM tests (`tests/tests/*`, `#[ignore]`d on ordinary hosts) as root against
//!    real kernels: natively when this host runs BPF LSM, otherwise inside QEMU on Debian's
//!    6.1 and 6.12 kernels, plus one boot of a kernel whose `lsm=` lacks `bpf` for the
//!    refusal test, and the VM harness's own tests (`xtask/tests/guest.rs`);
//! 3. the demo, approved by a scripted approver, with the real `aws` CLI against moto S3.
//!
//! A tier that cannot run is a failure, never a skip, unless the caller explicitly opts out
//! with a `--no-*` flag (refused under CI=true).

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    paths,
    vm::{self, GuestSpec, Kernel},
};

/// Tests that need a kernel *without* BPF LSM; they run in their own boot.
const NO_BPF_LSM_TESTS: &[&str] = &["kernel_without_bpf_lsm"];
/// The kernel command line for that boot: Debian's default list minus `bpf`.
const NO_BPF_LSM_ARG: &str = "lsm=lockdown,capability,landlock,yama,apparmor";

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Kernels for the BPF LSM tier, comma-separated.
    #[arg(long, value_delimiter = ',', default_values = ["6.1", "6.12"])]
    pub kernels: Vec<Kernel>,
    /// Only run kernel-tier tests whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Skip `cargo test --workspace` (refused under CI=true).
    #[arg(long)]
    pub no_unit: bool,
    /// Skip the BPF LSM tier (refused under CI=true).
    #[arg(long)]
    pub no_kernel: bool,
    /// Skip the demo run (refused under CI=true).
    #[arg(long)]
    pub no_demo: bool,
}

/// Counts from libtest's `test result:` lines.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Parses `test result: ok. 6 passed; 0 failed; 1 ignored; ...`.
    fn parse(line: &str) -> Option<Tally> {
        let rest = line.trim().strip_prefix("test result: ")?;
        let number = |word: &str| {
            rest.split(';')
                .find_map(|part| {
                    part.trim()
                        .strip_suffix(word)
                        .map(|n| n.trim().rsplit(' ').next().unwrap_or(""))
                })
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Some(Tally {
            passed: number("passed"),
            failed: number("failed"),
            ignored: number("ignored"),
        })
    }
}

struct Stage {
    name: String,
    tally: Tally,
    ok: bool,
    time: Duration,
}

pub fn run(opts: &Options) -> Result<ExitCode> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if ci && (opts.no_unit || opts.no_kernel || opts.no_demo) {
        bail!("--no-unit/--no-kernel/--no-demo are refused under CI=true: CI runs every tier");
    }
    // Every build below must carry the BPF programs; a missing toolchain is an error here.
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("AIRLOCK_REQUIRE_EBPF", "1") };
    let mut stages = Vec::new();

    if !opts.no_unit {
        let started = Instant::now();
        let fmt_ok = crate::util::run_status(cargo().args(["fmt", "--all", "--check"])).is_ok();
        let clippy_ok = crate::util::run_status(cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "agent-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
        .is_ok();
        let ok = fmt_ok && clippy_ok;
        let tally = Tally {
            passed: u64::from(fmt_ok) + u64::from(clippy_ok),
            failed: u64::from(!fmt_ok) + u64::from(!clippy_ok),
            ignored: 0,
        };
        stages.push(Stage {
            name: "lint (cargo fmt --check, clippy -D warnings)".into(),
            tally,
            ok,
            time: started.elapsed(),
        });
    }
    // The in-process tests of the tests crate run the real binary too.
    build_airlock()?;
    if !opts.no_unit {
        let started = Instant::now();
        let mut cmd = cargo();
        cmd.args(["test", "--workspace", "--exclude", "agent-ebpf"]);
        let (ok, tally) = run_streaming(&mut cmd, None)?;
        stages.push(Stage {
            name: "unit + in-process (cargo test --workspace)".into(),
            tally,
            ok,
            time: started.elapsed(),
        });
    }

    if !opts.no_kernel {
        let binaries = build_guest_tests()?;
        if host_has_bpf_lsm() {
            let started = Instant::now();
            let (ok, tally) = run_native(&binaries, opts.filter.as_deref())?;
            stages.push(Stage {
                name: "BPF LSM tests (native)".into(),
                tally,
                ok,
                time: started.elapsed(),
            });
        } else {
            println!(
                "xtask test: this host's kernel does not run BPF LSM; the kernel tier runs under QEMU"
            );
            // One VM per kernel, side by side: the suites spend most of their time waiting
            // on held processes and timers, so two guests share the host's cores well.
            let script = guest_script(
                &binaries,
                opts.filter.as_deref(),
                &skip_args(NO_BPF_LSM_TESTS),
            );
            let runs: Vec<Option<TimedRun>> = std::thread::scope(|s| {
                let handles: Vec<_> = opts
                    .kernels
                    .iter()
                    .map(|kernel| {
                        let script = script.clone();
                        s.spawn(move || {
                            let started = Instant::now();
                            let result = run_guest(*kernel, script, Vec::new());
                            (started.elapsed(), result)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().ok()).collect()
            });
            for (kernel, run) in opts.kernels.iter().zip(runs) {
                let (time, result) = run.with_context(|| {
                    format!("the kernel tier on Linux {} panicked", kernel.label())
                })?;
                let (ok, tally) = result?;
                stages.push(Stage {
                    name: format!("BPF LSM tests (QEMU, Linux {})", kernel.label()),
                    tally,
                    ok,
                    time,
                });
            }
            if opts.filter.is_none() {
                // The harness the tiers stand on: mounts, ports, timeouts, boot-panic retry.
                let started = Instant::now();
                let (ok, tally) = run_streaming(
                    cargo().args(["test", "-p", "xtask", "--test", "guest", "--", "--ignored"]),
                    None,
                )?;
                stages.push(Stage {
                    name: "VM harness (QEMU boots, ports, timeouts, panics)".into(),
                    tally,
                    ok,
                    time: started.elapsed(),
                });
                let started = Instant::now();
                let exact: Vec<String> = NO_BPF_LSM_TESTS
                    .iter()
                    .flat_map(|t| ["--exact".into(), t.to_string()])
                    .collect();
                let script = guest_script(&binaries, None, &exact);
                let kernel = *opts.kernels.last().unwrap_or(&Kernel::V6_12);
                let (ok, tally) = run_guest(kernel, script, vec![NO_BPF_LSM_ARG.to_owned()])?;
                stages.push(Stage {
                    name: format!(
                        "refusal on a kernel without BPF LSM (QEMU, Linux {})",
                        kernel.label()
                    ),
                    tally,
                    ok,
                    time: started.elapsed(),
                });
            }
        }
    }

    if !opts.no_demo {
        let started = Instant::now();
        let ok = match crate::demo::run(&crate::demo::Options::scripted()) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("xtask test: demo failed: {e:#}");
                false
            }
        };
        let tally = Tally {
            passed: u64::from(ok),
            failed: u64::from(!ok),
            ignored: 0,
        };
        stages.push(Stage {
            name: "demo (aws s3 cp held, approved, object verified)".into(),
            tally,
            ok,
            time: started.elapsed(),
        });
    }

    let mut total = Tally::default();
    println!("\n== airlock test summary ==");
    for stage in &stages {
        total.add(stage.tally);
        println!(
            "{:<4} {:<62} {:>4} passed {:>3} failed  {:>6.1}s",
            if stage.ok { "ok" } else { "FAIL" },
            stage.name,
            stage.tally.passed,
            stage.tally.failed,
            stage.time.as_secs_f64()
        );
    }
    let all_ok = stages.iter().all(|s| s.ok);
    // The plain closing line CI readers look for.
    println!(
        "{} passed, {} failed",
        total.passed,
        total.failed + u64::from(!all_ok && total.failed == 0)
    );
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo` (the one running xtask), in the workspace root.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(paths::workspace_root());
    cmd
}

/// Runs `cmd`, echoing its output (with `prefix`) and tallying libtest summaries.
fn run_streaming(cmd: &mut Command, prefix: Option<&str>) -> Result<(bool, Tally)> {
    println!("xtask test: running {}", crate::util::display(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", crate::util::display(cmd)))?;
    let mut tally = Tally::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.context("reading test output")?;
            println!("{}{line}", prefix.unwrap_or(""));
            if let Some(t) = Tally::parse(&line) {
                tally.add(t);
            }
        }
    }
    let status = child.wait().context("waiting for tests")?;
    Ok((status.success() && tally.failed == 0, tally))
}

/// Builds the `airlock` binary and the guest test binaries; returns the test executables.
fn build_guest_tests() -> Result<Vec<PathBuf>> {
    build_airlock()?;
    let out = cargo()
        .args([
            "test",
            "-p",
            "airlock-tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("building the kernel-tier tests")?;
    if !out.status.success() {
        bail!("building the kernel-tier tests failed");
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test_target = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if msg["reason"] == "compiler-artifact"
            && is_test_target
            && let Some(exe) = msg["executable"].as_str()
        {
            binaries.push(PathBuf::from(exe));
        }
    }
    if binaries.is_empty() {
        bail!("no kernel-tier test binaries were built (tests/tests/*.rs)");
    }
    binaries.sort();
    Ok(binaries)
}

/// True when this host can run the BPF LSM tests natively (root and `bpf` in `lsm=`).
pub fn host_has_bpf_lsm() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && std::fs::read_to_string("/sys/kernel/security/lsm")
        .is_ok_and(|l| l.trim().split(',').any(|x| x == "bpf"))
}

/// Builds `target/debug/airlock` with its BPF programs and returns its path.
pub fn build_airlock() -> Result<PathBuf> {
    let started = Instant::now();
    let mut build = cargo();
    build
        .args(["build", "-p", "airlock-agent"])
        .env("AIRLOCK_REQUIRE_EBPF", "1");
    crate::util::run_status(&mut build)
        .context("building the airlock binary with its BPF programs")?;
    println!(
        "xtask: target/debug/airlock with its BPF programs is built ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(paths::target_dir().join("debug/airlock"))
}

fn skip_args(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .flat_map(|n| ["--skip".to_owned(), (*n).to_owned()])
        .collect()
}

fn test_args(filter: Option<&str>, extra: &[String]) -> Vec<String> {
    let mut args = vec!["--ignored".to_owned(), "--test-threads=1".to_owned()];
    args.extend(extra.iter().cloned());
    if let Some(f) = filter {
        args.push(f.to_owned());
    }
    args
}

fn run_native(binaries: &[PathBuf], filter: Option<&str>) -> Result<(bool, Tally)> {
    let mut all_ok = true;
    let mut tally = Tally::default();
    for binary in binaries {
        let mut cmd = Command::new(binary);
        cmd.args(test_args(filter, &skip_args(NO_BPF_LSM_TESTS)));
        let (ok, t) = run_streaming(&mut cmd, None)?;
        all_ok &= ok;
        tally.add(t);
    }
    Ok((all_ok, tally))
}

/// One shell script that runs every binary in turn and exits non-zero if any failed.
fn guest_script(binaries: &[PathBuf], filter: Option<&str>, extra: &[String]) -> String {
    let args = test_args(filter, extra);
    let quoted: Vec<String> = args.iter().map(|a| shell_word(a)).collect();
    let mut script = String::from("rc=0\n");
    for binary in binaries {
        let bin = binary.display().to_string();
        script.push_str(&format!(
            "echo \"== $(basename {bin})\"\n{bin} {} || rc=1\n",
            quoted.join(" ")
        ));
    }
    script.push_str("exit $rc\n");
    script
}

/// `word` as one shell word: unchanged when it has no special characters.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=./:,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// How long one kernel's tier took, and how it went.
type TimedRun = (Duration, Result<(bool, Tally)>);

fn run_guest(kernel: Kernel, script: String, kernel_args: Vec<String>) -> Result<(bool, Tally)> {
    let mut spec = GuestSpec::new(kernel, ["sh".to_owned(), "-c".to_owned(), script]);
    spec.cwd = paths::workspace_root();
    spec.timeout = Duration::from_secs(1500);
    spec.kernel_args = kernel_args;
    spec.stream = vm::Stream::On {
        prefix: Some(format!("[{}] ", kernel.label())),
    };
    let outcome = vm::run_in_guest(&spec)
        .with_context(|| format!("the kernel tier could not run on Linux {}", kernel.label()))?;
    let mut tally = Tally::default();
    for line in String::from_utf8_lossy(&outcome.stdout).lines() {
        if let Some(t) = Tally::parse(line) {
            tally.add(t);
        }
    }
    println!(
        "xtask test: Linux {} ({}) exit {}, boot {:.1}s, tests {:.1}s",
        kernel.label(),
        outcome.release,
        outcome.exit_code,
        outcome.boot_time.unwrap_or_default().as_secs_f64(),
        outcome.command_time.unwrap_or_default().as_secs_f64()
    );
    Ok((outcome.exit_code == 0 && tally.failed == 0, tally))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libtest_summaries() {
        let t = Tally::parse("test result: ok. 6 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 45.44s")
            .expect("summary");
        assert_eq!((t.passed, t.failed, t.ignored), (6, 0, 2));
        let t = Tally::parse("[6.1] test result: FAILED. 3 passed; 1 failed; 0 ignored")
            .map(|t| t.failed);
        assert_eq!(t, None, "prefixed lines are not summaries");
        let t =
            Tally::parse("test result: FAILED. 3 passed; 1 failed; 0 ignored").expect("summary");
        assert_eq!((t.passed, t.failed), (3, 1));
    }

    #[test]
    fn guest_script_runs_each_binary_and_keeps_failures() {
        let script = guest_script(
            &[PathBuf::from("/w/t/a-1"), PathBuf::from("/w/t/b-2")],
            Some("hold"),
            &skip_args(&["x"]),
        );
        assert!(script.contains("/w/t/a-1 --ignored --test-threads=1 --skip x hold || rc=1"));
        assert!(script.contains("/w/t/b-2 --ignored"));
        assert!(script.ends_with("exit $rc\n"));
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
