//! `cargo xtask demo`: hub + agent + a scripted "AI agent" whose `aws s3 cp` waits for a
//! human. The scenario itself is the readable shell script `demo/run.sh`; this module only
//! prepares the machine and decides where it runs: natively on a BPF LSM host, otherwise in
//! the test VM with the hub's port forwarded to this host's loopback, so `airlock approve`
//! from a second terminal here works either way.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    paths,
    test::{build_airlock, host_has_bpf_lsm},
    vm::{self, Forward, GuestSpec, Kernel},
};

/// The hub's port in the demo (in the VM, and forwarded to this host's loopback).
const HUB_PORT: u16 = 7443;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Approve automatically, as a scripted approver on this host (what CI runs). Without
    /// it, the demo waits for you to approve from another terminal.
    #[arg(long)]
    pub scripted: bool,
    /// Kernel to boot when this host has no BPF LSM.
    #[arg(long, default_value = "6.12")]
    pub kernel: Kernel,
    /// Host loopback port the hub is reachable on.
    #[arg(long, default_value_t = HUB_PORT)]
    pub port: u16,
    /// Skip `cargo xtask setup` (it is idempotent and takes a few seconds when done).
    #[arg(long)]
    pub no_setup: bool,
}

impl Options {
    /// The non-interactive variant `cargo xtask test` runs.
    pub fn scripted() -> Self {
        Self {
            scripted: true,
            kernel: Kernel::V6_12,
            port: HUB_PORT,
            no_setup: true,
        }
    }
}

pub fn run(opts: &Options) -> Result<()> {
    if !opts.no_setup {
        crate::setup::run(&crate::setup::Options::default()).context("cargo xtask setup")?;
    }
    let airlock = build_airlock()?;
    let aws = paths::resolve_tool("aws")
        .context("the demo needs the aws CLI (cargo xtask setup installs it)")?;
    let moto = paths::resolve_tool("moto_server")
        .context("the demo needs moto_server (cargo xtask setup installs it)")?;
    let script = paths::workspace_root().join("demo/run.sh");
    let env = [
        ("AIRLOCK", airlock.display().to_string()),
        ("AWS", aws.display().to_string()),
        ("MOTO", moto.display().to_string()),
    ];
    let native = host_has_bpf_lsm();
    let hub_url = if native {
        format!("http://127.0.0.1:{HUB_PORT}")
    } else {
        format!("http://127.0.0.1:{}", opts.port)
    };
    println!("demo: the hub will be reachable at {hub_url}; approve from another terminal with");
    println!("    {} --hub {hub_url} --as alice watch", airlock.display());
    println!(
        "    {} --hub {hub_url} --as alice approve <ID>",
        airlock.display()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let approver = opts.scripted.then(|| {
        let (stop, airlock, url) = (stop.clone(), airlock.clone(), hub_url.clone());
        let aws = aws.display().to_string();
        thread::spawn(move || scripted_approver(&airlock, &url, &aws, &stop))
    });

    let result = if native {
        let mut cmd = Command::new("sh");
        cmd.arg(&script).envs(env.iter().cloned());
        crate::util::run_status(&mut cmd).context("the demo script failed")
    } else {
        println!(
            "demo: this kernel does not run BPF LSM, so the demo runs in the test VM (Linux {})",
            opts.kernel.label()
        );
        let mut spec = GuestSpec::new(opts.kernel, ["sh".to_owned(), script.display().to_string()]);
        spec.cwd = paths::workspace_root();
        spec.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        spec.env.push(("DEMO_BRIDGE".into(), "1".into()));
        spec.forwards = vec![Forward {
            host_addr: [127, 0, 0, 1].into(),
            host_port: opts.port,
            guest_port: HUB_PORT,
        }];
        spec.timeout = Duration::from_secs(1200);
        let outcome = vm::run_in_guest(&spec)?;
        if outcome.exit_code == 0 {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "the demo script exited with {}",
                outcome.exit_code
            ))
        }
    };
    stop.store(true, Ordering::SeqCst);
    let approvals = approver.map(|h| {
        h.join()
            .unwrap_or(Err(anyhow::anyhow!("approver thread panicked")))
    });
    result?;
    if let Some(approvals) = approvals {
        let approvals = approvals?;
        // One human decision per intent: the export must have needed exactly one approval.
        if approvals != 1 {
            bail!("the scripted approver approved {approvals} requests; exactly one was expected");
        }
        println!("demo: the scripted approver approved exactly one request, from this host");
    }
    Ok(())
}

/// Polls the hub like a person at a terminal would, approving pending `aws` execs. Returns
/// how many it approved.
fn scripted_approver(
    airlock: &std::path::Path,
    hub: &str,
    aws: &str,
    stop: &AtomicBool,
) -> Result<u32> {
    let mut approved = 0;
    while !stop.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_secs(1));
        let Ok(out) = Command::new(airlock)
            .args(["--hub", hub, "--as", "alice", "--json", "list"])
            .output()
        else {
            continue;
        };
        if !out.status.success() {
            continue; // the hub is not up yet
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(request) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let id = request["id"].as_str().unwrap_or_default();
            let is_export = request.to_string().contains(aws);
            if id.is_empty() || !is_export {
                continue;
            }
            println!("demo: scripted approver (alice, on this host) approves {id}");
            let status = Command::new(airlock)
                .args([
                    "--hub",
                    hub,
                    "--as",
                    "alice",
                    "approve",
                    id,
                    "--reason",
                    "demo: scripted approver",
                ])
                .status()
                .context("running airlock approve")?;
            if status.success() {
                approved += 1;
            }
        }
    }
    Ok(approved)
}
