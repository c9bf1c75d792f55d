//! One human decision per intent (DESIGN §6): approving `aws s3 cp f s3://reports-q3/`
//! also approves the connect and send that same command makes, and nothing else.
//!
//! When a human approves an exec, its argv is read for what it names — S3 buckets
//! (`s3://bucket/…`), hosts (URLs, `--endpoint-url`, scp/rsync `host:path`, `-h`/`--host` of
//! database dump tools) and files — and an [`IntentGrant`] attaches to that process and its
//! descendants. A later egress or credential-file hold from that tree whose destination is
//! consistent with what was named is settled at once as covered by the grant; anything else
//! (another bucket, another host, an unrelated credential file) is a new request.
//!
//! The payload's own claims (HTTP `Host`, TLS SNI) are never enough: the *address* must be
//! vouched for too — an IP literal named in argv, or a name the process itself resolved to
//! that address (the getaddrinfo probes) — so a process cannot borrow the grant by sending
//! `Host: approved.example` to some other address.

use std::{
    collections::BTreeSet,
    fmt,
    net::IpAddr,
    path::{Component, Path, PathBuf},
    time::Instant,
};

use crate::events::{Action, HeldAction};

/// A host named by an approved command, with the port when the command fixed one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostScope {
    /// Lower-case name or IP literal (IPv6 without brackets).
    pub host: String,
    /// `None`: any port (scp/rsync hosts, `-h` of dump tools).
    pub port: Option<u16>,
}

impl HostScope {
    fn port_ok(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    fn is_address(&self, addr: IpAddr) -> bool {
        self.host
            .parse::<IpAddr>()
            .is_ok_and(|a| a.to_canonical() == addr.to_canonical())
    }

    fn is_name(&self, name: &str) -> bool {
        self.host == normalize_host(name)
    }
}

/// What an approved exec named: the scope of its intent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntentScope {
    /// S3 buckets of `s3://bucket/…` arguments.
    pub buckets: BTreeSet<String>,
    /// Hosts of URLs, `--endpoint-url`, scp/rsync remotes and `-h`/`--host`.
    pub hosts: BTreeSet<HostScope>,
    /// Files named in argv, made absolute against the process's working directory.
    pub files: BTreeSet<PathBuf>,
    /// `--endpoint-url` was given: S3 traffic goes there, not to AWS.
    pub endpoint: bool,
}

impl IntentScope {
    /// Whether the command named nothing a follow-up action could be consistent with.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty() && self.hosts.is_empty() && self.files.is_empty()
    }

    /// S3 buckets without an endpoint override: the traffic goes to AWS itself.
    fn aws_s3(&self) -> bool {
        !self.buckets.is_empty() && !self.endpoint
    }

    /// `name` is one of the hosts named (on `port`), or AWS's virtual host of a bucket named
    /// when no endpoint was given (`reports-q3.s3.eu-west-1.amazonaws.com`).
    fn host_ok(&self, name: &str, port: u16) -> bool {
        self.hosts
            .iter()
            .any(|h| h.is_name(name) && h.port_ok(port))
            || (self.aws_s3()
                && matches!(port, 443 | 80)
                && aws_virtual_host_bucket(name).is_some_and(|b| self.buckets.contains(&b)))
    }
}

/// Reads what `argv` names. `cwd` makes relative file names absolute (`None`: they are
/// kept relative and so never match an opened path, which the kernel reports absolute).
pub fn scope_of(argv: &[String], cwd: Option<&Path>) -> IntentScope {
    let mut scope = IntentScope::default();
    let tool = argv
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or_default();
    let remote_paths = matches!(tool, "scp" | "rsync" | "sftp");
    let dump_tool = matches!(
        tool,
        "pg_dump"
            | "pg_dumpall"
            | "pg_restore"
            | "psql"
            | "mysqldump"
            | "mysql"
            | "mariadb"
            | "mariadb-dump"
    );
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        if dump_tool {
            if arg == "-h" || arg == "--host" {
                if let Some(host) = args.next() {
                    scope.add_host(host, None);
                }
                continue;
            }
            if let Some(host) = arg
                .strip_prefix("--host=")
                .or_else(|| arg.strip_prefix("-h").filter(|h| !h.is_empty()))
            {
                scope.add_host(host, None);
                continue;
            }
        }
        if arg == "--endpoint-url" {
            if let Some(url) = args.next() {
                scope.endpoint |= scope.add_url(url);
            }
            continue;
        }
        let value = if arg.starts_with("--") {
            // `--opt=value`: the value may name something; a bare flag names nothing.
            arg.split_once('=').map(|(_, v)| v)
        } else if arg.starts_with('-') && arg.len() > 1 {
            None
        } else {
            Some(arg.as_str())
        };
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            continue;
        };
        if arg.starts_with("--endpoint-url=") {
            scope.endpoint |= scope.add_url(value);
            continue;
        }
        scope.add_value(value, remote_paths, cwd);
    }
    scope
}

