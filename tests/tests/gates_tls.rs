//! Issue #3, naming HTTPS: with `hold_at = "first-send"`, a TLS connection made through
//! OpenSSL is held at its first application-data write and named from the plaintext the
//! process handed `SSL_write` (URL, path-style S3 bucket and key), not just from SNI; an
//! approved request reaches the server, a denied one never does; a policy can allow
//! `s3://reports-*` and ask for any other bucket over HTTPS.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use airlock_proto::v1::ActionClass;
use airlock_tests::{
    agent::{Agent, AgentSpec},
    cgroup::TestCgroup,
    gates::{
        GateSetup, HELD_V4, add_test_addresses, destination, finish, gate_config, runtime, settle,
        stdout, wait_stopped,
    },
    hub::Hub,
    process,
};

/// The server's name; path-style S3 because it starts with `s3.`.
const HOST: &str = "s3.test";

/// A TLS HTTP/1.1 server (Python's `ssl` + `http.server`, outside the scope) on the held
/// test address, appending `METHOD /path body` for each request it receives to a file.
struct TlsServer {
    child: Child,
    port: u16,
    log: PathBuf,
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

const SERVER: &str = r#"
import http.server, ssl, sys
cert, key, host, log = sys.argv[1:5]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with open(log, "a") as f:
            f.write(f"{self.command} {self.path} {body.decode(errors='replace')}\n")
        out = b"stored " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_PUT = answer
    do_GET = answer
    def log_message(self, *args):
        pass
srv = http.server.ThreadingHTTPServer((host, 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
def hello(sslobj, name, context):
    with open(log + ".hellos", "a") as f:
        f.write(f"{name}\n")
ctx.sni_callback = hello
# Handshake in the handler thread: a client held at its ClientHello must not block accept.
srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

impl TlsServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        // A self-signed CA certificate for the server name, trusted by the clients.
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", &format!("/CN={HOST}")])
            .args([
                "-addext",
                &format!("subjectAltName=DNS:{HOST},IP:{HELD_V4}"),
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl req: {out:?}");
        let log = dir.path().join("requests.log");
        std::fs::write(&log, "").expect("log");
        let mut child = Command::new(python())
            .arg("-c")
            .arg(SERVER)
            .args([&cert, &key])
            .arg(HELD_V4)
            .arg(&log)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start the TLS server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("server port");
        let port = line.trim().parse().expect("port");
        Self {
            child,
            port,
            log,
            cert,
            _dir: dir,
        }
    }

    /// The requests the server received, one `METHOD /path body` line each.
    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).expect("server log")
    }

    /// ClientHellos the server received (their SNI, one per line).
    fn hellos(&self) -> usize {
        std::fs::read_to_string(self.log.with_extension("log.hellos"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python with `requests` (pyenv's, or the system's); panics if there is none, so a
/// missing client can never pass as a skipped test.
fn python() -> PathBuf {
    let mut candidates = vec![PathBuf::from("/usr/bin/python3")];
    if let Ok(versions) = std::fs::read_dir("/root/.pyenv/versions") {
        let mut found: Vec<PathBuf> = versions
            .flatten()
            .map(|v| v.path().join("bin/python3"))
            .collect();
        found.sort();
        candidates.extend(found.into_iter().rev());
    }
    candidates
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import requests"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("a python3 with `requests` (pip install requests)")
}

/// `HOST` resolves to the held address for libc's resolver (the guest's /etc/hosts is a
/// writable overlay); curl gets `--resolve` as well.
fn add_host_entry() {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if !hosts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(HOST))
    {
        std::fs::write("/etc/hosts", format!("{hosts}\n{HELD_V4} {HOST}\n")).expect("hosts");
    }
}

fn curl_put(cgroup: &Path, server: &TlsServer, path: &str, body: &str) -> Child {
    process::spawn_in(
        cgroup,
        Command::new("curl")
            .args(["-sS", "--http1.1", "--max-time", "120", "--cacert"])
            .arg(&server.cert)
            .args(["--resolve", &format!("{HOST}:{}:{HELD_V4}", server.port)])
            .args(["-X", "PUT", "--data-binary", body, &server.url(path)]),
    )
}

fn requests_put(cgroup: &Path, server: &TlsServer, path: &str, body: &str) -> Child {
    let script = format!(
        "import requests\nr = requests.put({url:?}, data={body:?}.encode(), verify={cert:?}, timeout=120)\nprint(r.status_code, r.text)",
        url = server.url(path),
        cert = server.cert.display().to_string(),
    );
    process::spawn_in(cgroup, Command::new(python()).args(["-c", &script]))
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn https_through_openssl_is_held_with_its_url_bucket_and_key() {
    let s = GateSetup::start_with("tls-first-send", "hold_at = \"first-send\"\n", |_, _| {});
    add_host_entry();
    let server = TlsServer::start();

    // curl (SSL_connect, then SSL_write), path-style S3 PUT, approved.
    let child = curl_put(
        &s.cgroup.path,
        &server,
        "/reports-q3/2026/data.csv",
        "quarterly numbers",
    );
    let request = s.request_for(ActionClass::Connect, child.id());
    let dest = destination(&request);
    assert_eq!(
        (dest.scheme.as_str(), dest.hostname.as_str()),
        ("https", HOST)
    );
    assert_eq!(dest.url, server.url("/reports-q3/2026/data.csv"));
    assert_eq!(
        (dest.bucket.as_str(), dest.key.as_str()),
        ("reports-q3", "2026/data.csv")
    );
    let impact = request.action.as_ref().map(|a| a.impact.clone());
    assert!(
        impact
            .as_deref()
            .is_some_and(|i| i.contains("s3://reports-q3/2026/data.csv")),
        "{impact:?}"
    );
    wait_stopped(child.id());
    assert_eq!(
        server.requests(),
        "",
        "nothing reached the server while held"
    );
    assert_eq!(
        server.hellos(),
        1,
        "the handshake went out (an OpenSSL ClientHello is let through)"
    );
    s.approve(&request);
    let out = finish(child);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "stored /reports-q3/2026/data.csv");
    assert_eq!(
        server.requests(),
        "PUT /reports-q3/2026/data.csv quarterly numbers\n"
    );

    // Python requests (SSL_do_handshake, then SSL_write_ex), another bucket, denied.
    let child = requests_put(&s.cgroup.path, &server, "/anything-else/x", "secret rows");
    let request = s.request_for(ActionClass::Connect, child.id());
    let dest = destination(&request);
    assert_eq!(dest.url, server.url("/anything-else/x"));
    assert_eq!(
        (
            dest.bucket.as_str(),
            dest.key.as_str(),
            dest.scheme.as_str()
        ),
        ("anything-else", "x", "https")
    );
    s.deny(&request);
    let out = finish(child);
    assert!(!out.status.success(), "the denied upload failed: {out:?}");
    settle();
    let seen = server.requests();
    assert!(
        !seen.contains("anything-else") && !seen.contains("secret rows"),
        "the denied request never reached the server: {seen}"
    );

    assert_eq!(server.hellos(), 2, "the requests handshake went out");
    let hellos = server.hellos();

    // A handshake OpenSSL runs lazily inside SSL_write: held at the ClientHello, with the
    // plaintext already known; approved, the GET completes.
    let script = format!(
        "import socket, ssl\n\
         ctx = ssl.create_default_context(cafile={cert:?})\n\
         raw = socket.create_connection(({HOST:?}, {port}))\n\
         t = ctx.wrap_socket(raw, server_hostname={HOST:?}, do_handshake_on_connect=False)\n\
         t.sendall(b'GET /reports-q3/lazy.txt HTTP/1.1\\r\\nHost: {HOST}:{port}\\r\\nConnection: close\\r\\n\\r\\n')\n\
         print(t.recv(4096).split(b'\\r\\n')[0].decode())",
        cert = server.cert.display().to_string(),
        port = server.port,
    );
    let child = process::spawn_in(&s.cgroup.path, Command::new(python()).args(["-c", &script]));
    let request = s.request_for(ActionClass::Connect, child.id());
    let dest = destination(&request);
    assert_eq!(dest.url, server.url("/reports-q3/lazy.txt"));
    wait_stopped(child.id());
    assert_eq!(server.hellos(), hellos, "held at its ClientHello");
    assert_eq!(dest.key, "lazy.txt");
    s.approve(&request);
    let out = finish(child);
    assert_eq!(stdout(&out), "HTTP/1.1 200 OK\n", "{out:?}");
    assert!(server.requests().contains("GET /reports-q3/lazy.txt \n"));
    assert_eq!(
        s.count(ActionClass::Connect),
        3,
        "one request per connection"
    );
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn a_policy_allows_one_bucket_and_asks_for_others_over_https() {
    add_test_addresses();
    add_host_entry();
    let server = TlsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("creds")).expect("mkdir");
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "version = 1\n[defaults]\nexec = \"allow\"\nconnect = \"ask\"\nsend = \"ask\"\nopen = \"allow\"\n\
         [defaults.ask]\napprovers = [\"oncall\"]\nttl = \"2m\"\n[groups.oncall]\n\
         [[rule]]\nid = \"reports-buckets\"\non = [\"connect\"]\ns3_bucket = [\"reports-*\"]\noutcome = \"allow\"\n",
    )
    .expect("policy");
    let cgroup = TestCgroup::new("tls-policy");
    let hub = Hub::start("300s");
    let _agent = Agent::start_with(
        &AgentSpec {
            hub_url: &hub.url,
            cgroup: &cgroup.path,
            watch: vec![],
            ttl: "2m",
            policy: Some(&policy),
        },
        &gate_config(dir.path()).replace("[egress]\n", "[egress]\nhold_at = \"first-send\"\n"),
    );
    let rt = runtime();
    let approver = rt.block_on(hub.approver("alice"));

    // s3://reports-q3 over HTTPS: allowed by the rule, no human asked.
    let out = finish(curl_put(
        &cgroup.path,
        &server,
        "/reports-q3/a.csv",
        "ok rows",
    ));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "stored /reports-q3/a.csv");
    assert!(
        rt.block_on(approver.list(&[])).is_empty(),
        "the allowed bucket involved no human"
    );

    // s3://anything-else over HTTPS: asked, named, and denied by the on-call approver.
    let child = requests_put(&cgroup.path, &server, "/anything-else/b.csv", "other rows");
    let pid = child.id();
    let request = rt.block_on(approver.watch_for(airlock_tests::SLOW, |r| {
        r.action
            .as_ref()
            .is_some_and(|a| a.actor.as_ref().is_some_and(|p| p.pid == pid))
    }));
    let dest = destination(&request);
    assert_eq!(
        (dest.bucket.as_str(), dest.key.as_str()),
        ("anything-else", "b.csv")
    );
    hub.cli_ok(
        "alice",
        &["--groups", "oncall", "deny", &request.id, "--reason", "no"],
    );
    let out = finish(child);
    assert!(!out.status.success(), "{out:?}");
    settle();
    assert_eq!(server.requests(), "PUT /reports-q3/a.csv ok rows\n");
}
