//! Real tools for the gate tests (issue #3): where the host keeps them, and the servers they
//! talk to — moto's S3, a HTTP/HTTPS server with a throw-away CA, a PostgreSQL cluster —
//! all started outside the scope cgroup, so only the tool under test meets the gates.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use crate::{free_port, wait_for};

/// Python tools start slowly under TCG (seconds natively, a minute emulated).
pub const STARTUP: Duration = Duration::from_secs(300);

/// The real executable `name`: the first on `$PATH` that is not a pyenv shim (a shim is a
/// bash script that runs `pyenv exec`, seconds per call under TCG, and hides the real path
/// a watch must name), else the global pyenv version's. Panics when the host lacks it: the
/// suite proves the gates with these tools, so a missing one is a failure, not a skip.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path)
        .filter(|dir| !(dir.ends_with("shims") && dir.to_string_lossy().contains("pyenv")))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p));
    let pyenv = || {
        let root = PathBuf::from("/root/.pyenv");
        let version = std::fs::read_to_string(root.join("version")).ok()?;
        let version = version.lines().next()?.trim().to_owned();
        let p = root.join("versions").join(version).join("bin").join(name);
        is_executable(&p).then_some(p)
    };
    on_path.or_else(pyenv).unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed on this host (cargo xtask setup installs the Python tools)"
        )
    })
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A minimal HTTP/1.1 exchange (`Connection: close`), for the test's own look at a server
/// from outside the scope. `headers` are extra header lines, each ending in `\r\n`.
/// Returns the status code and the (de-chunked) body.
pub fn http(
    addr: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect((addr, port))
        .unwrap_or_else(|e| panic!("connect to {addr}:{port}: {e}"));
    // moto imports a backend on its first use of it: minutes under TCG.
    stream
        .set_read_timeout(Some(STARTUP))
        .expect("read timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}:{port}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send request");
    stream.write_all(body).expect("send body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// Kills and reaps a server process on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto's S3 server (`moto_server`), a real HTTP S3 endpoint the real `aws` CLI talks to.
pub struct Moto {
    pub addr: String,
    pub port: u16,
    /// `http://addr:port`, for `aws --endpoint-url`.
    pub endpoint: String,
    pub log: PathBuf,
    _child: Reaped,
}

impl Moto {
    /// Starts `moto_server` on `addr` (outside the scope: the test runner is not in it) and
    /// waits until it answers.
    pub fn start(addr: &str, dir: &Path) -> Self {
        let port = free_port();
        let log = dir.join(format!("moto-{port}.log"));
        let child = Command::new(tool("moto_server"))
            .args(["-H", addr, "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("moto log"))
            .stderr(std::fs::File::create(&log).expect("moto log"))
            .spawn()
            .expect("spawn moto_server");
        let mut child = Reaped(child);
        wait_for(STARTUP, "moto_server to listen", || {
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!(
                    "moto_server exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            TcpStream::connect((addr, port)).ok()
        });
        Self {
            addr: addr.to_owned(),
            port,
            endpoint: format!("http://{addr}:{port}"),
            log,
            _child: child,
        }
    }

    /// Creates `bucket` (path-style `PUT /bucket`; moto does not check signatures).
    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = http(
            &self.addr,
            self.port,
            "PUT",
            &format!("/{bucket}"),
            MOTO_AUTH,
            b"",
        );
        assert_eq!(
            status,
            200,
            "create bucket {bucket}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// The object's bytes, or None when moto has no such object.
    pub fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (status, body) = http(
            &self.addr,
            self.port,
            "GET",
            &format!("/{bucket}/{key}"),
            MOTO_AUTH,
            b"",
        );
        match status {
            200 => Some(body),
            404 => None,
            other => panic!(
                "GET {bucket}/{key}: HTTP {other}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
}

/// moto does not verify signatures, but treats a request without `Authorization` as
/// anonymous (403 on private objects).
const MOTO_AUTH: &str = "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n";

/// The real `aws` CLI against `endpoint`, kept off every file outside `dir` that could
/// carry credentials or config (`~/.aws/*`), and off the EC2 metadata service.
pub fn aws(dir: &Path, endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(tool("aws"));
    aws_env(&mut cmd, dir);
    cmd.args(["--endpoint-url", endpoint]).args(args);
    cmd
}

/// The environment [`aws`] sets (for `aws` run through a wrapper).
pub fn aws_env(cmd: &mut Command, dir: &Path) {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("no-aws-credentials"),
        );
}

/// A file of `len` bytes covering every byte value, in an order that is not a pattern a
/// truncation or re-encoding would preserve.
pub fn test_bytes(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            // xorshift32: deterministic, no dependency.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// A throw-away CA and a server certificate it signed, for HTTPS clients that verify.
pub struct TestCa {
    /// The CA certificate (PEM), what clients are told to trust.
    pub ca_pem: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    /// Generates a CA and a server certificate for `names` (IP addresses or DNS names).
    pub fn generate(dir: &Path, names: &[&str]) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "airlock test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("server params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("server"),
        );
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let ca_pem = dir.join("test-ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).expect("write CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server TLS config");
        Self {
            ca_pem,
            server: Arc::new(server),
        }
    }
}

/// A HTTP (or, with a TLS config, HTTPS) server answering every request with `body`, and
/// recording what reached it: accepted connections and request lines.
pub struct WebServer {
    pub port: u16,
    pub body: Arc<Vec<u8>>,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl WebServer {
    pub fn start(addr: &str, tls: Option<Arc<rustls::ServerConfig>>, body: Vec<u8>) -> Self {
        let listener = TcpListener::bind((addr, 0)).expect("bind web server");
        let port = listener.local_addr().expect("addr").port();
        let body = Arc::new(body);
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, seen, served) = (accepted.clone(), requests.clone(), body.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let (seen, served, tls) = (seen.clone(), served.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(crate::SLOW));
                    match tls {
                        Some(config) => {
                            let Ok(conn) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            let mut tls = rustls::StreamOwned::new(conn, stream);
                            if serve_one(&mut tls, &seen, &served) {
                                tls.conn.send_close_notify();
                                let _ = tls.flush();
                            }
                        }
                        None => {
                            let mut plain = stream;
                            serve_one(&mut plain, &seen, &served);
                        }
                    }
                });
            }
        });
        Self {
            port,
            body,
            accepted,
            requests,
        }
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Request lines received so far (`GET /path HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Reads one request head and answers it; false when no request arrived.
fn serve_one(stream: &mut (impl Read + Write), seen: &Mutex<Vec<String>>, body: &[u8]) -> bool {
    let mut reader = BufReader::new(&mut *stream);
    let mut line = String::new();
    if !reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        return false;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(n) if n > 0 && header != "\r\n" && header != "\n" => {}
            _ => break,
        }
    }
    drop(reader);
    if let Ok(mut v) = seen.lock() {
        v.push(line.trim_end().to_owned());
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).is_ok()
        && stream.write_all(body).is_ok()
        && stream.flush().is_ok()
}

/// A PostgreSQL cluster of its own (initdb + pg_ctl as the `postgres` user), reachable only
/// through a unix socket in its directory, so a client meets the exec gate and nothing else.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    /// The directory holding the server's socket (`pg_dump -h`).
    pub socket_dir: PathBuf,
    pub port: u16,
}

impl Postgres {
    /// The newest `/usr/lib/postgresql/*/bin` (where the real `pg_dump` lives).
    pub fn bin_dir() -> PathBuf {
        let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let v = e.file_name().to_str()?.parse().ok()?;
                        let bin = e.path().join("bin");
                        bin.join("initdb").exists().then_some((v, bin))
                    })
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs.pop()
            .map(|(_, bin)| bin)
            .expect("PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    }

    /// Creates a cluster under `dir/pg`, starts it and runs `setup_sql` in database
    /// `postgres`.
    pub fn start(dir: &Path, setup_sql: &str) -> Self {
        let bin = Self::bin_dir();
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .expect("a `postgres` user");
        // initdb and postgres refuse to run as root; the tempdir is root's, so open the way.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let root = dir.join("pg");
        std::fs::create_dir_all(&root).expect("mkdir pg");
        std::os::unix::fs::chown(&root, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .expect("chown pg");
        let data = root.join("data");
        let port = free_port();
        let pg = Self {
            bin,
            data,
            socket_dir: root.clone(),
            port,
        };
        pg.as_postgres(
            &["initdb", "-D"],
            &[
                pg.data.to_str().expect("utf8"),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--locale=C",
                "-E",
                "UTF8",
            ],
        );
        let options = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c port={port} -c dynamic_shared_memory_type=mmap -c fsync=off",
            root.display()
        );
        let log = root.join("server.log");
        pg.as_postgres(
            &["pg_ctl", "-D"],
            &[
                pg.data.to_str().expect("utf8"),
                "-l",
                log.to_str().expect("utf8"),
                "-w",
                "-t",
                "300",
                "-o",
                &options,
                "start",
            ],
        );
        pg.psql(setup_sql);
        pg
    }

    /// Runs `bin/<tool[0]> tool[1..] args` as the postgres user and insists it succeeded.
    fn as_postgres(&self, tool: &[&str], args: &[&str]) -> String {
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .expect("postgres user");
        let out = Command::new(self.bin.join(tool[0]))
            .args(&tool[1..])
            .args(args)
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .current_dir(&self.socket_dir)
            .env("HOME", &self.socket_dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", tool[0]));
        assert!(
            out.status.success(),
            "{} failed ({}): {}{}",
            tool[0],
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sql` through psql (as the postgres user) and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let port = self.port.to_string();
        self.as_postgres(
            &["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
            &[
                "-h",
                self.socket_dir.to_str().expect("utf8"),
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let user = nix::unistd::User::from_name("postgres").ok().flatten();
        if let Some(user) = user {
            let _ = Command::new(self.bin.join("pg_ctl"))
                .args(["-D"])
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .uid(user.uid.as_raw())
                .gid(user.gid.as_raw())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