impl IntentScope {
    fn add_host(&mut self, host: &str, port: Option<u16>) {
        let host = normalize_host(host);
        if !host.is_empty() {
            self.hosts.insert(HostScope { host, port });
        }
    }

    /// Adds a URL's host (and port, explicit or the scheme's); false when `url` is not one.
    fn add_url(&mut self, url: &str) -> bool {
        let Ok(uri) = url.parse::<http::Uri>() else {
            return false;
        };
        let Some(host) = uri.host() else { return false };
        let port = uri.port_u16().or_else(|| {
            match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
                Some("http" | "ws") => Some(80),
                Some("https" | "wss") => Some(443),
                Some("ftp") => Some(21),
                Some("ssh" | "sftp" | "scp") => Some(22),
                Some("postgres" | "postgresql") => Some(5432),
                Some("mysql") => Some(3306),
                Some("rsync") => Some(873),
                _ => None,
            }
        });
        self.add_host(host, port);
        true
    }

    fn add_value(&mut self, value: &str, remote_paths: bool, cwd: Option<&Path>) {
        if let Some(rest) = value.strip_prefix("s3://") {
            let bucket = rest.split('/').next().unwrap_or_default();
            if !bucket.is_empty() {
                self.buckets.insert(bucket.to_owned());
            }
            return;
        }
        if value.contains("://") {
            self.add_url(value);
            return;
        }
        if remote_paths && let Some(host) = remote_host(value) {
            self.add_host(host, None);
            return;
        }
        let path = Path::new(value);
        let absolute = match cwd {
            Some(cwd) if path.is_relative() => cwd.join(path),
            _ => path.to_owned(),
        };
        self.files.insert(normalize_path(&absolute));
    }
}

/// The host of an scp/rsync remote: `[user@]host:path`, `[user@][v6]:path`, `host::module`.
/// A `:` after a `/` is a local file name, as scp reads it.
fn remote_host(arg: &str) -> Option<&str> {
    let arg = arg.split_once('@').map_or(
        arg,
        |(user, rest)| {
            if user.contains('/') { arg } else { rest }
        },
    );
    if let Some(v6) = arg.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        return rest.starts_with(':').then_some(host);
    }
    let (host, _) = arg.split_once(':')?;
    (!host.is_empty() && !host.contains('/')).then_some(host)
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// `.` and `..` resolved lexically (the file need not exist; symlinks are not followed, as
/// the kernel's `d_path` of the opened file would show the link's target anyway only if the
/// command named the target).
fn normalize_path(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `bucket.s3.amazonaws.com`, `bucket.s3.eu-west-1.amazonaws.com`, `bucket.s3-eu-west-1…`.
fn aws_virtual_host_bucket(name: &str) -> Option<String> {
    let name = normalize_host(name);
    let (bucket, rest) = name.split_once('.')?;
    ((rest.starts_with("s3.") || rest.starts_with("s3-")) && rest.ends_with(".amazonaws.com"))
        .then(|| bucket.to_owned())
        .filter(|b| !b.is_empty())
}

/// A held action as the intent rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A connect or send: the address, and what names it.
    Net {
        address: IpAddr,
        port: u16,
        /// The name the process itself resolved to `address` (getaddrinfo probes).
        resolved: Option<String>,
        /// The name the payload claims (HTTP `Host`, TLS SNI).
        claimed: Option<String>,
        /// The S3 bucket the payload names.
        bucket: Option<String>,
    },
    /// An open of a credential file (absolute path).
    File(PathBuf),
}

