//! Boots the real kernels. Needs root, QEMU and `cargo xtask setup`; run with
//! `cargo test -p xtask -- --ignored` (each test takes 10–30 s under TCG).

use std::io::Read as _;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use xtask::vm::{BOOT_ATTEMPTS, BootPanic, Forward, GuestSpec, Kernel, Stream, run_in_guest};

fn spec(kernel: Kernel, script: &str) -> GuestSpec {
    let mut spec = GuestSpec::new(kernel, ["sh", "-c", script]);
    spec.cwd = xtask::paths::workspace_root();
    spec.stream = Stream::Off;
    spec.timeout = Duration::from_secs(300);
    spec
}

#[test]
#[ignore = "boots QEMU: needs root and cargo xtask setup"]
fn both_kernels_have_bpf_lsm_and_the_mounts() {
    for kernel in Kernel::ALL {
        let script = "uname -r; cat /sys/kernel/security/lsm; echo; id -u; \
                      test -d /sys/fs/bpf && test -f /sys/fs/cgroup/cgroup.procs && echo mounts-ok; \
                      test -w /tmp && echo tmp-ok; pwd; echo to-stderr >&2; \
                      echo written >\"$AIRLOCK_VM_RESULTS/file\"; exit 7";
        let out = run_in_guest(&spec(kernel, script)).expect("guest runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(out.exit_code, 7, "{stdout}");
        assert_eq!(lines[0], out.release);
        assert!(lines[0].starts_with(kernel.label()), "{}", lines[0]);
        assert!(
            lines[1].split(',').any(|l| l == "bpf"),
            "bpf LSM missing: {}",
            lines[1]
        );
        assert_eq!(lines[2], "0", "runs as root");
        assert!(
            lines.contains(&"mounts-ok") && lines.contains(&"tmp-ok"),
            "{stdout}"
        );
        assert!(lines.contains(&xtask::paths::workspace_root().to_str().expect("utf-8")));
        assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");
        let written = std::fs::read_to_string(out.results_dir.join("file")).expect("results file");
        assert_eq!(written, "written\n");
        assert!(out.boot_time.is_some(), "start marker seen");
    }
}

#[test]
#[ignore = "boots QEMU: needs root and cargo xtask setup"]
fn forwarded_port_reaches_the_guest_and_nothing_else_does() {
    // Connections made before the guest listens can linger in slirp and be accepted later
    // by a one-shot server, so the guest serves persistently until the host connects to a
    // second "stop" port.
    let base = 18_000 + (std::process::id() % 1000) as u16 * 2;
    let mut s = spec(
        Kernel::V6_12,
        "B=/run/airlock-vm/busybox; if $B nc -w 3 1.1.1.1 443 </dev/null; then echo escaped; fi; \
         $B nc -ll -p 9000 -e echo hi-from-guest & $B nc -l -p 9001 </dev/null; kill $!",
    );
    s.forwards = vec![
        Forward {
            host_addr: [127, 0, 0, 1].into(),
            host_port: base,
            guest_port: 9000,
        },
        Forward {
            host_addr: [127, 0, 0, 1].into(),
            host_port: base + 1,
            guest_port: 9001,
        },
    ];
    let guest = thread::spawn(move || run_in_guest(&s));
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut got = String::new();
    while Instant::now() < deadline && !got.contains("hi-from-guest") && !guest.is_finished() {
        got.clear();
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", base)) {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = c.read_to_string(&mut got);
        }
        thread::sleep(Duration::from_millis(500));
    }
    let _ = TcpStream::connect(("127.0.0.1", base + 1));
    let out = guest.join().expect("guest thread").expect("guest runs");
    assert!(got.contains("hi-from-guest"), "host read {got:?}");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("escaped"));
}

#[test]
#[ignore = "boots QEMU: needs root and cargo xtask setup"]
fn timeout_kills_the_guest() {
    let mut s = spec(Kernel::V6_1, "sleep 600");
    s.timeout = Duration::from_secs(5);
    let started = Instant::now();
    let err = run_in_guest(&s).expect_err("must time out");
    assert!(
        err.to_string().contains("did not finish within 5 s"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
#[ignore = "boots QEMU: needs root and cargo xtask setup"]
fn a_kernel_that_panics_while_booting_is_booted_again_then_reported() {
    // No init in the initramfs: the kernel panics before the command could start.
    let mut s = spec(Kernel::V6_12, "true");
    s.kernel_args = vec!["rdinit=/airlock-no-such-init".to_owned()];
    let err = run_in_guest(&s).expect_err("the guest cannot boot");
    let panic = err
        .downcast_ref::<BootPanic>()
        .unwrap_or_else(|| panic!("not a boot panic: {err:#}"));
    assert_eq!(panic.boots, BOOT_ATTEMPTS, "{panic}");
    assert!(panic.console_tail.contains("Kernel panic"), "{panic}");
}

#[test]
#[ignore = "boots QEMU: needs root and cargo xtask setup"]
fn a_panic_after_the_command_started_is_not_retried() {
    // A crash caused by what runs under test must surface at once, never be booted away.
    let s = spec(Kernel::V6_12, "echo c >/proc/sysrq-trigger; sleep 30");
    let err = run_in_guest(&s).expect_err("the guest crashes");
    assert!(err.downcast_ref::<BootPanic>().is_none(), "{err:#}");
    assert!(
        err.to_string().contains("without reporting an exit code"),
        "{err:#}"
    );
}
