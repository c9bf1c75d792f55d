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
use serde_json::json;
use tokio::{io::unix::AsyncFd, sync::mpsc, task::JoinHandle};

use crate::{
    audit::AuditLog,
    events::HeldExec,
    hub_client::HubClient,
    policy_gate::{self, PolicyGate},
    procinfo::{self, ProcessInfo},
    resolve::ResolvedBinary,
};

/// What the policy (or, without one, the watch list) says about a held action.
enum Judgement {
    Allow { rule: String },
    Deny { rule: String, reason: String },
    Ask { rule: String, reason: String, severity: String, requirements: Requirements },
}

/// Messages the coordinator acts on.
pub enum Msg {
    Exec(HeldExec),
    Decision(DecisionEvent),
    /// The TTL ran out without word from the hub; apply the rule's on-timeout verdict.
    Expired(String, Verdict),
    Exited(String),
    SubmitFailed(String, String),
    /// Re-read the policy file (SIGHUP, or the file changed).
    ReloadPolicy(&'static str),
}

/// The two kernel maps the answer goes through.
pub struct KernelAnswers {
    pub verdicts: BpfHashMap<MapData, HoldKey, u32>,
    pub pending: BpfHashMap<MapData, HoldKey, u64>,
    pub watched_exec: BpfHashMap<MapData, agent_common::InodeKey, u32>,
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
    started: Instant,
    tasks: Vec<JoinHandle<()>>,
}

pub struct Coordinator {
    pub agent_id: String,
    pub host: String,
    pub ttl: Duration,
    pub watched: Vec<ResolvedBinary>,
    pub hub: HubClient,
    pub audit: AuditLog,
    pub kernel: KernelAnswers,
    pub awaiting: Arc<std::sync::Mutex<HashSet<String>>>,
    pub tx: mpsc::Sender<Msg>,
    /// The policy in force; `None`: every watched action asks with `ttl`.
    pub policy: Option<PolicyGate>,
    /// Where binary names are looked up (for policy reloads).
    pub search_path: String,
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
        audit: AuditLog,
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
            policy: None,
            search_path: crate::config::DEFAULT_SEARCH_PATH.to_owned(),
            held: HashMap::new(),
        }
    }

    pub async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Exec(exec) => self.on_exec(exec),
            Msg::Decision(event) => self.on_decision(event),
            Msg::Expired(id, verdict) => self.finish(&id, verdict, "expired", json!({"cause": "ttl"})),
            Msg::Exited(id) => self.on_exit(&id),
            Msg::ReloadPolicy(trigger) => self.reload_policy(trigger),
            Msg::SubmitFailed(id, error) => self.finish(
                &id,
                Verdict::Deny,
                "hub-unreachable",
                json!({"cause": "submit failed; fail mode deny", "error": error}),
            ),
        }
    }

    fn on_exec(&mut self, exec: HeldExec) {
        let id = uuid::Uuid::new_v4().to_string();
        let actor = procinfo::read(exec.tgid);
        let parents = procinfo::parents(exec.tgid);
        let cgroup = procinfo::cgroup(exec.tgid);
        let requester = procinfo::user_name(exec.uid);
        let judgement = self.judge(&exec, &requester, &cgroup, &parents);
        let rule = match &judgement {
            Judgement::Allow { rule } | Judgement::Deny { rule, .. } | Judgement::Ask { rule, .. } => rule.clone(),
        };
        let attempt = json!({
            "class": "exec",
            "agent": self.agent_id,
            "pid": exec.tgid,
            "tid": exec.tid,
            "uid": exec.uid,
            "user": requester,
            "cgroup": cgroup,
            "binary": exec.path,
            "argv": exec.argv,
            "argv_truncated": exec.argv_truncated,
            "parents": parents.iter().map(|p| json!({"pid": p.pid, "binary": p.binary, "comm": p.comm})).collect::<Vec<_>>(),
            "rule": rule,
        });
        // Durable before anyone is asked: if it cannot be recorded it does not happen.
        if let Err(error) = self.audit.append("attempt", &id, attempt) {
            tracing::error!(%error, pid = exec.tgid, "audit write failed; denying");
            self.kernel.release(exec.key, Verdict::Deny);
            return;
        }
        tracing::info!(request = %id, pid = exec.tgid, binary = %exec.path, argv = ?exec.argv, %rule, "exec held");
        let (reason, severity, requirements) = match judgement {
            Judgement::Allow { .. } => {
                return self.decide_locally(id, exec, Verdict::Allow, &rule, "allowed by policy");
            }
            Judgement::Deny { reason, .. } => {
                return self.decide_locally(id, exec, Verdict::Deny, &rule, &reason);
            }
            Judgement::Ask { reason, severity, requirements, .. } => (reason, severity, requirements),
        };
        let ttl = Duration::from_secs(u64::from(requirements.ttl_seconds.max(1)));
        let on_timeout = if requirements.on_timeout == airlock_proto::v1::Verdict::Allow as i32 {
            Verdict::Allow
        } else {
            Verdict::Deny
        };

        let submit = SubmitRequest {
            id: id.clone(),
            host: self.host.clone(),
            requester: requester.clone(),
            action: Some(ActionContext {
                class: ActionClass::Exec as i32,
                actor: actor.as_ref().map(to_proto),
                parents: parents.iter().map(to_proto).collect(),
                cgroup,
                binary: exec.path.clone(),
                argv: exec.argv.clone(),
                rule_id: rule,
                rule_reason: reason,
                severity,
                impact: format!("runs {}", exec.argv.join(" ")),
                ..Default::default()
            }),
            requirements: Some(requirements),
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
        // The hub applies the TTL and its on-timeout outcome; this timer (a little later) is
        // the fallback when the hub cannot tell us.
        tasks.push(spawn_timer(self.tx.clone(), id.clone(), ttl + EXPIRY_GRACE, on_timeout));
        tasks.push(spawn_exit_watch(self.tx.clone(), id.clone(), exec.tgid));
        if let Ok(mut set) = self.awaiting.lock() {
            set.insert(id.clone());
        }
        self.held.insert(id, Held { key: exec.key, exec, started: Instant::now(), tasks });
    }

    /// Validates the policy file completely, then switches to it. The kernel watches the
    /// union of old and new binaries during the switch; a rejected file changes nothing.
    fn reload_policy(&mut self, trigger: &'static str) {
        let Some(current) = &self.policy else { return };
        let (path, old_hash) = (current.path.clone(), current.hash().to_owned());
        let new = match PolicyGate::load(&path, &self.search_path) {
            Ok(new) => new,
            Err(error) => {
                tracing::error!(%error, trigger, "policy reload rejected; the previous policy stays in force");
                let _ = self.audit.append(
                    "policy-reload",
                    "policy",
                    json!({"result": "rejected", "trigger": trigger, "file": path, "error": error.to_string(), "in_force": old_hash}),
                );
                return;
            }
        };
        if new.hash() == old_hash {
            tracing::debug!(trigger, "policy unchanged");
            return;
        }
        for (index, binary) in new.watched.iter().enumerate() {
            if let Err(error) = self.kernel.watched_exec.insert(binary.key, index as u32, 0) {
                tracing::error!(%error, path = %binary.path.display(), "cannot watch binary; reload rejected");
                let _ = self.audit.append("policy-reload", "policy", json!({"result": "rejected", "trigger": trigger, "error": error.to_string()}));
                return;
            }
        }
        let old = self.policy.replace(new);
        let keep: std::collections::HashSet<_> = self
            .watched
            .iter()
            .chain(self.policy.iter().flat_map(|p| p.watched.iter()))
            .map(|b| b.key)
            .collect();
        for binary in old.iter().flat_map(|p| p.watched.iter()).filter(|b| !keep.contains(&b.key)) {
            let _ = self.kernel.watched_exec.remove(&binary.key);
        }
        let new_hash = self.policy.as_ref().map(|p| p.hash().to_owned());
        tracing::info!(trigger, old = %old_hash, new = ?new_hash, "policy reloaded");
        let _ = self.audit.append(
            "policy-reload",
            "policy",
            json!({"result": "accepted", "trigger": trigger, "file": path, "old": old_hash, "new": new_hash, "watched": keep.len()}),
        );
    }

    /// Asks the policy (or, without one, treats every watched binary as "ask").
    fn judge(&self, exec: &HeldExec, user: &str, cgroup: &str, parents: &[ProcessInfo]) -> Judgement {
        let Some(gate) = &self.policy else {
            let rule = self
                .watched
                .iter()
                .find(|w| w.key == exec.binary)
                .map(|w| format!("exec.watch:{}", w.name))
                .unwrap_or_else(|| "exec.watch".to_owned());
            return Judgement::Ask {
                rule,
                reason: "exec of a watched export tool".into(),
                severity: "high".into(),
                requirements: Requirements { ttl_seconds: self.ttl.as_secs().max(1) as u32, ..Default::default() },
            };
        };
        let mut action = airlock_policy::Action::exec(exec.path.clone(), exec.argv.clone());
        action.uid = Some(exec.uid);
        action.user = Some(user.to_owned());
        action.cgroup = Some(cgroup.to_owned());
        action.unit = cgroup.rsplit('/').find(|c| c.ends_with(".service") || c.ends_with(".scope")).map(str::to_owned);
        action.parents = parents
            .iter()
            .map(|p| airlock_policy::ParentProcess { pid: p.pid, binary: Some(p.binary.clone()), comm: Some(p.comm.clone()) })
            .collect();
        let decision = gate.evaluate(&action);
        let rule = decision.rule_id.as_deref().map_or_else(|| "default".to_owned(), str::to_owned);
        for hit in &decision.shadow {
            tracing::info!(pid = exec.tgid, shadow = ?hit, "shadow rule would have applied");
        }
        let reason = decision.reason.as_deref().unwrap_or("policy").to_owned();
        match &decision.effective {
            airlock_policy::Outcome::Allow => Judgement::Allow { rule },
            airlock_policy::Outcome::Deny => Judgement::Deny { rule, reason },
            airlock_policy::Outcome::Ask(spec) => Judgement::Ask {
                rule,
                reason: spec.reason.clone().unwrap_or(reason),
                severity: format!("{:?}", spec.severity).to_lowercase(),
                requirements: policy_gate::requirements(spec),
            },
        }
    }

    /// Records the policy's own decision and releases the process at once.
    fn decide_locally(&mut self, id: String, exec: HeldExec, verdict: Verdict, rule: &str, reason: &str) {
        let fields = json!({
            "cause": "policy",
            "rule": rule,
            "reason": reason,
            "policy": self.policy.as_ref().map(|p| p.hash().to_owned()),
            "verdict": if verdict == Verdict::Allow { "allow" } else { "deny" },
        });
        let verdict = match self.audit.append("decision", &id, fields) {
            Ok(()) => verdict,
            Err(error) => {
                tracing::error!(%error, request = %id, "audit write failed; denying");
                Verdict::Deny
            }
        };
        tracing::info!(request = %id, pid = exec.tgid, ?verdict, rule, "decided by policy");
        self.kernel.release(exec.key, verdict);
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
            RequestState::Pending => return,
            RequestState::Approved => Verdict::Allow,
            // A rule may say "allow on timeout"; the hub carries that in the decision.
            RequestState::Expired if decision.verdict == airlock_proto::v1::Verdict::Allow as i32 => Verdict::Allow,
            // Denied, expired, cancelled and anything unknown: deny.
            _ => Verdict::Deny,
        };
        let kind = match state {
            RequestState::Expired => "expired",
            RequestState::Cancelled => "cancelled",
            _ => "decision",
        };
        self.finish(&event.id, verdict, kind, fields);
    }

    fn on_exit(&mut self, id: &str) {
        let Some(held) = self.remove(id) else { return };
        self.kernel.forget(&held.key);
        let _ = self.audit.append("outcome", id, json!({"result": "process-died", "pid": held.exec.tgid}));
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
    fn finish(&mut self, id: &str, verdict: Verdict, kind: &str, mut fields: serde_json::Value) {
        let Some(held) = self.remove(id) else { return };
        let waited_ms = held.started.elapsed().as_millis() as u64;
        if let Some(obj) = fields.as_object_mut() {
            obj.insert("verdict".into(), json!(if verdict == Verdict::Allow { "allow" } else { "deny" }));
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
        tracing::info!(request = %id, pid = held.exec.tgid, ?verdict, waited_ms, "released");
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

/// How much longer than the TTL the agent waits for the hub's own expiry decision.
const EXPIRY_GRACE: Duration = Duration::from_secs(2);

fn spawn_timer(tx: mpsc::Sender<Msg>, id: String, ttl: Duration, verdict: Verdict) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(ttl).await;
        let _ = tx.send(Msg::Expired(id, verdict)).await;
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