impl Target {
    /// The target of a held connect/send or open; `None` for an exec, which is always asked.
    pub fn of(held: &HeldAction, resolved: Option<String>) -> Option<Self> {
        match &held.what {
            Action::Exec { .. } => None,
            Action::Net { dest, payload, .. } => {
                let named = crate::naming::name(payload);
                Some(Self::Net {
                    address: dest.addr,
                    port: dest.port,
                    resolved,
                    claimed: named.hostname,
                    bucket: named.bucket,
                })
            }
            Action::Open { path, .. } => Some(Self::File(normalize_path(Path::new(path)))),
        }
    }
}

/// Why a held action is consistent with an intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cover {
    Bucket(String),
    Host(String),
    File(PathBuf),
}

impl fmt::Display for Cover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bucket(b) => write!(f, "bucket s3://{b}"),
            Self::Host(h) => write!(f, "host {h}"),
            Self::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

/// Whether `target` is consistent with `scope`, and by what.
pub fn covers(scope: &IntentScope, target: &Target) -> Option<Cover> {
    match target {
        Target::File(path) => scope
            .files
            .contains(path)
            .then(|| Cover::File(path.clone())),
        Target::Net {
            address,
            port,
            resolved,
            claimed,
            bucket,
        } => {
            // The address must be vouched for by the command itself: an IP literal it
            // named, or a name it named that this process resolved to this address.
            let literal = scope
                .hosts
                .iter()
                .find(|h| h.is_address(*address) && h.port_ok(*port));
            let by_name = resolved
                .as_deref()
                .filter(|n| scope.host_ok(n, *port))
                .map(normalize_host);
            if literal.is_none() && by_name.is_none() {
                return None;
            }
            // What the payload claims must agree (a Host header naming another site through
            // an approved address is another destination, e.g. a shared proxy).
            if let Some(claimed) = claimed
                && !scope.host_ok(claimed, *port)
                && literal.is_none_or(|h| !h.is_name(claimed))
            {
                return None;
            }
            if let Some(bucket) = bucket {
                return scope
                    .buckets
                    .contains(bucket)
                    .then(|| Cover::Bucket(bucket.clone()));
            }
            let host = by_name
                .or_else(|| literal.map(|h| h.host.clone()))
                .unwrap_or_default();
            Some(Cover::Host(format!("{host}:{port}")))
        }
    }
}

/// An approval that covers the follow-up actions of one process tree.
#[derive(Debug, Clone)]
pub struct IntentGrant {
    /// The approved exec's request id.
    pub request_id: String,
    /// Who approved it.
    pub approvers: Vec<String>,
    /// The approved process.
    pub tgid: u32,
    /// Its start time (clock ticks since boot, /proc/PID/stat): a reused pid is not it.
    pub start_time: Option<u64>,
    /// End of a duration grant shorter than the process's life.
    pub until: Option<Instant>,
    pub scope: IntentScope,
}

/// A held action found consistent with a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Covered {
    pub request_id: String,
    pub approvers: Vec<String>,
    /// The process that holds the grant (the actor or one of its ancestors).
    pub holder: u32,
    pub cover: Cover,
}

/// One process in a held action's lineage: pid and start time.
pub type Lineage = Vec<(u32, Option<u64>)>;

/// The live intent grants.
#[derive(Debug, Default)]
pub struct Intents {
    grants: Vec<IntentGrant>,
}

