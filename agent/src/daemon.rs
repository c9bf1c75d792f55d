//! The daemon: checks the host, loads the gates, and runs the hold coordinator until told
//! to stop. Shutdown denies whatever is still held, so no process is left stopped.

use std::{path::Path, sync::Arc};

use airlock_audit::LifecyclePhase;

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    audit::{self, AuditError, AuditTrail},
    btf::{self, BtfError},
    config::AgentConfig,
    events::{self, Event},
    holds::{Coordinator, KernelAnswers, Msg},
    hub_client::{HubClient, HubError},
    loader::{self, GateSpec, LoadError},
    policy_gate::PolicyGate,
    preflight::{self, HostFacts, PreflightError},
    redact::{RedactError, Redactor},
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
    Redact(#[from] RedactError),
    #[error("audit log: {0}")]
    AuditAppend(#[from] airlock_audit::AppendError),
    #[error("cannot serve the reveal socket in {dir}: {source}")]
    RevealSocket {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Policy(#[from] crate::policy_gate::PolicyGateError),
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
    let policy = match &config.policy_file {
        Some(file) => Some(PolicyGate::load(file, &config.search_path)?),
        None => None,
    };
    let mut kernel_watch = watched.clone();
    kernel_watch.extend(policy.iter().flat_map(|p| p.watched.iter().cloned()));
    kernel_watch.sort_by_key(|b| b.key);
    kernel_watch.dedup_by_key(|b| b.key);
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
    // Masking and the audit log come up before any gate is attached: an action that cannot
    // be masked, sealed and recorded must never be held (or let through).
    let redactor = Arc::new(Redactor::from_settings(&config.masking)?);
    if !redactor.seals() {
        tracing::warn!("masking.seal_raw_context = false: raw context is discarded and cannot be revealed");
    }
    let (log, recovery) = audit::open(&config.audit)?;
    tracing::info!(
        dir = %config.audit.dir.display(),
        log_id = %recovery.log_id,
        created = recovery.created,
        clean_shutdown = recovery.clean_shutdown,
        quarantined = recovery.quarantined.len(),
        "audit log open"
    );
    let hub = HubClient::new(
        &config.hub_url,
        &config.agent_id,
        &crate::hub_client::HubOptions { tls: config.hub_tls.clone(), fail_mode: config.hub_fail_mode },
    )?;

    let gates = loader::load(&GateSpec { offsets, scope: &scope, watched: &kernel_watch })?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;

    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let audit = AuditTrail::new(log.handle(), redactor, config.agent_id.clone(), host.clone());
    audit.lifecycle(
        LifecyclePhase::Start,
        format!(
            "agent {} ready: gates attached; watching {:?}; scope {:?}; policy {:?}",
            config.agent_id,
            kernel_watch.iter().map(|w| w.path.display().to_string()).collect::<Vec<_>>(),
            scope.iter().map(|s| s.path.display().to_string()).collect::<Vec<_>>(),
            policy.as_ref().map(|p| p.hash().to_owned()),
        ),
    )?;
    let reveal_server = crate::reveal::serve(&config.audit.dir, log.handle())
        .map_err(|source| DaemonError::RevealSocket { dir: config.audit.dir.clone(), source })?;

    let (tx, mut rx) = mpsc::channel::<Msg>(1024);
    let mut coordinator = Coordinator::new(
        config.agent_id.clone(),
        host,
        config.decision_ttl,
        watched.clone(),
        hub.clone(),
        audit.clone(),
        KernelAnswers { verdicts: gates.verdicts, pending: gates.pending, watched_exec: gates.watched_exec },
        tx.clone(),
    );
    coordinator.search_path = config.search_path.clone();
    if let Some(file) = config.policy_file.clone() {
        tokio::spawn(watch_policy_file(file, tx.clone()));
    }
    coordinator.policy = policy;

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
        watched = kernel_watch.len(),
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
            _ = sighup.recv() => coordinator.handle(Msg::ReloadPolicy("SIGHUP")).await,
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };
    tracing::info!(signal = why, "shutting down; denying held actions");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    coordinator.deny_all("the agent is shutting down").await;
    reveal_server.abort();
    let _ = std::fs::remove_file(crate::reveal::socket_path(&config.audit.dir));
    if let Err(error) = audit.lifecycle(LifecyclePhase::Stop, format!("agent stopping on {why}")) {
        tracing::error!(%error, "cannot record the stop");
    }
    drop(coordinator);
    drop(audit);
    // Writes the log's own stop record and final checkpoint.
    if let Err(error) = log.close() {
        tracing::error!(%error, "closing the audit log failed");
    }
    Ok(())
}

/// Asks for a reload when the policy file changes (content, size, or a replacing rename).
/// Polling once a second is cheap and survives editors that write a new file and rename it.
async fn watch_policy_file(path: std::path::PathBuf, tx: mpsc::Sender<Msg>) {
    use std::os::unix::fs::MetadataExt;
    let stamp = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()));
    let mut last = stamp(&path);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = stamp(&path);
        if now != last {
            last = now;
            if tx.send(Msg::ReloadPolicy("file changed")).await.is_err() {
                return;
            }
        }
    }
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
