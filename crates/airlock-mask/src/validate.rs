//! Validators: cheap checks that raise confidence after a pattern matched (checksums,
//! structure, entropy), so look-alikes are not masked.

use base64::Engine as _;

/// Luhn checksum over the ASCII digits of `s` (other bytes are ignored).
#[must_use]
pub fn luhn(s: &str) -> bool {
    let mut sum = 0u32;
    let mut count = 0usize;
    for (i, d) in s
        .bytes()
        .rev()
        .filter(u8::is_ascii_digit)
        .map(|b| u32::from(b - b'0'))
        .enumerate()
    {
        let v = if i % 2 == 1 {
            let x = d * 2;
            if x > 9 { x - 9 } else { x }
        } else {
            d
        };
        sum += v;
        count += 1;
    }
    count > 0 && sum.is_multiple_of(10)
}

/// Whether a digit string has a payment-card issuer prefix and a matching length.
#[must_use]
pub fn card_brand_ok(digits: &str) -> bool {
    let b = digits.as_bytes();
    let n = b.len();
    let p = |k: usize| {
        digits
            .get(..k)
            .and_then(|x| x.parse::<u32>().ok())
            .unwrap_or(0)
    };
    match b.first() {
        Some(b'4') => n == 13 || n == 16 || n == 19,
        Some(b'5') => (51..=55).contains(&p(2)) && n == 16,
        Some(b'2') => (2221..=2720).contains(&p(4)) && n == 16,
        Some(b'3') => {
            ((p(2) == 34 || p(2) == 37) && n == 15) || ((3528..=3589).contains(&p(4)) && n == 16)
        }
        Some(b'6') => {
            (p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3))) && (16..=19).contains(&n)
        }
        _ => false,
    }
}

/// IBAN lengths per country (ISO 13616 registry, common countries).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AT", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"CH", 21),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"EE", 20),
    (b"ES", 24),
    (b"FI", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GI", 23),
    (b"GR", 27),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"KW", 30),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MT", 31),
    (b"NL", 18),
    (b"NO", 15),
    (b"PL", 28),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"SA", 24),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"TR", 26),
    (b"UA", 29),
];

/// Whether `s` (spaces allowed) is an IBAN of a known country with the right length and a
/// valid ISO 7064 mod-97 check.
#[must_use]
pub fn iban(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| *b != b' ').collect();
    let Some(country) = compact.get(..2) else {
        return false;
    };
    let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(c, _)| c.as_slice() == country) else {
        return false;
    };
    if compact.len() != len
        || !compact
            .get(2..4)
            .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
        || !compact
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return false;
    }
    let mut rem = 0u32;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        if b.is_ascii_digit() {
            rem = (rem * 10 + u32::from(b - b'0')) % 97;
        } else {
            rem = (rem * 100 + u32::from(b - b'A' + 10)) % 97;
        }
    }
    rem == 1
}

/// Whether `ddd-dd-dddd` is a plausibly issued US SSN (area not 000/666/9xx, group and serial
/// not zero).
#[must_use]
pub fn ssn(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 11 || b[3] != b'-' || b[6] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    match (num(0..3), num(4..6), num(7..11)) {
        (Some(area), Some(group), Some(serial)) => {
            area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
        }
        _ => false,
    }
}

/// Shannon entropy of `s` in bits per byte.
#[must_use]
pub fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[usize::from(b)] += 1;
    }
    #[expect(clippy::cast_precision_loss, reason = "lengths are far below 2^52")]
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether `s` has the shape of a random token: long enough, mixed character classes and
/// high entropy. Pure hex, pure digits and pure letters (hashes, ids, words) are rejected.
#[must_use]
pub fn random_token(s: &[u8], min_len: usize) -> bool {
    if s.len() < min_len {
        return false;
    }
    let digits = s.iter().filter(|b| b.is_ascii_digit()).count();
    let upper = s.iter().filter(|b| b.is_ascii_uppercase()).count();
    let lower = s.iter().filter(|b| b.is_ascii_lowercase()).count();
    let classes = usize::from(digits > 0) + usize::from(upper > 0) + usize::from(lower > 0);
    let hex_only = s.iter().all(u8::is_ascii_hexdigit);
    classes >= 2 && !hex_only && entropy(s) >= 3.5
}

/// Whether `s` is a structurally valid JWT: three base64url parts, the header decodes to a
/// JSON object with an `alg`.
#[must_use]
pub fn jwt(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(h), Some(p), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    if p.len() < 4 {
        return false;
    }
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    match engine.decode(h.trim_end_matches('=')) {
        Ok(header) => header.first() == Some(&b'{') && header.windows(5).any(|w| w == b"\"alg\""),
        Err(_) => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may unwrap")]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_known_test_cards_and_rejects_off_by_one() {
        assert!(luhn("4111 1111 1111 1111"));
        assert!(luhn("5555-5555-5555-4444"));
        assert!(luhn("378282246310005"));
        assert!(!luhn("4111 1111 1111 1112"));
        assert!(!luhn(""));
    }

    #[test]
    fn card_brands() {
        assert!(card_brand_ok("4111111111111111"));
        assert!(card_brand_ok("378282246310005"));
        assert!(card_brand_ok("2223003122003222"));
        assert!(!card_brand_ok("1700000000000"));
        assert!(!card_brand_ok("5955555555554444"));
    }

    #[test]
    fn iban_checks() {
        assert!(iban("DE89370400440532013000"));
        assert!(iban("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban("GB82 WEST 1234 5698 7654 33"));
        assert!(!iban("DE8937040044053201300"));
        assert!(!iban("XX89370400440532013000"));
    }

    #[test]
    fn ssn_checks() {
        assert!(ssn("123-45-6789"));
        assert!(!ssn("000-45-6789"));
        assert!(!ssn("666-45-6789"));
        assert!(!ssn("912-45-6789"));
        assert!(!ssn("123-00-6789"));
        assert!(!ssn("2024-01-15"));
    }

    #[test]
    fn random_token_rejects_hashes_and_words() {
        assert!(random_token(
            b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            20
        ));
        assert!(!random_token(
            b"da39a3ee5e6b4b0d3255bfef95601890afd80709",
            20
        ));
        assert!(!random_token(b"configuration_management_database", 20));
        assert!(!random_token(b"short1A", 20));
    }

    #[test]
    fn jwt_structure() {
        let t = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert!(jwt(t));
        assert!(!jwt("eyJhbGciOiJIUzI1NiJ9"));
        assert!(!jwt("eyJub3RhbGciOjF9.eyJzdWIiOiIxIn0.sig"));
    }
}
