//! `airlock policy check | explain | test`.
//!
//! Exit codes (as ripgrep): 0 ok; 1 a negative result (an error-level lint, a failing
//! test case); 2 an error (the policy or the cases file does not load) — [`run`] returns
//! those as `Err` for `main` to print and map to 2 ([`exit_code`]).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::action::{Action, ActionClass, Destination, ParentProcess};
use crate::decision::{Decision, GrantScope, Outcome, OutcomeKind};
use crate::error::{Location, PolicyError};
use crate::lint::LintLevel;
use crate::policy::{Policy, read_limited};

/// Largest cases file accepted.
const MAX_CASES_BYTES: u64 = 8 << 20;

/// The `policy` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and lint it (unreachable and overlapping rules).
    Check {
        /// Policy file.
        file: PathBuf,
    },
    /// Show which rule decides an action, and what happens.
    Explain(Box<ExplainArgs>),
    /// Run table-driven test cases (a TOML file of `[[case]]`) against a policy.
    Test {
        /// Policy file.
        file: PathBuf,
        /// Cases file.
        cases: PathBuf,
    },
}

/// How `explain` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    #[default]
    Text,
    /// The [`Decision`] as JSON.
    Json,
}

/// Arguments of `policy explain`: the policy and one action, from flags or JSON.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("what").required(true))]
pub struct ExplainArgs {
    /// Policy file.
    pub policy: PathBuf,
    /// An exec of BIN; its arguments follow `--` (`--exec /usr/bin/aws -- s3 cp f s3://b/`).
    #[arg(long, value_name = "BIN", group = "what")]
    pub exec: Option<String>,
    /// A connect to HOST:PORT (HOST is an IP or a host name).
    #[arg(long, value_name = "HOST:PORT", group = "what")]
    pub connect: Option<String>,
    /// A send to HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", group = "what")]
    pub send: Option<String>,
    /// An open of PATH.
    #[arg(long, value_name = "PATH", group = "what")]
    pub open: Option<String>,
    /// The action as JSON (an `Action`), from FILE or `-` for stdin.
    #[arg(long, value_name = "FILE|-", group = "what")]
    pub json: Option<PathBuf>,
    /// Request URL of a connect/send (`https://host/path`, `s3://bucket/key`).
    #[arg(long)]
    pub url: Option<String>,
    /// Peer IP of a connect/send given by host name.
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// Executable of the acting process (connect/send/open).
    #[arg(long, value_name = "PATH")]
    pub binary: Option<String>,
    /// Actor uid.
    #[arg(long)]
    pub uid: Option<u32>,
    /// Actor user name.
    #[arg(long)]
    pub user: Option<String>,
    /// Actor cgroup path.
    #[arg(long)]
    pub cgroup: Option<String>,
    /// Actor systemd unit.
    #[arg(long)]
    pub unit: Option<String>,
    /// An ancestor's executable, nearest first (repeat).
    #[arg(long, value_name = "PATH")]
    pub parent: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
    /// Arguments of `--exec` (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Run a `policy` subcommand, printing to stdout.
///
/// # Errors
/// A policy, cases or action that does not load (exit code 2).
pub fn run(cmd: PolicyCommand) -> Result<ExitCode, PolicyError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_to(cmd, &mut out)
}

/// Map [`run`]'s result to the process exit code, printing an error to stderr.
pub fn exit_code(result: Result<ExitCode, PolicyError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// [`run`], printing to `out`.
///
/// # Errors
/// As [`run`].
pub fn run_to(cmd: PolicyCommand, out: &mut dyn Write) -> Result<ExitCode, PolicyError> {
    // A closed pipe (`| head`) is not an error worth reporting (as ripgrep).
    let result = match cmd {
        PolicyCommand::Check { file } => check(&file, out),
        PolicyCommand::Explain(args) => explain(&args, out),
        PolicyCommand::Test { file, cases } => test(&file, &cases, out),
    };
    result.map(|(code, _)| code)
}

/// Bool: whether output was cut by a broken pipe (ignored).
type Res = Result<(ExitCode, bool), PolicyError>;

fn w(out: &mut dyn Write, s: std::fmt::Arguments<'_>) -> bool {
    out.write_fmt(s).is_ok()
}

fn check(file: &Path, out: &mut dyn Write) -> Res {
    let policy = Policy::load(file)?;
    let lints = policy.lint();
    let errors = lints.iter().filter(|l| l.level == LintLevel::Error).count();
    let mut ok = true;
    for l in &lints {
        ok &= w(out, format_args!("{l}\n"));
    }
    let plan = policy.kernel_plan();
    ok &= w(
        out,
        format_args!(
            "{}: {} rules, sha256 {}, mode {:?}; kernel: {} watched binaries{}, {} credential globs{}, {} allowed CIDRs; {} errors, {} warnings\n",
            file.display(),
            policy.rules().len(),
            policy.hash(),
            policy.mode(),
            plan.watched_binaries.len(),
            if plan.watch_all_execs {
                " (all execs watched)"
            } else {
                ""
            },
            plan.credential_globs.len(),
            if plan.watch_all_opens {
                " (all opens watched)"
            } else {
                ""
            },
            plan.allowed_cidrs.len(),
            errors,
            lints.len() - errors,
        ),
    );
    Ok((ExitCode::from(u8::from(errors > 0)), ok))
}

fn explain(args: &ExplainArgs, out: &mut dyn Write) -> Res {
    let policy = Policy::load(&args.policy)?;
    let action = action_from_args(args)?;
    let decision = policy.evaluate(&action);
    let ok = match args.format {
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(&decision)
                .map_err(|e| PolicyError::BadAction(e.to_string()))?;
            w(out, format_args!("{json}\n"))
        }
        OutputFormat::Text => print_decision(&policy, &action, &decision, out),
    };
    Ok((ExitCode::SUCCESS, ok))
}

