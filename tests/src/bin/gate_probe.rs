//! A small helper the gate tests run inside the scope cgroup: one action per invocation,
//! with the result on stdout and the errno in the exit status, so a test can tell
//! "held then allowed", "denied (EPERM)" and "never gated" apart.
//!
//! Usage: gate_probe <command> [args...]
//!   connect ADDR PORT        TCP connect, send "ping\n", print the reply
//!   connect-name HOST PORT   as connect, resolving HOST through libc getaddrinfo
//!   udp-send ADDR PORT MSG   one datagram from an unconnected socket
//!   cat PATH                 read a file with open(2)
//!   openat2 PATH             read a file opened with openat2(2)
//!   uring-open PATH          open through io_uring (IORING_OP_OPENAT), then read
//!   uring-connect ADDR PORT  connect through io_uring (IORING_OP_CONNECT)
//!   kill PID SIG | ptrace PID | bpf | write PATH
//!   daemonize OUT CMD...     double fork + setsid; the grandchild runs CMD with stdout
//!                            and stderr to OUT, then writes "exit N" to OUT.done
//!   move-cgroup DIR CMD...   move itself to cgroup DIR, then run CMD
//!   fork-child CMD...        run CMD as a child and wait for it (the parent stays put)
//!   wait-file PATH CMD...    wait until PATH exists, then run CMD
//!   loop open|connect|exec N [ARG]  N iterations of open+close of ARG, connect to
//!                            127.0.0.1:ARG, or fork+exec of /bin/true; prints nanoseconds
//!
//! io_uring actions cannot be restarted, so the gate fails them with EPERM until a human
//! approves; `uring-*` retry on EPERM once a second (up to 120 times), like a caller that
//! was told to try again.

use std::{
    ffi::CString,
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    os::{fd::FromRawFd, unix::ffi::OsStrExt},
    process::ExitCode,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(255);
            eprintln!("gate_probe: {}: {e} (errno {errno})", args.join(" "));
            ExitCode::from(errno.clamp(1, 255) as u8)
        }
    }
}

fn addr(host: &str, port: &str) -> std::io::Result<SocketAddr> {
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let port: u16 = port
        .parse()
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(SocketAddr::new(ip, port))
}

