//! Loads the BPF object, fills its maps and attaches every program — all or nothing.
//!
//! If any step fails, the partially loaded object is dropped, which detaches whatever was
//! attached: the host is never left half-gated.

use std::collections::HashSet;

use agent_common::{AllowKey, InodeKey, KernelOffsets, names};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, RingBuf},
    programs::{Lsm, TracePoint, UProbe, links::FdLink},
};

use crate::{files::ResolvedFile, resolve::ResolvedBinary, scope::ScopeCgroup};

/// Every LSM gate: (program, hook), attached in this order after scope tracking.
const LSM_GATES: &[(&str, &str)] = &[
    (names::PROG_EXEC_CHECK, names::LSM_HOOK_EXEC),
    (names::PROG_CONNECT_CHECK, names::LSM_HOOK_CONNECT),
    (names::PROG_SENDMSG_CHECK, names::LSM_HOOK_SENDMSG),
    (names::PROG_RECV_CHECK, names::LSM_HOOK_RECV),
    (names::PROG_OPEN_CHECK, names::LSM_HOOK_OPEN),
    (names::PROG_KILL_CHECK, names::LSM_HOOK_KILL),
    (names::PROG_PTRACE_CHECK, names::LSM_HOOK_PTRACE),
    (names::PROG_BPF_CHECK, names::LSM_HOOK_BPF),
    (names::PROG_UNLINK_CHECK, names::LSM_HOOK_UNLINK),
    (names::PROG_RMDIR_CHECK, names::LSM_HOOK_RMDIR),
    (names::PROG_RENAME_CHECK, names::LSM_HOOK_RENAME),
    (names::PROG_LINK_CHECK, names::LSM_HOOK_LINK),
    (names::PROG_CREATE_CHECK, names::LSM_HOOK_CREATE),
    (names::PROG_MKDIR_CHECK, names::LSM_HOOK_MKDIR),
    (names::PROG_SYMLINK_CHECK, names::LSM_HOOK_SYMLINK),
    (names::PROG_MKNOD_CHECK, names::LSM_HOOK_MKNOD),
    (names::PROG_TRUNCATE_CHECK, names::LSM_HOOK_TRUNCATE),
    (names::PROG_CHMOD_CHECK, names::LSM_HOOK_CHMOD),
    (names::PROG_CHOWN_CHECK, names::LSM_HOOK_CHOWN),
    (names::PROG_SETXATTR_CHECK, names::LSM_HOOK_SETXATTR),
    (names::PROG_REMOVEXATTR_CHECK, names::LSM_HOOK_REMOVEXATTR),
    (names::PROG_IOCTL_CHECK, names::LSM_HOOK_IOCTL),
];

