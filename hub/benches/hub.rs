//! Submit+decide throughput and watch fan-out latency, over real gRPC on loopback.
//!
//! `cargo bench -p airlock-hub --bench hub` prints, for SQLite (sync full and normal) and
//! memory: decisions/s with 10,000 requests pending, and the latency from sending a Decide
//! to each of 50 watchers receiving the change (p50/p99/max).

#![allow(clippy::unwrap_used, reason = "benchmark panics on failure")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_hub::identity::{ClientIdentity, Role};
use airlock_hub::store::{MemoryStore, SqliteStore, SqliteSync, Store};
use airlock_hub::{HubConfig, IdentityMode};
use airlock_proto::v1::agent_service_client::AgentServiceClient;
use airlock_proto::v1::approver_service_client::ApproverServiceClient;
use airlock_proto::v1::{
    ActionClass, ActionContext, DecideRequest, GrantScope, Process, Requirements, SubmitRequest,
    Verdict, WatchRequest, watch_event,
};
use tokio::sync::{Mutex, oneshot};

const PENDING: usize = 10_000;
const WATCHERS: usize = 50;
const DECISIONS: usize = 4_000;
const CONCURRENCY: usize = 32;
const FANOUT_SAMPLES: usize = 200;

fn submit(id: &str) -> SubmitRequest {
    SubmitRequest {
        id: id.to_owned(),
        host: "bench-host".to_owned(),
        action: Some(ActionContext {
            class: ActionClass::Exec as i32,
            actor: Some(Process {
                pid: 4242,
                uid: 1000,
                user: "mallory".to_owned(),
                binary: "/usr/bin/aws".to_owned(),
                argv: ["aws", "s3", "cp", "reports.csv", "s3://reports-q3/"]
                    .map(str::to_owned)
                    .to_vec(),
                comm: "aws".to_owned(),
            }),
            binary: "/usr/bin/aws".to_owned(),
            rule_id: "exfil-s3".to_owned(),
            action_hash: format!("hash-{id}"),
            ..ActionContext::default()
        }),
        requirements: Some(Requirements {
            ttl_seconds: 3600,
            ..Requirements::default()
        }),
        requester: "mallory".to_owned(),
    }
}

fn decide(id: &str) -> DecideRequest {
    DecideRequest {
        id: id.to_owned(),
        verdict: Verdict::Allow as i32,
        reason: String::new(),
        scope: GrantScope::Once as i32,
        duration_seconds: 0,
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        channel: "bench".to_owned(),
    }
}

async fn channel(port: u16) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run<S: Store>(name: &str, store: S) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = oneshot::channel::<()>();
    let config = HubConfig {
        default_ttl: Duration::from_secs(300),
        heartbeat: Duration::from_secs(5),
    };
    let server = tokio::spawn(airlock_hub::serve_with_listener(
        listener,
        store,
        config,
        IdentityMode::DevHeaders,
        async {
            let _ = stopped.await;
        },
    ));
    let agent_ch = channel(port).await;
    let approver_ch = channel(port).await;
    let agent = AgentServiceClient::with_interceptor(
        agent_ch,
        ClientIdentity::new("agent-1", Role::Agent).unwrap(),
    );
    let approver = ApproverServiceClient::with_interceptor(
        approver_ch,
        ClientIdentity::new("bob", Role::Approver).unwrap(),
    );

    // 10,000 pending requests.
    let started = Instant::now();
    let next = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (mut agent, next) = (agent.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = {
                    let mut n = next.lock().await;
                    *n += 1;
                    *n
                };
                if i > PENDING {
                    return;
                }
                agent.submit(submit(&format!("pending-{i}"))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let submit_rate = PENDING as f64 / started.elapsed().as_secs_f64();

    // Submit+decide pairs with the 10,000 still pending.
    let started = Instant::now();
    let next = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (mut agent, mut approver, next) = (agent.clone(), approver.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = {
                    let mut n = next.lock().await;
                    *n += 1;
                    *n
                };
                if i > DECISIONS {
                    return;
                }
                let id = format!("pair-{i}");
                agent.submit(submit(&id)).await.unwrap();
                approver.decide(decide(&id)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let pair_rate = DECISIONS as f64 / started.elapsed().as_secs_f64();

    // Decide-only throughput on pending requests.
    let started = Instant::now();
    let next = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (mut approver, next) = (approver.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            loop {
                let i = {
                    let mut n = next.lock().await;
                    *n += 1;
                    *n
                };
                if i > DECISIONS {
                    return;
                }
                approver
                    .decide(decide(&format!("pending-{i}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let decide_rate = DECISIONS as f64 / started.elapsed().as_secs_f64();

    // 50 watchers, each with its own connection, over the remaining pending requests.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut watchers = Vec::new();
    let snapshot_started = Instant::now();
    for w in 0..WATCHERS {
        let mut client = ApproverServiceClient::with_interceptor(
            channel(port).await,
            ClientIdentity::new(&format!("watcher-{w}"), Role::Approver).unwrap(),
        );
        let mut stream = client
            .watch(WatchRequest { since_revision: 0 })
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert!(matches!(first.event, Some(watch_event::Event::Snapshot(_))));
        let tx = tx.clone();
        watchers.push(tokio::spawn(async move {
            while let Ok(Some(msg)) = stream.message().await {
                if let Some(watch_event::Event::Changed(r)) = msg.event {
                    let _ = tx.send((r.id, Instant::now()));
                }
            }
        }));
    }
    let snapshot_time = snapshot_started.elapsed();
    let mut latencies = Vec::with_capacity(FANOUT_SAMPLES * WATCHERS);
    let mut approver = approver.clone();
    for i in 0..FANOUT_SAMPLES {
        let id = format!("pending-{}", DECISIONS + 1 + i);
        let sent = Instant::now();
        approver.decide(decide(&id)).await.unwrap();
        let mut got = 0;
        while got < WATCHERS {
            let (seen, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap();
            if seen == id {
                latencies.push(at - sent);
                got += 1;
            }
        }
    }
    latencies.sort();
    println!(
        "{name:<16} submit {submit_rate:>7.0}/s | submit+decide {pair_rate:>7.0} pairs/s | \
         decide {decide_rate:>7.0}/s ({PENDING} pending, {CONCURRENCY} clients)"
    );
    println!(
        "{name:<16} watch fan-out to {WATCHERS} watchers: p50 {:?} p99 {:?} max {:?} \
         ({} samples; {WATCHERS} snapshots of ~{PENDING} requests in {snapshot_time:?})",
        pct(&latencies, 0.5),
        pct(&latencies, 0.99),
        latencies.last().unwrap(),
        latencies.len(),
    );
    for w in watchers {
        w.abort();
    }
    let _ = stop.send(());
    let _ = server.await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (label, sync) in [
            ("sqlite/full", SqliteSync::Full),
            ("sqlite/normal", SqliteSync::Normal),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store = SqliteStore::open(&dir.path().join("bench.db"), sync).unwrap();
            run(label, store).await;
        }
        run("memory", MemoryStore::new()).await;
    });
}
