//! The per-run stage-2 script: mounts the kernel filesystems the agent needs, brings up the
//! network, runs the command with its output on the virtio-serial ports, records the exit
//! code in the run directory and powers off.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};

use super::Forward;

/// Printed to the console right before the command starts; the host times the boot by it.
pub const START_MARKER: &str = "AIRLOCK-VM-START";

/// Names of the virtio-serial ports carrying the command's stdout and stderr.
pub const STDOUT_PORT: &str = "airlock.stdout";
/// See [`STDOUT_PORT`].
pub const STDERR_PORT: &str = "airlock.stderr";

/// Guest address on the QEMU user network (what slirp's hostfwd targets by default).
pub const GUEST_IP: &str = "10.0.2.15/24";

/// Everything stage 2 needs to know.
pub struct Stage2<'a> {
    /// The run directory, mounted writable at the same path in the guest.
    pub run_dir: &'a Path,
    /// Working directory of the command.
    pub cwd: &'a Path,
    /// Environment of the command (already complete; nothing else is inherited).
    pub env: &'a [(String, String)],
    /// The command and its arguments.
    pub command: &'a [String],
    /// Forwards requested; any forward brings up eth0.
    pub forwards: &'a [Forward],
    /// Print stage timestamps to the console.
    pub debug: bool,
}

fn quote(s: &str) -> Result<String> {
    shlex::try_quote(s)
        .map(|q| q.into_owned())
        .map_err(|e| anyhow!("cannot pass {s:?} to the guest shell: {e}"))
}

fn quote_path(p: &Path) -> Result<String> {
    quote(
        p.to_str()
            .with_context(|| format!("{} is not UTF-8", p.display()))?,
    )
}

/// Whether `key` is a valid environment variable name for the guest.
pub fn valid_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

impl Stage2<'_> {
    /// Renders the script.
    ///
    /// # Errors
    ///
    /// Fails on an empty command, a bad environment key, or text the shell cannot carry
    /// (NUL bytes, non-UTF-8 paths).
    pub fn render(&self) -> Result<String> {
        if self.command.is_empty() {
            bail!("no command to run in the guest");
        }
        let run = quote_path(self.run_dir)?;
        let cwd = quote_path(self.cwd)?;
        let mut env = String::new();
        for (k, v) in self.env {
            if !valid_env_key(k) {
                bail!("{k:?} is not a valid environment variable name");
            }
            env.push(' ');
            env.push_str(&quote(&format!("{k}={v}"))?);
        }
        let mut argv = String::new();
        for a in self.command {
            argv.push(' ');
            argv.push_str(&quote(a)?);
        }
        let net = if self.forwards.is_empty() {
            String::new()
        } else {
            format!(
                "$B ip addr add {GUEST_IP} dev eth0 && $B ip link set eth0 up || echo 'airlock-vm stage2: eth0 setup failed' >/dev/console\n"
            )
        };
        let debug = if self.debug { "1" } else { "" };
        Ok(format!(
            r#"# airlock VM stage 2 (generated per run): PID 1 in the host-root overlay.
B=/run/airlock-vm/busybox
RUN={run}
log() {{
  [ -z "{debug}" ] || echo "airlock-vm stage2 $($B cut -d' ' -f1 /proc/uptime): $*" >/dev/console
}}
log start
$B mount -t cgroup2 cgroup2 /sys/fs/cgroup
$B mount -t bpf bpf /sys/fs/bpf
$B mount -t securityfs securityfs /sys/kernel/security
$B mount -t tracefs tracefs /sys/kernel/tracing
$B mount -t debugfs debugfs /sys/kernel/debug
# devtmpfs has none of these; PostgreSQL needs /dev/shm, shells /dev/fd, ttys /dev/pts.
$B mkdir -p /dev/shm /dev/pts
$B mount -t tmpfs -o mode=1777 shm /dev/shm
$B mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
[ -e /dev/ptmx ] || $B ln -s pts/ptmx /dev/ptmx
$B ln -sf /proc/self/fd /dev/fd
$B ln -sf /proc/self/fd/0 /dev/stdin
$B ln -sf /proc/self/fd/1 /dev/stdout
$B ln -sf /proc/self/fd/2 /dev/stderr
$B hostname airlock-vm
$B ip link set lo up
{net}log mounted
out=/dev/console
err=/dev/console
i=0
while [ $i -lt 50 ]; do
  for d in /sys/class/virtio-ports/*; do
    [ -e "$d/name" ] || continue
    case "$($B cat "$d/name")" in
      {STDOUT_PORT}) out="/dev/${{d##*/}}" ;;
      {STDERR_PORT}) err="/dev/${{d##*/}}" ;;
    esac
  done
  [ "$out" != /dev/console ] && [ "$err" != /dev/console ] && break
  i=$((i + 1))
  $B sleep 0.1
