//! Loads the BPF object, fills its maps and attaches every program — all or nothing.
//!
//! If any step fails, the partially loaded object is dropped, which detaches whatever was
//! attached: the host is never left half-gated.

use agent_common::{names, AllowKey, InodeKey, KernelOffsets};
use aya::{
    maps::{HashMap, LpmTrie, MapData, RingBuf},
    programs::{Lsm, TracePoint, UProbe},
    Btf, Ebpf, EbpfLoader,
};

use crate::{files::ResolvedFile, resolve::ResolvedBinary, scope::ScopeCgroup};

/// Every LSM gate: (program, hook), attached in this order after scope tracking.
const LSM_GATES: &[(&str, &str)] = &[
    (names::PROG_EXEC_CHECK, names::LSM_HOOK_EXEC),
    (names::PROG_CONNECT_CHECK, names::LSM_HOOK_CONNECT),
    (names::PROG_SENDMSG_CHECK, names::LSM_HOOK_SENDMSG),
    (names::PROG_OPEN_CHECK, names::LSM_HOOK_OPEN),
    (names::PROG_KILL_CHECK, names::LSM_HOOK_KILL),
    (names::PROG_PTRACE_CHECK, names::LSM_HOOK_PTRACE),
    (names::PROG_BPF_CHECK, names::LSM_HOOK_BPF),
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
    pub pending: HashMap<MapData, agent_common::HoldKey, u64>,
    pub events: RingBuf<MapData>,
    /// Credential files, kept up to date as files appear or are replaced.
    pub cred_files: HashMap<MapData, InodeKey, u32>,
    /// Scope cgroups, extended as sub-cgroups appear.
    pub scope_cgroups: HashMap<MapData, u64, u32>,
    /// Host names watched processes resolved (None when no libc was found to probe).
    pub dns_names: Option<HashMap<MapData, agent_common::DnsKey, agent_common::HostName>>,
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
    /// The agent's own files: no writes from scope.
    pub protected_files: &'a [InodeKey],
    /// The daemon's tgid(s): no signals or ptrace from scope.
    pub protected_tasks: &'a [u32],
}

