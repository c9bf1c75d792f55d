//! The policy decides held actions in the real agent: allow and deny without bothering a
//! human, ask with the rule's requirements; reloads switch policies with no action lost or
//! judged by a mix of versions. Kernel tier (root + BPF LSM; `cargo xtask test`).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use airlock_tests::{
    SLOW,
    agent::Agent,
    airlock_of,
    process::{tool_copy, try_spawn_in},
};

const HEADER: &str = "version = 1\n[defaults]\nexec = \"allow\"\nconnect = \"allow\"\nsend = \"allow\"\nopen = \"allow\"\n[defaults.ask]\napprovers = [\"oncall\"]\nttl = \"2m\"\n[groups.oncall]\n";

fn rule(id: &str, binary: &Path, extra: &str, outcome: &str) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\non = [\"exec\"]\nbinary = [\"{}\"]\n{extra}outcome = \"{outcome}\"\n",
        binary.display()
    )
}

fn hash_of(text: &str) -> String {
    airlock_policy::Policy::from_str("p.toml", text)
        .expect("valid policy")
        .hash()
        .to_owned()
}

/// Runs `tool args` inside `cgroup` and returns whether the exec was allowed.
fn exec_allowed(cgroup: &Path, tool: &Path, args: &[&str]) -> bool {
    match try_spawn_in(cgroup, Command::new(tool).args(args)) {
        Ok(child) => child
            .wait_with_output()
            .map(|o| o.status.success())
            .unwrap_or(false),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => false,
        Err(e) => panic!("exec of {} failed unexpectedly: {e}", tool.display()),
    }
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn rules_allow_deny_and_ask_without_and_with_a_human() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exporter = tool_copy(dir.path(), "exporter", "/bin/echo");
    let dumper = tool_copy(dir.path(), "dumper", "/bin/echo");
    let policy = dir.path().join("policy.toml");
    let text = format!(
        "{HEADER}{}{}{}",
        rule(
            "dry-runs-are-fine",
            &exporter,
            "argv = [{ glob = \"--dry-run\" }]\n",
            "allow"
        ),
        rule(
            "exports-ask",
            &exporter,
            "reason = \"exports leave the host\"\n",
            "ask"
        ),
        rule(
            "no-dumps",
            &dumper,
            "reason = \"dumps are never allowed\"\n",
            "deny"
        ),
    );
    std::fs::write(&policy, &text).expect("policy");
    let (cgroup, hub, agent) = airlock_tests::start_with_policy("policy-rules", &policy);

    assert!(
        exec_allowed(&cgroup.path, &exporter, &["--dry-run"]),
        "allowed by rule without asking"
    );
    assert!(
        !exec_allowed(&cgroup.path, &dumper, &["db"]),
        "denied by rule"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let approver = rt.block_on(hub.approver("alice"));
    assert!(
        rt.block_on(approver.list(&[])).is_empty(),
        "neither decision involved the hub"
    );

    // An export without --dry-run asks; the request carries the rule and its reason.
    let spawned = {
        let (cg, tool) = (cgroup.path.clone(), exporter.clone());
        std::thread::spawn(move || exec_allowed(&cg, &tool, &["s3://x"]))
    };
    let request = rt.block_on(approver.watch_for(SLOW, |r| {
        r.action
            .as_ref()
            .is_some_and(|a| a.rule_id == "exports-ask")
    }));
    let action = request.action.clone().expect("action");
    assert_eq!(action.rule_reason, "exports leave the host");
    assert_eq!(
        request.requirements.as_ref().map(|r| r.ttl_seconds),
        Some(120)
    );
    // The rule's approver group is enforced by the hub: outsiders cannot approve.
    let outsider = hub.cli("mallory", &["approve", &request.id]);
    assert_eq!(outsider.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&outsider.stderr).contains("approver groups"));
    hub.cli_ok("alice", &["--groups", "oncall", "approve", &request.id]);
    assert!(spawned.join().expect("thread"), "approved export runs");

    let records = agent.audit_records();
    let by_rule = |rule: &str| {
        records
            .iter()
            .filter(|r| r["kind"] == "decision" && airlock_of(r)["policy"]["rule"] == rule)
            .count()
    };
    assert_eq!(by_rule("dry-runs-are-fine"), 1);
    assert_eq!(by_rule("no-dumps"), 1);
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn reloads_under_load_lose_and_misjudge_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = tool_copy(dir.path(), "flaky-tool", "/bin/true");
    let policy = dir.path().join("policy.toml");
    // Both versions watch the tool (a non-allow rule names it); A lets ordinary runs
    // through by default, B denies them.
    let allow_text = format!(
        "{HEADER}{}",
        rule(
            "only-never",
            &tool,
            "argv = [{ glob = \"--never\" }]\n",
            "deny"
        )
    );
    let deny_text = format!("{HEADER}{}", rule("deny-all-runs", &tool, "", "deny"));
    let broken_text = format!(
        "{HEADER}[[rule]]\nid = \"broken\"\non = [\"connect\"]\ncidr = [\"10.0.0.0/33\"]\noutcome = \"deny\"\n"
    );
    let verdict_of: HashMap<String, bool> =
        HashMap::from([(hash_of(&allow_text), true), (hash_of(&deny_text), false)]);
    std::fs::write(&policy, &allow_text).expect("policy");
    let (cgroup, _hub, agent) = airlock_tests::start_with_policy("policy-reload", &policy);

    let stop = Arc::new(AtomicBool::new(false));
    let runner = {
        let (stop, cg, tool) = (stop.clone(), cgroup.path.clone(), tool.clone());
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                outcomes.push(exec_allowed(&cg, &tool, &[]));
            }
            outcomes
        })
    };
    let reloads = 100;
    let (mut broken_writes, mut valid_writes) = (0, 0);
    for i in 0..reloads {
        // Each write must reach its own outcome before the next one: the agent coalesces
        // SIGHUPs and always loads the file as it is now, so a version written and replaced
        // before a reload ran would never be judged.
        let before = agent.audit_records().len();
        match i % 3 {
            1 => {
                // A broken version unique to this write, so its rejection is recognisable.
                let bad_cidr = format!("10.{}.0.0/33", i);
                write_atomically(&policy, &broken_text.replace("10.0.0.0/33", &bad_cidr));
                agent.hangup();
                broken_writes += 1;
                wait_reload(&agent, i, before, |r| {
                    airlock_of(r)["ok"] == false
                        && airlock_of(r)["error"]
                            .as_str()
                            .is_some_and(|e| e.contains(&bad_cidr))
                });
            }
            n => {
                let text = if n == 0 { &deny_text } else { &allow_text };
                let version = hash_of(text);
                write_atomically(&policy, text);
                agent.hangup();
                valid_writes += 1;
                wait_reload(&agent, i, before, |r| {
                    airlock_of(r)["ok"] == true
                        && airlock_of(r)["policy_version"] == version.as_str()
                });
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let outcomes = runner.join().expect("runner");
    // Let the last decisions reach the audit log.
    std::thread::sleep(Duration::from_secs(2));

    let records = agent.audit_records();
    let decisions: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["kind"] == "decision").collect();
    assert_eq!(
        decisions.len(),
        outcomes.len(),
        "every exec judged exactly once ({} execs)",
        outcomes.len()
    );
    for (outcome, record) in outcomes.iter().zip(&decisions) {
        let fields = airlock_of(record);
        let hash = fields["policy"]["version"]
            .as_str()
            .expect("decision names its policy version");
        let expected = verdict_of
            .get(hash)
            .copied()
            .unwrap_or_else(|| panic!("judged by an unknown policy {hash}"));
        assert_eq!(
            *outcome, expected,
            "exec outcome differs from the policy that judged it: {record}"
        );
        assert_eq!(fields["verdict"] == "allowed", expected, "{record}");
    }
    let reloads_with = |ok: bool| {
        records
            .iter()
            .filter(|r| r["kind"] == "policy_reload" && airlock_of(r)["ok"] == ok)
            .count()
    };
    let (rejected, accepted) = (reloads_with(false), reloads_with(true));
    assert!(
        rejected >= broken_writes,
        "every broken policy rejected and audited ({rejected} of {broken_writes})"
    );
    assert!(
        accepted >= valid_writes,
        "every valid policy switched to ({accepted} of {valid_writes})"
    );
    let bad_line = format!("policy.toml:{}:", HEADER.lines().count() + 4);
    let located = records.iter().any(|r| {
        r["kind"] == "policy_reload"
            && airlock_of(r)["error"]
                .as_str()
                .is_some_and(|e| e.contains(&bad_line))
    });
    assert!(located, "rejections carry file:line:column ({bad_line})");
    assert!(
        outcomes.len() >= 20,
        "the load loop ran ({} execs)",
        outcomes.len()
    );
    assert!(
        outcomes.iter().any(|o| *o) && outcomes.iter().any(|o| !*o),
        "both policies judged some execs"
    );
}

/// Waits until a policy_reload record after the first `before` records satisfies `want`.
fn wait_reload(agent: &Agent, i: usize, before: usize, want: impl Fn(&serde_json::Value) -> bool) {
    let deadline = std::time::Instant::now() + SLOW;
    loop {
        let records = agent.audit_records();
        if records
            .iter()
            .skip(before)
            .any(|r| r["kind"] == "policy_reload" && want(r))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reload {i} was never recorded; agent log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_atomically(path: &PathBuf, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Attempt records so far: every action the kernel sends to user space writes one, even
/// when the policy then allows it.
fn attempts(agent: &Agent) -> usize {
    agent
        .audit_records()
        .iter()
        .filter(|r| r["kind"] == "attempt")
        .count()
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn reloads_rewrite_the_kernel_allow_list_and_credential_files_live() {
    use airlock_tests::gates::{
        ALLOWED_V4, EchoServer, HELD_V4, add_test_addresses, assert_eperm, finish, runtime, stdout,
    };
    let probe = Path::new(env!("CARGO_BIN_EXE_gate_probe"));
    add_test_addresses();
    let server = EchoServer::start();
    let port = server.port.to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let (key_a, key_b) = (dir.path().join("a.key"), dir.path().join("b.key"));
    std::fs::write(&key_a, "secret a\n").expect("write");
    std::fs::write(&key_b, "secret b\n").expect("write");
    let (key_a, key_b) = (key_a.display().to_string(), key_b.display().to_string());
    let version = |lan: &str, key: &str| {
        format!(
            "{}[[rule]]\nid = \"lan\"\non = [\"connect\", \"send\"]\ncidr = [\"{lan}\"]\noutcome = \"allow\"\n\
             [[rule]]\nid = \"key\"\non = [\"open\"]\npath = [\"{key}\"]\noutcome = \"ask\"\n",
            HEADER.replace(
                "connect = \"allow\"\nsend = \"allow\"",
                "connect = \"ask\"\nsend = \"ask\""
            )
        )
    };
    let first = version("192.0.2.0/24", &key_a);
    let second = version("198.51.100.0/24", &key_b);
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, &first).expect("policy");
    let (cgroup, hub, agent) = airlock_tests::start_with_policy("policy-kernel-sets", &policy);
    let rt = runtime();
    let approver = rt.block_on(hub.approver("alice"));
    let run = |args: &[&str]| {
        airlock_tests::process::spawn_in(&cgroup.path, Command::new(probe).args(args))
    };
    // Runs `args`, expects one request of the probe's pid, answers it and returns the output.
    let asked = |args: &[&str], approve: bool| {
        let child = run(args);
        let pid = child.id();
        let request = rt.block_on(approver.watch_for(SLOW, |r| {
            r.action
                .as_ref()
                .is_some_and(|a| a.actor.as_ref().is_some_and(|p| p.pid == pid))
        }));
        hub.decide("alice", "oncall", &request.id, approve);
        finish(child)
    };
    // Runs `args` and expects the kernel to pass it without telling user space.
    let passed_in_kernel = |args: &[&str]| {
        let before = attempts(&agent);
        let out = finish(run(args));
        assert!(out.status.success(), "{args:?}: {out:?}");
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(attempts(&agent), before, "{args:?} left the kernel");
        out
    };

    // First policy: the 192.0.2.0/24 LAN passes in the kernel, a.key asks, b.key is not watched.
    let out = passed_in_kernel(&["connect", HELD_V4, &port]);
    assert_eq!(stdout(&out), "connected\npong ping\n");
    assert_eq!(stdout(&passed_in_kernel(&["cat", &key_b])), "secret b\n");
    assert_eq!(stdout(&asked(&["cat", &key_a], true)), "secret a\n");
    let out = asked(&["connect", ALLOWED_V4, &port], false);
    assert_eperm(&out);

    // Second policy, switched live: the LAN moved, and b.key asks instead of a.key.
    let before = agent.audit_records().len();
    write_atomically(&policy, &second);
    let version_two = hash_of(&second);
    wait_reload(&agent, 0, before, |r| {
        airlock_of(r)["ok"] == true && airlock_of(r)["policy_version"] == version_two.as_str()
    });
    let out = passed_in_kernel(&["connect", ALLOWED_V4, &port]);
    assert_eq!(stdout(&out), "connected\npong ping\n");
    assert_eq!(stdout(&passed_in_kernel(&["cat", &key_a])), "secret a\n");
    let accepted = server.accepted();
    let out = asked(&["connect", HELD_V4, &port], false);
    assert_eperm(&out);
    assert_eq!(
        server.accepted(),
        accepted,
        "the denied connect never reached the server"
    );
    let out = asked(&["cat", &key_b], false);
    assert_eperm(&out);
    assert!(!stdout(&out).contains("secret"));

    // A reload that changes nothing in the kernel sets but is broken keeps them as they are.
    let before = agent.audit_records().len();
    write_atomically(
        &policy,
        &second.replace("198.51.100.0/24", "198.51.100.0/33"),
    );
    wait_reload(&agent, 1, before, |r| airlock_of(r)["ok"] == false);
    passed_in_kernel(&["connect", ALLOWED_V4, &port]);
    let records = agent.audit_records();
    let rules: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "decision")
        .filter_map(|r| airlock_of(r)["policy"]["rule"].as_str())
        .collect();
    assert_eq!(rules, ["key", "default", "default", "key"], "{rules:?}");
}
