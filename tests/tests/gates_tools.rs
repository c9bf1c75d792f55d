//! Issue #3 with the real tools: the `aws` CLI against moto's S3, curl and Python
//! (urllib, requests) over HTTP and HTTPS, and `pg_dump` against a real PostgreSQL. Each
//! is held, then approved (it completes with the right data) or denied (it fails cleanly
//! and nothing was written), and the number of requests the human saw per task is exact.
//!
//! The servers run outside the scope cgroup (in the test runner) on [`HELD_V4`], an address
//! outside the egress allow list, so only the tool under test meets the gates.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use airlock_proto::v1::{ActionClass, RequestState};
use airlock_tests::{
    gates::{
        GateOptions, GateSetup, HELD_V4, actor, destination, finish, finish_within, runtime,
        stdout, wait_stopped,
    },
    process::{self, spawn_held},
    tools::{Moto, Postgres, STARTUP, TestCa, WebServer, aws, aws_env, test_bytes, tool},
};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Allow uploads to `reports-*` buckets; ask on-call about any other connection.
const S3_POLICY: &str = r#"version = 1
[defaults]
exec = "allow"
open = "allow"
connect = "ask"
send = "ask"
[defaults.ask]
approvers = ["oncall"]
ttl = "2m"
[groups.oncall]
description = "on-call"

[[rule]]
id = "reports-buckets"
on = ["connect"]
s3_bucket = ["reports-*"]
outcome = "allow"
"#;

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn aws_s3_cp_is_allowed_by_bucket_or_held_with_bucket_and_key() {
    let policy_dir = tempfile::tempdir().expect("tempdir");
    let policy = policy_dir.path().join("policy.toml");
    std::fs::write(&policy, S3_POLICY).expect("policy");
    let s = GateSetup::start_opts(
        "tools-aws-egress",
        &GateOptions {
            extra_egress: "hold_at = \"first-send\"\n",
            watch: Some(vec![]),
            policy: Some(&policy),
        },
        |_, _| {},
    );
    let dir = s.dir.path();
    let moto = Moto::start(HELD_V4, dir);
    moto.create_bucket("reports-x");
    moto.create_bucket("other");
    let source = dir.join("q3-report.bin");
    let data = test_bytes(48 * 1024);
    std::fs::write(&source, &data).expect("source file");
    let src = source.to_str().expect("utf8");
    let cp = |target: &str| {
        process::spawn_in(
            &s.cgroup.path,
            &mut aws(dir, &moto.endpoint, &["s3", "cp", src, target]),
        )
    };

    // 1. A reports-* bucket: the policy allows it in the agent, no human is asked.
    let (out, asked) = s.decide_until_exit(cp("s3://reports-x/2026/q3.bin"), false, "oncall");
    assert!(out.status.success(), "aws failed: {}", stderr(&out));
    assert_eq!(
        asked.len(),
        0,
        "prompts for an allowed bucket: {:?}",
        asked.iter().map(destination).collect::<Vec<_>>()
    );
    assert_eq!(
        moto.object("reports-x", "2026/q3.bin").as_deref(),
        Some(&data[..]),
        "the object equals the source file"
    );

    // 2. Another bucket: held with bucket and key named, nothing stored until approved.
    let child = cp("s3://other/approved.bin");
    // The aws CLI loads its service models before it sends: a minute or more under TCG.
    let request = s.request_within(ActionClass::Connect, 0, &[], STARTUP);
    let dest = destination(&request);
    assert_eq!(
        (
            dest.bucket.as_str(),
            dest.key.as_str(),
            dest.address.as_str()
        ),
        ("other", "approved.bin", HELD_V4),
        "{dest:?}"
    );
    assert_eq!(
        moto.object("other", "approved.bin"),
        None,
        "nothing stored while held"
    );
    s.hub
        .cli_ok("alice", &["--groups", "oncall", "approve", &request.id]);
    let (out, more) = s.decide_until_exit(child, true, "oncall");
    assert!(out.status.success(), "aws failed: {}", stderr(&out));
    assert_eq!(
        1 + more.len(),
        1,
        "prompts for one approved upload (more: {:?})",
        more.iter().map(destination).collect::<Vec<_>>()
    );
    assert_eq!(
        moto.object("other", "approved.bin").as_deref(),
        Some(&data[..]),
        "the approved object equals the source file byte for byte"
    );

    // 3. Denied: the upload fails, nothing is stored. botocore retries a failed send; each
    //    retry is a new connection and asks again, until its attempts run out.
    let (out, asked) = s.decide_until_exit(cp("s3://other/denied.bin"), false, "oncall");
    assert!(!out.status.success(), "a denied upload must fail: {out:?}");
    assert!(
        stderr(&out).contains("Operation not permitted")
            || stderr(&out).contains("Connection was closed"),
        "{}",
        stderr(&out)
    );
    assert!(asked.iter().all(|r| {
        let d = destination(r);
        d.bucket == "other" && d.key == "denied.bin"
    }));
    // The agent answers the same process repeating the denied action without asking.
    let repeats = s
        .agent
        .audit_records()
        .iter()
        .filter(|r| r["kind"] == "decision" && r.to_string().contains("denied moments ago"))
        .count();
    eprintln!(
        "prompts for one denied upload: {}; retries denied without asking: {repeats}",
        asked.len()
    );
    assert_eq!(asked.len(), 1, "prompts for one denied upload");
    assert!(repeats >= 1, "botocore retried the refused send");
    assert_eq!(moto.object("other", "denied.bin"), None);
}

