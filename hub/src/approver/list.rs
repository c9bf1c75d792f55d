//! `approver list`: requests in a state, newest first.

use std::io::Write;

use airlock_proto::v1::{ListRequest, RequestState};

use super::output::{self, RequestOut};
use super::{ApproverError, ListBy, Outcome, Session, StateFilter};
use crate::rules;

fn states(filter: StateFilter) -> Vec<i32> {
    let state = match filter {
        StateFilter::All => return Vec::new(),
        StateFilter::Pending => RequestState::Pending,
        StateFilter::Approved => RequestState::Approved,
        StateFilter::Denied => RequestState::Denied,
        StateFilter::Expired => RequestState::Expired,
        StateFilter::Cancelled => RequestState::Cancelled,
    };
    vec![state as i32]
}

/// Prints one line (or JSON object) per request.
pub(super) async fn run<W: Write + Send>(
    session: &mut Session<'_, W>,
    filter: StateFilter,
    limit: u32,
    by: ListBy,
) -> Result<Outcome, ApproverError> {
    let request = ListRequest {
        states: states(filter),
        limit,
        agent_id: by.agent.unwrap_or_default(),
        requester: by.requester.unwrap_or_default(),
        host: by.host.unwrap_or_default(),
    };
    let requests = match session.client.list(request).await {
        Ok(resp) => resp.into_inner().requests,
        Err(status) => return session.status("list requests".to_owned(), &status),
    };
    let now = rules::now_unix_ms();
    for r in &requests {
        if session.json {
            session.json_line(&RequestOut::from(r))?;
        } else {
            session.line(&output::summary_line(r, now))?;
        }
    }
    Ok(Outcome::Done)
}
