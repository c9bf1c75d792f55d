//! Starting QEMU for one run and collecting what comes back.
//!
//! Output paths: the kernel console (ttyS0, `loglevel=1`) goes to `console.log` in the run
//! directory; the command's stdout and stderr each get a virtio-serial port whose host end
//! is a Unix socket we listen on, so they stay apart and free of console noise.

use std::fs;
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};

use super::stage2::{self, STDERR_PORT, STDOUT_PORT, Stage2};
use super::{DEFAULT_PASSTHROUGH_ENV, GuestOutcome, GuestSpec, KernelTree, Stream};
use crate::paths;

const QEMU: &str = "qemu-system-x86_64";

/// Run directories older than this are removed when a new run starts.
const KEEP_RUNS: Duration = Duration::from_secs(24 * 3600);

pub(super) fn boot(spec: &GuestSpec, tree: &KernelTree, initrd: &Path) -> Result<GuestOutcome> {
    let qemu = which::which(QEMU).map_err(|_| {
        anyhow!(
            "{QEMU} is not installed (apt-get install qemu-system-x86, or run cargo xtask setup)"
        )
    })?;
    check_cwd(&spec.cwd)?;
    let run_dir = new_run_dir(spec)?;
    let results_dir = run_dir.join("results");
    fs::create_dir_all(&results_dir)
        .with_context(|| format!("creating {}", results_dir.display()))?;

    let env = guest_env(spec, &results_dir);
    let script = Stage2 {
        run_dir: &run_dir,
        cwd: &spec.cwd,
        env: &env,
        command: &spec.command,
        forwards: &spec.forwards,
        debug: debug_enabled(),
    }
    .render()?;
    fs::write(run_dir.join("stage2.sh"), script)
        .with_context(|| format!("writing stage2.sh in {}", run_dir.display()))?;

    // Short socket paths: sun_path holds 108 bytes and the workspace may sit deep.
    let sock_dir = tempfile::Builder::new()
        .prefix("airlock-vm-")
        .tempdir()
        .context("creating a socket directory")?;
    let out_sock = sock_dir.path().join("out");
    let err_sock = sock_dir.path().join("err");
    let out_listener =
        UnixListener::bind(&out_sock).with_context(|| format!("binding {}", out_sock.display()))?;
    let err_listener =
        UnixListener::bind(&err_sock).with_context(|| format!("binding {}", err_sock.display()))?;

    let mut cmd = Command::new(qemu);
    cmd.args(qemu_args(
        spec, tree, initrd, &run_dir, &out_sock, &err_sock,
    )?)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {QEMU}"))?;
    let mut guard = KillOnDrop(Some(&mut child));
    let child = guard.child();

    let marker: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let console_log = run_dir.join("console.log");
    let console = spawn_console(child.stdout.take(), &console_log, Arc::clone(&marker))?;
    let qemu_stderr = spawn_collect(child.stderr.take());

    let connected = accept_both(child, &out_listener, &err_listener, deadline);
    let (out_stream, err_stream) = match connected {
        Ok(pair) => pair,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = qemu_stderr.join().unwrap_or_default();
            return Err(e.context(format!(
                "QEMU for kernel {} did not start: {}",
                spec.kernel,
                String::from_utf8_lossy(&stderr).trim()
            )));
        }
    };
    let prefix = match &spec.stream {
        Stream::Off => None,
        Stream::On { prefix } => Some(prefix.clone().unwrap_or_default()),
    };
    let out_reader = spawn_relay(out_stream, prefix.clone(), false);
    let err_reader = spawn_relay(err_stream, prefix, true);

    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the guest on kernel {} did not finish within {} s, so QEMU was killed (console log: {})",
                spec.kernel,
                spec.timeout.as_secs(),
                console_log.display()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    let total_time = started.elapsed();
    guard.disarm();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let _ = console.join();
    let qemu_err = qemu_stderr.join().unwrap_or_default();

    let exit_code = match fs::read_to_string(run_dir.join("exit-code")) {
        Ok(s) => s
            .trim()
            .parse::<i32>()
            .with_context(|| format!("bad exit-code file {s:?}"))?,
        Err(_) => {
            let console_tail = tail(&console_log, 20);
            if marker.get().is_none() && console_panicked(&console_log) {
                return Err(BootPanic {
                    kernel: spec.kernel.to_string(),
                    boots: 1,
                    console_tail,
                }
                .into());
            }
            bail!(
                "the guest on kernel {} stopped without reporting an exit code (QEMU {status}); {}{}",
                spec.kernel,
                console_tail,
                String::from_utf8_lossy(&qemu_err).trim()
            )
        }
    };
    let uptime = |name: &str| -> Option<f64> {
        fs::read_to_string(run_dir.join(name))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let command_time = match (uptime("t-start"), uptime("t-end")) {
        (Some(a), Some(b)) if b >= a => Some(Duration::from_secs_f64(b - a)),
        _ => None,
    };
    Ok(GuestOutcome {
        kernel: spec.kernel,
        package: tree.package.clone(),
        release: tree.release.clone(),
        exit_code,
        stdout,
        stderr,
        results_dir,
        boot_time: marker.get().map(|t| t.duration_since(started)),
        command_time,
        total_time,
        run_dir,
    })
}

