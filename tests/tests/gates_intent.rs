//! DESIGN §6, one human decision per intent: approving `aws s3 cp f s3://bucket/…` is not
//! followed by a second prompt for the connect/send that same command makes, while a
//! follow-up outside what it named (another bucket, another host) is a new request.
//!
//! Real `aws` CLI against moto_server on a held test address, egress held at the first send
//! (so the request names the bucket). Prompts are counted per task at the hub.

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::Duration,
};

use airlock_proto::v1::{ActionClass, ApprovalRequest};
use airlock_tests::{
    agent::{Agent, AgentSpec},
    airlock_of,
    cgroup::TestCgroup,
    free_port,
    gates::{
        EchoServer, HELD_V4, HELD_V6, add_test_addresses, destination, gate_config, runtime, settle,
    },
    hub::Hub,
    wait_for,
};

/// Python under TCG: the aws CLI alone takes a minute to start.
const PYTHON: Duration = Duration::from_secs(300);

/// The real executable `name` (pyenv shims hide the path a watch must name and cost
/// seconds per call); panics when the host lacks it: a missing tool fails, never skips.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    std::env::split_paths(&path)
        .filter(|dir| !(dir.ends_with("shims") && dir.to_string_lossy().contains("pyenv")))
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
        .or_else(|| {
            let root = PathBuf::from("/root/.pyenv");
            let version = std::fs::read_to_string(root.join("version")).ok()?;
            let p = root
                .join("versions")
                .join(version.lines().next()?.trim())
                .join("bin")
                .join(name);
            executable(&p).then_some(p)
        })
        .unwrap_or_else(|| panic!("`{name}` is not installed (cargo xtask setup installs it)"))
}

/// moto does not check signatures, but answers a request without `Authorization` as an
/// anonymous one (403 on private objects).
const MOTO_AUTH: &str = "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n";

/// moto's S3 on a held address, started by the test (outside the scope).
struct Moto {
    port: u16,
    endpoint: String,
    child: Child,
}

impl Moto {
    fn start(dir: &Path) -> Self {
        let port = free_port();
        let log = dir.join("moto.log");
        let mut child = Command::new(tool("moto_server"))
            .args(["-H", HELD_V4, "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("moto log"))
            .stderr(std::fs::File::create(&log).expect("moto log"))
            .spawn()
            .expect("spawn moto_server");
        wait_for(PYTHON, "moto_server to listen", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "moto_server exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            TcpStream::connect((HELD_V4, port)).ok()
        });
        Self {
            port,
            endpoint: format!("http://{HELD_V4}:{port}"),
            child,
        }
    }

    /// One HTTP/1.1 exchange from outside the scope: status and body.
    fn http(&self, method: &str, path: &str) -> (u16, Vec<u8>) {
        let mut stream = TcpStream::connect((HELD_V4, self.port)).expect("connect to moto");
        stream.set_read_timeout(Some(PYTHON)).expect("read timeout");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {HELD_V4}:{}\r\n{MOTO_AUTH}Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read");
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("HTTP header end");
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        assert!(
            !head.contains("transfer-encoding: chunked"),
            "moto answered chunked: {head}"
        );
        (status, raw[end + 4..].to_vec())
    }

    fn create_bucket(&self, bucket: &str) {
        let (status, body) = self.http("PUT", &format!("/{bucket}"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// The object's bytes, or `None` when moto does not have it.
    fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (status, body) = self.http("GET", &format!("/{bucket}/{key}"));
        match status {
            200 => Some(body),
            404 => None,
            other => panic!(
                "GET /{bucket}/{key}: {other} {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    hub: Hub,
    agent: Agent,
    cgroup: TestCgroup,
    moto: Moto,
    dir: tempfile::TempDir,
}

/// Hub, moto, and an agent watching `watch` with egress held at the first send.
fn setup(name: &str, watch: impl FnOnce(&Path) -> PathBuf) -> Setup {
    add_test_addresses();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("creds")).expect("mkdir");
    let watched = watch(dir.path());
    let cgroup = TestCgroup::new(name);
    let moto = Moto::start(dir.path());
    let hub = Hub::start("600s");
    let agent = Agent::start_with(
        &AgentSpec {
            hub_url: &hub.url,
            cgroup: &cgroup.path,
            watch: vec![watched],
            ttl: "600s",
            policy: None,
        },
        &gate_config(dir.path()).replace("[egress]\n", "[egress]\nhold_at = \"first-send\"\n"),
    );
    Setup {
        hub,
        agent,
        cgroup,
        moto,
        dir,
    }
}

impl Setup {
    /// Spawns `program args` into the scope from a thread (a held exec does not return
    /// until someone decides), with the aws CLI kept off any real account or file.
    fn spawn(
        &self,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> JoinHandle<std::io::Result<Child>> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.dir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("no-aws-credentials"),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let procs = self.cgroup.path.join("cgroup.procs");
        std::thread::spawn(move || {
            // SAFETY: open/write/close only, which are async-signal-safe.
            unsafe {
                cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
            }
            cmd.spawn()
        })
    }

    /// Waits for a request matching `pred`.
    fn request(&self, pred: impl FnMut(&ApprovalRequest) -> bool) -> ApprovalRequest {
        runtime().block_on(async {
            self.hub
                .approver("alice")
                .await
                .watch_for(PYTHON, pred)
                .await
        })
    }

    /// Every request this task made at the hub, in any state.
    fn requests(&self) -> Vec<ApprovalRequest> {
        runtime().block_on(async { self.hub.approver("alice").await.list(&[]).await })
    }

    /// The audit decisions that say they were covered by request `id`'s intent grant.
    fn intent_decisions(&self, id: &str) -> Vec<serde_json::Value> {
        self.agent
            .audit_records()
            .into_iter()
            .filter(|r| {
                r["kind"] == "decision"
                    && airlock_of(r)["channel"] == "intent"
                    && airlock_of(r)["grant_scope"] == format!("intent:{id}")
            })
            .collect()
    }
}

fn is_exec_of(binary: &Path) -> impl Fn(&ApprovalRequest) -> bool + '_ {
    move |r| {
        r.action.as_ref().is_some_and(|a| {
            a.class == ActionClass::Exec as i32 && a.binary == binary.display().to_string()
        })
    }
}

fn is_connect_to(bucket_or_addr: &str) -> impl Fn(&ApprovalRequest) -> bool + '_ {
    move |r| {
        r.action.as_ref().is_some_and(|a| {
            a.class == ActionClass::Connect as i32
                && a.destination
                    .as_ref()
                    .is_some_and(|d| d.bucket == bucket_or_addr || d.address == bucket_or_addr)
        })
    }
}

/// Waits for the child (after its exec was released) and returns its output.
fn finish(spawned: JoinHandle<std::io::Result<Child>>) -> std::process::Output {
    let child = spawned
        .join()
        .expect("thread")
        .expect("the exec was allowed");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PYTHON) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("process {pid} did not finish within {PYTHON:?}")
        }
    }
}

