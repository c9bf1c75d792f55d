//! The daemon: checks the host, loads the gates, and runs the hold coordinator until told
//! to stop. Shutdown denies whatever is still held, so no process is left stopped.

use std::{path::Path, sync::Arc};

use airlock_audit::LifecyclePhase;

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    audit::{self, AuditError, AuditTrail},
    btf::{self, BtfError},
    config::AgentConfig,
    context::Rules,
    dirwatch::DirWatcher,
    egress,
    events::{self, Event},
    files::{self, FilesError},
    holds::{Coordinator, KernelAnswers, Msg},
    hub_client::{HubClient, HubError},
    kernel_sets::{Baseline, KernelSets},
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
    let policy = match &config.policy_file {
        Some(file) => Some(PolicyGate::load(file, &config.search_path)?),
        None => None,
    };
    let mut kernel_watch = watched.clone();
    kernel_watch.extend(policy.iter().flat_map(|p| p.watched.iter().cloned()));
    kernel_watch.sort_by_key(|b| b.key);
    kernel_watch.dedup_by_key(|b| b.key);
    let mut scope = config
        .scope_cgroups
        .iter()
        .map(|p| scope::resolve(p))
        .collect::<Result<Vec<_>, _>>()?;
    scope.extend(scope::descendant_cgroups(&scope));
    // The policy's kernel plan widens the gates: its credential globs are watched and the
    // CIDRs it allows outright pass in the kernel (its invariant: nothing there would ask).
    let baseline = Baseline {
        allow: egress::allow_list(&config.egress_allow, &config.hub_url),
        credential_globs: config.credentials.clone(),
    };
    let wanted = baseline.wanted(policy.as_ref().map(|p| p.policy.kernel_plan()).as_ref());
    let credentials = files::resolve_credentials(&wanted.credential_globs, &files::homes())?;
    for net in &wanted.allow {
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
    // Masking and the audit log come up before any gate is attached: an action that cannot
    // be masked, sealed and recorded must never be held (or let through).
    let redactor = Arc::new(Redactor::from_settings(&config.masking)?);
    if !redactor.seals() {
        tracing::warn!(
            "masking.seal_raw_context = false: raw context is discarded and cannot be revealed"
        );
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
        &crate::hub_client::HubOptions {
            tls: config.hub_tls.clone(),
            fail_mode: config.hub_fail_mode,
        },
    )?;

    // After the audit log exists, so its inode is among the protected ones.
    // Directories (the audit dir, `[files] protect` entries that are directories) are
    // protected by inode: files created in them later are covered too.
    let mut protect = config.protect.clone();
    protect.extend(audit_files(&config.audit.dir));
    protect.push(config.audit.dir.clone());
    let (protected_dirs, protected): (Vec<_>, Vec<_>) = files::resolve_existing(&protect)
        .into_iter()
        .partition(|(path, _)| path.is_dir());
    let dir_keys: Vec<_> = protected_dirs.iter().map(|(_, k)| *k).collect();

    let allow_keys: Vec<_> = wanted.allow.iter().map(egress::key).collect();
    let protected_keys: Vec<_> = protected.iter().map(|(_, k)| *k).collect();
    // Walked after the scope is known and before attaching; a process forked between the
    // walk and the fork tracepoint is caught by its cgroup (the tracepoint attaches first).
    let scope_tasks = scope::existing_tasks(&scope);
    let mut gates = loader::load(&GateSpec {
        offsets,
        scope: &scope,
        scope_tasks: &scope_tasks,
        watched: &kernel_watch,
        allow: &allow_keys,
        credentials: &credentials,
        protected_files: &protected_keys,
        protected_dirs: &dir_keys,
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
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;

    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let audit = AuditTrail::new(
        log.handle(),
        redactor,
        config.agent_id.clone(),
        host.clone(),
    );
    audit.lifecycle(
        LifecyclePhase::Start,
        format!(
            "agent {} ready: gates attached; watching {:?}; scope {:?}; policy {:?}; credentials {:?}; egress allow {:?}; protected {:?}",
            config.agent_id,
            kernel_watch.iter().map(|w| w.path.display().to_string()).collect::<Vec<_>>(),
            scope.iter().map(|s| s.path.display().to_string()).collect::<Vec<_>>(),
            policy.as_ref().map(|p| p.hash().to_owned()),
            credentials.iter().map(|c| c.path.display().to_string()).collect::<Vec<_>>(),
            wanted.allow.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            protected
                .iter()
                .chain(&protected_dirs)
                .chain(&gates.pin_dirs)
                .map(|(p, _)| p.display().to_string())
                .collect::<Vec<_>>(),
        ),
    )?;
    let reveal_server =
        crate::reveal::serve(&config.audit.dir, log.handle()).map_err(|source| {
            DaemonError::RevealSocket {
                dir: config.audit.dir.clone(),
                source,
            }
        })?;

    let (tx, mut rx) = mpsc::channel::<Msg>(1024);
    let mut coordinator = Coordinator::new(
        config.agent_id.clone(),
        host,
        config.decision_ttl,
        Rules {
            watched: watched.clone(),
            credentials: credentials.clone(),
            dns_names: gates.dns_names.take(),
            tool_digests: crate::content::ToolDigests::new(&kernel_watch),
            protected: protected
                .iter()
                .chain(&protected_dirs)
                .chain(&gates.pin_dirs)
                .cloned()
                .collect(),
        },
        hub.clone(),
        audit.clone(),
        KernelAnswers {
            verdicts: gates.verdicts,
            pending: gates.pending,
            watched_exec: gates.watched_exec,
            sets: KernelSets::new(
                baseline,
                gates.egress_allow,
                gates.cred_files,
                &wanted,
                &credentials,
            ),
        },
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

    if gates.adopted {
        readopt(&mut coordinator);
    }
    let mut scope_state = ScopeState {
        roots: config.scope_cgroups.clone(),
        known: scope.iter().map(|s| s.id).collect(),
    };
    // inotify first, then one re-resolve: whatever appeared between the start-up
    // resolution and the watches is found now, everything later is reported.
    let mut cred_watch = new_watcher("credential files");
    let mut cgroup_watch = new_watcher("scope cgroups");
    resync_credentials(&mut cred_watch, &mut coordinator);
    scope_state.resync(
        &mut cgroup_watch,
        &mut gates.scope_cgroups,
        &mut gates.scope_gen,
    );
    tracing::info!(
        credential_dirs = cred_watch.as_ref().map_or(0, DirWatcher::len),
        cgroup_dirs = cgroup_watch.as_ref().map_or(0, DirWatcher::len),
        rescan = ?config.rescan_interval,
        "watching for new credential files and scope sub-cgroups"
    );
    // Tell systemd (Type=notify) — and tests, which listen on NOTIFY_SOCKET — that the
    // gates are attached and their rules follow the file system from here on.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let mut rescan = tokio::time::interval_at(
        tokio::time::Instant::now() + config.rescan_interval,
        config.rescan_interval,
    );
    // A burst of events (an editor's save, `mkdir -p`, a unit starting) is resolved once.
    let mut cred_due: Option<tokio::time::Instant> = None;
    let mut cgroup_due: Option<tokio::time::Instant> = None;
    let far = || tokio::time::Instant::now() + std::time::Duration::from_secs(86_400);
    let why = loop {
        tokio::select! {
            Some(msg) = rx.recv() => {
                let reload = matches!(msg, Msg::ReloadPolicy(_));
                coordinator.handle(msg).await;
                if reload {
                    // A new policy may name other credential globs: watch where they point.
                    resync_credentials(&mut cred_watch, &mut coordinator);
                }
            }
            _ = sighup.recv() => {
                coordinator.handle(Msg::ReloadPolicy("SIGHUP")).await;
                resync_credentials(&mut cred_watch, &mut coordinator);
            }
            () = changed(&mut cred_watch) => {
                cred_due.get_or_insert_with(|| tokio::time::Instant::now() + DEBOUNCE);
            }
            () = changed(&mut cgroup_watch) => {
                cgroup_due.get_or_insert_with(|| tokio::time::Instant::now() + DEBOUNCE);
            }
            _ = tokio::time::sleep_until(cred_due.unwrap_or_else(far)), if cred_due.is_some() => {
                cred_due = None;
                resync_credentials(&mut cred_watch, &mut coordinator);
            }
            _ = tokio::time::sleep_until(cgroup_due.unwrap_or_else(far)), if cgroup_due.is_some() => {
                cgroup_due = None;
                scope_state.resync(&mut cgroup_watch, &mut gates.scope_cgroups, &mut gates.scope_gen);
            }
            _ = rescan.tick() => {
                resync_credentials(&mut cred_watch, &mut coordinator);
                scope_state.resync(&mut cgroup_watch, &mut gates.scope_cgroups, &mut gates.scope_gen);
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
    let stamp = |p: &std::path::Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
    };
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

/// How long a burst of inotify events may last before the re-resolve runs.
const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(50);

/// A watcher, or `None` (logged) when inotify is unavailable: then only the periodic
/// rescan finds changes.
fn new_watcher(what: &str) -> Option<DirWatcher> {
    DirWatcher::new()
        .inspect_err(|error| {
            tracing::warn!(%error, what, "no inotify; changes are found by the periodic rescan only");
        })
        .ok()
}

/// The next relevant event of `watcher`; never resolves without one. (It must not resolve
/// for an irrelevant event either: `select!` would disable the branch until another
/// branch fired.)
async fn changed(watcher: &mut Option<DirWatcher>) {
    match watcher {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

/// Re-plans the credential watches, then re-resolves the globs (in that order, so a file
/// created meanwhile is either found now or reported by its directory's watch).
fn resync_credentials(watcher: &mut Option<DirWatcher>, coordinator: &mut Coordinator) {
    let plan = |c: &Coordinator| {
        let sets = &c.kernel.sets;
        files::watch_plan(
            sets.credential_patterns(),
            &files::all_homes(),
            &sets.credential_files(),
        )
    };
    if let Some(w) = watcher.as_mut() {
        w.apply(&plan(coordinator));
    }
    coordinator.refresh_credentials();
    if let Some(w) = watcher.as_mut() {
        // The directories of files found just now (symlink targets elsewhere).
        w.apply(&plan(coordinator));
    }
}

/// The configured scope cgroups and the ids (theirs and their sub-cgroups') in the kernel.
struct ScopeState {
    roots: Vec<std::path::PathBuf>,
    known: std::collections::HashSet<u64>,
}

impl ScopeState {
    /// Re-resolves the configured cgroups (a unit restart re-creates its cgroup under a
    /// new id) and their sub-cgroups, watches the tree, and brings the kernel map up to
    /// date: new ids added, ids of removed cgroups dropped (they can hold no process).
    fn resync(
        &mut self,
        watcher: &mut Option<DirWatcher>,
        map: &mut aya::maps::HashMap<aya::maps::MapData, u64, u32>,
        generation: &mut aya::maps::Array<aya::maps::MapData, u64>,
    ) {
        let roots: Vec<_> = self
            .roots
            .iter()
            .filter_map(|p| scope::resolve(p).ok())
            .collect();
        let mut plan = crate::dirwatch::WatchPlan::default();
        // The configured cgroups' parents, for a root that is removed and created again.
        for root in &self.roots {
            let path = if root.is_absolute() {
                root.clone()
            } else {
                scope::cgroup2_root().join(root)
            };
            if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
                plan.add_entry(dir, name);
            }
        }
        plan.add_trees(roots.iter().map(|r| r.path.clone()));
        if let Some(w) = watcher.as_mut() {
            // Watch before listing: a sub-cgroup made meanwhile is listed or reported.
            w.apply(&plan);
        }
        let mut all = roots.clone();
        all.extend(scope::descendant_cgroups(&roots));
        if let Some(w) = watcher.as_mut() {
            plan.add_trees(all.iter().map(|c| c.path.clone()));
            w.apply(&plan);
        }
        let now: std::collections::HashSet<u64> = all.iter().map(|c| c.id).collect();
        let mut added = Vec::new();
        for cgroup in &all {
            if self.known.insert(cgroup.id) {
                match map.insert(cgroup.id, 1, 0) {
                    Ok(()) => added.push(cgroup),
                    Err(error) => {
                        tracing::error!(%error, path = %cgroup.path.display(), "cannot add scope cgroup")
                    }
                }
            }
        }
        if !added.is_empty() {
            // After the inserts: tasks that cached "out of scope" look again.
            if let Err(error) = loader::bump_scope_generation(generation) {
                tracing::error!(%error, "cannot invalidate cached scope answers");
            }
        }
        for cgroup in added {
            // Logged last: from this line on, the cgroup's tasks are in scope.
            tracing::info!(path = %cgroup.path.display(), id = cgroup.id, "new scope cgroup");
        }
        let gone: Vec<u64> = self.known.difference(&now).copied().collect();
        for id in gone {
            let _ = map.remove(&id);
            self.known.remove(&id);
        }
    }
}

/// The audit log's files as they are now (later rotations are covered by the protected
/// directory they are created in).
fn audit_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default()
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
