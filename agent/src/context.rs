//! What an approver and the audit log are told about one held action, per action class.
//!
//! The coordinator (`holds.rs`) stays class-agnostic: it asks this module for the attempt
//! record and the request context, and only deals with the life of the hold.

use agent_common::{DnsKey, HostName};
use airlock_proto::v1::{ActionClass, ActionContext, Destination as ProtoDestination, Process};
use serde_json::json;

use agent_common::{ExecOrigin, InodeKey};

use crate::{
    content::ToolDigests,
    events::{Action, DeniedAction, Destination, HeldAction, Mode},
    files::ResolvedFile,
    procinfo::{self, ProcessInfo},
    resolve::ResolvedBinary,
};

/// What the rules name, so a request can say which one matched, and where host names
/// come from.
#[derive(Default)]
pub struct Rules {
    pub watched: Vec<ResolvedBinary>,
    pub credentials: Vec<ResolvedFile>,
    /// The resolver cache the getaddrinfo probes fill.
    pub dns_names: Option<aya::maps::HashMap<aya::maps::MapData, DnsKey, HostName>>,
    /// Content hashes of every binary the kernel watches (the exec content rule).
    pub tool_digests: ToolDigests,
    /// The agent's protected files and directories, to name self-protection denials.
    pub protected: Vec<(std::path::PathBuf, InodeKey)>,
}

impl Rules {
    /// The name `tgid` resolved to `addr`, if the resolver probes saw it.
    pub fn hostname(&self, tgid: u32, addr: std::net::IpAddr) -> Option<String> {
        let v6 = match addr {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            std::net::IpAddr::V6(v6) => v6,
        };
        let name = self
            .dns_names
            .as_ref()?
            .get(
                &DnsKey {
                    tgid,
                    addr: v6.octets(),
                },
                0,
            )
            .ok()?;
        let end = name
            .name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(name.name.len());
        Some(String::from_utf8_lossy(&name.name[..end]).into_owned())
    }
}

/// Everything built for one held action.
pub struct Built {
    /// Local user name of the actor's uid.
    pub requester: String,
    /// The audit `attempt` record's fields.
    pub attempt: serde_json::Value,
    /// The request context for the hub (not yet masked).
    pub action: ActionContext,
    /// One line for the log.
    pub summary: String,
    /// An exec held by the content rule whose file is no watched tool's copy: without a
    /// policy rule naming it, it asks (the policy default does not apply).
    pub unknown_content: bool,
    /// What the content rule found (copy of which tool, the file's SHA-256), kept in the
    /// request's reason whichever rule judges it.
    pub note: Option<String>,
}

