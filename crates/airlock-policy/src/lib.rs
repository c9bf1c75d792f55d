//! airlock policy: which watched actions are allowed, denied, or held for a human.
//!
//! The agent catches privileged actions in the kernel (DESIGN.md §4); this crate decides
//! them. A policy is a TOML file of rules, compiled once into matchers
//! ([`Policy::load`]), evaluated per action in user space ([`Policy::evaluate`]), and
//! compiled into the kernel maps' contents ([`Policy::kernel_plan`]) so that anything
//! the policy allows outright never leaves the kernel. [`PolicyHandle`] swaps policies
//! live; [`cli`] is `airlock policy check|explain|test`.
//!
//! # Hooks for the agent
//! * [`PolicyHandle::load`] at start, [`PolicyHandle::evaluate`] per held action (one
//!   lock-free snapshot per decision), [`PolicyHandle::load_and_swap`] on SIGHUP or a
//!   file change — on `Err`, audit the error (it carries `file:line:column`) and keep
//!   going: the old policy stays in force.
//! * [`PolicyHandle::reload_with`] does the same with kernel map writes in the safe
//!   order (strictest of old and new plans, swap, new plan).
//! * [`Policy::kernel_plan`] → [`KernelPlan`]: binaries and credential globs to resolve
//!   to (dev, inode), CIDRs for the egress LPM trie, and `watch_all_*` flags.
//! * [`Action::fingerprint`]: the hash a time-boxed grant is bound to.
//! * [`cli::PolicyCommand`] / [`cli::run`] / [`cli::exit_code`] for `airlock policy`.
//!
//! # Format: TOML
//! TOML, because the agent's own config is TOML (one syntax for operators), it has no
//! implicit typing traps (YAML's `no` → `false`, `010` → 8, `1.10` → 1.1 bite exactly the
//! port/version/path values a policy is full of), and the `toml` crate reports every
//! error with a byte span, which becomes `file:line:column`. Every table is
//! `deny_unknown_fields`, so a misspelt condition is an error, not a rule that silently
//! matches more. Files above [`MAX_POLICY_BYTES`] (1 MiB) are rejected before parsing.
//!
//! ```toml
//! version = 1                 # format version; anything else is rejected
//! revision = "2026-11-21a"    # optional label, reported in decisions
//! mode = "enforce"            # global: enforce | shadow | off
//!
//! [defaults]                  # outcome when no rule matches, per action class
//! exec = "allow"
//! open = "allow"
//! connect = "ask"
//! send = "ask"
//! severity = "medium"
//! [defaults.ask]              # base ask settings (rules override field by field)
//! approvers = ["oncall"]      # or [{ group = "secops", quorum = 2 }]
//! ttl = "5m"
//! on_timeout = "deny"
//! grant = "once"              # or a duration: the longest time-boxed grant, "1h"
//! reason_required = false
//!
//! [groups.oncall]             # approver groups rules may name (members live in the hub)
//! description = "Platform on-call"
//!
//! [[rule]]
//! id = "export-tools"
//! on = ["exec"]               # classes: exec, connect, send, open (omit = all)
//! binary = ["aws", "rclone", "/usr/bin/scp"]
//! argv = [{ position = 1, glob = "s3" }, { regex = "^s3://" }]
//! outcome = "ask"
//! severity = "high"
//! reason = "Data export tool"
//! ask = { approvers = [{ group = "oncall", quorum = 2 }], ttl = "10m" }
//! ```
//!
//! # Conditions
//! Every condition is a list; an entry of the list may match (OR); every condition
//! present must match (AND); a rule with no condition matches every action of its
//! classes. `binary`/`parent`: a pattern with `/` is a glob on the full path, one
//! without is a glob on the file name (and, for `parent`, on `comm`); `parent` matches
//! if any ancestor matches. `argv`: each entry is `{ position?, glob | regex }`, at
//! `argv[position]` or, without `position`, anywhere; all entries must match; regexes
//! are unanchored (write `^…$`) and size-limited. `path`, `cgroup`, `s3_key`: path
//! globs (`*` stops at `/`, `**` crosses it). `host`: case-insensitive, `*` crosses dots
//! (`*.example.com` matches `a.b.example.com`, not `example.com`). `user`, `unit`,
//! `s3_bucket`, `url`: globs where `*` matches anything. `cidr` (a bare address is a
//! /32 or /128; host bits must be zero), `port` (`443` or `"8000-8999"`), `protocol`
//! (`tcp`/`udp`), `scheme`, `uid`: exact.
//!
//! ## Missing facts
//! A condition on a fact the action does not carry (no host name known, no uid) does
//! not match. So an `allow host = ["pypi.org"]` rule never allows a connect whose name
//! is unknown; it falls through to later rules and the default.
//!
//! # Precedence: first match wins
//! Rules are evaluated in file order and the first enforcing rule that matches decides;
//! no match falls back to the class default. There is no `priority` field (it is
//! rejected as unknown): the order a reader sees is the order that runs, as in firewall
//! rule lists, and `policy check` flags rules an earlier rule makes unreachable and
//! overlaps with different outcomes. Put exceptions before the general rule.
//!
//! # Modes
//! Global `mode` and per-rule `mode`: `enforce`, `shadow`, `off`. An `off` rule is
//! ignored. A `shadow` rule that matches is recorded in [`Decision::shadow`] ("would
//! have denied") and evaluation *continues*, so shadowing a new rule never changes what
//! happens — it can be watched in the logs before it is enforced. A global `shadow`
//! evaluates normally, reports the outcome, and sets [`Decision::effective`] to allow;
//! global `off` allows everything without evaluating.
//!
//! # Engine: hand-written matchers, not Cedar or Rego
//! Considered: `cedar-policy` and `regorus` (Rego). Both were rejected, on a desk
//! evaluation (not measured here):
//! * **Semantics**: we need three outcomes (allow/deny/ask with approval settings),
//!   first-match order and shadow rules. Cedar decides permit/forbid with
//!   forbid-overrides and no order; "ask" and ordering would have to be encoded in
//!   annotations and several evaluations. Rego can express anything, which is the
//!   problem for the next point.
//! * **Kernel compilation**: the kernel plan must be *provably* no more permissive than
//!   user space. With one declarative struct per rule this is a short, proptested
//!   argument ([`kernel`]); with a general expression language it needs partial
//!   evaluation of arbitrary expressions, and a mistake there is a silent bypass.
//! * **Matchers**: we need path globs, host globs, regexes and CIDRs. Cedar's `like`
//!   has only `*` and no regex; Rego has them as builtins, but through an interpreter.
//! * **Speed**: the target is p99 < 50 µs with 500 rules. A linear scan over compiled
//!   `globset`/`regex`/integer checks does that with margin (see `benches/evaluate.rs`);
//!   an interpreted Rego query over 500 rules is in the tens to hundreds of µs.
//! * **Size and errors**: either engine adds a parser and evaluator (and for Cedar a
//!   schema system) to a security agent's dependency tree, and their errors point into
//!   their language, not at the TOML line the operator wrote.
//!
//! If conditions ever need real expressions ("uid in group X unless …"), Cedar is the
//! candidate for an optional `when` clause evaluated after the struct matchers.

pub mod action;
pub mod cli;
pub mod decision;
pub mod error;
pub mod handle;
pub mod kernel;
pub mod lint;
mod matcher;
pub mod policy;
mod raw;

pub use action::{Action, ActionClass, Destination, ParentProcess, Protocol};
pub use decision::{
    ApproverRequirement, AskSpec, Decision, GrantScope, Mode, Outcome, OutcomeKind, Severity,
    ShadowHit, Verdict,
};
pub use error::{Location, PolicyError};
pub use handle::{PolicyHandle, PolicyVersion, ReloadError, ReloadOutcome};
pub use kernel::{BinarySelector, KernelPlan};
pub use lint::{Lint, LintKind, LintLevel};
pub use policy::{MAX_POLICY_BYTES, Policy, Rule};
