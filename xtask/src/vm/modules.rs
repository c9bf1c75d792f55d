//! Which kernel modules the guest needs, and in what order to `insmod` them.
//!
//! Debian's kernel packages do not ship `modules.dep` (their postinst runs `depmod`), so the
//! runner runs `depmod -b` on the extracted tree and then resolves the wanted modules here,
//! dependencies first, skipping those built into the kernel (`modules.builtin`).

use std::collections::{BTreeMap, HashSet};

use anyhow::{Result, bail};

/// Modules for the 9p root share, the overlay and the virtio-serial output ports.
///
/// Only the top of each stack is named; `modules.dep` brings in the rest (6.1: virtio_ring,
/// virtio, virtio_pci_{modern,legacy}_dev, netfs, fscache, 9pnet). Built-in ones (6.12:
/// virtio, virtio_pci, virtio_console; fscache is part of netfs there) are skipped.
pub const BASE: &[&str] = &[
    "virtio_pci",
    "virtio_console",
    "9pnet_virtio",
    "9p",
    "overlay",
];

/// Modules for the virtio-net NIC, loaded only when ports are forwarded.
pub const NET: &[&str] = &["failover", "net_failover", "virtio_net"];

/// One line of `modules.dep`: a module file and the files it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepEntry {
    /// Path relative to `lib/modules/<release>/`, e.g. `kernel/fs/9p/9p.ko.xz`.
    pub path: String,
    /// Names of the modules this one needs, as listed (modprobe loads them last to first).
    pub deps: Vec<String>,
}

/// The module name of a `modules.dep` path: file name up to `.ko`, `-` read as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Parses `modules.dep` into a map from module name to its entry.
pub fn parse_modules_dep(text: &str) -> BTreeMap<String, DepEntry> {
    text.lines()
        .filter_map(|line| {
            let (path, deps) = line.split_once(':')?;
            let path = path.trim();
            if path.is_empty() {
                return None;
            }
            let deps = deps.split_whitespace().map(module_name).collect();
            Some((
                module_name(path),
                DepEntry {
                    path: path.to_owned(),
                    deps,
                },
            ))
        })
        .collect()
}

/// Parses `modules.builtin` (one path per line) into a set of module names.
pub fn parse_builtin(text: &str) -> HashSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

/// Resolves `wanted` into `insmod` order: each module after everything it needs, each once.
///
/// Modules in `already` (loaded earlier) and built-in ones are left out.
///
/// # Errors
///
/// Fails when a wanted module or a dependency is neither in `modules.dep` nor built in.
pub fn load_order(
    dep: &BTreeMap<String, DepEntry>,
    builtin: &HashSet<String>,
    wanted: &[&str],
    already: &[DepEntry],
) -> Result<Vec<DepEntry>> {
    let mut done: HashSet<String> = already.iter().map(|e| module_name(&e.path)).collect();
    let mut order = Vec::new();
    for name in wanted {
        visit(
            dep,
            builtin,
            &name.replace('-', "_"),
            &mut done,
            &mut order,
            0,
        )?;
    }
    Ok(order)
}

fn visit(
    dep: &BTreeMap<String, DepEntry>,
    builtin: &HashSet<String>,
    name: &str,
    done: &mut HashSet<String>,
    order: &mut Vec<DepEntry>,
    depth: usize,
) -> Result<()> {
    if done.contains(name) || builtin.contains(name) {
        return Ok(());
    }
    if depth > 64 {
        bail!("modules.dep has a dependency cycle through {name}");
    }
    let Some(entry) = dep.get(name) else {
        bail!("kernel module {name} is neither in modules.dep nor built in");
    };
    // modprobe inserts the listed dependencies from last to first.
    for d in entry.deps.iter().rev() {
        visit(dep, builtin, d, done, order, depth + 1)?;
    }
    done.insert(name.to_owned());
    order.push(entry.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Excerpts of the real files of linux-image-6.1.0-56-amd64-unsigned after `depmod`.
    const DEP_61: &str = "\
kernel/fs/overlayfs/overlay.ko:
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
";

    fn names(order: &[DepEntry]) -> Vec<String> {
        order.iter().map(|e| module_name(&e.path)).collect()
    }

    fn assert_deps_first(dep: &BTreeMap<String, DepEntry>, order: &[String]) {
        for (i, name) in order.iter().enumerate() {
            for d in &dep[name].deps {
                let j = order
                    .iter()
                    .position(|n| n == d)
                    .expect("dependency loaded");
                assert!(j < i, "{d} must come before {name} in {order:?}");
            }
        }
    }

    #[test]
    fn module_names_drop_suffix_and_dashes() {
        assert_eq!(module_name("kernel/fs/9p/9p.ko.xz"), "9p");
        assert_eq!(module_name("kernel/net/9p/9pnet_virtio.ko"), "9pnet_virtio");
        assert_eq!(module_name("kernel/x/foo-bar.ko.zst"), "foo_bar");
    }

    #[test]
    fn orders_the_61_stack_dependencies_first() {
        let dep = parse_modules_dep(DEP_61);
        let order = names(&load_order(&dep, &HashSet::new(), BASE, &[]).expect("resolves"));
        let mut want = vec![
            "virtio_ring",
            "virtio",
            "virtio_pci_modern_dev",
            "virtio_pci_legacy_dev",
            "virtio_pci",
            "virtio_console",
            "netfs",
            "fscache",
            "9pnet",
            "9pnet_virtio",
            "9p",
            "overlay",
        ];
        let mut got: Vec<&str> = order.iter().map(String::as_str).collect();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "each module of the 6.1 stack exactly once");
        assert_deps_first(&dep, &order);
        assert_eq!(order.last().map(String::as_str), Some("overlay"));
    }

    #[test]
    fn builtins_and_already_loaded_are_skipped() {
        let dep = parse_modules_dep(DEP_61);
        let builtin = parse_builtin(
            "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n",
        );
        let base = load_order(&dep, &builtin, BASE, &[]).expect("resolves");
        assert!(
            !names(&base)
                .iter()
                .any(|n| n == "virtio" || n == "virtio_ring")
        );
        let net = names(&load_order(&dep, &builtin, NET, &base).expect("resolves"));
        assert_eq!(net, ["failover", "net_failover", "virtio_net"]);
    }

    #[test]
    fn missing_module_is_an_error() {
        let dep = parse_modules_dep(DEP_61);
        let err = load_order(&dep, &HashSet::new(), &["squashfs"], &[]).expect_err("unknown");
        assert!(err.to_string().contains("squashfs"), "{err}");
    }
}
