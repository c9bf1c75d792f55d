//! Loads the BPF object, fills its maps and attaches every program — all or nothing.
//!
//! If any step fails, the partially loaded object is dropped, which detaches whatever was
//! attached: the host is never left half-gated.

use agent_common::{names, InodeKey, KernelOffsets};
use aya::{
    maps::{HashMap, MapData, RingBuf},
    programs::{Lsm, TracePoint},
    Btf, Ebpf, EbpfLoader,
};

use crate::{resolve::ResolvedBinary, scope::ScopeCgroup};

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
    /// Watched binaries; rewritten on policy reload.
    pub watched_exec: HashMap<MapData, InodeKey, u32>,
    pub pending: HashMap<MapData, agent_common::HoldKey, u64>,
    pub events: RingBuf<MapData>,
}

/// What the gates enforce.
pub struct GateSpec<'a> {
    pub offsets: KernelOffsets,
    pub scope: &'a [ScopeCgroup],
    pub watched: &'a [ResolvedBinary],
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
    let lsm: &mut Lsm = program(&mut ebpf, names::PROG_EXEC_CHECK)?;
    let program_err = |source| LoadError::Program { program: names::PROG_EXEC_CHECK, source };
    lsm.load(names::LSM_HOOK_EXEC, &btf).map_err(program_err)?;
    lsm.attach().map_err(program_err)?;
    tracing::info!(hook = names::LSM_HOOK_EXEC, "exec gate attached");

    Ok(Gates {
        verdicts: take_map(&mut ebpf, names::MAP_VERDICTS)?,
        watched_exec: take_map(&mut ebpf, names::MAP_WATCHED_EXEC)?,
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
    let mut watched: HashMap<_, InodeKey, u32> = map_mut(ebpf, names::MAP_WATCHED_EXEC)?;
    for (index, binary) in spec.watched.iter().enumerate() {
        watched
            .insert(binary.key, index as u32, 0)
            .map_err(|source| LoadError::Map { map: names::MAP_WATCHED_EXEC, source })?;
    }
    Ok(())
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