done
log ports found after $i tries
$B cat /proc/uptime >"$RUN/t-start"
echo {START_MARKER} >/dev/console
if cd {cwd} 2>>"$err"; then
  $B env -i{env}{argv} </dev/null >>"$out" 2>>"$err"
  code=$?
else
  code=125
fi
$B cat /proc/uptime >"$RUN/t-end"
echo $code >"$RUN/exit-code.tmp" && $B mv "$RUN/exit-code.tmp" "$RUN/exit-code"
$B sync
echo o >/proc/sysrq-trigger
$B sleep 30
"#
        ))
    }
}

/// The guest `PATH`: the host's entries, the real pyenv `bin` ahead of pyenv's shims (which
/// cost seconds per call under TCG), then any standard directory the host lacks.
pub fn guest_path(host_path: &str, pyenv_bin: Option<&Path>) -> String {
    let mut out: Vec<String> = Vec::new();
    let push = |s: &str, out: &mut Vec<String>| {
        if !s.is_empty() && !out.iter().any(|e| e == s) {
            out.push(s.to_owned());
        }
    };
    for entry in host_path.split(':') {
        if let Some(bin) = pyenv_bin
            && entry.ends_with("/shims")
            && entry.contains("pyenv")
        {
            push(&bin.to_string_lossy(), &mut out);
        }
        push(entry, &mut out);
    }
    for std_dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        push(std_dir, &mut out);
    }
    out.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn path_puts_real_python_before_shims_and_keeps_order() {
        let p = guest_path(
            "/root/.cargo/bin:/root/.pyenv/shims:/usr/bin:/root/.cargo/bin",
            Some(Path::new("/root/.pyenv/versions/3.11.7/bin")),
        );
        assert_eq!(
            p,
            "/root/.cargo/bin:/root/.pyenv/versions/3.11.7/bin:/root/.pyenv/shims:/usr/bin:\
             /usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/bin"
        );
    }

    #[test]
    fn script_quotes_arguments_and_env() {
        let run = PathBuf::from("/w/target/vm/runs/x");
        let env = vec![("A".to_string(), "it's $HOME".to_string())];
        let cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            "echo 'a b'; exit 3".to_string(),
        ];
        let s = Stage2 {
            run_dir: &run,
            cwd: Path::new("/w"),
            env: &env,
            command: &cmd,
            forwards: &[],
            debug: false,
        }
        .render()
        .expect("renders");
        // Run the generated env/argv through a real shell to check the quoting round-trips.
        let line = s
            .lines()
            .find(|l| l.contains("env -i"))
            .expect("command line");
        let words = line
            .trim()
            .trim_start_matches("$B env -i")
            .split(" </dev/null")
            .next()
            .expect("argv");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for w in {words}; do printf '%s\\n' \"$w\"; done"))
            .output()
            .expect("sh runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "A=it's $HOME\nsh\n-c\necho 'a b'; exit 3\n"
        );
        assert!(!s.contains("eth0"), "no network without forwards");
    }

    #[test]
    fn rejects_bad_env_keys_and_empty_commands() {
        let run = PathBuf::from("/r");
        let cmd = vec!["true".to_string()];
        let env = vec![("A B".to_string(), "x".to_string())];
        let bad = Stage2 {
            run_dir: &run,
            cwd: &run,
            env: &env,
            command: &cmd,
            forwards: &[],
            debug: false,
        };
        assert!(bad.render().is_err());
        let empty = Stage2 {
            run_dir: &run,
            cwd: &run,
            env: &[],
            command: &[],
            forwards: &[],
            debug: false,
        };
        assert!(empty.render().is_err());
    }
}