/// The embedded object; empty when the build had no BPF toolchain (see build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "this airlock binary was built without its BPF programs (bpf-linker or nightly rust-src was missing): run `cargo xtask setup`, then rebuild"
    )]
    NotBuiltIn,
    #[error("loading the BPF object failed: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("reading kernel BTF for the LSM hooks failed: {0}")]
    Btf(#[source] aya::BtfError),
    #[error("BPF program `{0}` is missing from the object")]
    NoProgram(&'static str),
    #[error("BPF map `{0}` is missing from the object")]
    NoMap(&'static str),
    #[error("loading or attaching `{program}` failed: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("cannot pin the gates under {path}: {reason}")]
    Pin { path: String, reason: String },
    #[error("filling BPF map `{map}` failed: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// The loaded, attached gates, and the maps the daemon talks through.
pub struct Gates {
    /// Owns the programs and links; dropping it detaches everything.
    _ebpf: Ebpf,
    pub verdicts: HashMap<MapData, agent_common::HoldKey, u32>,
    /// Watched binaries; rewritten on policy reload.
    pub watched_exec: HashMap<MapData, InodeKey, u32>,
    pub pending: HashMap<MapData, agent_common::HoldKey, u64>,
    pub events: RingBuf<MapData>,
    /// Credential files, kept up to date as files appear or are replaced.
    pub cred_files: HashMap<MapData, InodeKey, u32>,
    /// Destinations that pass in the kernel; rewritten on policy reload.
    pub egress_allow: LpmTrie<MapData, [u8; 16], u32>,
    /// Scope cgroups, extended as sub-cgroups appear.
    pub scope_cgroups: HashMap<MapData, u64, u32>,
    /// Bumped with [`bump_scope_generation`] after adding to the scope maps.
    pub scope_gen: Array<MapData, u64>,
    /// True when a previous daemon's pinned gates were found and taken over.
    pub adopted: bool,
    /// Where the gates are pinned.
    pub pin_dir: std::path::PathBuf,
    /// Host names watched processes resolved (None when no libc was found to probe).
    pub dns_names: Option<HashMap<MapData, agent_common::DnsKey, agent_common::HostName>>,
    /// The pin directories, protected like the agent's other directories.
    pub pin_dirs: Vec<(std::path::PathBuf, InodeKey)>,
}

/// What the gates enforce.
pub struct GateSpec<'a> {
    pub offsets: KernelOffsets,
    pub scope: &'a [ScopeCgroup],
    /// Processes already in scope when the agent starts (see `scope::existing_tasks`).
    pub scope_tasks: &'a [u32],
    pub watched: &'a [ResolvedBinary],
    /// Allowed egress prefixes.
    pub allow: &'a [AllowKey],
    pub credentials: &'a [ResolvedFile],
    /// The agent's own files: no writes, unlink, rename or link from scope.
    pub protected_files: &'a [InodeKey],
    /// The agent's directories: nothing in them may be written, removed, renamed or
    /// created from scope (the pin directories are added by the loader).
    pub protected_dirs: &'a [InodeKey],
    /// The daemon's tgid(s): no signals or ptrace from scope.
    pub protected_tasks: &'a [u32],
    /// bpffs directory for maps and links, so enforcement outlives the daemon.
    pub pin_dir: &'a std::path::Path,
    pub settings: agent_common::Settings,
}

/// Loads, fills and attaches everything in [`GateSpec`].
///
/// # Errors
/// The first [`LoadError`]; nothing stays attached when it is returned.
pub fn load(spec: &GateSpec<'_>) -> Result<Gates, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NotBuiltIn);
    }
    let links_dir = spec.pin_dir.join("links");
    let adopted = std::fs::read_dir(&links_dir).is_ok_and(|mut d| d.next().is_some());
    let result = load_pinned(spec, adopted);
    if result.is_err() && !adopted {
        // A refused fresh start leaves nothing behind (no maps, no links).
        let _ = std::fs::remove_dir_all(spec.pin_dir);
    }
    result
}

/// Tells the gates that scope grew: every cached "out of scope" answer is recomputed at
/// the task's next gated call. Call after adding to `SCOPE_CGROUPS` or `SCOPE_TASKS`.
///
/// # Errors
/// The map update's error (the caller logs it: the next bump repairs it).
pub fn bump_scope_generation<T: std::borrow::BorrowMut<MapData>>(
    generation: &mut Array<T, u64>,
) -> Result<(), aya::maps::MapError> {
    let now = generation.get(&0, 0)?;
    generation.set(0, now.wrapping_add(1), 0)
}

/// Removes the pins, so dropping the loaded object detaches everything (graceful stop).
pub fn unpin(pin_dir: &std::path::Path) {
    if let Err(error) = std::fs::remove_dir_all(pin_dir) {
        tracing::warn!(%error, dir = %pin_dir.display(), "cannot remove pinned gates");
    }
}

fn load_pinned(spec: &GateSpec<'_>, adopted: bool) -> Result<Gates, LoadError> {
    let pin_err = |path: &std::path::Path, reason: String| LoadError::Pin {
        path: path.display().to_string(),
        reason,
    };
    let maps_dir = spec.pin_dir.join("maps");
    let links_dir = spec.pin_dir.join("links");
    for dir in [&maps_dir, &links_dir] {
        std::fs::create_dir_all(dir).map_err(|e| pin_err(dir, e.to_string()))?;
    }
    let pin_dirs = crate::files::resolve_existing(&[
        spec.pin_dir.to_owned(),
        maps_dir.clone(),
        links_dir.clone(),
    ]);
    let mut ebpf = EbpfLoader::new()
        .override_global(names::GLOBAL_OFFSETS, &spec.offsets, true)
        .override_global(names::GLOBAL_SETTINGS, &spec.settings, true)
        .default_map_pin_directory(&maps_dir)
        // SCOPE_CACHE is task local storage, which aya has no user-space type for (only
        // the programs use it).
        .allow_unsupported_maps()
        .load(OBJECT)
        .map_err(LoadError::Object)?;
    // The previous daemon's pid must not stay protected (it could be reused).
    let mut daemon: HashMap<_, u32, u32> = map_mut(&mut ebpf, names::MAP_PROTECTED_TASKS)?;
    let stale: Vec<u32> = daemon.keys().flatten().collect();
    for pid in stale {
        let _ = daemon.remove(&pid);
    }
    if adopted {
        prune_stale(&mut ebpf, spec, &pin_dirs)?;
    }

    fill(&mut ebpf, spec)?;
    let mut protected: HashMap<_, InodeKey, u32> = map_mut(&mut ebpf, names::MAP_PROTECTED_FILES)?;
    for (_, key) in &pin_dirs {
        protected
            .insert(*key, names::PROTECTED_DIR, 0)
            .map_err(|source| LoadError::Map {
                map: names::MAP_PROTECTED_FILES,
                source,
            })?;
    }

    // Scope tracking first, so no fork between attaching the gate and tracking is missed.
    attach_tracepoint(
        &mut ebpf,
        names::PROG_FORK,
        &[("sched", "sched_process_fork")],
        &links_dir,
    )?;
    attach_tracepoint(
        &mut ebpf,
        names::PROG_EXIT,
        &[("sched", "sched_process_exit")],
        &links_dir,
    )?;
    attach_tracepoint(
        &mut ebpf,
        names::PROG_EXEC_DONE,
        &[
            ("syscalls", "sys_exit_execve"),
            ("syscalls", "sys_exit_execveat"),
        ],
        &links_dir,
    )?;
    let btf = Btf::from_sys_fs().map_err(LoadError::Btf)?;
    for &(name, hook) in LSM_GATES {
        let lsm: &mut Lsm = program(&mut ebpf, name)?;
        let program_err = |source| LoadError::Program {
            program: name,
            source,
        };
        lsm.load(hook, &btf).map_err(program_err)?;
        let id = lsm.attach().map_err(program_err)?;
        let link = FdLink::from(lsm.take_link(id).map_err(program_err)?);
        pin_link(link, &links_dir, name)?;
        tracing::info!(hook, adopted, "gate attached and pinned");
    }

    let dns_names = match attach_resolver_probes(&mut ebpf) {
        Ok(libc) => {
            tracing::info!(libc = %libc.display(), "resolver probes attached");
            Some(take_map(&mut ebpf, names::MAP_DNS_NAMES)?)
        }
        // Host names are context, not enforcement: run without them, loudly.
        Err(error) => {
            tracing::warn!(%error, "no getaddrinfo probes; held destinations will carry addresses only");
            None
        }
    };

    // Like host names, HTTPS naming is context: without libssl, TLS is named by SNI. Only the
    // first-send gate reads it, and the probes trap every process's SSL_write (in scope or
    // not), so with holds at connect they are not attached at all.
    if spec.settings.defer_tcp_to_first_send != 0 {
        let libssl = attach_ssl_probes(&mut ebpf);
        if libssl.is_empty() {
            tracing::warn!(
                "no OpenSSL library found to probe; HTTPS held at first send is named by SNI only"
            );
        }
    }

    Ok(Gates {
        adopted,
        pin_dir: spec.pin_dir.to_owned(),
        dns_names,
        pin_dirs,
        cred_files: take_map(&mut ebpf, names::MAP_CRED_FILES)?,
        egress_allow: take_map(&mut ebpf, names::MAP_EGRESS_ALLOW)?,
        scope_cgroups: take_map(&mut ebpf, names::MAP_SCOPE_CGROUPS)?,
        scope_gen: take_map(&mut ebpf, names::MAP_SCOPE_GEN)?,
        verdicts: take_map(&mut ebpf, names::MAP_VERDICTS)?,
        watched_exec: take_map(&mut ebpf, names::MAP_WATCHED_EXEC)?,
        pending: take_map(&mut ebpf, names::MAP_PENDING)?,
        events: take_map(&mut ebpf, names::MAP_EVENTS)?,
        _ebpf: ebpf,
    })
}

/// Takes out of adopted maps what this configuration does not put there: a previous
/// daemon's allowed prefixes, watched binaries, credential and protected files and scope
/// cgroups would otherwise outlive a narrower configuration. Removing first only makes the
/// kernel stricter until `fill` runs.
fn prune_stale(
    ebpf: &mut Ebpf,
    spec: &GateSpec<'_>,
    pin_dirs: &[(std::path::PathBuf, InodeKey)],
) -> Result<(), LoadError> {
    let keep: HashSet<u64> = spec.scope.iter().map(|c| c.id).collect();
    prune_hash(ebpf, names::MAP_SCOPE_CGROUPS, &keep)?;
    let keep: HashSet<InodeKey> = spec.watched.iter().map(|b| b.key).collect();
    prune_hash(ebpf, names::MAP_WATCHED_EXEC, &keep)?;
    let keep: HashSet<InodeKey> = spec.credentials.iter().map(|f| f.key).collect();
    prune_hash(ebpf, names::MAP_CRED_FILES, &keep)?;
    // Still-protected entries are kept (not removed and re-added) so the agent's files stay
    // covered throughout the restart.
    let keep: HashSet<InodeKey> = spec
        .protected_files
        .iter()
        .chain(spec.protected_dirs)
        .chain(pin_dirs.iter().map(|(_, key)| key))
        .copied()
        .collect();
    prune_hash(ebpf, names::MAP_PROTECTED_FILES, &keep)?;

    let mut allow = allow_trie(ebpf)?;
    let keep: HashSet<(u32, [u8; 16])> =
        spec.allow.iter().map(|k| (k.prefix_len, k.addr)).collect();
    let stale: Vec<_> = allow
        .keys()
        .flatten()
        .filter(|k| !keep.contains(&(k.prefix_len(), k.data())))
        .collect();
    for key in stale {
        tracing::info!(
            prefix_len = key.prefix_len(),
            "dropping an allowed prefix the configuration no longer names"
        );
        allow.remove(&key).map_err(|source| LoadError::Map {
            map: names::MAP_EGRESS_ALLOW,
            source,
        })?;
    }
    Ok(())
}

fn allow_trie(ebpf: &mut Ebpf) -> Result<LpmTrie<&mut MapData, [u8; 16], u32>, LoadError> {
    let map = ebpf
        .map_mut(names::MAP_EGRESS_ALLOW)
        .ok_or(LoadError::NoMap(names::MAP_EGRESS_ALLOW))?;
    LpmTrie::try_from(map).map_err(|source| LoadError::Map {
        map: names::MAP_EGRESS_ALLOW,
        source,
    })
}

fn prune_hash<K>(ebpf: &mut Ebpf, name: &'static str, keep: &HashSet<K>) -> Result<(), LoadError>
where
    K: aya::Pod + Eq + std::hash::Hash,
{
    let mut map: HashMap<_, K, u32> = map_mut(ebpf, name)?;
    let stale: Vec<K> = map.keys().flatten().filter(|k| !keep.contains(k)).collect();
    if !stale.is_empty() {
        tracing::info!(
            map = name,
            entries = stale.len(),
            "dropping entries the configuration no longer names"
        );
    }
    for key in stale {
        map.remove(&key)
            .map_err(|source| LoadError::Map { map: name, source })?;
    }
    Ok(())
}

fn fill(ebpf: &mut Ebpf, spec: &GateSpec<'_>) -> Result<(), LoadError> {
    let mut cgroups: HashMap<_, u64, u32> = map_mut(ebpf, names::MAP_SCOPE_CGROUPS)?;
    for cg in spec.scope {
        cgroups
            .insert(cg.id, 1, 0)
            .map_err(|source| LoadError::Map {
                map: names::MAP_SCOPE_CGROUPS,
                source,
            })?;
    }
    let mut tasks: HashMap<_, u32, u32> = map_mut(ebpf, names::MAP_SCOPE_TASKS)?;
    for tgid in spec.scope_tasks {
        tasks.insert(*tgid, 1, 0).map_err(|source| LoadError::Map {
            map: names::MAP_SCOPE_TASKS,
            source,
        })?;
    }
    // Pinned maps are shared with a previous daemon's programs and their cached answers.
    let map = ebpf
        .map_mut(names::MAP_SCOPE_GEN)
        .ok_or(LoadError::NoMap(names::MAP_SCOPE_GEN))?;
    let mut generation: Array<_, u64> = Array::try_from(map).map_err(|source| LoadError::Map {
        map: names::MAP_SCOPE_GEN,
        source,
    })?;
    bump_scope_generation(&mut generation).map_err(|source| LoadError::Map {
        map: names::MAP_SCOPE_GEN,
        source,
    })?;
    let mut watched: HashMap<_, InodeKey, u32> = map_mut(ebpf, names::MAP_WATCHED_EXEC)?;
    for (index, binary) in spec.watched.iter().enumerate() {
        watched
            .insert(binary.key, index as u32, 0)
            .map_err(|source| LoadError::Map {
                map: names::MAP_WATCHED_EXEC,
                source,
            })?;
    }
    let mut creds: HashMap<_, InodeKey, u32> = map_mut(ebpf, names::MAP_CRED_FILES)?;
    for (index, file) in spec.credentials.iter().enumerate() {
        creds
            .insert(file.key, index as u32, 0)
            .map_err(|source| LoadError::Map {
                map: names::MAP_CRED_FILES,
                source,
            })?;
    }
    let mut protected: HashMap<_, InodeKey, u32> = map_mut(ebpf, names::MAP_PROTECTED_FILES)?;
    let files = spec
        .protected_files
        .iter()
        .map(|k| (k, names::PROTECTED_FILE));
    let dirs = spec
        .protected_dirs
        .iter()
        .map(|k| (k, names::PROTECTED_DIR));
    for (key, kind) in files.chain(dirs) {
        protected
            .insert(*key, kind, 0)
            .map_err(|source| LoadError::Map {
                map: names::MAP_PROTECTED_FILES,
                source,
            })?;
    }
    let mut daemon: HashMap<_, u32, u32> = map_mut(ebpf, names::MAP_PROTECTED_TASKS)?;
    // (stale entries of a previous daemon were removed in load_pinned)
    for tgid in spec.protected_tasks {
        daemon
            .insert(*tgid, 1, 0)
            .map_err(|source| LoadError::Map {
                map: names::MAP_PROTECTED_TASKS,
                source,
            })?;
    }
    let mut allow = allow_trie(ebpf)?;
    for key in spec.allow {
        let trie_key = aya::maps::lpm_trie::Key::new(key.prefix_len, key.addr);
        allow
            .insert(&trie_key, 1, 0)
            .map_err(|source| LoadError::Map {
                map: names::MAP_EGRESS_ALLOW,
                source,
            })?;
    }
    Ok(())
}

/// The C library processes on this host load (the daemon's own, from /proc/self/maps).
fn libc_path() -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_ascii_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|f| f.starts_with("libc.so") || f.starts_with("libc-"))
        })
        .map(std::path::PathBuf::from)
}

