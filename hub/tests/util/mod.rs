//! Helpers: an in-process hub on 127.0.0.1:0 and real tonic clients.

#![allow(dead_code, reason = "each test file uses a subset")]

pub mod pg;

use std::net::SocketAddr;
use std::time::Duration;

use airlock_hub::identity::{ClientIdentity, Role};
use airlock_hub::store::{MemoryStore, PgStore, SqliteStore, SqliteSync, Store};
use airlock_hub::{HubConfig, IdentityMode};
use airlock_proto::v1::agent_service_client::AgentServiceClient;
use airlock_proto::v1::approver_service_client::ApproverServiceClient;
use airlock_proto::v1::{
    ActionClass, ActionContext, DecideRequest, GrantScope, Process, Requirements, SubmitRequest,
    Verdict, WatchEvent, watch_event,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Agent = AgentServiceClient<InterceptedService<Channel, ClientIdentity>>;
pub type Approver = ApproverServiceClient<InterceptedService<Channel, ClientIdentity>>;

pub struct TestHub {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// Keeps a SQLite file alive for the hub's lifetime.
    _dir: Option<tempfile::TempDir>,
}

/// Which store a test hub runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sqlite,
    Postgres,
}

pub fn quick_config() -> HubConfig {
    HubConfig {
        default_ttl: Duration::from_secs(300),
        heartbeat: Duration::from_millis(200),
    }
}

impl TestHub {
    pub async fn start() -> Self {
        Self::with_config(quick_config()).await
    }

    pub async fn with_config(config: HubConfig) -> Self {
        Self::with_store(MemoryStore::new(), config, IdentityMode::DevHeaders).await
    }

    /// A hub on `backend`, or `None` when PostgreSQL is unavailable outside CI.
    pub async fn on(backend: Backend, config: HubConfig) -> Option<Self> {
        Some(match backend {
            Backend::Memory => Self::with_config(config).await,
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let store =
                    SqliteStore::open(&dir.path().join("hub.db"), SqliteSync::Normal).unwrap();
                let mut hub = Self::with_store(store, config, IdentityMode::DevHeaders).await;
                hub._dir = Some(dir);
                hub
            }
            Backend::Postgres => {
                let url = pg::database().await?;
                let store = PgStore::connect(&url).await.unwrap();
                Self::with_store(store, config, IdentityMode::DevHeaders).await
            }
        })
    }

    pub async fn with_store<S: Store>(store: S, config: HubConfig, identity: IdentityMode) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            airlock_hub::serve_with_listener(listener, store, config, identity, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
            _dir: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn raw_channel(&self) -> Channel {
        self.channel().await
    }

    async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn agent(&self, principal: &str) -> Agent {
        let id = ClientIdentity::new(principal, Role::Agent).unwrap();
        AgentServiceClient::with_interceptor(self.channel().await, id)
    }

    pub async fn approver(&self, principal: &str) -> Approver {
        self.approver_as(principal, Role::Approver, &[]).await
    }

    pub async fn approver_as(&self, principal: &str, role: Role, groups: &[&str]) -> Approver {
        let id = ClientIdentity::new(principal, role)
            .unwrap()
            .with_groups(groups)
            .unwrap();
        ApproverServiceClient::with_interceptor(self.channel().await, id)
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

pub fn submit(id: &str, requester: &str) -> SubmitRequest {
    SubmitRequest {
        id: id.to_owned(),
        host: "host-1".to_owned(),
        action: Some(ActionContext {
            class: ActionClass::Exec as i32,
            actor: Some(Process {
                pid: 4242,
                uid: 1000,
                user: requester.to_owned(),
                binary: "/usr/bin/aws".to_owned(),
                argv: vec![
                    "aws".to_owned(),
                    "s3".to_owned(),
                    "cp".to_owned(),
                    "reports.csv".to_owned(),
                    "s3://reports-q3/".to_owned(),
                ],
                comm: "aws".to_owned(),
            }),
            binary: "/usr/bin/aws".to_owned(),
            rule_id: "exfil-s3".to_owned(),
            action_hash: format!("hash-{id}"),
            sealed_context: b"sealed-for-auditors".to_vec(),
            ..ActionContext::default()
        }),
        requirements: None,
        requester: requester.to_owned(),
    }
}

pub fn with_requirements(mut s: SubmitRequest, r: Requirements) -> SubmitRequest {
    s.requirements = Some(r);
    s
}

pub fn decide(id: &str, verdict: Verdict, reason: &str) -> DecideRequest {
    DecideRequest {
        id: id.to_owned(),
        verdict: verdict as i32,
        reason: reason.to_owned(),
        scope: GrantScope::Once as i32,
        duration_seconds: 0,
        idempotency_key: String::new(),
        channel: "cli".to_owned(),
    }
}

/// Next non-heartbeat watch event, failing after 5 s.
pub async fn next_event(stream: &mut tonic::Streaming<WatchEvent>) -> watch_event::Event {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("watch event within 5 s")
            .unwrap()
            .expect("stream open");
        match msg.event.expect("event set") {
            watch_event::Event::Heartbeat(_) => {}
            other => return other,
        }
    }
}

/// Next message of any stream, failing after `secs`.
pub async fn within<T>(secs: u64, stream: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), stream.message())
        .await
        .expect("message in time")
        .unwrap()
        .expect("stream open")
}
