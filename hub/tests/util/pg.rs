//! A throwaway PostgreSQL server (the Debian package) for the tests.
//!
//! One server per test binary, started on first use: `initdb` in a temp directory, then
//! `postgres` on a free loopback port, both as the `postgres` user (initdb refuses root),
//! via `setpriv --pdeathsig` from a thread that lives as long as the test process, so the
//! server dies with it. Each test gets its own database from [`database`].
//!
//! Under `CI=true` a PostgreSQL that cannot start fails the test; elsewhere it is skipped
//! with a loud message.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Pg {
    pub port: u16,
    pub dir: PathBuf,
}

static PG: OnceLock<Result<Pg, String>> = OnceLock::new();

fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn as_postgres(bin: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"]);
    c.arg(bin);
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start() -> Result<Pg, String> {
    let bin =
        bin_dir().ok_or("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")?;
    let dir = std::env::temp_dir().join(format!("airlock-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    run(Command::new("chown").arg("postgres:postgres").arg(&dir))?;
    let data = dir.join("data");
    run(as_postgres(&bin.join("initdb"))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "-D",
        ])
        .arg(&data))?;
    let port = free_port();
    let (tx, rx) = std::sync::mpsc::channel();
    let (bin2, dir2) = (bin.clone(), dir.clone());
    // The server gets SIGKILL when this thread's process exits (pdeathsig follows the
    // spawning thread, so the thread must outlive every test).
    std::thread::spawn(move || {
        let child = Command::new("setpriv")
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--pdeathsig=KILL",
            ])
            .arg(bin2.join("postgres"))
            .arg("-D")
            .arg(dir2.join("data"))
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir2)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=300",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let _ = tx.send(child.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        if let Ok(mut child) = child {
            let _ = child.wait();
        }
    });
    rx.recv().map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("postgres did not start listening within 30 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Pg { port, dir })
}

/// The shared server, or `None` (after saying why) when it cannot run outside CI.
pub fn server() -> Option<&'static Pg> {
    match PG.get_or_init(start) {
        Ok(pg) => Some(pg),
        Err(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("CI=true but PostgreSQL cannot start: {why}");
            }
            eprintln!("\n*** SKIPPING PostgreSQL test: {why} ***\n");
            None
        }
    }
}

/// A fresh database on the shared server: its connection URL.
pub async fn database() -> Option<String> {
    let pg = server()?;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = format!("postgresql://postgres@127.0.0.1:{}/postgres", pg.port);
    // The port accepts before the server is ready ("the database system is starting up").
    let mut attempts = 0;
    let (client, conn) = loop {
        match tokio_postgres::connect(&admin, tokio_postgres::NoTls).await {
            Ok(pair) => break pair,
            Err(err) => {
                attempts += 1;
                assert!(attempts < 200, "connect to the test PostgreSQL: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let driver = tokio::spawn(conn);
    // Concurrent CREATE DATABASE calls collide on template1 ("being accessed by other
    // users"); retry a few times.
    let mut tries = 0;
    while let Err(err) = client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
    {
        tries += 1;
        assert!(tries < 50, "create test database: {err}");
        tokio::time::sleep(Duration::from_millis(50 + 20 * tries)).await;
    }
    drop(client);
    let _ = driver.await;
    Some(format!(
        "postgresql://postgres@127.0.0.1:{}/{name}",
        pg.port
    ))
}
