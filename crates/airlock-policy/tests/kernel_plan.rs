//! The kernel-plan invariant: whatever the kernel lets through without asking, the
//! user-space evaluator allows (with no "would have" shadow hit), for random policies
//! and random actions. Plus a fixed check of the example policy's plan.
#![allow(clippy::unwrap_used, reason = "tests panic on failure")]

use std::net::{IpAddr, Ipv4Addr};

use airlock_policy::{
    Action, ActionClass, BinarySelector, Destination, OutcomeKind, ParentProcess, Policy,
};
use proptest::prelude::*;

const BINARIES: &[&str] = &[
    "aws",
    "rclone",
    "/usr/bin/curl",
    "/usr/**/git",
    "py*",
    "/opt/*/bin/tool",
];
const PATHS: &[&str] = &["/home/*/.aws/**", "/etc/shadow", "/tmp/*", "**/.env"];
const CIDRS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.0.0/16",
    "192.168.1.0/24",
    "0.0.0.0/0",
    "2001:db8::/32",
    "169.254.169.254",
    "10.1.2.0/24",
    "::/0",
];
const HOSTS: &[&str] = &["*.example.com", "pypi.org"];
const CLASSES: &[&str] = &["exec", "connect", "send", "open"];
const OUTCOMES: &[&str] = &["allow", "deny", "ask"];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(pool)
}

fn list(pool: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    proptest::option::weighted(
        0.35,
        proptest::sample::subsequence(pool, 1..=2).prop_map(|v| {
            let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", items.join(", "))
        }),
    )
}

/// One `[[rule]]` table.
fn rule() -> impl Strategy<Value = String> {
    (
        proptest::option::weighted(0.6, proptest::sample::subsequence(CLASSES, 1..=3)),
        pick(OUTCOMES),
        prop_oneof![6 => Just("enforce"), 2 => Just("shadow"), 1 => Just("off")],
        list(BINARIES),
        list(PATHS),
        list(CIDRS),
        list(HOSTS),
        (
            proptest::option::weighted(0.2, Just("[443, \"8000-8999\"]")),
            proptest::option::weighted(0.2, Just("[0, 1000]")),
            proptest::option::weighted(0.15, Just("[{ position = 1, glob = \"s3\" }]")),
            proptest::option::weighted(0.15, Just("[\"agent-*\"]")),
            proptest::option::weighted(0.15, Just("[\"python3*\"]")),
            proptest::option::weighted(0.15, Just("[\"acme-*\"]")),
        ),
    )
        .prop_map(
            |(
                on,
                outcome,
                mode,
                binary,
                path,
                cidr,
                host,
                (port, uid, argv, user, parent, bucket),
            )| {
                let mut s = format!("outcome = \"{outcome}\"\nmode = \"{mode}\"\n");
                if let Some(on) = on {
                    let items: Vec<String> = on.iter().map(|c| format!("{c:?}")).collect();
                    s += &format!("on = [{}]\n", items.join(", "));
                }
                for (k, v) in [
                    ("binary", binary),
                    ("path", path),
                    ("cidr", cidr),
                    ("host", host),
                ] {
                    if let Some(v) = v {
                        s += &format!("{k} = {v}\n");
                    }
                }
                for (k, v) in [
                    ("port", port),
                    ("uid", uid),
                    ("argv", argv),
                    ("user", user),
                    ("parent", parent),
                    ("s3_bucket", bucket),
                ] {
                    if let Some(v) = v {
                        s += &format!("{k} = {v}\n");
                    }
                }
                s
            },
        )
}

