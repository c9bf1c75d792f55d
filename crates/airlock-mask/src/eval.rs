//! Evaluation harness: recall and precision per detector kind on a labelled corpus.
//!
//! The corpus is JSON Lines, one sample per line:
//! `{"id": 1, "api": "argv"|"env"|"http_head"|"url"|"text", "input": "…" or ["…"],
//!   "secrets": [{"kind": "PASSWORD", "value": "hunter2"}], "note": "…"}`.
//! Every occurrence of every secret value must be covered by one finding of the same kind
//! (true positive) or it is a false negative; a finding that covers no expected secret of its
//! kind is a false positive. A secret not covered by any finding at all is also counted as
//! *leaked* (the security metric; a wrong kind still hides the secret).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::config::{HostKey, MaskConfig};
use crate::masker::{Finding, Masker};

/// Errors of the evaluation module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The corpus file cannot be read.
    #[error("reading corpus {path}: {source}")]
    Io {
        /// The corpus path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A corpus line is not a valid sample.
    #[error("corpus line {line}: {source}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A sample's `api`/`input` combination is invalid.
    #[error("corpus line {line}: {reason}")]
    Sample {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The masker could not be built.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Argv(Vec<String>),
}

#[derive(Deserialize)]
struct Expected {
    kind: String,
    value: String,
}

#[derive(Deserialize)]
struct Sample {
    api: String,
    input: Input,
    #[serde(default)]
    secrets: Vec<Expected>,
}

/// Counts for one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Expected secrets masked with this kind.
    pub tp: usize,
    /// Findings of this kind that cover no expected secret of this kind.
    pub fp: usize,
    /// Expected secrets of this kind not masked as this kind.
    pub fn_: usize,
}

impl Counts {
    /// TP / (TP + FN); 1.0 when there is nothing to find.
    #[must_use]
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// TP / (TP + FP); 1.0 when nothing was found.
    #[must_use]
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        1.0
    } else {
        #[expect(clippy::cast_precision_loss, reason = "corpus counts are small")]
        let r = a as f64 / b as f64;
        r
    }
}

/// Result of [`evaluate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EvalReport {
    /// Counts per kind name.
    pub per_kind: BTreeMap<String, Counts>,
    /// Samples evaluated.
    pub samples: usize,
    /// Samples with no expected secret (pure look-alikes).
    pub negative_samples: usize,
    /// Expected secret occurrences.
    pub expected: usize,
    /// Expected secret occurrences not covered by any finding (of any kind).
    pub leaked: usize,
    /// Per-sample notes about misses and false positives (kind, note), for debugging.
    pub errors: Vec<String>,
}

impl EvalReport {
    /// Sum over all kinds.
    #[must_use]
    pub fn total(&self) -> Counts {
        self.per_kind
            .values()
            .fold(Counts::default(), |a, c| Counts {
                tp: a.tp + c.tp,
                fp: a.fp + c.fp,
                fn_: a.fn_ + c.fn_,
            })
    }

    /// Whether every kind meets both targets.
    #[must_use]
    pub fn meets(&self, recall: f64, precision: f64) -> bool {
        self.per_kind
            .values()
            .all(|c| c.recall() >= recall && c.precision() >= precision)
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} samples ({} pure negatives), {} expected secrets, {} leaked",
            self.samples, self.negative_samples, self.expected, self.leaked
        )?;
        writeln!(
            f,
            "{:<18} {:>5} {:>5} {:>5} {:>8} {:>9}",
            "kind", "TP", "FP", "FN", "recall", "precision"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, c: &Counts| {
            writeln!(
                f,
                "{:<18} {:>5} {:>5} {:>5} {:>8.3} {:>9.3}",
                name,
                c.tp,
                c.fp,
                c.fn_,
                c.recall(),
                c.precision()
            )
        };
        for (k, c) in &self.per_kind {
            row(f, k, c)?;
        }
        row(f, "TOTAL", &self.total())
    }
}

/// Evaluates a masker built from the default config (fixed evaluation key) on a corpus file.
///
/// # Errors
/// [`EvalError`] if the corpus cannot be read or parsed.
pub fn evaluate(corpus_path: &Path) -> Result<EvalReport, EvalError> {
    let key = HostKey::from_bytes(b"airlock-mask evaluation key (not secret)".to_vec())?;
    let masker = Masker::new(&MaskConfig::default(), &key)?;
    evaluate_with(&masker, corpus_path)
}

/// Evaluates `masker` on a corpus file.
///
/// # Errors
/// [`EvalError`] if the corpus cannot be read or parsed.
pub fn evaluate_with(masker: &Masker, corpus_path: &Path) -> Result<EvalReport, EvalError> {
    let text = std::fs::read_to_string(corpus_path).map_err(|source| EvalError::Io {
        path: corpus_path.display().to_string(),
        source,
    })?;
    evaluate_str(masker, &text)
}

