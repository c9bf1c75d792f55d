//! `cargo xtask eval-masking [CORPUS]`: per-detector recall and precision of
//! `airlock-mask` on a labelled corpus (default: the crate's own
//! `crates/airlock-mask/corpus/masking.jsonl`), printed as a table.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};

use crate::paths::workspace_root;

/// The corpus shipped with `airlock-mask`, relative to the workspace root.
pub const DEFAULT_CORPUS: &str = "crates/airlock-mask/corpus/masking.jsonl";

/// Options of `eval-masking`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Labelled corpus (JSON Lines; see `airlock_mask::eval`). Default: the crate's corpus.
    pub corpus: Option<PathBuf>,
    /// Exit 1 when any detector's recall is below this.
    #[arg(long)]
    pub min_recall: Option<f64>,
    /// Exit 1 when any detector's precision is below this.
    #[arg(long)]
    pub min_precision: Option<f64>,
    /// Also print every miss and false positive.
    #[arg(long)]
    pub errors: bool,
}

/// Runs the evaluation and prints the table; exit 1 when a threshold is missed or a
/// secret leaked unmasked.
///
/// # Errors
/// The corpus cannot be read or parsed.
pub fn run(opts: &Options) -> Result<ExitCode> {
    let corpus = opts
        .corpus
        .clone()
        .unwrap_or_else(|| workspace_root().join(DEFAULT_CORPUS));
    let report = airlock_mask::eval::evaluate(&corpus)
        .with_context(|| format!("evaluating {}", corpus.display()))?;
    println!("corpus {}", corpus.display());
    print!("{report}");
    if opts.errors {
        for e in &report.errors {
            println!("  {e}");
        }
    }
    let ok = report.meets(
        opts.min_recall.unwrap_or(0.0),
        opts.min_precision.unwrap_or(0.0),
    );
    if !ok {
        println!("below the requested recall/precision");
    }
    Ok(if ok && report.leaked == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
