//! `airlock`: the host agent, the approval hub and the approver CLI in one binary.
use std::{path::PathBuf, process::ExitCode};

use airlock_hub::approver::{ApproverArgs, ApproverCommand};
use clap::{Parser, Subcommand};

/// airlock puts a human between an AI agent and the dangerous things it can do on a host.
///
/// `airlock run` holds watched actions of processes in the configured cgroups in the kernel
/// until an approver decides on the hub (`airlock hub serve`), using `airlock list`,
/// `watch`, `show`, `approve` and `deny`.
///
/// Exit codes: 0 success, 1 a negative answer (e.g. a request that is no longer pending),
/// 2 an error.
#[derive(Parser)]
#[command(name = "airlock", version, propagate_version = true)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `airlock_agent=debug`.
    #[arg(long, global = true, env = "AIRLOCK_LOG", default_value = "info")]
    log: String,
    #[command(flatten)]
    approver: ApproverArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host agent: hold watched actions in the kernel until the hub decides.
    Run {
        /// The agent's config file (TOML); see README "Configuration".
        #[arg(
            long,
            short,
            env = "AIRLOCK_CONFIG",
            default_value = "/etc/airlock/agent.toml"
        )]
        config: PathBuf,
    },
    /// Check that this host can run the agent (root, BPF LSM, BTF) and say why not.
    Preflight,
    /// Run the approval hub.
    #[command(subcommand)]
    Hub(HubCommand),
    /// Check, explain and test policy files.
    #[command(subcommand)]
    Policy(airlock_policy::cli::PolicyCommand),
    #[command(flatten)]
    Approver(ApproverCommand),
    /// Inspect and check the signed audit log (verify, tail, show, export, keygen).
    #[command(subcommand)]
    Audit(airlock_audit::cli::AuditCommand),
    /// Unseal the raw context of one request for an auditor; the reveal is itself audited
    /// and nothing is shown if it cannot be.
    Reveal(RevealArgs),
    /// Create an auditor key pair: PATH (private, 0600, keep it off agent hosts) and
    /// PATH.pub (for `[masking] auditor_public_key`).
    AuditorKeygen {
        /// Private key file to create.
        path: PathBuf,
    },
}

#[derive(clap::Args)]
struct RevealArgs {
    /// The request id (the audit records' correlation id).
    id: String,
    /// The auditor's private key.
    #[arg(long)]
    auditor_key: PathBuf,
    /// The agent's audit directory.
    #[arg(long, default_value = airlock_audit::cli::DEFAULT_DIR)]
    audit_dir: PathBuf,
    /// The agent's audit signing key (used only when no agent is running).
    #[arg(long, default_value = airlock_audit::cli::DEFAULT_KEY)]
    signing_key: PathBuf,
    /// Why the context is revealed (recorded). Who reveals is `--as` (default $SUDO_USER,
    /// else $USER), recorded together with the caller's uid.
    #[arg(long, default_value = "")]
    reason: String,
}

#[derive(Subcommand)]
enum HubCommand {
    /// Serve the airlock.v1 gRPC API (agents submit, approvers decide).
    Serve(airlock_hub::ServeArgs),
    /// Create the certificates of a small install (mTLS identities).
    #[command(subcommand)]
    Ca(airlock_hub::ca::CaCommand),
    /// Verify the hub's own audit chain (and print it with --json).
    Audit(airlock_hub::audit_cmd::AuditArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("airlock: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => {
            let config = airlock_agent::config::AgentConfig::load(&config)?;
            runtime()?.block_on(airlock_agent::daemon::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Preflight => {
            airlock_agent::preflight::check(&airlock_agent::preflight::HostFacts::read())?;
            println!("this host can run airlock: root, BPF LSM active, kernel BTF present");
            Ok(ExitCode::SUCCESS)
        }
        Command::Hub(HubCommand::Serve(args)) => {
            runtime()?.block_on(airlock_hub::serve(args, shutdown_signal()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(command) => Ok(airlock_policy::cli::run(command)?),
        Command::Hub(HubCommand::Audit(args)) => {
            runtime()?.block_on(airlock_hub::audit_cmd::run(&args, &mut std::io::stdout()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Hub(HubCommand::Ca(command)) => {
            airlock_hub::ca::run(&command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Approver(command) => {
            Ok(runtime()?.block_on(airlock_hub::approver::run(cli.approver, command))?)
        }
        Command::Audit(command) => Ok(airlock_audit::cli::exit_code(airlock_audit::cli::run(
            command,
        ))),
        Command::Reveal(args) => {
            let who = cli
                .approver
                .principal
                .or_else(|| std::env::var("SUDO_USER").ok())
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "unknown".to_owned());
            let request = airlock_agent::reveal::RevealRequest {
                id: args.id,
                auditor_key: args.auditor_key,
                audit_dir: args.audit_dir,
                signing_key: args.signing_key,
                who,
                reason: args.reason,
            };
            let (raw, seq) = airlock_agent::reveal::reveal(&request)?;
            println!("{}", serde_json::to_string_pretty(&raw)?);
            eprintln!("reveal recorded in the audit log as seq {seq}");
            Ok(ExitCode::SUCCESS)
        }
        Command::AuditorKeygen { path } => {
            let public = airlock_agent::reveal::public_path(&path);
            let pair = airlock_mask::AuditorKeyPair::generate()?;
            pair.save(&path, &public)?;
            println!(
                "auditor key {} written to {}; public key {}",
                pair.public.key_id(),
                path.display(),
                public.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
        }
        // Without handlers the default action (terminate) still applies.
        _ => std::future::pending().await,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
