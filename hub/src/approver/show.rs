//! `approver show ID`: the full masked context of one request.

use std::io::Write;

use super::output::{self, RequestOut};
use super::{ApproverError, Outcome, Session};
use crate::rules;

/// Prints the request `id` (or unique prefix).
pub(super) async fn run<W: Write + Send>(
    session: &mut Session<'_, W>,
    id: &str,
) -> Result<Outcome, ApproverError> {
    let request = match session.resolve(id).await? {
        Ok(request) => request,
        Err(outcome) => return Ok(outcome),
    };
    if session.json {
        session.json_line(&RequestOut::from(&request))?;
    } else {
        let text = output::details(&request, rules::now_unix_ms());
        session.line(text.trim_end())?;
    }
    Ok(Outcome::Done)
}
