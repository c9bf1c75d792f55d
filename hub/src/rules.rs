//! The approval rules, as pure functions over one request.
//!
//! They run inside [`crate::store::Store::update`], so each sees and changes one request
//! atomically, and they take `now` as an argument so tests need no clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use airlock_proto::v1::{
    ActionClass, ActionContext, ApprovalRequest, Decision, DecisionCause, Grant, GrantScope,
    Process, RequestState, Requirements, SubmitRequest, Verdict, Vote,
};

use crate::error::ApiError;
use crate::identity::Caller;
use crate::store::{GrantRecord, Mutation};

/// Longest TTL a rule may ask for.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest request id accepted.
const MAX_ID_LEN: usize = 128;
/// Longest short text field (names, host, hash, rule id...).
const MAX_NAME: usize = 512;
/// Longest free text field (one argv element, path, URL, impact, reason).
const MAX_TEXT: usize = 8192;
/// Most argv elements kept per process.
const MAX_ARGV: usize = 1024;
/// Most ancestors per action.
const MAX_PARENTS: usize = 64;
/// Largest sealed context.
const MAX_SEALED: usize = 256 * 1024;
/// Most approver groups a rule may require.
const MAX_GROUPS: usize = 16;
/// Largest quorum a group may require.
const MAX_QUORUM: u32 = 100;

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether `state` is final (anything but pending).
#[must_use]
pub fn is_final(state: i32) -> bool {
    state != RequestState::Pending as i32
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Validates an id chosen by an agent: 1-128 characters of `[A-Za-z0-9._:-]`.
///
/// # Errors
///
/// [`ApiError::InvalidArgument`] otherwise.
pub fn validate_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(
            "id must be 1-128 characters of A-Z a-z 0-9 . _ : -".to_owned(),
        ))
    }
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(ApiError::InvalidArgument(format!(
            "{field} is {} bytes; the limit is {max}",
            value.len()
        )));
    }
    Ok(())
}

fn check_process(field: &str, p: &Process) -> Result<(), ApiError> {
    check_len(&format!("{field}.user"), &p.user, MAX_NAME)?;
    check_len(&format!("{field}.comm"), &p.comm, MAX_NAME)?;
    check_len(&format!("{field}.binary"), &p.binary, MAX_TEXT)?;
    check_argv(&format!("{field}.argv"), &p.argv)
}

fn check_argv(field: &str, argv: &[String]) -> Result<(), ApiError> {
    if argv.len() > MAX_ARGV {
        return Err(ApiError::InvalidArgument(format!(
            "{field} has {} elements; the limit is {MAX_ARGV}",
            argv.len()
        )));
    }
    argv.iter().try_for_each(|a| check_len(field, a, MAX_TEXT))
}

fn known_enum<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E, ApiError> {
    E::try_from(value)
        .map_err(|_| ApiError::InvalidArgument(format!("{field}: unknown value {value}")))
}

/// Checks sizes and enum values of an agent's action, so one request cannot bloat the
/// store or every watcher's stream, and an enum from a newer client is refused rather
/// than misread.
///
/// # Errors
///
/// [`ApiError::InvalidArgument`] naming the first offending field.
pub fn validate_action(a: &ActionContext) -> Result<(), ApiError> {
    let class: ActionClass = known_enum("action.class", a.class)?;
    if class == ActionClass::Unspecified {
        return Err(ApiError::InvalidArgument(
            "action.class must be set".to_owned(),
        ));
    }
    if let Some(actor) = &a.actor {
        check_process("action.actor", actor)?;
    }
    if a.parents.len() > MAX_PARENTS {
        return Err(ApiError::InvalidArgument(format!(
            "action.parents has {} entries; the limit is {MAX_PARENTS}",
            a.parents.len()
        )));
    }
    a.parents
        .iter()
        .try_for_each(|p| check_process("action.parents", p))?;
    check_len("action.cgroup", &a.cgroup, MAX_TEXT)?;
    check_len("action.binary", &a.binary, MAX_TEXT)?;
    check_argv("action.argv", &a.argv)?;
    if let Some(d) = &a.destination {
        for (name, v, max) in [
            ("address", &d.address, MAX_NAME),
            ("hostname", &d.hostname, MAX_NAME),
            ("scheme", &d.scheme, MAX_NAME),
            ("url", &d.url, MAX_TEXT),
            ("bucket", &d.bucket, MAX_NAME),
            ("key", &d.key, MAX_TEXT),
            ("protocol", &d.protocol, MAX_NAME),
        ] {
            check_len(&format!("action.destination.{name}"), v, max)?;
        }
    }
    check_len("action.file", &a.file, MAX_TEXT)?;
    check_len("action.rule_id", &a.rule_id, MAX_NAME)?;
    check_len("action.rule_reason", &a.rule_reason, MAX_TEXT)?;
    check_len("action.severity", &a.severity, MAX_NAME)?;
    check_len("action.impact", &a.impact, MAX_TEXT)?;
    check_len("action.action_hash", &a.action_hash, MAX_NAME)?;
    if a.sealed_context.len() > MAX_SEALED {
        return Err(ApiError::InvalidArgument(format!(
            "action.sealed_context is {} bytes; the limit is {MAX_SEALED}",
            a.sealed_context.len()
        )));
    }
    Ok(())
}

