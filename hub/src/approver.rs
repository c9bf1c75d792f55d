//! The approver CLI (`airlock approver ...`): list, watch, show, approve, deny.
//!
//! A library module so the single `airlock` binary only parses and dispatches. Exit codes
//! follow ripgrep: 0 ok, 1 negative result (the request is not pending, not found), 2 error
//! (hub unreachable, bad input). `--json` prints the serde types of [`output`], one object
//! per line; negative results and errors go to stderr as one sentence in both modes.
//! A closed stdout (`airlock approver watch | head`) ends the command with 0.

mod decide;
mod list;
pub mod output;
mod show;
mod watch;

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use airlock_proto::v1::approver_service_client::ApproverServiceClient;
use airlock_proto::v1::{ApprovalRequest, GetRequest};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::identity::{ClientIdentity, IdentityError, Role};

/// How long to wait for the TCP/HTTP2 connection to the hub.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Options shared by every approver subcommand.
#[derive(Clone, Debug, clap::Args)]
pub struct ApproverArgs {
    /// URL of the approval hub.
    #[arg(
        long,
        global = true,
        env = "AIRLOCK_HUB",
        default_value = "http://127.0.0.1:7443"
    )]
    pub hub: String,
    /// Principal to act as [default: $SUDO_USER, else $USER, else $LOGNAME].
    ///
    /// Under sudo the invoking user is the human deciding, so SUDO_USER comes first.
    #[arg(
        long = "as",
        global = true,
        env = "AIRLOCK_PRINCIPAL",
        value_name = "PRINCIPAL"
    )]
    pub principal: Option<String>,
    /// Approver groups to claim (dev identity mode only), comma-separated.
    #[arg(long, global = true, env = "AIRLOCK_GROUPS", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Print JSON, one object per line, instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// CA certificate the hub's certificate chains to (PEM); with an https:// hub.
    #[arg(
        long = "ca-cert",
        global = true,
        env = "AIRLOCK_CA_CERT",
        value_name = "PEM"
    )]
    pub ca: Option<std::path::PathBuf>,
    /// Your client certificate (PEM), naming `airlock:approver/<you>`.
    #[arg(
        long = "client-cert",
        global = true,
        env = "AIRLOCK_CLIENT_CERT",
        value_name = "PEM"
    )]
    pub cert: Option<std::path::PathBuf>,
    /// Your client key (PEM).
    #[arg(
        long = "client-key",
        global = true,
        env = "AIRLOCK_CLIENT_KEY",
        value_name = "PEM"
    )]
    pub key: Option<std::path::PathBuf>,
}

/// Which requests `list` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StateFilter {
    /// Waiting for a decision.
    Pending,
    /// Approved by approvers.
    Approved,
    /// Denied by an approver.
    Denied,
    /// Ran out of time.
    Expired,
    /// Withdrawn by the agent.
    Cancelled,
    /// Every state.
    All,
}

/// Narrowing filters of `list`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ListBy {
    /// Only requests submitted by this agent principal.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only requests on behalf of this user.
    #[arg(long)]
    pub requester: Option<String>,
    /// Only requests from this host.
    #[arg(long)]
    pub host: Option<String>,
}