fn policy_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![8 => Just("enforce"), 2 => Just("shadow"), 1 => Just("off")],
        proptest::collection::vec(prop_oneof![3 => Just("allow"), 1 => Just("deny"), 1 => Just("ask")], 4),
        proptest::collection::vec(rule(), 0..8),
    )
        .prop_map(|(mode, defaults, rules)| {
            let mut s = format!(
                "version = 1\nmode = \"{mode}\"\n[defaults]\nexec = \"{}\"\nconnect = \"{}\"\nsend = \"{}\"\nopen = \"{}\"\n[defaults.ask]\napprovers = [\"g\"]\n[groups.g]\n",
                defaults[0], defaults[1], defaults[2], defaults[3]
            );
            for (i, r) in rules.iter().enumerate() {
                s += &format!("\n[[rule]]\nid = \"r{i}\"\n{r}");
            }
            s
        })
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|x| IpAddr::V4(Ipv4Addr::from(x))),
        (0u32..=0xffff).prop_map(|x| IpAddr::V4(Ipv4Addr::from(0x0a01_0000 | x))),
        (0u32..=0xff).prop_map(|x| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | x))),
        (0u32..=0xff).prop_map(|x| IpAddr::V4(Ipv4Addr::from(0xc0a8_0100 | x))),
        Just("169.254.169.254".parse().unwrap()),
        Just("2001:db8::7".parse().unwrap()),
        Just("::ffff:10.1.2.3".parse().unwrap()),
        Just("2a00::1".parse().unwrap()),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    let opt = |p: &'static [&'static str]| proptest::option::of(pick(p).prop_map(str::to_owned));
    (
        proptest::sample::select(ActionClass::ALL.to_vec()),
        opt(&[
            "/usr/bin/aws",
            "/usr/local/bin/rclone",
            "/usr/bin/curl",
            "/usr/lib/git-core/git",
            "/usr/bin/python3",
            "/bin/ls",
            "/opt/x/bin/tool",
        ]),
        proptest::sample::subsequence(vec!["s3", "cp", "--recursive", "ls"], 0..3),
        opt(&[
            "/home/dev/.aws/credentials",
            "/etc/shadow",
            "/tmp/x",
            "/srv/app/.env",
            "/etc/hosts",
        ]),
        (
            proptest::option::of(ip()),
            proptest::option::of(prop_oneof![Just(443u16), Just(8080), any::<u16>()]),
        ),
        (
            opt(&["a.example.com", "pypi.org", "evil.net"]),
            opt(&["acme-reports", "evil"]),
        ),
        (
            proptest::option::of(prop_oneof![Just(0u32), Just(1000), Just(33)]),
            opt(&["agent-1", "root"]),
        ),
        opt(&["/usr/bin/python3.11", "/bin/bash"]),
    )
        .prop_map(
            |(
                class,
                binary,
                args,
                path,
                (ip, port),
                (hostname, s3_bucket),
                (uid, user),
                parent,
            )| {
                let mut a = Action::new(class);
                a.binary = binary.clone();
                a.argv = binary
                    .into_iter()
                    .chain(args.into_iter().map(str::to_owned))
                    .collect();
                a.path = path;
                a.destination = Some(Destination {
                    ip,
                    port,
                    hostname,
                    s3_bucket,
                    ..Destination::default()
                });
                a.uid = uid;
                a.user = user;
                a.parents = parent
                    .into_iter()
                    .map(|b| ParentProcess {
                        pid: 1,
                        binary: Some(b),
                        comm: None,
                    })
                    .collect();
                a
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn kernel_pass_implies_user_space_allow(text in policy_text(), actions in proptest::collection::vec(action(), 16)) {
        let policy = Policy::from_str("gen.toml", &text).unwrap();
        let plan = policy.kernel_plan();
        for a in &actions {
            if plan.passes(a) {
                let d = policy.evaluate(a);
                prop_assert_eq!(d.outcome.kind(), OutcomeKind::Allow, "kernel passed {:?}\nplan {:?}\ndecision {:?}\n{}", a, plan, d, text);
                prop_assert!(d.shadow.iter().all(|h| h.outcome == OutcomeKind::Allow), "shadow hit {:?}", d.shadow);
            }
        }
    }

    #[test]
    fn strictest_plan_passes_only_what_both_pass(a in policy_text(), b in policy_text(), actions in proptest::collection::vec(action(), 16)) {
        let (pa, pb) = (Policy::from_str("a.toml", &a).unwrap().kernel_plan(), Policy::from_str("b.toml", &b).unwrap().kernel_plan());
        let strict = pa.strictest(&pb);
        for x in &actions {
            if strict.passes(x) {
                prop_assert!(pa.passes(x) && pb.passes(x), "{:?}", x);
            }
            if pa.passes(x) && pb.passes(x) && matches!(x.class, ActionClass::Connect | ActionClass::Send) {
                prop_assert!(strict.passes(x), "intersection lost {:?}", x);
            }
        }
    }
}

fn example() -> Policy {
    Policy::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ai-agent-host.toml"),
    )
    .unwrap()
}

