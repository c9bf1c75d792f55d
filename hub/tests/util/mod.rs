//! Helpers: an in-process hub on 127.0.0.1:0 and real tonic clients.

#![allow(dead_code, reason = "each test file uses a subset")]

use std::net::SocketAddr;
use std::time::Duration;

use airlock_hub::HubConfig;
use airlock_hub::identity::{ClientIdentity, Role};
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
}

impl TestHub {
    pub async fn start() -> Self {
        Self::with_config(HubConfig {
            default_ttl: Duration::from_secs(300),
            heartbeat: Duration::from_millis(200),
        })
        .await
    }

    pub async fn with_config(config: HubConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            airlock_hub::serve_with_listener(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
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
