//! Audit records for held actions, built from the *masked* context only (issue #7).
//!
//! Attempt, decision and outcome of one held action share the request id as correlation
//! id (`metadata.uid` in the OCSF-shaped record). The attempt carries the masked context
//! as the approver saw it and the sealed raw context (base64) for auditors.

use std::collections::BTreeMap;

use airlock_audit::{
    Action, Actor, Attempt, AuditEvent, Decision, Outcome, OutcomeKind, PolicyRef, Verdict,
};
use airlock_proto::v1::{
    ActionClass, ActionContext, DecisionCause, DecisionEvent, GrantScope, Requirements,
};

use crate::redact::{Redacted, class_name};

/// Policy version recorded when no policy file is configured (the watch list decides).
pub const NO_POLICY: &str = "none";

/// Who asked and from where, for the attempt record.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// This agent's principal.
    pub agent_id: &'a str,
    /// Host name.
    pub host: &'a str,
    /// User on whose behalf the action runs.
    pub requester: &'a str,
    /// Thread that made the syscall.
    pub tid: u32,
    /// Hash of the policy that judged the action ([`NO_POLICY`] without one).
    pub policy_version: &'a str,
}

/// How a held action was settled.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// The hub reported a final state.
    Hub(DecisionEvent),
    /// The agent's own TTL timer ran out.
    Expired,
    /// The request could not be submitted (fail mode: deny).
    HubUnreachable(String),
    /// The agent is shutting down.
    Shutdown(String),
    /// The policy decided on its own (allow or deny rule); the reason is the rule's.
    Policy(String),
    /// The hub stayed unreachable and the fail mode is `allow`: released without a human.
    FailOpen,
    /// Covered by the intent grant of an approved exec (DESIGN §6): no new request.
    Intent {
        /// The approved exec's request id.
        request: String,
        /// Who approved it.
        approvers: Vec<String>,
        /// What the follow-up matched (masked), e.g. "bucket s3://reports-q3".
        matched: String,
    },
    /// The same process repeated an action a human denied moments ago (a client's retry).
    RepeatDenied,
}

/// The actor of a masked context.
pub fn actor(c: &ActionContext, tid: u32) -> Actor {
    let p = c.actor.clone().unwrap_or_default();
    Actor {
        pid: p.pid,
        tid,
        uid: p.uid,
        exe: p.binary,
        cmd_line: p.argv.join(" "),
        cgroup: (!c.cgroup.is_empty()).then(|| c.cgroup.clone()),
    }
}

/// The action of a masked context.
pub fn action(c: &ActionContext) -> Action {
    match ActionClass::try_from(c.class) {
        Ok(ActionClass::Connect | ActionClass::Send) => {
            let d = c.destination.clone().unwrap_or_default();
            Action::Connect {
                ip: d.address,
                port: u16::try_from(d.port).unwrap_or(0),
                protocol: if d.protocol.is_empty() {
                    "tcp".into()
                } else {
                    d.protocol
                },
                hostname: (!d.hostname.is_empty()).then_some(d.hostname),
            }
        }
        Ok(ActionClass::Open) => Action::FileOpen {
            path: c.file.clone(),
            write: false,
        },
        Ok(ActionClass::Exec | ActionClass::Unspecified) | Err(_) => Action::Exec {
            path: c.binary.clone(),
            argv: c.argv.clone(),
        },
    }
}

fn policy(c: &ActionContext, version: &str) -> Option<PolicyRef> {
    (!c.rule_id.is_empty()).then(|| PolicyRef {
        rule: c.rule_id.clone(),
        version: version.into(),
    })
}

