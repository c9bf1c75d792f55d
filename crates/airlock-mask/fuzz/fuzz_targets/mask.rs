//! Fuzzes mask_text / mask_argv / mask_http_head / mask_env for panics and checks the
//! invariants: masking is idempotent, findings rebuild the output, and no masked span's
//! raw text is still present where it was.

#![no_main]

use std::sync::LazyLock;

use airlock_mask::{HostKey, Masked, MaskConfig, Masker};
use libfuzzer_sys::fuzz_target;

static MASKER: LazyLock<Masker> = LazyLock::new(|| {
    let cfg = MaskConfig { mask_ip_addresses: true, ..MaskConfig::default() };
    Masker::new(&cfg, &HostKey::from_bytes(vec![0x5a; 32]).expect("key")).expect("masker")
});

fn check_rebuild(input: &str, m: &Masked) {
    let mut rebuilt = String::new();
    let mut pos = 0;
    for f in &m.findings {
        assert!(f.start >= pos && f.end > f.start && f.end <= input.len(), "bad span {f:?}");
        rebuilt.push_str(&input[pos..f.start]);
        rebuilt.push_str(&f.placeholder());
        pos = f.end;
    }
    rebuilt.push_str(&input[pos..]);
    assert_eq!(rebuilt, m.text, "findings do not describe the output");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let m = &*MASKER;

    let once = m.mask_text(text);
    check_rebuild(text, &once);
    let twice = m.mask_text(&once.text);
    assert_eq!(twice.text, once.text, "mask_text not idempotent");

    let head = m.mask_http_head(text);
    check_rebuild(text, &head);
    assert_eq!(m.mask_http_head(&head.text).text, head.text, "mask_http_head not idempotent");

    let argv: Vec<String> = text.split(['\0', ' ']).map(str::to_owned).collect();
    let a = m.mask_argv(&argv);
    assert_eq!(a.argv.len(), argv.len());
    assert_eq!(m.mask_argv(&a.argv).argv, a.argv, "mask_argv not idempotent");

    if let Some((name, value)) = text.split_once('=') {
        let e = m.mask_env(name, value);
        check_rebuild(value, &e);
        assert_eq!(m.mask_env(name, &e.text).text, e.text, "mask_env not idempotent");
    }
});
