//! The real `airlock hub serve` binary: kill -9 and restart on SQLite, two replicas on one
//! PostgreSQL.
//!
//! Needs `target/debug/airlock` (`cargo build -p airlock-agent`) or `AIRLOCK_BIN`. Without
//! it the tests skip loudly, and fail under `CI=true`.

#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

mod util;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use airlock_hub::identity::{ClientIdentity, Role};
use airlock_hub::store::{GENESIS, SqliteStore, SqliteSync, Store, verify_chain};
use airlock_proto::v1::agent_service_client::AgentServiceClient;
use airlock_proto::v1::approver_service_client::ApproverServiceClient;
use airlock_proto::v1::{
    DecisionsRequest, GetRequest, RequestState, Requirements, Verdict, WatchRequest, watch_event,
};
use tokio::process::{Child, Command};
use util::{Agent, Approver, decide, next_event, submit, with_requirements, within};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("AIRLOCK_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/airlock"),
        PathBuf::from,
    );
    if path.exists() {
        return Some(path);
    }
    assert!(!ci(), "CI=true but {} is missing", path.display());
    eprintln!(
        "\n*** SKIPPING: {} missing (cargo build -p airlock-agent) ***\n",
        path.display()
    );
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn_hub(bin: &PathBuf, port: u16, store: &str) -> Child {
    let child = Command::new(bin)
        .args([
            "hub",
            "serve",
            "--dev-tokens",
            "--heartbeat",
            "200ms",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--store")
        .arg(store)
        .env("AIRLOCK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("hub on port {port} did not start");
}

async fn channel(port: u16) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn agent(port: u16) -> Agent {
    AgentServiceClient::with_interceptor(
        channel(port).await,
        ClientIdentity::new("agent-1", Role::Agent).unwrap(),
    )
}

async fn approver(port: u16, name: &str) -> Approver {
    ApproverServiceClient::with_interceptor(
        channel(port).await,
        ClientIdentity::new(name, Role::Approver).unwrap(),
    )
}

fn long_ttl(id: &str) -> airlock_proto::v1::SubmitRequest {
    with_requirements(
        submit(id, "mallory"),
        Requirements {
            ttl_seconds: 3600,
            ..Requirements::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_200_pending_loses_nothing() {
    let Some(bin) = binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let store = format!("sqlite:{}", db.display());
    let port = free_port();
    let mut hub = spawn_hub(&bin, port, &store).await;

    let mut a = agent(port).await;
    let ids: Vec<String> = (0..200).map(|i| format!("req-{i:03}")).collect();
    for id in &ids {
        a.submit(long_ttl(id)).await.unwrap();
    }
    // 40 decided and acknowledged before the crash.
    let mut acked: HashMap<String, RequestState> = HashMap::new();
    let mut bob = approver(port, "bob").await;
    for (i, id) in ids.iter().take(40).enumerate() {
        let (verdict, want) = if i % 2 == 0 {
            (Verdict::Allow, RequestState::Approved)
        } else {
            (Verdict::Deny, RequestState::Denied)
        };
        let r = bob
            .decide(decide(id, verdict, "r"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.request.unwrap().state, want as i32);
        acked.insert(id.clone(), want);
    }
    // 60 more in flight while the hub is killed: each either landed or did not.
    let mut inflight = Vec::new();
    for id in ids.iter().skip(40).take(60).cloned() {
        let mut bob = bob.clone();
        inflight.push(tokio::spawn(async move {
            let ok = bob.decide(decide(&id, Verdict::Allow, "")).await.is_ok();
            (id, ok)
        }));
    }
    tokio::time::sleep(Duration::from_millis(15)).await;
    hub.start_kill().unwrap(); // SIGKILL
    hub.wait().await.unwrap();
    for task in inflight {
        let (id, ok) = task.await.unwrap();
        if ok {
            acked.insert(id, RequestState::Approved);
        }
    }

    let mut hub = spawn_hub(&bin, port, &store).await;
    let mut a = agent(port).await;
    // The agent reconnects its stream and gets every decision it missed.
    let mut stream = a
        .decisions(DecisionsRequest {
            awaiting: ids.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut replayed = HashMap::new();
    let mut bob = approver(port, "bob").await;
    let mut pending = 0;
    for id in &ids {
        let r = bob
            .get(GetRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner()
            .request
            .unwrap();
        match acked.get(id) {
            Some(want) => assert_eq!(r.state, *want as i32, "{id} lost its decision"),
            None => {
                assert!(
                    r.state == RequestState::Pending as i32
                        || r.state == RequestState::Approved as i32,
                    "{id}: pending, or approved by a decide whose reply was lost"
                );
            }
        }
        if r.state == RequestState::Pending as i32 {
            pending += 1;
        }
    }
    let finals = ids.len() - pending;
    for _ in 0..finals {
        let e = within(5, &mut stream).await;
        replayed.insert(e.id.clone(), e.state);
    }
    assert_eq!(replayed.len(), finals);
    assert!(
        pending >= 100,
        "at least the 100 never-decided ones are pending"
    );
    // The survivors can still be decided.
    let last = ids.last().unwrap();
    let r = bob
        .decide(decide(last, Verdict::Allow, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.request.unwrap().state, RequestState::Approved as i32);
    hub.start_kill().unwrap();
    hub.wait().await.unwrap();

    // The audit chain in the file is intact and covers every change.
    let store = SqliteStore::open(&db, SqliteSync::Full).unwrap();
    let audit = store.audit_since(0, 10_000).await.unwrap();
    assert_eq!(verify_chain(GENESIS, &audit), Ok(()));
    assert_eq!(audit.len() as u64, store.revision().await.unwrap());
    drop(store);

    // `airlock hub audit` agrees, and notices an edited entry.
    let audit_cmd = |json: bool| {
        let mut c = std::process::Command::new(&bin);
        c.args(["hub", "audit", "--store"])
            .arg(format!("sqlite:{}", db.display()));
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let out = audit_cmd(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        audit.len()
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 7", [])
        .unwrap();
    drop(conn);
    let out = audit_cmd(false);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit entry 7 was altered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_postgres() {
    let Some(bin) = binary() else { return };
    let Some(url) = util::pg::database().await else {
        return;
    };
    let (pa, pb) = (free_port(), free_port());
    let _a = spawn_hub(&bin, pa, &url).await;
    let _b = spawn_hub(&bin, pb, &url).await;

    // The agent streams from B; a watcher sits on B; the approver decides on A.
    let mut agent_b = agent(pb).await;
    let mut decisions = agent_b
        .decisions(DecisionsRequest { awaiting: vec![] })
        .await
        .unwrap()
        .into_inner();
    let mut watcher = approver(pb, "watcher").await;
    let mut watch = watcher
        .watch(WatchRequest { since_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        next_event(&mut watch).await,
        watch_event::Event::Snapshot(_)
    ));

    let agent_a = agent(pa).await;
    let mut revisions = Vec::new();
    for i in 0..6 {
        let mut client = if i % 2 == 0 {
            agent_a.clone()
        } else {
            agent_b.clone()
        };
        let r = client.submit(long_ttl(&format!("rep-{i}"))).await.unwrap();
        revisions.push(r.into_inner().request.unwrap().revision);
    }
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    // Submitting the same id on the other replica is idempotent.
    let again = agent_b
        .submit(long_ttl("rep-0"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.request.unwrap().revision, revisions[0]);

    let mut seen = Vec::new();
    while seen.len() < 6 {
        if let watch_event::Event::Changed(r) = next_event(&mut watch).await {
            seen.push(r.revision);
        }
    }
    assert_eq!(
        seen, revisions,
        "B's watcher sees A's and B's changes in order"
    );

    let mut bob_a = approver(pa, "bob").await;
    bob_a
        .decide(decide("rep-3", Verdict::Allow, ""))
        .await
        .unwrap();
    let event = within(5, &mut decisions).await;
    assert_eq!(
        (event.id.as_str(), event.state),
        ("rep-3", RequestState::Approved as i32),
        "decided on A, streamed from B"
    );
    let watch_event::Event::Changed(changed) = next_event(&mut watch).await else {
        panic!("expected a change")
    };
    assert_eq!(changed.id, "rep-3");
    drop(agent_a);
}
