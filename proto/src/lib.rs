//! The `airlock.v1` gRPC contract shared by host agents, the approval hub and approvers.
//!
//! The `.proto` file (`airlock/v1/airlock.proto`) is the source of truth; this crate only
//! compiles it, so every crate talks to the hub through the same generated types.

/// Generated messages, clients (`*_client`) and servers (`*_server`) of package `airlock.v1`.
#[allow(
    clippy::all,
    clippy::pedantic,
    clippy::allow_attributes_without_reason,
    missing_docs,
    reason = "generated code"
)]
pub mod v1 {
    tonic::include_proto!("airlock.v1");
}

/// Encoded `FileDescriptorSet` of `airlock.v1`, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/airlock_v1_descriptor.bin"));
