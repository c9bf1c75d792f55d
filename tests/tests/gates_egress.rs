//! Issue #3, egress: connect (IPv4, IPv6, TCP), unconnected UDP sends and io_uring
//! connects to destinations outside the allow list are held until a human decides;
//! loopback and allowed prefixes pass in the kernel without a request.

use std::path::Path;

use airlock_proto::v1::ActionClass;
use airlock_tests::gates::{
    ALLOWED_V4, EchoServer, GateSetup, HELD_V4, HELD_V6, assert_eperm, destination, eventually,
    finish, settle, stdout, wait_stopped,
};

fn probe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_gate_probe"))
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn connect_v4_and_v6_are_held_then_approved_or_denied() {
    let s = GateSetup::start("egress-connect", |_, _| {});
    let server = EchoServer::start();
    let port = server.port.to_string();

    // IPv4, approved: completes with the server's real answer.
    let child = s.spawn(probe(), &["connect", HELD_V4, &port]);
    let request = s.request_for(ActionClass::Connect, child.id());
    let dest = destination(&request);
    assert_eq!(
        (dest.address.as_str(), dest.port, dest.protocol.as_str()),
        (HELD_V4, server.port as u32, "tcp")
    );
    wait_stopped(child.id());
    assert_eq!(server.accepted(), 0, "no connection while held");
    s.approve(&request);
    let out = finish(child);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "connected\npong ping\n");
    assert_eq!(server.accepted(), 1);

    // IPv6, denied: EPERM, nothing reaches the server.
    let child = s.spawn(probe(), &["connect", HELD_V6, &port]);
    let request = s.request_for(ActionClass::Connect, child.id());
    let dest = destination(&request);
    assert_eq!(dest.address, HELD_V6);
    s.deny(&request);
    let out = finish(child);
    assert_eperm(&out);
    assert!(!stdout(&out).contains("connected"));
    assert_eq!(
        server.accepted(),
        1,
        "the denied connect never reached the server"
    );
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn loopback_and_allowed_prefixes_pass_without_a_request() {
    let s = GateSetup::start("egress-allow", |_, _| {});
    let server = EchoServer::start();
    let port = server.port.to_string();
    for addr in ["127.0.0.1", "::1", ALLOWED_V4] {
        let out = finish(s.spawn(probe(), &["connect", addr, &port]));
        assert_eq!(stdout(&out), "connected\npong ping\n", "{addr}: {out:?}");
    }
    let out = finish(s.spawn(probe(), &["udp-send", "127.0.0.1", &port, "local"]));
    assert!(out.status.success(), "{out:?}");
    settle();
    assert_eq!(
        s.count(ActionClass::Connect) + s.count(ActionClass::Send),
        0
    );
    // Out of scope, a held address passes too.
    let out = std::process::Command::new(probe())
        .args(["connect", HELD_V4, &port])
        .output()
        .expect("run");
    assert_eq!(stdout(&out), "connected\npong ping\n");
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn unconnected_udp_send_is_held() {
    let s = GateSetup::start("egress-udp", |_, _| {});
    let server = EchoServer::start();
    let port = server.port.to_string();
    let child = s.spawn(probe(), &["udp-send", HELD_V4, &port, "dns-tunnel?"]);
    let request = s.request_for(ActionClass::Send, child.id());
    let dest = destination(&request);
    assert_eq!(
        (dest.address.as_str(), dest.protocol.as_str()),
        (HELD_V4, "udp")
    );
    s.approve(&request);
    let out = finish(child);
    assert_eq!(stdout(&out), "sent 11\n");
    eventually("the datagram to arrive", || {
        server
            .datagrams
            .lock()
            .is_ok_and(|d| d.iter().any(|m| m == "dns-tunnel?"))
    });

    let child = s.spawn(probe(), &["udp-send", HELD_V6, &port, "second"]);
    let request = s.request_for(ActionClass::Send, child.id());
    s.deny(&request);
    assert_eperm(&finish(child));
    settle();
    assert!(
        !server
            .datagrams
            .lock()
            .expect("lock")
            .iter()
            .any(|m| m == "second")
    );
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn io_uring_connect_is_refused_until_approved() {
    let s = GateSetup::start("egress-uring", |_, _| {});
    let server = EchoServer::start();
    let port = server.port.to_string();
    let child = s.spawn(probe(), &["uring-connect", HELD_V4, &port]);
    let request = s.request_for(ActionClass::Connect, child.id());
    assert_eq!(server.accepted(), 0, "refused while waiting");
    s.approve(&request);
    let out = finish(child);
    assert_eq!(stdout(&out), "connected\npong ping\n", "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("EPERM, retrying"),
        "the first attempt was refused"
    );
    assert_eq!(
        s.count(ActionClass::Connect),
        1,
        "retries while pending do not ask again"
    );
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn the_request_names_the_host_the_process_resolved() {
    let s = GateSetup::start("egress-name", |_, _| {});
    let server = EchoServer::start();
    // The guest's /etc/hosts is a writable overlay; libc's getaddrinfo reads it.
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    if !hosts.contains("reports.example.test") {
        std::fs::write(
            "/etc/hosts",
            format!("{hosts}\n{HELD_V4} reports.example.test\n"),
        )
        .expect("write /etc/hosts");
    }
    let child = s.spawn(
        probe(),
        &[
            "connect-name",
            "reports.example.test",
            &server.port.to_string(),
        ],
    );
    let request = s.request_for(ActionClass::Connect, child.id());
    let action = request.action.clone().expect("action");
    let dest = action.destination.expect("destination");
    assert_eq!(
        (dest.hostname.as_str(), dest.address.as_str()),
        ("reports.example.test", HELD_V4)
    );
    assert!(
        action.impact.contains("reports.example.test"),
        "{}",
        action.impact
    );
    s.approve(&request);
    assert_eq!(stdout(&finish(child)), "connected\npong ping\n");
}

#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn held_at_first_send_the_request_names_url_bucket_and_sni() {
    let s = GateSetup::start_with("egress-first-send", "hold_at = \"first-send\"\n", |_, _| {});
    let server = EchoServer::start();
    let port = server.port.to_string();
    let host = format!("{HELD_V4}:{port}");

    // Path-style S3 over HTTP, approved: the bucket and key are in the request.
    let child = s.spawn(
        probe(),
        &["http", HELD_V4, &port, "/reports-q3/2026/data.csv", &host],
    );
    let request = s.request_for(ActionClass::Connect, child.id());
    let dest = destination(&request);
    assert_eq!(
        (dest.bucket.as_str(), dest.key.as_str()),
        ("reports-q3", "2026/data.csv")
    );
    assert_eq!(dest.url, format!("http://{host}/reports-q3/2026/data.csv"));
    assert_eq!(
        (dest.scheme.as_str(), dest.hostname.as_str()),
        ("http", HELD_V4)
    );
    assert!(
        server.lines.lock().expect("lock").is_empty(),
        "no payload byte left while held"
    );
    s.approve(&request);
    let out = finish(child);
    assert_eq!(
        stdout(&out),
        "connected\npong PUT /reports-q3/2026/data.csv HTTP/1.1\n",
        "{out:?}"
    );

    // Another bucket, denied: the send fails, nothing reaches the server.
    let child = s.spawn(
        probe(),
        &["http", HELD_V4, &port, "/anything-else/x", &host],
    );
    let request = s.request_for(ActionClass::Connect, child.id());
    let dest = destination(&request);
    assert_eq!(dest.bucket, "anything-else");
    s.deny(&request);
    assert_eperm(&finish(child));

    // TLS: the SNI names the host, and a virtual-host S3 name its bucket.
    let child = s.spawn(
        probe(),
        &[
            "tls-hello",
            HELD_V6,
            &port,
            "exports.s3.eu-west-1.amazonaws.com",
        ],
    );
    let request = s.request_for(ActionClass::Connect, child.id());
    let dest = destination(&request);
    assert_eq!(
        (dest.hostname.as_str(), dest.scheme.as_str()),
        ("exports.s3.eu-west-1.amazonaws.com", "https")
    );
    assert_eq!(dest.bucket, "exports");
    s.deny(&request);
    assert_eperm(&finish(child));
    settle();
    assert_eq!(
        server.lines.lock().expect("lock").len(),
        1,
        "only the approved request arrived"
    );
}

/// A socket let through at connect and closed without sending leaves its first-send entry
/// behind, keyed by a `struct socket` address the kernel hands to the next socket. Sockets
/// created after it (here socketpairs, as busybox uses for its TLS helper) must never be
/// taken for the old connection: no request, every send succeeds.
#[test]
#[ignore = "needs root and BPF LSM: run with `cargo xtask test`"]
fn a_new_socket_at_a_freed_deferred_sockets_address_is_not_held() {
    let s = GateSetup::start_with("egress-reuse", "hold_at = \"first-send\"\n", |_, _| {});
    let server = EchoServer::start();
    let script = r#"
import socket, sys, time
held, port = sys.argv[1], int(sys.argv[2])
sent = 0
for _ in range(20):
    s = socket.create_connection((held, port))
    s.close()
    # Freed sockets return to the slab after an RCU grace period.
    time.sleep(0.05)
    for _ in range(20):
        a, b = socket.socketpair()
        a.sendall(b"x")
        assert b.recv(1) == b"x"
        a.close(); b.close()
        sent += 1
print(sent)
"#;
    let mut cmd = std::process::Command::new(airlock_tests::tools::tool("python3"));
    cmd.args(["-c", script, HELD_V4, &server.port.to_string()]);
    let out = finish(airlock_tests::process::spawn_in(&s.cgroup.path, &mut cmd));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "400");
    settle();
    assert_eq!(
        s.count(ActionClass::Connect),
        0,
        "no request for a socketpair"
    );
}