fn last() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn run(args: &[String]) -> std::io::Result<()> {
    let a = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match a(0) {
        "connect" => {
            let mut s = TcpStream::connect(addr(a(1), a(2))?)?;
            println!("connected");
            s.write_all(b"ping\n")?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            print!("{reply}");
            Ok(())
        }
        "connect-name" => {
            let port: u16 = a(2)
                .parse()
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            let mut s = TcpStream::connect((a(1), port))?;
            println!("connected");
            s.write_all(b"ping\n")?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            print!("{reply}");
            Ok(())
        }
        "http" | "tls-hello" => {
            // http ADDR PORT PATH HOST: one S3-shaped PUT; tls-hello ADDR PORT SNI: a ClientHello.
            let mut s = TcpStream::connect(addr(a(1), a(2))?)?;
            println!("connected");
            let payload = if a(0) == "http" {
                format!(
                    "PUT {} HTTP/1.1\r\nHost: {}\r\nX-Amz-Content-SHA256: UNSIGNED-PAYLOAD\r\nContent-Length: 4\r\n\r\ndata",
                    a(3),
                    a(4)
                )
                .into_bytes()
            } else {
                let mut hello = client_hello(a(3));
                hello.push(b'\n');
                hello
            };
            s.write_all(&payload)?;
            let mut reply = Vec::new();
            s.read_to_end(&mut reply)?;
            println!("{}", String::from_utf8_lossy(&reply).trim_end());
            Ok(())
        }
        "udp-send" => {
            let to = addr(a(1), a(2))?;
            let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let s = UdpSocket::bind(bind)?;
            let n = s.send_to(a(3).as_bytes(), to)?;
            println!("sent {n}");
            Ok(())
        }
        "cat" => {
            let mut text = String::new();
            std::fs::File::open(a(1))?.read_to_string(&mut text)?;
            print!("{text}");
            Ok(())
        }
        "openat2" => {
            let path = CString::new(a(1).as_bytes())
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            // struct open_how { u64 flags; u64 mode; u64 resolve; } (user ABI).
            let how: [u64; 3] = [libc::O_RDONLY as u64, 0, 0];
            // SAFETY: valid NUL-terminated path and a properly sized open_how.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    how.as_ptr(),
                    size_of::<[u64; 3]>(),
                )
            };
            if fd < 0 {
                return Err(last());
            }
            print_fd(fd as i32)
        }
        "uring-open" => {
            let path = CString::new(a(1).as_bytes())
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            let op =
                io_uring::opcode::OpenAt::new(io_uring::types::Fd(libc::AT_FDCWD), path.as_ptr())
                    .flags(libc::O_RDONLY)
                    .build();
            let fd = retry_eperm(|| uring_one(op.clone()))?;
            print_fd(fd)
        }
        "uring-connect" => {
            let to = addr(a(1), a(2))?;
            let (storage, len) = sockaddr(&to);
            let sock = retry_eperm(|| {
                let sock = socket2_like(&to)?;
                let op = io_uring::opcode::Connect::new(
                    io_uring::types::Fd(sock),
                    (&storage as *const libc::sockaddr_storage).cast(),
                    len,
                )
                .build();
                match uring_one(op) {
                    Ok(_) => Ok(sock),
                    Err(e) => {
                        // SAFETY: closing our own socket.
                        unsafe { libc::close(sock) };
                        Err(e)
                    }
                }
            })?;
            println!("connected");
            // SAFETY: the connected socket's fd is ours.
            let mut s = unsafe { TcpStream::from_raw_fd(sock) };
            s.write_all(b"ping\n")?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            print!("{reply}");
            Ok(())
        }
        "kill" => {
            let pid: i32 = a(1).parse().unwrap_or(0);
            let sig: i32 = a(2).parse().unwrap_or(libc::SIGTERM);
            // SAFETY: plain syscall.
            if unsafe { libc::kill(pid, sig) } != 0 {
                return Err(last());
            }
            println!("signalled");
            Ok(())
        }
        "ptrace" => {
            let pid: i32 = a(1).parse().unwrap_or(0);
            // SAFETY: PTRACE_SEIZE with no data.
            if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) } != 0 {
                return Err(last());
            }
            println!("attached");
            Ok(())
        }
        "bpf" => {
            // BPF_PROG_GET_NEXT_ID (11) with a zeroed attr: harmless, needs only CAP_SYS_ADMIN.
            let attr = [0u8; 128];
            // SAFETY: the attr buffer is large enough for the command.
            let rc = unsafe { libc::syscall(libc::SYS_bpf, 11, attr.as_ptr(), attr.len()) };
            if rc < 0 {
                let e = last();
                // ENOENT just means "no program": bpf() itself was allowed.
                if e.raw_os_error() != Some(libc::ENOENT) {
                    return Err(e);
                }
            }
            println!("bpf allowed");
            Ok(())
        }
        "write" => {
            let mut f = std::fs::OpenOptions::new().append(true).open(a(1))?;
            f.write_all(b"tampered\n")?;
            println!("written");
            Ok(())
        }
        "daemonize" => daemonize(a(1), &args[2..]),
        "loop" => bench_loop(a(1), a(2).parse().unwrap_or(1000), a(3)),
        "fork-child" => {
            let status = std::process::Command::new(std::env::current_exe()?)
                .args(&args[1..])
                .status()?;
            println!("child exit {}", status.code().unwrap_or(-1));
            Ok(())
        }
        "wait-file" => {
            while !std::path::Path::new(a(1)).exists() {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            exec_self(&args[2..])
        }
        "move-cgroup" => {
            std::fs::write(
                format!("{}/cgroup.procs", a(1)),
                std::process::id().to_string(),
            )?;
            exec_self(&args[2..])
        }
        _ => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
    }
}

