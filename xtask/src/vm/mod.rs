//! The QEMU kernel matrix (DESIGN.md §10): boot real Debian kernels under TCG with the
//! host's root shared read-only, run one command as root inside, and hand back its exit
//! code and output.
//!
//! ```no_run
//! use xtask::vm::{GuestSpec, Kernel, run_in_guest};
//! let spec = GuestSpec::new(Kernel::V6_12, ["cat", "/sys/kernel/security/lsm"]);
//! let outcome = run_in_guest(&spec)?;
//! assert_eq!(outcome.exit_code, 0);
//! # anyhow::Ok(())
//! ```
//!
//! Inside the guest: PID 1 is a shell from busybox-static; `/` is an overlay of the host
//! root (read-only, 9p) with a tmpfs upper, so writes succeed and vanish; `/tmp` and `/run`
//! are fresh tmpfs; cgroup2, bpffs, securityfs, tracefs and debugfs are mounted; `lo` is up.
//! The command runs as root in the same working directory, with `HOME=/root`, the host's
//! `PATH` and only the listed environment, stdin from `/dev/null`. `$AIRLOCK_VM_RESULTS` is
//! a writable directory that is the same path on the host ([`GuestOutcome::results_dir`]).

pub mod cli;
pub mod initramfs;
pub mod kernel;
pub mod modules;
mod qemu;
pub mod stage2;

use std::env;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

pub use kernel::{Kernel, KernelTree};
pub use qemu::BootPanic;

/// Host environment variables passed into the guest by default, when set.
pub const DEFAULT_PASSTHROUGH_ENV: &[&str] = &["CI", "RUST_LOG", "RUST_BACKTRACE"];

/// Default wall-clock limit for one guest run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);

/// A TCP port forwarded from the host's loopback into the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Host address to listen on; always a loopback address.
    pub host_addr: IpAddr,
    /// Host port.
    pub host_port: u16,
    /// Guest port (the guest listens on 10.0.2.15 or 0.0.0.0).
    pub guest_port: u16,
}

impl FromStr for Forward {
    type Err = anyhow::Error;

    /// Parses `HOSTPORT:GUESTPORT` or `127.0.0.1:HOSTPORT:GUESTPORT`.
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        let (addr, host, guest) = match parts.as_slice() {
            [h, g] => (IpAddr::V4(Ipv4Addr::LOCALHOST), *h, *g),
            [a, h, g] => (
                a.parse()
                    .map_err(|e| anyhow!("bad host address {a:?} in {s:?}: {e}"))?,
                *h,
                *g,
            ),
            _ => bail!("bad forward {s:?}; expected [127.0.0.1:]HOSTPORT:GUESTPORT"),
        };
        if !addr.is_loopback() {
            bail!("forward {s:?} would listen on {addr}; only loopback addresses are allowed");
        }
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|e| anyhow!("bad port {p:?} in {s:?}: {e}"))
        };
        Ok(Forward {
            host_addr: addr,
            host_port: port(host)?,
            guest_port: port(guest)?,
        })
    }
}

impl fmt::Display for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.host_addr, self.host_port, self.guest_port
        )
    }
}

/// How the command's output reaches the host terminal while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stream {
    /// Only captured into [`GuestOutcome`].
    Off,
    /// Also copied line by line to our stdout/stderr, each line after `prefix` if given.
    On {
        /// Put in front of every line, e.g. `"[6.1] "`.
        prefix: Option<String>,
    },
}

/// One command to run in one guest.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    /// Which kernel to boot.
    pub kernel: Kernel,
    /// Program and arguments; the program is looked up on the guest `PATH`.
    pub command: Vec<String>,
    /// Working directory in the guest; must exist on the host and not be under /tmp or /run.
    pub cwd: PathBuf,
    /// Extra environment, on top of `HOME`, `PATH`, `USER` and [`DEFAULT_PASSTHROUGH_ENV`].
    pub env: Vec<(String, String)>,
    /// Host-loopback → guest TCP forwards; the guest gets a NIC only if this is non-empty.
    pub forwards: Vec<Forward>,
    /// Wall-clock limit for the whole run, boot included.
    pub timeout: Duration,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// Live output to the terminal.
    pub stream: Stream,
    /// Extra kernel command-line arguments, e.g. `lsm=capability` to boot a kernel whose
    /// LSM list lacks `bpf` (for the agent's refusal test).
    pub kernel_args: Vec<String>,
    /// Deterministic guest time (`-icount shift=0,sleep=off`, single-threaded TCG): the
    /// guest clock counts executed instructions (1 ns each) and skips idle time, so timings
    /// taken inside the guest do not depend on how busy the host is. For benchmarks.
    pub icount: bool,
}

