//! `cargo xtask bench gates` runs this inside the test VM: open/close, connect and exec
//! loops, timed with the agent off and on, for a process out of scope and for a process in
//! scope doing non-sensitive work (an ordinary file, a loopback connect, an unwatched
//! binary). Prints the ratios agent-on / agent-off. Not a test: nothing is asserted.
//!
//! Noise control:
//! - `cargo xtask bench gates` boots the guest with QEMU's instruction counter as its clock
//!   (`-icount`, one vCPU): guest nanoseconds count executed instructions, so other work
//!   on the host cannot skew a loop (wall-clock ratios on a busy 2-core host ranged from
//!   0.3 to 2.5). It does not model caches: the ratios are instruction-count overheads;
//! - every round measures agent-off and agent-on back to back (the order alternates, so
//!   drift favours neither) and yields one on/off ratio per loop and scope; the printed
//!   ratio is the **median of the rounds' ratios**, with the lowest and highest beside it;
//! - each loop runs long enough that timer granularity vanishes, each measurement is the
//!   best of `REPEATS` runs, and a failed run is repeated;
//! - everything is pinned to CPU 0.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

use airlock_tests::{
    agent::{Agent, AgentSpec},
    cgroup::TestCgroup,
    hub::Hub,
    process,
};

/// On/off pairs; the median of their ratios is printed (`AIRLOCK_BENCH_ROUNDS` overrides).
const ROUNDS: usize = 7;
/// Runs per measurement; the fastest is kept (`AIRLOCK_BENCH_REPEATS` overrides).
const REPEATS: usize = 3;

fn probe() -> PathBuf {
    std::env::current_exe()
        .expect("exe")
        .with_file_name("gate_probe")
}

/// One timed loop. A loop that fails (a loopback connect can hit EPIPE/ECONNRESET when
/// the accept queue overflows under emulation) is run again, up to three times: one bad
/// run must not throw away an hour of measurements.
fn run(cgroup: Option<&Path>, kind: &str, n: u32, arg: &str) -> u128 {
    let n = n.to_string();
    for _ in 0..3 {
        let mut cmd = Command::new(probe());
        cmd.args(["loop", kind, &n, arg]);
        let out = match cgroup {
            Some(cg) => process::spawn_in(cg, &mut cmd)
                .wait_with_output()
                .expect("wait"),
            None => cmd.output().expect("run"),
        };
        if let Some(ns) = out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .flatten()
        {
            return ns;
        }
        eprintln!(
            "{kind} loop failed, running it again: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    panic!("{kind} loop failed three times");
}

/// Pins this process (and so every loop it spawns) to CPU 0.
fn pin_to_cpu0() {
    let mut set = nix::sched::CpuSet::new();
    if set.set(0).is_ok()
        && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
    {
        eprintln!("pinned to CPU 0");
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    pin_to_cpu0();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ordinary.txt");
    std::fs::write(&file, "x").expect("write");
    let file = file.display().to_string();
    let cgroup = TestCgroup::new("bench");
    // `AIRLOCK_BENCH_LOOPS=open,exec` runs a subset (quick experiments).
    let only = std::env::var("AIRLOCK_BENCH_LOOPS").ok();
    let loops: Vec<(&str, u32, &str)> = [
        ("open", n, file.as_str()),
        ("connect", n / 20, port.as_str()),
        ("exec", n / 500, ""),
    ]
    .into_iter()
    .filter(|(kind, _, _)| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|k| k == *kind))
    })
    .collect();
    let rounds: usize = std::env::var("AIRLOCK_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    let repeats: usize = std::env::var("AIRLOCK_BENCH_REPEATS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(REPEATS);

    // ns[round][loop][config]: config 0 = off/out, 1 = off/in, 2 = on/out, 3 = on/in.
    let mut ns = vec![vec![[0u128; 4]; loops.len()]; rounds];
    let hub = Hub::start("300s");
    let spec = AgentSpec {
        hub_url: &hub.url,
        cgroup: &cgroup.path,
        watch: vec![PathBuf::from("/usr/bin/scp")],
        ttl: "120s",
        policy: None,
    };
    for (round, slot) in ns.iter_mut().enumerate() {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for agent_on in order {
            let agent = agent_on.then(|| Agent::start(&spec));
            // Let the daemon finish starting (the /proc walk, the hub stream) so its own
            // start-up work is not billed to the loops; the same pause with the agent off,
            // so both see an equally idle machine.
            std::thread::sleep(std::time::Duration::from_secs(5));
            for (i, (kind, n, arg)) in loops.iter().enumerate() {
                let base = if agent_on { 2 } else { 0 };
                let best = |cg: Option<&Path>| {
                    (0..repeats)
                        .map(|_| run(cg, kind, *n, arg))
                        .min()
                        .unwrap_or(u128::MAX)
                };
                slot[i][base] = best(None);
                slot[i][base + 1] = best(Some(&cgroup.path));
            }
            drop(agent);
        }
        // Per round as it goes, so a run cut short still leaves its numbers.
        let line: Vec<String> = loops
            .iter()
            .zip(slot.iter())
            .map(|((kind, _, _), c)| {
                format!(
                    "{kind} out {:.3} in {:.3}",
                    c[2] as f64 / c[0] as f64,
                    c[3] as f64 / c[1] as f64
                )
            })
            .collect();
        eprintln!("round {} of {rounds}: {}", round + 1, line.join(", "));
    }
    let kernel = std::env::var("AIRLOCK_VM_KERNEL").unwrap_or_else(|_| "host".into());
    println!(
        "gates bench (kernel {kernel}, {rounds} on/off rounds, best of {repeats} runs each; ratio = median of the rounds [min-max])"
    );
    println!(
        "{:<8} {:>7} {:>11} {:>11} {:>22} {:>22}",
        "loop", "iters", "off ns/op", "on-in ns/op", "out of scope on/off", "in scope on/off"
    );
    for (i, (kind, n, _)) in loops.iter().enumerate() {
        let per = |v: u128| v as f64 / f64::from(*n);
        let ratios = |on: usize, off: usize| {
            let mut r: Vec<f64> = ns
                .iter()
                .map(|round| round[i][on] as f64 / round[i][off] as f64)
                .collect();
            let (lo, hi) = (
                r.iter().copied().fold(f64::MAX, f64::min),
                r.iter().copied().fold(f64::MIN, f64::max),
            );
            format!("{:.3} [{lo:.3}-{hi:.3}]", median(&mut r))
        };
        let mut off: Vec<f64> = ns.iter().map(|r| per(r[i][0])).collect();
        let mut on_in: Vec<f64> = ns.iter().map(|r| per(r[i][3])).collect();
        println!(
            "{:<8} {:>7} {:>11.0} {:>11.0} {:>22} {:>22}",
            kind,
            n,
            median(&mut off),
            median(&mut on_in),
            ratios(2, 0),
            ratios(3, 1),
        );
    }
}
