//! The daemon: checks the host, loads the gates, and runs the hold coordinator until told
//! to stop. Shutdown denies whatever is still held, so no process is left stopped.

use std::path::Path;

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    audit::{AuditError, AuditLog},
    btf::{self, BtfError},
    config::AgentConfig,
    events::{self, Event},
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
    let scope = config
        .scope_cgroups
        .iter()
        .map(|p| scope::resolve(p))
        .collect::<Result<Vec<_>, _>>()?;
    let offsets = btf::kernel_offsets(Path::new(btf::VMLINUX_BTF))?;
    tracing::debug!(?offsets, "kernel offsets from BTF");
    for binary in &watched {
        tracing::debug!(path = %binary.path.display(), dev = binary.key.dev, ino = binary.key.ino, "watching");
    }
    for cgroup in &scope {
        tracing::debug!(path = %cgroup.path.display(), id = cgroup.id, "scope");
    }
    let audit = AuditLog::open(&config.audit_log)?;
    let hub = HubClient::new(
        &config.hub_url,
        &config.agent_id,
        &crate::hub_client::HubOptions { tls: config.hub_tls.clone(), fail_mode: config.hub_fail_mode },
    )?;

    let gates = loader::load(&GateSpec { offsets, scope: &scope, watched: &watched })?;
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
        }),
    )?;

    let (tx, mut rx) = mpsc::channel::<Msg>(1024);
    let mut coordinator = Coordinator::new(
        config.agent_id.clone(),
        host,
        config.decision_ttl,
        watched.clone(),
        hub.clone(),
        audit.clone(),
        KernelAnswers { verdicts: gates.verdicts, pending: gates.pending },
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

    let why = loop {
        tokio::select! {
            Some(msg) = rx.recv() => coordinator.handle(msg).await,
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };
    tracing::info!(signal = why, "shutting down; denying held actions");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    coordinator.deny_all("the agent is shutting down").await;
    let _ = audit.append("lifecycle", "agent", serde_json::json!({"event": "stop", "signal": why}));
    Ok(())
}

async fn read_events(mut ring: AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>, tx: mpsc::Sender<Msg>) {
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
                    Ok(Event::Exec(exec)) => batch.push(Msg::Exec(exec)),
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
