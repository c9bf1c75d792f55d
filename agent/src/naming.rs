//! Names a destination from the first bytes a process sends on it: the HTTP request line
//! and `Host` header, or the SNI of a TLS ClientHello — and, for S3 traffic, the bucket and
//! key (virtual-host style `bucket.s3.<region>.amazonaws.com/key`, or path style
//! `host/bucket/key`), so a policy can tell `s3://reports-q3` from `s3://anything-else`.

/// What the payload says about where it goes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Named {
    pub hostname: Option<String>,
    /// "http" or "https" (TLS).
    pub scheme: Option<String>,
    /// `METHOD /path` for HTTP.
    pub request_line: Option<String>,
    /// Full URL when known (HTTP).
    pub url: Option<String>,
    pub bucket: Option<String>,
    pub key: Option<String>,
}

/// Parses the first payload of a connection (`port` helps tell S3 path style on custom
/// endpoints: any HTTP request whose path has a first segment names a candidate bucket
/// only when the host looks like S3 or the request is S3-shaped).
pub fn name(payload: &[u8]) -> Named {
    if is_client_hello(payload) {
        // A client talking TLS to an address sends no SNI (busybox, Go to an IP): still TLS.
        let sni = tls_sni(payload);
        return Named {
            scheme: Some("https".into()),
            bucket: sni.as_deref().and_then(virtual_host_bucket),
            hostname: sni,
            ..Default::default()
        };
    }
    http(payload).unwrap_or_default()
}

/// A TLS handshake record (type 22, version 3.x) whose first message is a ClientHello.
fn is_client_hello(p: &[u8]) -> bool {
    p.len() >= 6 && p[0] == 22 && p[1] == 3 && p[5] == 1
}

/// Parses the plaintext a process handed OpenSSL's `SSL_write` (HTTPS): as [`name`]'s
/// HTTP case, with scheme `https` and an `https://` URL. Plaintext that is not HTTP
/// (SMTP, a binary protocol, HTTP/2 frames) names only the scheme.
pub fn name_tls_plaintext(payload: &[u8]) -> Named {
    let mut named = http(payload).unwrap_or_default();
    named.scheme = Some("https".into());
    if let Some(url) = named.url.take() {
        named.url = Some(url.replacen("http://", "https://", 1));
    }
    named
}

fn http(payload: &[u8]) -> Option<Named> {
    let text = std::str::from_utf8(payload).ok().or_else(|| {
        // A cut-off multi-byte character at the end: parse the valid prefix.
        let valid = std::str::from_utf8(payload).err()?.valid_up_to();
        std::str::from_utf8(&payload[..valid]).ok()
    })?;
    let mut lines = text.split("\r\n");
    let request = lines.next()?;
    let mut parts = request.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if !version.starts_with("HTTP/")
        || method.is_empty()
        || !method.chars().all(|c| c.is_ascii_uppercase())
    {
        return None;
    }
    let host = lines.take_while(|l| !l.is_empty()).find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.trim().to_owned())
    });
    let path = target.split('?').next().unwrap_or(target);
    let mut named = Named {
        scheme: Some("http".into()),
        request_line: Some(format!("{method} {path}")),
        url: host.as_ref().map(|h| format!("http://{h}{path}")),
        hostname: host.as_ref().map(|h| strip_port(h).to_owned()),
        ..Default::default()
    };
    let path_segments: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
    match named.hostname.as_deref().and_then(virtual_host_bucket) {
        Some(bucket) => {
            named.bucket = Some(bucket);
            named.key = Some(path.trim_start_matches('/').to_owned()).filter(|k| !k.is_empty());
        }
        None if looks_like_s3(host.as_deref(), text) => {
            named.bucket = path_segments
                .first()
                .filter(|b| !b.is_empty())
                .map(|b| (*b).to_owned());
            named.key = path_segments
                .get(1)
                .filter(|k| !k.is_empty())
                .map(|k| (*k).to_owned());
        }
        None => {}
    }
    Some(named)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .map(|h| h.trim_start_matches('['))
            .unwrap_or(host);
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

/// `bucket.s3.amazonaws.com`, `bucket.s3.eu-west-1.amazonaws.com`, `bucket.s3-eu-west-1…`.
fn virtual_host_bucket(host: &str) -> Option<String> {
    let host = strip_port(host);
    let (bucket, rest) = host.split_once('.')?;
    (rest.starts_with("s3.") || rest.starts_with("s3-"))
        .then(|| bucket.to_owned())
        .filter(|b| !b.is_empty())
}

/// Path-style S3: an `s3.` host, or AWS SigV4 S3 headers on any endpoint (moto, MinIO).
fn looks_like_s3(host: Option<&str>, text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    host.is_some_and(|h| h.starts_with("s3.") || h.starts_with("s3-"))
        || lower.contains("\r\nx-amz-content-sha256:")
        || lower.contains("aws4-hmac-sha256")
}