fn validate_requirements(r: &Requirements) -> Result<(), ApiError> {
    let _: Verdict = known_enum("requirements.on_timeout", r.on_timeout)?;
    let _: GrantScope = known_enum("requirements.max_grant", r.max_grant)?;
    if r.groups.len() > MAX_GROUPS {
        return Err(ApiError::InvalidArgument(format!(
            "requirements.groups has {} entries; the limit is {MAX_GROUPS}",
            r.groups.len()
        )));
    }
    for g in &r.groups {
        if g.group.trim().is_empty() {
            return Err(ApiError::InvalidArgument(
                "requirements.groups: empty group name".to_owned(),
            ));
        }
        check_len("requirements.groups.group", &g.group, MAX_NAME)?;
        if g.min_approvals > MAX_QUORUM {
            return Err(ApiError::InvalidArgument(format!(
                "requirements.groups.min_approvals above {MAX_QUORUM}"
            )));
        }
    }
    if r.min_denials > MAX_QUORUM {
        return Err(ApiError::InvalidArgument(format!(
            "requirements.min_denials above {MAX_QUORUM}"
        )));
    }
    Ok(())
}

/// Builds the pending request an agent's `Submit` describes.
///
/// # Errors
///
/// [`ApiError::InvalidArgument`] for a bad id, a missing or oversized action, an unknown
/// enum value or an excessive TTL.
pub fn new_request(
    agent: &Caller,
    submit: SubmitRequest,
    now: i64,
    default_ttl: Duration,
) -> Result<ApprovalRequest, ApiError> {
    validate_id(&submit.id)?;
    let Some(action) = submit.action else {
        return Err(ApiError::InvalidArgument("action is required".to_owned()));
    };
    validate_action(&action)?;
    check_len("host", &submit.host, MAX_NAME)?;
    check_len("requester", &submit.requester, MAX_NAME)?;
    let requirements = submit.requirements.unwrap_or_default();
    validate_requirements(&requirements)?;
    let ttl = match requirements.ttl_seconds {
        0 => default_ttl,
        secs => Duration::from_secs(u64::from(secs)),
    };
    if ttl > MAX_TTL {
        return Err(ApiError::InvalidArgument(
            "ttl_seconds exceeds 7 days".to_owned(),
        ));
    }
    Ok(ApprovalRequest {
        id: submit.id,
        agent_id: agent.principal.clone(),
        host: submit.host,
        action: Some(action),
        state: RequestState::Pending as i32,
        created_unix_ms: now,
        expires_unix_ms: now.saturating_add(duration_ms(ttl)),
        votes: Vec::new(),
        decision: None,
        revision: 0,
        requirements: Some(requirements),
        requester: submit.requester,
    })
}

/// Whether `candidate` (a re-submission) carries the same payload as `stored`.
#[must_use]
pub fn same_submission(stored: &ApprovalRequest, candidate: &ApprovalRequest) -> bool {
    stored.agent_id == candidate.agent_id
        && stored.host == candidate.host
        && stored.action == candidate.action
        && stored.requirements == candidate.requirements
        && stored.requester == candidate.requester
}

