//! Deterministic generator of runtime-shaped samples with known secrets and look-alikes.
//! Shared by the corpus test (which writes/checks `corpus/masking.jsonl`), the property
//! tests and the benchmark. Fixed seeds; a tiny SplitMix64 keeps it free of RNG-version drift.

#![allow(dead_code, reason = "each user of this module uses a different part")]

use serde_json::{Value, json};

/// SplitMix64: deterministic, dependency-free, not for cryptography.
pub struct Rng(std::cell::Cell<u64>);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(std::cell::Cell::new(seed))
    }
    pub fn next(&self) -> u64 {
        self.0.set(self.0.get().wrapping_add(0x9E37_79B9_7F4A_7C15));
        let mut z = self.0.get();
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a, T>(&self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    pub fn chars(&self, set: &[u8], n: usize) -> String {
        (0..n).map(|_| char::from(*self.pick(set))).collect()
    }
    pub fn digits(&self, n: usize) -> String {
        self.chars(DIGITS, n)
    }
}

pub const DIGITS: &[u8] = b"0123456789";
pub const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
pub const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
pub const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
pub const HEX: &[u8] = b"0123456789abcdef";
const AWS_ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A generated secret: its value and the kind the masker must report.
#[derive(Clone, Debug)]
pub struct Secret {
    pub kind: &'static str,
    pub value: String,
}

fn s(kind: &'static str, value: String) -> Secret {
    Secret { kind, value }
}

/// Mixed-class random token that passes for a real credential.
pub fn token(r: &Rng, n: usize) -> String {
    loop {
        let t = r.chars(ALNUM, n);
        let b = t.as_bytes();
        if b.iter().any(u8::is_ascii_digit)
            && b.iter().any(u8::is_ascii_uppercase)
            && b.iter().any(u8::is_ascii_lowercase)
        {
            return t;
        }
    }
}

pub fn aws_id(r: &Rng) -> String {
    format!("{}{}", r.pick(&["AKIA", "ASIA"]), r.chars(AWS_ID, 16))
}
pub fn aws_secret(r: &Rng) -> String {
    loop {
        let t = r.chars(B64, 40);
        if t.contains('/') || t.contains('+') {
            return t;
        }
    }
}
pub fn github(r: &Rng) -> String {
    if r.below(4) == 0 {
        format!("github_pat_{}_{}", token(r, 22), token(r, 59))
    } else {
        format!(
            "{}{}",
            r.pick(&["ghp_", "gho_", "ghs_", "ghu_"]),
            token(r, 36)
        )
    }
}
pub fn gitlab(r: &Rng) -> String {
    format!("glpat-{}", token(r, 20))
}
pub fn slack(r: &Rng) -> String {
    format!(
        "{}{}-{}-{}",
        r.pick(&["xoxb-", "xoxp-"]),
        r.digits(11),
        r.digits(13),
        token(r, 24)
    )
}
pub fn stripe(r: &Rng) -> String {
    format!(
        "{}{}",
        r.pick(&["sk_live_", "rk_live_", "sk_test_"]),
        token(r, 24 + r.below(75))
    )
}
pub fn openai(r: &Rng) -> String {
    if r.below(2) == 0 {
        format!("sk-proj-{}", token(r, 48))
    } else {
        format!("sk-{}T3BlbkFJ{}", token(r, 20), token(r, 20))
    }
}
pub fn anthropic(r: &Rng) -> String {
    format!("sk-ant-api03-{}-{}AA", token(r, 60), token(r, 30))
}
pub fn gcp(r: &Rng) -> String {
    format!("AIza{}", r.chars(B64URL, 35))
}
pub fn npm(r: &Rng) -> String {
    format!("npm_{}", token(r, 36))
}
pub fn azure(r: &Rng) -> String {
    format!("{}==", r.chars(B64, 86))
}
fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
pub fn jwt(r: &Rng) -> String {
    let alg = r.pick(&["HS256", "RS256", "ES256"]);
    let header = b64url(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
    let payload = b64url(
        format!(
            r#"{{"sub":"{}","iat":{},"exp":{},"scope":"read write"}}"#,
            r.digits(8),
            1_700_000_000 + r.below(9_999_999),
            1_800_000_000 + r.below(9_999_999)
        )
        .as_bytes(),
    );
    format!("{header}.{payload}.{}", r.chars(B64URL, 43))
}
pub fn pem(r: &Rng, escaped_newlines: bool) -> String {
    let label = r.pick(&[
        "RSA PRIVATE KEY",
        "PRIVATE KEY",
        "EC PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
    ]);
    let nl = if escaped_newlines { "\\n" } else { "\n" };
    let body: Vec<String> = (0..4 + r.below(6)).map(|_| r.chars(B64, 64)).collect();
    format!(
        "-----BEGIN {label}-----{nl}{}{nl}-----END {label}-----",
        body.join(nl)
    )
}
pub fn password(r: &Rng) -> String {
    const WORDS: &[&str] = &[
        "Summer", "tiger", "Blue", "rocket", "Pass", "kanga", "Secure", "moon", "Admin", "zebra",
    ];
    match r.below(3) {
        0 => format!(
            "{}{}{}",
            r.pick(WORDS),
            r.pick(WORDS),
            r.digits(2 + r.below(3))
        ),
        1 => format!(
            "{}{}!{}",
            r.pick(WORDS),
            r.digits(3),
            r.pick(&["#", "%", "^", "*", "?"])
        ),
        _ => token(r, 12 + r.below(10)),
    }
}
pub fn email(r: &Rng) -> String {
    const FIRST: &[&str] = &[
        "jane", "john", "maria", "li", "ahmed", "olga", "sam", "priya",
    ];
    const LAST: &[&str] = &[
        "doe", "smith", "garcia", "wang", "khan", "ivanova", "lee", "patel",
    ];
    const DOM: &[&str] = &[
        "example.com",
        "acme.io",
        "mail.example.co.uk",
        "corp.example.org",
        "gmail.com",
    ];
    let sep = r.pick(&[".", "_", "", "+ops."]);
    format!(
        "{}{sep}{}{}@{}",
        r.pick(FIRST),
        r.pick(LAST),
        if r.below(3) == 0 {
            r.digits(2)
        } else {
            String::new()
        },
        r.pick(DOM)
    )
}
pub fn phone(r: &Rng) -> String {
    let area = format!("{}{}", 2 + r.below(8), r.digits(2));
    match r.below(5) {
        0 => format!("+1 {area} {} {}", r.digits(3), r.digits(4)),
        1 => format!("+44 20 {} {}", r.digits(4), r.digits(4)),
        2 => format!("({area}) {}-{}", r.digits(3), r.digits(4)),
        3 => format!("{area}-{}-{}", r.digits(3), r.digits(4)),
        _ => format!("+49{}{}", 1 + r.below(9), r.digits(9)),
    }
}
fn luhn_complete(prefix: &str, len: usize, r: &Rng) -> String {
    let mut d = format!("{prefix}{}", r.digits(len - prefix.len() - 1));
    for c in 0..10u8 {
        let cand = format!("{d}{c}");
        if airlock_mask::validate::luhn(&cand) {
            d = cand;
            break;
        }
    }
    d
}
pub fn card(r: &Rng) -> String {
    let (prefix, len) = *r.pick(&[
        ("4", 16),
        ("51", 16),
        ("55", 16),
        ("2221", 16),
        ("34", 15),
        ("37", 15),
        ("6011", 16),
    ]);
    let d = luhn_complete(prefix, len, r);
    match r.below(3) {
        0 => d,
        1 if len == 16 => (0..4)
            .map(|i| &d[i * 4..i * 4 + 4])
            .collect::<Vec<_>>()
            .join(" "),
        _ if len == 16 => (0..4)
            .map(|i| &d[i * 4..i * 4 + 4])
            .collect::<Vec<_>>()
            .join("-"),
        _ => format!("{} {} {}", &d[..4], &d[4..10], &d[10..]),
    }
}
fn iban_check(country: &str, bban: &str) -> String {
    let mut rem = 0u32;
    for c in format!("{bban}{country}00").bytes() {
        rem = if c.is_ascii_digit() {
            (rem * 10 + u32::from(c - b'0')) % 97
        } else {
            (rem * 100 + u32::from(c - b'A' + 10)) % 97
        };
    }
    format!("{:02}", 98 - rem)
}
pub fn iban(r: &Rng) -> String {
    let (country, bban) = match r.below(4) {
        0 => ("DE", r.digits(18)),
        1 => (
            "GB",
            format!(
                "{}{}",
                r.chars(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4),
                r.digits(14)
            ),
        ),
        2 => ("FR", r.digits(23)),
        _ => (
            "NL",
            format!(
                "{}{}",
                r.chars(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4),
                r.digits(10)
            ),
        ),
    };
    let compact = format!("{country}{}{bban}", iban_check(country, &bban));
    if r.below(2) == 0 {
        compact
    } else {
        compact
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}
pub fn ssn(r: &Rng) -> String {
    format!(
        "{:03}-{:02}-{:04}",
        1 + r.below(665),
        1 + r.below(98),
        1 + r.below(9998)
    )
}

/// One secret of a random kind that is detectable without context (no bare passwords),
/// for property tests and the benchmark.
pub fn any_secret(r: &Rng) -> Secret {
    match r.below(16) {
        0 => s("AWS_ACCESS_KEY_ID", aws_id(r)),
        1 => s("GITHUB_TOKEN", github(r)),
        2 => s("GITLAB_TOKEN", gitlab(r)),
        3 => s("SLACK_TOKEN", slack(r)),
        4 => s("STRIPE_KEY", stripe(r)),
        5 => s("OPENAI_KEY", openai(r)),
        6 => s("ANTHROPIC_KEY", anthropic(r)),
        7 => s("GCP_API_KEY", gcp(r)),
        8 => s("NPM_TOKEN", npm(r)),
        9 => s("JWT", jwt(r)),
        10 => s("PRIVATE_KEY", pem(r, r.below(2) == 0)),
        11 => s("EMAIL", email(r)),
        12 => s("PHONE", phone(r)),
        13 => s("CREDIT_CARD", card(r)),
        14 => s("IBAN", iban(r)),
        _ => s("US_SSN", ssn(r)),
    }
}

/// Harmless look-alikes that must NOT be masked.
pub fn lookalike(r: &Rng) -> String {
    let uuid = |r: &Rng| {
        format!(
            "{}-{}-4{}-a{}-{}",
            r.chars(HEX, 8),
            r.chars(HEX, 4),
            r.chars(HEX, 3),
            r.chars(HEX, 3),
            r.chars(HEX, 12)
        )
    };
    match r.below(14) {
        0 => uuid(r),
        1 => r.chars(HEX, 40),
        2 => format!("sha256:{}", r.chars(HEX, 64)),
        3 => format!(
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA{}",
            r.chars(B64, 200 + r.below(400))
        ),
        4 => format!("v{}.{}.{}", r.below(20), r.below(40), r.below(100)),
        5 => format!(
            "2024-{:02}-{:02}T{:02}:{:02}:{:02}.{}Z",
            1 + r.below(12),
            1 + r.below(28),
            r.below(24),
            r.below(60),
            r.below(60),
            r.digits(3)
        ),
        6 => format!(
            "/var/lib/app/{}/{}.log",
            r.pick(&["cache", "data", "tmp"]),
            r.chars(HEX, 12)
        ),
        7 => format!("{}", 1_600_000_000_000u64 + r.next() % 200_000_000_000),
        8 => format!("10.{}.{}.{}", r.below(256), r.below(256), r.below(256)),
        9 => format!("order #{}{}", 1 + r.below(9), r.digits(7)),
        10 => format!(
            "{}@{}.{}.{}",
            r.pick(&["lodash", "react", "serde"]),
            r.below(20),
            r.below(30),
            r.below(10)
        ),
        11 => format!(
            "git@github.com:{}/{}.git",
            r.pick(&["acme", "rust-lang"]),
            r.pick(&["api", "regex"])
        ),
        12 => format!("icon@2x.png x-trace={}", r.chars(HEX, 32)),
        _ => format!("ETag: \"{}\"", r.chars(HEX, 32)),
    }
}

/// A corpus sample in the JSONL schema of `corpus/masking.jsonl`.
fn sample(id: usize, api: &str, input: Value, secrets: &[Secret], note: &str) -> Value {
    let secrets: Vec<Value> = secrets
        .iter()
        .map(|s| json!({"kind": s.kind, "value": s.value}))
        .collect();
    json!({"id": id, "api": api, "input": input, "secrets": secrets, "note": note})
}

fn host(r: &Rng) -> String {
    format!(
        "{}.{}",
        r.pick(&["db", "db-prod-1", "api", "warehouse"]),
        r.pick(&["internal", "example.com", "corp.example.net"])
    )
}

/// Builds `n` labelled samples with the given seed.
pub fn corpus(seed: u64, n: usize) -> Vec<Value> {
    let r = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    for id in 0..n {
        let v = match r.below(33) {
            0 => {
                let pw = password(&r);
                let h = host(&r);
                sample(
                    id,
                    "argv",
                    json!([
                        format!("PGPASSWORD={pw}"),
                        "pg_dump",
                        "-h",
                        h,
                        "-U",
                        "app",
                        "shop"
                    ]),
                    &[s("PASSWORD", pw)],
                    "env prefix",
                )
            }
            1 => {
                let pw = password(&r);
                let h = host(&r);
                sample(
                    id,
                    "argv",
                    json!([
                        "mysqldump",
                        "-u",
                        "root",
                        format!("-p{pw}"),
                        "-h",
                        h,
                        "--all-databases"
                    ]),
                    &[s("PASSWORD", pw)],
                    "mysql -pX",
                )
            }
            2 => {
                let k = r.chars(B64, 43) + "=";
                sample(
                    id,
                    "argv",
                    json!([
                        "aws",
                        "s3",
                        "cp",
                        "dump.sql",
                        format!("s3://exports-{}/dump.sql", r.digits(4)),
                        "--sse-c",
                        "AES256",
                        "--sse-c-key",
                        k
                    ]),
                    &[s("SECRET", k)],
                    "sse-c key",
                )
            }
            3 => {
                let t = jwt(&r);
                sample(
                    id,
                    "argv",
                    json!([
                        "curl",
                        "-sS",
                        "-H",
                        format!("Authorization: Bearer {t}"),
                        format!("https://{}/v1/export", host(&r))
                    ]),
                    &[s("JWT", t)],
                    "curl bearer",
                )
            }
            4 => {
                let pw = password(&r);
                sample(
                    id,
                    "argv",
                    json!([
                        "curl",
                        "-u",
                        format!("admin:{pw}"),
                        "https://api.example.com/v2/users"
                    ]),
                    &[s("PASSWORD", pw)],
                    "curl -u",
                )
            }
            5 => {
                let t = if r.below(2) == 0 {
                    s("GITLAB_TOKEN", gitlab(&r))
                } else {
                    s("GITHUB_TOKEN", github(&r))
                };
                sample(
                    id,
                    "argv",
                    json!([
                        "git",
                        "clone",
                        format!("https://oauth2:{}@git.example.com/team/app.git", t.value)
                    ]),
                    &[t],
                    "token in url",
                )
            }
            6 => {
                let pw = password(&r);
                let h = host(&r);
                sample(
                    id,
                    "argv",
                    json!([
                        "psql",
                        format!("postgresql://reporter:{pw}@{h}:5432/analytics"),
                        "-c",
                        "select 1"
                    ]),
                    &[s("PASSWORD", pw)],
                    "db url",
                )
            }
            7 => {
                let pw = password(&r);
                let (tool, args): (&str, Vec<String>) = match r.below(3) {
                    0 => (
                        "docker",
                        vec![
                            "login".into(),
                            "-u".into(),
                            "ci".into(),
                            "-p".into(),
                            pw.clone(),
                            "registry.example.com".into(),
                        ],
                    ),
                    1 => (
                        "redis-cli",
                        vec![
                            "-h".into(),
                            "cache".into(),
                            "-a".into(),
                            pw.clone(),
                            "FLUSHALL".into(),
                        ],
                    ),
                    _ => (
                        "sshpass",
                        vec![
                            "-p".into(),
                            pw.clone(),
                            "ssh".into(),
                            "deploy@10.0.3.7".into(),
                        ],
                    ),
                };
                let mut argv = vec![tool.to_owned()];
                argv.extend(args);
                sample(
                    id,
                    "argv",
                    json!(argv),
                    &[s("PASSWORD", pw)],
                    "tool password flag",
                )
            }
            8 => {
                let e = email(&r);
                sample(
                    id,
                    "argv",
                    json!(["mail", "-s", "Quarterly report", e, "<", "/tmp/report.txt"]),
                    &[s("EMAIL", e)],
                    "mail recipient",
                )
            }
            9 => {
                let la = lookalike(&r);
                sample(
                    id,
                    "argv",
                    json!([
                        "git",
                        "log",
                        "--format=%H %s",
                        la,
                        "--",
                        format!("src/{}.rs", r.pick(&["main", "lib", "token_parser"]))
                    ]),
                    &[],
                    "negative argv",
                )
            }
            10 => {
                let (name, sec) = match r.below(10) {
                    0 => ("AWS_SECRET_ACCESS_KEY", s("AWS_SECRET_KEY", aws_secret(&r))),
                    1 => ("AWS_ACCESS_KEY_ID", s("AWS_ACCESS_KEY_ID", aws_id(&r))),
                    2 => ("GITHUB_TOKEN", s("GITHUB_TOKEN", github(&r))),
                    3 => ("OPENAI_API_KEY", s("OPENAI_KEY", openai(&r))),
                    4 => ("ANTHROPIC_API_KEY", s("ANTHROPIC_KEY", anthropic(&r))),
                    5 => ("STRIPE_SECRET_KEY", s("STRIPE_KEY", stripe(&r))),
                    6 => ("SLACK_BOT_TOKEN", s("SLACK_TOKEN", slack(&r))),
                    7 => ("DB_PASSWORD", s("PASSWORD", password(&r))),
                    8 => ("NPM_TOKEN", s("NPM_TOKEN", npm(&r))),
                    _ => ("SERVICE_AUTH_TOKEN", s("SECRET", token(&r, 32))),
                };
                sample(
                    id,
                    "env",
                    json!(format!("{name}={}", sec.value)),
                    &[sec],
                    "secret env",
                )
            }
            11 => {
                let pw = password(&r);
                let h = host(&r);
                sample(
                    id,
                    "env",
                    json!(format!("DATABASE_URL=postgres://app:{pw}@{h}:5432/app")),
                    &[s("PASSWORD", pw)],
                    "db url env",
                )
            }
            12 => {
                let (name, val) = match r.below(6) {
                    0 => ("GIT_COMMIT", r.chars(HEX, 40)),
                    1 => ("BUILD_ID", lookalike(&r)),
                    2 => ("IMAGE_DIGEST", format!("sha256:{}", r.chars(HEX, 64))),
                    3 => (
                        "PATH",
                        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin".to_owned(),
                    ),
                    4 => (
                        "TOKEN_URL",
                        "https://auth.example.com/oauth/token".to_owned(),
                    ),
                    _ => (
                        "APP_VERSION",
                        format!("{}.{}.{}", r.below(9), r.below(30), r.below(99)),
                    ),
                };
                sample(
                    id,
                    "env",
                    json!(format!("{name}={val}")),
                    &[],
                    "negative env",
                )
            }
            13 => {
                let t = token(&r, 32);
                let path = r.pick(&["/v1/reports", "/api/export", "/download"]);
                let head = format!(
                    "GET {path}?format=csv&access_token={t}&page=2 HTTP/1.1\r\nHost: {}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
                    host(&r)
                );
                sample(
                    id,
                    "http_head",
                    json!(head),
                    &[s("SECRET", t)],
                    "query token",
                )
            }
            14 => {
                let user_pass = format!(
                    "{}:{}",
                    r.pick(&["admin", "svc-backup", "ci"]),
                    password(&r)
                );
                use base64::Engine as _;
                let cred = base64::engine::general_purpose::STANDARD.encode(user_pass);
                let head = format!(
                    "POST /upload HTTP/1.1\r\nHost: files.example.com\r\nAuthorization: Basic {cred}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                    r.below(99999)
                );
                sample(
                    id,
                    "http_head",
                    json!(head),
                    &[s("AUTH_HEADER", cred)],
                    "basic auth",
                )
            }
            15 => {
                let c1 = token(&r, 40);
                let k = token(&r, 32);
                let head = format!(
                    "PUT /objects/{} HTTP/1.1\r\nHost: storage.example.com\r\nCookie: sid={c1}; lang=en-US\r\nX-Api-Key: {k}\r\nX-Request-Id: {}\r\n\r\n",
                    r.chars(HEX, 12),
                    lookalike(&r)
                );
                sample(
                    id,
                    "http_head",
                    json!(head),
                    &[s("COOKIE", c1), s("COOKIE", "en-US".into()), s("SECRET", k)],
                    "cookie + api key",
                )
            }
            16 => {
                let la = lookalike(&r);
                let head = format!(
                    "GET /assets/app.{}.js HTTP/1.1\r\nHost: cdn.example.com\r\nIf-None-Match: \"{}\"\r\nX-Trace: {la}\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.6099.109\r\n\r\n",
                    r.chars(HEX, 8),
                    r.chars(HEX, 32)
                );
                sample(id, "http_head", json!(head), &[], "negative head")
            }
            17 => {
                let (e, p, c) = (email(&r), phone(&r), card(&r));
                let body = format!(
                    r#"{{"customer":{{"name":"Jane Doe","email":"{e}","phone":"{p}"}},"payment":{{"card":"{c}","exp":"0{}/2{}"}},"amount":{}.{:02}}}"#,
                    1 + r.below(9),
                    5 + r.below(5),
                    r.below(999),
                    r.below(100)
                );
                sample(
                    id,
                    "text",
                    json!(body),
                    &[s("EMAIL", e), s("PHONE", p), s("CREDIT_CARD", c)],
                    "json pii",
                )
            }
            18 => {
                let (i, ss) = (iban(&r), ssn(&r));
                let body = format!(
                    r#"{{"employee_id":{},"iban":"{i}","ssn":"{ss}","hired":"2021-0{}-1{}"}}"#,
                    r.digits(5),
                    1 + r.below(9),
                    r.below(9)
                );
                sample(
                    id,
                    "text",
                    json!(body),
                    &[s("IBAN", i), s("US_SSN", ss)],
                    "json payroll",
                )
            }
            19 => {
                let p = pem(&r, true);
                let body = format!(
                    r#"{{"type":"service_account","project_id":"acme-prod","private_key_id":"{}","private_key":"{p}\n","client_email":"svc@acme-prod.iam.gserviceaccount.com"}}"#,
                    r.chars(HEX, 40)
                );
                sample(
                    id,
                    "text",
                    json!(body),
                    &[
                        s("PRIVATE_KEY", p),
                        s("EMAIL", "svc@acme-prod.iam.gserviceaccount.com".into()),
                    ],
                    "gcp sa json",
                )
            }
            20 => {
                let (k, sec) = (aws_id(&r), aws_secret(&r));
                let text = format!(
                    "[default]\naws_access_key_id = {k}\naws_secret_access_key = {sec}\nregion = eu-west-1\n"
                );
                sample(
                    id,
                    "text",
                    json!(text),
                    &[s("AWS_ACCESS_KEY_ID", k), s("AWS_SECRET_KEY", sec)],
                    "aws credentials file",
                )
            }
            21 => {
                let sec = any_secret(&r);
                let text = format!(
                    "{} INFO worker-{} request failed, payload head: {} (retry {})",
                    lookalike(&r),
                    r.below(9),
                    sec.value,
                    r.below(5)
                );
                sample(id, "text", json!(text), &[sec], "secret in log line")
            }
            22 => {
                let k = azure(&r);
                let text = format!(
                    "DefaultEndpointsProtocol=https;AccountName=acme{};AccountKey={k};EndpointSuffix=core.windows.net",
                    r.digits(3)
                );
                sample(
                    id,
                    "text",
                    json!(text),
                    &[s("AZURE_KEY", k)],
                    "azure connection string",
                )
            }
            23 => {
                let k = gcp(&r);
                let url = format!(
                    "https://maps.googleapis.com/maps/api/geocode/json?address={}&key={k}",
                    r.pick(&["Berlin", "Paris"])
                );
                sample(
                    id,
                    "url",
                    json!(url),
                    &[s("GCP_API_KEY", k)],
                    "gcp key in url",
                )
            }
            24 => {
                let e = email(&r);
                let path = format!(
                    "/srv/exports/customers/{e}/{}-invoice.pdf",
                    2020 + r.below(5)
                );
                sample(id, "text", json!(path), &[s("EMAIL", e)], "email in path")
            }
            25 => {
                let path = format!(
                    "/home/{}/.{}/{}",
                    r.pick(&["alice", "ci"]),
                    r.pick(&["aws", "kube", "ssh"]),
                    r.pick(&["credentials", "config", "id_ed25519", "known_hosts"])
                );
                sample(
                    id,
                    "text",
                    json!(format!("openat {path} O_RDONLY {}", lookalike(&r))),
                    &[],
                    "negative path",
                )
            }
            26 => {
                let t = slack(&r);
                let body = format!(
                    r##"{{"channel":"#ops","text":"deploy {} done","token":"{t}"}}"##,
                    lookalike(&r)
                );
                sample(
                    id,
                    "text",
                    json!(body),
                    &[s("SLACK_TOKEN", t)],
                    "slack token json",
                )
            }
            27 => {
                let t = token(&r, 24 + r.below(16));
                let text = format!(
                    "{} the api token is {t}",
                    r.pick(&["note:", "fyi", "ticket 4411:"])
                );
                sample(
                    id,
                    "text",
                    json!(text),
                    &[s("SECRET", t)],
                    "entropy near keyword",
                )
            }
            28 => {
                let text = (0..3)
                    .map(|_| lookalike(&r))
                    .collect::<Vec<_>>()
                    .join(" | ");
                sample(id, "text", json!(text), &[], "negative mix")
            }
            30 => {
                let text = match r.below(6) {
                    0 => format!(
                        r#"{{"public_key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{} ci@runner","tokens_used":{},"secret_name":"prod-db","bypass_cache":true}}"#,
                        r.chars(B64, 43),
                        r.below(9000)
                    ),
                    1 => format!(
                        "password reset requested for account {}; token expired at {}",
                        r.digits(6),
                        lookalike(&r)
                    ),
                    2 => format!(
                        "--auth-type=oauth --key-file=/etc/tls/server.key --token-ttl=3600 --passenger-count={}",
                        r.below(9)
                    ),
                    3 => format!(
                        "build 2024.{:02}.{:02} port range 5432-5440 isbn 978-0-596-{}-{} frame 0x7ffd{}",
                        1 + r.below(12),
                        1 + r.below(28),
                        r.digits(5),
                        r.below(10),
                        r.chars(HEX, 8)
                    ),
                    4 => format!(
                        "key: welcome_message\nvalue: Hello {}\ncompass: N{}",
                        r.pick(&["there", "world"]),
                        r.below(360)
                    ),
                    _ => format!(
                        "invoice {} reference {}{} qty {}",
                        r.digits(10),
                        1 + r.below(9),
                        r.digits(15),
                        r.below(50)
                    ),
                };
                sample(id, "text", json!(text), &[], "tricky negative")
            }
            31 => {
                let order = format!("{}{}", 1 + r.below(9), r.digits(15));
                sample(
                    id,
                    "text",
                    json!(format!(
                        "shipment for order {order} dispatched; tracking {}",
                        r.chars(b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", 18)
                    )),
                    &[],
                    "16-digit order id (Luhn look-alike)",
                )
            }
            _ => {
                let pw = password(&r);
                let text = format!(
                    "{} connect: Server={};Database=shop;User Id=sa;Password={pw};Encrypt=true",
                    lookalike(&r),
                    host(&r)
                );
                sample(
                    id,
                    "text",
                    json!(text),
                    &[s("PASSWORD", pw)],
                    "ado connection string",
                )
            }
        };
        out.push(v);
    }
    out
}

/// Renders `corpus(seed, n)` as JSONL.
pub fn corpus_jsonl(seed: u64, n: usize) -> String {
    let mut s = String::new();
    for v in corpus(seed, n) {
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s
}

/// A mixed text corpus of at least `bytes` bytes (for the benchmark): runtime-shaped
/// samples rendered as text, interleaved with ordinary log lines.
pub fn mixed_text(seed: u64, bytes: usize) -> String {
    let r = Rng::new(seed ^ 0xA5A5);
    let mut out = String::with_capacity(bytes + 4096);
    let mut id = 0u64;
    while out.len() < bytes {
        for v in corpus(seed.wrapping_add(id), 64) {
            match &v["input"] {
                Value::String(s) => out.push_str(s),
                Value::Array(a) => out.push_str(
                    &a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                _ => {}
            }
            out.push('\n');
            for _ in 0..3 {
                out.push_str(&format!(
                    "{} INFO http request method=GET path=/api/v1/items/{} status=200 duration_ms={} bytes={} trace={}\n",
                    lookalike(&r),
                    r.below(100_000),
                    r.below(900),
                    r.below(1_000_000),
                    r.chars(HEX, 16)
                ));
            }
        }
        id += 1;
    }
    out
}
