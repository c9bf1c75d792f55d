//! Measures the hold's latency, end to end through the real hub: from a watched exec to its
//! request being visible on an approver's Watch stream, and from the approval to the exec
//! returning (the process running again). Run by `cargo xtask bench hold` (in QEMU here, so
//! the numbers carry TCG's slowdown; natively on BPF LSM hosts).

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use airlock_proto::v1::watch_event;
use airlock_tests::{
    agent::{Agent, AgentSpec},
    cgroup::TestCgroup,
    hub::Hub,
    process::tool_copy,
};

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = tool_copy(dir.path(), "bench-tool", "/bin/true");
    let cgroup = TestCgroup::new("latency");
    let hub = Hub::start("300s");
    let _agent = Agent::start(&AgentSpec {
        hub_url: &hub.url,
        cgroup: &cgroup.path,
        watch: vec![tool.clone()],
        ttl: "120s",
        policy: None,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let approver = rt.block_on(hub.approver("bench-approver"));
    let mut stream = rt.block_on(approver.watch());
    let tool_name = tool.display().to_string();

    let (mut to_visible, mut to_running) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count {
        let procs = cgroup.path.join("cgroup.procs");
        let mut cmd = Command::new(&tool);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        // SAFETY: open/write/close only.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                std::fs::write(&procs, std::process::id().to_string())
            });
        }
        let started = Instant::now();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let result = cmd.spawn();
            let _ = done_tx.send((Instant::now(), result));
        });
        let id = rt.block_on(async {
            loop {
                let event = tokio::time::timeout(Duration::from_secs(120), stream.message())
                    .await
                    .expect("request visible within 120 s")
                    .expect("watch stream")
                    .expect("stream open");
                let candidates = match event.event {
                    Some(watch_event::Event::Snapshot(s)) => s.requests,
                    Some(watch_event::Event::Changed(r)) => vec![r],
                    _ => continue,
                };
                if let Some(r) = candidates.into_iter().find(|r| {
                    r.state == 1 && r.action.as_ref().is_some_and(|a| a.binary == tool_name)
                }) {
                    return r.id;
                }
            }
        });
        to_visible.push(started.elapsed());
        let approved_at = Instant::now();
        rt.block_on(approver.decide(&id, true));
        let (returned_at, result) = done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("exec returned");
        let mut child = result.expect("approved exec runs");
        to_running.push(returned_at - approved_at);
        child.wait().expect("wait");
        if (i + 1) % 10 == 0 {
            eprintln!("hold-latency: {} / {count}", i + 1);
        }
    }
    report("exec -> request visible on Watch", &mut to_visible);
    report(
        "approve -> exec returned (process running)",
        &mut to_running,
    );
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let pick =
        |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "{what:<44} n={} p50={:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms",
        samples.len(),
        pick(0.50).as_secs_f64() * 1e3,
        pick(0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}