/// ATTEMPT: the masked context and the sealed raw context.
pub fn attempt(id: &str, r: &Redacted, origin: Origin<'_>) -> AuditEvent {
    let c = &r.context;
    let mut m = BTreeMap::new();
    m.insert("class".to_owned(), class_name(c.class).to_owned());
    m.insert("agent".to_owned(), origin.agent_id.to_owned());
    m.insert("host".to_owned(), origin.host.to_owned());
    m.insert("requester".to_owned(), origin.requester.to_owned());
    m.insert("rule_reason".to_owned(), c.rule_reason.clone());
    m.insert("severity".to_owned(), c.severity.clone());
    m.insert("impact".to_owned(), c.impact.clone());
    if !c.parents.is_empty() {
        let parents: Vec<String> = c
            .parents
            .iter()
            .map(|p| {
                format!(
                    "{} {}",
                    p.pid,
                    if p.argv.is_empty() {
                        &p.binary
                    } else {
                        &p.argv[0]
                    }
                )
            })
            .collect();
        m.insert("parents".to_owned(), parents.join(" < "));
        for (i, p) in c.parents.iter().enumerate() {
            m.insert(format!("parents[{i}].cmd_line"), p.argv.join(" "));
        }
    }
    if let Some(d) = &c.destination {
        for (k, v) in [
            ("url", &d.url),
            ("bucket", &d.bucket),
            ("key", &d.key),
            ("scheme", &d.scheme),
        ] {
            if !v.is_empty() {
                m.insert(format!("destination.{k}"), v.clone());
            }
        }
    }
    if !c.action_hash.is_empty() {
        m.insert("action_hash".to_owned(), c.action_hash.clone());
    }
    if !r.findings.is_empty() {
        let list: Vec<String> = r
            .findings
            .iter()
            .map(|f| format!("{}={}", f.field, f.placeholder))
            .collect();
        m.insert("findings".to_owned(), list.join(","));
    }
    m.insert("sealed".to_owned(), r.sealed.is_some().to_string());
    AuditEvent::Attempt(Attempt {
        correlation_id: id.to_owned(),
        actor: actor(c, origin.tid),
        action: action(c),
        policy: policy(c, origin.policy_version),
        masked_context: m,
        sealed_context: r.sealed.clone(),
    })
}

/// DECISION: who decided (approvers, or the agent itself for expiry, an unreachable hub
/// or shutdown), with which quorum, reason and grant scope.
pub fn decision(
    id: &str,
    c: &ActionContext,
    requirements: &Requirements,
    allow: bool,
    how: &Settlement,
    policy_version: &str,
) -> AuditEvent {
    let required = requirements
        .groups
        .iter()
        .map(|g| g.min_approvals.max(1))
        .sum::<u32>()
        .max(1);
    let (decided_by, channel, reason, scope) = match how {
        Settlement::Hub(event) => {
            let d = event.decision.clone().unwrap_or_default();
            let channel = match DecisionCause::try_from(d.cause) {
                Ok(DecisionCause::Expired) => "expiry",
                Ok(DecisionCause::Cancelled) => "cancelled",
                // DecisionEvent does not carry the votes' channels (cli/slack/web); the
                // hub's own record has them.
                _ => "hub",
            };
            let scope = match d
                .grant
                .as_ref()
                .map(|g| (GrantScope::try_from(g.scope), g.until_unix_ms))
            {
                _ if !allow => "none".to_owned(),
                Some((Ok(GrantScope::Duration), until)) => format!("until:{until}"),
                _ => "once".to_owned(),
            };
            (d.approvers, channel, d.reason, scope)
        }
        Settlement::Expired => (
            Vec::new(),
            "expiry",
            "no decision within the TTL".into(),
            "none".into(),
        ),
        Settlement::HubUnreachable(error) => (
            Vec::new(),
            "agent",
            format!("hub unreachable, fail mode deny: {error}"),
            "none".into(),
        ),
        Settlement::Shutdown(why) => (Vec::new(), "agent", why.clone(), "none".into()),
        Settlement::Policy(reason) => (Vec::new(), "policy", reason.clone(), "none".into()),
        Settlement::RepeatDenied => (
            Vec::new(),
            "agent",
            "the same process repeated an action a human denied moments ago: denied without asking"
                .into(),
            "none".into(),
        ),
        Settlement::FailOpen => (
            Vec::new(),
            "agent",
            "hub unreachable, fail mode allow: released without a human decision".into(),
            "none".into(),
        ),
        Settlement::Intent {
            request,
            approvers,
            matched,
        } => (
            approvers.clone(),
            "intent",
            format!(
                "covered by the intent grant of approved request {request}: {matched} named in the approved command"
            ),
            format!("intent:{request}"),
        ),
    };
    let met = u32::try_from(decided_by.len()).unwrap_or(u32::MAX);
    AuditEvent::Decision(Decision {
        correlation_id: id.to_owned(),
        verdict: if allow { Verdict::Allow } else { Verdict::Deny },
        decided_by,
        channel: channel.to_owned(),
        quorum_required: required,
        quorum_met: met,
        reason,
        grant_scope: scope,
        policy: policy(c, policy_version),
    })
}

