//! Where xtask keeps things: the workspace's `target/`, the VM cache under `target/vm`, and
//! the per-user toolchain cache under `~/.cache/airlock` (bpf-linker and its LLVM stub
//! prefix, which must outlive `cargo clean` because bpf-linker's RUNPATH points into it).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Root of everything the VM runner caches: `target/vm`.
pub fn vm_dir() -> PathBuf {
    target_dir().join("vm")
}

/// The per-user cache, `$XDG_CACHE_HOME/airlock` or `~/.cache/airlock`.
pub fn cache_dir() -> PathBuf {
    if let Some(xdg) = env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("airlock");
    }
    let home = env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("airlock")
}

/// The `cargo install --root` of bpf-linker: `~/.cache/airlock/bpf-linker`.
pub fn bpf_linker_root() -> PathBuf {
    cache_dir().join("bpf-linker")
}

/// The directory holding the `bpf-linker` binary; `agent/build.rs` prepends it to `PATH`.
pub fn bpf_linker_dir() -> PathBuf {
    bpf_linker_root().join("bin")
}

/// The `bpf-linker` binary built by `cargo xtask setup`.
pub fn bpf_linker() -> PathBuf {
    bpf_linker_dir().join("bpf-linker")
}

/// The stub LLVM prefix bpf-linker was linked against (`bin/llvm-config` + `lib/libLLVM*`).
pub fn llvm_prefix_dir() -> PathBuf {
    cache_dir().join("llvm-prefix")
}

/// Resolves a command to a real executable, looking through pyenv shims.
///
/// pyenv shims are shell scripts that start `pyenv` (7–8 s per call under TCG), so callers
/// that run Python tools inside the guest should pass the path this returns.
///
/// # Errors
///
/// Fails when `name` is not on `PATH`, or is a pyenv shim that `pyenv which` cannot resolve.
pub fn resolve_tool(name: &str) -> Result<PathBuf> {
    let found = which::which(name).with_context(|| format!("`{name}` is not on PATH"))?;
    if !is_pyenv_shim(&found) {
        return Ok(found);
    }
    let out = Command::new("pyenv")
        .args(["which", name])
        .output()
        .with_context(|| format!("running `pyenv which {name}`"))?;
    if !out.status.success() {
        bail!(
            "`pyenv which {name}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let real = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !real.is_file() {
        bail!(
            "`pyenv which {name}` named {}, which does not exist",
            real.display()
        );
    }
    Ok(real)
}

/// Whether `path` lies in a pyenv `shims` directory.
pub fn is_pyenv_shim(path: &Path) -> bool {
    path.parent().is_some_and(|dir| {
        dir.file_name().is_some_and(|n| n == "shims") && dir.to_string_lossy().contains("pyenv")
    })
}

/// The `bin` directory of the global pyenv Python, if pyenv is in use.
///
/// Read from `$PYENV_ROOT/version` (what `pyenv global` writes) without running pyenv.
pub fn pyenv_global_bin() -> Option<PathBuf> {
    let root = env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))?;
    let version = std::fs::read_to_string(root.join("version")).ok()?;
    let version = version
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?;
    let bin = root.join("versions").join(version).join("bin");
    bin.is_dir().then_some(bin)
}