/// Reads the held process from /proc and describes `held` for the audit log and the hub.
pub fn build(held: &HeldAction, rules: &Rules, agent_id: &str) -> Built {
    let actor = procinfo::read(held.tgid);
    let parents = procinfo::parents(held.tgid);
    let cgroup = procinfo::cgroup(held.tgid);
    let requester = procinfo::user_name(held.uid);
    let mut attempt = json!({
        "agent": agent_id,
        "pid": held.tgid,
        "tid": held.tid,
        "uid": held.uid,
        "user": requester,
        "comm": held.comm,
        "cgroup": cgroup,
        "mode": match held.mode { Mode::Stopped => "stopped", Mode::DeniedUntilApproved => "denied-until-approved" },
        "parents": parents.iter().map(|p| json!({"pid": p.pid, "binary": p.binary, "comm": p.comm})).collect::<Vec<_>>(),
    });
    let mut action = ActionContext {
        actor: actor.as_ref().map(to_proto),
        parents: parents.iter().map(to_proto).collect(),
        cgroup,
        ..Default::default()
    };
    let summary;
    let mut unknown_content = false;
    let mut note = None;
    let fields = match &held.what {
        Action::Exec {
            binary,
            path,
            argv,
            argv_truncated,
            origin: origin @ (ExecOrigin::Anonymous | ExecOrigin::WrittenByScope),
            ..
        } => {
            let found = rules.tool_digests.identify(held.tgid, *binary, path);
            let (rule_kind, why) = if *origin == ExecOrigin::Anonymous {
                (
                    "anonymous",
                    "an anonymous executable (memfd, O_TMPFILE or unlinked file)",
                )
            } else {
                ("written", "a file written by the agent")
            };
            action.class = ActionClass::Exec as i32;
            action.argv = argv.clone();
            action.file = path.clone();
            action.severity = "high".into();
            let rule = match &found.copy_of {
                // Named as the tool, so the policy's rules for that tool apply to the copy.
                Some(tool) => {
                    action.binary = tool.path.display().to_string();
                    action.rule_reason =
                        format!("exec of a copy of {} ({why}: {path})", tool.path.display());
                    action.impact = format!(
                        "runs a copy of {} ({path}): {}",
                        tool.path.display(),
                        argv.join(" ")
                    );
                    summary = format!("exec {path} (copy of {})", tool.path.display());
                    format!("exec.copy:{}", tool.name)
                }
                None => {
                    unknown_content = true;
                    action.binary = path.clone();
                    action.rule_reason = format!("exec of {why}");
                    action.impact = format!("runs {why} ({path}): {}", argv.join(" "));
                    summary = format!("exec {path} ({rule_kind})");
                    format!("exec.{rule_kind}")
                }
            };
            action.rule_id = rule.clone();
            let digest = found.sha256.as_deref().unwrap_or("unreadable");
            action.rule_reason = format!("{}; sha256 {digest}", action.rule_reason);
            note = Some(action.rule_reason.clone());
            tracing::info!(pid = held.tgid, %path, sha256 = %digest, copy_of = ?found.copy_of.as_ref().map(|t| &t.path), "exec content rule");
            json!({
                "class": "exec", "binary": action.binary, "file": path, "argv": argv,
                "argv_truncated": argv_truncated, "rule": rule,
                "content": {
                    "origin": rule_kind,
                    "copy_of": found.copy_of.as_ref().map(|t| t.path.display().to_string()),
                    "sha256": found.sha256,
                    "read_from": found.opened.as_ref().map(|p| p.display().to_string()),
                },
            })
        }
        Action::Exec {
            binary,
            path,
            argv,
            argv_truncated,
            ..
        } => {
            let rule = rules
                .watched
                .iter()
                .find(|w| w.key == *binary)
                .map(|w| format!("exec.watch:{}", w.name))
                .unwrap_or_else(|| "exec.watch".to_owned());
            action.class = ActionClass::Exec as i32;
            action.binary = path.clone();
            action.argv = argv.clone();
            action.rule_reason = "exec of a watched export tool".into();
            action.severity = "high".into();
            action.impact = format!("runs {}", argv.join(" "));
            action.rule_id = rule.clone();
            summary = format!("exec {path}");
            json!({"class": "exec", "binary": path, "argv": argv, "argv_truncated": argv_truncated, "rule": rule})
        }
        Action::Net {
            hook,
            dest,
            syscall,
            payload,
            tls_plaintext,
        } => {
            let connect = *hook == agent_common::Hook::Connect;
            let (class, verb, rule) = if connect {
                (ActionClass::Connect, "connects to", "egress.unlisted")
            } else {
                (
                    ActionClass::Send,
                    "sends a datagram to",
                    "egress.unlisted-send",
                )
            };
            action.class = class as i32;
            let named = if *tls_plaintext {
                crate::naming::name_tls_plaintext(payload)
            } else {
                crate::naming::name(payload)
            };
            let hostname = named
                .hostname
                .clone()
                .or_else(|| rules.hostname(held.tgid, dest.addr));
            let mut proto_dest = to_proto_dest(dest);
            proto_dest.hostname = hostname.clone().unwrap_or_default();
            proto_dest.scheme = named.scheme.clone().unwrap_or_default();
            proto_dest.url = named.url.clone().unwrap_or_default();
            proto_dest.bucket = named.bucket.clone().unwrap_or_default();
            proto_dest.key = named.key.clone().unwrap_or_default();
            action.destination = Some(proto_dest);
            action.rule_id = rule.into();
            action.rule_reason = "destination is not on the egress allow list".into();
            action.severity = "medium".into();
            action.impact = format!("{verb} {}", dest_text(dest));
            action.binary = actor.as_ref().map(|a| a.binary.clone()).unwrap_or_default();
            action.argv = actor.as_ref().map(|a| a.argv.clone()).unwrap_or_default();
            if let Some(name) = &hostname {
                action.impact = format!("{verb} {name} ({})", dest_text(dest));
            }
            if let Some(bucket) = &named.bucket {
                let key = named.key.as_deref().unwrap_or_default();
                action.impact = format!("{} — s3://{bucket}/{key}", action.impact);
            } else if let Some(line) = &named.request_line {
                action.impact = format!("{} — {line}", action.impact);
            }
            summary = format!(
                "{} {}",
                if connect { "connect" } else { "send" },
                dest_text(dest)
            );
            json!({
                "class": if connect { "connect" } else { "send" },
                "destination": {
                    "address": dest.addr.to_string(), "port": dest.port, "protocol": dest.protocol,
                    "hostname": hostname, "scheme": named.scheme, "url": named.url,
                    "request": named.request_line, "bucket": named.bucket, "key": named.key,
                },
                "held_at": if payload.is_empty() { "connect" } else { "first-send" },
                "tls_plaintext": tls_plaintext,
                "syscall": syscall,
                "rule": rule,
            })
        }
        Action::Open { file, path, flags } => {
            let rule = rules
                .credentials
                .iter()
                .find(|c| c.key == *file)
                .map(|c| format!("files.credential:{}", c.pattern))
                .unwrap_or_else(|| "files.credential".to_owned());
            action.class = ActionClass::Open as i32;
            action.file = path.clone();
            action.rule_id = rule.clone();
            action.rule_reason = "open of a credential file".into();
            action.severity = "high".into();
            action.impact = format!("reads {path}");
            action.binary = actor.as_ref().map(|a| a.binary.clone()).unwrap_or_default();
            action.argv = actor.as_ref().map(|a| a.argv.clone()).unwrap_or_default();
            summary = format!("open {path}");
            json!({"class": "open", "file": path, "flags": flags, "dev": file.dev, "ino": file.ino, "rule": rule})
        }
    };
    if let (Some(obj), Some(extra)) = (attempt.as_object_mut(), fields.as_object()) {
        obj.extend(extra.clone());
    }
    Built {
        requester,
        attempt,
        action,
        summary,
        unknown_content,
        note,
    }
}

