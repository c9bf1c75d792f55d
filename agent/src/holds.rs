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
use airlock_proto::v1::{
    ActionClass, ActionContext, DecisionEvent, Process, RequestState, Requirements,
    SubmitRequest,
};
use aya::maps::{HashMap as BpfHashMap, MapData};
use airlock_audit::OutcomeKind;
use tokio::{io::unix::AsyncFd, sync::mpsc, task::JoinHandle};

use crate::{
    audit::AuditTrail,
    record::Settlement,
    events::HeldExec,
    hub_client::HubClient,
    procinfo::{self, ProcessInfo},
    resolve::ResolvedBinary,
};

/// Messages the coordinator acts on.
pub enum Msg {
    Exec(HeldExec),
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
    exec: HeldExec,
    /// The masked context as submitted (the only form kept, logged and audited).
    masked: ActionContext,
    requirements: Requirements,
    started: Instant,
    tasks: Vec<JoinHandle<()>>,
}

pub struct Coordinator {
    pub agent_id: String,
    pub host: String,
    pub ttl: Duration,
    pub watched: Vec<ResolvedBinary>,
    pub hub: HubClient,
    pub audit: AuditTrail,
    pub kernel: KernelAnswers,
    pub awaiting: Arc<std::sync::Mutex<HashSet<String>>>,
    pub tx: mpsc::Sender<Msg>,
    held: HashMap<String, Held>,
}

impl Coordinator {
    #[expect(clippy::too_many_arguments, reason = "plain wiring of the daemon's parts")]
    pub fn new(
        agent_id: String,
        host: String,
        ttl: Duration,
        watched: Vec<ResolvedBinary>,
        hub: HubClient,
        audit: AuditTrail,
        kernel: KernelAnswers,
        tx: mpsc::Sender<Msg>,
    ) -> Self {
        Self {
            agent_id,
            host,
            ttl,
            watched,
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
            Msg::Exec(exec) => self.on_exec(exec),
            Msg::Decision(event) => self.on_decision(event),
            Msg::Expired(id) => self.finish(&id, Verdict::Deny, Settlement::Expired),
            Msg::Exited(id) => self.on_exit(&id),
            Msg::SubmitFailed(id, error) => self.finish(&id, Verdict::Deny, Settlement::HubUnreachable(error)),
        }
    }

