//! The airlock approval hub and its approver CLI.
//!
//! Agents submit held actions and stream back decisions ([`service::AgentApi`]); human
//! approvers watch and decide them ([`service::ApproverApi`], [`approver`] for the CLI).
//! The rules (no self-approval, agents never decide, quorum, expiry with default deny)
//! live in [`rules`] as pure functions applied atomically through a [`store::Store`].
//! The `airlock` binary (agent crate) calls [`serve`] and [`approver::run`].

pub mod approver;
pub mod audit_cmd;
pub mod ca;
pub mod error;
pub mod expiry;
pub mod identity;
pub mod rules;
pub mod server;
pub mod service;
pub mod store;

pub use error::ApiError;
pub use server::{HubError, IdentityMode, ServeArgs, StoreSpec, serve, serve_with_listener};
pub use service::HubConfig;