/// The audit record of a self-protection denial; `protected` names the agent's files and
/// directories by inode, so a denied unlink, rename, link or create carries a full path.
pub fn denied(d: &DeniedAction, protected: &[(std::path::PathBuf, InodeKey)]) -> serde_json::Value {
    let full_path = || {
        let by_ino = |ino: u64| protected.iter().find(|(_, k)| k.ino == ino && ino != 0);
        match (by_ino(d.target), by_ino(d.dir)) {
            (Some((file, _)), _) => file.display().to_string(),
            (None, Some((dir, _))) => dir.join(&d.path).display().to_string(),
            (None, None) => d.path.clone(),
        }
    };
    // file_open sends bpf_d_path; truncate sends the name and its directory.
    let write_path = || {
        if d.path.starts_with('/') {
            d.path.clone()
        } else {
            full_path()
        }
    };
    let (rule, what) = match d.hook {
        agent_common::Hook::Kill => (
            "protect.kill",
            format!("signal {} to the agent (pid {})", d.detail, d.target),
        ),
        agent_common::Hook::Ptrace => (
            "protect.ptrace",
            format!("ptrace of the agent (pid {})", d.target),
        ),
        agent_common::Hook::Bpf => ("protect.bpf", format!("bpf() command {}", d.target)),
        agent_common::Hook::WriteProtected => {
            ("protect.write", format!("write to {}", write_path()))
        }
        agent_common::Hook::UnlinkProtected => (
            "protect.unlink",
            format!(
                "{} of {}",
                if d.detail == agent_common::names::DETAIL_RMDIR {
                    "rmdir"
                } else {
                    "unlink"
                },
                full_path()
            ),
        ),
        agent_common::Hook::RenameProtected => (
            "protect.rename",
            format!("rename of or over {}", full_path()),
        ),
        agent_common::Hook::LinkProtected => (
            "protect.link",
            format!("hard link of or into {}", full_path()),
        ),
        agent_common::Hook::CreateProtected => (
            "protect.create",
            format!(
                "new {} {} in a protected directory",
                match d.detail {
                    agent_common::names::DETAIL_MKDIR => "directory",
                    agent_common::names::DETAIL_SYMLINK => "symlink",
                    agent_common::names::DETAIL_MKNOD => "node",
                    _ => "file",
                },
                full_path()
            ),
        ),
        agent_common::Hook::AttrProtected => (
            "protect.attr",
            format!(
                "{} of {}",
                match d.detail {
                    agent_common::names::DETAIL_CHOWN => "chown",
                    agent_common::names::DETAIL_SETXATTR => "setxattr",
                    agent_common::names::DETAIL_REMOVEXATTR => "removexattr",
                    agent_common::names::DETAIL_SETFLAGS => "chattr",
                    _ => "chmod",
                },
                full_path()
            ),
        ),
        agent_common::Hook::Exec
        | agent_common::Hook::Connect
        | agent_common::Hook::Send
        | agent_common::Hook::Open => ("protect.unknown", format!("hook {:?}", d.hook)),
    };
    let actor = procinfo::read(d.tgid);
    let path = match d.hook {
        agent_common::Hook::UnlinkProtected
        | agent_common::Hook::RenameProtected
        | agent_common::Hook::LinkProtected
        | agent_common::Hook::CreateProtected
        | agent_common::Hook::AttrProtected => full_path(),
        agent_common::Hook::WriteProtected => write_path(),
        _ => d.path.clone(),
    };
    json!({
        "rule": rule,
        "verdict": "deny",
        "what": what,
        "pid": d.tgid,
        "tid": d.tid,
        "uid": d.uid,
        "comm": d.comm,
        "binary": actor.map(|a| a.binary).unwrap_or_default(),
        "target": d.target,
        "path": path,
    })
}

