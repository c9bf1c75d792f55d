//! `cargo xtask bench gates` runs this inside the test VM: open/close, connect and exec
//! loops, timed with the agent off and on, for a process out of scope and for a process in
//! scope doing non-sensitive work (an ordinary file, a loopback connect, an unwatched
//! binary). Prints the ratios agent-on / agent-off. Not a test: nothing is asserted.
//!
//! Rounds alternate between the configurations and the minimum of each is kept, which is
//! the usual way to take scheduler and TCG noise out of a loop benchmark.

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

const ROUNDS: usize = 5;

fn probe() -> PathBuf {
    std::env::current_exe()
        .expect("exe")
        .with_file_name("gate_probe")
}

fn run(cgroup: Option<&Path>, kind: &str, n: u32, arg: &str) -> u128 {
    let n = n.to_string();
    let mut cmd = Command::new(probe());
    cmd.args(["loop", kind, &n, arg]);
    let out = match cgroup {
        Some(cg) => process::spawn_in(cg, &mut cmd)
            .wait_with_output()
            .expect("wait"),
        None => cmd.output().expect("run"),
    };
    assert!(
        out.status.success(),
        "{kind} loop failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("nanoseconds")
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ordinary.txt");
    std::fs::write(&file, "x").expect("write");
    let file = file.display().to_string();
    let cgroup = TestCgroup::new("bench");
    let loops: [(&str, u32, &str); 3] = [
        ("open", n, &file),
        ("connect", n / 10, &port),
        ("exec", n / 200, ""),
    ];

    // best[loop][config]: config 0 = off/out, 1 = off/in, 2 = on/out, 3 = on/in.
    let mut best = [[u128::MAX; 4]; 3];
    let hub = Hub::start("300s");
    let spec = AgentSpec {
        hub_url: &hub.url,
        cgroup: &cgroup.path,
        watch: vec![PathBuf::from("/usr/bin/scp")],
        ttl: "120s",
        policy: None,
    };
    for round in 0..ROUNDS {
        // Alternate which configuration goes first, so drift favours neither.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for agent_on in order {
            let agent = agent_on.then(|| Agent::start(&spec));
            // Let the daemon finish starting (the /proc walk, the first refresh, the hub
            // stream) so its own start-up work is not billed to the loops.
            // The same pause with the agent off, so both see an equally idle machine (a
            // stopped agent's maps and links are freed by kernel work after it exits).
            std::thread::sleep(std::time::Duration::from_secs(5));
            for (i, (kind, n, arg)) in loops.iter().enumerate() {
                let out = run(None, kind, *n, arg);
                let inside = run(Some(&cgroup.path), kind, *n, arg);
                let base = if agent_on { 2 } else { 0 };
                best[i][base] = best[i][base].min(out);
                best[i][base + 1] = best[i][base + 1].min(inside);
            }
            drop(agent);
        }
        eprintln!("round {} of {ROUNDS} done", round + 1);
    }
    let kernel = std::env::var("AIRLOCK_VM_KERNEL").unwrap_or_else(|_| "host".into());
    println!("gates bench (kernel {kernel}, best of {ROUNDS} rounds)");
    println!(
        "{:<10} {:>8} {:>14} {:>14} {:>12} {:>12}",
        "loop", "iters", "off ns/op", "on ns/op(in)", "out ratio", "in ratio"
    );
    for (i, (kind, n, _)) in loops.iter().enumerate() {
        let per = |v: u128| v as f64 / f64::from(*n);
        let b = best[i];
        println!(
            "{:<10} {:>8} {:>14.0} {:>14.0} {:>12.3} {:>12.3}",
            kind,
            n,
            per(b[0]),
            per(b[3]),
            b[2] as f64 / b[0] as f64,
            b[3] as f64 / b[1] as f64,
        );
    }
}
