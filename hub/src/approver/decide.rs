//! `approver approve` / `approver deny`: cast a vote.

use std::io::Write;
use std::time::Duration;

use airlock_proto::v1::{ApprovalRequest, DecideRequest, GrantScope, RequestState, Verdict};

use super::output::{self, RequestOut};
use super::{ApproverError, Outcome, Session};

/// Longest `--for` accepted client-side (the rule may allow less).
const MAX_GRANT_SECONDS: u32 = 30 * 24 * 3600;

/// Approves `id`, once or for `duration`.
pub(super) async fn approve<W: Write + Send>(
    session: &mut Session<'_, W>,
    id: &str,
    reason: String,
    duration: Option<Duration>,
) -> Result<Outcome, ApproverError> {
    let (scope, seconds) = match duration {
        None => (GrantScope::Once, 0),
        Some(d) => {
            let secs = u32::try_from(d.as_secs())
                .ok()
                .filter(|s| (1..=MAX_GRANT_SECONDS).contains(s))
                .ok_or(ApproverError::InvalidDuration {
                    max: MAX_GRANT_SECONDS,
                })?;
            (GrantScope::Duration, secs)
        }
    };
    cast(session, id, Verdict::Allow, reason, scope, seconds).await
}

/// Denies `id`.
pub(super) async fn deny<W: Write + Send>(
    session: &mut Session<'_, W>,
    id: &str,
    reason: String,
) -> Result<Outcome, ApproverError> {
    cast(
        session,
        id,
        Verdict::Deny,
        reason,
        GrantScope::Unspecified,
        0,
    )
    .await
}

async fn cast<W: Write + Send>(
    session: &mut Session<'_, W>,
    id: &str,
    verdict: Verdict,
    reason: String,
    scope: GrantScope,
    duration_seconds: u32,
) -> Result<Outcome, ApproverError> {
    // Resolve a prefix to the full id first, so the vote names exactly one request.
    let target = match session.resolve(id).await? {
        Ok(request) => request,
        Err(outcome) => return Ok(outcome),
    };
    let verb = if verdict == Verdict::Allow {
        "approve"
    } else {
        "deny"
    };
    let request = DecideRequest {
        id: target.id.clone(),
        verdict: verdict as i32,
        reason,
        scope: scope as i32,
        duration_seconds,
        // A retried command (network blip) must not count as a second vote.
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        channel: "cli".to_owned(),
    };
    let decided = match session.client.decide(request).await {
        Ok(resp) => resp.into_inner().request.unwrap_or(target),
        Err(status) => {
            return session.status(format!("{verb} {}", output::printable(&target.id)), &status);
        }
    };
    if session.json {
        session.json_line(&RequestOut::from(&decided))?;
    } else {
        session.line(&describe(&decided))?;
    }
    Ok(Outcome::Done)
}

fn describe(r: &ApprovalRequest) -> String {
    let id = output::printable(&r.id);
    if r.state == RequestState::Pending as i32 {
        format!("{id}: vote recorded; still pending (quorum not reached)")
    } else {
        format!("{id}: {}", output::state(r.state))
    }
}
