//! `cargo xtask setup`: everything a fresh machine needs before `cargo build`, the eBPF
//! build and the VM tests work. Each step checks first and says what it did; re-runs are
//! quick.

use std::fs;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;

use crate::paths;
use crate::util::{check_output, run_status, succeeds};
use crate::vm::{self, Kernel};

/// The bpf-linker release that builds with nightly's LLVM (DESIGN.md §9).
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests and the demo use.
pub const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "xz-utils",
    "zstd",
    "kmod",
    "postgresql",
    "rsyslog",
    "strace",
    "socat",
    "iproute2",
    "procps",
];

/// Options of `cargo xtask setup`.
#[derive(Debug, Default, Args)]
pub struct Options {
    /// Skip downloading the test kernels.
    #[arg(long)]
    pub no_kernels: bool,
    /// Skip the Python tools (aws CLI, moto_server).
    #[arg(long)]
    pub no_python: bool,
}

fn step(msg: impl AsRef<str>) {
    println!("setup: {}", msg.as_ref());
}

/// Runs every setup step in order.
///
/// # Errors
///
/// Stops at the first step that fails, naming it.
pub fn run(opts: &Options) -> Result<()> {
    apt_packages().context("installing apt packages")?;
    rust_src().context("installing rust-src for nightly")?;
    bpf_linker().context("building bpf-linker")?;
    if !opts.no_kernels {
        kernels().context("fetching the test kernels")?;
    }
    if !opts.no_python {
        python_tools().context("installing the Python tools")?;
    }
    step("done");
    Ok(())
}

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// Runs `apt-get update`, at most once per process.
///
/// # Errors
///
/// Fails when apt-get fails.
pub fn apt_update() -> Result<()> {
    if APT_UPDATED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    step("apt-get update");
    run_status(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn apt_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).trim() == "install ok installed"
        })
}