    fn on_exec(&mut self, exec: HeldExec) {
        let id = uuid::Uuid::new_v4().to_string();
        let actor = procinfo::read(exec.tgid);
        let parents = procinfo::parents(exec.tgid);
        let cgroup = procinfo::cgroup(exec.tgid);
        let rule = self
            .watched
            .iter()
            .find(|w| w.key == exec.binary)
            .map(|w| format!("exec.watch:{}", w.name))
            .unwrap_or_else(|| "exec.watch".to_owned());
        let requester = procinfo::user_name(exec.uid);
        let raw = ActionContext {
            class: ActionClass::Exec as i32,
            actor: actor.as_ref().map(to_proto),
            parents: parents.iter().map(to_proto).collect(),
            cgroup,
            binary: exec.path.clone(),
            argv: exec.argv.clone(),
            rule_id: rule,
            rule_reason: "exec of a watched export tool".into(),
            severity: "high".into(),
            impact: format!("runs {}", exec.argv.join(" ")),
            ..Default::default()
        };
        let requirements = Requirements { ttl_seconds: self.ttl.as_secs().max(1) as u32, ..Default::default() };
        // Masked and sealed, and the attempt durable, before anyone is asked: if it cannot be
        // recorded it does not happen. From here on only the masked context is used.
        let masked = match self.audit.hold(&id, &raw, &requester, exec.tid) {
            Ok(masked) => masked,
            Err(error) => {
                tracing::error!(%error, request = %id, pid = exec.tgid, "cannot record the attempt; denying");
                self.kernel.release(exec.key, Verdict::Deny);
                return;
            }
        };
        drop(raw);
        tracing::info!(request = %id, pid = exec.tgid, binary = %masked.binary, argv = ?masked.argv, "exec held");
        let submit = SubmitRequest {
            id: id.clone(),
            host: self.host.clone(),
            requester: requester.clone(),
            action: Some(masked.clone()),
            requirements: Some(requirements.clone()),
        };
        let mut tasks = Vec::new();
        let tx = self.tx.clone();
        let (hub, submit_id) = (self.hub.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(error) = hub.submit(submit).await {
                tracing::warn!(%error, request = %submit_id, "submit failed");
                let _ = tx.send(Msg::SubmitFailed(submit_id, error.to_string())).await;
            }
        }));
        tasks.push(spawn_timer(self.tx.clone(), id.clone(), self.ttl));
        tasks.push(spawn_exit_watch(self.tx.clone(), id.clone(), exec.tgid));
        if let Ok(mut set) = self.awaiting.lock() {
            set.insert(id.clone());
        }
        self.held.insert(id, Held { key: exec.key, exec, masked, requirements, started: Instant::now(), tasks });
    }

    fn on_decision(&mut self, event: DecisionEvent) {
        let state = RequestState::try_from(event.state).unwrap_or(RequestState::Unspecified);
        let verdict = match state {
            RequestState::Approved => Verdict::Allow,
            RequestState::Pending => return,
            // Denied, expired, cancelled and anything unknown: deny.
            _ => Verdict::Deny,
        };
        self.finish(&event.id.clone(), verdict, Settlement::Hub(event));
    }

    fn on_exit(&mut self, id: &str) {
        let Some(held) = self.remove(id) else { return };
        self.kernel.forget(&held.key);
        if let Err(error) = self.audit.outcome(id, &held.masked, held.exec.tid, OutcomeKind::ProcessDied, "the held process exited before a verdict") {
            tracing::error!(%error, request = %id, "cannot record the outcome");
        }
        tracing::info!(request = %id, pid = held.exec.tgid, "held process died; cancelling");
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
    fn finish(&mut self, id: &str, verdict: Verdict, how: Settlement) {
        let Some(held) = self.remove(id) else { return };
        let waited_ms = held.started.elapsed().as_millis() as u64;
        let allow = verdict == Verdict::Allow;
        if let Err(error) = self.audit.decision(id, &held.masked, &held.requirements, allow, &how) {
            // The decision stands (denying a decided approval would surprise the approver
            // less than a lost record would surprise the auditor, but an unrecorded allow
            // is worse): fail closed.
            tracing::error!(%error, request = %id, "audit write failed; denying");
            self.kernel.release(held.key, Verdict::Deny);
            let _ = self.audit.outcome(id, &held.masked, held.exec.tid, OutcomeKind::Denied, "denied: the decision could not be audited");
            return;
        }
        self.kernel.release(held.key, verdict);
        tracing::info!(request = %id, pid = held.exec.tgid, ?verdict, waited_ms, "released");
        let detail = format!("{} after {waited_ms} ms; the process was resumed", if allow { "allowed" } else { "denied (EPERM)" });
        if let Err(error) = self.audit.outcome(id, &held.masked, held.exec.tid, crate::record::outcome_kind(allow, &how), &detail) {
            tracing::error!(%error, request = %id, "cannot record the outcome");
        }
        if matches!(how, Settlement::Expired) {
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
            self.finish(&id, Verdict::Deny, Settlement::Shutdown(why.to_owned()));
            let _ = tokio::time::timeout(Duration::from_secs(2), self.hub.cancel(&id, why)).await;
        }
    }
}

fn to_proto(p: &ProcessInfo) -> Process {
    Process {
        pid: p.pid,
        uid: p.uid,
        user: p.user.clone(),
        binary: p.binary.clone(),
        argv: p.argv.clone(),
        comm: p.comm.clone(),
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
