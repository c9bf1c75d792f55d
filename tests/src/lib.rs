//! Test harness: runs the real `airlock` binary as hub, agent and approver CLI, puts test
//! processes into a scoped cgroup, and watches the hub over gRPC like an approver would.
//!
//! Tests that need BPF LSM are `#[ignore]`d on ordinary hosts; `cargo xtask test` runs them
//! with `--ignored` inside QEMU on Debian's 6.1 and 6.12 kernels (or natively where the host
//! has BPF LSM). Helpers panic with a sentence on failure, as aya's integration tests do.

pub mod agent;
pub mod cgroup;
pub mod gates;
pub mod hub;
pub mod process;
pub mod tools;

use std::{path::PathBuf, time::Duration};

/// The `airlock` binary under test: `$AIRLOCK_BIN`, else the workspace's debug build.
pub fn airlock_bin() -> PathBuf {
    let path = std::env::var_os("AIRLOCK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/airlock")
        });
    assert!(
        path.exists(),
        "{} does not exist: build it with `cargo build -p airlock-agent` (or set AIRLOCK_BIN)",
        path.display()
    );
    path
}

/// A free loopback port (bound and released; the race is acceptable in a test VM).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Polls `probe` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `unmapped.airlock` of an audit record (where airlock's own members live).
pub fn airlock_of(record: &serde_json::Value) -> &serde_json::Value {
    &record["unmapped"]["airlock"]
}

/// Timeouts are generous: under QEMU/TCG everything is ~25x slower than native.
pub const SLOW: Duration = Duration::from_secs(60);

/// A scope cgroup named `name`, a hub and an agent running `policy` (no watch list of its
/// own: the policy decides what the kernel watches).
pub fn start_with_policy(
    name: &str,
    policy: &std::path::Path,
) -> (cgroup::TestCgroup, hub::Hub, agent::Agent) {
    start(name, vec![], "2m", Some(policy))
}

/// A scope cgroup named `name`, a hub and an agent watching `tool` (no policy: it asks).
pub fn start_watching(
    name: &str,
    tool: &std::path::Path,
) -> (cgroup::TestCgroup, hub::Hub, agent::Agent) {
    start(name, vec![tool.to_owned()], "120s", None)
}

fn start(
    name: &str,
    watch: Vec<PathBuf>,
    ttl: &str,
    policy: Option<&std::path::Path>,
) -> (cgroup::TestCgroup, hub::Hub, agent::Agent) {
    let cgroup = cgroup::TestCgroup::new(name);
    let hub = hub::Hub::start("300s");
    let agent = agent::Agent::start(&agent::AgentSpec {
        hub_url: &hub.url,
        cgroup: &cgroup.path,
        watch,
        ttl,
        policy,
    });
    (cgroup, hub, agent)
}
