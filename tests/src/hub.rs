//! A real hub process, and an approver's view of it over gRPC.

use std::{
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use airlock_proto::v1::{
    ApprovalRequest, DecideRequest, GrantScope, ListRequest, RequestState, Verdict, WatchEvent,
    WatchRequest, approver_service_client::ApproverServiceClient, watch_event,
};
use tonic::{Request, metadata::MetadataValue};

use crate::{SLOW, airlock_bin, free_port, wait_for};

pub struct Hub {
    pub url: String,
    child: Child,
    /// The hub's log (kept out of the test output; read it when something fails).
    pub log: tempfile::NamedTempFile,
}

impl Hub {
    /// Starts `airlock hub serve` on a free loopback port and waits until it accepts.
    pub fn start(default_ttl: &str) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log = tempfile::NamedTempFile::new().expect("hub log");
        let child = Command::new(airlock_bin())
            .args([
                "hub",
                "serve",
                "--dev-tokens",
                "--listen",
                &listen,
                "--default-ttl",
                default_ttl,
            ])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("hub log"))
            .spawn()
            .expect("spawn hub");
        wait_for(SLOW, "the hub to listen", || {
            std::net::TcpStream::connect(&listen).ok()
        });
        Self {
            url: format!("http://{listen}"),
            child,
            log,
        }
    }

    /// Runs the approver CLI (`airlock <args>`) as `principal` against this hub.
    pub fn cli(&self, principal: &str, args: &[&str]) -> Output {
        Command::new(airlock_bin())
            .args(args)
            .env("AIRLOCK_HUB", &self.url)
            .env("AIRLOCK_PRINCIPAL", principal)
            .stdin(Stdio::null())
            .output()
            .expect("run approver CLI")
    }

    /// Runs the CLI and insists it succeeded.
    pub fn cli_ok(&self, principal: &str, args: &[&str]) -> String {
        let out = self.cli(principal, args);
        assert!(
            out.status.success(),
            "`airlock {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Approves or denies request `id` from the CLI as `principal`, member of `groups`.
    pub fn decide(&self, principal: &str, groups: &str, id: &str, approve: bool) {
        if approve {
            self.cli_ok(principal, &["--groups", groups, "approve", id]);
        } else {
            self.cli_ok(
                principal,
                &["--groups", groups, "deny", id, "--reason", "test"],
            );
        }
    }

    pub async fn approver(&self, principal: &str) -> Approver {
        let channel = tonic::transport::Endpoint::from_shared(self.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect to hub");
        Approver {
            client: ApproverServiceClient::new(channel),
            principal: principal.to_owned(),
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Approver {
    client: ApproverServiceClient<tonic::transport::Channel>,
    principal: String,
}

impl Approver {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let md = request.metadata_mut();
        md.insert(
            "x-airlock-principal",
            MetadataValue::try_from(self.principal.as_str()).expect("ascii"),
        );
        md.insert("x-airlock-role", MetadataValue::from_static("approver"));
        request
    }

    pub async fn list(&self, states: &[RequestState]) -> Vec<ApprovalRequest> {
        let message = ListRequest {
            states: states.iter().map(|s| *s as i32).collect(),
            limit: 1000,
            ..Default::default()
        };
        self.client
            .clone()
            .list(self.request(message))
            .await
            .expect("list")
            .into_inner()
            .requests
    }

    /// Opens a Watch stream and returns the first request (from the snapshot or a change)
    /// for which `pred` holds.
    pub async fn watch_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&ApprovalRequest) -> bool,
    ) -> ApprovalRequest {
        let mut stream = self
            .client
            .clone()
            .watch(self.request(WatchRequest { since_revision: 0 }))
            .await
            .expect("watch")
            .into_inner();
        let found = tokio::time::timeout(timeout, async {
            while let Some(WatchEvent { event }) = stream.message().await.expect("watch stream") {
                let candidates = match event {
                    Some(watch_event::Event::Snapshot(s)) => s.requests,
                    Some(watch_event::Event::Changed(r)) => vec![r],
                    _ => continue,
                };
                if let Some(hit) = candidates.into_iter().find(|r| pred(r)) {
                    return Some(hit);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(request)) => request,
            Ok(None) => panic!("watch stream ended before the request appeared"),
            Err(_) => panic!("no matching request on the watch stream within {timeout:?}"),
        }
    }

    /// Casts a vote through the gRPC API (what the CLI does, without a process start).
    pub async fn decide(&self, id: &str, allow: bool) -> ApprovalRequest {
        let message = DecideRequest {
            id: id.to_owned(),
            verdict: if allow { Verdict::Allow } else { Verdict::Deny } as i32,
            reason: if allow {
                String::new()
            } else {
                "denied by the test".to_owned()
            },
            scope: GrantScope::Once as i32,
            channel: "test".to_owned(),
            ..Default::default()
        };
        self.client
            .clone()
            .decide(self.request(message))
            .await
            .expect("decide")
            .into_inner()
            .request
            .expect("request")
    }

    /// A Watch stream from revision 0 (snapshot first).
    pub async fn watch(&self) -> tonic::Streaming<WatchEvent> {
        self.client
            .clone()
            .watch(self.request(WatchRequest { since_revision: 0 }))
            .await
            .expect("watch")
            .into_inner()
    }

    /// Polls until request `id` is in a final state and returns it.
    pub async fn wait_final(&self, id: &str, timeout: Duration) -> ApprovalRequest {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let all = self.list(&[]).await;
            if let Some(r) = all
                .into_iter()
                .find(|r| r.id == id && r.state != RequestState::Pending as i32)
            {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "request {id} still pending after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