fn attach_resolver_probes(ebpf: &mut Ebpf) -> Result<std::path::PathBuf, LoadError> {
    let libc = libc_path().ok_or(LoadError::NoProgram("libc for getaddrinfo"))?;
    for name in [names::PROG_DNS_ENTER, names::PROG_DNS_EXIT] {
        let program_err = |source| LoadError::Program {
            program: name,
            source,
        };
        let probe: &mut UProbe = program(ebpf, name)?;
        probe.load().map_err(program_err)?;
        probe
            .attach(
                names::SYM_GETADDRINFO,
                &libc,
                aya::programs::uprobe::UProbeScope::AllProcesses,
            )
            .map_err(program_err)?;
    }
    Ok(libc)
}

/// Every distinct OpenSSL `libssl` on the host: the daemon's own (if loaded), the
/// dynamic linker's cache (`ldconfig -p`) and the standard paths; one per file (dev, inode).
fn libssl_paths() -> Vec<std::path::PathBuf> {
    let is_libssl = |p: &str| {
        p.rsplit('/')
            .next()
            // `libssl3.so` is NSS's, not OpenSSL's.
            .is_some_and(|f| f == "libssl.so" || f.starts_with("libssl.so."))
    };
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        candidates.extend(
            maps.lines()
                .filter_map(|l| l.split_ascii_whitespace().nth(5))
                .filter(|p| is_libssl(p))
                .map(str::to_owned),
        );
    }
    for ldconfig in ["/sbin/ldconfig", "/usr/sbin/ldconfig"] {
        if let Ok(out) = std::process::Command::new(ldconfig).arg("-p").output() {
            let text = String::from_utf8_lossy(&out.stdout);
            candidates.extend(
                text.lines()
                    .filter(|l| l.contains("x86-64"))
                    .filter_map(|l| l.rsplit_once(" => ").map(|(_, p)| p.trim().to_owned()))
                    .filter(|p| is_libssl(p)),
            );
            break;
        }
    }
    for dir in [
        "/usr/lib/x86_64-linux-gnu",
        "/lib/x86_64-linux-gnu",
        "/usr/lib64",
        "/lib64",
        "/usr/lib",
        "/usr/local/lib",
        "/usr/local/lib64",
    ] {
        for name in ["libssl.so.3", "libssl.so.1.1"] {
            candidates.push(format!("{dir}/{name}"));
        }
    }
    let mut seen = std::collections::HashSet::new();
    candidates
        .into_iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .filter(|p| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p).is_ok_and(|m| seen.insert((m.dev(), m.ino())))
        })
        .collect()
}

