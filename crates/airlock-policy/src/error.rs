//! Errors of loading, validating and running policies.
//!
//! Every problem found in a file carries a [`Location`] (`file:line:column`), so an
//! operator reading the rejection of a reload can go straight to the mistake.

use std::fmt;
use std::path::PathBuf;

/// A place in a policy (or cases) file. Lines and columns count from 1; the column
/// counts characters, not bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File name as given to the loader (`<memory>` for in-memory sources).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters).
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `source`.
    pub(crate) fn at(file: &str, source: &str, offset: usize) -> Self {
        let offset = offset.min(source.len());
        // Back off to a char boundary so slicing cannot fail on a span inside a
        // multi-byte character.
        let mut end = offset;
        while !source.is_char_boundary(end) {
            end -= 1;
        }
        let before = &source[..end];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self {
            file: file.to_owned(),
            line,
            column,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why a policy (or a cases file) was rejected, or why a CLI command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_POLICY_BYTES`](crate::MAX_POLICY_BYTES).
    #[error("{file}: file is {size} bytes, larger than the {limit}-byte limit for policy files")]
    TooLarge {
        /// File name.
        file: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// TOML syntax error, unknown field, wrong type or missing field.
    #[error("{location}: {message}")]
    Parse {
        /// Where.
        location: Location,
        /// The parser's explanation.
        message: String,
    },
    /// `version` is not a version this build understands.
    #[error("{location}: unsupported policy version {found} (this build reads version 1)")]
    UnsupportedVersion {
        /// Where.
        location: Location,
        /// The version in the file.
        found: i64,
    },
    /// A glob does not compile.
    #[error("{location}: bad glob `{glob}`: {reason}")]
    BadGlob {
        /// Where.
        location: Location,
        /// The glob.
        glob: String,
        /// Why.
        reason: String,
    },
    /// A regex does not compile or is too large.
    #[error("{location}: bad regex `{regex}`: {reason}")]
    BadRegex {
        /// Where.
        location: Location,
        /// The regex.
        regex: String,
        /// Why.
        reason: String,
    },
    /// A CIDR does not parse.
    #[error("{location}: bad CIDR `{cidr}`: {reason}")]
    BadCidr {
        /// Where.
        location: Location,
        /// The CIDR text.
        cidr: String,
        /// Why.
        reason: String,
    },
    /// A rule names an approver group not declared under `[groups]`.
    #[error("{location}: unknown approver group `{group}` (declare it under [groups.{group}])")]
    UnknownGroup {
        /// Where.
        location: Location,
        /// The group.
        group: String,
    },
    /// Two rules share an id.
    #[error("{location}: duplicate rule id `{id}` (first used at {first})")]
    DuplicateRuleId {
        /// The second use.
        location: Location,
        /// The id.
        id: String,
        /// The first use.
        first: Location,
    },
    /// Any other semantic error (bad duration, ask settings on an allow rule, ...).
    #[error("{location}: {reason}")]
    Invalid {
        /// Where.
        location: Location,
        /// Why.
        reason: String,
    },
    /// An action given to `policy explain` is malformed.
    #[error("bad action: {0}")]
    BadAction(String),
}

impl PolicyError {
    /// The file location of the problem, when it has one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Parse { location, .. }
            | Self::UnsupportedVersion { location, .. }
            | Self::BadGlob { location, .. }
            | Self::BadRegex { location, .. }
            | Self::BadCidr { location, .. }
            | Self::UnknownGroup { location, .. }
            | Self::DuplicateRuleId { location, .. }
            | Self::Invalid { location, .. } => Some(location),
            Self::Io { .. } | Self::TooLarge { .. } | Self::BadAction(_) => None,
        }
    }
}
