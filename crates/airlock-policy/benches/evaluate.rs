//! Evaluation time per action with a generated 500-rule policy (target: p99 < 50 µs).
//!
//! `cargo bench -p airlock-policy --bench evaluate` prints p50 / p99 / max per action
//! class, for actions that match early, late, and not at all (a full scan of all 500
//! rules, the worst case).
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use airlock_policy::{Action, ActionClass, Destination, ParentProcess, Policy};

/// A 500-rule policy mixing every kind of condition.
fn policy_text(rules: usize) -> String {
    let mut s = String::from(
        "version = 1\n[defaults]\nexec = \"allow\"\nconnect = \"ask\"\nsend = \"ask\"\nopen = \"allow\"\n\
         [defaults.ask]\napprovers = [\"oncall\"]\n[groups.oncall]\n[groups.secops]\n",
    );
    for i in 0..rules {
        let body = match i % 10 {
            0 => format!(
                "on = [\"exec\"]\nbinary = [\"tool{i}\", \"/opt/t{i}/bin/*\"]\noutcome = \"ask\""
            ),
            1 => format!(
                "on = [\"exec\"]\nbinary = [\"cli{i}\"]\nargv = [{{ position = 1, glob = \"upload*\" }}, {{ regex = \"^--dest=s3://b{i}-\" }}]\noutcome = \"deny\""
            ),
            2 => format!(
                "on = [\"connect\", \"send\"]\nhost = [\"*.svc{i}.example.com\", \"api{i}.example.net\"]\nport = [443]\noutcome = \"allow\""
            ),
            3 => format!(
                "on = [\"connect\", \"send\"]\ncidr = [\"10.{}.{}.0/24\"]\noutcome = \"allow\"",
                i % 256,
                (i / 256) % 256
            ),
            4 => format!(
                "on = [\"open\"]\npath = [\"/srv/app{i}/secrets/**\", \"/home/*/.app{i}/token\"]\noutcome = \"ask\"\nask = {{ approvers = [\"secops\"] }}"
            ),
            5 => format!(
                "on = [\"send\"]\ns3_bucket = [\"bucket{i}-*\"]\ns3_key = [\"exports/**\"]\noutcome = \"allow\""
            ),
            6 => format!(
                "user = [\"svc{i}-*\"]\nuid = [{}]\noutcome = \"deny\"",
                10_000 + i
            ),
            7 => format!(
                "on = [\"exec\"]\nbinary = [\"runner{i}\"]\nparent = [\"python3*\", \"/usr/bin/node{i}\"]\noutcome = \"ask\""
            ),
            8 => format!(
                "unit = [\"job{i}-*.service\"]\ncgroup = [\"/system.slice/job{i}*\"]\noutcome = \"deny\""
            ),
            _ => format!(
                "on = [\"connect\"]\nscheme = [\"https\"]\nurl = [\"https://h{i}.example.org/upload/*\"]\noutcome = \"ask\""
            ),
        };
        let _ = write!(s, "\n[[rule]]\nid = \"r{i}\"\n{body}\n");
    }
    s
}

fn actions() -> Vec<(&'static str, Action)> {
    let dest = |ip: &str, host: Option<&str>| Destination {
        ip: Some(ip.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))),
        port: Some(443),
        hostname: host.map(str::to_owned),
        scheme: Some("https".to_owned()),
        url: host.map(|h| format!("https://{h}/v1/data")),
        ..Destination::default()
    };
    let who = |mut a: Action| {
        a.uid = Some(1000);
        a.user = Some("dev".to_owned());
        a.cgroup = Some("/user.slice/user-1000.slice/session-3.scope".to_owned());
        a.unit = Some("session-3.scope".to_owned());
        a.parents = vec![
            ParentProcess {
                pid: 42,
                binary: Some("/usr/bin/python3.11".to_owned()),
                comm: Some("python3".to_owned()),
            },
            ParentProcess {
                pid: 1,
                binary: Some("/usr/lib/systemd/systemd".to_owned()),
                comm: Some("systemd".to_owned()),
            },
        ];
        a
    };
    vec![
        (
            "exec, early match",
            who(Action::exec("/usr/local/bin/tool0", ["tool0", "run"])),
        ),
        (
            "exec, late match",
            who(Action::exec("/usr/local/bin/tool490", ["tool490", "run"])),
        ),
        (
            "exec, no match (full scan)",
            who(Action::exec(
                "/usr/bin/git",
                ["git", "push", "origin", "--force", "--dest=s3://nothing"],
            )),
        ),
        (
            "connect, late host match",
            who(Action::connect(dest(
                "203.0.113.5",
                Some("x.svc492.example.com"),
            ))),
        ),
        (
            "connect, no match (full scan)",
            who(Action::connect(dest(
                "203.0.113.5",
                Some("unknown.example.org"),
            ))),
        ),
        (
            "open, no match (full scan)",
            who(Action::open("/home/dev/project/src/main.rs")),
        ),
        (
            "open, late match",
            who(Action::open("/srv/app494/secrets/db/password")),
        ),
        (
            "send, no match (full scan)",
            who(Action {
                destination: Some(Destination {
                    s3_bucket: Some("other".to_owned()),
                    s3_key: Some("exports/a.csv".to_owned()),
                    ..dest("52.216.1.1", Some("s3.amazonaws.com"))
                }),
                ..Action::new(ActionClass::Send)
            }),
        ),
    ]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() {
    let text = policy_text(500);
    let t = Instant::now();
    let policy = Policy::from_str("bench.toml", &text).expect("generated policy loads");
    let load = t.elapsed();
    let t = Instant::now();
    let plan = policy.kernel_plan();
    let plan_time = t.elapsed();
    println!(
        "policy: {} rules, {} bytes; load+compile {:?}; kernel plan {:?} ({} binaries, {} globs, {} CIDRs)",
        policy.rules().len(),
        text.len(),
        load,
        plan_time,
        plan.watched_binaries.len(),
        plan.credential_globs.len(),
        plan.allowed_cidrs.len()
    );
    const ITERS: usize = 20_000;
    let mut all = Vec::with_capacity(ITERS * 8);
    println!(
        "{:<32} {:>10} {:>10} {:>10}  decision",
        "action", "p50", "p99", "max"
    );
    for (name, action) in actions() {
        for _ in 0..1000 {
            black_box(policy.evaluate(black_box(&action)));
        }
        let mut times = Vec::with_capacity(ITERS);
        for _ in 0..ITERS {
            let t = Instant::now();
            let d = policy.evaluate(black_box(&action));
            times.push(t.elapsed());
            black_box(d);
        }
        times.sort_unstable();
        let d = policy.evaluate(&action);
        println!(
            "{name:<32} {:>10.2?} {:>10.2?} {:>10.2?}  {} by {}",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1],
            d.outcome.kind(),
            d.rule_id.as_deref().unwrap_or("default")
        );
        all.extend(times);
    }
    all.sort_unstable();
    let p99 = percentile(&all, 0.99);
    println!(
        "all actions: p50 {:.2?}, p99 {:.2?}, max {:.2?} over {} evaluations; target p99 < 50 µs: {}",
        percentile(&all, 0.5),
        p99,
        all[all.len() - 1],
        all.len(),
        if p99 < Duration::from_micros(50) {
            "met"
        } else {
            "MISSED"
        }
    );
}