/// OUTCOME: what became of the held syscall.
pub fn outcome(
    id: &str,
    c: &ActionContext,
    tid: u32,
    kind: OutcomeKind,
    detail: &str,
) -> AuditEvent {
    AuditEvent::Outcome(Outcome {
        correlation_id: id.to_owned(),
        actor: actor(c, tid),
        action: action(c),
        outcome: kind,
        detail: (!detail.is_empty()).then(|| detail.to_owned()),
    })
}

/// The outcome kind for a release with `allow`, given how it was settled.
pub fn outcome_kind(allow: bool, how: &Settlement) -> OutcomeKind {
    let hub_expired = matches!(how, Settlement::Hub(e)
        if e.decision.as_ref().is_some_and(|d| d.cause == DecisionCause::Expired as i32));
    match (allow, how) {
        (true, _) => OutcomeKind::Completed,
        (false, Settlement::Expired) => OutcomeKind::Expired,
        (false, _) if hub_expired => OutcomeKind::Expired,
        (false, _) => OutcomeKind::Denied,
    }
}

#[cfg(test)]
mod tests {
    use airlock_audit::{AuditConfig, AuditLog, SigningKey};
    use airlock_proto::v1::{Decision as ProtoDecision, Grant, GroupQuorum, Process, RequestState};
    use serde_json::Value;

    use super::*;
    use crate::redact::FieldFinding;

    fn masked() -> Redacted {
        Redacted {
            context: ActionContext {
                class: ActionClass::Exec as i32,
                actor: Some(Process {
                    pid: 42,
                    uid: 1000,
                    binary: "/usr/bin/bash".into(),
                    argv: vec!["bash".into()],
                    ..Default::default()
                }),
                binary: "/usr/bin/aws".into(),
                argv: vec!["aws".into(), "--password".into(), "[PASSWORD#ab12]".into()],
                cgroup: "/ai.slice".into(),
                rule_id: "exec.watch:aws".into(),
                impact: "runs aws --password [PASSWORD#ab12]".into(),
                ..Default::default()
            },
            findings: vec![FieldFinding {
                field: "argv[2]".into(),
                placeholder: "[PASSWORD#ab12]".into(),
            }],
            sealed: Some(b"{\"sealed\":1}".to_vec()),
        }
    }

