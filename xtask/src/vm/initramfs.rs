//! The initramfs: busybox-static, a stage-1 `/init` and the kernel modules the guest needs
//! to reach the host's root over 9p. One per kernel, cached under `target/vm/initramfs`
//! and rebuilt when any input changes (init script, module files, busybox).
//!
//! Stage 1 mounts the host root read-only over 9p (`cache=loose`: the share is read-only and
//! lookups over 9p are ~100× slower than native under TCG, so caching dentries matters),
//! puts a tmpfs-backed overlay on it, mounts the writable run directory at the same path it
//! has on the host, and `switch_root`s into the per-run stage-2 script found there.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash as _, Hasher as _};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use anyhow::{Context as _, Result, bail};

use super::kernel::KernelTree;
use super::modules::{self, DepEntry};
use crate::paths;
use crate::util::succeeds;

/// Where the initramfs takes busybox from (package busybox-static).
const BUSYBOX: &str = "/bin/busybox";

/// Stage 1, run as PID 1 from the initramfs.
const STAGE1: &str = r#"#!/bin/busybox sh
# airlock VM stage 1: bring up the host root share and switch_root into the run's stage 2.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {
  echo "airlock-vm stage1: $*" >/dev/console
  echo o >/proc/sysrq-trigger
  sleep 30
}
run=
net=
debug=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    airlock.run=*) run="${arg#airlock.run=}" ;;
    airlock.net=1) net=1 ;;
    airlock.debug=1) debug=1 ;;
  esac
done
log() {
  [ -z "$debug" ] || echo "airlock-vm stage1 $(cut -d' ' -f1 /proc/uptime): $*" >/dev/console
}
log start
[ -n "$run" ] || fail "no airlock.run= on the kernel command line"
load() {
  for m in $(cat "$1"); do insmod "/modules/$m.ko" || fail "insmod $m failed"; done
}
load /modules/base.order
[ -z "$net" ] || load /modules/net.order
log modules loaded
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /lower \
  || fail "mounting the host root share failed"
log host root mounted
mount -t tmpfs -o mode=0755 upper /upper
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot \
  || fail "mounting the overlay failed"
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
mount -t tmpfs -o mode=0755 run /newroot/run
mkdir -p "/newroot$run"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results "/newroot$run" \
  || fail "mounting the run share at $run failed"
mkdir -p /newroot/run/airlock-vm
cp /bin/busybox /newroot/run/airlock-vm/busybox
mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
log switch_root
exec switch_root /newroot /run/airlock-vm/busybox sh "$run/stage2.sh"
"#;

/// Bump when the layout changes in a way the input hash does not see.
const FORMAT: u32 = 1;

/// Builds (or reuses) the initramfs for `tree` and returns its path.
///
/// # Errors
///
/// Fails when busybox-static is missing, a needed module cannot be resolved or
/// decompressed, or the archive cannot be written.
pub fn ensure(tree: &KernelTree) -> Result<PathBuf> {
    if !succeeds(Command::new("dpkg-query").args(["-W", "busybox-static"])) {
        bail!(
            "busybox-static is not installed (apt-get install busybox-static, or run cargo xtask setup)"
        );
    }
    let mdir = tree.modules_dir();
    let dep_text = fs::read_to_string(mdir.join("modules.dep"))
        .with_context(|| format!("reading {}", mdir.join("modules.dep").display()))?;
    let builtin_text = fs::read_to_string(mdir.join("modules.builtin")).unwrap_or_default();
    let dep = modules::parse_modules_dep(&dep_text);
    let builtin = modules::parse_builtin(&builtin_text);
    let base = modules::load_order(&dep, &builtin, modules::BASE, &[])
        .with_context(|| format!("resolving the 9p/virtio modules of {}", tree.package))?;
    let net = modules::load_order(&dep, &builtin, modules::NET, &base)
        .with_context(|| format!("resolving the virtio-net modules of {}", tree.package))?;

    let out_dir = paths::vm_dir().join("initramfs");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join(format!("{}.cpio", tree.package));
    let stamp = out_dir.join(format!("{}.stamp", tree.package));
    let key = input_key(&mdir, base.iter().chain(&net))?;
    if out.is_file() && fs::read_to_string(&stamp).is_ok_and(|s| s == key) {
        return Ok(out);
    }

    let mut files: Vec<(String, u32, Vec<u8>)> = Vec::new();
    files.push(("init".into(), 0o100_755, STAGE1.as_bytes().to_vec()));
    files.push((
        "bin/busybox".into(),
        0o100_755,
        fs::read(BUSYBOX).with_context(|| format!("reading {BUSYBOX}"))?,
    ));
    for entry in base.iter().chain(&net) {
        let name = modules::module_name(&entry.path);
        files.push((
            format!("modules/{name}.ko"),
            0o100_644,
            read_module(&mdir.join(&entry.path))?,
        ));
    }
    files.push(("modules/base.order".into(), 0o100_644, order_file(&base)));
    files.push(("modules/net.order".into(), 0o100_644, order_file(&net)));

    let tmp = crate::util::unique_tmp(&out);
    let mut w = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    write_cpio(&mut w, &files).with_context(|| format!("writing {}", tmp.display()))?;
    w.sync_all().ok();
    fs::rename(&tmp, &out).with_context(|| format!("moving {} into place", tmp.display()))?;
    fs::write(&stamp, key).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(out)
}

