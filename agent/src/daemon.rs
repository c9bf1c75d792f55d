//! The daemon: checks the host, loads the gates, and runs the hold coordinator until told
//! to stop. Shutdown denies whatever is still held, so no process is left stopped.

use std::path::Path;

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    audit::{AuditError, AuditLog},
    btf::{self, BtfError},
    config::AgentConfig,
    context::Rules,
    egress,
    events::{self, Event},
    files::{self, CredentialSet, FilesError},
    holds::{Coordinator, KernelAnswers, Msg},
    hub_client::{HubClient, HubError},
    loader::{self, GateSpec, LoadError},
    preflight::{self, HostFacts, PreflightError},
    resolve::{self, ResolveError},
    scope::{self, ScopeError},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Files(#[from] FilesError),
    #[error("cannot watch the BPF ring buffer: {0}")]
    RingBuffer(#[source] std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

/// Runs the agent until SIGTERM or SIGINT.
///
/// # Errors
/// Any [`DaemonError`] before the gates are attached; afterwards failures are logged and the
/// affected action is denied rather than ending the daemon.
pub async fn run(config: AgentConfig) -> Result<(), DaemonError> {
    preflight::check(&HostFacts::read())?;
    let watched = resolve::resolve_all(&config.watch, &config.search_path)?;
    let mut scope = config
        .scope_cgroups
        .iter()
        .map(|p| scope::resolve(p))
        .collect::<Result<Vec<_>, _>>()?;
    scope.extend(scope::descendant_cgroups(&scope));
    let credentials = files::resolve_credentials(&config.credentials, &files::homes())?;
    let allow = egress::allow_list(&config.egress_allow, &config.hub_url);
    for net in &allow {
        tracing::debug!(%net, "egress allowed");
    }
    for file in &credentials {
        tracing::debug!(path = %file.path.display(), pattern = %file.pattern, "credential file");
    }
    let offsets = btf::kernel_offsets(Path::new(btf::VMLINUX_BTF))?;
    tracing::debug!(?offsets, "kernel offsets from BTF");
    for binary in &watched {
        tracing::debug!(path = %binary.path.display(), dev = binary.key.dev, ino = binary.key.ino, "watching");
    }
    for cgroup in &scope {
        tracing::debug!(path = %cgroup.path.display(), id = cgroup.id, "scope");
    }
    let audit = AuditLog::open(&config.audit_log)?;
    // After the audit log exists, so its inode is among the protected ones.
    let protected = files::resolve_existing(&config.protect);
    let hub = HubClient::new(&config.hub_url, &config.agent_id)?;

    let allow_keys: Vec<_> = allow.iter().map(egress::key).collect();
    let protected_keys: Vec<_> = protected.iter().map(|(_, k)| *k).collect();
    // Walked after the scope is known and before attaching; a process forked between the
    // walk and the fork tracepoint is caught by its cgroup (the tracepoint attaches first).
    let scope_tasks = scope::existing_tasks(&scope);
    let mut gates = loader::load(&GateSpec {
        offsets,
        scope: &scope,
        scope_tasks: &scope_tasks,
        watched: &watched,
        allow: &allow_keys,
        credentials: &credentials,
        protected_files: &protected_keys,
        protected_tasks: &[std::process::id()],
        pin_dir: &config.pin_dir,
        settings: agent_common::Settings {
            defer_tcp_to_first_send: u32::from(config.hold_at_first_send),
            _pad: 0,
        },
    })?;
    tracing::debug!(tasks = scope_tasks.len(), "existing processes in scope");
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;

    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    audit.append(
        "lifecycle",
        "agent",
        serde_json::json!({
            "event": "start",
            "watched": watched.iter().map(|w| w.path.display().to_string()).collect::<Vec<_>>(),
            "scope": scope.iter().map(|s| s.path.display().to_string()).collect::<Vec<_>>(),
            "credentials": credentials.iter().map(|c| c.path.display().to_string()).collect::<Vec<_>>(),
            "egress_allow": allow.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "protected": protected.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>(),
        }),
    )?;

    let (tx, mut rx) = mpsc::channel::<Msg>(1024);
    let mut coordinator = Coordinator::new(
        config.agent_id.clone(),
        host,
        config.decision_ttl,
        Rules {
            watched: watched.clone(),
            credentials: credentials.clone(),
            dns_names: gates.dns_names.take(),
        },
        hub.clone(),
        audit.clone(),
        KernelAnswers {
            verdicts: gates.verdicts,
            pending: gates.pending,
        },
        tx.clone(),
    );

    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd owns the ring buffer.
    let ring = unsafe { AsyncFd::register(gates.events) }
        .map_err(|e| DaemonError::RingBuffer(e.into()))?;
    tokio::spawn(read_events(ring, tx.clone()));
    let (decision_tx, mut decision_rx) = mpsc::channel(256);
    tokio::spawn(hub.stream_decisions(coordinator.awaiting.clone(), decision_tx));
    let forward = tx.clone();
    tokio::spawn(async move {
        while let Some(event) = decision_rx.recv().await {
            if forward.send(Msg::Decision(event)).await.is_err() {
                return;
            }
        }
    });

    tracing::info!(
        watched = watched.len(),
        cgroups = scope.len(),
        hub = %config.hub_url,
        "airlock agent ready"
    );
    // Tell systemd (Type=notify) — and tests, which listen on NOTIFY_SOCKET — that the
    // gates are attached.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    if gates.adopted {
        readopt(&mut coordinator);
    }
    let mut creds = CredentialSet::new(config.credentials.clone(), &credentials);
    let mut known_cgroups: std::collections::HashSet<u64> = scope.iter().map(|s| s.id).collect();
    let roots: Vec<_> = scope
        .iter()
        .take(config.scope_cgroups.len())
        .cloned()
        .collect();
    let mut refresh = tokio::time::interval(REFRESH);
    let why = loop {
        tokio::select! {
            Some(msg) = rx.recv() => coordinator.handle(msg).await,
            _ = refresh.tick() => {
                refresh_credentials(&mut creds, &mut gates.cred_files);
                coordinator.rules.credentials = creds.files();
                for cgroup in scope::descendant_cgroups(&roots) {
                    if known_cgroups.insert(cgroup.id) {
                        tracing::debug!(path = %cgroup.path.display(), "new scope sub-cgroup");
                        let _ = gates.scope_cgroups.insert(cgroup.id, 1, 0);
                    }
                }
            }
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };
    tracing::info!(signal = why, "shutting down; denying held actions");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    coordinator.deny_all("the agent is shutting down").await;
    // A deliberate stop takes the gates down with the daemon; a crash leaves them pinned.
    loader::unpin(&gates.pin_dir);
    let _ = audit.append(
        "lifecycle",
        "agent",
        serde_json::json!({"event": "stop", "signal": why}),
    );
    Ok(())
}

/// Takes over what a previous daemon left held: each pending action is forgotten and its
/// task woken, so the restarted syscall announces it again with full context and a fresh
/// request (the old request at the hub expires by its TTL). io_uring actions are
/// announced again on the caller's next retry.
fn readopt(coordinator: &mut Coordinator) {
    let keys: Vec<agent_common::HoldKey> = coordinator.kernel.pending.keys().flatten().collect();
    tracing::info!(
        held = keys.len(),
        "adopting pinned gates from a previous daemon"
    );
    for key in keys {
        let _ = coordinator.kernel.pending.remove(&key);
        let pid = nix::unistd::Pid::from_raw(key.tgid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    }
}

/// How often credential globs and scope sub-cgroups are re-resolved.
const REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

fn refresh_credentials(
    creds: &mut CredentialSet,
    map: &mut aya::maps::HashMap<aya::maps::MapData, agent_common::InodeKey, u32>,
) {
    match creds.refresh() {
        Ok(diff) => {
            for file in &diff.added {
                tracing::info!(path = %file.path.display(), pattern = %file.pattern, "credential file appeared");
                if let Err(error) = map.insert(file.key, 0, 0) {
                    tracing::error!(%error, path = %file.path.display(), "cannot watch credential file");
                }
            }
            for key in &diff.removed {
                let _ = map.remove(key);
            }
        }
        Err(error) => tracing::warn!(%error, "credential refresh failed"),
    }
}

async fn read_events(
    mut ring: AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
    tx: mpsc::Sender<Msg>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut guard = match ring.readable_mut().await {
                Ok(guard) => guard,
                Err(error) => {
                    tracing::error!(%error, "ring buffer poll failed; no more events");
                    return;
                }
            };
            let buffer = guard.get_inner_mut();
            while let Some(item) = buffer.next() {
                match events::decode(&item) {
                    Ok(Event::Held(action)) => batch.push(Msg::Held(action)),
                    Ok(Event::Denied(denied)) => batch.push(Msg::Denied(denied)),
                    Err(error) => tracing::error!(%error, "dropping undecodable event"),
                }
            }
            guard.clear_ready();
        }
        for msg in batch {
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    }
}