/// A source file that is not text, so a byte-for-byte comparison means something.
fn source_bytes() -> Vec<u8> {
    (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn approving_aws_s3_cp_is_the_only_prompt_for_its_upload() {
    let aws = tool("aws");
    let s = setup("intent-aws", |_| aws.clone());
    s.moto.create_bucket("intent-reports");
    let source = s.dir.path().join("q3.bin");
    let bytes = source_bytes();
    std::fs::write(&source, &bytes).expect("write source");

    let spawned = s.spawn(
        &aws,
        &[
            "s3",
            "cp",
            &source.display().to_string(),
            "s3://intent-reports/2026/q3.bin",
            "--endpoint-url",
            &s.moto.endpoint,
        ],
        &[],
    );
    let exec = s.request(is_exec_of(&aws));
    s.hub.cli_ok("alice", &["approve", &exec.id]);
    let out = finish(spawned);
    assert!(
        out.status.success(),
        "aws s3 cp failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = s
        .moto
        .object("intent-reports", "2026/q3.bin")
        .expect("the object is in moto");
    assert!(
        stored == bytes,
        "the object in moto ({} bytes) differs from the source ({} bytes)",
        stored.len(),
        bytes.len()
    );
    settle();
    let requests = s.requests();
    assert_eq!(
        requests.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [exec.id.as_str()],
        "exactly one prompt for the whole upload"
    );

    // The upload's send(s) were held, and settled by the exec's approval, on the record.
    let covered = s.intent_decisions(&exec.id);
    assert!(!covered.is_empty(), "no intent-covered decision recorded");
    for decision in &covered {
        let d = airlock_of(decision);
        assert_eq!(d["verdict"], "allowed", "{decision}");
        assert_eq!(d["decided_by"], serde_json::json!(["alice"]), "{decision}");
        let reason = d["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&exec.id) && reason.contains("s3://intent-reports"),
            "{reason}"
        );
        let id = decision["metadata"]["uid"]
            .as_str()
            .expect("correlation id");
        let attempt = s.agent.wait_record(id, "attempt");
        let a = airlock_of(&attempt);
        assert_eq!(a["masked_context"]["class"], "connect", "{attempt}");
        assert_eq!(
            a["masked_context"]["destination.bucket"], "intent-reports",
            "{attempt}"
        );
        assert_eq!(
            airlock_of(&s.agent.wait_record(id, "outcome"))["outcome"],
            "completed"
        );
    }
}

/// A helper whose approved command line names bucket A on the endpoint, and that then also
/// writes to bucket B on the same endpoint and to another host. Its child writes to A again.
const HELPER: &str = r#"
import http.client, os, subprocess, sys
endpoint = sys.argv[2].split("//", 1)[1]
host, port = endpoint.rsplit(":", 1)
bucket_a = sys.argv[1][len("s3://"):].split("/")[0]

def put(host, port, path):
    c = http.client.HTTPConnection(host, int(port), timeout=600)
    try:
        c.request("PUT", path, b"data", {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
        return str(c.getresponse().status)
    except OSError as e:
        return "errno %s" % e.errno

print("a", put(host, port, "/%s/from-parent" % bucket_a), flush=True)
child = "import http.client\nc = http.client.HTTPConnection(%r, %s)\nc.request('PUT', '/%s/from-child', b'x', {'x-amz-content-sha256': 'UNSIGNED-PAYLOAD'})\nprint('child', c.getresponse().status, flush=True)\n" % (host, port, bucket_a)
subprocess.run([sys.executable, "-c", child], check=True)
print("b", put(host, port, "/%s/sneaky" % os.environ["OTHER_BUCKET"]), flush=True)
print("other", put(os.environ["OTHER_HOST"], os.environ["OTHER_PORT"], "/x"), flush=True)
"#;

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn a_follow_up_outside_the_approved_intent_is_a_new_request() {
    let s = setup("intent-outside", |dir| {
        let helper = dir.join("export-helper");
        std::fs::write(&helper, format!("#!/usr/bin/python3\n{HELPER}")).expect("write helper");
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        helper
    });
    let helper = s.dir.path().join("export-helper");
    s.moto.create_bucket("bucket-a");
    s.moto.create_bucket("bucket-b");
    let other = EchoServer::start();
    let other_port = other.port.to_string();

    let spawned = s.spawn(
        &helper,
        &["s3://bucket-a/k", &s.moto.endpoint],
        &[
            ("OTHER_BUCKET", "bucket-b"),
            ("OTHER_HOST", HELD_V6),
            ("OTHER_PORT", &other_port),
        ],
    );
    let exec = s.request(is_exec_of(&helper));
    s.hub.cli_ok("alice", &["approve", &exec.id]);

    // Bucket B on the approved endpoint: not what was approved, so asked; denied.
    let to_b = s.request(is_connect_to("bucket-b"));
    let dest = destination(&to_b);
    assert_eq!(dest.address, HELD_V4);
    s.hub
        .cli_ok("alice", &["deny", &to_b.id, "--reason", "not bucket-b"]);
    // Another host: asked; denied.
    let to_other = s.request(is_connect_to(HELD_V6));
    s.hub.cli_ok(
        "alice",
        &["deny", &to_other.id, "--reason", "not that host"],
    );

    let out = finish(spawned);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "a 200",
            "child 200",
            &format!("b errno {}", libc::EPERM),
            &format!("other errno {}", libc::EPERM),
        ],
        "{stdout}"
    );
    assert_eq!(
        s.moto.object("bucket-a", "from-parent").as_deref(),
        Some(&b"data"[..])
    );
    assert_eq!(
        s.moto.object("bucket-a", "from-child").as_deref(),
        Some(&b"x"[..])
    );
    assert_eq!(
        s.moto.object("bucket-b", "sneaky"),
        None,
        "the denied write never landed"
    );
    assert_eq!(
        other.accepted(),
        1,
        "connected (held at the first send), nothing more"
    );
    assert!(
        other.lines.lock().expect("lock").is_empty(),
        "no byte reached the other host"
    );

    settle();
    let mut ids: Vec<String> = s.requests().into_iter().map(|r| r.id).collect();
    ids.sort();
    let mut want = vec![exec.id.clone(), to_b.id.clone(), to_other.id.clone()];
    want.sort();
    assert_eq!(
        ids, want,
        "three prompts: the exec and the two follow-ups outside it"
    );
    assert_eq!(
        s.intent_decisions(&exec.id).len(),
        2,
        "the parent's and the child's writes to bucket-a were covered"
    );
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn denying_the_exec_uploads_nothing_and_asks_once() {
    let aws = tool("aws");
    let s = setup("intent-deny", |_| aws.clone());
    s.moto.create_bucket("intent-denied");
    let source = s.dir.path().join("f.bin");
    std::fs::write(&source, source_bytes()).expect("write source");
    let spawned = s.spawn(
        &aws,
        &[
            "s3",
            "cp",
            &source.display().to_string(),
            "s3://intent-denied/f.bin",
            "--endpoint-url",
            &s.moto.endpoint,
        ],
        &[],
    );
    let exec = s.request(is_exec_of(&aws));
    s.hub
        .cli_ok("alice", &["deny", &exec.id, "--reason", "no exports today"]);
    let err = spawned
        .join()
        .expect("thread")
        .expect_err("the denied exec fails");
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    settle();
    assert_eq!(s.moto.object("intent-denied", "f.bin"), None);
    assert_eq!(
        s.requests()
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        [exec.id.as_str()]
    );
    assert!(s.intent_decisions(&exec.id).is_empty());
}