impl Intents {
    pub fn add(&mut self, grant: IntentGrant) {
        self.grants.push(grant);
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// Ends the grants of a process that exited; returns how many ended.
    pub fn process_exited(&mut self, tgid: u32) -> usize {
        let before = self.grants.len();
        self.grants.retain(|g| g.tgid != tgid);
        before - self.grants.len()
    }

    /// The grant covering `target` for a process whose lineage (itself first, then its
    /// ancestors) is `lineage`, at `now`. Expired duration grants are dropped on the way.
    pub fn cover(&mut self, lineage: &Lineage, target: &Target, now: Instant) -> Option<Covered> {
        self.grants.retain(|g| g.until.is_none_or(|u| now < u));
        self.grants.iter().find_map(|g| {
            let in_tree = lineage.iter().any(|(pid, start)| {
                *pid == g.tgid && (g.start_time.is_none() || *start == g.start_time)
            });
            if !in_tree {
                return None;
            }
            covers(&g.scope, target).map(|cover| Covered {
                request_id: g.request_id.clone(),
                approvers: g.approvers.clone(),
                holder: g.tgid,
                cover,
            })
        })
    }
}

/// How deep the lineage of a held action is followed.
const MAX_DEPTH: usize = 32;

/// `pid` and its ancestors, nearest first, each with its start time, read from /proc.
pub fn lineage(pid: u32) -> Lineage {
    let mut out = Vec::new();
    let mut next = pid;
    while next > 1 && out.len() < MAX_DEPTH {
        let Some((ppid, start)) = stat(next) else {
            break;
        };
        out.push((next, Some(start)));
        next = ppid;
    }
    out
}

/// Parent pid and start time of `pid` (fields 4 and 22 of /proc/PID/stat).
pub fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may hold spaces and parentheses; the rest follows the last ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): field N is fields[N - 3].
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

