//! `approver watch`: pending requests, then a line per new or changed request.

use std::io::Write;

use airlock_proto::v1::{ApprovalRequest, WatchRequest, watch_event};

use super::output::{self, RequestOut, WatchLine};
use super::{ApproverError, Outcome, Session};
use crate::rules;

fn emit<W: Write + Send>(
    session: &mut Session<'_, W>,
    event: &str,
    request: &ApprovalRequest,
) -> Result<(), ApproverError> {
    if session.json {
        session.json_line(&WatchLine {
            event: event.to_owned(),
            request: RequestOut::from(request),
        })
    } else {
        session.line(&output::summary_line(request, rules::now_unix_ms()))
    }
}

/// Streams until the hub closes the stream or the connection fails.
pub(super) async fn run<W: Write + Send>(
    session: &mut Session<'_, W>,
) -> Result<Outcome, ApproverError> {
    let mut stream = match session
        .client
        .watch(WatchRequest { since_revision: 0 })
        .await
    {
        Ok(resp) => resp.into_inner(),
        Err(status) => return session.status("watch requests".to_owned(), &status),
    };
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(Outcome::Done),
            Err(status) => return session.status("keep watching".to_owned(), &status),
        };
        match message.event {
            Some(watch_event::Event::Snapshot(snapshot)) => {
                for request in &snapshot.requests {
                    emit(session, "pending", request)?;
                }
            }
            Some(watch_event::Event::Changed(request)) => emit(session, "changed", &request)?,
            Some(watch_event::Event::Heartbeat(_)) | None => {}
        }
    }
}