    fn origin() -> Origin<'static> {
        Origin {
            agent_id: "agent-1",
            host: "h1",
            requester: "dev",
            tid: 43,
            policy_version: NO_POLICY,
        }
    }

    fn hub_event(
        state: RequestState,
        cause: DecisionCause,
        approvers: &[&str],
        grant: Option<Grant>,
    ) -> Settlement {
        Settlement::Hub(DecisionEvent {
            id: "r1".into(),
            state: state as i32,
            decision: Some(ProtoDecision {
                approvers: approvers.iter().map(|s| (*s).to_owned()).collect(),
                reason: "looks fine".into(),
                cause: cause as i32,
                grant,
                ..Default::default()
            }),
        })
    }

    /// Writes events through the real log and returns the parsed lines of the given kinds.
    fn written(events: &[AuditEvent]) -> Vec<Value> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = AuditLog::open(
            dir.path(),
            AuditConfig::default(),
            SigningKey::generate().expect("key"),
        )
        .expect("open");
        for e in events {
            log.append(e).expect("append");
        }
        log.close().expect("close");
        airlock_audit::writer::log_files(dir.path())
            .expect("files")
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .expect("read")
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .map(|l| serde_json::from_str::<Value>(&l).expect("json"))
            .filter(|v| matches!(v["kind"].as_str(), Some("attempt" | "decision" | "outcome")))
            .collect()
    }

    #[test]
    fn attempt_decision_outcome_share_the_correlation_id_and_carry_only_masked_text() {
        let r = masked();
        let how = hub_event(
            RequestState::Approved,
            DecisionCause::Approvers,
            &["alice", "bob"],
            Some(Grant {
                scope: GrantScope::Once as i32,
                ..Default::default()
            }),
        );
        let req = Requirements {
            groups: vec![GroupQuorum {
                group: "sre".into(),
                min_approvals: 2,
            }],
            ..Default::default()
        };
        let lines = written(&[
            attempt("r1", &r, origin()),
            decision("r1", &r.context, &req, true, &how, NO_POLICY),
            outcome(
                "r1",
                &r.context,
                43,
                outcome_kind(true, &how),
                "verdict delivered",
            ),
        ]);
        assert_eq!(lines.len(), 3);
        for l in &lines {
            assert_eq!(l["metadata"]["uid"], "r1", "{l}");
        }
        let a = &lines[0]["unmapped"]["airlock"];
        assert_eq!(
            lines[0]["process"]["cmd_line"],
            "aws --password [PASSWORD#ab12]"
        );
        assert_eq!(lines[0]["actor"]["process"]["pid"], 42);
        assert_eq!(lines[0]["actor"]["process"]["tid"], 43);
        assert_eq!(a["masked_context"]["findings"], "argv[2]=[PASSWORD#ab12]");
        assert_eq!(a["masked_context"]["requester"], "dev");
        assert_eq!(a["policy"]["rule"], "exec.watch:aws");
        assert!(a["sealed_context"].as_str().is_some_and(|s| !s.is_empty()));
        let d = &lines[1]["unmapped"]["airlock"];
        assert_eq!(d["verdict"], "allowed");
        assert_eq!(d["decided_by"], serde_json::json!(["alice", "bob"]));
        assert_eq!(d["quorum"], serde_json::json!({"required": 2, "met": 2}));
        assert_eq!(d["grant_scope"], "once");
        assert_eq!(d["reason"], "looks fine");
        assert_eq!(lines[2]["unmapped"]["airlock"]["outcome"], "completed");
    }

    #[test]
    fn local_settlements_name_the_agent_and_deny() {
        let r = masked();
        let req = Requirements::default();
        let AuditEvent::Decision(d) = decision(
            "r1",
            &r.context,
            &req,
            false,
            &Settlement::Expired,
            NO_POLICY,
        ) else {
            panic!()
        };
        assert_eq!(
            (
                d.verdict,
                d.channel.as_str(),
                d.grant_scope.as_str(),
                d.quorum_required
            ),
            (Verdict::Deny, "expiry", "none", 1)
        );
        assert!(d.decided_by.is_empty());
        let AuditEvent::Decision(d) = decision(
            "r1",
            &r.context,
            &req,
            false,
            &Settlement::HubUnreachable("refused".into()),
            NO_POLICY,
        ) else {
            panic!()
        };
        assert_eq!(d.channel, "agent");
        assert!(d.reason.contains("refused"));
        assert_eq!(
            outcome_kind(false, &Settlement::Expired),
            OutcomeKind::Expired
        );
        assert_eq!(
            outcome_kind(false, &Settlement::Shutdown("x".into())),
            OutcomeKind::Denied
        );
        let hub_expired = hub_event(RequestState::Expired, DecisionCause::Expired, &[], None);
        assert_eq!(outcome_kind(false, &hub_expired), OutcomeKind::Expired);
        let AuditEvent::Decision(d) =
            decision("r1", &r.context, &req, false, &hub_expired, NO_POLICY)
        else {
            panic!()
        };
        assert_eq!(d.channel, "expiry");
        let dur = hub_event(
            RequestState::Approved,
            DecisionCause::Approvers,
            &["a"],
            Some(Grant {
                scope: GrantScope::Duration as i32,
                until_unix_ms: 99,
                ..Default::default()
            }),
        );
        let AuditEvent::Decision(d) = decision("r1", &r.context, &req, true, &dur, NO_POLICY)
        else {
            panic!()
        };
        assert_eq!(d.grant_scope, "until:99");
    }

    #[test]
    fn connect_and_open_contexts_map_to_their_actions() {
        let mut c = masked().context;
        c.class = ActionClass::Connect as i32;
        c.destination = Some(airlock_proto::v1::Destination {
            address: "10.0.0.1".into(),
            port: 443,
            hostname: "s3.example".into(),
            ..Default::default()
        });
        assert_eq!(
            action(&c),
            Action::Connect {
                ip: "10.0.0.1".into(),
                port: 443,
                protocol: "tcp".into(),
                hostname: Some("s3.example".into())
            }
        );
        c.class = ActionClass::Open as i32;
        c.file = "/home/dev/.aws/credentials".into();
        assert_eq!(
            action(&c),
            Action::FileOpen {
                path: "/home/dev/.aws/credentials".into(),
                write: false
            }
        );
    }
}
