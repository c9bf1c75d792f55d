//! Unit tests per detector: true positives are masked with the right kind, look-alikes are not.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use airlock_mask::{ExtraDetector, HostKey, Kind, MaskConfig, Masker};

fn masker() -> Masker {
    Masker::new(
        &MaskConfig::default(),
        &HostKey::from_bytes(vec![42; 32]).unwrap(),
    )
    .unwrap()
}

/// Asserts that `secret` inside `text` is masked as `kind` and does not survive.
#[track_caller]
fn hit(text: &str, secret: &str, kind: &str) {
    let m = masker().mask_text(text);
    assert!(
        !m.text.contains(secret),
        "{secret:?} survived in {:?}",
        m.text
    );
    let start = text.find(secret).unwrap();
    let f = m
        .findings
        .iter()
        .find(|f| f.start <= start && f.end >= start + secret.len())
        .unwrap_or_else(|| panic!("no finding covers {secret:?} in {text:?}: {:?}", m.findings));
    assert_eq!(f.kind.name(), kind, "text {text:?} masked as {:?}", m.text);
    assert!(m.text.contains(&format!("[{kind}#")));
}

/// Asserts that nothing in `text` is masked.
#[track_caller]
fn miss(text: &str) {
    let m = masker().mask_text(text);
    assert_eq!(m.text, text, "false positive: {:?}", m.findings);
}

#[test]
fn aws_access_key_and_secret() {
    hit(
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        "AKIAIOSFODNN7EXAMPLE",
        "AWS_ACCESS_KEY_ID",
    );
    hit(
        "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_SECRET_KEY",
    );
    hit(
        "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_SECRET_KEY",
    );
    miss("AKIAIOSFODNN7EXAMPL is too short, XAKIAIOSFODNN7EXAMPLE is glued");
    miss("akiaiosfodnn7example lower case");
}

#[test]
fn vcs_and_saas_tokens() {
    hit(
        "git push https://x:ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789@github.com/o/r",
        "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "GITHUB_TOKEN",
    );
    hit(
        "GITLAB=glpat-Ab3dEf6hIj9kLm2nOp5q",
        "glpat-Ab3dEf6hIj9kLm2nOp5q",
        "GITLAB_TOKEN",
    );
    hit(
        "slack xoxb-2134512345-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "xoxb-2134512345-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "SLACK_TOKEN",
    );
    hit(
        "curl https://hooks.slack.com/services/T0123ABCD/B0123ABCD/aBcDeFgHiJkLmNoPqRsTuVwX",
        "T0123ABCD/B0123ABCD/aBcDeFgHiJkLmNoPqRsTuVwX",
        "SLACK_TOKEN",
    );
    hit(
        "stripe sk_live_51HqA2bC3dE4fG5hI6jK7lM8n",
        "sk_live_51HqA2bC3dE4fG5hI6jK7lM8n",
        "STRIPE_KEY",
    );
    hit(
        "x sk-proj-Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0UvWxYz12345678 y",
        "sk-proj-Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0UvWxYz12345678",
        "OPENAI_KEY",
    );
    hit(
        "x sk-ant-api03-Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0UvWxYz-_AA y",
        "sk-ant-api03-Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0UvWxYz-_AA",
        "ANTHROPIC_KEY",
    );
    hit(
        "key=AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW",
        "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW",
        "GCP_API_KEY",
    );
    hit(
        "//registry.npmjs.org/:_authToken=npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "NPM_TOKEN",
    );
    miss("the ghp_ prefix alone, ghp_short, task-runner sk-learn");
    miss("sk-this-is-not-a-key-but-a-long-slug-for-docs");
}

#[test]
fn azure_keys() {
    let k =
        "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6QUJDREVGR0hJSktMTU5PUA==";
    hit(
        &format!(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={k};EndpointSuffix=core.windows.net"
        ),
        k,
        "AZURE_KEY",
    );
}

#[test]
fn jwt() {
    let t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    hit(&format!("token {t}"), t, "JWT");
    hit(&format!("Authorization: Bearer {t}\r\n"), t, "JWT");
    miss("eyJub3QiOiJqd3QifQ.is.notajwt");
}

#[test]
fn pem_private_key_whole_block_and_truncated() {
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1b2c3\nd4e5f6==\n-----END RSA PRIVATE KEY-----";
    hit(&format!("cat key.pem\n{pem}\n"), pem, "PRIVATE_KEY");
    let json = r#"{"private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n", "x": 1}"#;
    hit(json, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "PRIVATE_KEY");
    hit(
        "body: -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",
        "b3BlbnNzaC1rZXktdjEAAAAA",
        "PRIVATE_KEY",
    );
    miss("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----");
    miss("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----");
}