/// One approver's `Decide`, validated into a vote.
#[derive(Clone, Debug)]
pub struct Ballot {
    /// ALLOW or DENY.
    pub verdict: Verdict,
    /// Why (required for DENY).
    pub reason: String,
    /// Grant offered with an ALLOW.
    pub scope: GrantScope,
    /// Seconds for a DURATION grant.
    pub duration_seconds: u32,
    /// "cli", "slack", "web".
    pub channel: String,
}

fn ensure_pending(request: &ApprovalRequest, now: i64) -> Result<(), ApiError> {
    if is_final(request.state) {
        let state = RequestState::try_from(request.state).map_or("final", |s| state_name(s));
        return Err(ApiError::FailedPrecondition(format!(
            "request is {state}, not pending"
        )));
    }
    if now >= request.expires_unix_ms {
        return Err(ApiError::FailedPrecondition(
            "request has expired".to_owned(),
        ));
    }
    Ok(())
}

/// Lower-case name of a state, as the CLI and errors show it.
#[must_use]
pub fn state_name(state: RequestState) -> &'static str {
    match state {
        RequestState::Unspecified => "unspecified",
        RequestState::Pending => "pending",
        RequestState::Approved => "approved",
        RequestState::Denied => "denied",
        RequestState::Expired => "expired",
        RequestState::Cancelled => "cancelled",
    }
}

