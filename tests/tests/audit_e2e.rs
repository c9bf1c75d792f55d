//! Issue #7 end to end: held execs leave attempt → decision → outcome records, sharing the
//! request id, in the agent's signed, hash-chained audit log; `airlock audit verify`
//! accepts the log (live and after a clean stop) and names the tamper class of a doctored
//! copy.
//!
//! Needs root and BPF LSM: `cargo xtask test` runs these inside QEMU (`--ignored`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use airlock_proto::v1::ApprovalRequest;
use airlock_tests::{
    SLOW, airlock_bin, airlock_of,
    gates::runtime,
    process::{spawn_held, tool_copy},
};

fn audit(args: &[&str], dir: &Path, key: &Path) -> Output {
    Command::new(airlock_bin())
        .arg("audit")
        .args(args)
        .arg(dir)
        .arg("--key")
        .arg(key)
        .output()
        .expect("run airlock audit")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A copy of the audit log's files, for tampering.
fn copy_log(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".jsonl") {
            std::fs::copy(entry.path(), to.join(name)).expect("copy");
        }
    }
}

fn log_file(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files.pop().expect("a log file")
}

fn is_for<'a>(tool: &'a Path, marker: &'a str) -> impl Fn(&ApprovalRequest) -> bool + 'a {
    move |r| {
        r.action.as_ref().is_some_and(|a| {
            a.binary == tool.display().to_string() && a.argv.iter().any(|x| x == marker)
        })
    }
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn approved_and_denied_execs_are_audited_and_the_chain_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = tool_copy(dir.path(), "export-tool", "/bin/echo");
    let (cgroup, hub, agent) = airlock_tests::start_watching("audit-e2e", &tool);

    let approved = spawn_held(&tool, &["first"], &cgroup.path);
    let denied = spawn_held(&tool, &["second"], &cgroup.path);
    let rt = runtime();
    let (first, second) = rt.block_on(async {
        let approver = hub.approver("alice").await;
        let first = approver.watch_for(SLOW, is_for(&tool, "first")).await;
        let second = approver.watch_for(SLOW, is_for(&tool, "second")).await;
        (first, second)
    });
    hub.cli_ok("alice", &["approve", &first.id]);
    hub.cli_ok(
        "bob",
        &["deny", &second.id, "--reason", "not during the audit"],
    );
    let out = approved
        .join()
        .expect("thread")
        .expect("approved exec runs")
        .wait_with_output()
        .expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "first\n");
    let err = denied
        .join()
        .expect("thread")
        .expect_err("denied exec fails");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));

    // attempt → decision → outcome, correlated by the request id.
    for (request, verdict, who, outcome) in [
        (&first, "allowed", "alice", "completed"),
        (&second, "denied", "bob", "denied"),
    ] {
        agent.wait_record(&request.id, "outcome");
        let records = agent.records_for(&request.id);
        let kinds: Vec<&str> = records
            .iter()
            .map(|r| r["kind"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(kinds, ["attempt", "decision", "outcome"], "{records:#?}");
        let (attempt, decision, result) = (&records[0], &records[1], &records[2]);
        assert!(attempt["seq"].as_u64() < decision["seq"].as_u64());
        assert_eq!(attempt["disposition"], "Delayed");
        assert_eq!(
            attempt["process"]["file"]["path"],
            tool.display().to_string()
        );
        assert!(
            airlock_of(attempt)["sealed_context"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{attempt}"
        );
        assert_eq!(
            airlock_of(attempt)["policy"]["rule"],
            format!("exec.watch:{}", tool.display())
        );
        assert_eq!(airlock_of(decision)["verdict"], verdict);
        assert_eq!(airlock_of(decision)["decided_by"], serde_json::json!([who]));
        assert_eq!(airlock_of(decision)["quorum"]["met"], 1);
        assert_eq!(airlock_of(result)["outcome"], outcome);
    }
    let bob = &agent.records_for(&second.id)[1];
    assert_eq!(airlock_of(bob)["reason"], "not during the audit");
    assert_eq!(airlock_of(bob)["grant_scope"], "none");

    // The live log verifies (generous checkpoint gap: TCG can stall the heartbeat).
    let live = audit(
        &["verify", "--max-gap-ms", "30000"],
        &agent.audit,
        &agent.audit_pub,
    );
    assert_eq!(live.status.code(), Some(0), "{}", text(&live));

    // After a clean stop the log ends with stop + checkpoint and verifies as closed.
    let mut agent = agent;
    let (audit_dir, audit_pub) = (agent.audit.clone(), agent.audit_pub.clone());
    let status = agent.terminate();
    assert!(
        status.success(),
        "agent exit {status}; log:\n{}",
        agent.log_text()
    );
    let closed = audit(
        &["verify", "--closed", "--max-gap-ms", "30000"],
        &audit_dir,
        &audit_pub,
    );
    assert_eq!(closed.status.code(), Some(0), "{}", text(&closed));
    let all = std::fs::read_to_string(log_file(&audit_dir)).expect("read");
    assert!(
        all.contains("\"phase\":\"start\"") && all.contains("\"phase\":\"stop\""),
        "lifecycle recorded"
    );

    // A doctored copy: the denial's reason rewritten.
    let tampered = dir.path().join("tampered");
    copy_log(&audit_dir, &tampered);
    let file = log_file(&tampered);
    let original = std::fs::read_to_string(&file).expect("read");
    assert!(original.contains("not during the audit"));
    std::fs::write(
        &file,
        original.replace("not during the audit", "approved by the CEO!"),
    )
    .expect("write");
    let out = audit(&["verify", "--max-gap-ms", "30000"], &tampered, &audit_pub);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAILED: Modified"), "{}", text(&out));

    // Another: the approved attempt's record deleted.
    let deleted = dir.path().join("deleted");
    copy_log(&audit_dir, &deleted);
    let file = log_file(&deleted);
    let kept: Vec<&str> = original
        .lines()
        .filter(|l| !(l.contains("\"kind\":\"attempt\"") && l.contains(&first.id)))
        .collect();
    assert_eq!(kept.len() + 1, original.lines().count());
    std::fs::write(&file, format!("{}\n", kept.join("\n"))).expect("write");
    let out = audit(&["verify", "--max-gap-ms", "30000"], &deleted, &audit_pub);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAILED: "), "{}", text(&out));
}
