//! Property tests: embedded secrets never survive masking, and masking is idempotent.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod support {
    pub mod corpus_gen;
}

use airlock_mask::{HostKey, MaskConfig, Masker};
use proptest::prelude::*;
use support::corpus_gen::{Rng, any_secret, lookalike};

fn masker() -> Masker {
    Masker::new(
        &MaskConfig::default(),
        &HostKey::from_bytes(vec![9; 32]).unwrap(),
    )
    .unwrap()
}

const SEPARATORS: &[&str] = &[" ", "\n", ", ", "\t", " | ", "; ", "\r\n", " -> "];

/// Random printable filler, secrets from the generator, joined by separators.
fn text_with_secrets(seed: u64, filler: &[String]) -> (String, Vec<String>) {
    let r = Rng::new(seed);
    let mut text = String::new();
    let mut secrets = Vec::new();
    for f in filler {
        text.push_str(f);
        text.push_str(r.pick::<&str>(SEPARATORS));
        match r.below(3) {
            0 => {
                let s = any_secret(&r);
                text.push_str(&s.value);
                secrets.push(s.value);
            }
            1 => text.push_str(&lookalike(&r)),
            _ => {}
        }
        text.push_str(r.pick::<&str>(SEPARATORS));
    }
    (text, secrets)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn embedded_secrets_never_survive(seed in any::<u64>(), filler in prop::collection::vec("[ -~]{0,24}", 1..8)) {
        let m = masker();
        let (text, secrets) = text_with_secrets(seed, &filler);
        let out = m.mask_text(&text);
        for s in &secrets {
            prop_assert!(!out.text.contains(s.as_str()), "secret {:?} survived in {:?}", s, out.text);
        }
        prop_assert!(out.findings.len() >= secrets.len() || secrets.is_empty() || out.findings.iter().any(|f| f.end - f.start > 60));
    }

    #[test]
    fn masking_is_idempotent_on_generated_text(seed in any::<u64>(), filler in prop::collection::vec("[ -~]{0,24}", 1..8)) {
        let m = masker();
        let (text, _) = text_with_secrets(seed, &filler);
        let once = m.mask_text(&text);
        let twice = m.mask_text(&once.text);
        prop_assert_eq!(&twice.text, &once.text);
        prop_assert!(twice.findings.is_empty());
    }

    #[test]
    fn masking_is_idempotent_on_arbitrary_text(text in "\\PC{0,200}") {
        let m = masker();
        let once = m.mask_text(&text);
        prop_assert_eq!(m.mask_text(&once.text).text, once.text.clone());
        let head = m.mask_http_head(&text);
        prop_assert_eq!(m.mask_http_head(&head.text).text, head.text);
    }

    #[test]
    fn argv_masking_is_idempotent(args in prop::collection::vec("[ -~]{0,20}", 0..8), seed in any::<u64>()) {
        let m = masker();
        let r = Rng::new(seed);
        let mut argv = args;
        let flags = ["--password", "-p", "--token", "-u", "PGPASSWORD=x", "mysql", "curl", "--api-key"];
        for _ in 0..3 {
            let pos = r.below(argv.len() + 1);
            argv.insert(pos, (*r.pick(&flags)).to_owned());
        }
        let once = m.mask_argv(&argv);
        prop_assert_eq!(once.argv.len(), argv.len());
        let twice = m.mask_argv(&once.argv);
        prop_assert_eq!(twice.argv, once.argv);
    }

    #[test]
    fn findings_describe_the_output(seed in any::<u64>(), filler in prop::collection::vec("[a-z =:]{0,12}", 1..6)) {
        let m = masker();
        let (text, _) = text_with_secrets(seed, &filler);
        let out = m.mask_text(&text);
        let mut rebuilt = String::new();
        let mut pos = 0;
        for f in &out.findings {
            prop_assert!(f.start >= pos && f.end > f.start);
            rebuilt.push_str(&text[pos..f.start]);
            rebuilt.push_str(&f.placeholder());
            prop_assert_eq!(f.fingerprint.clone(), m.fingerprint(&text.as_bytes()[f.start..f.end]));
            pos = f.end;
        }
        rebuilt.push_str(&text[pos..]);
        prop_assert_eq!(rebuilt, out.text);
    }
}
