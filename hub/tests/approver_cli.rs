//! The approver CLI's `run` against an in-process hub, with `--json` output parsed back.

#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

mod util;

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_hub::approver::output::{RequestOut, WatchLine};
use airlock_hub::approver::{
    ApproverArgs, ApproverCommand, ApproverError, StateFilter, run_with_output,
};
use util::{TestHub, submit};

fn args(hub: &TestHub, principal: &str) -> ApproverArgs {
    ApproverArgs {
        hub: hub.url(),
        principal: Some(principal.to_owned()),
        groups: Vec::new(),
        json: true,
        ca: None,
        cert: None,
        key: None,
    }
}

async fn run_json(args: ApproverArgs, cmd: ApproverCommand) -> (ExitCode, Vec<RequestOut>) {
    let mut out = Vec::new();
    let code = run_with_output(args, cmd, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let parsed = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (code, parsed)
}

#[tokio::test]
async fn list_approve_deny_with_json() {
    let hub = TestHub::start().await;
    let mut agent = hub.agent("agent-1").await;
    agent.submit(submit("aaaa-1111", "alice")).await.unwrap();
    agent.submit(submit("bbbb-2222", "alice")).await.unwrap();

    let list = || ApproverCommand::List {
        state: StateFilter::Pending,
        limit: 100,
        by: Default::default(),
    };
    let (code, listed) = run_json(args(&hub, "bob"), list()).await;
    assert_eq!(code, ExitCode::SUCCESS);
    let mut ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["aaaa-1111", "bbbb-2222"]);
    assert!(listed.iter().all(|r| r.state == "pending"));
    let action = listed[0].action.as_ref().unwrap();
    assert_eq!(action.class, "exec");
    assert_eq!(action.actor.as_ref().unwrap().argv[1], "s3");

    // Approve by unique prefix, time-boxed.
    let (code, approved) = run_json(
        args(&hub, "bob"),
        ApproverCommand::Approve {
            id: "aaaa".to_owned(),
            reason: Some("quarterly report".to_owned()),
            duration: Some(Duration::from_secs(3600)),
        },
    )
    .await;
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0].id, "aaaa-1111");
    assert_eq!(approved[0].state, "approved");
    let decision = approved[0].decision.as_ref().unwrap();
    assert_eq!(decision.grant.as_deref(), Some("duration"));
    assert_eq!(decision.approvers, ["bob"]);

    let (code, denied) = run_json(
        args(&hub, "carol"),
        ApproverCommand::Deny {
            id: "bbbb-2222".to_owned(),
            reason: "not approved for export".to_owned(),
        },
    )
    .await;
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(denied[0].state, "denied");
    assert_eq!(denied[0].decision.as_ref().unwrap().verdict, "deny");

    // Nothing pending any more; `--state all` shows both.
    let (_, pending) = run_json(args(&hub, "bob"), list()).await;
    assert!(pending.is_empty());
    let (_, all) = run_json(
        args(&hub, "bob"),
        ApproverCommand::List {
            state: StateFilter::All,
            limit: 100,
            by: Default::default(),
        },
    )
    .await;
    assert_eq!(all.len(), 2);

    // Negative results exit 1 and print nothing on stdout.
    for (who, id) in [("bob", "bbbb-2222"), ("bob", "zzzz-9999")] {
        let (code, out) = run_json(
            args(&hub, who),
            ApproverCommand::Approve {
                id: id.to_owned(),
                reason: None,
                duration: None,
            },
        )
        .await;
        assert_eq!(code, ExitCode::from(1), "{id}");
        assert!(out.is_empty());
    }
    hub.stop().await;
}

#[tokio::test]
async fn self_approval_via_cli_is_an_error() {
    let hub = TestHub::start().await;
    hub.agent("agent-1")
        .await
        .submit(submit("aaaa-1111", "alice"))
        .await
        .unwrap();
    let err = run_with_output(
        args(&hub, "Alice"),
        ApproverCommand::Approve {
            id: "aaaa-1111".to_owned(),
            reason: None,
            duration: None,
        },
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            ApproverError::Refused {
                code: tonic::Code::PermissionDenied,
                ..
            }
        ),
        "{err}"
    );
    hub.stop().await;
}

/// A writer the test can read while `watch` is still writing.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// Waits (up to 5 s) until at least `n` lines were written.
    async fn wait_lines(&self, n: usize) {
        for _ in 0..100 {
            if self.text().lines().count() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} lines after 5 s: {:?}", self.text());
    }
}

#[tokio::test]
async fn watch_prints_snapshot_and_changes_as_json_lines() {
    let hub = TestHub::start().await;
    let mut agent = hub.agent("agent-1").await;
    agent.submit(submit("aaaa-1111", "alice")).await.unwrap();
    let watch_args = args(&hub, "bob");
    let buf = SharedBuf::default();
    let mut writer = buf.clone();
    let watcher = tokio::spawn(async move {
        run_with_output(watch_args, ApproverCommand::Watch, &mut writer)
            .await
            .unwrap()
    });
    buf.wait_lines(1).await;
    agent.submit(submit("bbbb-2222", "alice")).await.unwrap();
    buf.wait_lines(2).await;
    hub.stop().await;

    let code = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        code,
        ExitCode::SUCCESS,
        "the stream ended cleanly with the hub"
    );
    let text = buf.text();
    let lines: Vec<WatchLine> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l.event.as_str(), l.request.id.as_str()))
        .collect();
    assert_eq!(seen, [("pending", "aaaa-1111"), ("changed", "bbbb-2222")]);
}

#[tokio::test]
async fn unreachable_hub_is_one_clear_sentence() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let err = run_with_output(
        ApproverArgs {
            hub: url.clone(),
            principal: Some("bob".to_owned()),
            groups: Vec::new(),
            json: false,
            ca: None,
            cert: None,
            key: None,
        },
        ApproverCommand::Watch,
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot reach the hub at {url}: ")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
}

#[tokio::test]
async fn human_output_escapes_control_characters() {
    let hub = TestHub::start().await;
    let mut req = submit("aaaa-1111", "alice");
    if let Some(actor) = req.action.as_mut().and_then(|a| a.actor.as_mut()) {
        actor.argv.push("\u{1b}]0;pwned\u{7}".to_owned());
    }
    hub.agent("agent-1").await.submit(req).await.unwrap();
    let mut out = Vec::new();
    let mut a = args(&hub, "bob");
    a.json = false;
    let code = run_with_output(
        a,
        ApproverCommand::List {
            state: StateFilter::Pending,
            limit: 10,
            by: Default::default(),
        },
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("aaaa-111"), "{text}");
    assert!(text.contains("/usr/bin/aws s3 cp reports.csv"), "{text}");
    assert!(!text.contains('\u{1b}'), "raw escape leaked: {text:?}");
    assert!(text.contains("\\u{1b}]0;pwned"), "{text}");
    hub.stop().await;
}
