//! Wire types of `--json` output and the human-readable renderings.
//!
//! JSON is built from these serde types, never from prost `Debug`, so scripts get stable
//! lower-case names (`"state": "pending"`) and no protobuf internals. Every string shown
//! to a human goes through [`printable`]: argv and paths come from the watched host and
//! could otherwise carry terminal escape sequences into the approver's terminal.

use std::fmt::Write as _;

use airlock_proto::v1::{
    ActionClass, ActionContext, ApprovalRequest, Decision, DecisionCause, Destination, GrantScope,
    Process, RequestState, Verdict, Vote,
};
use serde::{Deserialize, Serialize};

use crate::rules;

/// One request, as `--json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestOut {
    /// Request id.
    pub id: String,
    /// `pending`, `approved`, `denied`, `expired`, `cancelled`.
    pub state: String,
    /// Hub revision of the last change.
    pub revision: u64,
    /// Submitting agent.
    pub agent_id: String,
    /// Agent host.
    pub host: String,
    /// User on whose behalf the action runs.
    pub requester: String,
    /// Creation time, Unix ms.
    pub created_unix_ms: i64,
    /// Deadline, Unix ms.
    pub expires_unix_ms: i64,
    /// What was attempted.
    pub action: Option<ActionOut>,
    /// Votes cast so far.
    pub votes: Vec<VoteOut>,
    /// Final outcome, once there is one.
    pub decision: Option<DecisionOut>,
}

/// The attempted action (already masked by the agent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOut {
    /// `exec`, `connect`, `send`, `open`.
    pub class: String,
    /// The process that attempted it.
    pub actor: Option<ProcessOut>,
    /// Its ancestors, nearest first.
    pub parents: Vec<ProcessOut>,
    /// cgroup v2 path.
    pub cgroup: String,
    /// Executed binary (EXEC).
    pub binary: String,
    /// Executed argv (EXEC), masked.
    pub argv: Vec<String>,
    /// Network destination (CONNECT/SEND).
    pub destination: Option<DestinationOut>,
    /// Opened file (OPEN).
    pub file: String,
    /// Rule that asked.
    pub rule_id: String,
    /// Why the rule asked.
    pub rule_reason: String,
    /// Severity named by the rule.
    pub severity: String,
    /// One-sentence impact.
    pub impact: String,
    /// Hash the grant is bound to.
    pub action_hash: String,
}

/// A process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessOut {
    /// Process id.
    pub pid: u32,
    /// Real uid.
    pub uid: u32,
    /// User name.
    pub user: String,
    /// Executable path.
    pub binary: String,
    /// Masked argv.
    pub argv: Vec<String>,
    /// Kernel task name.
    pub comm: String,
}

/// A network destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationOut {
    /// IP address.
    pub address: String,
    /// Port.
    pub port: u32,
    /// Host name.
    pub hostname: String,
    /// URL (masked).
    pub url: String,
    /// S3 bucket.
    pub bucket: String,
    /// S3 key.
    pub key: String,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// One vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteOut {
    /// Who voted.
    pub approver: String,
    /// `allow` or `deny`.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// When, Unix ms.
    pub at_unix_ms: i64,
    /// Channel (`cli`, `slack`, `web`).
    pub channel: String,
}

/// A final decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionOut {
    /// `allow` or `deny`.
    pub verdict: String,
    /// `approvers`, `expired`, `cancelled`.
    pub cause: String,
    /// Why.
    pub reason: String,
    /// Whose votes decided it.
    pub approvers: Vec<String>,
    /// When, Unix ms.
    pub decided_unix_ms: i64,
    /// `once` or `duration` (allow only).
    pub grant: Option<String>,
    /// End of a duration grant, Unix ms.
    pub grant_until_unix_ms: Option<i64>,
}

/// One line of `watch --json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchLine {
    /// `pending` for requests in the opening snapshot, `changed` afterwards.
    pub event: String,
    /// The request in its current state.
    pub request: RequestOut,
}

/// Lower-case state name.
#[must_use]
pub fn state(state: i32) -> &'static str {
    RequestState::try_from(state).map_or("unknown", rules::state_name)
}

fn verdict(v: i32) -> String {
    match Verdict::try_from(v) {
        Ok(Verdict::Allow) => "allow",
        Ok(Verdict::Deny) => "deny",
        Ok(Verdict::Unspecified) | Err(_) => "unspecified",
    }
    .to_owned()
}

fn class(c: i32) -> String {
    match ActionClass::try_from(c) {
        Ok(ActionClass::Exec) => "exec",
        Ok(ActionClass::Connect) => "connect",
        Ok(ActionClass::Send) => "send",
        Ok(ActionClass::Open) => "open",
        Ok(ActionClass::Unspecified) | Err(_) => "unspecified",
    }
    .to_owned()
}

