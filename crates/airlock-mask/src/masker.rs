//! The masking engine.
//!
//! One ASCII-case-insensitive Aho-Corasick pass over the input finds every anchor: token
//! prefixes (`ghp_`, `AKIA`, `eyJ`…), secret keywords (`pass`, `secret`, `token`, `key`…),
//! `://`, `@`, `-----BEGIN`, placeholders (`#`). Each hit runs a small hand-written matcher
//! on the bytes around it, never a regex over the whole input. A second tight byte loop
//! looks for numeric PII (cards, SSNs, phones, IBANs, optionally IPv4) only at word starts.
//! Candidates are validated (Luhn, mod-97, JWT header, entropy), overlapping candidates are
//! merged into their union (never half a secret), and each span becomes `[KIND#xxxx]`.

use std::collections::HashSet;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::config::{ConfigError, HostKey, MaskConfig};
use crate::kind::Kind;
use crate::validate;

/// One masked span.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What it was.
    pub kind: Kind,
    /// First 4 hex digits of HMAC-SHA256(host key, secret).
    pub fingerprint: String,
    /// For [`Masker::mask_argv`]: the argument index.
    pub arg: Option<usize>,
    /// Byte offset of the span in the input (in the argument for argv).
    pub start: usize,
    /// Byte offset one past the span in the input.
    pub end: usize,
}

impl Finding {
    /// The placeholder that replaced the span, e.g. `[JWT#3fa0]`.
    #[must_use]
    pub fn placeholder(&self) -> String {
        format!("[{}#{}]", self.kind, self.fingerprint)
    }
}

/// Masked text with what was masked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Masked {
    /// The text with placeholders.
    pub text: String,
    /// The masked spans, in input order.
    pub findings: Vec<Finding>,
}

/// Masked argument vector with what was masked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedArgv {
    /// The arguments with placeholders.
    pub argv: Vec<String>,
    /// The masked spans; [`Finding::arg`] says which argument.
    pub findings: Vec<Finding>,
}

/// A span to mask, before merging.
#[derive(Clone, Debug)]
struct Cand {
    start: usize,
    end: usize,
    kind: Kind,
}

/// How a field name classifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Password,
    Secret,
    AwsSecret,
    Auth,
    Cookie,
}

impl Field {
    fn kind(self) -> Kind {
        match self {
            Field::Password => Kind::Password,
            Field::Secret => Kind::Secret,
            Field::AwsSecret => Kind::AwsSecretKey,
            Field::Auth => Kind::AuthHeader,
            Field::Cookie => Kind::Cookie,
        }
    }
}

type Charset = fn(u8) -> bool;

/// A prefixed token: `prefix` + `min..=max` bytes of `charset`.
struct TokenRule {
    prefix: &'static str,
    kind: Kind,
    charset: Charset,
    min: usize,
    max: usize,
    /// Mask the prefix too (it is part of the token) or only what follows.
    mask_prefix: bool,
    /// Require a non-word byte before the prefix.
    boundary: bool,
    /// Extra check on the part after the prefix.
    check: Option<fn(&[u8]) -> bool>,
}

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}
fn alnum_us(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
fn alnum_us_dash(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}
fn alnum_dash(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}
fn aws_id(b: u8) -> bool {
    b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)
}
fn b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='
}
fn path_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'/'
}
/// Byte classes for the numeric pass: 0 other, 1 word byte, 2 `+` / `(` (phone starts).
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        if c.is_ascii_alphanumeric() || c == b'_' {
            t[i] = 1;
        } else if c == b'+' || c == b'(' {
            t[i] = 2;
        }
        i += 1;
    }
    t
};

fn word(b: u8) -> bool {
    CLASS[usize::from(b)] == 1
}
fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
}
fn not_ant(rest: &[u8]) -> bool {
    !rest.starts_with(b"ant-") && validate::random_token(rest, 20)
}
fn random20(rest: &[u8]) -> bool {
    validate::random_token(rest, 20)
}

fn token_rules() -> Vec<TokenRule> {
    let rule = |prefix, kind, charset, min, max| TokenRule {
        prefix,
        kind,
        charset,
        min,
        max,
        mask_prefix: true,
        boundary: true,
        check: None,
    };
    let mut rules = Vec::new();
    for p in [
        "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "ABIA", "ACCA",
    ] {
        rules.push(rule(p, Kind::AwsAccessKeyId, aws_id as Charset, 16, 16));
    }
    for p in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        rules.push(rule(p, Kind::GithubToken, alnum, 36, 36));
    }
    rules.push(rule("github_pat_", Kind::GithubToken, alnum_us, 70, 90));
    rules.push(rule("glpat-", Kind::GitlabToken, alnum_us_dash, 20, 40));
    for p in ["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxe-"] {
        rules.push(rule(p, Kind::SlackToken, alnum_dash, 10, 250));
    }
    rules.push(TokenRule {
        mask_prefix: false,
        boundary: false,
        ..rule(
            "hooks.slack.com/services/",
            Kind::SlackToken,
            path_token,
            20,
            100,
        )
    });
    for p in ["sk_live_", "rk_live_", "sk_test_", "rk_test_", "whsec_"] {
        rules.push(rule(p, Kind::StripeKey, alnum, 16, 128));
    }
    rules.push(rule("sk-ant-", Kind::AnthropicKey, alnum_us_dash, 32, 200));
    rules.push(TokenRule {
        check: Some(not_ant),
        ..rule("sk-", Kind::OpenaiKey, alnum_us_dash, 32, 200)
    });
    rules.push(rule("AIza", Kind::GcpApiKey, alnum_us_dash, 35, 35));
    rules.push(rule("npm_", Kind::NpmToken, alnum, 36, 36));
    for p in ["AccountKey=", "SharedAccessKey="] {
        rules.push(TokenRule {
            mask_prefix: false,
            boundary: false,
            check: Some(random20),
            ..rule(p, Kind::AzureKey, b64, 40, 100)
        });
    }
    rules
}

/// Keywords that start a field-name check (see `classify`).
const KEYWORDS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
    "cookie",
    "sig",
];

#[derive(Clone, Copy, Debug)]
enum Anchor {
    Token(usize),
    Keyword,
    Url,
    At,
    Pem,
    Jwt,
    Placeholder,
    Custom(usize),
}

struct Custom {
    kind: Kind,
    regex: regex::Regex,
    /// Run only if one of these anchors was hit (empty: always).
    keyworded: bool,
}

/// The masker: build once from a [`MaskConfig`], share between threads.
pub struct Masker {
    ac: AhoCorasick,
    anchors: Vec<Anchor>,
    rules: Vec<TokenRule>,
    hmac: Hmac<Sha256>,
    custom: Vec<Custom>,
    allow_literals: HashSet<String>,
    allow_regexes: Option<regex::RegexSet>,
    unmasked_fields: HashSet<String>,
    secret_fields: HashSet<String>,
    disabled: HashSet<Kind>,
    mask_ip: bool,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("anchors", &self.anchors.len())
            .finish_non_exhaustive()
    }
}

