//! Builds the BPF object (agent-ebpf) with aya-build and embeds it in the `airlock` binary.
//!
//! Plain `cargo build` must work on a machine that has not run `cargo xtask setup` yet: when
//! bpf-linker or the nightly rust-src component is missing we embed an empty object and the
//! agent refuses to start with a sentence naming the command that fixes it. Set
//! `AIRLOCK_REQUIRE_EBPF=1` (xtask and CI do) to make a missing toolchain a build error.
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};

const OBJECT: &str = "agent-ebpf";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AIRLOCK_REQUIRE_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let required = env::var_os("AIRLOCK_REQUIRE_EBPF").is_some_and(|v| v == "1");

    // `cargo xtask setup` installs bpf-linker here; prefer it over whatever is on PATH.
    if let Some(home) = env::var_os("HOME") {
        let dir = PathBuf::from(home).join(".cache/airlock/bpf-linker/bin");
        if dir.join("bpf-linker").exists() {
            let path = env::var_os("PATH").unwrap_or_default();
            let joined = env::join_paths(std::iter::once(dir).chain(env::split_paths(&path)))?;
            // SAFETY: build scripts are single-threaded at this point.
            unsafe { env::set_var("PATH", joined) };
        }
    }

    if let Some(missing) = missing_toolchain() {
        if required {
            return Err(anyhow!(
                "cannot build the BPF programs: {missing}; run `cargo xtask setup`"
            ));
        }
        println!(
            "cargo:warning=airlock: BPF programs not built ({missing}); run `cargo xtask setup` and rebuild"
        );
        fs::write(out_dir.join(OBJECT), b"").context("writing the empty BPF object")?;
        return Ok(());
    }

    let ebpf_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?)
        .join("../agent-ebpf");
    let root_dir = ebpf_dir.to_str().context("non-UTF-8 path to agent-ebpf")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}

/// Says what is missing for the BPF build, or `None` when everything is there.
fn missing_toolchain() -> Option<&'static str> {
    if which_bpf_linker().is_none() {
        return Some("bpf-linker is not installed");
    }
    let Some(sysroot) = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
    else {
        return Some("there is no nightly toolchain");
    };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        return Some("the nightly toolchain has no rust-src component");
    }
    None
}

fn which_bpf_linker() -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.exists())
}