fn print_decision(policy: &Policy, action: &Action, d: &Decision, out: &mut dyn Write) -> bool {
    let mut ok = w(
        out,
        format_args!(
            "policy    {} (sha256 {}{}, mode {:?})\n",
            policy.source(),
            &policy.hash()[..16],
            policy
                .revision()
                .map(|r| format!(", revision {r}"))
                .unwrap_or_default(),
            policy.mode()
        ),
    );
    let json = serde_json::to_string(action).unwrap_or_default();
    ok &= w(out, format_args!("action    {json}\n"));
    match &d.rule_id {
        Some(id) => {
            let loc = policy
                .rules()
                .iter()
                .find(|r| r.id() == &**id)
                .map(|r| r.location().to_string())
                .unwrap_or_default();
            ok &= w(out, format_args!("rule      {id} ({loc})\n"));
        }
        None => {
            ok &= w(
                out,
                format_args!("rule      (default for {})\n", action.class),
            )
        }
    }
    ok &= w(out, format_args!("outcome   {}\n", describe(&d.outcome)));
    if let Some(r) = &d.reason {
        ok &= w(out, format_args!("reason    {r}\n"));
    }
    ok &= w(out, format_args!("severity  {:?}\n", d.severity));
    for s in &d.shadow {
        ok &= w(
            out,
            format_args!("shadow    rule {} would have: {}\n", s.rule_id, s.outcome),
        );
    }
    ok &= w(out, format_args!("effective {}\n", d.effective.kind()));
    ok
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Allow => "allow".to_owned(),
        Outcome::Deny => "deny".to_owned(),
        Outcome::Ask(a) => {
            let approvers: Vec<String> = a
                .approvers
                .iter()
                .map(|r| format!("{} x{}", r.group, r.quorum))
                .collect();
            let grant = match a.grant {
                GrantScope::Once => "once".to_owned(),
                GrantScope::Duration { max } => {
                    format!("up to {}", humantime::format_duration(max))
                }
            };
            format!(
                "ask (approvers {}, ttl {}, on timeout {:?}, grant {grant}{})",
                approvers.join(" + "),
                humantime::format_duration(a.ttl),
                a.on_timeout,
                if a.reason_required_for_approve {
                    ", reason required"
                } else {
                    ""
                }
            )
        }
    }
}

/// Split `HOST:PORT` (`[v6]:port` for IPv6).
fn host_port(s: &str) -> Result<(Option<IpAddr>, Option<String>, u16), PolicyError> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((Some(sa.ip()), None, sa.port()));
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| PolicyError::BadAction(format!("`{s}`: expected HOST:PORT")))?;
    let port = port
        .parse()
        .map_err(|_| PolicyError::BadAction(format!("`{s}`: bad port `{port}`")))?;
    Ok(match host.parse::<IpAddr>() {
        Ok(ip) => (Some(ip), None, port),
        Err(_) => (None, Some(host.to_ascii_lowercase()), port),
    })
}

/// Fill scheme, host, port, URL and S3 fields from a URL.
fn apply_url(d: &mut Destination, url: &str) -> Result<(), PolicyError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| PolicyError::BadAction(format!("`{url}`: expected SCHEME://...")))?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if scheme == "s3" {
        d.s3_bucket = Some(authority.to_owned());
        d.s3_key = (!path.is_empty()).then(|| path.to_owned());
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse().ok()),
            _ => (authority, None),
        };
        if d.hostname.is_none() && host.parse::<IpAddr>().is_err() {
            d.hostname = Some(host.to_ascii_lowercase());
        }
        d.port = d.port.or(port).or(match scheme.as_str() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        });
    }
    d.scheme = Some(scheme);
    d.url = Some(url.to_owned());
    Ok(())
}

