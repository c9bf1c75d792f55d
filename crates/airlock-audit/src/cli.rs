//! `airlock audit ...`: verify, tail, show, export, keygen.
//!
//! Exit codes: 0 ok, 1 verification found a problem (or `show` found nothing), 2 error
//! (returned as `Err`; the binary maps it with [`exit_code`]).

use std::fs::File;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use crate::AuditError;
use crate::keys::{PublicKey, SigningKey, pub_path};
use crate::verify::{TailCheck, VerifyOptions, expand_paths, verify};
use crate::writer::{LOCK_FILE, now_ms};

/// Default log directory.
pub const DEFAULT_DIR: &str = "/var/lib/airlock/audit";
/// Default signing key path (its public key is `<path>.pub`).
pub const DEFAULT_KEY: &str = "/etc/airlock/audit.key";

/// Errors of the CLI itself.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Reading logs or writing output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> CliError {
    let what = what.into();
    move |source| CliError::Io { what, source }
}

/// `airlock audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check framing, hash chain, signatures and checkpoint coverage; name the first bad record.
    Verify(VerifyArgs),
    /// Print the newest records in a human-readable form.
    Tail(TailArgs),
    /// Print every record with this seq or correlation id, pretty JSON.
    Show(ShowArgs),
    /// Write a verifiable range of records (ending at a signed checkpoint) for auditors.
    Export(ExportArgs),
    /// Create a signing key (mode 0600) and publish its public key beside it.
    Keygen(KeygenArgs),
}

/// `audit verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Log directories or files (files are checked in the order given).
    #[arg(default_value = DEFAULT_DIR)]
    pub paths: Vec<PathBuf>,
    /// Trusted public key file (base64); repeatable.
    #[arg(long = "key", default_value = "/etc/airlock/audit.key.pub")]
    pub keys: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// A writer is running: the newest checkpoint must be fresh.
    #[arg(long, conflicts_with = "closed")]
    pub live: bool,
    /// No writer is running: the log must end with a clean shutdown.
    #[arg(long)]
    pub closed: bool,
    /// Accept a chain that starts mid-way (an export).
    #[arg(long)]
    pub partial: bool,
    /// Largest allowed gap between checkpoints, ms.
    #[arg(long, default_value_t = 2500)]
    pub max_gap_ms: u64,
}

/// `audit tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Log directory.
    #[arg(default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Number of records.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub lines: usize,
    /// Include checkpoints.
    #[arg(long)]
    pub all: bool,
}

/// `audit show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A seq number or a correlation id.
    pub id: String,
    /// Log directory.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
}

/// `audit export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Log directory.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Range of seqs, `FROM..TO` (inclusive; either side may be empty).
    #[arg(long)]
    pub range: String,
    /// Output file (default stdout).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

/// `audit keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Key file to create.
    #[arg(default_value = DEFAULT_KEY)]
    pub out: PathBuf,
}