/// The guest kernel panicked while booting, before the command started: nothing of ours
/// ran yet, so the caller may boot again (TCG occasionally trips a boot-time fault).
#[derive(Debug)]
pub struct BootPanic {
    pub kernel: String,
    /// How many boots panicked in a row.
    pub boots: u32,
    pub console_tail: String,
}

impl std::fmt::Display for BootPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the guest kernel {} panicked while booting, before the command started ({} boot(s)); {}",
            self.kernel, self.boots, self.console_tail
        )
    }
}

impl std::error::Error for BootPanic {}

fn console_panicked(log: &Path) -> bool {
    fs::read(log).is_ok_and(|text| {
        text.windows(b"Kernel panic".len())
            .any(|w| w == b"Kernel panic")
    })
}

/// Kills QEMU if we leave early (error, panic) so no guest outlives the caller.
struct KillOnDrop<'a>(Option<&'a mut Child>);

impl KillOnDrop<'_> {
    fn child(&mut self) -> &mut Child {
        // Only None after disarm(), which is the last use.
        self.0
            .as_deref_mut()
            .unwrap_or_else(|| unreachable!("child used after disarm"))
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `AIRLOCK_VM_DEBUG=1`: kernel log and stage timestamps go to the run's console.log.
fn debug_enabled() -> bool {
    std::env::var_os("AIRLOCK_VM_DEBUG").is_some_and(|v| v == "1")
}

fn check_cwd(cwd: &Path) -> Result<()> {
    if !cwd.is_absolute() || !cwd.is_dir() {
        bail!(
            "the guest working directory {} is not an existing absolute directory",
            cwd.display()
        );
    }
    if cwd.starts_with("/tmp")
        || cwd.starts_with("/run")
        || cwd.starts_with("/proc")
        || cwd.starts_with("/sys")
    {
        bail!(
            "the guest working directory {} is hidden in the guest (fresh /tmp, /run, /proc, /sys)",
            cwd.display()
        );
    }
    Ok(())
}

fn new_run_dir(spec: &GuestSpec) -> Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let runs = paths::vm_dir().join("runs");
    fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
    prune_runs(&runs);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let name = format!(
        "{}-{millis}-{}-{}",
        spec.kernel,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let dir = runs.join(name);
    if dir.to_string_lossy().chars().any(char::is_whitespace) {
        bail!(
            "the run directory {} contains whitespace, which the kernel command line cannot carry",
            dir.display()
        );
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn prune_runs(runs: &Path) {
    let Ok(entries) = fs::read_dir(runs) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > KEEP_RUNS);
        if old {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn guest_env(spec: &GuestSpec, results_dir: &Path) -> Vec<(String, String)> {
    let host_path = std::env::var("PATH").unwrap_or_default();
    let mut env = vec![
        ("HOME".to_owned(), "/root".to_owned()),
        ("USER".to_owned(), "root".to_owned()),
        ("LOGNAME".to_owned(), "root".to_owned()),
        (
            "PATH".to_owned(),
            stage2::guest_path(&host_path, paths::pyenv_global_bin().as_deref()),
        ),
        ("AIRLOCK_VM".to_owned(), "1".to_owned()),
        (
            "AIRLOCK_VM_KERNEL".to_owned(),
            spec.kernel.label().to_owned(),
        ),
        (
            "AIRLOCK_VM_RESULTS".to_owned(),
            results_dir.to_string_lossy().into_owned(),
        ),
    ];
    for key in DEFAULT_PASSTHROUGH_ENV {
        if let Ok(v) = std::env::var(key) {
            env.push(((*key).to_owned(), v));
        }
    }
    for (k, v) in &spec.env {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

fn qemu_args(
    spec: &GuestSpec,
    tree: &KernelTree,
    initrd: &Path,
    run_dir: &Path,
    out_sock: &Path,
    err_sock: &Path,
) -> Result<Vec<String>> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    // AIRLOCK_VM_DEBUG=1 shows the kernel log and stage-1 timestamps in console.log.
    let verbosity = if debug_enabled() {
        "airlock.debug=1"
    } else {
        "quiet loglevel=1"
    };
    let mut append = format!(
        "console=ttyS0 {verbosity} panic=-1 airlock.run={}",
        s(run_dir)
    );
    if !spec.forwards.is_empty() {
        append.push_str(" airlock.net=1");
    }
    for arg in &spec.kernel_args {
        append.push(' ');
        append.push_str(arg);
    }
    let mut args: Vec<String> = [
        "-accel",
        if spec.icount {
            "tcg,thread=single"
        } else {
            "tcg,thread=multi"
        },
        "-cpu",
        "max",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    if spec.icount {
        args.extend(["-icount".into(), "shift=0,sleep=off".into()]);
    }
    args.extend([
        "-m".into(),
        spec.memory_mib.to_string(),
        "-smp".into(),
        spec.cpus.to_string(),
        "-kernel".into(),
        s(&super::kernel::boot_image(tree)),
        "-initrd".into(),
        s(initrd),
        "-append".into(),
        append,
        "-virtfs".into(),
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap".into(),
        "-virtfs".into(),
        format!(
            "local,path={},mount_tag=results,security_model=none,multidevs=remap",
            s(run_dir)
        ),
        "-device".into(),
        "virtio-serial-pci,id=vser0".into(),
        "-chardev".into(),
        format!("socket,id=cout,path={}", s(out_sock)),
        "-device".into(),
        format!("virtserialport,bus=vser0.0,chardev=cout,name={STDOUT_PORT}"),
        "-chardev".into(),
        format!("socket,id=cerr,path={}", s(err_sock)),
        "-device".into(),
        format!("virtserialport,bus=vser0.0,chardev=cerr,name={STDERR_PORT}"),
    ]);
    if spec.forwards.is_empty() {
        args.extend(["-nic".into(), "none".into()]);
    } else {
        // restrict=on: the guest reaches nothing outside; hostfwd still delivers to it.
        let mut netdev = "user,id=net0,restrict=on".to_owned();
        for f in &spec.forwards {
            netdev.push_str(&format!(
                ",hostfwd=tcp:{}:{}-:{}",
                f.host_addr, f.host_port, f.guest_port
            ));
        }
        args.extend([
            "-netdev".into(),
            netdev,
            "-device".into(),
            "virtio-net-pci,netdev=net0".into(),
        ]);
    }
    if s(run_dir).contains(',') {
        bail!(
            "the run directory {} contains a comma, which QEMU options cannot carry",
            run_dir.display()
        );
    }
    Ok(args)
}

/// Waits for QEMU to connect to both output sockets.
fn accept_both(
    child: &mut Child,
    out: &UnixListener,
    err: &UnixListener,
    deadline: Instant,
) -> Result<(UnixStream, UnixStream)> {
    out.set_nonblocking(true)
        .context("setting the socket non-blocking")?;
    err.set_nonblocking(true)
        .context("setting the socket non-blocking")?;
    let (mut o, mut e) = (None, None);
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        if o.is_none()
            && let Ok((s, _)) = out.accept()
        {
            o = Some(s);
        }
        if e.is_none()
            && let Ok((s, _)) = err.accept()
        {
            e = Some(s);
        }
        if let (Some(_), Some(_)) = (&o, &e) {
            break;
        }
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            bail!("QEMU exited ({status}) before connecting its serial ports");
        }
        if Instant::now() >= deadline.min(give_up) {
            bail!("QEMU did not connect its serial ports in time");
        }
        thread::sleep(Duration::from_millis(5));
    }
    let (o, e) = (
        o.ok_or_else(|| anyhow!("no stdout port"))?,
        e.ok_or_else(|| anyhow!("no stderr port"))?,
    );
    o.set_nonblocking(false)
        .context("setting the socket blocking")?;
    e.set_nonblocking(false)
        .context("setting the socket blocking")?;
    Ok((o, e))
}

/// Copies the command's output to the terminal (if `prefix` is Some) and collects it.
fn spawn_relay(stream: UnixStream, prefix: Option<String>, is_err: bool) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut all = Vec::new();
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            all.extend_from_slice(&line);
            if let Some(prefix) = &prefix {
                let mut buf = Vec::with_capacity(prefix.len() + line.len() + 1);
                buf.extend_from_slice(prefix.as_bytes());
                buf.extend_from_slice(&line);
                if !buf.ends_with(b"\n") {
                    buf.push(b'\n');
                }
                // A closed terminal must not stop the collection.
                let _ = if is_err {
                    std::io::stderr().lock().write_all(&buf)
                } else {
                    std::io::stdout().lock().write_all(&buf)
                };
            }
        }
        all
    })
}

/// Writes the console to `log` and notes when the start marker passes.
fn spawn_console(
    stdout: Option<std::process::ChildStdout>,
    log: &Path,
    marker: Arc<OnceLock<Instant>>,
) -> Result<JoinHandle<()>> {
    let mut file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    Ok(thread::spawn(move || {
        let Some(stdout) = stdout else { return };
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if marker.get().is_none()
                && line
                    .windows(stage2::START_MARKER.len())
                    .any(|w| w == stage2::START_MARKER.as_bytes())
            {
                let _ = marker.set(Instant::now());
            }
            let _ = file.write_all(&line);
        }
    }))
}

fn spawn_collect<R: Read + Send + 'static>(r: Option<R>) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if all.is_empty() {
        return format!("the console log {} is empty", path.display());
    }
    let start = all.len().saturating_sub(lines);
    format!(
        "last console lines ({}):\n{}\n",
        path.display(),
        all[start..].join("\n")
    )
}