#[test]
fn urls_userinfo_and_query() {
    hit(
        "pg_dump postgres://app:S3cr3t!pw@db.internal:5432/shop",
        "S3cr3t!pw",
        "PASSWORD",
    );
    hit(
        "mongodb+srv://u:p4ss@cluster0.mongodb.net/db",
        "p4ss",
        "PASSWORD",
    );
    hit(
        "GET /v1/items?limit=10&access_token=abc123def456ghi789 HTTP/1.1",
        "abc123def456ghi789",
        "SECRET",
    );
    hit(
        "https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sig=AbCdEf%2BGhIj%3D&se=2024",
        "AbCdEf%2BGhIj%3D",
        "SECRET",
    );
    let m = masker().mask_text("postgres://app:pw@db.internal/shop");
    assert_eq!(
        m.text.replace(&m.findings[0].placeholder(), "X"),
        "postgres://app:X@db.internal/shop",
        "host and user stay visible"
    );
    miss("https://github.com/rust-lang/regex?tab=readme&page=2");
    miss("ssh://git@github.com/org/repo.git");
}

#[test]
fn key_value_and_json_fields() {
    hit(
        "PGPASSWORD=hunter2 pg_dump -h db shop",
        "hunter2",
        "PASSWORD",
    );
    hit("MYSQL_PWD='p@ss word' mysqldump", "p@ss word", "PASSWORD");
    hit(
        r#"{"user":"bob","password":"hunter2!","x":1}"#,
        "hunter2!",
        "PASSWORD",
    );
    hit(
        r#"{\"client_secret\": \"s3cr3tvalue\"}"#,
        "s3cr3tvalue",
        "SECRET",
    );
    hit(
        "GITHUB_TOKEN: abcdef0123456789",
        "abcdef0123456789",
        "SECRET",
    );
    hit(
        "export STRIPE_API_KEY=foo_bar_baz_1234",
        "foo_bar_baz_1234",
        "SECRET",
    );
    hit("--password=hunter2", "hunter2", "PASSWORD");
    hit(
        "db_password: \"correct horse\"",
        "correct horse",
        "PASSWORD",
    );
    hit(
        "the api token is 8fJ2kL9qRt7VxY3zA1bC5dE6",
        "8fJ2kL9qRt7VxY3zA1bC5dE6",
        "SECRET",
    );
    miss("password_file=/etc/app/pw.txt token_url=https://auth.example.com/token");
    miss(r#"{"max_tokens": 1024, "password": null, "token_type": "bearer"}"#);
    miss("PASSWORD=$DB_PASSWORD TOKEN=${TOKEN} secret={{ .Values.secret }}");
    miss("docker login --password-stdin; monkey=banana; keyboard=us");
    miss("the password policy requires rotation");
}

#[test]
fn http_headers() {
    hit(
        "Authorization: Basic dXNlcjpwYXNzd29yZA==\r\n",
        "dXNlcjpwYXNzd29yZA==",
        "AUTH_HEADER",
    );
    hit("Cookie: session=abc123; theme=dark\r\n", "abc123", "COOKIE");
    hit(
        "X-Api-Key: 0123456789abcdef\r\n",
        "0123456789abcdef",
        "SECRET",
    );
    let m = masker().mask_text("Authorization: Bearer abc.def\r\n");
    assert!(
        m.text.starts_with("Authorization: Bearer ["),
        "scheme stays visible: {}",
        m.text
    );
    miss(
        "Content-Type: application/json\r\nAccept: */*\r\nX-Request-Id: 550e8400-e29b-41d4-a716-446655440000\r\n",
    );
}

#[test]
fn pii() {
    hit(
        "contact jane.doe+ops@example.co.uk today",
        "jane.doe+ops@example.co.uk",
        "EMAIL",
    );
    hit("mailto:bob@example.com", "bob@example.com", "EMAIL");
    hit("call +44 20 7946 0958 now", "+44 20 7946 0958", "PHONE");
    hit("call (415) 555-2671", "(415) 555-2671", "PHONE");
    hit("call 415-555-2671.", "415-555-2671", "PHONE");
    hit(
        "card 4111 1111 1111 1111 exp",
        "4111 1111 1111 1111",
        "CREDIT_CARD",
    );
    hit(
        "card=5555-5555-5555-4444",
        "5555-5555-5555-4444",
        "CREDIT_CARD",
    );
    hit(
        "iban DE89 3704 0044 0532 0130 00 ok",
        "DE89 3704 0044 0532 0130 00",
        "IBAN",
    );
    hit(
        "iban GB82WEST12345698765432",
        "GB82WEST12345698765432",
        "IBAN",
    );
    hit("ssn 123-45-6789", "123-45-6789", "US_SSN");
    miss("git@github.com:org/repo.git icon@2x.png lodash@4.17.21 @types/node");
    miss("card 4111 1111 1111 1112 (bad luhn), ts 1700000000000, v1.2.3, 2024-01-15T10:00:00Z");
    miss("id 550e8400-e29b-41d4-a716-446655440000 sha 3f786850e387550fdab836ed7e6dc881de23001b");
    miss("iban DE89370400440532013001 (bad check) 000-12-3456 10.0.0.1 192.168.100.254");
}

#[test]
fn ip_addresses_are_optional() {
    miss("connect 10.1.2.3:443");
    let cfg = MaskConfig {
        mask_ip_addresses: true,
        ..MaskConfig::default()
    };
    let m = Masker::new(&cfg, &HostKey::from_bytes(vec![1; 32]).unwrap()).unwrap();
    let out = m.mask_text("connect 10.1.2.3:443 v1.2.3.4.5");
    assert!(out.text.starts_with("connect [IP_ADDRESS#"), "{}", out.text);
    assert_eq!(out.findings.len(), 1);
}

#[test]
fn argv_flag_semantics() {
    let m = masker();
    let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let out = m.mask_argv(&v(&["mysql", "-uroot", "-phunter2", "-P", "3306", "shop"]));
    assert_eq!(out.argv[1], "-uroot");
    assert!(out.argv[2].starts_with("-p[PASSWORD#"));
    assert_eq!(out.argv[4], "3306");
    let out = m.mask_argv(&v(&[
        "PGPASSWORD=pw1",
        "pg_dump",
        "--password",
        "pw2",
        "--token=tok3",
        "-h",
        "db",
    ]));
    assert!(out.argv[0].starts_with("PGPASSWORD=[PASSWORD#"));
    assert!(out.argv[3].starts_with("[PASSWORD#"));
    assert!(out.argv[4].starts_with("--token=[SECRET#"));
    assert_eq!(out.findings.len(), 3);
    assert_eq!(out.findings[1].arg, Some(3));
    let out = m.mask_argv(&v(&["curl", "-u", "admin:pa55", "https://api.example.com"]));
    assert!(
        out.argv[2].starts_with("admin:[PASSWORD#"),
        "{:?}",
        out.argv
    );
    let out = m.mask_argv(&v(&[
        "aws",
        "s3",
        "cp",
        "x",
        "s3://bucket/k",
        "--sse-c",
        "AES256",
        "--sse-c-key",
        "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI=",
    ]));
    assert_eq!(out.argv[4], "s3://bucket/k", "bucket stays visible");
    assert!(out.argv[8].starts_with("[SECRET#"));
    let out = m.mask_argv(&v(&["redis-cli", "-a", "r3dis", "ping"]));
    assert!(out.argv[2].starts_with("[PASSWORD#"));
    let out = m.mask_argv(&v(&["ssh", "-p", "2222", "admin@db.example.com"]));
    assert_eq!(out.argv[2], "2222", "ssh -p is a port");
    let out = m.mask_argv(&v(&[
        "docker",
        "login",
        "--password-stdin",
        "registry.example.com",
    ]));
    assert!(out.findings.is_empty(), "{:?}", out.argv);
}

#[test]
fn env_and_http_head() {
    let m = masker();
    assert!(
        m.mask_env("AWS_SECRET_ACCESS_KEY", "abc")
            .text
            .starts_with("[AWS_SECRET_KEY#")
    );
    assert!(
        m.mask_env("DATABASE_URL", "postgres://u:pw@h/db")
            .text
            .contains(":[PASSWORD#")
    );
    assert_eq!(m.mask_env("HOME", "/root").text, "/root");
    let head = "POST /upload?token=t0k3nvalue HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer abcdef123456\r\nPrivate-Token: zzz999\r\nContent-Length: 12\r\n\r\n";
    let out = m.mask_http_head(head);
    for s in ["t0k3nvalue", "abcdef123456", "zzz999"] {
        assert!(!out.text.contains(s), "{s} survived: {}", out.text);
    }
    assert!(out.text.contains("Host: api.example.com\r\n"));
    assert!(out.text.contains("Content-Length: 12\r\n"));
    assert_eq!(out.findings.len(), 3);
}

#[test]
fn placeholder_format_fingerprint_and_idempotence() {
    let m = masker();
    let a = m.mask_text("PGPASSWORD=hunter2 x");
    let b = m.mask_text("other text; password: hunter2");
    assert_eq!(
        a.findings[0].fingerprint, b.findings[0].fingerprint,
        "same secret, same fingerprint"
    );
    let fp = &a.findings[0].fingerprint;
    assert_eq!(fp.len(), 4);
    assert!(
        fp.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(a.text, format!("PGPASSWORD=[PASSWORD#{fp}] x"));
    let other = Masker::new(
        &MaskConfig::default(),
        &HostKey::from_bytes(vec![43; 32]).unwrap(),
    )
    .unwrap();
    let c = other.mask_text("password=hunter2 password=hunter3 password=hunter4");
    let d = m.mask_text("password=hunter2 password=hunter3 password=hunter4");
    assert_ne!(c.text, d.text, "fingerprints are keyed");
    let twice = m.mask_text(&a.text);
    assert_eq!(twice.text, a.text);
    assert!(twice.findings.is_empty());
}

#[test]
fn config_extra_detectors_allow_list_unmasked_fields() {
    let cfg = MaskConfig {
        extra_detectors: vec![ExtraDetector {
            name: "ACME_TOKEN".into(),
            regex: r"acme_([a-z0-9]{12})".into(),
            keywords: vec!["acme_".into()],
        }],
        allow_literals: vec!["AKIAIOSFODNN7EXAMPLE".into()],
        allow_regexes: vec!["^test-only-.*$".into()],
        unmasked_fields: vec!["api-key".into()],
        disabled_kinds: vec!["PHONE".into()],
        ..MaskConfig::default()
    };
    let m = Masker::new(&cfg, &HostKey::from_bytes(vec![1; 32]).unwrap()).unwrap();
    let out = m.mask_text("acme_abcdef012345 AKIAIOSFODNN7EXAMPLE password=test-only-pw --api-key=visible +44 20 7946 0958");
    assert!(out.text.starts_with("acme_[ACME_TOKEN#"), "{}", out.text);
    assert!(
        out.text.contains(
            "AKIAIOSFODNN7EXAMPLE password=test-only-pw --api-key=visible +44 20 7946 0958"
        ),
        "{}",
        out.text
    );
    assert_eq!(out.findings[0].kind, Kind::from_name("ACME_TOKEN"));
    let bad = MaskConfig {
        extra_detectors: vec![ExtraDetector {
            name: "lower".into(),
            regex: "x".into(),
            keywords: vec![],
        }],
        ..MaskConfig::default()
    };
    assert!(Masker::new(&bad, &HostKey::from_bytes(vec![1; 32]).unwrap()).is_err());
}

#[test]
fn luhn_valid_numbers_labelled_as_ids_are_not_cards() {
    miss("shipment for order 2428122171665005 dispatched");
    miss("invoice #4111111111111111");
    hit(
        "paid with 2428122171665005 yesterday",
        "2428122171665005",
        "CREDIT_CARD",
    );
}

#[test]
fn numbers_followed_by_other_numbers() {
    hit(
        "card 4625 9247 4758 5162 0 items",
        "4625 9247 4758 5162",
        "CREDIT_CARD",
    );
    hit(
        "2221-8342-5936-4546 0",
        "2221-8342-5936-4546",
        "CREDIT_CARD",
    );
    hit("call +495046517818 0a", "+495046517818", "PHONE");
}

/// Regressions found by `cargo fuzz`: masking must be a fixed point.
#[test]
fn fuzz_regressions_are_idempotent() {
    let m = masker();
    for input in [
        "+44 20 7946 09ne@example.com",
        "{\"password\":6\"x\", \"api_keECR\u{7f}\u{1a}\0\0ET#abcd]\"}",
        " ey\r\nCookie:T!' invoice 4111 1111 1111 1111 +44 20 Bearek ey-----BEGIN RSAP-----BEGIN RSA PRIVATE KEY-----\n\rII\r\nCapi-key' aT=b; c=d\r\n\r\n",
    ] {
        let once = m.mask_text(input);
        assert_eq!(
            m.mask_text(&once.text).text,
            once.text,
            "mask_text on {input:?}"
        );
        let head = m.mask_http_head(input);
        assert_eq!(
            m.mask_http_head(&head.text).text,
            head.text,
            "mask_http_head on {input:?}"
        );
    }
    let argv: Vec<String> = ["PGPA", "-phungres://u:p@h/ngres://u:p@h/db", "4OiJIUzI"]
        .map(String::from)
        .into();
    let once = m.mask_argv(&argv);
    assert_eq!(m.mask_argv(&once.argv).argv, once.argv);
}