fn apt_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !apt_installed(p))
        .collect();
    if missing.is_empty() {
        step(format!(
            "apt packages: all {} already installed",
            APT_PACKAGES.len()
        ));
        return Ok(());
    }
    apt_update()?;
    step(format!("apt packages: installing {}", missing.join(" ")));
    run_status(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn rust_src() -> Result<()> {
    let installed = check_output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        step("rust-src for nightly: already installed");
        return Ok(());
    }
    step("rust-src for nightly: rustup component add rust-src --toolchain nightly");
    run_status(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// The libLLVM shared object a toolchain ships, e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`,
/// and its LLVM major version, picked from the names in the toolchain's `lib/`.
pub fn find_toolchain_llvm<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<(String, u32)> {
    names.into_iter().find_map(|name| {
        let rest = name.strip_prefix("libLLVM.so.")?;
        if !rest.contains("-rust-") {
            return None;
        }
        let major = rest.split(['.', '-']).next()?.parse().ok()?;
        Some((name.to_owned(), major))
    })
}

fn bpf_linker() -> Result<()> {
    let bin = paths::bpf_linker();
    if succeeds(Command::new(&bin).arg("--version")) {
        step(format!("bpf-linker: already built at {}", bin.display()));
        return Ok(());
    }
    let sysroot = PathBuf::from(
        check_output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim(),
    );
    let lib = sysroot.join("lib");
    let names: Vec<String> = fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let (llvm, major) = find_toolchain_llvm(names.iter().map(String::as_str)).ok_or_else(|| {
        anyhow!(
            "nightly's {} holds no libLLVM.so.<ver>-rust-<ver>",
            lib.display()
        )
    })?;

    let prefix = paths::llvm_prefix_dir();
    step(format!(
        "bpf-linker: stub LLVM prefix {} -> {}",
        prefix.display(),
        lib.join(&llvm).display()
    ));
    write_llvm_prefix(&prefix, &lib.join(&llvm), &llvm)?;

    let root = paths::bpf_linker_root();
    step(format!(
        "bpf-linker: LLVM_PREFIX={} cargo +nightly install bpf-linker@{BPF_LINKER_VERSION} \
         --no-default-features --features llvm-{major} --root {}",
        prefix.display(),
        root.display()
    ));
    run_status(
        Command::new("cargo")
            .arg("+nightly")
            .args([
                "install",
                "--locked",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--no-default-features",
            ])
            .args(["--features", &format!("llvm-{major}"), "--root"])
            .arg(&root)
            .env("LLVM_PREFIX", &prefix)
            // We run under `cargo run`; keep its toolchain choice out of the nightly build.
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR"),
    )?;
    if !succeeds(Command::new(&bin).arg("--version")) {
        bail!("{} was installed but does not run", bin.display());
    }
    step(format!("bpf-linker: built {}", bin.display()));
    Ok(())
}

/// Lays out `prefix/bin/llvm-config` (a stub; bpf-linker's build only needs it to exist)
/// and `prefix/lib/{libLLVM.so,<soname>}` pointing at the toolchain's libLLVM.
fn write_llvm_prefix(prefix: &Path, target: &Path, soname: &str) -> Result<()> {
    let bin = prefix.join("bin");
    let lib = prefix.join("lib");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let config = bin.join("llvm-config");
    fs::write(
        &config,
        "#!/bin/sh\necho \"stub llvm-config for bpf-linker\" >&2\nexit 1\n",
    )
    .with_context(|| format!("writing {}", config.display()))?;
    fs::set_permissions(&config, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", config.display()))?;
    for name in ["libLLVM.so", soname] {
        let link = lib.join(name);
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
        }
        symlink(target, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(())
}

fn kernels() -> Result<()> {
    for kernel in Kernel::ALL {
        let (tree, fetched) = vm::kernel::refresh(kernel)?;
        let verb = if fetched {
            "downloaded and unpacked"
        } else {
            "already unpacked"
        };
        step(format!(
            "kernel {kernel}: {} {verb} ({})",
            tree.package, tree.release
        ));
        let initrd = vm::initramfs::ensure(&tree)?;
        step(format!("kernel {kernel}: initramfs {}", initrd.display()));
    }
    Ok(())
}

fn python_tools() -> Result<()> {
    let aws_ok = succeeds(Command::new("aws").arg("--version"));
    let moto_ok = succeeds(Command::new("moto_server").arg("--help"));
    if aws_ok && moto_ok {
        step("python tools: aws and moto_server already installed");
    } else {
        step("python tools: python3 -m pip install awscli 'moto[server]'");
        run_status(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "-q",
            "awscli",
            "moto[server]",
        ]))?;
        if which::which("pyenv").is_ok() {
            // New console scripts need shims before they are on PATH.
            run_status(Command::new("pyenv").arg("rehash"))?;
        }
    }
    for tool in ["aws", "moto_server", "python3"] {
        let real = paths::resolve_tool(tool)?;
        step(format!(
            "python tools: {tool} is {} (call this path inside the VM)",
            real.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_versioned_libllvm() {
        let names = [
            "libLLVM-22-rust-1.97.0-nightly.so",
            "librustc_driver-b5a965480ee51f9a.so",
            "libLLVM.so.22.1-rust-1.97.0-nightly",
            "rustlib",
        ];
        assert_eq!(
            find_toolchain_llvm(names),
            Some(("libLLVM.so.22.1-rust-1.97.0-nightly".to_owned(), 22))
        );
        assert_eq!(
            find_toolchain_llvm(["libLLVM-22-rust-1.97.0-nightly.so"]),
            None
        );
    }

    #[test]
    fn stub_prefix_links_to_the_toolchain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("libLLVM.so.22.1-rust-x");
        fs::write(&target, b"elf").expect("write");
        let prefix = dir.path().join("p");
        write_llvm_prefix(&prefix, &target, "libLLVM.so.22.1-rust-x").expect("first");
        write_llvm_prefix(&prefix, &target, "libLLVM.so.22.1-rust-x").expect("idempotent");
        for name in ["libLLVM.so", "libLLVM.so.22.1-rust-x"] {
            assert_eq!(
                fs::read_link(prefix.join("lib").join(name)).expect("link"),
                target
            );
        }
        let mode = fs::metadata(prefix.join("bin/llvm-config"))
            .expect("stub")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
    }
}