/// Approver subcommands.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum ApproverCommand {
    /// List requests, newest first.
    List {
        /// Which requests to show.
        #[arg(long, value_enum, default_value = "pending")]
        state: StateFilter,
        /// At most this many (the hub caps it at 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        by: ListBy,
    },
    /// Pending requests as a live table on a terminal (new ones highlighted, time left);
    /// otherwise one line per pending, new or changed request, until interrupted.
    Watch,
    /// Show the full (masked) context of one request.
    Show {
        /// Request id or a unique prefix of it (at least 4 characters).
        id: String,
    },
    /// Approve a request: once, or for a duration with --for.
    Approve {
        /// Request id or a unique prefix of it (at least 4 characters).
        id: String,
        /// Why (some rules require it).
        #[arg(long)]
        reason: Option<String>,
        /// Grant the same exact action for this long (e.g. 1h, 30m) instead of once.
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
    /// Deny a request.
    Deny {
        /// Request id or a unique prefix of it (at least 4 characters).
        id: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
}

/// Why an approver command failed (exit code 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApproverError {
    /// `--hub` is not a usable URL.
    #[error("invalid hub URL {url:?}: {reason}")]
    InvalidHubUrl {
        /// The URL given.
        url: String,
        /// Why it is unusable.
        reason: String,
    },
    /// The hub could not be reached.
    #[error("cannot reach the hub at {hub}: {cause}")]
    Unreachable {
        /// The hub URL.
        hub: String,
        /// Innermost cause, e.g. "Connection refused (os error 111)".
        cause: String,
    },
    /// The hub refused or failed the call.
    #[error("the hub refused to {action}: {message}")]
    Refused {
        /// What was attempted ("approve 1a2b3c4d").
        action: String,
        /// The hub's message.
        message: String,
        /// The gRPC code.
        code: Code,
    },
    /// No principal was given and none could be found in the environment.
    #[error("cannot tell who you are: pass --as PRINCIPAL or set AIRLOCK_PRINCIPAL")]
    NoPrincipal,
    /// The principal or a group cannot be sent to the hub.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A duration grant is zero or too long.
    #[error("--for must be between 1 second and {max} seconds")]
    InvalidDuration {
        /// Largest number of seconds accepted.
        max: u32,
    },
    /// A certificate file could not be read, or the three TLS flags are incomplete.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// Writing the output failed.
    #[error("cannot write output")]
    Output(#[source] io::Error),
    /// JSON encoding failed.
    #[error("cannot encode JSON output")]
    Json(#[from] serde_json::Error),
}

/// What a subcommand found.
pub(crate) enum Outcome {
    /// Exit 0.
    Done,
    /// Exit 1, after saying why on stderr.
    Negative(String),
}

type Client = ApproverServiceClient<InterceptedService<Channel, ClientIdentity>>;

/// A connected session: client plus output settings.
pub(crate) struct Session<'w, W: Write + Send> {
    client: Client,
    hub: String,
    json: bool,
    /// Redraw `watch` as a live table (stdout is a terminal, no --json).
    live: bool,
    out: &'w mut W,
}

impl<W: Write + Send> Session<'_, W> {
    /// Writes one line of output.
    fn line(&mut self, text: &str) -> Result<(), ApproverError> {
        writeln!(self.out, "{text}")
            .and_then(|()| self.out.flush())
            .map_err(ApproverError::Output)
    }

    /// Writes one JSON object as a line.
    fn json_line<T: serde::Serialize>(&mut self, value: &T) -> Result<(), ApproverError> {
        let text = serde_json::to_string(value)?;
        self.line(&text)
    }

    /// Turns a gRPC failure into an outcome (negative result) or an error.
    fn status(&self, action: String, status: &Status) -> Result<Outcome, ApproverError> {
        match status.code() {
            Code::NotFound | Code::FailedPrecondition => Ok(Outcome::Negative(format!(
                "cannot {action}: {}",
                status.message()
            ))),
            Code::Unavailable => Err(ApproverError::Unreachable {
                hub: self.hub.clone(),
                cause: status.message().to_owned(),
            }),
            code => Err(ApproverError::Refused {
                action,
                message: status.message().to_owned(),
                code,
            }),
        }
    }

    /// The request an id or unique prefix names.
    async fn resolve(
        &mut self,
        id: &str,
    ) -> Result<Result<ApprovalRequest, Outcome>, ApproverError> {
        match self.client.get(GetRequest { id: id.to_owned() }).await {
            Ok(resp) => Ok(resp
                .into_inner()
                .request
                .ok_or_else(|| Outcome::Negative(format!("request {id} not found")))),
            Err(status) => self.status(format!("find request {id}"), &status).map(Err),
        }
    }
}

/// The principal to act as: `--as`/`AIRLOCK_PRINCIPAL`, else `SUDO_USER`, `USER`, `LOGNAME`.
fn principal(args: &ApproverArgs) -> Result<String, ApproverError> {
    if let Some(p) = &args.principal {
        return Ok(p.clone());
    }
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
        .ok_or(ApproverError::NoPrincipal)
}

/// The innermost error message of a chain ("Connection refused (os error 111)").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

