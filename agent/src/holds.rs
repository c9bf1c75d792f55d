//! Held actions from announcement to release.
//!
//! One task owns every held action and the kernel maps; timers, the decision stream and
//! process-exit watchers only send it messages. That keeps each action's life strictly
//! ordered: attempt recorded → submitted → decided / expired / died → released exactly once.

use std::{
    collections::{HashMap, HashSet},
    os::fd::{FromRawFd, OwnedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::{HoldKey, Verdict};
use airlock_proto::v1::{DecisionEvent, RequestState, Requirements, SubmitRequest};
use aya::maps::{HashMap as BpfHashMap, MapData};
use serde_json::json;
use tokio::{io::unix::AsyncFd, sync::mpsc, task::JoinHandle};

use crate::{
    audit::AuditLog,
    context::{self, Rules},
    events::{DeniedAction, HeldAction},
    hub_client::HubClient,
};

/// Messages the coordinator acts on.
pub enum Msg {
    /// A gate holds an action (any class).
    Held(HeldAction),
    /// A self-protection rule denied an action: audit it.
    Denied(DeniedAction),
    Decision(DecisionEvent),
    Expired(String),
    Exited(String),
    SubmitFailed(String, String),
}

/// The two kernel maps the answer goes through.
pub struct KernelAnswers {
    pub verdicts: BpfHashMap<MapData, HoldKey, u32>,
    pub pending: BpfHashMap<MapData, HoldKey, u64>,
}

impl KernelAnswers {
    /// Leaves `verdict` for the held syscall and wakes the process so it restarts it.
    fn release(&mut self, key: HoldKey, verdict: Verdict) {
        if let Err(error) = self.verdicts.insert(key, verdict as u32, 0) {
            // Without a verdict the restarted syscall would hold again; the process stays
            // stopped rather than slip through, and the error is loud.
            tracing::error!(%error, tgid = key.tgid, "cannot write verdict");
            return;
        }
        let _ = self.pending.remove(&key);
        let pid = nix::unistd::Pid::from_raw(key.tgid as i32);
        if let Err(error) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT) {
            tracing::warn!(%error, tgid = key.tgid, "cannot resume held process");
        }
    }

    /// Forgets an action whose process is gone.
    fn forget(&mut self, key: &HoldKey) {
        let _ = self.pending.remove(key);
        let _ = self.verdicts.remove(key);
    }
}

struct Held {
    key: HoldKey,
    action: HeldAction,
    started: Instant,
    tasks: Vec<JoinHandle<()>>,
}

pub struct Coordinator {
    pub agent_id: String,
    pub host: String,
    pub ttl: Duration,
    /// What the rules name (for rule ids in requests); the daemon refreshes credentials.
    pub rules: Rules,
    pub hub: HubClient,
    pub audit: AuditLog,
    pub kernel: KernelAnswers,
    pub awaiting: Arc<std::sync::Mutex<HashSet<String>>>,
    pub tx: mpsc::Sender<Msg>,
    held: HashMap<String, Held>,
}

impl Coordinator {
    #[expect(
        clippy::too_many_arguments,
        reason = "plain wiring of the daemon's parts"
    )]
    pub fn new(
        agent_id: String,
        host: String,
        ttl: Duration,
        rules: Rules,
        hub: HubClient,
        audit: AuditLog,
        kernel: KernelAnswers,
        tx: mpsc::Sender<Msg>,
    ) -> Self {
        Self {
            agent_id,
            host,
            ttl,
            rules,
            hub,
            audit,
            kernel,
            awaiting: Arc::default(),
            tx,
            held: HashMap::new(),
        }
    }

    pub async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Held(action) => self.on_held(action),
            Msg::Denied(denied) => self.on_denied(&denied),
            Msg::Decision(event) => self.on_decision(event),
            Msg::Expired(id) => self.finish(&id, Verdict::Deny, "expired", json!({"cause": "ttl"})),
            Msg::Exited(id) => self.on_exit(&id),
            Msg::SubmitFailed(id, error) => self.finish(
                &id,
                Verdict::Deny,
                "hub-unreachable",
                json!({"cause": "submit failed; fail mode deny", "error": error}),
            ),
        }
    }

    fn on_held(&mut self, action: HeldAction) {
        // Already asked (a restarted daemon may see an action both from the pinned ring
        // buffer and from waking the task): one request per held action.
        if self.held.values().any(|h| h.key == action.key) {
            return;
        }
        let id = uuid::Uuid::new_v4().to_string();
        let built = context::build(&action, &self.rules, &self.agent_id);
        // Durable before anyone is asked: if it cannot be recorded it does not happen.
        if let Err(error) = self.audit.append("attempt", &id, built.attempt) {
            tracing::error!(%error, pid = action.tgid, "audit write failed; denying");
            self.kernel.release(action.key, Verdict::Deny);
            return;
        }
        tracing::info!(request = %id, pid = action.tgid, action = %built.summary, "action held");

        let submit = SubmitRequest {
            id: id.clone(),
            host: self.host.clone(),
            requester: built.requester,
            action: Some(built.action),
            requirements: Some(Requirements {
                ttl_seconds: self.ttl.as_secs().max(1) as u32,
                ..Default::default()
            }),
        };
        let mut tasks = Vec::new();
        let tx = self.tx.clone();
        let (hub, submit_id) = (self.hub.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(error) = hub.submit(submit).await {
                tracing::warn!(%error, request = %submit_id, "submit failed");
                let _ = tx
                    .send(Msg::SubmitFailed(submit_id, error.to_string()))
                    .await;
            }
        }));
        tasks.push(spawn_timer(self.tx.clone(), id.clone(), self.ttl));
        tasks.push(spawn_exit_watch(self.tx.clone(), id.clone(), action.tgid));
        if let Ok(mut set) = self.awaiting.lock() {
            set.insert(id.clone());
        }
        self.held.insert(
            id,
            Held {
                key: action.key,
                action,
                started: Instant::now(),
                tasks,
            },
        );
    }

    /// Records a self-protection denial (the kernel already refused it).
    fn on_denied(&mut self, denied: &DeniedAction) {
        let fields = context::denied(denied);
        tracing::warn!(pid = denied.tgid, hook = ?denied.hook, what = %fields["what"], "self-protection denied an action");
        if let Err(error) = self.audit.append("protect", &self.agent_id, fields) {
            tracing::error!(%error, "audit write failed for a self-protection denial");
        }
    }

    fn on_decision(&mut self, event: DecisionEvent) {
        let state = RequestState::try_from(event.state).unwrap_or(RequestState::Unspecified);
        let decision = event.decision.unwrap_or_default();
        let fields = json!({
            "state": format!("{state:?}"),
            "approvers": decision.approvers,
            "reason": decision.reason,
            "cause": decision.cause,
        });
        let verdict = match state {
            RequestState::Approved => Verdict::Allow,
            RequestState::Pending => return,
            // Denied, expired, cancelled and anything unknown: deny.
            _ => Verdict::Deny,
        };
        self.finish(&event.id, verdict, "decision", fields);
    }

    fn on_exit(&mut self, id: &str) {
        let Some(held) = self.remove(id) else { return };
        self.kernel.forget(&held.key);
        let _ = self.audit.append(
            "outcome",
            id,
            json!({"result": "process-died", "pid": held.action.tgid}),
        );
        tracing::info!(request = %id, pid = held.action.tgid, "held process died; cancelling");
        let hub = self.hub.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            if let Err(error) = hub.cancel(&id, "the held process exited").await {
                tracing::warn!(%error, request = %id, "cancel failed");
            }
        });
    }

    /// Records why, then releases the process with `verdict`. Later messages for the same
    /// id find nothing and are ignored, so a release happens exactly once.
    fn finish(&mut self, id: &str, verdict: Verdict, kind: &str, mut fields: serde_json::Value) {
        let Some(held) = self.remove(id) else { return };
        let waited_ms = held.started.elapsed().as_millis() as u64;
        if let Some(obj) = fields.as_object_mut() {
            obj.insert(
                "verdict".into(),
                json!(if verdict == Verdict::Allow {
                    "allow"
                } else {
                    "deny"
                }),
            );
            obj.insert("waited_ms".into(), json!(waited_ms));
        }
        if let Err(error) = self.audit.append(kind, id, fields) {
            // The decision stands (denying a decided approval would surprise the approver
            // less than a lost record would surprise the auditor, but an unrecorded allow
            // is worse): fail closed.
            tracing::error!(%error, request = %id, "audit write failed; denying");
            self.kernel.release(held.key, Verdict::Deny);
            return;
        }
        self.kernel.release(held.key, verdict);
        tracing::info!(request = %id, pid = held.action.tgid, ?verdict, waited_ms, "released");
        if kind == "expired" {
            let hub = self.hub.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                let _ = hub.cancel(&id, "expired on the agent").await;
            });
        }
    }

    fn remove(&mut self, id: &str) -> Option<Held> {
        let held = self.held.remove(id)?;
        for task in &held.tasks {
            task.abort();
        }
        if let Ok(mut set) = self.awaiting.lock() {
            set.remove(id);
        }
        Some(held)
    }

    /// Denies everything still held (graceful shutdown: never leave a process stopped).
    pub async fn deny_all(&mut self, why: &str) {
        let ids: Vec<String> = self.held.keys().cloned().collect();
        for id in ids {
            self.finish(&id, Verdict::Deny, "shutdown", json!({"cause": why}));
            let _ = tokio::time::timeout(Duration::from_secs(2), self.hub.cancel(&id, why)).await;
        }
    }
}

fn spawn_timer(tx: mpsc::Sender<Msg>, id: String, ttl: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(ttl).await;
        let _ = tx.send(Msg::Expired(id)).await;
    })
}

/// Reports when `pid` exits, through a pidfd (no polling, no pid-reuse race).
fn spawn_exit_watch(tx: mpsc::Sender<Msg>, id: String, pid: u32) -> JoinHandle<()> {
    tokio::spawn(async move {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd >= 0 {
            // SAFETY: the kernel just gave us this fd; nobody else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            // SAFETY: the OwnedFd moves into the AsyncFd and stays open until it is dropped.
            match unsafe { AsyncFd::register(fd) } {
                Ok(async_fd) => {
                    let _ = async_fd.readable().await;
                }
                Err(error) => {
                    tracing::warn!(%error, pid, "cannot watch held process for exit");
                    return;
                }
            }
        }
        // fd < 0: the process is already gone.
        let _ = tx.send(Msg::Exited(id)).await;
    })
}