/// A client invocation: program + args + environment.
struct Client {
    name: &'static str,
    cmd: Command,
}

fn clients(url: &str, ca: &Path) -> Vec<Client> {
    let python = tool("python3");
    let mut curl = Command::new("/usr/bin/curl");
    curl.args(["-sS", "--fail", "--cacert"]).arg(ca).arg(url);
    let mut urllib = Command::new(&python);
    urllib
        .args([
            "-c",
            "import sys, urllib.request\n\
             sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=900).read())",
            url,
        ])
        .env("SSL_CERT_FILE", ca);
    let mut requests = Command::new(&python);
    requests
        .args([
            "-c",
            "import sys, requests\n\
             r = requests.get(sys.argv[1], timeout=900)\n\
             r.raise_for_status()\n\
             sys.stdout.buffer.write(r.content)",
            url,
        ])
        .env("REQUESTS_CA_BUNDLE", ca);
    vec![
        Client {
            name: "curl",
            cmd: curl,
        },
        Client {
            name: "urllib",
            cmd: urllib,
        },
        Client {
            name: "requests",
            cmd: requests,
        },
    ]
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn curl_urllib_and_requests_over_http_and_https_are_held_at_connect() {
    let s = GateSetup::start("tools-http", |_, _| {});
    let dir = s.dir.path();
    let ca = TestCa::generate(dir, &[HELD_V4]);
    let body: Vec<u8> = (0..4000).map(|i| b"airlock-served-body-"[i % 20]).collect();
    let plain = WebServer::start(HELD_V4, None, body.clone());
    let tls = WebServer::start(HELD_V4, Some(ca.server.clone()), body.clone());
    for (scheme, server) in [("http", &plain), ("https", &tls)] {
        for approve in [true, false] {
            let url = format!("https://{HELD_V4}:{}/export/{approve}", server.port);
            let url = url.replacen("https", scheme, 1);
            for mut client in clients(&url, &ca.ca_pem) {
                let what = format!("{} {scheme} approve={approve}", client.name);
                let (accepted, seen) = (server.accepted(), server.requests().len());
                let child = process::spawn_in(&s.cgroup.path, &mut client.cmd);
                let request = s.request_within(ActionClass::Connect, child.id(), &[], STARTUP);
                let dest = destination(&request);
                assert_eq!(
                    (dest.address.as_str(), dest.port),
                    (HELD_V4, u32::from(server.port)),
                    "{what}"
                );
                wait_stopped(child.id());
                assert_eq!(
                    server.accepted(),
                    accepted,
                    "{what}: no connection while held"
                );
                if approve {
                    s.approve(&request);
                } else {
                    s.deny(&request);
                }
                let pid = child.id();
                let out = finish(child);
                let asked = s
                    .requests()
                    .iter()
                    .filter(|r| {
                        r.action
                            .as_ref()
                            .and_then(|a| a.actor.as_ref())
                            .is_some_and(|p| p.pid == pid)
                    })
                    .count();
                assert_eq!(asked, 1, "{what}: one prompt");
                if approve {
                    assert!(out.status.success(), "{what}: {}", stderr(&out));
                    assert_eq!(out.stdout, body, "{what}: the served body");
                    assert_eq!(server.requests().len(), seen + 1, "{what}");
                    assert!(
                        server
                            .requests()
                            .last()
                            .is_some_and(|l| l.starts_with(&format!("GET /export/{approve} "))),
                        "{what}: {:?}",
                        server.requests()
                    );
                } else {
                    assert!(!out.status.success(), "{what} must fail");
                    assert!(out.stdout.is_empty(), "{what}: no body");
                    let err = stderr(&out);
                    if client.name == "curl" {
                        // CURLE_COULDNT_CONNECT
                        assert_eq!(out.status.code(), Some(7), "{what}: {err}");
                    } else {
                        assert!(
                            err.contains("[Errno 1] Operation not permitted"),
                            "{what}: {err}"
                        );
                    }
                    assert_eq!(server.accepted(), accepted, "{what}: never connected");
                    assert_eq!(server.requests().len(), seen, "{what}: no request");
                }
            }
        }
    }
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn pg_dump_is_held_with_its_argv() {
    let pg_dump = Postgres::bin_dir().join("pg_dump");
    let s = GateSetup::start_opts(
        "tools-pg-dump",
        &GateOptions {
            watch: Some(vec![pg_dump.clone()]),
            ..GateOptions::default()
        },
        |_, _| {},
    );
    let pg_dir = tempfile::tempdir().expect("tempdir");
    let pg = Postgres::start(
        pg_dir.path(),
        "CREATE TABLE customers (id int PRIMARY KEY, name text, card text);\
         INSERT INTO customers VALUES (1, 'Ada Lovelace', '4111-0001'), (2, 'Alan Turing', '4111-0002');",
    );
    assert_eq!(pg.psql("SELECT count(*) FROM customers").trim(), "2");
    let port = pg.port.to_string();
    let socket = pg.socket_dir.display().to_string();
    let dump_args = |out: &Path| -> Vec<String> {
        [
            "-h",
            &socket,
            "-p",
            &port,
            "-U",
            "postgres",
            "-t",
            "customers",
            "-f",
            out.to_str().expect("utf8"),
            "postgres",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
    };

    // Approved, through Debian's /usr/bin/pg_dump wrapper (as a user types it): the real
    // pg_dump's exec is held with its argv, then the dump holds the rows.
    let approved = s.dir.path().join("approved.sql");
    let args = dump_args(&approved);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let spawned = spawn_held(Path::new("/usr/bin/pg_dump"), &arg_refs, &s.cgroup.path);
    let request = s.request_for(ActionClass::Exec, 0);
    let action = request.action.clone().expect("action");
    assert_eq!(PathBuf::from(&action.binary), pg_dump, "{action:?}");
    assert_eq!(&action.argv[1..], &args[..], "the held argv");
    assert!(!approved.exists(), "nothing written while held");
    s.approve(&request);
    let out = finish(spawned.join().expect("thread").expect("spawn"));
    assert!(out.status.success(), "pg_dump failed: {}", stderr(&out));
    let dump = std::fs::read_to_string(&approved).expect("dump file");
    for row in ["1\tAda Lovelace\t4111-0001", "2\tAlan Turing\t4111-0002"] {
        assert!(dump.contains(row), "row {row:?} missing from the dump");
    }
    assert!(dump.contains("CREATE TABLE public.customers"));

    // Denied, the real binary run directly: the exec fails with EPERM, no dump file.
    let denied = s.dir.path().join("denied.sql");
    let args = dump_args(&denied);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let spawned = spawn_held(&pg_dump, &arg_refs, &s.cgroup.path);
    let request = s.request_for_except(ActionClass::Exec, 0, &[&request.id]);
    assert_eq!(
        &request.action.as_ref().expect("action").argv[1..],
        &args[..]
    );
    s.deny(&request);
    let err = spawned
        .join()
        .expect("thread")
        .expect_err("a denied exec fails in spawn");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    assert!(!denied.exists(), "no dump file");

    // Denied through the wrapper: it reports the failed exec (Debian's pg_wrapper then
    // exits 0 — its `exec` failure is not fatal — so a caller must read stderr).
    let wrapped = s.dir.path().join("wrapped.sql");
    let args = dump_args(&wrapped);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = s.spawn(Path::new("/usr/bin/pg_dump"), &arg_refs);
    let (out, asked) = s.decide_until_exit(child, false, "");
    assert_eq!(asked.len(), 1, "one prompt");
    assert!(stderr(&out).contains("Operation not permitted"), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(!wrapped.exists(), "no dump file");
    assert_eq!(s.count(ActionClass::Exec), 3);
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn aws_through_python_sh_and_env_is_held_with_its_argv() {
    let aws_bin = tool("aws");
    let s = GateSetup::start_opts(
        "tools-aws-exec",
        &GateOptions {
            watch: Some(vec![aws_bin.clone()]),
            ..GateOptions::default()
        },
        |_, _| {},
    );
    let dir = s.dir.path().to_owned();
    // On loopback, which the egress gate lets through: only the exec is held here.
    let moto = Moto::start("127.0.0.1", &dir);
    moto.create_bucket("exports");
    let source = dir.join("export.bin");
    let data = test_bytes(20 * 1024);
    std::fs::write(&source, &data).expect("source");
    let src = source.to_str().expect("utf8").to_owned();
    let argv = |key: &str| -> Vec<String> {
        [
            "aws",
            "--endpoint-url",
            &moto.endpoint,
            "s3",
            "cp",
            &src,
            &format!("s3://exports/{key}"),
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
    };
    // The guest PATH has the real pyenv bin (not its shims), as a user's shell would.
    let path = format!(
        "{}:/usr/bin:/bin",
        aws_bin.parent().expect("bin dir").display()
    );
    let python = tool("python3");
    let cases: Vec<(&str, Vec<String>, bool)> = vec![
        (
            "python",
            vec![
                python.display().to_string(),
                "-c".into(),
                format!(
                    "import subprocess, sys; sys.exit(subprocess.run({:?}).returncode)",
                    argv("python")
                ),
            ],
            true,
        ),
        (
            "sh",
            vec!["/bin/sh".into(), "-c".into(), argv("sh").join(" ")],
            false,
        ),
        (
            "env",
            [vec!["/usr/bin/env".to_owned()], argv("env")].concat(),
            true,
        ),
        (
            "python-denied",
            vec![
                python.display().to_string(),
                "-c".into(),
                format!(
                    "import subprocess, sys; sys.exit(subprocess.run({:?}).returncode)",
                    argv("python-denied")
                ),
            ],
            false,
        ),
    ];
    let mut seen: Vec<String> = Vec::new();
    for (key, cmd, approve) in cases {
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..]).env("PATH", &path);
        aws_env(&mut c, &dir);
        let child = process::spawn_in(&s.cgroup.path, &mut c);
        let want = argv(key);
        let request = runtime().block_on(async {
            s.hub
                .approver("alice")
                .await
                .watch_for(STARTUP, |r| {
                    r.state == RequestState::Pending as i32
                        && !seen.contains(&r.id)
                        && r.action
                            .as_ref()
                            .is_some_and(|a| a.class == ActionClass::Exec as i32)
                })
                .await
        });
        let action = request.action.clone().expect("action");
        assert_eq!(action.argv, want, "{key}: the held argv");
        assert_eq!(PathBuf::from(&action.binary), aws_bin, "{key}");
        assert_eq!(
            moto.object("exports", key),
            None,
            "{key}: nothing while held"
        );
        seen.push(request.id.clone());
        if approve {
            s.approve(&request);
        } else {
            s.deny(&request);
        }
        // The aws CLI loads its service models at start: tens of seconds under TCG.
        let out = finish_within(child, STARTUP);
        if approve {
            assert!(out.status.success(), "{key}: {}", stderr(&out));
            assert!(stdout(&out).contains("upload:"), "{key}: {}", stdout(&out));
            assert_eq!(
                moto.object("exports", key).as_deref(),
                Some(&data[..]),
                "{key}: the uploaded object equals the source"
            );
        } else {
            assert!(!out.status.success(), "{key}: a denied exec must fail");
            assert!(
                stderr(&out).contains("Permission denied")
                    || stderr(&out).contains("Operation not permitted"),
                "{key}: {}",
                stderr(&out)
            );
            assert_eq!(moto.object("exports", key), None, "{key}: nothing uploaded");
        }
        assert_eq!(
            s.count(ActionClass::Exec),
            seen.len(),
            "{key}: one prompt per run"
        );
    }
}

/// Static binaries (Go's rclone, busybox) bring their own resolver and TLS: no libc or
/// OpenSSL uprobe sees them. Held at the first send, they are named by what the kernel sees
/// on the socket: the HTTP request (virtual-host S3 bucket and key) or the TLS ClientHello.
#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn a_static_binary_is_held_at_first_send_and_named_by_its_request() {
    let busybox = Path::new("/bin/busybox");
    let file = std::process::Command::new("file")
        .arg(busybox)
        .output()
        .expect("file(1)");
    assert!(
        String::from_utf8_lossy(&file.stdout).contains("statically linked"),
        "the test needs busybox-static: {file:?}"
    );
    let s = GateSetup::start_with("tools-static", "hold_at = \"first-send\"\n", |_, _| {});
    let dir = s.dir.path();
    let ca = TestCa::generate(dir, &[HELD_V4]);
    let body: Vec<u8> = (0..3000).map(|i| b"static-served-body-"[i % 19]).collect();
    let plain = WebServer::start(HELD_V4, None, body.clone());
    let tls = WebServer::start(HELD_V4, Some(ca.server.clone()), body.clone());
    let wget = |url: &str, host: Option<&str>| {
        let mut cmd = Command::new(busybox);
        cmd.args(["wget", "-q", "-O", "-", "--no-check-certificate"]);
        if let Some(host) = host {
            cmd.args(["--header", &format!("Host: {host}")]);
        }
        cmd.arg(url);
        cmd
    };
    for approve in [true, false] {
        // Approve or deny, then check the outcome: the body and one request on the server,
        // or a failure with no body and nothing received.
        let decide = |request, child, server: &WebServer, seen: usize, what: &str| {
            if approve {
                s.approve(request);
            } else {
                s.deny(request);
            }
            let out = finish(child);
            if approve {
                assert!(out.status.success(), "{what}: {}", stderr(&out));
                assert_eq!(out.stdout, body, "{what}: the served body");
                assert_eq!(server.requests().len(), seen + 1, "{what}");
            } else {
                assert!(!out.status.success(), "{what} must fail");
                assert!(out.stdout.is_empty(), "{what}: no body");
                assert_eq!(server.requests().len(), seen, "{what}: no request");
            }
            out
        };
        // HTTP, virtual-host style: the bucket is in the Host header, the key in the path.
        let what = format!("busybox wget http approve={approve}");
        let seen = plain.requests().len();
        let url = format!("http://{HELD_V4}:{}/2026/q3.csv", plain.port);
        let child = process::spawn_in(
            &s.cgroup.path,
            &mut wget(&url, Some("reports-q3.s3.amazonaws.com")),
        );
        let request = s.request_within(ActionClass::Connect, child.id(), &[], STARTUP);
        let dest = destination(&request);
        assert_eq!(
            (dest.address.as_str(), dest.port),
            (HELD_V4, u32::from(plain.port)),
            "{what}"
        );
        assert_eq!(
            (dest.bucket.as_str(), dest.key.as_str()),
            ("reports-q3", "2026/q3.csv"),
            "{what}: {dest:?}"
        );
        let binary = actor(&request).binary;
        assert!(binary.ends_with("busybox"), "{what}: actor {binary:?}");
        wait_stopped(child.id());
        assert_eq!(
            plain.requests().len(),
            seen,
            "{what}: nothing sent while held"
        );
        let out = decide(&request, child, &plain, seen, &what);
        if approve {
            assert_eq!(
                plain.requests().last().map(String::as_str),
                Some("GET /2026/q3.csv HTTP/1.1"),
                "{what}"
            );
        } else {
            // busybox ignores the failed write and reads the reply: the severed socket
            // refuses that read at once, instead of leaving it waiting on the server.
            assert!(
                stderr(&out).contains("Operation not permitted"),
                "{what}: {}",
                stderr(&out)
            );
        }

        // HTTPS with busybox's own TLS: held at the ClientHello, before any byte leaves.
        let what = format!("busybox wget https approve={approve}");
        let seen = tls.requests().len();
        let url = format!("https://{HELD_V4}:{}/export/{approve}", tls.port);
        let earlier: Vec<String> = s.requests().into_iter().map(|r| r.id).collect();
        let earlier: Vec<&str> = earlier.iter().map(String::as_str).collect();
        let child = process::spawn_in(&s.cgroup.path, &mut wget(&url, None));
        // busybox forks a child for its TLS, so the held process is that child (pid 0: any).
        let request = s.request_within(ActionClass::Connect, 0, &earlier, STARTUP);
        let dest = destination(&request);
        assert_eq!(
            (dest.address.as_str(), dest.port, dest.scheme.as_str()),
            (HELD_V4, u32::from(tls.port), "https"),
            "{what}: {dest:?}"
        );
        wait_stopped(actor(&request).pid);
        decide(&request, child, &tls, seen, &what);
    }
}
