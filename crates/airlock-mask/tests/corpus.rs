//! The committed evaluation corpus: reproducible from the generator, and the masker meets
//! the recall / precision targets on it.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod support {
    pub mod corpus_gen;
}

use std::path::PathBuf;

use support::corpus_gen;

const SEED: u64 = 0x00A1_2C0C_5EED;
const SAMPLES: usize = 900;

fn corpus_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/masking.jsonl")
}

/// `UPDATE_CORPUS=1 cargo test -p airlock-mask --test corpus` rewrites the file.
#[test]
fn committed_corpus_matches_generator() {
    let generated = corpus_gen::corpus_jsonl(SEED, SAMPLES);
    if std::env::var_os("UPDATE_CORPUS").is_some() {
        std::fs::write(corpus_path(), &generated).unwrap();
    }
    let committed = std::fs::read_to_string(corpus_path()).unwrap();
    assert!(
        committed == generated,
        "corpus/masking.jsonl is stale: rerun with UPDATE_CORPUS=1"
    );
}

#[test]
fn eval_meets_targets_per_kind() {
    let report = airlock_mask::eval::evaluate(&corpus_path()).unwrap();
    println!("{report}");
    for e in report.errors.iter().take(40) {
        println!("  {e}");
    }
    assert!(report.samples >= 800);
    assert!(
        report.negative_samples >= 100,
        "the corpus must carry look-alikes"
    );
    assert_eq!(report.leaked, 0, "a labelled secret was left visible");
    assert!(
        report.meets(0.95, 0.95),
        "a kind is below recall/precision 0.95:\n{report}"
    );
}
