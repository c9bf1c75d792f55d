//! The agent refuses to start on bad input with one clear sentence, exit code 2, and
//! nothing left attached.

use std::{os::unix::process::CommandExt, process::Command};

use airlock_tests::{
    agent::{Agent, AgentSpec},
    airlock_bin,
    cgroup::TestCgroup,
};

/// Runs `airlock run -c CONFIG` and returns (exit code, stderr).
fn run_agent(config_text: &str, as_uid: Option<u32>) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, config_text).expect("write");
    let mut cmd = Command::new(airlock_bin());
    cmd.args(["run", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1");
    if let Some(uid) = as_uid {
        cmd.uid(uid).gid(uid);
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
    }
    let out = cmd.output().expect("run agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_sentence(code: i32, stderr: &str, expected: &str) {
    assert_eq!(code, 2, "exit code for `{expected}`; stderr: {stderr}");
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(
        lines[0].starts_with("airlock: ") && lines[0].contains(expected),
        "{stderr}"
    );
}

fn valid_config(cgroup: &std::path::Path, watch: &str) -> String {
    Agent::config_text(
        &AgentSpec {
            hub_url: "http://127.0.0.1:9",
            cgroup,
            watch: vec![watch.into()],
            ttl: "5s",
            policy: None,
        },
        std::path::Path::new("/tmp/airlock-bad-input-audit.jsonl"),
    )
}

/// Ids of loaded programs with our names. Programs of an agent an earlier suite stopped can
/// linger for a moment while the kernel frees them, so a refused start is judged by what is
/// new since `before`.
fn our_programs() -> std::collections::BTreeSet<(u32, String)> {
    let ours = [agent_common_names::EXEC_CHECK, agent_common_names::FORK];
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| {
            let name = p.name_as_str()?.to_owned();
            ours.contains(&name.as_str()).then(|| (p.id(), name))
        })
        .collect()
}

/// No airlock gate may stay attached after a refused start: no program by our names was
/// loaded since `before`.
fn assert_nothing_attached(before: &std::collections::BTreeSet<(u32, String)>) {
    let new: Vec<_> = our_programs().difference(before).cloned().collect();
    assert!(
        new.is_empty(),
        "programs still loaded after a refused start: {new:?}"
    );
}

/// Program names as the kernel reports them (truncated to 15 bytes).
mod agent_common_names {
    pub const EXEC_CHECK: &str = "exec_check";
    pub const FORK: &str = "scope_fork";
}

#[test]
fn missing_config_file() {
    let out = Command::new(airlock_bin())
        .args(["run", "--config", "/nonexistent/agent.toml"])
        .output()
        .expect("run");
    assert_one_sentence(
        out.status.code().unwrap_or(-1),
        &String::from_utf8_lossy(&out.stderr),
        "cannot read config file /nonexistent/agent.toml",
    );
}

#[test]
fn invalid_config_file() {
    let (code, stderr) = run_agent("[agent]\nid = \"x\"\nbogus = 1\n", None);
    assert_one_sentence(code, &stderr, "invalid config file");
    let (code, stderr) = run_agent("not toml at all [", None);
    assert_one_sentence(code, &stderr, "invalid config file");
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn unknown_binary_path() {
    let before = our_programs();
    let cgroup = TestCgroup::new("bad-binary");
    let (code, stderr) = run_agent(
        &valid_config(&cgroup.path, "/nonexistent/bin/exporter"),
        None,
    );
    assert_one_sentence(
        code,
        &stderr,
        "watched binary /nonexistent/bin/exporter does not exist",
    );
    let (code, stderr) = run_agent(&valid_config(&cgroup.path, "no-such-export-tool"), None);
    assert_one_sentence(
        code,
        &stderr,
        "watched binary `no-such-export-tool` was not found",
    );
    assert_nothing_attached(&before);
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn unknown_scope_cgroup() {
    let (code, stderr) = run_agent(
        &valid_config(
            std::path::Path::new("/sys/fs/cgroup/no-such-unit.slice"),
            "/bin/echo",
        ),
        None,
    );
    assert_one_sentence(
        code,
        &stderr,
        "scope cgroup /sys/fs/cgroup/no-such-unit.slice does not exist",
    );
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn non_root_start() {
    let cgroup = TestCgroup::new("non-root");
    let (code, stderr) = run_agent(&valid_config(&cgroup.path, "/bin/echo"), Some(65534));
    assert_one_sentence(code, &stderr, "airlock must run as root");
}

/// Runs on a kernel whose `lsm=` lacks `bpf` (`cargo xtask test` boots one for it).
#[test]
#[ignore = "needs a kernel without BPF LSM: run with `cargo xtask test`"]
fn kernel_without_bpf_lsm() {
    let lsms = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    assert!(
        !lsms.split(',').any(|l| l == "bpf"),
        "this test needs a kernel without BPF LSM, got {lsms}"
    );
    let cgroup = TestCgroup::new("no-lsm");
    let (code, stderr) = run_agent(&valid_config(&cgroup.path, "/bin/echo"), None);
    assert_one_sentence(code, &stderr, "this kernel does not run the BPF LSM");
}