fn compile(pattern: &str) -> Result<regex::Regex, ConfigError> {
    regex::Regex::new(pattern).map_err(|e| ConfigError::Regex {
        pattern: pattern.to_owned(),
        source: Box::new(e),
    })
}

fn valid_kind_name(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

impl Masker {
    /// Builds a masker; reads the host key from `config.host_key_file` if set, else uses `key`.
    ///
    /// # Errors
    /// [`ConfigError::HostKey`] if neither is given or the file is bad, [`ConfigError::Regex`]
    /// / [`ConfigError::DetectorName`] for bad extra detectors or allow-list entries.
    pub fn from_config(config: &MaskConfig, key: Option<HostKey>) -> Result<Self, ConfigError> {
        let key = match (&config.host_key_file, key) {
            (Some(path), _) => HostKey::load(path)?,
            (None, Some(key)) => key,
            (None, None) => {
                return Err(ConfigError::HostKey {
                    path: "<none>".into(),
                    reason: "no host_key_file configured and no key given".into(),
                });
            }
        };
        Self::new(config, &key)
    }

    /// Builds a masker with an explicit host key (ignores `config.host_key_file`).
    ///
    /// # Errors
    /// [`ConfigError::Regex`] / [`ConfigError::DetectorName`] for bad extra detectors or
    /// allow-list entries, [`ConfigError::Prefilter`] if the automaton cannot be built.
    pub fn new(config: &MaskConfig, key: &HostKey) -> Result<Self, ConfigError> {
        let rules = token_rules();
        let mut patterns: Vec<String> = Vec::new();
        let mut anchors = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            patterns.push(r.prefix.to_owned());
            anchors.push(Anchor::Token(i));
        }
        let secret_fields: HashSet<String> = config
            .secret_fields
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect();
        for k in KEYWORDS
            .iter()
            .map(|s| (*s).to_owned())
            .chain(secret_fields.iter().cloned())
        {
            patterns.push(k);
            anchors.push(Anchor::Keyword);
        }
        for (p, a) in [
            ("://", Anchor::Url),
            ("@", Anchor::At),
            ("-----BEGIN", Anchor::Pem),
            ("eyJ", Anchor::Jwt),
            ("#", Anchor::Placeholder),
        ] {
            patterns.push(p.to_owned());
            anchors.push(a);
        }
        let mut custom = Vec::new();
        for (i, d) in config.extra_detectors.iter().enumerate() {
            if !valid_kind_name(&d.name) {
                return Err(ConfigError::DetectorName(d.name.clone()));
            }
            custom.push(Custom {
                kind: Kind::Custom(Arc::from(d.name.as_str())),
                regex: compile(&d.regex)?,
                keyworded: !d.keywords.is_empty(),
            });
            for k in d.keywords.iter().filter(|k| !k.is_empty()) {
                patterns.push(k.clone());
                anchors.push(Anchor::Custom(i));
            }
        }
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            // A full DFA: the automaton is small (a few hundred states) and the DFA is the
            // fastest overlapping searcher.
            .kind(Some(AhoCorasickKind::DFA))
            .match_kind(MatchKind::Standard)
            .build(&patterns)?;
        let allow_regexes = if config.allow_regexes.is_empty() {
            None
        } else {
            for p in &config.allow_regexes {
                compile(p)?;
            }
            Some(
                regex::RegexSet::new(&config.allow_regexes).map_err(|e| ConfigError::Regex {
                    pattern: config.allow_regexes.join(" | "),
                    source: Box::new(e),
                })?,
            )
        };
        let hmac =
            <Hmac<Sha256>>::new_from_slice(key.bytes()).map_err(|e| ConfigError::HostKey {
                path: "<bytes>".into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            ac,
            anchors,
            rules,
            hmac,
            custom,
            allow_literals: config.allow_literals.iter().cloned().collect(),
            allow_regexes,
            unmasked_fields: config
                .unmasked_fields
                .iter()
                .map(|s| s.trim_start_matches('-').to_ascii_lowercase())
                .collect(),
            secret_fields,
            disabled: config
                .disabled_kinds
                .iter()
                .map(|n| Kind::from_name(n))
                .collect(),
            mask_ip: config.mask_ip_addresses,
        })
    }

    /// First 4 hex digits of HMAC-SHA256(host key, `secret`).
    #[must_use]
    pub fn fingerprint(&self, secret: &[u8]) -> String {
        let mut mac = self.hmac.clone();
        mac.update(secret);
        let tag = mac.finalize().into_bytes();
        format!("{:02x}{:02x}", tag[0], tag[1])
    }

    /// Masks free text (command lines, payload heads, JSON bodies, file paths, logs).
    #[must_use]
    pub fn mask_text(&self, text: &str) -> Masked {
        let cands = self.resolve(text, |_, _| Vec::new());
        self.render(text, cands, None)
    }

    /// Masks a URL: userinfo passwords, secret query parameters, tokens inside it.
    #[must_use]
    pub fn mask_url(&self, url: &str) -> Masked {
        self.mask_text(url)
    }

    /// Masks one environment variable's value: the whole value if the name looks secret
    /// (`*_PASSWORD`, `*_TOKEN`, `AWS_SECRET_ACCESS_KEY`…), else what the detectors find.
    #[must_use]
    pub fn mask_env(&self, name: &str, value: &str) -> Masked {
        let field = self.classify(name.as_bytes());
        let fields = |_: &Self, v: &str| {
            let mut out = Vec::new();
            if let Some(field) = field {
                push_whole_value(&mut out, v, 0, field);
            }
            out
        };
        let cands = self.resolve(value, fields);
        self.render(value, cands, None)
    }

    /// Masks an HTTP request head (request line and headers, `\n` or `\r\n` separated).
    #[must_use]
    pub fn mask_http_head(&self, head: &str) -> Masked {
        let cands = self.resolve(head, Self::http_head_fields);
        self.render(head, cands, None)
    }

    /// Structured spans of an HTTP head: values of headers whose names look secret.
    fn http_head_fields(&self, head: &str) -> Vec<Cand> {
        let mut explicit = Vec::new();
        let mut offset = 0;
        for (i, line) in head.split_inclusive('\n').enumerate() {
            let start = offset;
            offset += line.len();
            if i == 0 {
                continue;
            }
            let Some(colon) = line.find(':') else {
                continue;
            };
            let name = line[..colon].trim();
            if name.is_empty() || !name.bytes().all(name_byte) {
                continue;
            }
            let Some(field) = self.classify(name.as_bytes()) else {
                continue;
            };
            let vstart = start + colon + 1;
            let value = head[vstart..offset].trim_end_matches(['\r', '\n']);
            let lead = value.len() - value.trim_start().len();
            let value = value.trim();
            self.field_value_spans(
                &mut explicit,
                head.as_bytes(),
                vstart + lead,
                vstart + lead + value.len(),
                field,
            );
        }
        explicit
    }

    /// Masks an argument vector with flag semantics: `--password X`, `--password=X`,
    /// `-pX` for mysql-family tools, `curl -u user:pass`, `KEY=value` env prefixes, and
    /// everything [`Self::mask_text`] finds inside each argument.
    #[must_use]
    pub fn mask_argv(&self, argv: &[String]) -> MaskedArgv {
        let mut explicit: Vec<Vec<Cand>> = vec![Vec::new(); argv.len()];
        // Leading `NAME=value` assignments (as for `env` or a shell prefix).
        let mut i = 0;
        let mut tool = "";
        while i < argv.len() {
            let a = argv[i].as_str();
            if let Some(eq) = env_assignment(a) {
                if let Some(field) = self.classify(&a.as_bytes()[..eq]) {
                    push_whole_value(&mut explicit[i], &a[eq + 1..], eq + 1, field);
                }
                i += 1;
                continue;
            }
            let base = a.rsplit('/').next().unwrap_or(a);
            if matches!(base, "env" | "sudo" | "doas" | "nohup" | "exec" | "time")
                && tool.is_empty()
            {
                i += 1;
                continue;
            }
            tool = base;
            break;
        }
        let mysql = matches!(
            tool,
            "mysql"
                | "mysqldump"
                | "mysqladmin"
                | "mysqlimport"
                | "mysqlshow"
                | "mysqlcheck"
                | "mysqlpump"
                | "mariadb"
                | "mariadb-dump"
                | "mariadb-admin"
        );
        let mut k = i + 1;
        while k < argv.len() {
            let a = argv[k].as_str();
            let next_is_value = argv
                .get(k + 1)
                .is_some_and(|n| !n.starts_with('-') || n.len() == 1);
            let short = |flag: &str| a == flag || (a.starts_with(flag) && a.len() > flag.len());
            // Tool-specific short flags: attached (`-pX`) or separate (`-p X`).
            let tool_flag: Option<(&str, Kind, bool)> = match tool {
                _ if mysql && a.starts_with("-p") && !a.starts_with("--") => {
                    Some(("-p", Kind::Password, false))
                }
                "sshpass" if short("-p") => Some(("-p", Kind::Password, true)),
                "redis-cli" if short("-a") => Some(("-a", Kind::Password, true)),
                "docker" | "podman" | "helm" | "nerdctl" if a == "-p" => {
                    Some(("-p", Kind::Password, true))
                }
                "openssl"
                    if a == "-k"
                        || a == "-K"
                        || a == "-pass"
                        || a == "-passin"
                        || a == "-passout" =>
                {
                    Some((a, Kind::Password, true))
                }
                _ => None,
            };
            if let Some((flag, kind, separate)) = tool_flag {
                if a.len() > flag.len() {
                    explicit[k].push(Cand {
                        start: flag.len(),
                        end: a.len(),
                        kind,
                    });
                } else if separate && next_is_value {
                    let v = &argv[k + 1];
                    explicit[k + 1].push(Cand {
                        start: 0,
                        end: v.len(),
                        kind,
                    });
                    k += 1;
                }
                k += 1;
                continue;
            }
            if tool == "curl"
                && matches!(a, "-u" | "--user" | "-U" | "--proxy-user")
                && next_is_value
            {
                let v = &argv[k + 1];
                if let Some(colon) = v.find(':')
                    && colon + 1 < v.len()
                {
                    explicit[k + 1].push(Cand {
                        start: colon + 1,
                        end: v.len(),
                        kind: Kind::Password,
                    });
                }
                k += 2;
                continue;
            }
            if a.starts_with('-') {
                if let Some(eq) = a.find('=') {
                    if let Some(field) = self.classify(&a.as_bytes()[..eq]) {
                        push_whole_value(&mut explicit[k], &a[eq + 1..], eq + 1, field);
                    }
                } else if let Some(field) = self.classify(a.as_bytes())
                    && next_is_value
                {
                    let v = &argv[k + 1];
                    push_whole_value(&mut explicit[k + 1], v, 0, field);
                    k += 1;
                }
            }
            k += 1;
        }
        let mut out = MaskedArgv {
            argv: Vec::with_capacity(argv.len()),
            findings: Vec::new(),
        };
        for (idx, (arg, exp)) in argv.iter().zip(explicit).enumerate() {
            let mut first = Some(exp);
            let cands = self.resolve(arg, |_, _| first.take().unwrap_or_default());
            let m = self.render(arg, cands, Some(idx));
            out.argv.push(m.text);
            out.findings.extend(m.findings);
        }
        out
    }

    /// Classifies a field name (flag, env var, header, JSON key): is its value a secret?
    fn classify(&self, raw: &[u8]) -> Option<Field> {
        let trimmed = trim_name(raw);
        // Only name-shaped fields: `--x=[PASSWORD#ab12]`-like text must not turn into a
        // field name once a placeholder is in it.
        if trimmed.is_empty() || trimmed.len() > 64 || !trimmed.iter().all(|c| name_byte(*c)) {
            return None;
        }
        let mut buf = [0u8; 64];
        let n = &mut buf[..trimmed.len()];
        n.copy_from_slice(trimmed);
        n.make_ascii_lowercase();
        let n: &[u8] = n;
        let name = std::str::from_utf8(n).ok()?;
        if !self.unmasked_fields.is_empty() && self.unmasked_fields.contains(name) {
            return None;
        }
        if !self.secret_fields.is_empty() && self.secret_fields.contains(name) {
            return Some(Field::Secret);
        }
        classify_name(name)
    }

    /// Value spans of a classified field: `Authorization` skips the scheme word, `Cookie`
    /// masks each cookie's value, others mask the whole value.
    fn field_value_spans(&self, out: &mut Vec<Cand>, b: &[u8], vs: usize, ve: usize, field: Field) {
        let _ = self;
        if vs >= ve {
            return;
        }
        match field {
            Field::Auth => {
                let v = &b[vs..ve];
                let scheme = v.iter().position(|c| *c == b' ').filter(|&p| {
                    p > 0
                        && v[..p]
                            .iter()
                            .all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                });
                let s = scheme.map_or(vs, |p| {
                    let mut s = vs + p;
                    while s < ve && b[s] == b' ' {
                        s += 1;
                    }
                    s
                });
                if s < ve && !is_placeholder(&b[s..ve]) {
                    out.push(Cand {
                        start: s,
                        end: ve,
                        kind: Kind::AuthHeader,
                    });
                }
            }
            Field::Cookie => {
                let mut p = vs;
                while p < ve {
                    let seg_end = b[p..ve]
                        .iter()
                        .position(|c| *c == b';')
                        .map_or(ve, |q| p + q);
                    if let Some(eq) = b[p..seg_end].iter().position(|c| *c == b'=') {
                        let s = p + eq + 1;
                        let attr = trim_ascii(&b[p..p + eq]).to_ascii_lowercase();
                        // Set-Cookie attributes are not secret.
                        let is_attr = matches!(
                            attr.as_slice(),
                            b"path" | b"domain" | b"expires" | b"max-age" | b"samesite"
                        );
                        let e = trim_end(b, s, seg_end);
                        if !is_attr && s < e && !is_placeholder(&b[s..e]) {
                            out.push(Cand {
                                start: s,
                                end: e,
                                kind: Kind::Cookie,
                            });
                        }
                    }
                    p = seg_end + 1;
                }
            }
            Field::Password | Field::Secret | Field::AwsSecret => {
                if accept_value(&b[vs..ve]) {
                    out.push(Cand {
                        start: vs,
                        end: ve,
                        kind: field.kind(),
                    });
                }
            }
        }
    }

    /// Finds all candidate spans in `text`, merged with `explicit` ones.
    fn scan(&self, text: &str, mut cands: Vec<Cand>) -> Vec<Cand> {
        let b = text.as_bytes();
        let mut protected: Vec<(usize, usize)> = Vec::new();
        let mut hits: Vec<(Anchor, usize, usize)> = Vec::new();
        let mut custom_hit = vec![false; self.custom.len()];
        for m in self.ac.find_overlapping_iter(b) {
            let a = self.anchors[m.pattern().as_usize()];
            match a {
                Anchor::Placeholder => {
                    if let Some(span) = placeholder_at(b, m.start()) {
                        protected.push(span);
                    }
                }
                Anchor::Custom(i) => custom_hit[i] = true,
                _ => hits.push((a, m.start(), m.end())),
            }
        }
        // Placeholders come out of the automaton in order and never overlap, so starts and
        // ends are both sorted: binary searches keep re-scans of large outputs linear-ish.
        let overlaps = |start: usize, end: usize| {
            let k = protected.partition_point(|&(_, e)| e <= start);
            protected.get(k).is_some_and(|&(s, _)| s < end)
        };
        let inside = |pos: usize| overlaps(pos, pos + 1);
        let mut last_name_end = 0;
        for (a, s, e) in hits {
            if inside(s) {
                continue;
            }
            match a {
                Anchor::Token(i) => self.token_at(b, s, e, i, &mut cands),
                Anchor::Keyword => {
                    if s >= last_name_end {
                        last_name_end = self.keyword_at(b, s, e, &mut cands);
                    }
                }
                Anchor::Url => url_at(b, s, e, &mut cands),
                Anchor::At => email_at(b, s, &mut cands),
                Anchor::Pem => pem_at(text, s, &mut cands),
                Anchor::Jwt => jwt_at(text, s, &mut cands),
                Anchor::Placeholder | Anchor::Custom(_) => {}
            }
        }
        self.numeric(b, &mut cands);
        for (c, hit) in self.custom.iter().zip(custom_hit) {
            if c.keyworded && !hit {
                continue;
            }
            for caps in c.regex.captures_iter(text) {
                if let Some(m) = caps.get(1).or_else(|| caps.get(0))
                    && !m.is_empty()
                {
                    cands.push(Cand {
                        start: m.start(),
                        end: m.end(),
                        kind: c.kind.clone(),
                    });
                }
            }
        }
        cands.retain(|c| {
            !self.disabled.contains(&c.kind)
                && !overlaps(c.start, c.end)
                && !self.allowed(&text[floor_char(text, c.start)..ceil_char(text, c.end)])
        });
        merge(cands)
    }

    fn allowed(&self, value: &str) -> bool {
        self.allow_literals.contains(value)
            || self
                .allow_regexes
                .as_ref()
                .is_some_and(|s| s.is_match(value))
    }

    fn token_at(&self, b: &[u8], s: usize, e: usize, i: usize, out: &mut Vec<Cand>) {
        let r = &self.rules[i];
        if &b[s..e] != r.prefix.as_bytes() {
            return; // the automaton is case-insensitive, token prefixes are not
        }
        if r.boundary && s > 0 && (word(b[s - 1]) || b[s - 1] == b'-') {
            return;
        }
        let run = b[e..]
            .iter()
            .take(r.max + 1)
            .take_while(|c| (r.charset)(**c))
            .count();
        if run < r.min || run > r.max {
            return;
        }
        let end = e + run;
        if end < b.len() && word(b[end]) {
            return;
        }
        if r.check.is_some_and(|check| !check(&b[e..end])) {
            return;
        }
        let start = if r.mask_prefix { s } else { e };
        out.push(Cand {
            start,
            end,
            kind: r.kind.clone(),
        });
        if r.kind == Kind::AwsAccessKeyId {
            aws_secret_near(b, s, end, out);
        }
    }

    /// Handles a keyword hit; returns the end of the field name it examined.
    fn keyword_at(&self, b: &[u8], s: usize, e: usize, out: &mut Vec<Cand>) -> usize {
        let mut ns = s;
        while ns > 0 && name_byte(b[ns - 1]) && s - ns < 64 {
            ns -= 1;
        }
        let mut ne = e;
        while ne < b.len() && name_byte(b[ne]) && ne - e < 64 {
            ne += 1;
        }
        let Some(field) = self.classify(&b[ns..ne]) else {
            return ne;
        };
        // JSON / quoted keys: `"password": "x"`, `\"password\": \"x\"`.
        let mut p = ne;
        for q in [&b"\\\""[..], b"\"", b"'"] {
            if b[p..].starts_with(q) && ns >= q.len() && &b[ns - q.len()..ns] == q {
                p += q.len();
                break;
            }
        }
        let json_key = p > ne;
        while p < b.len() && (b[p] == b' ' || b[p] == b'\t') {
            p += 1;
        }
        let sep = b.get(p).copied();
        let flag = b[ns] == b'-';
        let vs = match sep {
            Some(b'=') => p + 1,
            Some(b':') if b.get(p + 1) == Some(&b'=') => p + 2,
            Some(b':') if !b[p + 1..].starts_with(b"//") => p + 1,
            _ if flag && p > ne && p < b.len() && b[p] != b'-' => p,
            _ => {
                // No separator: a high-entropy token right after the keyword ("the api
                // token is X").
                let mut ts = p;
                for filler in [&b"is "[..], b"was ", b"= ", b": "] {
                    if b[ts..].starts_with(filler) {
                        ts += filler.len();
                        while ts < b.len() && b[ts] == b' ' {
                            ts += 1;
                        }
                    }
                }
                let te = ts
                    + b[ts..]
                        .iter()
                        .take(512)
                        .take_while(|c| b64(**c) || **c == b'_' || **c == b'-')
                        .count();
                if p > ne && validate::random_token(&b[ts..te], 20) {
                    out.push(Cand {
                        start: ts,
                        end: te,
                        kind: field.kind(),
                    });
                }
                return ne;
            }
        };
        let mut vs = vs;
        while vs < b.len() && (b[vs] == b' ' || b[vs] == b'\t') {
            vs += 1;
        }
        if vs >= b.len() {
            return ne;
        }
        if matches!(field, Field::Auth | Field::Cookie) {
            let ve = line_value_end(b, vs);
            self.field_value_spans(out, b, vs, ve, field);
            return ne;
        }
        let (vs, ve) = value_span(b, vs, json_key);
        if accept_value(&b[vs..ve]) {
            out.push(Cand {
                start: vs,
                end: ve,
                kind: field.kind(),
            });
        }
        ne
    }

    /// Numeric PII and IBANs, checked only at word starts: one pass that skips whole words.
    fn numeric(&self, b: &[u8], out: &mut Vec<Cand>) {
        let n = b.len();
        let mut i = 0;
        while i < n {
            // Skip bytes that can start nothing.
            match b[i..].iter().position(|&c| CLASS[usize::from(c)] != 0) {
                Some(p) => i += p,
                None => break,
            }
            let c = b[i];
            if word(c) {
                // `b[i]` starts a word (the previous word was skipped whole).
                let mid_number = c.is_ascii_digit()
                    && i > 1
                    && matches!(b[i - 1], b'.' | b'-' | b'/' | b':')
                    && b[i - 2].is_ascii_digit();
                if c.is_ascii_uppercase() {
                    if let Some(end) = iban_at(b, i) {
                        out.push(Cand {
                            start: i,
                            end,
                            kind: Kind::Iban,
                        });
                        i = end;
                        continue;
                    }
                } else if c.is_ascii_digit()
                    && !mid_number
                    && let Some((end, kind)) = self.number_at(b, i)
                {
                    out.push(Cand {
                        start: i,
                        end,
                        kind,
                    });
                    i = end;
                    continue;
                }
                i += 1;
                i += b[i..]
                    .iter()
                    .position(|&c| CLASS[usize::from(c)] != 1)
                    .unwrap_or(n - i);
                continue;
            }
            if (c == b'+' || c == b'(')
                && let Some((end, kind)) = self.number_at(b, i)
            {
                out.push(Cand {
                    start: i,
                    end,
                    kind,
                });
                i = end;
                continue;
            }
            i += 1;
        }
    }

    fn number_at(&self, b: &[u8], i: usize) -> Option<(usize, Kind)> {
        let end_ok = |e: usize| {
            e >= b.len()
                || !(word(b[e])
                    || (matches!(b[e], b'.' | b'-')
                        && b.get(e + 1).is_some_and(u8::is_ascii_digit)))
        };
        let digits_at = |p: usize| {
            b[p.min(b.len())..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count()
        };
        let c = b[i];
        if c == b'+' {
            // E.164: + then 8..=15 digits with single separators. If the run ends glued to
            // a word, fall back to the last space-separated group end.
            let mut p = i + 1;
            let mut count = 0;
            let mut last_digit = i;
            let mut space_ends: [(usize, usize); 24] = [(0, 0); 24];
            let mut spaces = 0;
            while p < b.len() && p - i < 24 {
                if b[p].is_ascii_digit() {
                    count += 1;
                    last_digit = p;
                } else if matches!(b[p], b' ' | b'-' | b'.' | b'(' | b')')
                    && b.get(p + 1)
                        .is_some_and(|x| x.is_ascii_digit() || *x == b'(')
                {
                    if b[p] == b' ' && spaces < space_ends.len() {
                        space_ends[spaces] = (count, p);
                        spaces += 1;
                    }
                } else {
                    break;
                }
                p += 1;
            }
            if !b.get(i + 1).is_some_and(|x| (b'1'..=b'9').contains(x)) {
                return None;
            }
            let e = last_digit + 1;
            if (8..=15).contains(&count) && end_ok(e) {
                return Some((e, Kind::Phone));
            }
            return space_ends[..spaces]
                .iter()
                .rev()
                .find(|(n, _)| (8..=15).contains(n))
                .map(|&(_, end)| (end, Kind::Phone));
        }
        if c == b'(' {
            // (ddd) ddd-dddd
            let ok = digits_at(i + 1) == 3
                && b.get(i + 4) == Some(&b')')
                && b.get(i + 5) == Some(&b' ')
                && digits_at(i + 6) == 3
                && matches!(b.get(i + 9), Some(b'-' | b'.'))
                && digits_at(i + 10) == 4;
            return (ok && end_ok(i + 14)).then_some((i + 14, Kind::Phone));
        }
        let d0 = digits_at(i);
        // SSN ddd-dd-dddd
        if d0 == 3
            && b.get(i + 3) == Some(&b'-')
            && digits_at(i + 4) == 2
            && b.get(i + 6) == Some(&b'-')
            && digits_at(i + 7) == 4
        {
            let e = i + 11;
            if end_ok(e) && validate::ssn(std::str::from_utf8(&b[i..e]).ok()?) {
                return Some((e, Kind::UsSsn));
            }
        }
        // Phone ddd-ddd-dddd / ddd.ddd.dddd, NANP area code.
        if d0 == 3
            && matches!(b.get(i + 3), Some(b'-' | b'.'))
            && digits_at(i + 4) == 3
            && b.get(i + 7) == b.get(i + 3)
            && digits_at(i + 8) == 4
            && (b'2'..=b'9').contains(&c)
        {
            let e = i + 12;
            if end_ok(e) {
                return Some((e, Kind::Phone));
            }
        }
        // Card: 13..=19 digits, optional consistent single separators.
        let mut p = i;
        let mut digits = [0u8; 19];
        let mut count = 0;
        let mut sep: Option<u8> = None;
        let mut last = i;
        // (digits so far, end) at each space-separated group end, for a card followed by
        // another number ("4111 1111 1111 1111 2 items").
        let mut group_ends: [(usize, usize); 19] = [(0, 0); 19];
        let mut groups = 0;
        while p < b.len() && count < 19 {
            let x = b[p];
            if x.is_ascii_digit() {
                digits[count] = x;
                count += 1;
                last = p;
            } else if (x == b' ' || x == b'-')
                && sep.is_none_or(|s| s == x)
                && b.get(p + 1).is_some_and(u8::is_ascii_digit)
                && p > i
            {
                sep = Some(x);
                if x == b' ' && groups < group_ends.len() {
                    group_ends[groups] = (count, p);
                    groups += 1;
                }
            } else {
                break;
            }
            p += 1;
        }
        let is_card = |n: usize| {
            std::str::from_utf8(&digits[..n])
                .is_ok_and(|ds| validate::card_brand_ok(ds) && validate::luhn(ds))
                && !labelled_as_id(b, i)
        };
        let e = last + 1;
        if (13..=19).contains(&count)
            && end_ok(e)
            && !(e < b.len() && sep == Some(b[e]) && b.get(e + 1).is_some_and(u8::is_ascii_digit))
            && is_card(count)
        {
            return Some((e, Kind::CreditCard));
        }
        for &(n, end) in group_ends[..groups].iter().rev() {
            if (13..=19).contains(&n) && is_card(n) {
                return Some((end, Kind::CreditCard));
            }
        }
        if self.mask_ip
            && let Some(e) = ipv4_at(b, i)
            && end_ok(e)
        {
            return Some((e, Kind::IpAddress));
        }
        None
    }

    /// Candidates for `text`, closed under re-masking: a placeholder changes its
    /// neighbourhood (`+44 20 7946 09ne@x.com`: once the e-mail is a placeholder the phone
    /// number before it stands alone), so the output is scanned again and whatever appears
    /// is added, in input coordinates, until nothing new appears. This is what makes
    /// `mask(mask(x)) == mask(x)` hold. Inputs without findings are scanned once.
    /// `fields` yields the API's structured spans (header values, env values) for a text and
    /// is applied to every re-scan too, since a placeholder can also change line structure.
    fn resolve(&self, text: &str, mut fields: impl FnMut(&Self, &str) -> Vec<Cand>) -> Vec<Cand> {
        const MAX_ROUNDS: usize = 4;
        let mut cands = self.scan(text, fields(self, text));
        for _ in 0..MAX_ROUNDS {
            if cands.is_empty() {
                break;
            }
            let (masked, segments) = provisional(text, &cands);
            let extra = self.scan(&masked, fields(self, &masked));
            if extra.is_empty() {
                break;
            }
            let before = cands.len();
            for c in extra {
                // New candidates never overlap a placeholder (scan drops those), so each
                // lies inside one copied segment.
                let k = segments.partition_point(|&(os, _, _)| os <= c.start);
                if let Some(&(os, oe, is)) = k.checked_sub(1).and_then(|k| segments.get(k))
                    && c.end <= oe
                {
                    cands.push(Cand {
                        start: c.start - os + is,
                        end: c.end - os + is,
                        kind: c.kind,
                    });
                }
            }
            if cands.len() == before {
                break;
            }
            cands = merge(cands);
        }
        cands
    }

    /// Turns merged candidates into the masked text and findings.
    fn render(&self, text: &str, cands: Vec<Cand>, arg: Option<usize>) -> Masked {
        if cands.is_empty() {
            return Masked {
                text: text.to_owned(),
                findings: Vec::new(),
            };
        }
        let mut out = String::with_capacity(text.len());
        let mut findings = Vec::with_capacity(cands.len());
        let mut pos = 0;
        for c in cands {
            let (s, e) = (floor_char(text, c.start).max(pos), ceil_char(text, c.end));
            if s >= e {
                continue;
            }
            out.push_str(&text[pos..s]);
            let fp = self.fingerprint(&text.as_bytes()[s..e]);
            let f = Finding {
                kind: c.kind,
                fingerprint: fp,
                arg,
                start: s,
                end: e,
            };
            out.push_str(&f.placeholder());
            findings.push(f);
            pos = e;
        }
        out.push_str(&text[pos..]);
        Masked {
            text: out,
            findings,
        }
    }
}

/// The masked text with dummy fingerprints (a placeholder's fingerprint never changes what
/// is detected around it, its length does not depend on it), and the copied segments as
/// (output start, output end, input start), sorted.
fn provisional(text: &str, cands: &[Cand]) -> (String, Vec<(usize, usize, usize)>) {
    let mut out = String::with_capacity(text.len() + cands.len() * 16);
    let mut segments = Vec::with_capacity(cands.len() + 1);
    let mut pos = 0;
    for c in cands {
        let (s, e) = (floor_char(text, c.start).max(pos), ceil_char(text, c.end));
        if s >= e {
            continue;
        }
        segments.push((out.len(), out.len() + (s - pos), pos));
        out.push_str(&text[pos..s]);
        out.push('[');
        out.push_str(c.kind.name());
        out.push_str("#0000]");
        pos = e;
    }
    segments.push((out.len(), out.len() + (text.len() - pos), pos));
    out.push_str(&text[pos..]);
    (out, segments)
}

/// Lower-cased field name → class. Pure function of the name.
fn classify_name(n: &str) -> Option<Field> {
    if n == "authorization" || n == "proxy-authorization" {
        return Some(Field::Auth);
    }
    if n == "cookie" || n == "set-cookie" {
        return Some(Field::Cookie);
    }
    const NOT_A_VALUE: &[&str] = &[
        "file",
        "path",
        "dir",
        "url",
        "uri",
        "endpoint",
        "env",
        "stdin",
        "type",
        "id",
        "name",
        "length",
        "len",
        "size",
        "ttl",
        "expiry",
        "expires",
        "timeout",
        "count",
        "header",
        "policy",
        "algorithm",
        "alg",
        "version",
        "prompt",
        "required",
        "rotation",
        "md5",
        "tokens",
        "mode",
        "format",
        "store",
        "manager",
        "helper",
        "command",
        "cmd",
        "hint",
        "source",
        "location",
        "ref",
        "arn",
        "region",
        "field",
        "param",
        "label",
        "enabled",
        "provider",
        "kind",
        "method",
        "scheme",
        "class",
        "server",
        "host",
        "port",
        "user",
        "username",
        "keys",
    ];
    let segments = || n.split(['_', '-', '.']).filter(|s| !s.is_empty());
    let last = segments().next_back()?;
    let first = segments().next()?;
    // Counters and limits (`max_tokens`, `tokens_used`) and references to a secret (its
    // file, name, type, expiry) are not secrets.
    if NOT_A_VALUE.contains(&last)
        || matches!(first, "max" | "min" | "num" | "total")
        || segments().any(|s| matches!(s, "tokens" | "keys" | "used" | "limit" | "remaining"))
    {
        return None;
    }
    if n.contains("password") || n.contains("passwd") || n.contains("passphrase") {
        return Some(Field::Password);
    }
    if segments().any(|s| matches!(s, "pass" | "pwd" | "pw" | "passin" | "passout" | "dbpass"))
        || n.ends_with("pwd")
    {
        return Some(Field::Password);
    }
    if n.contains("secretaccesskey") || (n.contains("aws") && n.contains("secret")) {
        return Some(Field::AwsSecret);
    }
    if n.contains("secret") {
        return Some(Field::Secret);
    }
    if n.contains("token") {
        return Some(Field::Secret);
    }
    const KEY_NAMES: &[&str] = &[
        "apikey",
        "api_key",
        "api-key",
        "accesskey",
        "access_key",
        "access-key",
        "privatekey",
        "private_key",
        "private-key",
        "secretkey",
        "signing_key",
        "signingkey",
        "signing-key",
        "encryption_key",
        "encryption-key",
        "master_key",
        "master-key",
        "auth_key",
        "authkey",
        "license_key",
        "sse-c-key",
        "sse-customer-key",
        "sse_customer_key",
        "subscription-key",
        "subscription_key",
        "account_key",
        "accountkey",
        "storage_key",
        "client_key_data",
        "webhook_key",
        "app_key",
        "appkey",
    ];
    if KEY_NAMES.iter().any(|k| n.contains(k)) {
        return Some(Field::Secret);
    }
    if n.contains("credential") {
        return Some(Field::Secret);
    }
    if segments().any(|s| matches!(s, "auth" | "sig" | "signature" | "x-amz-signature"))
        || n == "x-amz-signature"
    {
        return Some(Field::Secret);
    }
    None
}

fn trim_name(raw: &[u8]) -> &[u8] {
    let mut s = raw;
    while let [b'-' | b'"' | b'\'' | b'.', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b'"' | b'\'' | b'.' | b'-'] = s {
        s = rest;
    }
    s
}

fn trim_ascii(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

fn trim_end(b: &[u8], s: usize, mut e: usize) -> usize {
    while e > s && b[e - 1].is_ascii_whitespace() {
        e -= 1;
    }
    e
}

fn env_assignment(a: &str) -> Option<usize> {
    let eq = a.find('=')?;
    let name = &a.as_bytes()[..eq];
    (eq > 0 && name[0].is_ascii_alphabetic() | (name[0] == b'_') && name.iter().all(|c| word(*c)))
        .then_some(eq)
}

fn push_whole_value(out: &mut Vec<Cand>, value: &str, offset: usize, field: Field) {
    let v = value.as_bytes();
    if field == Field::Auth {
        // `Bearer xyz`: keep the scheme visible.
        let skip = v
            .iter()
            .position(|c| *c == b' ')
            .filter(|&p| v[..p].iter().all(u8::is_ascii_alphanumeric))
            .map_or(0, |p| p + 1);
        if skip < v.len() && !is_placeholder(&v[skip..]) {
            out.push(Cand {
                start: offset + skip,
                end: offset + v.len(),
                kind: Kind::AuthHeader,
            });
        }
        return;
    }
    if accept_value(v) {
        out.push(Cand {
            start: offset,
            end: offset + v.len(),
            kind: field.kind(),
        });
    }
}

/// Whether a field value is worth masking (not empty, a reference, a placeholder, a literal).
fn accept_value(v: &[u8]) -> bool {
    let v = v.trim_ascii();
    if v.is_empty()
        || is_placeholder(v)
        || v.contains(&b'[') && v.contains(&b'#') && contains_placeholder(v)
    {
        return false;
    }
    if v[0] == b'$' || v.starts_with(b"{{") || v.starts_with(b"%(") || v.starts_with(b"<") {
        return false;
    }
    if v.iter()
        .all(|c| *c == b'*' || *c == b'x' || *c == b'X' || *c == b'.')
    {
        return false;
    }
    let lower = v.to_ascii_lowercase();
    !matches!(
        lower.as_slice(),
        b"null"
            | b"none"
            | b"true"
            | b"false"
            | b"yes"
            | b"no"
            | b"nil"
            | b"undefined"
            | b"\"\""
            | b"''"
            | b"-"
            | b"redacted"
            | b"<redacted>"
            | b"required"
            | b"optional"
            | b"str"
            | b"string"
    )
}

fn contains_placeholder(v: &[u8]) -> bool {
    v.iter()
        .enumerate()
        .any(|(i, c)| *c == b'#' && placeholder_at(v, i).is_some())
}

fn is_placeholder(v: &[u8]) -> bool {
    v.iter()
        .position(|c| *c == b'#')
        .and_then(|h| placeholder_at(v, h))
        == Some((0, v.len()))
}

/// If `b[hash]` is the `#` of a `[KIND#xxxx]` placeholder, its span.
fn placeholder_at(b: &[u8], hash: usize) -> Option<(usize, usize)> {
    let close = hash + 5;
    if close >= b.len()
        || b[close] != b']'
        || !b[hash + 1..close]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    {
        return None;
    }
    let mut s = hash;
    while s > 0
        && (b[s - 1].is_ascii_uppercase() || b[s - 1].is_ascii_digit() || b[s - 1] == b'_')
        && hash - s <= 40
    {
        s -= 1;
    }
    (s > 0 && s < hash && b[s - 1] == b'[' && b[s].is_ascii_uppercase()).then(|| (s - 1, close + 1))
}

/// End of a value that runs to the end of the line (headers), or to a closing quote.
fn line_value_end(b: &[u8], vs: usize) -> usize {
    let mut e = vs;
    while e < b.len()
        && e - vs < MAX_VALUE
        && !matches!(b[e], b'\r' | b'\n' | b'"' | b'\'' | b'`')
        && !(b[e] == b'\\' && matches!(b.get(e + 1), Some(b'r' | b'n' | b'"')))
    {
        e += 1;
    }
    trim_end(b, vs, e)
}

/// Longest field value considered (a longer run is not a credential field).
const MAX_VALUE: usize = 4096;
/// Longest PEM private key body searched for its END line.
const MAX_PEM: usize = 16 * 1024;

/// Span of a field value starting at `vs`: quoted (`"…"`, `'…'`, `\"…\"`) or bare.
fn value_span(b: &[u8], vs: usize, json: bool) -> (usize, usize) {
    if b[vs..].starts_with(b"\\\"") {
        let s = vs + 2;
        let mut e = s;
        while e < b.len() && e - s < MAX_VALUE && !b[e..].starts_with(b"\\\"") && b[e] != b'\n' {
            e += 1;
        }
        return (s, e);
    }
    if b[vs] == b'"' || b[vs] == b'\'' {
        let q = b[vs];
        let s = vs + 1;
        let mut e = s;
        while e < b.len() && e - s < MAX_VALUE && b[e] != q && b[e] != b'\n' {
            if b[e] == b'\\' {
                e += 1;
            }
            e += 1;
        }
        return (s, e.min(b.len()));
    }
    let mut e = vs;
    while e < b.len() && e - vs < MAX_VALUE {
        let c = b[e];
        if c.is_ascii_whitespace()
            || matches!(c, b'&' | b';' | b'"' | b'\'' | b'`')
            || (json && matches!(c, b',' | b'}' | b']'))
            || (c == b'\\' && matches!(b.get(e + 1), Some(b'n' | b'r' | b't' | b'"')))
        {
            break;
        }
        e += 1;
    }
    (vs, e)
}

fn url_at(b: &[u8], s: usize, e: usize, out: &mut Vec<Cand>) {
    let mut ss = s;
    while ss > 0 && (b[ss - 1].is_ascii_alphanumeric() || matches!(b[ss - 1], b'+' | b'.' | b'-')) {
        ss -= 1;
    }
    if s - ss < 2 || !b[ss].is_ascii_alphabetic() {
        return;
    }
    let scheme = b[ss..s].to_ascii_lowercase();
    // The authority ends at the first `/` or delimiter; `?` and `#` are not treated as ends
    // because real-world passwords contain them unencoded (`postgres://u:Pa55?!@db`).
    let mut ae = e;
    while ae < b.len()
        && ae - e < MAX_VALUE
        && !matches!(b[ae], b'/' | b'"' | b'\'' | b'<' | b'>' | b'\\' | b'`')
        && !b[ae].is_ascii_whitespace()
    {
        ae += 1;
    }
    let Some(at) = b[e..ae].iter().rposition(|c| *c == b'@').map(|p| e + p) else {
        return;
    };
    let userinfo = &b[e..at];
    if userinfo.is_empty() {
        return;
    }
    if let Some(colon) = userinfo.iter().position(|c| *c == b':') {
        let ps = e + colon + 1;
        if ps < at && accept_value(&b[ps..at]) {
            out.push(Cand {
                start: ps,
                end: at,
                kind: Kind::Password,
            });
        }
    } else if matches!(
        scheme.as_slice(),
        b"http" | b"https" | b"git" | b"git+https"
    ) && validate::random_token(userinfo, 16)
    {
        out.push(Cand {
            start: e,
            end: at,
            kind: Kind::Secret,
        });
    }
}

fn email_at(b: &[u8], at: usize, out: &mut Vec<Cand>) {
    let local = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-');
    let mut s = at;
    while s > 0 && local(b[s - 1]) && at - s < 64 {
        s -= 1;
    }
    while s < at && matches!(b[s], b'.' | b'-' | b'+') {
        s += 1;
    }
    if s == at {
        return;
    }
    if s > 0 {
        let before = b[s - 1];
        let after_scheme = before == b'/' && s >= 2 && b[s - 2] == b'/';
        if after_scheme
            || before == b'@'
            || (before == b':' && !b[s.saturating_sub(7)..s].eq_ignore_ascii_case(b"mailto:"))
            || word(before)
        {
            return;
        }
    }
    let mut e = at + 1;
    while e < b.len()
        && (b[e].is_ascii_alphanumeric() || matches!(b[e], b'.' | b'-'))
        && e - at < 255
    {
        e += 1;
    }
    while e > at + 1 && matches!(b[e - 1], b'.' | b'-') {
        e -= 1;
    }
    let domain = &b[at + 1..e];
    let Some(dot) = domain.iter().rposition(|c| *c == b'.') else {
        return;
    };
    let tld = &domain[dot + 1..];
    if tld.len() < 2
        || !tld.iter().all(u8::is_ascii_alphabetic)
        || domain.split(|c| *c == b'.').any(<[u8]>::is_empty)
    {
        return;
    }
    const FILE_EXT: &[&[u8]] = &[
        b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"js", b"css", b"json", b"txt", b"log",
        b"gz", b"zip", b"tar", b"py", b"rs", b"go", b"md", b"html", b"xml", b"yaml", b"yml",
        b"toml", b"lock", b"so", b"bin", b"sh", b"pdf", b"csv", b"ts", b"tgz", b"whl", b"jar",
    ];
    if FILE_EXT.iter().any(|x| tld.eq_ignore_ascii_case(x)) || domain[0].is_ascii_digit() {
        return;
    }
    if e < b.len() && b[e] == b':' {
        return; // scp-style `user@host:path`
    }
    out.push(Cand {
        start: s,
        end: e,
        kind: Kind::Email,
    });
}

fn pem_at(text: &str, s: usize, out: &mut Vec<Cand>) {
    let b = text.as_bytes();
    let head_end = (s + 80).min(b.len());
    let Some(label_end) = memchr::memmem::find(&b[s..head_end], b"PRIVATE KEY").map(|p| s + p + 11)
    else {
        return;
    };
    let window = &b[label_end..(label_end + MAX_PEM).min(b.len())];
    let end = match memchr::memmem::find(window, b"-----END") {
        Some(p) => {
            let after = label_end + p + 8;
            memchr::memmem::find(&b[after..(after + 80).min(b.len())], b"-----")
                .map_or(after, |q| after + q + 5)
        }
        None => {
            // Truncated payload head: mask the whole remaining key body.
            let mut e = label_end;
            while e < b.len() && (b64(b[e]) || matches!(b[e], b'-' | b'\r' | b'\n' | b'\\')) {
                e += 1;
            }
            e
        }
    };
    out.push(Cand {
        start: s,
        end,
        kind: Kind::PrivateKey,
    });
}

fn jwt_at(text: &str, s: usize, out: &mut Vec<Cand>) {
    let b = text.as_bytes();
    if &b[s..s + 3] != b"eyJ" || (s > 0 && (word(b[s - 1]) || b[s - 1] == b'-')) {
        return;
    }
    let mut e = s;
    let mut dots = 0;
    while e < b.len() && e - s < 16384 {
        let c = b[e];
        if c == b'.' {
            if dots == 2 {
                break;
            }
            dots += 1;
        } else if !(c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
            break;
        }
        e += 1;
    }
    if dots == 2 && validate::jwt(&text[s..e]) {
        out.push(Cand {
            start: s,
            end: e,
            kind: Kind::Jwt,
        });
    }
}

/// A 40-char AWS-secret-shaped token within 256 bytes of an access key id.
fn aws_secret_near(b: &[u8], id_start: usize, id_end: usize, out: &mut Vec<Cand>) {
    let lo = id_start.saturating_sub(256);
    let hi = (id_end + 256).min(b.len());
    let tok = |c: u8| c.is_ascii_alphanumeric() || c == b'/' || c == b'+';
    let mut p = lo;
    while p < hi {
        if !tok(b[p]) {
            p += 1;
            continue;
        }
        let mut e = p;
        while e < b.len() && tok(b[e]) {
            e += 1;
        }
        if e - p == 40 && validate::random_token(&b[p..e], 40) {
            out.push(Cand {
                start: p,
                end: e,
                kind: Kind::AwsSecretKey,
            });
        }
        p = e;
    }
}

/// Whether the number at `i` is labelled as an order / invoice / reference number, which a
/// Luhn-valid look-alike often is (one in ten random numbers passes Luhn).
fn labelled_as_id(b: &[u8], i: usize) -> bool {
    let before = b[i.saturating_sub(24)..i].to_ascii_lowercase();
    let before = before.trim_ascii_end();
    let before = before.strip_suffix(b"#").unwrap_or(before).trim_ascii_end();
    let before = before.strip_suffix(b":").unwrap_or(before).trim_ascii_end();
    [
        &b"order"[..],
        b"order id",
        b"order no",
        b"invoice",
        b"reference",
        b"ref",
        b"tracking",
        b"ticket",
        b"build",
        b"job",
    ]
    .iter()
    .any(|w| before.ends_with(w))
}

fn iban_at(b: &[u8], i: usize) -> Option<usize> {
    if !(b.get(i + 1)?.is_ascii_uppercase()
        && b.get(i + 2)?.is_ascii_digit()
        && b.get(i + 3)?.is_ascii_digit())
    {
        return None;
    }
    // Compact or grouped by single spaces in fours.
    let mut e = i;
    let mut count = 0;
    while e < b.len() && count < 34 {
        if b[e].is_ascii_uppercase() || b[e].is_ascii_digit() {
            count += 1;
        } else if !(b[e] == b' '
            && count % 4 == 0
            && b.get(e + 1)
                .is_some_and(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
        {
            break;
        }
        e += 1;
    }
    if count < 15 || (e < b.len() && word(b[e])) {
        return None;
    }
    // A grouped IBAN's last group can be shorter; try the longest valid prefix of groups.
    let s = std::str::from_utf8(&b[i..e]).ok()?;
    if validate::iban(s) {
        return Some(e);
    }
    None
}

fn ipv4_at(b: &[u8], i: usize) -> Option<usize> {
    let mut p = i;
    for part in 0..4 {
        let d = b[p..]
            .iter()
            .take(4)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if d == 0 || d > 3 {
            return None;
        }
        let v: u32 = std::str::from_utf8(&b[p..p + d]).ok()?.parse().ok()?;
        if v > 255 {
            return None;
        }
        p += d;
        if part < 3 {
            if b.get(p) != Some(&b'.') {
                return None;
            }
            p += 1;
        }
    }
    Some(p)
}

fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// Sorts and merges overlapping candidates into their union; the merged kind is the most
/// specific one.
fn merge(mut cands: Vec<Cand>) -> Vec<Cand> {
    if cands.len() < 2 {
        return cands;
    }
    cands.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut out: Vec<Cand> = Vec::with_capacity(cands.len());
    for c in cands {
        if let Some(last) = out.last_mut()
            && c.start < last.end
        {
            last.end = last.end.max(c.end);
            if c.kind.rank() > last.kind.rank() {
                last.kind = c.kind;
            }
            continue;
        }
        out.push(c);
    }
    out
}