async fn connect(args: &ApproverArgs) -> Result<Client, ApproverError> {
    let mut endpoint = Endpoint::from_shared(args.hub.clone())
        .map_err(|e| ApproverError::InvalidHubUrl {
            url: args.hub.clone(),
            reason: root_cause(&e),
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    let identity = match (&args.ca, &args.cert, &args.key) {
        (Some(ca), Some(cert), Some(key)) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p)
                    .map_err(|e| ApproverError::Tls(format!("cannot read {}: {e}", p.display())))
            };
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(ca)?))
                .identity(Identity::from_pem(read(cert)?, read(key)?));
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ApproverError::Tls(root_cause(&e)))?;
            // The certificate is the identity; --as and --groups are dev-mode only.
            ClientIdentity::certificate()
        }
        (None, None, None) => {
            ClientIdentity::new(&principal(args)?, Role::Approver)?.with_groups(&args.groups)?
        }
        _ => {
            return Err(ApproverError::Tls(
                "--ca-cert, --client-cert and --client-key go together".to_owned(),
            ));
        }
    };
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ApproverError::Unreachable {
            hub: args.hub.clone(),
            cause: root_cause(&e),
        })?;
    Ok(ApproverServiceClient::with_interceptor(channel, identity))
}

/// Runs one approver command, printing to stdout.
///
/// # Errors
///
/// [`ApproverError`] for everything that should exit 2; negative results (a request
/// not found or no longer pending) are reported on stderr and return exit code 1.
pub async fn run(args: ApproverArgs, cmd: ApproverCommand) -> Result<ExitCode, ApproverError> {
    let live = !args.json && io::IsTerminal::is_terminal(&io::stdout());
    run_session(args, cmd, &mut io::stdout(), live).await
}

/// Runs one approver command, printing to `out` (tests capture it).
///
/// # Errors
///
/// As [`run`].
pub async fn run_with_output<W: Write + Send>(
    args: ApproverArgs,
    cmd: ApproverCommand,
    out: &mut W,
) -> Result<ExitCode, ApproverError> {
    run_session(args, cmd, out, false).await
}

async fn run_session<W: Write + Send>(
    args: ApproverArgs,
    cmd: ApproverCommand,
    out: &mut W,
    live: bool,
) -> Result<ExitCode, ApproverError> {
    let client = connect(&args).await?;
    let mut session = Session {
        client,
        hub: args.hub.clone(),
        json: args.json,
        live,
        out,
    };
    let result = match cmd {
        ApproverCommand::List { state, limit, by } => {
            list::run(&mut session, state, limit, by).await
        }
        ApproverCommand::Watch => watch::run(&mut session).await,
        ApproverCommand::Show { id } => show::run(&mut session, &id).await,
        ApproverCommand::Approve {
            id,
            reason,
            duration,
        } => decide::approve(&mut session, &id, reason.unwrap_or_default(), duration).await,
        ApproverCommand::Deny { id, reason } => decide::deny(&mut session, &id, reason).await,
    };
    match result {
        Ok(Outcome::Done) => Ok(ExitCode::SUCCESS),
        Ok(Outcome::Negative(why)) => {
            eprintln!("{}", output::printable(&why));
            Ok(ExitCode::from(1))
        }
        // Like ripgrep: the reader went away (`| head`), which is not a failure.
        Err(ApproverError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ApproverArgs,
        #[command(subcommand)]
        cmd: ApproverCommand,
    }

    #[test]
    fn deny_requires_a_reason_and_flags_are_global() {
        assert!(Cli::try_parse_from(["x", "deny", "abcd"]).is_err());
        let cli = Cli::try_parse_from([
            "x", "deny", "abcd", "--reason", "no", "--json", "--as", "bob",
        ])
        .unwrap();
        assert!(cli.args.json);
        assert_eq!(cli.args.principal.as_deref(), Some("bob"));
        let cli = Cli::try_parse_from(["x", "approve", "abcd", "--for", "1h"]).unwrap();
        assert!(matches!(
            cli.cmd,
            ApproverCommand::Approve { duration: Some(d), .. } if d == Duration::from_secs(3600)
        ));
    }
}