/// The working directory of `pid` (relative argv names are relative to it).
pub fn cwd(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn host(h: &str, port: Option<u16>) -> HostScope {
        HostScope {
            host: h.into(),
            port,
        }
    }

    type ScopeCase<'a> = (&'a str, &'a [&'a str], &'a [HostScope], &'a [&'a str], bool);

    #[test]
    fn argv_names_buckets_hosts_and_files() {
        let cwd = Path::new("/work/dir");
        // argv, buckets, hosts, files, endpoint override
        let cases: &[ScopeCase] = &[
            (
                "aws s3 cp report.csv s3://reports-q3/2026/q3.csv",
                &["reports-q3"],
                &[],
                // Sub-commands read as file names too: harmless, an open matches exact paths.
                &["/work/dir/s3", "/work/dir/cp", "/work/dir/report.csv"],
                false,
            ),
            (
                "aws --endpoint-url http://192.0.2.10:5000 s3 cp ../f s3://b/k",
                &["b"],
                &[host("192.0.2.10", Some(5000))],
                &["/work/dir/s3", "/work/dir/cp", "/work/f"],
                true,
            ),
            (
                "aws s3 sync /data s3://Bkt --endpoint-url=https://MinIO.lan.",
                &["Bkt"],
                &[host("minio.lan", Some(443))],
                &["/work/dir/s3", "/work/dir/sync", "/data"],
                true,
            ),
            (
                "scp -i /root/.ssh/deploy_key dump.sql backup@db.example:/srv/",
                &[],
                &[host("db.example", None)],
                &["/root/.ssh/deploy_key", "/work/dir/dump.sql"],
                false,
            ),
            (
                "/usr/bin/rsync -a ./out [2001:db8::7]:/x mirror::module",
                &[],
                &[host("2001:db8::7", None), host("mirror", None)],
                &["/work/dir/out"],
                false,
            ),
            (
                "pg_dump -h db1.internal --port 5432 -f /tmp/out.sql app",
                &[],
                &[host("db1.internal", None)],
                &["/work/dir/5432", "/tmp/out.sql", "/work/dir/app"],
                false,
            ),
            (
                "mysqldump -hdb2 --host=db3 shop",
                &[],
                &[host("db2", None), host("db3", None)],
                &["/work/dir/shop"],
                false,
            ),
            (
                "curl -T f https://user:pw@upload.example/put postgresql://db4/app",
                &[],
                &[host("upload.example", Some(443)), host("db4", Some(5432))],
                &["/work/dir/f"],
                false,
            ),
            // Not scp: `host:path` is a file name to other tools.
            ("cp a:b /tmp", &[], &[], &["/work/dir/a:b", "/tmp"], false),
        ];
        for (cmd, buckets, hosts, files, endpoint) in cases {
            let s = scope_of(&argv(cmd), Some(cwd));
            let want_buckets: BTreeSet<String> = buckets.iter().map(|b| (*b).to_owned()).collect();
            assert_eq!(s.buckets, want_buckets, "{cmd}");
            assert_eq!(s.hosts, hosts.iter().cloned().collect(), "{cmd}");
            let want_files: BTreeSet<PathBuf> = files.iter().map(PathBuf::from).collect();
            assert_eq!(s.files, want_files, "{cmd}");
            assert_eq!(s.endpoint, *endpoint, "{cmd}");
        }
    }

    fn net(
        address: &str,
        port: u16,
        resolved: Option<&str>,
        claimed: Option<&str>,
        bucket: Option<&str>,
    ) -> Target {
        Target::Net {
            address: address.parse().expect("ip"),
            port,
            resolved: resolved.map(str::to_owned),
            claimed: claimed.map(str::to_owned),
            bucket: bucket.map(str::to_owned),
        }
    }

    #[test]
    fn follow_up_actions_consistent_with_the_intent_are_covered() {
        let moto = scope_of(
            &argv("aws s3 cp f s3://reports-q3/k --endpoint-url http://192.0.2.10:5000"),
            Some(Path::new("/w")),
        );
        let aws = scope_of(&argv("aws s3 cp f s3://reports-q3/"), Some(Path::new("/w")));
        let named = scope_of(
            &argv("curl -T f https://upload.example/put"),
            Some(Path::new("/w")),
        );
        let scp = scope_of(
            &argv("scp -i /root/.ssh/deploy f backup@db.example:/srv/"),
            Some(Path::new("/w")),
        );
        let bucket = |b: &str| Some(Cover::Bucket(b.into()));
        let host = |h: &str| Some(Cover::Host(h.into()));
        let cases: Vec<(&str, &IntentScope, Target, Option<Cover>)> = vec![
            // The approved upload: path-style to the endpoint, the bucket named.
            (
                "same bucket, endpoint address",
                &moto,
                net(
                    "192.0.2.10",
                    5000,
                    None,
                    Some("192.0.2.10"),
                    Some("reports-q3"),
                ),
                bucket("reports-q3"),
            ),
            (
                "held at connect: the endpoint's address",
                &moto,
                net("192.0.2.10", 5000, None, None, None),
                host("192.0.2.10:5000"),
            ),
            (
                "v4-mapped address",
                &moto,
                net("::ffff:192.0.2.10", 5000, None, None, None),
                host("192.0.2.10:5000"),
            ),
            (
                "another bucket on the same endpoint",
                &moto,
                net("192.0.2.10", 5000, None, Some("192.0.2.10"), Some("other")),
                None,
            ),
            (
                "another port on the endpoint",
                &moto,
                net("192.0.2.10", 5001, None, None, None),
                None,
            ),
            (
                "another host",
                &moto,
                net("192.0.2.11", 5000, None, None, None),
                None,
            ),
            (
                "the endpoint's name claimed to another address",
                &moto,
                net(
                    "203.0.113.9",
                    5000,
                    None,
                    Some("192.0.2.10"),
                    Some("reports-q3"),
                ),
                None,
            ),
            (
                "AWS itself: virtual host of the bucket, resolved by the process",
                &aws,
                net(
                    "52.0.0.1",
                    443,
                    Some("reports-q3.s3.us-east-1.amazonaws.com"),
                    Some("reports-q3.s3.us-east-1.amazonaws.com"),
                    Some("reports-q3"),
                ),
                bucket("reports-q3"),
            ),
            (
                "AWS: the bucket's SNI sent to an address resolved for nothing",
                &aws,
                net(
                    "203.0.113.9",
                    443,
                    None,
                    Some("reports-q3.s3.amazonaws.com"),
                    Some("reports-q3"),
                ),
                None,
            ),
            (
                "AWS: another bucket's virtual host",
                &aws,
                net("52.0.0.1", 443, Some("exfil.s3.amazonaws.com"), None, None),
                None,
            ),
            (
                "AWS: the generic endpoint hides the bucket (TLS path style)",
                &aws,
                net("52.0.0.1", 443, Some("s3.amazonaws.com"), None, None),
                None,
            ),
            (
                "an endpoint override: AWS is not what was approved",
                &moto,
                net(
                    "52.0.0.1",
                    443,
                    Some("reports-q3.s3.amazonaws.com"),
                    None,
                    Some("reports-q3"),
                ),
                None,
            ),
            (
                "a URL host, resolved by the process",
                &named,
                net(
                    "198.51.100.7",
                    443,
                    Some("Upload.Example."),
                    Some("upload.example"),
                    None,
                ),
                host("upload.example:443"),
            ),
            (
                "a URL host claimed in SNI only",
                &named,
                net("198.51.100.7", 443, None, Some("upload.example"), None),
                None,
            ),
            (
                "an approved address with another site in the Host header",
                &named,
                net(
                    "198.51.100.7",
                    443,
                    Some("upload.example"),
                    Some("evil.example"),
                    None,
                ),
                None,
            ),
            (
                "scp host on any port",
                &scp,
                net("10.1.1.1", 22, Some("db.example"), None, None),
                host("db.example:22"),
            ),
            (
                "the key named by -i",
                &scp,
                Target::File("/root/.ssh/deploy".into()),
                Some(Cover::File("/root/.ssh/deploy".into())),
            ),
            (
                "an unrelated credential file",
                &scp,
                Target::File("/root/.ssh/id_ed25519".into()),
                None,
            ),
            (
                "aws reading its own credentials was not named",
                &aws,
                Target::File("/root/.aws/credentials".into()),
                None,
            ),
        ];
        for (what, scope, target, want) in cases {
            assert_eq!(covers(scope, &target), want, "{what}");
        }
    }

    fn grant(tgid: u32, start: u64, until: Option<Instant>) -> IntentGrant {
        IntentGrant {
            request_id: format!("req-{tgid}"),
            approvers: vec!["alice".into()],
            tgid,
            start_time: Some(start),
            until,
            scope: scope_of(
                &argv("aws s3 cp f s3://a/ --endpoint-url http://192.0.2.10:5000"),
                None,
            ),
        }
    }

    #[test]
    fn grants_cover_the_process_tree_for_its_life_or_duration() {
        let now = Instant::now();
        let mut intents = Intents::default();
        intents.add(grant(100, 7, None));
        let to_a = net("192.0.2.10", 5000, None, None, Some("a"));
        let to_b = net("192.0.2.10", 5000, None, None, Some("b"));

        let got = intents.cover(&vec![(100, Some(7)), (50, Some(1))], &to_a, now);
        assert_eq!(
            got.map(|c| (c.request_id, c.holder, c.cover)),
            Some(("req-100".into(), 100, Cover::Bucket("a".into()))),
            "the approved process"
        );
        assert!(
            intents
                .cover(&vec![(300, Some(9)), (100, Some(7))], &to_a, now)
                .is_some(),
            "a child"
        );
        assert!(
            intents.cover(&vec![(100, Some(7))], &to_b, now).is_none(),
            "another bucket"
        );
        assert!(
            intents
                .cover(&vec![(301, Some(9)), (50, Some(1))], &to_a, now)
                .is_none(),
            "a sibling (same parent, not a descendant)"
        );
        assert!(
            intents.cover(&vec![(100, Some(8))], &to_a, now).is_none(),
            "a reused pid"
        );
        assert_eq!(intents.process_exited(100), 1);
        assert!(intents.is_empty());
        assert!(
            intents.cover(&vec![(100, Some(7))], &to_a, now).is_none(),
            "ended with the process"
        );

        intents.add(grant(200, 3, Some(now + Duration::from_secs(60))));
        assert!(intents.cover(&vec![(200, Some(3))], &to_a, now).is_some());
        assert!(
            intents
                .cover(&vec![(200, Some(3))], &to_a, now + Duration::from_secs(61))
                .is_none(),
            "a duration grant ends first"
        );
        assert!(intents.is_empty(), "the expired grant is dropped");
    }

    #[test]
    fn reads_the_lineage_of_this_process() {
        let me = std::process::id();
        let chain = lineage(me);
        assert_eq!(chain.first().map(|(p, _)| *p), Some(me));
        let (ppid, start) = stat(me).expect("stat");
        assert_eq!(chain.get(1).map(|(p, _)| *p), Some(ppid).filter(|p| *p > 1));
        assert_eq!(chain[0].1, Some(start));
        assert_eq!(cwd(me), std::env::current_dir().ok());
    }
}