fn order_file(entries: &[DepEntry]) -> Vec<u8> {
    let mut s = String::new();
    for e in entries {
        s.push_str(&modules::module_name(&e.path));
        s.push('\n');
    }
    s.into_bytes()
}

/// A digest of everything the archive is made from.
fn input_key<'a>(mdir: &Path, entries: impl Iterator<Item = &'a DepEntry>) -> Result<String> {
    let mut h = DefaultHasher::new();
    FORMAT.hash(&mut h);
    STAGE1.hash(&mut h);
    let mut stat = |p: &Path| -> Result<()> {
        let md = fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
        p.hash(&mut h);
        md.len().hash(&mut h);
        md.modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .hash(&mut h);
        Ok(())
    };
    stat(Path::new(BUSYBOX))?;
    for e in entries {
        stat(&mdir.join(&e.path))?;
    }
    Ok(format!("{:016x}", h.finish()))
}

/// Reads a module, decompressing `.ko.xz` / `.ko.zst` on the host.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| {
            format!(
                "running {tool} to decompress {} (is it installed?)",
                path.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "{tool} -dc {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Writes a newc archive: the directories, `/dev/console`, then `files`.
fn write_cpio(
    w: &mut impl std::io::Write,
    files: &[(String, u32, Vec<u8>)],
) -> std::io::Result<()> {
    let mut ino = 1;
    let mut next = || {
        ino += 1;
        ino
    };
    for dir in [
        "bin", "dev", "lower", "modules", "newroot", "proc", "sys", "upper",
    ] {
        let fp = cpio::NewcBuilder::new(dir)
            .ino(next())
            .mode(0o040_755)
            .nlink(2)
            .write(&mut *w, 0);
        fp.finish()?;
    }
    // The kernel opens /dev/console for PID 1 before devtmpfs is mounted.
    let console = cpio::NewcBuilder::new("dev/console")
        .ino(next())
        .mode(0o020_600)
        .nlink(1)
        .rdev_major(5)
        .rdev_minor(1)
        .write(&mut *w, 0);
    console.finish()?;
    for (name, mode, data) in files {
        let size = u32::try_from(data.len())
            .map_err(|_| std::io::Error::other(format!("{name} is over 4 GiB")))?;
        let mut fp = cpio::NewcBuilder::new(name)
            .ino(next())
            .mode(*mode)
            .nlink(1)
            .write(&mut *w, size);
        std::io::copy(&mut Cursor::new(data), &mut fp)?;
        fp.finish()?;
    }
    cpio::newc::trailer(&mut *w)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_reads_back() {
        let files = vec![("init".to_string(), 0o100_755, b"#!/bin/sh\n".to_vec())];
        let mut buf = Vec::new();
        write_cpio(&mut buf, &files).expect("writes");
        let mut names = Vec::new();
        let mut rest = Cursor::new(buf);
        loop {
            let reader = cpio::NewcReader::new(rest).expect("entry");
            if reader.entry().is_trailer() {
                break;
            }
            names.push((
                reader.entry().name().to_string(),
                reader.entry().mode(),
                reader.entry().file_size(),
            ));
            rest = reader.finish().expect("next");
        }
        assert!(names.contains(&("dev/console".into(), 0o020_600, 0)));
        assert!(names.contains(&("init".into(), 0o100_755, 10)));
        assert!(
            names
                .iter()
                .any(|(n, m, _)| n == "newroot" && *m == 0o040_755)
        );
    }
}
