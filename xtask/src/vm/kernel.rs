//! The Debian kernels of the test matrix: which package to use, and fetching it.
//!
//! The newest matching `linux-image-…-amd64-unsigned` package is looked up with
//! `apt-cache search`, fetched with `apt-get download` into `target/vm/debs`, unpacked with
//! `dpkg-deb -x` into `target/vm/kernels/<package>/` and given a `modules.dep` by
//! `depmod -b`. Once a kernel is unpacked, runs reuse it without asking apt again;
//! `cargo xtask setup` refreshes the choice.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use anyhow::{Context as _, Result, anyhow};

use crate::paths;
use crate::util::{check_output, run_status};

/// A kernel line of the test matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kernel {
    /// Debian 12's own kernel, `linux-image-6.1.0-<abi>-amd64-unsigned`.
    V6_1,
    /// The bookworm backport, `linux-image-6.12.<patch>+deb12-amd64-unsigned`.
    V6_12,
}

impl Kernel {
    /// Every kernel of the matrix, oldest first.
    pub const ALL: [Kernel; 2] = [Kernel::V6_1, Kernel::V6_12];

    /// The short name used on the command line and in output prefixes: `6.1`, `6.12`.
    pub fn label(self) -> &'static str {
        match self {
            Kernel::V6_1 => "6.1",
            Kernel::V6_12 => "6.12",
        }
    }

    /// If `package` is a package of this line, its sort key (ABI number or patch level).
    pub fn package_key(self, package: &str) -> Option<u64> {
        let (prefix, suffix) = match self {
            Kernel::V6_1 => ("linux-image-6.1.0-", "-amd64-unsigned"),
            Kernel::V6_12 => ("linux-image-6.12.", "+deb12-amd64-unsigned"),
        };
        let middle = package.strip_prefix(prefix)?.strip_suffix(suffix)?;
        if middle.is_empty() || !middle.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        middle.parse().ok()
    }

    /// Picks the newest package of this line from `apt-cache search` output.
    pub fn select_package(self, apt_cache_output: &str) -> Option<String> {
        apt_cache_output
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter_map(|name| self.package_key(name).map(|key| (key, name)))
            .max_by_key(|(key, _)| *key)
            .map(|(_, name)| name.to_owned())
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for Kernel {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.label() == s)
            .ok_or_else(|| anyhow!("unknown kernel {s:?}; expected 6.1 or 6.12"))
    }
}

/// An unpacked kernel package, ready to boot.
#[derive(Debug, Clone)]
pub struct KernelTree {
    /// Which line of the matrix.
    pub kernel: Kernel,
    /// The Debian package name.
    pub package: String,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// Where the package was unpacked.
    pub root: PathBuf,
}

impl KernelTree {
    /// The bzImage to pass to `-kernel`.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// The uncompressed ELF `vmlinux`, extracted from the bzImage by [`boot_image`].
    pub fn vmlinux(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinux-{}", self.release))
    }

    /// `lib/modules/<release>` inside the unpacked package.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// The image to boot: the uncompressed `vmlinux` if it can be extracted, else the bzImage.
///
/// Under TCG the bzImage spends ~4.5 s decompressing itself (6.1 is xz); QEMU boots the
/// ELF `vmlinux` directly through its PVH entry point (Debian sets `CONFIG_PVH=y`), so the
/// payload is decompressed once on the host and cached beside the bzImage.
pub fn boot_image(tree: &KernelTree) -> PathBuf {
    let vmlinux = tree.vmlinux();
    if vmlinux.is_file() {
        return vmlinux;
    }
    match extract_vmlinux(&tree.vmlinuz(), &vmlinux) {
        Ok(()) => vmlinux,
        Err(e) => {
            eprintln!(
                "vm: booting the compressed {} ({e:#})",
                tree.vmlinuz().display()
            );
            tree.vmlinuz()
        }
    }
}

/// Where a bzImage keeps its compressed payload: `(offset, length)` in the file, without
/// the 4-byte uncompressed size the kernel build appends.
pub fn bzimage_payload(image: &[u8]) -> Option<(usize, usize)> {
    let u32_at = |off: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            image.get(off..off + 4)?.try_into().ok()?,
        ))
    };
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let setup_sects = match *image.get(0x1f1)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + usize::try_from(u32_at(0x248)?).ok()?;
    let len = usize::try_from(u32_at(0x24c)?).ok()?;
    if len < 8 || start.checked_add(len)? > image.len() {
        return None;
    }
    Some((start, len - 4))
}

fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<()> {
    let image = fs::read(vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
    let (start, len) = bzimage_payload(&image).ok_or_else(|| anyhow!("not a bzImage"))?;
    let payload = &image[start..start + len];
    let tool = if payload.starts_with(b"\xfd7zXZ\0") {
        "xz"
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else if payload.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else {
        return Err(anyhow!("unknown payload compression"));
    };
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {tool} (is it installed?)"))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin for {tool}"))?;
    let payload_owned = payload.to_vec();
    let feeder = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &payload_owned));
    let output = child
        .wait_with_output()
        .with_context(|| format!("waiting for {tool}"))?;
    feeder
        .join()
        .map_err(|_| anyhow!("feeding {tool} panicked"))??;
    if !output.status.success() || !output.stdout.starts_with(b"\x7fELF") {
        return Err(anyhow!(
            "{tool} -dc failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let tmp = crate::util::unique_tmp(out);
    fs::write(&tmp, &output.stdout).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, out).with_context(|| format!("moving {} into place", tmp.display()))?;
    Ok(())
}

fn kernels_dir() -> PathBuf {
    paths::vm_dir().join("kernels")
}

/// Returns the unpacked kernel tree, fetching it first if none is cached.
///
/// # Errors
///
/// Fails with one sentence when apt knows no such package, the download or unpacking fails,
/// or `depmod` is missing (install `kmod`, which `cargo xtask setup` does).
pub fn ensure(kernel: Kernel) -> Result<KernelTree> {
    if let Some(tree) = cached(kernel)? {
        return Ok(tree);
    }
    fetch_newest(kernel)
}

/// Fetches the newest package; if that fails on stale apt lists (the security archive
/// drops superseded kernels), updates the lists once and tries the then-newest package.
fn fetch_newest(kernel: Kernel) -> Result<KernelTree> {
    let package = newest_package(kernel)?;
    match fetch(kernel, &package) {
        Ok(tree) => Ok(tree),
        Err(first) => {
            eprintln!("vm: {first:#}; updating apt lists and retrying");
            crate::setup::apt_update()?;
            let package = newest_package(kernel)?;
            fetch(kernel, &package)
                .map_err(|e| e.context(format!("after apt-get update (first try: {first:#})")))
        }
    }
}

/// Looks up the newest package with apt and fetches it unless already unpacked.
///
/// # Errors
///
/// As [`ensure`].
pub fn refresh(kernel: Kernel) -> Result<(KernelTree, bool)> {
    let package = newest_package(kernel)?;
    if let Some(tree) = load_tree(kernel, &kernels_dir().join(&package))? {
        return Ok((tree, false));
    }
    Ok((fetch_newest(kernel)?, true))
}

/// The newest complete unpacked tree of `kernel` under `target/vm/kernels`, if any.
fn cached(kernel: Kernel) -> Result<Option<KernelTree>> {
    let Ok(entries) = fs::read_dir(kernels_dir()) else {
        return Ok(None);
    };
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(key) = kernel.package_key(&name)
            && best.as_ref().is_none_or(|(k, _)| key > *k)
        {
            best = Some((key, entry.path()));
        }
    }
    match best {
        Some((_, dir)) => load_tree(kernel, &dir),
        None => Ok(None),
    }
}

/// Reads an unpacked tree; `None` unless it is complete (vmlinuz and modules.dep present).
fn load_tree(kernel: Kernel, dir: &Path) -> Result<Option<KernelTree>> {
    let package = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Ok(mut releases) = fs::read_dir(dir.join("lib/modules")) else {
        return Ok(None);
    };
    let Some(release) = releases.next().and_then(|e| e.ok()) else {
        return Ok(None);
    };
    let tree = KernelTree {
        kernel,
        package,
        release: release.file_name().to_string_lossy().into_owned(),
        root: dir.to_path_buf(),
    };
    let complete = tree.vmlinuz().is_file() && tree.modules_dir().join("modules.dep").is_file();
    Ok(complete.then_some(tree))
}

/// Asks apt for the newest package of `kernel`, running `apt-get update` once if apt's
/// lists know none.
fn newest_package(kernel: Kernel) -> Result<String> {
    let search = || -> Result<Option<String>> {
        let out = check_output(Command::new("apt-cache").args([
            "search",
            "--names-only",
            "^linux-image-6\\.",
        ]))?;
        Ok(kernel.select_package(&out))
    };
    if let Some(package) = search()? {
        return Ok(package);
    }
    crate::setup::apt_update()?;
    search()?.ok_or_else(|| {
        anyhow!(
            "apt knows no package for kernel {kernel} (looked for linux-image-{}…-amd64-unsigned)",
            kernel.label()
        )
    })
}