/// Attaches the OpenSSL probes (`ssl.rs` in agent-ebpf) to every libssl found; returns
/// the libraries probed. Failures are logged, not fatal: this is naming, not enforcement.
fn attach_ssl_probes(ebpf: &mut Ebpf) -> Vec<std::path::PathBuf> {
    const PROBES: &[(&str, &str)] = &[
        (names::PROG_SSL_WRITE_ENTER, names::SYM_SSL_WRITE),
        (names::PROG_SSL_WRITE_EXIT, names::SYM_SSL_WRITE),
        (names::PROG_SSL_WRITE_EX_ENTER, names::SYM_SSL_WRITE_EX),
        (names::PROG_SSL_WRITE_EXIT, names::SYM_SSL_WRITE_EX),
        (names::PROG_SSL_HANDSHAKE_ENTER, names::SYM_SSL_DO_HANDSHAKE),
        (names::PROG_SSL_HANDSHAKE_EXIT, names::SYM_SSL_DO_HANDSHAKE),
        (names::PROG_SSL_HANDSHAKE_ENTER, names::SYM_SSL_CONNECT),
        (names::PROG_SSL_HANDSHAKE_EXIT, names::SYM_SSL_CONNECT),
    ];
    let libs = libssl_paths();
    if libs.is_empty() {
        return libs;
    }
    for name in [
        names::PROG_SSL_WRITE_ENTER,
        names::PROG_SSL_WRITE_EX_ENTER,
        names::PROG_SSL_WRITE_EXIT,
        names::PROG_SSL_HANDSHAKE_ENTER,
        names::PROG_SSL_HANDSHAKE_EXIT,
    ] {
        let loaded = program::<UProbe>(ebpf, name).and_then(|p| {
            p.load().map_err(|source| LoadError::Program {
                program: name,
                source,
            })
        });
        if let Err(error) = loaded {
            tracing::warn!(%error, "OpenSSL probes not loaded; HTTPS is named by SNI only");
            return Vec::new();
        }
    }
    let mut probed = Vec::new();
    for lib in libs {
        let mut attached = 0;
        for &(name, symbol) in PROBES {
            let result = program::<UProbe>(ebpf, name).and_then(|p| {
                p.attach(
                    symbol,
                    &lib,
                    aya::programs::uprobe::UProbeScope::AllProcesses,
                )
                .map_err(|source| LoadError::Program {
                    program: name,
                    source,
                })
            });
            match result {
                Ok(_) => attached += 1,
                Err(error) => {
                    tracing::warn!(%error, lib = %lib.display(), symbol, "OpenSSL probe not attached")
                }
            }
        }
        if attached == PROBES.len() {
            tracing::info!(lib = %lib.display(), "OpenSSL probes attached");
        }
        if attached > 0 {
            probed.push(lib);
        }
    }
    probed
}