#[test]
fn example_plan() {
    let plan = example().kernel_plan();
    assert!(!plan.watch_all_execs && !plan.watch_all_opens, "{plan:?}");
    for b in ["aws", "rclone", "nc", "curl"] {
        assert!(
            plan.watched_binaries
                .contains(&BinarySelector::Name(b.to_owned())),
            "{b}: {plan:?}"
        );
    }
    assert!(
        !plan
            .watched_binaries
            .contains(&BinarySelector::Name("git".to_owned()))
    );
    assert!(
        plan.credential_globs
            .contains(&"/home/*/.aws/**".to_owned())
    );
    let v4: Vec<String> = plan
        .allowed_cidrs
        .iter()
        .filter(|n| matches!(n, ipnet::IpNet::V4(_)))
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        v4,
        [
            "10.0.0.0/8",
            "127.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16"
        ],
        "private networks only; hosts and buckets are decided in user space"
    );
    // fc00::/7 minus the denied IPv6 metadata address: the deny is carved out.
    let in_kernel = |ip: &str| {
        plan.allowed_cidrs
            .iter()
            .any(|n| n.contains(&ip.parse::<IpAddr>().unwrap()))
    };
    assert!(
        in_kernel("::1")
            && in_kernel("fc00::1")
            && in_kernel("fd00:ec2::253")
            && in_kernel("fd00:ec2::255")
    );
    assert!(!in_kernel("fd00:ec2::254") && !in_kernel("2001:db8::1"));
    let v6_addresses: u128 = plan
        .allowed_cidrs
        .iter()
        .filter_map(|n| match n {
            ipnet::IpNet::V6(n) if n.prefix_len() > 7 => Some(1u128 << (128 - n.prefix_len())),
            _ => None,
        })
        .sum();
    assert_eq!(
        v6_addresses,
        (1u128 << 121) - 1 + 1,
        "fc00::/7 minus one address, plus ::1"
    );
    let connect = |ip: &str| {
        Action::connect(Destination {
            ip: Some(ip.parse().unwrap()),
            ..Destination::default()
        })
    };
    assert!(plan.passes(&connect("10.9.9.9")));
    assert!(!plan.passes(&connect("169.254.169.254")));
    assert!(!plan.passes(&connect("151.101.0.223")));
    assert!(plan.passes(&Action::exec("/usr/bin/git", ["git"])));
    assert!(!plan.passes(&Action::exec("/usr/local/bin/aws", ["aws"])));
    assert!(plan.passes(&Action::open("/etc/hosts")));
    assert!(!plan.passes(&Action::open("/home/dev/.aws/credentials")));
}

#[test]
fn deny_inside_allowed_range_is_carved_out() {
    let text = r#"
version = 1
[defaults]
exec = "allow"
connect = "ask"
send = "ask"
open = "allow"
[defaults.ask]
approvers = ["g"]
[groups.g]
[[rule]]
id = "deny-one"
cidr = ["10.1.2.3"]
outcome = "deny"
[[rule]]
id = "allow-ten"
cidr = ["10.0.0.0/8"]
outcome = "allow"
[[rule]]
id = "allow-by-name"
host = ["pypi.org"]
outcome = "allow"
[[rule]]
id = "ask-port"
on = ["send"]
port = [25]
cidr = ["192.168.0.0/16"]
outcome = "ask"
[[rule]]
id = "allow-lan"
cidr = ["192.168.0.0/16"]
outcome = "allow"
[[rule]]
id = "connect-only"
on = ["connect"]
cidr = ["172.16.0.0/12"]
outcome = "allow"
"#;
    let plan = Policy::from_str("p.toml", text).unwrap().kernel_plan();
    let nets: ipnet::IpNet = "10.0.0.0/8".parse().unwrap();
    let total: u64 = plan
        .allowed_cidrs
        .iter()
        .filter(|n| nets.contains(*n))
        .map(|n| 1u64 << (32 - n.prefix_len()))
        .sum();
    assert_eq!(
        total,
        (1 << 24) - 1,
        "10/8 minus one address: {:?}",
        plan.allowed_cidrs
    );
    assert!(
        !plan
            .allowed_cidrs
            .iter()
            .any(|n| n.contains(&"10.1.2.3".parse::<IpAddr>().unwrap()))
    );
    // 192.168/16 had a conditional ask first: not allowed in the kernel.
    assert!(
        !plan
            .allowed_cidrs
            .iter()
            .any(|n| n.contains(&"192.168.1.1".parse::<IpAddr>().unwrap()))
    );
    // A connect-only allow does not cover sends on that socket.
    assert!(
        !plan
            .allowed_cidrs
            .iter()
            .any(|n| n.contains(&"172.16.0.1".parse::<IpAddr>().unwrap()))
    );
}