fn dest_text(dest: &Destination) -> String {
    match dest.addr {
        std::net::IpAddr::V6(a) => format!("[{a}]:{} ({})", dest.port, dest.protocol),
        std::net::IpAddr::V4(a) => format!("{a}:{} ({})", dest.port, dest.protocol),
    }
}

fn to_proto_dest(dest: &Destination) -> ProtoDestination {
    ProtoDestination {
        address: dest.addr.to_string(),
        port: dest.port.into(),
        protocol: dest.protocol.into(),
        ..Default::default()
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use agent_common::{Hook, names};

    use super::*;

    fn denied(hook: Hook, target: u64, dir: u64, path: &str, detail: u32) -> DeniedAction {
        DeniedAction {
            // No such process: the actor's binary is simply empty.
            tgid: u32::MAX,
            tid: u32::MAX,
            uid: 0,
            comm: "rm".into(),
            hook,
            target,
            detail,
            path: path.into(),
            dev: 1,
            dir,
        }
    }

    #[test]
    fn file_system_denials_are_named_with_full_paths() {
        let protected = vec![
            (
                PathBuf::from("/etc/airlock/policy.toml"),
                InodeKey::new(1, 10),
            ),
            (PathBuf::from("/var/log/airlock"), InodeKey::new(1, 20)),
        ];
        // A file created later in a protected directory: directory + name.
        let r = super::denied(
            &denied(
                Hook::UnlinkProtected,
                99,
                20,
                "audit-1.jsonl",
                names::DETAIL_UNLINK,
            ),
            &protected,
        );
        assert_eq!(r["rule"], "protect.unlink");
        assert_eq!(r["path"], "/var/log/airlock/audit-1.jsonl");
        assert_eq!(r["what"], "unlink of /var/log/airlock/audit-1.jsonl");
        // A protected file is named by its own inode, wherever the name was.
        let r = super::denied(
            &denied(Hook::RenameProtected, 10, 5, "policy.toml", 0),
            &protected,
        );
        assert_eq!(r["path"], "/etc/airlock/policy.toml");
        assert_eq!(r["what"], "rename of or over /etc/airlock/policy.toml");
        let r = super::denied(
            &denied(Hook::CreateProtected, 0, 20, "sub", names::DETAIL_MKDIR),
            &protected,
        );
        assert_eq!(
            r["what"],
            "new directory /var/log/airlock/sub in a protected directory"
        );
        // file_open sends a full path already; truncate sends the name.
        let r = super::denied(
            &denied(Hook::WriteProtected, 10, 0, "/etc/airlock/policy.toml", 0),
            &protected,
        );
        assert_eq!(r["path"], "/etc/airlock/policy.toml");
        let r = super::denied(
            &denied(Hook::WriteProtected, 77, 20, "audit-2.jsonl", 0),
            &protected,
        );
        assert_eq!(r["path"], "/var/log/airlock/audit-2.jsonl");
        // Attribute changes name the call: the directory itself, or a name in it.
        let r = super::denied(
            &denied(
                Hook::AttrProtected,
                20,
                3,
                "airlock",
                names::DETAIL_SETFLAGS,
            ),
            &protected,
        );
        assert_eq!(r["rule"], "protect.attr");
        assert_eq!(r["what"], "chattr of /var/log/airlock");
        let r = super::denied(
            &denied(
                Hook::AttrProtected,
                78,
                20,
                "audit-0.jsonl",
                names::DETAIL_CHOWN,
            ),
            &protected,
        );
        assert_eq!(r["what"], "chown of /var/log/airlock/audit-0.jsonl");
    }
}
