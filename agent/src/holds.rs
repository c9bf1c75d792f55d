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
use airlock_audit::OutcomeKind;
use airlock_proto::v1::{
    ActionClass, ActionContext, DecisionEvent, RequestState, Requirements, SubmitRequest,
};
use aya::maps::{HashMap as BpfHashMap, MapData};
use tokio::{io::unix::AsyncFd, sync::mpsc, task::JoinHandle};

use crate::{
    audit::AuditTrail,
    context::{self, Rules},
    events::{DeniedAction, HeldAction},
    hub_client::HubClient,
    intent::{self, IntentGrant, Intents, Target},
    kernel_sets::LiveKernelSets,
    policy_gate::{self, PolicyGate},
    record::Settlement,
};

/// What the policy (or, without one, the watch list) says about a held action.
enum Judgement {
    Allow {
        rule: String,
    },
    Deny {
        rule: String,
        reason: String,
    },
    Ask {
        rule: String,
        reason: String,
        severity: String,
        requirements: Requirements,
    },
}

/// Messages the coordinator acts on.
pub enum Msg {
    /// The kernel holds an action (exec, connect/send, open).
    Held(HeldAction),
    /// The kernel refused an attack on the agent itself (self-protection); record it.
    Denied(DeniedAction),
    Decision(DecisionEvent),
    /// The TTL ran out without word from the hub; apply the rule's on-timeout verdict.
    Expired(String, Verdict),
    Exited(String),
    SubmitFailed(String, String),
    /// The hub stayed unreachable and `fail_mode = "allow"`.
    FailOpen(String),
    /// Re-read the policy file (SIGHUP, or the file changed).
    ReloadPolicy(&'static str),
    /// A process holding intent grants exited; its grants end.
    IntentEnded(u32),
}

/// The kernel maps the answers go through, and the sets a policy reload rewrites.
pub struct KernelAnswers {
    pub verdicts: BpfHashMap<MapData, HoldKey, u32>,
    pub pending: BpfHashMap<MapData, HoldKey, u64>,
    pub watched_exec: BpfHashMap<MapData, agent_common::InodeKey, u32>,
    /// The egress allow trie and the credential files.
    pub sets: LiveKernelSets,
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
    /// The masked context as submitted (the only form kept, logged and audited).
    masked: ActionContext,
    requirements: Requirements,
    /// The policy version that judged it ("none" without a policy).
    policy_version: String,
    started: Instant,
    tasks: Vec<JoinHandle<()>>,
}

pub struct Coordinator {
    pub agent_id: String,
    pub host: String,
    pub ttl: Duration,
    /// What the kernel watches (for naming rules) and the resolver cache.
    pub rules: Rules,
    pub hub: HubClient,
    pub audit: AuditTrail,
    pub kernel: KernelAnswers,
    pub awaiting: Arc<std::sync::Mutex<HashSet<String>>>,
    pub tx: mpsc::Sender<Msg>,
    /// The policy in force; `None`: every watched action asks with `ttl`.
    pub policy: Option<PolicyGate>,
    /// Where binary names are looked up (for policy reloads).
    pub search_path: String,
    held: HashMap<String, Held>,
    /// Approved execs' intent grants (DESIGN §6).
    intents: Intents,
    /// (tgid, action hash) a human denied, and when: see [`REPEAT_DENY_WINDOW`].
    denied: HashMap<(u32, String), Instant>,
}

/// How long a human's deny also answers the same process repeating the same action. Clients
/// retry a failed send on a new connection (botocore: 5 attempts), and each attempt would
/// otherwise ask the human again about what they just refused. A new process asks again.
const REPEAT_DENY_WINDOW: Duration = Duration::from_secs(120);

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
        audit: AuditTrail,
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
            policy: None,
            search_path: crate::config::DEFAULT_SEARCH_PATH.to_owned(),
            held: HashMap::new(),
            intents: Intents::default(),
            denied: HashMap::new(),
        }
    }

    pub async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Held(action) => self.on_held(action),
            Msg::Denied(denied) => self.on_denied(&denied),
            Msg::Decision(event) => self.on_decision(event),
            Msg::Expired(id, verdict) => self.finish(&id, verdict, Settlement::Expired),
            Msg::Exited(id) => self.on_exit(&id),
            Msg::ReloadPolicy(trigger) => self.reload_policy(trigger),
            Msg::SubmitFailed(id, error) => {
                self.finish(&id, Verdict::Deny, Settlement::HubUnreachable(error))
            }
            Msg::FailOpen(id) => self.finish(&id, Verdict::Allow, Settlement::FailOpen),
            Msg::IntentEnded(tgid) => {
                let ended = self.intents.process_exited(tgid);
                if ended > 0 {
                    tracing::info!(pid = tgid, ended, "process exited; its intent grants end");
                }
            }
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
        let mut raw = built.action;
        let judgement = self.judge(&action, &raw, built.unknown_content);
        let requirements = match &judgement {
            Judgement::Allow { rule } => {
                raw.rule_id = rule.clone();
                raw.rule_reason = "allowed by policy".into();
                Requirements::default()
            }
            Judgement::Deny { rule, reason } => {
                raw.rule_id = rule.clone();
                raw.rule_reason = reason.clone();
                Requirements::default()
            }
            Judgement::Ask {
                rule,
                reason,
                severity,
                requirements,
            } => {
                raw.rule_id = rule.clone();
                raw.rule_reason = reason.clone();
                raw.severity = severity.clone();
                requirements.clone()
            }
        };
        if let Some(note) = &built.note
            && !raw.rule_reason.contains(note.as_str())
        {
            raw.rule_reason = format!("{}; {note}", raw.rule_reason);
        }
        // A duration grant approves exactly this action (binary + argv, destination, path).
        raw.action_hash = action_hash(&raw);
        // Masked and sealed, and the attempt durable, before anyone is asked: if it cannot be
        // recorded it does not happen. From here on only the masked context is used.
        let policy_version = self.policy_version();
        let masked = match self
            .audit
            .hold(&id, &raw, &built.requester, action.tid, &policy_version)
        {
            Ok(masked) => masked,
            Err(error) => {
                tracing::error!(%error, request = %id, pid = action.tgid, "cannot record the attempt; denying");
                self.kernel.release(action.key, Verdict::Deny);
                return;
            }
        };
        drop(raw);
        let rule = masked.rule_id.clone();
        tracing::info!(request = %id, pid = action.tgid, action = %built.summary, %rule, "action held");
        let reason = masked.rule_reason.clone();
        let held = Held {
            key: action.key,
            action,
            masked,
            requirements: requirements.clone(),
            policy_version,
            started: Instant::now(),
            tasks: Vec::new(),
        };
        if matches!(judgement, Judgement::Ask { .. })
            && self
                .denied
                .get(&(held.action.tgid, held.masked.action_hash.clone()))
                .is_some_and(|at| at.elapsed() < REPEAT_DENY_WINDOW)
        {
            return self.settle(id, held, Verdict::Deny, Settlement::RepeatDenied);
        }
        match judgement {
            Judgement::Allow { .. } => {
                return self.settle(id, held, Verdict::Allow, Settlement::Policy(reason));
            }
            Judgement::Deny { .. } => {
                return self.settle(id, held, Verdict::Deny, Settlement::Policy(reason));
            }
            Judgement::Ask { .. } => {
                // One human decision per intent: a follow-up of an approved exec, consistent
                // with what it named, is not asked again.
                if let Some(covered) = self.intent_cover(&held.action) {
                    let matched = self.audit.mask_text(&covered.cover.to_string());
                    tracing::info!(request = %id, pid = held.action.tgid, intent = %covered.request_id, holder = covered.holder, %matched, "covered by an intent grant; not asked again");
                    let how = Settlement::Intent {
                        request: covered.request_id,
                        approvers: covered.approvers,
                        matched,
                    };
                    return self.settle(id, held, Verdict::Allow, how);
                }
            }
        }
        let ttl = Duration::from_secs(u64::from(requirements.ttl_seconds.max(1)));
        let on_timeout = if requirements.on_timeout == airlock_proto::v1::Verdict::Allow as i32 {
            Verdict::Allow
        } else {
            Verdict::Deny
        };
        let submit = SubmitRequest {
            id: id.clone(),
            host: self.host.clone(),
            requester: built.requester,
            action: Some(held.masked.clone()),
            requirements: Some(requirements),
        };
        let mut held = held;
        let tasks = &mut held.tasks;
        let tx = self.tx.clone();
        let (hub, submit_id) = (self.hub.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            match hub.submit(submit).await {
                Ok(crate::hub_client::Submitted::Accepted) => {}
                Ok(crate::hub_client::Submitted::FailOpen) => {
                    tracing::warn!(request = %submit_id, "hub unreachable; fail mode allow lets the action through");
                    let _ = tx.send(Msg::FailOpen(submit_id)).await;
                }
                Err(error) => {
                    tracing::warn!(%error, request = %submit_id, "submit failed");
                    let _ = tx.send(Msg::SubmitFailed(submit_id, error.to_string())).await;
                }
            }
        }));
        // The hub applies the TTL and its on-timeout outcome; this timer (a little later) is
        // the fallback when the hub cannot tell us.
        tasks.push(spawn_timer(
            self.tx.clone(),
            id.clone(),
            ttl + EXPIRY_GRACE,
            on_timeout,
        ));
        tasks.push(spawn_exit_watch(
            self.tx.clone(),
            id.clone(),
            held.action.tgid,
        ));
        if let Ok(mut set) = self.awaiting.lock() {
            set.insert(id.clone());
        }
        self.held.insert(id, held);
    }

    /// The intent grant covering a held connect/send/open, if any.
    fn intent_cover(&mut self, action: &HeldAction) -> Option<intent::Covered> {
        if self.intents.is_empty() {
            return None;
        }
        let resolved = match &action.what {
            crate::events::Action::Net { dest, .. } => self.rules.hostname(action.tgid, dest.addr),
            crate::events::Action::Exec { .. } | crate::events::Action::Open { .. } => None,
        };
        let target = Target::of(action, resolved)?;
        self.intents
            .cover(&intent::lineage(action.tgid), &target, Instant::now())
    }

    /// After a human approved an exec: attaches an intent grant to the process (and its
    /// descendants) for what the approved command line named, until it exits or the hub's
    /// duration grant ends. Only what the approver saw counts: argv entries the masker
    /// changed, and a cut-off last entry, name nothing.
    fn grant_intent(&mut self, id: &str, held: &Held, how: &Settlement) {
        let crate::events::Action::Exec {
            argv,
            argv_truncated,
            ..
        } = &held.action.what
        else {
            return;
        };
        let Some((approvers, until)) = intent_approval(how) else {
            return;
        };
        let mut seen: Vec<String> = argv
            .iter()
            .enumerate()
            .filter(|(i, raw)| held.masked.argv.get(*i) == Some(*raw))
            .map(|(_, raw)| raw.clone())
            .collect();
        if *argv_truncated && seen.last() == argv.last() {
            seen.pop();
        }
        let tgid = held.action.tgid;
        let scope = intent::scope_of(&seen, intent::cwd(tgid).as_deref());
        if scope.is_empty() {
            return;
        }
        // The watch task ends by itself when the process exits; nothing needs its handle.
        if spawn_grant_watch(self.tx.clone(), tgid).is_none() {
            return;
        }
        let until = until.and_then(|ms| {
            let left = u64::try_from(ms.saturating_sub(crate::unix_ms())).ok()?;
            Some(Instant::now() + Duration::from_millis(left))
        });
        tracing::info!(
            request = %id,
            pid = tgid,
            buckets = self.audit.mask_text(&format!("{:?}", scope.buckets)),
            hosts = self.audit.mask_text(&format!("{:?}", scope.hosts.iter().map(|h| &h.host).collect::<Vec<_>>())),
            files = scope.files.len(),
            ?until,
            "intent grant attached to the approved process"
        );
        self.intents.add(IntentGrant {
            request_id: id.to_owned(),
            approvers,
            tgid,
            start_time: intent::stat(tgid).map(|(_, start)| start),
            until,
            scope,
        });
    }

    /// Records a self-protection denial (the kernel already refused it).
    fn on_denied(&mut self, denied: &DeniedAction) {
        let what = context::denied(denied, &self.rules.protected);
        tracing::warn!(pid = denied.tgid, hook = ?denied.hook, what = %what["what"], "self-protection denied an action");
        if let Err(error) = self.audit.self_protection(denied, &what) {
            tracing::error!(%error, "cannot record a self-protection denial");
        }
    }

    /// The version of the policy in force, as recorded with each decision.
    fn policy_version(&self) -> String {
        self.policy
            .as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.hash().to_owned())
    }

    /// Validates the policy file completely, then switches to it without a gap: the kernel
    /// first answers only for what both policies let through (allowed prefixes: the
    /// intersection; watched binaries and credential files: the union), the policy is
    /// swapped, then the kernel sets become the new policy's. A rejected file changes nothing.
    fn reload_policy(&mut self, trigger: &'static str) {
        let Some(current) = &self.policy else { return };
        let (path, old_hash) = (current.path.clone(), current.hash().to_owned());
        let new = match PolicyGate::load(&path, &self.search_path) {
            Ok(new) => new,
            Err(error) => {
                tracing::error!(%error, trigger, "policy reload rejected; the previous policy stays in force");
                self.record_reload(&old_hash, 0, Some(format!("{trigger}: {error}")));
                return;
            }
        };
        if new.hash() == old_hash {
            tracing::debug!(trigger, "policy unchanged");
            return;
        }
        let plan = new.policy.kernel_plan();
        let wanted = self.kernel.sets.baseline().wanted(Some(&plan));
        let narrowed = match self.kernel.sets.narrow(&wanted) {
            Ok(narrowed) => narrowed,
            Err(error) => {
                tracing::error!(%error, trigger, "policy reload rejected; the previous policy stays in force");
                self.record_reload(&old_hash, 0, Some(format!("{trigger}: {error}")));
                return;
            }
        };
        let mut added = Vec::new();
        for (index, binary) in new.watched.iter().enumerate() {
            if let Err(error) = self.kernel.watched_exec.insert(binary.key, index as u32, 0) {
                tracing::error!(%error, path = %binary.path.display(), "cannot watch binary; reload rejected");
                for key in &added {
                    if !self.watches(key) {
                        let _ = self.kernel.watched_exec.remove(key);
                    }
                }
                self.kernel.sets.restore(narrowed);
                self.record_reload(
                    &old_hash,
                    0,
                    Some(format!(
                        "{trigger}: cannot watch {}: {error}",
                        binary.path.display()
                    )),
                );
                return;
            }
            added.push(binary.key);
        }
        let old = self.policy.replace(new);
        self.kernel.sets.widen(narrowed);
        self.rules.credentials = self.kernel.sets.credential_files();
        for binary in old.iter().flat_map(|p| p.watched.iter()) {
            if !self.watches(&binary.key) {
                let _ = self.kernel.watched_exec.remove(&binary.key);
            }
        }
        let tools: Vec<_> = self
            .rules
            .watched
            .iter()
            .chain(self.policy.iter().flat_map(|p| p.watched.iter()))
            .cloned()
            .collect();
        self.rules.tool_digests = crate::content::ToolDigests::new(&tools);
        let new_hash = self.policy_version();
        let rules = self.policy.as_ref().map_or(0, |p| p.policy.rules().len());
        tracing::info!(
            trigger,
            file = %path.display(),
            old = %old_hash,
            new = %new_hash,
            allowed_prefixes = self.kernel.sets.allowed().len(),
            credential_files = self.rules.credentials.len(),
            "policy reloaded"
        );
        self.record_reload(&new_hash, rules, None);
    }

    /// True when the configuration or the policy in force watches this binary.
    fn watches(&self, key: &agent_common::InodeKey) -> bool {
        self.rules
            .watched
            .iter()
            .chain(self.policy.iter().flat_map(|p| p.watched.iter()))
            .any(|b| b.key == *key)
    }

    /// Re-resolves the credential globs (files appear and get replaced).
    pub fn refresh_credentials(&mut self) {
        self.kernel.sets.refresh_credentials();
        self.rules.credentials = self.kernel.sets.credential_files();
    }

    /// Records a reload: the version now in force, or why the new file was refused.
    fn record_reload(&self, version: &str, rules: usize, error: Option<String>) {
        if let Err(e) = self.audit.policy_reload(version, rules, error) {
            tracing::error!(error = %e, "cannot record the policy reload");
        }
    }

    /// Asks the hub with the rule the gate itself named (watched binary, unlisted
    /// destination, credential file, unknown executable) and the agent's `ttl`.
    fn ask_with_the_gates_rule(&self, raw: &ActionContext) -> Judgement {
        Judgement::Ask {
            rule: raw.rule_id.clone(),
            reason: raw.rule_reason.clone(),
            severity: raw.severity.clone(),
            requirements: Requirements {
                ttl_seconds: self.ttl.as_secs().max(1) as u32,
                ..Default::default()
            },
        }
    }

    /// Asks the policy. Without one, every caught action asks the hub with the gate's own
    /// rule (watched binary, unlisted destination, credential file) and `ttl`.
    ///
    /// `unknown_content`: an exec the content rule held that is no tool's copy. The policy's
    /// rules still apply (an allow rule for a build directory, say), but its exec default
    /// (normally allow, since the kernel only holds watched tools) does not: it asks.
    fn judge(&self, held: &HeldAction, raw: &ActionContext, unknown_content: bool) -> Judgement {
        let Some(gate) = &self.policy else {
            return self.ask_with_the_gates_rule(raw);
        };
        let decision = gate.evaluate(&policy_action(held, raw));
        if unknown_content
            && decision.rule_id.is_none()
            && decision.mode == airlock_policy::Mode::Enforce
        {
            return self.ask_with_the_gates_rule(raw);
        }
        let rule = decision
            .rule_id
            .as_deref()
            .map_or_else(|| "default".to_owned(), str::to_owned);
        for hit in &decision.shadow {
            tracing::info!(pid = held.tgid, shadow = ?hit, "shadow rule would have applied");
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

    fn on_decision(&mut self, event: DecisionEvent) {
        let state = RequestState::try_from(event.state).unwrap_or(RequestState::Unspecified);
        let verdict = match state {
            RequestState::Pending => return,
            RequestState::Approved => Verdict::Allow,
            // A rule may say "allow on timeout"; the hub carries that in the decision.
            RequestState::Expired
                if event
                    .decision
                    .as_ref()
                    .is_some_and(|d| d.verdict == airlock_proto::v1::Verdict::Allow as i32) =>
            {
                Verdict::Allow
            }
            // Denied, expired, cancelled and anything unknown: deny.
            _ => Verdict::Deny,
        };
        self.finish(&event.id.clone(), verdict, Settlement::Hub(event));
    }

    fn on_exit(&mut self, id: &str) {
        let Some(held) = self.remove(id) else { return };
        self.kernel.forget(&held.key);
        if let Err(error) = self.audit.outcome(
            id,
            &held.masked,
            held.action.tid,
            OutcomeKind::ProcessDied,
            "the held process exited before a verdict",
        ) {
            tracing::error!(%error, request = %id, "cannot record the outcome");
        }
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
    fn finish(&mut self, id: &str, verdict: Verdict, how: Settlement) {
        let Some(held) = self.remove(id) else { return };
        if matches!(how, Settlement::Expired) {
            let hub = self.hub.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                let _ = hub.cancel(&id, "expired on the agent").await;
            });
        }
        self.settle(id.to_owned(), held, verdict, how);
    }

    /// Records the DECISION (fail closed if it cannot be recorded), releases the process,
    /// and records the OUTCOME.
    fn settle(&mut self, id: String, held: Held, verdict: Verdict, how: Settlement) {
        let waited_ms = held.started.elapsed().as_millis() as u64;
        let allow = verdict == Verdict::Allow;
        let recorded = self.audit.decision(
            &id,
            &held.masked,
            &held.requirements,
            allow,
            &how,
            &held.policy_version,
        );
        if let Err(error) = recorded {
            // An allow nobody can audit is worse than a surprised approver: fail closed.
            tracing::error!(%error, request = %id, "audit write failed; denying");
            self.kernel.release(held.key, Verdict::Deny);
            let _ = self.audit.outcome(
                &id,
                &held.masked,
                held.action.tid,
                OutcomeKind::Denied,
                "denied: the decision could not be audited",
            );
            return;
        }
        if allow {
            // Before the process runs on: its first connect must find the grant.
            self.grant_intent(&id, &held, &how);
        }
        self.kernel.release(held.key, verdict);
        if matches!(&how, Settlement::Hub(e) if e.state == RequestState::Denied as i32) {
            self.denied
                .retain(|_, at| at.elapsed() < REPEAT_DENY_WINDOW);
            self.denied.insert(
                (held.action.tgid, held.masked.action_hash.clone()),
                Instant::now(),
            );
        }
        tracing::info!(request = %id, pid = held.action.tgid, ?verdict, waited_ms, "released");
        let detail = format!(
            "{} after {waited_ms} ms; the process was resumed",
            if allow { "allowed" } else { "denied (EPERM)" }
        );
        if let Err(error) = self.audit.outcome(
            &id,
            &held.masked,
            held.action.tid,
            crate::record::outcome_kind(allow, &how),
            &detail,
        ) {
            tracing::error!(%error, request = %id, "cannot record the outcome");
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

/// Whether `how` is a human approval that starts an intent grant: approvers voted for it at
/// the hub (or an earlier approval's duration grant covered it there). Allow-on-timeout,
/// policy allows, fail-open and intent-covered follow-ups are not. Returns the approvers
/// and the end of a duration grant (unix ms).
fn intent_approval(how: &Settlement) -> Option<(Vec<String>, Option<i64>)> {
    use airlock_proto::v1::{DecisionCause, GrantScope};
    let Settlement::Hub(event) = how else {
        return None;
    };
    if event.state != RequestState::Approved as i32 {
        return None;
    }
    let decision = event.decision.as_ref()?;
    let human = [DecisionCause::Approvers as i32, DecisionCause::Grant as i32];
    if !human.contains(&decision.cause) {
        return None;
    }
    let until = decision
        .grant
        .as_ref()
        .filter(|g| g.scope == GrantScope::Duration as i32 && g.until_unix_ms > 0)
        .map(|g| g.until_unix_ms);
    Some((decision.approvers.clone(), until))
}

/// The action as the policy sees it, from the raw (unmasked) context.
fn policy_action(held: &HeldAction, raw: &ActionContext) -> airlock_policy::Action {
    let mut action = action_of(raw);
    action.uid = Some(held.uid);
    action
}

/// What a grant is bound to: the action itself (class, binary + argv, destination, path),
/// not who made it or from where — the hub binds the requester and the agent separately, and
/// parent pids or cgroups differ on every run of the same command.
fn action_hash(raw: &ActionContext) -> String {
    let mut action = action_of(raw);
    action.user = None;
    action.cgroup = None;
    action.unit = None;
    action.parents.clear();
    action.fingerprint()
}

fn action_of(raw: &ActionContext) -> airlock_policy::Action {
    use airlock_policy::{Action, ActionClass as Class};
    let class = match ActionClass::try_from(raw.class) {
        Ok(ActionClass::Connect) => Class::Connect,
        Ok(ActionClass::Send) => Class::Send,
        Ok(ActionClass::Open) => Class::Open,
        _ => Class::Exec,
    };
    let mut action = Action::new(class);
    action.binary = (!raw.binary.is_empty()).then(|| raw.binary.clone());
    action.argv = raw.argv.clone();
    action.path = (!raw.file.is_empty()).then(|| raw.file.clone());
    action.destination = raw
        .destination
        .as_ref()
        .map(|d| airlock_policy::Destination {
            ip: d.address.parse().ok(),
            port: u16::try_from(d.port).ok().filter(|p| *p != 0),
            protocol: match d.protocol.as_str() {
                "tcp" => Some(airlock_policy::Protocol::Tcp),
                "udp" => Some(airlock_policy::Protocol::Udp),
                _ => None,
            },
            hostname: non_empty(&d.hostname),
            scheme: non_empty(&d.scheme),
            url: non_empty(&d.url),
            s3_bucket: non_empty(&d.bucket),
            s3_key: non_empty(&d.key),
        });
    if let Some(actor) = &raw.actor {
        action.user = non_empty(&actor.user);
    }
    action.cgroup = non_empty(&raw.cgroup);
    action.unit = raw
        .cgroup
        .rsplit('/')
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_owned);
    action.parents = raw
        .parents
        .iter()
        .map(|p| airlock_policy::ParentProcess {
            pid: p.pid,
            binary: non_empty(&p.binary),
            comm: non_empty(&p.comm),
        })
        .collect();
    action
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

/// How much longer than the TTL the agent waits for the hub's own expiry decision.
const EXPIRY_GRACE: Duration = Duration::from_secs(2);

fn spawn_timer(
    tx: mpsc::Sender<Msg>,
    id: String,
    ttl: Duration,
    verdict: Verdict,
) -> JoinHandle<()> {
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

/// Reports when the process holding an intent grant exits. The pidfd is opened now, while
/// the approved process is still stopped, so it is that process (not a later one with the
/// same pid); `None` when it is already gone.
fn spawn_grant_watch(tx: mpsc::Sender<Msg>, pid: u32) -> Option<JoinHandle<()>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave us this fd; nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the OwnedFd moves into the AsyncFd and stays open until it is dropped.
    let async_fd = match unsafe { AsyncFd::register(fd) } {
        Ok(async_fd) => async_fd,
        Err(error) => {
            tracing::warn!(%error, pid, "cannot watch the approved process; no intent grant");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        let _ = async_fd.readable().await;
        let _ = tx.send(Msg::IntentEnded(pid)).await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_binds_the_action_not_the_actor() {
        let exec = |argv: &[&str], parent_pid: u32, cgroup: &str| ActionContext {
            class: ActionClass::Exec as i32,
            binary: "/usr/bin/aws".into(),
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            cgroup: cgroup.into(),
            parents: vec![airlock_proto::v1::Process {
                pid: parent_pid,
                binary: "/bin/sh".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let cp = ["aws", "s3", "cp", "r.csv", "s3://reports-q3/"];
        let first = action_hash(&exec(&cp, 100, "/a.slice"));
        assert_eq!(
            first,
            action_hash(&exec(&cp, 4242, "/b.slice")),
            "same command from another shell"
        );
        assert_ne!(
            first,
            action_hash(&exec(
                &["aws", "s3", "cp", "r.csv", "s3://other/"],
                100,
                "/a.slice"
            ))
        );
        assert_eq!(first.len(), 64);
    }

    #[test]
    fn only_a_human_approval_starts_an_intent_grant() {
        use airlock_proto::v1::{Decision, DecisionCause, Grant, GrantScope};
        let hub = |state: RequestState, cause: DecisionCause, grant: Option<Grant>| {
            Settlement::Hub(DecisionEvent {
                id: "r1".into(),
                state: state as i32,
                decision: Some(Decision {
                    approvers: vec!["alice".into()],
                    cause: cause as i32,
                    grant,
                    ..Default::default()
                }),
            })
        };
        let once = Some(Grant {
            scope: GrantScope::Once as i32,
            ..Default::default()
        });
        let hour = Some(Grant {
            scope: GrantScope::Duration as i32,
            until_unix_ms: 99,
            ..Default::default()
        });
        let cases = [
            (
                "approvers, once",
                hub(RequestState::Approved, DecisionCause::Approvers, once),
                Some(None),
            ),
            (
                "approvers, for an hour",
                hub(
                    RequestState::Approved,
                    DecisionCause::Approvers,
                    hour.clone(),
                ),
                Some(Some(99)),
            ),
            (
                "an earlier duration grant at the hub",
                hub(RequestState::Approved, DecisionCause::Grant, hour),
                Some(Some(99)),
            ),
            (
                "allowed on timeout",
                hub(RequestState::Expired, DecisionCause::Expired, None),
                None,
            ),
            (
                "denied",
                hub(RequestState::Denied, DecisionCause::Approvers, None),
                None,
            ),
            ("policy allow", Settlement::Policy("ok".into()), None),
            ("fail open", Settlement::FailOpen, None),
            (
                "an intent-covered follow-up",
                Settlement::Intent {
                    request: "r0".into(),
                    approvers: vec!["alice".into()],
                    matched: "bucket s3://a".into(),
                },
                None,
            ),
        ];
        for (what, how, want) in cases {
            let got = intent_approval(&how);
            assert_eq!(got.as_ref().map(|(_, until)| *until), want, "{what}");
            if let Some((approvers, _)) = got {
                assert_eq!(approvers, ["alice"], "{what}");
            }
        }
    }
}
