//! Helpers shared by the integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use airlock_policy::{Action, Policy};

/// Header with all-allow defaults and two approver groups.
pub const HEADER: &str = r#"
version = 1
[defaults]
exec = "allow"
connect = "allow"
send = "allow"
open = "allow"
[defaults.ask]
approvers = ["oncall"]
[groups.oncall]
[groups.secops]
"#;

/// A policy made of `HEADER` and `body`.
pub fn policy(body: &str) -> Policy {
    let text = format!("{HEADER}\n{body}");
    match Policy::from_str("test.toml", &text) {
        Ok(p) => p,
        Err(e) => panic!("policy does not load: {e}\n{text}"),
    }
}

/// An action from a TOML document (`class = "exec"\nbinary = ...`).
pub fn action(toml_text: &str) -> Action {
    match toml::from_str(toml_text) {
        Ok(a) => a,
        Err(e) => panic!("bad action {toml_text}: {e}"),
    }
}