/// Loads, fills and attaches everything in [`GateSpec`].
///
/// # Errors
/// The first [`LoadError`]; nothing stays attached when it is returned.
pub fn load(spec: &GateSpec<'_>) -> Result<Gates, LoadError> {
    if OBJECT.is_empty() {
        return Err(LoadError::NotBuiltIn);
    }
    let mut ebpf = EbpfLoader::new()
        .override_global(names::GLOBAL_OFFSETS, &spec.offsets, true)
        .load(OBJECT)
        .map_err(LoadError::Object)?;

    fill(&mut ebpf, spec)?;

    // Scope tracking first, so no fork between attaching the gate and tracking is missed.
    attach_tracepoint(&mut ebpf, names::PROG_FORK, &[("sched", "sched_process_fork")])?;
    attach_tracepoint(&mut ebpf, names::PROG_EXIT, &[("sched", "sched_process_exit")])?;
    attach_tracepoint(
        &mut ebpf,
        names::PROG_EXEC_DONE,
        &[("syscalls", "sys_exit_execve"), ("syscalls", "sys_exit_execveat")],
    )?;
    let btf = Btf::from_sys_fs().map_err(LoadError::Btf)?;
    for &(name, hook) in LSM_GATES {
        let lsm: &mut Lsm = program(&mut ebpf, name)?;
        let program_err = |source| LoadError::Program { program: name, source };
        lsm.load(hook, &btf).map_err(program_err)?;
        lsm.attach().map_err(program_err)?;
        tracing::info!(hook, "gate attached");
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

    Ok(Gates {
        dns_names,
        cred_files: take_map(&mut ebpf, names::MAP_CRED_FILES)?,
        scope_cgroups: take_map(&mut ebpf, names::MAP_SCOPE_CGROUPS)?,
        verdicts: take_map(&mut ebpf, names::MAP_VERDICTS)?,
        pending: take_map(&mut ebpf, names::MAP_PENDING)?,
        events: take_map(&mut ebpf, names::MAP_EVENTS)?,
        _ebpf: ebpf,
    })
}

fn fill(ebpf: &mut Ebpf, spec: &GateSpec<'_>) -> Result<(), LoadError> {
    let mut cgroups: HashMap<_, u64, u32> = map_mut(ebpf, names::MAP_SCOPE_CGROUPS)?;
    for cg in spec.scope {
        cgroups
            .insert(cg.id, 1, 0)
            .map_err(|source| LoadError::Map { map: names::MAP_SCOPE_CGROUPS, source })?;
    }
    let mut tasks: HashMap<_, u32, u32> = map_mut(ebpf, names::MAP_SCOPE_TASKS)?;
    for tgid in spec.scope_tasks {
        tasks.insert(*tgid, 1, 0).map_err(|source| LoadError::Map { map: names::MAP_SCOPE_TASKS, source })?;
    }
    let mut watched: HashMap<_, InodeKey, u32> = map_mut(ebpf, names::MAP_WATCHED_EXEC)?;
    for (index, binary) in spec.watched.iter().enumerate() {
        watched
            .insert(binary.key, index as u32, 0)
            .map_err(|source| LoadError::Map { map: names::MAP_WATCHED_EXEC, source })?;
    }
    let mut creds: HashMap<_, InodeKey, u32> = map_mut(ebpf, names::MAP_CRED_FILES)?;
    for (index, file) in spec.credentials.iter().enumerate() {
        creds.insert(file.key, index as u32, 0).map_err(|source| LoadError::Map { map: names::MAP_CRED_FILES, source })?;
    }
    let mut protected: HashMap<_, InodeKey, u32> = map_mut(ebpf, names::MAP_PROTECTED_FILES)?;
    for key in spec.protected_files {
        protected.insert(*key, 1, 0).map_err(|source| LoadError::Map { map: names::MAP_PROTECTED_FILES, source })?;
    }
    let mut daemon: HashMap<_, u32, u32> = map_mut(ebpf, names::MAP_PROTECTED_TASKS)?;
    for tgid in spec.protected_tasks {
        daemon.insert(*tgid, 1, 0).map_err(|source| LoadError::Map { map: names::MAP_PROTECTED_TASKS, source })?;
    }
    let map = ebpf.map_mut(names::MAP_EGRESS_ALLOW).ok_or(LoadError::NoMap(names::MAP_EGRESS_ALLOW))?;
    let mut allow: LpmTrie<_, [u8; 16], u32> =
        LpmTrie::try_from(map).map_err(|source| LoadError::Map { map: names::MAP_EGRESS_ALLOW, source })?;
    for key in spec.allow {
        let trie_key = aya::maps::lpm_trie::Key::new(key.prefix_len, key.addr);
        allow.insert(&trie_key, 1, 0).map_err(|source| LoadError::Map { map: names::MAP_EGRESS_ALLOW, source })?;
    }
    Ok(())
}

/// The C library processes on this host load (the daemon's own, from /proc/self/maps).
fn libc_path() -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_ascii_whitespace().nth(5))
        .find(|p| p.rsplit('/').next().is_some_and(|f| f.starts_with("libc.so") || f.starts_with("libc-")))
        .map(std::path::PathBuf::from)
}

fn attach_resolver_probes(ebpf: &mut Ebpf) -> Result<std::path::PathBuf, LoadError> {
    let libc = libc_path().ok_or(LoadError::NoProgram("libc for getaddrinfo"))?;
    for name in [names::PROG_DNS_ENTER, names::PROG_DNS_EXIT] {
        let program_err = |source| LoadError::Program { program: name, source };
        let probe: &mut UProbe = program(ebpf, name)?;
        probe.load().map_err(program_err)?;
        probe
            .attach(names::SYM_GETADDRINFO, &libc, aya::programs::uprobe::UProbeScope::AllProcesses)
            .map_err(program_err)?;
    }
    Ok(libc)
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    points: &[(&str, &str)],
) -> Result<(), LoadError> {
    let program_err = |source| LoadError::Program { program: name, source };
    let tp: &mut TracePoint = program(ebpf, name)?;
    tp.load().map_err(program_err)?;
    for (category, point) in points {
        tp.attach(category, point).map_err(program_err)?;
    }
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(LoadError::NoProgram(name))?;
    program.try_into().map_err(|source| LoadError::Program { program: name, source })
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