/// A TLS 1.3-shaped ClientHello carrying only the server_name extension.
fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let list_len = (name.len() + 3) as u16;
    let mut ext = vec![0, 0];
    ext.extend((list_len + 2).to_be_bytes());
    ext.extend(list_len.to_be_bytes());
    ext.push(0);
    ext.extend((name.len() as u16).to_be_bytes());
    ext.extend(name);
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.push(0);
    body.extend([0, 2, 0x13, 0x01, 1, 0]);
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![1, 0];
    hs.extend((body.len() as u16).to_be_bytes());
    hs.extend(body);
    let mut rec = vec![22, 3, 1];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

fn print_fd(fd: i32) -> std::io::Result<()> {
    // SAFETY: fd was just returned to us by the kernel.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    print!("{text}");
    Ok(())
}

fn bench_loop(kind: &str, n: u32, arg: &str) -> std::io::Result<()> {
    let start = std::time::Instant::now();
    match kind {
        "open" => {
            let path =
                CString::new(arg).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            for _ in 0..n {
                // SAFETY: valid path; the fd is closed right away.
                let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
                if fd < 0 {
                    return Err(last());
                }
                // SAFETY: our fd.
                unsafe { libc::close(fd) };
            }
        }
        "connect" => {
            let to = addr("127.0.0.1", arg)?;
            for _ in 0..n {
                drop(TcpStream::connect(to)?);
            }
        }
        "exec" => {
            for _ in 0..n {
                std::process::Command::new("/bin/true").status()?;
            }
        }
        _ => return Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
    }
    println!("{}", start.elapsed().as_nanos());
    Ok(())
}

fn retry_eperm<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    for _ in 0..120 {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("gate_probe: EPERM, retrying");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            other => return other,
        }
    }
    f()
}

fn uring_one(op: io_uring::squeue::Entry) -> std::io::Result<i32> {
    let mut ring = io_uring::IoUring::new(4)?;
    // SAFETY: every pointer in `op` outlives the submission (we wait for completion here).
    unsafe {
        ring.submission()
            .push(&op)
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EBUSY))?
    };
    ring.submit_and_wait(1)?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EIO))?;
    if cqe.result() < 0 {
        return Err(std::io::Error::from_raw_os_error(-cqe.result()));
    }
    Ok(cqe.result())
}

fn socket2_like(to: &SocketAddr) -> std::io::Result<i32> {
    let family = if to.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 { Err(last()) } else { Ok(fd) }
}

fn sockaddr(to: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match to {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn exec_self(cmd: &[String]) -> std::io::Result<()> {
    let err = std::os::unix::process::CommandExt::exec(
        std::process::Command::new(std::env::current_exe()?).args(cmd),
    );
    Err(err)
}

fn daemonize(out: &str, cmd: &[String]) -> std::io::Result<()> {
    // SAFETY: fork in a single-threaded helper; the child only calls setsid/fork/exec-ish
    // code paths before running the subcommand.
    match unsafe { libc::fork() } {
        -1 => return Err(last()),
        0 => {}
        _ => {
            println!("parent exits");
            return Ok(());
        }
    }
    // SAFETY: as above.
    unsafe { libc::setsid() };
    // SAFETY: as above.
    match unsafe { libc::fork() } {
        -1 => std::process::exit(1),
        0 => {}
        _ => std::process::exit(0),
    }
    // Let go of the launcher's stdout/stderr, as a daemon does, so whoever waits for the
    // launcher's output is not kept waiting by the daemon.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors of this process.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
    }
    let file = std::fs::File::create(out)?;
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(cmd)
        .stdout(file.try_clone()?)
        .stderr(file)
        .stdin(std::process::Stdio::null())
        .status()?;
    std::fs::write(
        format!("{out}.done"),
        format!("exit {}\n", status.code().unwrap_or(-1)),
    )?;
    let _ = std::path::Path::new(out).as_os_str().as_bytes();
    std::process::exit(0)
}