fn cause(c: i32) -> String {
    match DecisionCause::try_from(c) {
        Ok(DecisionCause::Approvers) => "approvers",
        Ok(DecisionCause::Expired) => "expired",
        Ok(DecisionCause::Cancelled) => "cancelled",
        Ok(DecisionCause::Grant) => "grant",
        Ok(DecisionCause::Unspecified) | Err(_) => "unspecified",
    }
    .to_owned()
}

fn process(p: &Process) -> ProcessOut {
    ProcessOut {
        pid: p.pid,
        uid: p.uid,
        user: p.user.clone(),
        binary: p.binary.clone(),
        argv: p.argv.clone(),
        comm: p.comm.clone(),
    }
}

fn destination(d: &Destination) -> DestinationOut {
    DestinationOut {
        address: d.address.clone(),
        port: d.port,
        hostname: d.hostname.clone(),
        url: d.url.clone(),
        bucket: d.bucket.clone(),
        key: d.key.clone(),
        protocol: d.protocol.clone(),
    }
}

fn vote(v: &Vote) -> VoteOut {
    VoteOut {
        approver: v.approver.clone(),
        verdict: verdict(v.verdict),
        reason: v.reason.clone(),
        at_unix_ms: v.at_unix_ms,
        channel: v.channel.clone(),
    }
}

fn decision(d: &Decision) -> DecisionOut {
    let grant = d.grant.as_ref();
    DecisionOut {
        verdict: verdict(d.verdict),
        cause: cause(d.cause),
        reason: d.reason.clone(),
        approvers: d.approvers.clone(),
        decided_unix_ms: d.decided_unix_ms,
        grant: grant.map(|g| {
            if g.scope == GrantScope::Duration as i32 {
                "duration".to_owned()
            } else {
                "once".to_owned()
            }
        }),
        grant_until_unix_ms: grant
            .filter(|g| g.scope == GrantScope::Duration as i32)
            .map(|g| g.until_unix_ms),
    }
}

impl From<&ApprovalRequest> for RequestOut {
    fn from(r: &ApprovalRequest) -> Self {
        Self {
            id: r.id.clone(),
            state: state(r.state).to_owned(),
            revision: r.revision,
            agent_id: r.agent_id.clone(),
            host: r.host.clone(),
            requester: r.requester.clone(),
            created_unix_ms: r.created_unix_ms,
            expires_unix_ms: r.expires_unix_ms,
            action: r.action.as_ref().map(|a| ActionOut {
                class: class(a.class),
                actor: a.actor.as_ref().map(process),
                parents: a.parents.iter().map(process).collect(),
                cgroup: a.cgroup.clone(),
                binary: a.binary.clone(),
                argv: a.argv.clone(),
                destination: a.destination.as_ref().map(destination),
                file: a.file.clone(),
                rule_id: a.rule_id.clone(),
                rule_reason: a.rule_reason.clone(),
                severity: a.severity.clone(),
                impact: a.impact.clone(),
                action_hash: a.action_hash.clone(),
            }),
            votes: r.votes.iter().map(vote).collect(),
            decision: r.decision.as_ref().map(decision),
        }
    }
}

/// `text` with control characters escaped, safe to print to a terminal.
#[must_use]
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Rough human duration: `45s`, `12m`, `3h`, `2d`.
#[must_use]
pub fn short_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d", s / 86_400),
    }
}

fn argv_line(binary: &str, argv: &[String]) -> String {
    // argv[0] usually repeats the binary name; show the full path, then the arguments.
    let args = argv
        .iter()
        .skip(1)
        .map(|a| printable(a))
        .collect::<Vec<_>>();
    let mut line = printable(binary);
    for a in args {
        line.push(' ');
        line.push_str(&a);
    }
    line
}

/// The executed command: the action's own binary/argv, else the actor's.
fn command(a: &ActionContext) -> (&str, &[String]) {
    let actor = a.actor.as_ref();
    let binary = if a.binary.is_empty() {
        actor.map_or("", |p| p.binary.as_str())
    } else {
        &a.binary
    };
    let argv = if a.argv.is_empty() {
        actor.map_or(&[][..], |p| p.argv.as_slice())
    } else {
        &a.argv
    };
    (binary, argv)
}

fn target(d: &Destination) -> String {
    let host = if !d.url.is_empty() {
        return printable(&d.url);
    } else if !d.bucket.is_empty() {
        return printable(&format!("s3://{}/{}", d.bucket, d.key));
    } else if !d.hostname.is_empty() {
        &d.hostname
    } else {
        &d.address
    };
    printable(&format!("{host}:{}", d.port))
}