/// The server name of a TLS ClientHello (RFC 8446 §4.1.2, RFC 6066 §3).
pub fn tls_sni(p: &[u8]) -> Option<String> {
    // Record header: type 22 (handshake), version, length; handshake type 1 (ClientHello).
    if p.len() < 43 || p[0] != 22 || p[5] != 1 {
        return None;
    }
    let mut i = 5 + 4 + 2 + 32; // handshake header, client version, random
    let sid = *p.get(i)? as usize;
    i += 1 + sid;
    let suites = u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]) as usize;
    i += 2 + suites;
    let comp = *p.get(i)? as usize;
    i += 1 + comp;
    let ext_total = u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]) as usize;
    i += 2;
    let end = (i + ext_total).min(p.len());
    while i + 4 <= end {
        let kind = u16::from_be_bytes([p[i], p[i + 1]]);
        let len = u16::from_be_bytes([p[i + 2], p[i + 3]]) as usize;
        let body = p.get(i + 4..i + 4 + len)?;
        if kind == 0 {
            // server_name_list: u16 length, then (type u8, u16 length, name).
            let name_len = u16::from_be_bytes([*body.get(3)?, *body.get(4)?]) as usize;
            if *body.get(2)? != 0 {
                return None;
            }
            let name = body.get(5..5 + name_len)?;
            return std::str::from_utf8(name).ok().map(str::to_owned);
        }
        i += 4 + len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_request_line_host_and_path_style_bucket() {
        let n = name(b"PUT /reports-q3/2026/data.csv?x-id=PutObject HTTP/1.1\r\nHost: 127.0.0.1:5000\r\nX-Amz-Content-SHA256: UNSIGNED-PAYLOAD\r\n\r\n");
        assert_eq!(n.hostname.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            n.request_line.as_deref(),
            Some("PUT /reports-q3/2026/data.csv")
        );
        assert_eq!(
            n.url.as_deref(),
            Some("http://127.0.0.1:5000/reports-q3/2026/data.csv")
        );
        assert_eq!(
            (n.bucket.as_deref(), n.key.as_deref()),
            (Some("reports-q3"), Some("2026/data.csv"))
        );
    }

    #[test]
    fn virtual_host_style_bucket() {
        let n =
            name(b"GET /k/v.txt HTTP/1.1\r\nhost: my-bucket.s3.eu-west-1.amazonaws.com\r\n\r\n");
        assert_eq!(
            (n.bucket.as_deref(), n.key.as_deref()),
            (Some("my-bucket"), Some("k/v.txt"))
        );
        // Plain web traffic names no bucket.
        let n = name(b"GET /index.html HTTP/1.1\r\nHost: example.org\r\n\r\n");
        assert_eq!(
            (n.hostname.as_deref(), n.bucket),
            (Some("example.org"), None)
        );
        assert_eq!(name(b"\x00\x01binary"), Named::default());
    }

    #[test]
    fn tls_plaintext_names_an_https_url_and_path_style_bucket() {
        let n = name_tls_plaintext(
            b"PUT /reports-q3/2026/data.csv HTTP/1.1\r\nHost: s3.test:8443\r\nUser-Agent: curl/8.14.1\r\nContent-Length: 12\r\n\r\nhello, world",
        );
        assert_eq!(n.scheme.as_deref(), Some("https"));
        assert_eq!(
            n.url.as_deref(),
            Some("https://s3.test:8443/reports-q3/2026/data.csv")
        );
        assert_eq!(n.hostname.as_deref(), Some("s3.test"));
        assert_eq!(
            (n.bucket.as_deref(), n.key.as_deref()),
            (Some("reports-q3"), Some("2026/data.csv"))
        );
        assert_eq!(
            n.request_line.as_deref(),
            Some("PUT /reports-q3/2026/data.csv")
        );
        // Plaintext cut at 512 bytes mid-header still names the request.
        let mut long =
            b"GET /anything-else/k HTTP/1.1\r\nHost: s3.eu-west-1.amazonaws.com\r\nX-Pad: "
                .to_vec();
        long.resize(512, b'a');
        let n = name_tls_plaintext(&long);
        assert_eq!(
            (n.bucket.as_deref(), n.key.as_deref()),
            (Some("anything-else"), Some("k"))
        );
        // Not HTTP (HTTP/2 preface, SMTP): scheme only, no made-up URL.
        let n = name_tls_plaintext(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00");
        assert_eq!((n.scheme.as_deref(), n.bucket), (Some("https"), None));
        assert_eq!(
            name_tls_plaintext(b"EHLO client\r\n"),
            Named {
                scheme: Some("https".into()),
                ..Default::default()
            }
        );
    }

    /// A ClientHello as a client sends it, with only the server_name extension (none for
    /// an empty `sni`).
    pub fn client_hello(sni: &str) -> Vec<u8> {
        let name = sni.as_bytes();
        let mut ext = Vec::new();
        if !name.is_empty() {
            let list_len = (name.len() + 3) as u16;
            ext.extend([0, 0]);
            ext.extend((list_len + 2).to_be_bytes());
            ext.extend(list_len.to_be_bytes());
            ext.push(0);
            ext.extend((name.len() as u16).to_be_bytes());
            ext.extend(name);
        }
        let mut body = vec![3, 3];
        body.extend([7u8; 32]);
        body.push(0); // session id
        body.extend([0, 2, 0x13, 0x01]); // one cipher suite
        body.extend([1, 0]); // null compression
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

    #[test]
    fn tls_sni_names_host_and_virtual_host_bucket() {
        let n = name(&client_hello("reports-q3.s3.amazonaws.com"));
        assert_eq!(n.hostname.as_deref(), Some("reports-q3.s3.amazonaws.com"));
        assert_eq!(
            (n.scheme.as_deref(), n.bucket.as_deref()),
            (Some("https"), Some("reports-q3"))
        );
        assert_eq!(
            tls_sni(&client_hello("example.org")[..30]),
            None,
            "truncated"
        );
    }

    #[test]
    fn a_client_hello_without_sni_is_still_tls() {
        // What a client connecting to an address sends: no server_name extension.
        assert_eq!(
            name(&client_hello("")),
            Named {
                scheme: Some("https".into()),
                ..Default::default()
            }
        );
        assert_eq!(name(b"\x16\x03").scheme, None, "too short to tell");
    }
}