/// Runs a subcommand.
///
/// # Errors
/// [`AuditError`] when the command could not run (exit code 2).
pub fn run(cmd: AuditCommand) -> Result<ExitCode, AuditError> {
    match cmd {
        AuditCommand::Verify(a) => run_verify(&a),
        AuditCommand::Tail(a) => run_tail(&a),
        AuditCommand::Show(a) => run_show(&a),
        AuditCommand::Export(a) => run_export(&a),
        AuditCommand::Keygen(a) => {
            if a.out.exists() {
                return Err(CliError::Usage(format!("{} exists", a.out.display())).into());
            }
            let k = SigningKey::load_or_create(&a.out)?;
            println!(
                "key {} written to {}; public key {}",
                k.public().key_id,
                a.out.display(),
                pub_path(&a.out).display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Maps a [`run`] result to the process exit code (printing the error).
pub fn exit_code(r: Result<ExitCode, AuditError>) -> ExitCode {
    match r {
        Ok(c) => c,
        Err(e) => {
            eprintln!("airlock audit: {e}");
            ExitCode::from(2)
        }
    }
}

/// Whether a writer currently holds `dir`'s lock (`None`: not a log directory).
fn writer_running(dir: &Path) -> Option<bool> {
    let f = File::open(dir.join(LOCK_FILE)).ok()?;
    Some(f.try_lock_shared().is_err())
}

fn run_verify(a: &VerifyArgs) -> Result<ExitCode, AuditError> {
    let mut keys = Vec::new();
    for k in &a.keys {
        keys.push(PublicKey::load(k)?);
    }
    let mut opts = VerifyOptions::new(keys);
    opts.max_gap_ms = a.max_gap_ms;
    opts.partial = a.partial;
    opts.tail = if a.live {
        TailCheck::Live { now_ms: now_ms() }
    } else if a.closed {
        TailCheck::Closed
    } else if let [dir] = a.paths.as_slice() {
        match writer_running(dir) {
            Some(true) => TailCheck::Live { now_ms: now_ms() },
            Some(false) => TailCheck::Closed,
            None => TailCheck::Unchecked,
        }
    } else {
        TailCheck::Unchecked
    };
    let report = verify(&a.paths, &opts)?;
    let out = io::stdout();
    let mut out = out.lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(|e| io_err("writing report")(e.into()))?;
        writeln!(out).map_err(io_err("writing report"))?;
    } else {
        match &report.finding {
            None => writeln!(
                out,
                "OK: {} records ({} bytes) in {} files, {} checkpoints, seq {}..={}, signed through seq {}",
                report.records,
                report.bytes,
                report.files.len(),
                report.checkpoints,
                report.first_seq.unwrap_or(0),
                report.last_seq.unwrap_or(0),
                report.last_signed_seq.map_or_else(|| "-".into(), |s| s.to_string()),
            ),
            Some(f) => writeln!(
                out,
                "FAILED: {:?} at {}:{} (seq {}): {}",
                f.class,
                f.file.display(),
                f.line,
                f.seq.map_or_else(|| "?".into(), |s| s.to_string()),
                f.detail
            ),
        }
        .map_err(io_err("writing report"))?;
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Calls `f` for each parsed record in the directory's files, oldest first.
fn for_each_record(
    dir: &Path,
    mut f: impl FnMut(&[u8], Option<Map<String, Value>>),
) -> Result<(), AuditError> {
    for path in expand_paths(&[dir.to_path_buf()])? {
        let data = std::fs::read(&path).map_err(io_err(format!("reading {}", path.display())))?;
        for line in data.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            f(line, serde_json::from_slice(line).ok());
        }
    }
    Ok(())
}

fn summary(v: &Map<String, Value>) -> String {
    let g = |k: &str| {
        v.get(k)
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .unwrap_or_default()
    };
    let uid = v
        .get("metadata")
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
        .unwrap_or("-");
    format!(
        "{:>8}  {}  {:<15} {:<9} {:<36} {}",
        g("seq"),
        g("time"),
        g("kind"),
        v.get("disposition").and_then(Value::as_str).unwrap_or("-"),
        uid,
        g("message")
    )
}

fn run_tail(a: &TailArgs) -> Result<ExitCode, AuditError> {
    let mut ring = std::collections::VecDeque::with_capacity(a.lines);
    for_each_record(&a.dir, |raw, v| {
        let line = match &v {
            Some(v) if !a.all && v.get("kind").and_then(Value::as_str) == Some("checkpoint") => {
                return;
            }
            Some(v) => summary(v),
            None => format!("(unparseable: {} bytes)", raw.len()),
        };
        if ring.len() == a.lines {
            ring.pop_front();
        }
        ring.push_back(line);
    })?;
    let out = io::stdout();
    let mut out = out.lock();
    for l in ring {
        if writeln!(out, "{l}").is_err() {
            break; // broken pipe: stop quietly
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_show(a: &ShowArgs) -> Result<ExitCode, AuditError> {
    let seq: Option<u64> = a.id.parse().ok();
    let mut found = Vec::new();
    for_each_record(&a.dir, |_, v| {
        let Some(v) = v else { return };
        let by_seq = seq.is_some() && v.get("seq").and_then(Value::as_u64) == seq;
        let by_uid = v
            .get("metadata")
            .and_then(|m| m.get("uid"))
            .and_then(Value::as_str)
            == Some(a.id.as_str());
        if by_seq || by_uid {
            found.push(v);
        }
    })?;
    for v in &found {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    }
    Ok(if found.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn parse_range(s: &str) -> Result<(u64, u64), CliError> {
    let bad = || CliError::Usage(format!("--range {s}: expected FROM..TO"));
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let from = if a.is_empty() {
        0
    } else {
        a.parse().map_err(|_| bad())?
    };
    let to = if b.is_empty() {
        u64::MAX
    } else {
        b.trim_start_matches('=').parse().map_err(|_| bad())?
    };
    Ok((from, to))
}

fn run_export(a: &ExportArgs) -> Result<ExitCode, AuditError> {
    let (from, to) = parse_range(&a.range)?;
    let mut out: Box<dyn io::Write> = match &a.out {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).map_err(io_err(format!("creating {}", p.display())))?,
        )),
        None => Box::new(BufWriter::new(io::stdout())),
    };
    let mut done = false;
    let mut err = None;
    let mut n = 0u64;
    for_each_record(&a.dir, |raw, v| {
        if done || err.is_some() {
            return;
        }
        let Some(v) = v else { return };
        let Some(seq) = v.get("seq").and_then(Value::as_u64) else {
            return;
        };
        // Include records up to the first checkpoint at or after `to` so the range is signed.
        if seq >= from {
            if let Err(e) = out.write_all(raw).and_then(|()| out.write_all(b"\n")) {
                err = Some(e);
            }
            n += 1;
            if seq >= to && v.get("kind").and_then(Value::as_str) == Some("checkpoint") {
                done = true;
            }
        }
    })?;
    if let Some(e) = err {
        return Err(io_err("writing export")(e).into());
    }
    out.flush().map_err(io_err("writing export"))?;
    eprintln!(
        "exported {n} records{}",
        if done {
            ""
        } else {
            " (range not yet closed by a checkpoint)"
        }
    );
    Ok(ExitCode::SUCCESS)
}