/// One readable line for `list` / `watch`: id, state, age, time left, user, action, rule.
#[must_use]
pub fn summary_line(r: &ApprovalRequest, now: i64) -> String {
    let short_id: String = printable(&r.id).chars().take(8).collect();
    let mut line = format!(
        "{short_id:<8}  {:<9}  age {:<7}",
        state(r.state),
        short_duration(now - r.created_unix_ms)
    );
    if r.state == RequestState::Pending as i32 {
        let _ = write!(
            line,
            "  left {:<7}",
            short_duration(r.expires_unix_ms - now)
        );
    }
    let Some(a) = &r.action else {
        return line;
    };
    let user = a
        .actor
        .as_ref()
        .map(|p| {
            if p.user.is_empty() {
                format!("uid {}", p.uid)
            } else {
                printable(&p.user)
            }
        })
        .unwrap_or_else(|| printable(&r.requester));
    let _ = write!(line, "  {user}");
    let (binary, argv) = command(a);
    if !binary.is_empty() {
        let _ = write!(line, "  {}", argv_line(binary, argv));
    }
    if let Some(d) = &a.destination {
        let _ = write!(line, "  -> {}", target(d));
    }
    if !a.file.is_empty() {
        let _ = write!(line, "  file {}", printable(&a.file));
    }
    if !a.rule_id.is_empty() {
        let _ = write!(line, "  [rule {}]", printable(&a.rule_id));
    }
    line
}

/// The full masked context, for `show`.
#[must_use]
pub fn details(r: &ApprovalRequest, now: i64) -> String {
    let mut s = String::new();
    let o = RequestOut::from(r);
    let _ = writeln!(s, "id:          {}", printable(&o.id));
    let _ = writeln!(s, "state:       {}", o.state);
    let _ = writeln!(
        s,
        "agent:       {} on {}",
        printable(&o.agent_id),
        printable(&o.host)
    );
    let _ = writeln!(s, "requester:   {}", printable(&o.requester));
    let _ = writeln!(
        s,
        "age:         {}",
        short_duration(now - o.created_unix_ms)
    );
    if r.state == RequestState::Pending as i32 {
        let _ = writeln!(
            s,
            "time left:   {}",
            short_duration(o.expires_unix_ms - now)
        );
    }
    if let Some(a) = &r.action {
        let _ = writeln!(s, "action:      {}", class(a.class));
        let field = |s: &mut String, name: &str, v: &str| {
            if !v.is_empty() {
                let _ = writeln!(s, "{name:<13}{}", printable(v));
            }
        };
        field(&mut s, "impact:", &a.impact);
        field(&mut s, "severity:", &a.severity);
        field(&mut s, "rule:", &a.rule_id);
        field(&mut s, "rule reason:", &a.rule_reason);
        let (binary, argv) = command(a);
        if !binary.is_empty() {
            field(&mut s, "command:", &argv_line(binary, argv));
        }
        if let Some(d) = &a.destination {
            field(&mut s, "destination:", &target(d));
        }
        field(&mut s, "file:", &a.file);
        field(&mut s, "cgroup:", &a.cgroup);
        for (label, p) in a
            .actor
            .iter()
            .map(|p| ("actor:", p))
            .chain(a.parents.iter().map(|p| ("parent:", p)))
        {
            let who = format!(
                "pid {} {} ({}): {}",
                p.pid,
                p.user,
                p.comm,
                argv_line(&p.binary, &p.argv)
            );
            field(&mut s, label, &who);
        }
        field(&mut s, "action hash:", &a.action_hash);
    }
    for v in &o.votes {
        let _ = writeln!(
            s,
            "vote:        {} {} via {}{}",
            printable(&v.approver),
            v.verdict,
            printable(&v.channel),
            if v.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", printable(&v.reason))
            }
        );
    }
    if let Some(d) = &o.decision {
        let _ = writeln!(
            s,
            "decision:    {} ({}){}{}",
            d.verdict,
            d.cause,
            d.grant
                .as_ref()
                .map(|g| format!(", grant {g}"))
                .unwrap_or_default(),
            if d.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", printable(&d.reason))
            }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_control_sequences() {
        assert_eq!(printable("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(printable("s3://ok/ü"), "s3://ok/ü");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(-5), "0s");
        assert_eq!(short_duration(59_999), "59s");
        assert_eq!(short_duration(61_000), "1m01s");
        assert_eq!(short_duration(7_260_000), "2h01m");
    }
}