/// Build the action `explain` was asked about.
///
/// # Errors
/// [`PolicyError::BadAction`] for malformed flags or JSON, [`PolicyError::Io`] for an
/// unreadable `--json` file.
pub fn action_from_args(a: &ExplainArgs) -> Result<Action, PolicyError> {
    if let Some(src) = &a.json {
        let text = if src.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin()
                .take(MAX_CASES_BYTES)
                .read_to_string(&mut s)
                .map_err(|source| PolicyError::Io {
                    path: src.clone(),
                    source,
                })?;
            s
        } else {
            read_limited(src, MAX_CASES_BYTES)?
        };
        return serde_json::from_str(&text)
            .map_err(|e| PolicyError::BadAction(format!("{}: {e}", src.display())));
    }
    let mut action = if let Some(bin) = &a.exec {
        Action::exec(
            bin.clone(),
            std::iter::once(bin.clone()).chain(a.args.iter().cloned()),
        )
    } else if let Some(path) = &a.open {
        Action::open(path.clone())
    } else {
        let (class, hp) = match (&a.connect, &a.send) {
            (Some(hp), _) => (ActionClass::Connect, hp),
            (None, Some(hp)) => (ActionClass::Send, hp),
            (None, None) => return Err(PolicyError::BadAction("no action given".to_owned())),
        };
        let (ip, hostname, port) = host_port(hp)?;
        let mut d = Destination {
            ip: ip.or(a.ip),
            port: Some(port),
            hostname,
            ..Destination::default()
        };
        if let Some(url) = &a.url {
            apply_url(&mut d, url)?;
        }
        Action {
            destination: Some(d),
            ..Action::new(class)
        }
    };
    if action.class != ActionClass::Exec {
        action.binary = a.binary.clone();
    }
    action.uid = a.uid;
    action.user = a.user.clone();
    action.cgroup = a.cgroup.clone();
    action.unit = a.unit.clone();
    action.parents = a
        .parent
        .iter()
        .map(|p| ParentProcess {
            pid: 0,
            binary: Some(p.clone()),
            comm: None,
        })
        .collect();
    Ok(action)
}

/// A cases file: `[[case]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    #[serde(rename = "case")]
    cases: Vec<toml::Spanned<Case>>,
}

/// One table-driven case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// Shown in the report.
    name: String,
    /// The action.
    action: Action,
    /// Expected outcome of the deciding rule.
    outcome: OutcomeKind,
    /// Expected deciding rule id; `"default"` for the class default.
    #[serde(default)]
    rule: Option<String>,
    /// Expected effective outcome (after modes).
    #[serde(default)]
    effective: Option<OutcomeKind>,
}

fn test(file: &Path, cases_path: &Path, out: &mut dyn Write) -> Res {
    let policy = Policy::load(file)?;
    let text = read_limited(cases_path, MAX_CASES_BYTES)?;
    let name = cases_path.display().to_string();
    let cases: CasesFile = toml::from_str(&text).map_err(|e| PolicyError::Parse {
        location: Location::at(&name, &text, e.span().map_or(0, |s| s.start)),
        message: e.message().to_owned(),
    })?;
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut ok = true;
    for spanned in &cases.cases {
        let case = spanned.get_ref();
        let d = policy.evaluate(&case.action);
        let got_rule = d.rule_id.as_deref().unwrap_or("default");
        let mut problems = Vec::new();
        if d.outcome.kind() != case.outcome {
            problems.push(format!(
                "outcome {} (expected {})",
                d.outcome.kind(),
                case.outcome
            ));
        }
        if let Some(rule) = &case.rule
            && rule != got_rule
        {
            problems.push(format!("rule `{got_rule}` (expected `{rule}`)"));
        }
        if let Some(eff) = case.effective
            && eff != d.effective.kind()
        {
            problems.push(format!("effective {} (expected {eff})", d.effective.kind()));
        }
        if problems.is_empty() {
            passed += 1;
            ok &= w(out, format_args!("ok    {}\n", case.name));
        } else {
            failed += 1;
            let loc = Location::at(&name, &text, spanned.span().start);
            ok &= w(
                out,
                format_args!("FAIL  {} ({loc}): got {}\n", case.name, problems.join(", ")),
            );
        }
    }
    ok &= w(out, format_args!("{passed} passed, {failed} failed\n"));
    Ok((ExitCode::from(u8::from(failed > 0)), ok))
}