impl GuestSpec {
    /// A spec with the defaults: current directory, 2048 MiB, 2 CPUs, 900 s, output streamed.
    pub fn new<I, S>(kernel: Kernel, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        GuestSpec {
            kernel,
            command: command.into_iter().map(Into::into).collect(),
            cwd: env::current_dir().unwrap_or_else(|_| crate::paths::workspace_root()),
            env: Vec::new(),
            forwards: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            memory_mib: 2048,
            cpus: 2,
            stream: Stream::On { prefix: None },
            kernel_args: Vec::new(),
            icount: false,
        }
    }
}

/// What came back from a guest run.
#[derive(Debug, Clone)]
pub struct GuestOutcome {
    /// The kernel line booted.
    pub kernel: Kernel,
    /// Its Debian package.
    pub package: String,
    /// Its `uname -r`.
    pub release: String,
    /// The command's exit status (125 if the working directory was missing, 127 if the
    /// program was not found, 128+N if killed by signal N).
    pub exit_code: i32,
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the command wrote to stderr.
    pub stderr: Vec<u8>,
    /// Host directory of this run (stage-2 script, console.log, timestamps).
    pub run_dir: PathBuf,
    /// `$AIRLOCK_VM_RESULTS`: written by the guest, read by the host, same path in both.
    pub results_dir: PathBuf,
    /// From starting QEMU to the command starting (host clock).
    pub boot_time: Option<Duration>,
    /// How long the command ran (guest clock).
    pub command_time: Option<Duration>,
    /// From starting QEMU to QEMU exiting.
    pub total_time: Duration,
}

/// Fetches and unpacks `kernel` if needed and builds its initramfs.
///
/// # Errors
///
/// Fails with one sentence when the kernel cannot be found, downloaded or unpacked, or the
/// initramfs cannot be built.
pub fn prepare(kernel: Kernel) -> Result<(KernelTree, PathBuf)> {
    let tree = kernel::ensure(kernel)?;
    kernel::boot_image(&tree);
    let initrd = initramfs::ensure(&tree)?;
    Ok((tree, initrd))
}

/// Boots `spec.kernel` and runs `spec.command` in it.
///
/// A non-zero exit code of the command is an `Ok` outcome; an `Err` means the run itself
/// failed.
///
/// # Errors
///
/// Fails when the kernel cannot be prepared, QEMU cannot start, the guest exceeds
/// `spec.timeout` (QEMU is killed), or the guest powers off without reporting an exit code.
/// A guest kernel that panics before the command starts is booted again, up to
/// [`BOOT_ATTEMPTS`] boots in all, then reported as [`BootPanic`].
pub fn run_in_guest(spec: &GuestSpec) -> Result<GuestOutcome> {
    let (tree, initrd) = prepare(spec.kernel)?;
    let mut boots = 1;
    loop {
        match qemu::boot(spec, &tree, &initrd) {
            Err(e) => match e.downcast::<qemu::BootPanic>() {
                Ok(panic) if boots < BOOT_ATTEMPTS => {
                    eprintln!(
                        "vm: {panic}\nvm: booting again ({} of {BOOT_ATTEMPTS})",
                        boots + 1
                    );
                    boots += 1;
                }
                Ok(panic) => return Err(qemu::BootPanic { boots, ..panic }.into()),
                Err(other) => return Err(other),
            },
            ok => return ok,
        }
    }
}

/// Boots per run when the guest kernel panics before the command starts. Such a panic comes
/// from the emulated machine, not from anything under test, which has not run yet.
pub const BOOT_ATTEMPTS: u32 = 3;

/// Runs the same spec on each kernel in turn, prefixing streamed lines with `[<kernel>] `
/// when there is more than one.
///
/// # Errors
///
/// Stops at the first run that fails as in [`run_in_guest`].
pub fn run_matrix(spec: &GuestSpec, kernels: &[Kernel]) -> Result<Vec<GuestOutcome>> {
    kernels
        .iter()
        .map(|&kernel| {
            let mut s = spec.clone();
            s.kernel = kernel;
            if kernels.len() > 1
                && let Stream::On { prefix: None } = s.stream
            {
                s.stream = Stream::On {
                    prefix: Some(format!("[{kernel}] ")),
                };
            }
            run_in_guest(&s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_parse_and_stay_on_loopback() {
        let f: Forward = "127.0.0.1:18080:80".parse().expect("parses");
        assert_eq!((f.host_port, f.guest_port), (18080, 80));
        let short: Forward = "9000:9000".parse().expect("parses");
        assert!(short.host_addr.is_loopback());
        assert!("0.0.0.0:1:2".parse::<Forward>().is_err());
        assert!("1:2:3:4".parse::<Forward>().is_err());
        assert!("127.0.0.1:99999:1".parse::<Forward>().is_err());
    }
}
