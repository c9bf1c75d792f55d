//! Issue #5 end to end: secrets in a held exec's argv never reach the hub, the approvers,
//! the agent's log or the audit log — only typed placeholders with fingerprints do; the
//! raw context, sealed to the auditors' key, comes back with `airlock reveal`, and the
//! reveal is itself audited.
//!
//! Needs root and BPF LSM: `cargo xtask test` runs these inside QEMU (`--ignored`).

use std::process::{Command, Output};

use airlock_tests::{
    SLOW,
    agent::Agent,
    airlock_bin, airlock_of,
    gates::runtime,
    process::{spawn_held, tool_copy},
};

const PASSWORD: &str = "hunter2Secret";
const DB_URL: &str = "postgres://user:pa55word@db/x";
const DB_PASSWORD: &str = "pa55word";
const AWS_ID: &str = "AKIAZ7QPLM3XK4RT2WNB";
const AWS_SECRET: &str = "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";
const SECRETS: [&str; 4] = [PASSWORD, DB_PASSWORD, AWS_ID, AWS_SECRET];

fn reveal(agent: &Agent, id: &str, key: &std::path::Path) -> Output {
    Command::new(airlock_bin())
        .args([
            "reveal",
            id,
            "--reason",
            "masking e2e",
            "--as",
            "auditor-ann",
            "--auditor-key",
        ])
        .arg(key)
        .arg("--audit-dir")
        .arg(&agent.audit)
        .output()
        .expect("run airlock reveal")
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} leaks `{secret}`: {text}");
    }
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn secrets_in_argv_are_masked_everywhere_and_revealed_only_to_auditors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = tool_copy(dir.path(), "db-export", "/bin/echo");
    let (cgroup, hub, agent) = airlock_tests::start_watching("masking-e2e", &tool);

    let aws_id = format!("AWS_ACCESS_KEY_ID={AWS_ID}");
    let aws_secret = format!("AWS_SECRET_ACCESS_KEY={AWS_SECRET}");
    let args = [
        "--password",
        PASSWORD,
        DB_URL,
        &aws_id,
        &aws_secret,
        "--bucket",
        "reports-q3",
    ];
    let held = spawn_held(&tool, &args, &cgroup.path);

    // What approvers see on the hub's watch stream.
    let request = runtime().block_on(async {
        hub.approver("alice")
            .await
            .watch_for(SLOW, |r| {
                r.action
                    .as_ref()
                    .is_some_and(|a| a.binary == tool.display().to_string())
            })
            .await
    });
    let action = request.action.clone().expect("action");
    let shown = format!("{request:?}");
    assert_no_secret("the request on the watch stream", &shown);
    assert_eq!(action.argv[0], tool.display().to_string());
    assert_eq!(action.argv[1], "--password");
    assert!(
        action.argv[2].starts_with("[PASSWORD#") && action.argv[2].ends_with(']'),
        "{:?}",
        action.argv
    );
    assert!(
        action.argv[3].starts_with("postgres://user:[PASSWORD#"),
        "{:?}",
        action.argv
    );
    assert!(
        action.argv[5].contains("[AWS_SECRET_KEY#"),
        "{:?}",
        action.argv
    );
    assert_eq!(action.argv[7], "reports-q3", "non-secrets stay readable");
    assert!(
        action.sealed_context.is_empty(),
        "approvers never get the sealed context"
    );
    assert_no_secret(
        "the CLI's view",
        &hub.cli_ok("alice", &["show", &request.id]),
    );

    hub.cli_ok("alice", &["approve", &request.id]);
    let out = held
        .join()
        .expect("thread")
        .expect("approved exec runs")
        .wait_with_output()
        .expect("wait");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(PASSWORD),
        "the tool itself got its real argv"
    );

    // The audit trail: placeholders and the sealed blob, never the secrets.
    agent.wait_record(&request.id, "outcome");
    let records = agent.records_for(&request.id);
    for r in &records {
        assert_no_secret("an audit record", &r.to_string());
    }
    let attempt = records
        .iter()
        .find(|r| r["kind"] == "attempt")
        .expect("attempt");
    let cmd_line = attempt["process"]["cmd_line"].as_str().expect("cmd_line");
    assert!(
        cmd_line.contains(action.argv[2].as_str()),
        "same placeholder in audit and hub: {cmd_line}"
    );
    assert!(cmd_line.contains("[AWS_SECRET_KEY#"), "{cmd_line}");
    let findings = airlock_of(attempt)["masked_context"]["findings"]
        .as_str()
        .expect("findings");
    assert!(findings.contains("argv[2]=[PASSWORD#"), "{findings}");
    assert!(
        airlock_of(attempt)["sealed_context"]
            .as_str()
            .is_some_and(|s| s.len() > 100)
    );
    let raw_files: String = std::fs::read_dir(&agent.audit)
        .expect("audit dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .map(|e| std::fs::read_to_string(e.path()).expect("read"))
        .collect();
    assert_no_secret("the audit files", &raw_files);
    assert_no_secret("the agent's log", &agent.log_text());

    // A wrong auditor key reveals nothing and records nothing.
    let other = dir.path().join("other-auditor.key");
    let keygen = Command::new(airlock_bin())
        .arg("auditor-keygen")
        .arg(&other)
        .output()
        .expect("keygen");
    assert!(keygen.status.success());
    let wrong = reveal(&agent, &request.id, &other);
    assert_eq!(
        wrong.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert_no_secret("a failed reveal", &format!("{wrong:?}"));
    assert!(
        !agent
            .records_for(&request.id)
            .iter()
            .any(|r| r["kind"] == "reveal")
    );

    // The auditor's key: raw context back, and a reveal record in the log (through the
    // running agent, which owns the log).
    let out = reveal(&agent, &request.id, &agent.auditor_key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let raw: serde_json::Value = serde_json::from_slice(&out.stdout).expect("reveal prints JSON");
    assert_eq!(raw["request_id"], request.id.as_str());
    let argv: Vec<&str> = raw["action"]["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(&argv[1..], &args[..]);
    let reveal_record = agent.wait_record(&request.id, "reveal");
    assert_eq!(airlock_of(&reveal_record)["reason"], "masking e2e");
    let by = reveal_record["actor"]["user"]["name"]
        .as_str()
        .expect("revealed_by");
    assert_eq!(by, "auditor-ann (uid 0)");
    assert_no_secret("the reveal record", &reveal_record.to_string());
}
