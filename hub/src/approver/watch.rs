//! `approver watch`: pending requests, live.
//!
//! On a terminal (and without `--json`) it redraws a table on every change and heartbeat:
//! pending requests soonest-deadline first, time left, requests that arrived in the last
//! 30 seconds highlighted, and the latest outcome on the status line. Elsewhere it prints
//! the snapshot, then one line (or JSON object) per change, which scripts can follow.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;

use airlock_proto::v1::{ApprovalRequest, RequestState, WatchRequest, watch_event};

use super::output::{self, RequestOut, WatchLine};
use super::{ApproverError, Outcome, Session};
use crate::rules;

/// How long a new request stays highlighted.
const NEW_FOR_MS: i64 = 30_000;
/// ANSI: clear the screen and home the cursor; bold yellow; reset.
const CLEAR: &str = "\x1b[H\x1b[2J";
const NEW: &str = "\x1b[1;33m";
const RESET: &str = "\x1b[0m";

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

/// The live table's state: pending requests and when this watcher first saw each.
#[derive(Default)]
struct Table {
    pending: HashMap<String, (ApprovalRequest, Option<i64>)>,
    status: String,
}

impl Table {
    fn apply(&mut self, request: ApprovalRequest, now: i64, from_snapshot: bool) {
        if request.state == RequestState::Pending as i32 {
            let seen = if from_snapshot { None } else { Some(now) };
            let first = self
                .pending
                .get(&request.id)
                .map_or(seen, |(_, first)| *first);
            self.pending.insert(request.id.clone(), (request, first));
        } else {
            self.pending.remove(&request.id);
            let who = request
                .decision
                .as_ref()
                .map(|d| d.approvers.join(", "))
                .filter(|w| !w.is_empty())
                .map(|w| format!(" by {w}"))
                .unwrap_or_default();
            self.status = format!(
                "{} {}{}",
                output::printable(&request.id),
                output::state(request.state),
                output::printable(&who)
            );
        }
    }

    fn render(&self, hub: &str, now: i64) -> String {
        let mut rows: Vec<&(ApprovalRequest, Option<i64>)> = self.pending.values().collect();
        rows.sort_by_key(|(r, _)| (r.expires_unix_ms, r.id.clone()));
        let mut s = String::from(CLEAR);
        let _ = writeln!(
            s,
            "airlock watch: {} pending on {}   (approve/deny ID; Ctrl-C quits)",
            rows.len(),
            output::printable(hub)
        );
        if !self.status.is_empty() {
            let _ = writeln!(s, "last: {}", self.status);
        }
        let _ = writeln!(s);
        for (r, first_seen) in rows {
            let line = output::summary_line(r, now);
            if first_seen.is_some_and(|t| now - t < NEW_FOR_MS) {
                let _ = writeln!(s, "{NEW}{line}  NEW{RESET}");
            } else {
                let _ = writeln!(s, "{line}");
            }
        }
        s
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
    let mut table = Table::default();
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(Outcome::Done),
            Err(status) => return session.status("keep watching".to_owned(), &status),
        };
        let now = rules::now_unix_ms();
        if session.live {
            match message.event {
                Some(watch_event::Event::Snapshot(snapshot)) => {
                    for request in snapshot.requests {
                        table.apply(request, now, true);
                    }
                }
                Some(watch_event::Event::Changed(request)) => table.apply(request, now, false),
                Some(watch_event::Event::Heartbeat(_)) | None => {}
            }
            let frame = table.render(&session.hub, now);
            write!(session.out, "{frame}")
                .and_then(|()| session.out.flush())
                .map_err(ApproverError::Output)?;
            continue;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: &str, state: RequestState, expires: i64) -> ApprovalRequest {
        ApprovalRequest {
            id: id.to_owned(),
            state: state as i32,
            created_unix_ms: 0,
            expires_unix_ms: expires,
            ..ApprovalRequest::default()
        }
    }

    #[test]
    fn table_orders_by_deadline_highlights_new_and_drops_final() {
        let mut t = Table::default();
        t.apply(req("old-one", RequestState::Pending, 90_000), 1_000, true);
        t.apply(req("new-one", RequestState::Pending, 60_000), 2_000, false);
        t.apply(req("gone", RequestState::Pending, 10_000), 2_000, false);
        t.apply(req("gone", RequestState::Denied, 10_000), 3_000, false);
        let frame = t.render("http://hub", 4_000);
        assert!(frame.contains("2 pending"));
        assert!(frame.contains("last: gone denied"));
        let new_at = frame.find("new-one").unwrap();
        let old_at = frame.find("old-one").unwrap();
        assert!(new_at < old_at, "soonest deadline first");
        assert!(
            frame.contains(&format!("{NEW}new-one")),
            "new request highlighted"
        );
        assert!(
            !frame.contains(&format!("{NEW}old-one")),
            "snapshot rows are not new"
        );
        assert!(frame.contains("left 56s"), "time left shown: {frame}");
        let later = t.render("http://hub", 40_000);
        assert!(!later.contains(NEW), "highlight fades after 30 s");
    }
}
