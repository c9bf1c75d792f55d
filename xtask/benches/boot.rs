//! Per-boot overhead of the QEMU kernel matrix: boot-to-command and total wall time for a
//! trivial command, and the cost of one Python start inside the guest.
//! Needs root, QEMU and `cargo xtask setup`: `cargo bench -p xtask --bench boot`.

use std::time::Duration;

use xtask::vm::{GuestSpec, Kernel, Stream, run_in_guest};

const ROUNDS: usize = 3;

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "?".into(), |d| format!("{:.2}", d.as_secs_f64()))
}

fn main() -> anyhow::Result<()> {
    let python = xtask::paths::resolve_tool("python3").ok();
    for kernel in Kernel::ALL {
        // The first run may build caches (vmlinux, initramfs); do not count it.
        let mut warm = GuestSpec::new(kernel, ["true"]);
        warm.stream = Stream::Off;
        run_in_guest(&warm)?;
        for round in 0..ROUNDS {
            let out = run_in_guest(&warm)?;
            println!(
                "boot/{kernel}/{round}: boot-to-command {} s, total {:.2} s",
                secs(out.boot_time),
                out.total_time.as_secs_f64()
            );
        }
        if let Some(python) = &python {
            let py = python.to_string_lossy().into_owned();
            let mut spec = GuestSpec::new(kernel, [py.as_str(), "-c", "print(1)"]);
            spec.stream = Stream::Off;
            let out = run_in_guest(&spec)?;
            println!(
                "python3/{kernel}: command {} s (exit {})",
                secs(out.command_time),
                out.exit_code
            );
        }
    }
    Ok(())
}