/// Records `caller`'s vote on `request` and decides it when the rule is met.
///
/// A DENY from any eligible approver denies. Without groups one ALLOW approves; with
/// groups every group needs `min_approvals` distinct members voting ALLOW. A principal's
/// repeated ALLOW is not counted again.
///
/// # Errors
///
/// [`ApiError::FailedPrecondition`] when the request is final or past its deadline,
/// [`ApiError::PermissionDenied`] for self-approval or a caller outside every required
/// group, [`ApiError::InvalidArgument`] for a missing reason or a grant the rule forbids.
pub fn vote(
    request: &mut ApprovalRequest,
    caller: &Caller,
    ballot: Ballot,
    now: i64,
) -> Result<Mutation, ApiError> {
    caller.require_approver()?;
    ensure_pending(request, now)?;
    // Case-insensitive (Unicode-aware): "Alice" and "alice" are one person.
    if caller.principal.to_lowercase() == request.requester.trim().to_lowercase() {
        return Err(ApiError::PermissionDenied(
            "the requester cannot decide their own request",
        ));
    }
    let req = request.requirements.clone().unwrap_or_default();
    if !req.groups.is_empty()
        && !req
            .groups
            .iter()
            .any(|g| caller.groups.iter().any(|c| c == &g.group))
    {
        return Err(ApiError::PermissionDenied(
            "caller is in none of the approver groups this request needs",
        ));
    }
    let reason = ballot.reason.trim().to_owned();
    let scope = match ballot.verdict {
        Verdict::Unspecified => {
            return Err(ApiError::InvalidArgument(
                "verdict must be ALLOW or DENY".to_owned(),
            ));
        }
        Verdict::Deny => {
            if reason.is_empty() {
                return Err(ApiError::InvalidArgument(
                    "a denial needs a reason".to_owned(),
                ));
            }
            GrantScope::Unspecified
        }
        Verdict::Allow => {
            if req.reason_required_for_approve && reason.is_empty() {
                return Err(ApiError::InvalidArgument(
                    "this rule requires a reason for approvals".to_owned(),
                ));
            }
            let scope = allowed_scope(&req, ballot.scope, ballot.duration_seconds)?;
            let hashless = request
                .action
                .as_ref()
                .is_none_or(|a| a.action_hash.is_empty());
            if scope == GrantScope::Duration && hashless {
                return Err(ApiError::InvalidArgument(
                    "this request has no action hash to bind a duration grant to".to_owned(),
                ));
            }
            scope
        }
    };

    let me = caller.principal.to_lowercase();
    if let Some(earlier) = request
        .votes
        .iter()
        .find(|v| v.approver.to_lowercase() == me)
    {
        // One person, one vote, whichever certificate or channel they use: the same vote
        // again changes nothing; a different one is refused.
        if earlier.verdict == ballot.verdict as i32 {
            return Ok(Mutation::Unchanged);
        }
        return Err(ApiError::FailedPrecondition(
            "you already voted on this request".to_owned(),
        ));
    }
    request.votes.push(Vote {
        approver: caller.principal.clone(),
        verdict: ballot.verdict as i32,
        reason: reason.clone(),
        at_unix_ms: now,
        channel: ballot.channel,
        scope: scope as i32,
        duration_seconds: if scope == GrantScope::Duration {
            ballot.duration_seconds
        } else {
            0
        },
        groups: caller.groups.clone(),
    });

    let denials: Vec<&Vote> = request
        .votes
        .iter()
        .filter(|v| v.verdict == Verdict::Deny as i32)
        .collect();
    if ballot.verdict == Verdict::Deny {
        if denials.len() >= usize::try_from(req.min_denials.max(1)).unwrap_or(usize::MAX) {
            let reason = denials
                .iter()
                .map(|v| v.reason.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let approvers = denials.iter().map(|v| v.approver.clone()).collect();
            request.state = RequestState::Denied as i32;
            request.decision = Some(Decision {
                verdict: Verdict::Deny as i32,
                reason,
                approvers,
                decided_unix_ms: now,
                grant: None,
                cause: DecisionCause::Approvers as i32,
                grant_request_id: String::new(),
            });
        }
    } else if quorum_met(&req, &request.votes) {
        approve(request, now);
    }
    Ok(Mutation::Changed)
}

/// The grant scope an ALLOW may carry under `req`.
fn allowed_scope(
    req: &Requirements,
    scope: GrantScope,
    duration_seconds: u32,
) -> Result<GrantScope, ApiError> {
    match scope {
        GrantScope::Unspecified | GrantScope::Once => Ok(GrantScope::Once),
        GrantScope::Duration => {
            if duration_seconds == 0 {
                return Err(ApiError::InvalidArgument(
                    "a duration grant needs duration_seconds".to_owned(),
                ));
            }
            if req.max_grant == GrantScope::Once as i32 {
                return Err(ApiError::InvalidArgument(
                    "this rule allows one-shot grants only".to_owned(),
                ));
            }
            if req.max_grant_seconds != 0 && duration_seconds > req.max_grant_seconds {
                return Err(ApiError::InvalidArgument(format!(
                    "this rule allows grants of at most {} seconds",
                    req.max_grant_seconds
                )));
            }
            Ok(GrantScope::Duration)
        }
    }
}

fn allows(votes: &[Vote]) -> impl Iterator<Item = &Vote> {
    votes.iter().filter(|v| v.verdict == Verdict::Allow as i32)
}

/// Whether the ALLOW votes satisfy every group's quorum (any one ALLOW without groups).
fn quorum_met(req: &Requirements, votes: &[Vote]) -> bool {
    if req.groups.is_empty() {
        return allows(votes).next().is_some();
    }
    req.groups.iter().all(|group| {
        let mut members: Vec<String> = allows(votes)
            .filter(|v| v.groups.iter().any(|g| g == &group.group))
            .map(|v| v.approver.to_lowercase())
            .collect();
        members.sort_unstable();
        members.dedup();
        members.len() >= usize::try_from(group.min_approvals.max(1)).unwrap_or(usize::MAX)
    })
}

/// Marks `request` approved with the narrowest grant any approver offered.
fn approve(request: &mut ApprovalRequest, now: i64) {
    let votes: Vec<&Vote> = allows(&request.votes).collect();
    let narrowest_duration = votes
        .iter()
        .map(|v| {
            if v.scope == GrantScope::Duration as i32 {
                Some(v.duration_seconds)
            } else {
                None
            }
        })
        .try_fold(u32::MAX, |acc, d| d.map(|d| acc.min(d)));
    let action_hash = request
        .action
        .as_ref()
        .map(|a| a.action_hash.clone())
        .unwrap_or_default();
    let grant = match narrowest_duration {
        Some(secs) => Grant {
            scope: GrantScope::Duration as i32,
            until_unix_ms: now.saturating_add(i64::from(secs).saturating_mul(1000)),
            action_hash,
        },
        None => Grant {
            scope: GrantScope::Once as i32,
            until_unix_ms: 0,
            action_hash,
        },
    };
    let reason = votes
        .iter()
        .map(|v| v.reason.as_str())
        .filter(|r| !r.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let approvers = votes.iter().map(|v| v.approver.clone()).collect();
    request.state = RequestState::Approved as i32;
    request.decision = Some(Decision {
        verdict: Verdict::Allow as i32,
        reason,
        approvers,
        decided_unix_ms: now,
        grant: Some(grant),
        cause: DecisionCause::Approvers as i32,
        grant_request_id: String::new(),
    });
}

/// Approves a new request because an active DURATION grant for the same exact action,
/// agent and requester covers it; the decision names the grant's request.
pub fn apply_grant(request: &mut ApprovalRequest, grant: &GrantRecord, now: i64) {
    request.state = RequestState::Approved as i32;
    request.decision = Some(Decision {
        verdict: Verdict::Allow as i32,
        reason: format!("covered by the grant of request {}", grant.request_id),
        approvers: Vec::new(),
        decided_unix_ms: now,
        grant: Some(Grant {
            scope: GrantScope::Duration as i32,
            until_unix_ms: grant.until_unix_ms,
            action_hash: grant.action_hash.clone(),
        }),
        cause: DecisionCause::Grant as i32,
        grant_request_id: grant.request_id.clone(),
    });
}

/// Applies the on-timeout outcome when `request` is pending and past its deadline.
///
/// # Errors
///
/// Never; the `Result` fits [`crate::store::Store::update`].
pub fn expire(request: &mut ApprovalRequest, now: i64) -> Result<Mutation, ApiError> {
    if is_final(request.state) || now < request.expires_unix_ms {
        return Ok(Mutation::Unchanged);
    }
    let on_timeout = request
        .requirements
        .as_ref()
        .map_or(Verdict::Unspecified as i32, |r| r.on_timeout);
    // Only an explicit ALLOW lets a timeout through; everything else denies.
    let allow = on_timeout == Verdict::Allow as i32;
    let action_hash = request
        .action
        .as_ref()
        .map(|a| a.action_hash.clone())
        .unwrap_or_default();
    request.state = RequestState::Expired as i32;
    request.decision = Some(Decision {
        verdict: if allow { Verdict::Allow } else { Verdict::Deny } as i32,
        reason: "no decision before the deadline".to_owned(),
        approvers: Vec::new(),
        decided_unix_ms: now,
        grant: allow.then_some(Grant {
            scope: GrantScope::Once as i32,
            until_unix_ms: 0,
            action_hash,
        }),
        cause: DecisionCause::Expired as i32,
        grant_request_id: String::new(),
    });
    Ok(Mutation::Changed)
}

/// Withdraws a pending request on behalf of the agent that submitted it.
///
/// Cancelling an already-cancelled request changes nothing.
///
/// # Errors
///
/// [`ApiError::PermissionDenied`] for anyone but the submitting agent,
/// [`ApiError::FailedPrecondition`] when the request is otherwise final.
pub fn cancel(
    request: &mut ApprovalRequest,
    caller: &Caller,
    reason: &str,
    now: i64,
) -> Result<Mutation, ApiError> {
    caller.require_agent()?;
    if request.agent_id != caller.principal {
        return Err(ApiError::PermissionDenied(
            "only the submitting agent may cancel a request",
        ));
    }
    if request.state == RequestState::Cancelled as i32 {
        return Ok(Mutation::Unchanged);
    }
    if is_final(request.state) {
        return ensure_pending(request, now).map(|()| Mutation::Unchanged);
    }
    request.state = RequestState::Cancelled as i32;
    request.decision = Some(Decision {
        verdict: Verdict::Deny as i32,
        reason: if reason.trim().is_empty() {
            "cancelled by the agent".to_owned()
        } else {
            reason.trim().to_owned()
        },
        approvers: Vec::new(),
        decided_unix_ms: now,
        grant: None,
        cause: DecisionCause::Cancelled as i32,
        grant_request_id: String::new(),
    });
    Ok(Mutation::Changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Role;
    use airlock_proto::v1::GroupQuorum;

    fn caller(name: &str, role: Role, groups: &[&str]) -> Caller {
        Caller {
            principal: name.to_owned(),
            role,
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn pending(requirements: Requirements) -> ApprovalRequest {
        let submit = SubmitRequest {
            id: "r1".to_owned(),
            host: "h".to_owned(),
            action: Some(ActionContext {
                class: ActionClass::Exec as i32,
                action_hash: "abc".to_owned(),
                ..ActionContext::default()
            }),
            requirements: Some(requirements),
            requester: "Mallory".to_owned(),
        };
        new_request(
            &caller("agent", Role::Agent, &[]),
            submit,
            1_000,
            Duration::from_secs(60),
        )
        .unwrap()
    }

    fn allow(scope: GrantScope, secs: u32) -> Ballot {
        Ballot {
            verdict: Verdict::Allow,
            reason: String::new(),
            scope,
            duration_seconds: secs,
            channel: "cli".to_owned(),
        }
    }

    #[test]
    fn narrowest_grant_wins_in_a_group_quorum() {
        let mut r = pending(Requirements {
            groups: vec![GroupQuorum {
                group: "sre".to_owned(),
                min_approvals: 2,
            }],
            ..Requirements::default()
        });
        let a = caller("alice", Role::Approver, &["sre"]);
        let b = caller("bob", Role::Admin, &["sre"]);
        vote(&mut r, &a, allow(GrantScope::Duration, 3600), 2_000).unwrap();
        assert_eq!(r.state, RequestState::Pending as i32);
        vote(&mut r, &b, allow(GrantScope::Duration, 60), 3_000).unwrap();
        assert_eq!(r.state, RequestState::Approved as i32);
        let grant = r.decision.unwrap().grant.unwrap();
        assert_eq!(grant.scope, GrantScope::Duration as i32);
        assert_eq!(grant.until_unix_ms, 63_000);
        assert_eq!(grant.action_hash, "abc");
    }

    #[test]
    fn refuses_outsiders_self_approval_and_forbidden_grants() {
        let mut r = pending(Requirements {
            max_grant: GrantScope::Once as i32,
            groups: vec![GroupQuorum {
                group: "sre".to_owned(),
                min_approvals: 1,
            }],
            ..Requirements::default()
        });
        let outsider = caller("eve", Role::Approver, &["web"]);
        assert!(matches!(
            vote(&mut r, &outsider, allow(GrantScope::Once, 0), 2_000),
            Err(ApiError::PermissionDenied(_))
        ));
        let selfie = caller("mallory", Role::Admin, &["sre"]);
        assert!(matches!(
            vote(&mut r, &selfie, allow(GrantScope::Once, 0), 2_000),
            Err(ApiError::PermissionDenied(_))
        ));
        let ok = caller("alice", Role::Approver, &["sre"]);
        assert!(matches!(
            vote(&mut r, &ok, allow(GrantScope::Duration, 10), 2_000),
            Err(ApiError::InvalidArgument(_))
        ));
        assert!(
            matches!(
                vote(&mut r, &ok, allow(GrantScope::Once, 0), 61_000),
                Err(ApiError::FailedPrecondition(_))
            ),
            "past the deadline"
        );
        assert!(r.votes.is_empty());
    }

    #[test]
    fn expiry_applies_on_timeout() {
        let mut r = pending(Requirements {
            on_timeout: Verdict::Allow as i32,
            ..Requirements::default()
        });
        assert_eq!(expire(&mut r, 60_999).unwrap(), Mutation::Unchanged);
        assert_eq!(expire(&mut r, 61_000).unwrap(), Mutation::Changed);
        let d = r.decision.unwrap();
        assert_eq!(d.verdict, Verdict::Allow as i32);
        assert_eq!(d.cause, DecisionCause::Expired as i32);
    }
}