/// Pins `link` as `links_dir/name`, replacing (and so detaching) a previous daemon's link
/// only after the new one is attached: there is no moment without the gate.
fn pin_link(link: FdLink, links_dir: &std::path::Path, name: &str) -> Result<(), LoadError> {
    let final_path = links_dir.join(name);
    let new_path = links_dir.join(format!("{name}_new"));
    let _ = std::fs::remove_file(&new_path);
    let pinned = link.pin(&new_path).map_err(|e| LoadError::Pin {
        path: new_path.display().to_string(),
        reason: format!(
            "{e}: {}",
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        ),
    })?;
    std::fs::rename(&new_path, &final_path).map_err(|e| LoadError::Pin {
        path: final_path.display().to_string(),
        reason: e.to_string(),
    })?;
    // The pin keeps the link; our fd can go.
    drop(FdLink::from(pinned));
    Ok(())
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    points: &[(&str, &str)],
    links_dir: &std::path::Path,
) -> Result<(), LoadError> {
    let program_err = |source| LoadError::Program {
        program: name,
        source,
    };
    let tp: &mut TracePoint = program(ebpf, name)?;
    tp.load().map_err(program_err)?;
    for (i, (category, point)) in points.iter().enumerate() {
        // Pinned, scope tracking outlives the daemon. Should a kernel refuse to pin a
        // perf-event (tracepoint) link, the refused link is gone with the error: attach
        // again and keep that one with the loaded object; after a crash scope then comes
        // from the cgroups and the tasks already recorded.
        let id = tp.attach(category, point).map_err(program_err)?;
        let link = tp.take_link(id).map_err(program_err)?;
        let pinned = FdLink::try_from(link)
            .map_err(|e| e.to_string())
            .and_then(|link| {
                pin_link(link, links_dir, &format!("{name}_{i}")).map_err(|e| e.to_string())
            });
        if let Err(reason) = pinned {
            tracing::warn!(program = name, %reason, "scope tracking is not pinned on this kernel");
            tp.attach(category, point).map_err(program_err)?;
        }
    }
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(LoadError::NoProgram(name))?;
    program.try_into().map_err(|source| LoadError::Program {
        program: name,
        source,
    })
}

fn map_mut<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>, LoadError> {
    let map = ebpf.map_mut(name).ok_or(LoadError::NoMap(name))?;
    HashMap::try_from(map).map_err(|source| LoadError::Map { map: name, source })
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::NoMap(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { map: name, source })
}