/// Evaluates `masker` on corpus text (JSON Lines).
///
/// # Errors
/// [`EvalError::Parse`] / [`EvalError::Sample`] for malformed lines.
pub fn evaluate_str(masker: &Masker, corpus: &str) -> Result<EvalReport, EvalError> {
    let mut report = EvalReport::default();
    for (i, line) in corpus.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = i + 1;
        let sample: Sample = serde_json::from_str(line).map_err(|source| EvalError::Parse {
            line: line_no,
            source,
        })?;
        // Fields: (arg index or None, field text); findings refer to these.
        let (fields, findings): (Vec<(Option<usize>, String)>, Vec<Finding>) =
            match (sample.api.as_str(), sample.input) {
                ("argv", Input::Argv(argv)) => {
                    let m = masker.mask_argv(&argv);
                    (
                        argv.into_iter()
                            .enumerate()
                            .map(|(k, a)| (Some(k), a))
                            .collect(),
                        m.findings,
                    )
                }
                ("env", Input::Text(t)) => {
                    let Some((name, value)) = t.split_once('=') else {
                        return Err(EvalError::Sample {
                            line: line_no,
                            reason: "env input needs NAME=value".into(),
                        });
                    };
                    let shift = name.len() + 1;
                    let mut m = masker.mask_env(name, value);
                    for f in &mut m.findings {
                        f.start += shift;
                        f.end += shift;
                    }
                    (vec![(None, t)], m.findings)
                }
                ("http_head", Input::Text(t)) => {
                    let m = masker.mask_http_head(&t);
                    (vec![(None, t)], m.findings)
                }
                ("url", Input::Text(t)) => {
                    let m = masker.mask_url(&t);
                    (vec![(None, t)], m.findings)
                }
                ("text", Input::Text(t)) => {
                    let m = masker.mask_text(&t);
                    (vec![(None, t)], m.findings)
                }
                (api, _) => {
                    return Err(EvalError::Sample {
                        line: line_no,
                        reason: format!("unknown api {api:?} or input shape"),
                    });
                }
            };
        report.samples += 1;
        if sample.secrets.is_empty() {
            report.negative_samples += 1;
        }
        // Expected occurrences: (field, start, end, kind).
        let mut expected = Vec::new();
        for e in &sample.secrets {
            if e.value.is_empty() {
                continue;
            }
            for (field, text) in &fields {
                for (pos, _) in text.match_indices(e.value.as_str()) {
                    expected.push((*field, pos, pos + e.value.len(), e.kind.as_str()));
                }
            }
        }
        let mut used = vec![false; findings.len()];
        for &(field, s, e, kind) in &expected {
            report.expected += 1;
            let covering: Vec<usize> = findings
                .iter()
                .enumerate()
                .filter(|(_, f)| f.arg == field && f.start <= s && f.end >= e)
                .map(|(k, _)| k)
                .collect();
            if covering.is_empty() {
                report.leaked += 1;
            }
            let counts = report.per_kind.entry(kind.to_owned()).or_default();
            if let Some(&k) = covering.iter().find(|&&k| findings[k].kind.name() == kind) {
                counts.tp += 1;
                used[k] = true;
            } else {
                counts.fn_ += 1;
                report.errors.push(format!(
                    "line {line_no}: missed {kind} ({} covering findings)",
                    covering.len()
                ));
            }
        }
        for (f, used) in findings.iter().zip(used) {
            if !used {
                report
                    .per_kind
                    .entry(f.kind.name().to_owned())
                    .or_default()
                    .fp += 1;
                report.errors.push(format!(
                    "line {line_no}: false positive {} at {}..{}",
                    f.kind, f.start, f.end
                ));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may unwrap")]
mod tests {
    use super::*;

    fn masker() -> Masker {
        Masker::new(
            &MaskConfig::default(),
            &HostKey::from_bytes(vec![3; 32]).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn counts_tp_fp_fn_and_leaks() {
        let corpus = concat!(
            r#"{"api":"text","input":"PGPASSWORD=hunter2 x","secrets":[{"kind":"PASSWORD","value":"hunter2"}]}"#,
            "\n",
            r#"{"api":"text","input":"mail bob@example.com","secrets":[{"kind":"PHONE","value":"bob@example.com"}]}"#,
            "\n",
            r#"{"api":"text","input":"plain words only","secrets":[{"kind":"SECRET","value":"words"}]}"#,
            "\n",
            r#"{"api":"argv","input":["mysql","-psecretpw"],"secrets":[{"kind":"PASSWORD","value":"secretpw"}]}"#,
            "\n",
            r#"{"api":"env","input":"API_TOKEN=abc123xyz","secrets":[{"kind":"SECRET","value":"abc123xyz"}]}"#,
            "\n",
        );
        let r = evaluate_str(&masker(), corpus).unwrap();
        assert_eq!(r.samples, 5);
        assert_eq!(
            r.per_kind["PASSWORD"],
            Counts {
                tp: 2,
                fp: 0,
                fn_: 0
            }
        );
        assert_eq!(
            r.per_kind["PHONE"],
            Counts {
                tp: 0,
                fp: 0,
                fn_: 1
            }
        );
        assert_eq!(
            r.per_kind["EMAIL"],
            Counts {
                tp: 0,
                fp: 1,
                fn_: 0
            }
        );
        assert_eq!(
            r.per_kind["SECRET"],
            Counts {
                tp: 1,
                fp: 0,
                fn_: 1
            }
        );
        assert_eq!(r.leaked, 1, "only 'words' is not covered at all");
        assert!(!r.meets(0.95, 0.95));
        let table = r.to_string();
        assert!(
            table.contains("PASSWORD") && table.contains("TOTAL"),
            "{table}"
        );
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(matches!(
            evaluate_str(&masker(), "{not json"),
            Err(EvalError::Parse { line: 1, .. })
        ));
        assert!(matches!(
            evaluate_str(&masker(), r#"{"api":"argv","input":"x"}"#),
            Err(EvalError::Sample { .. })
        ));
    }
}