/// Downloads and unpacks `package`, then runs depmod on it.
fn fetch(kernel: Kernel, package: &str) -> Result<KernelTree> {
    let debs = paths::vm_dir().join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let deb = match find_deb(&debs, package) {
        Some(deb) => deb,
        None => {
            eprintln!("vm: downloading {package}");
            run_status(
                Command::new("apt-get")
                    .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
                    .current_dir(&debs),
            )
            .with_context(|| format!("could not download kernel package {package}"))?;
            find_deb(&debs, package).ok_or_else(|| {
                anyhow!(
                    "apt-get download left no .deb for {package} in {}",
                    debs.display()
                )
            })?
        }
    };
    let dest = kernels_dir().join(package);
    let partial = crate::util::unique_tmp(&kernels_dir().join(format!(".{package}")));
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    eprintln!("vm: unpacking {}", deb.display());
    run_status(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))
        .with_context(|| format!("could not unpack {}", deb.display()))?;
    let release = fs::read_dir(partial.join("lib/modules"))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .ok_or_else(|| anyhow!("{package} holds no lib/modules/<release>"))?;
    which::which("depmod").map_err(|_| {
        anyhow!("depmod is not installed (apt-get install kmod, or run cargo xtask setup)")
    })?;
    run_status(Command::new("depmod").arg("-b").arg(&partial).arg(&release))
        .with_context(|| format!("depmod failed on {package}"))?;
    if let Some(tree) = load_tree(kernel, &dest)? {
        // Another run unpacked it meanwhile; keep theirs.
        let _ = fs::remove_dir_all(&partial);
        return Ok(tree);
    }
    if dest.exists() {
        fs::remove_dir_all(&dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    fs::rename(&partial, &dest)
        .with_context(|| format!("moving {} into place", partial.display()))?;
    load_tree(kernel, &dest)?
        .ok_or_else(|| anyhow!("{package} has no boot/vmlinuz-{release} or modules.dep"))
}

fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_");
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy().starts_with(&prefix) && n.to_string_lossy().ends_with(".deb")
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const APT: &str = "\
linux-image-6.1.0-47-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-9-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-56-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud
linux-image-6.1.0-56-rt-amd64-unsigned - Linux 6.1 for 64-bit PCs, PREEMPT_RT
linux-image-6.1.0-56-amd64-unsigned - Linux 6.1 for 64-bit PCs
linux-image-6.1.0-56-amd64-dbg - Debug symbols for linux-image-6.1.0-56-amd64
linux-image-6.12.107+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.117+deb12-cloud-amd64-unsigned - Linux 6.12 for x86-64 cloud
linux-image-6.12.99+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.111+deb12-amd64-unsigned - Linux 6.12 for 64-bit PCs
linux-image-6.12.111+deb12-amd64 - Linux 6.12 for 64-bit PCs (signed)
";

    #[test]
    fn picks_newest_plain_amd64_unsigned() {
        assert_eq!(
            Kernel::V6_1.select_package(APT).as_deref(),
            Some("linux-image-6.1.0-56-amd64-unsigned")
        );
        assert_eq!(
            Kernel::V6_12.select_package(APT).as_deref(),
            Some("linux-image-6.12.111+deb12-amd64-unsigned")
        );
    }

    #[test]
    fn compares_numerically_not_lexically() {
        let apt =
            "linux-image-6.1.0-9-amd64-unsigned - x\nlinux-image-6.1.0-10-amd64-unsigned - x\n";
        assert_eq!(
            Kernel::V6_1.select_package(apt).as_deref(),
            Some("linux-image-6.1.0-10-amd64-unsigned")
        );
    }

    #[test]
    fn nothing_matching_is_none() {
        assert_eq!(
            Kernel::V6_12.select_package("linux-image-6.1.0-56-amd64-unsigned - x\n"),
            None
        );
        assert_eq!(
            Kernel::V6_1.package_key("linux-image-6.1.0-56-rt-amd64-unsigned"),
            None
        );
    }

    #[test]
    fn labels_round_trip() {
        for k in Kernel::ALL {
            assert_eq!(k.label().parse::<Kernel>().expect("parses"), k);
        }
        assert!("5.15".parse::<Kernel>().is_err());
    }
}
